"""Acquisition sites: each hospital's scanner and processing turns the same chest into a different image.

Written by hand (the steps are a few numpy/scipy lines each). A site fixes:

- field of view (:class:`~medrobust.data.synthetic.anatomy.Pose`: zoom, shift, rotation jitter);
- detector blur (Gaussian, in world units so it is the same physical blur at every image size) and
  optional unsharp masking (edge enhancement, common in computed radiography);
- the intensity response ``offset + contrast * I ** gamma``;
- a multiplicative bias field (linear gradient or radial vignetting);
- noise: additive Gaussian (electronic), Poisson (quantum, ``photons`` per unit intensity), or
  multiplicative speckle;
- mildly different finding prevalences (:class:`~medrobust.data.synthetic.findings.Prevalence`).

Site ``D`` (the default held-out site) is the most distinct: washed-out contrast, speckle, strong blur
and a zoomed-out, shifted field of view.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from scipy.ndimage import gaussian_filter

from medrobust.data.synthetic.anatomy import Pose
from medrobust.data.synthetic.findings import Prevalence

SITE_NAMES = ("A", "B", "C", "D")


@dataclass(frozen=True)
class SiteProfile:
    """Appearance and population of one acquisition site."""

    name: str
    description: str
    pose: Pose = field(default_factory=Pose)
    prevalence: Prevalence = field(default_factory=Prevalence)
    gain: float = 1.45  # density -> detector intensity before the response curve
    gamma: float = 1.0
    contrast: float = 0.92
    offset: float = 0.03
    blur: float = 0.0  # Gaussian sigma in world units (1 unit = 1/2 of the image width at zoom 1)
    unsharp: float = 0.0  # unsharp-mask amount (edge enhancement), sigma 0.05 units
    bias: Literal["none", "linear", "radial"] = "none"
    bias_strength: float = 0.0
    noise: Literal["gaussian", "poisson", "speckle"] = "gaussian"
    noise_level: float = 0.015  # gaussian sigma / speckle sigma; photons per unit intensity for poisson


SITES: dict[str, SiteProfile] = {
    "A": SiteProfile(
        "A", "outpatient PA, digital radiography: clean, full contrast, slight electronic noise",
        noise="gaussian", noise_level=0.015),
    "B": SiteProfile(
        "B", "computed radiography: bright gamma, edge enhancement, quantum noise, tighter field, "
        "horizontal exposure gradient",
        pose=Pose(zoom=1.08, shift_y=0.04), prevalence=Prevalence(nodule=0.21, cardiomegaly=0.18),
        gamma=0.75, contrast=0.95, offset=0.0, unsharp=0.8, bias="linear", bias_strength=0.12,
        noise="poisson", noise_level=350.0),
    "C": SiteProfile(
        "C", "portable AP in the ICU: dark gamma, soft blur, vignetting, wide tilted field, more "
        "effusion and consolidation",
        pose=Pose(zoom=0.90, shift_y=0.07, rot_sd=0.06, shift_sd=0.04),
        prevalence=Prevalence(nodule=0.12, cardiomegaly=0.24, effusion=0.15, consolidation=0.20),
        gamma=1.3, contrast=0.95, offset=0.04, blur=0.02, bias="radial", bias_strength=0.25,
        noise="gaussian", noise_level=0.03),
    "D": SiteProfile(
        "D", "old film digitiser: washed-out low contrast, heavy blur, speckle, zoomed-out shifted field",
        pose=Pose(zoom=0.94, shift_x=0.035, shift_y=-0.035),
        prevalence=Prevalence(nodule=0.15, cardiomegaly=0.23, effusion=0.12, consolidation=0.16),
        gamma=1.15, contrast=0.60, offset=0.10, blur=0.03, bias="linear", bias_strength=0.10,
        noise="speckle", noise_level=0.06),
}


def area_downsample(x: np.ndarray, f: int) -> np.ndarray:
    """Average ``f x f`` blocks: ``[B, f*S, f*S] -> [B, S, S]`` (anti-aliasing of supersampled renders)."""
    out = x[:, 0::f, 0::f].copy()
    for i in range(f):
        for j in range(f):
            if i or j:
                out += x[:, i::f, j::f]
    out *= np.float32(1.0 / (f * f))
    return out


def _bias_field(site: SiteProfile, rng: np.random.Generator, b: int, s: int) -> np.ndarray | None:
    """Multiplicative bias field ``float32 [B, S, S]`` (per-image random direction for linear fields)."""
    if site.bias == "none" or site.bias_strength == 0:
        return None
    g = (np.arange(s, dtype=np.float32) + 0.5) / s * 2 - 1
    u, v = g.reshape(1, 1, s), g.reshape(1, s, 1)
    if site.bias == "radial":
        amp = (site.bias_strength * rng.uniform(0.8, 1.2, b)).astype(np.float32).reshape(-1, 1, 1)
        return 1.0 - amp * (u * u + v * v) / 2
    angle = rng.normal(0.0, 0.4, b).reshape(-1, 1, 1).astype(np.float32)  # mostly left-right
    return 1.0 + site.bias_strength * (np.cos(angle) * u + np.sin(angle) * v)


def acquire(density: np.ndarray, site: SiteProfile, rng: np.random.Generator, size: int) -> np.ndarray:
    """Turn supersampled density maps into the site's 8-bit images.

    Args:
        density: ``float32 [B, R, R]`` with ``R`` a multiple of ``size``.
        site: the acquisition profile.
        rng: generator for noise and bias (one stream per site).
        size: output size ``S``.

    Returns:
        ``uint8 [B, 1, S, S]``.
    """
    img = area_downsample(density, density.shape[1] // size)  # [B, S, S]
    px_per_unit = size / 2.0
    if site.blur > 0:
        img = gaussian_filter(img, sigma=(0, site.blur * px_per_unit, site.blur * px_per_unit), mode="nearest")
    if site.unsharp > 0:
        s = 0.05 * px_per_unit
        img = img + site.unsharp * (img - gaussian_filter(img, sigma=(0, s, s), mode="nearest"))
    img = np.clip(img * site.gain, 0.0, 1.0)
    img = site.offset + site.contrast * img ** np.float32(site.gamma)
    bias = _bias_field(site, rng, len(img), size)
    if bias is not None:
        img = img * bias
    img = np.clip(img, 0.0, 1.0).astype(np.float32, copy=False)
    if site.noise == "gaussian":
        img = img + rng.normal(0.0, site.noise_level, img.shape).astype(np.float32)
    elif site.noise == "poisson":
        img = rng.poisson(img * site.noise_level).astype(np.float32) / np.float32(site.noise_level)
    else:  # speckle: multiplicative, mean 1
        img = img * (1.0 + rng.normal(0.0, site.noise_level, img.shape).astype(np.float32))
    out = np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)
    return out[:, None]
