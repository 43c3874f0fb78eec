"""Supervised multi-task pre-training on a pool's labels: "supervised training on diverse data".

The counterpart of self-supervised pre-training on a diverse pool (the question's variable): the same encoder and
pool, but trained on the *labels* the pool's other sources carry — one classification head per labeled source
(its own task: binary, multiclass or multilabel), a shared encoder — then fine-tuned on the target's sparse labels
like every pre-trained arm. The target's own labels never enter pre-training (the pool's target source is
unlabeled), so the arm sees no more target labels than the supervised arm it is compared with.

Multi-task supervised pre-training across medical data sets is the setting of e.g. Medformer's multitask
pre-training and of the "universal" models trained on many labeled medical sets; each batch comes from one
source (:class:`~medrobust.engine.train.Mixture`), so each step trains that source's head and the shared encoder.
Labeled batches are augmented with the same random views as the supervised objective (fair comparison).
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from medrobust.data.views import ViewParams, random_view
from medrobust.methods.contract import Encoders, MethodInfo, method_generator
from medrobust.methods.losses import task_loss
from medrobust.registry import register


class SupervisedMultitaskParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    augment: bool = Field(True, description="augment each labeled batch with random views (as the supervised arm)")
    views: ViewParams = ViewParams()


@register("method", "supervised-multitask")
class SupervisedMultitask(nn.Module):
    """One linear head per labeled pool source on the shared ``image`` encoder; loss: that source's task loss."""

    Params = SupervisedMultitaskParams
    info = MethodInfo("Supervised multi-task (pool labels)", "supervised-pretraining", counterpart="supervised")

    @classmethod
    def augmented_corruptions(cls, params: SupervisedMultitaskParams) -> list[str]:
        from medrobust.data.views import covered_corruptions

        return covered_corruptions(params.views) if params.augment else []

    def __init__(self, encoders: Encoders, params: SupervisedMultitaskParams | None = None, seed: int = 0):
        super().__init__()
        self.params = params or SupervisedMultitaskParams()
        self.image_encoder = encoders.image
        self.generator = method_generator(seed)
        labeled = {i: s for i, s in enumerate(encoders.sources) if s.task is not None}
        if not labeled:
            names = ", ".join(s.name for s in encoders.sources) or "none (no pool)"
            raise ValueError(f"supervised-multitask pre-trains on the labels of a pool's sources, but none has labels "
                             f"(sources: {names}); give the arm a pool with labeled data sets")
        self.tasks = {i: s.task for i, s in labeled.items()}
        self.heads = nn.ModuleDict({str(i): nn.Linear(encoders.image.feature_dim, s.task.n_outputs)
                                    for i, s in labeled.items()})

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if "source" not in batch or "label" not in batch:
            raise ValueError("supervised-multitask needs pool batches with 'source' and 'label' (see Pool.mixture)")
        source = int(batch["source"][0])
        if str(source) not in self.heads:
            raise ValueError(f"supervised-multitask: batch from source {source}, which has no labels; heads for "
                             f"{sorted(self.heads)}")
        x = batch["image"]
        if self.training and self.params.augment:
            x = random_view(x, self.params.views, self.generator)
        logits = self.heads[str(source)](self.image_encoder.forward_features(x))
        return {"loss": task_loss(logits, batch["label"], self.tasks[source])}
