"""Opt-in multi-process training through PyTorch DDP launched by ``torchrun`` (DESIGN principle 11).

Nothing here starts processes: ``torchrun --nproc_per_node N -m medrobust ...`` does, and sets
``RANK``/``WORLD_SIZE``/``MASTER_ADDR``. :func:`setup` joins that process group (gloo on CPU, nccl on CUDA).
Single-process runs never touch ``torch.distributed``.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def setup(device: torch.device | None = None) -> None:
    """Join the process group described by torchrun's environment variables, if there is one."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return
    backend = "nccl" if device is not None and device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend)


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def broadcast_object(obj):
    """Rank 0's ``obj`` on every rank (identity in a single process)."""
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` ([n, ...]) from every rank along dim 0, keeping gradients; identity in one process.

    Used *explicitly* by contrastive methods before their loss (never hidden inside a loss function): each
    rank then computes the same global-batch loss; the all-gather backward sums gradients over ranks and
    DDP averages them, which gives exactly the single-process gradient of the global batch.
    """
    if world_size() == 1:
        return x
    import torch.distributed.nn.functional as dist_fn

    return torch.cat(dist_fn.all_gather(x), dim=0)
