"""The report's defense table: each defended arm next to its undefended arm, with costs and self-checks.

Rows are paired by ``undefended`` (the arm's label without its defense), label fraction and seed, so the
clean-accuracy change and the time ratios compare like with like. Robust accuracies are from the same
adaptive evaluation as every other arm (EOT for randomised defenses, BPDA for non-differentiable ones);
for randomised defenses the PGD accuracy *without* EOT is shown beside it to make the difference visible.
"""

from __future__ import annotations

import math

from medrobust.record import RunRecord, StudyFacts
from medrobust.report import stats
from medrobust.report.stats import fmt_cell, fmt_fraction
from medrobust.report.readouts import acc, attack_acc, corruption_acc
from medrobust.report.tables import Table, fraction_order, method_order, summary


def _pair(records: list[RunRecord], r: RunRecord) -> RunRecord | None:
    return next((o for o in records if o.arm == r.undefended and o.fraction == r.fraction and o.seed == r.seed
                 and not o.defense), None)


def _ratio(records, r, key_fn) -> float:
    base = _pair(records, r)
    if base is None:
        return math.nan
    a, b = key_fn(r), key_fn(base)
    return a / b if b > 0 and math.isfinite(a) and math.isfinite(b) else math.nan


def _checks(rs: list[RunRecord]) -> str:
    all_checks = [c for r in rs for c in r.metrics.checks]
    if not all_checks:
        return stats.MISSING
    failed = sorted({c.name for c in all_checks if not c.passed})
    return "✅ all passed" if not failed else "❌ " + ", ".join(failed)


def _clean_change(records: list[RunRecord], r: RunRecord) -> float:
    base = _pair(records, r)
    return acc(r, "clean") - acc(base, "clean") if r.defense and base is not None else math.nan


def defense_tables(records: list[RunRecord], setup: StudyFacts, ref: str | None) -> list[Table]:
    """One table per label fraction listing defended arms and their undefended arms."""
    defended = [r for r in records if r.defense]
    if not defended:
        return []
    shown = {r.arm for r in defended} | {r.undefended for r in defended}
    out = []
    for f in fraction_order(defended):
        cols = [("clean", lambda r: acc(r, "clean"), "pct"),
                ("Δ clean vs undefended (pp)", lambda r: _clean_change(records, r), "pct")]
        if ref is not None:
            cols += [(f"worst case ε={ref}/255", lambda r: attack_acc(r, "worst", ref), "pct"),
                     (f"PGD ε={ref}/255 (EOT if randomised)", lambda r: attack_acc(r, "pgd", ref), "pct"),
                     (f"PGD ε={ref}/255 without EOT", lambda r: attack_acc(r, "pgd_without_eot", ref), "pct")]
        cols += [("mean corruption", lambda r: corruption_acc(r), "pct"),
                 ("held-out site", lambda r: acc(r, "holdout"), "pct"),
                 ("training time ×", lambda r: _ratio(records, r, lambda x: x.timing.finetune_s + x.timing.defense_s)
                  if r.defense else math.nan, "x"),
                 ("inference time ×", lambda r: _ratio(records, r, lambda x: x.timing.inference_s)
                  if r.defense else math.nan, "x")]
        rows = []
        for m in method_order(records, setup):
            if m not in shown:
                continue
            rs = [r for r in records if r.arm == m and r.fraction == f]
            if not rs:
                continue
            cells = [fmt_cell(*summary(records, m, f, get), unit=unit) for _, get, unit in cols]
            rows.append([m] + cells + [_checks(rs)])
        keep = [i for i in range(len(cols)) if any(row[i + 1] != stats.MISSING for row in rows)]
        out.append(Table(f"Defenses: accuracy (%), costs relative to the undefended arm, self-checks — "
                         f"{fmt_fraction(f)} labels", ["arm"] + [cols[i][0] for i in keep] + ["self-checks"],
                         [[row[0]] + [row[i + 1] for i in keep] + [row[-1]] for row in rows]))
    return out
