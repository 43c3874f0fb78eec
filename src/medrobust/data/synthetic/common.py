"""Shared pieces of the non-chest synthetic modalities (:mod:`.ultrasound`, :mod:`.fundus`, :mod:`.ct`).

- :func:`stream`: the per-(modality, site, purpose) PCG64 streams (spawn keys disjoint from the chest's);
- :func:`grid` / :func:`splat`: pixel-centre coordinates and bilinear point splatting (small blobs and thin
  lines are splatted, then Gaussian-blurred: cost independent of how many there are);
- :func:`sample_status`, :func:`write_reports`: report codes (the chest's, :mod:`.reports`) and template
  reports from a per-modality :class:`Lexicon`, in each site's style (A structured, B terse, C narrative,
  D abbreviated);
- :func:`sample_indications`: the one-line request written before the image is read, weakly tied to the
  findings through a per-modality :class:`Requests` table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from medrobust.data.synthetic.reports import FALSE_POSITIVE, HEDGED, NEGATED, OMITTED, STATED, _Pick

__all__ = ["FALSE_POSITIVE", "HEDGED", "NEGATED", "OMITTED", "STATED", "Lexicon", "Requests", "grid", "splat",
           "stream", "sample_indications", "sample_status", "write_reports"]

MODALITY_KEYS = {"ultrasound": 1, "fundus": 2, "ct": 3}  # last spawn-key word (the chest's keys have two words)
LABELS, ANATOMY, ACQUISITION, REPORTS, INDICATIONS = range(5)  # purposes of the per-site streams
SHUFFLE_KEY = 1000
STYLE = {"A": "structured", "B": "terse", "C": "narrative", "D": "abbrev"}
HEDGES = ("possible {p}", "cannot exclude {p}", "questionable {p}", "{p}, not definite", "probable {p}")
HEDGES_ABBREV = ("? {p}", "poss {p}", "?{p}")
HEDGE_CUES = ("possible", "cannot exclude", "questionable", "not definite", "probable", "?", "poss ")
_DRAWS = 96  # uniforms per report


def stream(seed: int, modality: str, site_index: int, purpose: int) -> np.random.Generator:
    """The random stream of one modality, site and purpose (seed taken modulo 2**64)."""
    key = (int(site_index), int(purpose), MODALITY_KEYS[modality])
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(int(seed) % (1 << 64), spawn_key=key)))


def grid(size: int) -> np.ndarray:
    """Pixel-centre coordinates in ``[-1, 1]``, ``float32 [size]``."""
    return ((np.arange(size, dtype=np.float32) + 0.5) / size * 2 - 1).astype(np.float32)


def col(a, ndim: int = 3) -> np.ndarray:
    """``float32 [B]`` reshaped to ``[B, 1, ...]`` (``ndim`` dims) for broadcasting over pixels."""
    return np.asarray(a, dtype=np.float32).reshape((-1,) + (1,) * (ndim - 1))


def splat(b: np.ndarray, y: np.ndarray, x: np.ndarray, w: np.ndarray, n: int, size: int) -> np.ndarray:
    """Bilinear splat of weighted points at world coordinates ``(x, y)`` in ``[-1, 1]``.

    Args:
        b: ``int [K]`` image index of each point; y, x, w: ``[K]`` coordinates and weights.
        n: number of images; size: side ``S``.

    Returns:
        ``float32 [n, S, S]`` (points outside the image are dropped).
    """
    py, px = (np.asarray(y) + 1) * (size / 2) - 0.5, (np.asarray(x) + 1) * (size / 2) - 0.5
    iy, ix = np.floor(py).astype(np.int64), np.floor(px).astype(np.int64)
    fy, fx = py - iy, px - ix
    out = np.zeros(n * size * size, dtype=np.float64)
    for dy, dx, wt in ((0, 0, (1 - fy) * (1 - fx)), (0, 1, (1 - fy) * fx), (1, 0, fy * (1 - fx)), (1, 1, fy * fx)):
        yy, xx = iy + dy, ix + dx
        ok = (yy >= 0) & (yy < size) & (xx >= 0) & (xx < size)
        flat = (np.asarray(b)[ok] * size + yy[ok]) * size + xx[ok]
        out += np.bincount(flat, weights=(w * wt)[ok], minlength=n * size * size)
    return out.reshape(n, size, size).astype(np.float32)


def sample_status(rng: np.random.Generator, findings: np.ndarray, subtle: np.ndarray, p_negate: float
                  ) -> np.ndarray:
    """Report codes (:mod:`.reports`: 0 absent, 1 negated, 2 stated, 3 hedged, 4 omitted, 5 false positive).

    Present findings: omitted 8% / hedged 12% when ``subtle`` (bool ``[n, F]``), else 4% / 7%; absent ones: 3%
    false-positive hedges, ``p_negate`` pertinent negatives.
    """
    u = rng.random(findings.shape)
    p_omit, p_hedge = np.where(subtle, 0.08, 0.04), np.where(subtle, 0.12, 0.07)
    present = np.where(u < p_omit, OMITTED, np.where(u < p_omit + p_hedge, HEDGED, STATED))
    absent = np.where(u < 0.03, FALSE_POSITIVE, np.where(u < 0.03 + p_negate, NEGATED, 0))
    return np.where(findings == 1, present, absent).astype(np.int64)


@dataclass(frozen=True)
class Lexicon:
    """What a modality's reports say. Phrases are lower-case, without a final period.

    ``stated(finding, i, attrs, pick, abbrev)`` describes a present finding of image ``i``; ``imagined`` the
    small subtle version a false-positive hedge names; ``negated`` the pertinent negatives.
    """

    findings: tuple[str, ...]
    stated: Callable[[str, int, dict, _Pick, bool], str]
    imagined: dict[str, tuple[str, ...]]
    negated: dict[str, tuple[str, ...]]
    negated_abbrev: dict[str, tuple[str, ...]]
    normal: tuple[str, ...]  # impression / terse line when nothing is asserted
    normal_abbrev: tuple[str, ...]
    exam: tuple[str, ...]  # EXAMINATION line (structured), also the terse header
    opening: tuple[str, ...]  # first sentence of a narrative report ({n} is filled with a small number)
    background: tuple[str, ...]  # statements about the normal anatomy
    head_abbrev: tuple[str, ...]
    recommend: dict[str, tuple[str, ...]]  # finding stated -> an impression add-on (may be absent)


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _mention(lex: Lexicon, j: int, code: int, i: int, attrs: dict, pick: _Pick, abbrev: bool) -> str | None:
    f = lex.findings[j]
    if code == STATED:
        return lex.stated(f, i, attrs, pick, abbrev)
    if code in (HEDGED, FALSE_POSITIVE):
        p = lex.stated(f, i, attrs, pick, abbrev) if code == HEDGED else pick(lex.imagined[f])
        return pick(HEDGES_ABBREV if abbrev else HEDGES).format(p=p)
    if code == NEGATED:
        return pick((lex.negated_abbrev if abbrev else lex.negated)[f])
    return None


def _report(lex: Lexicon, style: str, i: int, status: np.ndarray, attrs: dict, pick: _Pick, indication: str) -> str:
    abbrev = style == "abbrev"
    items = [_mention(lex, j, int(c), i, attrs, pick, abbrev) for j, c in enumerate(status)]
    items = list(dict.fromkeys(s for s in items if s))  # findings sharing a negation say it once
    asserted = [_mention(lex, j, int(c), i, attrs, pick, abbrev) for j, c in enumerate(status)
                if c in (STATED, HEDGED, FALSE_POSITIVE)]
    if style == "abbrev":
        items = pick.order(items) + ([] if asserted else [pick(lex.normal_abbrev)])
        return pick(lex.head_abbrev) + pick(("; ", ". ")).join(items)
    sentences = [_cap(s) + "." for s in items]
    extra = [lex.recommend[f] for f, c in zip(lex.findings, status) if c == STATED and f in lex.recommend]
    impression = (" ".join(_cap(s) + "." for s in asserted) if asserted else pick(lex.normal) + ".")
    if extra and pick.chance(0.5):
        impression += " " + pick(extra[0])
    if style == "structured":
        lines = ["EXAMINATION: " + pick(lex.exam)] if pick.chance(0.7) else []
        if pick.chance(0.8):
            lines.append(f"INDICATION: {_cap(indication).rstrip('.')}.")
        body = pick.sample(lex.background, pick((1, 1, 2))) + sentences
        return "\n".join(lines + ["FINDINGS: " + " ".join(body), "IMPRESSION: " + _cap(impression)])
    if style == "terse":
        text = " ".join(pick.order(sentences) + ([] if asserted else [_cap(pick(lex.normal)) + "."]))
        text = (pick(("", "", pick(lex.exam) + " ")) + text).strip()
        return text.lower() if pick.chance(0.2) else text
    out = [pick(lex.opening).format(n=pick(range(2, 7)))] + pick.order(sentences)
    if not asserted and pick.chance(0.6):
        out.append(pick(lex.background))
    if pick.chance(0.5):
        out.append("IMPRESSION: " + _cap(impression))
    return " ".join(out)


def write_reports(rng: np.random.Generator, lex: Lexicon, status: np.ndarray, attrs: dict[str, np.ndarray],
                  site: str, indications: list[str]) -> list[str]:
    """One report per image in ``site``'s :data:`STYLE` (``status``: ``int64 [n, F]`` codes)."""
    u = rng.random((len(status), _DRAWS))
    style = STYLE[site]
    return [_report(lex, style, i, status[i], attrs, _Pick(u[i]), indications[i]) for i in range(len(status))]


