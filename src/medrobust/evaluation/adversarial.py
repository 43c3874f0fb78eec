"""Adversarial evaluation of image attacks: per-attack curves over ε, the AutoAttack-style worst case, and
the inputs of the self-checks.

- **Curves**: each attack of ``evaluation.attacks`` runs on every attacked example at every ε; these curves
  feed the monotonicity and ε=0 checks.
- **Worst case** (Croce & Hein 2020, AutoAttack): starting from the per-example minimum over the curves,
  the attacks of ``evaluation.worst_case`` run in order, each only on the examples still (partly) correct.
  A point found at a smaller ε lies in every larger ball, so the worst case at ε also starts from the
  worst case at the previous ε. The state is saved after every (ε, attack) step, so an interrupted
  evaluation of the same model resumes where it stopped.
- **Two-class tasks** (:func:`sequence_steps`): with two logits APGD-DLR's loss is the margin
  ``z_other − z_y``, and cross-entropy ``log(1 + exp(z_other − z_y))`` is an increasing function of it; APGD
  only takes sign steps and compares losses, so from the same start APGD-DLR retraces APGD-CE (bit-identical
  ``x_adv`` except where the CE saturates in float). There, each APGD-DLR of the sequence is replaced by
  APGD-CE with :data:`BINARY_RESTARTS` runs from *new* random starts (its own generator seed), which adds
  strength instead of repeating the first attack.
- **Randomised models** (``randomized = True``) are scored against their expected decision, not one noise
  draw (:func:`medrobust.evaluation.scoring.decide`): every adversarial, clean and noise point by the mean
  softmax of at least ``SCORING_DRAWS`` forward passes. With one pass per point, the per-example minimum over
  attacks and ε compounds independent draws (issue 12: a toy model with one-pass accuracy 0.65 fell to
  0.07 at ε=1e-4/255). A point the attack did not move (ε=0) keeps the score of the clean point. Deterministic
  models are scored by one pass exactly as before.
- **Budget checks**: :func:`convergence` re-runs the strongest gradient attack with double the steps and one
  more restart at the reference ε (the ``attack_converged`` check); :func:`large_eps_accuracies` measures
  what the ``large_eps_breaks`` check needs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from medrobust import registry
from medrobust.attacks.base import loss_and_grad, restrict
from medrobust.data.base import Task, to_unit
from medrobust.evaluation.checks import BREAKS_BELOW, SLACK
from medrobust.evaluation.scoring import SCORING_DRAWS, decide, scoring_draws  # noqa: F401 - SCORING_DRAWS re-exported
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
#: the large-ε check's second gradient-free look, when PGD and the 100-query Square both leave accuracy up:
#: only if this one cannot move the decisions either is that taken as bounded image influence
CHECK_SQUARE_STRONG = Component(name="square", params={"n_queries": 1000})

#: on two-class tasks APGD-DLR becomes APGD-CE with this many runs (× its own restarts) from new starts
BINARY_RESTARTS = 2
#: the gradient attacks with ``steps`` and ``restarts`` that the convergence check can reinforce
ITERATIVE_GRADIENT_ATTACKS = ("apgd-ce", "apgd-dlr", "pgd")
CONVERGENCE_SEED_OFFSET = 1000  # the reinforced attack's starts differ from every attack of the sequence


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
        self.scoring_draws = scoring_draws(model)  # the points found are still scored by the expected decision

    def forward(self, *args, **kwargs):
        return self.model(*args, **kwargs)


@dataclass
class AttackTarget:
    """The attacked examples and the image -> logits function for any batch of them.

    For image+text models the text features are fixed (clean text) and only the image is attacked;
    ``missing="report"`` attacks the image pathway alone (the text left out, the model's missing-modality path).
    """

    model: Classifier
    images: np.ndarray  # [n, C, *spatial] uint8/float
    labels: np.ndarray  # [n] or [n, L]
    task: Task
    text_feats: torch.Tensor | None = None  # [n, D]
    batch_size: int = 256
    missing: str | None = None
    _clean: torch.Tensor | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def draws(self) -> int:
        """Forward passes that score one point (:func:`scoring_draws` of the model)."""
        return scoring_draws(self.model)

    def function(self, idx: np.ndarray) -> nn.Module:
        if self.missing is not None:
            return FixedReport(self.model, missing=self.missing)
        if self.text_feats is None:
            return self.model
        return FixedReport(self.model, text_features=self.text_feats[torch.as_tensor(idx)])

    def batches(self, index: np.ndarray):
        for start in range(0, len(index), self.batch_size):
            idx = index[start : start + self.batch_size]
            yield idx, to_unit(self.images[idx]), torch.as_tensor(self.labels[idx]), self.function(idx)

    def clean_accuracy(self) -> torch.Tensor:
        """``[n]`` accuracy of the (expected, :func:`decide`) decision at the clean images; computed once."""
        if self._clean is None:
            parts = [decide(fn, x, y, self.task, self.draws) for _idx, x, y, fn in self.batches(np.arange(len(self.labels)))]
            self._clean = torch.cat(parts) if parts else torch.zeros(0)
        return self._clean

    def accuracy_under(self, attack, eps: float, generator: torch.Generator, index: np.ndarray | None = None
                       ) -> torch.Tensor:
        """Per-example accuracy ``[len(index)]`` after ``attack`` at ``eps`` (pixel units, :func:`to_pixels`).

        Randomised models: scored by the expected decision; an example the attack left unchanged keeps its
        clean score (the same point, not a new noise draw).
        """
        index = np.arange(len(self.labels)) if index is None else index
        out = []
        for idx, x, y, fn in self.batches(index):
            x_adv = attack(fn, x, y, eps=eps, task=self.task, generator=generator)
            if self.draws == 1:
                out.append(decide(fn, x_adv, y, self.task))
                continue
            acc = self.clean_accuracy()[torch.as_tensor(idx)].clone()  # [b]
            moved = (x_adv != x).flatten(1).any(dim=1).nonzero()[:, 0]
            if len(moved):
                acc[moved] = decide(restrict(fn, moved), x_adv[moved], y[moved], self.task, self.draws)
            out.append(acc)
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


@dataclass(frozen=True)
class Step:
    """One attack of the worst-case sequence as it runs: its label (a key of ``broke`` and of the saved
    state), the attack, and the offset of its generator seed from the evaluation seed."""

    label: str
    spec: Component
    seed_offset: int = 0


def two_class(task: Task) -> bool:
    """Single-label with two logits: where APGD-DLR retraces APGD-CE (module doc)."""
    return not task.multilabel and task.n_outputs == 2


def sequence_steps(sequence: list[Component], task: Task) -> list[Step]:
    """The sequence as it runs on ``task``: on two-class tasks each APGD-DLR becomes APGD-CE with
    :data:`BINARY_RESTARTS` × its restarts runs from new random starts (seed offset ``i + 1`` for position
    ``i``), labelled ``apgd-ce-restarts``; other attacks run as given with the evaluation seed. Labels are
    the names, with ``[i]`` appended where a name repeats."""
    specs, names, offsets = [], [], []
    for i, spec in enumerate(sequence):
        if spec.name == "apgd-dlr" and two_class(task):
            params = {k: v for k, v in spec.params.items() if k != "n_target_classes"}
            params["restarts"] = BINARY_RESTARTS * int(params.get("restarts", 1))
            specs.append(Component(name="apgd-ce", params=params))
            names.append("apgd-ce-restarts")
            offsets.append(i + 1)
        else:
            specs.append(spec)
            names.append(spec.name)
            offsets.append(0)
    return [Step(name if names.count(name) == 1 else f"{name}[{i}]", spec, offset)
            for i, (name, spec, offset) in enumerate(zip(names, specs, offsets))]


def worst_case(target: AttackTarget, per_attack: dict[str, dict[float, torch.Tensor]], epsilons: list[float],
               sequence: list[Component], seed: int, state: SequenceState, run_at: list[float] | None = None,
               progress: Callable[[str], None] | None = None) -> tuple[dict[float, torch.Tensor], dict]:
    """Per-example worst case over the curves and the sequence; also how many examples each attack broke.

    ``epsilons`` and ``run_at`` are in the config's 1/255 units (the keys of ``per_attack`` and of the result).
    ``run_at``: the ε at which the sequence runs (None = all); at the others the worst case is the minimum
    over the curves and the worst case at the next smaller ε (ball nesting). The sequence runs as
    :func:`sequence_steps` makes it for the target's task; ``broke`` is keyed by the steps' labels.
    ``progress`` is told each step as it starts (``"worst-case sequence 2/6: apgd-ce at ε 2/255, 71 examples"``).
    """
    worst: dict[float, torch.Tensor] = {}
    steps = sequence_steps(sequence, target.task)
    total = len(steps) * sum(run_at is None or e in run_at for e in epsilons if e > 0)
    done = 0
    broke: dict[str, dict[str, int]] = {step.label: {} for step in steps}
    carry = None
    for eps in epsilons:
        current = torch.stack([by_eps[eps] for by_eps in per_attack.values()]).min(dim=0).values
        if carry is not None:
            current = torch.minimum(current, carry)  # the smaller ball's adversarial points are in this ball
        for step in steps if run_at is None or eps in run_at else []:
            done += eps > 0
            key = f"{eps_key(eps)}|{step.label}"
            saved = state.get(key)
            if saved is not None:
                broke[step.label][eps_key(eps)] = int((saved < current).sum())
                current = saved
                continue
            remaining = np.flatnonzero((current > 0).numpy())
            before = current.clone()
            if eps > 0 and len(remaining):
                if progress is not None:
                    progress(f"worst-case sequence {done}/{total}: {step.label} at ε {eps_key(eps)}/255, "
                             f"{len(remaining)} examples")
                acc = target.accuracy_under(build_attack(step.spec), to_pixels(eps),
                                            torch.Generator().manual_seed(seed + step.seed_offset), remaining)
                current[remaining] = torch.minimum(current[remaining], acc)
            broke[step.label][eps_key(eps)] = int((current < before).sum())
            state.put(key, current)
        worst[eps] = current
        carry = current
    return worst, broke


def _budget(spec: Component) -> tuple[int, int]:
    p = registry.get("attack", spec.name).Params(**spec.params)
    return int(p.steps), int(p.restarts)


def strongest_gradient_attack(steps: list[Step], curves: list[Component]) -> Component | None:
    """The attack the convergence check reinforces: the sequence's first APGD-CE (AutoAttack's lead attack),
    else the iterative gradient attack (:data:`ITERATIVE_GRADIENT_ATTACKS`) of the sequence, then of the
    curves, with the largest steps × restarts; None when there is none (FGSM only)."""
    specs = [s.spec for s in steps]
    first_ce = next((s for s in specs if s.name == "apgd-ce"), None)
    if first_ce is not None:
        return first_ce
    candidates = [s for s in specs + list(curves) if s.name in ITERATIVE_GRADIENT_ATTACKS]
    return max(candidates, key=lambda s: _budget(s)[0] * _budget(s)[1], default=None)


def reinforced(spec: Component) -> Component:
    """``spec`` with double the steps and one more restart."""
    steps, restarts = _budget(spec)
    return Component(name=spec.name, params={**spec.params, "steps": 2 * steps, "restarts": restarts + 1})


def describe(spec: Component) -> str:
    """``"apgd-ce (20 steps × 2 runs)"``."""
    steps, restarts = _budget(spec)
    return f"{spec.name} ({steps} steps × {restarts} run{'s' if restarts > 1 else ''})"


def convergence(target: AttackTarget, worst: torch.Tensor, spec: Component, eps: float, seed: int) -> torch.Tensor:
    """``[n]`` the worst case ``worst`` at ``eps`` (1/255) after :func:`reinforced` ``spec`` also attacks the
    examples it leaves (partly) correct, from new random starts (seed + :data:`CONVERGENCE_SEED_OFFSET`).

    Cost: one ε; ``2·steps·(restarts + 1)`` forward+backward passes (× EOT samples) per example still
    correct — examples already broken cannot drop further. For the ``standard`` preset's APGD-CE (10 steps,
    1 run): 40 per robust example, about four times APGD-CE's share of the sequence at that ε.
    """
    after = worst.clone()
    remaining = np.flatnonzero((worst > 0).numpy())
    if eps > 0 and len(remaining):
        acc = target.accuracy_under(build_attack(reinforced(spec)), to_pixels(eps),
                                    torch.Generator().manual_seed(seed + CONVERGENCE_SEED_OFFSET), remaining)
        after[remaining] = torch.minimum(after[remaining], acc)
    return after


def large_eps_accuracies(target: AttackTarget, eps: float, seed: int, gradient_free: bool
                         ) -> tuple[float, float | None, float | None]:
    """What the ``large_eps_breaks`` check reads at its ε (1/255): ``(pgd, square, square_strong)``.

    ``pgd``: accuracy under :data:`REFERENCE_PGD`. With ``gradient_free`` (the image pathway of an image+text
    model) and PGD not near 0: ``square``, accuracy under :data:`CHECK_SQUARE` (100 queries); and when that
    neither breaks the model nor beats PGD, ``square_strong``: accuracy once :data:`CHECK_SQUARE_STRONG`
    (1000 queries) also attacks the examples PGD left correct (per-example worst of the two). Otherwise None.
    """
    g = lambda: torch.Generator().manual_seed(seed)  # noqa: E731
    big = target.accuracy_under(build_attack(REFERENCE_PGD), to_pixels(eps), g())
    acc, free, strong = float(big.mean()), None, None
    if not gradient_free or acc < BREAKS_BELOW:
        return acc, free, strong
    free = float(target.accuracy_under(build_attack(CHECK_SQUARE), to_pixels(eps), g()).mean())
    if free >= BREAKS_BELOW and acc <= free + SLACK:
        left = big.clone()
        remaining = np.flatnonzero((big > 0).numpy())
        if len(remaining):
            moved = target.accuracy_under(build_attack(CHECK_SQUARE_STRONG), to_pixels(eps), g(), remaining)
            left[remaining] = torch.minimum(left[remaining], moved)
        strong = float(left.mean())
    return acc, free, strong


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
        out.append(decide(fn, (x + noise * eps).clamp(0, 1), y, target.task, target.draws))
    return torch.cat(out)
