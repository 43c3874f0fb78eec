"""Closed-set VQA: generated answers agree with the synthetic findings, balance, determinism, the VQA-RAD json
reader/writer (every malformed case named with its entry index), the answer vocabulary and accuracy."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from medrobust.data.base import DataError
from medrobust.data.synthetic.findings import CARDIOMEGALY_GRADES, EFFUSION_SIZES, SIDES, ZONES
from medrobust.data.vqa import (
    AnswerVocab,
    generate_vqa,
    image_indices,
    image_names_for,
    normalize_answer,
    answer_text,
    read_vqa_file,
    read_vqa_json,
    study_split,
    vqa_accuracy,
    write_vqa_json,
)

# question -> (finding column, attribute key or None, code -> answer) written from findings.py, independently
# of the generator's tables
SIDE = {1: "right", 2: "left"}
EXPECTED = {
    "Is there a nodule?": (0, None, None), "Is there a pleural effusion?": (1, None, None),
    "Is the heart enlarged?": (2, None, None), "Is there consolidation?": (3, None, None),
    "Which side is the nodule on?": (0, "nodule_side", SIDE),
    "In which zone is the nodule?": (0, "nodule_zone", {1: ZONES[1], 2: ZONES[2]}),
    "Which side is the effusion on?": (1, "effusion_side", {1: SIDES[1], 2: SIDES[2], 3: "both"}),
    "How large is the effusion?": (1, "effusion_size", dict(enumerate(EFFUSION_SIZES))),
    "How enlarged is the heart?": (2, "cardiomegaly_grade", dict(enumerate(CARDIOMEGALY_GRADES))),
    "Which lung has consolidation?": (3, "consolidation_side", SIDE),
    "In which zone is the consolidation?": (3, "consolidation_zone", {1: ZONES[1], 2: ZONES[2]}),
}


@pytest.fixture(scope="module")
def split_and_names(synthetic_small):
    split = synthetic_small.train
    return split, image_names_for(split, synthetic_small.site_names)


def test_image_names_follow_the_convention_and_map_back(synthetic_small, split_and_names):
    split, names = split_and_names
    assert len(names) == len(split) == len(set(names))
    for i in (0, 7, len(split) - 1):
        assert names[i] == f"synthetic_{synthetic_small.site_names[split.sites[i]]}_{i:05d}.png"
    entries = [{"image_name": names[5]}, {"image_name": names[0]}]
    np.testing.assert_array_equal(image_indices(entries, names), [5, 0])
    with pytest.raises(DataError, match="entry 1: image_name 'nope.png'"):
        image_indices([{"image_name": names[1]}, {"image_name": "nope.png"}], names)


def test_every_answer_agrees_with_the_findings(split_and_names):
    split, names = split_and_names
    findings = split.extras["findings"]
    entries = generate_vqa(split, names, seed=0, balance=False)
    rows = image_indices(entries, names)
    assert [e["qid"] for e in entries] == list(range(len(entries)))
    asked = Counter()
    for e, i in zip(entries, rows):
        col, key, codes = EXPECTED[e["question"]]
        if key is None:
            assert e["answer"] == ("yes" if findings[i, col] == 1 else "no")
            assert (e["answer_type"], e["question_type"]) == ("CLOSED", "presence")
        else:
            assert findings[i, col] == 1  # attribute questions only about a present finding
            assert e["answer"] == codes[int(split.extras[key][i])]
            assert e["answer_type"] == "OPEN" and e["question_type"] in ("side", "zone", "size", "severity")
        asked[int(i)] += 1
    n_attr = findings @ np.array([2, 2, 1, 2])  # attribute questions per present finding
    np.testing.assert_array_equal([asked[i] for i in range(len(split))], 4 + n_attr)


def test_balanced_presence_questions_are_half_yes(split_and_names):
    split, names = split_and_names
    findings = split.extras["findings"]
    entries = generate_vqa(split, names, seed=0)
    rows = image_indices(entries, names)
    closed = [(e, i) for e, i in zip(entries, rows) if e["answer_type"] == "CLOSED"]
    for col, question in ((0, "Is there a nodule?"), (1, "Is there a pleural effusion?"),
                          (2, "Is the heart enlarged?"), (3, "Is there consolidation?")):
        answers = [e["answer"] for e, _ in closed if e["question"] == question]
        assert answers.count("yes") == findings[:, col].sum() == answers.count("no")  # all positives, as many negatives
    yes_rate = np.mean([e["answer"] == "yes" for e, _ in closed])
    unbalanced = [e for e in generate_vqa(split, names, seed=0, balance=False) if e["answer_type"] == "CLOSED"]
    raw_rate = np.mean([e["answer"] == "yes" for e in unbalanced])
    print(f"yes rate: balanced {yes_rate:.3f} over {len(closed)}, unbalanced {raw_rate:.3f} over {len(unbalanced)}")
    assert yes_rate == 0.5 and raw_rate == pytest.approx(findings.mean())
    open_answers = Counter(e["answer"] for e in entries if e["answer_type"] == "OPEN")
    assert set(open_answers) == {"right", "left", "both", "upper", "lower", "small", "moderate", "large", "mild"}


def test_generation_is_deterministic_and_per_image_draws_a_subset(split_and_names):
    split, names = split_and_names
    a, b = generate_vqa(split, names, seed=5), generate_vqa(split, names, seed=5)
    assert a == b
    assert generate_vqa(split, names, seed=6) != a  # another seed draws other negative presence questions
    full = generate_vqa(split, names, seed=5, balance=False)
    few = generate_vqa(split, names, seed=5, per_image=2, balance=False)
    per_name = Counter(e["image_name"] for e in few)
    assert max(per_name.values()) == 2 and len(per_name) == len(split)
    strip = lambda es: [(e["image_name"], e["question"], e["answer"]) for e in es]
    full_keys = strip(full)
    positions = [full_keys.index(k) for k in strip(few)]
    assert positions == sorted(positions)  # a subset in the original order
    assert few == generate_vqa(split, names, seed=5, per_image=2, balance=False)


def test_generation_rejects_bad_input(split_and_names):
    split, names = split_and_names
    with pytest.raises(DataError, match=f"{len(names) - 1} image names for {len(split)} images"):
        generate_vqa(split, names[:-1], seed=0)
    with pytest.raises(DataError, match="repeat"):
        generate_vqa(split, [names[0]] * len(split), seed=0)
    with pytest.raises(DataError, match="per_image=0"):
        generate_vqa(split, names, seed=0, per_image=0)
    extras = dict(split.extras)
    del extras["nodule_zone"]
    with pytest.raises(DataError, match="lacks \\['nodule_zone'\\]"):
        generate_vqa(split.__class__(split.images, split.labels, split.sites, split.texts, extras), names, seed=0)
    extras = dict(split.extras)
    i = int(np.flatnonzero(split.extras["findings"][:, 1] == 0)[0])
    extras["effusion_side"] = extras["effusion_side"].copy()
    extras["effusion_side"][i] = 2  # a side for an effusion that is absent
    with pytest.raises(DataError, match=f"image {i}: effusion_side=2 with findings\\[{i}, 1\\]=0"):
        generate_vqa(split.__class__(split.images, split.labels, split.sites, split.texts, extras), names, seed=0)


def test_write_then_read_gives_the_same_entries_and_stable_bytes(tmp_path, split_and_names):
    split, names = split_and_names
    entries = generate_vqa(split, names, seed=1)
    entries.append({"qid": len(entries), "image_name": "x.png", "question": "Où est le nodule ?",
                    "answer": "à droite", "answer_type": "OPEN", "question_type": "side", "phrase_type": "para"})
    p = write_vqa_json(tmp_path / "a" / "q.json", entries)
    assert read_vqa_json(p) == entries
    assert json.loads(p.read_text(encoding="utf-8")) == entries and "à droite" in p.read_text(encoding="utf-8")
    p2 = write_vqa_json(tmp_path / "q2.json", read_vqa_json(p))
    assert p2.read_bytes() == p.read_bytes()
    assert [f.name for f in (tmp_path / "a").iterdir()] == ["q.json"]  # no temporary file left


def _entries(n: int = 5) -> list[dict]:
    return [{"qid": i, "image_name": f"img{i}.png", "question": "Is there a nodule?", "answer": "no",
             "answer_type": "CLOSED", "question_type": "presence"} for i in range(n)]


def _bad(change) -> list:
    entries = _entries()
    entries[3] = change(dict(entries[3]))
    return entries


def _drop(key):
    return lambda e: {k: v for k, v in e.items() if k != key}


def _set(key, value):
    return lambda e: {**e, key: value}


@pytest.mark.parametrize("change,problem", [
    (lambda e: ["not", "an", "object"], "got list .*expected a JSON object"),
    (lambda e: "text", "got str 'text'; expected a JSON object"),
    (_drop("image_name"), "missing key 'image_name' \\(or SLAKE's 'img_name'\\)"),
    (_drop("question"), "missing key 'question'"),
    (_drop("answer"), "missing key 'answer'"),
    (_set("answer", [3]), "answer is list \\[3\\]; expected a string \\(or a number\\)"),
    (_set("answer", None), "answer is NoneType None; expected a string"),
    (_set("answer", float("nan")), "answer is nan; expected a string or a finite number"),
    (_set("question", None), "question is NoneType None; expected a string"),
    (_set("question", 7), "question is int 7; expected a string"),
    (_set("image_name", ""), "image_name is empty"),
    (lambda e: {**_drop("image_name")(e), "img_name": 5}, "img_name is int 5; expected a string"),
    (_set("img_name", "other.png"), "image_name 'img3.png' and img_name 'other.png' differ"),
    (_set("answer", "   "), "answer is empty"),
    (_set("question_type", 4), "question_type is int 4; expected a string"),
    (_set("answer_type", "MAYBE"), "answer_type 'MAYBE'; expected 'CLOSED' or 'OPEN'"),
    (_set("answer_type", 1), "answer_type 1; expected 'CLOSED' or 'OPEN'"),
    (_set("qid", "3a"), "qid is str '3a'; expected an integer \\(or a string of digits\\)"),
    (_set("qid", 3.0), "qid is float 3.0; expected an integer"),
    (_set("qid", True), "qid is bool True; expected an integer"),
    (_set("qid", "0"), "qid 0 repeats entry 0"),  # a numeric string is the same qid as the int
    (_set("qid", 0), "qid 0 repeats entry 0"),
])
def test_reader_names_the_bad_entry(tmp_path, change, problem):
    p = tmp_path / "q.json"
    p.write_text(json.dumps(_bad(change)))
    with pytest.raises(DataError, match=f"q.json: entry 3: {problem}"):
        read_vqa_json(p)


def test_reader_rejects_bad_files_naming_them(tmp_path):
    with pytest.raises(DataError, match="missing.json: VQA file not found"):
        read_vqa_json(tmp_path / "missing.json")
    cases = {"broken.json": '[{"image_name": "a.png",', "dict.json": '{"questions": []}', "empty.json": "[]",
             "latin1.json": "caf\xe9"}
    problems = {"broken.json": "bad JSON .* line 1", "dict.json": "top level is a JSON dict",
                "empty.json": "the list is empty", "latin1.json": "not UTF-8 text"}
    for name, text in cases.items():
        (tmp_path / name).write_bytes(text.encode("latin-1"))
        with pytest.raises(DataError, match=f"{name}: {problems[name]}"):
            read_vqa_json(tmp_path / name)


def test_answer_type_is_read_case_insensitively_and_other_keys_kept(tmp_path):
    entries = _entries(2)
    entries[0]["answer_type"], entries[1]["answer_type"] = "closed", " Open "
    entries[1]["image_organ"] = "CHEST"
    del entries[1]["qid"], entries[1]["question_type"]  # optional keys
    (tmp_path / "q.json").write_text(json.dumps(entries))
    got = read_vqa_json(tmp_path / "q.json")
    assert [e["answer_type"] for e in got] == ["CLOSED", "OPEN"]
    assert got[1]["image_organ"] == "CHEST" and "qid" not in got[1]


def test_numeric_and_boolean_answers_become_strings(tmp_path):
    """Real VQA-RAD trainset.json holds counting answers as JSON numbers (entry 2049: 4)."""
    entries = _entries(6)
    for e, a in zip(entries, [4, 4.0, 2.5, True, False, 0]):
        e["answer"], e["answer_type"] = a, "OPEN"
    (tmp_path / "q.json").write_text(json.dumps(entries))
    got = read_vqa_json(tmp_path / "q.json")
    assert [e["answer"] for e in got] == ["4", "4", "2.5", "yes", "no", "0"]
    assert answer_text(-3) == "-3" and answer_text(1e3) == "1000" and answer_text(" Yes ") == " Yes "
    v = AnswerVocab.from_entries(got)
    assert v.answers == ("0", "2.5", "4", "no", "yes")


def test_closed_typo_missing_answer_type_question_type_and_string_qid(tmp_path):
    entries = [
        {"qid": 1, "image_name": "synpic54610.jpg", "image_organ": "HEAD", "answer": "Yes", "answer_type": "CLOSED ",
         "question_type": "PRES", "question": "Are regions of the brain infarcted?", "phrase_type": "freeform"},
        {"qid": "2", "image_name": "a.jpg", "answer": "No", "question": "Is it normal?"},  # no answer_type
        {"qid": " 3 ", "image_name": "a.jpg", "answer": "left lobe", "question": "Where?",
         "question_type": "POS, PRES"},
        {"qid": 4, "image_name": "a.jpg", "answer": 3, "question": "How many?", "question_type": ""},
        {"qid": 5, "image_name": "a.jpg", "answer": " YES ", "question": "Is it?", "question_type": None},
    ]
    (tmp_path / "q.json").write_text(json.dumps(entries))
    got = read_vqa_json(tmp_path / "q.json")
    assert [e["answer_type"] for e in got] == ["CLOSED", "CLOSED", "OPEN", "OPEN", "CLOSED"]  # inferred for 2..5
    assert [e["qid"] for e in got] == [1, 2, 3, 4, 5]
    assert got[2]["question_type"] == "POS, PRES" and got[3]["question_type"] == "" and "question_type" not in got[4]
    assert got[0]["image_organ"] == "HEAD" and got[0]["phrase_type"] == "freeform"
    acc = vqa_accuracy(["yes", "no", "left lobe", "2", "no"], got)
    assert acc["answer_type"]["CLOSED"] == {"accuracy": 2 / 3, "correct": 2, "n": 3}
    assert acc["question_type"] == {"PRES": {"accuracy": 1.0, "correct": 1, "n": 1},
                                    "POS, PRES": {"accuracy": 1.0, "correct": 1, "n": 1}}


def _slake(tmp_path):
    rows = []
    for i, (lang, q, a) in enumerate([("en", "What modality is used?", "MRI"), ("zh", "这是什么模态？", "MRI"),
                                      ("en", "Is this a healthy brain?", "No"), ("zh", "脑部健康吗？", "不是"),
                                      ("zh", "有几个肾？", 2)]):
        rows.append({"img_id": 1 + i // 2, "img_name": f"xmlab{1 + i // 2}/source.jpg", "question": q, "answer": a,
                     "q_lang": lang, "location": "Brain", "modality": "MRI",
                     "answer_type": "OPEN" if i != 2 else "CLOSED",
                     "base_type": "vqa", "content_type": "Modality", "triple": ["vhead", "_", "_"], "qid": 100 + i})
    rows.append({"img_name": "xmlab9/source.jpg", "question": "Any lesion?", "answer": "yes"})  # no q_lang: kept
    p = tmp_path / "train.json"
    p.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    return p


def test_slake_layout_img_name_and_language_filter_with_counts(tmp_path):
    p = _slake(tmp_path)
    en = read_vqa_file(p, language="en")
    assert [e["image_name"] for e in en.entries] == ["xmlab1/source.jpg", "xmlab2/source.jpg", "xmlab9/source.jpg"]
    assert en.entries[0]["img_name"] == "xmlab1/source.jpg" and en.entries[0]["triple"] == ["vhead", "_", "_"]
    assert en.indices == [0, 2, 5] and en.n_read == 6 and en.dropped_language == 3
    assert en.languages == {"-": 1, "en": 2, "zh": 3}
    assert en.entries[2]["answer_type"] == "CLOSED"  # inferred from "yes"
    zh = read_vqa_file(p, language="zh")
    assert [e["answer"] for e in zh.entries] == ["MRI", "不是", "2", "yes"] and zh.dropped_language == 2
    every = read_vqa_file(p)
    assert len(every.entries) == 6 and every.dropped_language == 0 and read_vqa_json(p) == every.entries
    assert read_vqa_json(p, language="en") == en.entries
    fr = read_vqa_file(p, language="fr")
    assert [e["image_name"] for e in fr.entries] == ["xmlab9/source.jpg"] and fr.dropped_language == 5
    p.write_text(json.dumps([e for e in json.loads(p.read_text(encoding="utf-8")) if "q_lang" in e]), encoding="utf-8")
    with pytest.raises(DataError, match="train.json: no question in language 'fr' \\(q_lang: en: 2, zh: 3\\)"):
        read_vqa_file(p, language="fr")


def test_answer_vocab_and_candidates():
    train = [{"answer": "Yes", "answer_type": "CLOSED", "question_type": "presence"},
             {"answer": "no", "answer_type": "CLOSED", "question_type": "presence"},
             {"answer": "left", "answer_type": "OPEN", "question_type": "side"},
             {"answer": " Right ", "answer_type": "OPEN", "question_type": "side"},
             {"answer": "upper", "answer_type": "OPEN", "question_type": "zone"},
             {"answer": "chest", "answer_type": "OPEN"}]  # no question_type: grouped under OPEN
    v = AnswerVocab.from_entries(train)
    assert v.answers == ("chest", "left", "no", "right", "upper", "yes") and len(v) == 6
    assert v.index("YES") == 5 and v.index("right") == 3
    np.testing.assert_array_equal(v.candidates("presence"), [False, False, True, False, False, True])
    np.testing.assert_array_equal(v.candidates("side"), [False, True, False, True, False, False])
    np.testing.assert_array_equal(v.candidates("OPEN"), [True, False, False, False, False, False])
    assert AnswerVocab.from_entries(list(reversed(train))) == v  # order-independent
    with pytest.raises(DataError, match="answer 'maybe' was not seen in training"):
        v.index("maybe")
    with pytest.raises(DataError, match="unknown question_type 'size'"):
        v.candidates("size")
    test = [{"answer": "no", "answer_type": "CLOSED", "question_type": "presence"},
            {"answer": "both", "answer_type": "OPEN", "question_type": "side"},
            {"answer": "small", "answer_type": "OPEN", "question_type": "size"}]
    idx, mask = v.encode(test, allow_unknown=True)
    np.testing.assert_array_equal(idx, [2, -1, -1])
    assert mask.shape == (3, 6) and (mask[0] == v.candidates("presence")).all() and mask[2].all()
    with pytest.raises(DataError, match="'both' was not seen"):
        v.encode(test)


def test_vqa_accuracy_equals_a_hand_count():
    entries = [
        {"answer": "yes", "answer_type": "CLOSED", "question_type": "presence"},   # right
        {"answer": "no", "answer_type": "CLOSED", "question_type": "presence"},    # wrong
        {"answer": "no", "answer_type": "CLOSED", "question_type": "presence"},    # right (case, spaces)
        {"answer": "left", "answer_type": "OPEN", "question_type": "side"},       # right
        {"answer": "both", "answer_type": "OPEN", "question_type": "side"},       # wrong
        {"answer": "upper", "answer_type": "OPEN", "question_type": "zone"},      # wrong
        {"answer": "chest", "answer_type": "OPEN"},                               # right, no question_type
    ]
    pred = ["yes", "yes", "  NO ", "left", "right", "lower", "Chest"]
    acc = vqa_accuracy(pred, entries)
    assert acc["overall"] == {"accuracy": 4 / 7, "correct": 4, "n": 7}
    assert acc["answer_type"] == {"CLOSED": {"accuracy": 2 / 3, "correct": 2, "n": 3},
                                  "OPEN": {"accuracy": 0.5, "correct": 2, "n": 4}}
    assert acc["question_type"] == {"presence": {"accuracy": 2 / 3, "correct": 2, "n": 3},
                                    "side": {"accuracy": 0.5, "correct": 1, "n": 2},
                                    "zone": {"accuracy": 0.0, "correct": 0, "n": 1}}
    with pytest.raises(DataError, match="6 predictions for 7 questions"):
        vqa_accuracy(pred[:-1], entries)
    with pytest.raises(DataError, match="prediction 2 is int 1"):
        vqa_accuracy(["yes", "no", 1, "a", "b", "c", "d"], entries)
    assert normalize_answer("  Right \t Lung ") == "right lung"


def test_study_split_selects_the_rows_the_study_uses(tmp_path):
    """Parity with medrobust.study.prepare: the same images, sites and findings for train, test and holdout."""
    from medrobust.config import load_config
    from medrobust.study.prepare import prepare

    cfg = load_config(None, [f"output_dir={tmp_path}", "data.n_per_site=18", "data.seed=2",
                             "data.holdout_sites=[B,D]"])
    data = prepare(cfg)
    for name, ref in (("train", data.train), ("test", data.test), ("holdout", data.holdout)):
        got = study_split(data.dataset, name, ["B", "D"])
        assert len(got) == len(ref) > 0
        assert (got.images == ref.images).all() and (got.sites == ref.sites).all() and got.texts == ref.texts
        assert (got.extras["findings"] == ref.extras["findings"]).all()
    assert set(study_split(data.dataset, "holdout", ["B", "D"]).sites) == {1, 3}
    with pytest.raises(DataError, match="holdout sites \\['Z'\\]"):
        study_split(data.dataset, "train", ["Z"])
    with pytest.raises(DataError, match="split 'val'; expected 'train', 'test' or 'holdout'"):
        study_split(data.dataset, "val", [])
