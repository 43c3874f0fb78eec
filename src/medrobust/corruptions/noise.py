"""Noise corruptions: additive Gaussian, Poisson (shot / X-ray quantum) and multiplicative speckle.

Formulas follow Hendrycks & Dietterich, "Benchmarking Neural Network Robustness to Common Corruptions and
Perturbations", ICLR 2019 (ImageNet-C); the severity tables are re-calibrated for 28-64 px grayscale medical
images in [0, 1] after Di Salvo et al., "MedMNIST-C", 2024 (OrganMNIST tables), whose values are the
ImageNet-C ones made milder at severity 1.

All three are fully vectorised and draw every random number from ``generator``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from medrobust.corruptions.base import begin, finish, param, randn, severity_table
from medrobust.registry import register


@register("corruption", "gaussian-noise")
@severity_table((0.04, 0.08, 0.12, 0.16, 0.20), stochastic=True, family="noise")
def gaussian_noise(x: Tensor, severity: int, generator: torch.Generator | None = None) -> Tensor:
    """Additive white Gaussian noise, ``x + sigma * N(0, 1)`` per pixel, then clamp to [0, 1].

    Source: ImageNet-C ``gaussian_noise`` (Hendrycks & Dietterich 2019). Electronic/thermal detector noise.

    Severity table (sigma, in [0, 1] intensity units): 1: 0.04, 2: 0.08, 3: 0.12, 4: 0.16, 5: 0.20
    (ImageNet-C uses 0.08..0.38 for 224 px natural images).

    Args:
        x: images ``[N, C, H, W]`` or ``[N, C, D, H, W]`` in [0, 1].
        severity: 1..5.
        generator: source of the noise.

    Returns:
        A new tensor like ``x``, clamped to [0, 1].
    """
    xw = begin(x, severity, "gaussian-noise")
    sigma = param(gaussian_noise, severity)
    return finish(xw + sigma * randn(xw.shape, generator, xw), x)


@register("corruption", "shot-noise")
@severity_table((200.0, 100.0, 50.0, 25.0, 15.0), stochastic=True, family="noise")
def shot_noise(x: Tensor, severity: int, generator: torch.Generator | None = None) -> Tensor:
    """Poisson (shot) noise, ``Poisson(x * lam) / lam``: photon-counting / X-ray quantum noise.

    Source: ImageNet-C ``shot_noise`` (Hendrycks & Dietterich 2019). ``lam`` is the number of detected quanta
    at full intensity, so the noise std at intensity ``v`` is ``sqrt(v / lam)`` (signal dependent: darker
    regions are relatively noisier, as in low-dose radiographs).

    Severity table (lam, quanta per unit intensity; lower = stronger): 1: 200, 2: 100, 3: 50, 4: 25, 5: 15
    (std at mid-gray 0.5: 0.050, 0.071, 0.100, 0.141, 0.183; ImageNet-C uses lam 60..3).

    Args:
        x: images ``[N, C, H, W]`` or ``[N, C, D, H, W]`` in [0, 1].
        severity: 1..5.
        generator: source of the Poisson draws.

    Returns:
        A new tensor like ``x``, clamped to [0, 1].
    """
    xw = begin(x, severity, "shot-noise")
    lam = param(shot_noise, severity)
    device = generator.device if generator is not None else xw.device
    rates = (xw.clamp(0.0, 1.0) * lam).to(device)  # Poisson needs non-negative rates
    counts = torch.poisson(rates, generator=generator).to(xw.device)
    return finish(counts / lam, x)


@register("corruption", "speckle-noise")
@severity_table((0.05, 0.10, 0.20, 0.30, 0.40), stochastic=True, family="noise")
def speckle_noise(x: Tensor, severity: int, generator: torch.Generator | None = None) -> Tensor:
    """Multiplicative speckle noise, ``x + x * sigma * N(0, 1)``: ultrasound / OCT-like granular noise.

    Source: ImageNet-C ``speckle_noise`` (Hendrycks & Dietterich 2019), the multiplicative Gaussian model of
    fully developed speckle after log-compression; bright tissue is perturbed most, dark background least.

    Severity table (sigma, relative to intensity): 1: 0.05, 2: 0.10, 3: 0.20, 4: 0.30, 5: 0.40
    (ImageNet-C uses 0.15..0.60).

    Args:
        x: images ``[N, C, H, W]`` or ``[N, C, D, H, W]`` in [0, 1].
        severity: 1..5.
        generator: source of the noise.

    Returns:
        A new tensor like ``x``, clamped to [0, 1].
    """
    xw = begin(x, severity, "speckle-noise")
    sigma = param(speckle_noise, severity)
    return finish(xw * (1.0 + sigma * randn(xw.shape, generator, xw)), x)
