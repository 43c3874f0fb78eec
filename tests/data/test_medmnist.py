"""MedMNIST .npz reader: layouts, task inference, known subsets, every error, the real shared files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydantic
import pytest

from medrobust.data.base import DataError
from medrobust.data.inspect import describe
from medrobust.data.medmnist import (KNOWN_SUBSETS, OFFICIAL_MD5, RELEASES, MedMNISTParams, check_md5,
                                     expected_md5s, file_md5, identify, load_medmnist, recognise)

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


TWO_D = {"pathmnist", "chestmnist", "dermamnist", "octmnist", "pneumoniamnist", "retinamnist", "breastmnist",
         "bloodmnist", "tissuemnist", "organamnist", "organcmnist", "organsmnist"}
THREE_D = {"organmnist3d", "nodulemnist3d", "adrenalmnist3d", "fracturemnist3d", "vesselmnist3d", "synapsemnist3d"}


def test_subset_table_is_complete():
    two_d, three_d = TWO_D, THREE_D
    assert set(KNOWN_SUBSETS) == two_d | three_d
    assert all(KNOWN_SUBSETS[k].spatial_dims == 2 for k in two_d)
    assert all(KNOWN_SUBSETS[k].spatial_dims == 3 and KNOWN_SUBSETS[k].channels == 1 for k in three_d)
    assert {KNOWN_SUBSETS[k].channels for k in ("pathmnist", "dermamnist", "retinamnist", "bloodmnist")} == {3}
    assert len(KNOWN_SUBSETS["chestmnist"].label_names) == 14 and KNOWN_SUBSETS["chestmnist"].task == "multilabel"
    assert len(KNOWN_SUBSETS["organamnist"].label_names) == 11 and KNOWN_SUBSETS["retinamnist"].task == "ordinal"
    assert KNOWN_SUBSETS["breastmnist"].md5 == "750601b1f35ba3300ea97c75c52ff8f6"
    assert KNOWN_SUBSETS["adrenalmnist3d"].md5 == "bbd3c5a5576322bc4cdfea780653b1ce"
    assert KNOWN_SUBSETS["vesselmnist3d"].md5 == "b41fd4f7e7e2feedddb201585ecafa1b"  # the v3 28-px file
    assert KNOWN_SUBSETS["breastmnist"].name == "BreastMNIST" and KNOWN_SUBSETS["octmnist"].name == "OCTMNIST"


# ---------------------------------------------------------------- official MD5s
def test_official_md5_table_covers_every_release_and_size():
    assert set(RELEASES) == {"v2.0", "v2", "v3"}
    v3_sizes = {**{s: (28, 64, 128, 224) for s in TWO_D}, **{s: (28, 64) for s in THREE_D}}
    expected_keys = {(s, z) for s, sizes in v3_sizes.items() for z in sizes}
    assert set(OFFICIAL_MD5) == expected_keys and len(OFFICIAL_MD5) == 18 + 12 * 3 + 6
    for subset in TWO_D | THREE_D:
        assert set(OFFICIAL_MD5[(subset, 28)]) >= {"v2", "v3"}
        for size in v3_sizes[subset][1:]:
            assert set(OFFICIAL_MD5[(subset, size)]) == {"v3"}  # MedMNIST+ sizes came with v3
    assert [k for k, v in OFFICIAL_MD5.items() if "v2.0" in v] == [("nodulemnist3d", 28)]
    for by_release in OFFICIAL_MD5.values():
        assert list(by_release) == [r for r in RELEASES if r in by_release]  # oldest release first
        for md5 in by_release.values():
            assert len(md5) == 32 and set(md5) <= set("0123456789abcdef")
    # v3 re-released these 28-px files; every other 28-px file is byte-identical in v2 and v3
    changed = {s for s in TWO_D | THREE_D if OFFICIAL_MD5[(s, 28)]["v2"] != OFFICIAL_MD5[(s, 28)]["v3"]}
    assert changed == {"organamnist", "organcmnist", "organsmnist", "organmnist3d", "vesselmnist3d"}
    # no MD5 belongs to two different files
    owners = {}
    for key, by_release in OFFICIAL_MD5.items():
        for md5 in by_release.values():
            assert owners.setdefault(md5, key) == key


def test_identify_and_expected_md5s():
    assert identify("750601b1f35ba3300ea97c75c52ff8f6") == ("breastmnist", 28, ("v2", "v3"))
    assert identify("742edef2a1fd1524b2efff4bd7ba9364") == ("breastmnist", 64, ("v3",))
    assert identify("BBD3C5A5576322BC4CDFEA780653B1CE ") == ("adrenalmnist3d", 28, ("v2", "v3"))
    assert identify("2ba5b80617d705141f3f85627108fce8") == ("vesselmnist3d", 28, ("v2",))
    assert identify("b41fd4f7e7e2feedddb201585ecafa1b") == ("vesselmnist3d", 28, ("v3",))
    assert identify("902d495e3d91ad1a7bcac1a6b58a8fa2") == ("nodulemnist3d", 28, ("v2.0",))
    assert identify("0" * 32) is None
    assert expected_md5s("breastmnist", 64) == {"v3": "742edef2a1fd1524b2efff4bd7ba9364"}
    assert expected_md5s("BreastMNIST") == {"v2": "750601b1f35ba3300ea97c75c52ff8f6",
                                            "v3": "750601b1f35ba3300ea97c75c52ff8f6"}
    assert expected_md5s("vesselmnist3d", 128) == {} and expected_md5s("mydata", 28) == {}
    expected_md5s("breastmnist")["v2"] = "changed"  # a copy: the table itself is untouched
    assert OFFICIAL_MD5[("breastmnist", 28)]["v2"] == "750601b1f35ba3300ea97c75c52ff8f6"


def test_check_md5_lines():
    line = check_md5("d/vesselmnist3d.npz", md5="b41fd4f7e7e2feedddb201585ecafa1b")
    assert line == ("md5 b41fd4f7e7e2feedddb201585ecafa1b matches the official VesselMNIST3D 28 px file of "
                    "MedMNIST v3 (v2 had 2ba5b80617d705141f3f85627108fce8)")
    line = check_md5("d/vesselmnist3d.npz", md5="2ba5b80617d705141f3f85627108fce8")
    assert "matches the official VesselMNIST3D 28 px file of MedMNIST v2 (v3 has b41fd4f7" in line
    line = check_md5("d/nodulemnist3d.npz", md5="8755a7e9e05a4d9ce80a24c3e7a256f3")
    assert "file of MedMNIST v2 and v3 (v2.0 had 902d495e3d91ad1a7bcac1a6b58a8fa2)" in line
    # the name says 28 px, the bytes are the official 64-px file: say which one it is
    line = check_md5("d/breastmnist.npz", md5="742edef2a1fd1524b2efff4bd7ba9364")
    assert line == ("md5 742edef2a1fd1524b2efff4bd7ba9364 matches the official BreastMNIST 64 px file "
                    "(MedMNIST v3), although the file name suggests breastmnist 28 px")
    line = check_md5("d/pathmnist_224.npz", md5="750601b1f35ba3300ea97c75c52ff8f6")
    assert "BreastMNIST 28 px file (MedMNIST v2 and v3), although the file name suggests pathmnist 224 px" in line
    assert check_md5("d/mine.npz", md5="742edef2a1fd1524b2efff4bd7ba9364").endswith("BreastMNIST 64 px file "
                                                                                     "(MedMNIST v3)")
    assert "matches no official MedMNIST file" in check_md5("d/mine.npz", md5="0" * 32)
    line = check_md5("d/vesselmnist3d_128.npz", md5="0" * 32)
    assert "matches no official MedMNIST file; MedMNIST publishes no vesselmnist3d 128 px file" in line
    line = check_md5("d/nodulemnist3d.npz", md5="0" * 32)
    assert ("differs from every official nodulemnist3d 28 px file (expected v2.0: 902d495e3d91ad1a7bcac1a6b58a8fa2; "
            "v2 and v3: 8755a7e9e05a4d9ce80a24c3e7a256f3)") in line
    with pytest.raises(DataError, match=r"nope\.npz: file not found"):
        check_md5("d/nope.npz")


def test_check_md5_on_a_modified_file_warns(tmp_path):
    path = save(tmp_path, "breastmnist_64.npz", **make_arrays())
    md5 = file_md5(path)
    line = check_md5(path)  # a warning in the line, not an exception
    assert line == (f"md5 {md5} differs from every official breastmnist 64 px file "
                    "(expected v3: 742edef2a1fd1524b2efff4bd7ba9364); the file may be modified or truncated")
    line = check_md5(save(tmp_path, "AdrenalMNIST3D.npz", **make_arrays()))
    assert "differs from every official adrenalmnist3d 28 px file (expected v2 and v3: bbd3c5a557" in line


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
    assert "train: 6 images" in text
    assert "differs from every official dermamnist 64 px file (expected v3: " in text  # a warning, not an error
    with pytest.raises(DataError, match=r"cannot describe '\.png' files; supported: \.npz"):
        describe(tmp_path / "x.png")


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
    assert "md5 750601b1f35ba3300ea97c75c52ff8f6 matches the official BreastMNIST 28 px file (MedMNIST v2 and v3)" in text
    assert "train: 546 images, labels 0 (malignant): 147, 1 (normal, benign): 399" in text


@pytest.mark.parametrize("name, line", [
    ("breastmnist.npz", "md5 750601b1f35ba3300ea97c75c52ff8f6 matches the official BreastMNIST 28 px file "
                        "(MedMNIST v2 and v3)"),
    ("breastmnist_64.npz", "md5 742edef2a1fd1524b2efff4bd7ba9364 matches the official BreastMNIST 64 px file "
                           "(MedMNIST v3)"),
    ("adrenalmnist3d.npz", "md5 bbd3c5a5576322bc4cdfea780653b1ce matches the official AdrenalMNIST3D 28 px file "
                           "(MedMNIST v2 and v3)"),
])
def test_real_files_match_their_official_md5(name, line):
    assert check_md5(_shared(name)) == line


def test_real_adrenalmnist3d():
    ds = load_medmnist(_shared("adrenalmnist3d.npz"))
    assert (len(ds.train), len(ds.val), len(ds.test)) == (1188, 98, 298)
    assert ds.image_shape == (1, 28, 28, 28) and ds.spatial_dims == 3
    assert ds.task.kind == "binary" and ds.task.label_names == ("normal", "hyperplasia")
