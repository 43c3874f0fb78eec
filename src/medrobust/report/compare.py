"""Paired comparisons of arms: which runs pair, which test, which family, Holm–Bonferroni within each family.

:func:`comparisons` pairs every self-supervised arm with its ``counterpart`` (same label fraction, same seed)
on each metric; :func:`defense_comparisons` pairs every defended arm with its undefended arm. Each result
carries its family (:data:`medrobust.report.stats.FAMILIES`), the raw and the Holm-adjusted p within that
family, and the verdict of :func:`medrobust.report.stats.classify` on the adjusted p.

The test: the paired t over seeds (:func:`stats.paired`; training-seed variance) and, for the metrics whose
records carry per-example outcomes (:func:`per_example`), a *hierarchical paired bootstrap* over seeds and test
examples (:func:`stats.hierarchical_bootstrap`; test-set variance too). Either alone misleads: the t ignores that
every run is scored on the same finite test set, and with few seeds the bootstrap underestimates the seed-to-seed
variance (it resamples only the seeds there are, with no small-sample quantile: on a 3-seed study it gave
−19 to +13 pp where the t gave −44 to +42). So with both, a comparison's p is the larger of the two and its CI
the envelope of both: it is clear only when both tests find it. The t's own CI stays a column (``t_ci_low``,
``t_ci_high``, ``t_p``).

Runs that fail a self-check are kept out of the comparisons they would distort: a run failing
:data:`EXCLUDE_ALL` from every comparison, one failing :data:`EXCLUDE_ADVERSARIAL` from
:data:`ADVERSARIAL_METRICS`; the pair of seeds is dropped and listed in ``excluded``.
"""

from __future__ import annotations

import collections
import functools
import math

from medrobust.record import (PER_EXAMPLE_ATTACKED, PER_EXAMPLE_CORRUPTIONS, PER_EXAMPLE_HOLDOUT,
                              RunRecord, StudyFacts, worst_key)
from medrobust.report import readouts, stats, tables

#: metrics compared between a self-supervised arm and its counterpart (noreport only if both multimodal)
COMPARED = ("clean_acc", "worst_ref", "gap", "corr_mean", "holdout_acc", "noreport_acc", "vqa_acc", "vqa_adv", "r10",
            "r10_adv")
#: the multimodal downstream tasks (image+report arms with multimodal.tasks), summarised in one line
TASKS = ("vqa_acc", "vqa_adv", "r10", "r10_adv")
#: the three robustness questions the answer is about, with the short word used in the text
ROBUSTNESS = {"worst_ref": "adversarial", "corr_mean": "corruptions", "holdout_acc": "site shift"}
#: the short words of the ablation sentences: the robustness questions and modality resilience
ABLATION_WORDS = {**ROBUSTNESS, "noreport_acc": "indication left out"}

#: a run failing one of these is left out of every comparison
EXCLUDE_ALL = ("above_chance",)
#: a run failing one of these is left out of the adversarial comparisons
EXCLUDE_ADVERSARIAL = ("gradients_nonzero", "large_eps_breaks", "eps0_equals_clean", "monotone_in_eps")
ADVERSARIAL_METRICS = ("worst_ref", "gap")

TEST_BOTH = "paired t + bootstrap"
TEST_T = "paired t"


#: the family of the robustness comparisons of classifiers that see the indication with the image (a secondary
#: table: the headline compares classifiers that see the image only)
WITH_INDICATION = "image+indication"


#: the family of the pool comparisons: pool arm vs the same arm on the target only, vs supervised pre-training on the
#: same pool, and supervised pre-training on the pool vs the supervised arm
DIVERSITY = "diversity"
#: metrics of the diversity comparisons
DIVERSITY_METRICS = ("clean_acc", "worst_ref", "corr_mean", "holdout_acc")


def family(metric: str, ablation: bool, with_text: bool = False) -> str:
    """The family of a self-supervised-arm comparison (defended arms are always ``"defenses"``); ``with_text``:
    the classifiers compared see the indication with the image."""
    if metric in ROBUSTNESS or (ablation and metric == "noreport_acc"):  # resilience: text left out
        return "ablations" if ablation else WITH_INDICATION if with_text else "headline"
    return "tasks" if metric in TASKS and not ablation else "secondary"


