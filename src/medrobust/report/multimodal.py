"""The multimodal section of the report: one table per task × label fraction, one column per condition.

Rows are the image+report arms (ablations of ``robust-mmr`` appear as their own rows, named by the
parameters they switch off); cells are mean ± 95% CI over seeds. Classification: accuracy (%);
retrieval: R@1 (%) and the mean rank of the match (lower is better), both directions; VQA: accuracy (%).
"""

from __future__ import annotations

from medrobust.report import stats
from medrobust.report.stats import fmt_cell, fmt_fraction
from medrobust.report.tables import Table, _get, acc, corruption_acc, fraction_order, method_order, summary

DIRECTIONS = (("image_to_report", "image→report"), ("report_to_image", "report→image"))


def _multimodal(records: list[dict]) -> list[dict]:
    return [r for r in records if "text" in (r.get("modalities") or [])]


def _classification_columns(records: list[dict], ref: str | None) -> list[tuple[str, object]]:
    cols: list[tuple[str, object]] = [
        ("clean", lambda r: acc(r, "clean")),
        ("corrupted image (mean)", lambda r: corruption_acc(r)),
        ("held-out site", lambda r: acc(r, "holdout")),
        ("image only (report removed)", lambda r: acc(r, "noreport")),
        ("report only (image missing)", lambda r: acc(r, "noimage")),
    ]
    if ref is not None:
        cols.append((f"adversarial image (worst case, ε={ref}/255)",
                     lambda r: stats._num(_get(r, "metrics", "attacks", "worst", ref))))
    for name in dict.fromkeys(a for r in records for a in (_get(r, "metrics", "report_attacks") or {})):
        budgets = list(dict.fromkeys(b for r in records for b in (_get(r, "metrics", "report_attacks", name) or {})))
        top = budgets[-1]
        label = {"report-word-substitution": f"adversarial report ({top} words)",
                 "report-embedding-pgd": f"adversarial report embedding ({top})",
                 "joint-image-report": f"joint image+report ({top})"}.get(name, f"{name} ({top})")
        cols.append((label, lambda r, n=name, b=top: stats._num(_get(r, "metrics", "report_attacks", n, b))))
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


def _conditions(records: list[dict], task: str) -> list[str]:
    return list(dict.fromkeys(c for r in records for c in (_get(r, "multimodal", task) or {})
                              if isinstance(_get(r, "multimodal", task, c), dict)))


def _chance(records: list[dict]) -> tuple[str, str]:
    """Title notes with what random ranking scores, when every run ranked the same number of candidates."""
    sizes = {_get(r, "multimodal", "retrieval", "clean", key, "n") for r in records for key, _ in DIRECTIONS}
    sizes.discard(None)
    if len(sizes) != 1:
        return "", ""
    n = int(sizes.pop())
    return (f" (among {n} candidates: chance {100 / n:.1f}%)",
            f"; among {n} candidates, chance is {(n + 1) / 2:g}")


def multimodal_tables(records: list[dict], setup: dict, ref: str | None) -> list[Table]:
    """Classification, retrieval and VQA tables for the image+report arms (empty without such arms)."""
    mm = _multimodal(records)
    out: list[Table] = []
    for f in fraction_order(mm):
        lab = fmt_fraction(f)
        out.append(_table(mm, setup, f, f"Classification accuracy (%) per condition — {lab} labels",
                          _classification_columns(mm, ref)))
        conds = _conditions(mm, "retrieval")
        chance_r1, chance_rank = _chance(mm)
        for key, name in DIRECTIONS:
            cols = [(c, lambda r, c=c, k=key: stats._num(_get(r, "multimodal", "retrieval", c, k, "R@1")))
                    for c in conds]
            out.append(_table(mm, setup, f, f"Retrieval {name}: R@1 (%) per condition{chance_r1} — {lab} labels", cols))
            cols = [(c, lambda r, c=c, k=key: stats._num(_get(r, "multimodal", "retrieval", c, k, "mean_rank")), "s")
                    for c in conds]
            out.append(_table(mm, setup, f, f"Retrieval {name}: mean rank of the match per condition (lower is "
                                            f"better; the rise over clean is the degradation{chance_rank}) — {lab} "
                                            "labels", cols))
        conds = _conditions(mm, "vqa")
        cols = [(c, lambda r, c=c: stats._num(_get(r, "multimodal", "vqa", c, "overall", "accuracy"))) for c in conds]
        cols += [(f"clean {t}", lambda r, t=t: stats._num(_get(r, "multimodal", "vqa", "clean", "answer_type", t,
                                                         "accuracy"))) for t in ("CLOSED", "OPEN")]
        out.append(_table(mm, setup, f, f"VQA accuracy (%) per condition (closed-set answers) — {lab} labels", cols))
    return [t for t in out if t is not None]

