"""Output adapters: one head per input signature, for methods whose heads depend on the input's shape.

Medformer's output Adaptformers (Simionescu 2025, see :mod:`medrobust.models.medformer`) serve each source and
pretext task; here a method's input-shaped head (a pixel decoder, a per-patch prediction layer, a jigsaw head
over ``grid^d`` tiles) is built once per ``(channels, spatial_dims)`` of :func:`~medrobust.methods.contract.
input_signatures` — the sources of a pre-training pool, or the one geometry of the image encoder without
sources, in which case a method builds exactly the one head it always built, from the same random draws — and
picked at forward time by the signature of the batch (:func:`~medrobust.models.layers.signature_of`).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from medrobust.methods.contract import Encoders, input_signatures
from medrobust.models.layers import signature_of


def signature_key(channels: int, spatial_dims: int) -> str:
    """``"1ch-2d"`` etc. for ``channels`` × ``spatial_dims``-D images."""
    return signature_of((channels,) + (1,) * spatial_dims)


class SignatureHeads(nn.ModuleDict):
    """``{signature: head}`` built by ``build(channels, spatial_dims)`` for each signature, in order."""

    def __init__(self, signatures: list[tuple[int, int]], build: Callable[[int, int], nn.Module], who: str):
        super().__init__({signature_key(c, d): build(c, d) for c, d in signatures})
        self.who = who

    @classmethod
    def of(cls, encoders: Encoders, build: Callable[[int, int], nn.Module], who: str) -> SignatureHeads:
        """One head per signature of :func:`~medrobust.methods.contract.input_signatures` of ``encoders``."""
        return cls(input_signatures(encoders), build, who)

    def for_input(self, x: torch.Tensor) -> nn.Module:
        """The head of ``x``'s signature (``x``: ``[N, C, *spatial]``); a ``ValueError`` naming both otherwise."""
        sig = signature_of(x.shape[1:])
        if sig not in self:
            raise ValueError(f"{self.who} has no head for {sig} images (input {tuple(x.shape)}); it was built for "
                             f"{', '.join(self.keys())}. Pass the pre-training sources in Encoders(sources=...)")
        return self[sig]
