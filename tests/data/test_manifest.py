"""JSONL image-text manifest reader: formats, labels, texts, sites, splits, every error, speed, describe."""

from __future__ import annotations

import io
import json

import numpy as np
import pydantic
import pytest
from PIL import Image

from medrobust.data.base import DataError
from medrobust.data.inspect import describe
from medrobust.data.manifest import ManifestParams, load_manifest


def png(folder, name, array):
    """Write a uint8 ``[H, W]`` or ``[H, W, 3]`` array as PNG; return its name relative to ``folder``."""
    (folder / name).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(folder / name)
    return name


def npy(folder, name, array):
    (folder / name).parent.mkdir(parents=True, exist_ok=True)
    np.save(folder / name, array)
    return name


def manifest(folder, entries, name="manifest.jsonl"):
    path = folder / name
    path.write_text("".join(json.dumps(e) + "\n" for e in entries))
    return path


def gray(i, shape=(6, 5)):
    return np.full(shape, i * 10, dtype=np.uint8)


def toy(tmp_path, n=6, **extra):
    """``n`` gray PNG entries with text, labels 0/1/null, sites B/A, explicit splits."""
    entries = []
    for i in range(n):
        e = {"image": png(tmp_path, f"img/{i}.png", gray(i)), "text": f"report {i}",
             "label": None if i == 5 else i % 2, "site": "B" if i < 3 else "A",
             "split": ["train", "val", "test"][i % 3]}
        e.update(extra)
        entries.append(e)
    return manifest(tmp_path, entries)


def test_basic_load(tmp_path):
    path = toy(tmp_path)
    ds = load_manifest(ManifestParams(path=str(path)))
    assert ds.name == tmp_path.name and ds.source == str(path)
    assert ds.task.kind == "binary" and ds.task.label_names == ("class_0", "class_1")
    assert ds.site_names == ("A", "B") and ds.image_shape == (1, 6, 5)
    # train = entries 0, 3; val = 1, 4; test = 2, 5
    assert ds.train.texts == ["report 0", "report 3"] and ds.test.texts == ["report 2", "report 5"]
    assert ds.train.images[:, 0, 0, 0].tolist() == [0, 30] and ds.train.images.dtype == np.uint8
    assert ds.test.labels.tolist() == [0, -1] and ds.val.labels.tolist() == [1, 0]
    assert ds.train.sites.tolist() == [1, 0]  # B, A
    assert load_manifest.registry_name == "manifest" and load_manifest.Params is ManifestParams  # @register ran


