"""Write the study report: ``report.md`` (concise), ``appendix.md`` (full detail), a self-contained ``report.html``
(both, the appendix collapsed) and the PNG figures.

The report is first assembled as a list of neutral *blocks* (heading, Markdown text, warnings box,
table, image, code); :mod:`medrobust.report.markup` renders the same blocks as Markdown and HTML, so both files
carry the same content. HTML embeds the figures as base64 data URIs and uses inline CSS only. Output is
deterministic for the same input: no clock is read.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from pathlib import Path

from medrobust.fileio import atomic_write_text
from medrobust.record import RunRecord, StudyFacts
from medrobust.report.corruption_error import corruption_error_table
from medrobust.report.defenses import defense_tables
from medrobust.report.multimodal import multimodal_tables
from medrobust.report import answer as answer_mod
from medrobust.report import brief, plots, readouts, stats, tables, verdict
from medrobust.report.markup import to_html, to_markdown
from medrobust.report.stats import fmt_eps, fmt_fraction

APPENDIX = "appendix.md"
TITLE = "Does self-supervised pre-training make medical imaging models more robust?"

# ----------------------------------------------------------------------------------------------------
# Content
# ----------------------------------------------------------------------------------------------------

def _join(xs, most: int = 12) -> str:
    """``a, b, c``; past ``most`` items: the count, the first ones and "..." (e.g. 54 hospitals)."""
    xs = [str(x) for x in xs]
    return ", ".join(xs) if len(xs) <= most else f"{len(xs)}: {', '.join(xs[:most])}, ..."


def _components(items) -> str:
    return ", ".join(f"{c.name}{'' if not c.params else ' ' + str(c.params)}" for c in items) or "none"


def _attack_line(s: StudyFacts) -> str:
    at = "all" if s.worst_case_epsilons is None else f"[{', '.join(s.worst_case_epsilons)}]"
    return (f"L∞ image attacks on {s.max_adversarial} fixed test images: curves {_components(s.attacks)} (every "
            f"example, every ε); then the worst-case sequence {_components(s.worst_case)} at ε {at} (×1/255; "
            "AutoAttack style: each attack only on examples still correct); robust accuracy = per-example worst "
            "case over all. Image+indication classifiers: the image is attacked with the indication left clean")


def _downstream_line(s: StudyFacts) -> str:
    """What the image+text arms are fine-tuned and evaluated with, in words."""
    head = ("reports (written after reading the image) serve pre-training and retrieval only; a classifier sees the "
            "image, or the image with the indication (written before it is read); image+indication classifiers: ")
    if s.fusion is None:
        model = ("late fusion, the (pre-trained) image and text encoders' features concatenated; a fusion "
                 "transformer from pre-training (mmr, robust-mmr) is not used downstream")
    else:
        model = (f"the fusion transformer ({s.fusion.name} {s.fusion.params or ''}".rstrip() + "), image patch and "
                 "text tokens in one transformer, pre-trained by mmr / robust-mmr, fresh for the other arms")
    model = head + model
    return model + (f"; tasks besides classification: {', '.join(s.tasks)}" if s.tasks else "")


def _budget_line(s: StudyFacts) -> str:
    p, f = s.pretrain, s.finetune
    pairs = p.get("pair_fraction", 1.0)
    sparse = (f" (image+report arms on the {stats.fmt_value(pairs)}% of training images that have a report)"
              if pairs < 1 and s.has_text else "")
    return (f"pre-training {p.get('steps')} steps × batch {p.get('batch_size')}{sparse}; "
            f"fine-tuning {f.get('steps')} steps "
            f"× batch {f.get('batch_size')} (pre-trained arms: {', '.join(f.get('mode') or ['full'])})")


def _setup_lines(records: list[RunRecord], setup: StudyFacts) -> str:
    """Markdown bullet list describing the study setup (facts the study did not record are left out)."""
    s, out = setup, []
    def add(label: str, value: object) -> None:
        if value not in (None, "", []):
            out.append(f"- **{label}:** {value}")
    add("Study", s.study)
    add("Data", s.data)
    add("Reading the data", "; ".join(s.data_notes))
    add("Pre-training pools", "; ".join(s.pools) + (" (an arm `method @ pool` pre-trains on the pool's training "
                                                    "splits; the target source is the study's held-in training "
                                                    "images without labels)" if s.pools else ""))
    if s.task_kind:
        add("Task", f"{s.task_kind}: {' / '.join(s.label_names)}")
    add("Training sites", _join(s.train_sites))
    add("Held-out site(s)", _join(s.holdout_sites) or
        ("none — no site-shift evaluation" if not any(math.isfinite(readouts.acc(r, "holdout")) for r in records)
         else None))
    arms = []
    for m in tables.method_order(records, s):
        r = next(r for r in records if r.arm == m)
        base = tables.ablation_base(records, m)
        seen = "image+indication" if r.uses_text else "image"
        desc = [r.role + (f" on {'+'.join('report' if m == 'text' else m for m in r.pretrained_on)}"
                          if r.pretrained_on else "") + (f" of pool {r.pool}" if r.pool else ""),
                f"classifier sees the {seen}", f"{r.finetune_mode} fine-tuning",
                f"ablation of {base}" if base else f"compared with {r.counterpart}" if r.counterpart else None]
        arms.append(f"`{m}` ({', '.join(d for d in desc if d)})")
    add("Methods", "; ".join(arms))
    add("Label fractions", _join(fmt_fraction(f) for f in tables.fraction_order(records)))
    add("Seeds", _join(s.seeds or sorted({r.seed for r in records})))
    if s.attacks or s.worst_case:
        add("Attack", _attack_line(s))
    grid = tables.eps_order(records, s)
    ref = tables.reference_eps(records, s)
    if grid:
        add("ε grid (×1/255)", _join(grid) + (f"; reference ε = {fmt_eps(ref)}" if ref else ""))
    add("Corruptions", _join(s.corruptions))
    add("Severities", _join(s.severities))
    if s.image_encoder is not None:
        add("Encoder", f"image {s.image_encoder.name} {s.image_encoder.params or ''}".strip()
            + (f"; text {s.text_encoder.name}" if s.text_encoder is not None else ""))
    if s.pretrain or s.finetune:
        add("Budgets", _budget_line(s))
    if s.class_shares:
        add("Classes (test split)", ", ".join(f"{n} {100 * x:.0f}%" for n, x in zip(s.label_names, s.class_shares))
            + (" — imbalanced: balanced accuracy (mean per-class recall; 50% for a majority-class guess on two "
               "classes) is shown beside accuracy" if readouts.imbalanced(s) else ""))
    balanced = [r for r in records if r.class_balance]
    if balanced:
        add("Class-balanced fine-tuning", f"{len(balanced)} of {len(records)} runs (finetune.class_balance: the "
            f"labeled examples' rarest class was under half its balanced share), e.g. {balanced[0].class_balance}")
    if any(r.uses_text or r.tasks is not None for r in records) and s.config_yaml:
        add("Image+text downstream", _downstream_line(s))
    z = records[0].sizes
    add("Examples", f"training pool {z.n_train}, in-site test {z.n_test}, attacked test {z.n_adversarial}, "
                    f"held-out site {z.n_holdout}")
    total = sum(r.timing.total_s for r in records)
    add("Run time", f"{stats.fmt_value(total, 's')} s in all ({len(records)} runs, the sum of their timed stages)"
        + (f"; this invocation {stats.fmt_value(s.invocation_s, 's')} s" if s.invocation_s is not None else ""))
    add("Versions", _join(f"{k} {v}" for k, v in sorted(s.versions.items())))
    add("Skipped arms", "; ".join(f"`{k.arm}` — {k.reason}" for k in s.skipped))
    return "\n".join(out)


def _warnings(records: list[RunRecord], setup: StudyFacts) -> list[str]:
    """Missing runs, failed self-checks, duplicate runs and arms whose counterpart never ran."""
    out = []
    if setup.expected_runs is not None and len(records) < setup.expected_runs:
        out.append(f"Partial report: {setup.expected_runs - len(records)} of the study's {setup.expected_runs} "
                   "runs have not finished; run the study command again to complete it.")
    out += [f"❌ `{c['name']}` failed for `{c['method']}` at {fmt_fraction(c['fraction'])} labels, seed "
            f"{c['seed']}: {c['detail']}" for c in tables.failed_checks(records)]
    dup = Counter((r.arm, r.fraction, r.seed) for r in records)
    out += [f"Duplicate runs for `{m}` at {fmt_fraction(f)} labels, seed {sd} ({k} records): the tables "
            f"average them all, the paired comparison uses the last one by key." for (m, f, sd), k in dup.items() if k > 1]
    arms = {r.arm for r in records}
    for cp, arm in sorted({(r.counterpart, r.arm) for r in records if r.counterpart and r.counterpart not in arms}):
        out.append(f"`{arm}` is compared with `{cp}`, but `{cp}` has no runs: no paired comparison.")
    return out


def _subgroup_tables(records: list[RunRecord], setup: StudyFacts, ref: str | None) -> list:
    """Per test subgroup (VQA: CLOSED and OPEN questions): clean, worst-case and corruption accuracy."""
    names = list(dict.fromkeys(n for r in records for n in r.metrics.subgroups))
    eps = tables.fmt_eps(ref) if ref is not None else "?"
    out = []
    for name in names:
        for key, label in (("clean", "clean accuracy"), ("worst", f"worst-case robust accuracy at ε={eps}"),
                           ("corruptions", "mean corruption accuracy")):
            metric = readouts.Metric(f"subgroup_{name}_{key}", f"{name} questions: {label} (answers never seen in "
                                   "training count as wrong)", "pct", True,
                                   lambda r, n=name, k=key: r.metrics.subgroups.get(n, {}).get(k, math.nan))
            out.append(tables.metric_table(records, setup, metric))
    return [t for t in out if t is not None]


_CONTEXT_WORD = re.compile(r"\b([Ii])ndication(s?)\b")


def context_words(text: str, name: str) -> str:
    """The report's word for the text a classifier sees ("indication", as a whole word) replaced by the data's
    (e.g. "question"); see :func:`worded` for what is left alone."""
    if name == "indication":
        return text
    return _CONTEXT_WORD.sub(lambda m: (name.capitalize() if m.group(1) == "I" else name) + m.group(2), text)


class _WordedTable:
    """A table whose Markdown / HTML use the data's word for the classifier's text."""

    def __init__(self, table, name: str):
        self.table, self.name = table, name

    def markdown(self) -> str:
        return context_words(self.table.markdown(), self.name)

    def html(self) -> str:
        return context_words(self.table.html(), self.name)


def worded(blocks: list[tuple], name: str) -> list[tuple]:
    """``blocks`` in the data's word for the classifier's text (``"question"`` in VQA): prose, headings, warnings
    and tables; the resolved configuration (code) keeps its keys and values (``inputs: image+indication``)."""
    if name == "indication":
        return blocks
    out = []
    for blk in blocks:
        kind = blk[0]
        if kind == "h":
            blk = (kind, blk[1], context_words(blk[2], name))
        elif kind in ("md", "answer"):
            blk = (kind, context_words(blk[1], name))
        elif kind == "warn":
            blk = (kind, [context_words(w, name) for w in blk[1]])
        elif kind == "table":
            blk = (kind, _WordedTable(blk[1], name))
        out.append(blk)
    return out


def _answer_blocks(records: list[RunRecord], setup: StudyFacts) -> list[tuple]:
    """The answer at a glance: one sentence, the verdict table, the short paragraphs, the forest plot's place."""
    comps = (answer_mod.comparisons(records, setup) + answer_mod.defense_comparisons(records, setup)
             + answer_mod.diversity_comparisons(records, setup))
    n_seeds = len(setup.seeds) or len({r.seed for r in records})
    b: list[tuple] = [("h", 2, "The answer"), ("answer", verdict.glance(comps, n_seeds, answer_mod.MIN_SEEDS))]
    table = verdict.verdict_table(comps)
    if table is not None:
        b.append(("table", table))
    b += [("md", p) for p in brief.paragraphs(records, setup)]
    b.append(("md", "Every comparison in words, with its p-values: the appendix's *The answer in detail* "
                    f"([{APPENDIX}]({APPENDIX}); in the HTML, the collapsed section at the end)."))
    return b


