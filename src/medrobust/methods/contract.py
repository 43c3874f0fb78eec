"""The method contract, declared once: what a registered method says about itself and how it is built.

A registered method (``@register("method", name)``) is a small ``nn.Module`` whose ``forward(batch)``
returns a dict with a scalar ``"loss"`` (plus detached extras to log); it may define ``after_step()``
(momentum teachers, run after each optimiser step) and a ``generator`` (its own randomness). Besides
``Params`` (a pydantic model that forbids unknown keys) it carries one declaration, ``info``:

* ``MethodInfo(role="supervised")`` — an objective on labeled data:
  ``__init__(self, model: Classifier, task: Task, params: Params | None = None, seed: int = 0)``; ``seed``
  is the run seed, for the objective's own randomness (the views that augment each labeled batch).
* ``MethodInfo(role="self-supervised", counterpart=...)`` — pre-training that trains the given encoders in
  place: ``__init__(self, encoders: Encoders, params: Params | None = None, seed: int = 0)``. The study keeps
  ``encoders.image`` (and ``text`` / ``fusion`` where the method uses them) and fine-tunes it with the
  ``counterpart`` objective, the supervised arm it is compared with.

Randomness seeded from the run seed comes from :func:`method_generator`, one generator per method, so
every method sees the same streams on every machine (per rank under DDP).

Two optional class-level hooks, each with its default here (callers use the functions, never the names):

* ``display_name_for(encoder_name, params) -> str`` (classmethod): the name tables give the method when it
  is built on the image encoder ``encoder_name`` (``mae`` on a CNN is SimMIM-style). Default
  ``info.display_name``; read through :func:`display_name_of`.
* ``augmented_corruptions(params) -> list[str]`` (classmethod): the evaluated corruptions the method's
  training augmentations apply. Default: those of every :class:`~medrobust.data.views.ViewParams` in its
  ``params`` (:func:`medrobust.data.views.covered_corruptions`); read through :func:`augmented_corruptions_of`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import torch
from pydantic import BaseModel
from torch import nn

from medrobust.data.views import covered_corruptions, views_in
from medrobust.engine.distributed import rank
from medrobust.models.layers import signature_of
from medrobust.task import Task

Role = Literal["supervised", "self-supervised", "supervised-pretraining"]

_MODALITIES = (("image",), ("image", "text"))


@dataclass(frozen=True)
class MethodInfo:
    """What a method declares about itself; read by the study, the report and the contract test.

    Attributes:
        display_name: how the report names it ("SimCLR", "MoCo v2", "Robust-MMR", "Supervised", ...).
        role: ``"supervised"`` (an objective on the target's labels), ``"self-supervised"`` (pre-training without
            labels) or ``"supervised-pretraining"`` (pre-training on the labels of a pool's other sources, then
            fine-tuned like a self-supervised arm).
        modalities: the inputs it trains on: ``("image",)`` or ``("image", "text")``.
        counterpart: self-supervised only: the registered supervised method that fine-tunes it and that it
            is compared with (same modalities).
        uses_fusion: pre-trains through a fusion encoder (``encoders.fusion``; mmr, robust-mmr).
    """

    display_name: str
    role: Role
    modalities: tuple[str, ...] = ("image",)
    counterpart: str | None = None
    uses_fusion: bool = False

    def __post_init__(self) -> None:
        who = self.display_name or "<unnamed>"
        if not self.display_name:
            raise ValueError("MethodInfo needs a display_name")
        if self.role not in get_args(Role):
            raise ValueError(f"{who}: role {self.role!r} is not one of {', '.join(get_args(Role))}")
        if tuple(self.modalities) not in _MODALITIES:
            raise ValueError(f"{who}: modalities {self.modalities!r} must be ('image',) or ('image', 'text')")
        object.__setattr__(self, "modalities", tuple(self.modalities))
        if self.pretrains and not self.counterpart:
            raise ValueError(f"{who}: a pre-training method must name its supervised counterpart")
        if not self.pretrains and self.counterpart is not None:
            raise ValueError(f"{who}: a supervised method has no counterpart, got {self.counterpart!r}")
        if self.uses_fusion and not (self.pretrains and self.uses_text):
            raise ValueError(f"{who}: uses_fusion needs a self-supervised image+text method")

    @property
    def self_supervised(self) -> bool:
        return self.role == "self-supervised"

    @property
    def pretrains(self) -> bool:
        """Pre-trains encoders (without labels, or on a pool's labels) that a supervised objective fine-tunes."""
        return self.role != "supervised"

    @property
    def uses_text(self) -> bool:
        return "text" in self.modalities


@dataclass(frozen=True)
class SourceFacts:
    """One source of the images a pre-training method will see (a pre-training pool has several).

    Attributes:
        name: how messages and the report name it (``"target"``, ``"synthetic(ultrasound)"``, a file name).
        image_shape: ``(C, *spatial)`` of its images (every batch of a pool comes from one source, so one shape).
        mean, std: per-channel statistics of its images in [0, 1].
        task: its labels' :class:`~medrobust.task.Task`, or ``None`` when it has none (the target's labels are
            never given to pre-training: they are the study's sparse labels, used when fine-tuning).
        has_text: its images come with reports.
    """

    name: str
    image_shape: tuple[int, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    task: "Task | None" = None
    has_text: bool = False

    @property
    def signature(self) -> str:
        """``"1ch-2d"`` etc. (:func:`medrobust.models.layers.signature_of`)."""
        return signature_of(self.image_shape)


@dataclass
class Encoders:
    """The modules a self-supervised method trains, in place (the study keeps them afterwards).

    ``text`` is given to image+text methods, ``fusion`` to those with ``uses_fusion``; image-only methods
    ignore ``text``. ``sources``: what the method will be trained on, one :class:`SourceFacts` per source of a
    pre-training pool, in the pool's order (a pool batch carries ``batch["source"]``, int64 ``[N]`` indices into
    it; every batch comes from one source). Empty (the default): the study's own training images only, of the one
    input geometry of ``image`` — methods then behave exactly as without pools. Methods with input-shaped heads
    (pixel decoders) build one per input signature in :func:`input_signatures`.
    """

    image: nn.Module
    text: nn.Module | None = None
    fusion: nn.Module | None = None
    sources: tuple[SourceFacts, ...] = ()

    def modules(self) -> dict[str, nn.Module]:
        """``{"image": ..., "text": ..., "fusion": ...}``, leaving out those that are ``None``."""
        named = {"image": self.image, "text": self.text, "fusion": self.fusion}
        return {k: m for k, m in named.items() if m is not None}


def input_signatures(encoders: Encoders) -> list[tuple[int, int]]:
    """The distinct ``(channels, spatial_dims)`` a method must handle, in first-seen order: those of
    ``encoders.sources``, or, without sources, the one geometry of ``encoders.image`` (:func:`input_geometry`)."""
    if encoders.sources:
        return list(dict.fromkeys((s.image_shape[0], len(s.image_shape) - 1) for s in encoders.sources))
    return [input_geometry(encoders.image)]


def input_geometry(encoder: nn.Module) -> tuple[int, int]:
    """``(channels, spatial_dims)`` of the images ``encoder`` takes, read from its first convolution."""
    for module in encoder.modules():
        if isinstance(module, (nn.Conv2d, nn.Conv3d)):
            return module.in_channels, 2 if isinstance(module, nn.Conv2d) else 3
    raise ValueError(f"cannot tell the input channels of encoder {type(encoder).__name__}: it has no Conv2d/Conv3d; "
                     "pixel-reconstruction methods need an image encoder that starts with a convolution")


def method_generator(seed: int) -> torch.Generator:
    """The CPU generator of a method's randomness (views, masks, ...): seeded from the run seed and the rank."""
    return torch.Generator().manual_seed(seed * 7919 + rank())


def info_of(cls) -> MethodInfo:
    """The :class:`MethodInfo` of a method class (or instance); a ``TypeError`` naming it if it has none."""
    klass = cls if isinstance(cls, type) else type(cls)
    info = getattr(klass, "info", None)
    if not isinstance(info, MethodInfo):
        name = getattr(klass, "registry_name", None)
        label = f"{klass.__qualname__}" + (f" (method {name!r})" if name else "")
        got = "none" if info is None else f"{type(info).__name__}"
        raise TypeError(f"{label} declares no method contract: expected a class attribute "
                        f"`info = MethodInfo(...)`, found {got}")
    return info


def display_name_of(cls, encoder_name: str, params: BaseModel | None = None) -> str:
    """How tables name method ``cls`` built on the image encoder ``encoder_name`` with ``params``: its
    ``display_name_for`` hook when it has one, else ``info.display_name``."""
    hook = getattr(cls, "display_name_for", None)
    return hook(encoder_name, params) if hook is not None else info_of(cls).display_name


def augmented_corruptions_of(cls, params: BaseModel) -> list[str]:
    """The corruption names that method ``cls``'s training augmentations with ``params`` cover, sorted: its
    ``augmented_corruptions`` hook when it has one, else the union over every ``ViewParams`` in ``params``."""
    hook = getattr(cls, "augmented_corruptions", None)
    if hook is not None:
        return sorted(set(hook(params)))
    return sorted({c for views in views_in(params) for c in covered_corruptions(views)})
