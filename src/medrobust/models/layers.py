"""Small building blocks shared by the encoders; 2D vs 3D is an argument (``spatial_dims``), as in MONAI."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


def conv(spatial_dims: int) -> type[nn.Module]:
    """``nn.Conv2d`` or ``nn.Conv3d`` for ``spatial_dims`` 2 or 3."""
    try:
        return {2: nn.Conv2d, 3: nn.Conv3d}[spatial_dims]
    except KeyError:
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}") from None


class InputNorm(nn.Module):
    """Maps ``[0, 1]`` pixels to standardised inputs *inside* the model (DESIGN principle 1).

    Attacks, corruptions and ε budgets all live in ``[0, 1]``; only the network sees normalised values.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], spatial_dims: int):
        super().__init__()
        shape = (1, len(mean)) + (1,) * spatial_dims
        std_t = torch.tensor(list(std), dtype=torch.float32).clamp_min(1e-3)
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(shape))
        self.register_buffer("std", std_t.view(shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [N, C, *spatial] in [0, 1]
        return (x - self.mean) / self.std


def image_stats(images, max_images: int = 4096) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of ``[N, C, *spatial]`` images in ``[0, 1]`` (uint8 or float)."""
    from medrobust.data.base import to_unit

    x = to_unit(images[:max_images])  # [n, C, *spatial]
    dims = [0] + list(range(2, x.ndim))
    return x.mean(dim=dims).tolist(), x.std(dim=dims).tolist()


def signature_of(image_shape) -> str:
    """The input signature of images of shape ``[C, *spatial]`` (or a batch ``[N, C, *spatial]`` given as
    ``image_shape[1:]``): ``"1ch-2d"``, ``"3ch-2d"``, ``"1ch-3d"``. Images of one signature share an input adapter
    of an adapter encoder (``medformer``) and a reconstruction decoder of a pixel-level method; the spatial size
    may differ within a signature."""
    shape = tuple(int(v) for v in image_shape)
    if len(shape) not in (3, 4):
        raise ValueError(f"an image shape is [C, H, W] or [C, D, H, W], got {shape}")
    return f"{shape[0]}ch-{len(shape) - 1}d"


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
