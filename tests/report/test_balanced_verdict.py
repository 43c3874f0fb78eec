"""Imbalanced tasks: the answer compares balanced accuracy (per-example outcomes weighted by class), the key tables
show it beside accuracy, and a balanced task keeps plain accuracy."""

import numpy as np
import pytest

from medrobust.record import PER_EXAMPLE_ATTACKED, worst_key
from medrobust.report import compare, readouts, tables
from medrobust.report.render import write_report
from records import facts, record
from test_answer import rec

LABELS = [1] * 10 + [0] * 90  # 10% positive, as MedMNIST-3D tasks are


def _run(method, seed, correct, counterpart=None):
    """A run whose worst case at ε=2 gets ``correct`` (per example, 0/1) right on the 100 attacked examples."""
    acc = float(np.mean(correct))
    r = record(rec(method, 0.1, seed, 0.9, acc, counterpart=counterpart))
    y = np.array(LABELS)
    bal = float(np.mean([np.mean(np.array(correct)[y == c]) for c in (0, 1)]))
    m = r.metrics.model_copy(update={"per_example": {worst_key("2"): list(correct), worst_key("0"): [1] * 100},
                                     "per_example_labels": {PER_EXAMPLE_ATTACKED: LABELS},
                                     "worst_balanced": {"2": bal}})
    return r.model_copy(update={"metrics": m})


def _grid():
    out = []
    for seed in (0, 1, 2):
        # supervised: every negative right, every positive wrong (the majority guess): accuracy 0.90, balanced 0.50
        out.append(_run("supervised", seed, [0] * 10 + [1] * 90))
        # simclr: 9 of 10 positives, 80 + seed of 90 negatives: accuracy ≈ 0.90, balanced ≈ 0.90
        out.append(_run("simclr", seed, [1] * 9 + [0] + [1] * (80 + seed) + [0] * (10 - seed), "supervised"))
    return out


SHARES = {"class_shares": [0.9, 0.1], "label_names": ["normal", "mass"], "task_kind": "binary", "methods": ["supervised", "simclr"]}


def test_per_example_weights_give_the_balanced_accuracy():
    r = _grid()[1]
    rows = compare.per_example("worst_ref", r, "2", balanced=True)
    assert np.mean(rows) == pytest.approx(r.metrics.worst_balanced["2"])
    assert compare.per_example("worst_ref", r, "2") == r.metrics.per_example[worst_key("2")]


def test_imbalanced_answer_compares_balanced_accuracy():
    recs = _grid()
    plain = [c for c in compare.comparisons(recs, facts({"methods": ["supervised", "simclr"]}))
             if c["metric"] == "worst_ref"][0]
    bal = [c for c in compare.comparisons(recs, facts(SHARES)) if c["metric"] == "worst_ref"][0]
    assert abs(plain["mean_diff"]) < 0.02 and plain["kind"] != "better"  # accuracy sees no difference
    assert bal["mean_diff"] == pytest.approx(0.4 - 0.0, abs=0.02) and "balanced" in bal["label"]
    assert bal["kind"] == "better"


def test_tables_show_balanced_accuracy_only_when_imbalanced(tmp_path):
    recs = _grid()
    text = write_report(recs, facts(SHARES), tmp_path / "imbalanced").read_text()
    assert "worst-case balanced accuracy" in text and "imbalanced" in text and "mass 10%" in text
    assert "the robustness axes compare balanced accuracy" in text
    text = write_report(recs, facts({"class_shares": [0.6, 0.4], "label_names": ["a", "b"],
                                     "methods": ["supervised", "simclr"]}), tmp_path / "balanced").read_text()
    assert "balanced accuracy" not in text
    assert readouts.imbalanced(facts(SHARES)) and not readouts.imbalanced(facts({"class_shares": [0.3, 0.3, 0.4]}))


def test_forest_axes_say_balanced_on_an_imbalanced_task():
    from medrobust.report.plots import forest_rows

    rows = forest_rows(_grid(), facts(SHARES))
    assert rows and all("balanced" in r["axis"] for r in rows if r["axis"].startswith("adversarial"))
    plain = forest_rows(_grid(), facts({"methods": ["supervised", "simclr"]}))
    assert plain and not any("balanced" in r["axis"] for r in plain)
