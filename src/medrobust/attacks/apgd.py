"""Auto-PGD: APGD-CE and APGD-DLR (Croce & Hein 2020, "Reliable evaluation of adversarial robustness with an
ensemble of diverse parameter-free attacks", ICML; Algorithm 1), L∞ and L2. Written here because
AutoAttack/torchattacks cannot be installed in this project (DESIGN §4).

Per run, from a random start ``x⁰`` in the ε-ball (uniform cube for L∞, a uniform direction at radius ε for
L2, as in the authors' code) and step size ``η = 2ε``:

    z^{k+1} = P(x^k + η·d(∇f(x^k)))                                   d = sign (L∞) or ∇/‖∇‖₂ (L2)
    x^{k+1} = P(x^k + α(z^{k+1} − x^k) + (1 − α)(x^k − x^{k−1}))        α = 0.75 (α = 1 for the first step)

``P`` projects onto the ε-ball around the *clean* x and onto [0, 1]. At the checkpoints
``w_j = ⌈p_j·N⌉`` with ``p₀ = 0, p₁ = 0.22, p_{j+1} = p_j + max(p_j − p_{j−1} − 0.03, 0.06)``
(:func:`apgd_checkpoints`), η is halved — and the run continues from the best point ``x_max`` with its
gradient — for the examples where

1. ``Σ_{i=w_{j−1}}^{w_j−1} 1[f(x^{i+1}) > f(x^i)] < ρ·(w_j − w_{j−1})`` (the loss rose too rarely), or
2. η was not halved at ``w_{j−1}`` and ``f_max`` did not improve since ``w_{j−1}``.

Per example the run keeps ``x_max`` (highest loss) and the iterate with the most wrong decisions
(:func:`medrobust.attacks.base.errors`); it returns the latter where it has more errors than ``x_max``.
Restarts (and the target classes of APGD-T) run only on the examples not yet fully wrong and keep the
worst case per example. Gradients come only from :func:`base.loss_and_grad` (so EOT/BPDA apply); each
iteration is one forward+backward whose logits also serve the success check; the last iterate needs only a
forward.

Losses (logits ``z`` ``[N, K]``, ``π`` = the indices sorting ``z`` in decreasing order):

- ``apgd-ce``: cross-entropy (BCE summed over findings for multilabel), via ``task_loss``.
- ``apgd-dlr``: multiclass/ordinal (K ≥ 3) runs the *targeted* DLR of APGD-T, once per target class
  (the 2nd … (n_target_classes+1)-th largest clean logit, ``n_target_classes`` capped at K − 1):
  ``DLR_t = −(z_y − z_t)/(z_π1 − (z_π3 + z_π4)/2)``; for K = 3 (no ``z_π4``) the denominator is the
  untargeted one, ``z_π1 − z_π3`` (documented choice). Binary (K = 2): DLR's denominator ``z_π1 − z_π3``
  does not exist, and any shift- *and* scale-invariant function of two logits is piecewise constant (a
  function of the sign of ``z₁ − z₀``), so the untargeted margin ``z_other − z_y`` (the CW loss, shift-
  invariant) is used unscaled — with sign steps and loss *comparisons* only, a per-example positive scale
  would not change the run anyway. CE is an increasing function of that margin too, so from the same start
  APGD-DLR retraces APGD-CE on two classes: the study's worst case runs APGD-CE restarts from new starts
  there instead (``medrobust.evaluation.adversarial.sequence_steps``). Multilabel: per-finding margins
  ``s_k = (1 − 2y_k)·z_k`` (> 0 when the decision ``z_k > 0`` is wrong) summed as ``Σ_k min(s_k, 0)``: every
  finding still correct pulls, flipped findings stop competing for the budget (maximum 0 = all decisions
  wrong).
"""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction
from math import ceil
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from medrobust.attacks.base import (LossFn, check_inputs, eot_samples, errors, eval_mode, loss_and_grad, predict,
                                    restrict)
from medrobust.attacks.pgd import ascent_direction, per_example, project
from medrobust.registry import register
from medrobust.task import Task, task_loss

MOMENTUM = 0.75  # α of Algorithm 1


def apgd_checkpoints(steps: int) -> list[int]:
    """Iterations ``w_j = ⌈p_j·steps⌉`` at which APGD checks its step size (``w₀ = 0``; all ≤ ``steps``).

    ``p₀ = 0, p₁ = 0.22, p_{j+1} = p_j + max(p_j − p_{j−1} − 0.03, 0.06)``, computed in exact fractions so
    that e.g. ``0.22·100`` is 22, not 23 after a float round-up. 100 steps: 0, 22, 41, 57, 70, 80, 87, 93, 99.
    """
    p = [Fraction(0), Fraction(22, 100)]
    while True:
        nxt = p[-1] + max(p[-1] - p[-2] - Fraction(3, 100), Fraction(6, 100))
        if nxt > 1:
            break
        p.append(nxt)
    return sorted({ceil(pj * steps) for pj in p if ceil(pj * steps) <= steps})


