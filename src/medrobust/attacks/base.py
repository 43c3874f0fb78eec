"""Shared contract of image attacks (DESIGN principle 6).

``attack(model, x, y, eps=..., task=...) -> x_adv``: ``x`` is ``[N, C, *spatial]`` in ``[0, 1]``,
``model(x) -> logits``. The result stays in the ε-ball around the *clean* ``x`` and in ``[0, 1]``; the
model is put in eval mode and restored; gradients are taken w.r.t. the input only (parameters' ``.grad``
untouched). ``eps`` is in pixel units of the ``[0, 1]`` space (the config states it in 1/255).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

from medrobust.data.base import Task
from medrobust.evaluation.metrics import per_example_accuracy
from medrobust.methods.losses import task_loss


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


def loss_and_grad(model: nn.Module, x: torch.Tensor, y: torch.Tensor, task: Task
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits at ``x`` (``[N, K]``, detached) and the gradient of the summed task loss w.r.t. ``x``."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(x)
        loss = task_loss(logits, y, task, reduction="none").sum()
        (grad,) = torch.autograd.grad(loss, x)
    return logits.detach(), grad


def errors(logits: torch.Tensor, y: torch.Tensor, task: Task) -> torch.Tensor:
    """``[N]`` fraction of wrong decisions (0 = fully correct); the attack keeps the iterate maximising it."""
    return 1.0 - per_example_accuracy(logits, y, task)
