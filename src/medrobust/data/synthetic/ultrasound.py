"""Synthetic breast-ultrasound-like B-mode images: sector field of view, tissue layers, lesions, speckle.

Written by hand. Image coordinates ``(x, y)`` lie in ``[-1, 1]`` (``y`` grows with depth); a convex probe at
``(0, apex)`` above the image sends beams through a sector (black outside). Along depth ``d`` (0 at the skin
line, 1 at the deepest sample) the echogenicity map holds skin, hypoechoic subcutaneous fat, bright
fibroglandular tissue, striated pectoral muscle and a bright chest-wall line, with wavy boundaries. Findings
(:data:`FINDINGS`, several may coexist):

- ``cyst``: round, anechoic, thin bright wall, posterior acoustic enhancement (brighter beams behind it);
- ``circumscribed mass``: oval, wider than tall, smooth, hypoechoic with faint internal echoes;
- ``irregular mass``: angular/lobulated margin, markedly hypoechoic, posterior acoustic shadowing.

Acquisition: attenuation ``exp(-a d)`` partly undone by the site's time-gain compensation, multiplicative
Rayleigh speckle (the envelope of a smoothed complex Gaussian field, with the site's axial / lateral speckle
size), a Rayleigh noise floor, log compression to the site's dynamic range and gain, and 8-bit quantisation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter

from medrobust.data.synthetic import common as cm

FINDINGS = ("cyst", "circumscribed mass", "irregular mass")
LABELS = ("normal", "lesion")
SITE_NAMES = ("A", "B", "C", "D")
MODALITY = "ultrasound"
MM_PER_UNIT = 22.0  # the 1.8-unit sector depth is about 40 mm
SYNONYMS = {"cyst": ("cyst",), "circumscribed mass": ("circumscribed", "oval", "fibroadenoma"),
            "irregular mass": ("irreg", "spiculated", "angular", "shadowing")}  # lower-case words / shorthand


@dataclass(frozen=True)
class Site:
    description: str
    prevalence: float = 0.45  # share of images with at least one lesion
    half_angle: float = 0.48  # sector half-angle (radians)
    apex: float = -1.2
    depth: float = 1.8  # radial extent of the sector (world units)
    tgc: float = 1.6  # time-gain compensation slope (attenuation is 2.0 per unit depth)
    gain: float = -3.0  # dB added before log compression
    dynamic_range: float = 50.0  # dB mapped onto the 8-bit range
    speckle: tuple[float, float] = (0.5, 0.9)  # axial / lateral speckle smoothing (pixels)
    floor: float = 0.006  # Rayleigh noise floor (envelope units)
    blur: float = 0.0  # extra spatial blur (pixels at 28 px)


SITES = {
    "A": Site("cart scanner: fine speckle, balanced TGC, 50 dB"),
    "B": Site("mid-range scanner: coarser speckle, high gain, weak TGC (dark deep field)", prevalence=0.48,
              half_angle=0.5, tgc=0.9, gain=1.0, speckle=(0.8, 1.3), dynamic_range=55.0),
    "C": Site("handheld probe: narrow sector, strong TGC, noisy, contrasty (40 dB)", prevalence=0.42,
              half_angle=0.4, apex=-1.1, depth=1.7, tgc=2.4, gain=-4.0, dynamic_range=40.0, floor=0.03),
    "D": Site("old scanner: coarse laterally smeared speckle, low gain, shallow, blurred", prevalence=0.44,
              half_angle=0.45, apex=-1.3, depth=1.6, tgc=1.1, gain=-7.0, speckle=(1.0, 2.0), blur=0.7,
              dynamic_range=60.0),
}


def sample_labels(rng: np.random.Generator, n: int, site: Site) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Findings ``int64 [n, 3]`` and attributes (sizes in mm, 0 where absent; ``posterior`` of the main
    lesion: 0 none, 1 enhancement, 2 shadowing)."""
    u = rng.random((n, 5))
    lesion = u[:, 0] < site.prevalence
    kind = np.where(u[:, 1] < 0.35, 0, np.where(u[:, 1] < 0.70, 1, 2))  # main lesion: cyst / circ / irregular
    findings = np.zeros((n, 3), dtype=np.int64)
    findings[np.arange(n), kind] = lesion
    findings[:, 0] |= (lesion & (kind > 0) & (u[:, 2] < 0.18))  # a cyst beside a mass
    mass = findings[:, 1] | findings[:, 2]
    attrs = {"cyst_size_mm": np.round(6 + 10 * u[:, 3]).astype(np.int64) * findings[:, 0],
             "mass_size_mm": np.round(9 + 14 * u[:, 4] ** 1.2).astype(np.int64) * mass,
             "posterior": np.where(mass == 1, 2 * findings[:, 2], findings[:, 0])}
    return findings, attrs


