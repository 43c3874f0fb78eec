"""Reference checks of the MedMNIST-C corruptions (photometric.py, kernel_blur.py, artefacts.py)."""

from __future__ import annotations

import importlib
import math

import numpy as np
import pytest
import torch
from skimage.color import hed2rgb, hsv2rgb, rgb2hed, rgb2hsv
from skimage.metrics import structural_similarity

from medrobust import registry
from medrobust.corruptions import base

for _module in ("photometric", "kernel_blur", "artefacts"):
    importlib.import_module(f"medrobust.corruptions.{_module}")

from medrobust.corruptions import photometric  # noqa: E402
from medrobust.corruptions.kernel_blur import disk_kernel, line_kernels  # noqa: E402

OURS = ("gamma-down", "brightness-down", "contrast-up", "saturate", "stain-shift", "impulse-noise", "defocus-blur",
        "motion-blur", "zoom-blur", "stain-deposit", "bubble", "black-corner", "characters", "hair")
RGB_ONLY = {"saturate", "stain-shift", "stain-deposit"}


def _fn(name):
    return registry._REGISTRY["corruption"][name]


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _textured(n, channels, size, seed=1):
    """Gaussian blobs on a gradient plus mild texture and a per-image tint, ``[n, C, size, size]`` in [0, 1]."""
    g = _gen(seed)
    axis = torch.linspace(-1, 1, size, dtype=torch.float64)
    yy, xx = torch.meshgrid(axis, axis, indexing="ij")
    centre = torch.rand(n, 3, 2, 1, 1, generator=g, dtype=torch.float64) * 1.2 - 0.6
    width = torch.rand(n, 3, 1, 1, generator=g, dtype=torch.float64) * 0.3 + 0.15
    amp = torch.rand(n, 3, 1, 1, generator=g, dtype=torch.float64) * 0.5 + 0.2
    d2 = (yy - centre[:, :, 0]) ** 2 + (xx - centre[:, :, 1]) ** 2
    img = (amp * torch.exp(-d2 / (2 * width**2))).sum(1) + 0.15 * (yy + 1) / 2 + 0.05  # [n, S, S]
    x = img[:, None] * torch.linspace(1.0, 0.7, channels, dtype=torch.float64).view(1, channels, 1, 1)
    x = x * (0.8 + 0.2 * torch.rand(n, channels, 1, 1, generator=g, dtype=torch.float64))
    return (x + 0.05 * torch.rand(x.shape, generator=g, dtype=torch.float64)).clamp(0, 1)


def test_all_registered_with_metadata():
    for name in OURS:
        fn = _fn(name)
        assert (fn.channels == (3,)) == (name in RGB_ONLY), name
        assert "Severity table" in fn.__doc__ and "Source" in fn.__doc__


@pytest.mark.parametrize("name", OURS)
def test_mean_ssim_falls_strictly_with_severity(name):
    fn = _fn(name)
    channels = 3 if name in RGB_ONLY else 1
    x = _textured(6, channels, 28)
    seeds = range(3) if fn.stochastic else range(1)
    ssim = []
    for s in base.SEVERITIES:
        vals = []
        for seed in seeds:
            out = fn(x, s, generator=_gen(seed))
            for a, b in zip(x.numpy(), out.numpy()):
                vals.append(structural_similarity(a, b, data_range=1.0, channel_axis=0))
        ssim.append(float(np.mean(vals)))
    assert ssim[0] < 1.0
    assert all(a > b for a, b in zip(ssim, ssim[1:])), f"{name}: SSIM by severity {ssim}"


@pytest.mark.parametrize("name", OURS)
def test_seeded_determinism_and_generator_use(name):
    fn = _fn(name)
    x = _textured(3, 3, 24).float()
    a = fn(x, 4, generator=_gen(5))
    assert torch.equal(a, fn(x, 4, generator=_gen(5)))
    assert torch.equal(a, fn(x, 4, generator=_gen(6))) != fn.stochastic


