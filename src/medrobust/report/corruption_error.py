"""Normalised corruption error (mCE), as ImageNet-C and MedMNIST-C report it, with the study's own supervised arm
as the normaliser (instead of AlexNet / a ResNet-18 baseline).

For a run, the error on corruption ``c`` is ``E_c = mean over severities of (1 − balanced accuracy)``; its clean
error ``E_clean = 1 − clean balanced accuracy``. For an arm ``a`` and its supervised counterpart ``s`` at the same
label fraction and seed (Hendrycks & Dietterich 2019, eqs. for CE and relative CE; Di Salvo et al. 2024, §3.3):

* ``CE_c = E_c(a) / E_c(s)``; ``mCE = mean_c CE_c`` (below 1: fewer corruption errors than supervised);
* ``relative mCE = Σ_c (E_c(a) − E_clean(a)) / Σ_c (E_c(s) − E_clean(s))`` (below 1: a smaller *drop* under
  corruption than supervised, whatever the clean error). ImageNet-C averages the per-corruption ratios instead; with
  a few hundred test images a corruption that barely hurts the normaliser makes its ratio explode, so the drops
  are summed over corruptions first (steadier, but still wide at 3 seeds: the demo's SimCLR 1.9 ± 2.2);
* per family (noise, blur, intensity, acquisition, digital: :data:`medrobust.corruptions.base.FAMILIES`): the mean
  CE over that family's corruptions.

Each is computed per seed pair and reported as the mean with a 95% CI over seeds. A supervised arm is its own
normaliser (1 by definition, so it is left out of the table). Runs without balanced accuracies (records written
before this field) are skipped.
"""

from __future__ import annotations

import math

from medrobust.record import RunRecord, StudyFacts
from medrobust.report import tables
from medrobust.report.stats import fmt_fraction, mean_ci


def _errors(r: RunRecord) -> tuple[dict[str, float], float] | None:
    bal = r.metrics.corruptions_balanced
    if not bal or r.metrics.clean_balanced is None:
        return None
    errs = {c: sum(1 - v for v in sev.values()) / len(sev) for c, sev in bal.items() if sev}
    return errs, 1 - r.metrics.clean_balanced


def _family(name: str, setup: StudyFacts) -> str:
    return setup.corruption_families.get(name, "other")


def _ratio(a: float, b: float) -> float:
    return a / b if b > 1e-9 else math.nan


def pair_errors(arm: RunRecord, base: RunRecord, setup: StudyFacts | None = None) -> dict[str, float] | None:
    """``mCE``, ``relative mCE`` and ``CE <family>`` of ``arm`` against ``base`` (one seed pair), or None."""
    setup = setup or StudyFacts()
    ea, eb = _errors(arm), _errors(base)
    if ea is None or eb is None:
        return None
    names = [c for c in ea[0] if c in eb[0]]
    if not names:
        return None
    ce = {c: _ratio(ea[0][c], eb[0][c]) for c in names}
    finite = lambda xs: [x for x in xs if math.isfinite(x)]  # noqa: E731
    rel = _ratio(sum(ea[0][c] - ea[1] for c in names), sum(eb[0][c] - eb[1] for c in names))
    out = {"mCE": _mean(finite(ce.values())), "relative mCE": rel}
    for fam in dict.fromkeys(_family(c, setup) for c in names):
        out[f"CE {fam}"] = _mean(finite(ce[c] for c in names if _family(c, setup) == fam))
    return out


def _mean(xs) -> float:
    xs = list(xs)
    return sum(xs) / len(xs) if xs else math.nan


def corruption_error_rows(records: list[RunRecord], setup: StudyFacts) -> list[dict]:
    """One dict per (pre-trained arm, label fraction) with a supervised counterpart: ``arm``, ``counterpart``,
    ``fraction`` and for each measure (``mCE``, ``relative mCE``, ``CE <family>``) ``(mean, CI half-width, n)``."""
    out = []
    for arm in tables.method_order(records, setup):
        recs = [r for r in records if r.arm == arm]
        cp = next((r.counterpart for r in recs if r.counterpart), None)
        if cp is None or any(r.defense for r in recs):
            continue
        for f in tables.fraction_order(records):
            base = {r.seed: r for r in tables.runs(records, cp, f)}
            pairs = [pair_errors(r, base[r.seed], setup) for r in tables.runs(records, arm, f) if r.seed in base]
            pairs = [p for p in pairs if p]
            if not pairs:
                continue
            keys = list(dict.fromkeys(k for p in pairs for k in p))
            out.append({"arm": arm, "counterpart": cp, "fraction": f,
                        **{k: mean_ci([p[k] for p in pairs if k in p and math.isfinite(p[k])]) for k in keys}})
    return out


def corruption_error_table(records: list[RunRecord], setup: StudyFacts) -> tables.Table | None:
    """The mCE table: rows arm × fraction; columns mCE, relative mCE and the CE of each corruption family."""
    rows = corruption_error_rows(records, setup)
    if not rows:
        return None
    fams = [k for k in dict.fromkeys(k for r in rows for k in r) if k.startswith("CE ")]
    header = ["arm", "vs", "labels", "mCE", "relative mCE", *fams]
    cell = lambda v: "—" if not v or not math.isfinite(v[0]) else (  # noqa: E731
        f"{v[0]:.2f} (n={v[2]})" if v[2] < 2 else f"{v[0]:.2f} ± {v[1]:.2f} (n={v[2]})")
    body = [[r["arm"], r["counterpart"], fmt_fraction(r["fraction"]), cell(r.get("mCE")), cell(r.get("relative mCE")),
             *[cell(r.get(k)) for k in fams]] for r in rows]
    return tables.Table("Normalised corruption error (mCE; the supervised counterpart = 1.00)", header, body,
                        "Error = 1 − balanced accuracy, averaged over severities; CE = the arm's error / its "
                        "supervised counterpart's on the same seed, averaged over corruptions (mCE) or over a "
                        "family's corruptions; relative mCE divides the summed drops from clean error instead. Below 1: "
                        "fewer corruption errors than supervised. Mean ± 95% CI half-width over seeds.")
