"""MedMNIST .npz reader: layouts, task inference, known subsets, every error, the real shared files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydantic
import pytest

from medrobust.data.base import DataError
from medrobust.data.inspect import describe
from medrobust.data.medmnist import KNOWN_SUBSETS, MedMNISTParams, load_medmnist, recognise

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
SIZES = {"train": 6, "val": 3, "test": 4}


def make_arrays(image_shape=(5, 7), n_labels=1, classes=2, seed=0):
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in SIZES.items():
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, *image_shape), dtype=np.uint8)
        arrays[f"{split}_labels"] = rng.integers(0, classes, (n, n_labels), dtype=np.uint8)
    return arrays


def save(tmp_path, name="toy.npz", **arrays):
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


def test_gray_2d_unknown_stem(tmp_path):
    arrays = make_arrays()
    arrays["train_labels"][:2, 0] = [0, 1]  # both classes present
    path = save(tmp_path, **arrays)
    ds = load_medmnist(MedMNISTParams(path=str(path)))
    assert ds.name == "toy" and ds.source == str(path)
    assert ds.task.kind == "binary" and ds.task.label_names == ("class_0", "class_1")
    assert ds.site_names == ("all",) and ds.image_shape == (1, 5, 7) and ds.spatial_dims == 2
    for split, n in SIZES.items():
        s = getattr(ds, split)
        assert s.images.shape == (n, 1, 5, 7) and s.images.dtype == np.uint8
        np.testing.assert_array_equal(s.images[:, 0], arrays[f"{split}_images"])
        assert s.labels.shape == (n,) and s.labels.dtype == np.int64
        np.testing.assert_array_equal(s.labels, arrays[f"{split}_labels"][:, 0])
        np.testing.assert_array_equal(s.sites, np.zeros(n))
        assert s.texts is None


def test_rgb_2d_channels_first(tmp_path):
    arrays = make_arrays(image_shape=(4, 6, 3), classes=5)
    ds = load_medmnist(save(tmp_path, **arrays))
    assert ds.image_shape == (3, 4, 6) and ds.task.kind in ("multiclass", "binary")
    raw = arrays["train_images"]
    assert ds.train.images[2, 1, 3, 5] == raw[2, 3, 5, 1]
    np.testing.assert_array_equal(ds.train.images.transpose(0, 2, 3, 1), raw)


def test_3d_volumes(tmp_path):
    arrays = make_arrays(image_shape=(4, 5, 6))
    ds = load_medmnist(save(tmp_path, **arrays))
    assert ds.image_shape == (1, 4, 5, 6) and ds.spatial_dims == 3
    np.testing.assert_array_equal(ds.test.images[:, 0], arrays["test_images"])


def test_multilabel_and_multiclass_inferred(tmp_path):
    ml = load_medmnist(save(tmp_path, "ml.npz", **make_arrays(n_labels=5)))
    assert ml.task.kind == "multilabel" and ml.task.label_names == tuple(f"class_{i}" for i in range(5))
    assert ml.train.labels.shape == (6, 5) and ml.train.labels.dtype == np.int64
    arrays = make_arrays(classes=4)
    arrays["val_labels"][0, 0] = 3
    mc = load_medmnist(save(tmp_path, "mc.npz", **arrays))
    assert mc.task.kind == "multiclass" and mc.task.n_outputs == 4


def test_known_stems_give_official_task_and_names(tmp_path):
    chest = load_medmnist(save(tmp_path, "ChestMNIST_64.npz", **make_arrays(n_labels=14)))
    assert chest.name == "ChestMNIST_64" and chest.task.kind == "multilabel"
    assert chest.task.label_names[0] == "atelectasis" and chest.task.label_names[-1] == "hernia"
    retina = load_medmnist(save(tmp_path, "retinamnist_224.npz", **make_arrays(image_shape=(3, 3, 3), classes=5)))
    assert retina.task.kind == "ordinal" and retina.task.n_outputs == 5 and retina.channels == 3
    assert recognise("x/breastmnist_128.npz") == ("breastmnist", 128)
    assert recognise("pathmnist.npz") == ("pathmnist", None)
    assert recognise("mydata.npz") == (None, None)


def test_subset_table_is_complete():
    two_d = {"pathmnist", "chestmnist", "dermamnist", "octmnist", "pneumoniamnist", "retinamnist", "breastmnist",
             "bloodmnist", "tissuemnist", "organamnist", "organcmnist", "organsmnist"}
    three_d = {"organmnist3d", "nodulemnist3d", "adrenalmnist3d", "fracturemnist3d", "vesselmnist3d",
               "synapsemnist3d"}
    assert set(KNOWN_SUBSETS) == two_d | three_d
    assert all(KNOWN_SUBSETS[k].spatial_dims == 2 for k in two_d)
    assert all(KNOWN_SUBSETS[k].spatial_dims == 3 and KNOWN_SUBSETS[k].channels == 1 for k in three_d)
    assert {KNOWN_SUBSETS[k].channels for k in ("pathmnist", "dermamnist", "retinamnist", "bloodmnist")} == {3}
    assert len(KNOWN_SUBSETS["chestmnist"].label_names) == 14 and KNOWN_SUBSETS["chestmnist"].task == "multilabel"
    assert len(KNOWN_SUBSETS["organamnist"].label_names) == 11 and KNOWN_SUBSETS["retinamnist"].task == "ordinal"
    assert KNOWN_SUBSETS["breastmnist"].md5 == "750601b1f35ba3300ea97c75c52ff8f6"
    assert KNOWN_SUBSETS["adrenalmnist3d"].md5 == "bbd3c5a5576322bc4cdfea780653b1ce"


def test_params_override_and_registry(tmp_path):
    path = save(tmp_path, **make_arrays())
    ds = load_medmnist(MedMNISTParams(path=str(path), task="ordinal", label_names=["lo", "mid", "hi"]))
    assert ds.task.kind == "ordinal" and ds.task.label_names == ("lo", "mid", "hi")
    assert load_medmnist.registry_name == "medmnist" and load_medmnist.Params is MedMNISTParams  # @register ran
    with pytest.raises(pydantic.ValidationError, match="pth"):
        MedMNISTParams(path=str(path), pth="x")


# ---------------------------------------------------------------- errors
def test_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"nope\.npz: file not found"):
        load_medmnist(tmp_path / "nope.npz")


@pytest.mark.parametrize("cut", [0.5, 0.95])
def test_truncated_npz(tmp_path, cut):
    good = save(tmp_path, "good.npz", **make_arrays())
    data = good.read_bytes()
    bad = tmp_path / "bad.npz"
    bad.write_bytes(data[: int(len(data) * cut)])
    with pytest.raises(DataError, match=r"bad\.npz: not a valid \.npz archive"):
        load_medmnist(bad)


def test_garbage_and_npy_files(tmp_path):
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"hello, not a zip file at all")
    with pytest.raises(DataError, match=r"junk\.npz: not a valid \.npz"):
        load_medmnist(junk)
    npy = tmp_path / "single.npz"
    with open(npy, "wb") as f:
        np.save(f, np.zeros(3))
    with pytest.raises(DataError, match=r"single\.npz: holds a single \.npy array"):
        load_medmnist(npy)


def test_missing_keys_listed(tmp_path):
    arrays = make_arrays()
    del arrays["val_labels"], arrays["test_images"]
    with pytest.raises(DataError, match=r"toy\.npz: missing keys val_labels, test_images; a MedMNIST .npz holds "
                                        r"train_images"):
        load_medmnist(save(tmp_path, **arrays))


def test_non_uint8_images(tmp_path):
    arrays = make_arrays()
    arrays["val_images"] = arrays["val_images"].astype(np.float32)
    with pytest.raises(DataError, match=r"toy\.npz key 'val_images': images have dtype float32; expected uint8"):
        load_medmnist(save(tmp_path, **arrays))


@pytest.mark.parametrize("shape", [(6, 28), (6, 2, 3, 4, 5)])
def test_wrong_image_ndim(tmp_path, shape):
    arrays = make_arrays()
    arrays["train_images"] = np.zeros(shape, dtype=np.uint8)
    with pytest.raises(DataError, match=rf"toy\.npz key 'train_images': images have {len(shape)} dimensions.*"
                                        r"expected \[N, H, W\]"):
        load_medmnist(save(tmp_path, **arrays))


def test_label_count_mismatch(tmp_path):
    arrays = make_arrays()
    arrays["test_labels"] = arrays["test_labels"][:3]
    with pytest.raises(DataError, match=r"toy\.npz key 'test_labels': test split has 3 labels but 4 images"):
        load_medmnist(save(tmp_path, **arrays))


def test_label_values_out_of_range(tmp_path):
    arrays = make_arrays()
    arrays["val_labels"][1, 0] = 2  # breastmnist is binary
    with pytest.raises(DataError, match=r"breastmnist\.npz key 'val_labels': sample 1 has label 2; expected class "
                                        r"indices 0\.\.1 for binary"):
        load_medmnist(save(tmp_path, "breastmnist.npz", **arrays))
    arrays["val_labels"][1, 0] = 3
    with pytest.raises(DataError, match=r"toy\.npz key 'val_labels': sample 1 has label 3; expected class "
                                        r"indices 0\.\.1 for binary"):
        load_medmnist(MedMNISTParams(path=str(save(tmp_path, **arrays)), task="binary"))
    ml = make_arrays(n_labels=3)
    ml["train_labels"][4] = [0, 3, 1]
    with pytest.raises(DataError, match=r"key 'train_labels': sample 4 has label \[0, 3, 1\]; expected 0 or 1"):
        load_medmnist(save(tmp_path, "ml.npz", **ml))


def test_label_width_and_names_mismatch(tmp_path):
    with pytest.raises(DataError, match=r"chestmnist\.npz: labels have 3 columns but subset 'chestmnist' has 14"):
        load_medmnist(save(tmp_path, "chestmnist.npz", **make_arrays(n_labels=3)))
    with pytest.raises(DataError, match=r"labels have 3 columns \(multilabel\) but task is 'binary'"):
        load_medmnist(MedMNISTParams(path=str(save(tmp_path, "m.npz", **make_arrays(n_labels=3))), task="binary"))
    with pytest.raises(DataError, match=r"float32; expected integers"):
        arrays = make_arrays()
        arrays["train_labels"] = arrays["train_labels"].astype(np.float32)
        load_medmnist(save(tmp_path, "f.npz", **arrays))


def test_splits_with_different_shapes(tmp_path):
    arrays = make_arrays()
    arrays["test_images"] = np.zeros((4, 5, 8), dtype=np.uint8)
    with pytest.raises(DataError, match=r"toy\.npz: splits have different image shapes .*'test': \(1, 5, 8\)"):
        load_medmnist(save(tmp_path, **arrays))


def test_describe_npz(tmp_path):
    text = describe(save(tmp_path, "dermamnist_64.npz", **make_arrays(image_shape=(4, 4, 3), classes=7)))
    assert "train_images: shape (6, 4, 4, 3), dtype uint8" in text
    assert "subset: dermamnist (64 px), 2D, 3 channel(s), task multiclass" in text
    assert "train: 6 images" in text and "md5" not in text  # no official MD5 for the 64-px file here
    with pytest.raises(DataError, match=r"cannot describe '\.csv' files; supported: \.npz"):
        describe(tmp_path / "x.csv")


# ---------------------------------------------------------------- the real shared files
def _shared(name: str) -> Path:
    path = SHARED / name
    if not path.is_file():
        pytest.skip(f"{path} not present")
    return path


def test_real_breastmnist():
    ds = load_medmnist(_shared("breastmnist.npz"))
    assert (len(ds.train), len(ds.val), len(ds.test)) == (546, 78, 156)
    assert ds.image_shape == (1, 28, 28) and ds.train.images.dtype == np.uint8
    assert ds.task.kind == "binary" and ds.task.label_names == ("malignant", "normal, benign")
    assert np.bincount(ds.train.labels).tolist() == [147, 399]
    text = describe(_shared("breastmnist.npz"))
    assert "750601b1f35ba3300ea97c75c52ff8f6 (matches the official file)" in text
    assert "train: 546 images, labels 0 (malignant): 147, 1 (normal, benign): 399" in text


def test_real_adrenalmnist3d():
    ds = load_medmnist(_shared("adrenalmnist3d.npz"))
    assert (len(ds.train), len(ds.val), len(ds.test)) == (1188, 98, 298)
    assert ds.image_shape == (1, 28, 28, 28) and ds.spatial_dims == 3
    assert ds.task.kind == "binary" and ds.task.label_names == ("normal", "hyperplasia")
