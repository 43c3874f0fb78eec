"""Image encoders: a small CNN and a small ViT, 2D or 3D by ``spatial_dims``.

Every encoder has the same surface (timm / open_clip style): ``forward_features(x) -> [N, feature_dim]``
and ``feature_dim``; input is ``[N, C, *spatial]`` in ``[0, 1]``, normalised inside by :class:`InputNorm`.
Sizes default to what trains fast on 2 CPU cores (see DESIGN §4); larger ones are config values.
"""

from __future__ import annotations

from typing import Sequence

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from medrobust.models.layers import InputNorm, conv
from medrobust.registry import register


class CNNParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    width: int = Field(16, ge=1, description="channels of the first block; doubled twice")
    depth: int = Field(4, ge=2, le=8, description="conv blocks; every block after the first halves resolution")
    stem_stride: int = Field(1, ge=1, le=2, description="stride of the first block. 2 makes a 28³ volume 8× cheaper "
                             "but lost 5-8 pp of clean AUC on AdrenalMNIST3D (benchmarks/RESULTS.md): a trade, not "
                             "the default")


@register("encoder", "cnn")
class SmallCNN(nn.Module):
    """Conv-GroupNorm-ReLU blocks, stride 2 after the first, global average pool.

    GroupNorm rather than BatchNorm: it behaves the same in train and eval mode (no statistics that an
    attack or a small labeled batch could skew) and keeps multi-process training identical to one process.
    """

    Params = CNNParams
    modality = "image"

    def __init__(self, in_channels: int, spatial_dims: int, image_size: int, mean: Sequence[float],
                 std: Sequence[float], params: CNNParams | None = None):
        super().__init__()
        p = params or CNNParams()
        Conv = conv(spatial_dims)
        layers: list[nn.Module] = [InputNorm(mean, std, spatial_dims)]
        channels, c_in = p.width, in_channels
        for i in range(p.depth):
            c_out = min(p.width * 2 ** i, p.width * 4)
            layers += [Conv(c_in, c_out, 3, p.stem_stride if i == 0 else 2, 1, bias=False), nn.GroupNorm(min(8, c_out), c_out),
                       nn.ReLU(inplace=True)]
            c_in = channels = c_out
        self.body = nn.Sequential(*layers)
        self.feature_dim = channels

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:  # [N, C, *spatial] -> [N, feature_dim]
        return self.body(x).flatten(2).mean(dim=2)

    def forward_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """The final feature map as tokens: ``[N, C, *spatial] -> [N, h*w(*d), feature_dim]`` (raster order)."""
        return self.body(x).flatten(2).transpose(1, 2)

    forward = forward_features


class TokenTrunk(nn.Module):
    """What a token encoder does once it has ``embed_tokens(x) -> (tokens + positions, [CLS] + position)``,
    ``blocks`` (the transformer) and ``norm``: features are the final [CLS]; ``forward_tokens`` the patch tokens.
    Shared by :class:`SmallViT` and :class:`~medrobust.models.medformer.Medformer`."""

    def encode_sequence(self, seq: torch.Tensor) -> torch.Tensor:  # [N, S, dim] -> [N, S, dim]
        """The transformer blocks and the final norm on a token sequence (``[CLS]`` first)."""
        return self.norm(self.blocks(seq))

    def _encode(self, x: torch.Tensor) -> torch.Tensor:  # [N, C, *spatial] -> [N, 1 + P, dim] before the norm
        tokens, cls = self.embed_tokens(x)
        return self.blocks(torch.cat([cls, tokens], dim=1))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:  # [N, C, *spatial] -> [N, dim]
        return self.norm(self._encode(x)[:, 0])

    def forward_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Patch tokens after the blocks and the final norm, without [CLS]: ``[N, P, dim]`` (raster order)."""
        return self.norm(self._encode(x)[:, 1:])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)


class ViTParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    patch_size: int = Field(7, ge=1)
    dim: int = Field(128, ge=8)
    depth: int = Field(4, ge=1)
    heads: int = Field(4, ge=1)
    mlp_ratio: float = Field(2.0, gt=0)


@register("encoder", "vit")
class SmallViT(TokenTrunk):
    """Vision Transformer (Dosovitskiy et al. 2021, "An Image is Worth 16x16 Words") sized for CPU.

    Patch embedding is a strided convolution (2D or 3D); a [CLS] token and learned position embeddings;
    pre-norm transformer blocks from ``torch.nn``. Features are the final [CLS] token.
    ``patch_tokens(x)`` exposes the patch embeddings; the token-encoder interface that MAE uses
    (``patch_size_of``, ``embed_tokens``, ``encode_sequence``) is shared with ``medformer``.
    """

    Params = ViTParams
    modality = "image"

    def __init__(self, in_channels: int, spatial_dims: int, image_size: int, mean: Sequence[float],
                 std: Sequence[float], params: ViTParams | None = None):
        super().__init__()
        p = params or ViTParams()
        if image_size % p.patch_size:
            raise ValueError(f"vit: image_size {image_size} is not divisible by patch_size {p.patch_size}")
        if p.dim % p.heads:
            raise ValueError(f"vit: dim {p.dim} is not divisible by heads {p.heads}")
        self.norm_in = InputNorm(mean, std, spatial_dims)
        self.patch = conv(spatial_dims)(in_channels, p.dim, p.patch_size, p.patch_size)
        self.num_patches = (image_size // p.patch_size) ** spatial_dims
        self.cls = nn.Parameter(torch.zeros(1, 1, p.dim))
        self.pos = nn.Parameter(torch.randn(1, self.num_patches + 1, p.dim) * 0.02)
        layer = nn.TransformerEncoderLayer(p.dim, p.heads, int(p.dim * p.mlp_ratio), dropout=0.0,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, p.depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(p.dim)
        self.feature_dim = p.dim

    def patch_tokens(self, x: torch.Tensor) -> torch.Tensor:  # [N, C, *spatial] -> [N, P, dim]
        return self.patch(self.norm_in(x)).flatten(2).transpose(1, 2)

    # token-encoder interface (shared with medformer; used by MAE)
    def patch_size_of(self, spatial_dims: int) -> int:
        """Patch side of the patch embedding (one geometry: the one it was built for)."""
        return self.patch.kernel_size[0]

    def embed_tokens(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Patch tokens + positions ``[N, P, dim]`` and the [CLS] token + its position ``[N, 1, dim]``."""
        return self.patch_tokens(x) + self.pos[:, 1:], (self.cls + self.pos[:, :1]).expand(len(x), -1, -1)

