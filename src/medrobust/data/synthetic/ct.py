"""Synthetic chest-CT-like volumes ``[N, 1, S, S, S]`` with pulmonary nodules.

Written by hand. World coordinates ``(z, y, x)`` lie in ``[-1, 1]`` (``z`` from the lung apices down to the
upper abdomen, ``y`` anterior to posterior, ``x`` the patient's right to left, radiological convention:
the patient's right is on the image left). Rendered in Hounsfield-like units: air -1000, an elliptical body
(soft tissue 40 HU, subcutaneous fat -100), two lungs (-850, denser posteriorly) whose apices narrow and
whose bases sit on diaphragm domes, heart and mediastinum between them, descending aorta, vertebral bodies
with discs and spinal canal, sternum, and ribs crossing the slices; some scanners show the table.
Finding: ``nodule`` (one or two small soft-tissue spheres, 14-30 mm, inside a lung). Acquisition: field of
view, HU calibration offset, contrast in the vessels, Gaussian noise, in-plane kernel blur and slice
thickness (blur along ``z``), then a window (level, width) to uint8.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter, gaussian_filter1d

from medrobust.data.synthetic import common as cm

FINDINGS = ("nodule",)
LABELS = ("no nodule", "nodule")
SITE_NAMES = ("A", "B", "C", "D")
MODALITY = "CT"
MAX_SIZE = 64  # volumes hold S**3 voxels
MM_PER_UNIT = 170.0
SYNONYMS = {"nodule": ("nodule", "nodular", "nod")}  # lower-case words and shorthand naming the finding
SIDES, ZONES = ("none", "right", "left", "bilateral"), ("none", "upper", "lower")


@dataclass(frozen=True)
class Site:
    description: str
    prevalence: float = 0.45
    zoom: float = 1.0  # > 1 magnifies (smaller field of view)
    noise: float = 12.0  # HU
    slice_blur: float = 0.3  # sigma along z (voxels at 28)
    kernel_blur: float = 0.0  # in-plane sigma (voxels at 28)
    offset: float = 0.0  # HU calibration error
    contrast: float = 0.0  # HU added to blood (contrast-enhanced protocol)
    table: bool = False
    window: tuple[float, float] = (-300.0, 1800.0)  # level, width (shows lung, soft tissue and bone)


SITES = {
    "A": Site("low-noise scanner, thin slices, sharp kernel"),
    "B": Site("older scanner: noisier, thick slices, soft kernel, table in view", prevalence=0.47, noise=25.0,
              slice_blur=0.9, kernel_blur=0.4, table=True, window=(-250.0, 1900.0)),
    "C": Site("contrast-enhanced protocol, tighter field of view, table in view", prevalence=0.43, zoom=1.1,
              noise=18.0, contrast=220.0, table=True, offset=-10.0, window=(-300.0, 1700.0)),
    "D": Site("low-dose screening: very noisy, thick blurred slices, miscalibrated, wide field", prevalence=0.45,
              zoom=0.95, noise=35.0, slice_blur=0.8, kernel_blur=0.3, offset=30.0, window=(-200.0, 1700.0)),
}


def sample_labels(rng: np.random.Generator, n: int, site: Site) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Findings ``int64 [n, 1]`` and attributes: ``nodule_count`` (0-2), ``nodule_side`` / ``nodule_zone`` /
    ``nodule_size_mm`` of the largest nodule (0 where absent; sides 1 right, 2 left, 3 both when two)."""
    u = rng.random((n, 6))
    nod = (u[:, 0] < site.prevalence).astype(np.int64)
    count = nod * (1 + (u[:, 1] < 0.3))
    side1 = np.where(u[:, 2] < 0.55, 1, 2)
    side2 = np.where(u[:, 3] < 0.5, 1, 2)
    return nod[:, None], {
        "nodule_count": count.astype(np.int64),
        "nodule_side": (np.where((count == 2) & (side1 != side2), 3, side1) * nod).astype(np.int64),
        "nodule_side2": (side2 * (count == 2)).astype(np.int64),
        "nodule_zone": (np.where(u[:, 4] < 0.6, 1, 2) * nod).astype(np.int64),
        "nodule_size_mm": (np.round(14 + 16 * u[:, 5] ** 1.2) * nod).astype(np.int64)}


