"""Free-text reports written from each image's findings, in each site's style, with realistic errors.

Written by hand (templates over :mod:`medrobust.data.synthetic.lexicon`). For every image and finding,
:func:`sample_status` first decides what the report does (the ``report_status`` code), then
:func:`write_reports` writes the text:

====  =====================  ===================================================================
code  meaning                how often
====  =====================  ===================================================================
0     absent, not mentioned  the rest of the absent findings
1     absent, negated        site-dependent share of absent findings ("no pleural effusion")
2     present, stated        ~84% of present findings, with side / zone / size / grade
3     present, hedged        ~10% ("possible small nodule", "cannot exclude ...")
4     present, omitted       ~6% (missed by the reader; subtle findings more often)
5     absent, hedged         ~3% false-positive hedge ("? R eff")
====  =====================  ===================================================================

Site styles: ``A`` structured (EXAMINATION / INDICATION / COMPARISON / FINDINGS / IMPRESSION), ``B``
terse fragments, ``C`` portable ICU narrative with lines and tubes, ``D`` heavy abbreviations
("CMG mild; R eff sm; ? nod LUL"). Randomness comes from one uniform matrix per site (deterministic).
"""

from __future__ import annotations

import numpy as np

from medrobust.data.synthetic import lexicon as lx
from medrobust.data.synthetic.findings import FINDINGS

ABSENT, NEGATED, STATED, HEDGED, OMITTED, FALSE_POSITIVE = range(6)
STATUS_NAMES = ("absent", "negated", "stated", "hedged", "omitted", "false_positive")
P_FALSE_POSITIVE = 0.03
P_NEGATE = {"A": (0.85, 0.85, 0.9, 0.85), "B": (0.4, 0.5, 0.5, 0.45), "C": (0.3, 0.65, 0.55, 0.6),
            "D": (0.5, 0.7, 0.6, 0.65)}  # per site and finding: share of absent findings negated
STYLE = {"A": "structured", "B": "terse", "C": "icu", "D": "abbrev"}
_DRAWS = 128  # uniforms per report


def sample_status(rng: np.random.Generator, findings: np.ndarray, attrs: dict[str, np.ndarray],
                  site: str) -> np.ndarray:
    """What each report does with each finding.

    Args:
        rng: generator (the site's report stream).
        findings: ``int64 [n, 4]`` multi-hot.
        attrs: attribute arrays ``[n]`` (subtle findings are omitted and hedged more often).
        site: site name (sets how often absent findings are negated).

    Returns:
        ``int64 [n, 4]`` codes 0-5 (see the module docstring).
    """
    n = len(findings)
    u = rng.random((n, 4))
    subtle = np.stack([(attrs["nodule_size_mm"] < 16), attrs["effusion_size"] == 1,
                       attrs["cardiomegaly_grade"] == 1, np.full(n, 0.5) > rng.random(n)], axis=1)
    p_omit = np.where(subtle, 0.085, 0.04)
    p_hedge = np.where(subtle, 0.13, 0.07)
    present = np.where(u < p_omit, OMITTED, np.where(u < p_omit + p_hedge, HEDGED, STATED))
    p_neg = np.asarray(P_NEGATE[site])[None, :]
    absent = np.where(u < P_FALSE_POSITIVE, FALSE_POSITIVE, np.where(u < P_FALSE_POSITIVE + p_neg, NEGATED, ABSENT))
    return np.where(findings == 1, present, absent).astype(np.int64)


class _Pick:
    """Deterministic choices from a row of pre-drawn uniforms."""

    def __init__(self, u: np.ndarray) -> None:
        self.u, self.i = u, 0

    def _next(self) -> float:
        x = float(self.u[self.i % len(self.u)])
        self.i += 1
        return x

    def __call__(self, seq):
        return seq[min(int(self._next() * len(seq)), len(seq) - 1)]

    def chance(self, p: float) -> bool:
        return self._next() < p

    def order(self, items) -> list:
        keys = [self._next() for _ in items]
        return [x for _, x in sorted(zip(keys, items), key=lambda t: t[0])]

    def sample(self, items, k: int) -> list:
        """``k`` distinct items in random order."""
        return self.order(items)[:k]


def _cap(s: str) -> str:
    """``s`` with its first letter upper-cased."""
    return s[:1].upper() + s[1:]


