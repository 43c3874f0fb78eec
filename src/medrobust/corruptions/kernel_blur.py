"""MedMNIST-C / ImageNet-C kernel blurs of 2D images: defocus (disk), motion (line), zoom (radial average).

After Hendrycks & Dietterich, "Benchmarking Neural Network Robustness to Common Corruptions and
Perturbations", ICLR 2019 (ImageNet-C ``defocus_blur``, ``motion_blur``, ``zoom_blur``) with the MedMNIST-C
adaptations (Di Salvo et al. 2024, github.com/francescodisalvo05/medmnistc-api ``corruptions/filter.py``).
MedMNIST-C corrupts the 224 px MedMNIST+ images; the kernel sizes here are scaled for 28-64 px inputs.
Batched: one (grouped) convolution per call, edges replicated.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from medrobust.corruptions.base import begin, finish, param, rand, severity_table
from medrobust.registry import register


def disk_kernel(radius: float, *, dtype: torch.dtype = torch.float32, device=None) -> Tensor:
    """Flat disk ``{(i, j): i^2 + j^2 <= radius^2}`` normalised to sum 1: ``[2R+1, 2R+1]``, ``R = floor(radius)``."""
    r = int(math.floor(radius))
    i = torch.arange(-r, r + 1, dtype=torch.float64, device=device)
    disk = ((i[:, None] ** 2 + i[None, :] ** 2) <= radius**2).to(torch.float64)
    return (disk / disk.sum()).to(dtype)


def line_kernels(length: float, angles: Tensor) -> Tensor:
    """Centred line kernels of ``length`` px at ``angles`` (radians), anti-aliased by bilinear splatting.

    Returns ``[N, K, K]`` (``K`` odd), each summing to 1 and point-symmetric about the centre.
    """
    r = int(math.ceil((length - 1) / 2)) + 1
    n_samples = int(4 * length) + 1
    t = torch.linspace(-(length - 1) / 2, (length - 1) / 2, n_samples, dtype=angles.dtype, device=angles.device)
    sy = t[None, :] * torch.sin(angles)[:, None]  # [N, S]
    sx = t[None, :] * torch.cos(angles)[:, None]
    grid = torch.arange(-r, r + 1, dtype=angles.dtype, device=angles.device)
    wy = (1 - (grid[None, None, :] - sy[..., None]).abs()).clamp(min=0)  # [N, S, K]
    wx = (1 - (grid[None, None, :] - sx[..., None]).abs()).clamp(min=0)
    k = torch.einsum("nsy,nsx->nyx", wy, wx)
    return k / k.sum(dim=(1, 2), keepdim=True)


def convolve_per_image(x: Tensor, kernels: Tensor) -> Tensor:
    """Convolve each image of ``[N, C, H, W]`` with its own ``[N, K, K]`` (or one shared ``[K, K]``) kernel."""
    n, c, h, w = x.shape
    if kernels.ndim == 2:
        kernels = kernels.expand(n, *kernels.shape)
    k = kernels.shape[-1]
    weight = kernels.to(x.dtype).repeat_interleave(c, dim=0).unsqueeze(1)  # [N*C, 1, K, K]
    padded = F.pad(x.reshape(1, n * c, h, w), (k // 2,) * 4, mode="replicate")
    return F.conv2d(padded, weight.flip(-1, -2), groups=n * c).reshape(n, c, h, w)


def _check_2d(x: Tensor, who: str) -> None:
    if x.ndim != 4:
        raise ValueError(f"{who} is defined for 2D images [N, C, H, W], got shape {tuple(x.shape)}")


@register("corruption", "defocus-blur")
@severity_table((1.0, 1.5, 2.0, 2.5, 3.0), stochastic=False, family="blur", dims=(2,))
def defocus_blur(x: Tensor, severity: int, generator: torch.Generator | None = None) -> Tensor:
    """Out-of-focus blur: convolution with a flat disk (pillbox) point-spread function.

    Source: ImageNet-C / MedMNIST-C ``defocus_blur`` (disk of radius r, then an anti-alias Gaussian of sigma
    0.1..0.5, applied with ``cv2.filter2D``). The anti-alias Gaussian is left out, so the PSF is exactly the
    disk ``i^2 + j^2 <= r^2`` normalised to 1. Deterministic.

    Severity table (disk radius r in px; pixels in the disk): 1: 1.0 (5), 2: 1.5 (9), 3: 2.0 (13), 4: 2.5 (21),
    5: 3.0 (29) (MedMNIST-C uses r = 3..8 at 224 px).
    """
    xw = begin(x, severity, "defocus-blur")
    _check_2d(xw, "defocus-blur")
    kernel = disk_kernel(param(defocus_blur, severity), dtype=xw.dtype, device=xw.device)
    return finish(convolve_per_image(xw, kernel), x)


@register("corruption", "motion-blur")
@severity_table((3.0, 5.0, 7.0, 9.0, 12.0), stochastic=True, family="blur", dims=(2,))
def motion_blur(x: Tensor, severity: int, generator: torch.Generator | None = None) -> Tensor:
    """Linear motion blur: convolution with a centred line of ``L`` px at a random angle per image.

    Source: ImageNet-C / MedMNIST-C ``motion_blur`` (ImageMagick ``motion_blur(radius, sigma, angle)`` with the
    angle ~ U(-45, 45) degrees). Here the line is uniform (box profile), centred, anti-aliased by bilinear
    splatting, angle ~ U(0, 180) degrees drawn per image from ``generator`` (the same at every severity).
    Patient / probe motion during acquisition.

    Severity table (line length L in px): 1: 3, 2: 5, 3: 7, 4: 9, 5: 12 (MedMNIST-C radius 5..20 at 224 px).
    """
    xw = begin(x, severity, "motion-blur")
    _check_2d(xw, "motion-blur")
    angles = rand((xw.shape[0],), generator, xw).double() * math.pi
    kernels = line_kernels(param(motion_blur, severity), angles)
    return finish(convolve_per_image(xw, kernels), x)


def zoom(x: Tensor, factor: float) -> Tensor:
    """Bilinear zoom by ``factor`` about the image centre, keeping the size (ImageNet-C ``clipped_zoom``)."""
    n, _, h, w = x.shape
    ys = torch.linspace(-1 + 1 / h, 1 - 1 / h, h, dtype=x.dtype, device=x.device) / factor
    xs = torch.linspace(-1 + 1 / w, 1 - 1 / w, w, dtype=x.dtype, device=x.device) / factor
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    grid = torch.stack([gx, gy], dim=-1).expand(n, h, w, 2)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


@register("corruption", "zoom-blur")
@severity_table(((1.10, 0.01), (1.15, 0.01), (1.20, 0.02), (1.24, 0.02), (1.30, 0.03)), stochastic=False,
                family="blur", dims=(2,))
def zoom_blur(x: Tensor, severity: int, generator: torch.Generator | None = None) -> Tensor:
    """Zoom blur: the mean of the image and copies zoomed about the centre by 1, 1 + s, ..., z_max.

    Source: ImageNet-C / MedMNIST-C ``zoom_blur`` (``(x + sum_z clipped_zoom(x, z)) / (n_z + 1)``, zooms
    ``np.arange(1, z_max, step)``; the DermaMNIST table). Axial motion of the camera / dermatoscope.
    Deterministic.

    Severity table ((z_max, step), zooms 1..z_max inclusive): 1: (1.10, 0.01), 2: (1.15, 0.01),
    3: (1.20, 0.02), 4: (1.24, 0.02), 5: (1.30, 0.03).
    """
    xw = begin(x, severity, "zoom-blur")
    _check_2d(xw, "zoom-blur")
    z_max, step = param(zoom_blur, severity)
    factors = [1 + k * step for k in range(int(round((z_max - 1) / step)) + 1)]
    out = xw.clone()
    for factor in factors:
        out = out + zoom(xw, factor)
    return finish(out / (len(factors) + 1), x)