def per_example(metric: str, rec: RunRecord, ref_eps: str | None, balanced: bool = False) -> list[float] | None:
    """The per-example outcomes whose mean is ``metric`` of ``rec`` (None when the record has none): the worst
    case at the reference ε, the gap (worst case at ε=0 minus at the reference ε, per attacked example), the
    mean corruption accuracy, the held-out-site correctness. ``balanced``: each outcome weighted by
    ``n / (K · n_class)`` (its class's size among the ``n`` rows, ``K`` classes present), so that their mean is the
    balanced accuracy; None when the record has no labels for the rows."""
    rows = _outcomes(metric, rec, ref_eps)
    if not balanced or rows is None:
        return rows
    key = PER_EXAMPLE_ATTACKED if metric in ("worst_ref", "gap") else \
        {"corr_mean": PER_EXAMPLE_CORRUPTIONS, "holdout_acc": PER_EXAMPLE_HOLDOUT}.get(metric)
    labels = rec.metrics.per_example_labels.get(key)
    if labels is None or len(labels) != len(rows):
        return None
    counts = collections.Counter(labels)
    return [x * len(rows) / (len(counts) * counts[c]) for x, c in zip(rows, labels)]


def _outcomes(metric: str, rec: RunRecord, ref_eps: str | None) -> list[float] | None:
    got = rec.metrics.per_example
    if metric in ("worst_ref", "gap") and ref_eps is not None:
        worst = got.get(worst_key(ref_eps))
        if metric == "worst_ref" or not worst:
            return worst
        clean = got.get(worst_key("0"))
        return [c - w for c, w in zip(clean, worst)] if clean and len(clean) == len(worst) else None
    key = {"corr_mean": PER_EXAMPLE_CORRUPTIONS, "holdout_acc": PER_EXAMPLE_HOLDOUT}.get(metric)
    return got.get(key) if key else None


def exclusion(metric: str, *recs: RunRecord) -> list[str]:
    """Names of the failed self-checks of ``recs`` that keep them out of the comparison on ``metric``."""
    rules = EXCLUDE_ALL + (EXCLUDE_ADVERSARIAL if metric in ADVERSARIAL_METRICS else ())
    failed = {c.name for r in recs for c in r.metrics.checks if not c.passed}
    return [name for name in rules if name in failed]


def paired_test(metric: readouts.Metric, a: list[RunRecord], b: list[RunRecord], ref_eps: str | None) -> dict:
    """The test of one comparison on aligned runs ``a`` (tested arm) and ``b`` (reference), one per seed.

    Returns :func:`stats.paired`'s fields (the difference of the records' metric means) with ``t_ci_low``,
    ``t_ci_high``, ``t_p`` (the seeds-only t) and ``test``; with the bootstrap (both arms carry per-example
    outcomes of equal length for every seed, and at least two seeds) ``ci_low`` / ``ci_high`` are the envelope of
    both CIs, ``p`` the larger p (NaN if either is undefined), ``boot_*`` and ``n_examples`` the bootstrap's.
    """
    res = stats.paired([metric.get(r) for r in a], [metric.get(r) for r in b])
    res.update(t_ci_low=res["ci_low"], t_ci_high=res["ci_high"], t_p=res["p"], test=TEST_T, n_examples=None)
    rows_a = [per_example(metric.name, r, ref_eps, metric.balanced) for r in a]
    rows_b = [per_example(metric.name, r, ref_eps, metric.balanced) for r in b]
    rows = rows_a + rows_b
    if len(a) < 2 or not rows or any(not x for x in rows) or len({len(x) for x in rows}) != 1:
        return res
    try:
        boot = _bootstrap(tuple(map(tuple, rows_a)), tuple(map(tuple, rows_b)))
    except ValueError:
        return res
    res.update(ci_low=min(boot["ci_low"], res["t_ci_low"]), ci_high=max(boot["ci_high"], res["t_ci_high"]),
               p=_larger(boot["p"], res["t_p"]), test=TEST_BOTH, n_examples=boot["n_examples"],
               boot_ci_low=boot["ci_low"], boot_ci_high=boot["ci_high"], boot_p=boot["p"])
    return res


