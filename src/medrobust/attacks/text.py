"""Attacks on the radiology report's text of image+report classifiers: embedding-space PGD and word substitution.

Registered in the family ``report-attack`` (with the joint attack of :mod:`medrobust.attacks.joint`), apart
from the image attacks of the family ``attack``: the call signature differs.

``attack(model, image, tokens, y, *, budget, task, texts=None, tokenizer=None, generator=None) -> AdversarialPair``
(the report-side counterpart of DESIGN principle 6). ``model``: a :class:`~medrobust.models.heads.Classifier`
with a report encoder (or a module with its surface: ``uses_text``, ``text_encoder``, ``text_features``,
``model(image, text_features=...)``); ``image`` ``[N, C, *spatial]`` in ``[0, 1]``; ``tokens`` ``int64 [N, L]``.
The model is put in eval mode and restored, gradients are taken w.r.t. embeddings only (parameters'
``.grad`` untouched), labels enter the loss only, a zero budget returns the clean report exactly.
Randomised models get EOT (:mod:`medrobust.attacks.base`); the report path is differentiable (no BPDA).

- ``report-embedding-pgd``: PGD in token-embedding space, as in Miyato et al. 2017 ("Adversarial Training
  Methods for Semi-Supervised Text Classification", ICLR) and FreeLB (Zhu et al. 2020, ICLR).
- ``report-word-substitution``: greedy search under a budget of ``k`` words as in TextFooler (Jin et al.
  2020, "Is BERT Really Robust?", AAAI), words ranked by a HotFlip-style first-order score (Ebrahimi et al.
  2018, ACL) or by deletion; substitutes are clinical synonyms / abbreviations (``medical_words.json``)
  and readable typos (Belinkov & Bisk 2018, ICLR) — the threat model of adversarial attacks on medical
  text (e.g. BBAEG, Mondal 2021, NAACL). Written by hand: no maintained library attacks a custom
  WordPiece + transformer pipeline on CPU without heavy dependencies.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Literal, Sequence

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from medrobust.attacks.base import (AttackInputError, check_inputs, eot_samples, errors, eval_mode, loss_and_grad,
                                    predict)
from medrobust.data.tokenizer import CLS, PAD
from medrobust.models.heads import Classifier
from medrobust.registry import register
from medrobust.task import Task, task_loss

WORD = re.compile(r"([^\W_]+)")  # a word: a maximal run of letters/digits (one BERT pre-token)
CHUNK = 512  # candidate reports scored per forward pass
_BIG = 1e6  # lexicographic score: wrong decisions first, then the loss


@dataclass
class AdversarialPair:
    """What every report-side or joint attack returns (one type, whatever the attack)."""

    image: torch.Tensor  # [N, C, *spatial] in [0, 1] (the clean image for report-only attacks)
    text_features: torch.Tensor  # [N, D]: logits = model(image, text_features=...)
    tokens: torch.Tensor | None  # [N, L] adversarial token ids (discrete attacks), None for continuous ones
    texts: list[str] | None  # adversarial report strings (discrete attacks), None otherwise
    edits: torch.Tensor | None  # [N] int64 words changed (discrete attacks), None otherwise


def check_report_inputs(model: nn.Module, image: torch.Tensor, tokens: torch.Tensor) -> None:
    """Loud errors for a model without report encoder or mismatched image / token batches."""
    if not getattr(model, "uses_text", False):
        raise ValueError("report attacks need an image+report classifier (model.text_encoder is None)")
    check_inputs(image, 0.0)
    if tokens.ndim != 2 or len(tokens) != len(image):
        raise AttackInputError(f"tokens must be [N, L] with N = {len(image)} images, got {tuple(tokens.shape)}")


class EmbeddingForward(nn.Module):
    """``delta [N, L, D] -> logits``: the classifier with image and clean embeddings fixed.

    Carries the model's ``randomized`` / ``eot_samples`` so :func:`~medrobust.attacks.base.loss_and_grad`
    applies EOT; it is differentiable w.r.t. ``delta`` by construction.
    """

    non_differentiable = False

    def __init__(self, model: nn.Module, image: torch.Tensor, tokens: torch.Tensor, emb: torch.Tensor):
        super().__init__()
        self.model, self.image, self.tokens, self.emb = model, image, tokens, emb
        self.randomized = getattr(model, "randomized", False)
        if hasattr(model, "eot_samples"):
            self.eot_samples = model.eot_samples

    def forward(self, delta: torch.Tensor) -> torch.Tensor:
        feats = self.model.text_features_from_embeddings(self.emb + delta, self.tokens)  # [N, D]
        return self.model(self.image, text_features=feats)


class PairScorer:
    """Wrong decisions and loss of image-report pairs ``(image[idx], tokens)``, chunked, no gradient.

    For a plain :class:`~medrobust.models.heads.Classifier` (late concatenation fusion, deterministic) the
    image features are computed once and reused for every candidate report — the same function, as in
    :class:`~medrobust.models.heads.FixedReport`; any other model is called as ``model(image, text_features=)``.
    """

    def __init__(self, model: nn.Module, image: torch.Tensor, y: torch.Tensor, task: Task):
        self.model, self.image, self.y, self.task = model, image, y, task
        self.samples = eot_samples(model)
        cls, self.image_feats = type(model), None
        if cls.forward is Classifier.forward and cls.features is Classifier.features and self.samples == 1:
            with torch.no_grad():
                self.image_feats = model.image_encoder.forward_features(image)  # [N, D_img]

    def _logits(self, idx: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:  # [b], [b, D] -> [b, K]
        if self.image_feats is not None:
            return self.model.head(torch.cat([self.image_feats[idx], feats], dim=1))
        img = self.image[idx]
        return sum(self.model(img, text_features=feats) for _ in range(self.samples)) / self.samples

    def __call__(self, idx: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        errs, losses = [], []
        with torch.no_grad():
            for s in range(0, len(tokens), CHUNK):
                i = idx[s : s + CHUNK]
                logits = self._logits(i, self.model.text_features(tokens[s : s + CHUNK]))  # [b, K]
                errs.append(errors(logits, self.y[i], self.task))
                losses.append(task_loss(logits, self.y[i], self.task, reduction="none"))
        return torch.cat(errs), torch.cat(losses)  # [B], [B]


def embedding_scale(text_encoder: nn.Module) -> float:
    """Mean L2 norm of the vocabulary's embedding rows (the all-zero [PAD] row excluded)."""
    table = getattr(text_encoder, "token", None)
    if not isinstance(table, nn.Embedding):
        raise ValueError("report-embedding-pgd needs a text encoder with an nn.Embedding `token` table")
    norms = table.weight.detach().norm(dim=1)  # [V]
    return float(torch.cat([norms[:PAD], norms[PAD + 1 :]]).mean())


class EmbeddingPGDParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    steps: int = Field(10, ge=1)
    step_size: float = Field(0.25, gt=0, description="step as a fraction of the per-token radius")
    random_start: bool = True


@register("report-attack", "report-embedding-pgd")
class ReportEmbeddingPGD:
    """L2 PGD on the report's token embeddings, per token, within ``budget × mean embedding-row norm``.

    ``budget`` is relative: the radius is ``budget`` times the mean L2 norm of the embedding table's rows
    (:func:`embedding_scale`), so the same budget means the same thing for models whose embeddings have
    different scales (1.0 ≈ the size of a whole token embedding). Only real tokens move ([PAD] and [CLS]
    stay put). Random start: a uniform direction at radius ``r·U(0, 1)`` per token. Each step moves every
    token by ``step_size·r`` along its normalised gradient and projects back into its ball. Per example the
    iterate with the most wrong decisions (ties: the latest) is returned, as report features.
    """

    Params = EmbeddingPGDParams
    target = "report"

    def __init__(self, params: EmbeddingPGDParams | None = None):
        self.params = params or EmbeddingPGDParams()

    def __call__(self, model: nn.Module, image: torch.Tensor, tokens: torch.Tensor, y: torch.Tensor, *,
                 budget: float, task: Task, texts: Sequence[str] | None = None, tokenizer=None,
                 generator: torch.Generator | None = None) -> AdversarialPair:
        check_report_inputs(model, image, tokens)
        if not budget >= 0:
            raise AttackInputError(f"report-embedding-pgd: budget must be >= 0, got {budget!r}")
        with eval_mode(model), torch.no_grad():
            if budget == 0:
                return AdversarialPair(image, model.text_features(tokens), None, None, None)
            radius = float(budget) * embedding_scale(model.text_encoder)
            emb = model.text_encoder.embed(tokens)  # [N, L, D]
            mask = ((tokens != PAD) & (tokens != CLS)).unsqueeze(-1).to(emb.dtype)  # [N, L, 1]
            best = self._run(EmbeddingForward(model, image, tokens, emb), emb, mask, radius, y, task, generator)
            feats = model.text_features_from_embeddings(emb + best, tokens)  # [N, D]
        return AdversarialPair(image, feats, None, None, None)

    def _run(self, f: EmbeddingForward, emb, mask, radius, y, task, generator) -> torch.Tensor:
        p = self.params
        delta = torch.zeros_like(emb)  # [N, L, D]
        if p.random_start:
            direction = _unit(torch.randn(emb.shape, generator=generator, dtype=emb.dtype).to(emb.device))
            scale = torch.rand(emb.shape[:2] + (1,), generator=generator, dtype=emb.dtype).to(emb.device)
            delta = direction * scale * radius * mask
        best, best_err = delta.clone(), torch.full((len(emb),), -1.0, device=emb.device)
        for step in range(p.steps + 1):
            if step < p.steps:
                logits, grad = loss_and_grad(f, delta, y, task)  # [N, K], [N, L, D]
            else:
                logits = predict(f, delta, eot_samples(f))
            err = errors(logits, y, task)  # [N]
            better = (err >= best_err).view(-1, 1, 1)
            best, best_err = torch.where(better, delta, best), torch.maximum(err, best_err)
            if step < p.steps:
                delta = delta + p.step_size * radius * _unit(grad * mask)
                norm = delta.norm(dim=-1, keepdim=True)  # [N, L, 1]
                delta = delta * (radius / norm.clamp_min(1e-12)).clamp(max=1.0) * mask  # per-token L2 ball
        return best


