"""The one generic training loop: every method (supervised or self-supervised) trains through :func:`fit`.

A method is an ``nn.Module`` whose ``forward(batch) -> {"loss": scalar, ...}`` (DESIGN principle 3); the
loop never looks at which method it runs. An optional ``after_step()`` hook on the module (momentum/EMA
teachers) is called after each optimiser step. Data are in-memory tensors served in seeded batches.

Multi-process: under ``torchrun`` (see :mod:`medrobust.engine.distributed`) the module is wrapped in
``DistributedDataParallel`` and each global batch is split across ranks, so N processes follow the same
optimisation trajectory as one process with the same global batch.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from medrobust.data.base import to_unit
from medrobust.engine import distributed


class FitConfig(BaseModel):
    """Optimisation budget and hyper-parameters of one training stage."""

    model_config = ConfigDict(extra="forbid")
    steps: int = Field(200, ge=1, description="optimiser steps (the budget; independent of data set size)")
    batch_size: int = Field(64, ge=1, description="global batch size (split across processes under torchrun)")
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    warmup_fraction: float = Field(0.05, ge=0, lt=1, description="linear warm-up, then cosine decay to 0")
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        "fp32", description="autocast dtype of the training forward pass (fp16 adds a gradient scaler); evaluation "
        "and attacks always run in fp32, since low precision masks gradients")
    channels_last: bool = Field(False, description="channels-last memory format for the model and image batches "
                                "(channels_last for 2D, channels_last_3d for 3D); helps convolutions on GPUs")
    compile: bool = Field(False, description="train through torch.compile (compiles on the first steps)")


@dataclass
class FitResult:
    losses: list[float]
    seconds: float
    samples: int
    extras: dict[str, list[float]] = field(default_factory=dict)

    @property
    def samples_per_second(self) -> float:
        return self.samples / max(self.seconds, 1e-9)


class TrainingError(RuntimeError):
    """Training diverged (non-finite loss) or got unusable data."""


def batches(tensors: dict[str, torch.Tensor], batch_size: int, seed: int, device: torch.device
            ) -> Iterator[dict[str, torch.Tensor]]:
    """Endless seeded batches of ``tensors`` (all ``[N, ...]``); this rank's share of each global batch.

    Every epoch draws a permutation from ``seed`` and the epoch number (the same on all ranks), takes
    global batches of ``batch_size`` (dropping the incomplete last one) and gives rank ``r`` the items
    ``r, r + W, r + 2W, ...`` of each. ``"image"`` is converted to float in ``[0, 1]`` on ``device``.
    """
    n = len(next(iter(tensors.values())))
    world, rank = distributed.world_size(), distributed.rank()
    batch_size = min(batch_size, n - n % world)
    if batch_size < world or batch_size % world:
        raise TrainingError(f"global batch {batch_size} (from {n} samples) cannot be split over {world} processes")
    generator = torch.Generator().manual_seed(seed)
    epoch = 0
    while True:
        generator.manual_seed(seed * 1_000_003 + epoch)
        perm = torch.randperm(n, generator=generator)
        for start in range(0, n - batch_size + 1, batch_size):
            idx = perm[start : start + batch_size][rank::world]
            batch = {k: v[idx] for k, v in tensors.items()}
            if "image" in batch:
                batch["image"] = to_unit(batch["image"])
            if device.type == "cuda":  # page-locked host memory: the copy below overlaps with compute
                batch = {k: v.pin_memory() for k, v in batch.items()}
            yield {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        epoch += 1


@dataclass(frozen=True)
class Mixture:
    """Several tensor sets trained on together (a pre-training pool): each step draws **one** set with probability
    ``weight / sum(weights)`` and serves that set's next batch, so every batch is homogeneous in shape while the
    sets may differ (2D and 3D, 1 and 3 channels, 28 and 64 pixels). ``ids[k]`` is set ``k``'s index in the
    pool, given to the method as ``batch["source"]`` (int64 ``[N]``).

    Determinism: the sequence of sets comes from one generator seeded by the run seed — the same on every rank, so
    under DDP all ranks train on the same set at each step — and each set's batches come from :func:`batches` with
    its own seed (``seed · 1009 + id``), so they split across ranks as single-set training does.
    """

    parts: tuple[dict[str, torch.Tensor], ...]
    weights: tuple[float, ...]
    ids: tuple[int, ...]

    def __post_init__(self) -> None:
        if not self.parts or not (len(self.parts) == len(self.weights) == len(self.ids)):
            raise ValueError(f"Mixture: {len(self.parts)} parts, {len(self.weights)} weights, {len(self.ids)} ids; "
                             "expected one weight and one id per part, at least one part")
        if any(not w > 0 for w in self.weights):
            raise ValueError(f"Mixture: weights must be positive, got {list(self.weights)}")

    def order(self, seed: int, steps: int) -> list[int]:
        """The pool indices of the sets that the first ``steps`` batches come from."""
        probs = torch.tensor(self.weights, dtype=torch.float64) / sum(self.weights)
        generator = torch.Generator().manual_seed(seed * 1_000_033 + 17)
        return [self.ids[int(k)] for k in torch.multinomial(probs, steps, replacement=True, generator=generator)]

    def batches(self, batch_size: int, seed: int, device: torch.device, steps: int
                ) -> Iterator[dict[str, torch.Tensor]]:
        streams = {i: batches(part, batch_size, seed * 1009 + i, device) for part, i in zip(self.parts, self.ids)}
        for i in self.order(seed, steps):
            batch = next(streams[i])
            n = len(next(iter(batch.values())))
            yield {**batch, "source": torch.full((n,), i, dtype=torch.long, device=device)}


def memory_format(x: torch.Tensor) -> torch.memory_format:
    """The channels-last format of a 4D (2D image) or 5D (volume) tensor; contiguous for any other rank."""
    return {4: torch.channels_last, 5: torch.channels_last_3d}.get(x.dim(), torch.contiguous_format)


def to_channels_last(method: nn.Module) -> nn.Module:
    """Every 4D / 5D parameter and buffer of ``method`` in its channels-last format, in place."""
    for t in [*method.parameters(), *method.buffers()]:
        if t.dim() in (4, 5):
            t.data = t.data.contiguous(memory_format=memory_format(t))
    return method


def sync_batchnorm(method: nn.Module, device: torch.device) -> nn.Module:
    """Under DDP on GPUs, BatchNorm layers (the zoo's MoCo v2 / DINO / BYOL heads, CNN encoders) share their
    statistics across ranks as SyncBatchNorm, so N processes normalise with the global batch as one process does.
    PyTorch's SyncBatchNorm needs a GPU; on CPU (gloo) the layers keep per-rank statistics."""
    if distributed.world_size() > 1 and device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(method)
    return method


def precision_context(precision: str, device: torch.device):
    """Autocast for ``precision`` on ``device`` (a no-op for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def _schedule(cfg: FitConfig) -> Callable[[int], float]:
    warmup = max(1, int(cfg.warmup_fraction * cfg.steps))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, cfg.steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def fit(method: nn.Module, tensors: dict[str, torch.Tensor] | Mixture, cfg: FitConfig, *, seed: int,
        device: torch.device | str = "cpu", progress: Callable[[int, int], None] | None = None) -> FitResult:
    """Train ``method`` on ``tensors`` (or a :class:`Mixture` of several sets) for ``cfg.steps`` AdamW steps;
    returns per-step losses and timing.

    Only parameters with ``requires_grad`` are optimised (a linear probe freezes its encoder first).
    ``cfg.precision`` autocasts the forward pass (fp16 with a gradient scaler); the parameters stay fp32 and the
    module is left in fp32 for evaluation. Raises :class:`TrainingError` naming the step when the loss becomes NaN
    or infinite.
    """
    device = torch.device(device)
    method = sync_batchnorm(method, device)
    method.to(device).train()
    if cfg.channels_last:
        to_channels_last(method)
    params = [p for p in method.parameters() if p.requires_grad]
    if not params:
        raise TrainingError(f"{type(method).__name__} has no trainable parameters")
    model: nn.Module = method
    mixed = isinstance(tensors, Mixture)
    if distributed.world_size() > 1:  # a mixture's step uses one source's adapter and heads: the others sit unused
        model = nn.parallel.DistributedDataParallel(method, device_ids=[device] if device.type == "cuda" else None,
                                                    find_unused_parameters=mixed and len(tensors.parts) > 1)
    if cfg.compile:
        model = torch.compile(model)
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16")
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(cfg))
    after_step = getattr(method, "after_step", None)
    stream = tensors.batches(cfg.batch_size, seed, device, cfg.steps) if mixed else \
        batches(tensors, cfg.batch_size, seed, device)
    losses: list[torch.Tensor] = []
    samples = 0
    start = time.perf_counter()
    for step in range(cfg.steps):
        batch = next(stream)
        if cfg.channels_last and "image" in batch:
            batch["image"] = batch["image"].contiguous(memory_format=memory_format(batch["image"]))
        with precision_context(cfg.precision, device):
            loss = model(batch)["loss"].float()
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        if after_step is not None:
            after_step()
        losses.append(loss.detach())
        samples += len(next(iter(batch.values())))
        if progress is not None:
            progress(step + 1, cfg.steps)
        if step % 50 == 49 or step == cfg.steps - 1:
            _check_finite(losses, type(method).__name__)
    seconds = time.perf_counter() - start
    method.eval()
    return FitResult(losses=torch.stack(losses).cpu().tolist(), seconds=seconds, samples=samples * distributed.world_size())


def _check_finite(losses: list[torch.Tensor], name: str) -> None:
    recent = torch.stack(losses[-50:])
    bad = ~torch.isfinite(recent)
    if bad.any():
        step = len(losses) - len(recent) + int(bad.nonzero()[0])
        raise TrainingError(f"{name}: loss became {recent[bad][0].item()} at step {step + 1}; "
                            "lower the learning rate or check the inputs for NaN")