def _larger(p: float, q: float) -> float:
    """The larger p value; undefined (NaN) when either is (e.g. zero variance over seeds: undetermined)."""
    return math.nan if math.isnan(p) or math.isnan(q) else max(p, q)


@functools.lru_cache(maxsize=512)
def _bootstrap(rows_a: tuple, rows_b: tuple) -> dict:
    """:func:`stats.hierarchical_bootstrap`, once per input (the answer and the table ask for the same ones)."""
    return stats.hierarchical_bootstrap(rows_a, rows_b)


def _pair_up(metric: readouts.Metric, a: dict, b: dict, ref_eps: str | None) -> dict | None:
    """Compare ``a`` and ``b`` (seed -> record) on their shared seeds, the excluded pairs dropped."""
    seeds = sorted(s for s in a if s in b)
    seeds = [s for s in seeds if math.isfinite(metric.get(a[s])) and math.isfinite(metric.get(b[s]))]
    if not seeds:
        return None
    excluded = [(s, exclusion(metric.name, a[s], b[s])) for s in seeds]
    excluded = [(s, why) for s, why in excluded if why]
    used = [s for s in seeds if s not in dict(excluded)]
    res = paired_test(metric, [a[s] for s in used], [b[s] for s in used], ref_eps)
    return dict(res, excluded=excluded)


def adjust(comps: list[dict]) -> list[dict]:
    """Holm–Bonferroni within each ``family``: sets ``p_adj``, ``m_family`` (tests in the family), ``kind``
    and ``verdict`` on every comparison (in place; also returned)."""
    for fam in dict.fromkeys(c["family"] for c in comps):
        mine = [c for c in comps if c["family"] == fam]
        adjusted = stats.holm([c["p"] for c in mine])
        m = sum(math.isfinite(p) for p in adjusted)
        for c, p in zip(mine, adjusted):
            c.update(p_adj=p, m_family=m)
            c.update(kind=stats.classify(c, c["higher_is_better"], c["unit"]),
                     verdict=stats.verdict(c, c["higher_is_better"], c["unit"]))
    return comps


def comparisons(records: list[RunRecord], setup: StudyFacts | None = None) -> list[dict]:
    """Paired comparisons of every self-supervised arm with its counterpart: the supervised arm whose classifier
    sees the same inputs, or for an ablation arm (e.g. ``robust-mmr(domain_weight=0)``) the full arm
    (``ablation`` True). Retrieval / VQA metrics pair with the record's ``task_counterpart`` (the supervised
    image+text arm: those tasks read text whatever the classifier sees).

    Args:
        records: run records.
        setup: study setup (used for method order and the reference ε).

    Returns:
        One dict per (arm, fraction, metric) with data in both arms: ``arm``, ``counterpart``, ``ablation``,
        ``fraction``, ``metric``, ``label``, ``unit``, ``higher_is_better``, ``family``; the test's fields
        (:func:`paired_test`: ``mean_diff``, ``ci_low``, ``ci_high``, ``p``, ``n``, ``mean_a`` = arm,
        ``mean_b`` = counterpart, ``t_ci_low``, ``t_ci_high``, ``t_p``, ``test``, ``n_examples``);
        ``excluded`` (``[(seed, [failed checks])]``), ``p_adj``, ``m_family``, ``kind`` and ``verdict``.
    """
    setup = setup or StudyFacts()
    ref = tables.reference_eps(records, setup)
    ms = readouts.metrics(ref, readouts.imbalanced(setup))
    out = []
    for arm in tables.method_order(records, setup):
        arm_recs = [r for r in records if r.arm == arm]
        base = tables.ablation_base(records, arm)
        cp = base or next((r.counterpart for r in arm_recs if r.counterpart), None)
        if cp is None or (base is None and not any(r.self_supervised for r in arm_recs)) or \
                any(r.defense for r in arm_recs):  # e.g. supervised(augment=False) is an ablation of supervised
            continue  # defended arms: defense_comparisons; supervised pre-training on a pool: diversity_comparisons
        task_cp = base or next((r.task_counterpart for r in arm_recs if r.task_counterpart), cp)
        both_text = any(r.uses_text for r in arm_recs) and any(r.arm == cp and r.uses_text for r in records)
        for f in tables.fraction_order(records):
            a_by_seed = {r.seed: r for r in tables.runs(records, arm, f)}
            for name in COMPARED:
                if name == "noreport_acc" and not both_text:
                    continue
                other = task_cp if name in TASKS else cp
                m = ms[name]
                res = _pair_up(m, a_by_seed, {r.seed: r for r in tables.runs(records, other, f)}, ref)
                if res is not None:
                    out.append(dict(res, arm=arm, counterpart=other, ablation=base is not None, fraction=f,
                                    metric=name, label=m.label, unit=m.unit, higher_is_better=m.higher_is_better,
                                    family=family(name, base is not None, both_text)))
    return adjust(out)


