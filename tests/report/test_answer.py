"""Tests for medrobust.report.answer: verdicts and numbers in the plain-words answer come from the data."""

import math
import re

import pytest

from medrobust.report import answer, stats, tables
from records import facts, records


def ans(recs, setup):
    return answer.answer(records(recs), facts(setup))


def comparisons(recs, setup):
    return answer.comparisons(records(recs), facts(setup))


def dcomps(recs, setup):
    return answer.defense_comparisons(records(recs), facts(setup))

EPS = ["0", "1", "2", "8"]
SETUP = {"reference_epsilon": "2", "epsilons": EPS}


def rec(method, fraction, seed, clean, worst2, corr=0.6, holdout=0.7, worst8=0.0, counterpart=None,
        modalities=("image",), noreport=None, checks=()):
    """One run record with the schema's fields; worst-case accuracy is given at ε=2 and ε=8."""
    m = {
        "clean": {"acc": clean, "auc": clean},
        "attacks": {"worst": {"0": clean, "1": (clean + worst2) / 2, "2": worst2, "8": worst8},
                    "pgd": {"0": clean, "1": (clean + worst2) / 2, "2": worst2, "8": worst8}},
        "corruptions": {"noise": {"1": corr + 0.02, "3": corr - 0.02}, "blur": {"1": corr, "3": corr}},
        "checks": list(checks),
    }
    if holdout is not None:
        m["holdout"] = {"acc": holdout, "auc": holdout}
    if noreport is not None:
        m["noreport"] = {"acc": noreport, "auc": noreport}
    return {"key": f"{method}-{fraction}-{seed}", "method": method, "fraction": fraction, "seed": seed,
            "kind": "self-supervised" if counterpart else "supervised", "counterpart": counterpart,
            "modalities": list(modalities), "finetune_mode": "full", "metrics": m, "timing": {}, "info": {}}


SUP_WORST = [0.40, 0.42, 0.41]
SSL_WORST = [0.55, 0.58, 0.54]
SUP_CORR = [0.60, 0.62, 0.61]
SSL_CORR = [0.63, 0.58, 0.62]  # straddles 0
SUP_HOLD = [0.80, 0.82, 0.81]
SSL_HOLD = [0.70, 0.71, 0.72]  # clearly worse


def grid(ssl_worst=SSL_WORST, ssl_clean=(0.90, 0.90, 0.90), sup_clean=(0.90, 0.90, 0.90), seeds=(0, 1, 2),
         fraction=0.1, **kw):
    out = []
    for i, s in enumerate(seeds):
        out.append(rec("supervised", fraction, s, sup_clean[i], SUP_WORST[i], SUP_CORR[i], SUP_HOLD[i], **kw))
        out.append(rec("simclr", fraction, s, ssl_clean[i], ssl_worst[i], SSL_CORR[i], SSL_HOLD[i],
                       counterpart="supervised", **kw))
    return out


NUM = r"([+-]?\d+\.\d)"


def parse_clause(text, what):
    """Numbers of the clause about ``what``: (verdict, from, to, diff, lo, hi, n)."""
    m = re.search(rf"\*\*([a-z0-9. ]+)\*\* — (?:raised |lowered )?{re.escape(what)} (?:from )?{NUM}% (?:to|→) "
                  rf"{NUM}% \({NUM} pp, 95% CI {NUM} to {NUM}, (\d+) seeds[,)]", text)
    assert m, f"no clause about {what!r} in:\n{text}"
    v, *nums, n = m.groups()
    return v, *map(float, nums), int(n)


def check_numbers(parsed, a, b):
    r = stats.paired(a, b)
    _, frm, to, diff, lo, hi, n = parsed
    assert n == r["n"]
    for got, want in [(frm, r["mean_b"]), (to, r["mean_a"]), (diff, r["mean_diff"]), (lo, r["ci_low"]),
                      (hi, r["ci_high"])]:
        assert got == pytest.approx(100 * want, abs=0.051)


