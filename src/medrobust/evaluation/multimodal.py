"""Downstream multimodal tasks of the image+report arms: image-report retrieval and closed-set VQA.

Both reuse the arm's pre-trained encoders (and fusion module), are fine-tuned on the labeled (sparse)
pairs of the run, and are evaluated under the study's conditions: clean, corrupted image, held-out site,
perturbed report, missing modality and adversarial image / report. Attacks are the library's own,
applied to a classifier view of each task (retrieval: logits over the gallery; VQA: logits over the
answers of the question's closed set), so the same PGD / word-substitution code and checks apply.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from medrobust.attacks.text import WORD, ReportWordSubstitution, WordSubstitutionParams, synonyms_at, typos
from medrobust.corruptions.base import apply
from medrobust.data.base import Task, to_unit
from medrobust.data.tokenizer import PAD
from medrobust.data.vqa import vqa_accuracy
from medrobust.evaluation.adversarial import REFERENCE_PGD, build_attack, to_pixels
from medrobust.evaluation.retrieval import mean_rank_degradation, retrieval_metrics
from medrobust.methods.losses import clip_loss
from medrobust.schema import Component

CORRUPTION_SEVERITY = 3


# ---------------------------------------------------------------- retrieval


class RetrievalModel(nn.Module):
    """Image and report embeddings in one space: the arm's encoders (+ fusion) and linear projections.

    With a fusion module the embeddings are the fused [CLS] output of one modality alone (the other
    dropped), as a single-stream model retrieves; otherwise the pooled encoder features.
    """

    def __init__(self, image_encoder: nn.Module, text_encoder: nn.Module, fusion: nn.Module | None = None,
                 embed_dim: int = 64):
        super().__init__()
        self.image_encoder, self.text_encoder, self.fusion = image_encoder, text_encoder, fusion
        dim_i = fusion.feature_dim if fusion is not None else image_encoder.feature_dim
        dim_t = fusion.feature_dim if fusion is not None else text_encoder.feature_dim
        self.image_proj = nn.Linear(dim_i, embed_dim, bias=False)
        self.text_proj = nn.Linear(dim_t, embed_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(float(np.log(1 / 0.07))))

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:  # [N, C, *sp] -> unit [N, E]
        if self.fusion is not None:
            h = self.fusion(self.image_encoder.forward_tokens(x), None, None)[0]
        else:
            h = self.image_encoder.forward_features(x)
        return nn.functional.normalize(self.image_proj(h), dim=-1)

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:  # [N, L] -> unit [N, E]
        return self.text_embedding(self.text_encoder.embed(tokens), tokens)

    def text_embedding(self, emb: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        if self.fusion is not None:
            h = self.fusion(None, self.text_encoder.forward_token_embeddings(emb, tokens), tokens == PAD)[0]
        else:
            h = self.text_encoder.forward_embeddings(emb, tokens)
        return nn.functional.normalize(self.text_proj(h), dim=-1)

    @property
    def scale(self) -> torch.Tensor:
        return self.logit_scale.clamp(max=float(np.log(100.0))).exp()


class RetrievalObjective(nn.Module):
    """Symmetric InfoNCE on the labeled pairs (the supervised-on-sparse-pairs retrieval objective)."""

    def __init__(self, model: RetrievalModel):
        super().__init__()
        self.model = model

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        img, txt = self.model.encode_image(batch["image"]), self.model.encode_text(batch["tokens"])
        return {"loss": clip_loss(img, txt, self.model.logit_scale.clamp(max=float(np.log(100.0))))}


class ImageToReports(nn.Module):
    """Image -> logits over a fixed gallery of report embeddings (the attack target for image->report)."""

    randomized = False
    non_differentiable = False

    def __init__(self, model: RetrievalModel, gallery: torch.Tensor):
        super().__init__()
        self.model, self.gallery = model, gallery  # gallery [G, E]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [N, C, *sp] -> [N, G]
        return self.model.scale * self.model.encode_image(x) @ self.gallery.T


class ReportsToImages(nn.Module):
    """The surface of an image+report classifier whose logits rank a fixed gallery of images by a report.

    Lets the report-side attacks (word substitution, embedding PGD) attack report -> image retrieval: the
    'class' of report i is image i of the gallery; the image argument is ignored.
    """

    randomized = False
    non_differentiable = False
    uses_text = True

    def __init__(self, model: RetrievalModel, gallery: torch.Tensor):
        super().__init__()
        self.model, self.gallery = model, gallery  # [G, E]
        self.text_encoder = model.text_encoder

    def text_features(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.model.encode_text(tokens)

    def text_features_from_embeddings(self, emb: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        return self.model.text_embedding(emb, tokens)

    def forward(self, image, tokens=None, *, text_features=None):
        t = self.text_features(tokens) if text_features is None else text_features
        return self.model.scale * t @ self.gallery.T


def _embed(fn, x, batch_size: int) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([fn(x[s : s + batch_size]) for s in range(0, len(x), batch_size)])


def perturb_reports(texts: list[str], k: int, seed: int) -> list[str]:
    """``k`` random words of each report replaced by a synonym, abbreviation or typo (not adversarial)."""
    rng, out = random.Random(seed), []
    for text in texts:
        parts = WORD.split(text)
        words = [j for j in range(1, len(parts), 2)]
        for j in rng.sample(words, min(k, len(words))):
            cands = synonyms_at(parts, j) or typos(parts[j])
            if cands:
                parts[j] = rng.choice(cands)
        out.append("".join(parts))
    return out


@dataclass
class PairData:
    """Image-report pairs of one split for retrieval: uint8 images, token ids and report strings."""

    images: np.ndarray
    tokens: np.ndarray
    texts: list[str]


def evaluate_retrieval(model: RetrievalModel, test: PairData, holdout: PairData | None, tokenizer, cfg,
                       seed: int, report_edits: int = 2) -> dict:
    """Retrieval metrics per condition id (:data:`medrobust.record.CONDITIONS`), and the mean-rank degradation
    of each perturbed condition.

    ``cfg``: the study's ``EvalConfig`` (batch size, corruptions, reference ε); ``report_edits``: words
    replaced in the perturbed- and adversarial-report conditions.
    """
    bs = cfg.batch_size
    model.eval()
    x = to_unit(test.images)
    tok = torch.as_tensor(test.tokens)
    img = _embed(model.encode_image, x, bs)
    txt = _embed(model.encode_text, tok, bs)
    out = {"clean": retrieval_metrics(img @ txt.T)}
    corr = []
    for name in cfg.corruptions:
        g = torch.Generator().manual_seed(seed + CORRUPTION_SEVERITY)
        xc = torch.cat([apply(name, x[s : s + bs], CORRUPTION_SEVERITY, g) for s in range(0, len(x), bs)])
        corr.append(retrieval_metrics(_embed(model.encode_image, xc, bs) @ txt.T))
    if corr:
        out["corrupted_image"] = _mean_metrics(corr)
    k = max(1, int(report_edits))
    noisy = torch.as_tensor(tokenizer.encode(perturb_reports(test.texts, k, seed)))[:, : tok.shape[1]]
    out["perturbed_text"] = retrieval_metrics(img @ _embed(model.encode_text, noisy, bs).T)
    labels = torch.arange(len(x))
    task = Task("multiclass", tuple(str(i) for i in range(len(x))))
    eps = to_pixels(cfg.reference_epsilon)
    pgd = build_attack(REFERENCE_PGD)
    g = torch.Generator().manual_seed(seed)
    x_adv = torch.cat([pgd(ImageToReports(model, txt), x[s : s + bs], labels[s : s + bs], eps=eps, task=task,
                           generator=g) for s in range(0, len(x), bs)])
    out["adversarial_image"] = retrieval_metrics(
        _embed(model.encode_image, x_adv, bs) @ txt.T)
    words = ReportWordSubstitution(WordSubstitutionParams())
    adv_tok = torch.cat([words(ReportsToImages(model, img), x[s : s + bs], tok[s : s + bs], labels[s : s + bs],
                               budget=k, task=task, texts=test.texts[s : s + bs], tokenizer=tokenizer,
                               generator=g).tokens for s in range(0, len(x), bs)])
    out["adversarial_text"] = retrieval_metrics(img @ _embed(model.encode_text, adv_tok, bs).T)
    if holdout is not None:
        out["holdout"] = retrieval_metrics(_embed(model.encode_image, to_unit(holdout.images), bs)
                                                 @ _embed(model.encode_text, torch.as_tensor(holdout.tokens), bs).T)
    for cond, m in list(out.items()):
        if cond not in ("clean", "holdout"):
            m["degradation"] = mean_rank_degradation(out["clean"], m)
    return out


def _mean_metrics(items: list[dict]) -> dict:
    """Average of nested metric dicts with the same keys."""
    if isinstance(items[0], dict):
        return {k: _mean_metrics([d[k] for d in items]) for k in items[0]}
    return float(np.mean(items))


# ---------------------------------------------------------------- closed-set VQA


class ClosedSetVQA(nn.Module):
    """An image+question classifier over the answer vocabulary, restricted to each question's closed set.

    ``model`` is an image+report classifier (late or fusion) whose 'report' is the question; ``candidates``
    ``[N, A]`` bool masks the answers allowed for each question. ``forward(image)`` (questions bound, for
    attacks) or ``logits(image, tokens, candidates)``.
    """

    def __init__(self, model: nn.Module, tokens: torch.Tensor | None = None, candidates: torch.Tensor | None = None):
        super().__init__()
        self.model, self.tokens, self.candidates = model, tokens, candidates
        self.randomized = getattr(model, "randomized", False)
        self.non_differentiable = False

    @staticmethod
    def restrict(logits: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        return logits.masked_fill(~candidates, -1e4)

    def logits(self, image, tokens, candidates, missing=None):
        return self.restrict(self.model(image, tokens, missing=missing), candidates)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.logits(image, self.tokens, self.candidates)

    def select(self, idx: torch.Tensor) -> "ClosedSetVQA":
        return ClosedSetVQA(self.model, self.tokens[idx], self.candidates[idx])


class VQAObjective(nn.Module):
    """Cross-entropy over each question's closed answer set."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        logits = ClosedSetVQA.restrict(self.model(batch["image"], batch["tokens"]), batch["candidates"])
        return {"loss": nn.functional.cross_entropy(logits, batch["label"])}


