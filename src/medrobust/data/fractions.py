"""Sparse label fractions (1 %, 10 %, 100 % of the labels), stratified, seeded and nested.

Nested means that for one seed the subset of a smaller fraction lies inside the subset of a larger one
(1 % ⊂ 10 % ⊂ 100 %), as label-efficiency studies assume: every fraction is a prefix of one fixed, seeded
order of the labeled samples. Unlabeled samples (label ``-1``, or a row holding ``-1`` for multilabel)
are never selected.

Written by hand: scikit-learn's stratified splitters neither nest across fractions nor handle multilabel
rows; iterative stratification (Sechidis et al., 2011) does not nest either.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from medrobust.data.base import UNLABELED, Split


def _check_fraction(fraction: float) -> float:
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float, np.floating, np.integer)):
        raise ValueError(f"fraction {fraction!r} must be a number in (0, 1]")
    if not 0.0 < float(fraction) <= 1.0:  # also rejects NaN
        raise ValueError(f"fraction {fraction!r} must be in (0, 1], e.g. 0.01, 0.1 or 1.0")
    return float(fraction)


def _count(fraction: float, n: int) -> int:
    """``round(fraction * n)`` (halves up), at least 1 when ``n > 0``."""
    if fraction >= 1.0:
        return n
    return min(n, max(1, math.floor(fraction * n + 0.5))) if n else 0


def _rng(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([int(seed) % 2**64, stream])


def _single(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Per class: a seeded permutation of its samples, of which the first ``round(fraction * n_c)``."""
    chosen = [np.zeros(0, dtype=np.int64)]
    for c in np.unique(labels[labels != UNLABELED]):
        members = np.flatnonzero(labels == c)
        perm = _rng(seed, int(c)).permutation(members)
        chosen.append(perm[: _count(fraction, len(members))])
    return np.concatenate(chosen)


def _multilabel(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Rows of ``labels [N, L]`` stratified by label combination (systematic sampling), plus covering rows.

    Within each combination of ``n`` rows the members are permuted and placed at ``(j + u) / n`` with a
    seeded random offset ``u``; the rows placed below ``fraction`` are taken, so every combination gives
    ``fraction * n`` rows ±1 (rare combinations are taken with probability ``fraction * n``) and smaller
    fractions take subsets of larger ones. Added to that, for every fraction, a fixed covering set: the
    lowest-placed row and, rarest finding first, the lowest-placed positive of each finding not yet covered.
    """
    idx = np.flatnonzero((labels != UNLABELED).all(axis=1))
    rows = labels[idx]
    if len(idx) == 0 or fraction >= 1.0:
        return idx
    _, inverse = np.unique(rows, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    rng = _rng(seed, 2**32)
    position = np.empty(len(idx))
    for s in range(int(inverse.max()) + 1):
        members = rng.permutation(np.flatnonzero(inverse == s))
        position[members] = (np.arange(len(members)) + rng.random()) / len(members)
    order = np.argsort(position, kind="stable")
    cover = np.zeros(len(idx), dtype=bool)  # the same for every fraction, so subsets stay nested
    cover[order[0]] = True
    positives = (rows == 1).sum(axis=0)
    for finding in np.argsort(positives, kind="stable"):
        if positives[finding] and not (rows[cover, finding] == 1).any():
            cover[order[rows[order, finding] == 1][0]] = True
    return idx[(position < fraction) | cover]


def label_subset(labels: np.ndarray, fraction: float, seed: int, groups: np.ndarray | None = None) -> np.ndarray:
    """Indices of a stratified, seeded subset holding ``fraction`` of the labeled samples.

    With ``groups`` (patient ids), whole groups are drawn: each group is represented by its first labeled
    sample, the rule below picks ``fraction`` of the representatives, and every labeled sample of a picked group
    is taken, so no patient is split between labeled and unlabeled (subsets stay nested).

    Single-label ``[N]``: ``round(fraction * n_c)`` samples of each class ``c`` present (at least 1), the
    prefix of a seeded per-class permutation. Multilabel ``[N, L]``: ``fraction`` of every label combination
    (±1, by systematic sampling), plus at most one row per finding so that every finding with a positive has
    one, and at least one row (see :func:`_multilabel`).

    Args:
        labels: int ``[N]`` or ``[N, L]``; ``-1`` (a row holding ``-1``) marks unlabeled samples.
        fraction: in (0, 1]; 1.0 gives every labeled sample.
        seed: the same seed gives the same, nested subsets; different seeds give different ones.

    Returns:
        Sorted int64 indices into ``labels``.

    Raises:
        ValueError: for a fraction outside (0, 1], or labels of the wrong shape or values below -1.
    """
    fraction = _check_fraction(fraction)
    labels = np.asarray(labels)
    if labels.ndim not in (1, 2) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integer [N] or [N, L], got {labels.dtype} of shape {labels.shape}")
    if labels.size and labels.min() < UNLABELED:
        raise ValueError(f"labels hold {int(labels.min())}; expected class indices >= 0 or -1 for unlabeled")
    pick = _single if labels.ndim == 1 else _multilabel
    if groups is None:
        return np.sort(pick(labels, fraction, seed)).astype(np.int64)
    groups = np.asarray(groups)
    if groups.shape != labels.shape[:1]:
        raise ValueError(f"groups has shape {groups.shape}; expected one id per sample ({len(labels)})")
    labeled = np.flatnonzero(labels != UNLABELED if labels.ndim == 1 else (labels != UNLABELED).all(axis=1))
    ids, first = np.unique(groups[labeled], return_index=True)
    chosen_ids = ids[pick(labels[labeled[first]], fraction, seed)]
    return labeled[np.isin(groups[labeled], chosen_ids)].astype(np.int64)


def mask_labels(split: Split, fraction: float, seed: int) -> Split:
    """``split`` with only :func:`label_subset` labeled; every other label becomes ``-1``.

    The images stay, so self-supervised pre-training still sees all of them.
    """
    keep = label_subset(split.labels, fraction, seed, split.groups)
    labels = np.full_like(split.labels, UNLABELED)
    labels[keep] = split.labels[keep]
    return replace(split, labels=labels)


def rare_class(labels: np.ndarray, n_classes: int) -> tuple[int, float] | None:
    """The rarest class of single-label ``labels`` and its share, when that share is under half of what a
    balanced set would give it (binary: under 25 %); None when no class is that rare (or for multilabel rows)."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or not len(labels) or n_classes < 2:
        return None
    counts = np.bincount(labels[labels != UNLABELED], minlength=n_classes)
    present = np.flatnonzero(counts)
    if len(present) < 2:
        return None
    c = int(present[np.argmin(counts[present])])
    share = counts[c] / counts.sum()
    return (c, float(share)) if share < 0.5 / n_classes else None


def oversample(index: np.ndarray, labels: np.ndarray, seed: int) -> np.ndarray:
    """``index`` with every class's examples repeated up to the largest class's count (whole copies, then a seeded
    draw without replacement for the rest), so training batches see the classes about equally (class-balanced
    sampling). ``labels`` are those of ``index`` (single-label)."""
    index, labels = np.asarray(index), np.asarray(labels)
    classes, counts = np.unique(labels, return_counts=True)
    target = counts.max()
    out = []
    for c, n in zip(classes, counts):
        members = index[labels == c]
        extra = _rng(seed, 2**33 + int(c)).choice(members, target % n, replace=False) if target % n else members[:0]
        out.append(np.concatenate([np.tile(members, target // n), extra]))
    return np.concatenate(out)
