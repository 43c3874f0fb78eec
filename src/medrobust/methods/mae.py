"""Masked image modelling: MAE on the ViT, a SimMIM-style masked-input variant on CNNs.

* He, Chen, Xie, Li, Dollár, Girshick (2022), "Masked Autoencoders Are Scalable Vision Learners", CVPR.
  Random patch masking; the ViT encoder sees only the visible patches (+ [CLS]); a light transformer
  decoder gets the encoded visible tokens and a shared mask token at the masked positions (with its own
  position embeddings) and predicts the pixels of every patch; the loss is the MSE on the *masked*
  patches, optionally against per-patch normalised pixels (``norm_pix_loss``, the paper's better choice).
* Xie, Zhang, Cao, Lin, Bao, Yao, Dai, Hu (2022), "SimMIM: A Simple Framework for Masked Image Modeling",
  CVPR — for encoders without patch tokens (the study's default ``cnn``): masked square patches of the
  input are replaced by a learned fill value (one per channel, in pixel space, where SimMIM puts a learned
  token in embedding space), the whole masked image is encoded, a light decoder
  (:class:`~medrobust.methods.restoration.PixelDecoder`, from the pooled feature) predicts the image, and
  the loss is the L1 error on the masked pixels.

Mask ratio: 0.4 by default. MAE's 0.75 is tuned on natural images; the project's issue notes that the
medical literature reports best ratios around 0.4 for radiographs (masking-ratio studies on X-rays, e.g.
Li et al. 2023, "RGMIM: Region-Guided Masked Image Modeling for Learning Meaningful Representations from
X-Ray Images", arXiv:2211.00313). It is a parameter: ``{name: mae, mask_ratio: 0.75}``.

MAE runs on any *token encoder* (``vit``, ``medformer``: ``patch_size_of``, ``embed_tokens``,
``encode_sequence``). The decoder's positions follow the encoder's: a learned table on an encoder with a fixed
grid (``vit``'s ``num_patches``), fixed sine-cosine codes of the grid otherwise (``medformer``: any size). On a
pre-training pool the per-patch prediction layer (SimMIM: the fill value and the pixel decoder) is built once per
input signature (:class:`~medrobust.methods.adapters.SignatureHeads`), with that signature's patch size; sizes that
are not a multiple of the patch are padded by the encoder, and the target by repeating its border pixels.
"""

from __future__ import annotations

import functools
import math
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from medrobust import registry
from medrobust.data.views import ViewParams, random_view
from medrobust.methods.adapters import SignatureHeads
from medrobust.methods.contract import Encoders, MethodInfo, method_generator
from medrobust.methods.masking import pad_to_multiple
from medrobust.methods.restoration import PixelDecoder
from medrobust.models.medformer import sincos_grid, token_grid
from medrobust.registry import register

TOKEN_ENCODER = ("patch_size_of", "embed_tokens", "encode_sequence")  # the interface MAE proper needs


def is_token_encoder(encoder) -> bool:
    """An encoder (class or instance) with the token-encoder interface (``vit``, ``medformer``)."""
    return all(hasattr(encoder, a) for a in TOKEN_ENCODER)


@functools.lru_cache(maxsize=32)
def decoder_sincos(grid: tuple[int, ...], dim: int) -> torch.Tensor:
    """``[1, 1 + P, dim]``: 0 for [CLS], then :func:`~medrobust.models.medformer.sincos_grid` (CPU, read-only)."""
    return torch.cat([torch.zeros(1, dim), sincos_grid(grid, dim)]).unsqueeze(0)


