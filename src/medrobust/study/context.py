"""One run's context and its explicit pre-training step.

:func:`pretrain` makes sure the pre-trained modules of a self-supervised arm exist as a checkpoint (trained
once per method, parameters, seed and budget; reused by every label fraction, fine-tuning mode and task).
A :class:`RunContext` then hands every downstream task (classification, retrieval, VQA) the same initial
modules: freshly built from the run seed and, for a self-supervised arm, loaded from that checkpoint — so a
run gives the same numbers whether its pre-training ran just now or was cached by an earlier study.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from medrobust import registry
from medrobust.config import PretrainConfig
from medrobust.engine import checkpoint, distributed
from medrobust.engine.train import FitConfig, FitResult, fit
from medrobust.methods.contract import Encoders, MethodInfo, info_of
from medrobust.models.build import InputFacts, ModelSpecs, build_encoders
from medrobust.study.pools import Pool
from medrobust.study.prepare import PreparedData
from medrobust.study.spec import RunSpec

Log = Callable[[str], None]


@dataclass(frozen=True)
class Pretrained:
    """Where a self-supervised arm's pre-trained modules are, and what it cost to get them."""

    path: Path
    seconds: float
    cached: bool


def inputs_of(data: PreparedData) -> InputFacts:
    return InputFacts(tuple(data.dataset.image_shape), data.mean, data.std,
                      data.tokenizer.vocab_size if data.has_text else None)


def _modules(info: MethodInfo, image, text, fusion, pool: Pool | None = None) -> Encoders:
    return Encoders(image, text if info.uses_text else None, fusion if info.uses_fusion else None,
                    sources=() if pool is None else pool.facts)


