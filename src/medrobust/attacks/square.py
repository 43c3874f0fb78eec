"""Square Attack, L∞ (Andriushchenko, Croce, Flammarion, Hein 2020, "Square Attack: a query-efficient
black-box adversarial attack via random search", ECCV; Algorithm 1 with the L∞ sampling of Algorithm 2).
Written here because AutoAttack cannot be installed in this project (DESIGN §4).

Score-based: it only reads the model's logits (never a gradient), so gradient masking does not stop it.

1. Start from vertical stripes: ``x̂ = clip(x + ε·r)``, ``r ∈ {−1, +1}`` drawn per example, channel and
   column (constant along every other spatial axis).
2. For ``i = 1 … n_queries − 1``, only for the examples not yet fooled: draw, per example, a window of side
   ``s = round((p_i·∏ sizes)^{1/d})`` (d spatial dims; the paper's ``√(p·h·w)`` in 2D; ``1 ≤ s ≤`` the
   smallest side) at a uniform position, and a sign per channel; set the window to ``x ± ε`` (the other
   pixels keep ``x̂``), clip to [0, 1]. If that changes nothing, the sign is flipped (the authors' code
   redraws until something changes; with ε > 0 the flipped vertex always differs). Accept the proposal if
   it has more wrong decisions, or as many and a lower margin loss.
3. ``p_i`` follows the authors' piecewise-constant schedule: ``p_init`` halved at iterations
   10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000 of a 10 000-query budget, rescaled to ``n_queries``.

Margin loss (minimised; ≤ 0 ⇔ fooled): ``z_y − max_{i≠y} z_i`` for single-label tasks; for multilabel the
per-finding margins ``m_k = (2y_k − 1)·z_k`` (> 0 when the decision ``z_k > 0`` is right) summed as
``Σ_k max(m_k, 0)`` and an example counts as fooled when every finding is wrong. Query budget: the stripe
initialisation is the first query; each example gets at most ``n_queries`` model evaluations.

Volumes ``[N, C, D, H, W]``: windows are cubes (the same rule in d = 3) and stripes run along the last axis
— a direct generalisation, not evaluated in the paper. Randomised models are queried through
:func:`base.predict` with :func:`base.eot_samples` passes per query (each then costs that many passes).
"""

from __future__ import annotations

import math

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from medrobust.attacks.base import check_inputs, eot_samples, errors, eval_mode, predict, restrict
from medrobust.registry import register
from medrobust.task import Task

_HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)  # of a 10 000-query budget


def p_schedule(i: int, n_queries: int, p_init: float) -> float:
    """Fraction of pixels changed at iteration ``i``: ``p_init / 2^(# halvings passed)`` (rescaled budget)."""
    it = int(i / n_queries * 10000)
    return p_init / 2 ** sum(it > h for h in _HALVINGS)


def margin_loss(logits: torch.Tensor, y: torch.Tensor, task: Task) -> torch.Tensor:
    """``[N]`` margin, > 0 while (some) decision is right: see the module docstring."""
    if task.multilabel:
        return ((2 * y.to(logits.dtype) - 1) * logits).clamp(min=0.0).sum(dim=1)
    z_y = logits.gather(1, y[:, None])[:, 0]  # [N]
    return z_y - logits.scatter(1, y[:, None], float("-inf")).max(dim=1).values


class SquareParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n_queries: int = Field(1000, ge=1, description="model evaluations per example, initialisation included")
    p_init: float = Field(0.8, gt=0, le=1, description="initial fraction of pixels in the square")


@register("attack", "square")
class Square:
    Params = SquareParams
    norm = "linf"

    def __init__(self, params: SquareParams | None = None):
        self.params = params or SquareParams()

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, task: Task,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        check_inputs(x, eps)
        if x.ndim not in (4, 5):
            raise NotImplementedError(f"square attack needs [N, C, H, W] images or [N, C, D, H, W] volumes, "
                                      f"got shape {tuple(x.shape)}")
        x = x.detach()
        if eps == 0:
            return x.clone()  # no perturbation is possible: spend no queries
        with eval_mode(model):
            return self._attack(model, x, y, eps, task, generator)

    def _attack(self, model, x, y, eps, task, generator):
        p, samples = self.params, eot_samples(model)
        n, c, spatial = len(x), x.shape[1], tuple(x.shape[2:])

        def rand_sign(shape):  # uniform {-1, +1}
            return (torch.randint(0, 2, shape, generator=generator) * 2 - 1).to(x.device, x.dtype)

        stripes = rand_sign((n, c, *([1] * (len(spatial) - 1)), spatial[-1]))  # [N, C, 1, .., W]
        best = (x + eps * stripes).clamp(0.0, 1.0)
        logits = predict(model, best, samples)
        err, loss = errors(logits, y, task), margin_loss(logits, y, task)  # [N], [N]
        for i in range(1, p.n_queries):
            active = (err < 1).nonzero()[:, 0]  # not yet fooled
            if len(active) == 0:
                break
            xa, ba, m = x[active], best[active], len(active)
            side = self._side(p_schedule(i, p.n_queries, p.p_init), spatial)
            mask = self._window(m, side, spatial, generator).to(x.device)[:, None]  # [m, 1, *spatial]
            sign = rand_sign((m, c, *([1] * len(spatial))))  # [m, C, 1, ..]
            prop = torch.where(mask, (xa + eps * sign).clamp(0.0, 1.0), ba)
            same = (prop == ba).flatten(1).all(dim=1)  # [m] proposals that change nothing
            if same.any():
                flipped = torch.where(mask, (xa - eps * sign).clamp(0.0, 1.0), ba)
                prop = torch.where(same.view(-1, *([1] * (x.ndim - 1))), flipped, prop)
            logits = predict(restrict(model, active), prop, samples)
            e, l = errors(logits, y[active], task), margin_loss(logits, y[active], task)
            accept = (e > err[active]) | ((e == err[active]) & (l < loss[active]))
            keep = active[accept]
            best[keep], err[keep], loss[keep] = prop[accept], e[accept], l[accept]
        return best

    @staticmethod
    def _side(p: float, spatial: tuple[int, ...]) -> int:
        """Window side ``round((p·∏ sizes)^{1/d})`` clipped to ``[1, min(sizes)]``."""
        side = round((p * math.prod(spatial)) ** (1 / len(spatial)))
        return max(1, min(side, min(spatial)))

    @staticmethod
    def _window(m: int, side: int, spatial: tuple[int, ...], generator) -> torch.Tensor:
        """``[m, *spatial]`` bool: one axis-aligned window of the given side per example, uniform position."""
        mask = None
        for axis, size in enumerate(spatial):
            start = torch.randint(0, size - side + 1, (m, 1), generator=generator)  # [m, 1]
            pos = torch.arange(size)[None]  # [1, size]
            inside = (pos >= start) & (pos < start + side)  # [m, size]
            shape = [m] + [1] * len(spatial)
            shape[axis + 1] = size
            inside = inside.view(shape)
            mask = inside if mask is None else mask & inside
        return mask
