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
