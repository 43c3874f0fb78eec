"""The multimodal downstream tasks of an image+report run: retrieval and closed-set VQA.

Each task starts from the arm's initial modules (pre-trained, or freshly initialised for the supervised
arm), is fine-tuned on the run's labeled pairs only (the sparse image-report pairs a team has) and is
evaluated under every condition of :mod:`medrobust.evaluation.multimodal`.
"""

from __future__ import annotations

import numpy as np
import torch

from medrobust.engine import distributed
from medrobust.evaluation.multimodal import (PairData, RetrievalModel, RetrievalObjective, VQAData,
                                             VQAObjective, evaluate_retrieval, evaluate_vqa)
from medrobust.evaluation.robustness import EVAL_SEED, adversarial_subset


def _pairs(split, tokens: np.ndarray, size: int) -> PairData:
    idx = adversarial_subset(split.labels if split.labels.ndim == 1 else split.labels[:, 0], size)
    return PairData(split.images[idx], tokens[idx], [split.texts[i] for i in idx])


def run_downstream(arm, labeled: np.ndarray) -> dict:
    """Fine-tune and evaluate every task in ``multimodal.tasks`` (rank 0 gets the metrics, others ``{}``)."""
    cfg, data = arm.cfg, arm.data
    out: dict = {}
    for task in cfg.multimodal.tasks:
        if task == "retrieval":
            out["retrieval"] = _retrieval(arm, labeled)
        elif task == "vqa":
            if vqa_data(data, cfg.multimodal.vqa_questions) is None:
                out["vqa"] = {"skipped": "needs findings annotations (the synthetic data) to generate questions"}
            else:
                out["vqa"] = _vqa(arm, labeled)
    return out if distributed.is_main() else {}


def _retrieval(arm, labeled: np.ndarray) -> dict | None:
    data, cfg = arm.data, arm.cfg
    image, text, fusion = arm.modules()
    model = RetrievalModel(image, text, fusion)
    tensors = data.train_tensors(labeled, labels=False, text=True)
    arm.fit(RetrievalObjective(model), tensors, _Freezable(model))
    if not distributed.is_main():
        return None
    n = cfg.multimodal.retrieval_pairs
    ev = data.eval_data
    test = _pairs(data.test, ev.test_tokens, n)
    holdout = None if data.holdout is None else _pairs(data.holdout, ev.holdout_tokens, n)
    return evaluate_retrieval(model.cpu(), test, holdout, data.tokenizer, cfg.evaluation, EVAL_SEED,
                              report_edits=cfg.multimodal.report_edits)


class _Freezable:
    """Linear-probe mode for a retrieval model: only the projections (and temperature) train."""

    def __init__(self, model: RetrievalModel):
        self.model = model

    def freeze_encoders(self) -> None:
        for m in (self.model.image_encoder, self.model.text_encoder, self.model.fusion):
            if m is not None:
                m.requires_grad_(False)


def vqa_data(data, n_questions: int):
    """Questions for the train / test / held-out splits, tokenised, with the answer vocabulary (cached)."""
    if ("vqa", n_questions) in data.cache:
        return data.cache[("vqa", n_questions)]
    from medrobust.data.vqa import AnswerVocab, generate_vqa, image_indices, image_names_for

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


def _vqa(arm, labeled: np.ndarray) -> dict | None:
    from medrobust.study.runner import classifier_for

    data, cfg = arm.data, arm.cfg
    vqa = vqa_data(data, cfg.multimodal.vqa_questions)
    train: VQAData = vqa["train"]
    keep = np.isin(train.image_index, labeled)  # questions about the run's labeled images only
    image, text, fusion = arm.modules()
    model = classifier_for(image, text, fusion, len(vqa["vocab"]))
    tensors = {"image": torch.as_tensor(data.train.images[train.image_index[keep]]),
               "tokens": torch.as_tensor(train.tokens[keep]), "label": torch.as_tensor(train.answers[keep]),
               "candidates": torch.as_tensor(train.candidates[keep])}
    arm.fit(VQAObjective(model), tensors, model)
    if not distributed.is_main():
        return None
    images = {"test": data.test.images} | ({"holdout": data.holdout.images} if data.holdout is not None else {})
    splits = {k: vqa[k] for k in images}
    metrics = evaluate_vqa(model.cpu(), images, splits, list(vqa["vocab"].answers), arm.cfg.evaluation, EVAL_SEED)
    metrics["n_train_questions"] = int(keep.sum())
    return metrics

