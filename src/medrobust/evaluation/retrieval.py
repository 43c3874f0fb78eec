"""Image-report retrieval metrics: Recall@K, mean and median rank, and mean-rank degradation.

The protocol of cross-modal medical retrieval (ConVIRT, Zhang et al. 2022; GLoRIA, Huang et al. 2021):
``N`` image-report pairs, a similarity matrix ``sim[i, j]`` between image ``i`` and report ``j``, pair
``i <-> i`` is the match. Image-to-report retrieval ranks row ``i`` (the reports for image ``i``);
report-to-image retrieval ranks column ``j`` (the images for report ``j``).

Robustness follows Robust-MMR's reporting of retrieval under perturbation (image corruption, report
perturbation, adversarial attack): the mean rank of the true match on perturbed inputs minus (and divided
by) the mean rank on clean inputs, per direction (:func:`mean_rank_degradation`).

Rank of the true match (1 = best), with ``g`` the number of candidates scoring strictly higher than the
match and ``t`` the number of *other* candidates scoring exactly the same:

- ``ties="optimistic"`` (default): ``rank = g + 1`` — ties are resolved in favour of the match.
- ``ties="pessimistic"``: ``rank = g + t + 1``.
- ``ties="random"``: the expectation under a uniformly random order of the tied candidates,
  ``rank = g + t / 2 + 1``, and ``R@K = clip((K - g) / (t + 1), 0, 1)`` (the probability that the match
  lands in the top ``K``).

Ties only occur with degenerate similarities (collapsed or zero embeddings, e.g. every report removed);
then optimistic ranks look perfect, so every result also carries ``tied`` (the fraction of queries whose
match is tied with another candidate) and a model under a missing-modality perturbation should be scored
with ``ties="random"`` (a constant similarity then gives chance-level numbers).

``R@K`` is the fraction of queries whose match ranks ``<= K``; since a rank never exceeds ``N``,
``R@K = 1.0`` whenever ``N <= K`` (e.g. R@10 with 10 or fewer pairs). The median rank is the ordinary
median (the mean of the two middle ranks when ``N`` is even, so it may end in ``.5``); with
``ties="random"`` the mean and median are taken over the per-query expected ranks.

Written by hand (a few vectorised lines; torchmetrics' retrieval metrics take per-query index lists and
have no mean/median rank).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

DIRECTIONS = ("image_to_report", "report_to_image")
KS = (1, 5, 10)
Ties = Literal["optimistic", "pessimistic", "random"]


def _as_numpy(x) -> np.ndarray:
    """A float64 numpy copy of a numpy array or torch tensor (detached, on CPU)."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def similarity(img_emb, txt_emb):
    """Cosine similarity of every image embedding with every report embedding.

    Args:
        img_emb: ``[N, E]`` image embeddings (torch tensor or numpy array).
        txt_emb: ``[M, E]`` report embeddings.

    Returns:
        ``float32 [N, M]`` torch tensor, ``sim[i, j] = <img_i, txt_j> / (|img_i| |txt_j|)``; a zero
        embedding has similarity 0 with everything.

    Raises:
        ValueError: when either input is not 2-D or the embedding widths differ.
    """
    a, b = torch.as_tensor(img_emb).float(), torch.as_tensor(txt_emb).float()
    if a.ndim != 2 or b.ndim != 2:
        raise ValueError(f"similarity: expected img_emb [N, E] and txt_emb [M, E], got shapes "
                         f"{tuple(a.shape)} and {tuple(b.shape)}")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"similarity: embedding widths differ: img_emb has E={a.shape[1]}, txt_emb E={b.shape[1]}")
    a = torch.nn.functional.normalize(a, dim=1)  # [N, E], zero rows stay zero
    b = torch.nn.functional.normalize(b, dim=1)  # [M, E]
    return a @ b.T  # [N, M]


def _check_sim(sim) -> np.ndarray:
    s = _as_numpy(sim)
    if s.ndim != 2 or s.shape[0] != s.shape[1] or s.shape[0] < 1:
        raise ValueError(f"retrieval_metrics: sim must be a square [N, N] matrix with N >= 1 (pair i <-> i is the "
                         f"match), got shape {s.shape}")
    if not np.isfinite(s).all():
        i, j = np.argwhere(~np.isfinite(s))[0]
        raise ValueError(f"retrieval_metrics: sim[{i}, {j}] = {s[i, j]}; expected finite similarities")
    return s


