"""VICReg: variance-invariance-covariance regularisation of two views' embeddings.

Bardes, Ponce, LeCun (2022), "VICReg: Variance-Invariance-Covariance Regularization for Self-Supervised
Learning", ICLR. Encoder → 3-layer expander (BN + ReLU between layers). Loss as in the official code
(facebookresearch/vicreg ``main_vicreg.py``): ``λ·s(Z, Z') + μ·[v(Z) + v(Z')]/2 + ν·[c(Z) + c(Z')]`` — the
code halves the variance term (``std_loss = mean(relu(1 − std_x))/2 + mean(relu(1 − std_y))/2``), which the
paper's eq. 6 (``μ·[v(Z) + v(Z')]``) does not show. With (eq. 1–5)
``s = mean_{i,k} (z_ik − z'_ik)²`` (invariance; the paper's ``1/n Σ_i ‖z_i − z'_i‖²`` divided by ``d``),
``v(Z) = 1/d Σ_j max(0, γ − √(Var(z^j) + ε))`` (variance hinge, unbiased variance, γ = 1, ε = 1e-4),
``c(Z) = 1/d Σ_{i≠j} Cov(Z)_ij²`` with ``Cov(Z) = 1/(n−1) Σ_b (z_b − z̄)(z_b − z̄)ᵀ`` (covariance),
over the *global* batch (embeddings gathered with gradient, as the official code does).

CPU scale: expander 128 wide with 128 outputs (paper 8192 / 8192); λ = μ = 25, ν = 1 as in the paper.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from medrobust.data.views import ViewParams, random_view
from medrobust.engine.distributed import gather_with_grad
from medrobust.methods.contract import Encoders, MethodInfo, method_generator
from medrobust.methods.momentum import mlp
from medrobust.registry import register


def variance_term(z: torch.Tensor, gamma: float = 1.0, eps: float = 1e-4) -> torch.Tensor:
    """``v(Z) = 1/d Σ_j max(0, γ − √(Var(z^j) + ε))`` for ``z`` [N, D] (unbiased variance along the batch)."""
    return F.relu(gamma - torch.sqrt(z.var(dim=0) + eps)).mean()


def covariance_term(z: torch.Tensor) -> torch.Tensor:
    """``c(Z) = 1/d Σ_{i≠j} Cov(Z)_ij²`` for ``z`` [N, D]."""
    n, d = z.shape
    zc = z - z.mean(dim=0)
    cov = zc.t() @ zc / (n - 1)  # [D, D]
    return (cov.pow(2).sum() - torch.diagonal(cov).pow(2).sum()) / d


def vicreg_loss(z1: torch.Tensor, z2: torch.Tensor, sim_coeff: float = 25.0, std_coeff: float = 25.0,
                cov_coeff: float = 1.0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """VICReg loss of the embeddings ``z1``, ``z2`` ([N, D]); returns the total and its three terms
    (``variance`` is ``[v(z1) + v(z2)] / 2``, as the official code)."""
    parts = {"invariance": F.mse_loss(z1, z2),
             "variance": (variance_term(z1) + variance_term(z2)) / 2,  # halved, as the official code
             "covariance": covariance_term(z1) + covariance_term(z2)}
    total = sim_coeff * parts["invariance"] + std_coeff * parts["variance"] + cov_coeff * parts["covariance"]
    return total, parts


class VICRegParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sim_coeff: float = Field(25.0, ge=0, description="λ (invariance)")
    std_coeff: float = Field(25.0, ge=0, description="μ (variance)")
    cov_coeff: float = Field(1.0, ge=0, description="ν (covariance)")
    proj_dim: int = Field(128, ge=2, description="paper 8192")
    proj_hidden: int = Field(128, ge=2, description="paper 8192")
    views: ViewParams = ViewParams()


@register("method", "vicreg")
class VICReg(nn.Module):
    """VICReg pre-training of ``image_encoder``."""

    Params = VICRegParams
    info = MethodInfo("VICReg", "self-supervised", counterpart="supervised")

    def __init__(self, encoders: Encoders, params: VICRegParams | None = None, seed: int = 0):
        super().__init__()
        image_encoder = encoders.image
        self.params = p = params or VICRegParams()
        self.generator = method_generator(seed)
        self.image_encoder = image_encoder
        self.projector = mlp(image_encoder.feature_dim, p.proj_hidden, p.proj_dim, layers=3)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        x, p = batch["image"], self.params  # [N, C, *spatial] in [0, 1]
        v = torch.cat([random_view(x, p.views, self.generator), random_view(x, p.views, self.generator)])
        z1, z2 = (self.projector(f) for f in self.image_encoder.forward_features(v).chunk(2))  # [N, D] each
        loss, parts = vicreg_loss(gather_with_grad(z1), gather_with_grad(z2), p.sim_coeff, p.std_coeff, p.cov_coeff)
        return {"loss": loss, **{k: t.detach() for k, t in parts.items()}}
