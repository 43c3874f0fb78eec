"""Image-report retrieval metrics: parity with a brute-force double loop (with ties), perfect and reversed
rankings, small N, the tie rules, cosine similarity and mean-rank degradation."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from medrobust.evaluation.retrieval import match_ranks, mean_rank_degradation, retrieval_metrics, similarity


def brute_force(sim: np.ndarray, ks=(1, 5, 10)) -> dict:
    """Optimistic ranks by an explicit double loop: 1 + number of candidates scoring strictly higher."""
    n = sim.shape[0]
    out = {}
    for direction, m in (("image_to_report", sim), ("report_to_image", sim.T)):
        ranks = []
        for i in range(n):
            greater = 0
            for j in range(n):
                if m[i][j] > m[i][i]:
                    greater += 1
            ranks.append(greater + 1)
        res = {f"R@{k}": sum(r <= k for r in ranks) / n for k in ks}
        s = sorted(ranks)
        median = s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2
        res.update(mean_rank=sum(ranks) / n, median_rank=median)
        out[direction] = res
    return out


@pytest.mark.parametrize("n,levels,seed", [(1, 0, 0), (7, 3, 1), (10, 0, 2), (25, 4, 3), (64, 0, 4), (64, 5, 5)])
def test_metrics_equal_brute_force_including_ties(n, levels, seed):
    rng = np.random.default_rng(seed)
    sim = rng.normal(size=(n, n))
    if levels:  # few distinct values: many ties, also with the match
        sim = rng.integers(0, levels, size=(n, n)).astype(np.float64)
    got = retrieval_metrics(torch.as_tensor(sim))
    ref = brute_force(sim)
    for direction in ref:
        for key, value in ref[direction].items():
            assert got[direction][key] == pytest.approx(value, abs=1e-12), (direction, key)
        assert got[direction]["n"] == n
    if levels:
        assert max(got["image_to_report"]["tied"], got["report_to_image"]["tied"]) > 0


def test_perfect_and_reversed_rankings():
    n = 20
    perfect = np.eye(n) + 0.01 * np.arange(n)[None, :]  # the match wins every row and column
    res = retrieval_metrics(perfect)
    for d in res.values():
        assert d["R@1"] == d["R@5"] == d["R@10"] == 1.0
        assert d["mean_rank"] == d["median_rank"] == 1.0 and d["tied"] == 0.0
    worst = -np.eye(n)  # the match loses to every other candidate
    res = retrieval_metrics(worst, ties="pessimistic")
    for d in res.values():
        assert d["R@1"] == d["R@5"] == d["R@10"] == 0.0
        assert d["mean_rank"] == d["median_rank"] == float(n)


def test_directions_differ_on_an_asymmetric_matrix():
    sim = np.array([[1.0, 0.0, 0.0],
                    [2.0, 1.0, 0.0],  # image 1 prefers report 0
                    [0.0, 0.0, 1.0]])
    res = retrieval_metrics(sim)
    np.testing.assert_array_equal(match_ranks(sim)["image_to_report"], [1, 2, 1])
    np.testing.assert_array_equal(match_ranks(sim)["report_to_image"], [2, 1, 1])  # report 0: image 1 scores 2 > 1
    assert res["image_to_report"]["R@1"] == pytest.approx(2 / 3)
    assert res["report_to_image"]["mean_rank"] == pytest.approx(4 / 3)
    assert res["image_to_report"]["median_rank"] == 1.0


def test_small_n_gives_full_recall_at_k_at_least_n():
    rng = np.random.default_rng(0)
    for n in (1, 3, 10):
        res = retrieval_metrics(rng.normal(size=(n, n)), ties="pessimistic")
        assert res["image_to_report"]["R@10"] == 1.0 and res["report_to_image"]["R@10"] == 1.0
    res = retrieval_metrics(-np.eye(11), ties="pessimistic")  # match ranks last (11) -> outside the top 10
    assert res["image_to_report"]["R@10"] == 0.0


def test_tie_rules_on_a_constant_matrix():
    n = 8
    const = np.zeros((n, n))
    opt, pes, rnd = (retrieval_metrics(const, ties=t)["image_to_report"] for t in ("optimistic", "pessimistic", "random"))
    assert opt["R@1"] == 1.0 and opt["mean_rank"] == 1.0 and opt["tied"] == 1.0
    assert pes["R@1"] == 0.0 and pes["mean_rank"] == float(n)
    assert rnd["mean_rank"] == pytest.approx((n + 1) / 2)  # chance level
    assert rnd["R@1"] == pytest.approx(1 / n) and rnd["R@5"] == pytest.approx(5 / n) and rnd["R@10"] == 1.0


def test_random_ties_equal_the_average_over_every_order_of_the_tied_candidates():
    sim = np.array([[1.0, 1.0, 2.0, 1.0, 0.0],
                    [1.0, 0.5, 0.5, 0.5, 0.5],
                    [0.0, 0.0, 0.0, 0.0, 0.0],
                    [3.0, 3.0, 3.0, 1.0, 1.0],
                    [0.0, 1.0, 2.0, 3.0, 4.0]])
    ks = (1, 2, 3)
    got = retrieval_metrics(sim, ks=ks, ties="random")["image_to_report"]
    ranks, hits = [], {k: [] for k in ks}
    for i, row in enumerate(sim):  # enumerate every tie-breaking order of the row (brute force)
        orders = list(itertools.permutations(range(len(row))))
        rs = []
        for tie_break in orders:
            order = sorted(range(len(row)), key=lambda j: (-row[j], tie_break[j]))
            rs.append(order.index(i) + 1)
        ranks.append(np.mean(rs))
        for k in ks:
            hits[k].append(np.mean([r <= k for r in rs]))
    assert got["mean_rank"] == pytest.approx(np.mean(ranks))
    assert got["median_rank"] == pytest.approx(np.median(ranks))
    for k in ks:
        assert got[f"R@{k}"] == pytest.approx(np.mean(hits[k]))


def test_similarity_is_cosine():
    torch.manual_seed(0)
    a, b = torch.randn(5, 7), torch.randn(4, 7)
    s = similarity(a, b)
    assert s.shape == (5, 4)
    ref = np.array([[float(x @ y / (x.norm() * y.norm())) for y in b] for x in a])
    np.testing.assert_allclose(s.numpy(), ref, atol=1e-6)
    np.testing.assert_allclose(similarity(3.0 * a, b).numpy(), ref, atol=1e-6)  # scale-free
    assert similarity(torch.zeros(2, 7), b).abs().max() == 0  # zero embedding: similarity 0
    with pytest.raises(ValueError, match="widths differ"):
        similarity(a, torch.randn(4, 6))
    with pytest.raises(ValueError, match=r"\[N, E\]"):
        similarity(torch.randn(5), b)


def test_bad_input_is_rejected_with_the_problem_named():
    with pytest.raises(ValueError, match=r"square \[N, N\].*\(3, 4\)"):
        retrieval_metrics(np.zeros((3, 4)))
    bad = np.zeros((3, 3))
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match=r"sim\[1, 2\] = nan"):
        retrieval_metrics(bad)
    with pytest.raises(ValueError, match="ks="):
        retrieval_metrics(np.eye(3), ks=(0, 5))
    with pytest.raises(ValueError, match="ties='best'"):
        retrieval_metrics(np.eye(3), ties="best")


def test_mean_rank_degradation_sign_and_ratio():
    rng = np.random.default_rng(1)
    n = 50
    emb = rng.normal(size=(n, 16))
    clean = retrieval_metrics(similarity(emb, emb + 0.1 * rng.normal(size=(n, 16))))
    noisy = retrieval_metrics(similarity(emb, emb + 3.0 * rng.normal(size=(n, 16))))
    deg = mean_rank_degradation(clean, noisy)
    for d in ("image_to_report", "report_to_image"):
        assert deg[d]["clean"] == clean[d]["mean_rank"] and deg[d]["perturbed"] == noisy[d]["mean_rank"]
        assert deg[d]["delta"] == pytest.approx(noisy[d]["mean_rank"] - clean[d]["mean_rank"])
        assert deg[d]["delta"] > 0 and deg[d]["ratio"] > 1  # more noise, worse ranks
        assert deg[d]["ratio"] == pytest.approx(noisy[d]["mean_rank"] / clean[d]["mean_rank"])
    same = mean_rank_degradation(clean, clean)
    assert same["image_to_report"]["delta"] == 0.0 and same["image_to_report"]["ratio"] == 1.0
    with pytest.raises(ValueError, match="n=50 pairs, perturbed n=10"):
        mean_rank_degradation(clean, retrieval_metrics(np.eye(10)))
    with pytest.raises(ValueError, match="has no 'mean_rank'"):
        mean_rank_degradation(clean, {"image_to_report": {"R@1": 0.5}})