def dlr_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Untargeted DLR, ``[N, K≥3], [N] -> [N]``: ``−(z_y − max_{i≠y} z_i)/(z_π1 − z_π3 + 1e-12)``."""
    srt = logits.sort(dim=1, descending=True).values  # [N, K]
    z_y = logits.gather(1, y[:, None])[:, 0]  # [N]
    z_other = logits.scatter(1, y[:, None], float("-inf")).max(dim=1).values  # [N]
    return -(z_y - z_other) / (srt[:, 0] - srt[:, 2] + 1e-12)


def dlr_loss_targeted(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Targeted DLR, ``[N, K≥3], [N], [N] -> [N]``: ``−(z_y − z_t)/(z_π1 − (z_π3 + z_π4)/2 + 1e-12)``.

    For K = 3 (no ``z_π4``) the denominator is ``z_π1 − z_π3``.
    """
    srt = logits.sort(dim=1, descending=True).values  # [N, K]
    low = srt[:, 2] if logits.shape[1] == 3 else 0.5 * (srt[:, 2] + srt[:, 3])  # [N]
    z_y = logits.gather(1, y[:, None])[:, 0]
    z_t = logits.gather(1, target[:, None])[:, 0]
    return -(z_y - z_t) / (srt[:, 0] - low + 1e-12)


def binary_margin_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``[N, 2], [N] -> [N]``: ``z_other − z_y`` (DLR is undefined for two classes; see the module doc)."""
    return logits.gather(1, (1 - y)[:, None])[:, 0] - logits.gather(1, y[:, None])[:, 0]


def multilabel_margin_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``[N, L], [N, L] in {0, 1} -> [N]``: ``Σ_k min((1 − 2y_k)·z_k, 0)`` (0 once every finding is wrong)."""
    return ((1 - 2 * y.to(logits.dtype)) * logits).clamp(max=0.0).sum(dim=1)


class APGDParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    steps: int = Field(100, ge=1, description="iterations per run (N_iter)")
    norm: Literal["linf", "l2"] = "linf"
    restarts: int = Field(1, ge=1, description="runs from new random starts (on examples not yet broken)")
    rho: float = Field(0.75, gt=0, le=1, description="condition-1 threshold ρ of Algorithm 1")
    eot_samples: int | None = Field(None, ge=1, description="EOT passes per step; None = the model's own")


class APGDDLRParams(APGDParams):
    n_target_classes: int = Field(9, ge=1, description="APGD-T target classes (multiclass, capped at K-1)")


