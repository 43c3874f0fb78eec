"""MRI artefacts (``medrobust.corruptions.mri``): library parity (TorchIO, MONAI), physics checks, the range rule,
monotone SSIM; plus TorchIO ``BiasField`` as an oracle for ``bias-field`` (intensity.py).

TorchIO and MONAI are used here as test oracles only.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from medrobust import registry
from medrobust.corruptions import base, intensity, mri  # noqa: F401  (registers the corruptions)

torchio = pytest.importorskip("torchio")
monai_intensity = pytest.importorskip("monai.transforms")

KSPACE = ("mri-ghosting", "mri-motion", "mri-spike", "gibbs-ringing")
ALL = KSPACE + ("rician-noise", "anisotropic-resolution")


def _fn(name):
    return registry._REGISTRY["corruption"][name]


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def phantom(n: int, size: int, d: int, seed: int = 0) -> torch.Tensor:
    """Smooth MRI-like images ``[n, 1, *size^d]`` (float64): a soft elliptical head on a black background
    with three bright gaussian structures inside."""
    g = _gen(seed)
    ax = torch.linspace(-1, 1, size, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(*([ax] * d), indexing="ij"))
    ones = (1,) * d
    radii = (torch.rand(n, d, generator=g, dtype=torch.float64) * 0.15 + 0.7).view(n, d, *ones)
    head = ((grid[None] / radii) ** 2).sum(1)
    img = 0.35 * torch.sigmoid((1 - head) * 12)
    centre = (torch.rand(n, 3, d, generator=g, dtype=torch.float64) * 0.8 - 0.4).view(n, 3, d, *ones)
    width = (torch.rand(n, 3, generator=g, dtype=torch.float64) * 0.12 + 0.08).view(n, 3, *ones)
    amp = (torch.rand(n, 3, generator=g, dtype=torch.float64) * 0.4 + 0.3).view(n, 3, *ones)
    blobs = (amp * torch.exp(-((grid[None, None] - centre) ** 2).sum(2) / (2 * width**2))).sum(1)
    return (img + blobs * (head < 1)).clamp(0, 1)[:, None]


def _to_tio(img: torch.Tensor) -> torch.Tensor:
    """One image ``[C, *S]`` as TorchIO's 4D ``[C, W, H, D]`` (2D images get a trailing singleton)."""
    return img if img.ndim == 4 else img[..., None]


def _from_tio(t: torch.Tensor, d: int) -> torch.Tensor:
    return t if d == 3 else t[..., 0]


def test_registered_with_metadata():
    for name in ALL:
        fn = _fn(name)
        assert fn.family == ("noise" if name == "rician-noise" else "acquisition")
        assert fn.dims == (2, 3) and fn.channels is None
        assert fn.stochastic is (name != "gibbs-ringing")
    import pkgutil

    import medrobust.corruptions as package  # load_all walks this package: mri.py is found without an import
    assert "mri" in {info.name for info in pkgutil.iter_modules(package.__path__)}


# ---------------------------------------------------------------- the range rule


@pytest.mark.parametrize("d,size", [(2, 20), (3, 10)])
@pytest.mark.parametrize("name", KSPACE)
def test_kspace_range_rule_keeps_clean_maximum(name, d, size):
    x = phantom(4, size, d) * torch.tensor([0.5, 0.7, 0.9, 1.0], dtype=torch.float64).view(4, *(1,) * (d + 1))
    for s in (1, 5):
        out = _fn(name)(x, s, generator=_gen(s))
        peak_in, peak_out = x.flatten(1).amax(1), out.flatten(1).amax(1)
        assert torch.allclose(peak_out, peak_in, atol=1e-12), (peak_in, peak_out)
        assert out.min() >= 0
    zero = torch.zeros(2, 1, *(size,) * d, dtype=torch.float64)
    assert torch.equal(_fn(name)(zero, 3, generator=_gen(0)), zero)  # nothing to scale: stays zero


