"""The ``vqa`` data source: a VQA-RAD folder written by ``write_vqa_folder`` and a SLAKE-layout folder load as one
row per question with the right image, question, label and group; unseen answers, missing images, language
filtering and bad files are counted or reported; the synthetic default keeps its sites."""

from __future__ import annotations

import json
import shutil
import time

import numpy as np
import pytest
from PIL import Image
from pydantic import ValidationError

from medrobust.data.base import DataError
from medrobust.data.vqa import normalize_answer, read_vqa_json
from medrobust.data.vqa_source import VQAParams, load_vqa, write_vqa_folder

SPLITS = ("train", "val", "test")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_vqa_folder(tmp_path_factory.mktemp("vqarad") / "VQA_RAD", n_per_site=18, seed=1)


@pytest.fixture()
def copy(folder, tmp_path):
    return shutil.copytree(folder, tmp_path / "VQA_RAD")


def _pixels(folder) -> dict[bytes, str]:
    """image bytes -> file name, to find the image of each row (the synthetic images are all distinct)."""
    out = {np.asarray(Image.open(p)).tobytes(): p.name for p in (folder / "images").glob("*.png")}
    assert len(out) == len(list((folder / "images").glob("*.png")))
    return out


def _rows(ds, folder, files=("trainset.json", "testset.json")):
    """Per split: (image name, entry as read) of every row, found by the row's pixels and question."""
    by_key = {(e["image_name"], e["question"]): e for f in files for e in read_vqa_json(folder / f)}
    names = _pixels(folder)
    out = {}
    for s in SPLITS:
        split = getattr(ds, s)
        rows = []
        for img, q in zip(split.images, split.indications):
            name = names[img[0].tobytes()]
            rows.append((name, by_key[(name, q)]))
        out[s] = rows
    return out


def test_folder_is_written_in_vqa_rad_style(folder):
    assert sorted(p.name for p in folder.iterdir()) == ["images", "testset.json", "trainset.json"]
    raw = {f: json.loads((folder / f).read_text(encoding="utf-8")) for f in ("trainset.json", "testset.json")}
    keys = ["qid", "image_name", "image_organ", "answer", "answer_type", "question_type", "question", "phrase_type"]
    every = raw["trainset.json"] + raw["testset.json"]
    assert all(list(e) == keys for e in every)
    assert [e["qid"] for e in every] == list(range(1, len(every) + 1))  # integers, unique over both files
    assert {e["image_organ"] for e in every} == {"CHEST"} and {e["phrase_type"] for e in every} == {"freeform"}
    assert {e["answer_type"] for e in every} == {"CLOSED", "CLOSED ", "OPEN"}  # VQA-RAD's typo, some entries
    assert {e["question_type"] for e in every} == {"PRES", "POS", "SIZE", "COUNT"}
    counts = [e for e in every if e["question_type"] == "COUNT"]
    assert counts and all(type(e["answer"]) is int for e in counts)  # numeric answers, as in the real file
    assert {e["answer"] for e in every if e["answer_type"].strip() == "CLOSED"} == {"Yes", "No"}
    train_images = {e["image_name"] for e in raw["trainset.json"]}
    test_images = {e["image_name"] for e in raw["testset.json"]}
    assert not train_images & test_images
    assert len(train_images) == 4 * (12 + 2) and len(test_images) == 4 * 4  # train+val / test images of 18 per site
    assert {p.name for p in (folder / "images").iterdir()} == train_images | test_images