def _unit(v: torch.Tensor) -> torch.Tensor:  # [N, L, D] per-token unit vectors (zero stays zero)
    return v / v.norm(dim=-1, keepdim=True).clamp_min(1e-12)


# ----------------------------------------------------------------------------------- word substitution


@lru_cache(maxsize=1)
def word_groups() -> tuple[tuple[str, ...], ...]:
    """The groups of interchangeable clinical terms shipped in ``medical_words.json`` (package data)."""
    text = resources.files("medrobust.attacks").joinpath("medical_words.json").read_text(encoding="utf-8")
    return tuple(tuple(g["terms"]) for g in json.loads(text)["groups"])


@lru_cache(maxsize=1)
def _synonyms() -> dict[str, tuple[str, ...]]:
    """lower-cased one-word term -> the other one-word terms of its group."""
    out = {}
    for group in word_groups():
        single = [t for t in group if WORD.fullmatch(t)]
        for t in single:
            out[t.lower()] = tuple(s for s in single if s.lower() != t.lower())
    return out


def typos(word: str) -> list[str]:
    """Readable one-edit typos of a word of >= 4 letters, first and last letter kept.

    Swap of two adjacent inner letters, deletion of one inner letter, duplication of one inner letter.
    """
    n = len(word)
    if n < 4 or not word.isalpha():
        return []
    out = [word[:i] + word[i + 1] + word[i] + word[i + 2 :] for i in range(1, n - 2)]  # swaps
    out += [word[:i] + word[i + 1 :] for i in range(1, n - 1)]  # deletions
    out += [word[: i + 1] + word[i:] for i in range(1, n - 1)]  # duplications
    return [t for t in dict.fromkeys(out) if t != word]


def _match_case(like: str, term: str) -> str:
    if any(c.isupper() for c in term):  # abbreviations keep their own case (CMG, R)
        return term
    if like.isupper() and len(like) > 1:
        return term.upper()
    return term[:1].upper() + term[1:] if like[:1].isupper() else term


