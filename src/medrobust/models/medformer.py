"""Medformer: one transformer trunk shared across modalities, with an input adapter per input signature.

After the Medformer design (C. Simionescu 2025, "Multitask Multimodal Self-Supervised Learning for Medical Images",
arXiv:2510.23325: an *input Adaptformer* turns images of any modality, channel count and dimension into tokens of one width, a
shared *main body* processes them, *output Adaptformers* serve each source and pretext task). Here:

* **input adapters**, one per signature (channels × 2D/3D, :func:`~medrobust.models.layers.signature_of`, e.g.
  ``"1ch-2d"``, ``"3ch-2d"``, ``"1ch-3d"``), each :class:`~medrobust.models.layers.InputNorm` + a strided conv
  patch embedding to the shared width + a learned signature embedding added to every token (the paper's latent
  embeddings). Images of one signature share an adapter whatever their size, so its normalisation statistics are
  those given when it was added (the first source of that signature);
* a shared pre-norm transformer trunk (as :class:`~medrobust.models.encoders.SmallViT`) with a [CLS] token;
* **positions for any token grid**: fixed per-axis sine-cosine codes (MAE's 2D sin-cos, extended to 3D: each axis
  gets ``2·⌊dim / 2d⌋`` channels, sin then cos of its coordinate; any remaining channels are 0), computed for the
  grid at forward time and cached per grid and device — no fixed-size table, so 28², 64², 28³ and 64³ all work;
* a spatial size that is not a multiple of the patch is **padded** on the high side of each axis (bottom, right,
  back) to the next multiple, with zeros *after* normalisation, i.e. with the adapter's mean intensity per channel
  (a border patch then looks partly like an average background, never like a black edge).

The output adapters (pixel decoders, prediction heads per signature) belong to the methods
(:class:`medrobust.methods.adapters.SignatureHeads`).

Token-encoder interface shared with :class:`~medrobust.models.encoders.SmallViT` (used by MAE):
``patch_size_of(spatial_dims)``, ``embed_tokens(x) -> (tokens + positions [N, P, dim], [CLS] + position
[N, 1, dim])`` and ``encode_sequence(seq) -> [N, S, dim]`` (trunk + final norm).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from medrobust.models.encoders import TokenTrunk
from medrobust.models.fusion import sincos_positions
from medrobust.models.layers import InputNorm, conv, signature_of
from medrobust.registry import register


class MedformerParams(BaseModel):
    """Sizes for 2 CPU cores (DESIGN §4): width 64 and 2 blocks (67k trunk parameters) train at ~2,100–2,600
    images/s on 28² batches of 128 and ~1,450–1,800 volumes/s on 28³ batches of 32 (forward + backward + AdamW,
    ``benchmarks/medformer_speed.py``), as fast as the plain ``vit`` of the same size. Patch 4 tiles 28 and 64
    exactly (49 / 256 tokens: finer than the vit's default 7, which leaves 16 tokens at 28², too coarse for masked
    modelling on a 7x7 grid); 3D patch 7 tiles 28 (64 tokens, as many as a 28² image at patch 4) where patch 4
    would give 343 tokens per volume."""

    model_config = ConfigDict(extra="forbid")
    dim: int = Field(64, ge=8, description="width of the shared trunk (the feature size)")
    depth: int = Field(2, ge=1, description="transformer blocks of the trunk")
    heads: int = Field(4, ge=1)
    mlp_ratio: float = Field(2.0, gt=0)
    patch_size: int = Field(4, ge=1, description="2D patch side, pixels (28² -> 7x7 tokens, 64² -> 16x16)")
    patch_size_3d: int = Field(7, ge=1, description="3D patch side, voxels (28³ -> 4³ tokens; 64³ padded to 70³)")


def sincos_grid(grid: Sequence[int], dim: int) -> torch.Tensor:
    """Fixed per-axis sine-cosine position codes of a ``g1 x g2 (x g3)`` token grid: ``[prod(grid), dim]``.

    Raster (row-major) order, as a strided conv's ``flatten(2)``. Axis ``a`` fills channels
    ``[a·w, (a+1)·w)`` with ``w = 2·⌊dim / 2d⌋`` (:func:`~medrobust.models.fusion.sincos_positions` of its
    coordinate); the last ``dim − d·w`` channels are 0. Distinct for every position of any grid.
    """
    d = len(grid)
    width = 2 * (dim // (2 * d))
    if width == 0:
        raise ValueError(f"sincos_grid: dim {dim} is too small for {d} axes (need at least {2 * d})")
    coords = torch.meshgrid(*[torch.arange(int(g)) for g in grid], indexing="ij")
    parts = [sincos_positions(int(g), width)[c.reshape(-1)] for g, c in zip(grid, coords)]  # [P, w] each
    return F.pad(torch.cat(parts, dim=1), (0, dim - d * width))


class InputAdapter(nn.Module):
    """``[N, C, *spatial]`` in [0, 1] of one signature -> patch tokens ``[N, P, dim]`` and their grid."""

    def __init__(self, channels: int, spatial_dims: int, patch: int, dim: int, mean: Sequence[float],
                 std: Sequence[float]):
        super().__init__()
        self.patch_size = patch
        self.norm_in = InputNorm(mean, std, spatial_dims)
        self.patch = conv(spatial_dims)(channels, dim, patch, patch)
        self.signature = nn.Parameter(torch.randn(1, 1, dim) * 0.02)  # the signature ("latent") embedding

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
        h = self.norm_in(x)
        pad = [v for s in reversed(x.shape[2:]) for v in (0, -s % self.patch_size)]  # high side of each axis
        if any(pad):
            h = F.pad(h, pad)  # zeros after normalisation = the adapter's mean intensity
        h = self.patch(h)  # [N, dim, *grid]
        return h.flatten(2).transpose(1, 2), tuple(h.shape[2:])


@register("encoder", "medformer")
class Medformer(TokenTrunk):
    """Shared transformer trunk with dynamic input adapters (module docstring). Features: the final [CLS].

    The constructor adds the adapter of its own ``(in_channels, spatial_dims)``; :meth:`add_input` adds more
    (before the method and optimiser are built). ``image_size`` is accepted for the common encoder signature
    and not used: every size works.
    """

    Params = MedformerParams
    modality = "image"
    adapts_inputs = True  # takes inputs of several signatures (the study accepts pools with mixed ones)

    def __init__(self, in_channels: int, spatial_dims: int, image_size: int, mean: Sequence[float],
                 std: Sequence[float], params: MedformerParams | None = None):
        super().__init__()
        self.params = p = params or MedformerParams()
        if p.dim % p.heads:
            raise ValueError(f"medformer: dim {p.dim} is not divisible by heads {p.heads}")
        self.adapters = nn.ModuleDict()
        self.add_input(in_channels, spatial_dims, mean, std)
        self.cls = nn.Parameter(torch.zeros(1, 1, p.dim))
        layer = nn.TransformerEncoderLayer(p.dim, p.heads, int(p.dim * p.mlp_ratio), dropout=0.0,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, p.depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(p.dim)
        self.feature_dim = p.dim
        self._positions: dict[tuple, torch.Tensor] = {}  # (grid, device, dtype) -> [1, P, dim]; not state

    @property
    def signatures(self) -> tuple[str, ...]:
        """The input signatures it has adapters for, in the order they were added."""
        return tuple(self.adapters.keys())

    def add_input(self, channels: int, spatial_dims: int, mean: Sequence[float], std: Sequence[float]) -> str:
        """Add the input adapter of ``channels`` × ``spatial_dims`` images (a no-op if that signature has one);
        returns the signature. ``mean`` / ``std``: per-channel statistics of those images in [0, 1]."""
        if spatial_dims not in (2, 3):
            raise ValueError(f"medformer: spatial_dims must be 2 or 3, got {spatial_dims!r}")
        if len(mean) != channels or len(std) != channels:
            raise ValueError(f"medformer: {channels}-channel input needs {channels} means and stds, "
                             f"got {len(mean)} and {len(std)}")
        sig = signature_of((channels,) + (1,) * spatial_dims)
        if sig not in self.adapters:
            adapter = InputAdapter(channels, spatial_dims, self.patch_size_of(spatial_dims), self.params.dim, mean, std)
            like = next(self.parameters(), None)  # where the model already is (added after .to(...))
            self.adapters[sig] = adapter if like is None else adapter.to(device=like.device, dtype=like.dtype)
        return sig

    def patch_size_of(self, spatial_dims: int) -> int:
        """Patch side for ``spatial_dims``-D inputs."""
        return self.params.patch_size if spatial_dims == 2 else self.params.patch_size_3d

    def adapter_for(self, x: torch.Tensor) -> InputAdapter:
        """The adapter of ``x``'s signature; a ``ValueError`` naming it and the ones there are if it has none."""
        sig = signature_of(x.shape[1:])
        if sig not in self.adapters:
            raise ValueError(f"medformer has no input adapter for {sig} images (input {tuple(x.shape)}); it has "
                             f"{', '.join(self.signatures)}. Add one with add_input(channels, spatial_dims, mean, std)")
        return self.adapters[sig]

    def _grid_positions(self, grid: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:  # [1, P, dim]
        key = (grid, like.device, like.dtype)
        if key not in self._positions:
            self._positions[key] = sincos_grid(grid, self.params.dim).to(like).unsqueeze(0)
        return self._positions[key]

    def embed_tokens(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[N, C, *spatial]`` -> patch tokens + positions + signature embedding ``[N, P, dim]`` and the [CLS]
        token ``[N, 1, dim]`` (its position is 0)."""
        adapter = self.adapter_for(x)
        tokens, grid = adapter(x)
        tokens = tokens + (self._grid_positions(grid, tokens) + adapter.signature)
        return tokens, self.cls.expand(len(x), -1, -1)


def token_grid(encoder: nn.Module, image_shape: Sequence[int]) -> tuple[int, ...]:
    """The patch grid ``(⌈s / patch⌉, ...)`` a token encoder (``patch_size_of``) makes of ``[N, C, *spatial]``."""
    spatial = tuple(image_shape[2:])
    patch = encoder.patch_size_of(len(spatial))
    return tuple(math.ceil(s / patch) for s in spatial)