def test_folder_loads_one_row_per_question_with_labels_questions_and_groups(folder):
    ds = load_vqa(VQAParams(path=str(folder / "trainset.json"), test_path=str(folder / "testset.json"),
                            image_size=28))
    train_file, test_file = read_vqa_json(folder / "trainset.json"), read_vqa_json(folder / "testset.json")
    assert len(ds.train) + len(ds.val) == len(train_file) and len(ds.test) == len(test_file)
    assert ds.site_names == ("all",) and ds.image_shape == (1, 28, 28) and ds.train.images.dtype == np.uint8
    assert ds.task.kind == "multiclass" and ds.name == "VQA_RAD"
    rows = _rows(ds, folder)
    train_answers = sorted({normalize_answer(e["answer"]) for _, e in rows["train"]})
    unseen = {s: sum(normalize_answer(e["answer"]) not in train_answers for _, e in rows[s]) for s in SPLITS}
    assert ds.task.label_names == tuple(train_answers)
    assert {"0", "1", "yes", "no", "left"} <= set(train_answers)  # int answers read as strings
    group_of: dict[str, int] = {}
    for s in SPLITS:
        split = getattr(ds, s)
        assert split.texts == split.indications == [e["question"] for _, e in rows[s]]
        for (name, e), label, kind, group, site in zip(rows[s], split.labels, split.extras["answer_type"],
                                                       split.groups, split.sites):
            a = normalize_answer(e["answer"])
            assert (ds.task.label_names[label] == a) if a in train_answers else (label == -1)
            assert kind == ("CLOSED", "OPEN").index(e["answer_type"]) and site == 0
            assert group_of.setdefault(name, int(group)) == group  # one id per image
    assert len(set(group_of.values())) == len(group_of)
    ids = {s: set(getattr(ds, s).groups.tolist()) for s in SPLITS}
    assert not ids["train"] & ids["val"] and not ids["train"] & ids["test"] and not ids["val"] & ids["test"]
    assert len(ids["val"]) == round(0.1 * 56)  # val_fraction of the 56 training images
    n = {s: len(getattr(ds, s)) for s in SPLITS}
    assert ds.notes[0] == (f"questions per split (one row each): train {n['train']}, val {n['val']}, test {n['test']}; "
                           f"on {len(ids['train'])}, {len(ids['val'])}, {len(ids['test'])} images")
    assert "test: testset.json" in ds.notes
    assert f"{unseen['test']} of {n['test']} test questions" in " ".join(ds.notes)


def test_unseen_test_answers_are_unscored_flagged_and_counted(copy):
    test = json.loads((copy / "testset.json").read_text())
    image = test[0]["image_name"]
    test += [{"qid": 10_000, "image_name": image, "image_organ": "CHEST", "answer": 7, "answer_type": "OPEN",
              "question_type": "COUNT", "question": "How many ribs are visible?", "phrase_type": "freeform"},
             {"qid": 10_001, "image_name": image, "answer": "Pneumothorax", "question": "What is the finding?"}]
    (copy / "testset.json").write_text(json.dumps(test))
    ds = load_vqa(VQAParams(path=str(copy / "trainset.json"), test_path=str(copy / "testset.json"), image_size=28))
    rows = _rows(ds, copy)
    train_answers = {normalize_answer(e["answer"]) for _, e in rows["train"]}
    assert set(ds.task.label_names) == train_answers  # no class for unseen answers: none can be predicted
    expected = [normalize_answer(e["answer"]) not in train_answers for _, e in rows["test"]]
    np.testing.assert_array_equal(ds.test.labels == -1, expected)
    np.testing.assert_array_equal(ds.test.extras["unseen_answer"], expected)
    assert ds.test.labels[-2] == ds.test.labels[-1] == -1 and ds.test.extras["answer_type"][-1] == 1
    assert ds.test.indications[-2:] == ["How many ribs are visible?", "What is the finding?"]
    u, n = sum(expected), len(ds.test)
    assert (f"{u} of {n} test questions ({100 * u / n:.1f}%) have an answer not seen in training: no answer class "
            "can match them, so they are not scored and count as wrong in the accuracy over all questions") in ds.notes


def test_missing_image_is_skipped_and_counted_or_an_error_with_strict(copy):
    entries = read_vqa_json(copy / "trainset.json")
    gone = entries[40]["image_name"]
    (copy / "images" / gone).unlink()
    lost = [i for i, e in enumerate(entries) if e["image_name"] == gone]
    params = dict(path=str(copy / "trainset.json"), test_path=str(copy / "testset.json"), image_size=28)
    ds = load_vqa(VQAParams(**params))
    assert len(ds.train) + len(ds.val) == len(entries) - len(lost)
    assert (f"skipped {len(lost)} questions whose image file is missing: 1 files not found under {copy / 'images'} "
            f"(first: {gone}); strict: true makes this an error") in ds.notes
    with pytest.raises(DataError, match=f"trainset.json: entry {lost[0]}: image file .*{gone} not found"):
        load_vqa(VQAParams(**params, strict=True))


def test_seeded_split_by_image_when_there_is_no_test_file(folder):
    params = VQAParams(path=str(folder / "trainset.json"), image_size=28, split_seed=3)
    ds = load_vqa(params)
    ids = {s: set(getattr(ds, s).groups.tolist()) for s in SPLITS}
    assert len(ids["test"]) == 11 and len(ids["val"]) == 5  # round(0.2 * 56), round(0.1 * 45) (halves up)
    assert len(ids["train"]) == 56 - 11 - 5 and not (ids["train"] & ids["test"] or ids["train"] & ids["val"]
                                                   or ids["val"] & ids["test"])
    assert sum(len(getattr(ds, s)) for s in SPLITS) == len(read_vqa_json(folder / "trainset.json"))
    assert "test: 11 of the 56 images of trainset.json (split_fractions[1]=0.2, seeded by split_seed=3; an image's " \
           "questions stay together)" in ds.notes
    again = load_vqa(params)
    assert all((getattr(again, s).images == getattr(ds, s).images).all() for s in SPLITS)
    other = load_vqa(params.model_copy(update={"split_seed": 4}))
    assert other.test.images.shape != ds.test.images.shape or (other.test.images != ds.test.images).any()


