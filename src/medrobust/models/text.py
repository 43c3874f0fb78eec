"""A small transformer report encoder.

Surface: ``forward_features(tokens) -> [N, feature_dim]``; ``embed(tokens)`` and
``forward_embeddings(emb, tokens)`` split the token embedding from the rest so that report-side attacks
can perturb embeddings (continuous attacks) while the padding mask still comes from the token ids.
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from medrobust.data.tokenizer import PAD
from medrobust.registry import register


class TextParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    vocab_size: int = Field(1000, ge=16, description="WordPiece vocabulary trained on the training reports")
    max_len: int = Field(64, ge=4, description="tokens per report, [CLS] included; longer reports are truncated")
    dim: int = Field(64, ge=8)
    depth: int = Field(1, ge=1)
    heads: int = Field(4, ge=1)


@register("encoder", "transformer")
class TextTransformer(nn.Module):
    """Token + position embeddings, pre-norm ``nn.TransformerEncoder``, mean pool over non-pad tokens."""

    Params = TextParams
    modality = "text"

    def __init__(self, vocab_size: int, params: TextParams | None = None):
        super().__init__()
        p = params or TextParams()
        if p.dim % p.heads:
            raise ValueError(f"text encoder: dim {p.dim} is not divisible by heads {p.heads}")
        self.token = nn.Embedding(vocab_size, p.dim, padding_idx=PAD)
        self.pos = nn.Parameter(torch.randn(1, p.max_len, p.dim) * 0.02)
        layer = nn.TransformerEncoderLayer(p.dim, p.heads, 2 * p.dim, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, p.depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(p.dim)
        self.feature_dim = p.dim

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:  # [N, L] int64 -> [N, L, dim]
        return self.token(tokens)

    def _encode(self, emb: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[N, L, dim] embeddings -> ([N, L, dim] states after the blocks, [N, L] pad mask from the ids)."""
        pad = tokens == PAD  # [N, L]
        return self.blocks(emb + self.pos[:, : emb.shape[1]], src_key_padding_mask=pad), pad

    def forward_embeddings(self, emb: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """[N, L, dim] embeddings (+ the ids for the pad mask) -> [N, dim] pooled features."""
        h, pad = self._encode(emb, tokens)
        keep = (~pad).unsqueeze(-1).float()  # [N, L, 1]
        return self.norm((h * keep).sum(1) / keep.sum(1).clamp_min(1.0))

    def forward_token_embeddings(self, emb: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """[N, L, dim] embeddings (+ the ids for the pad mask) -> [N, L, dim] token states (blocks + norm).

        Pad positions hold values too (they attend to the real tokens); consumers mask them with ``tokens == PAD``.
        """
        return self.norm(self._encode(emb, tokens)[0])

    def forward_tokens(self, tokens: torch.Tensor) -> torch.Tensor:  # [N, L] -> [N, L, dim]
        return self.forward_token_embeddings(self.embed(tokens), tokens)

    def forward_features(self, tokens: torch.Tensor) -> torch.Tensor:  # [N, L] -> [N, dim]
        return self.forward_embeddings(self.embed(tokens), tokens)

    forward = forward_features