def _key_tables(records: list[RunRecord], setup: StudyFacts, ref: str | None, marks: set) -> list:
    ms, bal = readouts.metrics(ref), readouts.imbalanced(setup)  # imbalanced: balanced accuracy beside each
    out = [tables.metric_table(records, setup, ms[n]) for n in ("clean_acc", "clean_auc")
           + (("clean_balanced",) if bal else ())]
    if ref is not None:
        out.append(tables.metric_table(records, setup, ms["worst_ref"], marks))
        if bal:
            out.append(tables.metric_table(records, setup, ms["worst_ref_balanced"], marks))
    out.append(tables.metric_table(records, setup, ms["corr_mean"]))
    if bal:
        out.append(tables.metric_table(records, setup, ms["corr_mean_balanced"]))
    out += [corruption_error_table(records, setup), tables.metric_table(records, setup, ms["holdout_acc"])]
    return [t for t in out if t is not None]


def _detail_tables(records: list[RunRecord], setup: StudyFacts, ref: str | None, marks: set) -> list[tuple]:
    """Per-ε, per-budget, per-corruption and secondary-metric tables (the appendix's results)."""
    ms = readouts.metrics(ref)
    b: list[tuple] = []
    def table(t):
        if t is not None:
            b.append(("table", t))
    if ref is not None:
        table(tables.metric_table(records, setup, ms["gap"], marks))
    for attack in ("worst", "pgd"):
        for t in tables.eps_tables(records, setup, attack, marks):
            table(t)
    report_side = tables.report_attack_tables(records, setup, marks)
    if report_side:
        b.append(("md", "Text-side and joint attacks on the image+indication classifiers (the indication is the "
                        "text attacked), on the same attacked examples. "
                        "Budgets: words edited (word substitution), per-token L2 radius as a fraction of the mean "
                        "token-embedding norm (embedding PGD), image ε (×1/255) + words edited (joint)."))
    for t in report_side:
        table(t)
    sevs = [str(v) for v in setup.severities] or ["3"]
    for t in tables.corruption_tables(records, setup, "3" if "3" in sevs else sevs[-1]):
        table(t)
    if not any(math.isfinite(readouts.acc(r, "holdout")) for r in records):
        b.append(("md", "No held-out site in this data set: site-shift accuracy is not measured."))
    table(tables.metric_table(records, setup, ms["holdout_drop"]))
    table(tables.metric_table(records, setup, ms["noreport_acc"],
                              title="Image+indication classifiers: accuracy with the indication left out (%)"))
    for t in _subgroup_tables(records, setup, ref):
        table(t)
    table(tables.metric_table(records, setup, ms["time_total"], title="Run time per run (s)"))
    return b


