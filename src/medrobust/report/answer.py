"""The answer to the study's question, in plain words, written from the numbers.

The comparisons come from :mod:`medrobust.report.compare` (re-exported here: :func:`comparisons`,
:func:`defense_comparisons`); :func:`answer` turns them into a short Markdown text. Every number in the text
is formatted by the same functions as the paired comparison table, so the text and the table agree digit for
digit. Words follow the verdict rules of :mod:`medrobust.report.stats`: "clearly" only for a Holm-adjusted
p < 0.05 within the family; a null is either bounded ("no difference larger than X pp") or inconclusive.
"""

from __future__ import annotations

import math

from medrobust.record import RunRecord, StudyFacts
from medrobust.report import readouts, stats, tables
from medrobust.report.corruption_error import corruption_error_rows
from medrobust.report.compare import (ABLATION_WORDS, COMPARED, EXCLUDE_ALL, ROBUSTNESS, TASKS, TEST_BOTH,  # noqa: F401
                                      DIVERSITY, WITH_INDICATION, comparisons, defense_comparisons,
                                      diversity_comparisons)
from medrobust.report.stats import (BETTER, BOUNDED, CLEAR, INCONCLUSIVE, TOO_FEW, UNDETERMINED, WORSE, fmt_ci,
                                    fmt_diff, fmt_eps, fmt_fraction, fmt_p, fmt_value)

NEAR_ZERO = 0.05
#: fewer seeds than this: the answer says its conclusions are a demonstration and points to FULL_CONFIG
MIN_SEEDS = 5
FULL_CONFIG = "configs/full.yaml"


def pretty(records: list[RunRecord], arm: str) -> str:
    """Human name of an arm: the method's display name (``simclr`` → ``SimCLR``, carried by the record) for an
    arm that is the plain method, else the arm's label (``robust-mmr(domain_weight=0)``, ``simclr [linear]``)."""
    r = next((r for r in records if r.arm == arm), None)
    if r is not None and r.pool and r.arm == f"{r.method} @ {r.pool}":
        return f"{r.display_name} @ {r.pool}"
    return r.display_name if r is not None and r.arm == r.method else arm


def _multimodal(records: list[RunRecord], arm: str) -> bool:
    return any(r.arm == arm and r.uses_text for r in records)


def _tested(comps: list[dict]) -> int:
    """Comparisons of a family that are tests (a defined p): the ``m`` of its Holm correction."""
    return sum(math.isfinite(stats.num(c["p"])) for c in comps)


def _chance(comps: list[dict], short: bool = False) -> str:
    """What chance alone would give in this family without the correction, and what Holm guarantees."""
    m = _tested(comps)
    if short:
        return (f"Holm–Bonferroni over the family's {m} tested comparison{'s' if m != 1 else ''}; about "
                f"{stats.ALPHA * m:.1f} would be clear by chance alone without it")
    return (f"Holm–Bonferroni over the family's {m} tested comparison{'s' if m != 1 else ''}: without a correction "
            f"chance alone would make about {stats.ALPHA * m:.1f} of them clear (0.05 × {m}); with it the chance of any "
            f"false clear result in the family is at most 5%")


def _kinds(comps: list[dict]) -> str:
    """``"1 better, 0 worse, 2 bounded nulls, ..."``: how many comparisons of each kind."""
    n = {k: sum(c["kind"] == k for c in comps) for k in stats.KINDS}
    return (f"{n[BETTER]} better, {n[WORSE]} worse, {n[BOUNDED]} bounded null{'s' if n[BOUNDED] != 1 else ''}, "
            f"{n[INCONCLUSIVE]} inconclusive, {n[UNDETERMINED]} undetermined, {n[TOO_FEW]} with too few seeds")