def test_range_rule_tames_a_library_strength_spike():
    """TorchIO's default spike strength (1-3 x max|k|) leaves [0, 1] by far in the real part; the rule does not."""
    x = phantom(2, 32, 2)
    index = mri.draw_spike(x, _gen(1))
    z = mri.spike_image(x, index, 2.0)
    assert z.real.abs().max() > 1.0  # what the library would return
    out = base.finish(mri.magnitude_rule(z, x), x)
    assert out.min() >= 0 and torch.allclose(out.flatten(1).amax(1), x.flatten(1).amax(1))
    assert torch.allclose(out, mri.magnitude_rule(z, x))  # the clamp in finish is a no-op


# ---------------------------------------------------------------- Gibbs ringing vs MONAI GibbsNoise


@pytest.mark.parametrize("d,size", [(2, 32), (2, 27), (3, 12)])
@pytest.mark.parametrize("severity", base.SEVERITIES)
def test_gibbs_matches_monai(severity, d, size):
    alpha = _fn("gibbs-ringing").severity_params[severity - 1]
    x = phantom(2, size, d)
    ours = mri.gibbs_image(x, alpha)
    out = _fn("gibbs-ringing")(x, severity)
    for i in range(x.shape[0]):
        ref = torch.as_tensor(monai_intensity.GibbsNoise(alpha=alpha)(x[i]))  # real part of the same filter
        assert torch.allclose(ours[i].real, ref.to(torch.float64), atol=1e-6)
        # after the same range rule. MONAI centres its mask at (size - 1) / 2, half a voxel off the DC term
        # for even sizes, so the filtered image has an imaginary part there that our magnitude keeps and
        # MONAI's real part drops: exact for odd sizes, close for even ones.
        ruled = base.finish(mri.magnitude_rule(ref[None].to(torch.float64), x[i:i + 1]), x)[0]
        gap = (out[i] - ruled).abs()
        if size % 2:
            assert gap.max() < 1e-9
        else:
            assert gap.mean() < 0.02 and gap.max() < 0.1, (gap.mean(), gap.max())
    mask = mri.gibbs_mask(tuple(x.shape[2:]), alpha)
    spec = mri.to_kspace(ours)  # only the kept ball is left in k-space
    assert spec[..., ~mask].abs().max() < 1e-9 and mask.any() and not mask.all()


# ---------------------------------------------------------------- Rician noise


@pytest.mark.parametrize("severity", base.SEVERITIES)
def test_rician_noise_statistics_and_monai(severity):
    sigma = _fn("rician-noise").severity_params[severity - 1]
    zero = torch.zeros(8, 1, 64, 64, dtype=torch.float64)
    r = _fn("rician-noise")(zero, severity, generator=_gen(severity))
    assert math.isclose(r.mean().item(), sigma * math.sqrt(math.pi / 2), rel_tol=0.01)  # Rayleigh mean
    assert math.isclose(r.std().item(), sigma * math.sqrt(2 - math.pi / 2), rel_tol=0.02)
    v = torch.full((4, 1, 64, 64), 0.4, dtype=torch.float64)
    ours = _fn("rician-noise")(v, severity, generator=_gen(1))
    monai = monai_intensity.RandRicianNoise(prob=1.0, std=sigma, sample_std=False, channel_wise=False)
    monai.set_random_state(seed=0)
    ref = torch.as_tensor(monai(v[0].numpy()))
    assert math.isclose(ours.mean().item(), ref.mean().item(), rel_tol=0.01, abs_tol=5e-4)
    assert math.isclose(ours.std().item(), ref.std().item(), rel_tol=0.05)


# ---------------------------------------------------------------- ghosting vs TorchIO Ghosting


@pytest.mark.parametrize("d,size", [(2, 24), (2, 21), (3, 12)])
def test_ghosting_matches_torchio(d, size):
    x = phantom(3, size, d).float()
    for axis, n_ghosts, s in itertools.product(range(d), (2, 3, 4), (0.35, 0.95)):
        ours = mri.ghosting_image(x, torch.full((3,), axis), torch.full((3,), n_ghosts), s)
        for i in range(3):
            tio = torchio.Ghosting(num_ghosts=n_ghosts, axis=axis, intensity=s, restore=None)
            ref = _from_tio(tio(_to_tio(x[i])), d)
            assert torch.allclose(ours[i].real, ref, atol=2e-5)


