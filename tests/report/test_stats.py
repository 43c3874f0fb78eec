"""Tests for medrobust.report.stats: CI, paired test, hierarchical bootstrap, Holm, verdicts, number formats."""

import math

import numpy as np
import pytest
from scipy import stats as sps

from medrobust.report import stats

# t_{0.975, df} from a printed table (independent of the code under test)
T975 = {2: 4.302652729911275, 3: 3.182446305284263, 4: 2.7764451051977987}


def test_mean_ci_matches_textbook_formula():
    xs = [0.52, 0.61, 0.70, 0.93]
    mean, half, n = stats.mean_ci(xs)
    m = sum(xs) / 4
    s = math.sqrt(sum((x - m) ** 2 for x in xs) / 3)
    assert n == 4
    assert mean == pytest.approx(m, abs=1e-12)
    assert half == pytest.approx(T975[3] * s / math.sqrt(4), rel=1e-9)


def test_mean_ci_drops_missing_and_handles_small_n():
    mean, half, n = stats.mean_ci([0.4, None, float("nan"), 0.6, 0.5])
    assert n == 3 and mean == pytest.approx(0.5)
    assert half == pytest.approx(T975[2] * 0.1 / math.sqrt(3))
    mean, half, n = stats.mean_ci([0.7])
    assert (mean, n) == (0.7, 1) and math.isnan(half)
    mean, half, n = stats.mean_ci([])
    assert n == 0 and math.isnan(mean) and math.isnan(half)


def test_mean_ci_other_confidence_level_is_narrower():
    xs = [1.0, 2.0, 4.0]
    assert stats.mean_ci(xs, 0.90)[1] < stats.mean_ci(xs)[1]


def test_paired_matches_ttest_rel_and_direct_formula():
    a = [0.55, 0.61, 0.58, 0.66, 0.60]
    b = [0.41, 0.50, 0.43, 0.49, 0.52]
    r = stats.paired(a, b)
    d = np.subtract(a, b)
    half = T975[4] * d.std(ddof=1) / math.sqrt(5)
    assert r["n"] == 5
    assert r["mean_diff"] == pytest.approx(d.mean())
    assert r["ci_low"] == pytest.approx(d.mean() - half, rel=1e-9)
    assert r["ci_high"] == pytest.approx(d.mean() + half, rel=1e-9)
    assert r["p"] == pytest.approx(sps.ttest_rel(a, b).pvalue, rel=1e-12)
    tstat = d.mean() / (d.std(ddof=1) / math.sqrt(5))
    assert r["p"] == pytest.approx(2 * sps.t.sf(abs(tstat), 4), rel=1e-9)
    assert r["mean_a"] == pytest.approx(np.mean(a)) and r["mean_b"] == pytest.approx(np.mean(b))


def test_paired_direction_and_missing_pairs():
    r = stats.paired([0.1, 0.2, None, 0.3], [0.2, 0.4, 0.5, float("nan")])
    assert r["n"] == 2
    assert r["mean_diff"] == pytest.approx(-0.15)
    assert r["mean_b"] == pytest.approx(0.3)


def test_paired_edge_cases_are_explicit():
    one = stats.paired([0.6], [0.5])
    assert one["n"] == 1 and one["mean_diff"] == pytest.approx(0.1)
    assert math.isnan(one["ci_low"]) and math.isnan(one["ci_high"]) and math.isnan(one["p"])
    const = stats.paired([0.6, 0.7, 0.8], [0.5, 0.6, 0.7])  # every pair differs by exactly 0.1
    assert const["ci_low"] == pytest.approx(0.1) and const["ci_high"] == pytest.approx(0.1)
    assert math.isnan(const["p"])
    same = stats.paired([0.5, 0.6], [0.5, 0.6])
    assert same["mean_diff"] == 0 and math.isnan(same["p"])
    assert stats.verdict(same) == stats.UNDETERMINED
    none = stats.paired([None], [0.5])
    assert none["n"] == 0 and math.isnan(none["mean_diff"])
    with pytest.raises(ValueError):
        stats.paired([0.1, 0.2], [0.1])


