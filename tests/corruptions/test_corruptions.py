"""Tests of the corruption family: the shared contract over every registered corruption, then reference checks."""

from __future__ import annotations

import importlib
import io
import math
import re

import numpy as np
import pytest
import scipy.ndimage as ndi
import torch
from PIL import Image
from scipy.stats import norm

from medrobust import registry
from medrobust.corruptions import base

# Import our modules directly so these tests do not depend on other families' packages being complete.
for _module in ("noise", "blur", "intensity", "digital"):
    importlib.import_module(f"medrobust.corruptions.{_module}")

REQUIRED = {
    "gaussian-noise", "shot-noise", "speckle-noise", "gaussian-blur", "contrast", "gamma", "brightness",
    "bias-field", "pixelate", "jpeg",
}


def _names() -> list[str]:
    try:
        return registry.names("corruption")
    except Exception:  # another family's package is broken: fall back to what is registered already
        return sorted(registry._REGISTRY["corruption"])


NAMES = _names()


def _fn(name: str):
    return registry._REGISTRY["corruption"][name]


def _skip_unless_applies(name: str, image_shape) -> None:
    """Skip a contract case whose images the corruption is not defined for (its ``dims`` / ``channels``)."""
    why = base.applies_to(_fn(name), image_shape)
    if why is not None:
        pytest.skip(f"{name}: {why}")


def _shape_for(name: str) -> tuple[int, int]:
    """``(channels, spatial_dims)`` of a case the corruption takes: 1-channel 2D when it can."""
    fn = _fn(name)
    channels = 1 if fn.channels is None or 1 in fn.channels else fn.channels[0]
    return channels, 2 if 2 in fn.dims else 3


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def smooth_images(n: int, channels: int, size: int, spatial_dims: int = 2, seed: int = 1) -> torch.Tensor:
    """Realistic smooth images in [0, 1]: three gaussian blobs on a faint gradient, ``[n, C, *size^d]``."""
    g = _gen(seed)
    axis = torch.linspace(-1, 1, size)
    grid = torch.stack(torch.meshgrid(*([axis] * spatial_dims), indexing="ij"))  # [d, *S]
    ones = (1,) * spatial_dims
    centre = (torch.rand(n, 3, spatial_dims, generator=g) * 1.2 - 0.6).view(n, 3, spatial_dims, *ones)
    width = (torch.rand(n, 3, generator=g) * 0.3 + 0.15).view(n, 3, *ones)
    amp = (torch.rand(n, 3, generator=g) * 0.5 + 0.2).view(n, 3, *ones)
    d2 = ((grid[None, None] - centre) ** 2).sum(2)  # [n, 3, *S]
    img = (amp * torch.exp(-d2 / (2 * width**2))).sum(1) + 0.15 * (grid[0] + 1) / 2 + 0.05
    img = img.clamp(0, 1)[:, None]
    tint = torch.linspace(1.0, 0.8, channels).view(1, channels, *ones)  # channels differ a little
    return (img * tint).contiguous()


# ---------------------------------------------------------------- the shared contract, every corruption


def test_required_corruptions_are_registered():
    assert REQUIRED <= set(NAMES), f"missing: {sorted(REQUIRED - set(NAMES))}"


@pytest.mark.parametrize("name", NAMES)
def test_severity_table_and_docstring(name):
    fn = _fn(name)
    assert len(fn.severity_params) == len(base.SEVERITIES) == 5
    assert isinstance(fn.stochastic, bool)
    assert fn.family in base.FAMILIES and set(fn.dims) <= {2, 3} and fn.dims
    doc = fn.__doc__ or ""
    assert "Severity table" in doc and ("Source" in doc or "source" in doc), doc


@pytest.mark.parametrize("shape", [(3, 1, 20, 20), (3, 3, 20, 20), (2, 1, 6, 12, 12), (2, 3, 4, 10, 10)])
@pytest.mark.parametrize("name", NAMES)
def test_shape_dtype_range_and_input_untouched(name, shape):
    _skip_unless_applies(name, shape[1:])
    x = torch.rand(shape, generator=_gen(3))
    x[0].view(-1)[:4] = torch.tensor([0.0, 1.0, 0.0, 1.0])  # the extremes must stay valid
    for dtype in (torch.float32, torch.float64):
        xd = x.to(dtype)
        before = xd.clone()
        for severity in (1, 5):
            out = _fn(name)(xd, severity, generator=_gen(0))
            assert out.shape == xd.shape and out.dtype == dtype
            assert out.data_ptr() != xd.data_ptr()
            assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
            assert not torch.equal(out, xd), f"{name} severity {severity} changed nothing"
        assert torch.equal(xd, before), f"{name} modified its input"


