"""MRI acquisition artefacts, 2D and 3D, batched, in torch (``torch.fft``): ghosting, rigid motion, k-space
spike, Gibbs ringing, Rician noise and anisotropic (thick-slice) resolution.

Sources: TorchIO (Pérez-García et al., "TorchIO: a Python library for efficient loading, preprocessing,
augmentation and patch-based sampling of medical images in deep learning", CMPB 2021) ``Ghosting``,
``Motion``, ``Spike``, ``RandomAnisotropy``; MONAI ``GibbsNoise``, ``KSpaceSpikeNoise``, ``RandRicianNoise``;
Shaw et al., "MRI k-space motion artefact augmentation", MIDL 2019; Gudbjartsson & Patz, "The Rician
distribution of noisy MRI data", MRM 1995. The k-space kernels (:func:`ghosting_image`, :func:`spike_image`,
:func:`gibbs_image`, :func:`motion_image`) follow the libraries' conventions exactly (``fftshift(fftn(x))``
over the spatial dims, TorchIO's line selection / spike indexing, MONAI's radial Gibbs mask) and are exposed
so the tests can compare them with the libraries.

Range rule (k-space artefacts: ``mri-ghosting``, ``mri-motion``, ``mri-spike``, ``gibbs-ringing``): the
inverse FFT of the edited k-space is complex; the corrupted image is its **magnitude** (what an MR scanner
displays), **rescaled per image** (one factor per sample, over channels and space) **so that its maximum equals
the clean image's maximum**, then clamped to [0, 1] (a no-op up to rounding). The libraries return the real
part unscaled, which for a spike leaves [0, 1] badly (e.g. ±47); with this rule the artefact instead takes a
share of the clean image's dynamic range, as an auto-windowed viewer shows it. An all-zero result stays zero.
``rician-noise`` is a magnitude already and ``anisotropic-resolution`` interpolates linearly, so both are
only clamped to [0, 1] (by :func:`~medrobust.corruptions.base.finish`).

Random parameters (axes, ghost counts, motion times and poses, spike positions, noise) are drawn per image
from ``generator``, in a fixed order, before anything that depends on the severity, so one generator state
gives the same artefact geometry at every severity and only its strength grows. ``phase-encoding axis``:
any spatial axis, drawn per image (TorchIO uses a fixed axis).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from medrobust.corruptions.base import begin, finish, param, rand, randn, severity_table, spatial_dims
from medrobust.registry import register

#: number of motion events (TorchIO ``RandomMotion(num_transforms=2)``): 3 k-space segments
MOTION_TRANSFORMS = 2
#: TorchIO's jitter of the motion times, as a fraction of the interval between them
MOTION_PERTURBATION = 0.3
#: ghost counts drawn per image, uniformly from this inclusive range
GHOST_RANGE = (2, 4)


# ---------------------------------------------------------------- k-space helpers


def _sdims(x: Tensor) -> tuple[int, ...]:
    return tuple(range(2, x.ndim))


def to_kspace(x: Tensor) -> Tensor:
    """Centred spectrum ``fftshift(fftn(x))`` over the spatial dims (TorchIO / MONAI convention)."""
    dims = _sdims(x)
    return torch.fft.fftshift(torch.fft.fftn(x, dim=dims), dim=dims)


def from_kspace(k: Tensor) -> Tensor:
    """Inverse of :func:`to_kspace`; complex image."""
    dims = _sdims(k)
    return torch.fft.ifftn(torch.fft.ifftshift(k, dim=dims), dim=dims)


def magnitude_rule(z: Tensor, clean: Tensor) -> Tensor:
    """The module's range rule: ``|z|`` rescaled per sample so its maximum equals ``clean``'s maximum."""
    mag = z.abs().to(clean.dtype)
    red = tuple(range(1, clean.ndim))
    peak_out = mag.amax(dim=red, keepdim=True)
    peak_in = clean.amax(dim=red, keepdim=True)
    tiny = torch.finfo(clean.dtype).tiny
    scale = torch.where(peak_out > tiny, peak_in / peak_out.clamp(min=tiny), torch.ones_like(peak_out))
    return mag * scale


def _line_index(x: Tensor, axis: Tensor) -> tuple[Tensor, Tensor]:
    """Per image, the index of every voxel along that image's ``axis`` and that axis' length: ``[N,1,*S]`` each."""
    n, spatial = x.shape[0], tuple(x.shape[2:])
    d = len(spatial)
    line = torch.zeros((n, 1, *spatial), dtype=torch.long, device=x.device)
    length = torch.zeros((n, 1) + (1,) * d, dtype=torch.long, device=x.device)
    axis = axis.to(x.device).view(n, 1, *([1] * d))
    for a, size in enumerate(spatial):
        shape = [1, 1] + [1] * d
        shape[2 + a] = size
        idx = torch.arange(size, device=x.device).view(shape)
        line = torch.where(axis == a, idx.expand_as(line), line)
        length = torch.where(axis == a, torch.full_like(length, size), length)
    return line, length


def _randint(n: int, low: int, high: int, generator: torch.Generator | None, like: Tensor) -> Tensor:
    """``n`` integers uniform in ``low..high`` (inclusive) from ``generator``, on ``like``'s device."""
    u = rand((n,), generator, torch.empty(0, dtype=torch.float64, device=like.device))
    return (low + torch.floor(u * (high - low + 1))).long().clamp(max=high).to(like.device)


