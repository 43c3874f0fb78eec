"""Data-set metrics (accuracy, AUC) for every task kind; per-example correctness (``per_example_accuracy``)
is defined in :mod:`medrobust.task` and re-exported here.

AUC follows the MedMNIST v2 evaluator (Yang et al. 2023) so numbers compare with its tables: binary,
the score of class 1; multiclass/ordinal, the mean one-vs-rest AUC over classes; multilabel, the mean
AUC over findings. Accuracy for multilabel is the mean per-finding accuracy at threshold 0.5.
"""

from __future__ import annotations

import numpy as np
import torch

from medrobust.task import Task, per_example_accuracy  # noqa: F401 - re-exported: defined in task.py


def scores(logits: torch.Tensor, task: Task) -> np.ndarray:
    """Probabilities used for AUC: ``[N, K]`` sigmoid (multilabel) or softmax."""
    probs = torch.sigmoid(logits) if task.multilabel else torch.softmax(logits, dim=1)
    return probs.detach().cpu().numpy()


def auc(probs: np.ndarray, labels: np.ndarray, task: Task) -> float:
    """MedMNIST-style AUC; NaN when a needed class is missing from ``labels`` (reported, not hidden)."""
    from sklearn.metrics import roc_auc_score

    labels = np.asarray(labels)
    columns = []
    if task.kind == "binary":
        columns = [(labels, probs[:, 1])]
    elif task.multilabel:
        columns = [(labels[:, k], probs[:, k]) for k in range(labels.shape[1])]
    else:
        columns = [((labels == k).astype(int), probs[:, k]) for k in range(probs.shape[1])]
    values = [roc_auc_score(y, s) for y, s in columns if 0 < np.sum(y) < len(y)]
    return float(np.mean(values)) if len(values) == len(columns) else float("nan")
