"""Projected Gradient Descent, L∞ (Madry et al. 2018, "Towards Deep Learning Models Resistant to
Adversarial Attacks", ICLR).

Random start uniform in the ε-ball, ``steps`` signed-gradient steps of size ``step_size·ε``, each followed
by projection onto the ε-ball around the *clean* image (not the previous iterate — DESIGN §5) and onto
[0, 1]. Per example, the returned point is the iterate with the most wrong decisions seen (ties: the
latest), so a success at any step is kept. ``restarts`` > 1 repeats from new random starts and keeps the
worst case per example.
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from medrobust.attacks.base import check_inputs, eot_samples, errors, eval_mode, loss_and_grad, predict
from medrobust.data.base import Task
from medrobust.registry import register


class PGDParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    steps: int = Field(10, ge=1)
    step_size: float = Field(0.25, gt=0, description="step as a fraction of eps (Madry: 2.5·eps/steps)")
    random_start: bool = True
    restarts: int = Field(1, ge=1)


@register("attack", "pgd")
class PGD:
    Params = PGDParams
    norm = "linf"

    def __init__(self, params: PGDParams | None = None):
        self.params = params or PGDParams()

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, task: Task,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        check_inputs(x, eps)
        x = x.detach()
        best, best_err = x.clone(), torch.full((len(x),), -1.0, device=x.device)
        with eval_mode(model):
            for _ in range(self.params.restarts):
                best, best_err = self._run(model, x, y, eps, task, generator, best, best_err)
        return best

    def _run(self, model, x, y, eps, task, generator, best, best_err):
        p = self.params
        x_adv = x.clone()
        if p.random_start:
            noise = torch.rand(x.shape, generator=generator, dtype=x.dtype).to(x.device)
            x_adv = (x + (2 * noise - 1) * eps).clamp(0.0, 1.0)
        for step in range(p.steps + 1):
            if step < p.steps:
                logits, grad = loss_and_grad(model, x_adv, y, task)
            else:  # the last iterate only needs its logits
                logits = predict(model, x_adv, eot_samples(model))
            err = errors(logits, y, task)  # [N]
            better = err >= best_err
            best = torch.where(better.view(-1, *([1] * (x.ndim - 1))), x_adv, best)
            best_err = torch.maximum(err, best_err)
            if step < p.steps:
                x_adv = x_adv + p.step_size * eps * grad.sign()
                x_adv = (x + (x_adv - x).clamp(-eps, eps)).clamp(0.0, 1.0)  # project around the clean x
        return best, best_err