def _soft(t: np.ndarray, px: float) -> np.ndarray:
    """Inside-ness of an implicit shape ``t < 1`` (``t`` a squared normalised radius), soft over a voxel."""
    return np.clip((1 - np.sqrt(t)) * px + 0.5, 0, 1)


def _nodule_centres(rng, attrs, lung_x, lung_a, n):
    """Centres ``[n, 2, 3]`` (z, y, x) of up to two nodules inside the chosen lung, clear of the wall and heart."""
    sides = np.stack([np.minimum(attrs["nodule_side"], 2), attrs["nodule_side2"]], axis=1)
    sides = np.where(attrs["nodule_side"][:, None] == 3, [[1, 2]], sides)
    sgn = np.where(sides == 1, -1.0, 1.0)
    upper = attrs["nodule_zone"][:, None] == 1
    z = np.where(upper, rng.uniform(-0.55, -0.1, (n, 2)), rng.uniform(0.0, 0.35, (n, 2)))
    lateral = np.where(sgn > 0, rng.uniform(0.0, 0.35, (n, 2)), rng.uniform(-0.25, 0.35, (n, 2)))  # clear of the heart
    x = sgn * (lung_x[:, None] + lateral * lung_a[:, None])
    y = rng.uniform(-0.4, 0.45, (n, 2)) * 0.42
    return np.stack([z, y, x], axis=2)