def _fields(f: str, i: int, status: int, attrs: dict[str, np.ndarray], pick: _Pick, abbrev: bool) -> dict:
    """Template fields for finding ``f`` of image ``i`` (made-up attributes for a false positive)."""
    if status == FALSE_POSITIVE:  # the imagined finding's attributes (fixed per image, see write_reports)
        attrs = attrs["_imagined"]
    if f in ("nodule", "consolidation"):
        side, zone = int(attrs[f"{f}_side"][i]), int(attrs[f"{f}_zone"][i])
        loc = pick(lx.location_abbrev(side, zone) if abbrev else lx.location_words(side, zone))
        out = {"loc": loc, "syn": pick(lx.PROSE_SYN[f])}
        if f == "nodule":
            mm = int(attrs["nodule_size_mm"][i])
            out["size"] = f"{mm}mm" if abbrev else pick((f"{mm} mm", f"{mm / 10:.1f} cm"))
        return out
    if f == "effusion":
        side, size = int(attrs["effusion_side"][i]), int(attrs["effusion_size"][i])
        plural = side == 3
        return {"side": pick((lx.SIDE_ABBREV if abbrev else lx.SIDE_WORDS)[side]),
                "size": pick((lx.EFF_SIZE_ABBREV if abbrev else lx.EFF_SIZE_WORDS)[size]),
                "syn": pick(lx.PROSE_SYN["effusion_plural" if plural else "effusion"]),
                "art": "" if plural else "a ", "be": "are" if plural else "is", "s": "s" if plural else ""}
    grade = int(attrs["cardiomegaly_grade"][i])
    return {"grade": pick((lx.GRADE_ABBREV if abbrev else lx.GRADE_WORDS)[grade]),
            "gradely": pick(lx.GRADELY_WORDS[grade])}


def _mention(f: str, i: int, status: int, attrs: dict[str, np.ndarray], pick: _Pick, abbrev: bool) -> str | None:
    """One sentence (or shorthand item) about finding ``f``, or ``None`` when the report is silent."""
    kind = {NEGATED: "negated", STATED: "stated", HEDGED: "hedged", FALSE_POSITIVE: "hedged"}.get(status)
    if kind is None:
        return None
    template = pick((lx.ABBREV if abbrev else lx.PROSE)[f][kind])
    text = template if status == NEGATED else template.format(**_fields(f, i, status, attrs, pick, abbrev))
    return text if abbrev else _cap(text)


def _positive(status: np.ndarray, which=FINDINGS) -> bool:
    """Whether the report asserts or suspects any of ``which`` (codes 2, 3, 5)."""
    return any(status[FINDINGS.index(f)] in (STATED, HEDGED, FALSE_POSITIVE) for f in which)


def _impression(i, status, attrs, pick) -> str:
    """Impression: the asserted / suspected findings again (numbered when several), else a normal line."""
    items = [_mention(f, i, int(status[j]), attrs, pick, False) for j, f in enumerate(FINDINGS)
             if status[j] in (STATED, HEDGED, FALSE_POSITIVE)]
    if not items:
        return pick(lx.NORMAL_IMPRESSION)
    if status[0] == STATED and pick.chance(0.4):
        items.append("Recommend CT for further characterization.")
    return items[0] if len(items) == 1 else " ".join(f"{k + 1}. {s}" for k, s in enumerate(items))


def _structured(i, status, attrs, pick) -> str:
    """Site A: headed sections, pertinent negatives, numbered impression."""
    lines = []
    if pick.chance(0.7):
        lines.append("EXAMINATION: " + pick(("Chest PA and lateral.", "Chest, 2 views.",
                                             "Chest radiograph, PA and lateral views.", "Chest PA.")))
    if pick.chance(0.8):
        pick.chance(0)  # (one draw, as when the indication was picked here: the rest of the report is unchanged)
        lines.append(f"INDICATION: {_cap(attrs['_indications'][i]).rstrip('.')}.")
    year = pick(range(2008, 2024))
    lines.append("COMPARISON: " + pick(("None.", f"Prior radiograph from {year}.", "None available.",
                                        f"Chest radiograph dated {year}.")))
    body = [_mention(f, i, int(status[FINDINGS.index(f)]), attrs, pick, False)
            for f in ("cardiomegaly", "nodule", "consolidation", "effusion")]
    if not _positive(status, ("nodule", "consolidation", "effusion")) and pick.chance(0.85):
        body.insert(1, pick(lx.LUNGS_CLEAR))
    body += pick.sample(lx.FILLER, pick((0, 1, 1, 2)))
    lines.append("FINDINGS: " + " ".join(s for s in body if s))
    lines.append("IMPRESSION: " + _impression(i, status, attrs, pick))
    return "\n".join(lines)


