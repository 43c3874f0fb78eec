"""Per-run readouts: the metric values of one :class:`medrobust.record.RunRecord` (NaN for what a run did not
measure) and the :class:`Metric` definitions that tables, comparisons and the answer share.

Multimodal-task conditions are looked up by their stable id (:data:`medrobust.record.CONDITIONS`); their display
labels are :func:`condition_label`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from medrobust.record import RetrievalScores, RunRecord, StudyFacts, TaskMetrics, VQAScores
from medrobust.report import stats
from medrobust.report.stats import NAN, fmt_eps, num


SPLITS = ("clean", "holdout", "without_text", "without_image")


def acc(rec: RunRecord, split: str) -> float:
    """Accuracy of ``rec`` on ``split`` (one of :data:`SPLITS`) or NaN."""
    score = getattr(rec.metrics, split)
    return NAN if score is None else num(score.acc)


def auc(rec: RunRecord, split: str = "clean") -> float:
    score = getattr(rec.metrics, split)
    return NAN if score is None else num(score.auc)


def condition_label(cond: str, tasks: TaskMetrics | None) -> str:
    """How the report names a multimodal-task condition id, with its budget from the record."""
    t = tasks
    words = f"{t.text_edits} words" if t else "words"
    attack = f"{t.attack.upper()}-10, ε={t.attack_eps:g}/255" if t else "PGD"
    return {"clean": "clean", "corrupted_image": "corrupted image", "holdout": "held-out site",
            "perturbed_text": f"perturbed text ({words})", "image_missing": "question only (image missing)",
            "adversarial_image": f"adversarial image ({attack})",
            "adversarial_text": f"adversarial text ({words})"}.get(cond, cond)


def retrieval(rec: RunRecord, cond: str) -> RetrievalScores | None:
    return None if rec.tasks is None or rec.tasks.retrieval is None else rec.tasks.retrieval.get(cond)


def vqa(rec: RunRecord, cond: str) -> VQAScores | None:
    return None if rec.tasks is None or rec.tasks.vqa is None else rec.tasks.vqa.get(cond)


def recall(rec: RunRecord, cond: str, direction: str, k: int) -> float:
    """Retrieval R@k (fraction) in ``direction`` (``image_to_report`` / ``report_to_image``) or NaN."""
    r = retrieval(rec, cond)
    return NAN if r is None else num(getattr(r, direction).recall_at.get(k))


def mean_rank(rec: RunRecord, cond: str, direction: str) -> float:
    r = retrieval(rec, cond)
    return NAN if r is None else num(getattr(r, direction).mean_rank)


def vqa_acc(rec: RunRecord, cond: str, answer_type: str | None = None) -> float:
    """VQA accuracy overall (or of one answer type, ``CLOSED`` / ``OPEN``) under ``cond``, or NaN."""
    v = vqa(rec, cond)
    if v is None:
        return NAN
    a = v.overall if answer_type is None else v.answer_type.get(answer_type)
    return NAN if a is None else num(a.accuracy)


def attack_acc(rec: RunRecord, attack: str, eps: str) -> float:
    """Robust accuracy of ``rec`` under ``attack`` (``fgsm``, ``pgd``, ``worst``) at epsilon key ``eps``."""
    return num(rec.metrics.attacks.get(attack, {}).get(str(eps)))


def text_attack_acc(rec: RunRecord, attack: str, budget: str) -> float:
    """Robust accuracy under a report-side / joint attack at ``budget`` (its key), or NaN."""
    return num(rec.metrics.text_attacks.get(attack, {}).get(budget))


def corruption_acc(rec: RunRecord, corruption: str | None = None, severity: object = None) -> float:
    """Mean accuracy over the chosen corruptions/severities (``None`` = all of them) or NaN."""
    vals = [v for name, per_sev in rec.metrics.corruptions.items() if corruption is None or name == corruption
            for sev, v in per_sev.items() if severity is None or str(sev) == str(severity)]
    xs = stats.finite(vals)
    return sum(xs) / len(xs) if xs else NAN


def corruption_balanced(rec: RunRecord) -> float:
    """Mean balanced accuracy over every corruption and severity, or NaN."""
    xs = stats.finite([v for per_sev in rec.metrics.corruptions_balanced.values() for v in per_sev.values()])
    return sum(xs) / len(xs) if xs else NAN


def imbalanced(setup: StudyFacts | None) -> bool:
    """The test split's rarest class has under half its balanced share (binary: under 25%): the report then
    shows balanced accuracy beside accuracy, whose majority-class floor is high."""
    shares = (setup or StudyFacts()).class_shares
    return len(shares) > 1 and min(shares) < 0.5 / len(shares)


@dataclass(frozen=True)
class Metric:
    """A scalar per run: how to read it, how to print it and which direction is favourable."""

    name: str
    label: str
    unit: str
    higher_is_better: bool
    get: Callable[[RunRecord], float] = field(compare=False, repr=False)
    balanced: bool = False  # the mean per-class accuracy (imbalanced tasks): per-example rows are class-weighted


def metrics(ref_eps: str | None, balanced: bool = False) -> dict[str, Metric]:
    """The per-run metrics used by tables, comparisons and the answer (``ref_eps`` = reference ε key). With
    ``balanced`` (an imbalanced task, :func:`imbalanced`) the robustness metrics the answer compares — worst case,
    mean corruption and held-out-site accuracy — are their balanced accuracies, under the same names."""
    def worst(r: RunRecord) -> float:
        return attack_acc(r, "worst", ref_eps) if ref_eps is not None else NAN

    eps = fmt_eps(ref_eps) if ref_eps is not None else "?"
    ms = [
        Metric("clean_acc", "clean accuracy", "pct", True, lambda r: acc(r, "clean")),
        Metric("clean_auc", "clean AUC", "auc", True, lambda r: auc(r, "clean")),
        Metric("worst_ref", f"worst-case robust accuracy at ε={eps}", "pct", True, worst),
        # the gap is measured on the attacked examples only: their clean accuracy is the ε=0 point
        Metric("gap", f"robustness gap (clean − worst-case at ε={eps}, attacked examples)", "pct", False,
               lambda r: attack_acc(r, "worst", "0") - worst(r)),
        Metric("corr_mean", "mean corruption accuracy", "pct", True, lambda r: corruption_acc(r)),
        Metric("clean_balanced", "clean balanced accuracy", "pct", True,
               lambda r: NAN if r.metrics.clean_balanced is None else r.metrics.clean_balanced),
        Metric("worst_ref_balanced", f"worst-case balanced accuracy at ε={eps} (attacked examples)", "pct", True,
               lambda r: r.metrics.worst_balanced.get(ref_eps, NAN) if ref_eps is not None else NAN),
        Metric("corr_mean_balanced", "mean corruption balanced accuracy", "pct", True, corruption_balanced),
        Metric("holdout_balanced", "held-out-site balanced accuracy", "pct", True,
               lambda r: NAN if r.metrics.holdout_balanced is None else r.metrics.holdout_balanced),
        Metric("holdout_acc", "held-out-site accuracy", "pct", True, lambda r: acc(r, "holdout")),
        Metric("holdout_drop", "in-site → held-out accuracy drop", "pct", False,
               lambda r: acc(r, "clean") - acc(r, "holdout")),
        Metric("noreport_acc", "accuracy with the indication left out", "pct", True, lambda r: acc(r, "without_text")),
        Metric("vqa_acc", "VQA accuracy", "pct", True, lambda r: vqa_acc(r, "clean")),
        Metric("vqa_adv", "VQA accuracy under PGD on the image", "pct", True,
               lambda r: vqa_acc(r, "adversarial_image")),
        Metric("r10", "retrieval R@10 image→report", "pct", True,
               lambda r: recall(r, "clean", "image_to_report", 10)),
        Metric("r10_adv", "retrieval R@10 image→report under PGD on the image", "pct", True,
               lambda r: recall(r, "adversarial_image", "image_to_report", 10)),
        Metric("time_total", "run time (pretrain + defense + fine-tune + inference timing + eval + retrieval/VQA "
               "tasks)", "s", False, lambda r: r.timing.total_s),
    ]
    out = {m.name: m for m in ms}
    if balanced:
        for name, alias in (("worst_ref", "worst_ref_balanced"), ("corr_mean", "corr_mean_balanced"),
                            ("holdout_acc", "holdout_balanced")):
            b = out[alias]
            out[name] = Metric(name, b.label, b.unit, b.higher_is_better, b.get, balanced=True)
    return out
