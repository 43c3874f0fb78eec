"""Adversarial fine-tuning: PGD-AT and TRADES, for any encoder, image-only or image+report.

- ``pgd-at`` (Madry et al. 2018, "Towards Deep Learning Models Resistant to Adversarial Attacks", ICLR):
  minimise the task loss at the L∞ PGD example that maximises it, generated on the fly for every batch
  (random start in the ε-ball, ``steps`` signed-gradient steps, projection around the clean image).
- ``trades`` (Zhang et al. 2019, "Theoretically Principled Trade-off between Robustness and Accuracy",
  ICML): ``CE(f(x), y) + β · KL(p(x) ‖ p(x'))`` with ``x'`` maximising the KL (start ``x + 0.001·N(0, 1)``);
  multilabel tasks use BCE and the per-finding Bernoulli KL summed over findings. ``β = 0`` *is* clean
  fine-tuning: the base objective is returned untouched, no adversarial example is generated.

Adversarial examples are generated with the model in eval mode (train mode restored), through
:func:`medrobust.attacks.base.loss_and_grad` (so EOT / BPDA apply to randomised or non-differentiable
models), from the defense's own seeded generator (the global RNG is never touched). Image+report models:
the image is attacked with the report fixed; with ``report_budget > 0`` the report's token embeddings are
first perturbed within a per-token L2 ball (``budget × mean embedding-row norm``, as the
``report-embedding-pgd`` attack; Miyato et al. 2017 / FreeLB, Zhu et al. 2020) and the image is attacked
with that adversarial report, as the joint attack does.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from medrobust.attacks.base import LossFn, eval_mode, loss_and_grad
from medrobust.attacks.pgd import project
from medrobust.attacks.text import EmbeddingForward, embedding_scale
from medrobust.data.base import Task
from medrobust.data.tokenizer import CLS, PAD
from medrobust.defenses.base import Defense
from medrobust.models.heads import FixedReport
from medrobust.registry import register
from medrobust.task import task_loss


def kl_per_example(clean_logits: torch.Tensor, adv_logits: torch.Tensor, task: Task) -> torch.Tensor:
    """``KL(p(clean) ‖ p(adv))`` per example ``[N]`` from logits ``[N, K]``.

    Single-label: ``Σ_k p_k (log p_k − log q_k)`` over the softmax. Multilabel: the Bernoulli KL of each
    finding, ``p (log p − log q) + (1 − p)(log(1 − p) − log(1 − q))``, summed over findings.
    """
    if task.multilabel:
        p = torch.sigmoid(clean_logits)
        kl = (p * (F.logsigmoid(clean_logits) - F.logsigmoid(adv_logits))
              + (1 - p) * (F.logsigmoid(-clean_logits) - F.logsigmoid(-adv_logits)))  # [N, K]
        return kl.sum(dim=1)
    log_p, log_q = F.log_softmax(clean_logits, dim=1), F.log_softmax(adv_logits, dim=1)  # [N, K]
    return (log_p.exp() * (log_p - log_q)).sum(dim=1)


def trades_loss(clean_logits: torch.Tensor, adv_logits: torch.Tensor, labels: torch.Tensor, task: Task,
                beta: float) -> torch.Tensor:
    """TRADES (Zhang et al. 2019, eq. 5): ``mean CE(f(x), y) + β · mean KL(p(x) ‖ p(x'))`` (scalar)."""
    return task_loss(clean_logits, labels, task) + beta * kl_per_example(clean_logits, adv_logits, task).mean()


class AdversarialTrainingParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    eps: float = Field(2.0, ge=0, description="L∞ image budget in 1/255 units (the study's reference ε)")
    steps: int = Field(3, ge=1, description="gradient steps per adversarial example (3: CPU-sized)")
    step_size: float | None = Field(None, gt=0, description="step as a fraction of eps; None = 2.5/steps (Madry)")
    random_start: bool = Field(True, description="pgd-at: start uniformly in the ε-ball")
    eot_samples: int = Field(1, ge=1, description="EOT passes per step when the model is randomised")
    report_budget: float = Field(0.0, ge=0, description="image+report: per-token embedding L2 radius "
                                 "(× mean embedding norm) of report perturbations; 0 = image only")
    report_steps: int = Field(3, ge=1)


class TradesParams(AdversarialTrainingParams):
    beta: float = Field(6.0, ge=0, description="weight of the robustness (KL) term; 0 = clean fine-tuning")


def _unit(v: torch.Tensor) -> torch.Tensor:  # [N, L, D] -> per-token unit vectors (zero stays zero)
    return v / v.norm(dim=-1, keepdim=True).clamp_min(1e-12)


Start = Callable[[torch.Tensor], torch.Tensor]  # clean x -> starting point of the inner maximisation


class AdversarialObjective(nn.Module):
    """Shared machinery: the inner maximisation over the image (and optionally the report)."""

    def __init__(self, model: nn.Module, task: Task, base: nn.Module, params: AdversarialTrainingParams,
                 seed: int):
        super().__init__()
        self.model, self.base, self.task, self.p = model, base, task, params
        self.generator = torch.Generator().manual_seed(seed)
        self.step = (params.step_size or 2.5 / params.steps) * params.eps / 255.0  # pixels

    def _noise(self, x: torch.Tensor, uniform: bool) -> torch.Tensor:
        draw = torch.rand if uniform else torch.randn
        return draw(x.shape, generator=self.generator, dtype=x.dtype).to(x.device)

    def inner_max(self, batch: dict[str, torch.Tensor], target: torch.Tensor, loss_fn: LossFn, start: Start
                  ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(x_adv [N, C, *sp], report embedding offset [N, L, D] or None)`` maximising ``loss_fn``."""
        x, eps = batch["image"].detach(), self.p.eps / 255.0
        tokens = self.tokens(batch)
        delta = None
        with eval_mode(self.model):
            feats = None
            if tokens is not None:
                delta = self._report_offset(x, tokens, target, loss_fn) if self.p.report_budget > 0 else None
                with torch.no_grad():
                    feats = (self.model.text_features(tokens) if delta is None else
                             self.model.text_features_from_embeddings(self.model.text_encoder.embed(tokens) + delta,
                                                                      tokens))
            fn = self.model if feats is None else FixedReport(self.model, text_features=feats)
            x_adv = x.clone()
            if eps > 0:
                x_adv = project(start(x), x, eps, "linf")
                for _ in range(self.p.steps):
                    _, grad = loss_and_grad(fn, x_adv, target, self.task, loss_fn, samples=self._samples())
                    x_adv = project(x_adv + self.step * grad.sign(), x, eps, "linf")
        return x_adv.detach(), delta

    def tokens(self, batch: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """The batch's report tokens for an image+report model (a clear error when missing), else None."""
        if not self.model.uses_text:
            return None
        if batch.get("tokens") is None:
            raise ValueError("adversarial fine-tuning of an image+report model needs batch['tokens'] [N, L]")
        return batch["tokens"]

    def _samples(self) -> int:
        return self.p.eot_samples if getattr(self.model, "randomized", False) else 1

    def _report_offset(self, x, tokens, target, loss_fn) -> torch.Tensor:
        """Per-token L2 PGD on the report embeddings (image clean), [PAD]/[CLS] fixed: ``[N, L, D]``."""
        with torch.no_grad():
            emb = self.model.text_encoder.embed(tokens)  # [N, L, D]
        radius = self.p.report_budget * embedding_scale(self.model.text_encoder)
        mask = ((tokens != PAD) & (tokens != CLS)).unsqueeze(-1).to(emb.dtype)  # [N, L, 1]
        f = EmbeddingForward(self.model, x, tokens, emb)
        delta = 0.001 * radius * self._noise(emb, False) * mask  # small start: the KL's gradient is 0 at 0
        for _ in range(self.p.report_steps):
            _, grad = loss_and_grad(f, delta, target, self.task, loss_fn, samples=self._samples())
            delta = delta + (2.5 / self.p.report_steps) * radius * _unit(grad * mask)
            delta = delta * (radius / delta.norm(dim=-1, keepdim=True).clamp_min(1e-12)).clamp(max=1.0) * mask
        return delta.detach()

    def logits(self, image: torch.Tensor, batch: dict[str, torch.Tensor], delta: torch.Tensor | None) -> torch.Tensor:
        """Training-mode logits at ``image`` with the batch's report (offset by ``delta`` when given)."""
        tokens = self.tokens(batch)
        if tokens is None:
            return self.model(image)
        if delta is None:
            return self.model(image, tokens)
        feats = self.model.text_features_from_embeddings(self.model.text_encoder.embed(tokens) + delta, tokens)
        return self.model(image, text_features=feats)


class PGDAdversarialTraining(AdversarialObjective):
    """PGD-AT objective: the base (supervised) loss at the PGD example of each batch."""

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:  # -> [N], the ascent objective
        return task_loss(logits, labels, self.task, reduction="none")

    def _start(self, x: torch.Tensor) -> torch.Tensor:  # uniform in the ε-cube (Madry et al.), or x itself
        return x + (2 * self._noise(x, True) - 1) * self.p.eps / 255.0 if self.p.random_start else x

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if self.p.eps == 0 and self.p.report_budget == 0:
            return self.base(batch)
        x_adv, delta = self.inner_max(batch, batch["label"], self._loss, self._start)
        if delta is None:
            return self.base({**batch, "image": x_adv})
        return {"loss": task_loss(self.logits(x_adv, batch, delta), batch["label"], self.task)}


class TradesObjective(AdversarialObjective):
    """TRADES objective; ``β = 0`` returns the base objective's output unchanged (and draws no noise)."""

    def _loss(self, logits: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:  # -> [N] KL(p(clean) ‖ p(x'))
        return kl_per_example(clean, logits, self.task)

    def _start(self, x: torch.Tensor) -> torch.Tensor:  # x + 0.001·N(0, I), as in Zhang et al.'s code
        return x + 0.001 * self._noise(x, False)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if self.p.beta == 0:
            return self.base(batch)
        with eval_mode(self.model), torch.no_grad():
            target = self.logits(batch["image"], batch, None)  # [N, K] clean logits, the KL's reference
        x_adv, delta = self.inner_max(batch, target, self._loss, self._start)
        clean = self.logits(batch["image"], batch, None)
        adv = self.logits(x_adv, batch, delta)
        return {"loss": trades_loss(clean, adv, batch["label"], self.task, self.p.beta),
                "kl": kl_per_example(clean, adv, self.task).mean().detach()}


class _TrainingDefense(Defense):
    """A defense that only changes the fine-tuning objective (``Objective``); inference is untouched."""

    Objective: type[AdversarialObjective]
    kind = "training"
    randomized = False

    def objective(self, model: nn.Module, task: Task, base: nn.Module) -> nn.Module:
        return self.Objective(model, task, base, self.params, self.seed)


@register("defense", "pgd-at")
class PGDAT(_TrainingDefense):
    """PGD adversarial fine-tuning (Madry et al. 2018) of any pre-trained encoder or the supervised arm."""

    Params, Objective = AdversarialTrainingParams, PGDAdversarialTraining


@register("defense", "trades")
class Trades(_TrainingDefense):
    """TRADES fine-tuning (Zhang et al. 2019), β configurable (default 6, the paper's CIFAR-10 value)."""

    Params, Objective = TradesParams, TradesObjective
