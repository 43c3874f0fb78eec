"""Fast Gradient Sign Method (Goodfellow, Shlens, Szegedy 2015, "Explaining and Harnessing Adversarial
Examples", ICLR): one L∞ step ``x + ε·sign(∇x L)``, clipped to [0, 1]."""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from medrobust.attacks.base import check_inputs, eval_mode, loss_and_grad
from medrobust.registry import register
from medrobust.task import Task


class FGSMParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


@register("attack", "fgsm")
class FGSM:
    Params = FGSMParams
    norm = "linf"

    def __init__(self, params: FGSMParams | None = None):
        self.params = params or FGSMParams()

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, task: Task,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        check_inputs(x, eps)
        with eval_mode(model):
            _, grad = loss_and_grad(model, x, y, task)
        return (x + eps * grad.sign()).clamp(0.0, 1.0).detach()
