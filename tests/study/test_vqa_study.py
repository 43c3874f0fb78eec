"""A VQA study on a VQA-RAD layout folder (images/, trainset.json, testset.json; integer answers, the "CLOSED "
typo): image+question arms, closed / open accuracy, paraphrased / typo'd and adversarial questions."""

from __future__ import annotations

import pytest

from conftest import tiny_overrides
from medrobust.attacks.text_random import random_edits
from medrobust.cli import main
from medrobust.data.vqa_source import write_vqa_folder
from medrobust.study.store import Store


def test_random_edits_are_nested_prefer_synonyms_and_keep_zero_budget():
    text = "Is there a pleural effusion on the left side of the chest?"
    assert random_edits(text, 0, seed=3) == (text, 0)
    one, two, five = (random_edits(text, k, seed=3) for k in (1, 2, 5))
    assert (one[1], two[1], five[1]) == (1, 2, 5)
    words = lambda t: t.rstrip("?").split()  # noqa: E731
    changed = lambda t: {i for i, (a, b) in enumerate(zip(words(text), words(t))) if a != b}  # noqa: E731
    assert changed(one[0]) <= changed(two[0]) <= changed(five[0]) and len(changed(five[0])) == 5
    assert random_edits(text, 5, seed=4)[0] != five[0]  # the seed decides which words
    # a word with a clinical synonym gets the synonym (a paraphrase), not a typo
    assert random_edits("effusion", 1, seed=0) == ("eff", 1)  # medical_words.json: effusion ~ eff
    typo, n = random_edits("consolidated", 1, seed=0)  # no synonym: a one-edit typo, first and last letter kept
    assert n == 1 and typo != "consolidated" and typo[0] == "c" and typo[-1] == "d" and abs(len(typo) - 12) <= 1


@pytest.mark.slow
def test_vqa_study_on_a_vqa_rad_folder(tmp_path):
    folder = write_vqa_folder(tmp_path / "vqa_rad", n_per_site=30, seed=1)
    out = tmp_path / "s"
    keep = [o for o in tiny_overrides(out) if not o.startswith(("data.", "methods=", "evaluation.report_attacks"))]
    overrides = keep + [f"data.path={folder / 'trainset.json'}", f"data.test_path={folder / 'testset.json'}",
                        f"data.images_dir={folder / 'images'}", "data.image_size=28", "data.holdout_sites=[]",
                        "seeds=[0]", "label_fractions=[1.0]", "methods=[{name: clip, inputs: image+indication}]", "evaluation.report_attacks=[{name: report-random-edits, budgets: [1, 2]}, "
                        "{name: report-word-substitution, budgets: [1]}]"]
    assert main(["study", "configs/vqa.yaml", *overrides]) == 0
    records = {r.arm: r for r in Store(out / "runs.sqlite").records()}
    assert set(records) == {"clip [image+indication]"}
    for r in records.values():
        m = r.metrics
        assert r.uses_text and set(m.subgroups) == {"all", "CLOSED", "OPEN"}
        sub = m.subgroups
        n_closed, n_open, n_all = sub["CLOSED"]["n"], sub["OPEN"]["n"], sub["all"]["n"]
        assert n_closed > 0 and n_open > 0 and n_closed + n_open == n_all
        # all questions = the question-weighted mean of closed and open, unseen answers counted as wrong
        both = (sub["CLOSED"]["clean"] * n_closed + sub["OPEN"]["clean"] * n_open) / n_all
        assert abs(both - sub["all"]["clean"]) < 1e-6
        scored = n_all - sub["all"]["unanswerable"]
        assert abs(sub["all"]["clean"] - m.clean.acc * scored / n_all) < 1e-6
        assert set(m.text_attacks) == {"report-random-edits", "report-word-substitution"}
        assert m.text_attacks["report-word-substitution"]["1"] <= m.attacks["worst"]["0"] + 1e-9  # <= clean, attacked
        examples = m.text_attack_examples.get("report-random-edits", [])
        assert all("→" in e and "?" in e for e in examples)  # edited questions, shown clean → edited
    text = (out / "report" / "report.md").read_text() + (out / "report" / "appendix.md").read_text()
    assert "CLOSED questions: clean accuracy" in text and "OPEN questions: clean accuracy" in text
    assert "All questions: clean accuracy (answers never seen in training count as wrong)" in text
    prose, config = text.split("## Resolved configuration")
    assert "clip [image+question]" in prose and "indication" not in prose  # the question plays the indication's role
    assert "inputs: image+indication" in config  # the config keeps its own keys and values
    assert "questions per split (one row each)" in text  # the data notes: counts, unseen answers
