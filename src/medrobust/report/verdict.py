"""The answer at a glance: one sentence and a verdict table (arm × robustness axis).

Each row is one comparison of an arm with the arm it is judged against (its supervised counterpart, the same
method pre-trained on the target only, the undefended arm) at one label fraction; each cell is the paired
difference in pp with its 95% CI and the verdict word after the family's Holm correction — the same numbers as
the paired comparison table, formatted by the same functions. In HTML the cells are colour-coded by verdict.
"""

from __future__ import annotations

import html
from dataclasses import dataclass

from medrobust.report import stats
from medrobust.report.compare import ROBUSTNESS, WITH_INDICATION
from medrobust.report.stats import BETTER, BOUNDED, INCONCLUSIVE, TOO_FEW, UNDETERMINED, WORSE, fmt_ci, fmt_diff

#: the table's columns: metric key → column title
AXES = {"clean_acc": "clean accuracy", **{k: v for k, v in ROBUSTNESS.items()}}

#: row groups in the order shown: (family, the pair kind for diversity rows or None, group title)
GROUPS = (("headline", None, "self-supervised vs supervised (image only)"),
          (WITH_INDICATION, None, "pre-trained vs supervised (image + indication)"),
          ("diversity", "target-only", "pool vs target-only pre-training"),
          ("diversity", "supervised-pool", "self-supervised vs supervised pre-training on the pool"),
          ("diversity", "supervised", "supervised pre-training on the pool vs supervised"),
          ("diversity", "other-pool", "pool vs another pool"),
          ("defenses", None, "defended vs undefended"))

#: HTML background per verdict kind
COLOURS = {BETTER: "#cdeccd", WORSE: "#f6c9c9", BOUNDED: "#e6e9ee", INCONCLUSIVE: "#fff1c2",
           UNDETERMINED: "#f3f3f3", TOO_FEW: "#ffffff"}

SHORT = {BETTER: "better", WORSE: "worse", INCONCLUSIVE: "inconclusive", UNDETERMINED: "undetermined",
         TOO_FEW: "too few seeds"}


def word(c: dict) -> str:
    """The cell's verdict word: better / worse / no diff. > X pp / inconclusive / too few seeds / undetermined."""
    if c["kind"] == BOUNDED:
        return c["verdict"].replace("no difference larger than", "no diff. >")
    return SHORT[c["kind"]]


def cell_text(c: dict | None) -> str:
    """``+3.1 pp (−1.2 to +7.4) inconclusive``; ``—`` when the comparison is missing."""
    if c is None:
        return stats.MISSING
    ci = f" ({fmt_ci(c['ci_low'], c['ci_high'])})" if c["n"] >= 2 else ""
    return f"{fmt_diff(c['mean_diff'])} pp{ci} {word(c)}"


@dataclass
class VerdictTable:
    """Rows of (group, arm, counterpart, labels, {axis: comparison})."""

    rows: list[tuple[str, str, str, str, dict]]
    note: str

    def markdown(self) -> str:
        head = ["compared", "with", "labels", *AXES.values()]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        group = None
        for g, arm, cp, labels, cells in self.rows:
            if g != group:
                lines.append(f"| *{g}* |" + " |" * (len(head) - 1))
                group = g
            lines.append(f"| `{arm}` | `{cp}` | {labels} | "
                         + " | ".join(_bold(cells.get(k)) for k in AXES) + " |")
        return "\n".join(lines) + "\n\n" + self.note + "\n"

    def html(self) -> str:
        e = html.escape
        head = "".join(f"<th>{e(h)}</th>" for h in ("compared", "with", "labels", *AXES.values()))
        body, group = [], None
        for g, arm, cp, labels, cells in self.rows:
            if g != group:
                body.append(f"<tr class='group'><td colspan='{3 + len(AXES)}'>{e(g)}</td></tr>")
                group = g
            tds = []
            for k in AXES:
                c = cells.get(k)
                style = f" style='background:{COLOURS[c['kind']]}'" if c else ""
                tds.append(f"<td{style}>{_cell_html(c)}</td>")
            body.append(f"<tr><td><code>{e(arm)}</code></td><td><code>{e(cp)}</code></td><td>{e(labels)}</td>"
                        + "".join(tds) + "</tr>")
        legend = "".join(f"<span class='chip' style='background:{COLOURS[k]}'>{e(SHORT.get(k, 'no diff. > X pp'))}"
                         "</span>" for k in (BETTER, WORSE, BOUNDED, INCONCLUSIVE, TOO_FEW))
        return (f"<table id='verdict' class='verdict'><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody>"
                f"</table><p class='note'>{legend} {e(self.note)}</p>\n")


