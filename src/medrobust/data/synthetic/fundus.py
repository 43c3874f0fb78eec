"""Synthetic colour fundus photographs (RGB) with diabetic-retinopathy lesions.

Written by hand. Image coordinates ``(x, y)`` lie in ``[-1, 1]``. A macula-centred photograph: an orange-red
retina disc on black, a bright yellowish optic disc (with a paler cup) on the nasal side (image right for a
right eye), a darker macula with a faint foveal reflex, and dark-red vessels: two temporal arcades that leave
the disc and curve around the macula, two shorter nasal vessels, and a branch from each. Thin structures and
small lesions are splatted as points and Gaussian-blurred (:func:`.common.splat`), so cost does not grow with
their number. Findings (:data:`FINDINGS`) follow a retinopathy grade (extras ``dr_grade``: 0 none, 1 mild =
microaneurysms only, 2 moderate, 3 severe):

- ``microaneurysms``: small sharp red dots in the posterior pole;
- ``haemorrhages``: larger dark-red dot-blot blotches;
- ``exudates``: bright yellow spots clustered around the macula.

Sites are fundus cameras: colour cast, vignetting, field of view, defocus blur, uneven illumination, noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter

from medrobust.data.synthetic import common as cm

FINDINGS = ("microaneurysms", "haemorrhages", "exudates")
LABELS = ("no retinopathy", "retinopathy")
SITE_NAMES = ("A", "B", "C", "D")
MODALITY = "fundus photography"
SYNONYMS = {"microaneurysms": ("microaneurysm", "mas"), "haemorrhages": ("haemorrhage", "haem", "blot"),
            "exudates": ("exudate", "hex")}  # lower-case words and shorthand that name each finding
GRADES = ("none", "mild", "moderate", "severe")
_BASE = np.array([0.80, 0.33, 0.12], dtype=np.float32)  # retina colour
_DISC = np.array([1.0, 0.86, 0.56], dtype=np.float32)
_VESSEL = np.array([0.45, 0.72, 0.62], dtype=np.float32)  # how much a vessel darkens each channel
_RED = np.array([0.35, 0.8, 0.7], dtype=np.float32)  # how much red lesions darken each channel
_YELLOW = np.array([0.98, 0.86, 0.35], dtype=np.float32)


@dataclass(frozen=True)
class Site:
    description: str
    grade_p: tuple[float, float, float] = (0.2, 0.17, 0.08)  # P(mild), P(moderate), P(severe)
    cast: tuple[float, float, float] = (1.0, 1.0, 1.0)  # RGB gains
    vignette: float = 0.25
    radius: float = 0.92  # retina disc radius
    shift: tuple[float, float] = (0.0, 0.0)
    blur: float = 0.0  # defocus (pixels at 28 px)
    tilt: float = 0.0  # uneven illumination (linear gradient strength)
    noise: float = 0.012
    gamma: float = 1.0


SITES = {
    "A": Site("desktop camera, well exposed, neutral colour"),
    "B": Site("warm, yellowish camera with mild vignetting and a wider field", grade_p=(0.22, 0.18, 0.07),
              cast=(1.06, 1.08, 0.75), vignette=0.35, radius=0.97, blur=0.3, noise=0.02, gamma=0.9),
    "C": Site("cool greenish camera, dark, strong vignetting", grade_p=(0.18, 0.16, 0.1),
              cast=(0.85, 1.08, 1.15), vignette=0.45, radius=0.88, noise=0.025, gamma=1.2),
    "D": Site("handheld camera: small shifted field, defocus, uneven light, noisy, reddish",
              grade_p=(0.2, 0.15, 0.08), cast=(1.12, 0.85, 0.9), vignette=0.45, radius=0.8, shift=(0.06, -0.05),
              blur=0.7, tilt=0.2, noise=0.03),
}


def sample_labels(rng: np.random.Generator, n: int, site: Site) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Findings ``int64 [n, 3]`` and attributes (``eye`` 1 right / 2 left, ``dr_grade``, lesion counts)."""
    u = rng.random((n, 6))
    grade = np.searchsorted(np.cumsum([1 - sum(site.grade_p), *site.grade_p]), u[:, 0], side="right").clip(0, 3)
    ma = (grade == 1) | ((grade >= 2) & (u[:, 1] < 0.9))
    haem = ((grade == 2) & (u[:, 2] < 0.8)) | (grade == 3)
    exud = ((grade == 2) & ((u[:, 3] < 0.55) | ~haem)) | ((grade == 3) & (u[:, 3] < 0.85))
    findings = np.stack([ma, haem, exud], axis=1).astype(np.int64)
    lo, hi = np.array([0, 3, 5, 8]), np.array([0, 8, 14, 20])
    attrs = {"eye": np.where(u[:, 4] < 0.5, 1, 2).astype(np.int64), "dr_grade": grade.astype(np.int64),
             "ma_count": (lo[grade] + np.floor(u[:, 5] * (hi[grade] - lo[grade] + 1))).astype(np.int64) * ma,
             "haem_count": np.where(grade == 3, rng.integers(4, 11, n), rng.integers(1, 5, n)) * haem,
             "exudate_count": np.where(grade == 3, rng.integers(6, 19, n), rng.integers(3, 11, n)) * exud}
    return findings, attrs


