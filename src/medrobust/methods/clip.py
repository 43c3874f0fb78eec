"""CLIP-style image-report contrastive pre-training.

Radford et al. (2021), "Learning Transferable Visual Models From Natural Language Supervision", ICML;
in medicine ConVIRT (Zhang et al. 2022). Image and report encoders with linear projections and a
learned temperature; symmetric InfoNCE over the global batch of training pairs.
"""

from __future__ import annotations

import math

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from medrobust.data.views import ViewParams, random_view
from medrobust.engine.distributed import gather_with_grad
from medrobust.methods.contract import Encoders, MethodInfo, method_generator
from medrobust.methods.losses import clip_loss
from medrobust.registry import register


class CLIPParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    embed_dim: int = Field(64, ge=2)
    init_temperature: float = Field(0.07, gt=0)
    views: ViewParams = ViewParams(crop_scale=(0.8, 1.0), blur_p=0.0, noise_p=0.0)


@register("method", "clip")
class CLIP(nn.Module):
    """Image-report contrastive pre-training on all training pairs; fine-tuned like ``supervised-multimodal``."""

    Params = CLIPParams
    info = MethodInfo("CLIP", "self-supervised", ("image", "text"), counterpart="supervised-multimodal")

    def __init__(self, encoders: Encoders, params: CLIPParams | None = None, seed: int = 0):
        super().__init__()
        image_encoder, text_encoder = encoders.image, encoders.text
        if text_encoder is None:
            raise ValueError("clip needs a text encoder (image-report pairs)")
        self.params = params or CLIPParams()
        self.image_encoder, self.text_encoder = image_encoder, text_encoder
        self.image_proj = nn.Linear(image_encoder.feature_dim, self.params.embed_dim, bias=False)
        self.text_proj = nn.Linear(text_encoder.feature_dim, self.params.embed_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / self.params.init_temperature)))
        self.generator = method_generator(seed)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        image = random_view(batch["image"], self.params.views, self.generator)
        img = self.image_proj(self.image_encoder.forward_features(image))  # [N, E]
        txt = self.text_proj(self.text_encoder.forward_features(batch["tokens"]))  # [N, E]
        scale = self.logit_scale.clamp(max=math.log(100.0))
        return {"loss": clip_loss(gather_with_grad(img), gather_with_grad(txt), scale)}