def build_blocks(records: list[RunRecord], setup: StudyFacts,
                 figures: dict[str, Path | None]) -> tuple[list[tuple], list[tuple]]:
    """Assemble the report as neutral blocks (see the module docstring): the main report and its appendix."""
    ref = tables.reference_eps(records, setup)
    marks = tables.check_marks(records)
    b: list[tuple] = [("h", 1, TITLE + (f" — study `{setup.study}`" if setup.study else ""))]
    b += _answer_blocks(records, setup)
    warns = _warnings(records, setup)
    if warns:
        b.append(("warn", warns))
    if figures.get(plots.FOREST):
        b.append(("img", plots.FOREST))
    b += [("h", 2, "Setup"), ("md", _setup_lines(records, setup)), ("h", 2, "Results")]
    if marks:
        b.append(("md", f"{tables.WARN} marks numbers of a method and label fraction with a failed evaluation "
                        "self-check (see the warnings above)."))
    b += [("table", t) for t in _key_tables(records, setup, ref, marks)]
    b.append(("md", f"Per ε, per attack, per corruption and per condition: [{APPENDIX}]({APPENDIX})."))
    defended = defense_tables(records, setup, ref)
    if defended:
        b += [("h", 2, "Defenses"),
              ("md", "Each defended arm next to its undefended arm (same method, label fraction and seeds). Attacks "
                     "target the whole defended model: EOT for randomised defenses (noise layers), BPDA for "
                     "non-differentiable ones, the purifier included in the attacked pipeline. Time ratios: "
                     "(fine-tuning + defense preparation) and clean inference, over the undefended arm's.")]
        b += [("table", t) for t in defended]
    b.append(("h", 2, "Paired comparison"))
    comp = tables.comparison_table(answer_mod.comparisons(records, setup)
                                   + answer_mod.defense_comparisons(records, setup)
                                   + answer_mod.diversity_comparisons(records, setup), marks)
    b.append(("table", comp) if comp else ("md", "No self-supervised arm has a counterpart with shared seeds."))
    b.append(("h", 2, "Evaluation self-checks"))
    checks = tables.checks_summary(records)
    b.append(("table", checks) if checks else ("md", "The records carry no self-checks."))
    b.append(("h", 2, "Plots"))
    for name, path in figures.items():
        if name == plots.FOREST and path:
            continue  # shown under the answer
        b.append(("img", name) if path else ("md", f"`{name}` not drawn: the records hold nothing to plot in it "
                                              "(no data; for the label-fraction figure, a single fraction)."))
    return b, _appendix_blocks(records, setup, ref, marks)


