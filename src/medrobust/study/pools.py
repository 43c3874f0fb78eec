"""Pre-training pools: several data sources (other data sets, modalities, sizes, 2D and 3D) that a pre-training arm
learns from instead of the target's training images alone — the question's own variable, *diverse* data.

A pool (``pretrain.pools.<name>``) is a list of sources, each a data-source spec like ``data`` or ``{source:
target}`` (the study's held-in training images, without labels: the target's labels are the study's sparse labels
and enter only at fine-tuning). From each other source only its **training split** is used (its validation and test
splits stay unseen), optionally capped by ``max_images`` (a fixed seeded subset: the pool is the same data for
every run seed).

Geometry: an encoder that adapts to its inputs (``medformer``, ``adapts_inputs = True``) takes every source as it
is, one input adapter per signature (channels × 2D/3D); any other encoder takes one geometry, so 2D sources are
fitted to the target's (RGB → gray by ITU-R BT.601 luma, gray → RGB by repetition, resized to the target's size
with area averaging when shrinking, bilinear when enlarging) and a pool that mixes 2D and 3D is refused before
any run starts. Every conversion is stated in the report's data notes.

Sampling (:class:`~medrobust.engine.train.Mixture`): each pre-training step draws one source with probability
weight / Σ weights and takes that source's next batch (homogeneous in shape), seeded by the run seed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from medrobust import registry
from medrobust.config import ConfigError, PoolSource, StudyConfig
from medrobust.engine.train import Mixture
from medrobust.methods.contract import MethodInfo, SourceFacts
from medrobust.models.layers import image_stats
from medrobust.study.prepare import PreparedData

_LUMA = (0.299, 0.587, 0.114)


@dataclass(frozen=True)
class PoolPart:
    """One loaded source of a pool: its facts, its (fitted) images, labels (``None``: unlabeled, the target) and
    report tokens (``None``: no reports)."""

    facts: SourceFacts
    spec: PoolSource
    images: np.ndarray  # [n, C, *spatial] uint8 or float32 in [0, 1]
    labels: np.ndarray | None
    tokens: np.ndarray | None
    sites: np.ndarray


@dataclass(frozen=True)
class Pool:
    name: str
    parts: tuple[PoolPart, ...]
    notes: tuple[str, ...] = field(default=())

    @property
    def facts(self) -> tuple[SourceFacts, ...]:
        return tuple(p.facts for p in self.parts)

    def describe(self) -> str:
        """``diverse: target (1×28×28, 1800 images), synthetic(modality=fundus) (3×28×28, 1800 images, labels
        retinopathy, reports)``."""
        def one(p: PoolPart) -> str:
            extras = [f"{len(p.images)} images"] + ([f"labels {' vs '.join(p.facts.task.label_names)}"]
                                                    if p.facts.task is not None else []) \
                + (["reports"] if p.tokens is not None else []) + ([f"weight {p.spec.weight:g}"]
                                                                   if p.spec.weight != 1 else [])
            return f"{p.facts.name} ({'×'.join(map(str, p.images.shape[1:]))}, {', '.join(extras)})"
        return f"{self.name}: " + "; ".join(one(p) for p in self.parts)

    def _usable(self, info: MethodInfo, target_pairs: np.ndarray | None) -> list[tuple[int, np.ndarray]]:
        """``(source index, image indices)`` that a method with ``info`` pre-trains on: image+report methods the
        sources with reports (the target's at ``target_pairs``, the run's seeded pair subset); supervised
        pre-training the labeled images of the labeled sources; every other method every image."""
        out = []
        for i, p in enumerate(self.parts):
            if (info.uses_text and p.tokens is None) or (info.role == "supervised-pretraining" and p.labels is None):
                continue
            index = np.arange(len(p.images))
            if info.uses_text and p.spec.is_target and target_pairs is not None:
                index = target_pairs
            if info.role == "supervised-pretraining":
                index = index[_labeled(p.labels[index])]
            if len(index):
                out.append((i, index))
        if not out:
            need = "image-report pairs" if info.uses_text else "labels"
            raise ConfigError(f"pool {self.name!r} has no source with {need}, which {info.display_name} pre-trains on "
                              f"({self.describe()})")
        return out

    def check(self, info: MethodInfo) -> None:
        """Raise :class:`ConfigError` when the pool has nothing a method with ``info`` can pre-train on."""
        self._usable(info, None)

    def mixture(self, info: MethodInfo, target_pairs: np.ndarray | None = None) -> Mixture:
        """What a method pre-trains on (:meth:`_usable`), as a :class:`Mixture` of tensors with ``image`` and
        ``site``, plus ``tokens`` (image+report methods) or ``label`` (supervised pre-training)."""
        parts, weights, ids = [], [], []
        for i, index in self._usable(info, target_pairs):
            p = self.parts[i]
            part = {"image": torch.as_tensor(p.images[index]), "site": torch.as_tensor(p.sites[index]).long()}
            if info.uses_text:
                part["tokens"] = torch.as_tensor(p.tokens[index])
            if info.role == "supervised-pretraining":
                part["label"] = torch.as_tensor(p.labels[index])
            parts.append(part)
            weights.append(p.spec.weight)
            ids.append(i)
        return Mixture(tuple(parts), tuple(weights), tuple(ids))


def _labeled(labels: np.ndarray) -> np.ndarray:
    return labels != -1 if labels.ndim == 1 else (labels != -1).all(axis=1)


def pool_for(cfg: StudyConfig, name: str, data: PreparedData) -> Pool:
    """Pool ``name`` of ``cfg`` loaded once per study (kept in ``data.cache``)."""
    key = ("pool", name)
    if key not in data.cache:
        data.cache[key] = load_pool(cfg, name, data)
    return data.cache[key]


def load_pool(cfg: StudyConfig, name: str, data: PreparedData) -> Pool:
    """Load every source of pool ``name``; errors name the pool and the source's index."""
    encoder_cls = registry.get("encoder", cfg.image_encoder.name)
    adapts = bool(getattr(encoder_cls, "adapts_inputs", False))
    target_shape = tuple(data.dataset.image_shape)
    loaded = [_load_source(cfg, name, i, spec, data) for i, spec in enumerate(cfg.pretrain.pools[name])]
    raw = [part for part, _ in loaded]
    if not adapts:
        dims = {(p.facts.name, len(p.images.shape) - 2) for p in raw}
        wrong = [(n, d) for n, d in dims if d != len(target_shape) - 1]
        if wrong:
            shapes = "; ".join(f"{p.facts.name}: {'×'.join(map(str, p.images.shape[1:]))}" for p in raw)
            raise ConfigError(f"image_encoder {cfg.image_encoder.name!r} takes one input geometry, but pool {name!r} "
                              f"mixes {len(target_shape) - 1}D and {wrong[0][1]}D images ({shapes}; target "
                              f"{'×'.join(map(str, target_shape))}); use image_encoder: {{name: medformer}}, which has "
                              "an input adapter per signature, or drop the conflicting sources")
    parts = []
    notes = [f"pool {name}: {part.facts.name}: {note}" for part, read in loaded for note in read]
    for p in raw:
        if not adapts and tuple(p.images.shape[1:]) != target_shape:
            before = "×".join(map(str, p.images.shape[1:]))
            p = _fit(p, target_shape)
            notes.append(f"pool {name}: {p.facts.name} images fitted from {before} to the target's "
                         f"{'×'.join(map(str, target_shape))} for the {cfg.image_encoder.name} encoder (one input "
                         "geometry; medformer takes each source as it is)")
        parts.append(p)
    return Pool(name, tuple(parts), tuple(notes))