def _defense_line(records: list[RunRecord], setup: StudyFacts, comps: list[dict]) -> str:
    """Which defense helps, by how much, at what clean cost (``comps``: :func:`defense_comparisons`)."""
    if not comps:
        return ""
    ref = tables.reference_eps(records, setup)
    parts = []
    for c in (c for c in comps if c["metric"] == "worst_ref"):
        clean = next((d for d in comps if d["metric"] == "clean_acc" and d["arm"] == c["arm"]
                      and d["fraction"] == c["fraction"]), None)
        cost = ("" if clean is None
                else f"; clean accuracy {fmt_diff(clean['mean_diff'])} pp, **{clean['verdict']}**")
        parts.append(f"{c['arm']} at {fmt_fraction(c['fraction'])} labels: worst-case accuracy "
                     f"{fmt_value(c['mean_b'])}% → {fmt_value(c['mean_a'])}% (**{c['verdict']}**, {_numbers(c)}{cost})")
    best = max((c for c in comps if c["metric"] == "worst_ref" and c["kind"] == BETTER),
               key=lambda c: c["mean_diff"], default=None)
    head = (f"Defenses (adaptive attacks, ε={fmt_eps(ref)}; {_chance(comps, True)}): " if ref
            else f"Defenses ({_chance(comps, True)}): ")
    tail = (f" The largest clear gain: **{best['arm']}** at {fmt_fraction(best['fraction'])} labels." if best
            else " No defense clearly raised worst-case accuracy.")
    return head + "; ".join(parts) + "." + tail


def _tasks_line(records: list[RunRecord], comps: list[dict]) -> str:
    """The retrieval / VQA comparisons of the pre-trained image+report arms with their supervised counterpart:
    how many of each kind, and the clear ones with their numbers."""
    mine = [c for c in comps if c["family"] == "tasks"]
    if not mine:
        return ""
    clear = [c for c in mine if c["kind"] in CLEAR]
    head = (f"**Retrieval and VQA** (each pre-trained image+report arm vs its supervised counterpart, fine-tuned "
            f"on the same labeled pairs): {len(clear)} of {len(mine)} comparisons clear after {_chance(mine, True)}; "
            f"{_kinds(mine)}")
    if all(c["kind"] == TOO_FEW for c in mine):
        return head + " — too few seeds to tell."
    if not clear:
        return head + " — no clear difference to retrieval R@10 or VQA accuracy, clean or attacked."
    parts = [f"{pretty(records, c['arm'])} at {fmt_fraction(c['fraction'])} labels, {c['label']}: **{c['verdict']}** "
             f"({fmt_value(c['mean_b'])}% → {fmt_value(c['mean_a'])}%, {_numbers(c)})" for c in clear]
    return head + ". Clear: " + "; ".join(parts) + "."


_DIVERSITY_WORDS = {"clean_acc": "clean", **ROBUSTNESS}
_PAIR_WORDS = {"target-only": "vs the same method pre-trained on the target only",
               "other-pool": "vs the same method pre-trained on another pool",
               "supervised-pool": "vs supervised pre-training on the same pool",
               "supervised": "vs supervised training on the target's sparse labels"}


