"""SimSiam: Siamese networks with a predictor and stop-gradient, no negatives and no momentum encoder.

Chen, He (2021), "Exploring Simple Siamese Representation Learning", CVPR.
Encoder → 3-layer projector (BN on every layer, output included) → 2-layer bottleneck predictor.
Loss (eq. 3): ``L = ½·D(p1, stopgrad(z2)) + ½·D(p2, stopgrad(z1))`` with ``D(p, z) = −cos(p, z)``.

CPU scale: projector 128 wide with 64 outputs, predictor bottleneck 32 (paper 2048 / 2048 / 512).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from medrobust.data.views import ViewParams, random_view
from medrobust.methods.contract import Encoders, MethodInfo, method_generator
from medrobust.methods.momentum import mlp
from medrobust.registry import register


def negative_cosine(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """SimSiam's ``D(p, stopgrad(z)) = −mean_i (p_i/‖p_i‖₂)·(z_i/‖z_i‖₂)`` (eq. 1 with the stop-gradient).

    Args:
        p: ``[N, D]`` predictions; z: ``[N, D]`` projections (detached here).
    """
    return -F.cosine_similarity(p, z.detach(), dim=1).mean()


class SimSiamParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    proj_dim: int = Field(64, ge=2, description="paper 2048")
    proj_hidden: int = Field(128, ge=2, description="paper 2048")
    pred_hidden: int = Field(32, ge=2, description="bottleneck of the predictor (paper 512)")
    views: ViewParams = ViewParams()


@register("method", "simsiam")
class SimSiam(nn.Module):
    """SimSiam pre-training of ``image_encoder``."""

    Params = SimSiamParams
    info = MethodInfo("SimSiam", "self-supervised", counterpart="supervised")

    def __init__(self, encoders: Encoders, params: SimSiamParams | None = None, seed: int = 0):
        super().__init__()
        image_encoder = encoders.image
        self.params = p = params or SimSiamParams()
        self.generator = method_generator(seed)
        self.image_encoder = image_encoder
        self.projector = mlp(image_encoder.feature_dim, p.proj_hidden, p.proj_dim, layers=3, last_bn=True)
        self.predictor = mlp(p.proj_dim, p.pred_hidden, p.proj_dim, layers=2)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        x = batch["image"]  # [N, C, *spatial] in [0, 1]
        v = torch.cat([random_view(x, self.params.views, self.generator),
                       random_view(x, self.params.views, self.generator)])  # [2N, ...]
        z1, z2 = (self.projector(f) for f in self.image_encoder.forward_features(v).chunk(2))  # [N, D] each
        p1, p2 = self.predictor(z1), self.predictor(z2)
        return {"loss": 0.5 * negative_cosine(p1, z2) + 0.5 * negative_cosine(p2, z1)}