def _geometry(p: Site, size: int) -> tuple[np.ndarray, ...]:
    g = cm.grid(size)
    x, y = g[None, :], g[:, None]
    r, th = np.hypot(x, y - p.apex), np.arctan2(x, y - p.apex)
    r0 = -1.0 - p.apex + 0.12
    d = (r - r0) / p.depth
    fov = np.clip((p.half_angle - np.abs(th)) * size / 2 * r + 0.5, 0, 1) * np.clip(d * p.depth * size / 2 + 0.5, 0, 1)
    fov *= np.clip((1 - d) * p.depth * size / 2 + 0.5, 0, 1)
    return x, y, r, th, d, fov.astype(np.float32)


def _lesion(rng, p: Site, sizes_mm, th):
    """Centre ``(cx, cy)``, semi-axes, tilt and margin harmonics of lesions on beams ``th``, ``[n]`` arrays."""
    n = len(th)
    dd = rng.uniform(0.36, 0.55, n)
    r = -1.0 - p.apex + 0.12 + dd * p.depth
    a = np.maximum(sizes_mm, 1) / 2 / MM_PER_UNIT
    return dict(cx=r * np.sin(th), cy=p.apex + r * np.cos(th), r=r, th=th, a=a, tilt=rng.normal(0, 0.15, n),
                aspect=rng.uniform(1.0, 1.25, n), harm=rng.uniform(0.08, 0.16, (n, 3)),
                phase=rng.uniform(0, 2 * np.pi, (n, 3)), echo=rng.uniform(0.5, 1.5, n))


def _draw(echo, shade, geo, L, kind: np.ndarray, on: np.ndarray, size: int) -> None:
    """Blend one lesion slot (``kind`` 0 cyst, 1 circumscribed, 2 irregular; ``on`` bool) into ``echo``."""
    x, y, r, th = geo[:4]
    c = lambda k: cm.col(L[k])  # noqa: E731
    aspect = np.where(kind == 0, 1.1 * L["aspect"], np.where(kind == 1, 1.6 * L["aspect"], 0.95 * L["aspect"]))
    a, b = c("a"), c("a") / cm.col(aspect)
    ct, st = np.cos(c("tilt")), np.sin(c("tilt"))
    dx, dy = x - c("cx"), y - c("cy")
    u, v = (ct * dx + st * dy) / a, (-st * dx + ct * dy) / b
    rho = np.sqrt(u * u + v * v)
    if (kind == 2).any():
        phi = np.arctan2(v, u)
        wig = sum(cm.col(L["harm"][:, k]) * np.cos((3 + 2 * k) * phi + cm.col(L["phase"][:, k])) for k in range(3))
        rho = rho / (1 + wig * cm.col(kind == 2))
    m = np.clip((1 - rho) * a * size / 2 + 0.5, 0, 1) * cm.col(on)
    wall = np.clip(1 - np.abs(1 - rho) * a * size / 2, 0, 1) * cm.col(on & (kind == 0))
    level = cm.col(np.where(kind == 0, 0.02, np.where(kind == 1, 0.22, 0.1)) * L["echo"])
    echo *= 1 - m
    echo += m * level + 0.5 * wall
    across = np.abs(c("r") * np.sin(th - c("th")))  # distance of the lesion centre from each beam
    behind = np.clip((across - 0.9 * a) * -size / 2 + 0.5, 0, 1) * np.clip((r - c("r")) / (0.5 * b), 0, 1)
    gain = np.where(kind == 0, 0.8, np.where(kind == 1, 0.15, -0.72))
    shade *= 1 + behind * cm.col(gain * on)


