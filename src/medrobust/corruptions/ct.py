"""CT acquisition corruptions: a mis-set display window, reduced dose (quantum noise) and beam-hardening cupping.

All three read the image in [0, 1] as a CT slice (or volume) displayed through a soft-tissue window of
Hounsfield units, :data:`DEFAULT_LEVEL` / :data:`DEFAULT_WIDTH` (level 40 HU, width 400 HU, so 0 is -160 HU
and 1 is +240 HU); :func:`to_hu` / :func:`from_hu` convert. Values clipped by the original window stay clipped:
the corruptions only see what the display kept. Linear attenuation follows the HU definition
``mu = mu_water * (1 + HU / 1000)`` with :data:`MU_WATER` = 0.02 / mm (water near 60-70 keV effective energy).

CT images are single-channel maps of HU, so the corruptions are declared for 1-channel images only
(``channels=(1,)``); 3D volumes are ``[N, 1, D, H, W]`` with D the axial (slice) axis.
All are vectorised over the batch; only ``ct-low-dose`` is random.
"""

from __future__ import annotations

import torch
from torch import Tensor

from medrobust.corruptions.base import begin, finish, param, randn, severity_table
from medrobust.registry import register

#: the display window the clean image in [0, 1] is assumed to show (HU): soft-tissue / abdomen window
DEFAULT_LEVEL = 40.0
DEFAULT_WIDTH = 400.0
#: linear attenuation coefficient of water (1/mm) near 60-70 keV
MU_WATER = 0.02
#: nominal path length (mm) of the per-pixel pseudo-projection of ``ct-low-dose``
LOW_DOSE_PATH_MM = 200.0
#: std of the Gaussian electronic (detector read-out) noise of ``ct-low-dose``, in detected quanta
ELECTRONIC_NOISE = 10.0


def to_hu(x: Tensor, level: float = DEFAULT_LEVEL, width: float = DEFAULT_WIDTH) -> Tensor:
    """Display value in [0, 1] -> HU through the window ``(level, width)``: ``level - width / 2 + x * width``."""
    return (level - width / 2.0) + x * width


def from_hu(hu: Tensor, level: float = DEFAULT_LEVEL, width: float = DEFAULT_WIDTH) -> Tensor:
    """HU -> display value through the window ``(level, width)``: ``(hu - level + width / 2) / width`` (unclipped)."""
    return (hu - (level - width / 2.0)) / width


@register("corruption", "ct-window-shift")
@severity_table(((50.0, 370.0), (65.0, 330.0), (80.0, 290.0), (100.0, 240.0), (120.0, 190.0)),
                stochastic=False, family="acquisition", channels=(1,))
def ct_window_shift(x: Tensor, severity: int, generator: torch.Generator | None = None) -> Tensor:
    """Mis-set CT display window: re-window the HU of the clean image with a higher level and a narrower width.

    The clean image is taken as the soft-tissue window level 40 / width 400 HU (``HU = -160 + 400 x``); the
    corrupted one shows the same HU through the window ``(L, W)`` of the table:
    ``y = clip((HU - L + W / 2) / W, 0, 1)``. A raised level darkens everything, a narrower width raises the
    contrast and clips (saturates) more of the anatomy at both ends - a technologist's / viewer's wrong
    preset. Deterministic.

    Source: the DICOM VOI linear window (PS3.3 C.11.2.1.2, window centre / width; here in its continuous form
    without the DICOM half-pixel offsets) applied to the HU of the default window.

    Severity table ((level, width) in HU of the mis-set window; the clean one is (40, 400)):
    1: (50, 370), 2: (65, 330), 3: (80, 290), 4: (100, 240), 5: (120, 190).
    """
    xw = begin(x, severity, "ct-window-shift")
    level, width = param(ct_window_shift, severity)
    return finish(from_hu(to_hu(xw), level, width), x)


def low_dose_counts(x: Tensor, i0: float) -> Tensor:
    """Expected detected quanta ``I0 * exp(-mu * L)`` of the per-pixel pseudo-projection of ``ct-low-dose``."""
    mu_rel = (1.0 + to_hu(x) / 1000.0).clamp(min=0.0)  # mu / mu_water
    return i0 * torch.exp(-MU_WATER * LOW_DOSE_PATH_MM * mu_rel)


def low_dose_std(x: Tensor, i0: float) -> Tensor:
    """Predicted std (display units) of ``ct-low-dose`` at clean value ``x`` (delta method, before clipping).

    ``var(log N) ~ (lam + sigma_e^2) / lam^2`` for ``N = Poisson(lam) + N(0, sigma_e^2)``; the log signal maps
    to display units by ``1000 / (mu_water * L * window width)``.
    """
    lam = low_dose_counts(x, i0)
    scale = 1000.0 / (MU_WATER * LOW_DOSE_PATH_MM * DEFAULT_WIDTH)
    return scale * torch.sqrt(lam + ELECTRONIC_NOISE**2) / lam


