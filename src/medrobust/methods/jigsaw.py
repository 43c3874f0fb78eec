"""Jigsaw puzzles: classify which of a fixed set of permutations shuffled the image's tiles.

Noroozi, Favaro (2016), "Unsupervised Learning of Visual Representations by Solving Jigsaw Puzzles",
ECCV. The image is cut into a ``grid^d`` grid of cells; from each cell a tile slightly smaller than the
cell is cropped at a random position (the gap hides edge continuity, a shortcut); the tiles are shuffled
by one of ``n_permutations`` fixed permutations; each tile is encoded by the *shared* encoder (the
paper's context-free network), the features are concatenated in the shuffled order and an MLP predicts the
permutation index. The permutation set is chosen by the paper's Algorithm 1 (maximal Hamming distance),
made deterministic (:func:`hamming_permutations`).

Grid 2 (4 tiles, 24 permutations = all of them) suits 28 px images; use ``grid: 3`` with e.g.
``n_permutations: 100`` (the paper's setting) from ~64 px. Volumes use ``grid^3`` tiles (at most 9 tiles:
the permutation set is searched exhaustively). Encoders with a fixed token grid (the ViT: ``num_patches``) get
each tile resized back to the image size; the CNN and the medformer (any size) encode tiles at their own size.
On a pre-training pool each input signature gets its own head and permutation set
(:class:`~medrobust.methods.adapters.SignatureHeads`: 2D images have ``grid²`` tiles, volumes ``grid³``).
"""

from __future__ import annotations

import functools
import itertools
import math

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from medrobust.data.views import ViewParams, random_view
from medrobust.methods.adapters import SignatureHeads
from medrobust.methods.contract import Encoders, MethodInfo, method_generator
from medrobust.registry import register

MAX_TILES = 9  # 9! = 362,880 candidate permutations: the largest set searched exhaustively


@functools.lru_cache(maxsize=8)
def hamming_permutations(n_tiles: int, n_permutations: int) -> torch.Tensor:
    """Noroozi & Favaro's Algorithm 1 (maximal Hamming distance), deterministic: ``int64 [P, n_tiles]``.

    Starts from the identity (the paper draws the first one at random); then repeatedly adds the remaining
    permutation whose summed Hamming distance to the permutations chosen so far is largest (ties: the
    first in lexicographic order).
    """
    if not 2 <= n_tiles <= MAX_TILES:
        raise ValueError(f"jigsaw: {n_tiles} tiles; expected 2 to {MAX_TILES} (grid 2 or 3 in 2D, grid 2 in 3D)")
    if not 1 <= n_permutations <= math.factorial(n_tiles):
        raise ValueError(f"jigsaw: n_permutations {n_permutations} must be in 1..{math.factorial(n_tiles)} "
                         f"({n_tiles} tiles have {math.factorial(n_tiles)} permutations)")
    flat = itertools.chain.from_iterable(itertools.permutations(range(n_tiles)))  # lexicographic order
    count = math.factorial(n_tiles)
    candidates = torch.from_numpy(np.fromiter(flat, dtype=np.int8, count=count * n_tiles).reshape(count, n_tiles))
    total = torch.zeros(len(candidates), dtype=torch.int64)
    taken = torch.zeros(len(candidates), dtype=torch.bool)
    chosen = [0]
    for _ in range(n_permutations - 1):
        taken[chosen[-1]] = True
        total += (candidates != candidates[chosen[-1]]).sum(dim=1)
        chosen.append(int(total.masked_fill(taken, -1).argmax()))
    return candidates[chosen].long()


