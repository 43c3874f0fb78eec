"""Self-checks of the evaluation: each passes on sound numbers and fails on the defect it is meant to catch."""

import numpy as np
import torch

from medrobust.evaluation import checks


def test_eps0_check_catches_an_attack_that_moves_at_zero_budget():
    clean = torch.tensor([1.0, 0.0, 1.0, 1.0])
    ok = checks.eps0_equals_clean(clean, {"pgd": {0.0: clean.clone(), 2.0: torch.zeros(4)}})
    bad = checks.eps0_equals_clean(clean, {"pgd": {0.0: torch.tensor([1.0, 0.0, 0.0, 1.0])}})
    assert ok["passed"] and not bad["passed"] and "changed 1 of 4" in bad["detail"]


def test_monotone_check_tolerates_one_example_but_not_more():
    n = 10
    acc = lambda k: torch.tensor([1.0] * k + [0.0] * (n - k))  # noqa: E731
    fine = checks.monotone_in_eps({"pgd": {0.0: acc(8), 2.0: acc(5), 4.0: acc(6)}}, [0.0, 2.0, 4.0])
    rises = checks.monotone_in_eps({"pgd": {0.0: acc(8), 2.0: acc(5), 4.0: acc(7)}}, [0.0, 2.0, 4.0])
    assert fine["passed"] and not rises["passed"] and "rose from 0.500 at 2/255 to 0.700 at 4/255" in rises["detail"]


def test_above_chance_flags_a_model_that_did_not_learn():
    labels = np.array([1] * 60 + [0] * 40)
    assert checks.above_chance(0.80, labels, multilabel=False)["passed"]
    failed = checks.above_chance(0.60, labels, multilabel=False)
    assert not failed["passed"] and "did not learn" in failed["detail"]
    multi = np.array([[1, 0]] * 9 + [[0, 0]])  # majority rates 0.9 and 1.0 -> 0.95
    assert not checks.above_chance(0.95, multi, multilabel=True)["passed"]
    assert checks.above_chance(0.98, multi, multilabel=True)["passed"]


def test_large_eps_rule_needs_an_attack_that_breaks_the_model():
    assert checks.large_eps_breaks(0.03, 128)["passed"]
    assert not checks.large_eps_breaks(0.40, 128)["passed"]  # image-only: PGD must break it
    # PGD no worse than a weak Square is not enough when both fail (passed before issue 12)
    both_fail = checks.large_eps_breaks(0.40, 128, gradient_free_acc=0.39)
    assert not both_fail["passed"] and "not ruled out" in both_fail["detail"]
    assert checks.large_eps_breaks(0.06, 128, gradient_free_acc=0.045)["passed"]  # Square near 0, PGD within 2 pp
    masked = checks.large_eps_breaks(0.40, 128, gradient_free_acc=0.10)
    assert not masked["passed"] and "gradient masking" in masked["detail"]
    stronger = checks.large_eps_breaks(0.40, 128, gradient_free_acc=0.39, strong_gradient_free_acc=0.10)
    assert not stronger["passed"] and "more queries break" in stronger["detail"]
    bounded = checks.large_eps_breaks(0.40, 128, gradient_free_acc=0.39, strong_gradient_free_acc=0.39)
    assert bounded["passed"] and "bounded image influence" in bounded["detail"]


def test_convergence_tolerance_is_one_point_or_one_example():
    assert checks.attack_converged(0.40, 0.39, 2, 300, "apgd-ce (20 steps × 2 runs)")["passed"]
    failed = checks.attack_converged(0.40, 0.38, 2, 300, "apgd-ce (20 steps × 2 runs)")
    assert not failed["passed"] and "drop 2.0 pp" in failed["detail"] and "budget too small" in failed["detail"]
    assert checks.attack_converged(0.40, 0.39, 2, 50, "x")["passed"]  # one example of 50 is 2 pp
    assert not checks.attack_converged(0.40, 0.36, 2, 50, "x")["passed"]


def test_eps0_check_covers_the_worst_case():
    clean = torch.tensor([1.0, 0.0, 1.0, 1.0])
    bad = checks.eps0_equals_clean(clean, {"pgd": {0.0: clean.clone()}}, worst=torch.tensor([0.0, 0.0, 1.0, 1.0]))
    assert not bad["passed"] and "the worst case changed 1 of 4" in bad["detail"]


def test_above_chance_credits_a_class_balanced_model_by_its_balanced_accuracy():
    labels = np.array([0] * 77 + [1] * 23)  # AdrenalMNIST3D's test split: 77% normal
    # trained to balance the classes: accuracy under the majority rate, balanced accuracy well above chance
    assert checks.above_chance(0.745, labels, multilabel=False, balanced=0.586)["passed"]
    majority_guess = checks.above_chance(0.77, labels, multilabel=False, balanced=0.5)
    assert not majority_guess["passed"] and "balanced accuracy 0.500 vs 0.500" in majority_guess["detail"]
    assert not checks.above_chance(0.70, labels, multilabel=False, balanced=0.54)["passed"]  # within 5 pp of chance
    three = np.array([0] * 60 + [1] * 30 + [2] * 10)
    assert checks.above_chance(0.55, three, multilabel=False, balanced=0.40)["passed"]  # chance is 1/3
