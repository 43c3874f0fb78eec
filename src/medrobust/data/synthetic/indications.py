"""The indication (clinical history) of each synthetic study: the text that exists *before* the image is read.

A radiology report is written after reading the image, so it states the findings and is close to a label
oracle (a bag-of-words classifier on the synthetic reports alone reaches about 90% in-site accuracy). The
request for the examination is not: the referring clinician writes the presentation ("cough, fever ?
pneumonia", "pre-op"), which only hints at what the image will show. This is the text a downstream model may
see at decision time (issue 12); the report is used for pre-training and retrieval only.

Each study gets a presentation drawn from its findings (:data:`REASONS`: base weights, multiplied per finding
present by :data:`LIKELIER`), an optional age and sex (older with cardiomegaly), and an optional clinical
question that names the true finding more often than a false one (:data:`QUERY`). The text is in the site's
style (structured, terse, ICU, abbreviated). Weakly informative by design: measured on the default data
(``tests/data/test_indications.py``), a bag-of-words logistic regression on the indication alone stays far
below what the report alone or an image model reaches.
"""

from __future__ import annotations

import numpy as np

from medrobust.data.synthetic.findings import FINDINGS

#: presentation -> (base weight, how it is written in prose, abbreviated)
REASONS: dict[str, tuple[float, str, str]] = {
    "screening": (0.12, "routine screening", "screening"),
    "preop": (0.14, "pre-operative evaluation", "pre-op"),
    "follow-up": (0.10, "follow-up", "f/u"),
    "chest pain": (0.12, "chest pain", "CP"),
    "cough": (0.14, "cough", "cough"),
    "fever": (0.06, "fever", "fever"),
    "dyspnea": (0.10, "shortness of breath", "SOB"),
    "exertional": (0.05, "dyspnea on exertion", "DOE"),
    "weakness": (0.07, "weakness", "weakness"),
    "smoker": (0.05, "history of smoking", "smoker"),
    "hypoxia": (0.05, "hypoxia", "hypoxia"),
}
#: finding present -> presentations made likelier, and by how much (the weak link between text and image)
LIKELIER: dict[str, dict[str, float]] = {
    "nodule": {"smoker": 2.0, "follow-up": 1.8, "cough": 1.2},
    "effusion": {"dyspnea": 1.8, "exertional": 1.5, "chest pain": 1.3},
    "cardiomegaly": {"exertional": 2.0, "dyspnea": 1.5, "weakness": 1.3},
    "consolidation": {"fever": 2.2, "cough": 1.6, "hypoxia": 1.8},
}
#: clinical questions: finding -> (prose, abbreviated), and how often one is asked when the finding is present
#: / absent (a question names a suspicion, right or wrong)
QUERY: dict[str, tuple[str, str]] = {
    "nodule": ("evaluate for nodule", "?nod"), "effusion": ("? pleural effusion", "?eff"),
    "cardiomegaly": ("? heart failure", "?CHF"), "consolidation": ("? pneumonia", "?PNA"),
}
P_QUERY_PRESENT, P_QUERY_ABSENT = 0.3, 0.07


def sample_indications(rng: np.random.Generator, findings: np.ndarray, attrs: dict[str, np.ndarray],
                       site_style: str) -> list[str]:
    """One indication per study.

    Args:
        rng: generator (the site's own indication stream).
        findings: ``int64 [n, 4]`` multi-hot in :data:`FINDINGS` order.
        attrs: finding attributes (``cardiomegaly_grade`` makes the patient older).
        site_style: ``structured`` / ``terse`` / ``icu`` / ``abbrev`` (how the request is written).

    Returns:
        ``n`` strings, e.g. ``"67-year-old man with cough. ? pneumonia"`` or ``"72M SOB ?CHF"``.
    """
    n = len(findings)
    names = list(REASONS)
    weights = np.tile(np.array([REASONS[k][0] for k in names]), (n, 1))
    for j, finding in enumerate(FINDINGS):
        for reason, factor in LIKELIER[finding].items():
            weights[:, names.index(reason)] *= np.where(findings[:, j] == 1, factor, 1.0)
    weights /= weights.sum(axis=1, keepdims=True)
    reason = (rng.random((n, 1)) > np.cumsum(weights, axis=1)).sum(axis=1).clip(max=len(names) - 1)
    age = np.clip(rng.normal(58, 15, n) + 8 * attrs["cardiomegaly_grade"], 19, 95).astype(int)
    male = rng.random(n) < 0.5
    with_age = rng.random(n) < 0.6
    asked = rng.random((n, len(FINDINGS))) < np.where(findings == 1, P_QUERY_PRESENT, P_QUERY_ABSENT)
    pick_query = rng.random(n)
    abbrev = site_style in ("abbrev", "terse")
    out = []
    for i in range(n):
        prose, short = REASONS[names[reason[i]]][1:]
        text = short if abbrev else prose
        queries = [QUERY[f][1 if abbrev else 0] for f, a in zip(FINDINGS, asked[i]) if a]
        query = queries[int(pick_query[i] * len(queries))] if queries else None
        if with_age[i]:
            text = (f"{age[i]}{'M' if male[i] else 'F'} {text}" if abbrev else
                    f"{age[i]}-year-old {'man' if male[i] else 'woman'} with {text}")
        if site_style == "icu":
            text = f"ICU patient, {text}"
        if query:
            text = f"{text} {query}" if abbrev else f"{text}. {query[:1].upper()}{query[1:]}"
        out.append(text)
    return out
