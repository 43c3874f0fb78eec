"""Fail fast: a model that does not beat the majority class is recorded with that failure and skips the attacks and
corruptions (unless evaluation.evaluate_failed). The report side: tests/report/test_verdict.py."""

import numpy as np
import pytest

from medrobust.evaluation.robustness import EvalConfig, EvalData, evaluate

CFG = dict(epsilons=[0, 2], reference_epsilon=2, attacks=["fgsm"], worst_case=[], corruptions=["contrast"],
           severities=[1], report_attacks=[], max_adversarial=24)


def one_class_data(task, ds):
    # every test label 0: the majority rate is 1.0, so no model can pass above_chance (clean ≥ majority + 0.02)
    return EvalData(task=task, test_images=ds.test.images, test_labels=np.zeros_like(ds.test.labels),
                    holdout_images=ds.val.images, holdout_labels=ds.val.labels)


def test_a_failed_model_skips_attacks_and_corruptions(trained_classifier, synthetic_small):
    model, _, _, task = trained_classifier
    m = evaluate(model, one_class_data(task, synthetic_small), EvalConfig(**CFG))
    (check,) = m.checks
    assert check.name == "above_chance" and not check.passed and "attacks and corruptions skipped" in check.detail
    assert m.attacks == {} and m.corruptions == {} and m.n_adversarial == 0
    assert 0 <= m.clean.acc <= 1 and m.holdout is not None and m.clean_balanced is not None


def test_evaluate_failed_runs_them_anyway(trained_classifier, synthetic_small):
    model, _, _, task = trained_classifier
    m = evaluate(model, one_class_data(task, synthetic_small), EvalConfig(**CFG, evaluate_failed=True))
    assert not m.checks[0].passed and "skipped" not in m.checks[0].detail
    assert set(m.attacks) >= {"fgsm", "worst"} and set(m.corruptions) == {"contrast"} and m.n_adversarial == 24