def test_pointwise_intensity_formulas():
    x = torch.rand(3, 2, 9, 9, generator=_gen(1), dtype=torch.float64)
    x[0, 0, 0, :2] = torch.tensor([0.0, 1.0])
    vol = torch.rand(2, 1, 4, 5, 6, generator=_gen(2), dtype=torch.float64)
    for s in base.SEVERITIES:
        g = _fn("gamma-down").severity_params[s - 1]
        assert torch.equal(_fn("gamma-down")(x, s), x ** (1 / g))
        assert torch.equal(_fn("gamma-down")(vol, s), vol ** (1 / g))
        assert (_fn("gamma-down")(x, s) >= x).all()
        f = _fn("brightness-down").severity_params[s - 1]
        assert torch.allclose(_fn("brightness-down")(x, s), x * f)
        c = _fn("contrast-up").severity_params[s - 1]
        m = x.mean((2, 3), keepdim=True)
        assert torch.allclose(_fn("contrast-up")(x, s), (m + c * (x - m)).clamp(0, 1))


@pytest.mark.parametrize("severity", base.SEVERITIES)
def test_impulse_fraction_matches_table(severity):
    p = _fn("impulse-noise").severity_params[severity - 1]
    x = torch.full((8, 3, 64, 64), 0.5, dtype=torch.float64)
    out = _fn("impulse-noise")(x, severity, generator=_gen(severity))
    hit = out != 0.5
    assert torch.isin(out[hit], torch.tensor([0.0, 1.0], dtype=torch.float64)).all()
    assert math.isclose(hit.double().mean().item(), p, rel_tol=0.06)
    assert math.isclose((out == 1).double().mean().item(), p / 2, rel_tol=0.1)
    lower = _fn("impulse-noise")(x, max(severity - 1, 1), generator=_gen(severity))
    assert ((lower != 0.5) <= hit).all()  # nested: a seed's hits only grow with severity


def test_saturate_matches_hsv_gain_and_keeps_gray():
    rgb = torch.rand(2, 3, 7, 8, generator=_gen(3), dtype=torch.float64)
    gray = torch.rand(2, 1, 7, 8, generator=_gen(4), dtype=torch.float64).expand(2, 3, 7, 8).contiguous()
    for s in base.SEVERITIES:
        g = _fn("saturate").severity_params[s - 1]
        assert torch.equal(_fn("saturate")(gray, s), gray)
        hsv = rgb2hsv(rgb.numpy().transpose(0, 2, 3, 1))
        hsv[..., 1] = np.minimum(hsv[..., 1] * g, 1)
        ref = hsv2rgb(hsv).transpose(0, 3, 1, 2)
        assert np.allclose(_fn("saturate")(rgb, s).numpy(), ref, atol=1e-9)


def test_stain_shift_zero_jitter_is_identity_and_matches_skimage():
    rgb = (0.05 + 0.95 * torch.rand(3, 3, 10, 11, generator=_gen(5), dtype=torch.float64))
    ones, zeros = torch.ones(3, 3, dtype=torch.float64), torch.zeros(3, 3, dtype=torch.float64)
    assert torch.allclose(photometric.stain_jitter(rgb, ones, zeros), rgb, atol=1e-12)
    hed = photometric.rgb_to_hed(rgb)
    as_hwc = lambda t: t.numpy().transpose(0, 2, 3, 1)  # noqa: E731
    assert np.allclose(np.maximum(as_hwc(hed), 0), rgb2hed(as_hwc(rgb)), atol=1e-12)
    assert np.allclose(as_hwc(photometric.hed_to_rgb(hed.clamp(min=0))), hed2rgb(rgb2hed(as_hwc(rgb))), atol=1e-12)
    # the corruption itself: D untouched, H and E scaled within 1 +- sigma
    sigma = _fn("stain-shift").severity_params[4]
    out = _fn("stain-shift")(rgb, 5, generator=_gen(1))
    out_hed = photometric.rgb_to_hed(out)
    unclipped = (out < 1).all(1)  # where the output was not clipped to white
    assert unclipped.double().mean() > 0.5
    assert torch.allclose(out_hed[:, 2][unclipped], hed[:, 2][unclipped], atol=1e-9)
    assert not torch.allclose(out_hed[:, :2], hed[:, :2])
    assert (out_hed[:, :2] - hed[:, :2]).abs().max() <= sigma * hed[:, :2].abs().max() + sigma / 20 + 1e-9