def _curves(rng, n, side, disc_x, disc_y, size):
    """Vessel centre-line points ``(image index, y, x, weight)`` of the trunks (4 veins, each with an artery
    beside it) and of one branch per trunk."""
    base = np.array([np.pi + 1.05, np.pi - 1.05, -1.0, 1.0] * 2)  # right eye: temporal arcades, nasal vessels
    bend_r = np.array([-1.25, 1.25, 0.25, -0.25] * 2) * rng.uniform(0.8, 1.2, (n, 8))
    head_r = base + rng.normal(0, 0.12, (n, 8))
    right = side[:, None] > 0
    head0, bend = np.where(right, head_r, np.pi - head_r), np.where(right, bend_r, -bend_r)  # left eye: mirrored
    length = np.array([1.35, 1.35, 0.75, 0.75] * 2) * rng.uniform(0.85, 1.1, (n, 8))
    k = int(np.ceil(1.4 * size / 2 / 0.5))
    t = np.linspace(0, 1, k)[None, None, :]
    off = np.array([0] * 4 + [1] * 4)[None, :, None] * 0.035  # artery beside the vein
    heading = head0[..., None] + bend[..., None] * t
    step = length[..., None] / k
    px = disc_x[:, None, None] + np.cumsum(np.cos(heading) * step, axis=2) + off * np.sin(heading)
    py = disc_y[:, None, None] + np.cumsum(np.sin(heading) * step, axis=2) - off * np.cos(heading)
    w = np.where(off > 0, 0.7, 1.0) * (1.0 - 0.55 * t) * step * size / 2  # line density (darkness x px length)
    bt = rng.integers(k // 4, k // 2, (n, 8))  # branch point index
    sel = lambda a: np.take_along_axis(a, bt[..., None], axis=2)  # noqa: E731
    turn = rng.choice([-1, 1], (n, 8))[..., None] * rng.uniform(0.5, 0.8, (n, 8, 1))
    bh = sel(heading) + turn + 0.3 * bend[..., None] * t
    bstep = (length[..., None] * rng.uniform(0.3, 0.45, (n, 8, 1))) / k
    bx, by = sel(px) + np.cumsum(np.cos(bh) * bstep, axis=2), sel(py) + np.cumsum(np.sin(bh) * bstep, axis=2)
    bw = 0.6 * (1.0 - 0.6 * t) * bstep * size / 2 * np.ones_like(bx)
    b = np.repeat(np.arange(n), 8 * k)
    return (b, py.ravel(), px.ravel(), w.ravel()), (b, by.ravel(), bx.ravel(), bw.ravel())


def _blobs(rng, n, counts, cx, cy, spread, size, sigma_px, amp, jitter=0.0):
    """Splatted, blurred Gaussian spots: ``counts[i]`` around ``(cx, cy)`` of image ``i`` (peak ~``amp``)."""
    b = np.repeat(np.arange(n), counts)
    k = len(b)
    x = np.repeat(cx, counts) + rng.normal(0, 1, k) * np.repeat(spread, counts)
    y = np.repeat(cy, counts) + rng.normal(0, 1, k) * np.repeat(spread, counts)
    if jitter:  # irregular blotches: each spot is a few overlapping ones
        x = np.repeat(x, 3) + rng.normal(0, jitter, 3 * k)
        b, y = np.repeat(b, 3), np.repeat(y, 3) + rng.normal(0, jitter, 3 * k)
    w = amp * rng.uniform(0.6, 1.2, len(b)) * 2 * np.pi * sigma_px[0] ** 2 / (3 if jitter else 1)
    return gaussian_filter(cm.splat(b, y, x, w, n, size), sigma=(0, sigma_px[1], sigma_px[1]))


def render(rng: np.random.Generator, acq: np.random.Generator, findings: np.ndarray, attrs: dict, p: Site,
           size: int) -> np.ndarray:
    """``uint8 [n, 3, S, S]`` fundus photographs of one site."""
    n = len(findings)
    g = cm.grid(size)
    X, Y = g[None, None, :], g[None, :, None]
    side = np.where(attrs["eye"] == 1, 1.0, -1.0)
    fx, fy = p.shift[0] + rng.normal(0, 0.03, n), p.shift[1] + rng.normal(0, 0.03, n)  # fundus centre
    mac_x, mac_y = fx - side * 0.08 + rng.normal(0, 0.03, n), fy + rng.normal(0, 0.03, n)
    disc_x, disc_y = mac_x + side * rng.uniform(0.46, 0.54, n), mac_y - rng.uniform(0.02, 0.08, n)
    disc_r = rng.uniform(0.085, 0.11, n)
    px = size / 2
    rho2 = ((X - cm.col(fx)) ** 2 + (Y - cm.col(fy)) ** 2) / p.radius ** 2
    retina = np.clip((1 - np.sqrt(rho2)) * p.radius * px + 0.5, 0, 1)
    shade = (1 - p.vignette * rho2) * (1 + p.tilt * (X * cm.col(rng.normal(0, 1, n)) + Y * 0.5))
    dm = (X - cm.col(mac_x)) ** 2 + (Y - cm.col(mac_y)) ** 2
    macula = 1 - 0.4 * np.exp(-dm / (2 * 0.11 ** 2)) + 0.25 * np.exp(-dm / (2 * (0.6 / px) ** 2))
    dd = np.sqrt((X - cm.col(disc_x)) ** 2 + ((Y - cm.col(disc_y)) / 1.1) ** 2)
    disc = np.clip((cm.col(disc_r) - dd) * px + 0.5, 0, 1)
    cup = np.clip((0.5 * cm.col(disc_r) - dd) * px + 0.5, 0, 1)
    glow = np.exp(-dd ** 2 / (2 * (2 * cm.col(disc_r)) ** 2))
    sig = max(0.55, 0.02 * px)
    trunk, branch = _curves(rng, n, side, disc_x, disc_y, size)
    vessels = sum(gaussian_filter(cm.splat(*c, n, size), sigma=(0, s, s)) * (np.sqrt(2 * np.pi) * s0 * px)
                  for c, s, s0 in ((trunk, sig, 0.02), (branch, max(0.55, 0.012 * px), 0.012)))
    vessels = (1 - np.exp(-1.2 * vessels)) * (1 - 0.7 * disc)
    tone = rng.normal(1, 0.06, (n, 3)).astype(np.float32)  # pigmentation
    # lesions in the posterior pole around the macula (drawn last: the same image without them is the same draws)
    ma = _blobs(rng, n, attrs["ma_count"], mac_x, mac_y, np.full(n, 0.32), size,
                (0.025 * px, max(0.55, 0.025 * px)), 2.0)
    hm = _blobs(rng, n, attrs["haem_count"], mac_x, mac_y, np.full(n, 0.35), size,
                (0.045 * px, max(0.55, 0.045 * px)), 0.9, jitter=0.03)
    ring = rng.uniform(0, 2 * np.pi, n)
    ex = _blobs(rng, n, attrs["exudate_count"], mac_x + 0.2 * np.cos(ring), mac_y + 0.2 * np.sin(ring),
                np.full(n, 0.09), size, (0.025 * px, max(0.55, 0.025 * px)), 1.0)
    red = np.clip(ma + hm, 0, 1) * (1 - disc)
    ex = np.clip(ex, 0, 1) * (1 - disc)
    img = np.empty((n, 3, size, size), dtype=np.float32)
    for c in range(3):
        v = _BASE[c] * cm.col(tone[:, c]) * macula * (1 + 0.25 * glow)
        v = v + disc * (_DISC[c] - v) + cup * 0.5 * (1 - v) * disc
        v = v * (1 - _VESSEL[c] * vessels) * (1 - _RED[c] * red)
        v = v + ex * (_YELLOW[c] - v)
        img[:, c] = v * shade * p.cast[c] * retina
    if p.blur:
        img = gaussian_filter(img, sigma=(0, 0, p.blur * size / 28, p.blur * size / 28))
    noise = acq.normal(0, p.noise, img.shape).astype(np.float32) * retina[:, None]
    img = np.clip(img, 0, 1) ** np.float32(p.gamma) + noise
    return np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)


