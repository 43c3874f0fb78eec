"""Classifiers built from encoders: image-only or image+report with concatenation fusion.

``Classifier(image, tokens=None) -> logits``. Image input is ``[N, C, *spatial]`` in ``[0, 1]``.
Attacks see a function of the image only; :class:`FixedReport` binds the report of an image+report model.
"""

from __future__ import annotations

import torch
from torch import nn


class Classifier(nn.Module):
    """Encoder(s) -> (concatenated) features -> linear head.

    No normalisation between features and head: a LayerNorm there removes the per-image scale of the
    pooled features (e.g. overall opacity) and left some seeds stuck at chance (3 of 24 runs of the
    default study; 0 of 6 seeds without it).

    Attributes ``randomized`` and ``non_differentiable`` tell the evaluation to use EOT / BPDA
    (False for these deterministic, differentiable models; defenses set them).
    """

    randomized = False
    non_differentiable = False

    def __init__(self, image_encoder: nn.Module, n_outputs: int, text_encoder: nn.Module | None = None):
        super().__init__()
        self.image_encoder = image_encoder
        self.text_encoder = text_encoder
        dim = image_encoder.feature_dim + (text_encoder.feature_dim if text_encoder is not None else 0)
        self.head = nn.Linear(dim, n_outputs)

    @property
    def uses_text(self) -> bool:
        return self.text_encoder is not None

    def text_features(self, tokens: torch.Tensor) -> torch.Tensor:  # [N, L] -> [N, D_txt]
        return self.text_encoder.forward_features(tokens)

    def text_features_from_embeddings(self, emb: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Report features from (perturbed) token embeddings ``[N, L, D]``: what report-side attacks perturb."""
        return self.text_encoder.forward_embeddings(emb, tokens)

    def features(self, image: torch.Tensor | None, tokens: torch.Tensor | None = None,
                 text_features: torch.Tensor | None = None, missing: str | None = None) -> torch.Tensor:
        """``missing="image"`` / ``"report"`` drops that modality: its features are zeros (late fusion)."""
        if missing not in (None, "image", "report"):
            raise ValueError(f"missing must be None, 'image' or 'report', got {missing!r}")
        if missing == "image":
            if self.text_encoder is None:
                raise ValueError("an image-only classifier cannot drop its image")
            text = self.text_features(tokens) if text_features is None else text_features
            return torch.cat([text.new_zeros(len(text), self.image_encoder.feature_dim), text], dim=1)
        feats = self.image_encoder.forward_features(image)  # [N, D_img]
        if self.text_encoder is not None:
            if missing == "report":
                text_features = feats.new_zeros(len(feats), self.text_encoder.feature_dim)
            elif text_features is None:
                if tokens is None:
                    raise ValueError("this image+report classifier needs report tokens (or missing='report')")
                text_features = self.text_features(tokens)
            feats = torch.cat([feats, text_features], dim=1)  # [N, D_img + D_txt]
        return feats

    def forward(self, image: torch.Tensor | None, tokens: torch.Tensor | None = None, *,
                text_features: torch.Tensor | None = None, missing: str | None = None) -> torch.Tensor:
        """Logits ``[N, n_outputs]``; ``text_features`` (from :meth:`text_features`) skip the report encoder."""
        return self.head(self.features(image, tokens, text_features, missing))

    def freeze_encoders(self) -> None:
        """Linear-probe mode: only the head trains."""
        for enc in (self.image_encoder, self.text_encoder):
            if enc is not None:
                enc.requires_grad_(False)


class FixedReport(nn.Module):
    """The image -> logits function of an image+report classifier with the report held fixed.

    Lets every image attack and corruption work on image+report models unchanged: the report is clean
    (or removed) while the image is perturbed. With late (concatenation) fusion the report features do not
    depend on the image, so they are computed once and reused by every attack step — the same function
    and gradient w.r.t. the image, without re-encoding the report at each step.
    """

    def __init__(self, model: Classifier, tokens: torch.Tensor | None = None,
                 text_features: torch.Tensor | None = None, missing: str | None = None):
        super().__init__()
        self.model, self.missing = model, missing
        if text_features is None and tokens is not None:
            with torch.no_grad():
                text_features = model.text_features(tokens)
        self.text_features = text_features
        self.randomized = getattr(model, "randomized", False)
        self.non_differentiable = getattr(model, "non_differentiable", False)
        if hasattr(model, "eot_samples"):
            self.eot_samples = model.eot_samples

    def _text(self) -> dict:
        return {"missing": self.missing} if self.missing is not None else {"text_features": self.text_features}

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.model(image, **self._text())

    def select(self, idx: torch.Tensor) -> "FixedReport":
        """The same function for the examples ``idx`` of the batch (their texts)."""
        if self.missing is not None:
            return self
        return FixedReport(self.model, text_features=self.text_features[idx])

    def bpda_forward(self, image: torch.Tensor) -> torch.Tensor:
        """The differentiable approximation of a non-differentiable model, with the same fixed text."""
        return self.model.bpda_forward(image, **self._text())
