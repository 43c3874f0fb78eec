"""Shared contract of defenses, the wrapper that keeps the classifier surface, and seeded noise.

A defense is registered with ``@register("defense", name)`` and has a pydantic ``Params``,
``__init__(params=None, seed=0)``, and two hooks the study calls around fine-tuning:

- ``wrap(classifier, images, device) -> model``: called once before fine-tuning with the *unlabeled*
  training images (``[N, C, *spatial]`` in ``[0, 1]``; never labels). The returned model is fine-tuned and
  evaluated. Model defenses (noise layers, purifiers) return a :class:`DefendedClassifier`; training
  defenses return the classifier unchanged.
- ``objective(model, task, base) -> nn.Module``: the fine-tuning objective (``forward(batch) -> {"loss"}``);
  ``base`` is the supervised objective (:mod:`medrobust.methods.supervised`) built on ``model``.

Class attributes: ``kind`` (``"training"`` changes the objective, ``"model"`` changes the model) and
``randomized`` (the defended model is random, so the evaluation applies EOT through
:mod:`medrobust.attacks.base`; a non-differentiable one also declares ``non_differentiable`` and offers
``bpda_forward``).
"""

from __future__ import annotations

import torch
from pydantic import BaseModel
from torch import nn

from medrobust.data.base import Task


class DefenseInputError(ValueError):
    """A defense got images or a classifier it cannot work with; the message says what was expected."""


class Defense:
    """Base of every defense: stores validated params and a seed; by default changes nothing."""

    Params: type[BaseModel]
    kind: str = "training"
    randomized: bool = False

    def __init__(self, params: BaseModel | None = None, seed: int = 0):
        if params is not None and not isinstance(params, self.Params):
            raise DefenseInputError(f"{type(self).__name__} expects {self.Params.__name__}, "
                                    f"got {type(params).__name__}")
        self.params = params if params is not None else self.Params()
        self.seed = int(seed)

    def wrap(self, classifier: nn.Module, images: torch.Tensor, device: torch.device | str) -> nn.Module:
        """The model to fine-tune and evaluate (default: ``classifier`` itself)."""
        return classifier

    def objective(self, model: nn.Module, task: Task, base: nn.Module) -> nn.Module:
        """The fine-tuning objective (default: the supervised objective ``base`` unchanged)."""
        return base


def check_images(images: torch.Tensor, who: str) -> torch.Tensor:
    """``images`` unchanged if they are uint8 or float in ``[0, 1]``, ``[N, C, *spatial]``; else a clear error.

    Batches are converted with :func:`medrobust.data.base.to_unit` where they are used (no float copy of
    the whole set).
    """
    if not isinstance(images, torch.Tensor):
        raise DefenseInputError(f"{who}: images must be a torch.Tensor [N, C, *spatial], got {type(images).__name__}")
    if images.dtype != torch.uint8 and not torch.is_floating_point(images):
        raise DefenseInputError(f"{who}: images must be float in [0, 1] or uint8, got dtype {images.dtype}")
    if images.ndim not in (4, 5) or len(images) == 0:
        raise DefenseInputError(f"{who}: images must be a non-empty [N, C, H, W] or [N, C, D, H, W] tensor, "
                                f"got shape {tuple(images.shape)}")
    if images.dtype == torch.uint8:
        return images
    if not torch.isfinite(images).all() or images.min() < 0 or images.max() > 1:
        raise DefenseInputError(f"{who}: images must be finite and in [0, 1] (normalisation belongs inside the "
                                f"model), got range [{images.min().item():.4g}, {images.max().item():.4g}]")
    return images


class NoiseSource:
    """Seeded Gaussian noise on any device: the defense's own generator (DESIGN principle 9).

    One generator per device, created on first use from ``seed``; drawing never touches the global RNG,
    so a randomised defense does not shift the randomness of training or attacks.
    """

    def __init__(self, seed: int):
        self.seed = int(seed)
        self._generators: dict[str, torch.Generator] = {}

    def _generator(self, device: torch.device) -> torch.Generator:
        key = str(device)
        if key not in self._generators:
            self._generators[key] = torch.Generator(device=device).manual_seed(self.seed)
        return self._generators[key]

    def randn(self, shape: tuple[int, ...] | torch.Size, like: torch.Tensor) -> torch.Tensor:
        """Standard normal noise of ``shape`` on ``like``'s device and dtype."""
        return torch.randn(shape, generator=self._generator(like.device), device=like.device, dtype=like.dtype)

    def rand(self, shape: tuple[int, ...] | torch.Size, like: torch.Tensor) -> torch.Tensor:
        """Uniform ``[0, 1)`` noise of ``shape`` on ``like``'s device and dtype."""
        return torch.rand(shape, generator=self._generator(like.device), device=like.device, dtype=like.dtype)

    def reset(self) -> None:
        """Restart every stream from ``seed`` (the same noise sequence again)."""
        self._generators.clear()


class DefendedClassifier(nn.Module):
    """A classifier with a defense inside, keeping the surface the evaluation and attacks use.

    Explicit delegation (no ``__getattr__`` magic): ``uses_text``, ``text_features(tokens)``,
    ``text_features_from_embeddings``, ``text_encoder``, ``image_encoder``, ``head`` and
    ``freeze_encoders`` come from the wrapped classifier. Subclasses define ``forward(image, tokens=None, *,
    text_features=None, **kw)`` and set ``randomized`` / ``eot_samples`` / ``non_differentiable``.
    """

    randomized = False
    non_differentiable = False

    def __init__(self, classifier: nn.Module):
        super().__init__()
        for attr in ("uses_text", "text_features", "image_encoder", "head"):
            if not hasattr(classifier, attr):
                raise DefenseInputError(f"the defended model must be a classifier with `{attr}` "
                                        f"(models.heads.Classifier), got {type(classifier).__name__}")
        self.classifier = classifier

    @property
    def uses_text(self) -> bool:
        return bool(self.classifier.uses_text)

    @property
    def text_encoder(self) -> nn.Module | None:
        return self.classifier.text_encoder

    @property
    def image_encoder(self) -> nn.Module:
        return self.classifier.image_encoder

    @property
    def head(self) -> nn.Module:
        return self.classifier.head

    def text_features(self, tokens: torch.Tensor) -> torch.Tensor:  # [N, L] -> [N, D_txt]
        return self.classifier.text_features(tokens)

    def text_features_from_embeddings(self, emb: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        return self.classifier.text_features_from_embeddings(emb, tokens)

    def freeze_encoders(self) -> None:
        """Linear-probe mode of the wrapped classifier (the defense's own layers stay trainable)."""
        self.classifier.freeze_encoders()


def gaussian_like(noise: NoiseSource, x: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
    """``sigma · N(0, 1)`` noise shaped like ``x``; gradients reach ``sigma`` when it is a parameter."""
    return noise.randn(x.shape, x) * sigma
