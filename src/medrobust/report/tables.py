"""Turn run records into metric values and tables (mean ± 95% CI over seeds).

Records are :class:`medrobust.record.RunRecord`; the study's facts are a :class:`medrobust.record.StudyFacts`;
the per-run values come from :mod:`medrobust.report.readouts`.

A :class:`Table` is a neutral title/header/rows structure with a Markdown and an HTML rendering, so
``report.md`` and ``report.html`` show the same strings.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Callable

from medrobust.record import RunRecord, StudyFacts
from medrobust.report import stats
from medrobust.report.readouts import Metric, attack_acc, corruption_acc, text_attack_acc
from medrobust.report.stats import fmt_cell, fmt_eps, fmt_fraction, fmt_value, mean_ci, num

WARN = "⚠"


# ----------------------------------------------------------------------------------------------------
# Ordering and grouping
# ----------------------------------------------------------------------------------------------------

def method_order(records: list[RunRecord], setup: StudyFacts | None = None) -> list[str]:
    """Arms in the order of ``setup.arms``, then as first seen (only arms with records)."""
    present = list(dict.fromkeys(r.arm for r in records))
    order = [a for a in dict.fromkeys((setup or StudyFacts()).arms) if a in present]
    return order + [a for a in present if a not in order]


def fraction_order(records: list[RunRecord]) -> list[float]:
    """Sorted distinct label fractions present in the records."""
    return sorted({float(r.fraction) for r in records})


def eps_order(records: list[RunRecord], setup: StudyFacts | None = None, attack: str = "worst") -> list[str]:
    """Epsilon keys measured for ``attack``, sorted numerically (setup order first if given)."""
    keys = {str(k) for r in records for k in r.metrics.attacks.get(attack, {})}
    grid = [str(e) for e in (setup or StudyFacts()).epsilons if str(e) in keys]
    rest = [k for k in keys if k not in grid]
    return sorted(grid + rest, key=num)


def reference_eps(records: list[RunRecord], setup: StudyFacts | None = None) -> str | None:
    """``setup.reference_epsilon`` if measured, else ``"2"`` if measured, else the middle nonzero ε."""
    grid = eps_order(records, setup)
    ref = (setup or StudyFacts()).reference_epsilon
    if ref is not None and str(ref) in grid:
        return str(ref)
    if "2" in grid:
        return "2"
    nonzero = [e for e in grid if num(e) > 0]
    return nonzero[len(nonzero) // 2] if nonzero else None


def ablation_base(records: list[RunRecord], arm: str) -> str | None:
    """The full arm that ``arm`` switches components off from, e.g. ``robust-mmr`` for
    ``robust-mmr(domain_weight=0)`` or ``supervised`` for ``supervised(augment=False)``: same method without
    parameters and without a defense, when it ran."""
    r = next((r for r in records if r.arm == arm), None)
    if r is None or not r.method_params or r.defense or r.method == arm:
        return None
    head = f"{r.method}({', '.join(f'{k}={v}' for k, v in sorted(r.method_params.items()))})"
    base = r.method + (arm[len(head):] if arm.startswith(head) else "")  # same inputs / fine-tuning mode suffix
    return base if any(x.arm == base and not x.defense for x in records) else None


def runs(records: list[RunRecord], arm: str, fraction: float) -> list[RunRecord]:
    """Records of ``arm`` at ``fraction``, sorted by seed."""
    sel = [r for r in records if r.arm == arm and r.fraction == fraction]
    return sorted(sel, key=lambda r: (r.seed, r.key))


def summary(records: list[RunRecord], arm: str, fraction: float, get: Callable[[RunRecord], float]):
    """``mean_ci`` of ``get`` over the seeds of ``arm`` at ``fraction``."""
    return mean_ci(get(r) for r in runs(records, arm, fraction))


def failed_checks(records: list[RunRecord]) -> list[dict]:
    """Every failed self-check as ``dict(method, fraction, seed, name, detail)``, in record order."""
    return [dict(method=r.arm, fraction=r.fraction, seed=r.seed, name=c.name, detail=c.detail)
            for r in records for c in r.metrics.checks if not c.passed]


def check_marks(records: list[RunRecord]) -> set[tuple[str, float]]:
    """``(arm, fraction)`` pairs with at least one failed self-check (their numbers get a ⚠)."""
    return {(c["method"], c["fraction"]) for c in failed_checks(records)}


# ----------------------------------------------------------------------------------------------------
# Tables
# ----------------------------------------------------------------------------------------------------

@dataclass
class Table:
    """A rendered-agnostic table: every cell is already a formatted string."""

    title: str
    header: list[str]
    rows: list[list[str]]
    note: str = ""

    def markdown(self) -> str:
        """GitHub-flavoured Markdown rendering (title as a level-3 heading)."""
        def esc(s: str) -> str:
            return str(s).replace("|", "\\|").replace("\n", " ")
        lines = [f"### {self.title}", ""] if self.title else []
        if self.note:
            lines += [self.note, ""]
        lines.append("| " + " | ".join(esc(h) for h in self.header) + " |")
        lines.append("|" + "|".join("---" for _ in self.header) + "|")
        lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in self.rows]
        return "\n".join(lines) + "\n"

    def html(self) -> str:
        """HTML rendering (title as ``<h3>``)."""
        e = html.escape
        head = "".join(f"<th>{e(h)}</th>" for h in self.header)
        body = "".join("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in row) + "</tr>" for row in self.rows)
        note = f"<p class='note'>{e(self.note)}</p>" if self.note else ""
        title = f"<h3>{e(self.title)}</h3>" if self.title else ""
        return f"{title}{note}<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>\n"


def metric_table(records: list[RunRecord], setup: StudyFacts, metric: Metric, marks: set | None = None,
                 title: str | None = None) -> Table | None:
    """Rows: method; columns: label fraction; cell: mean ± 95% CI (n). ``None`` if nothing was measured.

    Cells of ``(method, fraction)`` in ``marks`` get a trailing ⚠ (a failed self-check concerns them).
    """
    fracs = fraction_order(records)
    rows = []
    for m in method_order(records, setup):
        cells = []
        for f in fracs:
            mean, half, n = summary(records, m, f, metric.get)
            cell = fmt_cell(mean, half, n, metric.unit)
            cells.append(cell + f" {WARN}" if marks and (m, f) in marks and n else cell)
        if any(c != stats.MISSING for c in cells):
            rows.append([m] + cells)
    if not rows:
        return None
    unit = {"pct": " (%)" if metric.higher_is_better else " (pp)", "s": " (s)"}.get(metric.unit, "")
    direction = "higher is better" if metric.higher_is_better else "lower is better"
    return Table(title or metric.label[0].upper() + metric.label[1:] + unit,
                 ["method"] + [f"{fmt_fraction(f)} labels" for f in fracs], rows,
                 f"Mean ± 95% CI half-width over seeds (t-distribution); {direction}.")


def eps_tables(records: list[RunRecord], setup: StudyFacts, attack: str, marks: set | None = None) -> list[Table]:
    """One table per label fraction: rows method, columns ε, cell robust accuracy under ``attack``."""
    grid = eps_order(records, setup, attack)
    name = {"worst": "Worst-case", "pgd": "PGD", "fgsm": "FGSM"}.get(attack, attack)
    out = []
    for f in fraction_order(records) if grid else []:
        rows = []
        for m in method_order(records, setup):
            cells = [fmt_cell(*summary(records, m, f, lambda r, e=e: attack_acc(r, attack, e))) for e in grid]
            if any(c != stats.MISSING for c in cells):
                rows.append([m + (f" {WARN}" if marks and (m, f) in marks else "")] + cells)
        ran = None if attack != "worst" or setup.worst_case_epsilons is None else set(setup.worst_case_epsilons)
        partial = [e for e in grid if ran is not None and e not in ran and stats.num(e) > 0]
        note = "" if not partial else (
            f"The worst-case sequence ran at ε ∈ {{{', '.join(fmt_eps(e) for e in grid if e in ran)}}} "
            f"(`evaluation.worst_case_epsilons`); at the ε marked † the worst case is over the curves (FGSM, PGD) "
            "and the smaller ε's worst case only: an upper bound weaker than at the other ε.")
        if rows:
            out.append(Table(f"{name} robust accuracy (%) per ε — {fmt_fraction(f)} labels",
                             ["method"] + [f"ε={fmt_eps(e)}" + (" †" if e in partial else "") for e in grid], rows,
                             note))
    return out


def report_attack_tables(records: list[RunRecord], setup: StudyFacts, marks: set | None = None) -> list[Table]:
    """Image+indication classifiers: one table per text-side / joint attack and label fraction; columns = budgets."""
    names = list(dict.fromkeys(a for r in records for a in r.metrics.text_attacks))
    out = []
    for name in names:
        budgets = list(dict.fromkeys(b for r in records for b in r.metrics.text_attacks.get(name, {})))
        for f in fraction_order(records):
            rows = []
            for m in method_order(records, setup):
                cells = [fmt_cell(*summary(records, m, f, lambda r, b=b: text_attack_acc(r, name, b)))
                         for b in budgets]
                if any(c != stats.MISSING for c in cells):
                    rows.append([m + (f" {WARN}" if marks and (m, f) in marks else "")] + cells)
            if rows:
                out.append(Table(f"{name}: robust accuracy (%) per budget — {fmt_fraction(f)} labels",
                                 ["method"] + budgets, rows))
    return out


SEEN, HELD_OUT, SEEN_BY_ARM = "seen", "held out", "†"  # column marks: seen in / held out from augmentation


def corruption_tables(records: list[RunRecord], setup: StudyFacts, severity: object) -> list[Table]:
    """One table per label fraction: rows method, columns corruption, cell accuracy at ``severity``.

    Each column says whether the arms' training augmentations apply that corruption (``RunRecord.augmented``):
    "(seen)" in augmentation when every arm of the table saw it, "(held out)" from augmentation when none did;
    otherwise the cells of the arms that saw it carry †. The note names the held-out corruptions.
    """
    names = sorted({c for r in records for c in r.metrics.corruptions})
    order = [c for c in setup.corruptions if c in names] + [c for c in names if c not in setup.corruptions]
    out = []
    for f in fraction_order(records) if order else []:
        rows, arms = [], []
        for m in method_order(records, setup):
            cells = [fmt_cell(*summary(records, m, f, lambda r, c=c: corruption_acc(r, c, severity)))
                     for c in order]
            if any(c != stats.MISSING for c in cells):
                rows.append([m] + cells)
                arms.append(m)
        if rows:
            seen = {c: {m for m in arms if any(c in r.augmented for r in runs(records, m, f))} for c in order}
            for row, m in zip(rows, arms):
                row[1:] = [cell + (f" {SEEN_BY_ARM}" if 0 < len(seen[c]) < len(arms) and m in seen[c] else "")
                           for cell, c in zip(row[1:], order)]
            header = [c + (f" ({SEEN})" if len(seen[c]) == len(arms) else f" ({HELD_OUT})" if not seen[c] else "")
                      for c in order]
            out.append(Table(f"Accuracy (%) per corruption at severity {severity} — {fmt_fraction(f)} labels",
                             ["method"] + header, rows, _augmentation_note(
                                 [c for c in order if not seen[c]], any(len(s) == len(arms) for s in seen.values()),
                                 any(0 < len(s) < len(arms) for s in seen.values()))))
    return out


def _test_name(c: dict) -> str:
    if c.get("test") == "paired t + bootstrap":
        return f"paired t and bootstrap ({c['n']} seeds × {c['n_examples']} examples), both required"
    return "paired t (seeds only)"


COMPARISON_NOTE = (
    "Pairs share label fraction and seed. Difference = arm − counterpart. The 95% CI and p come from the test "
    "named in 'test': when both arms' records carry per-example outcomes, a paired t over seeds AND a "
    "hierarchical paired bootstrap (seeds resampled, then test examples within each seed, the same examples for "
    f"both arms; {stats.N_BOOT} resamples with a fixed seed, percentile CI, two-sided bootstrap p), the larger p "
    "and the CI spanning both (with few seeds the bootstrap alone understates the seed-to-seed variance); else the "
    "paired t over seeds alone. The seeds-only t CI is shown for every row. Multiplicity: Holm–Bonferroni within each family (headline robustness, retrieval and "
    "VQA, ablations, defenses, secondary); 'better' / 'worse' only when the Holm-adjusted p < 0.05. A non-clear "
    "difference is 'no difference larger than X pp' (X the far end of its 95% CI rounded up to 0.5 pp, when "
    "X ≤ 3) or 'inconclusive'; a difference with zero variance (p undefined) is 'undetermined'. Runs failing "
    "above_chance are left out of every comparison, runs failing an attack self-check (gradients_nonzero, "
    "large_eps_breaks, eps0_equals_clean, monotone_in_eps) out of the worst-case and gap comparisons: their "
    "seed pairs are counted under 'excluded pairs'. For the robustness gap smaller is better, so a negative "
    "difference is 'better'.")


def _augmentation_note(held_out: list[str], all_seen: bool, partly: bool) -> str:
    """Which corruptions no arm's training augmentation applies, so a gain on them is not having seen them."""
    head = (f"({SEEN}) = seen in augmentation: every arm's training views (pre-training views and the supervised "
            "fine-tuning views) apply that corruption, so accuracy under it partly measures having trained on it."
            if all_seen else "")
    if held_out:
        tail = (f" ({HELD_OUT}) = held out from augmentation, no arm trains with it: {', '.join(held_out)} — "
                "robustness to a corruption none of them has seen.")
    else:
        tail = " No corruption evaluated here is held out from augmentation: every one was seen in training."
    return (head + tail + (f" {SEEN_BY_ARM}: that arm saw the corruption in augmentation, the others did not."
                           if partly else "")).strip()