def _cell_html(c: dict | None) -> str:
    """The difference in bold, its CI beside it, the verdict word on a second line."""
    if c is None:
        return stats.MISSING
    e = html.escape
    ci = f" <span class='ci'>({e(fmt_ci(c['ci_low'], c['ci_high']))})</span>" if c["n"] >= 2 else ""
    return f"<strong>{e(fmt_diff(c['mean_diff']))} pp</strong>{ci}<br><span class='word'>{e(word(c))}</span>"


def _bold(c: dict | None) -> str:
    text = cell_text(c)
    return f"**{text}**" if c is not None and c["kind"] in (BETTER, WORSE) else text


AXES_WORDS = ("Adversarial: worst-case accuracy at the reference ε; corruptions: mean corruption accuracy; site shift: "
              "held-out-site accuracy.")
BALANCED_WORDS = ("The classes are imbalanced, so the robustness axes compare balanced accuracy (the mean per-class "
                  "recall; 50% for a majority-class guess on two classes): adversarial: worst-case balanced accuracy "
                  "at the reference ε; corruptions: mean corruption balanced accuracy; site shift: held-out-site "
                  "balanced accuracy.")
NOTE = ("Each cell: the arm minus the one it is compared with, in percentage points, paired by seed, with its 95% CI; "
        "the word is the verdict after the Holm correction within the comparison's family (better / worse: "
        "Holm-adjusted p < 0.05; no diff. > X pp: the CI excludes larger differences; inconclusive: neither — a CI "
        "that excludes 0 can still be inconclusive: the CIs are not adjusted for multiplicity, the verdicts are). "
        + AXES_WORDS + " Clean accuracy is a secondary comparison. The paired comparison table has p-values.")


def verdict_table(comps: list[dict]) -> VerdictTable | None:
    """The verdict table of ``comps`` (:func:`compare.comparisons` + defense + diversity comparisons); ``None`` when
    no row has a robustness axis. Clean accuracy joins a row from the same (arm, counterpart, fraction)."""
    rows = []
    for fam, pair, title in GROUPS:
        mine = [c for c in comps if c["metric"] in AXES and
                (c["family"] == fam or (c["metric"] == "clean_acc" and fam in ("headline", WITH_INDICATION)))
                and c.get("pair") == pair]
        keys = dict.fromkeys((c["arm"], c["counterpart"], c["fraction"]) for c in mine if c["family"] == fam
                             and c["metric"] != "clean_acc")
        for arm, cp, f in keys:
            cells = {c["metric"]: c for c in mine if (c["arm"], c["counterpart"], c["fraction"]) == (arm, cp, f)}
            rows.append((title, arm, cp, stats.fmt_fraction(f), cells))
    balanced = any("balanced" in c["label"] for c in comps if c["metric"] in ROBUSTNESS)
    return VerdictTable(rows, NOTE.replace(AXES_WORDS, BALANCED_WORDS) if balanced else NOTE) if rows else None


def glance(comps: list[dict], n_seeds: int, min_seeds: int) -> str:
    """The one sentence above the table: what the headline comparisons say, counted, and how much to trust it."""
    head = [c for c in comps if c["family"] == "headline"] or [c for c in comps if c["family"] == WITH_INDICATION]
    if not head:
        return "**No self-supervised arm could be compared with its supervised counterpart in this study.**"
    n = {k: sum(c["kind"] == k for c in head) for k in stats.KINDS}
    better = sorted({ROBUSTNESS[c["metric"]] for c in head if c["kind"] == BETTER})
    worse = sorted({ROBUSTNESS[c["metric"]] for c in head if c["kind"] == WORSE})
    if n[TOO_FEW] == len(head):
        s = f"None of the {len(head)} robustness comparisons can be judged: too few usable seed pairs"
    elif better and not worse:
        s = (f"Self-supervised pre-training was clearly more robust than supervised training in {n[BETTER]} of "
             f"{len(head)} comparisons ({', '.join(better)}) and clearly less robust in none")
    elif worse and not better:
        s = (f"Self-supervised pre-training was clearly less robust than supervised training in {n[WORSE]} of "
             f"{len(head)} comparisons ({', '.join(worse)}) and clearly more robust in none")
    elif better and worse:
        s = (f"Mixed: self-supervised pre-training was clearly more robust in {n[BETTER]} of {len(head)} comparisons "
             f"({', '.join(better)}) and clearly less robust in {n[WORSE]} ({', '.join(worse)})")
    else:
        s = (f"No self-supervised pre-training was clearly more or less robust than supervised training in any of "
             f"the {len(head)} comparisons: {n[BOUNDED]} rule out a difference larger than 3 pp, {n[INCONCLUSIVE]} "
             "are inconclusive")
    trust = (f" — with {n_seeds} seed{'s' if n_seeds != 1 else ''}, a demonstration rather than a result"
             if n_seeds < min_seeds else "")
    return f"**{s}{trust}.**"
