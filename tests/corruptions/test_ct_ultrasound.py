"""CT and ultrasound corruptions: formulas, noise statistics, monotone SSIM over severities, determinism."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats
from skimage.metrics import structural_similarity

from medrobust import registry
from medrobust.corruptions import base, ct, ultrasound

NAMES = ("ct-window-shift", "ct-low-dose", "ct-beam-hardening",
         "rayleigh-speckle", "acoustic-shadowing", "ultrasound-gain")


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _fn(name: str):
    return registry.get("corruption", name)


def phantom(n: int, size: int, spatial_dims: int = 2, seed: int = 0) -> torch.Tensor:
    """Body-like phantom in [0, 1], ``[n, 1, *size^d]``: a soft disk (ball) with a few bright / dark blobs."""
    g = _gen(seed)
    axis = torch.linspace(-1, 1, size, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(*([axis] * spatial_dims), indexing="ij"))  # [d, *S]
    ones = (1,) * spatial_dims
    body = 0.45 * torch.sigmoid((0.8 - grid.pow(2).sum(0).sqrt()) * 12)  # [*S]
    centre = (torch.rand(n, 4, spatial_dims, generator=g, dtype=torch.float64) - 0.5).view(n, 4, spatial_dims, *ones)
    width = (torch.rand(n, 4, generator=g, dtype=torch.float64) * 0.15 + 0.08).view(n, 4, *ones)
    amp = (torch.rand(n, 4, generator=g, dtype=torch.float64) * 0.8 - 0.3).view(n, 4, *ones)
    blobs = (amp * torch.exp(-((grid[None, None] - centre) ** 2).sum(2) / (2 * width**2))).sum(1)
    return (body + blobs * (body > 0.2)).clamp(0, 1)[:, None].contiguous()


def test_registered_with_metadata():
    names = set(registry.names("corruption"))
    assert set(NAMES) <= names
    families = {"ct-window-shift": "acquisition", "ct-low-dose": "noise", "ct-beam-hardening": "acquisition",
                "rayleigh-speckle": "noise", "acoustic-shadowing": "acquisition", "ultrasound-gain": "intensity"}
    for name, family in families.items():
        fn = _fn(name)
        assert fn.family == family and fn.dims == (2, 3)
        assert fn.channels == ((1,) if name.startswith("ct-") else None)
        assert fn.stochastic == (name not in ("ct-window-shift", "ct-beam-hardening"))
        assert "Severity table" in fn.__doc__ and "Source" in fn.__doc__


# ---------------------------------------------------------------- CT


def test_window_mapping_exact():
    x = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0], dtype=torch.float64)
    assert torch.allclose(ct.to_hu(x), torch.tensor([-160.0, -60.0, 40.0, 140.0, 240.0], dtype=torch.float64))
    assert torch.allclose(ct.from_hu(ct.to_hu(x)), x, atol=1e-15)
    fn = _fn("ct-window-shift")
    for s in base.SEVERITIES:
        level, width = fn.severity_params[s - 1]
        assert level > ct.DEFAULT_LEVEL and width < ct.DEFAULT_WIDTH
        # pixels showing HU = level, level - width/2, level + width/2 and something beyond each end
        hu = torch.tensor([level, level - width / 2, level + width / 2, level + width / 4, -160.0, 240.0],
                          dtype=torch.float64)
        img = ((hu + 160.0) / 400.0).view(1, 1, 2, 3)
        out = fn(img, s).flatten()
        expected = torch.tensor([0.5, 0.0, 1.0, 0.75, 0.0, min(1.0, (240 - level + width / 2) / width)],
                                dtype=torch.float64)
        assert torch.allclose(out, expected, atol=1e-12), (s, out)
        y = torch.rand(2, 1, 5, 6, 7, generator=_gen(s), dtype=torch.float64)
        ref = ((400 * y - 160 - level + width / 2) / width).clamp(0, 1)
        assert torch.allclose(fn(y, s), ref, atol=1e-12)


@pytest.mark.parametrize("severity", [1, 2])
def test_low_dose_noise_grows_with_attenuation_as_predicted(severity):
    i0 = _fn("ct-low-dose").severity_params[severity - 1]
    stds = []
    for v in (0.3, 0.65):
        x = torch.full((8, 1, 64, 64), v, dtype=torch.float64)
        out = _fn("ct-low-dose")(x, severity, generator=_gen(severity))
        assert (out > 0).all() and (out < 1).all()  # no clipping at these levels: the statistics are raw
        predicted = ct.low_dose_std(torch.tensor(v, dtype=torch.float64), i0).item()
        assert math.isclose(out.std().item(), predicted, rel_tol=0.05), (v, out.std().item(), predicted)
        assert abs(out.mean().item() - v) < 0.1 * predicted  # log-domain bias is small
        stds.append(out.std().item())
    # denser (brighter) pixels transmit fewer quanta: std ratio ~ exp(mu_w L * 400 * 0.35 / 1000 / 2) = 1.32
    assert stds[1] > 1.2 * stds[0]


def test_low_dose_noise_grows_as_dose_falls():
    x = torch.full((4, 1, 48, 48), 0.5, dtype=torch.float64)
    s = [(_fn("ct-low-dose")(x, k, generator=_gen(0)) - x).std().item() for k in base.SEVERITIES]
    assert all(a < b for a, b in zip(s, s[1:])), s


def test_beam_hardening_cupping_profile():
    fn = _fn("ct-beam-hardening")
    water = torch.full((1, 1, 21, 21), 0.4, dtype=torch.float64)  # HU 0 everywhere
    for s in base.SEVERITIES:
        a = fn.severity_params[s - 1]
        hu = ct.to_hu(fn(water, s))[0, 0]
        assert math.isclose(hu[10, 10].item(), -1000 * a, rel_tol=1e-12)  # full dip at the centre
        assert torch.allclose(hu[0, 0], torch.zeros((), dtype=torch.float64))  # corner: outside the cup
        assert torch.all(torch.diff(hu[10, 10:]) >= -1e-12)  # recovers monotonically towards the edge
        assert torch.allclose(hu, hu.T) and torch.allclose(hu, hu.flip(0))  # radially symmetric
        assert (hu <= 1e-12).all()
    air = torch.zeros(1, 1, 9, 9, dtype=torch.float64)
    assert torch.equal(fn(air, 5), air)  # clipped-dark pixels stay dark
    vol = phantom(2, 12, 3)
    out = fn(vol, 4)
    for d in range(vol.shape[2]):  # per axial slice, the same cup in every slice
        assert torch.allclose(out[:, :, d], fn(vol[:, :, d], 4), atol=1e-12)


# ---------------------------------------------------------------- ultrasound


def test_rayleigh_field_statistics_and_correlation():
    a = ultrasound.rayleigh_field((32, 1, 64, 64), _gen(0), torch.zeros(1, dtype=torch.float64))
    assert a.shape == (32, 1, 64, 64) and (a >= 0).all()
    mean, var = a.mean().item(), a.var().item()
    assert math.isclose(mean, math.sqrt(math.pi / 2), rel_tol=0.01)  # Rayleigh(1): mean sigma sqrt(pi/2)
    assert math.isclose(var, (4 - math.pi) / 2, rel_tol=0.04)  # variance (4 - pi) / 2 sigma^2
    assert math.isclose(mean / math.sqrt(var), math.sqrt(math.pi / (4 - math.pi)), rel_tol=0.03)
    q = np.quantile(a.numpy().ravel(), [0.1, 0.5, 0.9])
    assert np.allclose(q, stats.rayleigh.ppf([0.1, 0.5, 0.9]), rtol=0.03)
    z = a - a.mean()
    corr1 = (z * z.roll(1, -1)).mean().item() / z.var().item()
    corr6 = (z * z.roll(6, -1)).mean().item() / z.var().item()
    assert corr1 > 0.3 and abs(corr6) < 0.05  # correlated grain, short range
    a3 = ultrasound.rayleigh_field((2, 1, 16, 24, 24), _gen(1), torch.zeros(1, dtype=torch.float64))
    assert math.isclose(a3.mean().item(), math.sqrt(math.pi / 2), rel_tol=0.02)


@pytest.mark.parametrize("severity", base.SEVERITIES)
def test_rayleigh_speckle_is_multiplicative_rayleigh(severity):
    fn = _fn("rayleigh-speckle")
    b = fn.severity_params[severity - 1]
    v = 0.1  # small enough that nothing clips
    x = torch.full((24, 3, 64, 64), v, dtype=torch.float64)
    out = fn(x, severity, generator=_gen(severity))
    assert out.max() < 1
    assert torch.equal(out[:, 0], out[:, 2])  # one field per image, shared by the channels
    amp = (out[:, :1] / v - (1 - b)) / b * ultrasound.RAYLEIGH_MEAN  # back to the Rayleigh(1) amplitude
    ref = ultrasound.rayleigh_field(tuple(x.shape), _gen(severity), x)
    assert torch.allclose(amp, ref, atol=1e-9)
    assert math.isclose(amp.mean().item(), math.sqrt(math.pi / 2), rel_tol=0.02)
    assert math.isclose(amp.var().item(), (4 - math.pi) / 2, rel_tol=0.05)
    assert math.isclose(out.std().item(), v * b * math.sqrt((4 - math.pi) / math.pi), rel_tol=0.05)
    zero = fn(torch.zeros(2, 1, 8, 8), severity, generator=_gen(0))
    assert torch.equal(zero, torch.zeros_like(zero))


@pytest.mark.parametrize("spatial", [(40, 36), (8, 30, 20)])
def test_shadowing_darkens_only_below_its_start(spatial):
    fn = _fn("acoustic-shadowing")
    n = 6
    x = torch.rand((n, 2, *spatial), generator=_gen(9), dtype=torch.float64) * 0.8 + 0.1
    h = spatial[-2]
    rows = torch.arange(h, dtype=torch.float64) + 0.5
    for s in base.SEVERITIES:
        n_shadows, _, darkness = fn.severity_params[s - 1]
        u = torch.rand((n, ultrasound.MAX_SHADOWS, 4), generator=_gen(4), dtype=torch.float64)
        first = ((0.2 + 0.4 * u[:, :n_shadows, 0]).min(1).values * h)  # start row of the shallowest shadow
        out = fn(x, s, generator=_gen(4))
        assert (out <= x + 1e-12).all()  # shadows only darken
        assert torch.allclose(out[:, 0] / x[:, 0], out[:, 1] / x[:, 1], atol=1e-12)  # same shadow in every channel
        t = out[:, :1] / x[:, :1]
        t_rows = t.movedim(-2, 2).flatten(3)  # [N, 1, H, rest]
        for i in range(n):
            above = rows <= first[i]
            assert torch.equal(out[i][..., above, :], x[i][..., above, :])  # untouched above the start depth
            assert (t_rows[i, 0, ~above] < 1 - 1e-9).any()  # something is darkened below it
            assert t_rows[i, 0].min() >= (1 - darkness) ** n_shadows - 1e-12
            assert (torch.diff(t_rows[i, 0], dim=0) <= 1e-12).all()  # a shadow never brightens with depth


def test_gain_ramp_monotone_in_depth():
    fn = _fn("ultrasound-gain")
    x = torch.full((16, 1, 30, 12), 0.2, dtype=torch.float64)
    signs = set()
    for s in base.SEVERITIES:
        g = fn.severity_params[s - 1]
        gain = ultrasound.tgc_gain(tuple(x.shape), g, _gen(5), x)
        out = fn(x, s, generator=_gen(5))
        assert torch.allclose(out, (x * gain).clamp(0, 1), atol=1e-12)
        col = gain[:, 0, :, 0]  # [N, H]
        assert torch.allclose(gain, col[:, None, :, None].expand_as(gain))  # depends on depth only
        assert torch.allclose(col[:, 0], torch.ones(16, dtype=torch.float64))  # transducer row unchanged
        for row in col:
            d = torch.diff(row)
            up = bool((d > 0).all())
            assert up or bool((d < 0).all())  # strictly monotone: over- or under-compensation
            assert math.isclose(row[-1].item(), 10 ** ((1 if up else -1) * g / 20), rel_tol=1e-12)
            assert torch.allclose(torch.diff(torch.log10(row) * 20), d.new_full((29,), (1 if up else -1) * g / 29))
            signs.add(up)
    assert signs == {True, False}
    vol = torch.full((2, 1, 5, 9, 7), 0.3, dtype=torch.float64)
    gain3 = fn(vol, 3, generator=_gen(1)) / vol
    assert torch.allclose(gain3, gain3[:, :, :1, :, :1].expand_as(gain3))  # rows (axis -2) are depth in 3D too


# ---------------------------------------------------------------- severity ordering and determinism


def _mean_ssim(name: str, x: torch.Tensor, severity: int) -> float:
    fn = _fn(name)
    vals = []
    for seed in range(3 if fn.stochastic else 1):
        y = fn(x, severity, generator=_gen(seed))
        vals += [structural_similarity(x[i, 0].numpy(), y[i, 0].numpy(), data_range=1.0) for i in range(len(x))]
    return float(np.mean(vals))


@pytest.mark.parametrize("spatial_dims,size,n", [(2, 32, 8), (3, 16, 2)])
@pytest.mark.parametrize("name", NAMES)
def test_ssim_falls_strictly_with_severity(name, spatial_dims, size, n):
    x = phantom(n, size, spatial_dims, seed=3)
    ssim = [1.0] + [_mean_ssim(name, x, s) for s in base.SEVERITIES]
    assert all(a > b for a, b in zip(ssim, ssim[1:])), f"{name}: SSIM by severity {ssim}"


@pytest.mark.parametrize("name", NAMES)
def test_determinism_2d_and_3d(name):
    fn = _fn(name)
    for x in (phantom(3, 20), phantom(2, 10, 3)):
        a = fn(x, 4, generator=_gen(1))
        assert torch.equal(a, fn(x, 4, generator=_gen(1)))
        assert torch.equal(fn(x.float(), 4, generator=_gen(1)), fn(x.float(), 4, generator=_gen(1)))
        assert torch.equal(a, fn(x, 4, generator=_gen(2))) != fn.stochastic