def test_defocus_kernel_is_normalised_disk_and_applied():
    for s in base.SEVERITIES:
        r = _fn("defocus-blur").severity_params[s - 1]
        k = disk_kernel(r, dtype=torch.float64)
        assert math.isclose(k.sum().item(), 1.0, rel_tol=1e-12)
        i = torch.arange(k.shape[0], dtype=torch.float64) - k.shape[0] // 2
        inside = (i[:, None] ** 2 + i[None, :] ** 2) <= r**2
        assert torch.allclose(k[inside], k[inside][0]) and (k[~inside] == 0).all()
        impulse = torch.zeros(1, 1, 15, 15, dtype=torch.float64)
        impulse[0, 0, 7, 7] = 1
        out = _fn("defocus-blur")(impulse, s)[0, 0]
        h = k.shape[0] // 2
        assert torch.allclose(out[7 - h:8 + h, 7 - h:8 + h], k) and math.isclose(out.sum().item(), 1.0)
    assert [int((disk_kernel(r) > 0).sum()) for r in _fn("defocus-blur").severity_params] == [5, 9, 13, 21, 29]
    const = torch.full((2, 3, 12, 12), 0.3, dtype=torch.float64)
    for name in ("defocus-blur", "motion-blur", "zoom-blur"):
        assert torch.allclose(_fn(name)(const, 5, generator=_gen(0)), const, atol=1e-12)


def test_motion_kernel_is_a_normalised_line():
    angles = torch.tensor([0.0, math.pi / 2, math.pi / 4], dtype=torch.float64)
    k = line_kernels(5.0, angles)
    assert torch.allclose(k.sum((1, 2)), torch.ones(3, dtype=torch.float64))
    assert torch.allclose(k, k.flip(-1, -2))  # centred
    c = k.shape[-1] // 2
    assert torch.allclose(k[0, c, c - 2:c + 3].sum(), torch.tensor(1.0, dtype=torch.float64))  # horizontal
    assert torch.allclose(k[1, c - 2:c + 3, c].sum(), torch.tensor(1.0, dtype=torch.float64))  # vertical
    assert (k[2] * (1 - torch.eye(k.shape[-1], dtype=torch.float64))).sum() < 0.5  # mostly on the diagonal


def test_black_corner_blacks_only_the_outside():
    x = _textured(2, 3, 28)
    for s in base.SEVERITIES:
        out = _fn("black-corner")(x, s)
        k = _fn("black-corner").severity_params[s - 1]
        i = torch.arange(28, dtype=torch.float64) - 13.5
        d = torch.sqrt(i[:, None] ** 2 + i[None, :] ** 2)
        assert (out[..., d <= k * 14 - 0.5] == x[..., d <= k * 14 - 0.5]).all()
        assert (out[..., d >= k * 14 + 0.5] == 0).all() and (out <= x).all()


@pytest.mark.parametrize("name,brighter", [("characters", True), ("hair", False), ("stain-deposit", False)])
def test_marks_change_only_the_marked_pixels_one_way(name, brighter):
    x = _textured(4, 3, 32)
    for s in base.SEVERITIES:
        out = _fn(name)(x, s, generator=_gen(2))
        changed = (out != x).any(1)
        assert changed.any() and (changed.double().mean() < 0.5)
        assert ((out >= x) if brighter else (out <= x)).all()
        if name == "characters":
            assert (out[changed.unsqueeze(1).expand_as(out)] == 1).all()  # white strokes
        prev = _fn(name)(x, max(s - 1, 1), generator=_gen(2))
        assert ((prev != x).any(1) <= changed).all()  # nested marks as the severity grows


def test_bubble_brightens_inside_and_darkens_rims():
    x = torch.full((4, 1, 40, 40), 0.5, dtype=torch.float64)
    out = _fn("bubble")(x, 3, generator=_gen(4))
    assert (out > 0.5 + 1e-9).any() and (out < 0.5 - 1e-9).any()
    assert out.max() >= 0.7 - 1e-9  # interior: alpha 0.4 towards white
