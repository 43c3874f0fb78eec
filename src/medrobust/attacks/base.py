"""Shared contract of image attacks (DESIGN principle 6).

``attack(model, x, y, eps=..., task=...) -> x_adv``: ``x`` is ``[N, C, *spatial]`` in ``[0, 1]``,
``model(x) -> logits``. The result stays in the ε-ball around the *clean* ``x`` and in ``[0, 1]``; the
model is put in eval mode and restored; gradients are taken w.r.t. the input only (parameters' ``.grad``
untouched). ``eps`` is in pixel units of the ``[0, 1]`` space (the config states it in 1/255).

Randomised and non-differentiable models are handled here, once, for every gradient attack:

- a model with ``randomized = True`` gets EOT (Athalye et al. 2018, "Obfuscated Gradients Give a False Sense
  of Security"): gradients *and* logits averaged over ``eot_samples`` forward passes (the model's own
  ``eot_samples`` attribute, else :data:`DEFAULT_EOT_SAMPLES`);
- a model with ``non_differentiable = True`` must offer ``bpda_forward(x)``, a differentiable
  approximation (BPDA, same paper) used for the backward pass while decisions use the real forward.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

import torch
from torch import nn

from medrobust.task import Task, per_example_accuracy, task_loss

DEFAULT_EOT_SAMPLES = 16

# per-example loss: (logits [N, K], labels) -> [N]
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class AttackInputError(ValueError):
    """The attack got an input outside the project's pixel space or a bad budget."""


def check_inputs(x: torch.Tensor, eps: float) -> None:
    if not torch.is_floating_point(x):
        raise AttackInputError(f"attack input must be a float tensor in [0, 1], got dtype {x.dtype}")
    if not torch.isfinite(x).all():
        raise AttackInputError("attack input contains NaN or infinite pixels")
    if x.min() < 0 or x.max() > 1:
        raise AttackInputError(f"attack input must lie in [0, 1], got [{x.min().item():.4g}, {x.max().item():.4g}]"
                               " (normalisation belongs inside the model)")
    if not eps >= 0:
        raise AttackInputError(f"eps must be >= 0, got {eps!r}")


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode for the attack and restore its previous mode afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def eot_samples(model: nn.Module, requested: int | None = None) -> int:
    """Forward passes to average: ``requested``, else the model's own, else 1 (deterministic) or the default."""
    if requested is not None:
        return max(1, int(requested))
    if not getattr(model, "randomized", False):
        return 1
    return int(getattr(model, "eot_samples", DEFAULT_EOT_SAMPLES))


def predict(model: nn.Module, x: torch.Tensor, samples: int = 1) -> torch.Tensor:
    """Logits ``[N, K]`` (averaged over ``samples`` passes for randomised models), no gradient."""
    with torch.no_grad():
        out = model(x)
        for _ in range(samples - 1):
            out = out + model(x)
    return out / samples


def loss_and_grad(model: nn.Module, x: torch.Tensor, y: torch.Tensor, task: Task, loss_fn: LossFn | None = None,
                  samples: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits at ``x`` (``[N, K]``, detached) and the gradient of the summed per-example loss w.r.t. ``x``.

    EOT and BPDA are applied according to the model's declared ``randomized`` / ``non_differentiable``.
    """
    loss_fn = loss_fn or (lambda logits, labels: task_loss(logits, labels, task, reduction="none"))
    n = eot_samples(model, samples)
    bpda = getattr(model, "non_differentiable", False)
    forward = model.bpda_forward if bpda else model
    grad = torch.zeros_like(x)
    logits_sum = None
    for _ in range(n):
        xr = x.detach().requires_grad_(True)
        with torch.enable_grad():
            logits = forward(xr)
            (g,) = torch.autograd.grad(loss_fn(logits, y).sum(), xr)
        grad += g
        out = model(x).detach() if bpda else logits.detach()
        logits_sum = out if logits_sum is None else logits_sum + out
    return logits_sum / n, grad / n


def errors(logits: torch.Tensor, y: torch.Tensor, task: Task) -> torch.Tensor:
    """``[N]`` fraction of wrong decisions (0 = fully correct); attacks keep the iterate maximising it."""
    return 1.0 - per_example_accuracy(logits, y, task)


def restrict(model: nn.Module, idx: torch.Tensor) -> nn.Module:
    """``model`` for the examples ``idx`` of the batch it was bound to.

    Models that carry per-example inputs besides the image (a fixed report, a question) expose
    ``select(idx)``; plain image models are returned unchanged. Attacks that query a subset of the batch
    (Square on the examples not yet fooled) call this.
    """
    select = getattr(model, "select", None)
    return model if select is None else select(idx)
