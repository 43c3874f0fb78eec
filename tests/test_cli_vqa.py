"""``medrobust data vqa``: the json it writes reads back identically to ``generate_vqa``, byte-stably, and bad
options are reported as errors naming the value."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from medrobust.cli import main
from medrobust.data.synthetic import SyntheticParams, load_synthetic
from medrobust.data.vqa import generate_vqa, image_names_for, read_vqa_json, study_split, write_vqa_json


def test_data_vqa_writes_what_generate_vqa_returns(tmp_path, capsys):
    out = tmp_path / "vqa" / "questions.json"
    assert main(["data", "vqa", "--out", str(out), "--n-per-site", "18", "--seed", "4", "--split", "test"]) == 0
    ds = load_synthetic(SyntheticParams(n_per_site=18, seed=4))
    split = study_split(ds, "test", ["D"])
    expected = generate_vqa(split, image_names_for(split, ds.site_names), seed=4)
    got = read_vqa_json(out)
    assert got == expected and len(got) > len(split)
    assert {e["image_name"].split("_")[1] for e in got} == {"A", "B", "C"}  # held-out site D is not in test
    again = write_vqa_json(tmp_path / "again.json", got)
    assert again.read_bytes() == out.read_bytes()  # json round trip is byte-stable
    printed = capsys.readouterr().out
    closed = sum(e["answer_type"] == "CLOSED" for e in got)
    asked = len({e["image_name"] for e in got})
    assert str(out) in printed and f"{len(got)} questions on {asked} of the {len(split)} test images" in printed
    assert 0 < asked <= len(split)
    described = subprocess.run([sys.executable, "-m", "medrobust", "data", "inspect", str(out)], capture_output=True,
                               text=True, check=True).stdout  # the json is also what `data inspect` reads
    assert f"VQA-RAD layout: {len(got)} questions on {asked} images" in described
    assert f"CLOSED: {closed}, OPEN: {len(got) - closed}" in described
    assert f"{closed} CLOSED, {len(got) - closed} OPEN" in printed


def test_data_vqa_options_reach_the_generator(tmp_path):
    out = tmp_path / "q.json"
    args = ["data", "vqa", "--out", str(out), "--n-per-site", "18", "--seed", "1", "--split", "holdout",
            "--holdout-sites", "A", "C", "--per-image", "2", "--no-balance"]
    assert main(args) == 0
    ds = load_synthetic(SyntheticParams(n_per_site=18, seed=1))
    split = study_split(ds, "holdout", ["A", "C"])
    expected = generate_vqa(split, image_names_for(split, ds.site_names), seed=1, per_image=2, balance=False)
    assert read_vqa_json(out) == expected
    assert {e["image_name"].split("_")[1] for e in expected} == {"A", "C"}


def test_data_vqa_errors_name_the_value(tmp_path, capsys):
    out = str(tmp_path / "q.json")
    assert main(["data", "vqa", "--out", out, "--n-per-site", "18", "--holdout-sites", "X"]) == 2
    assert "holdout sites ['X'] are not among the sites" in capsys.readouterr().err
    assert main(["data", "vqa", "--out", out, "--n-per-site", "18", "--split", "holdout", "--holdout-sites"]) == 2
    assert "needs at least one holdout site" in capsys.readouterr().err
    assert main(["data", "vqa", "--out", out, "--n-per-site", "5"]) == 2
    assert "n_per_site" in capsys.readouterr().err
    assert main(["data", "vqa", "--out", out, "--n-per-site", "18", "--per-image", "0"]) == 2
    assert "per_image=0" in capsys.readouterr().err
    assert not (tmp_path / "q.json").exists()


def test_data_vqa_folder_writes_a_vqa_rad_folder_the_source_reads(tmp_path, capsys):
    from medrobust.data.vqa_source import VQAParams, load_vqa, write_vqa_folder

    out = tmp_path / "rad"
    assert main(["data", "vqa", "--folder", str(out), "--n-per-site", "18", "--seed", "2"]) == 0
    train, test = read_vqa_json(out / "trainset.json"), read_vqa_json(out / "testset.json")
    printed = capsys.readouterr().out
    assert (f"wrote {out}: VQA-RAD layout, {4 * 18} images in images/, trainset.json {len(train)} questions, "
            f"testset.json {len(test)} questions") in printed
    assert f"data.path={out / 'trainset.json'} data.test_path={out / 'testset.json'}" in printed
    ref = write_vqa_folder(tmp_path / "ref", n_per_site=18, seed=2)  # the CLI writes what the function writes
    for name in ("trainset.json", "testset.json"):
        assert (out / name).read_bytes() == (ref / name).read_bytes()
    ds = load_vqa(VQAParams(path=str(out / "trainset.json"), test_path=str(out / "testset.json"), image_size=28))
    assert len(ds.train) + len(ds.val) == len(train) and len(ds.test) == len(test)
    assert main(["data", "vqa", "--folder", str(tmp_path / "small"), "--n-per-site", "9", "--image-size", "32"]) == 0
    assert json.loads((tmp_path / "small" / "trainset.json").read_text())[0]["qid"] == 1
    assert len(list((tmp_path / "small" / "images").iterdir())) == 4 * 9


def test_data_vqa_folder_bad_options(tmp_path, capsys):
    out = str(tmp_path / "rad")
    assert main(["data", "vqa", "--folder", out, "--split", "test"]) == 2
    assert "--split only apply to --out" in capsys.readouterr().err
    assert main(["data", "vqa", "--folder", out, "--holdout-sites", "A", "--no-balance"]) == 2
    assert "--holdout-sites, --no-balance only apply to --out" in capsys.readouterr().err
    assert main(["data", "vqa", "--folder", out, "--n-per-site", "5"]) == 2
    assert "n_per_site" in capsys.readouterr().err
    assert main(["data", "vqa", "--folder", out, "--image-size", "10"]) == 2
    assert "image_size" in capsys.readouterr().err
    (tmp_path / "file").write_text("x")
    assert main(["data", "vqa", "--folder", str(tmp_path / "file"), "--n-per-site", "9"]) == 2
    assert "is a file; expected a folder" in capsys.readouterr().err
    assert not (tmp_path / "rad").exists()
    for args in (["--folder", out, "--out", str(tmp_path / "q.json")], []):  # exactly one of --out / --folder
        with pytest.raises(SystemExit) as exc:
            main(["data", "vqa", *args])
        assert exc.value.code == 2
        assert "--out" in capsys.readouterr().err


def test_data_vqa_help_is_light():
    code = ("import sys; from medrobust.cli import main\n"
            "try:\n    main(['data', 'vqa', '--help'])\nexcept SystemExit:\n    pass\n"
            "heavy = [m for m in ('torch', 'sklearn', 'matplotlib', 'scipy', 'numpy') if m in sys.modules]\n"
            "print('HEAVY', heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "HEAVY []" in out and "--holdout-sites" in out and "--folder" in out
