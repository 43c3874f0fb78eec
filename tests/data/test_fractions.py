"""Sparse label fractions: stratified, seeded, nested, unlabeled excluded, multilabel coverage."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medrobust.data.base import Split
from medrobust.data.fractions import label_subset, mask_labels

FRACTIONS = (0.01, 0.05, 0.1, 0.5, 1.0)


def single_labels(seed=0):
    """1,000 samples: classes 0/1/2/3 with 600/300/97/3 samples, plus 100 unlabeled mixed in."""
    y = np.repeat([0, 1, 2, 3, -1], [600, 300, 97, 3, 100])
    return np.random.default_rng(seed).permutation(y).astype(np.int64)


def multi_labels(seed=0):
    """[1100, 4] rows: frequent combinations, a rare finding (2 positives), 100 unlabeled rows."""
    rng = np.random.default_rng(seed)
    combos = np.array([[0, 0, 0, 0], [1, 0, 0, 0], [0, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0]])
    y = combos[rng.choice(len(combos), 1000, p=[0.5, 0.2, 0.15, 0.1, 0.05])]
    y[rng.choice(1000, 2, replace=False)] = [0, 0, 0, 1]  # finding 3: only two positives
    y = np.concatenate([y, -np.ones((100, 4), dtype=y.dtype)])
    return y[rng.permutation(len(y))].astype(np.int64)


@pytest.mark.parametrize("fraction", FRACTIONS)
def test_single_label_stratified(fraction):
    y = single_labels()
    idx = label_subset(y, fraction, seed=0)
    assert idx.dtype == np.int64 and np.all(np.diff(idx) > 0)  # sorted, unique
    assert (y[idx] != -1).all()
    for c, n in zip(range(4), (600, 300, 97, 3)):
        got = int((y[idx] == c).sum())
        assert got >= 1 and abs(got - fraction * n) <= 1, (c, got, fraction * n)
    if fraction == 1.0:
        np.testing.assert_array_equal(idx, np.flatnonzero(y != -1))


def test_single_label_exact_counts():
    y = single_labels()
    idx = label_subset(y, 0.1, seed=1)
    assert np.bincount(y[idx], minlength=4).tolist() == [60, 30, 10, 1]  # round(9.7) = 10, max(1, round(0.3)) = 1


@pytest.mark.parametrize("make", [single_labels, multi_labels])
def test_nested_deterministic_and_seeded(make):
    y = make()
    for seed in (0, 7):
        subsets = [set(label_subset(y, f, seed).tolist()) for f in FRACTIONS]
        assert all(a <= b for a, b in zip(subsets, subsets[1:])), "subsets must be nested across fractions"
        np.testing.assert_array_equal(label_subset(y, 0.1, seed), label_subset(y, 0.1, seed))
    assert not np.array_equal(label_subset(y, 0.1, 0), label_subset(y, 0.1, 1))


def test_unlabeled_never_selected():
    y = single_labels()
    unlabeled = set(np.flatnonzero(y == -1).tolist())
    for f in FRACTIONS:
        for seed in range(3):
            assert not unlabeled & set(label_subset(y, f, seed).tolist())
    assert label_subset(np.full(5, -1), 0.5, 0).size == 0


@pytest.mark.parametrize("fraction", (0.01, 0.1, 0.5))
def test_multilabel_coverage_and_proportions(fraction):
    y = multi_labels()
    labeled = (y != -1).all(axis=1)
    rows = y[labeled]
    combos = np.unique(rows, axis=0)
    for seed in range(3):
        idx = label_subset(y, fraction, seed)
        assert labeled[idx].all()
        assert ((y[idx] == 1).sum(axis=0) >= 1).all(), "every finding needs at least one positive"
        for combo in combos:
            n = int((rows == combo).all(axis=1).sum())
            got = int((y[idx] == combo).all(axis=1).sum())
            if combo[3] == 0:  # the 5 common combinations: fraction * n ± 1
                assert abs(got - fraction * n) <= 1, (combo, got, fraction * n)
            else:  # the rare finding (2 rows) is covered even at 1 %
                assert got >= 1
        # each of the 6 combinations within ±1, plus at most 5 covering rows (one per finding, one overall)
        assert -len(combos) <= len(idx) - fraction * labeled.sum() <= len(combos) + 5
    full = label_subset(y, 1.0, 0)
    np.testing.assert_array_equal(full, np.flatnonzero(labeled))


@pytest.mark.parametrize("bad", [0, 0.0, -0.1, 1.01, float("nan"), "0.1"])
def test_bad_fraction(bad):
    with pytest.raises(ValueError, match=rf"fraction {bad!r}"):
        label_subset(single_labels(), bad, seed=0)


def test_mask_labels_keeps_images():
    y = single_labels()
    split = Split(images=np.zeros((len(y), 1, 2, 2), np.uint8), labels=y, sites=np.zeros(len(y), np.int64))
    masked = mask_labels(split, 0.1, seed=0)
    assert len(masked) == len(split)
    np.testing.assert_array_equal(np.flatnonzero(masked.labeled), label_subset(y, 0.1, 0))
    kept = masked.labeled
    np.testing.assert_array_equal(masked.labels[kept], y[kept])


def test_real_breastmnist_fraction():
    path = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "breastmnist.npz"
    if not path.is_file():
        pytest.skip(f"{path} not present")
    from medrobust.data.medmnist import load_medmnist

    y = load_medmnist(path).train.labels  # 147 malignant, 399 normal/benign
    assert np.bincount(y[label_subset(y, 0.01, 0)]).tolist() == [1, 4]
    assert np.bincount(y[label_subset(y, 0.1, 0)]).tolist() == [15, 40]
