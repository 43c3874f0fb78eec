"""Writers: exact round trips through the MedMNIST .npz and the JSONL manifest, stored layout, atomicity."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medrobust.data.base import Dataset, DataError, Split, Task
from medrobust.data.manifest import ManifestParams, load_manifest
from medrobust.data.medmnist import MedMNISTParams, load_medmnist
from medrobust.data.writers import atomic_write, write_manifest, write_npz

SPLITS = ("train", "val", "test")


def make_dataset(image_shape=(1, 6, 5), task=Task("binary", ("no", "yes")), dtype=np.uint8, texts=False,
                 sites=("all",), unlabeled=False, seed=0):
    rng = np.random.default_rng(seed)
    splits = {}
    for split, n in zip(SPLITS, (7, 3, 4)):
        if dtype == np.uint8:
            x = rng.integers(0, 256, (n, *image_shape), dtype=np.uint8)
        else:
            x = rng.random((n, *image_shape), dtype=np.float32)
        if task.multilabel:
            y = rng.integers(0, 2, (n, task.n_outputs)).astype(np.int64)
        else:
            y = rng.integers(0, task.n_outputs, n).astype(np.int64)
        if unlabeled:
            y[1] = -1
        splits[split] = Split(images=x, labels=y, sites=rng.integers(0, len(sites), n).astype(np.int64),
                              texts=[f"{split} report {i}: ünïcode \"quoted\"" for i in range(n)] if texts else None)
    return Dataset(name="toy", task=task, site_names=sites, source="test", **splits)


def assert_same(a: Dataset, b: Dataset, texts=True, sites=True):
    for split in SPLITS:
        sa, sb = getattr(a, split), getattr(b, split)
        assert sa.images.dtype == sb.images.dtype and sa.images.shape == sb.images.shape
        np.testing.assert_array_equal(sa.images, sb.images)
        np.testing.assert_array_equal(sa.labels, sb.labels)
        if texts:
            assert sa.texts == sb.texts
        if sites:
            assert [a.site_names[i] for i in sa.sites] == [b.site_names[i] for i in sb.sites]


CASES = {
    "gray": dict(),
    "rgb": dict(image_shape=(3, 4, 6), task=Task("multiclass", ("a", "b", "c", "d"))),
    "3d": dict(image_shape=(1, 3, 4, 5)),
    "multilabel": dict(task=Task("multilabel", ("f0", "f1", "f2", "f3"))),
    "ordinal": dict(task=Task("ordinal", ("0", "1", "2", "3", "4"))),
}


@pytest.mark.parametrize("case", list(CASES))
def test_npz_round_trip(tmp_path, case):
    ds = make_dataset(**CASES[case])
    path = write_npz(ds, tmp_path / f"{case}.npz")
    back = load_medmnist(MedMNISTParams(path=str(path), task=ds.task.kind, label_names=list(ds.task.label_names)))
    assert back.task == ds.task and back.image_shape == ds.image_shape
    assert_same(ds, back, texts=False)
    raw = np.load(path)
    assert sorted(raw.files) == sorted(f"{s}_{k}" for s in SPLITS for k in ("images", "labels"))
    assert raw["train_images"].dtype == np.uint8 and raw["train_labels"].dtype == np.uint8
    expected = {"gray": (7, 6, 5), "rgb": (7, 4, 6, 3), "3d": (7, 3, 4, 5), "multilabel": (7, 6, 5),
                "ordinal": (7, 6, 5)}[case]
    assert raw["train_images"].shape == expected
    assert raw["train_labels"].shape == (7, 4 if case == "multilabel" else 1)
    assert [p.name for p in tmp_path.iterdir()] == [f"{case}.npz"]  # no temp file left


def test_npz_known_stem_and_auto_task(tmp_path):
    ds = make_dataset(task=Task("binary", ("malignant", "normal, benign")))
    back = load_medmnist(write_npz(ds, tmp_path / "breastmnist.npz"))
    assert back.task == ds.task and back.name == "breastmnist"
    assert_same(ds, back, texts=False)


def test_npz_unlabeled_kept_and_float_quantised(tmp_path):
    ds = make_dataset(unlabeled=True, task=Task("multilabel", ("a", "b")))
    ds = ds.replace(train=Split(images=ds.train.images, labels=np.where(ds.train.labels[:, :1] == -1, -1,
                                                                         ds.train.labels), sites=ds.train.sites))
    path = write_npz(ds, tmp_path / "u.npz")
    assert np.load(path)["train_labels"].dtype == np.int64
    assert_same(ds, load_medmnist(MedMNISTParams(path=str(path), task="multilabel")), texts=False)
    fl = make_dataset(dtype=np.float32)
    back = load_medmnist(write_npz(fl, tmp_path / "f.npz"))
    assert back.train.images.dtype == np.uint8
    np.testing.assert_array_equal(back.train.images, np.rint(fl.train.images * 255).astype(np.uint8))


def test_npz_rejects_layouts_it_cannot_hold(tmp_path):
    with pytest.raises(DataError, match=r"two\.npz: cannot write 'toy' images of shape \(2, 6, 5\)"):
        write_npz(make_dataset(image_shape=(2, 6, 5)), tmp_path / "two.npz")


@pytest.mark.parametrize("case", list(CASES))
def test_manifest_round_trip(tmp_path, case):
    ds = make_dataset(**CASES[case], texts=True, sites=("zeta", "alpha", "mid"), unlabeled=True)
    path = write_manifest(ds, tmp_path / "out")
    assert path == tmp_path / "out" / "manifest.jsonl"
    back = load_manifest(ManifestParams(path=str(path), label_names=list(ds.task.label_names),
                                        task=ds.task.kind))
    assert back.task == ds.task and back.site_names == ("alpha", "mid", "zeta")
    assert_same(ds, back)
    ext = "npy" if case == "3d" else "png"
    first = json.loads(path.read_text().splitlines()[0])
    assert first["image"] == f"images/train_0.{ext}" and first["split"] == "train"
    assert first["text"] == "train report 0: ünïcode \"quoted\"" and first["site"] in ds.site_names
    assert json.loads(path.read_text().splitlines()[1])["label"] is None  # sample 1 unlabeled
    files = sorted(p.name for p in (tmp_path / "out" / "images").iterdir())
    assert len(files) == 14 and all(f.endswith(ext) for f in files)
    assert not [p for p in (tmp_path / "out").rglob("*.tmp")]


def test_manifest_float_and_npy_exact(tmp_path):
    ds = make_dataset(dtype=np.float32)
    back = load_manifest(write_manifest(ds, tmp_path / "f"))
    assert back.train.images.dtype == np.float32 and (tmp_path / "f" / "images" / "val_2.npy").is_file()
    assert_same(ds, back, texts=False)
    u8 = make_dataset(image_shape=(3, 4, 4))
    back = load_manifest(write_manifest(u8, tmp_path / "n", image_format="npy"))
    assert (tmp_path / "n" / "images" / "test_0.npy").is_file()
    assert_same(u8, back, texts=False)
    assert back.train.texts is None
    with pytest.raises(DataError, match=r"image_format 'tif'; expected 'png' or 'npy'"):
        write_manifest(u8, tmp_path / "x", image_format="tif")


def test_manifest_rejects_partly_unlabeled_rows(tmp_path):
    ds = make_dataset(task=Task("multilabel", ("a", "b")))
    labels = ds.train.labels.copy()
    labels[2] = [-1, 1]
    ds = ds.replace(train=Split(images=ds.train.images, labels=labels, sites=ds.train.sites))
    with pytest.raises(DataError, match=r"toy train sample 2: multilabel row \[-1, 1\] is partly -1"):
        write_manifest(ds, tmp_path / "m")


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "data.bin"
    atomic_write(target, lambda f: f.write(b"old"))

    def boom(f):
        f.write(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(target, boom)
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["data.bin"]
    atomic_write(target, lambda f: f.write(b"new"))
    assert target.read_bytes() == b"new"