def test_images_are_fitted_to_image_size(folder):
    ds = load_vqa(VQAParams(path=str(folder / "trainset.json"), test_path=str(folder / "testset.json")))
    assert ds.image_shape == (1, 64, 64) and ds.train.images.dtype == np.uint8  # default size 64, gray -> 1 channel
    ds3 = load_vqa(VQAParams(path=str(folder / "trainset.json"), image_size=32, channels=3, resize="crop"))
    assert ds3.image_shape == (3, 32, 32)
    assert (ds3.train.images[:, 0] == ds3.train.images[:, 1]).all()  # gray repeated


def _slake_folder(root, colour: bool = False):
    """A tiny SLAKE layout: imgs/xmlabN/source.jpg, train/validate/test json with English and Chinese questions."""
    rng = np.random.default_rng(0)
    for k in range(1, 9):
        gray = rng.integers(0, 255, size=(40, 30), dtype=np.uint8)
        rgb = np.stack([gray] * 3, axis=-1)
        if colour and k == 5:
            rgb[..., 0] = 255
        (root / "imgs" / f"xmlab{k}").mkdir(parents=True)
        Image.fromarray(rgb).save(root / "imgs" / f"xmlab{k}" / "source.jpg", quality=95)
    qid = 0

    def entries(images, answers):
        nonlocal qid
        out = []
        for k, a in zip(images, answers):
            for lang, q in (("en", "Is this a healthy lung?" if a in ("Yes", "No") else "What modality is used?"),
                            ("zh", "这是什么模态？")):
                out.append({"img_id": k, "img_name": f"xmlab{k}/source.jpg", "question": q, "answer": a,
                            "q_lang": lang, "location": "Lung", "modality": "CT", "base_type": "vqa",
                            "answer_type": "CLOSED" if a in ("Yes", "No") else "OPEN", "content_type": "Modality",
                            "triple": ["vhead", "_", "_"], "qid": qid})
                qid += 1
        return out

    for name, images, answers in (("train.json", [1, 2, 3, 4, 5], ["Yes", "No", "CT", "CT", "MRI"]),
                                  ("validate.json", [6], ["No"]), ("test.json", [7, 8], ["X-Ray", "Yes"])):
        (root / name).write_text(json.dumps(entries(images, answers), ensure_ascii=False), encoding="utf-8")
    return root


def test_slake_folder_loads_with_language_filter_and_default_imgs_dir(tmp_path):
    root = _slake_folder(tmp_path / "Slake1.0")
    params = dict(path=str(root / "train.json"), val_path=str(root / "validate.json"),
                  test_path=str(root / "test.json"), image_size=16, modality="CT")
    ds = load_vqa(VQAParams(**params))
    assert (len(ds.train), len(ds.val), len(ds.test)) == (5, 1, 2)  # English questions only
    assert ds.image_shape == (1, 16, 16) and ds.modality == "CT"  # gray JPEGs (RGB files) -> 1 channel
    assert ds.task.label_names == ("ct", "mri", "no", "yes")
    np.testing.assert_array_equal(ds.train.labels, [3, 2, 0, 0, 1])
    np.testing.assert_array_equal(ds.val.labels, [2])
    np.testing.assert_array_equal(ds.test.labels, [-1, 3])  # "x-ray" never seen in training: unscored
    assert ds.test.indications == ["What modality is used?", "Is this a healthy lung?"]
    np.testing.assert_array_equal(ds.train.extras["answer_type"], [0, 0, 1, 1, 1])
    assert "language 'en': dropped 8 of 16 questions whose q_lang differs (train.json: 5, validate.json: 1, " \
           "test.json: 2)" in ds.notes
    assert "1 of 2 test questions (50.0%) have an answer not seen in training: no answer class can match them, so " \
           "they are not scored and count as wrong in the accuracy over all questions" in ds.notes
    both = load_vqa(VQAParams(**params, language=None))
    assert (len(both.train), len(both.val), len(both.test)) == (10, 2, 4)
    assert both.train.groups.tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]  # both questions of an image: one group
    assert not any("dropped" in n for n in both.notes)


def test_any_colour_image_makes_three_channels(tmp_path):
    root = _slake_folder(tmp_path / "Slake1.0", colour=True)
    ds = load_vqa(VQAParams(path=str(root / "train.json"), test_path=str(root / "test.json"), image_size=16))
    assert ds.image_shape == (3, 16, 16)


