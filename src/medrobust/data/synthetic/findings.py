"""The four findings: which images have them (multi-label, correlated), their attributes, and how they
change the density map.

Written by hand (no library simulates radiographic findings). Each finding is local and plausible:

- ``nodule``: a small bright round opacity (projected sphere, 12-30 mm) in one lung zone;
- ``effusion``: fluid density filling a lung base up to a meniscus that climbs the lateral wall,
  blunting the costophrenic angle and hiding the hemidiaphragm (small / moderate / large);
- ``cardiomegaly``: an enlarged heart silhouette (cardiothoracic ratio > 0.55; drawn by the anatomy);
- ``consolidation``: a patchy airspace opacity confined to the lung, in one lung zone.

Sides follow the patient: ``right`` = image left. Codes match ``Split.extras`` (0 means none).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medrobust.data.synthetic.anatomy import LEFT, MM_PER_UNIT, RIGHT, Canvas, col, ramp

FINDINGS = ("nodule", "effusion", "cardiomegaly", "consolidation")
SIDES = ("none", "right", "left", "bilateral")
ZONES = ("none", "upper", "lower")
EFFUSION_SIZES = ("none", "small", "moderate", "large")
CARDIOMEGALY_GRADES = ("none", "mild", "moderate")
ATTRIBUTE_KEYS = ("nodule_side", "nodule_zone", "nodule_size_mm", "effusion_side", "effusion_size",
                  "cardiomegaly_grade", "consolidation_side", "consolidation_zone")


@dataclass(frozen=True)
class Prevalence:
    """Base probabilities of the findings at one site (see :func:`sample_findings` for correlations)."""

    nodule: float = 0.17
    cardiomegaly: float = 0.21
    effusion: float = 0.11  # without cardiomegaly; + effusion_given_cmg with it
    effusion_given_cmg: float = 0.30
    consolidation: float = 0.15  # + 0.10 when there is an effusion (parapneumonic)


def sample_findings(rng: np.random.Generator, n: int, prev: Prevalence) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Draw findings and their attributes for ``n`` images.

    Effusion is more likely with cardiomegaly (heart failure) and more often bilateral then;
    consolidation is more likely with an effusion. About 40-50% of images are normal.

    Args:
        rng: generator (one stream per site and purpose).
        n: number of images.
        prev: the site's prevalences.

    Returns:
        ``findings`` int64 ``[n, 4]`` multi-hot in :data:`FINDINGS` order, and the attribute arrays
        (int64 ``[n]``, keys :data:`ATTRIBUTE_KEYS`; 0 where the finding is absent).
    """
    u = rng.random((n, 12))
    cmg = u[:, 0] < prev.cardiomegaly
    eff = u[:, 1] < prev.effusion + prev.effusion_given_cmg * cmg
    nod = u[:, 2] < prev.nodule
    con = u[:, 3] < prev.consolidation + 0.10 * eff
    findings = np.stack([nod, eff, cmg, con], axis=1).astype(np.int64)
    p_bilat = np.where(cmg, 0.45, 0.20)
    eff_side = np.where(u[:, 4] < p_bilat, 3, np.where(u[:, 5] < 0.55, 1, 2))
    eff_size = 1 + (u[:, 6] > 0.45).astype(np.int64) + (u[:, 6] > 0.80)
    attrs = {
        "nodule_side": np.where(u[:, 7] < 0.5, 1, 2) * nod,
        "nodule_zone": np.where(u[:, 8] < 0.6, 1, 2) * nod,
        "nodule_size_mm": np.round(12 + 18 * u[:, 9] ** 1.3).astype(np.int64) * nod,
        "effusion_side": eff_side * eff,
        "effusion_size": eff_size * eff,
        "cardiomegaly_grade": np.where(u[:, 10] < 0.6, 1, 2) * cmg,
        "consolidation_side": np.where(u[:, 11] < 0.55, 1, 2) * con,
        "consolidation_zone": np.where(rng.random(n) < 0.65, 2, 1) * con,
    }
    return findings, {k: np.asarray(v, dtype=np.int64) for k, v in attrs.items()}


def _lung_geom(p: dict[str, np.ndarray], side: np.ndarray) -> tuple[np.ndarray, ...]:
    """World-x sign, centre, half-width and dome top of the lung on ``side`` (1 right, 2 left), ``[n]``."""
    right = side == 1
    sign = np.where(right, RIGHT, LEFT)
    return (sign, np.where(right, p["cx_r"], p["cx_l"]), np.where(right, p["hw_r"], p["hw_l"]),
            np.where(right, p["dome_r"], p["dome_l"]))