@dataclass
class VQAData:
    """Questions of one split resolved to tensors: image index into the split, tokens, answer, allowed set."""

    entries: list[dict]
    image_index: np.ndarray  # [Q] row of each question's image in its split
    tokens: np.ndarray  # [Q, L]
    answers: np.ndarray  # [Q] answer index
    candidates: np.ndarray  # [Q, A] bool


def evaluate_vqa(model: nn.Module, images: dict[str, np.ndarray], data: dict[str, VQAData], answers: list[str],
                 cfg, seed: int) -> dict:
    """VQA accuracy (overall / closed / open / per question type) per condition id
    (:data:`medrobust.record.CONDITIONS`).

    ``images`` and ``data`` map a split name (``test``, ``holdout``) to its uint8 images and questions;
    ``answers`` is the answer vocabulary (logit order).
    """
    bs = cfg.batch_size
    model.eval()
    out = {}

    def run(split: str, transform=None, missing=None, attack=None):
        d = data[split]
        preds = []
        g = torch.Generator().manual_seed(seed)
        for s in range(0, len(d.answers), bs):
            x = to_unit(images[split][d.image_index[s : s + bs]])
            tok, cand = torch.as_tensor(d.tokens[s : s + bs]), torch.as_tensor(d.candidates[s : s + bs])
            if transform is not None:
                x = transform(x)
            if attack is not None:
                y = torch.as_tensor(d.answers[s : s + bs])
                x = attack(ClosedSetVQA(model, tok, cand), x, y, g)
            with torch.no_grad():
                logits = ClosedSetVQA(model).logits(None if missing == "image" else x, tok, cand, missing)
            preds.append(logits.argmax(1))
        return torch.cat(preds).numpy()

    def score(split, pred):
        return vqa_accuracy([answers[i] for i in pred], data[split].entries)

    out["clean"] = score("test", run("test"))
    corr = []
    for name in cfg.corruptions:
        gc = torch.Generator().manual_seed(seed + CORRUPTION_SEVERITY)
        corr.append(score("test", run("test", transform=lambda x, n=name, g=gc: apply(n, x, CORRUPTION_SEVERITY, g))))
    if corr:
        out["corrupted_image"] = _mean_metrics(corr)
    if "holdout" in data:
        out["holdout"] = score("holdout", run("holdout"))
    out["image_missing"] = score("test", run("test", missing="image"))
    task = Task("multiclass", tuple(answers))
    pgd = build_attack(REFERENCE_PGD)
    eps = to_pixels(cfg.reference_epsilon)
    out["adversarial_image"] = score(
        "test", run("test", attack=lambda m, x, y, g: pgd(m, x, y, eps=eps, task=task, generator=g)))
    return out