def _diversity_line(records: list[RunRecord], comps: list[dict], setup: StudyFacts) -> str:
    """The Diversity paragraph: does pre-training on the pool change clean accuracy and the three robustness axes,
    against target-only pre-training, against supervised pre-training on the pool and (for that one) against the
    supervised arm — and where the pool hurt (negative transfer)."""
    if not comps:
        return ""
    pools = sorted({r.pool for r in records if r.pool})
    parts = []
    for arm, other, pair, f in dict.fromkeys((c["arm"], c["counterpart"], c["pair"], c["fraction"]) for c in comps):
        mine = [c for c in comps if (c["arm"], c["counterpart"], c["fraction"]) == (arm, other, f)]
        if all(c["kind"] == TOO_FEW for c in mine):
            clauses = [f"**{mine[0]['verdict']}** on every axis ({_numbers(mine[0]).split(', ', 1)[1]})"]
        else:
            clauses = [f"{_DIVERSITY_WORDS[c['metric']]}: **{c['verdict']}** ({fmt_value(c['mean_b'])}% → "
                       f"{fmt_value(c['mean_a'])}%, {_numbers(c)})" for c in mine]
        parts.append(f"- `{arm}` {_PAIR_WORDS[pair]} (`{other}`) at {fmt_fraction(f)} labels — " + "; ".join(clauses)
                     + ".")
    hurt = [c for c in comps if c["kind"] == WORSE and c["pair"] == "target-only"]
    helped = [c for c in comps if c["kind"] == BETTER and c["pair"] == "target-only"]
    if hurt:
        tail = ("**Negative transfer:** pre-training on the pool clearly lowered " + "; ".join(
            f"{_DIVERSITY_WORDS[c['metric']]} for `{c['arm']}` at {fmt_fraction(c['fraction'])} labels "
            f"({fmt_diff(c['mean_diff'])} pp)" for c in hurt) + " compared with pre-training on the target alone "
            "(mixing modalities or 2D and 3D sources can fall below single-source pre-training).")
    elif helped:
        tail = "The pool clearly helped: " + "; ".join(
            f"{_DIVERSITY_WORDS[c['metric']]} for `{c['arm']}` at {fmt_fraction(c['fraction'])} labels "
            f"({fmt_diff(c['mean_diff'])} pp)" for c in helped) + "; no clear harm on the other axes."
    elif all(c["kind"] == TOO_FEW for c in comps if c["pair"] == "target-only"):
        tail = ("Whether the pool helps or hurts cannot be judged here: too few usable seed pairs against "
                "target-only pre-training.")
    else:
        tail = ("No clear difference between pre-training on the pool and on the target alone on any axis "
                f"({_kinds([c for c in comps if c['pair'] == 'target-only'])}).")
    desc = "; ".join(x for x in setup.pools) or ", ".join(pools)
    head = (f"**Diversity** — pre-training on a pool of other data ({desc}) instead of the target's training "
            f"images alone; differences are the pool arm minus the other arm, paired by seed; {_chance(comps, True)}:")
    return "\n".join([head, ""] + parts + ["", tail])


def _ablation_line(comps: list[dict]) -> str:
    """What each switched-off component did to robustness, relative to the full method on the same seeds."""
    abl = [c for c in comps if c["family"] == "ablations"]
    if not abl:
        return ""
    parts = []
    for arm, f in dict.fromkeys((c["arm"], c["fraction"]) for c in abl):
        mine = [c for c in abl if c["arm"] == arm and c["fraction"] == f]
        parts.append(f"`{arm}` vs `{mine[0]['counterpart']}` at {fmt_fraction(f)} labels — "
                     + "; ".join(_sentence(c) for c in mine))
    return ("**Ablations** (one component switched off, compared with the full method on the same seeds; "
            f"'better' means better *without* the component; {_chance(abl, True)}): " + ". ".join(parts) + ".")


def _excluded_note(c: dict) -> str:
    k = len(c.get("excluded") or ())
    if not k:
        return ""
    names = sorted({n for _, why in c["excluded"] for n in why})
    return f"; {k} seed pair{'s' if k != 1 else ''} excluded: failed {', '.join(names)}"


def _numbers(c: dict) -> str:
    """``"+13.8 pp, 95% CI +6.1 to +21.5, 3 seeds × 100 test examples, p 0.004, Holm-adjusted p 0.012"``."""
    seeds = f"{c['n']} seed" + ("s" if c["n"] != 1 else "")
    if c.get("test") == TEST_BOTH and c.get("n_examples"):
        seeds += f" × {c['n_examples']} test examples"
    if c["n"] < 2:
        return f"{fmt_diff(c['mean_diff'])} pp, {seeds}, no CI{_excluded_note(c)}"
    p = (f"p {fmt_p(c['p'])}, Holm-adjusted p {fmt_p(c['p_adj'])}" if math.isfinite(stats.num(c["p"]))
         else "p undefined: zero variance")
    return f"{fmt_diff(c['mean_diff'])} pp, 95% CI {fmt_ci(c['ci_low'], c['ci_high'])}, {seeds}, {p}{_excluded_note(c)}"


