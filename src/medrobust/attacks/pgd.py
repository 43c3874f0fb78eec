"""Projected Gradient Descent, L∞ and L2 (Madry et al. 2018, "Towards Deep Learning Models Resistant to
Adversarial Attacks", ICLR).

Random start in the ε-ball, ``steps`` ascent steps of size ``step_size·ε`` — ``sign(∇)`` for L∞,
``∇/‖∇‖₂`` for L2 — each followed by projection onto the ε-ball around the *clean* image (not the previous
iterate — DESIGN §5) and onto [0, 1]. Per example, the returned point is the iterate with the most wrong
decisions seen (ties: the latest), so a success at any step is kept. ``restarts`` > 1 repeats from new
random starts and keeps the worst case per example.

L∞ start: uniform in the cube ``x + ε·U(-1, 1)``. L2 start: a uniform direction (normalised Gaussian) at a
radius ``ε·U(0, 1)`` per example. The helpers :func:`project` and :func:`ascent_direction` are shared with
APGD (``attacks/apgd.py``).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from medrobust.attacks.base import check_inputs, eot_samples, errors, eval_mode, loss_and_grad, predict
from medrobust.registry import register
from medrobust.task import Task

Norm = Literal["linf", "l2"]


def per_example(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``[N]`` -> ``[N, 1, ..., 1]`` broadcastable against ``like`` (``[N, C, *spatial]``)."""
    return v.view(-1, *([1] * (like.ndim - 1)))


def l2_norm(d: torch.Tensor) -> torch.Tensor:
    """Per-example L2 norm: ``[N, ...] -> [N]``."""
    return d.flatten(1).norm(dim=1)


def project(x_adv: torch.Tensor, x: torch.Tensor, eps: float, norm: Norm) -> torch.Tensor:
    """Project ``x_adv`` onto the ε-ball (L∞ or L2) around the clean ``x``, then onto [0, 1].

    L2: ``δ ← δ·min(1, ε/‖δ‖₂)``; clipping to [0, 1] afterwards only shrinks ``|δ|`` per pixel (``x`` is in
    [0, 1]), so the result stays in both sets. ``δ = 0`` (e.g. ε = 0) returns ``x`` exactly.
    """
    d = x_adv - x  # [N, C, *spatial]
    if norm == "linf":
        d = d.clamp(-eps, eps)
    else:
        d = d * per_example((eps / l2_norm(d).clamp_min(1e-12)).clamp(max=1.0), d)
    return (x + d).clamp(0.0, 1.0)


def ascent_direction(grad: torch.Tensor, norm: Norm) -> torch.Tensor:
    """Steepest-ascent direction of unit norm: ``sign(g)`` (L∞) or ``g/‖g‖₂`` (L2; 0 for a zero gradient)."""
    if norm == "linf":
        return grad.sign()
    return grad / per_example(l2_norm(grad).clamp_min(1e-12), grad)


class PGDParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    steps: int = Field(10, ge=1)
    step_size: float = Field(0.25, gt=0, description="step as a fraction of eps (Madry: 2.5·eps/steps)")
    random_start: bool = True
    restarts: int = Field(1, ge=1)
    norm: Norm = "linf"
    eot_samples: int | None = Field(None, ge=1, description="EOT passes per step; None = the model's own")


@register("attack", "pgd")
class PGD:
    Params = PGDParams

    def __init__(self, params: PGDParams | None = None):
        self.params = params or PGDParams()
        self.norm = self.params.norm

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, task: Task,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        check_inputs(x, eps)
        x = x.detach()
        best, best_err = x.clone(), torch.full((len(x),), -1.0, device=x.device)
        with eval_mode(model):
            for _ in range(self.params.restarts):
                best, best_err = self._run(model, x, y, eps, task, generator, best, best_err)
        return best

    def _start(self, x: torch.Tensor, eps: float, generator: torch.Generator | None) -> torch.Tensor:
        if self.norm == "linf":
            noise = torch.rand(x.shape, generator=generator, dtype=x.dtype).to(x.device)
            return (x + (2 * noise - 1) * eps).clamp(0.0, 1.0)
        direction = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
        radius = torch.rand(len(x), generator=generator, dtype=x.dtype).to(x.device) * eps  # [N]
        return project(x + ascent_direction(direction, "l2") * per_example(radius, x), x, eps, "l2")

    def _run(self, model, x, y, eps, task, generator, best, best_err):
        p = self.params
        samples = eot_samples(model, p.eot_samples)
        x_adv = self._start(x, eps, generator) if p.random_start else x.clone()
        for step in range(p.steps + 1):
            if step < p.steps:
                logits, grad = loss_and_grad(model, x_adv, y, task, samples=samples)
            else:  # the last iterate only needs its logits
                logits = predict(model, x_adv, samples)
            err = errors(logits, y, task)  # [N]
            better = err >= best_err
            best = torch.where(per_example(better, x), x_adv, best)
            best_err = torch.maximum(err, best_err)
            if step < p.steps:
                x_adv = project(x_adv + p.step_size * eps * ascent_direction(grad, self.norm), x, eps, self.norm)
        return best, best_err