def _greater_and_tied(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row ``i``: ``g`` = #{j : s[i, j] > s[i, i]}, ``t`` = #{j != i : s[i, j] == s[i, i]}; ``int64 [N]``."""
    match = np.diagonal(s)[:, None]  # [N, 1]
    greater = (s > match).sum(axis=1)  # [N]
    tied = (s == match).sum(axis=1) - 1  # [N], the match itself excluded
    return greater.astype(np.int64), tied.astype(np.int64)


def match_ranks(sim, ties: Ties = "optimistic") -> dict[str, np.ndarray]:
    """Rank of the true match (1 = best) of every query, per direction.

    Args:
        sim: ``[N, N]`` similarities, ``sim[i, j]`` between image ``i`` and report ``j``.
        ties: tie rule (module docstring).

    Returns:
        ``{"image_to_report": float64 [N], "report_to_image": float64 [N]}`` (integers unless
        ``ties="random"``).
    """
    s = _check_sim(sim)
    _check_ties(ties)
    out = {}
    for direction, m in zip(DIRECTIONS, (s, s.T)):
        g, t = _greater_and_tied(m)
        extra = {"optimistic": 0.0, "pessimistic": t, "random": t / 2.0}[ties]
        out[direction] = (g + extra + 1.0).astype(np.float64)
    return out


def _check_ties(ties: str) -> None:
    if ties not in ("optimistic", "pessimistic", "random"):
        raise ValueError(f"ties={ties!r}; expected 'optimistic', 'pessimistic' or 'random'")


def retrieval_metrics(sim, ks: tuple[int, ...] = KS, ties: Ties = "optimistic") -> dict[str, dict[str, float]]:
    """Recall@K, mean and median rank of image-to-report and report-to-image retrieval.

    Args:
        sim: ``[N, N]`` similarities (numpy or torch); pair ``i <-> i`` is the match.
        ks: the cut-offs ``K`` of ``R@K`` (positive ints).
        ties: tie rule (module docstring).

    Returns:
        ``{direction: {"R@1": f, "R@5": f, "R@10": f, "mean_rank": f, "median_rank": f, "tied": f, "n": N}}``
        for both :data:`DIRECTIONS`; recalls and ``tied`` are fractions in [0, 1], ranks are in [1, N].

    Raises:
        ValueError: a non-square or empty matrix, a NaN/inf similarity, a bad ``K`` or tie rule.
    """
    s = _check_sim(sim)
    _check_ties(ties)
    bad = [k for k in ks if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1]
    if bad or not ks:
        raise ValueError(f"retrieval_metrics: ks={tuple(ks)!r}; expected positive integers such as (1, 5, 10)")
    ranks = match_ranks(s, ties)
    out: dict[str, dict[str, float]] = {}
    for direction, m in zip(DIRECTIONS, (s, s.T)):
        g, t = _greater_and_tied(m)  # [N], [N]
        r = ranks[direction]
        res: dict[str, float] = {}
        for k in ks:
            if ties == "random":
                hit = np.clip((k - g) / (t + 1.0), 0.0, 1.0)  # P(match in top k) under random tie order
            else:
                hit = (r <= k).astype(np.float64)
            res[f"R@{k}"] = float(hit.mean())
        res.update(mean_rank=float(r.mean()), median_rank=float(np.median(r)), tied=float((t > 0).mean()),
                   n=len(r))
        out[direction] = res
    return out


def mean_rank_degradation(clean: dict, perturbed: dict) -> dict[str, dict[str, float]]:
    """How much worse the true match ranks under a perturbation, per direction.

    Args:
        clean: :func:`retrieval_metrics` on the clean pairs.
        perturbed: :func:`retrieval_metrics` on the same ``N`` pairs with one side perturbed.

    Returns:
        ``{direction: {"clean": mr_c, "perturbed": mr_p, "delta": mr_p - mr_c, "ratio": mr_p / mr_c}}`` for the
        directions present in both; ``delta > 0`` (``ratio > 1``) means retrieval got worse.

    Raises:
        ValueError: when a direction lacks ``mean_rank``/``n``, or the two were computed on different ``N``
        (mean ranks of different pool sizes are not comparable).
    """
    out = {}
    for direction in DIRECTIONS:
        if direction not in clean and direction not in perturbed:
            continue
        for name, res in (("clean", clean), ("perturbed", perturbed)):
            if not isinstance(res.get(direction), dict) or "mean_rank" not in res[direction] or "n" not in res[direction]:
                raise ValueError(f"mean_rank_degradation: {name}[{direction!r}] has no 'mean_rank' and 'n'; expected "
                                 "the output of retrieval_metrics for both directions")
        c, p = clean[direction], perturbed[direction]
        if c["n"] != p["n"]:
            raise ValueError(f"mean_rank_degradation: {direction}: clean has n={c['n']} pairs, perturbed n={p['n']}; "
                             "expected the same pairs")
        mc, mp = float(c["mean_rank"]), float(p["mean_rank"])
        out[direction] = {"clean": mc, "perturbed": mp, "delta": mp - mc, "ratio": mp / mc}
    if not out:
        raise ValueError(f"mean_rank_degradation: neither input has a direction {DIRECTIONS}; expected the output of "
                         "retrieval_metrics")
    return out
