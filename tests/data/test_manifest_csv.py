"""CSV manifests with the user's own columns, images of every size and mode, the decoded-image cache, patient
grouping, and the real COVID-19 image data collection CSV."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from PIL import Image

from conftest import SHARED_DATA
from medrobust.data import images as image_io
from medrobust.data.base import DataError
from medrobust.data.fractions import label_subset
from medrobust.data.images import fit_image
from medrobust.data.manifest import ManifestParams, load_manifest

COVID = SHARED_DATA / "covid-chestxray" / "metadata.csv"


def write_csv(path, header, rows):
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def save(folder, name, array, mode=None):
    (folder / "img").mkdir(exist_ok=True)
    im = Image.fromarray(array) if mode is None else Image.fromarray(array).convert(mode)
    im.save(folder / "img" / name)
    return name


def patients_csv(tmp_path, n_patients=30, per_patient=3):
    """A publisher-style CSV: own column names, 3 images per patient, string findings, a modality column."""
    rows = []
    rng = np.random.default_rng(0)
    for p in range(n_patients):
        finding = ["COVID-19", "Pneumonia", "No Finding"][p % 3]
        for k in range(per_patient):
            side = 20 + 7 * ((p + k) % 4)  # images of several sizes
            name = save(tmp_path, f"p{p}_{k}.png", rng.integers(0, 256, (side, side + 5), dtype=np.uint8))
            rows.append([f"P{p:03d}", finding, f"hosp{p % 2}", name, f"note {p} {k}", "X-ray" if k < 2 else "CT"])
    return write_csv(tmp_path / "meta.csv", ["patientid", "finding", "location", "filename", "clinical notes",
                                             "modality"], rows)


def params(path, **kw):
    base = dict(path=str(path), images_dir="img",
                columns={"image": "filename", "text": "clinical notes", "label": "finding", "site": "location",
                         "group": "patientid"})
    return ManifestParams(**{**base, **kw})


def test_csv_with_own_columns_where_label_map_and_grouped_split(tmp_path):
    path = patients_csv(tmp_path)
    ds = load_manifest(params(path, where={"modality": "X-ray"}, label_map={"COVID-19": "covid", "*": "other"},
                              image_size=16))
    assert ds.modality == "X-ray" and ds.task.kind == "binary" and ds.task.label_names == ("covid", "other")
    n = sum(len(s) for s in (ds.train, ds.val, ds.test))
    assert n == 60 and ds.image_shape == (1, 16, 16)  # 30 patients x 2 X-rays; CT rows filtered out
    assert any("kept 60 of 90 rows where modality = X-ray" in note for note in ds.notes)
    assert ds.site_names == ("hosp0", "hosp1")
    groups = [set(s.groups.tolist()) for s in (ds.train, ds.val, ds.test)]
    assert not (groups[0] & groups[1] or groups[0] & groups[2] or groups[1] & groups[2])  # no patient in two splits
    assert len(set().union(*groups)) == 30
    covid = sum(int((s.labels == 0).sum()) for s in (ds.train, ds.val, ds.test))
    assert covid == 20  # patients 0, 3, 6, ...: 10 patients x 2 images
    assert ds.train.texts[0].startswith("note ")
    # the text of each row follows its image: every train text names a patient of the train split
    ids = {int(t.split()[1]) for t in ds.train.texts}
    assert len(ids) == len(groups[0])


def test_label_fraction_takes_whole_patients_and_stays_nested(tmp_path):
    ds = load_manifest(params(patients_csv(tmp_path), image_size=16, split_fractions=(1.0, 0.0, 0.0)))
    tr = ds.train
    assert len(tr) == 90
    small, large = (set(label_subset(tr.labels, f, seed=1, groups=tr.groups).tolist()) for f in (0.2, 0.5))
    assert small <= large
    for chosen in (small, large):
        picked = set(tr.groups[list(chosen)].tolist())
        members = {i for i in range(len(tr)) if tr.groups[i] in picked}
        assert members == chosen  # all of a chosen patient's images, none of anyone else's
    assert len(set(tr.groups[list(small)].tolist())) == 6  # 20% of 10 patients per class x 3 classes
    # without groups the same fraction splits patients
    loose = label_subset(tr.labels, 0.2, seed=1)
    assert len(loose) == 18


def test_multilabel_separator_and_unlabeled_mapping(tmp_path):
    rng = np.random.default_rng(1)
    rows = [[save(tmp_path, f"{i}.png", rng.integers(0, 256, (8, 8), dtype=np.uint8)), lab, ["train", "test"][i % 2]]
            for i, lab in enumerate(["effusion|nodule", "nodule", "", "edema", "unknown", "effusion"])]
    path = write_csv(tmp_path / "m.csv", ["file", "findings", "subset"], rows)
    ds = load_manifest(ManifestParams(path=str(path), images_dir="img", label_separator="|",
                                      label_map={"unknown": None},
                                      columns={"image": "file", "label": "findings", "split": "subset"}))
    assert ds.task.kind == "multilabel" and ds.task.label_names == ("edema", "effusion", "nodule")
    assert ds.train.labels.tolist() == [[0, 1, 1], [-1, -1, -1], [-1, -1, -1]]  # empty and "unknown": unlabeled
    assert ds.test.labels.tolist() == [[0, 0, 1], [1, 0, 0], [0, 1, 0]]


def test_a_named_column_the_file_lacks_lists_its_columns(tmp_path):
    path = patients_csv(tmp_path, n_patients=2)
    with pytest.raises(DataError, match=r"meta\.csv: data\.columns\.label names column 'diagnosis', which the file "
                                        r"lacks; its columns are: 'patientid', 'finding', 'location', 'filename'"):
        load_manifest(params(path, columns={"image": "filename", "label": "diagnosis"}))
    with pytest.raises(DataError, match=r"meta\.csv: no image column; the file's columns are 'patientid'.*"
                                        r"data\.columns\.image"):
        load_manifest(ManifestParams(path=str(path)))
    with pytest.raises(DataError, match=r"data\.where\.view names column 'view'"):
        load_manifest(params(path, where={"view": "PA"}))
    bad = tmp_path / "bad.csv"
    bad.write_text("image,label\na.png,1,extra\n")
    with pytest.raises(DataError, match=r"bad\.csv row 0 \(line 2\): 3 cells but the header has 2 columns"):
        load_manifest(ManifestParams(path=str(bad)))
    with pytest.raises(DataError, match=r"m\.xlsx: manifest has extension '\.xlsx'; expected \.jsonl .* or \.csv"):
        load_manifest(ManifestParams(path=str(tmp_path / "m.xlsx")))


def test_every_mode_and_16_bit_png_read_and_fitted(tmp_path):
    gray = np.tile(np.arange(0, 250, 10, dtype=np.uint8), (10, 1))  # 10 x 25, a horizontal ramp
    rgb = np.stack([gray, gray, gray], axis=-1)
    files = {"L": save(tmp_path, "l.png", gray), "RGB": save(tmp_path, "rgb.png", rgb),
             "RGBA": save(tmp_path, "rgba.png", rgb, "RGBA"), "P": save(tmp_path, "p.png", rgb, "P"),
             "JPEG": save(tmp_path, "j.jpg", rgb)}
    Image.fromarray((gray.astype(np.uint16) * 257)).save(tmp_path / "img" / "i16.png")  # 16-bit gray
    files["I;16"] = "i16.png"
    for mode, name in files.items():
        img = image_io.read_image(tmp_path / "img" / name, mode)
        assert img.shape[1:] == (10, 25), mode
        if mode == "I;16":  # the percentile rule: the ramp spans [0, 1] whatever bits it uses
            assert img.dtype == np.float32 and float(img.max()) == 1.0 and float(img.min()) == 0.0
        else:
            assert img.dtype == np.uint8 and image_io.is_gray(img), mode
    rows = [[name, i % 2] for i, name in enumerate(files.values())]
    ds = load_manifest(ManifestParams(path=str(write_csv(tmp_path / "m.csv", ["image", "label"], rows)),
                                      images_dir="img", image_size=20, split_fractions=(1.0, 0.0, 0.0)))
    assert ds.image_shape == (1, 20, 20) and ds.train.images.dtype == np.float32  # the 16-bit file makes all float
    assert ds.train.images.max() <= 1.0 and ds.train.images.min() >= 0.0


def test_pad_and_crop_keep_the_aspect():
    img = np.full((1, 10, 20), 100, np.uint8)  # H 10, W 20
    padded = fit_image(img, (10, 10), None, "pad")  # scale 0.5 -> 5 x 10, padded top and bottom
    assert padded.shape == (1, 10, 10)
    assert (padded[0, :2] == 0).all() and (padded[0, -3:] == 0).all() and (padded[0, 3:7] == 100).all()
    cropped = fit_image(img, (10, 10), None, "crop")  # scale 1 -> the centre 10 x 10
    assert cropped.shape == (1, 10, 10) and (cropped == 100).all()
    vol = np.full((1, 4, 8, 8), 0.5, np.float32)
    out = fit_image(vol, (8, 8, 8), 3, "pad")
    assert out.shape == (3, 8, 8, 8) and out.dtype == np.float32
    assert (out[:, :2] == 0).all() and np.allclose(out[:, 2:6], 0.5)
    rgb = np.stack([np.full((4, 4), v, np.uint8) for v in (255, 0, 0)])
    assert fit_image(rgb, None, 1).tolist() == [[[76] * 4] * 4]  # BT.601 luma of pure red: 0.299 * 255


def test_second_read_comes_from_the_cache_and_a_changed_image_invalidates_it(tmp_path, monkeypatch):
    path = patients_csv(tmp_path, n_patients=3)
    first = load_manifest(params(path, image_size=16))
    calls = []
    real = image_io.read_image

    def counting(*a, **k):
        calls.append(a[0])
        return real(*a, **k)

    monkeypatch.setattr("medrobust.data.manifest.read_image", counting)
    second = load_manifest(params(path, image_size=16))
    assert calls == []  # nothing decoded
    np.testing.assert_array_equal(first.train.images, second.train.images)
    img = tmp_path / "img" / "p0_0.png"
    Image.fromarray(np.zeros((30, 30), np.uint8)).save(img)
    third = load_manifest(params(path, image_size=16))
    assert len(calls) == 9  # a changed file changes the key: everything decoded again
    assert not np.array_equal(first.train.images, third.train.images) or not np.array_equal(
        first.test.images, third.test.images)
    calls.clear()
    load_manifest(params(path, image_size=16, cache=False))
    assert len(calls) == 9


@pytest.mark.skipif(not COVID.is_file(), reason="../shared/data/covid-chestxray not present")
def test_real_covid_csv_reads_as_published():
    ds = load_manifest(ManifestParams(
        path=str(COVID), images_dir="images", where={"modality": "X-ray"}, image_size=64, channels=1,
        columns={"image": "filename", "text": "clinical_notes", "label": "finding", "site": "location",
                 "group": "patientid"},
        label_map={"COVID-19": "covid", "COVID-19, ARDS": "covid", "*": "other"}, label_names=["other", "covid"]))
    splits = (ds.train, ds.val, ds.test)
    assert sum(map(len, splits)) == 189 and ds.image_shape == (1, 64, 64) and ds.modality == "X-ray"
    assert sum(int((s.labels == 1).sum()) for s in splits) == 106  # 97 COVID-19 + 9 "COVID-19, ARDS"
    groups = [set(s.groups.tolist()) for s in splits]
    # 93 patient ids, but 5 files are listed twice and 2 of them under two patient ids: 91 groups kept apart
    assert len(set().union(*groups)) == 91 and not (groups[0] & groups[2]) and not (groups[0] & groups[1])
    assert any("5 row(s) list an image file already listed in another row" in n for n in ds.notes)
    assert "Spain" in ds.site_names and "Valencia, Spain" in ds.site_names
    assert all(t and isinstance(t, str) for s in splits for t in s.texts)
    assert not any(n.startswith("skipped") for n in ds.notes)  # every row has its image


def test_an_image_listed_twice_never_straddles_two_splits(tmp_path):
    rng = np.random.default_rng(2)
    rows = []
    for i in range(40):  # rows 2k and 2k+1 share one file but name different patients
        name = save(tmp_path, f"{i // 2}.png", rng.integers(0, 256, (8, 8), dtype=np.uint8))
        rows.append([name, f"P{i}", i % 2])
    path = write_csv(tmp_path / "dup.csv", ["image", "patient", "label"], rows)
    for columns in ({"group": "patient"}, {}):
        ds = load_manifest(ManifestParams(path=str(path), images_dir="img", columns=columns))
        sets = [s for s in (ds.train, ds.val, ds.test)]
        pixels = [{s.images[i].tobytes() for i in range(len(s))} for s in sets]
        assert not (pixels[0] & pixels[1] or pixels[0] & pixels[2] or pixels[1] & pixels[2])
        assert sum(map(len, sets)) == 40 and len(set().union(*(set(s.groups.tolist()) for s in sets))) == 20
        assert any("20 row(s) list an image file already listed" in n for n in ds.notes)


def test_twelve_bit_png_transparency_and_one_based_labels(tmp_path):
    twelve = (np.arange(200).reshape(10, 20) * 20).astype(np.uint16)  # 0..3980: 12 bits in a 16-bit file
    Image.fromarray(twelve).save(tmp_path / "x12.png")
    img = image_io.read_image(tmp_path / "x12.png", "row 0")
    assert img.max() == 1.0 and 0.4 < float(np.median(img)) < 0.6  # not squeezed into [0, 0.06]
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., :3] = 255  # white, but fully transparent
    rgba[0, 0] = [255, 0, 0, 255]  # one opaque red pixel
    Image.fromarray(rgba, "RGBA").save(tmp_path / "t.png")
    arr = image_io.read_image(tmp_path / "t.png", "row 0")
    assert arr.shape == (3, 4, 4) and arr[:, 1:, 1:].max() == 0 and arr[:, 0, 0].tolist() == [255, 0, 0]
    rows = [[save(tmp_path, f"{i}.png", np.full((6, 6), i, np.uint8)), 1 + i % 2] for i in range(6)]
    ds = load_manifest(ManifestParams(path=str(write_csv(tmp_path / "m.csv", ["image", "label"], rows)),
                                      images_dir="img"))
    assert ds.task.n_outputs == 3 and any("'class_0' have no rows" in n and "counted from 1" in n for n in ds.notes)


def test_a_failed_read_is_not_cached(tmp_path, monkeypatch):
    rows = [[save(tmp_path, f"{i}.png", np.full((6, 6), i, np.uint8)), i % 2] for i in range(4)]
    path = write_csv(tmp_path / "m.csv", ["image", "label"], rows)
    real = image_io.read_image

    def flaky(file, where, **kw):
        if file.name == "2.png":
            raise DataError(f"{where}: cannot read image {file}: no decoder")
        return real(file, where, **kw)

    monkeypatch.setattr("medrobust.data.manifest.read_image", flaky)
    first = load_manifest(ManifestParams(path=str(path), images_dir="img", split_fractions=(1.0, 0.0, 0.0)))
    assert len(first.train) == 3 and any("unreadable image" in n for n in first.notes)
    monkeypatch.setattr("medrobust.data.manifest.read_image", real)  # e.g. the decoder was installed since
    second = load_manifest(ManifestParams(path=str(path), images_dir="img", split_fractions=(1.0, 0.0, 0.0)))
    assert len(second.train) == 4 and not any("unreadable" in n for n in second.notes)
