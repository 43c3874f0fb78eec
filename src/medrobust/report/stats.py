"""Statistics over seeds (and test examples), multiplicity correction, verdicts, and the number formats
shared by every table and the answer.

Everything here is NaN-safe: ``None`` and NaN values (a metric a run did not measure) are dropped before
any statistic is computed, and the count ``n`` that is returned is the number of values actually used.

The tables and the plain-words answer format their numbers with the *same* functions defined here
(:func:`fmt_value`, :func:`fmt_diff`, :func:`fmt_ci`, :func:`fmt_p`), so every number in the answer is
literally the string printed in a table.

Verdicts (:func:`classify` gives the kind, :func:`verdict` the words): a difference is *clear* (better /
worse) only when its p-value — Holm–Bonferroni-adjusted within its family when ``p_adj`` is given — is below
:data:`ALPHA`. A non-clear difference is a *bounded null* ("no difference larger than X pp", X the far end of
its 95% CI rounded up to 0.5 pp, only when X ≤ 3 pp) or *inconclusive*; a difference whose p is undefined
(zero variance: the CI collapses to a point) is *undetermined*; fewer than two seeds is *not enough seeds*.

scipy and numpy are imported lazily inside the functions that need them.
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

CONFIDENCE = 0.95

ALPHA = 0.05  # a (Holm-adjusted) p below this is a clear difference

BETTER = "better"
WORSE = "worse"
BOUNDED = "bounded null"  # worded "no difference larger than X pp"
INCONCLUSIVE = "inconclusive"
UNDETERMINED = "undetermined"  # zero variance: CI collapsed, p undefined
TOO_FEW = "not enough seeds"
KINDS = (BETTER, WORSE, BOUNDED, INCONCLUSIVE, UNDETERMINED, TOO_FEW)
CLEAR = (BETTER, WORSE)

#: a null bounds the effect when the far end of its CI, rounded up to BOUND_STEP, is at most BOUND_MAX
BOUND_STEP = 0.005
BOUND_MAX = 0.03

#: the families of comparisons within which p-values are Holm-corrected, with their names in the report
FAMILIES = {"headline": "headline robustness", "tasks": "retrieval and VQA", "ablations": "ablations",
            "defenses": "defenses", "diversity": "diversity (pre-training pools)", "secondary": "secondary (clean accuracy, robustness gap, report removed)"}

#: the hierarchical bootstrap: resamples and the fixed seed that make the report deterministic
N_BOOT = 2000
BOOT_SEED = 20240611

NAN = float("nan")


def num(x: object) -> float:
    """Convert ``x`` to float, mapping ``None`` and non-numbers to NaN."""
    if x is None or isinstance(x, bool):
        return NAN
    try:
        return float(x)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return NAN


def finite(values: Iterable[object]) -> list[float]:
    """Return the finite float values of ``values`` (``None``/NaN/inf dropped), in order."""
    out = [num(v) for v in values]
    return [v for v in out if math.isfinite(v)]


def mean_ci(values: Iterable[object], confidence: float = CONFIDENCE) -> tuple[float, float, int]:
    """Mean and t-distribution confidence-interval half-width over seeds.

    ``half_width = t_{(1+confidence)/2, n-1} * s / sqrt(n)`` with ``s`` the sample standard deviation
    (ddof=1).

    Args:
        values: one value per seed; ``None`` and NaN are ignored.
        confidence: two-sided confidence level (0.95 gives the 95% CI).

    Returns:
        ``(mean, half_width, n)``; ``mean`` is NaN when ``n == 0`` and ``half_width`` is NaN when ``n < 2``.
    """
    from scipy import stats

    xs = finite(values)
    n = len(xs)
    if n == 0:
        return NAN, NAN, 0
    mean = sum(xs) / n
    if n < 2:
        return mean, NAN, n
    var = sum((x - mean) ** 2 for x in xs) / (n - 1)
    t = float(stats.t.ppf(0.5 + confidence / 2.0, n - 1))
    return mean, t * math.sqrt(var) / math.sqrt(n), n


def paired(a: Sequence[object], b: Sequence[object], confidence: float = CONFIDENCE) -> dict:
    """Paired comparison of ``a`` against ``b`` (same seeds, same order): difference ``a - b``.

    Pairs where either value is missing are dropped. The p-value is from ``scipy.stats.ttest_rel``; the CI
    is ``mean_diff ± t_{(1+confidence)/2, n-1} * sd_diff / sqrt(n)``.

    Edge cases, handled explicitly rather than left to scipy's warnings:
      * ``n == 0``: everything NaN.
      * ``n == 1``: ``mean_diff`` is the single difference; CI and p are NaN.
      * zero variance of the differences (every pair differs by the same amount): the CI collapses to
        ``[mean_diff, mean_diff]`` and p is NaN (the t statistic is undefined).

    Args:
        a: values of the arm under test (e.g. self-supervised), one per seed.
        b: values of the reference arm (e.g. its supervised counterpart), aligned with ``a``.
        confidence: two-sided confidence level.

    Returns:
        ``dict(mean_diff, ci_low, ci_high, p, n, mean_a, mean_b)``; ``mean_a``/``mean_b`` are the means of
        each arm over the pairs used.

    Raises:
        ValueError: if ``a`` and ``b`` have different lengths.
    """
    from scipy import stats

    if len(a) != len(b):
        raise ValueError(f"paired() needs aligned sequences, got lengths {len(a)} and {len(b)}")
    pairs = [(x, y) for x, y in zip(map(num, a), map(num, b)) if math.isfinite(x) and math.isfinite(y)]
    n = len(pairs)
    out = dict(mean_diff=NAN, ci_low=NAN, ci_high=NAN, p=NAN, n=n, mean_a=NAN, mean_b=NAN)
    if n == 0:
        return out
    xa = [x for x, _ in pairs]
    xb = [y for _, y in pairs]
    diffs = [x - y for x, y in pairs]
    md = sum(diffs) / n
    out.update(mean_diff=md, mean_a=sum(xa) / n, mean_b=sum(xb) / n)
    if n < 2:
        return out
    sd = math.sqrt(sum((d - md) ** 2 for d in diffs) / (n - 1))
    if sd <= 1e-12 * max(1.0, abs(md)):
        out.update(ci_low=md, ci_high=md)
        return out
    half = float(stats.t.ppf(0.5 + confidence / 2.0, n - 1)) * sd / math.sqrt(n)
    p = float(stats.ttest_rel(xa, xb).pvalue)
    out.update(ci_low=md - half, ci_high=md + half, p=p)
    return out


def hierarchical_bootstrap(a: Sequence[Sequence[float]], b: Sequence[Sequence[float]], n_boot: int = N_BOOT,
                           seed: int = BOOT_SEED, confidence: float = CONFIDENCE) -> dict:
    """Paired bootstrap over seeds and test examples of the mean difference ``a − b`` (written by hand: no
    well-kept library does the two-level paired resampling).

    Each resample draws ``S`` seeds with replacement, then, for each drawn seed, ``N`` example indices with
    replacement — the same indices for both arms (the examples are the same for every run, so the outcomes
    pair); the statistic is the mean over the drawn seeds of the mean per-example difference. Draw order, so
    a plain loop reproduces it exactly: ``rng = numpy.random.default_rng(seed)``; ``seeds =
    rng.integers(0, S, size=(n_boot, S))``; then for each position ``j`` in ``range(S)``: ``idx =
    rng.integers(0, N, size=(n_boot, N))``, and resample ``k`` uses seed ``seeds[k, j]`` with examples
    ``idx[k]``.

    Args:
        a: ``[S][N]`` per-example outcomes of the tested arm, one row per seed.
        b: ``[S][N]`` of the reference arm, rows aligned with ``a`` (same seeds, same examples).
        n_boot: number of resamples.
        seed: seed of the resampling (fixed: the report is deterministic).
        confidence: two-sided level of the percentile CI.

    Returns:
        ``dict(mean_diff, ci_low, ci_high, p, n, n_examples)``: ``mean_diff`` the observed mean difference,
        the percentile CI of the resampled statistic, the two-sided bootstrap p
        ``min(1, 2 · min(#{d* ≤ 0} + 1, #{d* ≥ 0} + 1) / (n_boot + 1))``; when every resample gives the same
        value (no variance at all) the CI is that point and p is NaN (undetermined).

    Raises:
        ValueError: if the rows differ in length, are empty, or hold non-finite values.
    """
    import numpy as np

    A, B = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if A.ndim != 2 or A.shape != B.shape or A.shape[1] == 0:
        raise ValueError(f"hierarchical_bootstrap() needs two equal [seeds, examples] arrays, got {A.shape} and "
                         f"{B.shape}")
    if not (np.isfinite(A).all() and np.isfinite(B).all()):
        raise ValueError("hierarchical_bootstrap() got non-finite per-example outcomes")
    D = A - B  # [S, N]
    S, N = D.shape
    rng = np.random.default_rng(seed)
    seeds = rng.integers(0, S, size=(n_boot, S))
    stat = np.zeros(n_boot)
    for j in range(S):
        idx = rng.integers(0, N, size=(n_boot, N))
        stat += D[seeds[:, j][:, None], idx].mean(axis=1)
    stat /= S
    md = float(D.mean())
    out = dict(mean_diff=md, ci_low=md, ci_high=md, p=NAN, n=S, n_examples=N)
    if float(stat.max() - stat.min()) <= 1e-12 * max(1.0, abs(md)):
        return out
    tail = 100.0 * (1.0 - confidence) / 2.0
    lo, hi = np.percentile(stat, [tail, 100.0 - tail])
    k_le, k_ge = int((stat <= 0).sum()), int((stat >= 0).sum())
    out.update(ci_low=float(lo), ci_high=float(hi), p=min(1.0, 2.0 * (min(k_le, k_ge) + 1) / (n_boot + 1)))
    return out


def holm(pvalues: Sequence[object]) -> list[float]:
    """Holm–Bonferroni adjusted p-values (Holm 1979), in the input order.

    With the ``m`` defined p-values sorted ascending, ``p_adj(i) = max_{j ≤ i} min(1, (m − j + 1) · p(j))``
    (1-based ranks); rejecting where ``p_adj < α`` keeps the family-wise error rate at most ``α``. Undefined
    p-values (NaN/None: zero variance, one seed) are not tests: they stay NaN and do not count in ``m``.
    """
    ps = [num(p) for p in pvalues]
    order = sorted((i for i, p in enumerate(ps) if math.isfinite(p)), key=lambda i: ps[i])
    m, out, running = len(order), [NAN] * len(ps), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * ps[i]))
        out[i] = running
    return out


def null_bound(lo: object, hi: object, step: float = BOUND_STEP, limit: float = BOUND_MAX) -> float:
    """The bound X of a null: the CI's far end from 0, rounded up to ``step``; NaN when X > ``limit``.

    ``(-0.010, 0.022)`` → ``0.025`` ("no difference larger than 2.5 pp"); ``(-0.09, 0.12)`` → NaN.
    """
    a, b = num(lo), num(hi)
    if not (math.isfinite(a) and math.isfinite(b)):
        return NAN
    x = math.ceil(max(abs(a), abs(b)) / step - 1e-9) * step
    return round(x, 10) if x <= limit + 1e-12 else NAN


def classify(result: dict, higher_is_better: bool = True, unit: str = "pct", alpha: float = ALPHA) -> str:
    """Kind of a comparison result (one of :data:`KINDS`), difference = tested arm − reference arm.

    Args:
        result: a dict with ``n``, ``mean_diff``, ``ci_low``, ``ci_high``, ``p`` and optionally ``p_adj`` (the
            Holm-adjusted p within its family; used instead of ``p`` when present).
        higher_is_better: False for metrics where smaller is better (robustness gap, accuracy drop).
        unit: the metric's unit; only fractions (``"pct"``) are bounded in pp, others are inconclusive.
        alpha: significance level.
    """
    if result.get("n", 0) < 2:
        return TOO_FEW
    p = num(result["p_adj"] if "p_adj" in result else result.get("p"))
    if not math.isfinite(p):
        return UNDETERMINED
    if p < alpha:
        up = num(result.get("mean_diff")) > 0
        return BETTER if up == higher_is_better else WORSE
    bounded = unit == "pct" and math.isfinite(null_bound(result.get("ci_low"), result.get("ci_high")))
    return BOUNDED if bounded else INCONCLUSIVE


def verdict(result: dict, higher_is_better: bool = True, unit: str = "pct", alpha: float = ALPHA) -> str:
    """The verdict in words: the kind of :func:`classify`, a bounded null as ``"no difference larger than X pp"``."""
    kind = classify(result, higher_is_better, unit, alpha)
    if kind == BOUNDED:
        return f"no difference larger than {100 * null_bound(result['ci_low'], result['ci_high']):.1f} pp"
    return kind


# ----------------------------------------------------------------------------------------------------
# Formatting. Units: "pct" = a fraction in [0, 1] shown in percent (differences in percentage points),
# "auc" = shown with 3 decimals, "s" = seconds with 1 decimal.
# ----------------------------------------------------------------------------------------------------

MISSING = "—"


def _scale(unit: str) -> tuple[float, int]:
    return {"pct": (100.0, 1), "auc": (1.0, 3), "s": (1.0, 1), "x": (1.0, 2)}.get(unit, (1.0, 3))


def fmt_value(x: object, unit: str = "pct") -> str:
    """Format one value (``0.412`` → ``"41.2"`` for ``unit="pct"``); missing → ``"—"``."""
    v = num(x)
    if not math.isfinite(v):
        return MISSING
    k, d = _scale(unit)
    s = f"{v * k:.{d}f}"
    return "0." + "0" * d if d and s.lstrip("-") == "0." + "0" * d else s


def fmt_diff(x: object, unit: str = "pct") -> str:
    """Format a signed difference (``0.138`` → ``"+13.8"`` in pp for ``unit="pct"``); missing → ``"—"``."""
    s = fmt_value(x, unit)
    if s == MISSING or s.startswith("-"):
        return s
    return s if set(s) <= set("0.") else "+" + s


def fmt_ci(lo: object, hi: object, unit: str = "pct") -> str:
    """Format a CI as ``"+6.1 to +21.5"``; ``"n/a"`` when either end is missing."""
    a, b = fmt_diff(lo, unit), fmt_diff(hi, unit)
    return "n/a" if MISSING in (a, b) else f"{a} to {b}"


def fmt_p(p: object) -> str:
    """Format a p-value: ``"0.012"``, ``"<0.001"``, or ``"n/a"`` when undefined."""
    v = num(p)
    if not math.isfinite(v):
        return "n/a"
    return "<0.001" if v < 0.001 else f"{v:.3f}"


def fmt_cell(mean: object, half: object, n: int, unit: str = "pct") -> str:
    """Table cell ``"91.2 ± 1.3 (n=3)"``; one seed gives ``"91.2 (n=1)"``; no data gives ``"—"``."""
    if n == 0 or fmt_value(mean, unit) == MISSING:
        return MISSING
    h = fmt_value(half, unit)
    if n < 2 or h == MISSING:
        return f"{fmt_value(mean, unit)} (n={n})"
    return f"{fmt_value(mean, unit)} ± {h} (n={n})"


def fmt_fraction(f: object) -> str:
    """Label fraction as a percentage: ``0.1`` → ``"10%"``, ``0.005`` → ``"0.5%"``."""
    v = num(f)
    return MISSING if not math.isfinite(v) else f"{v * 100:.6g}%"


def fmt_eps(eps: object) -> str:
    """Epsilon key in units of 1/255 as text: ``"2"`` → ``"2/255"``."""
    return f"{eps}/255"
