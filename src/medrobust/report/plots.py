"""Report figures (PNG, drawn on matplotlib's Agg canvas without pyplot; matplotlib is imported lazily).

Each function draws one figure from the run records and writes it atomically (temporary file in the
same folder, then ``os.replace``). Bands and error bars are 95% CIs over seeds (:func:`stats.mean_ci`);
every method keeps one colour across all figures (:func:`method_colors`); the legend sits below the
axes so it never covers data. A function returns ``None`` (and writes nothing) when the records hold no
data for its figure.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

from medrobust.fileio import atomic_write
from medrobust.record import RunRecord, StudyFacts
from medrobust.report import readouts, stats, tables
from medrobust.report.stats import fmt_eps, fmt_fraction

DPI = 120
EPS_LABEL = "ε (×1/255)"


def _figure(**kw):
    """A new matplotlib ``Figure`` on the Agg canvas (no pyplot, so no global backend state is touched)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(**kw)
    FigureCanvasAgg(fig)
    return fig


def method_colors(methods: list[str]) -> dict[str, tuple]:
    """One colour per method, from the tab10/tab20 cycle, in the given method order."""
    import matplotlib

    cmap = matplotlib.colormaps["tab10" if len(methods) <= 10 else "tab20"]
    return {m: cmap(i % cmap.N) for i, m in enumerate(methods)}


def _save(fig, path: Path) -> Path:
    """Save ``fig`` to ``path`` atomically (PNG, ``DPI``)."""
    return atomic_write(path, lambda f: fig.savefig(f, dpi=DPI, format="png", metadata={"Software": None}))