@pytest.mark.parametrize(
    "a,b,higher,expected",
    [
        ([0.60, 0.62, 0.65], [0.50, 0.51, 0.53], True, "better"),  # clearly positive
        ([0.50, 0.51, 0.53], [0.60, 0.62, 0.65], True, "worse"),  # clearly negative
        ([0.55, 0.45, 0.52], [0.50, 0.50, 0.50], True, "inconclusive"),  # straddles 0, CI ±9 pp
        ([0.50, 0.51, 0.52], [0.50, 0.50, 0.51], True, "no difference larger than 2.5 pp"),  # CI -0.8 to +2.1 pp
        # robustness gap: smaller is better, so a clearly negative difference is "better"
        ([0.10, 0.12, 0.11], [0.30, 0.31, 0.33], False, "better"),
        ([0.30, 0.31, 0.33], [0.10, 0.12, 0.11], False, "worse"),
        ([0.20, 0.30, 0.25], [0.25, 0.25, 0.25], False, "inconclusive"),
        ([0.01] * 3, [0.0] * 3, True, "undetermined"),  # zero variance: the CI collapses, p is undefined
        ([0.9], [0.1], True, "not enough seeds"),
    ],
)
def test_verdict(a, b, higher, expected):
    assert stats.verdict(stats.paired(a, b), higher_is_better=higher) == expected


def test_zero_variance_difference_is_undetermined_not_clear():
    r = stats.paired([0.01] * 3, [0.0] * 3)  # was "better": the collapsed CI [0.01, 0.01] excludes 0
    assert r["ci_low"] == r["ci_high"] == pytest.approx(0.01) and math.isnan(r["p"])
    assert stats.classify(r) == stats.UNDETERMINED and stats.verdict(r) == "undetermined"


def test_verdict_uses_the_adjusted_p_not_the_mean():
    r = dict(n=3, mean_diff=0.1, ci_low=-0.01, ci_high=0.2, p=0.06)
    assert stats.verdict(r) == stats.INCONCLUSIVE  # mean positive, p not small
    assert stats.verdict(dict(r, p=0.01)) == stats.BETTER
    assert stats.verdict(dict(r, p=0.01), higher_is_better=False) == stats.WORSE
    assert stats.verdict(dict(r, p=0.01, p_adj=0.2)) == stats.INCONCLUSIVE  # clear only after correction
    assert stats.verdict(dict(r, p=0.2, p_adj=0.01)) == stats.BETTER
    assert stats.verdict(dict(r, p=0.01, p_adj=float("nan"))) == stats.UNDETERMINED


def test_nulls_are_bounded_or_inconclusive():
    bounded = dict(n=3, mean_diff=0.006, ci_low=-0.010, ci_high=0.022, p=0.4)
    assert stats.verdict(bounded) == "no difference larger than 2.5 pp"
    assert stats.classify(bounded) == stats.BOUNDED
    wide = dict(n=3, mean_diff=0.015, ci_low=-0.09, ci_high=0.12, p=0.6)
    assert stats.verdict(wide) == "inconclusive" and stats.classify(wide) == stats.INCONCLUSIVE
    assert stats.null_bound(-0.010, 0.022) == pytest.approx(0.025)
    assert stats.null_bound(-0.030, 0.010) == pytest.approx(0.030)  # exactly 3 pp is still a bound
    assert stats.null_bound(-0.031, 0.0) != stats.null_bound(-0.031, 0.0)  # 3.5 pp: NaN, not a bound
    assert stats.null_bound(0.0, 0.005) == pytest.approx(0.005)
    # a difference whose raw CI excludes 0 but is not clear after Holm is still bounded by its CI
    assert stats.verdict(dict(n=3, mean_diff=0.01, ci_low=0.002, ci_high=0.018, p=0.03, p_adj=0.3)) == \
        "no difference larger than 2.0 pp"
    assert stats.verdict(dict(bounded, p=0.4), unit="auc") == "inconclusive"  # only pp are bounded