def render(rng: np.random.Generator, acq: np.random.Generator, findings: np.ndarray, attrs: dict, p: Site,
           size: int) -> np.ndarray:
    """``uint8 [n, 1, S, S]`` B-mode images of one site (``rng`` anatomy/lesions, ``acq`` acquisition)."""
    n = len(findings)
    geo = _geometry(p, size)
    _, _, r, th, d, fov = geo
    b1 = rng.uniform(0.14, 0.26, n)
    b2 = b1 + rng.uniform(0.3, 0.45, n)
    b3 = np.minimum(b2 + rng.uniform(0.12, 0.2, n), 0.9)
    wav = rng.uniform(0.01, 0.04, (n, 3)), rng.uniform(2, 6, (n, 3)), rng.uniform(0, 2 * np.pi, (n, 3))
    tex = rng.uniform(0.15, 0.3, n), rng.uniform(6, 14, n), rng.uniform(0, 2 * np.pi, n)
    main = np.argmax(findings[:, 1:] * [1, 2], axis=1) + 1  # the mass kind, or 0 when there is none
    mass_on = (findings[:, 1] | findings[:, 2]) == 1
    th0 = p.half_angle * rng.uniform(-0.55, 0.55, n)
    L0 = _lesion(rng, p, np.where(mass_on, attrs["mass_size_mm"], attrs["cyst_size_mm"]), th0)
    L1 = _lesion(rng, p, attrs["cyst_size_mm"], -np.sign(th0) * p.half_angle * rng.uniform(0.6, 0.75, n))
    out = np.empty((n, 1, size, size), dtype=np.uint8)
    scale = size / 28.0
    for s in range(0, n, 256):
        sl = slice(s, min(s + 256, n))
        k = sl.stop - sl.start
        bnd = [cm.col(bb[sl]) + cm.col(wav[0][sl, j]) * np.sin(cm.col(wav[1][sl, j]) * th + cm.col(wav[2][sl, j]))
               for j, bb in enumerate((b1, b2, b3))]
        step = lambda t: np.clip(t * p.depth * size / 2 + 0.5, 0, 1)  # noqa: E731 - soft step in depth
        fat, gland, muscle, wall = step(d - 0.04), step(d - bnd[0]), step(d - bnd[1]), step(d - bnd[2])
        texture = 1 + cm.col(tex[0][sl]) * np.sin(cm.col(tex[1][sl]) * (d + 0.3 * th) + cm.col(tex[2][sl]))
        striae = 1 + 0.3 * np.sin(40 * (d - 0.4 * th))
        echo = (0.9 - 0.55 * fat + 0.45 * gland * texture - 0.5 * muscle * (2 - striae) + 0.6 * wall
                - 0.9 * step(d - bnd[2] - 0.04))
        echo = np.maximum(echo, 0.03).astype(np.float32)
        shade = np.ones_like(echo)
        take = lambda L: {key: v[sl] for key, v in L.items()}  # noqa: E731
        _draw(echo, shade, geo, take(L0), np.where(mass_on[sl], main[sl], 0), findings[sl].any(axis=1), size)
        _draw(echo, shade, geo, take(L1), np.zeros(k, int), mass_on[sl] & (findings[sl, 0] == 1), size)
        env = echo * np.maximum(shade, 0.02) * np.exp((p.tgc - 2.0) * d * p.depth)
        z = acq.normal(size=(2, k, size, size)).astype(np.float32)
        z = gaussian_filter(z, sigma=(0, 0, *p.speckle), mode="wrap")  # speckle: about a pixel at any size
        speck = np.hypot(z[0], z[1])
        env = env * speck / speck.mean(axis=(1, 2), keepdims=True)
        env = env + p.floor * np.hypot(*acq.normal(size=(2, k, size, size)).astype(np.float32))
        if p.blur:
            env = gaussian_filter(env, sigma=(0, p.blur * scale, p.blur * scale))
        db = 20 * np.log10(np.maximum(env, 1e-4)) + p.gain
        img = np.clip(1 + db / p.dynamic_range, 0, 1) * fov
        out[sl, 0] = np.rint(img * 255).astype(np.uint8)
    return out


def _stated(f: str, i: int, attrs: dict, pick, abbrev: bool) -> str:
    mm = int(attrs["cyst_size_mm" if f == "cyst" else "mass_size_mm"][i])
    size = f"{mm}mm" if abbrev else pick((f"{mm} mm", f"{mm / 10:.1f} cm", f"measuring {mm} mm"))
    if f == "cyst":
        return pick((f"simple cyst {size}", f"anechoic cyst {size} w/ post enhancement") if abbrev else
                    (f"anechoic cyst, {size}, with posterior acoustic enhancement", f"simple cyst {size}",
                     f"well-defined anechoic cyst {size}"))
    if f == "circumscribed mass":
        return pick((f"oval circumscribed hypoechoic mass {size}", f"circumscribed mass {size}") if abbrev else
                    (f"oval circumscribed hypoechoic mass {size}, parallel to the skin",
                     f"circumscribed hypoechoic solid mass {size}, likely fibroadenoma"))
    return pick((f"irregular hypoechoic mass {size} w/ post shadowing", f"irreg mass {size}, shadowing")
                if abbrev else (f"irregular hypoechoic mass {size} with angular margins and posterior shadowing",
                                f"spiculated hypoechoic mass {size} with posterior acoustic shadowing"))


