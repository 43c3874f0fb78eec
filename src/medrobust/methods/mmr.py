"""Masked multimodal reconstruction: masked image modelling + masked language modelling through a fusion encoder.

M3AE (Chen et al. 2022, "Multi-Modal Masked Autoencoders for Medical Vision-and-Language Pre-Training",
MICCAI) and MRM (Zhou et al. 2023, "Advancing Radiograph Representation Learning with Masked Record
Modeling", ICLR): mask image patches and report tokens, encode both, fuse them, and reconstruct the
masked pixels (MIM, MAE's per-patch-normalised MSE, He et al. 2022) and the masked words (MLM, BERT,
Devlin et al. 2019), each conditioned on the other modality through the fusion transformer.

Encoder-agnostic: the image encoder gives a token grid (``forward_tokens``: a CNN's final map or a ViT's
patch tokens); the MIM decoder resamples the fused image tokens to the pixel-patch grid (bilinear) and
maps each to its patch's pixels with a small MLP. Masked pixels are replaced by the per-image mean
before encoding (a CNN sees no token dropping), so the same code works for every encoder. 2D images and 3D
volumes (cubic patches); a size that is not a multiple of ``patch_size`` gets a border-padded patch grid (the
targets repeat the border pixels). On a pre-training pool the MIM decoder is built once per input signature
(:class:`~medrobust.methods.adapters.SignatureHeads`: ``C · patch^d`` pixels per patch).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from medrobust.data.tokenizer import CLS, MASK, PAD
from medrobust.methods.adapters import SignatureHeads
from medrobust.methods.contract import Encoders, MethodInfo, method_generator
from medrobust.methods.masking import (fill_masked, pad_to_multiple, patch_grid, patch_mask_to_pixels, patchify,
                                      random_mask)
from medrobust.registry import register


class MMRParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    patch_size: int = Field(7, ge=1, description="pixels per side of a masked/reconstructed image patch")
    image_mask_ratio: float = Field(0.5, gt=0, lt=1, description="fraction of image patches masked")
    text_mask_ratio: float = Field(0.5, gt=0, lt=1, description="fraction of real report tokens masked")
    mim_weight: float = Field(1.0, ge=0, description="weight of masked image modelling")
    mlm_weight: float = Field(1.0, ge=0, description="weight of masked language modelling")
    norm_pix_loss: bool = Field(True, description="MAE: normalise each target patch to zero mean, unit variance")

    @model_validator(mode="after")
    def _some_loss(self):
        if self.mim_weight == 0 and self.mlm_weight == 0:
            raise ValueError("mim_weight and mlm_weight are both 0; at least one reconstruction loss is needed")
        return self


class MIMDecoder(nn.Module):
    """Fused image tokens ``[N, T, dim]`` (a ``g^d`` grid) -> pixels of the ``gh x gw (x gd)`` patch grid."""

    def __init__(self, dim: int, patch_pixels: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, patch_pixels))

    def forward(self, tokens: torch.Tensor, grid: tuple[int, ...]) -> torch.Tensor:  # -> [N, Π grid, pixels]
        n, t, d = tokens.shape
        if t != math.prod(grid):
            dims = len(grid)
            side = round(t ** (1 / dims))
            if side ** dims != t:
                raise ValueError(f"mmr: the image encoder gives {t} tokens, not a {'square' if dims == 2 else 'cubic'} "
                                 f"grid, and not the {'x'.join(map(str, grid))} patch grid; choose patch_size so "
                                 "they match")
            maps = tokens.transpose(1, 2).reshape(n, d, *([side] * dims))  # [N, dim, g, g(, g)]
            maps = F.interpolate(maps, size=tuple(grid), mode="bilinear" if dims == 2 else "trilinear",
                                 align_corners=False)  # [N, dim, *grid]
            tokens = maps.flatten(2).transpose(1, 2)  # [N, Π grid, dim]
        return self.mlp(tokens)


def mim_loss(pred: torch.Tensor, patches: torch.Tensor, mask: torch.Tensor, norm_pix: bool) -> torch.Tensor:
    """MAE reconstruction loss: mean squared error over the masked patches only.

    Args:
        pred: ``[N, P, K]`` predicted pixels per patch.
        patches: ``[N, P, K]`` clean target pixels (normalised per patch when ``norm_pix``).
        mask: ``bool [N, P]``, True = masked.
    """
    target = patches
    if norm_pix:
        mean, var = target.mean(dim=-1, keepdim=True), target.var(dim=-1, keepdim=True)
        target = (target - mean) / (var + 1e-6).sqrt()
    per_patch = (pred - target).pow(2).mean(dim=-1)  # [N, P]
    return (per_patch * mask).sum() / mask.sum().clamp_min(1)


def maskable_tokens(tokens: torch.Tensor) -> torch.Tensor:
    """``bool [N, L]``: real report tokens (not [PAD], not [CLS]) that MLM may mask."""
    return (tokens != PAD) & (tokens != CLS)


@register("method", "mmr")
class MMR(nn.Module):
    """Masked image + masked language modelling over a fusion encoder; fine-tuned like ``supervised-multimodal``.

    The loss dict has ``loss = mim_weight * mim + mlm_weight * mlm`` and the components ``mim``, ``mlm``.
    """

    Params = MMRParams
    info = MethodInfo("MMR", "self-supervised", ("image", "text"), counterpart="supervised-multimodal",
                      uses_fusion=True)

    def __init__(self, encoders: Encoders, params: MMRParams | None = None, seed: int = 0):
        super().__init__()
        image_encoder, text_encoder, fusion = encoders.image, encoders.text, encoders.fusion
        name = self.registry_name
        if text_encoder is None:
            raise ValueError(f"{name} needs a text encoder (image-report pairs)")
        if fusion is None:
            raise ValueError(f"{name} needs a fusion module (Encoders(image, text, fusion=Fusion(...)))")
        if not hasattr(image_encoder, "forward_tokens"):
            raise ValueError(f"{name} needs an image encoder with forward_tokens(); "
                             f"{type(image_encoder).__name__} has none")
        if not hasattr(text_encoder, "forward_token_embeddings"):
            raise ValueError(f"{name} needs a text encoder with forward_token_embeddings(); "
                             f"{type(text_encoder).__name__} has none")
        self.params = params or self.Params()
        self.image_encoder, self.text_encoder, self.fusion = image_encoder, text_encoder, fusion
        ps = self.params.patch_size
        self.decoder = SignatureHeads.of(encoders, lambda c, d: MIMDecoder(fusion.feature_dim, c * ps ** d), name)
        self.mlm_head = nn.Linear(fusion.feature_dim, text_encoder.token.num_embeddings)
        self.generator = method_generator(seed)

    # --- pieces shared with robust-mmr -------------------------------------------------------------
    def check_batch(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """``image [N, C, *spatial]`` and ``tokens [N, L']`` (the all-[PAD] tail cut) from the batch; clear errors."""
        name = self.registry_name
        for key in ("image", "tokens"):
            if key not in batch:
                raise ValueError(f"{name}: the batch has no {key!r}; it needs 'image' and 'tokens' "
                                 "(image-report pairs)")
        x, tokens = batch["image"], batch["tokens"]
        if x.ndim not in (4, 5):
            raise ValueError(f"{name}: images must be [N, C, H, W] or [N, C, D, H, W], got shape {tuple(x.shape)}")
        self.decoder.for_input(x)  # a MIM decoder for its signature (channels × 2D/3D), else a clear error
        if tokens.ndim != 2 or len(tokens) != len(x) or tokens.is_floating_point():
            raise ValueError(f"{name}: tokens must be int64 [N, L] with N = {len(x)} images, "
                             f"got {tokens.dtype} {tuple(tokens.shape)}")
        # drop the trailing columns that are [PAD] in every report: same result, less attention work
        length = int((tokens != PAD).any(dim=0).nonzero().max()) + 1 if (tokens != PAD).any() else tokens.shape[1]
        return x, tokens[:, :length]

    def fuse(self, image: torch.Tensor, emb: torch.Tensor, tokens: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Encode and fuse: returns pooled, image_out, text_out and the encoders' image tokens, report states."""
        image_tokens = self.image_encoder.forward_tokens(image)  # [N, T, Di]
        states = self.text_encoder.forward_token_embeddings(emb, tokens)  # [N, L, Dt]
        pooled, image_out, text_out = self.fusion(image_tokens, states, tokens == PAD)
        return pooled, image_out, text_out, image_tokens, states

    def reconstruction(self, image_out: torch.Tensor, text_out: torch.Tensor, x: torch.Tensor,
                       tokens: torch.Tensor, image_mask: torch.Tensor, token_mask: torch.Tensor
                       ) -> dict[str, torch.Tensor]:
        """MIM on the masked patches of the clean ``x`` and MLM on the masked ``tokens`` (the original ids)."""
        ps = self.params.patch_size
        pred = self.decoder.for_input(x)(image_out, patch_grid(x.shape, ps))  # [N, P, C · ps^d]
        mim = mim_loss(pred, patchify(pad_to_multiple(x, ps), ps), image_mask, self.params.norm_pix_loss)
        if not token_mask.any():
            raise ValueError(f"{self.registry_name}: no report in the batch has a real token to mask "
                             "(all reports are empty)")
        logits = self.mlm_head(text_out[token_mask])  # [M, vocab]
        mlm = F.cross_entropy(logits, tokens[token_mask])
        loss = self.params.mim_weight * mim + self.params.mlm_weight * mlm
        return {"loss": loss, "mim": mim.detach(), "mlm": mlm.detach()}

    def random_masks(self, x: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``bool [N, P]`` patch mask and ``bool [N, L]`` token mask, exact counts, from the method's generator."""
        n, p = len(x), math.prod(patch_grid(x.shape, self.params.patch_size))
        image_mask = random_mask(n, p, self.params.image_mask_ratio, self.generator, device=x.device)
        token_mask = random_mask(n, tokens.shape[1], self.params.text_mask_ratio, self.generator,
                                 valid=maskable_tokens(tokens), device=x.device)
        return image_mask, token_mask

    def masked_inputs(self, x: torch.Tensor, tokens: torch.Tensor, image_mask: torch.Tensor,
                      token_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Image with masked patches set to the per-image mean; tokens with masked ones set to [MASK]."""
        pixel_mask = patch_mask_to_pixels(image_mask, tuple(x.shape), self.params.patch_size)  # [N, 1, *spatial]
        return fill_masked(x, pixel_mask), tokens.masked_fill(token_mask, MASK)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        x, tokens = self.check_batch(batch)  # [N, C, *spatial] in [0, 1], [N, L]
        image_mask, token_mask = self.random_masks(x, tokens)
        x_in, tok_in = self.masked_inputs(x, tokens, image_mask, token_mask)
        _, image_out, text_out, _, _ = self.fuse(x_in, self.text_encoder.embed(tok_in), tok_in)
        return self.reconstruction(image_out, text_out, x, tokens, image_mask, token_mask)

