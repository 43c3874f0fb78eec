"""Adversarial evaluation of image attacks: per-attack curves over ε, the AutoAttack-style worst case, and
the inputs of the self-checks.

- **Curves**: each attack of ``evaluation.attacks`` runs on every attacked example at every ε; these curves
  feed the monotonicity and ε=0 checks.
- **Worst case** (Croce & Hein 2020, AutoAttack): starting from the per-example minimum over the curves,
  the attacks of ``evaluation.worst_case`` run in order, each only on the examples still (partly) correct.
  A point found at a smaller ε lies in every larger ball, so the worst case at ε also starts from the
  worst case at the previous ε. The state is saved after every (ε, attack) step, so an interrupted
  evaluation of the same model resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from medrobust import registry
from medrobust.attacks.base import loss_and_grad
from medrobust.data.base import Task, to_unit
from medrobust.evaluation.metrics import per_example_accuracy
from medrobust.fileio import atomic_write_text
from medrobust.models.heads import Classifier, FixedReport
from medrobust.schema import Component

PRESETS: dict[str, list[Component]] = {
    # AutoAttack's standard sequence (APGD-CE, APGD-T/DLR, Square) with budgets sized for a 2-core CPU study
    "standard": [Component(name="apgd-ce", params={"steps": 10}), Component(name="apgd-dlr", params={"steps": 10}),
                 Component(name="square", params={"n_queries": 100})],
    # the same sequence with the published AutoAttack budgets (Croce & Hein 2020): for GPU studies
    "autoattack": [Component(name="apgd-ce", params={"steps": 100}),
                   Component(name="apgd-dlr", params={"steps": 100, "n_target_classes": 9}),
                   Component(name="square", params={"n_queries": 5000})],
}

#: the fixed attacks of the evaluation itself (not configurable, so every study measures the same thing):
#: PGD-10 for the EOT comparison, the large-ε self-check and the retrieval / VQA conditions; a gradient-free
#: Square for the large-ε check of image+text models
REFERENCE_PGD = Component(name="pgd", params={"steps": 10})
CHECK_SQUARE = Component(name="square", params={"n_queries": 100})


def eps_key(eps: float) -> str:
    """The string key of an ε (×1/255) in metric dicts: ``0.5 -> "0.5"``, ``2.0 -> "2"``."""
    return f"{eps:g}"


def to_pixels(eps_255: float) -> float:
    """The config's 1/255 units to the [0, 1] pixel space: ``2 -> 2/255``.

    The one place the conversion happens: callers that read ε from the config convert once; everything
    below them (attacks, :meth:`AttackTarget.accuracy_under`, :func:`random_noise_accuracy`) takes pixels.
    """
    return eps_255 / 255.0


def build_attack(spec: Component):
    cls = registry.get("attack", spec.name)
    return cls(cls.Params(**spec.params))


class WithoutEOT(nn.Module):
    """A randomised model presented as deterministic: attacks then use one noisy gradient per step (no EOT).

    Only for showing what a naive evaluation would report next to the EOT one; never the headline number.
    """

    randomized = False
    non_differentiable = False

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.uses_text = getattr(model, "uses_text", False)

    def forward(self, *args, **kwargs):
        return self.model(*args, **kwargs)


@dataclass
class AttackTarget:
    """The attacked examples and the image -> logits function for any batch of them.

    For image+report models the report features are fixed (clean report) and only the image is attacked.
    """

    model: Classifier
    images: np.ndarray  # [n, C, *spatial] uint8/float
    labels: np.ndarray  # [n] or [n, L]
    task: Task
    text_feats: torch.Tensor | None = None  # [n, D]
    batch_size: int = 256

    def function(self, idx: np.ndarray) -> nn.Module:
        if self.text_feats is None:
            return self.model
        return FixedReport(self.model, text_features=self.text_feats[torch.as_tensor(idx)])

    def batches(self, index: np.ndarray):
        for start in range(0, len(index), self.batch_size):
            idx = index[start : start + self.batch_size]
            yield idx, to_unit(self.images[idx]), torch.as_tensor(self.labels[idx]), self.function(idx)

    def accuracy_under(self, attack, eps: float, generator: torch.Generator, index: np.ndarray | None = None
                       ) -> torch.Tensor:
        """Per-example accuracy ``[len(index)]`` after ``attack`` at ``eps`` (pixel units, :func:`to_pixels`)."""
        index = np.arange(len(self.labels)) if index is None else index
        out = []
        for _idx, x, y, fn in self.batches(index):
            x_adv = attack(fn, x, y, eps=eps, task=self.task, generator=generator)
            with torch.no_grad():
                out.append(per_example_accuracy(fn(x_adv), y, self.task))
        return torch.cat(out) if out else torch.zeros(0)


def curves(target: AttackTarget, attacks: list[Component], epsilons: list[float], seed: int
           ) -> dict[str, dict[float, torch.Tensor]]:
    """``name -> ε -> [n]`` per-example accuracy of each attack run independently on every example.

    ``epsilons`` are the config's grid in 1/255 (the keys of the result); attacks get :func:`to_pixels` of them.
    """
    results: dict[str, dict[float, torch.Tensor]] = {}
    for spec in attacks:
        attack, generator = build_attack(spec), torch.Generator().manual_seed(seed)
        results[spec.name] = {eps: target.accuracy_under(attack, to_pixels(eps), generator) for eps in epsilons}
    return results


def model_digest(model: nn.Module) -> str:
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


class SequenceState:
    """Progress of a worst-case evaluation, saved atomically after every step; tied to the model's weights."""

    def __init__(self, path: str | Path | None, digest: str):
        self.path, self.digest, self.done = (Path(path) if path else None), digest, {}
        if self.path is not None and self.path.exists():
            try:
                saved = json.loads(self.path.read_text())
                if saved.get("model") == digest:
                    self.done = {k: torch.tensor(v) for k, v in saved["done"].items()}
            except (ValueError, KeyError):
                self.done = {}  # unreadable state: start the evaluation over (never trust half a file)

    def get(self, key: str) -> torch.Tensor | None:
        return self.done.get(key)

    def put(self, key: str, acc: torch.Tensor) -> None:
        self.done[key] = acc.clone()
        if self.path is not None:
            body = {"model": self.digest, "done": {k: v.tolist() for k, v in self.done.items()}}
            atomic_write_text(self.path, json.dumps(body))


