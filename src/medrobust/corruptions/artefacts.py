"""Modality-specific artefacts of 2D images: stain deposits and air bubbles (histology), black corners, burned-in
characters and hair (dermoscopy).

After Di Salvo et al., "MedMNIST-C: Comprehensive benchmark and improved classifier robustness by simulating
realistic image corruptions", 2024 (github.com/francescodisalvo05/medmnistc-api ``corruptions/microscopy.py``:
``StainDeposit``, ``Bubble``, ``BlackCorner``, ``Characters``); ``hair`` after the hair simulation of
Mirzaalian et al. (HairSim, 2014). MedMNIST-C draws with Python's ``random`` and PIL/OpenCV per image; here
every shape is drawn from the ``torch.Generator`` and rendered batched by coordinate arithmetic. For the
random ones each image draws a fixed pool of marks and severity s uses the first ``count(s)`` of them (with
sizes scaled by the severity), so one seed gives nested artefacts and the distortion grows with severity.
Sizes are relative to the image, so 28 px and 224 px look alike.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from medrobust.corruptions.base import begin, finish, param, rand, severity_table
from medrobust.registry import register

#: seven-segment patterns (segments a b c d e f g) of 0-9 and A b C d E F H L P U, for burned-in text
GLYPHS = torch.tensor([[int(b) for b in s] for s in (
    "1111110", "0110000", "1101101", "1111001", "0110011", "1011011", "1011111", "1110000", "1111111",
    "1111011", "1110111", "0011111", "1001110", "0111101", "1001111", "1000111", "0110111", "0001110",
    "1100111", "0111110")], dtype=torch.bool)


def _coords(x: Tensor) -> tuple[Tensor, Tensor]:
    """Pixel-centre coordinates ``(y [H, 1], x [1, W])`` in pixels."""
    h, w = x.shape[-2:]
    return (torch.arange(h, dtype=x.dtype, device=x.device)[:, None],
            torch.arange(w, dtype=x.dtype, device=x.device)[None, :])


def _check_2d(x: Tensor, who: str) -> None:
    if x.ndim != 4:
        raise ValueError(f"{who} is defined for 2D images [N, C, H, W], got shape {tuple(x.shape)}")


def _disk_mask(dist: Tensor, radius: Tensor) -> Tensor:
    """Anti-aliased disk coverage (1 inside, 0 beyond ``radius + 0.5``, linear across the edge pixel)."""
    return (radius - dist + 0.5).clamp(0.0, 1.0)


@register("corruption", "stain-deposit")
@severity_table((1, 2, 3, 4, 5), stochastic=True, family="acquisition", dims=(2,), channels=(3,))
def stain_deposit(x: Tensor, severity: int, generator: torch.Generator | None = None) -> Tensor:
    """Dark stain / ink deposits: irregular blobs that multiply the RGB image by ``1 - 0.85 * m``.

    Source: MedMNIST-C ``stain_deposit`` (PathMNIST / BloodMNIST; 1..5 ink marks from a bank of blot masks,
    ``x *= 1 - ink``). Each blob is the soft union of 3 Gaussian lumps (width 3-6 % of the image side) around a
    random centre, its mask ``m = clip((2 * sum of lumps - 0.02) / 0.98, 0, 1)`` (0 away from the blob); blobs darken all channels alike.

    Severity table (number of blobs): 1: 1, 2: 2, 3: 3, 4: 4, 5: 5 (MedMNIST-C PathMNIST).
    """
    xw = begin(x, severity, "stain-deposit")
    _check_2d(xw, "stain-deposit")
    n, _, h, w = xw.shape
    size = min(h, w)
    draws = rand((n, 5, 3, 5), generator, xw)  # [N, blob, lump, (cy, cx, dy, dx, width)]
    cy = (0.1 + 0.8 * draws[..., 0, 0:1]) * (h - 1) + (draws[..., 2] - 0.5) * 0.12 * size  # [N, blob, lump]
    cx = (0.1 + 0.8 * draws[..., 0, 1:2]) * (w - 1) + (draws[..., 3] - 0.5) * 0.12 * size
    width = (0.03 + 0.03 * draws[..., 4]) * size
    yy, xx = _coords(xw)
    count = param(stain_deposit, severity)
    d2 = (yy - cy[:, :count, :, None, None]) ** 2 + (xx - cx[:, :count, :, None, None]) ** 2
    lumps = torch.exp(-d2 / (2 * width[:, :count, :, None, None] ** 2)).sum(2)  # [N, count, H, W]
    mask = ((2 * lumps - 0.02) / 0.98).clamp(0.0, 1.0)  # exactly 0 beyond ~3 lump widths
    keep = (1 - 0.85 * mask).prod(1, keepdim=True)  # [N, 1, H, W]
    return finish(xw * keep, x)


@register("corruption", "bubble")
@severity_table(((3, 0.07), (5, 0.08), (7, 0.09), (9, 0.10), (12, 0.12)), stochastic=True, family="acquisition",
                dims=(2,))
def bubble(x: Tensor, severity: int, generator: torch.Generator | None = None) -> Tensor:
    """Air bubbles under the cover slip: translucent bright disks with a dark refracting rim.

    Source: MedMNIST-C ``bubble`` (PathMNIST / BloodMNIST; 7..25 white ellipses of alpha 100/255 with a
    2 px rim of alpha 130/255, radius 3..17 px at 224 px). Here each bubble blends its interior towards white
    with alpha 0.4 and darkens a rim of 12 % of its radius (at least 1 px) by 40 % (total internal reflection
    at the air-mountant interface looks dark). Radius ~ U(0.5, 1) * r_max * side, centres uniform in the image.

    Severity table ((number of bubbles, r_max as a fraction of the image side)): 1: (3, 0.07), 2: (5, 0.08),
    3: (7, 0.09), 4: (9, 0.10), 5: (12, 0.12).
    """
    xw = begin(x, severity, "bubble")
    _check_2d(xw, "bubble")
    n, _, h, w = xw.shape
    count, r_max = param(bubble, severity)
    draws = rand((n, 12, 3), generator, xw)[:, :count]  # [N, count, (cy, cx, r)]
    yy, xx = _coords(xw)
    radius = ((0.5 + 0.5 * draws[..., 2]) * r_max * min(h, w)).clamp(min=1.5)[..., None, None]
    dist = torch.sqrt((yy - draws[..., 0, None, None] * (h - 1)) ** 2 + (xx - draws[..., 1, None, None] * (w - 1)) ** 2)
    rim = (0.12 * radius).clamp(min=1.0)
    disk = _disk_mask(dist, radius)  # [N, count, H, W]
    interior = _disk_mask(dist, radius - rim)
    ring = disk - interior
    out = xw
    for k in range(count):  # composite bubble by bubble, later ones on top
        a_in = 0.4 * interior[:, k:k + 1]
        out = out * (1 - a_in) + a_in
        out = out * (1 - 0.4 * ring[:, k:k + 1])
    return finish(out, x)


@register("corruption", "black-corner")
@severity_table((1.10, 1.05, 1.00, 0.95, 0.90), stochastic=False, family="acquisition", dims=(2,))
def black_corner(x: Tensor, severity: int, generator: torch.Generator | None = None) -> Tensor:
    """Dermoscope vignette: everything outside a centred circle of radius ``k * min(H, W) / 2`` is black.

    Source: MedMNIST-C ``black_corner`` (DermaMNIST; ``cv2.circle`` mask, outside set to 0). The circle edge
    is anti-aliased over one pixel. Deterministic. (MedMNIST-C's own table reads 1.10, 1.05, 1.00, 0.90, 0.95,
    not monotone at 4-5; it is sorted here.)

    Severity table (k, circle radius / half the shorter side): 1: 1.10, 2: 1.05, 3: 1.00, 4: 0.95, 5: 0.90.
    """
    xw = begin(x, severity, "black-corner")
    _check_2d(xw, "black-corner")
    h, w = xw.shape[-2:]
    yy, xx = _coords(xw)
    dist = torch.sqrt((yy - (h - 1) / 2) ** 2 + (xx - (w - 1) / 2) ** 2)
    radius = torch.tensor(param(black_corner, severity) * min(h, w) / 2, dtype=xw.dtype, device=xw.device)
    return finish(xw * _disk_mask(dist, radius), x)


def character_mask(x: Tensor, words: int, letters: int, generator: torch.Generator | None) -> Tensor:
    """``[N, 1, H, W]`` bool mask of ``words`` random words of ``letters`` seven-segment glyphs each.

    A pool of 6 words x 10 glyphs is drawn per image; the first ``words`` words and ``letters`` glyphs are drawn.
    Glyph cells are ``max(3, W/10)`` wide, ``2 * max(2, H/14) + 1`` high, strokes 1 px, 1 px letter spacing.
    """
    n, _, h, w = x.shape
    cw, hh = max(3, round(w / 10)), max(2, round(h / 14))
    draws = rand((n, 6, 10 + 2), generator, x)[:, :words]  # [N, words, (glyph ids..., y0, x0)]
    glyph = GLYPHS.to(x.device)[(draws[..., :letters] * len(GLYPHS)).long().clamp(max=len(GLYPHS) - 1)]
    y0 = (1 + draws[..., 10] * max(h - 2 * hh - 2, 1)).floor()  # [N, words]
    x0 = (1 + draws[..., 11] * max(w - 3 * (cw + 1), 1)).floor()
    x0 = x0[..., None] + torch.arange(letters, dtype=x.dtype, device=x.device) * (cw + 1)  # [N, words, letters]
    y0 = y0[..., None].expand_as(x0)
    # segment rectangles relative to the cell origin: (row0, row1, col0, col1), inclusive
    segs = torch.tensor([(0, 0, 0, cw - 1), (0, hh, cw - 1, cw - 1), (hh, 2 * hh, cw - 1, cw - 1),
                         (2 * hh, 2 * hh, 0, cw - 1), (hh, 2 * hh, 0, 0), (0, hh, 0, 0), (hh, hh, 0, cw - 1)],
                        dtype=x.dtype, device=x.device)
    yy, xx = _coords(x)
    r0 = y0[..., None, None, None] + segs[:, 0, None, None]  # [N, words, letters, 7, 1, 1]
    r1 = y0[..., None, None, None] + segs[:, 1, None, None]
    c0 = x0[..., None, None, None] + segs[:, 2, None, None]
    c1 = x0[..., None, None, None] + segs[:, 3, None, None]
    inside = (yy >= r0) & (yy <= r1) & (xx >= c0) & (xx <= c1) & glyph[..., None, None]
    return inside.flatten(1, 3).any(1, keepdim=True)


@register("corruption", "characters")
@severity_table(((1, 3), (2, 4), (3, 5), (4, 6), (6, 8)), stochastic=True, family="digital", dims=(2,))
def characters(x: Tensor, severity: int, generator: torch.Generator | None = None) -> Tensor:
    """Burned-in annotation text: white 1 px seven-segment characters written over the image.

    Source: MedMNIST-C ``characters`` (DermaMNIST; 1..6 random lower-case words of 3..10 letters drawn with
    ``cv2.putText`` in a random colour). Rendered here as seven-segment glyphs (digits and A b C d E F H L P U,
    as on scanner / dermatoscope overlays), always white: marked pixels become 1, the rest are untouched.

    Severity table ((words, letters per word)): 1: (1, 3), 2: (2, 4), 3: (3, 5), 4: (4, 6), 5: (6, 8)
    (MedMNIST-C: up to (1, 6) .. (6, 10) random).
    """
    xw = begin(x, severity, "characters")
    _check_2d(xw, "characters")
    words, letters = param(characters, severity)
    mask = character_mask(xw, words, letters, generator)
    return finish(torch.where(mask, torch.ones_like(xw), xw), x)


def hair_mask(x: Tensor, count: int, generator: torch.Generator | None) -> Tensor:
    """``[N, 1, H, W]`` coverage in [0, 1] of ``count`` random quadratic Bezier hairs (pool of 10 per image).

    Each hair starts uniformly in the image, runs 50-100 % of the side at a uniform angle and bends by up to
    +-30 % of its length; its width is ``max(1, side / 40)`` px, anti-aliased over one pixel.
    """
    n, _, h, w = x.shape
    side = min(h, w)
    draws = rand((n, 10, 5), generator, x)[:, :count]  # [N, count, (y, x, angle, length, bend)]
    p0 = torch.stack([draws[..., 0] * (h - 1), draws[..., 1] * (w - 1)], dim=-1)  # [N, count, 2]
    angle = draws[..., 2] * 2 * math.pi
    length = (0.5 + 0.5 * draws[..., 3]) * side
    direction = torch.stack([torch.sin(angle), torch.cos(angle)], dim=-1)
    normal = torch.stack([direction[..., 1], -direction[..., 0]], dim=-1)
    p2 = p0 + length[..., None] * direction
    p1 = (p0 + p2) / 2 + ((draws[..., 4] - 0.5) * 0.6 * length)[..., None] * normal
    t = torch.linspace(0, 1, 3 * max(h, w) + 1, dtype=x.dtype, device=x.device)[:, None]  # [S, 1]
    curve = ((1 - t) ** 2 * p0[..., None, :] + 2 * (1 - t) * t * p1[..., None, :]
             + t**2 * p2[..., None, :])  # [N, count, S, 2]
    yy, xx = _coords(x)
    half = max(1.0, side / 40) / 2
    cover = torch.zeros(n, h, w, dtype=x.dtype, device=x.device)
    for k in range(count):  # one hair at a time keeps memory at [N, S, H, W]
        py, px = curve[:, k, :, 0, None, None], curve[:, k, :, 1, None, None]
        dist = torch.sqrt((yy - py) ** 2 + (xx - px) ** 2).amin(1)  # [N, H, W]
        cover = torch.maximum(cover, (half + 0.5 - dist).clamp(0.0, 1.0))
    return cover[:, None]


@register("corruption", "hair")
@severity_table((1, 2, 4, 6, 9), stochastic=True, family="acquisition", dims=(2,))
def hair(x: Tensor, severity: int, generator: torch.Generator | None = None) -> Tensor:
    """Hairs over a dermoscopy image: dark thin curved lines, ``x * (1 - 0.85 * m)`` on the hair coverage ``m``.

    Source: synthetic hair of Mirzaalian et al., "Hair enhancement in dermoscopic images using dual-channel
    quaternion tubularness filters and MRF-based multilabel optimization", IEEE TIP 2014 (HairSim: random
    curves of dark pixels), as used for DermaMNIST / ISIC robustness tests; not in MedMNIST-C. Only the pixels
    under a hair change, and they only get darker.

    Severity table (number of hairs): 1: 1, 2: 2, 3: 4, 4: 6, 5: 9.
    """
    xw = begin(x, severity, "hair")
    _check_2d(xw, "hair")
    cover = hair_mask(xw, param(hair, severity), generator)
    return finish(xw * (1 - 0.85 * cover), x)
