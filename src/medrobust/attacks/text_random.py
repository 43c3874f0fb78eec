"""Random, non-adversarial text perturbations: paraphrased (synonym) and typo'd words, not chosen to hurt.

``report-random-edits`` replaces ``budget = k`` randomly chosen words of each text by a clinical synonym from
``medical_words.json`` when the word has one (a paraphrase) and otherwise by a readable typo
(:func:`medrobust.attacks.text.typos`) — the "perturbed question" condition of robust medical VQA (the
Robust-MMR protocol) and the natural-noise counterpart of the word-substitution attack. Words are drawn from a
seeded permutation per text (seed from ``generator``, the text's index), so the edits at ``k`` are a subset of
those at ``k + 1``. Accuracy may rise with ``k`` (the edits are not adversarial), so the report-side
monotonicity self-check does not apply (``adversarial = False``).
"""

from __future__ import annotations

import random
from typing import Sequence

import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from medrobust.attacks.base import AttackInputError, eval_mode
from medrobust.attacks.text import WORD, AdversarialPair, _encode, check_report_inputs, synonyms_at, typos
from medrobust.data.base import Task
from medrobust.registry import register


class RandomEditsParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    typos: bool = True  # words without a synonym get a typo (False: only synonyms; such words are left alone)


def random_edits(text: str, k: int, seed: int, use_typos: bool = True) -> tuple[str, int]:
    """``text`` with up to ``k`` words edited (module docstring) and the number edited."""
    parts = WORD.split(text)  # words at odd indices
    rng = random.Random(seed)
    order = list(range(1, len(parts), 2))
    rng.shuffle(order)
    edited = 0
    for j in order:
        if edited >= k:
            break
        pick = random.Random(f"{seed}:{j}")  # the word's substitute does not depend on k
        options = synonyms_at(parts, j) or (typos(parts[j]) if use_typos else [])
        if options:
            parts[j] = pick.choice(options)
            edited += 1
    return "".join(parts), edited


@register("report-attack", "report-random-edits")
class ReportRandomEdits:
    """``k`` random paraphrase / typo edits per text (module docstring); the image is left clean."""

    Params = RandomEditsParams
    target = "report"
    adversarial = False

    def __init__(self, params: RandomEditsParams | None = None):
        self.params = params or RandomEditsParams()

    def __call__(self, model: nn.Module, image: torch.Tensor, tokens: torch.Tensor, y: torch.Tensor, *,
                 budget: int, task: Task, texts: Sequence[str] | None = None, tokenizer=None,
                 generator: torch.Generator | None = None) -> AdversarialPair:
        check_report_inputs(model, image, tokens)
        if texts is None or tokenizer is None:
            raise ValueError("report-random-edits works on the text strings: pass texts and tokenizer")
        if isinstance(budget, bool) or not float(budget).is_integer() or budget < 0:
            raise AttackInputError(f"report-random-edits: budget must be a whole number of words >= 0, got {budget!r}")
        seed = 0 if generator is None else int(torch.randint(0, 2**31, (1,), generator=generator))
        edited = [random_edits(t, int(budget), seed * 1_000_003 + i, self.params.typos) for i, t in enumerate(texts)]
        out_texts = [t for t, _ in edited]
        out = tokens.clone()
        changed = [i for i, (_, n) in enumerate(edited) if n]
        if changed:
            out[torch.as_tensor(changed, device=out.device)] = _encode(tokenizer, [out_texts[i] for i in changed], tokens)
        with eval_mode(model), torch.no_grad():
            feats = model.text_features(out)
        edits = torch.as_tensor([n for _, n in edited], dtype=torch.int64, device=tokens.device)
        return AdversarialPair(image, feats, out, out_texts, edits)