def diversity_comparisons(records: list[RunRecord], setup: StudyFacts | None = None) -> list[dict]:
    """The pool comparisons, paired by seed at each label fraction, in the family :data:`DIVERSITY` (Holm within it):
    every arm pre-trained on a pool vs the same arm pre-trained on the target only (``target_only``; positive =
    the pool helps, negative = negative transfer), a self-supervised pool arm vs supervised pre-training on the same
    pool (``supervised-multitask @ pool``), and supervised pre-training on a pool vs the supervised arm, on
    :data:`DIVERSITY_METRICS`; and a pool arm vs the same method on another pool listed before it (``simclr @ mixed``
    vs ``simclr @ 2d``: what adding the 3D sources did). Fields as :func:`comparisons`, plus ``pair``:
    ``"target-only"``, ``"other-pool"``, ``"supervised-pool"`` or ``"supervised"``."""
    setup = setup or StudyFacts()
    ref = tables.reference_eps(records, setup)
    ms = readouts.metrics(ref, readouts.imbalanced(setup))
    out = []
    for arm in tables.method_order(records, setup):
        recs = [r for r in records if r.arm == arm and r.pool and not r.defense]
        if not recs:
            continue
        r0 = recs[0]
        pairs = [(r0.target_only, "target-only")]
        same = {r.arm for r in records if r.pool and r.target_only == r0.target_only and not r.defense}
        order = [a for a in tables.method_order(records, setup) if a in same]
        pairs += [(other, "other-pool") for other in order[:order.index(arm)]]
        if r0.self_supervised:
            pairs.append((f"supervised-multitask @ {r0.pool}", "supervised-pool"))
        else:  # supervised pre-training on the pool vs supervised training on the target's sparse labels
            pairs.append((r0.counterpart, "supervised"))
        for other, kind in pairs:
            for f in tables.fraction_order(records):
                a = {r.seed: r for r in tables.runs(records, arm, f)}
                b = {r.seed: r for r in tables.runs(records, other, f) if not r.defense}
                for name in DIVERSITY_METRICS:
                    m = ms[name]
                    res = _pair_up(m, a, b, ref) if a and b else None
                    if res is not None:
                        out.append(dict(res, arm=arm, counterpart=other, ablation=False, fraction=f, metric=name,
                                        label=m.label, unit=m.unit, higher_is_better=m.higher_is_better,
                                        family=DIVERSITY, pair=kind))
    return adjust(out)


def defense_comparisons(records: list[RunRecord], setup: StudyFacts | None = None) -> list[dict]:
    """Each defended arm vs its undefended arm, paired by seed: worst-case accuracy and clean accuracy, in the
    family ``"defenses"`` (fields as :func:`comparisons`)."""
    setup = setup or StudyFacts()
    ref = tables.reference_eps(records, setup)
    ms = readouts.metrics(ref, readouts.imbalanced(setup))
    out = []
    for arm in tables.method_order(records, setup):
        recs = [r for r in records if r.arm == arm and r.defense]
        if not recs:
            continue
        base = recs[0].undefended
        for f in tables.fraction_order(records):
            a = {r.seed: r for r in tables.runs(records, arm, f)}
            b = {r.seed: r for r in tables.runs(records, base, f) if not r.defense}
            for name in ("worst_ref", "clean_acc"):
                m = ms[name]
                res = _pair_up(m, a, b, ref)
                if res is not None:
                    out.append(dict(res, arm=arm, counterpart=base, ablation=False, fraction=f, metric=name,
                                    label=m.label, unit=m.unit, higher_is_better=True, family="defenses"))
    return adjust(out)