def _mean_distortion(name: str, x: torch.Tensor, severity: int) -> float:
    fn = _fn(name)
    seeds = range(4) if fn.stochastic else range(1)
    return float(np.mean([((fn(x, severity, generator=_gen(s)) - x) ** 2).mean().item() for s in seeds]))


@pytest.mark.parametrize("spatial_dims,size,channels", [(2, 32, 1), (2, 28, 3), (3, 16, 1)])
@pytest.mark.parametrize("name", NAMES)
def test_distortion_strictly_increases_with_severity(name, spatial_dims, size, channels):
    _skip_unless_applies(name, (channels,) + (size,) * spatial_dims)
    x = smooth_images(12 if spatial_dims == 2 else 3, channels, size, spatial_dims)
    mse = [_mean_distortion(name, x, s) for s in base.SEVERITIES]
    assert mse[0] > 0
    assert all(a < b for a, b in zip(mse, mse[1:])), f"{name}: MSE by severity {mse}"


@pytest.mark.parametrize("name", NAMES)
def test_seeded_determinism(name):
    fn = _fn(name)
    channels, dims = _shape_for(name)
    x = smooth_images(4 if dims == 2 else 2, channels, 24 if dims == 2 else 12, dims)
    a = fn(x, 3, generator=_gen(7))
    assert torch.equal(a, fn(x, 3, generator=_gen(7)))
    other = fn(x, 3, generator=_gen(8))
    if fn.stochastic:
        assert not torch.equal(a, other), f"{name} ignores its generator"
    else:
        assert torch.equal(a, other), f"{name} is marked deterministic but depends on the generator"


@pytest.mark.parametrize("bad", [0, 6, -1, 2.0, True, "3"])
@pytest.mark.parametrize("name", NAMES)
def test_bad_severity_raises_naming_value(name, bad):
    channels, dims = _shape_for(name)
    x = smooth_images(1, channels, 16, dims)
    with pytest.raises(ValueError, match=re.escape(f"got {bad!r}")) as err:
        _fn(name)(x, bad)
    assert "1..5" in str(err.value)
    with pytest.raises(ValueError, match="1..5"):
        base.apply(name, x, bad)


def test_apply_matches_direct_call_and_validates_input():
    x = smooth_images(2, 1, 16)
    assert torch.equal(base.apply("gaussian-noise", x, 2, _gen(5)), _fn("gaussian-noise")(x, 2, _gen(5)))
    nan = x.clone()
    nan[0, 0, 3, 3] = float("nan")
    with pytest.raises(ValueError, match="non-finite.*1 NaN"):
        base.apply("contrast", nan, 1)
    inf = x.clone()
    inf[1, 0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="0 NaN, 1 inf"):
        base.apply("contrast", inf, 1)
    with pytest.raises(ValueError, match=r"\[0, 1\].*max 2\d\d"):
        base.apply("contrast", x * 255, 1)
    with pytest.raises(ValueError, match=r"min -0\.4"):
        base.apply("contrast", x - 0.5, 1)
    with pytest.raises(TypeError, match="float"):
        base.apply("contrast", (x * 255).to(torch.uint8), 1)
    with pytest.raises(ValueError, match=r"\[N, C, H, W\].*3 dims"):
        base.apply("contrast", x[0], 1)
    with pytest.raises(registry.RegistryError, match="gaussian-noise"):
        base.apply("no-such-corruption", x, 1)


# ---------------------------------------------------------------- reference checks, one corruption at a time


@pytest.mark.parametrize("severity", base.SEVERITIES)
def test_gaussian_noise_std_matches_table(severity):
    sigma = _fn("gaussian-noise").severity_params[severity - 1]
    x = torch.full((16, 1, 64, 64), 0.5, dtype=torch.float64)
    r = _fn("gaussian-noise")(x, severity, generator=_gen(severity)) - x
    # std of clip(0.5 + sigma Z, 0, 1) - 0.5, i.e. the table sigma after the (tiny) effect of clamping
    a = 0.5 / sigma
    clipped_var = sigma**2 * ((2 * norm.cdf(a) - 1) - 2 * a * norm.pdf(a) + 2 * a**2 * norm.sf(a))
    assert math.isclose(r.std().item(), math.sqrt(clipped_var), rel_tol=0.02)
    assert math.sqrt(clipped_var) > 0.97 * sigma  # the reference is the table sigma to within 3 %
    assert abs(r.mean().item()) < 0.01


