"""Supervised training on the sparse labels: the baseline arms of the study.

``supervised`` trains an image classifier; ``supervised-multimodal`` an image+report classifier on the
labeled image-report pairs. The same objective fine-tunes the self-supervised arms (each names its
``info.counterpart``), so a pre-trained arm and its baseline differ only in the initialisation.

Fair comparison (DESIGN principle 15): by default every labeled training batch is augmented with
:func:`~medrobust.data.views.random_view` — the same family of views (crop, rotation, flip, gamma, contrast,
brightness, blur, noise) the self-supervised arms pre-train with — so a corruption or site gain of
pre-training is not just having seen those transforms. ``{name: supervised, augment: false}`` trains on the
raw images (reported as an ablation of ``supervised``).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from medrobust.data.base import Task
from medrobust.data.views import ViewParams, covered_corruptions, random_view
from medrobust.methods.contract import MethodInfo, method_generator
from medrobust.methods.losses import task_loss
from medrobust.models.heads import Classifier
from medrobust.registry import register


#: supervised-multimodal's default share of training examples with their text left out (selected on validation)
TEXT_DROPOUT = 0.9


class SupervisedParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    augment: bool = Field(True, description="augment each labeled training batch with random views (as the "
                          "self-supervised arms pre-train); false trains on the raw images")
    views: ViewParams = ViewParams()


@register("method", "supervised")
class Supervised(nn.Module):
    """Empirical risk minimisation of the task loss on (augmented) labeled images.

    In training mode with ``augment`` on, ``forward`` replaces ``batch["image"]`` by one random view per image
    (its own generator from the run ``seed``); in eval mode, or with ``augment`` off, the images pass unchanged.
    """

    Params = SupervisedParams
    info = MethodInfo("Supervised", "supervised")

    def __init__(self, model: Classifier, task: Task, params: SupervisedParams | None = None, seed: int = 0):
        super().__init__()
        self.model = model
        self.task = task
        self.params = params or SupervisedParams()
        self.generator = method_generator(seed)
        self._views_on = True

    @classmethod
    def augmented_corruptions(cls, params: SupervisedParams) -> list[str]:
        """The corruptions the training views cover (none with ``augment`` off)."""
        return covered_corruptions(params.views) if params.augment else []

    def view(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``batch`` with its images replaced by random views, when training with ``augment`` on."""
        if not (self.training and self.params.augment and self._views_on):
            return batch
        return {**batch, "image": random_view(batch["image"], self.params.views, self.generator)}

    @contextmanager
    def views_off(self) -> Iterator[None]:
        """Within the block, ``forward`` uses the images it is given (they were augmented already)."""
        before, self._views_on = self._views_on, False
        try:
            yield
        finally:
            self._views_on = before

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        batch = self.view(batch)
        logits = self.model(batch["image"], batch.get("tokens") if self.model.uses_text else None)
        return {"loss": task_loss(logits, batch["label"], self.task)}


class MultimodalParams(SupervisedParams):
    text_dropout: float = Field(TEXT_DROPOUT, ge=0, lt=1, description="share of the training examples whose text "
                                "is left out (the model's missing-text path): modality dropout, so the image "
                                "pathway learns on its own and a short, memorisable text cannot carry the fit")


@register("method", "supervised-multimodal")
class SupervisedMultimodal(Supervised):
    """Supervised training of an image+text classifier (the text: the indication) on the labeled pairs only:
    images augmented, and each training example's text left out with probability ``text_dropout`` (modality
    dropout, Neverova et al. 2015, through the model's declared ``missing="report"`` path).

    Why: with 180 labels a fresh text encoder memorises the indications (age, phrasing: nearly unique per
    patient): without dropout the default study's classifier fitted its training labels (loss 0.13) and scored
    chance on the test images, though its image pathway alone scored 66%. The default is selected on the
    validation split (``benchmarks/RESULTS.md``).
    """

    Params = MultimodalParams
    info = MethodInfo("Supervised (image+indication)", "supervised", ("image", "text"))

    def __init__(self, model: Classifier, task: Task, params: SupervisedParams | None = None, seed: int = 0):
        super().__init__(model, task, MultimodalParams.model_validate((params or MultimodalParams()).model_dump()),
                         seed)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        p = self.params.text_dropout
        if not (self.training and p > 0 and "tokens" in batch):
            return super().forward(batch)
        batch = self.view(batch)
        drop = (torch.rand(len(batch["label"]), generator=self.generator) < p).to(batch["label"].device)
        logits = None
        for mask, kw in ((~drop, {"tokens": None}), (drop, {"missing": "report"})):
            if not mask.any():
                continue
            kw = {"tokens": batch["tokens"][mask]} if "tokens" in kw else kw
            out = self.model(batch["image"][mask], **kw)
            logits = out.new_empty((len(drop), *out.shape[1:])) if logits is None else logits
            logits[mask] = out
        return {"loss": task_loss(logits, batch["label"], self.task)}


class ViewsFirst(nn.Module):
    """A defense's objective around a supervised one, fed that objective's augmented batches.

    The views are drawn once, before ``objective`` (e.g. adversarial training) sees the batch, and ``base``
    does not draw them again when ``objective`` calls it: the PGD example is made from the augmented image
    and trained on as made (Madry et al. 2018 augment, then attack), not cropped or blurred afterwards.
    """

    def __init__(self, base: Supervised, objective: nn.Module):
        super().__init__()
        self.base, self.objective = base, objective

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        batch = self.base.view(batch)
        with self.base.views_off():
            return self.objective(batch)


def views_first(base: nn.Module, objective: nn.Module) -> nn.Module:
    """``objective`` (built around ``base``), augmented before it when ``base`` is an augmenting supervised one."""
    if objective is base or not isinstance(base, Supervised) or not base.params.augment:
        return objective
    return ViewsFirst(base, objective)