def test_answer_states_verdicts_and_numbers_from_paired():
    text = ans(grid(), SETUP)
    adv = parse_clause(text, "worst-case robust accuracy at ε=2/255")
    cor = parse_clause(text, "mean corruption accuracy")
    hol = parse_clause(text, "held-out-site accuracy")
    assert (adv[0], cor[0], hol[0]) == ("better", "inconclusive", "worse")
    check_numbers(adv, SSL_WORST, SUP_WORST)
    check_numbers(cor, SSL_CORR, SUP_CORR)
    check_numbers(hol, SSL_HOLD, SUP_HOLD)
    assert "At 10% labels, SimCLR" in text
    first = text.splitlines()[0]
    assert re.search(r"Of 3 robustness comparisons .*: clearly more robust in 1, clearly less robust in 1, a bounded "
                     r"null .* in 0, inconclusive in 1, undetermined .* in 0, too few seeds in 0\.", first)
    assert len(text.strip().splitlines()) <= 15


def test_answer_changes_with_the_records():
    base = ans(grid(), SETUP)
    worse_worst = [0.30, 0.31, 0.29]
    flipped = ans(grid(ssl_worst=worse_worst), SETUP)
    assert flipped != base
    adv = parse_clause(flipped, "worst-case robust accuracy at ε=2/255")
    assert adv[0] == "worse"
    check_numbers(adv, worse_worst, SUP_WORST)
    assert "lowered worst-case robust accuracy" in flipped
    assert "clearly more robust in 0, clearly less robust in 2" in flipped.splitlines()[0]


def test_robust_difference_explained_by_clean_accuracy():
    # the self-supervised arm is 15 pp better clean and 15 pp better robust: the robustness gap is unchanged
    ssl_clean = [0.90, 0.93, 0.88]
    sup_clean = [0.75, 0.76, 0.74]
    ssl_worst = [w + (c - s) + d for w, c, s, d in zip(SUP_WORST, ssl_clean, sup_clean, (0.01, -0.01, 0.0))]
    text = ans(grid(ssl_worst=ssl_worst, ssl_clean=ssl_clean, sup_clean=sup_clean), SETUP)
    assert parse_clause(text, "worst-case robust accuracy at ε=2/255")[0] == "better"
    # worded as what was measured (the gap's change is a null, not evidence that clean accuracy explains it)
    assert "explained by clean accuracy" not in text
    assert ("the robustness gap (clean − worst case) changed by 0.0 pp (95% CI -2.5 to +2.5, Holm-adjusted p 1.000): "
            "not separable from the clean-accuracy difference at this sample size") in text
    # a real robustness gain (same clean accuracy) narrows the gap clearly
    text2 = ans(grid(), SETUP)
    assert "not separable" not in text2
    assert "the robustness gap (clean − worst case) narrowed by 14.7 pp" in text2 and "not only clean accuracy" in text2


def test_gap_comparison_direction():
    comps = {c["metric"]: c for c in comparisons(grid(), SETUP)}
    gap = comps["gap"]
    assert gap["mean_diff"] < 0 and not gap["higher_is_better"]
    assert gap["verdict"] == "better"  # smaller gap = better
    assert comps["worst_ref"]["verdict"] == "better"


def test_near_zero_at_largest_eps():
    assert "none is adversarially robust" in ans(grid(worst8=0.01), SETUP)
    assert "none is adversarially robust" not in ans(grid(worst8=0.2), SETUP)


def test_failed_check_is_a_caveat():
    bad = [{"name": "monotone_in_eps", "passed": False, "detail": "rose"}]
    assert "Caveat" in ans(grid(checks=bad), SETUP)
    assert "Caveat" not in ans(grid(checks=[{"name": "x", "passed": True, "detail": ""}]), SETUP)