@pytest.mark.parametrize("severity", base.SEVERITIES)
def test_shot_and_speckle_noise_statistics(severity):
    v = 0.3
    x = torch.full((16, 1, 64, 64), v, dtype=torch.float64)
    lam = _fn("shot-noise").severity_params[severity - 1]
    shot = _fn("shot-noise")(x, severity, generator=_gen(1))
    assert math.isclose(shot.std().item(), math.sqrt(v / lam), rel_tol=0.04)  # Poisson: var = mean / lam
    assert abs(shot.mean().item() - v) < 0.01
    assert torch.allclose(shot * lam, (shot * lam).round(), atol=1e-9)  # whole photon counts
    sigma = _fn("speckle-noise").severity_params[severity - 1]
    speckle = _fn("speckle-noise")(x, severity, generator=_gen(1))
    assert math.isclose(speckle.std().item(), v * sigma, rel_tol=0.04)  # multiplicative: std = v * sigma
    zero = _fn("speckle-noise")(torch.zeros(2, 1, 8, 8), severity, generator=_gen(1))
    assert torch.equal(zero, torch.zeros_like(zero))  # no signal, no speckle


@pytest.mark.parametrize("severity", base.SEVERITIES)
def test_gaussian_blur_constant_impulse_and_scipy(severity):
    fn = _fn("gaussian-blur")
    sigma = fn.severity_params[severity - 1]
    const = torch.full((2, 3, 17, 19), 0.37, dtype=torch.float64)
    assert torch.allclose(fn(const, severity), const, atol=1e-12)
    const3 = torch.full((1, 1, 7, 9, 11), 0.81, dtype=torch.float64)
    assert torch.allclose(fn(const3, severity), const3, atol=1e-12)

    size, c = 41, 20
    impulse = torch.zeros(1, 1, size, size, dtype=torch.float64)
    impulse[0, 0, c, c] = 1.0
    r = int(4 * sigma + 0.5)  # documented truncation: 4 sigma
    i = torch.arange(size, dtype=torch.float64) - c
    k2 = torch.exp(-(i[:, None] ** 2 + i[None, :] ** 2) / (2 * sigma**2))
    k2 = k2 * ((i.abs() <= r)[:, None] & (i.abs() <= r)[None, :])
    k2 = k2 / k2.sum()
    assert torch.allclose(fn(impulse, severity)[0, 0], k2, atol=1e-12)

    impulse3 = torch.zeros(1, 1, 21, 21, 21, dtype=torch.float64)
    impulse3[0, 0, 10, 10, 10] = 1.0
    out3 = fn(impulse3, severity)[0, 0]
    j = torch.arange(21, dtype=torch.float64) - 10
    k1 = torch.exp(-(j**2) / (2 * sigma**2)) * (j.abs() <= r)
    k1 = k1 / k1.sum()
    assert torch.allclose(out3, k1[:, None, None] * k1[None, :, None] * k1[None, None, :], atol=1e-12)

    x = torch.rand(2, 1, 15, 18, generator=_gen(2), dtype=torch.float64)
    ref = ndi.gaussian_filter(x.numpy(), sigma=(0, 0, sigma, sigma), mode="nearest", truncate=4.0)
    assert np.allclose(fn(x, severity).numpy(), ref, atol=1e-12)


@pytest.mark.parametrize("severity", base.SEVERITIES)
def test_contrast_keeps_mean_and_scales_deviation(severity):
    c = _fn("contrast").severity_params[severity - 1]
    for x in (smooth_images(5, 3, 20).double(), smooth_images(2, 1, 10, 3).double()):
        out = _fn("contrast")(x, severity)
        dims = tuple(range(2, x.ndim))
        assert torch.allclose(out.mean(dims), x.mean(dims), atol=1e-12)
        assert torch.allclose(out.std(dims), c * x.std(dims), atol=1e-12)


