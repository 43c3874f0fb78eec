"""Ultrasound (B-mode) corruptions: Rayleigh speckle, acoustic shadowing and a time-gain-compensation error.

Axis convention: the image rows (axis -2, ``H``) are depth, the transducer at row 0, so "downwards" is
increasing row index; the columns (axis -1) are lateral; for 3D volumes ``[N, C, D, H, W]`` the extra axis D
is the elevational (second lateral) direction. Random fields and shadows are drawn once per image and shared
by its channels (B-mode is grayscale; RGB copies of it stay gray). All are vectorised over the batch and draw
every random number from ``generator``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from medrobust.corruptions.base import begin, finish, param, rand, randn, severity_table
from medrobust.registry import register

#: mean of a Rayleigh(sigma = 1) variable, sqrt(pi / 2)
RAYLEIGH_MEAN = math.sqrt(math.pi / 2.0)
#: correlation length (std of the Gaussian point-spread function, pixels) of the speckle grain
SPECKLE_PSF_SIGMA = 0.8


def _gaussian_transfer(spatial: tuple[int, ...], sigma: float, like: Tensor) -> Tensor:
    """Transfer function of a Gaussian blur of std ``sigma`` (pixels) on the DFT grid (circular), real, ``spatial``."""
    h = torch.ones(spatial, dtype=like.dtype, device=like.device)
    for axis, n in enumerate(spatial):
        f = torch.fft.fftfreq(n, dtype=like.dtype, device=like.device)
        shape = [1] * len(spatial)
        shape[axis] = n
        h = h * torch.exp(-2.0 * math.pi**2 * sigma**2 * f**2).view(shape)
    return h


def rayleigh_field(shape: tuple[int, ...], generator: torch.Generator | None, like: Tensor,
                   psf_sigma: float = SPECKLE_PSF_SIGMA) -> Tensor:
    """Spatially correlated Rayleigh(sigma = 1) amplitudes, one field per image: ``[N, 1, *spatial]``.

    A circular complex white Gaussian scatterer field is filtered (circularly, via the FFT) with a Gaussian
    point-spread function and normalised to unit variance per component, then envelope-detected (``|.|``).
    Filtering keeps the field Gaussian and circular, so every pixel's amplitude is exactly Rayleigh with
    ``sigma = 1`` (mean ``sqrt(pi / 2)``, variance ``(4 - pi) / 2``) while neighbours are correlated.
    """
    n, spatial = shape[0], tuple(shape[2:])
    re = randn((n, 1, *spatial), generator, like)
    im = randn((n, 1, *spatial), generator, like)
    h = _gaussian_transfer(spatial, psf_sigma, like)
    dims = tuple(range(2, 2 + len(spatial)))
    z = torch.fft.ifftn(torch.fft.fftn(torch.complex(re, im), dim=dims) * h, dim=dims)
    norm = torch.sqrt((h**2).mean())  # per-component std of the filtered unit white noise
    return z.abs() / norm


@register("corruption", "rayleigh-speckle")
@severity_table((0.2, 0.35, 0.5, 0.7, 1.0), stochastic=True, family="noise")
def rayleigh_speckle(x: Tensor, severity: int, generator: torch.Generator | None = None) -> Tensor:
    """Multiplicative speckle with Rayleigh amplitude: ``x * (1 - b + b * A / sqrt(pi / 2))``.

    ``A`` is a Rayleigh(1) field (:func:`rayleigh_field`): fully developed speckle, the envelope of a
    complex Gaussian sum of many sub-resolution scatterers, spatially correlated by a small Gaussian PSF
    (std 0.8 px; circular, 2D over H, W or 3D over D, H, W). ``A / sqrt(pi / 2)`` has mean 1 (so the local
    echogenicity ``x`` is kept on average) and std ``sqrt((4 - pi) / pi)`` = 0.523; ``b`` blends from no speckle
    (0) to fully developed speckle on the envelope (1). Noise std at value ``v``: ``0.523 b v`` (zero where
    ``x = 0``). One field per image, shared by the channels.

    Source: Rayleigh statistics of fully developed speckle (Burckhardt, "Speckle in ultrasound B-mode scans",
    IEEE Trans. Sonics Ultrason. 1978; Goodman, "Speckle Phenomena in Optics", 2007); the multiplicative model
    as in Wagner et al., "Statistics of speckle in ultrasound B-scans", IEEE Trans. Sonics Ultrason. 1983.

    Severity table (b, fraction of fully developed speckle; noise std relative to intensity = 0.523 b):
    1: 0.2 (0.10), 2: 0.35 (0.18), 3: 0.5 (0.26), 4: 0.7 (0.37), 5: 1.0 (0.52).
    """
    xw = begin(x, severity, "rayleigh-speckle")
    b = float(param(rayleigh_speckle, severity))
    amp = rayleigh_field(tuple(xw.shape), generator, xw) / RAYLEIGH_MEAN
    return finish(xw * (1.0 - b + b * amp), x)


#: most shadows one image gets (severity 5); all are drawn at every severity so fewer are a subset
MAX_SHADOWS = 3


def shadow_transmission(shape: tuple[int, ...], severity_param: tuple[int, float, float],
                        generator: torch.Generator | None, like: Tensor) -> Tensor:
    """Transmission ``prod_i (1 - darkness * m_i)`` of the shadows of ``acoustic-shadowing``: ``[N, 1, *spatial]``.

    Per image :data:`MAX_SHADOWS` shadows are drawn (the same draws at every severity; the first ``n`` used):
    start depth ``r0`` uniform in [0.2, 0.6] of the height, lateral centre uniform in [0.15, 0.85] of the
    width (and of the elevation for volumes), cone spread ``k`` uniform in [0, 1] (half-width grows as
    ``w (1 + k (depth - r0))``, depth in units of the height). Mask ``m_i`` = lateral soft edge (1.5 px linear
    ramp of the coarser lateral axis) times onset ``clip((row - r0 * H) / 2, 0, 1)``: exactly 0 at and above the start row.
    """
    n_shadows, half_width, darkness = severity_param
    n, spatial = shape[0], tuple(shape[2:])
    h, w = spatial[-2], spatial[-1]
    u = rand((n, MAX_SHADOWS, 4), generator, like)  # start depth, lateral (W), elevation (D), spread
    rows = torch.arange(h, dtype=like.dtype, device=like.device) + 0.5  # pixel centres
    cols = (torch.arange(w, dtype=like.dtype, device=like.device) + 0.5) / w
    out = torch.ones((n, 1, *spatial), dtype=like.dtype, device=like.device)
    # lateral soft edge (1.5 px of the coarser lateral axis), so every shadow touches some pixels
    edge = 1.5 / min(spatial[0], w) if len(spatial) == 3 else 1.5 / w
    for i in range(n_shadows):
        r0 = (0.2 + 0.4 * u[:, i, 0]) * h  # [N], start row (pixel units)
        c0 = 0.15 + 0.7 * u[:, i, 1]
        spread = u[:, i, 3]
        # depth below the start, in units of the height: [N, H]
        below = (rows[None, :] - r0[:, None]).clamp(min=0.0) / h
        onset = ((rows[None, :] - r0[:, None]) / 2.0).clamp(0.0, 1.0)  # [N, H]
        hw = half_width * (1.0 + spread[:, None] * below)  # [N, H]
        if len(spatial) == 2:
            dist = (cols[None, :] - c0[:, None]).abs()  # [N, W]
            dist = dist[:, None, :]  # [N, 1, W]
        else:
            d = spatial[0]
            elev = (torch.arange(d, dtype=like.dtype, device=like.device) + 0.5) / d
            e0 = 0.15 + 0.7 * u[:, i, 2]
            dist = torch.sqrt((cols[None, None, :] - c0[:, None, None]) ** 2
                              + (elev[None, :, None] - e0[:, None, None]) ** 2)  # [N, D, W]
            dist = dist[:, :, None, :]  # [N, D, 1, W]
        if len(spatial) == 2:
            lateral = ((hw[:, :, None] - dist) / edge + 0.5).clamp(0.0, 1.0)  # [N, H, W]
            mask = lateral * onset[:, :, None]
        else:
            lateral = ((hw[:, None, :, None] - dist) / edge + 0.5).clamp(0.0, 1.0)  # [N, D, H, W]
            mask = lateral * onset[:, None, :, None]
        out = out * (1.0 - darkness * mask[:, None])
    return out


@register("corruption", "acoustic-shadowing")
@severity_table(((1, 0.05, 0.5), (1, 0.07, 0.7), (2, 0.07, 0.75), (2, 0.09, 0.85), (3, 0.09, 0.9)),
                stochastic=True, family="acquisition")
def acoustic_shadowing(x: Tensor, severity: int, generator: torch.Generator | None = None) -> Tensor:
    """Acoustic shadows: dark bands / cones that start at a random depth and extend to the bottom of the image.

    A strongly reflecting or attenuating structure (calcification, bone, gas, a stone) blocks the beam, so
    everything below it is dark. ``x * prod_i (1 - darkness * m_i)`` with the masks of
    :func:`shadow_transmission`: each shadow starts at a random depth (20-60 % of the height) and lateral
    position, widens downwards with a random spread (0 = straight band of a linear probe, up to a cone),
    and has soft lateral edges; pixels at or above a shadow's start row are untouched. Volumes get circular
    cross-section shadows over the (elevation, lateral) plane. The draws do not depend on the severity, so a
    higher severity darkens the same places more (and adds shadows).

    Source: the acoustic-shadowing artefact (Feldman et al., "US artifacts", RadioGraphics 2009); the dark
    posterior band / cone model is our simplification (no reverberation or edge shadows).

    Severity table ((number of shadows, half-width at the start as a fraction of the width, darkness =
    fraction of signal removed)): 1: (1, 0.05, 0.5), 2: (1, 0.07, 0.7), 3: (2, 0.07, 0.75),
    4: (2, 0.09, 0.85), 5: (3, 0.09, 0.9).
    """
    xw = begin(x, severity, "acoustic-shadowing")
    t = shadow_transmission(tuple(xw.shape), param(acoustic_shadowing, severity), generator, xw)
    return finish(xw * t, x)


def tgc_gain(shape: tuple[int, ...], error_db: float, generator: torch.Generator | None, like: Tensor) -> Tensor:
    """Depth-dependent gain of ``ultrasound-gain``: ``10 ** (s * error_db * t / 20)``, ``[N, 1, *spatial]``.

    ``t`` = row / (H - 1) in [0, 1] (0 at the transducer), ``s = +1`` (over-compensation) or ``-1``
    (under-compensation), drawn per image from ``generator`` with equal probability.
    """
    n, spatial = shape[0], tuple(shape[2:])
    h = spatial[-2]
    sign = torch.where(rand((n,), generator, like) < 0.5, -1.0, 1.0).to(like.dtype)  # [N]
    t = torch.linspace(0.0, 1.0, h, dtype=like.dtype, device=like.device) if h > 1 else like.new_zeros(1)
    db = sign[:, None] * error_db * t[None, :]  # [N, H]
    view = (n, 1) + (1,) * (len(spatial) - 2) + (h, 1)
    return (10.0 ** (db / 20.0)).view(view).expand(n, 1, *spatial)


@register("corruption", "ultrasound-gain")
@severity_table((2.0, 4.0, 6.0, 9.0, 12.0), stochastic=True, family="intensity")
def ultrasound_gain(x: Tensor, severity: int, generator: torch.Generator | None = None) -> Tensor:
    """Time-gain-compensation error: a multiplicative gain ramp, linear in dB with depth, over or under.

    TGC amplifies echoes from deeper (later) tissue to compensate attenuation (about 0.5-1 dB/cm/MHz); set
    wrongly, the image brightens (over-compensation) or fades (under-compensation) with depth:
    ``x * 10 ** (s * g * t / 20)`` with ``t`` the depth as a fraction of the image height (0 at the top row,
    1 at the bottom row) and the direction ``s = +-1`` drawn per image (:func:`tgc_gain`). The top row is
    unchanged; the bottom row's gain is ``10 ** (+-g / 20)``. Over-compensated regions saturate at 1.

    Source: time-gain compensation (Szabo, "Diagnostic Ultrasound Imaging: Inside Out", 2nd ed. 2014, ch. 10);
    gain / TGC mis-setting is a standard operator artefact (Feldman et al., RadioGraphics 2009).

    Severity table (g, gain error at the bottom of the image in dB; bottom gain for under / over):
    1: 2 (0.79 / 1.26), 2: 4 (0.63 / 1.58), 3: 6 (0.50 / 2.00), 4: 9 (0.35 / 2.82), 5: 12 (0.25 / 3.98).
    """
    xw = begin(x, severity, "ultrasound-gain")
    g = float(param(ultrasound_gain, severity))
    return finish(xw * tgc_gain(tuple(xw.shape), g, generator, xw), x)


__all__ = [
    "RAYLEIGH_MEAN", "SPECKLE_PSF_SIGMA", "MAX_SHADOWS", "rayleigh_field", "shadow_transmission", "tgc_gain",
    "rayleigh_speckle", "acoustic_shadowing", "ultrasound_gain",
]