def test_ghost_copies_at_the_expected_shift():
    size = 48
    x = torch.zeros(1, 1, size, size, dtype=torch.float64)
    x[0, 0, 10:13, 20:23] = 1.0  # a small bright square (the restored central line adds only a faint band)
    for axis, n_ghosts in itertools.product((0, 1), (2, 3, 4)):
        z = mri.ghosting_image(x, torch.tensor([axis]), torch.tensor([n_ghosts]), 0.9)
        ghost = (z.abs() - x).abs()[0, 0]
        ghost = ghost * (x[0, 0] == 0)  # outside the object: only ghosts
        # circular cross-correlation of the ghost image with the object along the axis: peaks at +- size/n
        obj = torch.fft.fft(x[0, 0].sum(1 - axis))
        prof = torch.fft.ifft(torch.fft.fft(ghost.sum(1 - axis)) * obj.conj()).real
        shift = size // n_ghosts
        peak = int(prof.argmax())
        assert peak % shift == 0 and peak != 0, (axis, n_ghosts, peak)
    # through the public corruption: the drawn axis / count are what the kernel used
    img = phantom(4, 24, 2)
    axis, n = mri.draw_ghosting(img, _gen(5))
    expected = mri.magnitude_rule(mri.ghosting_image(img, axis, n, _fn("mri-ghosting").severity_params[2]), img)
    assert torch.allclose(_fn("mri-ghosting")(img, 3, generator=_gen(5)), expected.clamp(0, 1))
    assert set(n.tolist()) <= {2, 3, 4} and set(axis.tolist()) <= {0, 1}


# ---------------------------------------------------------------- spike vs TorchIO Spike


