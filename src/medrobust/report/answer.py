"""The answer to the study's question, in plain words, written from the numbers.

:func:`comparisons` pairs every self-supervised arm with its ``counterpart`` (same label fraction, same
seed) and runs :func:`medrobust.report.stats.paired` on each metric; :func:`answer` turns those results
into a short Markdown text. Every number in the text is formatted by the same functions as the paired
comparison table, so the text and the table agree digit for digit.
"""

from __future__ import annotations

import math

from medrobust.record import RunRecord, StudyFacts
from medrobust.report import stats, tables
from medrobust.report.stats import BETTER, TOO_FEW, UNCLEAR, WORSE, fmt_ci, fmt_diff, fmt_eps, fmt_fraction, fmt_value

#: metrics compared between a self-supervised arm and its counterpart (noreport only if both multimodal)
COMPARED = ("clean_acc", "worst_ref", "gap", "corr_mean", "holdout_acc", "noreport_acc", "vqa_acc", "vqa_adv", "r10",
            "r10_adv")
#: the multimodal downstream tasks (image+report arms with multimodal.tasks), summarised in one line
TASKS = ("vqa_acc", "vqa_adv", "r10", "r10_adv")
#: the three robustness questions the answer is about, with the short word used in the text
ROBUSTNESS = {"worst_ref": "adversarial", "corr_mean": "corruptions", "holdout_acc": "site shift"}
NEAR_ZERO = 0.05

def pretty(records: list[RunRecord], arm: str) -> str:
    """Human name of an arm: the method's display name (``simclr`` → ``SimCLR``, carried by the record) for an
    arm that is the plain method, else the arm's label (``robust-mmr(domain_weight=0)``, ``simclr [linear]``)."""
    r = next((r for r in records if r.arm == arm), None)
    return r.display_name if r is not None and r.arm == r.method else arm


def _multimodal(records: list[RunRecord], arm: str) -> bool:
    return any(r.arm == arm and r.uses_text for r in records)


def comparisons(records: list[RunRecord], setup: StudyFacts | None = None) -> list[dict]:
    """Paired comparisons of every self-supervised arm with its counterpart: the supervised arm with the same
    inputs, or for an ablation arm (e.g. ``robust-mmr(domain_weight=0)``) the full arm (``ablation`` True).

    Args:
        records: run records.
        setup: study setup (used for method order and the reference ε).

    Returns:
        One dict per (arm, fraction, metric) with data in both arms: ``arm``, ``counterpart``,
        ``fraction``, ``metric``, ``label``, ``unit``, ``higher_is_better``, the :func:`stats.paired`
        fields (``mean_diff``, ``ci_low``, ``ci_high``, ``p``, ``n``, ``mean_a`` = arm, ``mean_b`` =
        counterpart) and ``verdict``.
    """
    setup = setup or StudyFacts()
    ms = tables.metrics(tables.reference_eps(records, setup))
    out = []
    for arm in tables.method_order(records, setup):
        arm_recs = [r for r in records if r.arm == arm]
        base = tables.ablation_base(records, arm)
        cp = base or next((r.counterpart for r in arm_recs if r.counterpart), None)
        if cp is None or not any(r.self_supervised for r in arm_recs) or any(r.defense for r in arm_recs):
            continue  # defended arms are compared with their undefended arm (defense_comparisons)
        for f in tables.fraction_order(records):
            a_by_seed = {r.seed: r for r in tables.runs(records, arm, f)}
            b_by_seed = {r.seed: r for r in tables.runs(records, cp, f)}
            seeds = sorted(s for s in a_by_seed if s in b_by_seed)
            if not seeds:
                continue
            for name in COMPARED:
                if name == "noreport_acc" and not (_multimodal(records, arm) and _multimodal(records, cp)):
                    continue
                m = ms[name]
                res = stats.paired([m.get(a_by_seed[s]) for s in seeds], [m.get(b_by_seed[s]) for s in seeds])
                if res["n"] == 0:
                    continue
                out.append(dict(res, arm=arm, counterpart=cp, ablation=base is not None,
                                fraction=f, metric=name, label=m.label,
                                unit=m.unit, higher_is_better=m.higher_is_better,
                                verdict=stats.verdict(res, m.higher_is_better)))
    return out