@register("corruption", "ct-low-dose")
@severity_table((30000.0, 15000.0, 8000.0, 5000.0, 3000.0), stochastic=True, family="noise", channels=(1,))
def ct_low_dose(x: Tensor, severity: int, generator: torch.Generator | None = None) -> Tensor:
    """Reduced-dose CT quantum noise, simulated on a per-pixel pre-log signal (image-domain approximation).

    Each pixel is treated as a ray of nominal length ``L`` = 200 mm through material of its own attenuation:
    ``x -> HU -> mu = mu_water (1 + HU / 1000) -> lam = I0 exp(-mu L)`` expected quanta; the detected count is
    ``N = Poisson(lam) + N(0, sigma_e^2)`` (``sigma_e`` = 10 quanta of electronic noise), clamped to >= 1, and
    the image is reconstructed pixel-wise as ``mu' = log(I0 / N) / L -> HU' -> display``. Fewer incident
    quanta ``I0`` (lower dose) give more noise, and the noise variance grows with attenuation
    (``var ~ exp(mu L) / I0``): dense / bright pixels are noisier than dark ones (see :func:`low_dose_std`).

    Source: the pre-log Poisson + Gaussian electronic noise model of low-dose CT simulation (Zeng et al.,
    "A Simple Low-Dose X-Ray CT Simulation From High-Dose Scan", IEEE TNS 2015; Yu et al., "Development and
    validation of a practical lower-dose-simulation tool for CT", Med. Phys. 2012), applied per pixel
    instead of per sinogram ray. Approximation: real FBP noise is spatially correlated (streaky, with a
    ramp-filtered texture) and its level depends on the whole ray path, not on the local pixel; a
    sinogram-domain version (radon -> noise -> filtered back-projection) is not provided (per-image CPU loops
    and 2D only, far too slow for a batched benchmark). The noise is white and independent per pixel / voxel.

    Severity table (I0, incident quanta per ray; lower = lower dose), with the predicted noise std at
    display value 0.5 (HU 40): 1: 30000 (0.032), 2: 15000 (0.049), 3: 8000 (0.075), 4: 5000 (0.107),
    5: 3000 (0.162).
    """
    xw = begin(x, severity, "ct-low-dose")
    i0 = float(param(ct_low_dose, severity))
    lam = low_dose_counts(xw, i0)
    device = generator.device if generator is not None else xw.device
    counts = torch.poisson(lam.to(device), generator=generator).to(xw.device, xw.dtype)
    counts = (counts + ELECTRONIC_NOISE * randn(xw.shape, generator, xw)).clamp(min=1.0)
    mu_rel = torch.log(i0 / counts) / (MU_WATER * LOW_DOSE_PATH_MM)
    return finish(from_hu((mu_rel - 1.0) * 1000.0), x)


def cupping_profile(spatial: tuple[int, ...], like: Tensor) -> Tensor:
    """In-plane cupping profile ``max(0, 1 - r^2)`` over the last two axes (1 at the centre, 0 at the inscribed
    circle's edge), ``r`` the distance from the image centre normalised by half the side; constant along depth
    for volumes. Shape ``spatial``."""
    h, w = spatial[-2:]
    ys = torch.linspace(-1.0, 1.0, h, dtype=like.dtype, device=like.device) if h > 1 else like.new_zeros(1)
    xs = torch.linspace(-1.0, 1.0, w, dtype=like.dtype, device=like.device) if w > 1 else like.new_zeros(1)
    prof = (1.0 - ys[:, None] ** 2 - xs[None, :] ** 2).clamp(min=0.0)  # [H, W]
    return prof.expand(*spatial)


@register("corruption", "ct-beam-hardening")
@severity_table((0.015, 0.03, 0.045, 0.065, 0.09), stochastic=False, family="acquisition", channels=(1,))
def ct_beam_hardening(x: Tensor, severity: int, generator: torch.Generator | None = None) -> Tensor:
    """Beam-hardening cupping: attenuation under-estimated towards the centre of the field, ``mu' = mu (1 - a p)``.

    A polychromatic beam hardens along long paths, so rays through the middle of the body see a lower
    effective attenuation and the reconstructed ``mu`` dips towards the centre ("cupping"). The profile is the
    classic parabolic cup ``p = max(0, 1 - r^2)`` around the isocentre (the image centre, the patient being
    centred in the bore; ``r`` normalised by half the field so ``p = 0`` on the inscribed circle), applied per
    axial slice (the last two axes; the same in every slice of a volume). Being multiplicative in ``mu``, air
    (``mu`` ~ 0) is untouched, and the dip in HU is ``a p (1000 + HU)``: about ``1040 a`` HU at the centre for soft
    tissue. Values clipped dark by the default window stay dark. Deterministic. Streaks between dense objects
    (the other beam-hardening artefact) are not modelled.

    Source: cupping as described by Brooks & Di Chiro, "Beam hardening in X-ray reconstructive tomography",
    Phys. Med. Biol. 1976, and Barrett & Keat, "Artifacts in CT: recognition and avoidance", RadioGraphics 2004
    (image-domain parabolic model, our simplification).

    Severity table (a, fractional loss of attenuation at the centre; centre dip for soft tissue in HU):
    1: 0.015 (16), 2: 0.03 (31), 3: 0.045 (47), 4: 0.065 (68), 5: 0.09 (94).
    """
    xw = begin(x, severity, "ct-beam-hardening")
    a = float(param(ct_beam_hardening, severity))
    mu_rel = 1.0 + to_hu(xw) / 1000.0
    mu_rel = mu_rel * (1.0 - a * cupping_profile(tuple(xw.shape[2:]), xw))
    return finish(from_hu((mu_rel - 1.0) * 1000.0), x)


__all__ = [
    "DEFAULT_LEVEL", "DEFAULT_WIDTH", "MU_WATER", "LOW_DOSE_PATH_MM", "ELECTRONIC_NOISE", "to_hu", "from_hu",
    "low_dose_counts", "low_dose_std", "cupping_profile", "ct_window_shift", "ct_low_dose", "ct_beam_hardening",
]