@dataclass(frozen=True)
class Requests:
    """How a modality's examinations are requested: presentation -> (base weight, prose, abbreviated);
    finding -> presentations made likelier (factor); finding -> clinical question (prose, abbreviated)."""

    reasons: dict[str, tuple[float, str, str]]
    likelier: dict[str, dict[str, float]]
    queries: dict[str, tuple[str, str]]
    age: tuple[float, float] = (58.0, 15.0)
    p_male: float = 0.5


def sample_indications(rng: np.random.Generator, req: Requests, findings: np.ndarray, names: tuple[str, ...],
                       site: str) -> list[str]:
    """One request per study, e.g. ``"54-year-old woman with palpable lump. Evaluate for mass"``."""
    n = len(findings)
    keys = list(req.reasons)
    weights = np.tile(np.array([req.reasons[k][0] for k in keys]), (n, 1))
    for j, f in enumerate(names):
        for reason, factor in req.likelier.get(f, {}).items():
            weights[:, keys.index(reason)] *= np.where(findings[:, j] == 1, factor, 1.0)
    weights /= weights.sum(axis=1, keepdims=True)
    reason = (rng.random((n, 1)) > np.cumsum(weights, axis=1)).sum(axis=1).clip(max=len(keys) - 1)
    age = np.clip(rng.normal(req.age[0], req.age[1], n), 18, 95).astype(int)
    male, with_age = rng.random(n) < req.p_male, rng.random(n) < 0.6
    asked = rng.random(findings.shape) < np.where(findings == 1, 0.3, 0.07)
    pick_query = rng.random(n)
    abbrev = STYLE[site] in ("abbrev", "terse")
    out = []
    for i in range(n):
        text = req.reasons[keys[reason[i]]][2 if abbrev else 1]
        queries = [req.queries[f][1 if abbrev else 0] for f, a in zip(names, asked[i]) if a and f in req.queries]
        if with_age[i]:
            text = (f"{age[i]}{'M' if male[i] else 'F'} {text}" if abbrev else
                    f"{age[i]}-year-old {'man' if male[i] else 'woman'} with {text}")
        if queries:
            q = queries[int(pick_query[i] * len(queries))]
            text = f"{text} {q}" if abbrev else f"{text}. {_cap(q)}"
        out.append(text)
    return out
