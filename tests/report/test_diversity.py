"""The diversity comparisons and the answer's Diversity paragraph: which arms pair, the sign of each difference,
negative transfer named with its numbers."""

import re

import pytest

from medrobust.report import answer
from records import facts, record
from test_answer import rec

SETUP = {"reference_epsilon": "2", "epsilons": ["0", "1", "2", "8"],
         "pools": ["2d: target (1×28×28, 1200 images)", "mixed: target (1×28×28, 1200 images); ct (1×28×28×28)"]}


def _pool(d: dict, arm: str, pool: str | None, target_only: str | None, role: str | None = None):
    r = record(d)
    update = {"arm": arm, "pool": pool, "target_only": target_only, "key": f"{arm}-{r.seed}"}
    if role:
        update["role"] = role
    return r.model_copy(update=update)


def grid():
    """supervised, simclr, simclr @ 2d (+1 pp worst case), simclr @ mixed (-15 pp: negative transfer),
    supervised-multitask @ mixed; three seeds, consistent differences."""
    out = []
    for s, jitter in enumerate((0.0, 0.005, -0.005)):
        out.append(record(rec("supervised", 0.1, s, 0.90, 0.40 + jitter)))
        out.append(record(rec("simclr", 0.1, s, 0.90, 0.50 + jitter, counterpart="supervised")))
        out.append(_pool(rec("simclr", 0.1, s, 0.90, 0.51 + 2 * jitter, counterpart="supervised"),
                         "simclr @ 2d", "2d", "simclr"))
        out.append(_pool(rec("simclr", 0.1, s, 0.90, 0.35 + 2 * jitter, counterpart="supervised"),
                         "simclr @ mixed", "mixed", "simclr"))
        out.append(_pool(rec("supervised-multitask", 0.1, s, 0.90, 0.45 - jitter, counterpart="supervised"),
                         "supervised-multitask @ mixed", "mixed", "supervised-multitask", "supervised-pretraining"))
    return out


def test_pool_arms_pair_with_target_only_other_pools_and_supervised_pretraining():
    comps = answer.diversity_comparisons(grid(), facts(SETUP))
    pairs = {(c["arm"], c["counterpart"], c["pair"]) for c in comps}
    assert pairs == {("simclr @ 2d", "simclr", "target-only"), ("simclr @ mixed", "simclr", "target-only"),
                     ("simclr @ mixed", "simclr @ 2d", "other-pool"),
                     ("simclr @ mixed", "supervised-multitask @ mixed", "supervised-pool"),
                     # supervised-multitask has no target-only arm here; it is compared with the supervised arm
                     ("supervised-multitask @ mixed", "supervised", "supervised")}
    assert all(c["family"] == "diversity" for c in comps)
    worst = {(c["arm"], c["counterpart"]): c for c in comps if c["metric"] == "worst_ref"}
    assert abs(worst[("simclr @ mixed", "simclr")]["mean_diff"] - (-0.15)) < 1e-9  # pool arm minus the other
    assert abs(worst[("simclr @ mixed", "simclr @ 2d")]["mean_diff"] - (-0.16)) < 1e-9
    assert worst[("simclr @ mixed", "simclr")]["kind"] == "worse"
    assert worst[("supervised-multitask @ mixed", "supervised")]["mean_diff"] > 0


def test_headline_keeps_supervised_pretraining_out_and_the_answer_names_negative_transfer():
    recs = grid()
    headline = [c for c in answer.comparisons(recs, facts(SETUP)) if c["family"] == "headline"]
    assert {c["arm"] for c in headline} == {"simclr", "simclr @ 2d", "simclr @ mixed"}  # self-supervised only
    text = answer.answer(recs, facts(SETUP))
    para = text[text.index("**Diversity**"):]
    assert "mixed: target (1×28×28, 1200 images); ct (1×28×28×28)" in para
    assert "`simclr @ mixed` vs the same method pre-trained on another pool (`simclr @ 2d`)" in para
    m = re.search(r"\*\*Negative transfer:\*\* pre-training on the pool clearly lowered (.*?) compared with", para)
    assert m and "adversarial for `simclr @ mixed` at 10% labels (−15.0 pp)" in m.group(1).replace("-", "−")
    assert "simclr @ 2d" not in m.group(1)  # +1 pp is not a harm


def test_forest_plot_rows_are_the_headline_and_diversity_differences(tmp_path):
    from PIL import Image

    from medrobust.report import plots

    recs = grid()
    rows = plots.forest_rows(recs, facts(SETUP))
    comps = [c for c in answer.comparisons(recs, facts(SETUP)) if c["family"] == "headline"] + [
        c for c in answer.diversity_comparisons(recs, facts(SETUP)) if c["metric"] in plots.FOREST_AXES]
    assert len(rows) == len(comps) and [r["axis"] for r in rows] == sorted(
        (r["axis"] for r in rows), key=list(plots.FOREST_AXES.values()).index)  # grouped by axis, in order
    neg = next(r for r in rows if r["label"] == "simclr @ mixed vs simclr (10%)" and r["axis"].startswith("adversarial"))
    assert neg["diff"] == pytest.approx(-15.0) and neg["lo"] <= neg["diff"] <= neg["hi"] and neg["kind"] == "worse"
    path = plots.differences(recs, facts(SETUP), tmp_path / "differences.png")
    with Image.open(path) as img:
        assert img.height > 0.3 * plots.DPI * len(rows)  # one row per difference
    assert plots.differences([], facts(SETUP), tmp_path / "none.png") is None and not (tmp_path / "none.png").exists()


def test_site_shift_panels_have_no_empty_slots(tmp_path):
    from medrobust.report import plots

    recs = grid() + [record(rec("supervised", 1.0, s, 0.95, 0.5)) for s in (0, 1)]  # only supervised at 100%
    methods = ["supervised", "simclr", "simclr @ 2d"]
    assert plots.site_shift_arms(recs, methods, 0.1) == methods
    assert plots.site_shift_arms(recs, methods, 1.0) == ["supervised"]
    assert plots.site_shift(recs, facts(SETUP), tmp_path / "s.png").exists()