def defense_comparisons(records: list[RunRecord], setup: StudyFacts | None = None) -> list[dict]:
    """Each defended arm vs its undefended arm, paired by seed: worst-case accuracy and clean accuracy."""
    setup = setup or StudyFacts()
    ms = tables.metrics(tables.reference_eps(records, setup))
    out = []
    for arm in tables.method_order(records, setup):
        recs = [r for r in records if r.arm == arm and r.defense]
        if not recs:
            continue
        base = recs[0].undefended
        for f in tables.fraction_order(records):
            a = {r.seed: r for r in tables.runs(records, arm, f)}
            b = {r.seed: r for r in tables.runs(records, base, f) if not r.defense}
            seeds = sorted(s for s in a if s in b)
            if not seeds:
                continue
            for name in ("worst_ref", "clean_acc"):
                m = ms[name]
                res = stats.paired([m.get(a[s]) for s in seeds], [m.get(b[s]) for s in seeds])
                if res["n"]:
                    out.append(dict(res, arm=arm, counterpart=base, fraction=f, metric=name,
                                    verdict=stats.verdict(res, True)))
    return out


def _defense_line(records: list[RunRecord], setup: StudyFacts) -> str:
    """Which defense helps, by how much, at what clean cost (paired with the undefended arm)."""
    comps = defense_comparisons(records, setup)
    if not comps:
        return ""
    ref = tables.reference_eps(records, setup)
    parts = []
    for c in (c for c in comps if c["metric"] == "worst_ref"):
        clean = next((d for d in comps if d["metric"] == "clean_acc" and d["arm"] == c["arm"]
                      and d["fraction"] == c["fraction"]), None)
        cost = "" if clean is None else f"; clean accuracy {fmt_diff(clean['mean_diff'])} pp"
        parts.append(f"{c['arm']} at {fmt_fraction(c['fraction'])} labels: worst-case accuracy "
                     f"{fmt_value(c['mean_b'])}% → {fmt_value(c['mean_a'])}% (**{c['verdict']}**, {_numbers(c)}{cost})")
    best = max((c for c in comps if c["metric"] == "worst_ref" and c["verdict"] == BETTER),
               key=lambda c: c["mean_diff"], default=None)
    head = (f"Defenses (adaptive attacks, ε={fmt_eps(ref)}): " if ref else "Defenses: ")
    tail = (f" The largest clear gain: **{best['arm']}** at {fmt_fraction(best['fraction'])} labels." if best
            else " No defense clearly raised worst-case accuracy.")
    return head + "; ".join(parts) + "." + tail


def _tasks_line(records: list[RunRecord], comps: list[dict]) -> str:
    """The retrieval / VQA comparisons of the pre-trained image+report arms with their supervised counterpart:
    how many, and the clear ones with their numbers."""
    mine = [c for c in comps if c["metric"] in TASKS and not c["ablation"]]
    if not mine:
        return ""
    clear = [c for c in mine if c["verdict"] in (BETTER, WORSE)]
    judged = [c for c in mine if c["verdict"] != TOO_FEW]
    head = (f"**Retrieval and VQA** (each pre-trained image+report arm vs its supervised counterpart, fine-tuned "
            f"on the same labeled pairs): {len(clear)} of {len(mine)} comparisons clear")
    if not judged:
        return head + " — too few seeds to tell."
    if not clear:
        return head + " — pre-training made no clear difference to retrieval R@10 or VQA accuracy, clean or attacked."
    parts = [f"{pretty(records, c['arm'])} at {fmt_fraction(c['fraction'])} labels, {c['label']}: **{c['verdict']}** "
             f"({fmt_value(c['mean_b'])}% → {fmt_value(c['mean_a'])}%, {_numbers(c)})" for c in clear]
    return head + ": " + "; ".join(parts) + "."


def _ablation_line(comps: list[dict]) -> str:
    """What each switched-off component did to robustness, relative to the full method on the same seeds."""
    abl = [c for c in comps if c["ablation"] and c["metric"] in ROBUSTNESS]
    if not abl:
        return ""
    parts = []
    for arm, f in dict.fromkeys((c["arm"], c["fraction"]) for c in abl):
        mine = [c for c in abl if c["arm"] == arm and c["fraction"] == f]
        parts.append(f"`{arm}` vs `{mine[0]['counterpart']}` at {fmt_fraction(f)} labels — "
                     + "; ".join(_sentence(c) for c in mine))
    return ("**Ablations** (one component switched off, compared with the full method on the same seeds; "
            "'better' means better *without* the component): " + ". ".join(parts) + ".")