def test_pairs_only_on_shared_seeds_and_one_seed_is_not_enough():
    recs = [r for r in grid() if not (r["method"] == "supervised" and r["seed"] == 2)]
    comps = comparisons(recs, SETUP)
    assert {c["n"] for c in comps} == {2}
    one = grid(seeds=(0,))
    text = ans(one, SETUP)
    assert "not enough seeds" in text and "none of the 3 comparisons can be judged" in text.splitlines()[0]
    mixed = one + [r for r in grid(seeds=(0, 1), fraction=1.0)]
    assert "too few seeds in 3." in ans(mixed, SETUP).splitlines()[0]
    assert "1 seed, no CI" in text
    assert all(c["verdict"] == "not enough seeds" for c in comparisons(one, SETUP))


def test_noreport_compared_only_when_both_arms_are_multimodal():
    mm = [dict(r, modalities=["image", "text"]) for r in grid(noreport=0.5)]
    assert any(c["metric"] == "noreport_acc" for c in comparisons(mm, SETUP))
    assert not any(c["metric"] == "noreport_acc" for c in comparisons(grid(noreport=0.5), SETUP))


def test_no_counterpart_means_no_answer():
    sup_only = [r for r in grid() if r["method"] == "supervised"]
    assert "cannot answer" in ans(sup_only, SETUP)
    assert comparisons(sup_only, SETUP) == []


def test_missing_holdout_is_left_out():
    no_holdout = [{**r, "metrics": {k: v for k, v in r["metrics"].items() if k != "holdout"}} for r in grid()]
    text = ans(no_holdout, SETUP)
    assert "held-out" not in text and "Of 2 robustness comparisons" in text


def test_report_reliance_of_image_report_arms_is_stated_from_the_numbers():
    mm = [dict(r, modalities=["image", "text"]) for r in grid(noreport=0.55)]
    text = ans(mm, SETUP)
    assert "leave the indication clean" in text
    assert "supervised at 10% labels 90.0% → 55.0%" in text and "simclr at 10% labels 90.0% → 55.0%" in text
    other = ans([dict(r, modalities=["image", "text"]) for r in grid(noreport=0.70)], SETUP)
    assert "90.0% → 70.0%" in other
    assert "leave the indication clean" not in ans(grid(), SETUP)
    assert "higher *without* the indication" not in text  # the indication helped both
    # leaving the indication out raised accuracy: said, naming the arm
    hurt = ans([dict(r, modalities=["image", "text"]) for r in grid(noreport=0.95)], SETUP)
    assert "Accuracy is higher *without* the indication for supervised, simclr:" in hurt


def test_worst_case_columns_where_the_sequence_did_not_run_are_marked():
    recs, mk = records(grid()), facts
    full = tables.eps_tables(recs, mk(SETUP), "worst")[0]
    assert full.header == ["method", "ε=0/255", "ε=1/255", "ε=2/255", "ε=8/255"] and not full.note
    part = tables.eps_tables(recs, mk({**SETUP, "worst_case_epsilons": ["2", "8"]}), "worst")[0]
    assert part.header == ["method", "ε=0/255", "ε=1/255 †", "ε=2/255", "ε=8/255"]
    assert "ran at ε ∈ {2/255, 8/255}" in part.note and "marked †" in part.note
    assert not tables.eps_tables(recs, mk({**SETUP, "worst_case_epsilons": ["2", "8"]}), "pgd")[0].note


def test_report_side_attacks_are_stated_at_their_largest_budget():
    mm = [dict(r, modalities=["image", "text"]) for r in grid(noreport=0.55)]
    for r in mm:
        low = 0.30 if r["method"] == "simclr" else 0.20
        r["metrics"]["report_attacks"] = {"report-word-substitution": {"1": 0.8, "3": low + 0.01 * r["seed"]}}
    text = ans(mm, SETUP)
    assert "report-word-substitution at budget 3:" in text
    assert "supervised at 10% labels 21.0%" in text and "simclr at 10% labels 31.0%" in text
    assert "report-word-substitution" not in ans(grid(noreport=0.55), SETUP)


