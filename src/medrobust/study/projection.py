"""What a run will cost, before it starts: the passes of each phase × the measured cost of one pass.

The evaluation's work is known from the config and the data: attacked examples × ε × attack steps, corrupted
images × corruptions × severities, fine-tuning steps × batch. A PGD step, a forward and a fine-tuning step (a
training view + forward+backward + AdamW) of a fresh image classifier of the study are timed once on the data, and
each corruption once on a few test images; the projection multiplies. The worst-case sequence and the convergence
check only attack what is still correct, so their projection is an upper bound (every attacked example still
correct), said with "≤". Measured against real runs the phases come within about 2× (RESULTS.md).
When a run's projection exceeds ``run_budget_min`` the study says which keys lower which phase; it never cuts
work by itself.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from medrobust import registry
from medrobust.config import StudyConfig
from medrobust.corruptions.base import apply
from medrobust.data.base import to_unit
from medrobust.evaluation.adversarial import reinforced, sequence_steps, strongest_gradient_attack
from medrobust.models.build import build_encoders, classifier_for
from medrobust.schema import Component
from medrobust.study.context import inputs_of
from medrobust.study.prepare import PreparedData


@dataclass(frozen=True)
class Phase:
    name: str
    seconds: float
    upper_bound: bool  # the phase attacks only what is still correct: at most this
    keys: str  # the config keys that lower it

    def describe(self) -> str:
        return f"{self.name} {'≤' if self.upper_bound else '≈'} {_duration(self.seconds)}"


def _duration(s: float) -> str:
    return f"{s:.0f} s" if s < 90 else f"{s / 60:.1f} min"


def passes(spec: Component) -> tuple[float, float]:
    """``(forward+backward, forward)`` passes per example of one attack at one ε."""
    p = registry.get("attack", spec.name).Params(**spec.params)
    restarts = int(getattr(p, "restarts", 1))
    if hasattr(p, "n_queries"):
        return 0.0, float(p.n_queries * restarts)
    steps = int(getattr(p, "steps", 1))
    return float(steps * restarts), float(restarts)


def unit_costs(cfg: StudyConfig, data: PreparedData, batch: int = 32) -> tuple[float, float, float]:
    """Seconds per example of one attack step (a PGD step: forward, input gradient, projection), of one forward,
    and of one fine-tuning step (a training view and a forward+backward with weight gradients), measured on a
    fresh image classifier of the study on ``batch`` test images (the faster of two timings after a warm-up)."""
    from medrobust.attacks.pgd import PGD, PGDParams
    from medrobust.data.views import ViewParams, random_view
    from medrobust.models.build import ModelSpecs

    image, _, _ = build_encoders(ModelSpecs(cfg.image_encoder, cfg.text_encoder), inputs_of(data), seed=0)
    model = classifier_for(image, None, None, data.dataset.task.n_outputs).eval()
    x = to_unit(torch.as_tensor(data.test.images[:batch]))
    y = torch.as_tensor(data.test.labels[: len(x)])
    pgd, g = PGD(PGDParams(steps=3)), torch.Generator().manual_seed(0)

    def attack() -> None:
        pgd(model, x, y, eps=2 / 255, task=data.dataset.task)

    def forward() -> None:
        with torch.no_grad():
            model(x)

    xt = to_unit(torch.as_tensor(data.train.images[: cfg.finetune.batch_size]))  # a fine-tuning batch
    optimizer = torch.optim.AdamW(model.parameters())

    def train() -> None:
        optimizer.zero_grad()
        model(random_view(xt, ViewParams(), g)).logsumexp(1).sum().backward()
        optimizer.step()

    out = []
    for fn, passes, n in ((attack, 3, len(x)), (forward, 1, len(x)), (train, 1, len(xt))):
        fn()
        times = []
        for _ in range(2):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        out.append(min(times) / passes / n)
    return out[0], out[1], out[2]


def corruption_cost(cfg: StudyConfig, data: PreparedData, n: int = 32) -> float:
    """Seconds per test image of applying every corruption of the study once (severity 3)."""
    x = to_unit(torch.as_tensor(data.test.images[:n]))
    start = time.perf_counter()
    for name in cfg.evaluation.corruptions:
        apply(name, x, 3, torch.Generator().manual_seed(0))
    return (time.perf_counter() - start) / len(x)


def project(cfg: StudyConfig, data: PreparedData, fb: float, f: float, corrupt: float,
            train: float | None = None) -> list[Phase]:
    """The phases of one image-classifier run (fine-tuning and evaluation) at unit costs ``fb`` (an attack step),
    ``f`` (a forward), ``train`` (a fine-tuning step; default ``fb``), each in s per example, and ``corrupt`` (s per
    image for all corruptions once); pre-training is projected per pre-training (:func:`pretrain_seconds`)."""
    train = fb if train is None else train
    e, task = cfg.evaluation, data.dataset.task
    n_adv = min(e.max_adversarial, len(data.test))
    eps = [x for x in e.epsilons if x > 0]
    run_at = [x for x in (e.worst_case_epsilons if e.worst_case_epsilons is not None else e.epsilons) if x > 0]
    cost = lambda p: p[0] * fb + p[1] * f  # noqa: E731
    curves = n_adv * len(eps) * sum(cost(passes(a)) for a in e.attacks)
    steps = sequence_steps(e.sequence(), task)
    worst = n_adv * len(run_at) * sum(cost(passes(s.spec)) for s in steps)
    strongest = strongest_gradient_attack(steps, e.attacks)
    checks = n_adv * (cost(passes(Component(name="pgd", params={"steps": 10}))) + fb + f)  # large ε, grads, noise
    if strongest is not None:
        checks += n_adv * (cost(passes(strongest)) + cost(passes(reinforced(strongest))))  # APGD vs PGD, convergence
    severities = len(e.severities) * len(e.corruptions)
    corruptions = severities * len(data.test) * (f + corrupt / max(1, len(e.corruptions)))
    finetune = cfg.finetune.steps * cfg.finetune.batch_size * train
    return [Phase("fine-tuning", finetune, False, "finetune.steps, finetune.batch_size, image_encoder "
                  "(e.g. stem_stride: 2, 8× cheaper on volumes at a cost in accuracy)"),
            Phase("attack curves", curves, False, "evaluation.max_adversarial, evaluation.epsilons, "
                  "evaluation.attacks (steps)"),
            Phase("worst-case sequence", worst, True, "evaluation.worst_case_epsilons, evaluation.max_adversarial, "
                  "evaluation.worst_case"),
            Phase("attack self-checks", checks, True, "evaluation.max_adversarial"),
            Phase("corruptions", corruptions, False, "evaluation.severities, evaluation.corruptions")]


def pretrain_seconds(cfg: StudyConfig, train: float) -> float:
    """One pre-training: steps × batch × two views of each image."""
    return cfg.pretrain.steps * cfg.pretrain.batch_size * 2 * train


def projection_lines(cfg: StudyConfig, data: PreparedData, n_runs: int, n_pretrain: int) -> list[str]:
    """What the study prints before its runs: per phase, per run, for the pending runs; and, over
    ``run_budget_min``, which keys to lower."""
    fb, f, train = unit_costs(cfg, data)
    phases = project(cfg, data, fb, f, corruption_cost(cfg, data) if cfg.evaluation.corruptions else 0.0, train)
    per_run = sum(p.seconds for p in phases)
    pre = pretrain_seconds(cfg, train)
    total = n_runs * per_run + n_pretrain * pre
    unit = "volume" if len(data.dataset.image_shape) == 4 else "image"
    lines = [f"projected per run (an attack step on the image classifier takes {fb * 1e3:.2f} ms per {unit} "
             f"here): " + ", ".join(p.describe() for p in phases) + f"; ≤ {_duration(per_run)} per run"
             + (f", pre-training ≈ {_duration(pre)} each" if n_pretrain else "")
             + f"; {n_runs} runs{f' and {n_pretrain} pre-trainings' if n_pretrain else ''} ≤ {_duration(total)} "
             "(image+text arms and their tasks cost more)"]
    budget = cfg.run_budget_min
    if budget is not None and per_run > 60 * budget:
        top = sorted(phases, key=lambda p: -p.seconds)[:2]
        lines.append(f"a run is projected at up to {_duration(per_run)}, over run_budget_min {budget:g}; nothing is "
                     "cut: to fit, lower " + "; ".join(f"{p.name} ({_duration(p.seconds)}): {p.keys}" for p in top))
    return lines