def _terse(s: str) -> str:
    for lead in ("There is a ", "There are ", "There is ", "The "):
        if s.startswith(lead):
            return _cap(s[len(lead):])
    return s


def _terse_report(i, status, attrs, pick) -> str:
    """Site B: short fragments on one line."""
    items = [_mention(f, i, int(status[j]), attrs, pick, False) for j, f in enumerate(FINDINGS)]
    items = [_terse(s) for s in pick.order([s for s in items if s])]
    if not _positive(status):
        items.append(pick(lx.NORMAL_TERSE) if pick.chance(0.7) else pick(lx.LUNGS_CLEAR))
    if pick.chance(0.35):
        items.append(pick(lx.FILLER))
    head = pick(("", "", "PA/LAT CHEST: ", "CXR 2V: ", "Chest: "))
    text = head + " ".join(items)
    return text.lower() if pick.chance(0.2) else text


def _icu(i, status, attrs, pick) -> str:
    """Site C: portable ICU narrative with lines and tubes."""
    hh, mm = pick(range(24)), pick(range(60))
    view = pick(("AP", "AP semi-upright", "supine AP", "upright AP"))
    out = [f"Portable {view} chest radiograph obtained at {hh:02d}:{mm:02d}."]
    out += [s.format(n=pick(range(2, 7))) for s in pick.sample(lx.ICU_LINES, pick((0, 1, 1, 2, 3)))]
    if pick.chance(0.5):
        out.append(f"Compared with the study from {pick(('yesterday', 'earlier today', 'two days ago', 'last week'))}.")
    items = [_mention(f, i, int(status[j]), attrs, pick, False) for j, f in enumerate(FINDINGS)]
    out += pick.order([s for s in items if s])
    if not _positive(status, ("nodule", "consolidation", "effusion")) and pick.chance(0.6):
        out.append(pick(lx.LUNGS_CLEAR))
    if pick.chance(0.6):
        out.append("No pneumothorax.")
    if pick.chance(0.4):
        out.append("IMPRESSION: " + (pick(("Stable chest.", "No acute cardiopulmonary process."))
                                     if not _positive(status) else _impression(i, status, attrs, pick)))
    return " ".join(out)


def _abbrev(i, status, attrs, pick) -> str:
    """Site D: shorthand items separated by semicolons."""
    items = [_mention(f, i, int(status[j]), attrs, pick, True) for j, f in enumerate(FINDINGS)]
    items = pick.order([s for s in items if s])
    if not _positive(status, ("nodule", "consolidation", "effusion")) and pick.chance(0.5):
        items.append(pick(lx.LUNGS_CLEAR_ABBREV))
    if not _positive(status):
        items.append(pick(lx.NORMAL_ABBREV))
    if pick.chance(0.4):
        items.append(pick(lx.FILLER_ABBREV))
    return pick(("CXR: ", "CXR PA: ", "PA CXR - ", "", "")) + pick(("; ", ". ")).join(items)


_WRITERS = {"structured": _structured, "terse": _terse_report, "icu": _icu, "abbrev": _abbrev}


def write_reports(rng: np.random.Generator, status: np.ndarray, attrs: dict[str, np.ndarray], site: str,
                  indications: list[str]) -> list[str]:
    """One report per image from its ``report_status`` codes and attributes, in ``site``'s style.

    Args:
        rng: generator (the site's report stream, after :func:`sample_status`).
        status: ``int64 [n, 4]`` codes.
        attrs: attribute arrays ``[n]``.
        site: site name; unknown names fall back to the structured style.
        indications: each study's indication (:mod:`~medrobust.data.synthetic.indications`); the structured
            style quotes it in its INDICATION section.

    Returns:
        ``n`` strings.
    """
    n = len(status)
    u = rng.random((n, _DRAWS))
    imagined = {  # what a false-positive hedge describes: small, subtle versions of each finding
        "nodule_side": rng.integers(1, 3, n), "nodule_zone": rng.integers(1, 3, n),
        "nodule_size_mm": rng.integers(6, 13, n), "effusion_side": rng.integers(1, 4, n),
        "effusion_size": np.ones(n, dtype=np.int64), "cardiomegaly_grade": np.ones(n, dtype=np.int64),
        "consolidation_side": rng.integers(1, 3, n), "consolidation_zone": rng.integers(1, 3, n)}
    attrs = {**attrs, "_imagined": imagined, "_indications": indications}
    writer = _WRITERS[STYLE.get(site, "structured")]
    return [writer(i, status[i], attrs, _Pick(u[i])) for i in range(len(status))]