def test_defended_arms_are_judged_against_their_undefended_arm_not_the_supervised_baseline():
    records = grid()
    for i, s in enumerate((0, 1, 2)):
        r = rec("simclr + pgd-at", 0.1, s, 0.85, 0.70 + 0.01 * i, counterpart="supervised")
        r["defense"], r["undefended"] = "pgd-at", "simclr"
        records.append(r)
    assert not any(c["arm"] == "simclr + pgd-at" for c in comparisons(records, SETUP))
    (worst,) = [c for c in dcomps(records, SETUP) if c["metric"] == "worst_ref"]
    assert worst["counterpart"] == "simclr" and worst["verdict"] == "better"
    assert abs(worst["mean_diff"] - (0.71 - (0.55 + 0.58 + 0.54) / 3)) < 1e-9
    text = ans(records, SETUP)
    assert "simclr + pgd-at at 10% labels: worst-case accuracy 55.7% → 71.0%" in text
    assert "clean accuracy -5.0 pp" in text and "largest clear gain: **simclr + pgd-at**" in text


def test_ablation_arms_are_judged_against_the_full_method_not_the_supervised_baseline():
    records = grid()
    for i, s in enumerate((0, 1, 2)):  # simclr with a component off: clearly less robust than full simclr
        r = rec("simclr(temperature=1)", 0.1, s, 0.90, SSL_WORST[i] - 0.10 - 0.01 * i, SSL_CORR[i], SSL_HOLD[i],
                counterpart="supervised")
        r["method_name"], r["method_params"] = "simclr", {"temperature": 1}
        records.append(r)
    comps = comparisons(records, SETUP)
    abl = {c["metric"]: c for c in comps if c["arm"] == "simclr(temperature=1)"}
    assert abl["worst_ref"]["counterpart"] == "simclr" and abl["worst_ref"]["ablation"]
    assert abs(abl["worst_ref"]["mean_diff"] - (-0.11)) < 1e-9 and abl["worst_ref"]["verdict"] == "worse"
    assert not any(c["ablation"] for c in comps if c["arm"] == "simclr")
    text = ans(records, SETUP)
    headline = text.splitlines()[0]
    assert "Of 3 robustness comparisons" in headline  # simclr vs supervised only: the ablation is not counted
    line = next(x for x in text.splitlines() if x.startswith("**Ablations**"))
    assert "`simclr(temperature=1)` vs `simclr` at 10% labels" in line
    assert "adversarial: **worse** — lowered worst-case robust accuracy at ε=2/255 from 55.7% to 44.7%" in line
    # without the full arm in the records, the arm is an ordinary self-supervised arm again
    alone = [r for r in records if r["method"] != "simclr"]
    assert {c["counterpart"] for c in comparisons(alone, SETUP)} == {"supervised"}
    assert "**Ablations**" not in ans(alone, SETUP)


def test_retrieval_and_vqa_are_compared_and_the_clear_ones_named():
    records = []
    for i, s in enumerate((0, 1, 2)):
        for method, vqa, r10 in (("supervised-multimodal", 0.50 + 0.01 * i, 0.10), ("clip", 0.60 + 0.02 * i, 0.10)):
            r = rec(method, 0.1, s, 0.9, 0.8, counterpart=None if method.startswith("sup") else "supervised-multimodal",
                    modalities=("image", "text"), noreport=0.55)
            d = {"R@10": r10 + 0.001 * s, "mean_rank": 5.0, "median_rank": 4.0, "n": 200}
            r["multimodal"] = {"vqa": {"clean": {"overall": {"accuracy": vqa, "n": 600}},
                                       "adversarial image (PGD-10, ε=2/255)": {"overall": {"accuracy": vqa - 0.2,
                                                                                           "n": 600}}},
                               "retrieval": {"clean": {"image_to_report": d, "report_to_image": d}}}
            records.append(r)
    comps = {c["metric"]: c for c in comparisons(records, SETUP)}
    assert abs(comps["vqa_acc"]["mean_diff"] - 0.11) < 1e-9 and comps["vqa_acc"]["verdict"] == "better"
    assert comps["vqa_adv"]["mean_b"] == pytest.approx(0.31)  # the attacked condition, by its id
    # r10 is the same in both arms on every seed: zero variance, p undefined — undetermined, not a test
    assert comps["r10"]["verdict"] == "undetermined" and "r10_adv" not in comps  # not measured: left out
    assert comps["vqa_acc"]["family"] == "tasks" and comps["vqa_acc"]["m_family"] == 2
    line = next(x for x in ans(records, SETUP).splitlines() if x.startswith("**Retrieval and VQA**"))
    assert "2 of 3 comparisons clear" in line
    assert "CLIP at 10% labels, VQA accuracy: **better** (51.0% → 62.0%, +11.0 pp" in line
    assert "VQA accuracy under PGD on the image: **better** (31.0% → 42.0%" in line
    assert "R@10" not in line  # no clear difference there
    assert not any(c["metric"] in answer.TASKS for c in comparisons(grid(), SETUP))  # image-only arms
    paragraphs = ans(records, SETUP).split("\n\n")
    assert any(p.startswith("**Retrieval and VQA**") for p in paragraphs)  # its own paragraph, not run together
    assert any(p.startswith("Image attacks on image+indication classifiers leave the indication clean")
               for p in paragraphs)


