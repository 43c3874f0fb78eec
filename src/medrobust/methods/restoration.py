"""Context restoration with Models-Genesis transforms: restore the original image from a corrupted one.

Zhou, Sodha, Rahman Siddiquee, Feng, Tajbakhsh, Gotway, Liang (2019), "Models Genesis: Generic Autodidactic
Models for 3D Medical Image Analysis", MICCAI; extended in Medical Image Analysis 67 (2021). The input is
corrupted by (in this order, each with its own probability, per image) local pixel shuffling, a non-linear
intensity curve, and in-painting or out-painting (batched, seeded re-implementations below, 2D and 3D);
the encoder and a light decoder restore the original image; loss = MSE to the original.

The study's default encoder (``cnn``) exposes only pooled features (``forward_features -> [N, D]``), so the
decoder restores the image from the pooled feature vector (:class:`PixelDecoder`: linear to a 4-pixel seed
grid, two upsampling conv blocks, resize to the image size, conv). At 28 px this is enough to restore
the anatomy and forces the pooled feature — the one the study fine-tunes — to describe the whole image; a
U-Net-style decoder on encoder internals (as in the paper) would let skip connections do the restoring.
Models Genesis' random flip (an augmentation of input and target alike) is left out. On a pre-training pool
there is one decoder per input signature (:class:`~medrobust.methods.adapters.SignatureHeads`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from medrobust.methods.adapters import SignatureHeads
from medrobust.methods.contract import input_geometry  # noqa: F401 (re-exported: it lived here)
from medrobust.methods.contract import Encoders, MethodInfo, method_generator
from medrobust.models.layers import conv
from medrobust.registry import register


# ---------------------------------------------------------------- Models Genesis transforms
class GenesisParams(BaseModel):
    """Probabilities of the Models Genesis transforms (defaults of the paper's code, per image)."""

    model_config = ConfigDict(extra="forbid")
    shuffle_p: float = Field(0.5, ge=0, le=1, description="local pixel shuffling")
    shuffle_block: int = Field(3, ge=2, description="side of the shuffled tiles, pixels")
    shuffle_fraction: float = Field(0.5, gt=0, le=1, description="fraction of tiles shuffled")
    nonlinear_p: float = Field(0.9, ge=0, le=1, description="non-linear (Bézier) intensity curve")
    paint_p: float = Field(0.9, ge=0, le=1, description="in- or out-painting")
    inpaint_p: float = Field(0.2, ge=0, le=1, description="share of painting that is in-painting (else out)")


def intensity_curve(x: torch.Tensor, p1: torch.Tensor, p2: torch.Tensor, invert: torch.Tensor,
                    samples: int = 512) -> torch.Tensor:
    """Map the pixels of each image through a cubic Bézier curve from (0, 0) to (1, 1) (Models Genesis).

    Args:
        x: ``[N, C, *spatial]`` in [0, 1].
        p1, p2: ``[N, 2]`` inner control points (x, y) in [0, 1]² (the curve is then monotone in x).
        invert: ``bool [N]``; True reverses the y values (a decreasing curve, 0 ↔ 1), as the paper's code
            does for half of the images.
    Returns:
        ``f(x)`` by linear interpolation between ``samples`` points of the curve; same shape, in [0, 1].
    """
    n = len(x)
    t = torch.linspace(0, 1, samples, device=x.device).view(1, samples)  # [1, T]
    w1, w2, w3 = 3 * (1 - t) ** 2 * t, 3 * (1 - t) * t ** 2, t ** 3  # Bernstein weights; P0 = (0, 0)
    xs = w1 * p1[:, :1] + w2 * p2[:, :1] + w3  # [N, T], increasing from 0 to 1
    ys = w1 * p1[:, 1:] + w2 * p2[:, 1:] + w3
    ys = torch.where(invert.view(n, 1), ys.flip(1), ys)
    xs, order = xs.sort(dim=1)  # guards against rounding; the curve is monotone in t
    ys = ys.gather(1, order)
    v = x.reshape(n, -1)  # [N, M]
    hi = torch.searchsorted(xs.contiguous(), v.contiguous()).clamp(1, samples - 1)
    lo = hi - 1
    x0, x1, y0, y1 = xs.gather(1, lo), xs.gather(1, hi), ys.gather(1, lo), ys.gather(1, hi)
    frac = ((v - x0) / (x1 - x0).clamp_min(1e-12)).clamp(0, 1)
    return (y0 + frac * (y1 - y0)).clamp(0, 1).view_as(x)


def nonlinear_intensity(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """:func:`intensity_curve` with random control points and inversion with probability 1/2, per image."""
    n = len(x)
    p1, p2 = torch.rand(n, 2, generator=g).to(x.device), torch.rand(n, 2, generator=g).to(x.device)
    invert = (torch.rand(n, generator=g) < 0.5).to(x.device)
    return intensity_curve(x, p1, p2, invert)


def local_pixel_shuffle(x: torch.Tensor, g: torch.Generator, block: int = 3, fraction: float = 0.5) -> torch.Tensor:
    """Shuffle the pixels inside small tiles (Models Genesis' local pixel shuffling), per image.

    The image is cut into non-overlapping ``block^d`` tiles on a grid with a random offset (pixels at the
    border that do not fill a tile stay put); a random ``fraction`` of each image's tiles get a random
    permutation of their pixel positions (the same for all channels). The paper shuffles 10,000 random,
    possibly overlapping blocks; the tile grid is its batched equivalent. Pixel values are only moved.
    """
    n, c, *size = x.shape
    d = len(size)
    if min(size) < block:
        raise ValueError(f"local_pixel_shuffle: block {block} is larger than the image size {tuple(size)}")
    offsets = [int(torch.randint(0, block, (1,), generator=g)) if s >= 2 * block else 0 for s in size]
    grid = [(s - o) // block for s, o in zip(size, offsets)]
    region = tuple(slice(o, o + k * block) for o, k in zip(offsets, grid))
    tiles = x[(slice(None), slice(None)) + region]  # [N, C, g1·b, g2·b(, g3·b)]
    shape = [n, c] + [v for k in grid for v in (k, block)]
    perm_axes = [0, 1] + [2 + 2 * i for i in range(d)] + [3 + 2 * i for i in range(d)]
    tiles = tiles.reshape(shape).permute(perm_axes)  # [N, C, g1, g2, .., b, b, ..]
    n_tiles, n_pix = int(torch.tensor(grid).prod()), block ** d
    flat = tiles.reshape(n, c, n_tiles, n_pix)
    perm = torch.rand(n, n_tiles, n_pix, generator=g).argsort(dim=2).to(x.device)  # [N, T, b^d]
    chosen = (torch.rand(n, n_tiles, 1, generator=g) < fraction).to(x.device)
    perm = torch.where(chosen, perm, torch.arange(n_pix, device=x.device).expand_as(perm))
    flat = flat.gather(3, perm.unsqueeze(1).expand(n, c, n_tiles, n_pix))
    inverse_axes = [perm_axes.index(i) for i in range(len(perm_axes))]
    restored = flat.reshape([n, c] + grid + [block] * d).permute(inverse_axes).reshape(n, c, *[k * block for k in grid])
    out = x.clone()
    out[(slice(None), slice(None)) + region] = restored
    return out


def _boxes(shape: torch.Size, g: torch.Generator, count: int, size_range: tuple[float, float],
           first_always: bool, margin: int = 3) -> torch.Tensor:
    """``bool [N, 1, *spatial]``: union of up to ``count`` random boxes per image (Models Genesis painting).

    Box ``k`` exists if boxes ``0..k-1`` exist and a draw < 0.95 succeeds (box 0 always if ``first_always``);
    each side is a random integer in ``size_range`` × the image side, placed ``margin`` pixels from the border.
    """
    n, _, *size = shape
    exists = torch.rand(n, count, generator=g) < 0.95
    if first_always:
        exists[:, 0] = True
    exists = exists.cumprod(dim=1).bool()  # [N, K]
    mask = exists.view(n, count, *([1] * len(size)))
    for axis, s in enumerate(size):
        lo_size, hi_size = max(1, int(s * size_range[0])), max(1, int(s * size_range[1]))
        side = torch.randint(lo_size, hi_size + 1, (n, count), generator=g)
        room = (s - side - 2 * margin).clamp_min(0)
        start = torch.minimum(margin + (torch.rand(n, count, generator=g) * (room + 1)).floor().long(), s - side)
        coord = torch.arange(s).view(1, 1, s)
        inside = (coord >= start.unsqueeze(2)) & (coord < (start + side).unsqueeze(2))  # [N, K, s]
        view = [n, count] + [1] * len(size)
        view[2 + axis] = s
        mask = mask & inside.view(view)
    return mask.any(dim=1, keepdim=True)  # [N, 1, *spatial]


def inpaint_mask(shape: torch.Size, g: torch.Generator) -> torch.Tensor:
    """Up to 5 boxes of 1/6 to 1/3 of each side, filled with noise by in-painting."""
    return _boxes(shape, g, 5, (1 / 6, 1 / 3), first_always=False)


def outpaint_mask(shape: torch.Size, g: torch.Generator) -> torch.Tensor:
    """1 to 5 boxes of 3/7 to 4/7 of each side that out-painting *keeps* (everything else becomes noise)."""
    return _boxes(shape, g, 5, (3 / 7, 4 / 7), first_always=True)


def in_painting(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Replace the :func:`inpaint_mask` boxes by uniform noise."""
    mask = inpaint_mask(x.shape, g).to(x.device)
    return torch.where(mask, torch.rand(x.shape, generator=g).to(x.device), x)


def out_painting(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Replace everything outside the :func:`outpaint_mask` boxes by uniform noise."""
    mask = outpaint_mask(x.shape, g).to(x.device)
    return torch.where(mask, x, torch.rand(x.shape, generator=g).to(x.device))


def models_genesis(x: torch.Tensor, p: GenesisParams, g: torch.Generator) -> torch.Tensor:
    """The Models Genesis corruption of ``x`` ([N, C, *spatial] in [0, 1]); each image draws its own choices."""
    n, bshape = len(x), (len(x),) + (1,) * (x.ndim - 1)

    def pick(prob: float) -> torch.Tensor:
        return (torch.rand(n, generator=g) < prob).to(x.device).view(bshape)

    x = torch.where(pick(p.shuffle_p), local_pixel_shuffle(x, g, p.shuffle_block, p.shuffle_fraction), x)
    x = torch.where(pick(p.nonlinear_p), nonlinear_intensity(x, g), x)
    paint, inpaint = pick(p.paint_p), pick(p.inpaint_p)
    x = torch.where(paint & inpaint, in_painting(x, g), x)
    return torch.where(paint & ~inpaint, out_painting(x, g), x)


# ---------------------------------------------------------------- restoration method
class PixelDecoder(nn.Module):
    """Pooled feature ``[N, D]`` -> image ``[N, C, *size]`` in [0, 1] (sigmoid), for any output ``size``.

    Linear to ``width`` channels on a ``seed``-pixel grid, two (×2 upsample, 3-conv, GELU) blocks, resize
    to ``size`` (bilinear / trilinear), 3-conv to ``C`` channels. Its parameters do not depend on the size.
    """

    def __init__(self, feature_dim: int, out_channels: int, spatial_dims: int, width: int = 32, seed: int = 4):
        super().__init__()
        self.spatial_dims, self.width, self.seed = spatial_dims, width, seed
        Conv = conv(spatial_dims)
        self.fc = nn.Linear(feature_dim, width * seed ** spatial_dims)
        self.blocks = nn.ModuleList([Conv(width, width, 3, padding=1) for _ in range(2)])
        self.out = Conv(width, out_channels, 3, padding=1)

    def forward(self, features: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
        if len(size) != self.spatial_dims:
            raise ValueError(f"PixelDecoder was built for {self.spatial_dims}D images but got output size {tuple(size)}")
        h = self.fc(features).view(len(features), self.width, *([self.seed] * self.spatial_dims))
        for block in self.blocks:
            h = F.gelu(block(F.interpolate(h, scale_factor=2, mode="nearest")))
        mode = "bilinear" if self.spatial_dims == 2 else "trilinear"
        h = F.interpolate(h, size=tuple(size), mode=mode, align_corners=False)
        return torch.sigmoid(self.out(h))  # [N, C, *size]


class RestorationParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    genesis: GenesisParams = GenesisParams()
    decoder_width: int = Field(32, ge=1)


@register("method", "restoration")
class Restoration(nn.Module):
    """Models-Genesis-style context restoration pre-training of ``image_encoder``."""

    Params = RestorationParams
    info = MethodInfo("Restoration (Models Genesis)", "self-supervised", counterpart="supervised")

    @classmethod
    def augmented_corruptions(cls, params: RestorationParams) -> list[str]:
        """The random Bézier intensity curve (``nonlinear_p``) is a monotone remapping of which gamma and
        contrast changes are special cases; shuffling and painting match no evaluated corruption."""
        return ["contrast", "gamma"] if params.genesis.nonlinear_p > 0 else []

    def __init__(self, encoders: Encoders, params: RestorationParams | None = None, seed: int = 0):
        super().__init__()
        image_encoder = encoders.image
        self.params = p = params or RestorationParams()
        self.generator = method_generator(seed)
        self.image_encoder = image_encoder
        self.decoder = SignatureHeads.of(encoders, lambda c, d: PixelDecoder(image_encoder.feature_dim, c, d,
                                                                            p.decoder_width), "restoration")

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        x = batch["image"]  # [N, C, *spatial] in [0, 1]
        corrupted = models_genesis(x, self.params.genesis, self.generator)
        decoder = self.decoder.for_input(x)  # the pixel decoder of x's signature
        restored = decoder(self.image_encoder.forward_features(corrupted), tuple(x.shape[2:]))
        return {"loss": F.mse_loss(restored, x)}
