"""What is predicted, and the task math every layer shares: the loss and per-example correctness.

The ground floor of the package: it imports nothing from ``medrobust`` (torch only), so data sources,
methods, attacks and the evaluation can all use one definition without importing each other.

- :class:`Task`: the task kind and its label names.
- :func:`task_loss`: cross-entropy (single-label) or binary cross-entropy per finding (multilabel).
- :func:`per_example_accuracy`: correctness per example (fraction of correct findings for multilabel).

Labels: single-label tasks (binary, multiclass, ordinal) use ``int64 [N]`` class indices; multilabel
tasks ``int64 [N, L]`` in {0, 1}; logits are ``[N, K]`` with ``K = task.n_outputs``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

TaskKind = Literal["binary", "multiclass", "multilabel", "ordinal"]


class DataError(ValueError):
    """Bad input data: the message names the file (or source), the key or value, and what was expected.

    Defined here because a bad :class:`Task` is bad input data too; :mod:`medrobust.data.base` re-exports it.
    """


@dataclass(frozen=True)
class Task:
    """What is predicted. ``label_names`` are the class names (single-label) or the finding names (multilabel)."""

    kind: TaskKind
    label_names: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.kind not in ("binary", "multiclass", "multilabel", "ordinal"):
            raise DataError(f"task kind {self.kind!r} is not one of binary, multiclass, multilabel, ordinal")
        if len(self.label_names) < (1 if self.kind == "multilabel" else 2):
            raise DataError(f"task {self.kind!r} needs more label names, got {self.label_names!r}")
        if self.kind == "binary" and len(self.label_names) != 2:
            raise DataError(f"a binary task has 2 classes, got {len(self.label_names)}: {self.label_names!r}")

    @property
    def n_outputs(self) -> int:
        """Number of logits a classifier for this task produces."""
        return len(self.label_names)

    @property
    def multilabel(self) -> bool:
        return self.kind == "multilabel"


def task_loss(logits: torch.Tensor, labels: torch.Tensor, task: Task, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy for single-label tasks, binary cross-entropy per finding for multilabel.

    Args:
        logits: ``[N, K]``.
        labels: ``int64 [N]`` class indices, or ``[N, K]`` in {0, 1} for multilabel.
        reduction: ``"mean"`` or ``"none"`` (per-example ``[N]``; multilabel sums over findings).
    """
    if task.multilabel:
        per = F.binary_cross_entropy_with_logits(logits, labels.float(), reduction="none").sum(dim=1)  # [N]
    else:
        per = F.cross_entropy(logits, labels, reduction="none")  # [N]
    return per.mean() if reduction == "mean" else per


def per_example_accuracy(logits: torch.Tensor, labels: torch.Tensor, task: Task) -> torch.Tensor:
    """``[N]`` float in [0, 1]: 1/0 for single-label; fraction of correct findings for multilabel."""
    if task.multilabel:
        return ((logits > 0).long() == labels).float().mean(dim=1)
    return (logits.argmax(dim=1) == labels).float()


def balanced_accuracy(logits: torch.Tensor, labels: torch.Tensor, task: Task) -> float:
    """Mean per-class recall (single-label; classes absent from ``labels`` are skipped); multilabel: the mean over
    findings of (sensitivity + specificity) / 2, each over the examples where it is defined. 1 − this is the error
    of MedMNIST-C's corruption error."""
    if task.multilabel:
        pred, y = (logits > 0).long(), labels.long()
        parts = []
        for j in range(y.shape[1]):
            for v in (0, 1):
                m = y[:, j] == v
                if m.any():
                    parts.append((pred[m, j] == v).float().mean())
        return float(torch.stack(parts).mean()) if parts else float("nan")
    pred = logits.argmax(dim=1)
    recalls = [(pred[labels == c] == c).float().mean() for c in labels.unique()]
    return float(torch.stack(recalls).mean()) if recalls else float("nan")