def _appendix_blocks(records: list[RunRecord], setup: StudyFacts, ref: str | None, marks: set) -> list[tuple]:
    a: list[tuple] = [("h", 1, "Appendix" + (f" — study `{setup.study}`" if setup.study else "")),
                      ("h", 2, "The answer in detail"), ("answer", answer_mod.answer(records, setup)),
                      ("h", 2, "Results in detail")]
    a += _detail_tables(records, setup, ref, marks)
    mm = multimodal_tables(records, setup, ref)
    if mm:
        a += [("h", 2, "Multimodal arms: classification, retrieval and VQA per condition"),
              ("md", "Classification: the classifiers that see the image with the indication. Retrieval and VQA: "
                     "each task starts from the arm's pre-trained (or, for `supervised-multimodal`, freshly "
                     "initialised) image and text encoders and is fine-tuned on the run's labeled image-report pairs "
                     "only (retrieval pairs images with their reports; VQA reads its question). Conditions: "
                     "clean; image corruptions (mean over the study's corruptions at severity 3); the held-out site; "
                     "a missing modality; adversarial image (PGD / worst case at the reference ε), text (word "
                     "substitutions chosen to hurt) and both. Arms named with parameters, e.g. "
                     "`robust-mmr(domain_weight=0)`, are ablations with that component switched off.")]
        a += [("table", t) for t in mm]
    checks = tables.checks_table(records, setup)
    a += [("h", 2, "Every evaluation self-check"),
          ("table", checks) if checks else ("md", "The records carry no self-checks."),
          ("h", 2, "Runs"), ("table", tables.run_table(records, setup))]
    if setup.config_yaml:
        a += [("h", 2, "Resolved configuration"), ("code", setup.config_yaml)]
    return a


def write_report(records: list[RunRecord], setup: StudyFacts | None, out_dir: str | Path) -> Path:
    """Write ``report.md``, ``report.html`` and the PNG figures into ``out_dir``.

    Args:
        records: run records (one per finished run).
        setup: the study's facts (``None``: drawn from the records alone).
        out_dir: output folder, created if needed.

    Returns:
        Path of ``report.md``.

    Raises:
        ValueError: if ``records`` is empty.
    """
    if not records:
        raise ValueError("write_report() needs at least one run record")
    setup = setup or StudyFacts()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    figures = plots.make_all(records, setup, out)
    main, appendix = (worded(b, setup.context_name) for b in build_blocks(records, setup, figures))
    md = out / "report.md"
    atomic_write_text(out / APPENDIX, to_markdown(appendix))
    atomic_write_text(md, to_markdown(main))
    atomic_write_text(out / "report.html", to_html(main, out, appendix))
    return md
