"""The report's defense table: each defended arm next to its undefended arm, with costs and self-checks.

Rows are paired by ``undefended`` (the arm's label without its defense), label fraction and seed, so the
clean-accuracy change and the time ratios compare like with like. Robust accuracies are from the same
adaptive evaluation as every other arm (EOT for randomised defenses, BPDA for non-differentiable ones);
for randomised defenses the PGD accuracy *without* EOT is shown beside it to make the difference visible.
"""

from __future__ import annotations

import math

from medrobust.report import stats
from medrobust.report.stats import fmt_cell, fmt_fraction
from medrobust.report.tables import Table, _get, acc, corruption_acc, fraction_order, method_order, summary


def _pair(records: list[dict], r: dict) -> dict | None:
    for o in records:
        if o.get("method") == r.get("undefended") and o.get("fraction") == r.get("fraction") \
                and o.get("seed") == r.get("seed") and not o.get("defense"):
            return o
    return None


def _ratio(records, r, key_fn) -> float:
    base = _pair(records, r)
    if base is None:
        return math.nan
    a, b = key_fn(r), key_fn(base)
    return a / b if b > 0 and math.isfinite(a) and math.isfinite(b) else math.nan


def _time(r: dict, *keys: str) -> float:
    t = r.get("timing") or {}
    vals = [stats._num(t.get(k)) for k in keys]
    return float(sum(v for v in vals if math.isfinite(v))) if any(math.isfinite(v) for v in vals) else math.nan


def _checks(rs: list[dict]) -> str:
    all_checks = [c for r in rs for c in (_get(r, "metrics", "checks") or []) if isinstance(c, dict)]
    if not all_checks:
        return stats.MISSING
    failed = sorted({c.get("name", "?") for c in all_checks if not c.get("passed", True)})
    return "✅ all passed" if not failed else "❌ " + ", ".join(failed)


def defense_tables(records: list[dict], setup: dict, ref: str | None) -> list[Table]:
    """One table per label fraction listing defended arms and their undefended arms."""
    defended = [r for r in records if r.get("defense")]
    if not defended:
        return []
    shown = set(r.get("method") for r in defended) | set(r.get("undefended") for r in defended)
    out = []
    for f in fraction_order(defended):
        cols = [("clean", lambda r: acc(r, "clean"), "pct"),
                ("Δ clean vs undefended (pp)", lambda r: acc(r, "clean") - acc(_pair(records, r) or {}, "clean")
                 if r.get("defense") else math.nan, "pct")]
        if ref is not None:
            cols += [(f"worst case ε={ref}/255", lambda r: stats._num(_get(r, "metrics", "attacks", "worst", ref)), "pct"),
                     (f"PGD ε={ref}/255 (EOT if randomised)",
                      lambda r: stats._num(_get(r, "metrics", "attacks", "pgd", ref)), "pct"),
                     (f"PGD ε={ref}/255 without EOT",
                      lambda r: stats._num(_get(r, "metrics", "attacks", "pgd_without_eot", ref)), "pct")]
        cols += [("mean corruption", lambda r: corruption_acc(r), "pct"),
                 ("held-out site", lambda r: acc(r, "holdout"), "pct"),
                 ("training time ×", lambda r: _ratio(records, r, lambda x: _time(x, "finetune_s", "defense_s"))
                  if r.get("defense") else math.nan, "x"),
                 ("inference time ×", lambda r: _ratio(records, r, lambda x: _time(x, "inference_s"))
                  if r.get("defense") else math.nan, "x")]
        rows = []
        for m in method_order(records, setup):
            if m not in shown:
                continue
            rs = [r for r in records if r.get("method") == m and r.get("fraction") == f]
            if not rs:
                continue
            cells = [fmt_cell(*summary(records, m, f, get), unit=unit) for _, get, unit in cols]
            rows.append([m] + cells + [_checks(rs)])
        keep = [i for i in range(len(cols)) if any(row[i + 1] != stats.MISSING for row in rows)]
        out.append(Table(f"Defenses: accuracy (%), costs relative to the undefended arm, self-checks — "
                         f"{fmt_fraction(f)} labels", ["arm"] + [cols[i][0] for i in keep] + ["self-checks"],
                         [[row[0]] + [row[i + 1] for i in keep] + [row[-1]] for row in rows]))
    return out

