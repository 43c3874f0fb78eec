"""Shared pieces of the self-supervised zoo: momentum (EMA) teachers, non-grad collectives, MLP heads.

* :func:`frozen_copy` / :func:`ema_update` — the momentum ("key", "target", "teacher") network of MoCo
  (He et al. 2020, eq. 2), BYOL (Grill et al. 2020, §3.1) and DINO (Caron et al. 2021, §3.1):
  ``θ_t ← m·θ_t + (1 − m)·θ_s`` after each optimiser step of the online network ``θ_s``.
* :func:`gather_no_grad` / :func:`all_reduce_mean` — MoCo enqueues the keys of the *global* batch
  (``concat_all_gather`` in the official code) and DINO averages its center over ranks; both are identity
  in a single process. Gradient-carrying gathers are :func:`medrobust.engine.distributed.gather_with_grad`.
* :func:`mlp` — the Linear-BN-ReLU projector/predictor heads of BYOL, SimSiam, MoCo v3, Barlow Twins and
  VICReg. The heads are discarded after pre-training (the study keeps only the encoder). Under DDP on GPUs
  :func:`medrobust.engine.train.fit` turns their BatchNorm into SyncBatchNorm (global-batch statistics, as the
  papers); on CPU (gloo, which SyncBatchNorm does not support) the statistics are per rank. The encoders use
  GroupNorm.
"""

from __future__ import annotations

import copy

import torch
import torch.distributed as dist
from torch import nn

from medrobust.engine.distributed import world_size


def frozen_copy(module: nn.Module) -> nn.Module:
    """A deep copy of ``module`` with every parameter frozen (``requires_grad=False``): the EMA teacher."""
    teacher = copy.deepcopy(module)
    teacher.requires_grad_(False)
    return teacher


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """``θ_t ← m·θ_t + (1 − m)·θ_s`` for every parameter; buffers (e.g. BN statistics) are copied.

    Args:
        teacher: the momentum copy (same architecture as ``student``), updated in place.
        student: the online network trained by the optimiser.
        momentum: ``m`` in [0, 1]; 1 keeps the teacher fixed, 0 copies the student.
    """
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"momentum must be in [0, 1], got {momentum}")
    t_params, s_params = list(teacher.parameters()), list(student.parameters())
    if len(t_params) != len(s_params):
        raise ValueError(f"teacher has {len(t_params)} parameters but student has {len(s_params)}; "
                         "the teacher must be a copy of the student")
    for t, s in zip(t_params, s_params):
        t.mul_(momentum).add_(s.detach(), alpha=1.0 - momentum)
    for t, s in zip(teacher.buffers(), student.buffers()):
        t.copy_(s)


@torch.no_grad()
def gather_no_grad(x: torch.Tensor) -> torch.Tensor:
    """``x`` ([n, ...]) from every rank concatenated along dim 0, without gradient; identity in one process."""
    if world_size() == 1:
        return x.detach()
    parts = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(parts, x.detach().contiguous())
    return torch.cat(parts, dim=0)


@torch.no_grad()
def all_reduce_mean(x: torch.Tensor) -> torch.Tensor:
    """The mean of ``x`` over ranks (a new tensor); ``x`` itself in one process."""
    if world_size() == 1:
        return x.detach()
    out = x.detach().clone()
    dist.all_reduce(out)
    return out / world_size()


def mlp(in_dim: int, hidden: int, out: int, layers: int = 2, last_bn: bool = False) -> nn.Sequential:
    """``layers`` Linear layers with BatchNorm1d + ReLU between them (BYOL/SimSiam heads).

    ``last_bn`` adds a BatchNorm1d (no affine) after the output, as SimSiam's and MoCo v3's projectors do.
    The heads only ever see training batches (they are dropped after pre-training), so their BatchNorm
    always uses the statistics of the batch (``track_running_stats=False``), in eval mode too: a loss
    computed on a batch means the same thing in both modes.
    """
    if layers < 1:
        raise ValueError(f"mlp needs at least 1 layer, got {layers}")
    mods: list[nn.Module] = []
    dim = in_dim
    for _ in range(layers - 1):
        mods += [nn.Linear(dim, hidden, bias=False), nn.BatchNorm1d(hidden, track_running_stats=False),
                 nn.ReLU(inplace=True)]
        dim = hidden
    mods.append(nn.Linear(dim, out, bias=not last_bn))
    if last_bn:
        mods.append(nn.BatchNorm1d(out, affine=False, track_running_stats=False))
    return nn.Sequential(*mods)