def test_gamma_and_brightness_formulas():
    x = torch.rand(4, 1, 12, 12, generator=_gen(4), dtype=torch.float64)
    x[0, 0, 0, :2] = torch.tensor([0.0, 1.0])
    rgb = torch.rand(4, 3, 12, 12, generator=_gen(5), dtype=torch.float64)
    rgb[0, :, 0, 0] = 0.0  # a black pixel turns gray
    prev = x
    for s in base.SEVERITIES:
        g = _fn("gamma").severity_params[s - 1]
        out = _fn("gamma")(x, s)
        assert g > 1 and torch.allclose(out, x**g)
        assert (out <= prev).all() and out[0, 0, 0, 0] == 0 and out[0, 0, 0, 1] == 1  # one direction only
        prev = out
        c = _fn("brightness").severity_params[s - 1]
        assert torch.allclose(_fn("brightness")(x, s), (x + c).clamp(0, 1))
        out_rgb = _fn("brightness")(rgb, s)
        v, v_out = rgb.amax(1), out_rgb.amax(1)
        assert torch.allclose(v_out, (v + c).clamp(max=1))  # HSV value raised by c
        ratio = out_rgb[1:] / rgb[1:]  # hue and saturation kept: all channels scale alike
        assert torch.allclose(ratio, ratio[:, :1].expand_as(ratio))
        assert torch.allclose(out_rgb[0, :, 0, 0], torch.full((3,), c, dtype=torch.float64))


@pytest.mark.parametrize("spatial", [(24, 20), (9, 10, 11)])
def test_bias_field_is_smooth_cubic_and_scales_with_severity(spatial):
    x = torch.full((3, 2, *spatial), 0.5, dtype=torch.float64)
    logs = []
    for s in base.SEVERITIES:
        alpha = _fn("bias-field").severity_params[s - 1]
        out = _fn("bias-field")(x, s, generator=_gen(11))
        log_gain = torch.log(out / x)
        assert torch.allclose(log_gain[:, 0], log_gain[:, 1])  # one field shared by the channels
        peak = log_gain.abs().flatten(1).amax(1)
        assert torch.allclose(peak, torch.full_like(peak, alpha))  # strength = table alpha
        logs.append(log_gain / alpha)
        for dim in range(2, x.ndim):  # a cubic polynomial: 4th differences along every axis vanish
            assert torch.diff(log_gain, n=4, dim=dim).abs().max() < 1e-9
        diagonal = torch.diagonal(log_gain, dim1=-2, dim2=-1)  # total degree 3: cubic along a diagonal too
        assert torch.diff(diagonal, n=4, dim=-1).abs().max() < 1e-9
    for other in logs[1:]:  # same generator state, same field shape at every severity
        assert torch.allclose(other, logs[0])
    assert not torch.allclose(logs[0][0], logs[0][1])  # a different field per image


@pytest.mark.parametrize("shape", [(2, 1, 29, 30), (1, 2, 11, 13, 14)])
@pytest.mark.parametrize("severity", base.SEVERITIES)
def test_pixelate_blocks_are_constant_block_means(severity, shape):
    b = _fn("pixelate").severity_params[severity - 1]
    x = torch.rand(shape, generator=_gen(6), dtype=torch.float64)
    out = _fn("pixelate")(x, severity)
    spatial = shape[2:]
    for start in np.ndindex(*[math.ceil(n / b) for n in spatial]):
        idx = (slice(None), slice(None)) + tuple(slice(k * b, min((k + 1) * b, n)) for k, n in zip(start, spatial))
        block, src = out[idx], x[idx]
        means = src.mean(dim=tuple(range(2, x.ndim)), keepdim=True)
        assert torch.allclose(block, means.expand_as(block), atol=1e-12)


def _pil_jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())))


def test_jpeg_psnr_drops_and_matches_pillow():
    fn = _fn("jpeg")
    x = smooth_images(8, 1, 32).double()
    psnr = [(10 * torch.log10(1 / ((fn(x, s) - x) ** 2).mean())).item() for s in base.SEVERITIES]
    assert all(a > b for a, b in zip(psnr, psnr[1:])), psnr
    q = fn.severity_params[2]
    u8 = lambda t: (t * 255).round().to(torch.uint8).numpy()  # noqa: E731
    gray = fn(x, 3)[1, 0]
    assert np.array_equal(u8(gray), _pil_jpeg(u8(x[1, 0]), q))
    rgb = smooth_images(2, 3, 32)
    ref = _pil_jpeg(np.ascontiguousarray(u8(rgb[1]).transpose(1, 2, 0)), q)  # coded as one RGB image
    assert np.array_equal(u8(fn(rgb, 3)[1]).transpose(1, 2, 0), ref)
    vol = smooth_images(2, 1, 16, 3)
    out = fn(vol, 3)
    for d in range(vol.shape[2]):  # volumes: slice by slice along depth
        assert torch.equal(out[:, :, d], fn(vol[:, :, d], 3))
