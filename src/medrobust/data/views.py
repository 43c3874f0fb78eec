"""Random views for self-supervised learning, suited to grayscale and volumetric medical images.

Batched tensor ops on ``[N, C, *spatial]`` in ``[0, 1]`` (2D or 3D), randomness only from the given
``torch.Generator``. No colour-jitter assumptions: intensity changes are gamma, contrast and brightness,
as acquisition differences are. Geometric: random resized crop, small rotation, optional flip, all as one
affine resampling (``affine_grid`` + ``grid_sample``).

Several of these are also evaluated corruptions; :func:`covered_corruptions` names the corruptions a
``ViewParams`` applies during training, so the report can tell corruptions an arm has seen in augmentation
from those held out from it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from medrobust.corruptions.blur import blur_axis


class ViewParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    crop_scale: tuple[float, float] = (0.6, 1.0)   # fraction of the image area kept by the random crop
    max_rotation: float = Field(10.0, ge=0, description="degrees")
    flip_p: float = Field(0.5, ge=0, le=1, description="left-right flip probability")
    gamma: float = Field(1.4, ge=1, description="gamma drawn log-uniformly in [1/g, g]")
    contrast: float = Field(0.3, ge=0, description="contrast factor in [1-c, 1+c]")
    brightness: float = Field(0.1, ge=0, description="added offset in [-b, b]")
    blur_p: float = Field(0.3, ge=0, le=1)
    blur_sigma: float = Field(0.8, ge=0, description="pixels")
    noise_p: float = Field(0.3, ge=0, le=1)
    noise_std: float = Field(0.03, ge=0)


#: evaluated corruption -> does a training view with these parameters apply it (at any strength)?
_COVERS = {
    "gaussian-noise": lambda p: p.noise_p > 0 and p.noise_std > 0,
    "gaussian-blur": lambda p: p.blur_p > 0 and p.blur_sigma > 0,
    "contrast": lambda p: p.contrast > 0,  # the factor is drawn in [1 - c, 1 + c]: both directions
    "contrast-up": lambda p: p.contrast > 0,
    "brightness": lambda p: p.brightness > 0,  # the offset in [-b, b]
    "brightness-down": lambda p: p.brightness > 0,
    "gamma": lambda p: p.gamma > 1,  # gamma log-uniform in [1/g, g]
    "gamma-down": lambda p: p.gamma > 1,
}


def covered_corruptions(params: ViewParams) -> list[str]:
    """The registered corruptions that :func:`random_view` with ``params`` also applies, in a fixed order
    (``noise_p > 0`` -> ``gaussian-noise``, ``blur_p > 0`` -> ``gaussian-blur``, ``contrast > 0`` ->
    ``contrast`` and ``contrast-up``, ``brightness > 0`` -> ``brightness`` and ``brightness-down``, ``gamma > 1`` ->
    ``gamma`` and ``gamma-down``: the views draw both directions)."""
    return [name for name, applies in _COVERS.items() if applies(params)]


def views_in(params: BaseModel) -> list[ViewParams]:
    """Every :class:`ViewParams` among the fields of a component's ``params`` (``views``, DINO's
    ``local_views``, Robust-MMR's ``style``, ...), nested models included."""
    found = []
    for name in type(params).model_fields:
        value = getattr(params, name)
        if isinstance(value, ViewParams):
            found.append(value)
        elif isinstance(value, BaseModel):
            found += views_in(value)
    return found


def _uniform(n: int, lo: float, hi: float, g: torch.Generator, device) -> torch.Tensor:
    return torch.rand(n, generator=g).to(device) * (hi - lo) + lo


