"""Supervised training on the sparse labels: the baseline arms of the study.

``supervised`` trains an image classifier; ``supervised-multimodal`` an image+report classifier on the
labeled image-report pairs. The same objective fine-tunes the self-supervised arms (each names its
``info.counterpart``), so a pre-trained arm and its baseline differ only in the initialisation.
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from medrobust.data.base import Task
from medrobust.methods.contract import MethodInfo
from medrobust.methods.losses import task_loss
from medrobust.models.heads import Classifier
from medrobust.registry import register


class SupervisedParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


@register("method", "supervised")
class Supervised(nn.Module):
    """Empirical risk minimisation of the task loss on labeled images."""

    Params = SupervisedParams
    info = MethodInfo("Supervised", "supervised")

    def __init__(self, model: Classifier, task: Task, params: SupervisedParams | None = None):
        super().__init__()
        self.model = model
        self.task = task

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        logits = self.model(batch["image"], batch.get("tokens") if self.model.uses_text else None)
        return {"loss": task_loss(logits, batch["label"], self.task)}


@register("method", "supervised-multimodal")
class SupervisedMultimodal(Supervised):
    """Supervised training of an image+report classifier on the labeled pairs only."""

    info = MethodInfo("Supervised (image+report)", "supervised", ("image", "text"))
