"""Turn a data source into what the runs need: held-in training data, in-site test, held-out site,
tokenised reports and indications, and the encoders' input statistics. Done once per study.

Two texts, two uses: the **report** (written after the image is read; close to a label oracle) serves
pre-training and retrieval; the **indication** (written before) is the only text a downstream classifier
sees, so the classifier's evaluation data (:class:`EvalData`) carries indications, never reports.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from medrobust import registry
from medrobust.config import ConfigError, StudyConfig
from medrobust.data.base import Dataset, Split
from medrobust.data.tokenizer import ReportTokenizer
from medrobust.evaluation.robustness import EvalData
from medrobust.models.layers import image_stats


@dataclass(frozen=True)
class Tokens:
    """One text field tokenised for every split the runs use."""

    train: np.ndarray  # [N_train, L]
    test: np.ndarray
    holdout: np.ndarray | None


@dataclass
class PreparedData:
    dataset: Dataset
    train: Split  # held-in sites only: all images for pre-training, labels for fine-tuning
    test: Split  # held-in sites
    holdout: Split | None  # every image of the held-out sites
    tokenizer: ReportTokenizer | None  # trained on the training reports and indications
    reports: Tokens | None
    indications: Tokens | None
    eval_data: EvalData
    mean: list[float]
    std: list[float]
    cache: dict = field(default_factory=dict)  # derived data built on first use (e.g. VQA questions)
    notes: list[str] = field(default_factory=list)  # reading notes of the source, then what preparing did

    def group_overlaps(self) -> dict[str, int]:
        """Groups (patients; VQA: images) present in two of train / test / holdout, per pair (0 = no leak)."""
        sets = {k: set(s.groups.tolist()) for k, s in (("train", self.train), ("test", self.test),
                                                       ("holdout", self.holdout)) if s is not None and s.groups is not None}
        keys = list(sets)
        return {f"{a}&{b}": len(sets[a] & sets[b]) for i, a in enumerate(keys) for b in keys[i + 1:]}

    @property
    def has_text(self) -> bool:
        """Image-report pairs (pre-training, retrieval)."""
        return self.reports is not None

    @property
    def has_indications(self) -> bool:
        """Text a classifier may see at decision time."""
        return self.indications is not None

    def train_tensors(self, index: np.ndarray | None = None, *, labels: bool, text: str | None = None,
                      sites: bool = False) -> dict[str, torch.Tensor]:
        """Training tensors (``image``, optionally ``label``, ``tokens``, ``site``) for the samples at ``index``;
        ``text``: ``"report"`` or ``"indication"`` tokens as ``tokens``, or None."""
        idx = np.arange(len(self.train)) if index is None else index
        out = {"image": torch.as_tensor(self.train.images[idx])}
        if sites:
            out["site"] = torch.as_tensor(self.train.sites[idx]).long()
        if labels:
            out["label"] = torch.as_tensor(self.train.labels[idx])
        if text is not None:
            tokens = {"report": self.reports, "indication": self.indications}[text]
            if tokens is None:
                raise ValueError(f"train_tensors: the data has no {text} text")
            out["tokens"] = torch.as_tensor(tokens.train[idx])
        return out

    def describe(self) -> str:
        ds = self.dataset
        names = ds.site_names
        sites = ", ".join(names) if len(names) <= 8 else f"{len(names)} ({', '.join(names[:4])}, ...)"
        groups = [s.groups for s in (self.train, self.test, self.holdout) if s is not None and s.groups is not None]
        overlaps = {k: v for k, v in self.group_overlaps().items() if v}
        shared = ("none in two sets" if not overlaps else "in two sets: " + ", ".join(
            f"{v} in {k.replace('&', ' and ')}" for k, v in overlaps.items()) + " (the data's own split)")
        patients = f"; {len(np.unique(np.concatenate(groups)))} {ds.group_name} ({shared})" if groups else ""
        rows = "questions" if ds.context_name == "question" else "images"
        return (f"{ds.name} ({ds.source}){f', {ds.modality}' if ds.modality else ''}; "
                f"images {'×'.join(map(str, ds.image_shape))}; sites {sites}{patients}; "
                f"{len(self.train)} training {rows}, {len(self.test)} in-site test"
                + (f", {len(self.holdout)} held-out-site" if self.holdout is not None else "")
                + ("; image-report pairs" if self.has_text else "; images only (no report text)")
                + ("; indications (the text a classifier sees)" if self.has_indications else ""))


def prepare(cfg: StudyConfig) -> PreparedData:
    source = registry.get("data", cfg.data.source)
    dataset: Dataset = source(source.Params.model_validate(cfg.data.params))
    unknown = [s for s in cfg.data.holdout_sites if s not in dataset.site_names]
    if unknown:
        raise ConfigError(f"'data.holdout_sites': {unknown} not among the sites of {dataset.source or dataset.name} "
                          f"({list(dataset.site_names)}); use [] for data without sites")
    held = np.array([dataset.site_names.index(s) for s in cfg.data.holdout_sites], dtype=np.int64)
    if len(held) == len(dataset.site_names):
        raise ConfigError("'data.holdout_sites' holds out every site; nothing is left to train on")
    in_site = lambda split: split.subset(~np.isin(split.sites, held))  # noqa: E731
    train, test = in_site(dataset.train), in_site(dataset.test)
    unanswerable = test.subset(~test.labeled & test.extras["unseen_answer"]) if "unseen_answer" in test.extras else None
    test = test.subset(test.labeled)  # metrics need labels; unlabeled test pairs are not scored
    holdout = None
    if len(held):
        holdout = Split.concat([s.subset(np.isin(s.sites, held) & s.labeled) for s in (dataset.train, dataset.val, dataset.test)])
    notes = list(dataset.notes)
    if holdout is not None and holdout.groups is not None:  # a patient seen at a held-out site is not trained on
        for name, split in (("training", train), ("in-site test", test)):
            shared = np.isin(split.groups, holdout.groups) if split.groups is not None else np.zeros(len(split), bool)
            if shared.any():
                notes.append(f"{int(shared.sum())} {name} images belong to {len(np.unique(split.groups[shared]))} "
                             f"{dataset.group_name} also imaged at a held-out site; left out of the {name} set so "
                             "the held-out site stays unseen")
                if name == "training":
                    train = split.subset(~shared)
                else:
                    test = split.subset(~shared)
    if not train.labeled.any():
        raise ConfigError(f"{dataset.source or dataset.name}: no labeled training images on the held-in sites")

    tokenizer = reports = indications = None
    eval_kwargs: dict = {}
    if dataset.has_text or dataset.has_indications:
        tparams = registry.get("encoder", cfg.text_encoder.name).Params.model_validate(cfg.text_encoder.params)
        corpus = (train.texts or []) + (train.indications or [])
        tokenizer = ReportTokenizer.train(corpus, vocab_size=tparams.vocab_size, max_len=tparams.max_len)
        tokens = lambda field: None if getattr(train, field) is None else Tokens(  # noqa: E731
            tokenizer.encode(getattr(train, field)), tokenizer.encode(getattr(test, field)),
            None if holdout is None else tokenizer.encode(getattr(holdout, field)))
        reports, indications = tokens("texts"), tokens("indications")
        if indications is not None:  # what the classifier sees with the image
            eval_kwargs = {"test_tokens": indications.test, "test_texts": test.indications,
                           "holdout_tokens": indications.holdout, "tokenizer": tokenizer}
    if "answer_type" in test.extras:  # VQA: accuracy on all, closed (yes/no) and open questions, unseen answers wrong
        kinds = np.asarray(test.extras["answer_type"])
        eval_kwargs["test_subgroups"] = {"all": np.ones(len(kinds), bool), "CLOSED": kinds == 0, "OPEN": kinds == 1}
        unscored = unanswerable.extras["answer_type"] if len(unanswerable) else np.zeros(0, np.int64)
        eval_kwargs["test_unanswerable"] = {"all": len(unscored), "CLOSED": int((unscored == 0).sum()),
                                            "OPEN": int((unscored == 1).sum())}
    eval_data = EvalData(task=dataset.task, test_images=test.images, test_labels=test.labels,
                         holdout_images=None if holdout is None else holdout.images,
                         holdout_labels=None if holdout is None else holdout.labels, **eval_kwargs)
    mean, std = image_stats(train.images)
    return PreparedData(dataset, train, test, holdout, tokenizer, reports, indications, eval_data, mean, std,
                        notes=notes)