def test_image_report_pretraining_is_judged_through_its_image_pathway_and_indication_models_are_secondary():
    """Issue 12: the headline pairs an image+report pre-training arm whose classifier sees the image only with the
    supervised image arm; its retrieval / VQA pair with the supervised image+text arm; classifiers that see the
    indication form their own family and do not count in the headline."""
    records = grid()  # supervised vs simclr (image)
    for i, s in enumerate((0, 1, 2)):
        clip = rec("clip", 0.1, s, 0.9, 0.60 + 0.01 * i, counterpart="supervised")
        clip.update(task_counterpart="supervised-multimodal", pretrained_on=["image", "text"])
        sup_mm = rec("supervised-multimodal", 0.1, s, 0.9, 0.30 + 0.01 * i, modalities=("image", "text"))
        clip_ind = rec("clip [image+indication]", 0.1, s, 0.9, 0.50 + 0.02 * i, counterpart="supervised-multimodal",
                       modalities=("image", "text"))
        for r, vqa in ((clip, 0.6 + 0.02 * i), (sup_mm, 0.5 + 0.01 * i), (clip_ind, 0.6)):
            r["multimodal"] = {"vqa": {"clean": {"overall": {"accuracy": vqa, "n": 600}}}}
        records += [clip, sup_mm, clip_ind]
    comps = comparisons(records, SETUP)
    by = {(c["arm"], c["metric"]): c for c in comps}
    assert by[("clip", "worst_ref")]["counterpart"] == "supervised" and by[("clip", "worst_ref")]["family"] == "headline"
    assert by[("clip", "vqa_acc")]["counterpart"] == "supervised-multimodal"
    assert by[("clip", "vqa_acc")]["mean_diff"] == pytest.approx(0.11)
    ind = by[("clip [image+indication]", "worst_ref")]
    assert ind["family"] == "image+indication" and ind["counterpart"] == "supervised-multimodal"
    assert ind["mean_diff"] == pytest.approx(0.21)
    headline = [c for c in comps if c["family"] == "headline"]
    assert {c["arm"] for c in headline} == {"simclr", "clip"} and len(headline) == 6
    text = ans(records, SETUP)
    first = text.split("\n")[0]
    assert first.startswith("**Of 6 robustness comparisons") and "image pathway" in first
    assert "The CIs are per comparison, not adjusted" in first  # a CI excluding 0 is not yet a clear result
    secondary = text.split("**Image + indication at decision time**")[1].split("**Retrieval and VQA**")[0]
    assert "clip [image+indication] pre-training vs Supervised (image+indication)" in secondary


# ---------------------------------------------------------------- multiplicity, nulls, bootstrap, exclusions