def _sentence(c: dict) -> str:
    """One clause about one comparison, e.g. ``adversarial: **better** — raised ... from 41.2% to 55.0% (...)``."""
    what, word = c["label"], ABLATION_WORDS[c["metric"]]
    if c["n"] == 0 and c.get("excluded"):
        names = ", ".join(sorted({n for _, why in c["excluded"] for n in why}))
        return (f"{word}: **{c['verdict']}** — every seed pair ({len(c['excluded'])}) was kept out because a run "
                f"failed a self-check ({names})")
    a, b = fmt_value(c["mean_a"]) + "%", fmt_value(c["mean_b"]) + "%"
    if c["kind"] in CLEAR:
        verb = "raised" if c["mean_diff"] > 0 else "lowered"
        body = f"{verb} {what} from {b} to {a} ({_numbers(c)})"
    else:
        body = f"{what} {b} → {a} ({_numbers(c)})"
    return f"{word}: **{c['verdict']}** — {body}"


def _gap_clause(by_metric: dict) -> str:
    """For a clear robust-accuracy difference: what the robustness gap (clean − worst case) did, as measured."""
    w, g = by_metric.get("worst_ref"), by_metric.get("gap")
    if not w or not g or w["kind"] not in CLEAR or g["n"] < 2:
        return ""
    p = f", Holm-adjusted p {fmt_p(g['p_adj'])}" if math.isfinite(stats.num(g["p_adj"])) else ""
    nums = f"95% CI {fmt_ci(g['ci_low'], g['ci_high'])}{p}"
    if g["kind"] == UNDETERMINED:
        return (f"; the robustness gap (clean − worst case) changed by {fmt_diff(g['mean_diff'])} pp on every seed "
                "(zero variance: undetermined)")
    if g["kind"] in CLEAR:
        change = "narrowed" if g["mean_diff"] < 0 else "widened"
        return (f"; the robustness gap (clean − worst case) {change} by {fmt_value(abs(g['mean_diff']))} pp "
                f"({nums}): the difference is not only clean accuracy")
    return (f"; the robustness gap (clean − worst case) changed by {fmt_diff(g['mean_diff'])} pp ({nums}): not "
            f"separable from the clean-accuracy difference at this sample size")


def _exclusion_line(comps: list[dict]) -> str:
    """How many seed pairs failing self-checks were kept out of comparisons, and why."""
    pairs: dict[tuple, tuple[set, bool]] = {}
    for c in comps:
        for seed, why in c.get("excluded") or ():
            key = (c["arm"], c["counterpart"], c["fraction"], seed)
            names, everywhere = pairs.get(key, (set(), False))
            pairs[key] = (names | set(why), everywhere or any(n in EXCLUDE_ALL for n in why))
    if not pairs:
        return ""
    shown = [f"{arm} vs {cp} at {fmt_fraction(f)} labels, seed {s} ({', '.join(sorted(names))} failed; left out of "
             + ("every comparison" if everywhere else "the adversarial comparisons: worst case and robustness gap")
             + ")" for (arm, cp, f, s), (names, everywhere) in pairs.items()]
    more = f"; and {len(shown) - 4} more" if len(shown) > 4 else ""
    k = len(pairs)
    return (f"**Self-check exclusions:** {k} seed pair{'s were' if k != 1 else ' was'} kept out of the comparisons "
            f"a failed self-check would distort — " + "; ".join(shown[:4]) + more + ".")


def _demo_line(records: list[RunRecord], setup: StudyFacts) -> str:
    """Under MIN_SEEDS seeds: say that the conclusions are a demonstration and where the full study is."""
    n = len(setup.seeds) or len({r.seed for r in records})
    if n >= MIN_SEEDS:
        return ""
    return (f"**With {n} seed{'s' if n != 1 else ''} this study is a demonstration; its conclusions are not "
            f"results:** so few seeds give wide confidence intervals and a coarse resampling of training runs. For "
            f"conclusions run `{FULL_CONFIG}` ({MIN_SEEDS} seeds, 300 attacked "
            "images, the published AutoAttack budgets; a GPU or an overnight CPU run).")


