"""Tests for medrobust.report.stats: CI, paired test, verdicts, number formats."""

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
    assert stats.verdict(same) == stats.UNCLEAR
    none = stats.paired([None], [0.5])
    assert none["n"] == 0 and math.isnan(none["mean_diff"])
    with pytest.raises(ValueError):
        stats.paired([0.1, 0.2], [0.1])


@pytest.mark.parametrize(
    "a,b,higher,expected",
    [
        ([0.60, 0.62, 0.65], [0.50, 0.51, 0.53], True, "better"),  # clearly positive
        ([0.50, 0.51, 0.53], [0.60, 0.62, 0.65], True, "worse"),  # clearly negative
        ([0.55, 0.45, 0.52], [0.50, 0.50, 0.50], True, "no clear difference"),  # straddles 0
        # robustness gap: smaller is better, so a clearly negative difference is "better"
        ([0.10, 0.12, 0.11], [0.30, 0.31, 0.33], False, "better"),
        ([0.30, 0.31, 0.33], [0.10, 0.12, 0.11], False, "worse"),
        ([0.20, 0.30, 0.25], [0.25, 0.25, 0.25], False, "no clear difference"),
        ([0.9], [0.1], True, "not enough seeds"),
    ],
)
def test_verdict(a, b, higher, expected):
    assert stats.verdict(stats.paired(a, b), higher_is_better=higher) == expected


def test_verdict_uses_ci_not_mean():
    # mean difference positive but CI includes 0
    assert stats.verdict(dict(n=3, ci_low=-0.01, ci_high=0.2)) == stats.UNCLEAR
    assert stats.verdict(dict(n=3, ci_low=0.001, ci_high=0.2)) == stats.BETTER
    assert stats.verdict(dict(n=3, ci_low=0.001, ci_high=0.2), higher_is_better=False) == stats.WORSE


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