def _stated(f: str, i: int, attrs: dict, pick, abbrev: bool) -> str:
    if f == "microaneurysms":
        k = int(attrs["ma_count"][i])
        return pick((f"MAs x{k}", "scattered MAs") if abbrev else
                    (f"scattered microaneurysms (about {k})", "microaneurysms in the posterior pole",
                     f"{k} microaneurysms"))
    if f == "haemorrhages":
        k = int(attrs["haem_count"][i])
        return pick((f"haem x{k}", "dot-blot haem") if abbrev else
                    (f"dot-blot haemorrhages ({k})", "intraretinal haemorrhages", f"{k} blot haemorrhages"))
    return pick(("hard exudates", "HEx near fovea") if abbrev else
                ("hard exudates near the fovea", "circinate hard exudates",
                 "yellow hard exudates temporal to the disc"))


LEXICON = cm.Lexicon(
    findings=FINDINGS, stated=_stated,
    imagined={"microaneurysms": ("single microaneurysm",), "haemorrhages": ("small dot haemorrhage",),
              "exudates": ("faint exudate",)},
    negated={"microaneurysms": ("no microaneurysms",), "haemorrhages": ("no haemorrhages", "no retinal haemorrhage"),
             "exudates": ("no exudates", "no hard exudates")},
    negated_abbrev={"microaneurysms": ("no MAs",), "haemorrhages": ("no haem",), "exudates": ("no HEx",)},
    normal=("no diabetic retinopathy", "normal fundus", "no retinopathy seen"),
    normal_abbrev=("no DR", "R0"),
    exam=("Colour fundus photograph, macula-centred.", "Fundus photography.", "Retinal photograph."),
    opening=("Handheld camera image, {n} attempts.", "Non-mydriatic photograph, fair quality.",
             "Image obtained at the screening clinic."),
    background=("Optic disc pink and well-defined.", "Vessels of normal calibre.", "Macula appears flat."),
    head_abbrev=("DR screen: ", "Fundus: ", ""),
    recommend={"haemorrhages": ("Refer to ophthalmology.", "Moderate NPDR or worse; refer."),
               "exudates": ("OCT advised to assess macular oedema.",)})

