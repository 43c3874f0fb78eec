"""The in-memory data set every source produces and every other part consumes.

Images cross module boundaries as ``[N, C, *spatial]`` arrays: ``uint8`` (0..255) or ``float32`` in
``[0, 1]``; :func:`to_unit` turns a batch into float in ``[0, 1]`` (the one pixel space of the project).
``spatial_dims`` is 2 (``[N, C, H, W]``) or 3 (``[N, C, D, H, W]``).

Labels: single-label tasks (binary, multiclass, ordinal) hold ``int64 [N]`` class indices; multilabel
tasks hold ``int64 [N, L]`` in {0, 1}. ``-1`` (the whole row for multilabel) marks an unlabeled sample,
usable by self-supervised pre-training only.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Sequence

import numpy as np

from medrobust.task import DataError, Task, TaskKind  # noqa: F401 - re-exported: the one definition is in task.py

UNLABELED = -1


@dataclass(frozen=True)
class Split:
    """One split (train, val or test) of a data set; all fields have the same length ``N``.

    Attributes:
        images: ``[N, C, *spatial]`` uint8 or float32 in [0, 1].
        labels: ``int64 [N]`` or ``int64 [N, L]`` (multilabel); ``-1`` marks unlabeled samples.
        sites: ``int64 [N]``, index into ``Dataset.site_names``.
        texts: one report per image, or ``None`` when the source has no text. A report is written after the
            image is read (it states the findings): for pre-training and retrieval, never a classifier's input.
        indications: one indication / clinical history per image (the request, written before the image is
            read), or ``None``: the only text a downstream classifier sees at decision time.
        extras: optional per-sample arrays (leading dimension ``N``), e.g. finding attributes.
        groups: ``int64 [N]`` group (patient) ids, or ``None`` when every image is its own group. Images of one
            group are never split apart: not across train/val/test, not across labeled/unlabeled.
    """

    images: np.ndarray
    labels: np.ndarray
    sites: np.ndarray
    texts: list[str] | None = None
    extras: dict[str, np.ndarray] = field(default_factory=dict)
    indications: list[str] | None = None
    groups: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.images)
        if self.images.dtype not in (np.uint8, np.float32):
            raise DataError(f"images must be uint8 or float32, got {self.images.dtype}")
        if self.images.ndim not in (4, 5):
            raise DataError(f"images must be [N, C, H, W] or [N, C, D, H, W], got shape {self.images.shape}")
        checks = {"labels": len(self.labels), "sites": len(self.sites)}
        if self.texts is not None:
            checks["texts"] = len(self.texts)
        if self.indications is not None:
            checks["indications"] = len(self.indications)
        if self.groups is not None:
            checks["groups"] = len(self.groups)
        checks.update({f"extras[{k!r}]": len(v) for k, v in self.extras.items()})
        for name, length in checks.items():
            if length != n:
                raise DataError(f"{name} has {length} entries but there are {n} images")
        if self.labels.dtype != np.int64:
            raise DataError(f"labels must be int64, got {self.labels.dtype}")

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, index: np.ndarray | Sequence[int]) -> "Split":
        """The samples at ``index`` (an int array or a boolean mask), in that order."""
        index = np.asarray(index)
        if index.dtype == bool:
            index = np.flatnonzero(index)
        return Split(
            images=self.images[index],
            labels=self.labels[index],
            sites=self.sites[index],
            texts=None if self.texts is None else [self.texts[i] for i in index],
            extras={k: v[index] for k, v in self.extras.items()},
            indications=None if self.indications is None else [self.indications[i] for i in index],
            groups=None if self.groups is None else self.groups[index],
        )

    @staticmethod
    def concat(splits: Sequence["Split"]) -> "Split":
        """The samples of ``splits`` one after another (texts / indications kept when every split has them;
        the extras every split has)."""
        def text(name):
            parts = [getattr(s, name) for s in splits]
            return None if any(p is None for p in parts) else [t for p in parts for t in p]
        keys = set.intersection(*(set(s.extras) for s in splits)) if splits else set()
        return Split(images=np.concatenate([s.images for s in splits]), labels=np.concatenate([s.labels for s in splits]),
                     sites=np.concatenate([s.sites for s in splits]), texts=text("texts"),
                     extras={k: np.concatenate([s.extras[k] for s in splits]) for k in sorted(keys)},
                     indications=text("indications"), groups=_concat_groups(splits))

    @property
    def labeled(self) -> np.ndarray:
        """Boolean ``[N]`` mask of samples that carry a label."""
        if self.labels.ndim == 1:
            return self.labels != UNLABELED
        return (self.labels != UNLABELED).all(axis=1)


def _concat_groups(splits: Sequence[Split]) -> np.ndarray | None:
    """Group ids of the concatenation: kept when any split has them; a split without them gets fresh ids
    (one per image) above every other id."""
    if all(s.groups is None for s in splits):
        return None
    top = max((int(s.groups.max()) + 1 for s in splits if s.groups is not None and len(s.groups)), default=0)
    parts = []
    for s in splits:
        if s.groups is None:
            parts.append(np.arange(top, top + len(s), dtype=np.int64))
            top += len(s)
        else:
            parts.append(np.asarray(s.groups, dtype=np.int64))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


@dataclass(frozen=True)
class Dataset:
    """A whole data set: task, splits, sites and where it came from."""

    name: str
    task: Task
    train: Split
    val: Split
    test: Split
    site_names: tuple[str, ...] = ("all",)
    source: str = ""  # file or generator it came from, for messages and the report
    notes: tuple[str, ...] = ()  # what reading did that a user should know (rows skipped, images resized)
    modality: str | None = None  # e.g. "X-ray", "CT", "MRI", "ultrasound": picks modality-specific corruptions
    context_name: str = "indication"  # what the text a classifier sees with the image is ("question" for VQA)
    group_name: str = "patients"  # what Split.groups are ("images" for VQA: an image's questions stay together)

    def __post_init__(self) -> None:
        shapes = {s: getattr(self, s).images.shape[1:] for s in ("train", "val", "test") if len(getattr(self, s))}
        if len(set(shapes.values())) > 1:
            raise DataError(f"{self.source or self.name}: splits have different image shapes {shapes}")

    @property
    def image_shape(self) -> tuple[int, ...]:
        """``(C, *spatial)`` of one image."""
        return tuple(self.train.images.shape[1:])

    @property
    def channels(self) -> int:
        return self.image_shape[0]

    @property
    def spatial_dims(self) -> int:
        return len(self.image_shape) - 1

    @property
    def has_text(self) -> bool:
        return self.train.texts is not None

    @property
    def has_indications(self) -> bool:
        """Whether every image has an indication (the text a classifier may see at decision time)."""
        return self.train.indications is not None

    def replace(self, **changes) -> "Dataset":
        return replace(self, **changes)


def to_unit(images) -> "torch.Tensor":  # noqa: F821 - torch imported lazily
    """A batch of uint8 or float images (numpy or torch) as a float32 torch tensor in [0, 1]."""
    import torch

    x = torch.as_tensor(images)
    if x.dtype == torch.uint8:
        return x.float().div_(255.0)
    return x.float()


def check_images(images: np.ndarray, where: str) -> None:
    """Reject NaN/inf or out-of-range float pixels, naming ``where`` they came from."""
    if images.dtype == np.float32:
        bad = ~np.isfinite(images)
        if bad.any():
            i = int(np.argwhere(bad)[0][0])
            raise DataError(f"{where}: image {i} has NaN or infinite pixels; expected finite values in [0, 1]")
        lo, hi = float(images.min(initial=0.0)), float(images.max(initial=0.0))
        if lo < 0.0 or hi > 1.0:
            raise DataError(f"{where}: float pixels must lie in [0, 1], found range [{lo:.4g}, {hi:.4g}]")
