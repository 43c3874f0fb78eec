"""Barlow Twins: redundancy reduction — the cross-correlation of two views' embeddings is driven to identity.

Zbontar, Jing, Misra, LeCun, Deny (2021), "Barlow Twins: Self-Supervised Learning via Redundancy
Reduction", ICML. Encoder → 3-layer projector (BN + ReLU between layers). Loss (eq. 1–2):
``L = Σ_i (1 − C_ii)² + λ Σ_i Σ_{j≠i} C_ij²`` with ``C_ij = Σ_b z^A_{b,i} z^B_{b,j} /
(√Σ_b (z^A_{b,i})² · √Σ_b (z^B_{b,j})²)`` over batch-centred embeddings of the *global* batch (gathered
with gradient across ranks, as the paper's all-reduce of ``C`` does).

CPU scale: projector 128 wide with 128 outputs (paper 8192 / 8192); λ = 0.0051 as in the paper.
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from medrobust.data.views import ViewParams, random_view
from medrobust.engine.distributed import gather_with_grad
from medrobust.methods.contract import Encoders, MethodInfo, method_generator
from medrobust.methods.momentum import mlp
from medrobust.registry import register


def cross_correlation(z1: torch.Tensor, z2: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """``C`` ([D, D]) of eq. 2: cosine along the batch between dimension i of ``z1`` and j of ``z2`` ([N, D])."""
    a, b = z1 - z1.mean(dim=0), z2 - z2.mean(dim=0)  # [N, D] centred along the batch
    a = a / (a.pow(2).sum(dim=0).sqrt() + eps)
    b = b / (b.pow(2).sum(dim=0).sqrt() + eps)
    return a.t() @ b


def barlow_twins_loss(z1: torch.Tensor, z2: torch.Tensor, lambd: float) -> torch.Tensor:
    """``Σ_i (1 − C_ii)² + λ Σ_{i≠j} C_ij²`` for the embeddings ``z1``, ``z2`` ([N, D]) of the two views."""
    c = cross_correlation(z1, z2)  # [D, D]
    on_diag = (torch.diagonal(c) - 1).pow(2).sum()
    off_diag = c.pow(2).sum() - torch.diagonal(c).pow(2).sum()
    return on_diag + lambd * off_diag


class BarlowTwinsParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    lambd: float = Field(0.0051, ge=0, description="weight λ of the redundancy (off-diagonal) term")
    proj_dim: int = Field(128, ge=2, description="paper 8192")
    proj_hidden: int = Field(128, ge=2, description="paper 8192")
    views: ViewParams = ViewParams()


@register("method", "barlow-twins")
class BarlowTwins(nn.Module):
    """Barlow Twins pre-training of ``image_encoder``."""

    Params = BarlowTwinsParams
    info = MethodInfo("Barlow Twins", "self-supervised", counterpart="supervised")

    def __init__(self, encoders: Encoders, params: BarlowTwinsParams | None = None, seed: int = 0):
        super().__init__()
        image_encoder = encoders.image
        self.params = p = params or BarlowTwinsParams()
        self.generator = method_generator(seed)
        self.image_encoder = image_encoder
        self.projector = mlp(image_encoder.feature_dim, p.proj_hidden, p.proj_dim, layers=3)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        x = batch["image"]  # [N, C, *spatial] in [0, 1]
        v = torch.cat([random_view(x, self.params.views, self.generator),
                       random_view(x, self.params.views, self.generator)])  # [2N, ...]
        z1, z2 = (self.projector(f) for f in self.image_encoder.forward_features(v).chunk(2))  # [N, D] each
        return {"loss": barlow_twins_loss(gather_with_grad(z1), gather_with_grad(z2), self.params.lambd)}