def comparison_table(comparisons: list[dict], marks: set | None = None) -> Table | None:
    """Paired comparison table from :func:`medrobust.report.compare.comparisons` (and ``defense_comparisons``):
    raw and Holm-adjusted p, the test used, the seeds-only t CI, excluded seed pairs and the verdict."""
    rows = []
    for c in comparisons:
        flag = marks and c["metric"] in ("worst_ref", "gap") and \
            ({(c["arm"], c["fraction"]), (c["counterpart"], c["fraction"])} & marks)
        rows.append([
            c["arm"] + (f" {WARN}" if flag else ""), c["counterpart"], f"{fmt_fraction(c['fraction'])}",
            c["label"], stats.FAMILIES.get(c["family"], c["family"]).split(" (")[0],
            fmt_value(c["mean_b"], c["unit"]), fmt_value(c["mean_a"], c["unit"]),
            stats.fmt_diff(c["mean_diff"], c["unit"]), stats.fmt_ci(c["ci_low"], c["ci_high"], c["unit"]),
            _test_name(c), stats.fmt_ci(c["t_ci_low"], c["t_ci_high"], c["unit"]),
            stats.fmt_p(c["p"]), stats.fmt_p(c["p_adj"]), str(c["n"]), str(len(c["excluded"])), c["verdict"],
        ])
    if not rows:
        return None
    return Table("",
                 ["arm", "counterpart", "labels", "metric", "family", "counterpart (%)", "arm (%)", "difference (pp)",
                  "95% CI (pp)", "test", "seeds-only t 95% CI (pp)", "p", "p (Holm)", "n pairs", "excluded pairs",
                  "verdict"], rows, COMPARISON_NOTE)


