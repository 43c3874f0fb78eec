"""Fusion encoder: image tokens and report token states in one transformer, and a classifier on top.

Single-stream joint attention over ``[CLS; image tokens; report tokens]`` as in ViLT (Kim et al. 2021,
"ViLT: Vision-and-Language Transformer Without Convolution or Region Supervision") and the fusion module
of M3AE (Chen et al. 2022, "Multi-Modal Masked Autoencoders for Medical Vision-and-Language
Pre-Training"). Either modality may be absent (dropped): its tokens are simply left out, so image-only,
report-only and joint inputs share one module (modality resilience, Robust-MMR).
"""

from __future__ import annotations

import math

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from medrobust.data.tokenizer import PAD
from medrobust.registry import register

MISSING = (None, "image", "report")


class FusionParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dim: int = Field(64, ge=8, description="width of the fused tokens (the pooled feature size)")
    depth: int = Field(1, ge=1, description="joint transformer layers")
    heads: int = Field(4, ge=1)
    mlp_ratio: float = Field(2.0, gt=0)


def sincos_positions(n: int, dim: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Fixed 1D sine-cosine position codes (Vaswani et al. 2017) for ``n`` tokens: ``[n, dim]``.

    Parameter-free, so any token count (a CNN's 4x4 map, a ViT's patches, 2D or 3D in raster order) works.
    """
    half = (dim + 1) // 2
    freq = torch.exp(-math.log(10000.0) * torch.arange(half, device=device, dtype=dtype) / half)  # [half]
    angle = torch.arange(n, device=device, dtype=dtype).unsqueeze(1) * freq  # [n, half]
    return torch.cat([angle.sin(), angle.cos()], dim=1)[:, :dim]


@register("encoder", "fusion")
class Fusion(nn.Module):
    """Pre-norm transformer over ``[CLS; image tokens; report tokens]`` with a key padding mask.

    Image tokens ``[N, P, Di]`` and report states ``[N, L, Dt]`` are projected to ``dim``; each gets a
    learned modality-type embedding, image tokens also fixed sine-cosine positions (report states carry
    the text encoder's positions). Report padding is masked out of attention. ``pooled`` is the output
    of the learned [CLS] fusion token.
    """

    Params = FusionParams
    modality = "fusion"

    def __init__(self, image_dim: int, text_dim: int, params: FusionParams | None = None):
        super().__init__()
        p = params or FusionParams()
        if p.dim % p.heads:
            raise ValueError(f"fusion: dim {p.dim} is not divisible by heads {p.heads}")
        self.image_dim, self.text_dim = image_dim, text_dim
        self.image_proj = nn.Linear(image_dim, p.dim)
        self.text_proj = nn.Linear(text_dim, p.dim)
        self.cls = nn.Parameter(torch.zeros(1, 1, p.dim))
        self.type_embed = nn.Parameter(torch.randn(3, p.dim) * 0.02)  # rows: [CLS], image, report
        layer = nn.TransformerEncoderLayer(p.dim, p.heads, int(p.dim * p.mlp_ratio), dropout=0.0,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, p.depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(p.dim)
        self.feature_dim = p.dim

    def _check(self, name: str, x: torch.Tensor, dim: int) -> None:
        if x.ndim != 3 or x.shape[-1] != dim:
            raise ValueError(f"fusion: {name} must be [N, tokens, {dim}], got shape {tuple(x.shape)}")

    def forward(self, image_tokens: torch.Tensor | None, text_states: torch.Tensor | None,
                text_pad: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Fuse; ``None`` drops a modality.

        Args:
            image_tokens: ``[N, P, Di]`` or None.
            text_states: ``[N, L, Dt]`` or None.
            text_pad: ``bool [N, L]``, True at padding (None = no padding).

        Returns:
            ``pooled [N, dim]``, ``image_out [N, P, dim]`` or None, ``text_out [N, L, dim]`` or None.
        """
        if image_tokens is None and text_states is None:
            raise ValueError("fusion: both modalities are missing; give image tokens, report states or both")
        ref = image_tokens if image_tokens is not None else text_states
        n = len(ref)
        parts = [(self.cls + self.type_embed[0]).expand(n, -1, -1)]  # [N, 1, dim]
        pads = [torch.zeros(n, 1, dtype=torch.bool, device=ref.device)]
        n_img = 0
        if image_tokens is not None:
            self._check("image_tokens", image_tokens, self.image_dim)
            n_img = image_tokens.shape[1]
            pos = sincos_positions(n_img, self.feature_dim, image_tokens.device, image_tokens.dtype)
            parts.append(self.image_proj(image_tokens) + self.type_embed[1] + pos)  # [N, P, dim]
            pads.append(torch.zeros(n, n_img, dtype=torch.bool, device=ref.device))
        if text_states is not None:
            self._check("text_states", text_states, self.text_dim)
            if len(text_states) != n:
                raise ValueError(f"fusion: {n} images but {len(text_states)} reports")
            if text_pad is None:
                text_pad = torch.zeros(text_states.shape[:2], dtype=torch.bool, device=text_states.device)
            elif text_pad.shape != text_states.shape[:2]:
                raise ValueError(f"fusion: text_pad must be [N, L] = {tuple(text_states.shape[:2])}, "
                                 f"got {tuple(text_pad.shape)}")
            parts.append(self.text_proj(text_states) + self.type_embed[2])  # [N, L, dim]
            pads.append(text_pad.bool())
        pad = torch.cat(pads, dim=1)  # [N, 1 + P + L]
        h = self.norm(self.blocks(torch.cat(parts, dim=1), src_key_padding_mask=pad if pad.any() else None))
        image_out = h[:, 1 : 1 + n_img] if image_tokens is not None else None
        text_out = h[:, 1 + n_img :] if text_states is not None else None
        return h[:, 0], image_out, text_out


class FusionClassifier(nn.Module):
    """Image encoder tokens + report token states -> :class:`Fusion` -> [CLS] -> linear head.

    Same surface as :class:`medrobust.models.heads.Classifier`. ``text_features`` packs the report
    states with one extra last channel (1.0 real token, 0.0 PAD) so the padding mask travels with the
    features through attacks that slice or expand them along the batch dimension. Unlike late fusion,
    the image and report interact inside the fusion transformer, so the logits are not additive.
    """

    randomized = False
    non_differentiable = False

    def __init__(self, image_encoder: nn.Module, n_outputs: int, text_encoder: nn.Module, fusion: Fusion):
        super().__init__()
        if text_encoder is None or fusion is None:
            raise ValueError("FusionClassifier needs a text encoder and a fusion module")
        for name, enc, method in (("image encoder", image_encoder, "forward_tokens"),
                                  ("text encoder", text_encoder, "forward_token_embeddings")):
            if not hasattr(enc, method):
                raise ValueError(f"FusionClassifier: the {name} {type(enc).__name__} has no {method}()")
        self.image_encoder, self.text_encoder, self.fusion = image_encoder, text_encoder, fusion
        self.head = nn.Linear(fusion.feature_dim, n_outputs)

    @property
    def uses_text(self) -> bool:
        return True

    def text_features_from_embeddings(self, emb: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """``emb [N, L, Dt]`` (token embeddings, maybe perturbed) + ids -> packed ``[N, L, Dt + 1]``."""
        states = self.text_encoder.forward_token_embeddings(emb, tokens)  # [N, L, Dt]
        real = (tokens != PAD).unsqueeze(-1).to(states.dtype)  # [N, L, 1]
        return torch.cat([states, real], dim=-1)

    def text_features(self, tokens: torch.Tensor) -> torch.Tensor:  # [N, L] -> [N, L, Dt + 1]
        return self.text_features_from_embeddings(self.text_encoder.embed(tokens), tokens)

    def features(self, image: torch.Tensor | None, tokens: torch.Tensor | None = None,
                 text_features: torch.Tensor | None = None, missing: str | None = None) -> torch.Tensor:
        """Pooled fused features ``[N, dim]``; ``missing="image"`` / ``"report"`` leaves that modality out."""
        if missing not in MISSING:
            raise ValueError(f"missing must be None, 'image' or 'report', got {missing!r}")
        image_tokens = states = pad = None
        if missing != "image":
            if image is None:
                raise ValueError("this fusion classifier needs an image (or missing='image')")
            image_tokens = self.image_encoder.forward_tokens(image)  # [N, P, Di]
        if missing != "report":
            if text_features is None:
                if tokens is None:
                    raise ValueError("this image+report classifier needs report tokens (or missing='report')")
                text_features = self.text_features(tokens)
            states, pad = text_features[..., :-1], text_features[..., -1] < 0.5  # [N, L, Dt], [N, L]
            used = int((~pad).any(0).nonzero().max()) + 1 if (~pad).any() else 1
            states, pad = states[:, :used], pad[:, :used]  # drop trailing all-pad columns: same output, less work
        return self.fusion(image_tokens, states, pad)[0]

    def forward(self, image: torch.Tensor | None, tokens: torch.Tensor | None = None, *,
                text_features: torch.Tensor | None = None, missing: str | None = None) -> torch.Tensor:
        """Logits ``[N, n_outputs]``; ``text_features`` (from :meth:`text_features`) skip the report encoder."""
        return self.head(self.features(image, tokens, text_features, missing))

    def encode_image(self, image: torch.Tensor) -> torch.Tensor:  # [N, C, *spatial] -> [N, dim]
        return self.features(image, missing="report")

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:  # [N, L] -> [N, dim]
        return self.features(None, tokens, missing="image")

    def freeze_encoders(self) -> None:
        """Linear-probe mode: only the head trains."""
        for module in (self.image_encoder, self.text_encoder, self.fusion):
            module.requires_grad_(False)
