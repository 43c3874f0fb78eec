"""DINO: self-distillation with no labels — a student matches a momentum teacher's centred, sharpened output.

Caron, Touvron, Misra, Jégou, Mairal, Bojanowski, Joulin (2021), "Emerging Properties in Self-Supervised
Vision Transformers", ICCV. Student and teacher = encoder + DINO head (3-layer GELU MLP, L2-normalised
bottleneck, weight-normalised last layer with unit norm). Teacher = EMA of the student (§3.1), run on the
2 global crops only; the student sees global and local crops. Loss (eq. 3):
``Σ_{g ∈ globals} Σ_{v ≠ g} H(P_t(g), P_s(v))``, averaged over the pairs, with
``P_t = softmax((g_t − C)/τ_t)`` (centering and sharpening) and ``P_s = softmax(g_s/τ_s)``;
the center follows ``C ← m·C + (1 − m)·mean_batch g_t`` over the global batch (eq. 4).

CPU scale: head 128 wide, bottleneck 64, 512 prototypes (paper 2048 / 256 / 65536); teacher momentum
0.998 constant (paper 0.996 → 1 by a cosine schedule; over ~150 steps a faster teacher, 0.99, made the
loss climb back to log K as the target kept moving, 0.998 lets it fall); τ_t = 0.04 (the start of the
paper's 0.04 → 0.07 warm-up). Local crops
keep the image size (the paper renders them at 96 px vs 224 px) so that fixed-size encoders (the ViT)
accept them; they differ from global crops by their smaller area. No last-layer freezing or gradient
clipping (the paper's stabilisers for long ViT runs). The head MLP uses BatchNorm by default (the
official ``use_bn_in_head`` option): with the small GroupNorm CNN, whose pooled features start out nearly
parallel across images, the teacher's output is then almost the same for every image, centring makes it
uniform, and a head without BatchNorm collapsed to the uniform output (loss → log K) within 40 steps.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from medrobust.data.views import ViewParams, random_view
from medrobust.methods.contract import Encoders, MethodInfo, method_generator
from medrobust.methods.momentum import all_reduce_mean, ema_update, frozen_copy
from medrobust.registry import register


def dino_teacher_probs(teacher_logits: torch.Tensor, center: torch.Tensor, temperature: float) -> torch.Tensor:
    """Centred and sharpened teacher distribution ``softmax((g_t − C)/τ_t)`` over the last dim.

    Args:
        teacher_logits: ``[..., K]``; center: ``[1, K]`` (or broadcastable).
    """
    return F.softmax((teacher_logits - center) / temperature, dim=-1)


def dino_loss(student_logits: torch.Tensor, teacher_probs: torch.Tensor, student_temperature: float) -> torch.Tensor:
    """Cross-entropy ``H(P_t, P_s) = −Σ_k P_t,k log P_s,k`` over all (teacher view g, student view v ≠ g).

    Args:
        student_logits: ``[V, N, K]``; the first ``G`` views are the global crops.
        teacher_probs: ``[G, N, K]`` from :func:`dino_teacher_probs` (no gradient).
    Returns:
        The mean over the ``G·(V−1)`` view pairs of the batch-mean cross-entropy.
    """
    log_ps = F.log_softmax(student_logits / student_temperature, dim=-1)  # [V, N, K]
    total, pairs = student_logits.new_zeros(()), 0
    for g in range(len(teacher_probs)):
        for v in range(len(log_ps)):
            if v != g:
                total = total + (-(teacher_probs[g] * log_ps[v]).sum(dim=-1)).mean()
                pairs += 1
    return total / pairs


@torch.no_grad()
def updated_center(center: torch.Tensor, teacher_logits: torch.Tensor, momentum: float) -> torch.Tensor:
    """``C ← m·C + (1 − m)·mean(g_t)`` with the mean over all teacher outputs of the global batch.

    Args:
        center: ``[1, K]``; teacher_logits: ``[..., K]`` of this rank (averaged over ranks when distributed).
    """
    batch_center = all_reduce_mean(teacher_logits.reshape(-1, teacher_logits.shape[-1]).mean(dim=0, keepdim=True))
    return center * momentum + batch_center * (1 - momentum)


class DINOHead(nn.Module):
    """MLP (GELU) → L2-normalised bottleneck → unit-norm (weight-normalised, ``g = 1``) linear to K prototypes.

    ``use_bn`` puts BatchNorm after the hidden linear layers (the official code's ``use_bn_in_head``); its
    statistics are always those of the batch (the head only sees training batches).
    """

    def __init__(self, in_dim: int, hidden: int, bottleneck: int, out_dim: int, use_bn: bool = False):
        super().__init__()
        layers: list[nn.Module] = []
        for d_in in (in_dim, hidden):
            layers.append(nn.Linear(d_in, hidden))
            if use_bn:
                layers.append(nn.BatchNorm1d(hidden, track_running_stats=False))
            layers.append(nn.GELU())
        self.mlp = nn.Sequential(*layers, nn.Linear(hidden, bottleneck))
        self.last = nn.Linear(bottleneck, out_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [N, in_dim] -> [N, out_dim]
        x = F.normalize(self.mlp(x), dim=-1)
        return F.linear(x, F.normalize(self.last.weight, dim=1))


class DINOParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    out_dim: int = Field(512, ge=2, description="prototypes K (paper 65536)")
    hidden: int = Field(128, ge=2, description="paper 2048")
    bottleneck: int = Field(64, ge=2, description="paper 256")
    student_temperature: float = Field(0.1, gt=0)
    teacher_temperature: float = Field(0.04, gt=0)
    center_momentum: float = Field(0.9, ge=0, le=1)
    momentum: float = Field(0.998, ge=0, le=1, description="teacher EMA (see module docstring)")
    head_bn: bool = Field(True, description="BatchNorm in the head MLP (see module docstring)")
    local_crops: int = Field(2, ge=0, description="extra small crops seen by the student only")
    views: ViewParams = ViewParams(crop_scale=(0.4, 1.0))
    local_views: ViewParams = ViewParams(crop_scale=(0.15, 0.4))


@register("method", "dino")
class DINO(nn.Module):
    """DINO pre-training of ``image_encoder`` (the student, the one the study keeps)."""

    Params = DINOParams
    info = MethodInfo("DINO", "self-supervised", counterpart="supervised")

    def __init__(self, encoders: Encoders, params: DINOParams | None = None, seed: int = 0):
        super().__init__()
        image_encoder = encoders.image
        self.params = p = params or DINOParams()
        self.generator = method_generator(seed)
        self.image_encoder = image_encoder
        self.head = DINOHead(image_encoder.feature_dim, p.hidden, p.bottleneck, p.out_dim, p.head_bn)
        self.teacher_encoder, self.teacher_head = frozen_copy(image_encoder), frozen_copy(self.head)
        self.register_buffer("center", torch.zeros(1, p.out_dim))

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        x, p = batch["image"], self.params  # [N, C, *spatial] in [0, 1]
        views = [random_view(x, p.views, self.generator) for _ in range(2)]
        views += [random_view(x, p.local_views, self.generator) for _ in range(p.local_crops)]
        n = len(x)
        student = self.head(self.image_encoder.forward_features(torch.cat(views)))  # [V·N, K]
        with torch.no_grad():
            teacher = self.teacher_head(self.teacher_encoder.forward_features(torch.cat(views[:2])))  # [2N, K]
            probs = dino_teacher_probs(teacher, self.center, p.teacher_temperature)
        loss = dino_loss(student.view(len(views), n, -1), probs.view(2, n, -1), p.student_temperature)
        if self.training:
            self.center.copy_(updated_center(self.center, teacher, p.center_momentum))
        return {"loss": loss}

    def after_step(self) -> None:
        ema_update(self.teacher_encoder, self.image_encoder, self.params.momentum)
        ema_update(self.teacher_head, self.head, self.params.momentum)