def checks_table(records: list[RunRecord], setup: StudyFacts) -> Table | None:
    """Every evaluation self-check, one row per run and check, with ✅/❌ and its detail."""
    rows = []
    for m in method_order(records, setup):
        for f in fraction_order(records):
            for r in runs(records, m, f):
                for c in r.metrics.checks:
                    rows.append([m, fmt_fraction(f), str(r.seed), c.name, "✅" if c.passed else "❌", c.detail])
    return Table("", ["method", "labels", "seed", "check", "passed", "detail"],
                 rows) if rows else None


def checks_summary(records: list[RunRecord]) -> Table | None:
    """One row per self-check: how many runs passed it, and each failing run named with its detail."""
    names = list(dict.fromkeys(c.name for r in records for c in r.metrics.checks))
    rows = []
    for name in names:
        mine = [(r, c) for r in records for c in r.metrics.checks if c.name == name]
        failed = [f"{r.arm} at {fmt_fraction(r.fraction)} labels, seed {r.seed}: {c.detail}" for r, c in mine
                  if not c.passed]
        rows.append([name, f"{len(mine) - len(failed)} of {len(mine)}", "; ".join(failed) or "none"])
    return Table("", ["check", "runs passed", "failed runs"], rows,
                 "Every run's self-checks with their details: appendix.md.") if rows else None


def run_table(records: list[RunRecord], setup: StudyFacts) -> Table:
    """One row per run: method, fraction, seed, timings, whether pre-training came from the cache."""
    def t(r: RunRecord, k: str) -> str:
        return fmt_value(getattr(r.timing, k), "s")
    rows = []
    for m in method_order(records, setup):
        for f in fraction_order(records):
            for r in runs(records, m, f):
                rows.append([m, fmt_fraction(f), str(r.seed), t(r, "pretrain_s"),
                             "yes" if r.timing.pretrain_cached else "no", t(r, "finetune_s"),
                             t(r, "eval_s"), r.finetune_mode, r.key[:10]])
    return Table("", ["method", "labels", "seed", "pretrain (s)", "pretrain cached", "fine-tune (s)",
                          "eval (s)", "fine-tune mode", "key"], rows)
