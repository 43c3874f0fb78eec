"""Robustness evaluation of a trained classifier: clean, adversarial, corrupted, held-out site, no report.

Every robust number is computed on the same examples for every run of a study (the attacked subset and the
corruption noise are drawn from a fixed evaluation seed), so arms can be compared pairwise. Labels are used
only by the attacks' loss and by the metrics, never as model input (DESIGN principle 7).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator

from medrobust import registry
from medrobust.data.base import Task, to_unit
from medrobust.evaluation import checks
from medrobust.evaluation.metrics import auc, per_example_accuracy, scores
from medrobust.models.heads import Classifier, FixedReport
from medrobust.schema import Component, as_component

EVAL_SEED = 20240531  # fixed: the same attacked subset and corruption noise for every run


class EvalConfig(BaseModel):
    """What the robustness evaluation measures (the ``evaluation`` section of a study config)."""

    model_config = ConfigDict(extra="forbid")
    epsilons: list[float] = Field([0, 0.5, 1, 2, 4, 8], description="L∞ budgets in units of 1/255")
    reference_epsilon: float = Field(2, description="the ε (×1/255) the report's answer is given at")
    attacks: list[Component] = [Component(name="fgsm"), Component(name="pgd", params={"steps": 10})]
    corruptions: list[str] = ["gaussian-noise", "gaussian-blur", "contrast", "jpeg"]
    severities: list[int] = [1, 2, 3, 4, 5]
    max_adversarial: int = Field(300, ge=1, description="test examples attacked (a fixed stratified subset)")
    batch_size: int = Field(256, ge=1)

    @field_validator("epsilons")
    @classmethod
    def _epsilons(cls, v: list[float]) -> list[float]:
        if not v or any(e < 0 for e in v) or sorted(v) != v or v[0] != 0:
            raise ValueError(f"must be ascending, non-negative and start at 0 (the clean check), got {v}")
        return v

    @field_validator("attacks", mode="before")
    @classmethod
    def _attack_names(cls, v):
        return [as_component(a) for a in v] if isinstance(v, list) else v


@dataclass
class EvalData:
    """Tensors the evaluation needs; ``tokens`` only for image+report data."""

    task: Task
    test_images: np.ndarray
    test_labels: np.ndarray
    test_tokens: np.ndarray | None = None
    holdout_images: np.ndarray | None = None
    holdout_labels: np.ndarray | None = None
    holdout_tokens: np.ndarray | None = None
    empty_tokens: np.ndarray | None = None  # [1, L] tokens of an empty report


def eps_key(eps: float) -> str:
    """The string key of an ε (×1/255) in metric dicts: ``0.5 -> "0.5"``, ``2.0 -> "2"``."""
    return f"{eps:g}"


def adversarial_subset(labels: np.ndarray, size: int) -> np.ndarray:
    """A fixed, label-stratified subset of test indices (sorted), identical for every run."""
    from medrobust.data.fractions import label_subset

    if size >= len(labels):
        return np.arange(len(labels))
    return np.sort(label_subset(labels, size / len(labels), seed=EVAL_SEED))


def _text_features(model: Classifier, tokens: np.ndarray | None, batch_size: int) -> torch.Tensor | None:
    """Report features ``[N, D]`` computed once per evaluation (the reports stay fixed in image evaluations)."""
    if tokens is None or not model.uses_text:
        return None
    with torch.no_grad():
        return torch.cat([model.text_features(torch.as_tensor(tokens[s : s + batch_size]))
                          for s in range(0, len(tokens), batch_size)])


def _predict(model: Classifier, images, text_feats: torch.Tensor | None, batch_size: int,
             transform: Callable | None = None) -> torch.Tensor:
    """Logits ``[N, K]`` for all images (optionally transformed batch by batch), no gradients."""
    out = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            x = to_unit(images[start : start + batch_size])
            if transform is not None:
                x = transform(x, start)
            t = None if text_feats is None else text_feats[start : start + batch_size]
            out.append(model(x, text_features=t) if model.uses_text else model(x))
    return torch.cat(out)


def _summary(logits: torch.Tensor, labels: np.ndarray, task: Task) -> dict[str, float]:
    y = torch.as_tensor(labels)
    return {"acc": float(per_example_accuracy(logits, y, task).mean()), "auc": auc(scores(logits, task), labels, task)}


def evaluate(model: Classifier, data: EvalData, cfg: EvalConfig,
             progress: Callable[[str], None] | None = None) -> dict:
    """All metrics of one trained model, as a JSON-ready dict (see the report's record schema)."""
    model.eval()
    task, bs = data.task, cfg.batch_size
    note = progress or (lambda _msg: None)
    metrics: dict = {}
    test_text = _text_features(model, data.test_tokens, bs)
    clean_logits = _predict(model, data.test_images, test_text, bs)
    metrics["clean"] = _summary(clean_logits, data.test_labels, task)
    if data.holdout_images is not None and len(data.holdout_images):
        holdout_text = _text_features(model, data.holdout_tokens, bs)
        metrics["holdout"] = _summary(_predict(model, data.holdout_images, holdout_text, bs),
                                      data.holdout_labels, task)
    if model.uses_text:
        empty = _text_features(model, data.empty_tokens, bs).expand(len(data.test_images), -1)
        metrics["noreport"] = _summary(_predict(model, data.test_images, empty, bs), data.test_labels, task)

    note("attacks")
    subset = adversarial_subset(data.test_labels, cfg.max_adversarial)
    clean_acc_subset = per_example_accuracy(clean_logits[subset], torch.as_tensor(data.test_labels[subset]), task)
    per_attack = _attacks(model, data, subset, test_text, cfg)  # name -> eps -> [n] per-example accuracy
    worst = {e: torch.stack([per_attack[a][e] for a in per_attack]).min(dim=0).values for e in cfg.epsilons}
    metrics["attacks"] = {name: {eps_key(e): float(acc.mean()) for e, acc in by_eps.items()}
                          for name, by_eps in per_attack.items()}
    metrics["attacks"]["worst"] = {eps_key(e): float(acc.mean()) for e, acc in worst.items()}

    note("corruptions")
    metrics["corruptions"] = _corruptions(model, data, test_text, cfg)
    metrics["checks"] = [checks.above_chance(metrics["clean"]["acc"], data.test_labels, task.multilabel),
                         *checks.run_all(clean_acc_subset, per_attack, cfg.epsilons)]
    metrics["n_adversarial"] = int(len(subset))
    return metrics


def _attacks(model: Classifier, data: EvalData, subset: np.ndarray, text_feats: torch.Tensor | None,
             cfg: EvalConfig) -> dict:
    task, bs = data.task, cfg.batch_size
    results: dict[str, dict[float, torch.Tensor]] = {}
    for spec in cfg.attacks:
        attack_cls = registry.get("attack", spec.name)
        attack = attack_cls(attack_cls.Params(**spec.params))
        generator = torch.Generator().manual_seed(EVAL_SEED)
        results[spec.name] = {}
        for eps in cfg.epsilons:
            accs = []
            for start in range(0, len(subset), bs):
                idx = subset[start : start + bs]
                x, y = to_unit(data.test_images[idx]), torch.as_tensor(data.test_labels[idx])
                target = FixedReport(model, text_features=text_feats[idx]) if model.uses_text else model
                x_adv = attack(target, x, y, eps=eps / 255.0, task=task, generator=generator)
                with torch.no_grad():
                    accs.append(per_example_accuracy(target(x_adv), y, task))
            results[spec.name][eps] = torch.cat(accs)
    return results


def _corruptions(model: Classifier, data: EvalData, text_feats: torch.Tensor | None, cfg: EvalConfig) -> dict:
    from medrobust.corruptions.base import apply

    out: dict[str, dict[str, float]] = {}
    for name in cfg.corruptions:
        out[name] = {}
        for severity in cfg.severities:
            generator = torch.Generator().manual_seed(EVAL_SEED + severity)
            logits = _predict(model, data.test_images, text_feats, cfg.batch_size,
                              transform=lambda x, _start: apply(name, x, severity, generator))
            out[name][str(severity)] = float(per_example_accuracy(logits, torch.as_tensor(data.test_labels),
                                                                  data.task).mean())
    return out