class _APGD:
    """The shared Algorithm 1; subclasses say which losses (and per-example targets) to run."""

    Params = APGDParams

    def __init__(self, params: APGDParams | None = None):
        self.params = params or self.Params()
        self.norm = self.params.norm

    def _losses(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, task: Task,
                samples: int) -> list[Callable[[torch.Tensor], LossFn]]:
        """Loss factories: ``make(index) -> loss_fn`` for the examples ``index`` of the batch."""
        raise NotImplementedError

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, task: Task,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        check_inputs(x, eps)
        x = x.detach()
        p = self.params
        best = x.clone()
        best_err = torch.full((len(x),), -1.0, device=x.device)  # [N]
        best_loss = torch.full((len(x),), float("-inf"), device=x.device)  # [N]
        with eval_mode(model):
            samples = eot_samples(model, p.eot_samples)
            for make_loss in self._losses(model, x, y, task, samples):
                for _ in range(p.restarts):
                    idx = (best_err < 1).nonzero()[:, 0]  # examples with a decision left to flip
                    if len(idx) == 0:
                        return best
                    # a restart runs on the examples not yet fooled: a model with bound inputs (the report of a
                    # FixedReport) must be restricted to them too
                    sub = model if len(idx) == len(x) else restrict(model, idx)
                    x_r, err_r, loss_r = self._run(sub, x[idx], y[idx], eps, task, make_loss(idx), samples, generator)
                    better = (err_r > best_err[idx]) | ((err_r == best_err[idx]) & (loss_r > best_loss[idx]))
                    keep = idx[better]
                    best[keep], best_err[keep], best_loss[keep] = x_r[better], err_r[better], loss_r[better]
        return best

    def _start(self, x: torch.Tensor, eps: float, generator: torch.Generator | None) -> torch.Tensor:
        if self.norm == "linf":
            noise = torch.rand(x.shape, generator=generator, dtype=x.dtype).to(x.device)
            return project(x + (2 * noise - 1) * eps, x, eps, "linf")
        gauss = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
        return project(x + eps * ascent_direction(gauss, "l2"), x, eps, "l2")

    def _run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, task: Task, loss_fn: LossFn,
             samples: int, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One APGD run on ``x`` ``[n, C, *spatial]``: (worst point, its error fraction ``[n]``, max loss ``[n]``)."""
        p, norm, n = self.params, self.norm, len(x)

        def pe(v: torch.Tensor) -> torch.Tensor:  # [n] -> [n, 1, ..., 1]
            return per_example(v, x)

        x_cur = self._start(x, eps, generator)
        logits, grad = loss_and_grad(model, x_cur, y, task, loss_fn, samples)
        loss, err = loss_fn(logits, y).detach(), errors(logits, y, task)  # [n], [n]
        x_max, grad_max, loss_max, err_at_max = x_cur.clone(), grad.clone(), loss.clone(), err.clone()
        x_adv, adv_err = x_cur.clone(), err.clone()  # iterate with the most wrong decisions
        eta = torch.full((n,), 2.0 * eps, device=x.device, dtype=x.dtype)  # [n] step sizes
        x_prev = x_cur
        checkpoints = set(apgd_checkpoints(p.steps)[1:])
        last_check, increases, prev_loss = 0, torch.zeros(n, device=x.device), loss
        loss_max_at_check, halved_at_check = loss_max.clone(), torch.zeros(n, dtype=torch.bool, device=x.device)
        for k in range(p.steps):
            a = 1.0 if k == 0 else MOMENTUM
            z = project(x_cur + pe(eta) * ascent_direction(grad, norm), x, eps, norm)
            x_prev, x_cur = x_cur, project(x_cur + a * (z - x_cur) + (1 - a) * (x_cur - x_prev), x, eps, norm)
            if k < p.steps - 1:
                logits, grad = loss_and_grad(model, x_cur, y, task, loss_fn, samples)
            else:  # the last iterate needs no gradient
                logits = predict(model, x_cur, samples)
            loss, err = loss_fn(logits, y).detach(), errors(logits, y, task)
            hit = err >= adv_err
            x_adv, adv_err = torch.where(pe(hit), x_cur, x_adv), torch.maximum(err, adv_err)
            up = loss > loss_max
            x_max, grad_max = torch.where(pe(up), x_cur, x_max), torch.where(pe(up), grad, grad_max)
            loss_max, err_at_max = torch.where(up, loss, loss_max), torch.where(up, err, err_at_max)
            increases += (loss > prev_loss).to(increases.dtype)
            prev_loss = loss
            if k + 1 in checkpoints and k < p.steps - 1:
                cond1 = increases < p.rho * (k + 1 - last_check)
                cond2 = ~halved_at_check & (loss_max <= loss_max_at_check)
                halve = cond1 | cond2  # [n]
                eta = torch.where(halve, eta / 2, eta)
                x_cur, grad = torch.where(pe(halve), x_max, x_cur), torch.where(pe(halve), grad_max, grad)
                prev_loss = torch.where(halve, loss_max, prev_loss)
                halved_at_check, loss_max_at_check = halve, loss_max.clone()
                increases.zero_()
                last_check = k + 1
        use_adv = adv_err > err_at_max
        return torch.where(pe(use_adv), x_adv, x_max), torch.maximum(adv_err, err_at_max), loss_max


@register("attack", "apgd-ce")
class APGDCE(_APGD):
    """APGD with the cross-entropy loss (BCE summed over findings for multilabel tasks)."""

    Params = APGDParams

    def _losses(self, model, x, y, task, samples):
        def make(index: torch.Tensor) -> LossFn:
            return lambda logits, labels: task_loss(logits, labels, task, reduction="none")

        return [make]


@register("attack", "apgd-dlr")
class APGDDLR(_APGD):
    """APGD with the DLR loss: targeted (APGD-T) for K ≥ 3 classes, margin losses otherwise (module doc)."""

    Params = APGDDLRParams

    def _losses(self, model, x, y, task, samples):
        if task.multilabel:
            return [lambda index: multilabel_margin_loss]
        n_classes = task.n_outputs
        if n_classes == 2:
            return [lambda index: binary_margin_loss]
        ranking = predict(model, x, samples).argsort(dim=1, descending=True)  # [N, K] clean logits, no label
        n_targets = min(self.params.n_target_classes, n_classes - 1)

        def targeted(rank: int) -> Callable[[torch.Tensor], LossFn]:
            def make(index: torch.Tensor) -> LossFn:
                target = ranking[index, rank]  # [n]
                return lambda logits, labels: dlr_loss_targeted(logits, labels, target)

            return make

        return [targeted(rank) for rank in range(1, n_targets + 1)]