def test_holm_is_applied_within_each_family_and_named_in_the_answer():
    comps = comparisons(grid(), SETUP)
    for fam in {c["family"] for c in comps}:
        mine = [c for c in comps if c["family"] == fam]
        assert [c["p_adj"] for c in mine] == pytest.approx(stats.holm([c["p"] for c in mine]), nan_ok=True)
    assert {c["family"] for c in comps if c["metric"] in answer.ROBUSTNESS} == {"headline"}
    assert {c["family"] for c in comps if c["metric"] in ("clean_acc", "gap")} == {"secondary"}
    head = {c["metric"]: c for c in comps if c["family"] == "headline"}
    assert head["worst_ref"]["p_adj"] > head["worst_ref"]["p"]  # corrected: larger than the raw p
    text = ans(grid(), SETUP)
    assert "Holm–Bonferroni over the family's 3 tested comparisons" in text
    assert "chance alone would make about 0.2 of them clear (0.05 × 3)" in text
    assert "at most 5%" in text


def test_a_difference_clear_alone_is_not_clear_after_holm():
    ssl_worst = [w + d for w, d in zip(SUP_WORST, (0.05, 0.025, 0.04))]
    raw = stats.paired(ssl_worst, SUP_WORST)
    assert 0.025 < raw["p"] < 0.05 and raw["ci_low"] > 0  # "better" under the previous, uncorrected rule
    comps = {c["metric"]: c for c in comparisons(grid(ssl_worst=ssl_worst), SETUP) if c["family"] == "headline"}
    # three tests: site shift has the smallest p (x3), worst case the middle one (x2), corruptions p = 1
    assert comps["holdout_acc"]["p"] < raw["p"] < comps["corr_mean"]["p"]
    assert comps["worst_ref"]["p_adj"] == pytest.approx(2 * raw["p"])
    assert comps["worst_ref"]["kind"] == stats.INCONCLUSIVE  # CI +1.7 to +7.0 pp: not a bound either
    assert comps["holdout_acc"]["kind"] == stats.WORSE


def test_nulls_are_worded_as_bounded_or_inconclusive():
    recs = grid()
    for r in recs:  # corruption difference ±0.3 pp: a bounded null
        r["metrics"]["corruptions"] = {"noise": {"1": 0.6 + (0.003 * (r["seed"] - 1) if r["method"] == "simclr" else 0)}}
    text = ans(recs, SETUP)
    assert re.search(r"corruptions: \*\*no difference larger than (0\.5|1\.0|1\.5) pp\*\* — mean corruption", text)
    assert "corruptions: **inconclusive**" in ans(grid(), SETUP)  # the ±9 pp CI of SSL_CORR
    first = text.splitlines()[0]
    assert "a bounded null (no difference larger than X pp, X ≤ 3) in 1, inconclusive in 0" in first


def test_zero_variance_headline_difference_is_undetermined():
    recs = grid(ssl_worst=[w + 0.01 for w in SUP_WORST])  # exactly +1 pp on every seed
    (w,) = [c for c in comparisons(recs, SETUP) if c["metric"] == "worst_ref"]
    assert w["kind"] == stats.UNDETERMINED and w["verdict"] == "undetermined"
    text = ans(recs, SETUP)
    assert "undetermined (zero variance) in 1" in text.splitlines()[0]
    assert "p undefined: zero variance" in text


def _with_per_example(recs, n=100):
    """Per-example outcomes whose means are the records' metrics (k of n examples correct)."""
    for r in recs:
        m = r["metrics"]
        ones = lambda acc: [1] * round(acc * n) + [0] * (n - round(acc * n))  # noqa: E731
        corr = sum(v for per in m["corruptions"].values() for v in per.values()) / 4
        m["per_example"] = {"worst@0": ones(m["attacks"]["worst"]["0"]), "worst@2": ones(m["attacks"]["worst"]["2"]),
                            "corruptions": ones(corr), "holdout": ones(m["holdout"]["acc"])}
    return recs