LEXICON = cm.Lexicon(
    findings=FINDINGS, stated=_stated,
    imagined={"cyst": ("small cyst",), "circumscribed mass": ("small oval hypoechoic nodule",),
              "irregular mass": ("area of shadowing, possibly artefact",)},
    negated={"cyst": ("no cyst", "no cystic lesion"),
             "circumscribed mass": ("no solid mass", "no focal hypoechoic lesion"),
             "irregular mass": ("no suspicious mass", "no solid mass")},
    negated_abbrev={"cyst": ("no cyst",), "circumscribed mass": ("no solid mass",),
                    "irregular mass": ("no susp mass",)},
    normal=("normal breast ultrasound", "no sonographic abnormality", "benign-appearing breast tissue"),
    normal_abbrev=("NAD", "nl US"),
    exam=("Breast ultrasound.", "US breast, targeted.", "Ultrasound of the breast."),
    opening=("Bedside handheld scan, {n} views.", "Handheld ultrasound, limited study.",
             "Targeted scan with the portable probe."),
    background=("Normal skin and subcutaneous fat.", "Fibroglandular tissue is heterogeneous.",
                "Pectoral muscle unremarkable."),
    head_abbrev=("US: ", "US br: ", ""),
    recommend={"irregular mass": ("Biopsy recommended.", "BI-RADS 4, tissue sampling advised."),
               "circumscribed mass": ("Short-interval follow-up suggested.",)})

REQUESTS = cm.Requests(
    reasons={"lump": (0.22, "palpable lump", "lump"), "screening": (0.2, "dense breasts, screening", "screen"),
             "pain": (0.18, "breast pain", "mastalgia"), "mammo": (0.12, "abnormal mammogram", "abn mammo"),
             "follow-up": (0.12, "follow-up", "f/u"), "discharge": (0.06, "nipple discharge", "discharge"),
             "family": (0.1, "family history of breast cancer", "FHx ca")},
    likelier={"irregular mass": {"lump": 1.8, "mammo": 2.2}, "circumscribed mass": {"lump": 1.6, "follow-up": 1.5},
              "cyst": {"pain": 1.6, "lump": 1.3}},
    queries={"cyst": ("? cyst", "?cyst"), "circumscribed mass": ("? fibroadenoma", "?FA"),
             "irregular mass": ("evaluate for malignancy", "?ca")},
    age=(48.0, 13.0), p_male=0.02)


def generate(seed: int, site: str, n: int, size: int):
    """``(images, findings, extras, reports, indications)`` of one site (see :func:`.generate_site`)."""
    k, p = SITE_NAMES.index(site), SITES[site]
    findings, attrs = sample_labels(cm.stream(seed, "ultrasound", k, cm.LABELS), n, p)
    images = render(cm.stream(seed, "ultrasound", k, cm.ANATOMY), cm.stream(seed, "ultrasound", k, cm.ACQUISITION),
                    findings, attrs, p, size)
    indications = cm.sample_indications(cm.stream(seed, "ultrasound", k, cm.INDICATIONS), REQUESTS, findings,
                                        FINDINGS, site)
    rng = cm.stream(seed, "ultrasound", k, cm.REPORTS)
    subtle = np.stack([attrs["cyst_size_mm"] < 9, attrs["mass_size_mm"] < 12, np.zeros(n, bool)], axis=1)
    status = cm.sample_status(rng, findings, subtle, 0.6 if site == "A" else 0.35)
    other_mass = findings[:, [2, 1]] == 1  # "no solid mass" would contradict the other mass
    status[:, 1:] = np.where(other_mass & (status[:, 1:] == cm.NEGATED), 0, status[:, 1:])
    reports = cm.write_reports(rng, LEXICON, status, attrs, site, indications)
    return images, findings, {"findings": findings.copy(), "report_status": status, **attrs}, reports, indications
