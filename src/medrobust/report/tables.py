"""Turn run records into metric values and tables (mean ± 95% CI over seeds).

A *record* is one finished run (see the report package's input schema): ``method``, ``fraction``, ``seed``,
``kind``, ``counterpart``, ``modalities``, ``metrics`` (``clean``, ``holdout``, ``noreport``, ``attacks``,
``corruptions``, ``checks``), ``timing`` and ``info``. Every accessor tolerates missing keys and returns
NaN for a metric a run did not measure.

A :class:`Table` is a neutral title/header/rows structure with a Markdown and an HTML rendering, so
``report.md`` and ``report.html`` show the same strings.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Callable

from medrobust.report import stats
from medrobust.report.stats import NAN, fmt_cell, fmt_eps, fmt_fraction, fmt_value, mean_ci

WARN = "⚠"


# ----------------------------------------------------------------------------------------------------
# Record access
# ----------------------------------------------------------------------------------------------------

def _get(rec: dict, *path: str) -> object:
    cur: object = rec
    for key in path:
        if not isinstance(cur, dict) or key not in cur:
            return None
        cur = cur[key]
    return cur


def acc(rec: dict, split: str) -> float:
    """Accuracy of ``rec`` on ``split`` (``clean``, ``holdout``, ``noreport``) or NaN."""
    return stats._num(_get(rec, "metrics", split, "acc"))


def task_value(rec: dict, task: str, condition: str, *path: str) -> float:
    """A multimodal-task metric: ``rec["multimodal"][task][<condition>][*path]``, where ``condition`` is the
    condition name or its prefix (``"adversarial image"`` matches ``"adversarial image (PGD-10, ε=2/255)"``)."""
    conds = _get(rec, "multimodal", task)
    if not isinstance(conds, dict):
        return NAN
    key = condition if condition in conds else next((k for k in conds if k.startswith(condition)), None)
    return NAN if key is None else stats._num(_get(conds, key, *path))


def attack_acc(rec: dict, attack: str, eps: str) -> float:
    """Robust accuracy of ``rec`` under ``attack`` (``fgsm``, ``pgd``, ``worst``) at epsilon key ``eps``."""
    return stats._num(_get(rec, "metrics", "attacks", attack, str(eps)))


def corruption_acc(rec: dict, corruption: str | None = None, severity: object = None) -> float:
    """Mean accuracy over the chosen corruptions/severities (``None`` = all of them) or NaN."""
    table = _get(rec, "metrics", "corruptions")
    if not isinstance(table, dict):
        return NAN
    vals = []
    for name, per_sev in table.items():
        if corruption is not None and name != corruption or not isinstance(per_sev, dict):
            continue
        for sev, v in per_sev.items():
            if severity is None or str(sev) == str(severity):
                vals.append(v)
    xs = stats.finite(vals)
    return sum(xs) / len(xs) if xs else NAN


@dataclass(frozen=True)
class Metric:
    """A scalar per run: how to read it, how to print it and which direction is favourable."""

    name: str
    label: str
    unit: str
    higher_is_better: bool
    get: Callable[[dict], float] = field(compare=False, repr=False)


#: the timed stages of a run record (``timing``), in the order they run
TIMED_STAGES = ("pretrain_s", "defense_s", "finetune_s", "inference_s", "eval_s", "tasks_s")


def metrics(ref_eps: str | None) -> dict[str, Metric]:
    """The per-run metrics used by tables, comparisons and the answer (``ref_eps`` = reference ε key)."""
    def worst(r: dict) -> float:
        return attack_acc(r, "worst", ref_eps) if ref_eps is not None else NAN

    eps = fmt_eps(ref_eps) if ref_eps is not None else "?"
    ms = [
        Metric("clean_acc", "clean accuracy", "pct", True, lambda r: acc(r, "clean")),
        Metric("clean_auc", "clean AUC", "auc", True, lambda r: stats._num(_get(r, "metrics", "clean", "auc"))),
        Metric("worst_ref", f"worst-case robust accuracy at ε={eps}", "pct", True, worst),
        # the gap is measured on the attacked examples only: their clean accuracy is the ε=0 point
        Metric("gap", f"robustness gap (clean − worst-case at ε={eps}, attacked examples)", "pct", False,
               lambda r: attack_acc(r, "worst", "0") - worst(r)),
        Metric("corr_mean", "mean corruption accuracy", "pct", True, lambda r: corruption_acc(r)),
        Metric("holdout_acc", "held-out-site accuracy", "pct", True, lambda r: acc(r, "holdout")),
        Metric("holdout_drop", "in-site → held-out accuracy drop", "pct", False,
               lambda r: acc(r, "clean") - acc(r, "holdout")),
        Metric("noreport_acc", "accuracy with the report removed", "pct", True, lambda r: acc(r, "noreport")),
        Metric("vqa_acc", "VQA accuracy", "pct", True, lambda r: task_value(r, "vqa", "clean", "overall", "accuracy")),
        Metric("vqa_adv", "VQA accuracy under PGD on the image", "pct", True,
               lambda r: task_value(r, "vqa", "adversarial image", "overall", "accuracy")),
        Metric("r10", "retrieval R@10 image→report", "pct", True,
               lambda r: task_value(r, "retrieval", "clean", "image_to_report", "R@10")),
        Metric("r10_adv", "retrieval R@10 image→report under PGD on the image", "pct", True,
               lambda r: task_value(r, "retrieval", "adversarial image", "image_to_report", "R@10")),
        Metric("time_total", "run time (pretrain + defense + fine-tune + inference timing + eval + retrieval/VQA "
               "tasks)", "s", False, lambda r: sum(stats.finite(_get(r, "timing", k) for k in TIMED_STAGES))
               if isinstance(r.get("timing"), dict) else NAN),
    ]
    return {m.name: m for m in ms}


# ----------------------------------------------------------------------------------------------------
# Ordering and grouping
# ----------------------------------------------------------------------------------------------------

def method_order(records: list[dict], setup: dict | None = None) -> list[str]:
    """Methods in the order of ``setup["methods"]`` (strings or dicts with ``name``), then as first seen."""
    order: list[str] = []
    for m in (setup or {}).get("methods") or []:
        name = m.get("name") if isinstance(m, dict) else m
        if isinstance(name, str) and name not in order:
            order.append(name)
    present = [r.get("method") for r in records]
    order = [m for m in order if m in present]
    for m in present:
        if isinstance(m, str) and m not in order:
            order.append(m)
    return order


def fraction_order(records: list[dict]) -> list[float]:
    """Sorted distinct label fractions present in the records."""
    return sorted({float(r["fraction"]) for r in records if r.get("fraction") is not None})


def eps_order(records: list[dict], setup: dict | None = None, attack: str = "worst") -> list[str]:
    """Epsilon keys measured for ``attack``, sorted numerically (setup order first if given)."""
    keys = {str(k) for r in records for k in (_get(r, "metrics", "attacks", attack) or {})}
    grid = [str(e) for e in (setup or {}).get("epsilons") or [] if str(e) in keys]
    rest = [k for k in keys if k not in grid]
    return sorted(grid + rest, key=lambda k: stats._num(k))


def reference_eps(records: list[dict], setup: dict | None = None) -> str | None:
    """``setup["reference_epsilon"]`` if measured, else ``"2"`` if measured, else the middle nonzero ε."""
    grid = eps_order(records, setup)
    ref = (setup or {}).get("reference_epsilon")
    if ref is not None and str(ref) in grid:
        return str(ref)
    if "2" in grid:
        return "2"
    nonzero = [e for e in grid if stats._num(e) > 0]
    return nonzero[len(nonzero) // 2] if nonzero else None


def ablation_base(records: list[dict], arm: str) -> str | None:
    """The full arm that ``arm`` switches components off from, e.g. ``robust-mmr`` for
    ``robust-mmr(domain_weight=0)``: same method without parameters and without a defense, when it ran."""
    r = next((r for r in records if r.get("method") == arm), {})
    base = r.get("method_name")
    if not r.get("method_params") or r.get("defense") or base in (None, arm):
        return None
    return base if any(x.get("method") == base and not x.get("defense") for x in records) else None


def runs(records: list[dict], method: str, fraction: float) -> list[dict]:
    """Records of ``method`` at ``fraction``, sorted by seed."""
    sel = [r for r in records if r.get("method") == method and stats._num(r.get("fraction")) == fraction]
    return sorted(sel, key=lambda r: (stats._num(r.get("seed")), str(r.get("key"))))


def summary(records: list[dict], method: str, fraction: float, get: Callable[[dict], float]):
    """``mean_ci`` of ``get`` over the seeds of ``method`` at ``fraction``."""
    return mean_ci(get(r) for r in runs(records, method, fraction))


def failed_checks(records: list[dict]) -> list[dict]:
    """Every failed self-check as ``dict(method, fraction, seed, name, detail)``, in record order."""
    out = []
    for r in records:
        for c in _get(r, "metrics", "checks") or []:
            if isinstance(c, dict) and not c.get("passed", True):
                out.append(dict(method=r.get("method"), fraction=r.get("fraction"), seed=r.get("seed"),
                                name=str(c.get("name", "?")), detail=str(c.get("detail", ""))))
    return out


def check_marks(records: list[dict]) -> set[tuple[str, float]]:
    """``(method, fraction)`` pairs with at least one failed self-check (their numbers get a ⚠)."""
    return {(c["method"], stats._num(c["fraction"])) for c in failed_checks(records)}


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


def metric_table(records: list[dict], setup: dict, metric: Metric, marks: set | None = None,
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


def eps_tables(records: list[dict], setup: dict, attack: str, marks: set | None = None) -> list[Table]:
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
        if rows:
            out.append(Table(f"{name} robust accuracy (%) per ε — {fmt_fraction(f)} labels",
                             ["method"] + [f"ε={fmt_eps(e)}" for e in grid], rows))
    return out


def report_attack_tables(records: list[dict], setup: dict, marks: set | None = None) -> list[Table]:
    """Image+report arms: one table per report-side/joint attack and label fraction; columns = budgets."""
    names = list(dict.fromkeys(a for r in records for a in (_get(r, "metrics", "report_attacks") or {})))
    out = []
    for name in names:
        budgets = list(dict.fromkeys(b for r in records for b in (_get(r, "metrics", "report_attacks", name) or {})))
        for f in fraction_order(records):
            rows = []
            for m in method_order(records, setup):
                cells = [fmt_cell(*summary(records, m, f, lambda r, b=b: stats._num(
                    _get(r, "metrics", "report_attacks", name, b)))) for b in budgets]
                if any(c != stats.MISSING for c in cells):
                    rows.append([m + (f" {WARN}" if marks and (m, f) in marks else "")] + cells)
            if rows:
                out.append(Table(f"{name}: robust accuracy (%) per budget — {fmt_fraction(f)} labels",
                                 ["method"] + budgets, rows))
    return out


def corruption_tables(records: list[dict], setup: dict, severity: object) -> list[Table]:
    """One table per label fraction: rows method, columns corruption, cell accuracy at ``severity``."""
    names = sorted({c for r in records for c in (_get(r, "metrics", "corruptions") or {})})
    order = [c for c in (setup.get("corruptions") or []) if c in names] + \
        [c for c in names if c not in (setup.get("corruptions") or [])]
    out = []
    for f in fraction_order(records) if order else []:
        rows = []
        for m in method_order(records, setup):
            cells = [fmt_cell(*summary(records, m, f, lambda r, c=c: corruption_acc(r, c, severity)))
                     for c in order]
            if any(c != stats.MISSING for c in cells):
                rows.append([m] + cells)
        if rows:
            out.append(Table(f"Accuracy (%) per corruption at severity {severity} — {fmt_fraction(f)} labels",
                             ["method"] + order, rows))
    return out


def comparison_table(comparisons: list[dict], marks: set | None = None) -> Table | None:
    """Paired self-supervised vs counterpart table from :func:`medrobust.report.answer.comparisons`."""
    rows = []
    for c in comparisons:
        flag = marks and c["metric"] in ("worst_ref", "gap") and \
            ({(c["arm"], c["fraction"]), (c["counterpart"], c["fraction"])} & marks)
        rows.append([
            c["arm"] + (f" {WARN}" if flag else ""), c["counterpart"], f"{fmt_fraction(c['fraction'])}",
            c["label"], fmt_value(c["mean_b"], c["unit"]), fmt_value(c["mean_a"], c["unit"]),
            stats.fmt_diff(c["mean_diff"], c["unit"]), stats.fmt_ci(c["ci_low"], c["ci_high"], c["unit"]),
            stats.fmt_p(c["p"]), str(c["n"]), c["verdict"],
        ])
    if not rows:
        return None
    return Table("",
                 ["arm", "counterpart", "labels", "metric", "counterpart (%)", "arm (%)", "difference (pp)",
                  "95% CI (pp)", "p (paired t)", "n pairs", "verdict"], rows,
                 "Pairs share label fraction and seed. Difference = arm − counterpart. For the robustness gap "
                 "smaller is better, so a negative difference is 'better'.")


def checks_table(records: list[dict], setup: dict) -> Table | None:
    """Every evaluation self-check, one row per run and check, with ✅/❌ and its detail."""
    rows = []
    for m in method_order(records, setup):
        for f in fraction_order(records):
            for r in runs(records, m, f):
                for c in _get(r, "metrics", "checks") or []:
                    if isinstance(c, dict):
                        ok = c.get("passed", True)
                        rows.append([m, fmt_fraction(f), str(r.get("seed")), str(c.get("name", "?")),
                                     "✅" if ok else "❌", str(c.get("detail", ""))])
    return Table("", ["method", "labels", "seed", "check", "passed", "detail"],
                 rows) if rows else None


def run_table(records: list[dict], setup: dict) -> Table:
    """One row per run: method, fraction, seed, timings, whether pre-training came from the cache."""
    def t(r: dict, k: str) -> str:
        return fmt_value(_get(r, "timing", k), "s")
    rows = []
    for m in method_order(records, setup):
        for f in fraction_order(records):
            for r in runs(records, m, f):
                cached = _get(r, "timing", "pretrain_cached")
                rows.append([m, fmt_fraction(f), str(r.get("seed")), t(r, "pretrain_s"),
                             {True: "yes", False: "no"}.get(cached, stats.MISSING), t(r, "finetune_s"),
                             t(r, "eval_s"), str(r.get("finetune_mode") or stats.MISSING),
                             str(r.get("key") or "")[:10]])
    return Table("", ["method", "labels", "seed", "pretrain (s)", "pretrain cached", "fine-tune (s)",
                          "eval (s)", "fine-tune mode", "key"], rows)