def crop_batch(x: torch.Tensor, starts: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """Per-image crops: ``x`` [N, C, *spatial], ``starts`` int64 [N, d] -> [N, C, *size]."""
    n, d = len(x), len(size)
    out = x
    for a in range(d):
        idx = starts[:, a].view(n, 1) + torch.arange(size[a], device=x.device).view(1, -1)  # [N, size_a]
        shape = [n, 1] + [1] * d
        shape[2 + a] = size[a]
        target = list(out.shape)
        target[2 + a] = size[a]
        out = out.gather(2 + a, idx.view(shape).expand(target))
    return out


def cut_tiles(x: torch.Tensor, grid: int, tile_fraction: float, g: torch.Generator) -> torch.Tensor:
    """``[N, C, *spatial]`` -> tiles ``[N, T, C, *tile]`` in row-major cell order, ``T = grid^d``; each tile is a
    random crop of ``tile_fraction`` of its cell's side."""
    n, _, *size = x.shape
    cell = [s // grid for s in size]
    tile = tuple(max(1, round(c * tile_fraction)) for c in cell)
    tiles = []
    for index in itertools.product(range(grid), repeat=len(size)):
        jitter = torch.stack([torch.randint(0, c - t + 1, (n,), generator=g) for c, t in zip(cell, tile)], dim=1)
        origin = torch.tensor([i * c for i, c in zip(index, cell)]).view(1, -1)
        tiles.append(crop_batch(x, (origin + jitter).to(x.device), tile))
    return torch.stack(tiles, dim=1)


def normalize_tiles(tiles: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """Give every tile (``[N, T, C, *tile]``) the same mean and std, per channel: the batch's mean pixel and
    its mean within-tile std (so the typical local contrast is kept); clamped to [0, 1].

    Noroozi & Favaro normalise "the mean and the standard deviation of each patch independently" so that
    low-level statistics (a quadrant's brightness) cannot solve the puzzle; here in pixel space, since the
    encoder normalises its input itself.
    """
    dims = tuple(range(3, tiles.ndim))
    mean, std = tiles.mean(dim=dims, keepdim=True), tiles.std(dim=dims, keepdim=True)  # [N, T, C, 1, ..]
    target_mean, target_std = mean.mean(dim=(0, 1), keepdim=True), std.mean(dim=(0, 1), keepdim=True)
    return ((tiles - mean) / (std + eps) * target_std + target_mean).clamp(0, 1)


def shuffle_tiles(tiles: torch.Tensor, permutations: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Position ``j`` of image ``i`` gets tile ``permutations[labels[i], j]``: ``[N, T, ...]`` -> ``[N, T, ...]``."""
    order = permutations.to(tiles.device)[labels]  # [N, T]
    return tiles[torch.arange(len(tiles), device=tiles.device).unsqueeze(1), order]


class JigsawParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    grid: int = Field(2, ge=2, le=3, description="cells per axis (2 at 28 px; 3 from ~64 px in 2D)")
    n_permutations: int = Field(24, ge=2, description="classes (paper: 100 of 9! for a 3x3 grid)")
    tile_fraction: float = Field(0.85, gt=0, le=1, description="tile side / cell side (paper 64/75)")
    normalize_tiles: bool = Field(True, description="per-tile mean/std normalisation (paper)")
    hidden: int = Field(128, ge=2, description="width of the classifier over the concatenated tile features")
    views: ViewParams = ViewParams(crop_scale=(0.8, 1.0), flip_p=0.0)


@register("method", "jigsaw")
class Jigsaw(nn.Module):
    """Jigsaw-puzzle pre-training of ``image_encoder`` (shared across tiles)."""

    Params = JigsawParams
    info = MethodInfo("Jigsaw", "self-supervised", counterpart="supervised")

    def __init__(self, encoders: Encoders, params: JigsawParams | None = None, seed: int = 0):
        super().__init__()
        image_encoder = encoders.image
        self.params = p = params or JigsawParams()
        self.generator = method_generator(seed)
        self.image_encoder = image_encoder
        self.fixed_size = hasattr(image_encoder, "num_patches")  # ViT: position embeddings of one image size
        self.heads = SignatureHeads.of(encoders, lambda c, d: JigsawHead(p.grid ** d, image_encoder.feature_dim, p),
                                       "jigsaw")

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        x = random_view(batch["image"], self.params.views, self.generator)  # [N, C, *spatial]
        n, size, head = len(x), tuple(x.shape[2:]), self.heads.for_input(x)
        tiles = cut_tiles(x, self.params.grid, self.params.tile_fraction, self.generator)  # [N, T, C, *tile]
        if self.params.normalize_tiles:
            tiles = normalize_tiles(tiles)
        labels = torch.randint(0, len(head.permutations), (n,), generator=self.generator).to(x.device)
        flat = shuffle_tiles(tiles, head.permutations, labels).flatten(0, 1)  # [N·T, C, *tile]
        if self.fixed_size:
            flat = F.interpolate(flat, size=size, mode="bilinear" if len(size) == 2 else "trilinear",
                                 align_corners=False)
        features = self.image_encoder.forward_features(flat).view(n, -1)  # [N, T·D]
        logits = head(features)  # [N, n_permutations]
        return {"loss": F.cross_entropy(logits, labels),
                "accuracy": (logits.argmax(dim=1) == labels).float().mean().detach()}


class JigsawHead(nn.Module):
    """One signature's permutation set (``permutations``, not saved) and classifier over ``n_tiles`` features."""

    def __init__(self, n_tiles: int, feature_dim: int, p: JigsawParams):
        super().__init__()
        self.n_tiles = n_tiles
        self.register_buffer("permutations", hamming_permutations(n_tiles, p.n_permutations).clone(), persistent=False)
        self.mlp = nn.Sequential(nn.Linear(n_tiles * feature_dim, p.hidden), nn.ReLU(inplace=True),
                                 nn.Linear(p.hidden, p.n_permutations))

    def forward(self, features: torch.Tensor) -> torch.Tensor:  # [N, n_tiles · D] -> [N, n_permutations]
        return self.mlp(features)
