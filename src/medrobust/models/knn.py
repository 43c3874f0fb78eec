"""A weighted k-nearest-neighbour classifier on frozen features: the kNN probe of self-supervised learning.

Wu et al. (2018), "Unsupervised Feature Learning via Non-Parametric Instance Discrimination", CVPR, and the
DINO protocol (Caron et al. 2021): cosine similarity to the labeled bank, the ``k`` most similar vote with
weight ``exp(s / τ)``. Scores are differentiable in the query features (the top-k selection is piecewise
constant), so the same attacks evaluate it as any other classifier.
"""

from __future__ import annotations

import torch
from torch import nn

from medrobust.data.base import Task

EPS = 1e-6


class KNNClassifier(nn.Module):
    """``forward(image) -> [N, n_outputs]`` logits from the votes of the ``k`` nearest labeled images."""

    uses_text = False
    randomized = False
    non_differentiable = False
    text_encoder = None

    def __init__(self, image_encoder: nn.Module, bank_images: torch.Tensor, bank_labels: torch.Tensor, task: Task,
                 k: int = 20, temperature: float = 0.07, batch_size: int = 256):
        super().__init__()
        if k < 1 or temperature <= 0:
            raise ValueError(f"knn: k must be >= 1 and temperature > 0, got k={k}, temperature={temperature}")
        if len(bank_images) != len(bank_labels) or len(bank_images) == 0:
            raise ValueError(f"knn: {len(bank_images)} bank images but {len(bank_labels)} labels")
        self.image_encoder, self.task = image_encoder.eval().requires_grad_(False), task
        self.k, self.temperature = min(k, len(bank_images)), temperature
        with torch.no_grad():
            feats = torch.cat([self._embed(bank_images[s : s + batch_size]) for s in range(0, len(bank_images), batch_size)])
        self.register_buffer("bank", feats)  # [M, D] unit vectors
        labels = bank_labels.float() if task.multilabel else nn.functional.one_hot(bank_labels.long(), task.n_outputs).float()
        self.register_buffer("votes", labels)  # [M, K]: one-hot classes or per-finding 0/1

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.image_encoder.forward_features(x), dim=-1)

    def forward(self, image: torch.Tensor, tokens=None, **_kw) -> torch.Tensor:
        sim = self._embed(image) @ self.bank.T  # [N, M]
        top, idx = sim.topk(self.k, dim=1)  # [N, k]
        w = torch.softmax(top / self.temperature, dim=1)  # [N, k], sums to 1
        p = (w.unsqueeze(-1) * self.votes[idx]).sum(1)  # [N, K]: weighted class (or positive) frequency
        if self.task.multilabel:
            return torch.log(p + EPS) - torch.log(1 - p + EPS)  # per-finding log-odds
        return torch.log(p + EPS)

    def freeze_encoders(self) -> None:
        """Nothing trains in a kNN probe."""
