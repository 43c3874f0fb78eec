"""MedMNIST-C photometric corruptions: gamma down, brightness down, contrast up, saturation, H&E stain shift,
impulse (salt-and-pepper) noise.

After Di Salvo et al., "MedMNIST-C: Comprehensive benchmark and improved classifier robustness by simulating
realistic image corruptions", 2024 (reference implementation: github.com/francescodisalvo05/medmnistc-api,
``medmnistc/corruptions/{enhance,noise}.py`` and the per-dataset tables in ``registry.py``). MedMNIST-C works on
uint8 PIL images one at a time; these are batched torch versions on float images in [0, 1], for 2D images and
3D volumes alike (all are pointwise). Only ``stain-shift`` and ``impulse-noise`` are random.
"""

from __future__ import annotations

import torch
from torch import Tensor

from medrobust.corruptions.base import begin, finish, param, rand, severity_table
from medrobust.registry import register

#: Ruifrok & Johnston (2001) H&E-DAB stain vectors, rows = haematoxylin, eosin, DAB (``skimage.color.rgb_from_hed``)
RGB_FROM_HED = torch.tensor([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]], dtype=torch.float64)
HED_FROM_RGB = torch.linalg.inv(RGB_FROM_HED)
OD_FLOOR = 1e-6  # skimage's floor before the log (and its normalisation, -log(1e-6))


@register("corruption", "gamma-down")
@severity_table((1.2, 1.4, 1.6, 1.8, 2.0), stochastic=False, family="intensity")
def gamma_down(x: Tensor, severity: int, generator: torch.Generator | None = None) -> Tensor:
    """Power-law response ``x ** (1 / gamma)`` with gamma > 1 growing with severity (mid-tones brighten).

    Source: MedMNIST-C ``gamma_corr_down`` (Di Salvo et al. 2024; ``torchvision adjust_gamma`` with exponent
    0.9..0.4 for Chest/Pneumonia/OrganMNIST). The mirror image of ``gamma``: 0 and 1 are fixed points.

    Severity table (gamma; exponent 1/gamma): 1: 1.2 (0.83), 2: 1.4 (0.71), 3: 1.6 (0.63), 4: 1.8 (0.56),
    5: 2.0 (0.50).
    """
    xw = begin(x, severity, "gamma-down")
    return finish(xw.clamp(min=0.0) ** (1.0 / param(gamma_down, severity)), x)


@register("corruption", "brightness-down")
@severity_table((0.9, 0.8, 0.7, 0.6, 0.5), stochastic=False, family="intensity")
def brightness_down(x: Tensor, severity: int, generator: torch.Generator | None = None) -> Tensor:
    """Under-exposure: scale every intensity by a factor ``f < 1``, ``f * x``.

    Source: MedMNIST-C ``brightness_down`` (``PIL.ImageEnhance.Brightness``, a blend with black, i.e. ``f * x``).
    For RGB this also scales the HSV value by ``f`` with hue and saturation kept.

    Severity table (f, factor kept): 1: 0.9, 2: 0.8, 3: 0.7, 4: 0.6, 5: 0.5 (MedMNIST-C Chest/Derm/Blood).
    """
    xw = begin(x, severity, "brightness-down")
    return finish(xw * param(brightness_down, severity), x)


@register("corruption", "contrast-up")
@severity_table((1.1, 1.2, 1.3, 1.4, 1.6), stochastic=False, family="intensity")
def contrast_up(x: Tensor, severity: int, generator: torch.Generator | None = None) -> Tensor:
    """Contrast gain: stretch each image away from its own mean, ``m + c * (x - m)``, then clip.

    Source: MedMNIST-C ``contrast_up`` (``PIL.ImageEnhance.Contrast`` with factor > 1, which extrapolates away
    from the mean gray). ``m`` is the per-image, per-channel spatial mean (as ``contrast``). Over-windowing /
    saturation of the dynamic range.

    Severity table (c, contrast gain): 1: 1.1, 2: 1.2, 3: 1.3, 4: 1.4, 5: 1.6 (MedMNIST-C Chest/Derm/Path).
    """
    xw = begin(x, severity, "contrast-up")
    mean = xw.mean(dim=tuple(range(2, xw.ndim)), keepdim=True)
    return finish(mean + param(contrast_up, severity) * (xw - mean), x)


@register("corruption", "saturate")
@severity_table((1.15, 1.3, 1.5, 1.75, 2.0), stochastic=False, family="intensity", channels=(3,))
def saturate(x: Tensor, severity: int, generator: torch.Generator | None = None) -> Tensor:
    """Over-saturation of RGB images: HSV saturation multiplied by ``g`` (clipped at 1), hue and value kept.

    Source: MedMNIST-C ``saturate`` (``skimage.color.rgb2hsv``, ``S + c`` with c = 0.05..0.25, ``hsv2rgb``) and
    ImageNet-C ``saturate``. Here the change is a gain ``S' = min(g * S, 1)`` instead of an offset, so gray
    pixels (S = 0, no hue) stay gray: MedMNIST-C's offset turns them red (hue 0). A gain of 1.15..2.0 equals the
    MedMNIST-C offsets at the typical stain saturation S ~ 0.3. Computed exactly without an HSV round trip: with
    ``V = max(R, G, B)`` fixed and hue fixed, every channel moves away from V by ``S' / S``.

    Severity table (g, saturation gain): 1: 1.15, 2: 1.3, 3: 1.5, 4: 1.75, 5: 2.0.
    """
    xw = begin(x, severity, "saturate")
    if xw.shape[1] != 3:
        raise ValueError(f"saturate takes RGB images (3 channels), got {xw.shape[1]}")
    v = xw.amax(dim=1, keepdim=True)
    delta = v - xw.amin(dim=1, keepdim=True)
    tiny = torch.finfo(xw.dtype).tiny
    s = torch.where(v > 0, delta / v.clamp(min=tiny), torch.zeros_like(v))
    ratio = torch.where(s > 0, torch.minimum(torch.full_like(s, param(saturate, severity)), 1.0 / s.clamp(min=tiny)),
                        torch.ones_like(s))
    return finish(v - (v - xw) * ratio, x)