@pytest.mark.parametrize("d,size", [(2, 20), (2, 17), (3, 10)])
def test_spike_matches_torchio_and_sits_at_its_position(d, size):
    x = phantom(4, size, d).float()
    index = mri.draw_spike(x, _gen(3))
    spatial = tuple(x.shape[2:])
    assert not any(all(int(index[i, a]) == spatial[a] // 2 for a in range(d)) for i in range(4))  # never DC
    r = 0.5
    ours = mri.spike_image(x, index, r)
    for i in range(4):
        pos = [(int(index[i, a]) + 0.5) / spatial[a] for a in range(d)] + ([0.5] if d == 2 else [])
        ref = _from_tio(torchio.Spike(spikes_positions=np.array([pos]), intensity=r)(_to_tio(x[i])), d)
        assert torch.allclose(ours[i].real, ref, atol=1e-5)
        # all the added energy sits at the chosen k-space position, with r * max|k|
        dk = mri.to_kspace(ours[i:i + 1]) - mri.to_kspace(x[i:i + 1])
        where = tuple(int(v) for v in index[i])
        peak = mri.to_kspace(x[i:i + 1]).abs().max()
        assert math.isclose(dk[(0, 0) + where].abs().item(), r * peak.item(), rel_tol=1e-4)
        dk[(0, 0) + where] = 0
        assert dk.abs().max() < 1e-3 * peak
    # the public corruption (magnitude): its strongest added frequency is the spike or its mirror. On a
    # background brighter than the spike amplitude the magnitude is close to linear (on a black background
    # |plane wave| is flat and the stripes show only inside the object).
    img = 0.3 + 0.5 * phantom(4, size, d)
    out = _fn("mri-spike")(img, 5, generator=_gen(3))
    spec = mri.to_kspace(out).abs() - mri.to_kspace(img).abs()  # the rescale lowers the rest of the spectrum
    spec[(slice(None), slice(None)) + tuple(s // 2 for s in spatial)] = -math.inf  # the DC term (mean) moves too
    for i in range(4):
        flat = int(spec[i, 0].argmax())
        got = np.unravel_index(flat, spatial)
        want = tuple(int(v) for v in index[i])
        mirror = tuple((2 * (s // 2) - w) % s for w, s in zip(want, spatial))
        assert got in (want, mirror), (got, want, mirror)


# ---------------------------------------------------------------- motion


def test_motion_kspace_segments_and_geometry():
    x = phantom(3, 16, 2)
    axis, times, rot, trans = mri.draw_motion(x, _gen(2))
    thetas = mri.motion_thetas((16, 16), rot * 8.0, trans * 0.1)
    z = mri.motion_image(x, axis, times, thetas)
    k_out, k_clean = mri.to_kspace(z), mri.to_kspace(x)
    grid = torch.nn.functional.affine_grid(thetas.flatten(0, 1), [6, 1, 16, 16], align_corners=False)
    moved = torch.nn.functional.grid_sample(x.repeat_interleave(2, 0), grid, padding_mode="border",
                                            align_corners=False)
    k_moved = mri.to_kspace(moved).view(3, 2, 16, 16)
    for i in range(3):
        a = int(axis[i])
        cuts = [int(16 * float(t)) for t in times[i]]
        assert times[i, 0] < 0.5 < times[i, 1]  # 1/3, 2/3 jittered by at most 0.1
        segments = [range(0, cuts[0]), range(cuts[0], cuts[1]), range(cuts[1], 16)]
        sources = [k_moved[i, 0], k_clean[i, 0], k_moved[i, 1]]  # centre segment from the clean image
        for lines, src in zip(segments, sources):
            for line in lines:
                sel = (slice(None),) * a + (line,)
                assert torch.allclose(k_out[i, 0][sel], src[sel], atol=1e-9)
    # no motion: the clean image
    still = mri.motion_image(x, axis, times, mri.motion_thetas((16, 16), rot * 0, trans * 0))
    assert torch.allclose(still.real, x, atol=1e-9) and still.imag.abs().max() < 1e-9
    # conventions: a translation of 2/16 along dim 2 reads the image 2 voxels on; 90 degrees is rot90
    vol = phantom(1, 16, 3)
    t = mri.motion_thetas((16, 16, 16), torch.zeros(1), torch.tensor([[2 / 16, 0.0, 0.0]], dtype=torch.float64))
    g = torch.nn.functional.affine_grid(t, [1, 1, 16, 16, 16], align_corners=False)
    shifted = torch.nn.functional.grid_sample(vol, g, align_corners=False, padding_mode="border")
    assert torch.allclose(shifted[:, :, :14], vol[:, :, 2:], atol=1e-9)
    t = mri.motion_thetas((16, 16), torch.tensor([90.0], dtype=torch.float64), torch.zeros(1, 2, dtype=torch.float64))
    g = torch.nn.functional.affine_grid(t, [1, 1, 16, 16], align_corners=False)
    turned = torch.nn.functional.grid_sample(x[:1], g, align_corners=False)
    assert any(torch.allclose(turned, torch.rot90(x[:1], k, dims=(2, 3)), atol=1e-6) for k in (1, 3))
    # the public corruption is the kernel with the drawn parameters and the range rule
    deg, frac = _fn("mri-motion").severity_params[3]
    axis, times, rot, trans = mri.draw_motion(x, _gen(9))
    z = mri.motion_image(x, axis, times, mri.motion_thetas((16, 16), rot * deg, trans * frac))
    assert torch.allclose(_fn("mri-motion")(x, 4, generator=_gen(9)), mri.magnitude_rule(z, x).clamp(0, 1))


# ---------------------------------------------------------------- anisotropy


def _np_down_up(line: np.ndarray, factor: float) -> np.ndarray:
    """Reference: linear samples at the coarse voxel centres, then linear interpolation back (edges clamped)."""
    n = line.size
    m = max(1, int(n // factor))
    centres = (np.arange(m) + 0.5) * n / m - 0.5
    coarse = np.interp(centres, np.arange(n), line)
    fine = (np.arange(n) + 0.5) * m / n - 0.5
    return np.interp(fine, np.arange(m), coarse)


@pytest.mark.parametrize("shape", [(4, 1, 24, 19), (3, 2, 9, 12, 10)])
@pytest.mark.parametrize("severity", base.SEVERITIES)
def test_anisotropy_is_down_up_sampling_along_one_axis(severity, shape):
    factor = _fn("anisotropic-resolution").severity_params[severity - 1]
    x = torch.rand(shape, generator=_gen(4), dtype=torch.float64)
    out = _fn("anisotropic-resolution")(x, severity, generator=_gen(6))
    axis = mri._randint(shape[0], 0, len(shape) - 3, _gen(6), x)
    for i in range(shape[0]):
        a = 1 + int(axis[i])  # axis of x[i] ([C, *S])
        ref = np.apply_along_axis(_np_down_up, a, x[i].numpy(), factor)
        assert np.allclose(out[i].numpy(), ref, atol=1e-10)


# ---------------------------------------------------------------- bias field vs TorchIO BiasField (intensity.py)


@pytest.mark.parametrize("spatial", [(20, 17), (9, 10, 11)])
@pytest.mark.parametrize("severity", (1, 5))
def test_bias_field_matches_torchio_with_the_same_coefficients(spatial, severity):
    """Exact parity: our coefficients (same generator draw), scaled by alpha / peak, fed to TorchIO."""
    d = len(spatial)
    n = 3
    x = 0.6 * phantom(n, 12, d)  # values <= 0.6 so the gain (<= e^0.5) never clips
    x = torch.nn.functional.interpolate(x, size=spatial, mode="bilinear" if d == 2 else "trilinear")
    alpha = _fn("bias-field").severity_params[severity - 1]
    out = _fn("bias-field")(x, severity, generator=_gen(13))
    terms = [p for p in itertools.product(range(4), repeat=d) if 1 <= sum(p) <= intensity.BIAS_FIELD_DEGREE]
    coeffs = torch.randn((n, len(terms)), generator=_gen(13), dtype=x.dtype)  # what bias_field_log draws

    def tio_log_field(c: np.ndarray) -> np.ndarray:
        table = dict(zip([p + (0,) * (3 - d) for p in terms], c))
        ordered = [table.get((i, j, k), 0.0) for i in range(4) for j in range(4 - i) for k in range(4 - i - j)]
        data = np.zeros((1, *spatial) + (() if d == 3 else (1,)))
        field = torchio.transforms.BiasField.generate_bias_field(data, 3, ordered)
        return np.log(field.astype(np.float64))

    for i in range(n):
        c = coeffs[i].numpy()
        peak = np.abs(tio_log_field(c)).max()
        field = np.exp(tio_log_field(c * alpha / peak))
        field = field if d == 3 else field[..., 0]
        assert np.allclose(out[i, 0].numpy(), x[i, 0].numpy() * field, atol=2e-6)


# ---------------------------------------------------------------- calibration: SSIM falls strictly


def _mean_ssim(x: torch.Tensor, y: torch.Tensor) -> float:
    return float(np.mean([structural_similarity(x[i, 0].numpy(), y[i, 0].numpy(), data_range=1.0)
                          for i in range(x.shape[0])]))


@pytest.mark.parametrize("d,size,n", [(2, 32, 6), (3, 16, 2)])
@pytest.mark.parametrize("name", ALL)
def test_ssim_falls_strictly_with_severity(name, d, size, n):
    x = phantom(n, size, d, seed=21)
    seeds = range(3) if _fn(name).stochastic else range(1)
    ssim = [np.mean([_mean_ssim(x, _fn(name)(x, s, generator=_gen(k))) for k in seeds]) for s in base.SEVERITIES]
    assert all(a > b for a, b in zip(ssim, ssim[1:])), f"{name} {d}D: SSIM by severity {ssim}"
    assert ssim[0] > 0.9, f"{name} {d}D: severity 1 is not mild: {ssim}"
