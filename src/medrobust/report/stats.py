"""Statistics over seeds and the number formats shared by every table and the answer.

Everything here is NaN-safe: ``None`` and NaN values (a metric a run did not measure) are dropped before
any statistic is computed, and the count ``n`` that is returned is the number of values actually used.

The tables and the plain-words answer format their numbers with the *same* functions defined here
(:func:`fmt_value`, :func:`fmt_diff`, :func:`fmt_ci`, :func:`fmt_p`), so every number in the answer is
literally the string printed in a table.

scipy is imported lazily inside the functions that need it.
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

CONFIDENCE = 0.95

BETTER = "better"
WORSE = "worse"
UNCLEAR = "no clear difference"
TOO_FEW = "not enough seeds"
VERDICTS = (BETTER, WORSE, UNCLEAR, TOO_FEW)

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


def verdict(result: dict, higher_is_better: bool = True) -> str:
    """Verdict word for a :func:`paired` result (difference = tested arm − reference arm).

    Args:
        result: a dict with ``n``, ``ci_low``, ``ci_high``.
        higher_is_better: False for metrics where smaller is better (robustness gap, accuracy drop).

    Returns:
        ``"better"`` if the CI excludes 0 in the favourable direction, ``"worse"`` if it excludes 0 in the
        unfavourable one, ``"no clear difference"`` otherwise, ``"not enough seeds"`` when ``n < 2``.
    """
    if result.get("n", 0) < 2:
        return TOO_FEW
    lo, hi = num(result.get("ci_low")), num(result.get("ci_high"))
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return UNCLEAR
    if lo > 0:
        return BETTER if higher_is_better else WORSE
    if hi < 0:
        return WORSE if higher_is_better else BETTER
    return UNCLEAR


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