@pytest.mark.parametrize("text,problem", [
    ('{"questions": []}', "top level is a JSON dict"),
    ('[{"qid": 1, "image_name": "a.png", "question": "Q?", "answer": "yes"}, '
     '{"qid": 2, "image_name": "a.png", "answer": "no"}]', "entry 1: missing key 'question'"),
    ('[{"qid": 1, "image_name": "a.png", "question": "Q?", "ans', "bad JSON .*line 1"),
])
def test_bad_files_name_the_file_and_entry(tmp_path, text, problem):
    (tmp_path / "trainset.json").write_text(text)
    with pytest.raises(DataError, match=f"trainset.json: {problem}"):
        load_vqa(VQAParams(path=str(tmp_path / "trainset.json")))


def test_bad_test_file_and_missing_images_dir(folder, tmp_path):
    (tmp_path / "testset.json").write_text('[{"image_name": "x.png", "question": "Q?", "answer": "yes", '
                                           '"answer_type": "SOMETIMES"}]')
    with pytest.raises(DataError, match="testset.json: entry 0: answer_type 'SOMETIMES'"):
        load_vqa(VQAParams(path=str(folder / "trainset.json"), test_path=str(tmp_path / "testset.json")))
    with pytest.raises(DataError, match="no training question has an image file under"):
        load_vqa(VQAParams(path=str(folder / "trainset.json"), images_dir=str(tmp_path)))


def test_params_are_checked():
    with pytest.raises(ValidationError, match="test_path given without path"):
        VQAParams(test_path="t.json")
    with pytest.raises(ValidationError, match="extra"):
        VQAParams(image_dir="x")
    with pytest.raises(ValidationError, match="split_fractions"):
        VQAParams(split_fractions=(0.5, 0.6))
    with pytest.raises(ValidationError):
        VQAParams(synthetic={"n_per_site": 300, "sites": ["A"]})
    assert VQAParams().language == "en" and VQAParams().synthetic.n_per_site == 300


def test_synthetic_default_builds_fast_with_sites(tmp_path):
    from medrobust import registry
    from medrobust.data.synthetic import SyntheticParams, load_synthetic
    from medrobust.data.vqa import generate_vqa, image_names_for

    assert registry.get("data", "vqa") is load_vqa and load_vqa.Params is VQAParams
    load_synthetic(SyntheticParams(n_per_site=9))  # warm the imports
    start = time.perf_counter()
    ds = load_vqa(VQAParams())
    assert time.perf_counter() - start < 5.0
    assert ds.site_names == ("A", "B", "C", "D") and ds.image_shape == (1, 28, 28)
    ref = load_synthetic(SyntheticParams(n_per_site=300, image_size=28, seed=0))
    for s in SPLITS:
        split, base = getattr(ds, s), getattr(ref, s)
        entries = generate_vqa(base, image_names_for(base, ref.site_names), seed=0)
        assert len(split) == len(entries) > len(base)  # one row per question
        assert split.indications == split.texts == [e["question"] for e in entries]
        assert [ds.task.label_names[i] for i in split.labels] == [e["answer"] for e in entries]
        assert set(split.sites.tolist()) == {0, 1, 2, 3}
        names = [e["image_name"] for e in entries]
        site_of = [ref.site_names.index(n.split("_")[1]) for n in names]
        np.testing.assert_array_equal(split.sites, site_of)
        rows = np.array([int(n.split("_")[2][:5]) for n in names])
        assert (split.images == base.images[rows]).all()
    ids = {s: set(getattr(ds, s).groups.tolist()) for s in SPLITS}
    assert not ids["train"] & ids["val"] and not ids["train"] & ids["test"] and not ids["val"] & ids["test"]
    assert ds.task.label_names == tuple(sorted({"yes", "no", "left", "right", "both", "upper", "lower", "small",
                                                "moderate", "large", "mild"}))


def test_a_study_config_with_the_vqa_source_validates(tmp_path):
    from medrobust.config import ConfigError, load_config

    cfg = load_config(None, ["data.source=vqa", "data.synthetic.n_per_site=18", f"output_dir={tmp_path}"])
    assert cfg.data.params == {"synthetic": {"n_per_site": 18}}
    with pytest.raises(ConfigError, match="data.synthetic.n_per_site"):
        load_config(None, ["data.source=vqa", "data.synthetic.n_per_site=3"])
    with pytest.raises(ConfigError, match="unknown key 'data.image_dir'"):
        load_config(None, ["data.source=vqa", "data.image_dir=x"])
