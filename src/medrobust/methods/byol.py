"""BYOL: bootstrap your own latent — an online network predicts a slow-moving target network's projection.

Grill, Strub, Altché, Tallec, Richemond, Buchatskaya, Doersch, Pires, Guo, Azar, Piot, Kavukcuoglu, Munos,
Valko (2020), "Bootstrap Your Own Latent: A New Approach to Self-Supervised Learning", NeurIPS.
Online: encoder → projector → predictor; target: EMA copy of encoder → projector (no predictor, no gradient).
Loss (eq. 2): ``‖p̄ − z̄'‖² = 2 − 2·cos(p, z')``, symmetrised over the two views (eq. 3–4).

CPU scale: heads 128 wide with 64 outputs (paper 4096 / 256); constant target momentum 0.99 (paper
τ_base = 0.996 raised to 1 by a cosine schedule over ~300k steps; our budgets are ~150 steps).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from medrobust.data.views import ViewParams, random_view
from medrobust.methods.contract import Encoders, MethodInfo, method_generator
from medrobust.methods.momentum import ema_update, frozen_copy, mlp
from medrobust.registry import register


def byol_loss(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Normalised MSE of BYOL (eq. 2): ``mean_i ‖p_i/‖p_i‖ − z_i/‖z_i‖‖² = mean_i (2 − 2·cos(p_i, z_i))``.

    Args:
        p: ``[N, D]`` online predictions.
        z: ``[N, D]`` target projections (treated as constants).
    """
    return (2 - 2 * F.cosine_similarity(p, z.detach(), dim=1)).mean()


class BYOLParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    momentum: float = Field(0.99, ge=0, le=1, description="target EMA τ (constant; see module docstring)")
    proj_dim: int = Field(64, ge=2, description="paper 256")
    proj_hidden: int = Field(128, ge=2, description="paper 4096")
    views: ViewParams = ViewParams()


@register("method", "byol")
class BYOL(nn.Module):
    """BYOL pre-training of ``image_encoder`` (the online encoder, the one the study keeps)."""

    Params = BYOLParams
    info = MethodInfo("BYOL", "self-supervised", counterpart="supervised")

    def __init__(self, encoders: Encoders, params: BYOLParams | None = None, seed: int = 0):
        super().__init__()
        image_encoder = encoders.image
        self.params = p = params or BYOLParams()
        self.generator = method_generator(seed)
        self.image_encoder = image_encoder
        self.projector = mlp(image_encoder.feature_dim, p.proj_hidden, p.proj_dim)
        self.predictor = mlp(p.proj_dim, p.proj_hidden, p.proj_dim)
        self.target_encoder, self.target_projector = frozen_copy(image_encoder), frozen_copy(self.projector)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        x = batch["image"]  # [N, C, *spatial] in [0, 1]
        v = torch.cat([random_view(x, self.params.views, self.generator),
                       random_view(x, self.params.views, self.generator)])  # [2N, ...]
        p1, p2 = (self.predictor(self.projector(f)) for f in self.image_encoder.forward_features(v).chunk(2))
        with torch.no_grad():
            z1, z2 = (self.target_projector(f) for f in self.target_encoder.forward_features(v).chunk(2))
        return {"loss": byol_loss(p1, z2) + byol_loss(p2, z1)}

    def after_step(self) -> None:
        ema_update(self.target_encoder, self.image_encoder, self.params.momentum)
        ema_update(self.target_projector, self.projector, self.params.momentum)