def _holm_by_hand(ps):
    """Holm (1979) step-down, written independently: sort, multiply by m - rank, running max, cap at 1."""
    m = len(ps)
    order = sorted(range(m), key=lambda i: ps[i])
    adj, best = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        best = max(best, (m - rank) * ps[i])
        adj[i] = min(1.0, best)
    return adj


def test_holm_twenty_comparisons_at_p_003_are_none_clear():
    adj = stats.holm([0.03] * 20)
    assert adj == pytest.approx([0.6] * 20)  # the smallest is multiplied by 20; the running max keeps 0.6
    comps = [dict(n=3, mean_diff=0.05, ci_low=0.005, ci_high=0.095, p=0.03, p_adj=p) for p in adj]
    assert not any(stats.classify(c) in stats.CLEAR for c in comps)
    assert all(stats.classify(dict(c, p_adj=c["p"])) == stats.BETTER for c in comps)  # uncorrected: all 20


def test_holm_matches_a_hand_computation_and_skips_undefined_p():
    ps = [0.01, 0.04, 0.03, 0.005, 0.2, 0.5]
    # by hand: sorted 0.005, 0.01, 0.03, 0.04, 0.2, 0.5 times 6, 5, 4, 3, 2, 1 = 0.03, 0.05, 0.12, 0.12, 0.4, 0.5
    assert stats.holm(ps) == pytest.approx([0.05, 0.12, 0.12, 0.03, 0.4, 0.5])
    assert stats.holm(ps) == pytest.approx(_holm_by_hand(ps))
    try:  # statsmodels is optional; compare with it when it is installed
        from statsmodels.stats.multitest import multipletests
    except ImportError:
        pass
    else:
        assert stats.holm(ps) == pytest.approx(list(multipletests(ps, method="holm")[1]))
    out = stats.holm([0.01, float("nan"), None, 0.02])  # two tests, not four
    assert out[0] == pytest.approx(0.02) and out[3] == pytest.approx(0.02)
    assert math.isnan(out[1]) and math.isnan(out[2])
    assert stats.holm([0.9, 0.8]) == pytest.approx([1.0, 1.0]) and stats.holm([]) == []


def _bootstrap_by_loop(a, b, n_boot, seed, confidence=0.95):
    """The documented draw order, one resample at a time in plain Python."""
    S, N = len(a), len(a[0])
    rng = np.random.default_rng(seed)
    seeds = rng.integers(0, S, size=(n_boot, S))
    idx = [rng.integers(0, N, size=(n_boot, N)) for _ in range(S)]
    stat = []
    for k in range(n_boot):
        total = 0.0
        for j in range(S):
            s = seeds[k, j]
            total += sum(a[s][i] - b[s][i] for i in idx[j][k]) / N
        stat.append(total / S)
    tail = 100 * (1 - confidence) / 2
    lo, hi = np.percentile(stat, [tail, 100 - tail])
    le, ge = sum(x <= 0 for x in stat), sum(x >= 0 for x in stat)
    return lo, hi, min(1.0, 2 * (min(le, ge) + 1) / (n_boot + 1))


A = [[1, 0, 1, 1, 0], [1, 1, 1, 0, 1], [0, 1, 1, 1, 1]]
B = [[0, 0, 1, 0, 0], [1, 0, 1, 0, 1], [0, 1, 0, 1, 0]]


def test_hierarchical_bootstrap_equals_a_brute_force_loop():
    r = stats.hierarchical_bootstrap(A, B, n_boot=300, seed=7)
    lo, hi, p = _bootstrap_by_loop(A, B, 300, 7)
    assert (r["ci_low"], r["ci_high"], r["p"]) == pytest.approx((lo, hi, p), abs=1e-12)
    assert r["mean_diff"] == pytest.approx(np.mean(np.subtract(A, B))) and (r["n"], r["n_examples"]) == (3, 5)