def worst_case(target: AttackTarget, per_attack: dict[str, dict[float, torch.Tensor]], epsilons: list[float],
               sequence: list[Component], seed: int, state: SequenceState, run_at: list[float] | None = None
               ) -> tuple[dict[float, torch.Tensor], dict]:
    """Per-example worst case over the curves and the sequence; also how many examples each attack broke.

    ``epsilons`` and ``run_at`` are in the config's 1/255 units (the keys of ``per_attack`` and of the result).
    ``run_at``: the ε at which the sequence runs (None = all); at the others the worst case is the minimum
    over the curves and the worst case at the next smaller ε (ball nesting).
    """
    worst: dict[float, torch.Tensor] = {}
    labels = [s.name if [t.name for t in sequence].count(s.name) == 1 else f"{s.name}[{i}]" for i, s in enumerate(sequence)]
    broke: dict[str, dict[str, int]] = {label: {} for label in labels}
    carry = None
    for eps in epsilons:
        current = torch.stack([by_eps[eps] for by_eps in per_attack.values()]).min(dim=0).values
        if carry is not None:
            current = torch.minimum(current, carry)  # the smaller ball's adversarial points are in this ball
        for spec, label in zip(sequence if run_at is None or eps in run_at else [], labels):
            key = f"{eps_key(eps)}|{label}"
            saved = state.get(key)
            if saved is not None:
                broke[label][eps_key(eps)] = int((saved < current).sum())
                current = saved
                continue
            remaining = np.flatnonzero((current > 0).numpy())
            before = current.clone()
            if eps > 0 and len(remaining):
                acc = target.accuracy_under(build_attack(spec), to_pixels(eps), torch.Generator().manual_seed(seed),
                                            remaining)
                current[remaining] = torch.minimum(current[remaining], acc)
            broke[label][eps_key(eps)] = int((current < before).sum())
            state.put(key, current)
        worst[eps] = current
        carry = current
    return worst, broke


def gradient_norms(target: AttackTarget) -> torch.Tensor:
    """``[n]`` L2 norm of the input gradient of the loss at the clean attacked examples."""
    norms = []
    for _idx, x, y, fn in target.batches(np.arange(len(target.labels))):
        fn.eval()
        _, grad = loss_and_grad(fn, x, y, target.task)
        norms.append(grad.flatten(1).norm(dim=1))
    return torch.cat(norms)


def random_noise_accuracy(target: AttackTarget, eps: float, seed: int) -> torch.Tensor:
    """``[n]`` accuracy under random ±ε sign noise (the same L∞ size as the attack), clipped to [0, 1].

    ``eps`` in [0, 1] pixel units (:func:`to_pixels`).
    """
    g = torch.Generator().manual_seed(seed)
    out = []
    for _idx, x, y, fn in target.batches(np.arange(len(target.labels))):
        noise = torch.randint(0, 2, x.shape, generator=g).float() * 2 - 1
        with torch.no_grad():
            out.append(per_example_accuracy(fn((x + noise * eps).clamp(0, 1)), y, target.task))
    return torch.cat(out)