def _zone_centre(rng: np.random.Generator, p: dict[str, np.ndarray], side: np.ndarray,
                 zone: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A random point inside the lung zone (upper / lower), clear of the heart, ``[n]`` each."""
    n = len(side)
    sign, cx, hw, top = _lung_geom(p, side)
    upper = zone == 1
    lat = np.where(upper, rng.uniform(-0.45, 0.5, n), rng.uniform(-0.05, 0.55, n))
    lat = np.where((side == 2) & ~upper, np.maximum(lat, 0.2), lat)  # left lower zone: lateral to the heart
    x = cx + sign * hw * lat
    y_top = p["apex"] + 0.25 * (top - p["apex"])
    y = np.where(upper, p["apex"] + rng.uniform(0.22, 0.45, n) * (top - p["apex"]),
                 top - rng.uniform(0.05, 0.25, n) * (top - y_top))
    return x, y


def sample_placement(rng: np.random.Generator, p: dict[str, np.ndarray], attrs: dict[str, np.ndarray]
                     ) -> dict[str, np.ndarray]:
    """Where and how each finding is drawn (world units), ``float64 [n]`` / ``[n, k]`` arrays.

    Drawn for every image (used only where the finding is present) so streams stay aligned.
    """
    n = len(attrs["nodule_side"])
    side_n = np.maximum(attrs["nodule_side"], 1)
    nx, ny = _zone_centre(rng, p, side_n, np.maximum(attrs["nodule_zone"], 1))
    side_c = np.maximum(attrs["consolidation_side"], 1)
    cx, cy = _zone_centre(rng, p, side_c, np.maximum(attrs["consolidation_zone"], 1))
    size = np.maximum(attrs["effusion_size"], 1)
    height = np.array([0.0, 0.24, 0.42, 0.65])[size] * rng.uniform(0.85, 1.15, n)
    return {
        "nod_x": nx, "nod_y": ny, "nod_r": attrs["nodule_size_mm"] / 2 / MM_PER_UNIT,
        "con_x": cx[:, None] + rng.normal(0, 0.06, (n, 4)), "con_y": cy[:, None] + rng.normal(0, 0.05, (n, 4)),
        "con_s": rng.uniform(0.05, 0.085, (n, 4)), "con_fx": rng.uniform(-25, 25, (n, 2)),
        "con_ph": rng.random((n, 2)) * 2 * np.pi, "con_amp": rng.uniform(0.22, 0.30, n),
        "eff_h": height, "eff_men": rng.uniform(0.08, 0.14, n),
    }


def _draw_nodules(cv: Canvas, q: dict[str, np.ndarray], idx: np.ndarray) -> None:
    """Add a projected sphere (bright round opacity) to the images at ``idx``."""
    X, Y = cv.X[idx], cv.Y[idx]  # [k, R, R]
    dx, dy, r = X - col(q["nod_x"][idx]), Y - col(q["nod_y"][idx]), col(q["nod_r"][idx])
    t = np.clip(1.0 - (dx * dx + dy * dy) / (r * r), 0.0, 1.0)
    cv.density[idx] += 0.38 * np.sqrt(t) + 0.04 * t  # dense core, soft limb


def _draw_effusions(cv: Canvas, p: dict[str, np.ndarray], q: dict[str, np.ndarray], side_code: np.ndarray,
                    idx: np.ndarray) -> None:
    """Fill the lung base(s) with fluid up to a meniscus (higher at the lateral chest wall)."""
    for side in (1, 2):
        sel = idx[(side_code[idx] == side) | (side_code[idx] == 3)]
        if len(sel) == 0:
            continue
        sign, cx, hw, top = (col(a) for a in _lung_geom(take1(p, sel), np.full(len(sel), side)))
        X, Y = cv.X[sel], cv.Y[sel]
        lateral = np.clip(1.0 - sign * (X - cx) / hw, 0.0, 2.0) * 0.5  # 0 at lateral wall, 1 medial
        y_cp = top + col(p["dome_h"][sel])  # costophrenic angle height
        level = y_cp - col(q["eff_h"][sel]) + col(q["eff_men"][sel]) * np.sqrt(lateral)
        fluid = ramp((Y - level) / 0.08)
        lung = cv.lung(RIGHT if side == 1 else LEFT)[sel]
        cv.density[sel] += 0.29 * fluid * lung  # fluid replaces air: the dome's silhouette disappears


def take1(p: dict[str, np.ndarray], sel: np.ndarray) -> dict[str, np.ndarray]:
    """Rows ``sel`` of the 1-D parameter arrays of ``p``."""
    return {k: v[sel] for k, v in p.items() if np.ndim(v) == 1}


def _draw_consolidations(cv: Canvas, q: dict[str, np.ndarray], side_code: np.ndarray, idx: np.ndarray) -> None:
    """Add a patchy airspace opacity (4 Gaussian lobules, mottled) confined to the chosen lung."""
    X, Y = cv.X[idx], cv.Y[idx]
    blob = np.zeros_like(X)
    for k in range(4):
        dx, dy = X - col(q["con_x"][idx, k]), Y - col(q["con_y"][idx, k])
        s2 = col(2 * q["con_s"][idx, k] ** 2)
        blob = np.maximum(blob, np.exp(-(dx * dx + dy * dy) / s2))
    mottle = 0.75 + 0.25 * np.cos(col(q["con_fx"][idx, 0]) * X + col(q["con_fx"][idx, 1]) * Y
                                  + col(q["con_ph"][idx, 0]))
    lung = np.where(col(side_code[idx]) == 1, cv.lung_right[idx], cv.lung_left[idx])
    cv.density[idx] += col(q["con_amp"][idx]) * np.clip(1.4 * blob * mottle, 0, 1) * lung


def draw_findings(cv: Canvas, p: dict[str, np.ndarray], q: dict[str, np.ndarray],
                  findings: np.ndarray, attrs: dict[str, np.ndarray]) -> None:
    """Add the findings of a chunk to its density map in place (cardiomegaly is drawn by the anatomy).

    Args:
        cv: the rendered chunk (``B`` images).
        p: anatomy parameters of the chunk; q: placements of the chunk (:func:`sample_placement`).
        findings: ``int64 [B, 4]``; attrs: attribute arrays ``[B]`` of the chunk.
    """
    nod, eff, _, con = (np.flatnonzero(findings[:, j]) for j in range(4))
    if len(eff):
        _draw_effusions(cv, p, q, attrs["effusion_side"], eff)
    if len(con):
        _draw_consolidations(cv, q, attrs["consolidation_side"], con)
    if len(nod):
        _draw_nodules(cv, q, nod)