def _numbers(c: dict) -> str:
    """``"+13.8 pp, 95% CI +6.1 to +21.5, 3 seeds"`` (or the one-seed form)."""
    seeds = f"{c['n']} seed" + ("s" if c["n"] != 1 else "")
    if c["n"] < 2:
        return f"{fmt_diff(c['mean_diff'])} pp, {seeds}, no CI"
    return f"{fmt_diff(c['mean_diff'])} pp, 95% CI {fmt_ci(c['ci_low'], c['ci_high'])}, {seeds}"


def _sentence(c: dict) -> str:
    """One clause about one comparison, e.g. ``adversarial: **better** — raised ... from 41.2% to 55.0% (...)``."""
    what = c["label"]
    a, b = fmt_value(c["mean_a"]) + "%", fmt_value(c["mean_b"]) + "%"
    if c["verdict"] in (BETTER, WORSE):
        verb = "raised" if c["mean_diff"] > 0 else "lowered"
        body = f"{verb} {what} from {b} to {a} ({_numbers(c)})"
    else:
        body = f"{what} {b} → {a} ({_numbers(c)})"
    return f"{ROBUSTNESS[c['metric']]}: **{c['verdict']}** — {body}"


def _clean_explains(by_metric: dict) -> str:
    """Say whether a clear robust-accuracy difference is explained by clean accuracy (via the robustness gap)."""
    w, g = by_metric.get("worst_ref"), by_metric.get("gap")
    if not w or not g or w["verdict"] not in (BETTER, WORSE) or g["verdict"] == TOO_FEW:
        return ""
    nums = f"{fmt_diff(g['mean_diff'])} pp, 95% CI {fmt_ci(g['ci_low'], g['ci_high'])}"
    if g["verdict"] == UNCLEAR:
        return f", explained by clean accuracy (robustness gap clean − worst-case not clearly changed: {nums})"
    change = "narrowed" if g["mean_diff"] < 0 else "widened"
    return f", not only clean accuracy (robustness gap clean − worst-case {change}: {nums})"


def _near_zero_line(records: list[RunRecord], setup: StudyFacts) -> str:
    """Say so when every arm is below 5% worst-case accuracy at the largest ε."""
    grid = tables.eps_order(records, setup)
    if not grid or stats.num(grid[-1]) <= 0:
        return ""
    top = grid[-1]
    means = [tables.summary(records, m, f, lambda r: tables.attack_acc(r, "worst", top))[0]
             for m in tables.method_order(records, setup) for f in tables.fraction_order(records)]
    means = [x for x in means if math.isfinite(x)]
    if not means or max(means) >= NEAR_ZERO:
        return ""
    return (f"At the largest budget ε={fmt_eps(top)} every arm is near 0% worst-case accuracy "
            f"(highest mean {fmt_value(max(means))}%): none is adversarially robust without a defense.")


def _report_reliance_line(records: list[RunRecord], setup: StudyFacts) -> str:
    """For image+report arms: image attacks leave the report clean, so say how much they lean on it."""
    parts = []
    for m in tables.method_order(records, setup):
        if not _multimodal(records, m):
            continue
        for f in tables.fraction_order(records):
            with_report = tables.summary(records, m, f, lambda r: tables.acc(r, "clean"))[0]
            without = tables.summary(records, m, f, lambda r: tables.acc(r, "without_text"))[0]
            if math.isfinite(with_report) and math.isfinite(without):
                parts.append(f"{m} at {fmt_fraction(f)} labels {fmt_value(with_report)}% → {fmt_value(without)}%")
    if not parts:
        return ""
    return ("Image attacks leave the report clean, and image+report arms lean on the report: clean accuracy "
            "with → without the report: " + "; ".join(parts) + "." + _report_attack_line(records, setup))