def _affine(x: torch.Tensor, p: ViewParams, g: torch.Generator) -> torch.Tensor:
    n, dims = len(x), x.ndim - 2
    scale = _uniform(n, p.crop_scale[0], p.crop_scale[1], g, x.device).pow(1.0 / dims)  # side fraction
    angle = _uniform(n, -p.max_rotation, p.max_rotation, g, x.device) * math.pi / 180
    flip = torch.where(torch.rand(n, generator=g).to(x.device) < p.flip_p, -1.0, 1.0)
    theta = torch.zeros(n, dims, dims + 1, device=x.device)
    cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
    # rotation in the last two (in-plane) axes; affine_grid's coordinate order is (x=W, y=H[, z=D])
    theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = cos * flip, -sin, sin * flip, cos
    if dims == 3:
        theta[:, 2, 2] = scale
    for axis in range(dims):
        room = 1.0 - scale
        theta[:, axis, dims] = (torch.rand(n, generator=g).to(x.device) * 2 - 1) * room
    if dims == 3:
        return _resample_volume(x, theta)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _resample_volume(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Trilinear resampling of ``[N, C, D, H, W]`` by an affine ``theta`` ``[N, 3, 4]`` that keeps depth apart
    (in-plane rotation; depth only scaled and shifted): bilinear in-plane on every slice, then linear along
    depth. Trilinear interpolation is separable, so this is ``grid_sample``'s result (border padding,
    ``align_corners=False``) to float rounding, at a fraction of the cost: the 3D grid alone (``affine_grid``,
    N·D·H·W·3 values) took longer than the sampling."""
    n, c, d, h, w = x.shape
    planes = F.affine_grid(theta[:, :2][:, :, [0, 1, 3]], [n, c * d, h, w], align_corners=False)
    x = F.grid_sample(x.reshape(n, c * d, h, w), planes, mode="bilinear", padding_mode="border",
                      align_corners=False).view(n, c, d, h * w)
    z = (2 * torch.arange(d, dtype=x.dtype, device=x.device) + 1) / d - 1  # output depth, normalised
    src = ((theta[:, 2, 2:3] * z + theta[:, 2, 3:4] + 1) * d - 1) / 2  # [N, D] source index
    src = src.clamp(0, d - 1)
    lo = src.floor().long()
    hi = (lo + 1).clamp(max=d - 1)
    frac = (src - lo).view(n, 1, d, 1)
    pick = lambda i: x.gather(2, i.view(n, 1, d, 1).expand(n, c, d, h * w))  # noqa: E731
    return torch.lerp(pick(lo), pick(hi), frac).view(n, c, d, h, w)


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``[N, C, *spatial]`` along every spatial axis (radius ⌈3σ⌉, edges replicated)."""
    if sigma <= 0:
        return x
    radius = max(1, int(math.ceil(3 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (t / sigma) ** 2)
    kernel = kernel / kernel.sum()
    for axis in range(2, x.ndim):
        x = blur_axis(x, kernel, axis)
    return x


def random_view(x: torch.Tensor, p: ViewParams, g: torch.Generator) -> torch.Tensor:
    """One random view of every image in ``x`` ([N, C, *spatial] in [0, 1]); same shape, in [0, 1]. Computed in
    fp32 even inside a low-precision autocast region (training with ``precision: bf16``)."""
    with torch.autocast(x.device.type, enabled=False):
        return _view(x.float(), p, g)


def _view(x: torch.Tensor, p: ViewParams, g: torch.Generator) -> torch.Tensor:
    n, bshape = len(x), (len(x),) + (1,) * (x.ndim - 1)
    x = _affine(x, p, g)
    log_g = math.log(p.gamma)
    gamma = torch.exp(_uniform(n, -log_g, log_g, g, x.device)).view(bshape)
    x = x.clamp(1e-6, 1.0) ** gamma
    mean = x.mean(dim=tuple(range(1, x.ndim)), keepdim=True)
    contrast = _uniform(n, 1 - p.contrast, 1 + p.contrast, g, x.device).view(bshape)
    x = (x - mean) * contrast + mean + _uniform(n, -p.brightness, p.brightness, g, x.device).view(bshape)
    if p.blur_p > 0 and p.blur_sigma > 0:
        pick = torch.rand(n, generator=g).to(x.device) < p.blur_p  # [N]
        if pick.any():  # blur only the picked images (the same result as blurring all and selecting)
            x = x.clone()
            x[pick] = gaussian_blur(x[pick], p.blur_sigma)
    if p.noise_p > 0 and p.noise_std > 0:
        pick = (torch.rand(n, generator=g).to(x.device) < p.noise_p).view(bshape)
        noise = torch.randn(x.shape, generator=g).to(x.device) * p.noise_std
        x = x + noise * pick
    return x.clamp(0.0, 1.0)
