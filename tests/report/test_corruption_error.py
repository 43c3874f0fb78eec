"""Normalised corruption error (mCE) against the supervised counterpart: the formula, the families, the answer."""

import math

import pytest
import torch
from sklearn.metrics import balanced_accuracy_score

from medrobust.report import answer
from medrobust.report.corruption_error import corruption_error_rows, corruption_error_table, pair_errors
from medrobust.task import Task, balanced_accuracy
from records import facts, record
from test_answer import rec


def _with_balanced(d, clean_bal, bal):
    r = record(d)
    return r.model_copy(update={"metrics": r.metrics.model_copy(update={"clean_balanced": clean_bal,
                                                                       "corruptions_balanced": bal})})


# supervised: errors 0.4 (noise) and 0.2 (blur) averaged over severities, clean error 0.1;
# simclr: errors 0.2 and 0.3, clean error 0.05
SUP = {"gaussian-noise": {"1": 0.7, "3": 0.5}, "gaussian-blur": {"1": 0.9, "3": 0.7}}
SSL = {"gaussian-noise": {"1": 0.9, "3": 0.7}, "gaussian-blur": {"1": 0.8, "3": 0.6}}


FAMILIES = {"corruption_families": {"gaussian-noise": "noise", "gaussian-blur": "blur"}}  # as the study records them


def grid(seeds=(0, 1, 2)):
    out = []
    for s in seeds:
        out.append(_with_balanced(rec("supervised", 0.1, s, 0.9, 0.4), 0.9, SUP))
        out.append(_with_balanced(rec("simclr", 0.1, s, 0.95, 0.5, counterpart="supervised"), 0.95, SSL))
    return out


def test_mce_relative_mce_and_families_follow_the_formula():
    recs = grid()
    got = pair_errors(recs[1], recs[0], facts(FAMILIES))
    ce_noise, ce_blur = 0.2 / 0.4, 0.3 / 0.2
    assert got["mCE"] == pytest.approx((ce_noise + ce_blur) / 2)
    assert got["relative mCE"] == pytest.approx(((0.2 - 0.05) + (0.3 - 0.05)) / ((0.4 - 0.1) + (0.2 - 0.1)))
    assert got["CE noise"] == pytest.approx(ce_noise) and got["CE blur"] == pytest.approx(ce_blur)
    rows = corruption_error_rows(recs, facts(FAMILIES))
    assert [(r["arm"], r["counterpart"]) for r in rows] == [("simclr", "supervised")]
    mean, half, n = rows[0]["mCE"]
    assert mean == pytest.approx(1.0) and n == 3 and half == pytest.approx(0.0, abs=1e-9)
    table = corruption_error_table(recs, facts(FAMILIES))
    assert table.header[:5] == ["arm", "vs", "labels", "mCE", "relative mCE"] and "CE noise" in table.header


def test_the_answer_states_the_mce_beside_the_corruption_comparison():
    text = answer.answer(grid(), facts({"reference_epsilon": "2", "epsilons": ["0", "1", "2", "8"], **FAMILIES}))
    assert "normalised corruption error mCE 1.00 ± 0.00, relative mCE 1.00 ± 0.00 (supervised = 1.00" in text


def test_records_without_balanced_accuracies_give_no_row():
    plain = [record(rec("supervised", 0.1, 0, 0.9, 0.4)),
             record(rec("simclr", 0.1, 0, 0.9, 0.4, counterpart="supervised"))]
    assert corruption_error_rows(plain, facts({})) == [] and corruption_error_table(plain, facts({})) is None


def test_balanced_accuracy_matches_sklearn_and_the_multilabel_formula():
    g = torch.Generator().manual_seed(0)
    logits, y = torch.randn(200, 3, generator=g), torch.randint(0, 3, (200,), generator=g)
    assert balanced_accuracy(logits, y, Task("multiclass", ("a", "b", "c"))) == pytest.approx(
        balanced_accuracy_score(y.numpy(), logits.argmax(1).numpy()))
    ml, yl = torch.randn(100, 2, generator=g), torch.randint(0, 2, (100, 2), generator=g)
    pred = (ml > 0).long()
    want = sum(balanced_accuracy_score(yl[:, j].numpy(), pred[:, j].numpy()) for j in range(2)) / 2
    assert balanced_accuracy(ml, yl, Task("multilabel", ("x", "y"))) == pytest.approx(want)
    assert math.isnan(balanced_accuracy(torch.zeros(0, 2), torch.zeros(0, dtype=torch.long), Task("binary", ("n", "p"))))
