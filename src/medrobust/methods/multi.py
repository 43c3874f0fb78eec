"""Combined pretext tasks: one encoder trained on a weighted sum of several self-supervised objectives.

In the spirit of Doersch, Zisserman (2017), "Multi-task Self-Supervised Visual Learning", ICCV, and of
medical multi-task pre-training such as Zhou et al. (2021, Models Genesis, which combines its restoration
transforms) and Taleb et al. (2020), "3D Self-Supervised Methods for Medical Imaging", NeurIPS.
Each task is a registered image-only self-supervised method built around the *same* ``image_encoder``
object (its heads, teachers and queues are its own); ``loss = Σ_t w_t · loss_t``; each task's loss (and
its other outputs, prefixed ``"<task>."``) is reported; ``after_step`` is forwarded to every task that has
one (momentum teachers); all tasks draw their randomness from one shared generator.

Example config entry::

    {name: multi, tasks: [{name: simclr, weight: 1.0}, {name: rotation, weight: 0.5},
                          {name: mae, weight: 0.5, params: {mask_ratio: 0.6}}]}
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from torch import nn

from medrobust import registry
from medrobust.methods.contract import Encoders, MethodInfo, augmented_corruptions_of, info_of, method_generator
from medrobust.registry import register


class TaskSpec(BaseModel):
    """One pretext task: a registered method ``name``, its loss ``weight`` and its own ``params``."""

    model_config = ConfigDict(extra="forbid")
    name: str
    weight: float = Field(1.0, ge=0)
    params: dict[str, Any] = {}

    @model_validator(mode="after")
    def _known_image_method(self) -> TaskSpec:
        if self.name == "multi":
            raise ValueError("a multi task cannot itself be 'multi'")
        try:
            cls = registry.get("method", self.name)
        except registry.RegistryError as exc:
            raise ValueError(str(exc)) from None
        info = info_of(cls)
        if not info.self_supervised or info.uses_text:
            raise ValueError(f"task {self.name!r} is a {info.role} method with modalities {info.modalities}; "
                             "multi combines image-only self-supervised methods")
        try:
            cls.Params.model_validate(self.params)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'params'}: {e['msg']}" for e in exc.errors())
            raise ValueError(f"params of task {self.name!r}: {problems}") from None
        return self


def _default_tasks() -> list[TaskSpec]:
    return [TaskSpec(name="simclr", weight=1.0), TaskSpec(name="rotation", weight=0.5),
            TaskSpec(name="restoration", weight=0.5)]


class MultiParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tasks: list[TaskSpec] = Field(default_factory=_default_tasks, min_length=1)

    @field_validator("tasks")
    @classmethod
    def _distinct_and_weighted(cls, tasks: list[TaskSpec]) -> list[TaskSpec]:
        names = [t.name for t in tasks]
        if len(set(names)) != len(names):
            raise ValueError(f"each task may appear once, got {names}")
        if sum(t.weight for t in tasks) <= 0:
            raise ValueError("the task weights sum to 0; give at least one task a positive weight")
        return tasks


@register("method", "multi")
class Multi(nn.Module):
    """Weighted multi-task self-supervised pre-training of one shared ``image_encoder``."""

    Params = MultiParams
    info = MethodInfo("Multi-task", "self-supervised", counterpart="supervised")

    @classmethod
    def augmented_corruptions(cls, params: MultiParams) -> list[str]:
        """The union of every task's augmented corruptions."""
        out: set[str] = set()
        for spec in params.tasks:
            task = registry.get("method", spec.name)
            out.update(augmented_corruptions_of(task, task.Params.model_validate(spec.params)))
        return sorted(out)

    def __init__(self, encoders: Encoders, params: MultiParams | None = None, seed: int = 0):
        super().__init__()
        image_encoder = encoders.image
        self.params = p = params or MultiParams()
        self.generator = method_generator(seed)
        self.image_encoder = image_encoder
        self.weights = {t.name: t.weight for t in p.tasks}
        self.tasks = nn.ModuleDict()
        for spec in p.tasks:
            cls = registry.get("method", spec.name)
            task = cls(Encoders(image_encoder, sources=encoders.sources), cls.Params.model_validate(spec.params),
                       seed=seed)
            if hasattr(task, "generator"):
                task.generator = self.generator
            self.tasks[spec.name] = task

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        total, report = None, {}
        for name, task in self.tasks.items():
            out = task(batch)
            weighted = self.weights[name] * out["loss"]
            total = weighted if total is None else total + weighted
            report[name] = out["loss"].detach()
            report.update({f"{name}.{k}": v for k, v in out.items() if k != "loss"})
        return {"loss": total, **report}

    def after_step(self) -> None:
        for task in self.tasks.values():
            hook = getattr(task, "after_step", None)
            if hook is not None:
                hook()
