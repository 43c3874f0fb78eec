"""ConVIRT: contrastive learning of medical visual representations from paired images and reports.

Zhang, Jiang, Miura, Manning, Langlotz (2022), "Contrastive Learning of Medical Visual Representations
from Paired Images and Text", MLHC. Image and report encoders, each followed by a non-linear projection
(Linear-ReLU-Linear), cosine similarity with a fixed temperature τ = 0.1, and a bidirectional InfoNCE
weighted asymmetrically: ``λ · ℓ(v→u) + (1 − λ) · ℓ(u→v)`` with λ = 0.75 (the paper's defaults).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from medrobust.data.views import ViewParams, random_view
from medrobust.engine.distributed import gather_with_grad
from medrobust.methods.contract import Encoders, MethodInfo, method_generator
from medrobust.registry import register


def convirt_loss(img: torch.Tensor, txt: torch.Tensor, temperature: float, lam: float) -> torch.Tensor:
    """Asymmetrically weighted bidirectional InfoNCE of ConVIRT (Zhang et al. 2022, eqs. 2-4).

    With cosine similarity ``<v, u>`` of the projected image ``v_i`` and report ``u_i`` embeddings:
    ``ℓ(v→u)_i = −log exp(<v_i, u_i>/τ) / Σ_k exp(<v_i, u_k>/τ)``,
    ``ℓ(u→v)_i = −log exp(<u_i, v_i>/τ) / Σ_k exp(<u_i, v_k>/τ)``,
    loss = mean over i of ``λ ℓ(v→u)_i + (1 − λ) ℓ(u→v)_i``.

    Args:
        img: ``[N, E]`` image embeddings (not necessarily normalised).
        txt: ``[N, E]`` report embeddings of the same N pairs, in the same order.
        temperature: τ > 0.
        lam: λ in [0, 1], the weight of the image-to-report direction.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lam must be in [0, 1], got {lam!r}")
    v, u = F.normalize(img, dim=1), F.normalize(txt, dim=1)  # [N, E]
    logits = v @ u.t() / temperature  # [N, N]: row i = image i against every report
    target = torch.arange(len(v), device=v.device)
    return lam * F.cross_entropy(logits, target) + (1 - lam) * F.cross_entropy(logits.t(), target)


def projection(in_dim: int, hidden: int, out: int) -> nn.Sequential:
    """ConVIRT's non-linear projection: a single hidden layer with ReLU."""
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out))


class ConVIRTParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    embed_dim: int = Field(64, ge=2, description="projection output size (512 in the paper; small for CPU)")
    proj_hidden: int = Field(128, ge=2)
    temperature: float = Field(0.1, gt=0, description="τ, fixed (paper: 0.1)")
    lam: float = Field(0.75, ge=0, le=1, description="λ, weight of the image→report direction (paper: 0.75)")
    views: ViewParams = ViewParams(crop_scale=(0.6, 1.0), noise_p=0.0)


@register("method", "convirt")
class ConVIRT(nn.Module):
    """Image-report contrastive pre-training on all training pairs; fine-tuned like ``supervised-multimodal``.

    Uses the encoders' pooled ``forward_features``; ``encoders.fusion``, if given, is not used
    (``info.uses_fusion`` is False).
    """

    Params = ConVIRTParams
    info = MethodInfo("ConVIRT", "self-supervised", ("image", "text"), counterpart="supervised-multimodal")

    def __init__(self, encoders: Encoders, params: ConVIRTParams | None = None, seed: int = 0):
        super().__init__()
        image_encoder, text_encoder = encoders.image, encoders.text
        if text_encoder is None:
            raise ValueError("convirt needs a text encoder (image-report pairs)")
        self.params = params or ConVIRTParams()
        p = self.params
        self.image_encoder, self.text_encoder = image_encoder, text_encoder
        self.image_proj = projection(image_encoder.feature_dim, p.proj_hidden, p.embed_dim)
        self.text_proj = projection(text_encoder.feature_dim, p.proj_hidden, p.embed_dim)
        self.generator = method_generator(seed)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        image = random_view(batch["image"], self.params.views, self.generator)  # [N, C, *spatial]
        img = self.image_proj(self.image_encoder.forward_features(image))  # [N, E]
        txt = self.text_proj(self.text_encoder.forward_features(batch["tokens"]))  # [N, E]
        loss = convirt_loss(gather_with_grad(img), gather_with_grad(txt), self.params.temperature, self.params.lam)
        return {"loss": loss}