def _load_source(cfg: StudyConfig, pool: str, index: int, spec: PoolSource, data: PreparedData
                 ) -> tuple[PoolPart, tuple[str, ...]]:
    """One source as a :class:`PoolPart`, with what reading it did (the source's own notes)."""
    where = f"pretrain.pools.{pool}[{index}] ({spec.describe()})"
    if spec.is_target:
        split = data.train
        images, labels, texts, sites = split.images, None, None, split.sites
        tokens = data.reports.train if data.has_text else None
        name = f"target ({data.dataset.name})"
        task, read = None, ()
    else:
        source = registry.get("data", spec.source)
        try:
            dataset = source(source.Params.model_validate(spec.params))
        except (ValueError, OSError) as exc:  # DataError is a ValueError
            raise ConfigError(f"{where} could not be loaded: {exc}") from None
        split = dataset.train
        images, sites, texts = split.images, split.sites, split.texts
        labels = split.labels if split.labeled.any() else None
        task = dataset.task if labels is not None else None
        tokens = None
        name = spec.describe()
        read = tuple(dataset.notes)
    if spec.max_images is not None and spec.max_images < len(images):
        pick = np.sort(np.random.default_rng([index, 0x9001]).choice(len(images), spec.max_images, replace=False))
        images, sites = images[pick], sites[pick]
        labels = None if labels is None else labels[pick]
        texts = None if texts is None else [texts[i] for i in pick]
        tokens = None if tokens is None else tokens[pick]
    if texts is not None and data.tokenizer is not None:
        tokens = data.tokenizer.encode(texts)
    if not len(images):
        raise ConfigError(f"{where} has no training images")
    mean, std = image_stats(images)
    facts = SourceFacts(name, tuple(images.shape[1:]), tuple(mean), tuple(std), task, tokens is not None)
    return PoolPart(facts, spec, images, labels, tokens, np.asarray(sites, dtype=np.int64)), read


def _fit(p: PoolPart, shape: tuple[int, ...]) -> PoolPart:
    """``p``'s images with ``shape``'s channels and size (see the module docs), as uint8."""
    c_to, size = shape[0], shape[1:]
    lift = (1,) * len(size)
    x = torch.as_tensor(p.images)
    x = x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()
    c = x.shape[1]
    if c != c_to:
        if c == 3 and c_to == 1:
            x = (x * torch.tensor(_LUMA).view(1, 3, *lift)).sum(dim=1, keepdim=True)
        elif c == 1:
            x = x.expand(-1, c_to, *x.shape[2:])
        else:
            raise ConfigError(f"{p.facts.name}: cannot convert {c}-channel images to the target's {c_to} channels; "
                              "use image_encoder: {name: medformer}")
    if tuple(x.shape[2:]) != tuple(size):
        shrink = all(a >= b for a, b in zip(x.shape[2:], size))
        x = F.interpolate(x, size=tuple(size), mode="area") if shrink else F.interpolate(
            x, size=tuple(size), mode="bilinear" if len(size) == 2 else "trilinear", align_corners=False)
    images = (x.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    mean, std = image_stats(images)
    facts = SourceFacts(p.facts.name, tuple(images.shape[1:]), tuple(mean), tuple(std), p.facts.task, p.facts.has_text)
    return PoolPart(facts, p.spec, images, p.labels, p.tokens, p.sites)