def _near_zero_line(records: list[RunRecord], setup: StudyFacts) -> str:
    """Say so when every arm is below 5% worst-case accuracy at the largest ε."""
    grid = tables.eps_order(records, setup)
    if not grid or stats.num(grid[-1]) <= 0:
        return ""
    top = grid[-1]
    means = [tables.summary(records, m, f, lambda r: readouts.attack_acc(r, "worst", top))[0]
             for m in tables.method_order(records, setup) for f in tables.fraction_order(records)]
    means = [x for x in means if math.isfinite(x)]
    if not means or max(means) >= NEAR_ZERO:
        return ""
    return (f"At the largest budget ε={fmt_eps(top)} every arm is near 0% worst-case accuracy "
            f"(highest mean {fmt_value(max(means))}%): none is adversarially robust without a defense.")


def _indication_reliance_line(records: list[RunRecord], setup: StudyFacts) -> str:
    """For image+indication classifiers: image attacks leave the indication clean, so say how much they lean on it
    (clean accuracy with it and with it left out through the model's missing-text path), and when leaving it out
    *raises* accuracy."""
    found = []
    for m in tables.method_order(records, setup):
        if not _multimodal(records, m):
            continue
        for f in tables.fraction_order(records):
            with_text = tables.summary(records, m, f, lambda r: readouts.acc(r, "clean"))[0]
            without = tables.summary(records, m, f, lambda r: readouts.acc(r, "without_text"))[0]
            if math.isfinite(with_text) and math.isfinite(without):
                found.append((m, f, with_text, without))
    if not found:
        return ""
    parts = [f"{m} at {fmt_fraction(f)} labels {fmt_value(a)}% → {fmt_value(b)}%" for m, f, a, b in found]
    hurts = list(dict.fromkeys(m for m, _f, a, b in found if b > a))
    tail = (" Accuracy is higher *without* the indication for " + ", ".join(hurts) + ": its text pathway fits the "
            "training indications rather than helping (a secondary result, not the headline)." if hurts else "")
    return ("Image attacks on image+indication classifiers leave the indication clean; clean accuracy with → "
            "without the indication: " + "; ".join(parts) + "." + tail + _text_attack_line(records, setup))


def _text_attack_line(records: list[RunRecord], setup: StudyFacts) -> str:
    """The strongest budget of each text-side / joint attack, per image+indication arm and label fraction."""
    names = list(dict.fromkeys(a for r in records for a in r.metrics.text_attacks))
    sentences = []
    for name in names:
        budgets = list(dict.fromkeys(b for r in records for b in r.metrics.text_attacks.get(name, {})))
        top, parts = budgets[-1], []
        for m in tables.method_order(records, setup):
            for f in tables.fraction_order(records):
                mean = tables.summary(records, m, f, lambda r: readouts.text_attack_acc(r, name, top))[0]
                if math.isfinite(mean):
                    parts.append(f"{m} at {fmt_fraction(f)} labels {fmt_value(mean)}%")
        if parts:
            sentences.append(f"{name} at budget {top}: " + "; ".join(parts))
    if not sentences:
        return ""
    return (" Attacks on the indication itself (robust accuracy at the largest budget) — " + ". ".join(sentences)
            + ". The text is an attack surface too: see the text-side tables (appendix).")


def _checks_line(records: list[RunRecord]) -> str:
    failed = tables.failed_checks(records)
    if not failed:
        return ""
    shown = "; ".join(f"{c['name']} for {c['method']} at {fmt_fraction(c['fraction'])} labels, seed {c['seed']}"
                      for c in failed[:3])
    more = f" and {len(failed) - 3} more" if len(failed) > 3 else ""
    return (f"**Caveat:** {len(failed)} evaluation self-check(s) failed ({shown}{more}); the robust accuracies "
            f"of those runs may be unreliable — see the warnings and the self-check table. Runs failing "
            f"above_chance or an attack self-check are kept out of the comparisons they would distort.")