# ---------------------------------------------------------------- ghosting


def ghosting_image(x: Tensor, axis: Tensor, num_ghosts: Tensor, intensity: float) -> Tensor:
    """TorchIO ``Ghosting(num_ghosts, axis, intensity, restore=None)`` per image, batched; complex result.

    In the centred spectrum every ``num_ghosts``-th plane along ``axis`` (indices 0, n, 2n, ...) is scaled by
    ``1 - intensity``, except the central plane (restored, so the mean intensity is kept). ``axis`` and
    ``num_ghosts`` are ``[N]`` integer tensors (one per image); the real part is TorchIO's output.
    """
    k = to_kspace(x)
    line, length = _line_index(x, axis)
    n = num_ghosts.to(x.device).view(-1, *([1] * (x.ndim - 1)))
    modify = (line % n == 0) & (line != length // 2)
    gain = torch.where(modify, torch.full_like(x, 1.0 - intensity), torch.ones_like(x))
    return from_kspace(k * gain)


def draw_ghosting(x: Tensor, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """Per-image phase-encoding axis and ghost count, in that draw order."""
    n, d = x.shape[0], spatial_dims(x)
    axis = _randint(n, 0, d - 1, generator, x)
    num_ghosts = _randint(n, GHOST_RANGE[0], GHOST_RANGE[1], generator, x)
    return axis, num_ghosts


@register("corruption", "mri-ghosting")
@severity_table((0.2, 0.35, 0.5, 0.7, 0.95), stochastic=True, family="acquisition")
def mri_ghosting(x: Tensor, severity: int, generator: torch.Generator | None = None) -> Tensor:
    """Discrete ghosts along the phase-encoding axis from periodic k-space line modulation.

    Source: TorchIO ``Ghosting`` / ``RandomGhosting`` (restore = central line only), the periodic-motion
    ghost artefact (pulsatile flow, respiration). Per image an axis (any spatial axis) and a ghost count
    ``n`` in 2..4 are drawn from ``generator``; every ``n``-th k-space plane along the axis is attenuated by
    ``1 - s``, which adds copies of the image shifted by multiples of ``size / n`` along the axis. Range rule:
    magnitude, rescaled to the clean per-image maximum (module docstring).

    Severity table (s, attenuation of the modulated lines; TorchIO ``intensity``): 1: 0.2, 2: 0.35, 3: 0.5,
    4: 0.7, 5: 0.95 (TorchIO's default range is 0.5-1).
    """
    xw = begin(x, severity, "mri-ghosting")
    axis, num_ghosts = draw_ghosting(xw, generator)
    z = ghosting_image(xw, axis, num_ghosts, param(mri_ghosting, severity))
    return finish(magnitude_rule(z, xw), x)


# ---------------------------------------------------------------- spike


def spike_image(x: Tensor, index: Tensor, intensity: float) -> Tensor:
    """TorchIO ``Spike`` with one spike per image, batched; complex result.

    ``index``: ``[N, d]`` integer positions in the centred spectrum; each channel's spectrum gets
    ``intensity * max|k|`` (of that channel) added at that position (one-sided, as TorchIO: a complex
    plane wave in image space). The real part is TorchIO's output.
    """
    k = to_kspace(x)
    n, c, spatial = x.shape[0], x.shape[1], tuple(x.shape[2:])
    strides = torch.tensor([math.prod(spatial[a + 1:]) for a in range(len(spatial))], device=x.device)
    flat = (index.to(x.device).long() * strides).sum(1)  # [N]
    onehot = torch.zeros((n, math.prod(spatial)), dtype=x.dtype, device=x.device)
    onehot[torch.arange(n, device=x.device), flat] = 1.0
    onehot = onehot.view(n, 1, *spatial)
    amp = intensity * k.abs().amax(dim=_sdims(x), keepdim=True)  # [N, C, 1..]
    return from_kspace(k + amp * onehot)


def draw_spike(x: Tensor, generator: torch.Generator | None) -> Tensor:
    """One spike position per image, uniform over the centred k-space except its centre (DC): ``[N, d]``."""
    n, spatial = x.shape[0], tuple(x.shape[2:])
    total = math.prod(spatial)
    centre = [s // 2 for s in spatial]
    centre_flat = sum(c * math.prod(spatial[a + 1:]) for a, c in enumerate(centre))
    flat = _randint(n, 0, max(total - 2, 0), generator, x)
    flat = flat + (flat >= centre_flat).long()
    index = []
    for a in range(len(spatial)):
        stride = math.prod(spatial[a + 1:])
        index.append((flat // stride) % spatial[a])
    return torch.stack(index, dim=1)


@register("corruption", "mri-spike")
@severity_table((0.03, 0.06, 0.1, 0.16, 0.25), stochastic=True, family="acquisition")
def mri_spike(x: Tensor, severity: int, generator: torch.Generator | None = None) -> Tensor:
    """Herringbone / corduroy stripes from a single k-space spike.

    Source: TorchIO ``Spike`` / ``RandomSpike`` and MONAI ``KSpaceSpikeNoise``. Per image one k-space
    position (uniform over the centred spectrum, the DC term excluded) is drawn from ``generator``; the spike
    added there has ``r`` times the largest spectral magnitude (the DC term, i.e. ``r`` times the image mean
    in amplitude). Range rule: magnitude, rescaled to the clean per-image maximum (module docstring).

    Severity table (r, spike / max|k|; TorchIO ``intensity``): 1: 0.03, 2: 0.06, 3: 0.10, 4: 0.16, 5: 0.25
    (TorchIO's default range 1-3 swamps the image).
    """
    xw = begin(x, severity, "mri-spike")
    index = draw_spike(xw, generator)
    z = spike_image(xw, index, param(mri_spike, severity))
    return finish(magnitude_rule(z, xw), x)


# ---------------------------------------------------------------- Gibbs ringing


def gibbs_mask(spatial: tuple[int, ...], alpha: float, device=None) -> Tensor:
    """MONAI ``GibbsNoise`` mask: centred ball of radius ``(1 - alpha) * max(shape) * sqrt(2) / 2``."""
    r = (1.0 - alpha) * max(spatial) * math.sqrt(2) / 2.0
    dist2 = torch.zeros(spatial, dtype=torch.float64, device=device)
    for a, s in enumerate(spatial):
        shape = [1] * len(spatial)
        shape[a] = s
        dist2 = dist2 + ((torch.arange(s, dtype=torch.float64, device=device) - (s - 1) / 2) ** 2).view(shape)
    return dist2.sqrt() <= r


def gibbs_image(x: Tensor, alpha: float) -> Tensor:
    """MONAI ``GibbsNoise(alpha)``, batched; complex result (its real part is MONAI's output)."""
    mask = gibbs_mask(tuple(x.shape[2:]), alpha, x.device)
    return from_kspace(to_kspace(x) * mask)


@register("corruption", "gibbs-ringing")
@severity_table((0.35, 0.45, 0.55, 0.65, 0.75), stochastic=False, family="acquisition")
def gibbs_ringing(x: Tensor, severity: int, generator: torch.Generator | None = None) -> Tensor:
    """Gibbs (truncation) ringing: keep only a central ball of k-space.

    Source: MONAI ``GibbsNoise`` (alpha parametrisation and mask identical). The kept radius is
    ``(1 - alpha) * max(shape) * sqrt(2) / 2`` voxels around the k-space centre, so alpha = 0 keeps all
    of k-space and the kept radius as a fraction of the half-width is ``(1 - alpha) * sqrt(2)``
    (0.92, 0.78, 0.64, 0.49, 0.35 for the table). Deterministic. Range rule: magnitude, rescaled to the clean
    per-image maximum (module docstring).

    Severity table (alpha, MONAI): 1: 0.35, 2: 0.45, 3: 0.55, 4: 0.65, 5: 0.75.
    """
    xw = begin(x, severity, "gibbs-ringing")
    z = gibbs_image(xw, param(gibbs_ringing, severity))
    return finish(magnitude_rule(z, xw), x)


# ---------------------------------------------------------------- rigid motion


def motion_thetas(spatial: tuple[int, ...], degrees: Tensor, translation: Tensor) -> Tensor:
    """``affine_grid`` matrices of rigid moves about the image centre: ``[..., d, d+1]``.

    ``degrees``: ``[...]`` in-plane rotation (2D only; ignored in 3D); ``translation``: ``[..., d]`` as
    fractions of the image size along (dim 2, dim 3[, dim 4]). Physical (voxel-unit) rotation for
    non-square images: ``A^-1 R A`` in the normalised coordinates of ``affine_grid`` (x = last dim).
    """
    d = len(spatial)
    lead = translation.shape[:-1]
    dtype, device = translation.dtype, translation.device
    half = torch.tensor(spatial[::-1], dtype=dtype, device=device) / 2  # normalised axes order: x=W, y=H, z=D
    rot = torch.eye(d, dtype=dtype, device=device).expand(*lead, d, d).clone()
    if d == 2:
        t = torch.deg2rad(degrees)
        cos, sin = torch.cos(t), torch.sin(t)
        rot = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)
    lin = rot * half[None, :] / half[:, None]  # A^-1 R A, A = diag(half)
    shift = 2 * translation.flip(-1)  # fraction of size -> normalised units, reordered to (x, y[, z])
    return torch.cat([lin, shift[..., None]], dim=-1)


def motion_image(x: Tensor, axis: Tensor, times: Tensor, thetas: Tensor) -> Tensor:
    """TorchIO ``Motion`` k-space composition, batched; complex result.

    ``thetas``: ``[N, K, d, d+1]`` moves (moved copies resampled with bilinear ``grid_sample``, border
    padding); ``times``: ``[N, K]`` in (0, 1). Along each image's ``axis`` the centred spectrum is cut at
    ``int(size * t)`` into K+1 segments; as in TorchIO the segment holding the k-space centre (the first
    with ``t > 0.5``) takes the clean image, segment 0 takes move ``c`` (the swap) and segment ``s`` move ``s``.
    """
    n, c, spatial = x.shape[0], x.shape[1], tuple(x.shape[2:])
    k_moves = thetas.shape[1]
    grid = F.affine_grid(thetas.reshape(n * k_moves, *thetas.shape[2:]).to(x.dtype),
                         [n * k_moves, c, *spatial], align_corners=False)
    rep = x.repeat_interleave(k_moves, dim=0)
    moved = F.grid_sample(rep, grid, mode="bilinear", padding_mode="border", align_corners=False)
    images = torch.cat([x[:, None], moved.view(n, k_moves, c, *spatial)], dim=1)  # [N, K+1, C, *S]
    spectra = torch.fft.fftshift(torch.fft.fftn(images, dim=tuple(range(3, images.ndim))),
                                 dim=tuple(range(3, images.ndim)))
    line, length = _line_index(x, axis)  # [N, 1, *S]
    cuts = (length.flatten(1)[:, :1].to(times.dtype) * times).long()  # [N, K] (int() truncation, as TorchIO)
    view = (n, k_moves) + (1,) * (x.ndim - 1)
    segment = (line[:, None] >= cuts.view(view)).sum(1)  # [N, 1, *S] in 0..K
    later = times > 0.5
    centre = torch.where(later.any(1), later.float().argmax(1), torch.full_like(later[:, 0], k_moves, dtype=torch.long))
    centre = centre.view(n, 1, *([1] * len(spatial)))
    source = torch.where(segment == centre, torch.zeros_like(segment),
                         torch.where(segment == 0, centre.expand_as(segment), segment))
    source = source[:, None].expand(n, 1, c, *spatial)
    k = torch.gather(spectra, 1, source).squeeze(1)
    return from_kspace(k)


def draw_motion(x: Tensor, generator: torch.Generator | None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per image: axis, times ``[N,K]``, unit rotations ``[N,K]`` and unit translations ``[N,K,d]`` in [-1, 1]."""
    n, d, k = x.shape[0], spatial_dims(x), MOTION_TRANSFORMS
    work = torch.empty(0, dtype=torch.float64, device=x.device)  # draws in float64 whatever x's dtype
    axis = _randint(n, 0, d - 1, generator, x)
    step = 1.0 / (k + 1)
    base_t = torch.arange(1, k + 1, dtype=torch.float64, device=x.device) * step
    times = base_t + (2 * rand((n, k), generator, work) - 1) * step * MOTION_PERTURBATION
    rot = 2 * rand((n, k), generator, work) - 1
    trans = 2 * rand((n, k, d), generator, work) - 1
    return axis, times, rot, trans


@register("corruption", "mri-motion")
@severity_table(((2.0, 0.02), (4.0, 0.04), (6.0, 0.06), (9.0, 0.09), (12.0, 0.12)),
                stochastic=True, family="acquisition")
def mri_motion(x: Tensor, severity: int, generator: torch.Generator | None = None) -> Tensor:
    """Rigid patient motion during acquisition: k-space segments taken from moved copies of the image.

    Source: TorchIO ``Motion`` / ``RandomMotion`` (2 motion events, 3 k-space segments along the
    phase-encoding axis, the centre segment from the un-moved image), Shaw et al. 2019. Per image an axis,
    two segment times (1/3 and 2/3 jittered by ±0.1) and, per event, a rotation (2D only, about the image
    centre) and a translation (every axis) are drawn from ``generator`` uniformly in [-1, 1] and scaled by the
    severity. Range rule: magnitude, rescaled to the clean per-image maximum (module docstring).

    Severity table (max rotation in degrees [2D only], max translation as a fraction of the image size per
    axis): 1: (2, 0.02), 2: (4, 0.04), 3: (6, 0.06), 4: (9, 0.09), 5: (12, 0.12) (TorchIO's defaults are
    10 degrees, 10 mm).
    """
    xw = begin(x, severity, "mri-motion")
    deg, frac = param(mri_motion, severity)
    axis, times, rot, trans = draw_motion(xw, generator)
    thetas = motion_thetas(tuple(xw.shape[2:]), rot * deg, trans * frac)
    z = motion_image(xw, axis, times, thetas.to(xw.dtype))
    return finish(magnitude_rule(z, xw), x)


# ---------------------------------------------------------------- Rician noise


@register("corruption", "rician-noise")
@severity_table((0.02, 0.04, 0.06, 0.09, 0.12), stochastic=True, family="noise")
def rician_noise(x: Tensor, severity: int, generator: torch.Generator | None = None) -> Tensor:
    """Rician noise of magnitude MR images: ``sqrt((x + sigma n1)^2 + (sigma n2)^2)``, n1, n2 standard normal.

    Source: MONAI ``RandRicianNoise`` (``relative=False``, ``sample_std=False``), Gudbjartsson & Patz 1995.
    The noise is added to the real and imaginary channels of the complex signal, then the magnitude is taken;
    the background (x = 0) becomes Rayleigh with mean ``sigma * sqrt(pi / 2)``. Clamped to [0, 1] (only the
    upper end can leave it). Independent per voxel and channel.

    Severity table (sigma, in intensity units): 1: 0.02, 2: 0.04, 3: 0.06, 4: 0.09, 5: 0.12.
    """
    xw = begin(x, severity, "rician-noise")
    sigma = param(rician_noise, severity)
    n1 = randn(xw.shape, generator, xw)
    n2 = randn(xw.shape, generator, xw)
    return finish(torch.sqrt((xw + sigma * n1) ** 2 + (sigma * n2) ** 2), x)


# ---------------------------------------------------------------- anisotropic resolution


def anisotropic_image(x: Tensor, axis: Tensor, factor: float) -> Tensor:
    """Downsample each image along its ``axis`` by ``factor`` and upsample back, both (bi/tri)linear.

    The coarse length is ``max(1, floor(size / factor))``; both steps are ``F.interpolate`` with
    ``align_corners=False`` (down: the linear interpolant sampled at the coarse voxel centres, no
    anti-aliasing; up: linear back to the original grid). The other axes are untouched.
    """
    spatial = tuple(x.shape[2:])
    d = len(spatial)
    mode = "bilinear" if d == 2 else "trilinear"
    out = x
    axis = axis.to(x.device).view(-1, *([1] * (x.ndim - 1)))
    for a, size in enumerate(spatial):
        coarse = list(spatial)
        coarse[a] = max(1, int(size // factor))
        low = F.interpolate(x, size=tuple(coarse), mode=mode, align_corners=False)
        back = F.interpolate(low, size=spatial, mode=mode, align_corners=False)
        out = torch.where(axis == a, back, out)
    return out


@register("corruption", "anisotropic-resolution")
@severity_table((2.0, 3.0, 4.0, 5.0, 6.0), stochastic=True, family="acquisition")
def anisotropic_resolution(x: Tensor, severity: int, generator: torch.Generator | None = None) -> Tensor:
    """Thick slices / low through-plane resolution: one axis downsampled by ``m`` and upsampled back.

    Source: TorchIO ``RandomAnisotropy`` (downsampling by point sampling, linear upsampling). Per image the
    axis (any spatial axis; in 2D one of the two) is drawn from ``generator``; the coarse grid has
    ``floor(size / m)`` samples at the coarse voxel centres and is linearly interpolated back to the original
    size (:func:`anisotropic_image`). Differences from TorchIO, for a distortion that grows strictly with
    ``m``: the coarse samples are read by linear interpolation at the coarse voxel centres instead of
    TorchIO's nearest neighbour (which is half a voxel off for even ``m``), and ``m`` is an integer.
    Linear interpolation stays in [0, 1].

    Severity table (m, downsampling factor): 1: 2, 2: 3, 3: 4, 4: 5, 5: 6 (TorchIO's default range 1.5-5).
    """
    xw = begin(x, severity, "anisotropic-resolution")
    axis = _randint(xw.shape[0], 0, spatial_dims(xw) - 1, generator, xw)
    return finish(anisotropic_image(xw, axis, param(anisotropic_resolution, severity)), x)
