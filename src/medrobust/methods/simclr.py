"""SimCLR: contrastive learning of image representations from two random views.

Chen, Kornblith, Norouzi, Hinton (2020), "A Simple Framework for Contrastive Learning of Visual
Representations", ICML. Encoder + 2-layer MLP projector; NT-Xent over the global batch.
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from medrobust.data.views import ViewParams, random_view
from medrobust.engine.distributed import gather_with_grad
from medrobust.methods.contract import Encoders, MethodInfo, method_generator
from medrobust.methods.losses import nt_xent
from medrobust.registry import register


def projector(in_dim: int, hidden: int, out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out))


class SimCLRParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    temperature: float = Field(0.2, gt=0)
    proj_dim: int = Field(64, ge=2)
    proj_hidden: int = Field(128, ge=2)
    views: ViewParams = ViewParams()


@register("method", "simclr")
class SimCLR(nn.Module):
    """Image self-supervised pre-training on all training images; fine-tuned like ``supervised``."""

    Params = SimCLRParams
    info = MethodInfo("SimCLR", "self-supervised", counterpart="supervised")

    def __init__(self, encoders: Encoders, params: SimCLRParams | None = None, seed: int = 0):
        super().__init__()
        image_encoder = encoders.image
        self.params = params or SimCLRParams()
        self.image_encoder = image_encoder
        self.projector = projector(image_encoder.feature_dim, self.params.proj_hidden, self.params.proj_dim)
        self.generator = method_generator(seed)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        x = batch["image"]  # [N, C, *spatial] in [0, 1]
        v1 = random_view(x, self.params.views, self.generator)
        v2 = random_view(x, self.params.views, self.generator)
        z = self.projector(self.image_encoder.forward_features(torch.cat([v1, v2])))  # [2N, proj_dim]
        z1, z2 = z.chunk(2)
        return {"loss": nt_xent(gather_with_grad(z1), gather_with_grad(z2), self.params.temperature)}