def pair_subset(n: int, fraction: float, seed: int) -> np.ndarray:
    """The sorted indices of the ``round(fraction · n)`` (at least 1) training images that have a report, for
    seed ``seed``: a seeded random subset (reports are not written for a label-stratified sample), drawn from
    its own stream, and nested (a smaller fraction's images lie inside a larger one's)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"pair_fraction {fraction!r} must be in (0, 1]")
    count = n if fraction >= 1 else min(n, max(1, int(np.floor(fraction * n + 0.5))))
    order = np.random.default_rng([int(seed) % 2**64, 0x9A125]).permutation(n)
    return np.sort(order[:count])


def decision_objective(method: str, with_text: bool) -> str:
    """The registered supervised objective that fine-tunes the classifier of ``method``: the method itself for a
    supervised arm; for a self-supervised arm ``supervised-multimodal`` when its classifier sees the indication
    with the image, else ``supervised`` (the image pathway, also of an image+report pre-training arm)."""
    info = info_of(registry.get("method", method))
    if not info.pretrains:
        return method
    return info.counterpart if with_text and info.uses_text else "supervised"


def pretrain(run: RunSpec, specs: ModelSpecs, data: PreparedData, budget: PretrainConfig, device: torch.device,
             ckpt_dir: Path, log: Log, pool: Pool | None = None) -> Pretrained:
    """Pre-train the modules of the pre-training arm of ``run`` into a checkpoint, unless it exists.

    An image+text method pre-trains on the pairs of :func:`pair_subset` (``budget.pair_fraction`` of the
    training images, seeded by the run seed); an image-only method on every training image. With a ``pool``
    (the arm's ``pool``), on the pool's sources instead (:meth:`Pool.mixture`).
    """
    cls = registry.get("method", run.method.name)
    info = info_of(cls)
    where = "" if pool is None else f"@{pool.name}"
    path = ckpt_dir / f"{run.method.name}{where}-seed{run.seed}-{run.pretrain_key}.pt"
    if path.exists():
        return Pretrained(path, 0.0, True)
    sources = () if pool is None else pool.facts
    encoders = _modules(info, *build_encoders(specs, inputs_of(data), run.seed, pretraining_fusion=info.uses_fusion,
                                              sources=sources), pool)
    method = cls(encoders, cls.Params.model_validate(run.method.params), seed=run.seed)
    index = pair_subset(len(data.train), budget.pair_fraction, run.seed) if info.uses_text else None
    if pool is None:
        tensors = data.train_tensors(index, labels=False, text="report" if info.uses_text else None, sites=True)
        log(f"pre-training {run.method.label} (seed {run.seed}) on {len(data.train) if index is None else len(index)} "
            f"training {'image-report pairs' if info.uses_text else 'images'}, {budget.steps} steps")
    else:
        tensors = pool.mixture(info, index)
        log(f"pre-training {run.method.label} (seed {run.seed}) on pool {pool.describe()}; {budget.steps} steps")
    quarter = max(1, budget.steps // 4)
    progress = lambda step, total: step % quarter == 0 and log(f"  pre-training {run.method.label}: step {step}/{total}")  # noqa: E731
    result = fit(method, tensors, budget, seed=run.seed, device=device, progress=progress)
    if distributed.is_main():
        checkpoint.save_modules(path, encoders.modules(), meta={
            "method": run.method.label, "seed": run.seed, "losses": result.losses[:: max(1, len(result.losses) // 50)]})
    distributed.barrier()
    return Pretrained(path, result.seconds, False)


@dataclass(frozen=True)
class RunContext:
    """What every downstream task of one run needs: the run, its data, its modules' specs and budgets.

    ``pretrained`` is the checkpoint of a self-supervised arm (``None``: the arm starts from a fresh
    initialisation); ``objective`` the supervised objective that fine-tunes it.
    """

    run: RunSpec
    data: PreparedData
    specs: ModelSpecs
    finetune: FitConfig
    device: torch.device
    pretrained: Pretrained | None = None
    pool: Pool | None = None  # the pool the arm pre-trained on (its encoder has that pool's input adapters)

    @property
    def info(self) -> MethodInfo:
        return info_of(registry.get("method", self.run.method.name))

    @property
    def objective(self) -> type:
        """The class of the classifier's fine-tuning objective (:func:`decision_objective`)."""
        return registry.get("method", decision_objective(self.run.method.name, self.run.method.decides_with_text))

    @property
    def uses_text(self) -> bool:
        """Whether the classifier sees text (the indication) with the image."""
        return info_of(self.objective).uses_text

    def modules(self, text: bool | None = None) -> tuple[nn.Module, nn.Module | None, nn.Module | None]:
        """Fresh ``(image, text, fusion)`` for one task: built from the run seed, loaded from the pre-trained
        checkpoint. ``text``: whether the task reads text (default: whether the classifier does); text and
        fusion only then, fusion only when the study fuses downstream."""
        info = self.info
        text = self.uses_text if text is None else text
        image, text_enc, fusion = build_encoders(self.specs, inputs_of(self.data), self.run.seed,
                                                 pretraining_fusion=info.uses_fusion,
                                                 sources=() if self.pool is None else self.pool.facts)
        if self.pretrained is not None:
            checkpoint.load_modules(self.pretrained.path, _modules(info, image, text_enc, fusion).modules())
        if self.specs.fusion is None:
            fusion = None  # late fusion downstream (a pre-training fusion module is not carried over)
        return image, (text_enc if text else None), (fusion if text else None)

    def fit(self, objective: nn.Module, tensors: dict, model, steps: int | None = None) -> FitResult:
        """Fine-tune ``objective`` on ``tensors`` (``steps``: instead of the fine-tuning budget's); a linear probe
        first freezes ``model``'s encoders."""
        if self.run.mode == "linear":
            model.freeze_encoders()
        budget = self.finetune if steps is None else self.finetune.model_copy(update={"steps": steps})
        return fit(objective, tensors, budget, seed=self.run.seed, device=self.device)


def timed(fn: Callable, *args, **kwargs) -> tuple[object, float]:
    """``(fn(*args, **kwargs), seconds)``."""
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start
