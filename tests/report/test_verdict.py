"""The answer at a glance (report.verdict): the verdict table's cells are the paired comparisons' numbers and
verdicts, coloured by kind; the sentence counts the headline kinds; the self-check summary counts and names."""

import re

from medrobust.report import answer, render, stats, tables, verdict
from records import facts, records
from test_answer import SETUP, grid, rec


def comps(recs):
    r, s = records(recs), facts(SETUP)
    return answer.comparisons(r, s) + answer.defense_comparisons(r, s) + answer.diversity_comparisons(r, s)


def test_cells_are_the_comparisons_numbers_and_verdicts():
    cs = comps(grid())
    table = verdict.verdict_table(cs)
    (group, arm, cp, labels, cells), = table.rows
    assert (group, arm, cp, labels) == (verdict.GROUPS[0][2], "simclr", "supervised", "10%")
    assert set(cells) == {"clean_acc", "worst_ref", "corr_mean", "holdout_acc"}
    for key, c in cells.items():
        want = next(x for x in cs if x["metric"] == key and x["arm"] == "simclr")
        assert c is want
        text = verdict.cell_text(c)
        assert text.startswith(f"{stats.fmt_diff(c['mean_diff'])} pp ({stats.fmt_ci(c['ci_low'], c['ci_high'])})")
    # the fixture: clearly better adversarially, clearly worse at the held-out site, corruptions straddle 0
    assert cells["worst_ref"]["kind"] == stats.BETTER and verdict.cell_text(cells["worst_ref"]).endswith("better")
    assert cells["holdout_acc"]["kind"] == stats.WORSE and verdict.cell_text(cells["holdout_acc"]).endswith("worse")
    assert cells["corr_mean"]["kind"] not in stats.CLEAR


def test_html_colours_follow_the_verdict_and_markdown_bolds_the_clear_ones():
    table = verdict.verdict_table(comps(grid()))
    html = table.html()
    assert html.startswith("<table id='verdict'")
    tds = re.findall(r"<td style='background:(#[0-9a-f]{6})'>(.*?)</td>", html)
    by_word = {re.sub(r"<.*?>", " ", body).split()[-1]: colour for colour, body in tds}
    assert by_word["better"] == verdict.COLOURS[stats.BETTER] and by_word["worse"] == verdict.COLOURS[stats.WORSE]
    assert verdict.COLOURS[stats.BETTER] != verdict.COLOURS[stats.WORSE]
    md = table.markdown()
    row = next(line for line in md.splitlines() if line.startswith("| `simclr`"))
    assert row.count("**") == 4  # two clear cells, each in bold


def test_the_sentence_counts_the_headline_kinds():
    cs = comps(grid())
    s = verdict.glance(cs, n_seeds=3, min_seeds=5)
    assert s.startswith("**Mixed: self-supervised pre-training was clearly more robust in 1 of 3 comparisons "
                        "(adversarial) and clearly less robust in 1 (site shift)")
    assert "a demonstration rather than a result" in s
    assert "demonstration" not in verdict.glance(cs, n_seeds=5, min_seeds=5)
    same = grid(ssl_worst=(0.40, 0.43, 0.41))  # adversarial now ≈ supervised; site shift still clearly worse
    assert verdict.glance(comps(same), 5, 5).startswith("**Self-supervised pre-training was clearly less robust")


def test_check_summary_counts_passes_and_names_the_failures():
    bad = {"name": "monotone_in_eps", "passed": False, "detail": "rises at ε=4"}
    good = {"name": "monotone_in_eps", "passed": True, "detail": "ok"}
    recs = grid(checks=[good])
    recs[1] = rec("simclr", 0.1, 0, 0.9, 0.55, counterpart="supervised", checks=[bad])
    t = tables.checks_summary(records(recs))
    (name, passed, failed), = t.rows
    assert (name, passed) == ("monotone_in_eps", "5 of 6")
    assert failed == "simclr at 10% labels, seed 0: rises at ε=4"


def test_main_report_opens_with_the_sentence_and_table_and_stays_short(tmp_path):
    recs = grid(seeds=(0, 1, 2))
    md = render.write_report(records(recs), facts(SETUP), tmp_path).read_text(encoding="utf-8")
    html = (tmp_path / "report.html").read_text(encoding="utf-8")
    answer_part = md[md.index("## The answer"):md.index("## Setup")]
    assert answer_part.split("\n\n")[1].startswith("**Mixed:")
    assert "| compared | with | labels | clean accuracy | adversarial | corruptions | site shift |" in answer_part
    assert html.index("id='verdict'") < html.index("<h2>Setup</h2>") < html.index("<details id='appendix'>")
    appendix = (tmp_path / "appendix.md").read_text(encoding="utf-8")
    assert "## The answer in detail" in appendix and "<h2>The answer in detail</h2>" in html
    assert "per ε" not in md and "per ε" in appendix  # the per-ε tables live in the appendix only


def test_the_report_lists_a_skipped_run_and_keeps_it_out_of_the_verdicts(tmp_path):
    recs = grid()
    bad = recs[1]  # simclr, seed 0
    assert bad["method"] == "simclr" and bad["seed"] == 0
    bad["metrics"] = {"clean": {"acc": 0.5, "auc": 0.5}, "holdout": {"acc": 0.5, "auc": 0.5},
                      "checks": [{"name": "above_chance", "passed": False, "detail": "clean accuracy 0.500 vs 0.800 "
                                  "for always predicting the majority class; attacks and corruptions skipped"}]}
    comps = answer.comparisons(records(recs), facts(SETUP))
    assert all(c["n"] == 2 for c in comps)  # seed 0's pair is out of every verdict, the clean one included
    clean = next(c for c in comps if c["metric"] == "clean_acc")
    assert [s for s, _ in clean["excluded"]] == [0]
    md = render.write_report(records(recs), facts(SETUP), tmp_path).read_text()
    assert "❌ `above_chance` failed for `simclr` at 10% labels, seed 0" in md and "corruptions skipped" in md
