"""The multimodal section of the report: one table per task × label fraction, one column per condition.

Rows are the image+report arms (ablations of ``robust-mmr`` appear as their own rows, named by the
parameters they switch off); cells are mean ± 95% CI over seeds. Classification: accuracy (%);
retrieval: R@1 (%) and the mean rank of the match (lower is better), both directions; VQA: accuracy (%).
"""

from __future__ import annotations

from medrobust.record import RunRecord, StudyFacts
from medrobust.report import stats
from medrobust.report.stats import fmt_cell, fmt_fraction
from medrobust.report.readouts import acc, condition_label, corruption_acc, mean_rank, recall, text_attack_acc, vqa_acc
from medrobust.report.tables import Table, fraction_order, method_order, summary

DIRECTIONS = (("image_to_report", "image→report"), ("report_to_image", "report→image"))
TEXT_ATTACK_LABELS = {"report-word-substitution": "adversarial indication ({} words)",
                      "report-embedding-pgd": "adversarial indication embedding ({})",
                      "joint-image-report": "joint image+indication ({})"}


def _multimodal(records: list[RunRecord]) -> list[RunRecord]:
    """Runs with a multimodal part: a classifier that sees text, or retrieval / VQA tasks."""
    return [r for r in records if r.uses_text or r.tasks is not None]


def _classification_columns(records: list[RunRecord], ref: str | None) -> list[tuple[str, object]]:
    cols: list[tuple[str, object]] = [
        ("clean", lambda r: acc(r, "clean")),
        ("corrupted image (mean)", lambda r: corruption_acc(r)),
        ("held-out site", lambda r: acc(r, "holdout")),
        ("image only (indication left out)", lambda r: acc(r, "without_text")),
        ("indication only (image missing)", lambda r: acc(r, "without_image")),
    ]
    if ref is not None:
        cols.append((f"adversarial image (worst case, ε={ref}/255)",
                     lambda r: stats.num(r.metrics.attacks.get("worst", {}).get(ref))))
    for name in dict.fromkeys(a for r in records for a in r.metrics.text_attacks):
        top = list(dict.fromkeys(b for r in records for b in r.metrics.text_attacks.get(name, {})))[-1]
        label = TEXT_ATTACK_LABELS.get(name, name + " ({})").format(top)
        cols.append((label, lambda r, n=name, b=top: text_attack_acc(r, n, b)))
    return cols


def _table(records, setup, fraction, title, columns) -> Table | None:
    rows = []
    for m in method_order(records, setup):
        cells = [fmt_cell(*summary(records, m, fraction, col[1]), unit=col[2] if len(col) > 2 else "pct")
                 for col in columns]
        if any(c != stats.MISSING for c in cells):
            rows.append([m] + cells)
    keep = [i for i in range(len(columns)) if any(row[i + 1] != stats.MISSING for row in rows)]
    if not rows or not keep:
        return None
    return Table(title, ["arm"] + [columns[i][0] for i in keep], [[row[0]] + [row[i + 1] for i in keep] for row in rows])


def _conditions(records: list[RunRecord], task: str) -> list[tuple[str, str]]:
    """``(condition id, display label)`` of every condition measured for ``task``, in the order evaluated."""
    seen = dict.fromkeys(c for r in records if r.tasks is not None for c in (getattr(r.tasks, task) or {}))
    tasks = next((r.tasks for r in records if r.tasks is not None), None)
    return [(c, condition_label(c, tasks)) for c in seen]


def _chance(records: list[RunRecord]) -> tuple[str, str]:
    """Title notes with what random ranking scores, when every run ranked the same number of candidates."""
    sizes = {getattr(r.tasks.retrieval["clean"], key).n for r in records
             if r.tasks is not None and r.tasks.retrieval and "clean" in r.tasks.retrieval for key, _ in DIRECTIONS}
    if len(sizes) != 1:
        return "", ""
    n = int(sizes.pop())
    return (f" (among {n} candidates: chance {100 / n:.1f}%)",
            f"; among {n} candidates, chance is {(n + 1) / 2:g}")


def multimodal_tables(records: list[RunRecord], setup: StudyFacts, ref: str | None) -> list[Table]:
    """Classification, retrieval and VQA tables for the image+report arms (empty without such arms)."""
    mm = _multimodal(records)
    out: list[Table] = []
    for f in fraction_order(mm):
        lab = fmt_fraction(f)
        with_text = [r for r in mm if r.uses_text]
        out.append(_table(with_text, setup, f, f"Image+indication classifiers: accuracy (%) per condition — {lab} "
                          "labels", _classification_columns(with_text, ref)) if with_text else None)
        conds = _conditions(mm, "retrieval")
        chance_r1, chance_rank = _chance(mm)
        for key, name in DIRECTIONS:
            cols = [(label, lambda r, c=c, k=key: recall(r, c, k, 1)) for c, label in conds]
            out.append(_table(mm, setup, f, f"Retrieval {name}: R@1 (%) per condition{chance_r1} — {lab} labels", cols))
            cols = [(label, lambda r, c=c, k=key: mean_rank(r, c, k), "s") for c, label in conds]
            out.append(_table(mm, setup, f, f"Retrieval {name}: mean rank of the match per condition (lower is "
                                            f"better; the rise over clean is the degradation{chance_rank}) — {lab} "
                                            "labels", cols))
        conds = _conditions(mm, "vqa")
        cols = [(label, lambda r, c=c: vqa_acc(r, c)) for c, label in conds]
        cols += [(f"clean {t}", lambda r, t=t: vqa_acc(r, "clean", t)) for t in ("CLOSED", "OPEN")]
        out.append(_table(mm, setup, f, f"VQA accuracy (%) per condition (closed-set answers) — {lab} labels", cols))
    return [t for t in out if t is not None]