def test_rgb_jpeg_and_absolute_paths(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (4, 5, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.jpg")
    entries = [{"image": png(tmp_path, "p.png", rgb), "label": 2, "split": "train"},
               {"image": str(tmp_path / "a.jpg"), "label": 0, "split": "test"}]
    ds = load_manifest(manifest(tmp_path, entries, "rgb.jsonl"))
    assert ds.name == "rgb" and ds.image_shape == (3, 4, 5) and ds.task.kind == "multiclass"
    np.testing.assert_array_equal(ds.train.images[0], rgb.transpose(2, 0, 1))
    assert len(ds.val) == 0 and ds.test.images.shape == (1, 3, 4, 5) and ds.train.texts is None


def test_npy_2d_3d_and_float(tmp_path):
    vol = np.random.default_rng(1).integers(0, 256, (1, 3, 4, 5), dtype=np.uint8)
    ds3 = load_manifest(manifest(tmp_path, [{"image": npy(tmp_path, "v.npy", vol), "label": 1, "split": "val"}]))
    assert ds3.image_shape == (1, 3, 4, 5) and ds3.spatial_dims == 3
    np.testing.assert_array_equal(ds3.val.images[0], vol)
    f = np.linspace(0, 1, 2 * 4 * 4, dtype=np.float32).reshape(2, 4, 4)
    entries = [{"image": npy(tmp_path, "f.npy", f), "label": 0, "split": "train"},
               {"image": npy(tmp_path, "u.npy", np.full((2, 4, 4), 255, np.uint8)), "label": 1, "split": "train"}]
    ds = load_manifest(manifest(tmp_path, entries, "f.jsonl"))
    assert ds.train.images.dtype == np.float32 and ds.image_shape == (2, 4, 4)
    np.testing.assert_array_equal(ds.train.images[0], f)
    assert (ds.train.images[1] == 1.0).all()  # uint8 255 -> 1.0 once any image is float


def test_multilabel_with_unlabeled_rows(tmp_path):
    labels = [[1, 0, 1], None, [0, 0, 0], [0, 1, 0]]
    entries = [{"image": png(tmp_path, f"{i}.png", gray(i)), "label": lab, "split": "train"}
               for i, lab in enumerate(labels)]
    ds = load_manifest(ManifestParams(path=str(manifest(tmp_path, entries)), label_names=["a", "b", "c"]))
    assert ds.task.kind == "multilabel" and ds.task.label_names == ("a", "b", "c")
    assert ds.train.labels.tolist() == [[1, 0, 1], [-1, -1, -1], [0, 0, 0], [0, 1, 0]]
    assert ds.train.labeled.tolist() == [True, False, True, True]


def test_stratified_split_without_split_field(tmp_path):
    entries = [{"image": png(tmp_path, f"{i}.png", gray(i % 20)), "label": int(i < 40), "site": "S"}
               for i in range(100)]
    path = manifest(tmp_path, entries)
    a = load_manifest(ManifestParams(path=str(path), split_fractions=(0.6, 0.2, 0.2), split_seed=3))
    b = load_manifest(ManifestParams(path=str(path), split_fractions=(0.6, 0.2, 0.2), split_seed=3))
    c = load_manifest(ManifestParams(path=str(path), split_fractions=(0.6, 0.2, 0.2), split_seed=4))
    assert (len(a.train), len(a.val), len(a.test)) == (60, 20, 20)
    for split, frac in (("train", 0.6), ("val", 0.2), ("test", 0.2)):
        counts = np.bincount(getattr(a, split).labels, minlength=2)
        assert abs(counts[1] - 40 * frac) <= 1 and abs(counts[0] - 60 * frac) <= 1
        np.testing.assert_array_equal(getattr(a, split).images, getattr(b, split).images)
    assert not np.array_equal(a.train.images, c.train.images) or a.train.labels.tolist() != c.train.labels.tolist()
    with pytest.raises(pydantic.ValidationError, match="sum to 1"):
        ManifestParams(path=str(path), split_fractions=(0.5, 0.1, 0.1))


def test_unlabeled_only_and_explicit_task(tmp_path):
    entries = [{"image": png(tmp_path, f"{i}.png", gray(i)), "label": None, "text": "t", "split": "train"}
               for i in range(3)]
    ds = load_manifest(manifest(tmp_path, entries))
    assert ds.train.labels.tolist() == [-1, -1, -1] and not ds.train.labeled.any()
    ds = load_manifest(ManifestParams(path=str(manifest(tmp_path, entries)), task="ordinal",
                                      label_names=["0", "1", "2"]))
    assert ds.task.kind == "ordinal" and ds.task.n_outputs == 3


def test_loading_2000_pngs_keeps_every_image_in_order(tmp_path):
    """(Its speed is measured in benchmarks/manifest_read.py, not here.)"""
    rng = np.random.default_rng(0)
    distinct = rng.integers(0, 256, (50, 28, 28), dtype=np.uint8)
    encoded = []
    for img in distinct:  # encode 50 PNGs once, write 2,000 files
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="PNG")
        encoded.append(buf.getvalue())
    (tmp_path / "im").mkdir()
    lines = []
    for i in range(2000):
        (tmp_path / "im" / f"{i}.png").write_bytes(encoded[i % 50])
        lines.append({"image": f"im/{i}.png", "label": i % 3, "split": "train"})
    images = distinct[np.arange(2000) % 50]
    ds = load_manifest(manifest(tmp_path, lines))
    np.testing.assert_array_equal(ds.train.images[:, 0], images)


# ---------------------------------------------------------------- errors: each names file and entry
def entry(tmp_path, i=0, **kw):
    e = {"image": png(tmp_path, f"{i}.png", gray(i)), "label": 0, "split": "train"}
    e.update(kw)
    return e


def test_bad_json(tmp_path):
    good = json.dumps(entry(tmp_path))
    with pytest.raises(DataError, match=r"m\.jsonl entry 1 \(line 2\): bad JSON"):
        load_lines(tmp_path, [good, '{"image": "0.png", "label": 1'])
    with pytest.raises(DataError, match=r"m\.jsonl entry 0 \(line 1\): got list .*expected a JSON object"):
        load_lines(tmp_path, ["[1, 2]"])


def load_lines(tmp_path, lines, **params):
    path = tmp_path / "m.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return load_manifest(ManifestParams(path=str(path), **params))


def test_missing_image_key_and_file_skipped_and_counted_or_fatal_when_strict(tmp_path):
    e0 = entry(tmp_path)
    ds = load_lines(tmp_path, [json.dumps(e0), json.dumps({"label": 1}), json.dumps({**e0, "image": "gone.png"})])
    assert len(ds.train) == 1  # the two bad rows are left out, and said so
    assert any("skipped 1 of 3 rows (empty image): entry 1 (line 2)" in n for n in ds.notes)
    assert any("skipped 1 of 3 rows (missing image file): entry 2 (line 3): image file" in n and "gone.png" in n
               for n in ds.notes)
    with pytest.raises(DataError, match=r"m\.jsonl entry 1 \(line 2\): image file .*gone\.png not found "
                                        r"\(data\.strict is true"):
        load_lines(tmp_path, [json.dumps(e0), json.dumps({**e0, "image": "gone.png"})], strict=True)
    (tmp_path / "x.xyz").write_bytes(b"?")
    with pytest.raises(DataError, match=r"entry 0 \(line 1\): image .*x\.xyz has unsupported extension '\.xyz'"):
        load_lines(tmp_path, [json.dumps({**e0, "image": "x.xyz"})], strict=True)
    with pytest.raises(DataError, match=r"other\.jsonl: manifest file not found"):
        load_manifest(tmp_path / "other.jsonl")
    with pytest.raises(DataError, match=r"no usable rows \(skipped 1 of 1 rows \(missing image file\)"):
        load_lines(tmp_path, [json.dumps({**e0, "image": "gone.png"})])


def test_unreadable_image(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (tmp_path / "broken.npy").write_bytes(b"not numpy")
    good = json.dumps(entry(tmp_path))
    for name in ("broken.png", "broken.npy"):
        with pytest.raises(DataError, match=rf"m\.jsonl entry 0 \(line 1\): cannot read image .*{name}"):
            load_lines(tmp_path, [json.dumps(entry(tmp_path, image=name))], strict=True)
        ds = load_lines(tmp_path, [good, json.dumps(entry(tmp_path, image=name))])
        assert len(ds.train) == 1 and any("(unreadable image): entry 1 (line 2): cannot read image" in n
                                          and name in n for n in ds.notes)


def test_images_of_different_sizes_are_fitted_to_the_default_and_said(tmp_path):
    e1 = {"image": png(tmp_path, "big.png", np.full((8, 8), 200, np.uint8)), "label": 1, "split": "train"}
    ds = load_lines(tmp_path, [json.dumps(entry(tmp_path)), json.dumps(e1)])
    assert ds.image_shape == (1, 64, 64)
    assert any("different sizes" in n and "fitted to 64×64 (pad)" in n for n in ds.notes)
    # 8x8 fills the square; 6x5 (H x W) is padded left and right (aspect kept)
    assert (ds.train.images[1] == 200).all() and (ds.train.images[0][:, :, :2] == 0).all()
    ds = load_lines(tmp_path, [json.dumps(entry(tmp_path)), json.dumps(e1)], image_size=16)
    assert ds.image_shape == (1, 16, 16)


def test_label_type_length_and_range(tmp_path):
    e = entry(tmp_path)
    with pytest.raises(DataError, match=r"entry 1 \(line 2\): label \[0, 1\] is list but .*entry 0 .* has label 0 "
                                        r"\(int\); expected every label to be of one type"):
        load_lines(tmp_path, [json.dumps(e), json.dumps({**e, "label": [0, 1]})])
    with pytest.raises(DataError, match=r"entry 1 \(line 2\): label \[0, 1\] has 2 findings but .*entry 0 .* has 3"):
        load_lines(tmp_path, [json.dumps({**e, "label": [0, 1, 1]}), json.dumps({**e, "label": [0, 1]})])
    with pytest.raises(DataError, match=r"entry 0 \(line 1\): label \[0, 2\]; expected 0 or 1"):
        load_lines(tmp_path, [json.dumps({**e, "label": [0, 2]})])
    with pytest.raises(DataError, match=r"entry 0 \(line 1\): label 1.5; expected a class index"):
        load_lines(tmp_path, [json.dumps({**e, "label": 1.5})])
    with pytest.raises(DataError, match=r"entry 0 \(line 1\): label -1 out of range; expected a class index 0\.\.1"):
        load_lines(tmp_path, [json.dumps({**e, "label": -1})])
    path = manifest(tmp_path, [e, {**e, "label": 3}])
    with pytest.raises(DataError, match=r"manifest\.jsonl entry 1 \(line 2\): label 3 out of range; expected a class "
                                        r"index 0\.\.2 for multiclass"):
        load_manifest(ManifestParams(path=str(path), label_names=["a", "b", "c"]))
    with pytest.raises(DataError, match=r"label 3 out of range; expected a class index 0\.\.1 for binary"):
        load_manifest(ManifestParams(path=str(path), task="binary"))
    ds = load_lines(tmp_path, [json.dumps({**e, "label": "yes"}), json.dumps({**e, "label": "no"})])
    assert ds.task.label_names == ("no", "yes") and ds.train.labels.tolist() == [1, 0]  # names become classes


def test_split_site_and_text_errors(tmp_path):
    e = entry(tmp_path)
    with pytest.raises(DataError, match=r"entry 1 \(line 2\): split 'holdout'; expected one of train, val, test"):
        load_lines(tmp_path, [json.dumps(e), json.dumps({**e, "split": "holdout"})])
    no_split = {k: v for k, v in e.items() if k != "split"}
    with pytest.raises(DataError, match=r"entry 1 \(line 2\): split None; expected one of train, val, test"):
        load_lines(tmp_path, [json.dumps(e), json.dumps(no_split)])
    ds = load_lines(tmp_path, [json.dumps({**e, "text": "a"}), json.dumps(e), json.dumps({**e, "text": "b"})])
    assert ds.train.texts == ["a", "b"] and any("(empty text): entry 1 (line 2)" in n for n in ds.notes)
    with pytest.raises(DataError, match=r"entry 0 \(line 1\): site 3; expected a non-empty string"):
        load_lines(tmp_path, [json.dumps({**e, "site": 3})])
    with pytest.raises(DataError, match=r"entry 0 \(line 1\): text 3; expected a string"):
        load_lines(tmp_path, [json.dumps({**e, "text": 3})])


def test_nan_pixels(tmp_path):
    f = np.full((1, 6, 5), 0.5, np.float32)
    f[0, 2, 2] = np.nan
    npy(tmp_path, "nan.npy", f)
    with pytest.raises(DataError, match=r"m\.jsonl entry 0 \(line 1\) \(.*nan\.npy\): image 0 has NaN"):
        load_lines(tmp_path, [json.dumps(entry(tmp_path, image="nan.npy"))], strict=True)
    npy(tmp_path, "big.npy", np.full((1, 6, 5), 2.0, np.float32))
    with pytest.raises(DataError, match=r"big\.npy\): float pixels must lie in \[0, 1\]"):
        load_lines(tmp_path, [json.dumps(entry(tmp_path, image="big.npy"))], strict=True)
    npy(tmp_path, "i16.npy", np.zeros((6, 5), np.int16))
    with pytest.raises(DataError, match=r"i16\.npy has dtype int16; expected uint8 or float32"):
        load_lines(tmp_path, [json.dumps(entry(tmp_path, image="i16.npy"))], strict=True)
    ds = load_lines(tmp_path, [json.dumps(entry(tmp_path)), json.dumps(entry(tmp_path, image="nan.npy"))])
    assert len(ds.train) == 1 and any("nan.npy" in n and "NaN" in n for n in ds.notes)


def test_describe_manifest(tmp_path):
    text = describe(toy(tmp_path))
    assert "(image-text manifest, 6 entries)" in text
    assert "splits: test: 2, train: 2, val: 2" in text and "sites: A: 3, B: 3" in text
    assert "text: yes" in text and "unlabeled entries: 1" in text
    assert "labels: single-label, 2 classes; 0: 3, 1: 2" in text
    assert "image shape (first entry): (1, 6, 5), dtype uint8" in text and "example report: report 0" in text
    with pytest.raises(DataError, match=r"nothere\.jsonl: file not found"):
        describe(tmp_path / "nothere.jsonl")
