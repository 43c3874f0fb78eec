"""Masks and patch helpers for masked multimodal reconstruction (``mmr``, ``robust-mmr``).

Random masks follow MAE (He et al. 2022, "Masked Autoencoders Are Scalable Vision Learners": a random
permutation per image, the first ``round(ratio * P)`` positions masked) and BERT (Devlin et al. 2019) for
report tokens. Saliency masks follow the perturbation-aware masking of Robust-MMR (Filvantorkaman & Piri
2026): a fraction of each mask goes to the positions the current model is most sensitive to, the rest is
random. Written by hand: a few tensor lines each, randomness only from the given ``torch.Generator``. Patches
are squares (2D) or cubes (3D); sizes that are not a multiple of the patch use the border-padded
:func:`patch_grid` (:func:`pad_to_multiple` for pixel targets).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _check_ratio(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")


def mask_counts(valid: torch.Tensor, ratio: float) -> torch.Tensor:
    """Positions to mask per row: ``round(ratio * n_valid)``, at least 1 where a row has a valid position.

    Args:
        valid: ``bool [n, p]``, the positions that may be masked.

    Returns:
        ``int64 [n]``.
    """
    _check_ratio("mask ratio", ratio)
    n_valid = valid.sum(dim=1)  # [n]
    k = torch.round(ratio * n_valid.double()).long()  # round half to even, as Python's round
    return torch.minimum(k.clamp_min(1), n_valid)


def _top_k_per_row(priority: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """``bool [n, p]``: the ``k[i]`` highest-priority positions of each row (ties by position order)."""
    order = priority.argsort(dim=1, descending=True, stable=True)  # [n, p]
    ranks = order.argsort(dim=1)  # rank of every position in its row
    return ranks < k.unsqueeze(1)


def random_mask(n: int, p: int, ratio: float, generator: torch.Generator, valid: torch.Tensor | None = None,
                device: torch.device | str | None = None) -> torch.Tensor:
    """A uniformly random mask with exactly :func:`mask_counts` positions per row.

    Args:
        n, p: rows (images / reports) and positions (patches / tokens).
        ratio: fraction of the (valid) positions to mask.
        generator: CPU generator; the draw is ``torch.rand(n, p)``.
        valid: optional ``bool [n, p]``; invalid positions (e.g. padding) are never masked.

    Returns:
        ``bool [n, p]``, True = masked.
    """
    valid = torch.ones(n, p, dtype=torch.bool) if valid is None else valid.cpu()
    priority = torch.rand(n, p, generator=generator).masked_fill(~valid, -1.0)  # [n, p]
    mask = _top_k_per_row(priority, mask_counts(valid, ratio)) & valid
    return mask.to(device) if device is not None else mask


def saliency_mask(scores: torch.Tensor, ratio: float, saliency_frac: float, generator: torch.Generator,
                  valid: torch.Tensor | None = None) -> torch.Tensor:
    """A mask whose first ``round(saliency_frac * k)`` positions are the highest-scoring ones, the rest random.

    ``k`` per row is :func:`mask_counts` (the same count as :func:`random_mask`); ``saliency_frac = 0`` is a
    random mask, ``1`` the top-``k`` positions by score.

    Args:
        scores: ``[n, p]`` sensitivity of each position (e.g. gradient norm per patch / token).
        ratio: fraction of the (valid) positions to mask.
        saliency_frac: fraction of each row's mask chosen by score.
        generator: CPU generator for the random part (``torch.rand(n, p)``).
        valid: optional ``bool [n, p]``; invalid positions are never masked.

    Returns:
        ``bool [n, p]`` on the device of ``scores``, True = masked.
    """
    _check_ratio("saliency_frac", saliency_frac)
    n, p = scores.shape
    s = scores.detach().float().cpu()
    valid = torch.ones(n, p, dtype=torch.bool) if valid is None else valid.cpu()
    k = mask_counts(valid, ratio)  # [n]
    k_salient = torch.round(saliency_frac * k.double()).long()  # [n]
    salient = _top_k_per_row(s.masked_fill(~valid, float("-inf")), k_salient) & valid  # [n, p]
    priority = torch.rand(n, p, generator=generator)  # [0, 1): random fill of the rest
    priority = priority.masked_fill(salient, 2.0).masked_fill(~valid, -1.0)
    return (_top_k_per_row(priority, k) & valid).to(scores.device)


def patchify(x: torch.Tensor, patch_size: int, who: str = "mmr") -> torch.Tensor:
    """Non-overlapping square (cubic) patches in raster order: ``[N, C, *spatial] -> [N, P, C · ps^d]``, pixels
    inside a patch in (channel, spatial...) order (2D: ``[N, C, H, W] -> [N, P, C·ps·ps]``)."""
    if x.ndim not in (4, 5):
        raise ValueError(f"{who}: masked image modelling needs images [N, C, H, W] or volumes [N, C, D, H, W]; "
                         f"got shape {tuple(x.shape)}")
    n, c, *size = x.shape
    if any(s % patch_size for s in size):
        raise ValueError(f"{who}: image size {'x'.join(map(str, size))} is not divisible by patch_size {patch_size}")
    d, grid = len(size), [s // patch_size for s in size]
    x = x.reshape([n, c] + [v for g in grid for v in (g, patch_size)])
    x = x.permute([0] + [2 + 2 * i for i in range(d)] + [1] + [3 + 2 * i for i in range(d)])  # [N, *grid, C, ps..]
    return x.reshape(n, math.prod(grid), c * patch_size ** d)


def patch_grid(image_shape: tuple[int, ...], patch_size: int) -> tuple[int, ...]:
    """``(⌈s / ps⌉, ...)`` over the spatial axes of ``[N, C, *spatial]``: the grid of (border-padded) patches."""
    return tuple(math.ceil(s / patch_size) for s in image_shape[2:])


def pad_to_multiple(x: torch.Tensor, patch_size: int, mode: str = "replicate") -> torch.Tensor:
    """``[N, C, *spatial]`` padded on the high side of each axis to the next multiple of ``patch_size``
    (``"replicate"``: the border pixels repeated; ``"constant"``: zeros). Unchanged when already a multiple."""
    pad = [v for s in reversed(x.shape[2:]) for v in (0, -s % patch_size)]
    if not any(pad):
        return x
    return F.pad(x, pad, mode=mode) if mode != "constant" else F.pad(x, pad)


def patch_mask_to_pixels(mask: torch.Tensor, image_shape: tuple[int, ...], patch_size: int) -> torch.Tensor:
    """``bool [N, P]`` patch mask -> ``bool [N, 1, *spatial]`` pixel mask (same raster order as :func:`patchify`
    over the :func:`patch_grid`; border patches cropped to the image)."""
    n, size = image_shape[0], tuple(image_shape[2:])
    m = mask.reshape(n, 1, *patch_grid(image_shape, patch_size))
    for axis in range(len(size)):
        m = m.repeat_interleave(patch_size, dim=2 + axis)
    return m[(slice(None), slice(None)) + tuple(slice(0, s) for s in size)]


def fill_masked(x: torch.Tensor, pixel_mask: torch.Tensor) -> torch.Tensor:
    """Masked pixels replaced by the per-image, per-channel mean of ``x`` ([N, C, *spatial] in [0, 1])."""
    mean = x.mean(dim=tuple(range(2, x.ndim)), keepdim=True)  # [N, C, 1, 1(, 1)]
    return torch.where(pixel_mask, mean.expand_as(x), x)