def synonyms_at(parts: list[str], j: int) -> list[str]:
    """Synonyms for word ``parts[j]``, none inside compounds such as ``B/L`` or ``T-spine``."""
    before, after = parts[j - 1][-1:], parts[j + 1][:1]
    if (before and before in "/-") or (after and after in "/-"):
        return []
    return [_match_case(parts[j], t) for t in _synonyms().get(parts[j].lower(), ())]


class WordSubstitutionParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rank: Literal["gradient", "loss"] = Field("gradient", description="word importance: gradient norm or deletion")
    max_candidates: int = Field(8, ge=1, description="substitutions tried per word (synonyms first, then typos)")
    typos: bool = True


@register("report-attack", "report-word-substitution")
class ReportWordSubstitution:
    """Greedy substitution of at most ``budget = k`` words of each report (TextFooler-style search).

    A report is split into words (runs of letters/digits) and separators, which are kept, so the text
    changes only where a word is replaced. Each word is changed at most once, by another one-word term of
    its group in ``medical_words.json`` or a typo (:func:`typos`). Words are ranked once on the clean
    report, by the first-order score ``Σ_t ‖∂L/∂e_t‖₂`` over the word's WordPiece tokens (HotFlip: it
    bounds the first-order loss change of any substitution; ``rank="gradient"``) or by the loss increase
    when the word is deleted (``rank="loss"``). Then, position by position, the candidates of all reports
    are re-tokenised and scored in one batch; the best (most wrong decisions, then highest loss) is kept
    if it beats the current report. A report stops when all its decisions are wrong, ``k`` words are
    changed, or its words run out. Typos are drawn from a seed taken from ``generator`` (0 if None) and
    the report's index and word position, so a run with budget ``k`` is the prefix of the run with
    ``k + 1``: robust accuracy cannot rise with ``k``.
    """

    Params = WordSubstitutionParams
    target = "report"

    def __init__(self, params: WordSubstitutionParams | None = None):
        self.params = params or WordSubstitutionParams()

    def __call__(self, model: nn.Module, image: torch.Tensor, tokens: torch.Tensor, y: torch.Tensor, *,
                 budget: int, task: Task, texts: Sequence[str] | None = None, tokenizer=None,
                 generator: torch.Generator | None = None) -> AdversarialPair:
        check_report_inputs(model, image, tokens)
        missing = [name for name, v in (("texts", texts), ("tokenizer", tokenizer)) if v is None]
        if missing:
            raise ValueError(f"report-word-substitution works on the report strings: pass {' and '.join(missing)}")
        if isinstance(budget, bool) or not float(budget).is_integer() or budget < 0:
            raise AttackInputError(f"report-word-substitution: budget must be a whole number of words >= 0, "
                                   f"got {budget!r}")
        texts = list(texts)
        if len(texts) != len(tokens) or not torch.equal(_encode(tokenizer, texts, tokens), tokens):
            raise ValueError("report-word-substitution: tokens must equal tokenizer.encode(texts)")
        seed = 0 if generator is None else int(torch.randint(0, 2**31, (1,), generator=generator))
        with eval_mode(model):
            adv, edits = list(texts), [0] * len(texts)
            if budget > 0:
                score = PairScorer(model, image, y, task)
                adv, edits = self._search(score, tokens, texts, tokenizer, int(budget), seed)
            out = tokens.clone()
            changed = [i for i, n in enumerate(edits) if n]
            if changed:
                out[torch.as_tensor(changed, device=out.device)] = _encode(tokenizer, [adv[i] for i in changed], tokens)
            with torch.no_grad():
                feats = model.text_features(out)  # [N, D]
        return AdversarialPair(image, feats, out, adv, torch.as_tensor(edits, dtype=torch.int64, device=tokens.device))

    def _candidates(self, parts: list[str], j: int, rng: random.Random) -> list[str]:
        cands = synonyms_at(parts, j)[: self.params.max_candidates]
        room = self.params.max_candidates - len(cands)
        if self.params.typos and room > 0:
            pool = typos(parts[j])
            cands += rng.sample(pool, min(room, len(pool)))
        return cands

    def _search(self, score: PairScorer, tokens, texts, tokenizer, k: int, seed: int):
        n, device = len(texts), tokens.device
        parts = [WORD.split(t) for t in texts]  # words at odd indices; "".join(parts[i]) == texts[i]
        err, loss = score(torch.arange(n, device=device), tokens)  # [N], [N]
        current, done = (err.double() * _BIG + loss.double()).tolist(), (err >= 1.0).tolist()
        positions = [[] if d else [j for j in range(1, len(p), 2) if synonyms_at(p, j) or
                                   (self.params.typos and typos(p[j]))] for p, d in zip(parts, done)]
        ranking = self._rank(score, tokens, parts, positions, loss, tokenizer)
        edits, pointer = [0] * n, [0] * n
        while True:
            active = [i for i in range(n) if not done[i] and edits[i] < k and pointer[i] < len(ranking[i])]
            if not active:
                return ["".join(p) for p in parts], edits
            owner, slot, batch = [], [], []
            for i in active:
                j = ranking[i][pointer[i]]
                pointer[i] += 1
                cands = self._candidates(parts[i], j, random.Random((seed << 40) + (i << 20) + j))
                owner += [i] * len(cands)
                slot += [(j, c) for c in cands]
                batch += [_join(parts[i], j, c) for c in cands]
            if not batch:
                continue
            e, l = score(torch.as_tensor(owner, device=device), _encode(tokenizer, batch, tokens))
            key, best = (e.double() * _BIG + l.double()).tolist(), {}
            for b, i in enumerate(owner):
                if key[b] > current[i] and (i not in best or key[b] > key[best[i]]):
                    best[i] = b
            for i, b in best.items():
                j, c = slot[b]
                parts[i][j], current[i], edits[i], done[i] = c, key[b], edits[i] + 1, bool(e[b] >= 1.0)

    def _rank(self, score: PairScorer, tokens, parts, positions, loss, tokenizer) -> list[list[int]]:
        """Per report, its candidate word positions by decreasing importance (ties: reading order)."""
        owner = [i for i, pos in enumerate(positions) for _ in pos]
        if not owner:
            return [[] for _ in parts]
        if self.params.rank == "loss":
            batch = [_join(parts[i], j, "") for i, pos in enumerate(positions) for j in pos]
            idx = torch.as_tensor(owner, device=tokens.device)
            flat = (score(idx, _encode(tokenizer, batch, tokens))[1] - loss[idx]).tolist()
        else:
            model = score.model
            with torch.no_grad():
                emb = model.text_encoder.embed(tokens)  # [N, L, D]
            f = EmbeddingForward(model, score.image, tokens, emb)
            per_token = loss_and_grad(f, torch.zeros_like(emb), score.y, score.task)[1].norm(dim=-1).tolist()  # [N][L]
            spans = _token_spans(parts, tokenizer)
            flat = [sum(per_token[i][slice(*spans[i][j])]) for i, pos in enumerate(positions) for j in pos]
        out, at = [], 0
        for pos in positions:
            scores, at = flat[at : at + len(pos)], at + len(pos)
            out.append([j for _, j in sorted(zip(scores, pos), key=lambda t: -t[0])])
        return out


def _encode(tokenizer, texts: list[str], like: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(tokenizer.encode(texts)).to(like.device)  # [B, L]


def _join(parts: list[str], j: int, word: str) -> str:
    return "".join(parts[:j]) + word + "".join(parts[j + 1 :])


def _token_spans(parts: list[list[str]], tokenizer) -> list[dict[int, tuple[int, int]]]:
    """Per report, piece index -> ``[start, end)`` of its WordPiece tokens in the encoded ids ([CLS] = 0).

    Words and separators are pre-token boundaries of the BERT pre-tokeniser, so a report's tokens are the
    concatenation of its pieces' tokens; each distinct piece is encoded once.
    """
    pieces = sorted({s for p in parts for s in p if s.strip()})
    counts = dict(zip(pieces, ((tokenizer.encode(pieces) != PAD).sum(1) - 1).tolist())) if pieces else {}
    out = []
    for p in parts:
        at, spans = 1, {}
        for j, s in enumerate(p):
            n = counts.get(s, 0)
            spans[j] = (min(at, tokenizer.max_len), min(at + n, tokenizer.max_len))
            at += n
        out.append(spans)
    return out
