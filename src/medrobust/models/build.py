"""Build a run's modules from their config specs: the image / text encoders, the fusion module, the classifier.

The encoders are looked up by name in the ``encoder`` registry and validated against their ``Params``; their
input statistics (``mean``, ``std``) come from the training images, so normalisation lives inside the model
(DESIGN principle 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from medrobust import registry
from medrobust.models.fusion import FusionClassifier
from medrobust.models.heads import Classifier
from medrobust.schema import Component


@dataclass(frozen=True)
class ModelSpecs:
    """Which encoders a study builds: ``image``, ``text`` (image+text data only) and the downstream ``fusion``
    (``None``: late fusion of the encoders' features)."""

    image: Component
    text: Component
    fusion: Component | None = None


@dataclass(frozen=True)
class InputFacts:
    """What the encoders must know about the data: image shape ``[C, *spatial]``, per-channel statistics of the
    training images, and the vocabulary size of the text tokenizer (``None``: images only)."""

    image_shape: tuple[int, ...]
    mean: list[float]
    std: list[float]
    vocab_size: int | None = None


def build_encoders(specs: ModelSpecs, inputs: InputFacts, seed: int, pretraining_fusion: bool = False,
                   sources: Sequence = ()) -> tuple[nn.Module, nn.Module | None, nn.Module | None]:
    """Fresh ``(image, text, fusion)`` modules (``None`` where absent), initialised from ``seed``.

    The fusion module comes from ``specs.fusion``; with ``pretraining_fusion`` (methods that pre-train through
    a fusion encoder, e.g. mmr) one is built with the default parameters when the specs have none. ``sources``
    (:class:`~medrobust.methods.contract.SourceFacts` of a pre-training pool): an adapter encoder
    (``adapts_inputs``) gets an input adapter for each source's signature after its own (the target's), with that
    source's statistics — the same calls when pre-training and when rebuilding for fine-tuning, so the checkpoint
    fits.
    """
    torch.manual_seed(seed)
    image_cls = registry.get("encoder", specs.image.name)
    shape = inputs.image_shape
    image = image_cls(shape[0], len(shape) - 1, shape[-1], inputs.mean, inputs.std,
                      image_cls.Params.model_validate(specs.image.params))
    if getattr(image_cls, "adapts_inputs", False):
        for source in sources:
            image.add_input(source.image_shape[0], len(source.image_shape) - 1, source.mean, source.std)
    text = fusion = None
    if inputs.vocab_size is not None:
        text_cls = registry.get("encoder", specs.text.name)
        text = text_cls(inputs.vocab_size, text_cls.Params.model_validate(specs.text.params))
        spec = specs.fusion or (Component(name="fusion") if pretraining_fusion else None)
        if spec is not None:
            fusion_cls = registry.get("encoder", spec.name)
            fusion = fusion_cls(image.feature_dim, text.feature_dim, fusion_cls.Params.model_validate(spec.params))
    return image, text, fusion


def classifier_for(image: nn.Module, text: nn.Module | None, fusion: nn.Module | None, n_outputs: int) -> nn.Module:
    """Image-only, late-fusion or fusion-encoder classifier, by what is given."""
    if text is None:
        return Classifier(image, n_outputs)
    if fusion is not None:
        return FusionClassifier(image, n_outputs, text, fusion)
    return Classifier(image, n_outputs, text)