def test_headline_uses_the_hierarchical_bootstrap_when_records_carry_per_example_outcomes():
    recs = _with_per_example(grid())
    comps = {c["metric"]: c for c in comparisons(recs, SETUP)}
    w = comps["worst_ref"]
    assert w["test"] == "paired t + bootstrap" and w["n_examples"] == 100
    rows = lambda arm: [r["metrics"]["per_example"]["worst@2"] for r in recs if r["method"] == arm]  # noqa: E731
    boot = stats.hierarchical_bootstrap(rows("simclr"), rows("supervised"))
    seeds_only = stats.paired(SSL_WORST, SUP_WORST)
    assert (w["boot_ci_low"], w["boot_ci_high"], w["boot_p"]) == (boot["ci_low"], boot["ci_high"], boot["p"])
    assert (w["t_ci_low"], w["t_ci_high"], w["t_p"]) == pytest.approx(
        (seeds_only["ci_low"], seeds_only["ci_high"], seeds_only["p"]))
    # both tests must find it: the larger p, the CI spanning both
    assert w["p"] == max(boot["p"], seeds_only["p"])
    assert w["ci_low"] == pytest.approx(min(boot["ci_low"], seeds_only["ci_low"]))
    assert w["ci_high"] == pytest.approx(max(boot["ci_high"], seeds_only["ci_high"]))
    gap = comps["gap"]  # per attacked example: worst case at ε=0 minus at the reference ε
    assert gap["test"] == "paired t + bootstrap" and gap["ci_high"] < 0 and gap["kind"] == stats.BETTER
    clean_acc = comps["clean_acc"]
    assert clean_acc["test"] == "paired t"  # no per-example data for clean accuracy: seeds only
    text = ans(recs, SETUP)
    assert "3 seeds × 100 test examples" in text and "hierarchical paired bootstrap over seeds and test examples" in text
    assert "called clear only when both find it" in text
    # one record without per-example data: that comparison falls back to the seeds-only test, and says so
    recs[0]["metrics"].pop("per_example")
    comps = {c["metric"]: c for c in comparisons(recs, SETUP)}
    assert comps["worst_ref"]["test"] == "paired t" and comps["worst_ref"]["ci_low"] == comps["worst_ref"]["t_ci_low"]
    table = tables.comparison_table(comparisons(recs, SETUP))
    tests = {row[3]: row[table.header.index("test")] for row in table.rows}
    assert tests["mean corruption accuracy"].startswith("paired t") and "paired t" in tests["held-out-site accuracy"]


def test_a_difference_the_seeds_cannot_test_stays_undetermined_whatever_the_bootstrap_says():
    recs = _with_per_example(grid(ssl_worst=[w + 0.05 for w in SUP_WORST]))  # +5 pp on every seed exactly
    (w,) = [c for c in comparisons(recs, SETUP) if c["metric"] == "worst_ref"]
    assert w["test"] == "paired t + bootstrap" and math.isnan(w["t_p"])  # the t test is undefined
    assert w["boot_p"] < 0.05  # the bootstrap alone would call it clear (5 of 100 examples per seed) ...
    assert w["kind"] == stats.UNDETERMINED  # ... but the seed-to-seed variance is unknown: not clear


def test_a_run_failing_a_self_check_is_not_paired():
    recs = grid()
    for r in recs:
        if r["method"] == "simclr" and r["seed"] == 1:  # e.g. a kNN probe: exactly zero input gradient
            r["metrics"]["checks"] = [{"name": "gradients_nonzero", "passed": False, "detail": "all zero"}]
    comps = {c["metric"]: c for c in comparisons(recs, SETUP)}
    assert comps["worst_ref"]["n"] == 2 and comps["worst_ref"]["excluded"] == [(1, ["gradients_nonzero"])]
    assert comps["gap"]["n"] == 2
    assert comps["worst_ref"]["mean_a"] == pytest.approx((SSL_WORST[0] + SSL_WORST[2]) / 2)
    assert comps["corr_mean"]["n"] == 3 and comps["corr_mean"]["excluded"] == []  # not an adversarial comparison
    text = ans(recs, SETUP)
    assert "**Self-check exclusions:** 1 seed pair was kept out" in text
    assert "simclr vs supervised at 10% labels, seed 1 (gradients_nonzero failed; left out of the adversarial" in text
    assert "1 seed pair excluded: failed gradients_nonzero" in text
    # above chance fails: that pair leaves every comparison
    for r in recs:
        if r["method"] == "supervised" and r["seed"] == 2:
            r["metrics"]["checks"] = [{"name": "above_chance", "passed": False, "detail": "50%"}]
    comps = {c["metric"]: c for c in comparisons(recs, SETUP)}
    assert comps["corr_mean"]["n"] == 2 and comps["holdout_acc"]["n"] == 2 and comps["worst_ref"]["n"] == 1
    assert "2 seed pairs were kept out" in ans(recs, SETUP) and "left out of every comparison" in ans(recs, SETUP)
    # a check that does not distort a comparison excludes nothing
    for r in recs:
        r["metrics"]["checks"] = [{"name": "noise_weaker_than_attack", "passed": False, "detail": ""}]
    assert all(not c["excluded"] for c in comparisons(recs, SETUP))