def _panels(n: int, title: str, ylabel: str, width: float = 4.6, height: float = 3.8):
    """``n`` panels sharing the y axis; wrapped onto several rows when one row would exceed 16 inches."""
    width = min(width, 16.0)
    ncols = max(1, min(n, int(16.0 // width)))
    nrows = math.ceil(n / ncols)
    fig_w = max(width * ncols, 7.0)
    fig = _figure(figsize=(fig_w, height * nrows + 0.4 * (nrows - 1)))
    grid = fig.subplots(nrows, ncols, squeeze=False, sharey=True)
    axes = [ax for row in grid for ax in row]
    for ax in axes[n:]:
        ax.remove()
    for ax in axes[:n:ncols]:
        ax.set_ylabel(ylabel)
    fig.suptitle(textwrap.fill(title, width=int(fig_w * 10)), fontsize=12)  # ~10 characters per inch at 12 pt
    return fig, axes[:n]


def _legend(fig, axes) -> None:
    """Legend below the panels (never over data); layout leaves room for it."""
    handles, labels = [], []
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    ncol = min(max(len(labels), 1), 5)
    rows = math.ceil(max(len(labels), 1) / ncol)
    h = fig.get_figheight()
    fig.tight_layout(rect=(0, (0.25 + 0.25 * rows) / h, 1, 1 - 0.2 / h))
    fig.legend(handles, labels, loc="lower center", ncol=ncol, frameon=False, fontsize=9,
               bbox_to_anchor=(0.5, 0.01))


def _line(ax, x, stats_list, color, label, marker="o"):
    """Mean line with a 95% CI band; points with no data are skipped."""
    pts = [(xi, m, h) for xi, (m, h, n) in zip(x, stats_list) if n > 0 and math.isfinite(m)]
    if not pts:
        return
    xs, ms, hs = zip(*pts)
    ms100 = [100 * m for m in ms]
    ax.plot(xs, ms100, marker=marker, color=color, label=label, lw=1.8, ms=4)
    if any(math.isfinite(h) for h in hs):
        lo = [100 * (m - (h if math.isfinite(h) else 0)) for m, h in zip(ms, hs)]
        hi = [100 * (m + (h if math.isfinite(h) else 0)) for m, h in zip(ms, hs)]
        ax.fill_between(xs, lo, hi, color=color, alpha=0.18, lw=0)


def input_groups(records: list[RunRecord], methods: list[str]) -> list[tuple[str, list[str]]]:
    """The arms split by what their classifier sees: ``[("image only", [...]), ("image + indication", [...])]``,
    empty groups left out (image-only and image+text classifiers are attacked differently: separate panels)."""
    text = {r.arm for r in records if r.uses_text}
    groups = [("image only", [m for m in methods if m not in text]),
              ("image + indication", [m for m in methods if m in text])]
    return [(name, arms) for name, arms in groups if arms]


def robust_vs_eps(records: list[RunRecord], setup: StudyFacts, path: Path) -> Path | None:
    """Worst-case robust accuracy vs ε (ε=0 included), a line per method, a panel per label fraction and per input
    group (:func:`input_groups`: image-only and image+indication classifiers apart)."""
    grid = tables.eps_order(records, setup, "worst")
    fracs = tables.fraction_order(records)
    if not grid or not fracs:
        return None
    methods = tables.method_order(records, setup)
    colors = method_colors(methods)
    groups = input_groups(records, methods)
    panels = [(f, name, arms) for f in fracs for name, arms in groups]
    fig, axes = _panels(len(panels), "Worst-case robust accuracy vs attack budget (mean ± 95% CI over seeds)",
                        "worst-case robust accuracy (%)")
    pos = list(range(len(grid)))  # the ε grid is roughly geometric: equal spacing keeps small ε readable
    for ax, (f, name, arms) in zip(axes, panels):
        for m in arms:
            s = [tables.summary(records, m, f, lambda r, e=e: readouts.attack_acc(r, "worst", e)) for e in grid]
            _line(ax, pos, s, colors[m], m)
        ax.set_xticks(pos, grid)
        ax.set_title(f"{fmt_fraction(f)} labels" + (f" — {name}" if len(groups) > 1 else ""))
        ax.set_xlabel(EPS_LABEL + " (grid points)")
        ax.set_ylim(-2, 102)
        ax.grid(alpha=0.3)
    _legend(fig, axes)
    return _save(fig, path)


def corruption_severity(records: list[RunRecord], setup: StudyFacts, path: Path) -> Path | None:
    """Mean accuracy over corruptions vs severity (0 = clean), a line per method, a panel per fraction."""
    sevs = sorted({int(stats.num(s)) for r in records for per in r.metrics.corruptions.values()
                   for s in per if math.isfinite(stats.num(s))})
    fracs = tables.fraction_order(records)
    if not sevs or not fracs:
        return None
    methods = tables.method_order(records, setup)
    colors = method_colors(methods)
    x = [0] + sevs
    fig, axes = _panels(len(fracs), "Accuracy under corruptions vs severity (mean over corruptions, ± 95% CI)",
                        "mean accuracy over corruptions (%)")
    for ax, f in zip(axes, fracs):
        for m in methods:
            s = [tables.summary(records, m, f, lambda r: readouts.acc(r, "clean"))]
            s += [tables.summary(records, m, f, lambda r, v=v: readouts.corruption_acc(r, None, v)) for v in sevs]
            _line(ax, x, s, colors[m], m)
        ax.set_xticks(x, [str(v) for v in x])
        ax.set_title(f"{fmt_fraction(f)} labels")
        ax.set_xlabel("corruption severity (0 = clean)")
        ax.set_ylim(-2, 102)
        ax.grid(alpha=0.3)
    _legend(fig, axes)
    return _save(fig, path)


def site_shift(records: list[RunRecord], setup: StudyFacts, path: Path) -> Path | None:
    """Grouped bars: in-site (solid) vs held-out-site (hatched) accuracy per method, a panel per fraction."""
    if not any(math.isfinite(readouts.acc(r, "holdout")) for r in records):
        return None
    from matplotlib.patches import Patch

    fracs = tables.fraction_order(records)
    methods = [m for m in tables.method_order(records, setup)
               if any(r.arm == m and math.isfinite(readouts.acc(r, "holdout")) for r in records)]
    colors = method_colors(tables.method_order(records, setup))
    held = ", ".join(setup.holdout_sites) or "held-out"
    fig, axes = _panels(len(fracs), f"In-site vs held-out-site ({held}) accuracy (mean ± 95% CI over seeds)",
                        "accuracy (%)", width=max(3.4, 0.85 * len(methods) + 1.6), height=4.2)
    w, tilt = 0.38, len(methods) > 2
    for ax, f in zip(axes, fracs):
        present = site_shift_arms(records, methods, f)  # no empty slots for arms without runs at this fraction
        for i, m in enumerate(present):
            for j, split in enumerate(("clean", "holdout")):
                mean, half, n = tables.summary(records, m, f, lambda r, s=split: readouts.acc(r, s))
                if n == 0:
                    continue
                err = 100 * half if math.isfinite(half) else None
                ax.bar(i + (j - 0.5) * w, 100 * mean, w, yerr=err, capsize=3, color=colors[m],
                       alpha=1.0 if j == 0 else 0.55, hatch=None if j == 0 else "//", edgecolor="black", lw=0.6)
        ax.set_xticks(range(len(present)), present, rotation=25 if tilt else 0, ha="right" if tilt else "center",
                      rotation_mode="anchor")
        ax.set_title(f"{fmt_fraction(f)} labels")
        ax.set_ylim(0, 105)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout(rect=(0, 0.4 / fig.get_figheight(), 1, 1 - 0.2 / fig.get_figheight()))
    fig.legend(handles=[Patch(facecolor="0.6", edgecolor="black", label="in-site test"),
                        Patch(facecolor="0.85", edgecolor="black", hatch="//", label=f"held-out site ({held})")],
               loc="lower center", bbox_to_anchor=(0.5, 0.01), fontsize=9, ncol=2, frameon=False)
    return _save(fig, path)


def site_shift_arms(records: list[RunRecord], methods: list[str], fraction: float) -> list[str]:
    """The arms of ``methods`` with a held-out-site accuracy at ``fraction`` (one panel's bars)."""
    return [m for m in methods if any(math.isfinite(readouts.acc(r, "holdout")) for r in tables.runs(records, m, fraction))]


def label_fraction(records: list[RunRecord], setup: StudyFacts, path: Path) -> Path | None:
    """Clean and worst-case (reference ε) accuracy vs label fraction, a line per method; None with fewer than two
    fractions (a single point per method says nothing the tables do not)."""
    fracs = tables.fraction_order(records)
    if len(fracs) < 2:
        return None
    ref = tables.reference_eps(records, setup)
    methods = tables.method_order(records, setup)
    colors = method_colors(methods)
    panels = [("clean accuracy", lambda r: readouts.acc(r, "clean"))]
    if ref is not None:
        panels.append((f"worst-case robust accuracy at ε={fmt_eps(ref)}",
                       lambda r: readouts.attack_acc(r, "worst", ref)))
    fig, axes = _panels(len(panels), "Accuracy vs label fraction (mean ± 95% CI over seeds)", "accuracy (%)")
    log = fracs[0] > 0 and fracs[-1] / fracs[0] >= 10
    for ax, (title, get) in zip(axes, panels):
        for m in methods:
            s = [tables.summary(records, m, f, get) for f in fracs]
            _line(ax, [100 * f for f in fracs], s, colors[m], m)
        if log:
            ax.set_xscale("log")
        ax.set_xticks([100 * f for f in fracs], [fmt_fraction(f) for f in fracs])
        ax.minorticks_off()
        ax.set_title(title)
        ax.set_xlabel("labelled fraction of the training set (%)" + (", log scale" if log else ""))
        ax.set_ylim(-2, 102)
        ax.grid(alpha=0.3)
    _legend(fig, axes)
    return _save(fig, path)


#: the axes of the forest plot, in its order (metric -> group title)
FOREST_AXES = {"worst_ref": "adversarial (worst case at the reference ε)", "corr_mean": "corruptions (mean accuracy)",
               "holdout_acc": "site shift (held-out-site accuracy)"}


def forest_rows(records: list[RunRecord], setup: StudyFacts) -> list[dict]:
    """The forest plot's rows: every headline comparison (pre-trained arm vs its supervised counterpart) and every
    diversity comparison on the three robustness axes, as ``axis``, ``label``, ``diff``, ``lo``, ``hi`` (pp) and
    ``kind`` (the verdict's kind after Holm), grouped by axis in :data:`FOREST_AXES` order."""
    from medrobust.report.compare import comparisons, diversity_comparisons

    comps = [c for c in comparisons(records, setup) if c["family"] == "headline"]
    comps += [c for c in diversity_comparisons(records, setup) if c["metric"] in FOREST_AXES]
    rows = []
    for metric, axis in FOREST_AXES.items():
        for c in comps:
            if c["metric"] != metric or not math.isfinite(stats.num(c["mean_diff"])):
                continue
            if "balanced" in c["label"]:  # an imbalanced task: the axes compare balanced accuracy
                axis = axis.replace("(worst case", "(balanced worst case").replace("(mean accuracy", "(mean balanced accuracy") \
                    .replace("(held-out-site accuracy", "(balanced, held-out site")
            rows.append({"axis": axis, "label": f"{c['arm']} vs {c['counterpart']} ({fmt_fraction(c['fraction'])})",
                         "diff": 100 * c["mean_diff"], "lo": 100 * stats.num(c["ci_low"]),
                         "hi": 100 * stats.num(c["ci_high"]), "kind": c["kind"]})
    return rows


def differences(records: list[RunRecord], setup: StudyFacts, path: Path) -> Path | None:
    """Forest plot of :func:`forest_rows`: each paired difference (pp) with its 95% CI, grouped by axis, the zero
    line marked; clear differences (Holm-adjusted) in colour, the rest gray."""
    rows = forest_rows(records, setup)
    if not rows:
        return None
    axes_order = list(dict.fromkeys(r["axis"] for r in rows))
    n = len(rows) + len(axes_order)
    fig = _figure(figsize=(9.5, 1.2 + 0.32 * n))
    ax = fig.add_subplot(1, 1, 1)
    y, ticks, labels = 0, [], []
    colors = {stats.BETTER: "tab:green", stats.WORSE: "tab:red"}
    for axis in axes_order:
        ticks.append(y)
        labels.append(axis)
        y -= 1
        for r in (r for r in rows if r["axis"] == axis):
            lo = r["lo"] if math.isfinite(r["lo"]) else r["diff"]
            hi = r["hi"] if math.isfinite(r["hi"]) else r["diff"]
            color = colors.get(r["kind"], "0.35")
            ax.errorbar([r["diff"]], [y], xerr=[[r["diff"] - lo], [hi - r["diff"]]], fmt="o", color=color,
                        capsize=3, markersize=4)
            ticks.append(y)
            labels.append("   " + r["label"])
            y -= 1
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_yticks(ticks, labels)
    for tick, text in zip(ax.get_yticklabels(), labels):
        if not text.startswith("   "):
            tick.set_fontweight("bold")
    ax.set_xlabel("difference (pp), 95% CI; right of 0: the first arm is better")
    ax.set_title("Paired differences — green / red: clear after Holm; gray: not clear", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


#: file name → plotting function, in report order
FOREST = "differences.png"
PLOTS = {FOREST: differences, "robust_vs_eps.png": robust_vs_eps, "corruption_severity.png": corruption_severity,
         "site_shift.png": site_shift, "label_fraction.png": label_fraction}


def make_all(records: list[RunRecord], setup: StudyFacts, out_dir: Path) -> dict[str, Path | None]:
    """Draw every figure into ``out_dir``; the value is ``None`` for a figure with no data."""
    return {name: fn(records, setup, Path(out_dir) / name) for name, fn in PLOTS.items()}

