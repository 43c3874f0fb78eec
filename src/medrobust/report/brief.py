"""The short paragraphs under the verdict table: what the table cannot say, each in one or two sentences.

The full answer with every number in words (:func:`medrobust.report.answer.answer`) is in the appendix; these
paragraphs count and name, and use the same verdict rules and number formats.
"""

from __future__ import annotations

from medrobust.record import RunRecord, StudyFacts
from medrobust.report import answer as A
from medrobust.report.stats import BETTER, CLEAR, TOO_FEW, WORSE, fmt_diff, fmt_fraction


def _diversity(comps: list[dict]) -> str:
    if not comps:
        return ""
    own = [c for c in comps if c["pair"] == "target-only"]
    hurt = [c for c in own if c["kind"] == WORSE]
    helped = [c for c in own if c["kind"] == BETTER]
    def listed(cs):
        return "; ".join(f"{A._DIVERSITY_WORDS[c['metric']]} for `{c['arm']}` at {fmt_fraction(c['fraction'])} labels "
                         f"({fmt_diff(c['mean_diff'])} pp)" for c in cs)
    if hurt:
        return ("**Diversity — negative transfer:** pre-training on the pool instead of the target alone clearly "
                f"lowered {listed(hurt)}" + (f"; it clearly raised {listed(helped)}" if helped else "") + ".")
    if helped:
        return f"**Diversity:** pre-training on the pool instead of the target alone clearly raised {listed(helped)}."
    if own and all(c["kind"] == TOO_FEW for c in own):
        return "**Diversity:** too few usable seed pairs to say whether pre-training on the pool helps."
    return ("**Diversity:** no clear difference between pre-training on the pool and on the target alone "
            f"({A._kinds(own)})." if own else "")


def _defenses(comps: list[dict]) -> str:
    worst = [c for c in comps if c["metric"] == "worst_ref"]
    if not worst:
        return ""
    best = max((c for c in worst if c["kind"] == BETTER), key=lambda c: c["mean_diff"], default=None)
    if best is None:
        return "**Defenses:** none clearly raised worst-case accuracy under adaptive attacks."
    clean = next((d for d in comps if d["metric"] == "clean_acc" and (d["arm"], d["fraction"]) ==
                  (best["arm"], best["fraction"])), None)
    cost = f", at a clean-accuracy change of {fmt_diff(clean['mean_diff'])} pp ({clean['verdict']})" if clean else ""
    return (f"**Defenses:** the largest clear gain in worst-case accuracy under adaptive attacks is `{best['arm']}` at "
            f"{fmt_fraction(best['fraction'])} labels ({fmt_diff(best['mean_diff'])} pp{cost}).")


def _counted(comps: list[dict], family: str, what: str) -> str:
    mine = [c for c in comps if c["family"] == family]
    if not mine:
        return ""
    clear = [c for c in mine if c["kind"] in CLEAR]
    named = "; ".join(f"`{c['arm']}` at {fmt_fraction(c['fraction'])} labels, {c['label']}: {c['verdict']} "
                      f"({fmt_diff(c['mean_diff'])} pp)" for c in clear[:3])
    more = f" and {len(clear) - 3} more" if len(clear) > 3 else ""
    return (f"**{what}:** {len(clear)} of {len(mine)} comparisons clear" + (f" — {named}{more}" if clear else "")
            + ".")


def _exclusions(comps: list[dict]) -> str:
    pairs = {(c["arm"], c["counterpart"], c["fraction"], s) for c in comps for s, _ in c.get("excluded") or ()}
    if not pairs:
        return ""
    return (f"**Self-check exclusions:** {len(pairs)} seed pair{'s' if len(pairs) != 1 else ''} kept out of the "
            "comparisons a failed self-check would distort (named in the appendix).")


def paragraphs(records: list[RunRecord], setup: StudyFacts) -> list[str]:
    """The short paragraphs, in order: how much to trust the study, diversity, defenses, retrieval / VQA,
    ablations, reliance on the indication and attacks on it, near-zero robustness, exclusions and failed checks."""
    comps = A.comparisons(records, setup)
    dcomps, vcomps = A.defense_comparisons(records, setup), A.diversity_comparisons(records, setup)
    out = [A._demo_line(records, setup), _diversity(vcomps), _defenses(dcomps),
           _counted(comps, "tasks", "Retrieval and VQA (pre-trained image+report arms vs supervised)"),
           _counted(comps, "ablations", "Ablations (one component switched off vs the full method)"),
           A._indication_reliance_line(records, setup), A._near_zero_line(records, setup),
           _exclusions(comps + dcomps + vcomps), A._checks_line(records)]
    return [p for p in out if p]