def rgb_to_hed(x: Tensor) -> Tensor:
    """Ruifrok-Johnston colour deconvolution of ``[N, 3, ...]`` RGB in [0, 1] into H, E, D stain densities.

    Same scale as ``skimage.color.rgb2hed`` (optical density ``-log(max(rgb, 1e-6))`` divided by
    ``-log(1e-6)``), but without skimage's clipping of negative densities, so :func:`hed_to_rgb` inverts it.
    """
    od = torch.log(x.clamp(min=OD_FLOOR)) / torch.log(torch.tensor(OD_FLOOR, dtype=torch.float64)).item()
    return torch.einsum("nc...,cs->ns...", od, HED_FROM_RGB.to(x.dtype).to(x.device))


def hed_to_rgb(stains: Tensor) -> Tensor:
    """Inverse of :func:`rgb_to_hed` (``skimage.color.hed2rgb`` before its clip to [0, 1])."""
    scale = -torch.log(torch.tensor(OD_FLOOR, dtype=torch.float64)).item()
    log_rgb = -torch.einsum("ns...,sc->nc...", stains * scale, RGB_FROM_HED.to(stains.dtype).to(stains.device))
    return torch.exp(log_rgb)


def stain_jitter(x: Tensor, alpha: Tensor, beta: Tensor) -> Tensor:
    """``hed_to_rgb(alpha * rgb_to_hed(x) + beta)`` with per-image H/E/D factors ``alpha``, offsets ``beta``: [N, 3]."""
    shape = (x.shape[0], 3) + (1,) * (x.ndim - 2)
    return hed_to_rgb(rgb_to_hed(x) * alpha.view(shape) + beta.view(shape))


@register("corruption", "stain-shift")
@severity_table((0.05, 0.1, 0.15, 0.2, 0.3), stochastic=True, family="acquisition", channels=(3,))
def stain_shift(x: Tensor, severity: int, generator: torch.Generator | None = None) -> Tensor:
    """H&E stain variation: random scale and shift of the haematoxylin and eosin densities (HED space).

    Source: Tellez et al., "Whole-slide mitosis detection in H&E breast histology using PHH3 as a reference to
    train distilled stain-invariant convolutional networks", IEEE TMI 2018 (HED augmentation), on the colour
    deconvolution of Ruifrok & Johnston 2001 (``skimage.color.rgb2hed`` / ``hed2rgb`` scale). MedMNIST-C has no
    stain shift; it stands in for scanner / staining-protocol shift on PathMNIST/BloodMNIST-like RGB images.
    Per image, H and E get ``s' = (1 + sigma u) s + (sigma / 20) v`` with u, v ~ U(-1, 1) from ``generator``
    (D is kept); the same draws are used at every severity, only sigma grows.

    Severity table (sigma, relative scale jitter; offset up to sigma/20 in skimage HED units = 0.69 sigma in
    optical density): 1: 0.05, 2: 0.1, 3: 0.15, 4: 0.2, 5: 0.3 (Tellez et al. "HED-light" 0.05, "-strong" 0.2).
    """
    xw = begin(x, severity, "stain-shift")
    if xw.shape[1] != 3:
        raise ValueError(f"stain-shift takes RGB images (3 channels), got {xw.shape[1]}")
    sigma = param(stain_shift, severity)
    u = rand((xw.shape[0], 2, 2), generator, xw) * 2 - 1  # [N, (scale, offset), (H, E)]
    zero = torch.zeros(xw.shape[0], 1, dtype=xw.dtype, device=xw.device)
    alpha = torch.cat([1 + sigma * u[:, 0], zero + 1], dim=1)
    beta = torch.cat([sigma / 20 * u[:, 1], zero], dim=1)
    return finish(stain_jitter(xw, alpha, beta), x)


@register("corruption", "impulse-noise")
@severity_table((0.01, 0.02, 0.03, 0.05, 0.08), stochastic=True, family="noise")
def impulse_noise(x: Tensor, severity: int, generator: torch.Generator | None = None) -> Tensor:
    """Salt-and-pepper noise: a fraction ``p`` of the values (each channel independently) set to 0 or 1.

    Source: ImageNet-C / MedMNIST-C ``impulse_noise`` (``skimage.util.random_noise(mode="s&p", amount=p)``,
    salt and pepper equally likely). Dead / saturated detector pixels, transmission bit errors. Two uniform
    draws per value: ``u < p`` marks it, ``v < 1/2`` makes it pepper (0) else salt (1); a seed thus marks nested
    sets of values as the severity grows.

    Severity table (p, fraction of values hit): 1: 0.01, 2: 0.02, 3: 0.03, 4: 0.05, 5: 0.08
    (MedMNIST-C OrganMNIST table).
    """
    xw = begin(x, severity, "impulse-noise")
    p = param(impulse_noise, severity)
    u = rand((2,) + tuple(xw.shape), generator, xw)
    salt_or_pepper = (u[1] >= 0.5).to(xw.dtype)
    return finish(torch.where(u[0] < p, salt_or_pepper, xw), x)
