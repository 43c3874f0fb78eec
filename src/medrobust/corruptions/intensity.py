"""Intensity corruptions: contrast loss, gamma (detector response), brightness shift, smooth bias field.

``contrast`` and ``brightness`` follow Hendrycks & Dietterich, "Benchmarking Neural Network Robustness to
Common Corruptions and Perturbations", ICLR 2019 (ImageNet-C); ``gamma`` is MedMNIST-C's ``gamma_corr``
(Di Salvo et al. 2024) in one direction only; ``bias-field`` is the multiplicative smooth polynomial field
of MRI intensity non-uniformity (Sled et al. 1998, N3; as in TorchIO/MONAI ``RandBiasField``: exp of a
low-order polynomial), also a stand-in for X-ray heel effect / uneven illumination.
All are vectorised over the batch; only ``bias-field`` is random.
"""

from __future__ import annotations

import itertools

import torch
from torch import Tensor

from medrobust.corruptions.base import begin, finish, param, randn, severity_table
from medrobust.registry import register

BIAS_FIELD_DEGREE = 3


@register("corruption", "contrast")
@severity_table((0.8, 0.65, 0.5, 0.35, 0.2), stochastic=False, family="intensity")
def contrast(x: Tensor, severity: int, generator: torch.Generator | None = None) -> Tensor:
    """Contrast loss: shrink each image towards its own mean, ``m + c * (x - m)``.

    Source: ImageNet-C ``contrast`` (Hendrycks & Dietterich 2019). ``m`` is the mean of each image and
    channel over its spatial dims, so the per-image mean is kept exactly (the result is a convex combination
    of ``x`` and ``m``, hence already in [0, 1]). Models a low-kVp radiograph / poorly windowed CT.

    Severity table (c, fraction of contrast kept): 1: 0.8, 2: 0.65, 3: 0.5, 4: 0.35, 5: 0.2
    (ImageNet-C uses 0.4..0.05; MedMNIST-C ``contrast_down`` 0.9..0.4).
    """
    xw = begin(x, severity, "contrast")
    c = param(contrast, severity)
    mean = xw.mean(dim=tuple(range(2, xw.ndim)), keepdim=True)  # [N, C, 1, 1(, 1)]
    return finish(mean + c * (xw - mean), x)


@register("corruption", "gamma")
@severity_table((1.2, 1.4, 1.6, 1.8, 2.0), stochastic=False, family="intensity")
def gamma(x: Tensor, severity: int, generator: torch.Generator | None = None) -> Tensor:
    """Power-law intensity response ``x ** gamma`` with gamma > 1 growing with severity (mid-tones darken).

    Source: MedMNIST-C ``gamma_corr_up`` (Di Salvo et al. 2024), a mis-set detector / display gamma. One
    direction only, so distortion grows monotonically with severity; 0 and 1 are fixed points.

    Severity table (gamma): 1: 1.2, 2: 1.4, 3: 1.6, 4: 1.8, 5: 2.0.
    """
    xw = begin(x, severity, "gamma")
    return finish(xw.clamp(min=0.0) ** param(gamma, severity), x)


@register("corruption", "brightness")
@severity_table((0.1, 0.15, 0.2, 0.25, 0.3), stochastic=False, family="intensity")
def brightness(x: Tensor, severity: int, generator: torch.Generator | None = None) -> Tensor:
    """Brightness shift: add ``c`` to the intensity (HSV value for RGB) and clip.

    Source: ImageNet-C ``brightness`` (Hendrycks & Dietterich 2019), which adds ``c`` to the V channel in HSV
    space. For ``C == 3`` this is done exactly without an HSV round trip: with hue and saturation fixed each
    RGB channel scales by ``V' / V`` where ``V = max(R, G, B)``, ``V' = min(V + c, 1)`` (black pixels become
    gray ``V'``). Other channel counts (grayscale) get ``x + c`` per channel. Over-exposure.

    Severity table (c, added intensity): 1: 0.10, 2: 0.15, 3: 0.20, 4: 0.25, 5: 0.30
    (ImageNet-C uses 0.1..0.5).
    """
    xw = begin(x, severity, "brightness")
    c = param(brightness, severity)
    if xw.shape[1] != 3:
        return finish(xw + c, x)
    v = xw.amax(dim=1, keepdim=True)  # [N, 1, ...]
    v_new = (v + c).clamp(max=1.0)
    scale = torch.where(v > 0, v_new / v.clamp(min=torch.finfo(xw.dtype).tiny), torch.zeros_like(v))
    out = torch.where(v > 0, xw * scale, v_new.expand_as(xw))
    return finish(out, x)


def _monomial_basis(sizes: tuple[int, ...], degree: int, like: Tensor) -> Tensor:
    """Monomials of the normalised coordinates with total degree 1..``degree``: ``[prod(sizes), T]``."""
    axes = [torch.linspace(-1.0, 1.0, s, dtype=like.dtype, device=like.device) if s > 1
            else torch.zeros(1, dtype=like.dtype, device=like.device) for s in sizes]
    grids = torch.meshgrid(*axes, indexing="ij")
    coords = [g.reshape(-1) for g in grids]  # each [P]
    terms = []
    for powers in itertools.product(range(degree + 1), repeat=len(sizes)):
        if 1 <= sum(powers) <= degree:
            term = torch.ones_like(coords[0])
            for c, p in zip(coords, powers):
                term = term * c**p
            terms.append(term)
    return torch.stack(terms, dim=1)  # [P, T]


def bias_field_log(shape: tuple[int, ...], generator: torch.Generator | None, like: Tensor) -> Tensor:
    """One random smooth log-field per image, scaled to max |value| = 1: ``[N, 1, *spatial]``.

    Coefficients of the degree-3 monomials are standard normal (from ``generator``); the constant term is
    left out so the field is not just a global brightness change.
    """
    n, spatial = shape[0], tuple(shape[2:])
    basis = _monomial_basis(spatial, BIAS_FIELD_DEGREE, like)  # [P, T]
    coeffs = randn((n, basis.shape[1]), generator, like)  # [N, T]
    poly = coeffs @ basis.T  # [N, P]
    peak = poly.abs().amax(dim=1, keepdim=True)  # [N, 1]
    poly = torch.where(peak > 0, poly / peak.clamp(min=torch.finfo(like.dtype).tiny), poly)
    return poly.reshape(n, 1, *spatial)


@register("corruption", "bias-field")
@severity_table((0.1, 0.2, 0.3, 0.4, 0.5), stochastic=True, family="acquisition")
def bias_field(x: Tensor, severity: int, generator: torch.Generator | None = None) -> Tensor:
    """Smooth multiplicative intensity non-uniformity, ``x * exp(alpha * p(r))``.

    Source: MRI bias field model (Sled et al. 1998; TorchIO/MONAI ``RandBiasField``), applicable to X-ray
    heel effect / vignetting. ``p`` is a random cubic polynomial of the normalised coordinates (2D or 3D),
    drawn per image from ``generator`` and scaled so max |p| = 1; all channels share the field. The same
    generator state gives the same field at every severity, so severity only scales its strength.

    Severity table (alpha = max |log gain|; gain range [e^-a, e^a]): 1: 0.1 (0.90-1.11), 2: 0.2 (0.82-1.22),
    3: 0.3 (0.74-1.35), 4: 0.4 (0.67-1.49), 5: 0.5 (0.61-1.65).
    """
    xw = begin(x, severity, "bias-field")
    log_field = bias_field_log(tuple(xw.shape), generator, xw)  # [N, 1, *spatial]
    return finish(xw * torch.exp(param(bias_field, severity) * log_field), x)