def patchify(x: torch.Tensor, patch: int) -> torch.Tensor:
    """``[N, C, *spatial]`` -> ``[N, P, patch^d · C]``: patches in the row-major grid order of a strided conv
    patch embedding (``conv(x).flatten(2)``), pixels inside a patch in (spatial..., channel) order, as MAE."""
    n, c, *size = x.shape
    if any(s % patch for s in size):
        raise ValueError(f"patchify: image size {tuple(size)} is not divisible by patch {patch}")
    d, grid = len(size), [s // patch for s in size]
    x = x.reshape([n, c] + [v for k in grid for v in (k, patch)])
    x = x.permute([0] + [2 + 2 * i for i in range(d)] + [3 + 2 * i for i in range(d)] + [1])
    return x.reshape(n, math.prod(grid), patch ** d * c)


def unpatchify(patches: torch.Tensor, patch: int, channels: int, size: tuple[int, ...]) -> torch.Tensor:
    """Inverse of :func:`patchify`: ``[N, P, patch^d · C]`` -> ``[N, C, *size]``."""
    n, d, grid = len(patches), len(size), [s // patch for s in size]
    x = patches.reshape([n] + grid + [patch] * d + [channels])
    order = [0, 2 * d + 1] + [v for i in range(d) for v in (1 + i, 1 + d + i)]
    return x.permute(order).reshape(n, channels, *size)


def random_masking(n: int, num_patches: int, mask_ratio: float, g: torch.Generator
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """MAE's per-sample random masking by sorting uniform noise.

    Returns:
        ``ids_keep`` ``[N, L]`` (visible patch indices, ``L = round(P·(1 − r))``), ``mask`` ``[N, P]`` float
        (1 = masked), ``ids_restore`` ``[N, P]`` (un-shuffles ``[visible; masked]`` back to patch order).
    """
    keep = round(num_patches * (1 - mask_ratio))
    if not 1 <= keep < num_patches:
        raise ValueError(f"mask_ratio {mask_ratio} leaves {keep} of {num_patches} patches visible; "
                         "at least one patch must be visible and one masked")
    ids_shuffle = torch.rand(n, num_patches, generator=g).argsort(dim=1)  # [N, P]
    ids_restore = ids_shuffle.argsort(dim=1)
    mask = torch.ones(n, num_patches)
    mask[:, :keep] = 0
    return ids_shuffle[:, :keep], mask.gather(1, ids_restore), ids_restore


def mae_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, norm_pix: bool) -> torch.Tensor:
    """MSE on the masked patches (MAE eq. in §3): ``Σ_i m_i · mean_j (pred_ij − t_ij)² / Σ_i m_i``.

    Args:
        pred, target: ``[N, P, K]`` (target from :func:`patchify`); mask: ``[N, P]``, 1 = masked.
        norm_pix: normalise each target patch by its mean and (unbiased) variance, ``(t − μ)/√(σ² + 1e-6)``.
    """
    if norm_pix:
        if target.shape[-1] < 2:
            raise ValueError("norm_pix_loss needs patches of at least 2 values; use a larger patch or norm_pix_loss=false")
        target = (target - target.mean(dim=-1, keepdim=True)) / (target.var(dim=-1, keepdim=True) + 1e-6).sqrt()
    per_patch = (pred - target).pow(2).mean(dim=-1)  # [N, P]
    return (per_patch * mask).sum() / mask.sum()


def simmim_mask(shape: torch.Size, patch: int, mask_ratio: float, g: torch.Generator) -> torch.Tensor:
    """``float [N, 1, *spatial]`` (1 = masked): exactly ``round(r·G)`` of the ``G`` square ``patch``-pixel cells
    per image (cells at the border are cropped when the size is not a multiple of ``patch``)."""
    n, _, *size = shape
    grid = [math.ceil(s / patch) for s in size]
    cells = math.prod(grid)
    masked = round(cells * mask_ratio)
    if not 1 <= masked < cells:
        raise ValueError(f"mask_ratio {mask_ratio} masks {masked} of {cells} cells of {patch} px; "
                         "at least one cell must be masked and one visible")
    rank_of_cell = torch.rand(n, cells, generator=g).argsort(dim=1).argsort(dim=1)  # a random rank per cell
    m = (rank_of_cell < masked).float().view(n, 1, *grid)
    for axis in range(len(size)):
        m = m.repeat_interleave(patch, dim=2 + axis)
    return m[(slice(None), slice(None)) + tuple(slice(0, s) for s in size)]


def simmim_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """SimMIM's ``Σ |pred − x| · m / (Σ m · C)`` (L1 on masked pixels, averaged per channel)."""
    return (pred - target).abs().mul(mask).sum() / (mask.sum() * target.shape[1])


class MAEParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mask_ratio: float = Field(0.4, gt=0, lt=1, description="fraction of patches masked (see module docstring)")
    variant: Literal["auto", "mae", "simmim"] = Field(
        "auto", description="auto: MAE on a token encoder (vit, medformer), SimMIM-style on any other encoder")
    norm_pix_loss: bool = True
    decoder_dim: int = Field(64, ge=8, description="MAE decoder width (paper 512)")
    decoder_depth: int = Field(1, ge=1, description="MAE decoder blocks (paper 8)")
    decoder_heads: int = Field(4, ge=1)
    mask_patch_size: int = Field(4, ge=1, description="SimMIM: side of the masked cells, pixels")
    views: ViewParams = ViewParams(crop_scale=(0.5, 1.0), gamma=1.0, contrast=0.0, brightness=0.0, blur_p=0.0,
                                   noise_p=0.0)


@register("method", "mae")
class MAE(nn.Module):
    """Masked image modelling pre-training of ``image_encoder`` (MAE on ViTs, SimMIM-style otherwise)."""

    Params = MAEParams
    info = MethodInfo("MAE", "self-supervised", counterpart="supervised")

    @classmethod
    def display_name_for(cls, encoder_name: str, params: MAEParams | None = None) -> str:
        """``"MAE"`` on a token encoder (:func:`is_token_encoder`: vit, medformer); the SimMIM-style variant's
        name on any other encoder, or when ``variant`` is ``"simmim"`` — what ``__init__`` builds for it."""
        variant = (params or MAEParams()).variant
        is_vit = is_token_encoder(registry.get("encoder", encoder_name))
        if is_vit and variant != "simmim":
            return cls.info.display_name
        return "SimMIM-style masked image modelling" + (" (MAE on a CNN)" if not is_vit else " (MAE on a ViT)")

    def __init__(self, encoders: Encoders, params: MAEParams | None = None, seed: int = 0):
        super().__init__()
        image_encoder = encoders.image
        self.params = p = params or MAEParams()
        self.generator = method_generator(seed)
        self.image_encoder = image_encoder
        is_vit = is_token_encoder(image_encoder)
        if p.variant == "mae" and not is_vit:
            raise ValueError(f"mae variant 'mae' needs a ViT encoder (patch tokens); got {type(image_encoder).__name__}. "
                             "Choose it with image_encoder.name=vit (or medformer), or use variant 'auto' / 'simmim' "
                             "for CNNs")
        self.use_mae = is_vit and p.variant != "simmim"
        if self.use_mae:
            self._build_mae_decoder(encoders)
        else:
            self.heads = SignatureHeads.of(encoders, lambda c, d: SimMIMHead(image_encoder.feature_dim, c, d),
                                           "mae (SimMIM-style)")

    def _build_mae_decoder(self, encoders: Encoders) -> None:
        p, enc = self.params, encoders.image
        if p.decoder_dim % p.decoder_heads:
            raise ValueError(f"mae: decoder_dim {p.decoder_dim} is not divisible by decoder_heads {p.decoder_heads}")
        self.decoder_embed = nn.Linear(enc.feature_dim, p.decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, p.decoder_dim))
        if hasattr(enc, "num_patches"):  # one fixed grid with learned positions (vit): so are the decoder's
            self.decoder_pos = nn.Parameter(torch.randn(1, enc.num_patches + 1, p.decoder_dim) * 0.02)
        else:  # any grid (medformer): sine-cosine codes of the grid (decoder_sincos)
            self.register_parameter("decoder_pos", None)
        layer = nn.TransformerEncoderLayer(p.decoder_dim, p.decoder_heads, 2 * p.decoder_dim, dropout=0.0,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.decoder_blocks = nn.TransformerEncoder(layer, p.decoder_depth, enable_nested_tensor=False)
        self.decoder_norm = nn.LayerNorm(p.decoder_dim)
        self.decoder_pred = SignatureHeads.of(  # per signature: patch^d · C pixels of its own patch size
            encoders, lambda c, d: nn.Linear(p.decoder_dim, enc.patch_size_of(d) ** d * c), "mae")

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        x = random_view(batch["image"], self.params.views, self.generator)  # [N, C, *spatial] in [0, 1]
        return self._mae(x) if self.use_mae else self._simmim(x)

    def _mae(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        enc, n = self.image_encoder, len(x)
        tokens, cls = enc.embed_tokens(x)  # [N, P, dim] and [N, 1, dim], positions added
        num_patches, dim = tokens.shape[1:]
        ids_keep, mask, ids_restore = (t.to(x.device) for t in
                                       random_masking(n, num_patches, self.params.mask_ratio, self.generator))
        visible = tokens.gather(1, ids_keep.unsqueeze(-1).expand(-1, -1, dim))  # [N, L, dim]
        latent = enc.encode_sequence(torch.cat([cls, visible], dim=1))  # [N, 1 + L, dim]
        h = self.decoder_embed(latent)  # [N, 1 + L, dd]
        filler = self.mask_token.expand(n, num_patches - visible.shape[1], -1)
        seq = torch.cat([h[:, 1:], filler], dim=1).gather(1, ids_restore.unsqueeze(-1).expand(-1, -1, h.shape[-1]))
        seq = self.decoder_blocks(torch.cat([h[:, :1], seq], dim=1) + self._decoder_positions(x))  # [N, 1 + P, dd]
        pred = self.decoder_pred.for_input(x)(self.decoder_norm(seq[:, 1:]))  # [N, P, patch^d · C]
        patch = enc.patch_size_of(x.ndim - 2)
        target = patchify(pad_to_multiple(x, patch), patch)  # [N, P, patch^d · C]
        return {"loss": mae_loss(pred, target, mask, self.params.norm_pix_loss)}

    def _decoder_positions(self, x: torch.Tensor) -> torch.Tensor:  # [1, 1 + P, dd]
        if self.decoder_pos is not None:
            return self.decoder_pos
        return decoder_sincos(token_grid(self.image_encoder, x.shape), self.params.decoder_dim).to(x)

    def _simmim(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        p, head = self.params, self.heads.for_input(x)
        mask = simmim_mask(x.shape, p.mask_patch_size, p.mask_ratio, self.generator).to(x.device)  # [N, 1, *S]
        masked = x * (1 - mask) + head.mask_value.clamp(0, 1) * mask
        pred = head.decoder(self.image_encoder.forward_features(masked), tuple(x.shape[2:]))  # [N, C, *S]
        return {"loss": simmim_loss(pred, x, mask)}


class SimMIMHead(nn.Module):
    """The SimMIM-style variant's output adapter for one signature: the learned fill value (one per channel,
    in pixel space, initially 0.5) and the :class:`~medrobust.methods.restoration.PixelDecoder`."""

    def __init__(self, feature_dim: int, channels: int, spatial_dims: int):
        super().__init__()
        self.mask_value = nn.Parameter(torch.full((1, channels) + (1,) * spatial_dims, 0.5))
        self.decoder = PixelDecoder(feature_dim, channels, spatial_dims)