def _headline(robust: list[dict], ref: str | None) -> str:
    """The first paragraph: the kinds counted (first sentence, bold), what was compared, how it was tested."""
    if all(c["kind"] == TOO_FEW for c in robust):
        if any(c["excluded"] for c in robust):
            return (f"**None of the {len(robust)} comparisons can be judged: failed self-checks leave fewer than 2 "
                    "usable seed pairs in each (see the self-check exclusions below).**")
        return (f"**With one seed per comparison, none of the {len(robust)} comparisons can be judged: rerun with "
                f"2 or more seeds for confidence intervals.**")
    n = {k: sum(c["kind"] == k for c in robust) for k in stats.KINDS}
    s = (f"Of {len(robust)} robustness comparisons of self-supervised pre-training with its supervised counterpart "
         "(classifiers that see the image only; image+report pre-training through its image pathway): "
         f"clearly more robust in {n[BETTER]}, clearly less robust in {n[WORSE]}, a bounded null (no difference "
         f"larger than X pp, X ≤ 3) in {n[BOUNDED]}, inconclusive in {n[INCONCLUSIVE]}, undetermined (zero "
         f"variance) in {n[UNDETERMINED]}, too few seeds in {n[TOO_FEW]}.")
    what = {"worst_ref": f"worst-case accuracy at ε={fmt_eps(ref)}" if ref else "worst-case accuracy",
            "corr_mean": "mean corruption accuracy", "holdout_acc": "held-out-site accuracy"}
    kinds = [f"{ROBUSTNESS[k]} ({what[k]})" for k in ROBUSTNESS if any(c["metric"] == k for c in robust)]
    boot = sum(c["test"] == TEST_BOTH for c in robust)
    how = "95% CI and p from a paired t over seeds (the records carry no per-example outcomes)"
    if boot:
        how = ("each difference tested twice — a paired t over seeds and a hierarchical paired bootstrap over seeds "
               f"and test examples ({stats.N_BOOT} resamples) — and called clear only when both find it (the larger "
               "p; the CI spans both)")
        if boot < len(robust):
            how += f" for {boot}, a paired t over seeds alone for the other {len(robust) - boot}"
    return (f"**{s}** Compared: {', '.join(kinds)}; differences are self-supervised − supervised in percentage "
            f"points (pp); {how}. 'Clearly' means a Holm-adjusted p < 0.05 — {_chance(robust)}. A non-clear "
            "difference is a bounded null (the 95% CI excludes any difference larger than X pp, X ≤ 3) or "
            "inconclusive (not clear after the correction, and the CI allows a difference larger than 3 pp). The CIs "
            "are per comparison, not adjusted: one can exclude 0 while its difference is not clear after the correction.")


def _mce_clause(row: dict | None) -> str:
    """The normalised corruption error of the arm against its supervised counterpart (report.corruption_error)."""
    if not row or "mCE" not in row or not math.isfinite(row["mCE"][0]):
        return ""
    def one(v):
        return f"{v[0]:.2f}" + (f" ± {v[1]:.2f}" if v[2] >= 2 and math.isfinite(v[1]) else "")
    rel = row.get("relative mCE")
    return (f"; normalised corruption error mCE {one(row['mCE'])}"
            + (f", relative mCE {one(rel)}" if rel and math.isfinite(rel[0]) else "")
            + f" (supervised = 1.00; below 1: fewer errors under corruption; 1 − balanced accuracy)")