def test_every_pair_excluded_is_said_so():
    bad = [{"name": "monotone_in_eps", "passed": False, "detail": "rose"}]
    comps = {c["metric"]: c for c in comparisons(grid(checks=bad), SETUP)}
    assert comps["worst_ref"]["n"] == 0 and len(comps["worst_ref"]["excluded"]) == 3
    assert comps["worst_ref"]["kind"] == stats.TOO_FEW
    text = ans(grid(checks=bad), SETUP)
    assert "adversarial: **not enough seeds** — every seed pair (3) was kept out" in text
    dead = [{"name": "above_chance", "passed": False, "detail": "majority class"}]
    first = ans(grid(checks=dead), SETUP).splitlines()[0]
    assert "None of the 3 comparisons can be judged: failed self-checks leave fewer than 2" in first


def test_defended_arm_failing_a_check_is_not_paired():
    records = grid()
    for i, s in enumerate((0, 1, 2)):
        r = rec("simclr + noise", 0.1, s, 0.85, 0.70 + 0.01 * i, counterpart="supervised",
                checks=[{"name": "eps0_equals_clean", "passed": s != 0, "detail": ""}])
        r["defense"], r["undefended"] = "noise", "simclr"
        records.append(r)
    worst = next(c for c in dcomps(records, SETUP) if c["metric"] == "worst_ref")
    assert worst["n"] == 2 and worst["excluded"] == [(0, ["eps0_equals_clean"])] and worst["family"] == "defenses"


def _five_seeds():
    out = []
    for s in range(5):
        out.append(rec("supervised", 0.1, s, 0.9, 0.40 + 0.01 * s))
        out.append(rec("simclr", 0.1, s, 0.9, 0.50 + 0.012 * s, counterpart="supervised"))
    return out


def test_fewer_than_five_seeds_is_called_a_demonstration():
    text = ans(grid(), SETUP)
    assert "With 3 seeds this study is a demonstration" in text and "`configs/full.yaml`" in text
    assert "demonstration" not in ans(_five_seeds(), SETUP)
    assert "With 3 seeds" in ans(_five_seeds(), dict(SETUP, seeds=[0, 1, 2]))  # the study's own seed list counts


def test_comparison_table_shows_raw_and_adjusted_p_and_names_the_correction():
    table = tables.comparison_table(comparisons(grid(), SETUP))
    for col in ("family", "95% CI (pp)", "test", "seeds-only t 95% CI (pp)", "p", "p (Holm)", "excluded pairs"):
        assert col in table.header
    assert "Holm–Bonferroni within each family" in table.note and "hierarchical paired bootstrap" in table.note
    row = next(r for r in table.rows if r[3].startswith("worst-case"))
    c = next(c for c in comparisons(grid(), SETUP) if c["metric"] == "worst_ref")
    assert row[table.header.index("p")] == stats.fmt_p(c["p"])
    assert row[table.header.index("p (Holm)")] == stats.fmt_p(c["p_adj"])
    assert row[table.header.index("family")] == "headline robustness"
