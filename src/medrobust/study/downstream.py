"""The multimodal downstream tasks of an image+text run: retrieval and closed-set VQA.

Each task starts from the run's initial modules (pre-trained, or freshly initialised for a supervised arm;
:meth:`RunContext.modules`, image and text encoders whatever the classifier sees), is fine-tuned on the run's
labeled pairs only (the sparse image-report pairs a team has) and is evaluated under every condition of
:mod:`medrobust.evaluation.multimodal`. Retrieval pairs images with their reports; VQA asks its question.
"""

from __future__ import annotations

import numpy as np
import torch

from medrobust.data.vqa import AnswerVocab, generate_vqa, image_indices, image_names_for
from medrobust.engine import distributed
from medrobust.evaluation.multimodal import (CORRUPTION_SEVERITY, PairData, RetrievalModel, RetrievalObjective,
                                             VQAData, VQAObjective, evaluate_retrieval, evaluate_vqa)
from medrobust.evaluation.robustness import EVAL_SEED, EvalConfig, adversarial_subset
from medrobust.models.build import classifier_for
from medrobust.record import RetrievalScores, TaskMetrics, VQAScores
from medrobust.study.context import RunContext
from medrobust.study.prepare import PreparedData


def run_downstream(ctx: RunContext, labeled: np.ndarray, tasks: list[str], evaluation: EvalConfig,
                   retrieval_pairs: int, vqa_questions: int, text_edits: int, steps: int | None = None
                   ) -> TaskMetrics | None:
    """Fine-tune (``steps``, default the fine-tuning budget's) and evaluate every task in ``tasks`` (rank 0 gets
    the metrics, other ranks ``None``)."""
    out: dict = {}
    for task in tasks:
        if task == "retrieval":
            out["retrieval"] = _retrieval(ctx, labeled, evaluation, retrieval_pairs, text_edits, steps)
        elif task == "vqa":
            if vqa_data(ctx.data, vqa_questions) is None:
                out["vqa_skipped"] = "needs findings annotations (the synthetic data) to generate questions"
            else:
                out["vqa"], out["vqa_train_questions"] = _vqa(ctx, labeled, evaluation, vqa_questions, steps)
    if not distributed.is_main():
        return None
    return TaskMetrics(**out, text_edits=max(1, int(text_edits)), attack="pgd",
                       attack_eps=evaluation.reference_epsilon, corruption_severity=CORRUPTION_SEVERITY)


def _pairs(split, tokens: np.ndarray, size: int) -> PairData:
    """A fixed, label-stratified gallery of ``size`` image-report pairs of ``split``."""
    idx = adversarial_subset(split.labels if split.labels.ndim == 1 else split.labels[:, 0], size)
    return PairData(split.images[idx], tokens[idx], [split.texts[i] for i in idx])


class _Freezable:
    """Linear-probe mode for a retrieval model: only the projections (and temperature) train."""

    def __init__(self, model: RetrievalModel):
        self.model = model

    def freeze_encoders(self) -> None:
        for m in (self.model.image_encoder, self.model.text_encoder, self.model.fusion):
            if m is not None:
                m.requires_grad_(False)


def _retrieval(ctx: RunContext, labeled: np.ndarray, evaluation: EvalConfig, n_pairs: int,
               text_edits: int, steps: int | None) -> dict[str, RetrievalScores] | None:
    data = ctx.data
    model = RetrievalModel(*ctx.modules(text=True))
    ctx.fit(RetrievalObjective(model), data.train_tensors(labeled, labels=False, text="report"), _Freezable(model),
            steps)
    if not distributed.is_main():
        return None
    test = _pairs(data.test, data.reports.test, n_pairs)
    holdout = None if data.holdout is None else _pairs(data.holdout, data.reports.holdout, n_pairs)
    out = evaluate_retrieval(model.cpu(), test, holdout, data.tokenizer, evaluation, EVAL_SEED,
                             report_edits=text_edits)
    return {cond: RetrievalScores.from_metrics(m) for cond, m in out.items()}


def vqa_data(data: PreparedData, n_questions: int):
    """Questions for the train / test / held-out splits, tokenised, with the answer vocabulary (cached)."""
    if ("vqa", n_questions) in data.cache:
        return data.cache[("vqa", n_questions)]
    splits = {"train": data.train, "test": data.test, "holdout": data.holdout}
    if any(s is not None and "findings" not in s.extras for s in splits.values()):
        data.cache[("vqa", n_questions)] = None
        return None
    entries, names = {}, {}
    for i, (name, split) in enumerate(splits.items()):
        if split is None:
            continue
        names[name] = image_names_for(split, data.dataset.site_names, prefix=name)
        entries[name] = generate_vqa(split, names[name], seed=EVAL_SEED + i)
    vocab = AnswerVocab.from_entries(entries["train"])
    out = {"vocab": vocab}
    rng = np.random.default_rng(EVAL_SEED)
    for name, es in entries.items():
        if name != "train" and len(es) > n_questions:  # a fixed subset of the test questions
            es = [es[i] for i in np.sort(rng.choice(len(es), n_questions, replace=False))]
        answers, cands = vocab.encode(es, allow_unknown=name != "train")
        tokens = data.tokenizer.encode([e["question"] for e in es])
        out[name] = VQAData(es, image_indices(es, names[name], where=f"vqa {name}"), tokens, answers, cands)
    data.cache[("vqa", n_questions)] = out
    return out


def _vqa(ctx: RunContext, labeled: np.ndarray, evaluation: EvalConfig, n_questions: int, steps: int | None
         ) -> tuple[dict[str, VQAScores] | None, int]:
    data = ctx.data
    vqa = vqa_data(data, n_questions)
    train: VQAData = vqa["train"]
    keep = np.isin(train.image_index, labeled)  # questions about the run's labeled images only
    model = classifier_for(*ctx.modules(text=True), len(vqa["vocab"]))
    tensors = {"image": torch.as_tensor(data.train.images[train.image_index[keep]]),
               "tokens": torch.as_tensor(train.tokens[keep]), "label": torch.as_tensor(train.answers[keep]),
               "candidates": torch.as_tensor(train.candidates[keep])}
    ctx.fit(VQAObjective(model), tensors, model, steps)
    if not distributed.is_main():
        return None, int(keep.sum())
    images = {"test": data.test.images} | ({"holdout": data.holdout.images} if data.holdout is not None else {})
    splits = {k: vqa[k] for k in images}
    out = evaluate_vqa(model.cpu(), images, splits, list(vqa["vocab"].answers), evaluation, EVAL_SEED)
    return {cond: VQAScores.model_validate(m) for cond, m in out.items()}, int(keep.sum())