def _bullets(records: list[RunRecord], comps: list[dict], fam: str, setup: StudyFacts | None = None) -> list[str]:
    """One bullet per (arm, label fraction) of family ``fam``: its adversarial / corruption / site-shift clauses."""
    mce = {(r["arm"], r["fraction"]): r for r in corruption_error_rows(records, setup or StudyFacts())}
    out = []
    mine_all = [c for c in comps if c["family"] == fam]
    for arm, f in dict.fromkeys((c["arm"], c["fraction"]) for c in mine_all):
        mine = {c["metric"]: c for c in comps if c["arm"] == arm and c["fraction"] == f
                and (c["family"] == fam or c["metric"] == "gap")}
        parts = [_sentence(mine[k]) + (_gap_clause(mine) if k == "worst_ref" else "")
                 + (_mce_clause(mce.get((arm, f))) if k == "corr_mean" else "") for k in ROBUSTNESS if k in mine]
        cp = pretty(records, mine["worst_ref" if "worst_ref" in mine else next(iter(mine))]["counterpart"])
        out.append(f"- **At {fmt_fraction(f)} labels, {pretty(records, arm)} pre-training vs {cp}** — "
                   + "; ".join(parts) + ".")
    return out


def _indication_line(records: list[RunRecord], comps: list[dict], primary: bool = False,
                     setup: StudyFacts | None = None) -> str:
    """Classifiers that see the indication with the image, pre-trained vs supervised: secondary to the image-only
    headline, or the study's comparisons when it has no image-only one (``primary``, e.g. VQA)."""
    mine = [c for c in comps if c["family"] == WITH_INDICATION]
    if not mine:
        return ""
    role = "the study's comparisons" if primary else "secondary"
    head = (f"**Image + indication at decision time** ({role}: classifiers that also see the indication, the "
            f"text written before the image is read; {_chance(mine, True)}; {_kinds(mine)}):")
    return "\n".join([head, ""] + _bullets(records, comps, WITH_INDICATION, setup))


def answer(records: list[RunRecord], setup: StudyFacts | None = None) -> str:
    """Plain-words Markdown answer: does self-supervised pre-training make models more robust?

    Args:
        records: run records.
        setup: study setup.

    Returns:
        A short Markdown text: the kinds of the headline comparisons counted, the test and the correction
        named, whether the study is only a demonstration (under :data:`MIN_SEEDS` seeds), one bullet per
        (self-supervised arm, label fraction) with verdict, mean difference (pp), 95% CI, seeds, raw and
        Holm-adjusted p for adversarial robustness (worst case at the reference ε), corruptions and site
        shift; then retrieval/VQA, ablations, defenses, self-check exclusions and caveats.
    """
    setup = setup or StudyFacts()
    comps = comparisons(records, setup)
    ref = tables.reference_eps(records, setup)
    robust = [c for c in comps if c["family"] == "headline"]
    lines: list[str] = []
    with_text = [c for c in comps if c["family"] == WITH_INDICATION]
    if not robust and with_text:
        lines.append("No image-only self-supervised arm is compared in this study; its comparisons are between "
                     "classifiers that see the image with the indication (below).")
        demo = _demo_line(records, setup)
        lines += ["", demo] if demo else []
    elif not robust:
        lines.append("No self-supervised arm could be paired with its supervised counterpart on the same label "
                     "fraction and seed, so these records cannot answer the question.")
    else:
        lines += [_headline(robust, ref), ""]
        demo = _demo_line(records, setup)
        lines += [demo, ""] if demo else []
        lines += _bullets(records, comps, "headline", setup)
    dcomps = defense_comparisons(records, setup)
    vcomps = diversity_comparisons(records, setup)
    extra = [x for x in (_indication_line(records, comps, primary=not robust, setup=setup), _diversity_line(records, vcomps, setup),
                         _tasks_line(records, comps), _ablation_line(comps),
                         _defense_line(records, setup, dcomps),
                         _exclusion_line(comps + dcomps + vcomps), _indication_reliance_line(records, setup),
                         _near_zero_line(records, setup), _checks_line(records)) if x]
    for paragraph in extra:  # a blank line between: each its own paragraph in Markdown and HTML
        lines += ["", paragraph]
    return "\n".join(lines).strip() + "\n"