REQUESTS = cm.Requests(
    reasons={"screening": (0.45, "annual diabetic eye screening", "DR screen"),
             "control": (0.12, "type 2 diabetes, poor glycaemic control", "T2DM poor control"),
             "vision": (0.12, "blurred vision", "blurred vision"), "t1": (0.1, "type 1 diabetes", "T1DM"),
             "hypertension": (0.1, "diabetes and hypertension", "DM + HTN"),
             "follow-up": (0.11, "follow-up of retinopathy", "f/u DR")},
    likelier={"haemorrhages": {"vision": 1.8, "control": 1.6, "follow-up": 1.6},
              "exudates": {"vision": 2.0, "hypertension": 1.3}, "microaneurysms": {"control": 1.4, "follow-up": 1.5}},
    queries={"haemorrhages": ("? progression", "?prog"), "exudates": ("? maculopathy", "?DMO")},
    age=(60.0, 12.0))


def generate(seed: int, site: str, n: int, size: int):
    """``(images, findings, extras, reports, indications)`` of one site (see :func:`.generate_site`)."""
    k, p = SITE_NAMES.index(site), SITES[site]
    findings, attrs = sample_labels(cm.stream(seed, "fundus", k, cm.LABELS), n, p)
    images = render(cm.stream(seed, "fundus", k, cm.ANATOMY), cm.stream(seed, "fundus", k, cm.ACQUISITION),
                    findings, attrs, p, size)
    indications = cm.sample_indications(cm.stream(seed, "fundus", k, cm.INDICATIONS), REQUESTS, findings,
                                        FINDINGS, site)
    rng = cm.stream(seed, "fundus", k, cm.REPORTS)
    subtle = np.stack([attrs["ma_count"] < 5, attrs["haem_count"] < 2, attrs["exudate_count"] < 5], axis=1)
    status = cm.sample_status(rng, findings, subtle, 0.6 if site == "A" else 0.35)
    reports = cm.write_reports(rng, LEXICON, status, attrs, site, indications)
    return images, findings, {"findings": findings.copy(), "report_status": status, **attrs}, reports, indications