def test_hierarchical_bootstrap_matches_the_exact_resampling_distribution():
    """Two seeds × two examples: every resample (2² seed draws × 2² example draws per drawn seed) enumerated."""
    import itertools

    a, b = [[1.0, 0.0], [1.0, 1.0]], [[0.0, 0.0], [0.0, 1.0]]  # per-example differences [1, 0] and [1, 0]
    d = np.subtract(a, b)
    values = []
    for s in itertools.product(range(2), repeat=2):
        for i in itertools.product(itertools.product(range(2), repeat=2), repeat=2):
            values.append(np.mean([d[s[j]][list(i[j])].mean() for j in range(2)]))
    exact = np.array(values)  # equally likely outcomes
    r = stats.hierarchical_bootstrap(a, b, n_boot=20000, seed=1)
    assert r["ci_low"] == pytest.approx(np.percentile(exact, 2.5), abs=0.13)
    assert r["ci_high"] == pytest.approx(np.percentile(exact, 97.5), abs=0.13)
    p_exact = 2 * min((exact <= 0).mean(), (exact >= 0).mean())
    assert r["p"] == pytest.approx(min(1.0, p_exact), abs=0.01)


def test_hierarchical_bootstrap_is_deterministic_and_resamples_seeds_too():
    first = stats.hierarchical_bootstrap(A, B)
    assert stats.hierarchical_bootstrap(A, B) == first  # fixed seed: the same report every time
    xa, xb = np.random.default_rng(0).random((2, 3, 20))
    assert stats.hierarchical_bootstrap(xa, xb, seed=2)["ci_low"] != stats.hierarchical_bootstrap(xa, xb)["ci_low"]
    # the examples agree perfectly within each seed, but the seeds disagree: seed variance alone widens the CI
    a = [[1] * 4, [0] * 4, [1] * 4]
    b = [[0] * 4, [1] * 4, [0] * 4]
    r = stats.hierarchical_bootstrap(a, b)
    assert r["ci_low"] < 0 < r["ci_high"]
    same = stats.hierarchical_bootstrap([[1, 0]] * 3, [[0, 1]] * 3)  # differences +1/-1 every seed
    assert same["ci_low"] < 0 < same["ci_high"] and same["p"] > 0.5
    flat = stats.hierarchical_bootstrap([[1, 1]] * 3, [[0, 0]] * 3)  # every resample the same: no variance
    assert flat["ci_low"] == flat["ci_high"] == 1.0 and math.isnan(flat["p"])
    assert stats.classify(dict(flat, mean_a=1, mean_b=0)) == stats.UNDETERMINED
    with pytest.raises(ValueError):
        stats.hierarchical_bootstrap([[1, 0]], [[1, 0, 1]])


def test_formats():
    assert stats.fmt_value(0.4123) == "41.2"
    assert stats.fmt_value(None) == stats.MISSING
    assert stats.fmt_value(0.9123, "auc") == "0.912"
    assert stats.fmt_diff(0.138) == "+13.8" and stats.fmt_diff(-0.031) == "-3.1"
    assert stats.fmt_diff(-0.0001) == "0.0" and stats.fmt_diff(0.0) == "0.0"
    assert stats.fmt_ci(0.061, 0.215) == "+6.1 to +21.5" and stats.fmt_ci(float("nan"), 0.1) == "n/a"
    assert stats.fmt_p(0.0123) == "0.012" and stats.fmt_p(1e-5) == "<0.001" and stats.fmt_p(None) == "n/a"
    assert stats.fmt_cell(0.912, 0.013, 3) == "91.2 ± 1.3 (n=3)"
    assert stats.fmt_cell(0.912, float("nan"), 1) == "91.2 (n=1)"
    assert stats.fmt_cell(float("nan"), float("nan"), 0) == stats.MISSING
    assert [stats.fmt_fraction(f) for f in (0.01, 0.1, 1.0, 0.005)] == ["1%", "10%", "100%", "0.5%"]
    assert stats.fmt_eps("0.5") == "0.5/255"