def _report_attack_line(records: list[RunRecord], setup: StudyFacts) -> str:
    """The strongest budget of each report-side/joint attack, per image+report arm and label fraction."""
    names = list(dict.fromkeys(a for r in records for a in r.metrics.text_attacks))
    sentences = []
    for name in names:
        budgets = list(dict.fromkeys(b for r in records for b in r.metrics.text_attacks.get(name, {})))
        top, parts = budgets[-1], []
        for m in tables.method_order(records, setup):
            for f in tables.fraction_order(records):
                mean = tables.summary(records, m, f, lambda r: tables.text_attack_acc(r, name, top))[0]
                if math.isfinite(mean):
                    parts.append(f"{m} at {fmt_fraction(f)} labels {fmt_value(mean)}%")
        if parts:
            sentences.append(f"{name} at budget {top}: " + "; ".join(parts))
    if not sentences:
        return ""
    return (" Attacks on the report itself (robust accuracy at the largest budget) — " + ". ".join(sentences)
            + ". The report is an attack surface too: see the report-side tables.")


def _checks_line(records: list[RunRecord]) -> str:
    failed = tables.failed_checks(records)
    if not failed:
        return ""
    shown = "; ".join(f"{c['name']} for {c['method']} at {fmt_fraction(c['fraction'])} labels, seed {c['seed']}"
                      for c in failed[:3])
    more = f" and {len(failed) - 3} more" if len(failed) > 3 else ""
    return (f"**Caveat:** {len(failed)} evaluation self-check(s) failed ({shown}{more}); the robust accuracies "
            f"of those runs may be unreliable — see the warnings and the self-check table.")


def answer(records: list[RunRecord], setup: StudyFacts | None = None) -> str:
    """Plain-words Markdown answer: does self-supervised pre-training make models more robust?

    Args:
        records: run records.
        setup: study setup.

    Returns:
        A short Markdown text: a summary count, one bullet per (self-supervised arm, label fraction) with
        the verdict, mean difference (pp), 95% CI and number of seeds for adversarial robustness (worst
        case at the reference ε), corruptions and site shift, and caveats.
    """
    setup = setup or StudyFacts()
    comps = comparisons(records, setup)
    ref = tables.reference_eps(records, setup)
    robust = [c for c in comps if c["metric"] in ROBUSTNESS and not c["ablation"]]
    lines: list[str] = []
    if not robust:
        lines.append("No self-supervised arm could be paired with its supervised counterpart on the same label "
                     "fraction and seed, so these records cannot answer the question.")
    else:
        count = {v: sum(c["verdict"] == v for c in robust) for v in stats.VERDICTS}
        if count[TOO_FEW] == len(robust):
            s = (f"With one seed per comparison, none of the {len(robust)} comparisons can be judged: "
                 f"rerun with 2 or more seeds for confidence intervals.")
        else:
            s = (f"Self-supervised pre-training made models clearly more robust in {count[BETTER]} of "
                 f"{len(robust)} comparisons, clearly less robust in {count[WORSE]}, and made no clear "
                 f"difference in {count[UNCLEAR]}")
            s += f" ({count[TOO_FEW]} had too few seeds to tell)." if count[TOO_FEW] else "."
        what = {"worst_ref": f"worst-case accuracy at ε={fmt_eps(ref)}" if ref else "worst-case accuracy",
                "corr_mean": "mean corruption accuracy", "holdout_acc": "held-out-site accuracy"}
        kinds = [f"{ROBUSTNESS[k]} ({what[k]})" for k in ROBUSTNESS if any(c["metric"] == k for c in robust)]
        lines.append(f"**{s}** Compared: {', '.join(kinds)}; differences are self-supervised − supervised "
                     f"in percentage points (pp), 95% CI over paired seeds.")
        lines.append("")
        seen = []
        for c in robust:
            if (c["arm"], c["fraction"]) not in seen:
                seen.append((c["arm"], c["fraction"]))
        for arm, f in seen:
            mine = {c["metric"]: c for c in comps if c["arm"] == arm and c["fraction"] == f}
            parts = []
            for k in ROBUSTNESS:
                if k in mine:
                    parts.append(_sentence(mine[k]) + (_clean_explains(mine) if k == "worst_ref" else ""))
            cp = pretty(records, next(iter(mine.values()))["counterpart"])
            head = f"At {fmt_fraction(f)} labels, {pretty(records, arm)} pre-training vs {cp}"
            lines.append(f"- **{head}** — " + "; ".join(parts) + ".")
    extra = [x for x in (_tasks_line(records, comps), _ablation_line(comps), _defense_line(records, setup),
                         _report_reliance_line(records, setup), _near_zero_line(records, setup), _checks_line(records))
             if x]
    for paragraph in extra:  # a blank line between: each its own paragraph in Markdown and HTML
        lines += ["", paragraph]
    return "\n".join(lines).strip() + "\n"
