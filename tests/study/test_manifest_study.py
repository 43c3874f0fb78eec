"""A study on a publisher-style CSV manifest: own column names, repeated patients, sites, image+report arms with
retrieval under site shift; no patient in two sets."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from conftest import tiny_overrides
from medrobust.cli import main
from medrobust.config import load_config
from medrobust.data.synthetic import SyntheticParams, load_synthetic
from medrobust.data.writers import write_manifest
from medrobust.study.prepare import prepare
from medrobust.study.store import Store


def publisher_csv(tmp_path, n_per_site=30):
    """The synthetic image-report data as a CSV in a publisher's words: two images per patient."""
    folder = write_manifest(load_synthetic(SyntheticParams(n_per_site=n_per_site, seed=5)), tmp_path / "m").parent
    rows = [json.loads(line) for line in (folder / "manifest.jsonl").read_text().splitlines()]
    path = folder / "metadata.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["patientid", "finding", "location", "filename", "notes", "split_given"])
        for i, r in enumerate(rows):  # split_given is ignored: the study splits by patient itself
            w.writerow([f"{r['site']}-{i // 2}", ["normal", "abnormal"][r["label"]], r["site"], r["image"], r["text"],
                        r["split"]])
    return path


def overrides(path, out):
    keep = [o for o in tiny_overrides(out) if not o.startswith(("data.", "methods=", "multimodal.tasks"))]
    return keep + [f"data.path={path}", "data.columns={image: filename, text: notes, label: finding, site: location, "
                   "group: patientid}", "data.holdout_sites=[D]", "data.image_size=28", "seeds=[0]",
                   "label_fractions=[0.5]", "methods=[supervised, clip]", "multimodal.tasks=[retrieval]",
                   "multimodal.retrieval_pairs=10"]


def test_no_patient_in_two_sets_and_label_fractions_take_whole_patients(tmp_path):
    path = publisher_csv(tmp_path)
    cfg = load_config("configs/manifest.yaml", overrides(path, tmp_path / "s"))
    data = prepare(cfg)
    sets = {"train": data.train, "test": data.test, "holdout": data.holdout}
    # a patient id is its site and number; groups are ids of the whole file, so compare across sets directly
    ids = {k: set(s.groups.tolist()) for k, s in sets.items()}
    assert not (ids["train"] & ids["test"]) and not (ids["train"] & ids["holdout"]) and not (ids["test"] & ids["holdout"])
    assert all(len(s) for s in sets.values()) and np.isin(data.holdout.sites, [3]).all()
    from medrobust.data.fractions import label_subset

    chosen = label_subset(data.train.labels, 0.5, 0, data.train.groups)
    picked = set(data.train.groups[chosen].tolist())
    assert set(np.flatnonzero(np.isin(data.train.groups, list(picked))).tolist()) == set(chosen.tolist())
    assert "patients (none in two sets)" in data.describe() and data.group_overlaps() == {
        "train&test": 0, "train&holdout": 0, "test&holdout": 0}


def test_a_patient_imaged_at_a_held_out_site_is_not_trained_on(tmp_path):
    path = publisher_csv(tmp_path)
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    # ten site-A patients get an image at site D too (patients seen at two hospitals)
    a_patients = list(dict.fromkeys(r[0] for r in rows[1:] if r[2] == "A"))[:10]
    d_rows = [list(r) for r in rows[1:] if r[2] == "D"][:10]
    for patient, r in zip(a_patients, d_rows):
        r[0] = patient
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(rows + d_rows)
    cfg = load_config("configs/manifest.yaml", overrides(path, tmp_path / "s"))
    data = prepare(cfg)
    assert all(v == 0 for v in data.group_overlaps().values())
    assert any("also imaged at a held-out site; left out of the" in n for n in data.notes)


@pytest.mark.slow
def test_csv_study_with_image_report_arm_and_retrieval_under_site_shift(tmp_path):
    path = publisher_csv(tmp_path)
    out = tmp_path / "s"
    assert main(["study", "configs/manifest.yaml", *overrides(path, out)]) == 0
    records = {r.arm: r for r in Store(out / "runs.sqlite").records()}
    assert set(records) == {"supervised", "clip"}
    clip = records["clip"]
    assert clip.pretrained_on == ("image", "text") and clip.metrics.holdout is not None
    retrieval = clip.tasks.retrieval
    n = retrieval["clean"].image_to_report.n
    assert abs(n - 10) <= 1 and "holdout" in retrieval  # a label-stratified gallery of 10 pairs (±1)
    assert 1 <= retrieval["holdout"].image_to_report.mean_rank <= retrieval["holdout"].image_to_report.n
    text = (out / "report" / "report.md").read_text()
    assert "patients (none in two sets)" in text and "Held-out site(s):** D" in text
