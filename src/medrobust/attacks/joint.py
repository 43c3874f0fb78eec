"""Joint image + report attack: an L∞ image ball and a word-edit budget at once.

``attack(model, image, tokens, y, *, budget=(eps, k), task, texts, tokenizer, generator) -> AdversarialPair``
(registry family ``report-attack``; ``eps`` in [0, 1] pixel units).

Alternating strategy, in the spirit of multimodal attacks that perturb both modalities in turn
(Co-Attack, Zhang et al. 2022, "Towards Adversarial Attack on Vision-Language Pre-training Models",
ACM MM; SGA, Lu et al. 2023, ICCV):

1. image PGD (Madry et al. 2018; random start, projection around the *clean* image) against the model
   with the clean report: ``x1``;
2. word substitution on the report given ``x1`` (:class:`~medrobust.attacks.text.ReportWordSubstitution`,
   TextFooler-style, Jin et al. 2020): report ``r``;
3. image PGD again from the clean image, given ``r``, on the examples not yet fully wrong: ``x2``.

Per example the worst of ``(x1, r)`` and ``(x2, r)`` is returned (most wrong decisions, then highest
loss). Step 2 only accepts edits that raise the loss at ``x1``, so ``(x1, r)`` is never weaker than the
image attack alone; starting the report search from an adversarial image makes it at least as strong as
the word substitution alone in practice (tested). Written by hand from the project's own attacks.
"""

from __future__ import annotations

from typing import Sequence

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from medrobust.attacks.base import AttackInputError, check_inputs, eval_mode
from medrobust.attacks.pgd import PGD, PGDParams
from medrobust.attacks.text import (AdversarialPair, PairScorer, ReportWordSubstitution, WordSubstitutionParams,
                                    check_report_inputs)
from medrobust.models.heads import FixedReport
from medrobust.registry import register
from medrobust.task import Task

_BIG = 1e6  # lexicographic key: wrong decisions first, then the loss


class JointParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    image: PGDParams = Field(default_factory=PGDParams, description="the image PGD passes (L∞ by default)")
    report: WordSubstitutionParams = Field(default_factory=WordSubstitutionParams, description="the report search")


def _split_budget(budget) -> tuple[float, int]:
    if not isinstance(budget, (tuple, list)) or len(budget) != 2:
        raise AttackInputError(f"joint-image-report: budget must be (eps, k), got {budget!r}")
    return float(budget[0]), budget[1]


@register("report-attack", "joint-image-report")
class JointImageReport:
    """Image ε-ball (pixel units of [0, 1]) and ``k`` report word edits together; see the module docstring."""

    Params = JointParams
    target = "joint"

    def __init__(self, params: JointParams | None = None):
        self.params = params or JointParams()

    def __call__(self, model: nn.Module, image: torch.Tensor, tokens: torch.Tensor, y: torch.Tensor, *,
                 budget: tuple[float, int], task: Task, texts: Sequence[str] | None = None, tokenizer=None,
                 generator: torch.Generator | None = None) -> AdversarialPair:
        eps, k = _split_budget(budget)
        check_report_inputs(model, image, tokens)
        check_inputs(image, eps)
        pgd, words = PGD(self.params.image), ReportWordSubstitution(self.params.report)
        with eval_mode(model):
            with torch.no_grad():
                clean = model.text_features(tokens)  # [N, D]
            x1 = image if eps == 0 else pgd(FixedReport(model, text_features=clean), image, y, eps=eps, task=task,
                                            generator=generator)
            r = words(model, x1, tokens, y, budget=k, task=task, texts=texts, tokenizer=tokenizer, generator=generator)
            score = PairScorer(model, x1, y, task)
            every = torch.arange(len(y), device=y.device)
            e1, l1 = score(every, r.tokens)  # [N], [N]
            x_adv = x1.clone()
            todo = (e1 < 1.0).nonzero()[:, 0]  # examples with a decision still right
            if len(todo) and eps > 0:
                x2 = pgd(FixedReport(model, text_features=r.text_features[todo]), image[todo], y[todo], eps=eps,
                         task=task, generator=generator)
                e2, l2 = PairScorer(model, x2, y[todo], task)(torch.arange(len(todo), device=y.device), r.tokens[todo])
                worse = e2.double() * _BIG + l2.double() >= e1[todo].double() * _BIG + l1[todo].double()  # [n]
                x_adv[todo[worse]] = x2[worse]
        return AdversarialPair(x_adv, r.text_features, r.tokens, r.texts, r.edits)
