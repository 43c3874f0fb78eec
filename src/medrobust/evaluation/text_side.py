"""Report-side and joint image+report attacks (family ``report-attack``) on image+report models, per budget.

Runs on the same fixed attacked examples as the image attacks. Each attack returns an
``AdversarialPair`` (image, report features, and for discrete attacks the edited reports); accuracy is
``model(pair.image, text_features=pair.text_features)`` against the true labels.
"""

from __future__ import annotations

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from medrobust import registry
from medrobust.data.base import Task, to_unit
from medrobust.evaluation.adversarial import to_pixels
from medrobust.evaluation.metrics import per_example_accuracy


class ReportAttackSpec(BaseModel):
    """A report-side or joint attack and its budgets: edit counts (word substitution), embedding radii
    (fraction of the mean token-embedding norm) or ``[ε ×1/255, k words]`` pairs (joint)."""

    model_config = ConfigDict(extra="forbid")
    name: str
    budgets: list = Field(min_length=1)
    params: dict = {}


def budget_key(budget) -> str:
    """``2 -> "2"``, ``0.25 -> "0.25"``, ``[2, 1] -> "2/255+1w"`` (joint: image ε and report edits)."""
    if isinstance(budget, (list, tuple)):
        eps, k = budget
        return f"{float(eps):g}/255+{int(k)}w"
    return f"{float(budget):g}"


def _call_budget(budget):
    """The budget as the attack takes it: a joint ``[ε ×1/255, k]`` becomes ``(ε in pixels, k)``."""
    if isinstance(budget, (list, tuple)):
        return (to_pixels(float(budget[0])), int(budget[1]))
    return budget


def evaluate_report_attacks(model, images: np.ndarray, tokens: np.ndarray, texts: list[str], labels: np.ndarray,
                            task: Task, tokenizer, specs: list[ReportAttackSpec], batch_size: int, seed: int
                            ) -> tuple[dict[str, dict[str, float]], dict[str, list[str]]]:
    """Robust accuracy per attack and budget, and a few clean → adversarial report examples."""
    results: dict[str, dict[str, float]] = {}
    examples: dict[str, list[str]] = {}
    for spec in specs:
        cls = registry.get("report-attack", spec.name)
        attack = cls(cls.Params(**spec.params))
        results[spec.name] = {}
        for budget in spec.budgets:
            generator = torch.Generator().manual_seed(seed)
            accs = []
            for start in range(0, len(labels), batch_size):
                sl = slice(start, start + batch_size)
                x, y = to_unit(images[sl]), torch.as_tensor(labels[sl])
                pair = attack(model, x, torch.as_tensor(tokens[sl]), y, budget=_call_budget(budget), task=task,
                              texts=texts[sl], tokenizer=tokenizer, generator=generator)
                with torch.no_grad():
                    accs.append(per_example_accuracy(model(pair.image, text_features=pair.text_features), y, task))
                if pair.texts is not None and start == 0:
                    changed = [f"{a} → {b}" for a, b in zip(texts[sl], pair.texts) if a != b][:2]
                    examples.setdefault(spec.name, []).extend(changed)
            results[spec.name][budget_key(budget)] = float(torch.cat(accs).mean())
    return results, examples


def monotone_in_budget(results: dict[str, dict[str, float]], n: int) -> dict:
    """Report-side robust accuracy must not rise with the budget (one example of slack)."""
    rises = []
    for name, by_budget in results.items():
        items = list(by_budget.items())
        for (b0, a0), (b1, a1) in zip(items, items[1:]):
            if a1 - a0 > 1.0 / n + 1e-6:
                rises.append(f"{name} accuracy rose from {a0:.3f} at {b0} to {a1:.3f} at {b1}")
    detail = "; ".join(rises) or "report-side robust accuracy is non-increasing in the budget for every attack"
    return {"name": "report_monotone_in_budget", "passed": not rises, "detail": detail}