def render(rng: np.random.Generator, acq: np.random.Generator, findings: np.ndarray, attrs: dict, p: Site,
           size: int) -> np.ndarray:
    """``uint8 [n, 1, S, S, S]`` windowed CT volumes of one site."""
    n = len(findings)
    g = cm.grid(size) / np.float32(p.zoom)
    Z, Y, X = g[:, None, None][None], g[None, :, None][None], g[None, None, :][None]  # [1, S, 1, 1] ...
    px = size / 2 * p.zoom
    jit = lambda lo, hi: rng.uniform(lo, hi, n)  # noqa: E731
    bx, by, body_dy = jit(0.8, 0.92), jit(0.56, 0.66), jit(-0.04, 0.04)
    lung_x, lung_a, lung_b = jit(0.36, 0.42), jit(0.26, 0.32), jit(0.38, 0.46)
    apex, dome = jit(-0.98, -0.88), jit(0.55, 0.75)
    heart_r, rib_ph = jit(0.26, 0.32), jit(0, 2 * np.pi)
    centres = _nodule_centres(rng, attrs, lung_x, lung_a, n)
    radius = np.stack([attrs["nodule_size_mm"], attrs["nodule_size_mm"] * rng.uniform(0.5, 0.9, n)], axis=1)
    radius = radius / 2 / MM_PER_UNIT
    out = np.empty((n, 1, size, size, size), dtype=np.uint8)
    chunk = max(1, (1 << 19) // size ** 3)
    lo, hi = p.window[0] - p.window[1] / 2, p.window[0] + p.window[1] / 2
    for s in range(0, n, chunk):
        sl = slice(s, min(s + chunk, n))
        c = lambda a: cm.col(a[sl], 4)  # noqa: E731
        Yb = Y - c(body_dy)
        body_t = (X / c(bx)) ** 2 + (Yb / c(by)) ** 2 * (1 + 0.35 * (Yb > 0))  # flatter posteriorly: [B,1,S,S]
        body, inner = _soft(body_t, px * 0.7), _soft(body_t * 1.22, px * 0.7)
        hu = -1000 + body * (900 + inner * 140)  # fat rim -100, soft tissue 40
        ang = np.arctan2(Yb, X)
        rib_band = body * (1 - _soft(body_t * 1.35, px * 0.7)) * inner  # thin ring inside the fat
        ribs = rib_band * (np.cos(np.pi * 7 * (Z - 0.12 * np.abs(ang)) + c(rib_ph)) > 0.55)
        hu = hu + 650 * ribs
        vert = _soft((X / 0.1) ** 2 + ((Yb - 0.28) / 0.09) ** 2, px)
        disc = np.cos(np.pi * 8 * Z + c(rib_ph)) > 0.8  # intervertebral discs
        hu = hu + vert * np.where(disc, 40.0, 380.0)
        hu = hu - 330 * _soft((X / 0.04) ** 2 + ((Yb - 0.41) / 0.035) ** 2, px)  # spinal canal
        hu = hu + 400 * _soft((X / 0.07) ** 2 + ((Yb - 0.46) / 0.04) ** 2, px)  # posterior elements
        hu = hu + 300 * _soft((X / 0.07) ** 2 + ((Yb + 0.5) / 0.04) ** 2, px)  # sternum
        aorta = _soft(((X - 0.14) / 0.06) ** 2 + ((Yb - 0.17) / 0.06) ** 2, px)
        hu = hu + aorta * p.contrast
        lung = 0
        for sgn in (-1.0, 1.0):
            zt = np.clip((Z - c(apex)) / (c(dome) - c(apex)), 0, 1)
            scale = np.sqrt(np.clip(zt * 2.2, 0.02, 1.0))  # the apex narrows
            t = ((X - sgn * c(lung_x)) / (c(lung_a) * scale)) ** 2 + ((Yb + 0.02) / (c(lung_b) * scale)) ** 2
            dome_z = c(dome) - 0.25 * t  # diaphragm dome: the lung base is highest at its centre
            below_apex = np.clip((Z - c(apex)) * px + 0.5, 0, 1)
            lung = lung + _soft(t, px) * np.clip((dome_z - Z) * px + 0.5, 0, 1) * below_apex
        heart = _soft(((X - 0.08) / c(heart_r)) ** 2 + ((Yb + 0.05) / (0.85 * c(heart_r))) ** 2
                      + ((Z - 0.25) / 0.45) ** 2, px)
        media = _soft((X / 0.13) ** 2 + ((Yb + 0.1) / 0.3) ** 2, px) * (Z < 0.2)
        air = np.clip(lung - np.maximum(heart, media), 0, 1) * _soft(body_t * 1.6, px * 0.7)  # inside the ribs
        hu = hu + air * (-850 + 60 * Yb - hu)  # lung replaces soft tissue (denser posteriorly)
        hu = hu + heart * (p.contrast * 0.6)
        for k in range(2):
            r = cm.col(radius[sl, k], 4)
            if not (r > 0).any():
                continue
            ctr = centres[sl, k]
            d2 = ((Z - cm.col(ctr[:, 0], 4)) ** 2 + (Y - cm.col(ctr[:, 1] + body_dy[sl], 4)) ** 2
                  + (X - cm.col(ctr[:, 2], 4)) ** 2)
            m = np.clip((r - np.sqrt(d2)) * px + 0.5, 0, 1) * (r > 0)
            hu = hu + m * air * (30 - hu)  # soft tissue in the lung
        if p.table:
            hu = np.maximum(hu, -1000 + 1200 * (np.abs(Y - 0.8 - 0.04 * X ** 2) < 0.03) * (np.abs(X) < 0.9))
        hu = hu + p.offset + acq.standard_normal(hu.shape, dtype=np.float32) * np.float32(p.noise)
        f = size / 28
        if p.kernel_blur:
            hu = gaussian_filter(hu, sigma=(0, 0, p.kernel_blur * f, p.kernel_blur * f))
        hu = gaussian_filter1d(hu, p.slice_blur * f, axis=1)
        out[sl, 0] = np.clip(np.rint((hu - lo) / (hi - lo) * 255), 0, 255).astype(np.uint8)
    return out


def _stated(f: str, i: int, attrs: dict, pick, abbrev: bool) -> str:
    mm, side, zone = (int(attrs[k][i]) for k in ("nodule_size_mm", "nodule_side", "nodule_zone"))
    lobe = {(1, 1): "RUL", (1, 2): "RLL", (2, 1): "LUL", (2, 2): "LLL"}[(min(side, 2), zone)]
    two = int(attrs["nodule_count"][i]) == 2
    if abbrev:
        return pick((f"nod {lobe} {mm}mm", f"{mm}mm nod {lobe}")) + (" + 2nd nod" if two else "")
    where = f"{'right' if min(side, 2) == 1 else 'left'} {ZONES[zone]} lobe"
    text = pick((f"{mm} mm solid nodule in the {where}", f"solid pulmonary nodule, {mm} mm, {where}",
                 f"{mm / 10:.1f} cm rounded nodule in the {where}"))
    return text + (", with a second smaller nodule" + (" in the other lung" if side == 3 else "") if two else "")


LEXICON = cm.Lexicon(
    findings=FINDINGS, stated=_stated, imagined={"nodule": ("tiny nodular opacity, possibly a vessel",)},
    negated={"nodule": ("no pulmonary nodules", "no suspicious nodule")},
    negated_abbrev={"nodule": ("no nod",)},
    normal=("no acute findings", "normal CT of the chest", "no pulmonary nodules or masses"),
    normal_abbrev=("NAD", "lungs clear"),
    exam=("CT chest without contrast.", "CT thorax.", "Low-dose CT chest."),
    opening=("Contrast-enhanced CT chest, {n} mm slices.", "CT thorax after IV contrast.",
             "CT chest with contrast, arterial phase."),
    background=("Heart size normal.", "No pleural effusion.", "Mediastinum unremarkable.", "Airways patent."),
    head_abbrev=("CT: ", "LDCT: ", ""),
    recommend={"nodule": ("Follow-up CT in 3 months advised.", "Consider PET-CT.")})

REQUESTS = cm.Requests(
    reasons={"screening": (0.25, "lung cancer screening, heavy smoker", "LCS smoker"),
             "cough": (0.18, "persistent cough", "cough"), "dyspnoea": (0.14, "shortness of breath", "SOB"),
             "weight": (0.08, "weight loss", "wt loss"), "haemoptysis": (0.06, "haemoptysis", "haemoptysis"),
             "follow-up": (0.12, "follow-up", "f/u"), "staging": (0.08, "staging of known cancer", "staging"),
             "pain": (0.09, "chest pain", "CP")},
    likelier={"nodule": {"follow-up": 2.0, "screening": 1.4, "haemoptysis": 1.8, "weight": 1.5}},
    queries={"nodule": ("evaluate for nodule", "?nod")}, age=(62.0, 11.0))


def generate(seed: int, site: str, n: int, size: int):
    """``(images, findings, extras, reports, indications)`` of one site (see :func:`.generate_site`)."""
    k, p = SITE_NAMES.index(site), SITES[site]
    findings, attrs = sample_labels(cm.stream(seed, "ct", k, cm.LABELS), n, p)
    images = render(cm.stream(seed, "ct", k, cm.ANATOMY), cm.stream(seed, "ct", k, cm.ACQUISITION),
                    findings, attrs, p, size)
    indications = cm.sample_indications(cm.stream(seed, "ct", k, cm.INDICATIONS), REQUESTS, findings, FINDINGS, site)
    rng = cm.stream(seed, "ct", k, cm.REPORTS)
    status = cm.sample_status(rng, findings, attrs["nodule_size_mm"][:, None] < 18, 0.6 if site == "A" else 0.4)
    reports = cm.write_reports(rng, LEXICON, status, attrs, site, indications)
    return images, findings, {"findings": findings.copy(), "report_status": status, **attrs}, reports, indications
