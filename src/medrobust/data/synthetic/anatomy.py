"""Normal chest anatomy of the synthetic radiographs, rendered as a projected density map.

Written by hand (no library draws chest radiographs). Every structure is an analytic shape evaluated on
a pixel grid for a whole batch at once (``[B, R, R]`` numpy arrays, no per-pixel loops).

Coordinates: the *world* frame is the patient's chest in normalised units (the inner thoracic width is
about 1.6 units, :data:`MM_PER_UNIT` millimetres per unit). ``X`` grows to the image right, ``Y`` grows
downwards. Radiological convention: the patient's **right** lies on the image **left** (``X < 0``), so
the heart bulges to ``X > 0``. Density is "brightness before acquisition": air ~0.03, lungs ~0.15 (dark,
radiolucent), lateral chest wall ~0.3, mediastinum / heart / abdomen ~0.55, bone a little more.

The pose/field of view (zoom, shift, in-plane rotation) maps image coordinates ``(u, v)`` in
``[-1, 1]`` to world coordinates, so a site's field of view changes where and how large anatomy appears.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MM_PER_UNIT = 150.0  # millimetres per world unit (inner chest width ~1.6 units ~ 240 mm)
RIGHT, LEFT = -1.0, 1.0  # world-x sign of the patient's right / left lung
HEART_TILT = -0.35  # radians: the heart's long axis points down to the patient's left
_YC = np.float32(-0.30)  # below this height the lung walls run straight down (flaring slightly)
_COS_T, _SIN_T = np.float32(np.cos(HEART_TILT)), np.float32(np.sin(HEART_TILT))


@dataclass(frozen=True)
class Pose:
    """Site field of view: mean zoom/shift and per-image jitter (world units / radians)."""

    zoom: float = 1.0
    shift_x: float = 0.0
    shift_y: float = 0.0
    zoom_sd: float = 0.03
    shift_sd: float = 0.025
    rot_sd: float = 0.025


@dataclass
class Canvas:
    """A rendered batch: world coordinates, lung masks and density, each ``float32 [B, R, R]``."""

    X: np.ndarray
    Y: np.ndarray
    lung_right: np.ndarray  # air-filled right lung (image left), heart overlap removed
    lung_left: np.ndarray
    density: np.ndarray

    def lung(self, side: float) -> np.ndarray:
        """The lung mask of world-x ``side`` (:data:`RIGHT` or :data:`LEFT`)."""
        return self.lung_right if side < 0 else self.lung_left


def ramp(t: np.ndarray) -> np.ndarray:
    """Soft step from 0 to 1 over ``t`` in [-0.5, 0.5] (linear edge; supersampling smooths it)."""
    return np.clip(t + 0.5, 0.0, 1.0)


def cardiothoracic_ratio(rng: np.random.Generator, grade: np.ndarray) -> np.ndarray:
    """Cardiothoracic ratio per image: normal 0.38-0.50, mild 0.57-0.63, moderate 0.64-0.72.

    Args:
        rng: generator.
        grade: ``int [n]`` cardiomegaly grade (0 none, 1 mild, 2 moderate).
    """
    lo = np.array([0.38, 0.57, 0.64])[grade]
    hi = np.array([0.50, 0.63, 0.72])[grade]
    return lo + (hi - lo) * rng.random(len(grade))


def sample_anatomy(rng: np.random.Generator, ctr: np.ndarray, pose: Pose) -> dict[str, np.ndarray]:
    """Per-image anatomy and pose parameters (``float64 [n]``; the lung texture ``[n, 2]``).

    Args:
        rng: generator (one stream per site and purpose).
        ctr: ``[n]`` cardiothoracic ratio of each image (sets the heart width).
        pose: the site's field of view.

    Returns:
        Dict of parameter arrays; lung, diaphragm and heart geometry in world units.
    """
    n = len(ctr)
    nrm = lambda sd: rng.normal(0.0, sd, n)
    p: dict[str, np.ndarray] = {
        "zoom": pose.zoom * np.exp(nrm(pose.zoom_sd)),
        "tx": pose.shift_x + nrm(pose.shift_sd),
        "ty": pose.shift_y + nrm(pose.shift_sd),
        "rot": nrm(pose.rot_sd),
        "body_hw": 0.93 + nrm(0.03),
        "apex": -0.84 + nrm(0.03),
        "cx_r": -0.45 + nrm(0.015),
        "cx_l": 0.46 + nrm(0.015),
        "hw_r": 0.32 + nrm(0.015),
        "hw_l": 0.31 + nrm(0.015),
        "dome_r": 0.36 + nrm(0.035),  # top of the right hemidiaphragm (highest point)
        "dome_h": 0.17 + nrm(0.02),  # depth of the costophrenic recess below the dome top
        "rib_period": 0.20 + nrm(0.008),
        "rib_phase": rng.random(n),
        "spine_phase": rng.random(n) * 2 * np.pi,
    }
    p["dome_l"] = p["dome_r"] + 0.05 + nrm(0.02)  # the left hemidiaphragm sits lower
    # inner thoracic width at the costophrenic angles (the lateral walls flare towards the base)
    flare = lambda dome: 1.0 + 0.10 * (dome + p["dome_h"] - _YC) / (_YC - p["apex"])
    width = (p["cx_l"] + p["hw_l"] * flare(p["dome_l"])) - (p["cx_r"] - p["hw_r"] * flare(p["dome_r"]))
    p["ctr"] = np.asarray(ctr, dtype=np.float64)
    half = ctr * width / 2  # horizontal half-extent of the (tilted) heart silhouette
    p["heart_hh"] = 0.33 + 0.30 * (half - 0.33) + nrm(0.01)
    p["heart_hw"] = np.sqrt(np.maximum(half ** 2 - (p["heart_hh"] * _SIN_T) ** 2, 0.01)) / abs(_COS_T)
    p["heart_x"] = 0.12 + 0.45 * (half - 0.33) + nrm(0.012)  # enlarges towards the patient's left
    p["heart_y"] = p["dome_l"] - 0.30 * p["heart_hh"] + nrm(0.01)  # lower part hidden in the abdomen
    # lung texture: 2 random plane waves per image (vascular markings / parenchyma)
    angle = rng.random((n, 2)) * np.pi
    freq = 9.0 + 6.0 * rng.random((n, 2))
    p["tex_fx"], p["tex_fy"] = freq * np.cos(angle), freq * np.sin(angle)
    p["tex_ph"] = rng.random((n, 2)) * 2 * np.pi
    return p


def take(p: dict[str, np.ndarray], index: slice | np.ndarray) -> dict[str, np.ndarray]:
    """The parameters of the images at ``index`` (a chunk)."""
    return {k: v[index] for k, v in p.items()}


def col(v: np.ndarray) -> np.ndarray:
    """``[B]`` parameters as ``float32 [B, 1, 1]`` for broadcasting over the pixel grid."""
    return np.asarray(v, dtype=np.float32).reshape(-1, 1, 1)


def _unit_grid(r: int) -> tuple[np.ndarray, np.ndarray]:
    """Image coordinates of pixel centres in [-1, 1]: columns ``[1, 1, r]`` and rows ``[1, r, 1]``."""
    g = (np.arange(r, dtype=np.float32) + 0.5) / r * 2 - 1
    return g.reshape(1, 1, r), g.reshape(1, r, 1)


def world_coords(p: dict[str, np.ndarray], r: int) -> tuple[np.ndarray, np.ndarray]:
    """World coordinates ``X, Y`` (``float32 [B, r, r]``) of the pixel centres of an ``r``-pixel grid."""
    u, v = _unit_grid(r)
    c, s, z = col(np.cos(p["rot"])), col(np.sin(p["rot"])), col(p["zoom"])
    du, dv = u - col(p["tx"]), v - col(p["ty"])  # [B,1,r], [B,r,1]
    return (c * du + s * dv) / z, (c * dv - s * du) / z


def plane_wave(p: dict[str, np.ndarray], fx: np.ndarray, fy: np.ndarray, phase: np.ndarray, r: int) -> np.ndarray:
    """``cos(fx * X + fy * Y + phase)`` as ``float32 [B, r, r]``, computed separably.

    The pose is affine, so the phase is ``a * u + b * v + c`` in image coordinates and the cosine splits
    into products of ``[B, 1, r]`` and ``[B, r, 1]`` factors (no full-size trigonometry).
    """
    u, v = _unit_grid(r)
    c, s, z = np.cos(p["rot"]), np.sin(p["rot"]), p["zoom"]
    a, b = (fx * c - fy * s) / z, (fx * s + fy * c) / z
    c0 = phase - a * p["tx"] - b * p["ty"]
    au, bv = col(a) * u, col(b) * v + col(c0)
    return np.cos(au) * np.cos(bv) - np.sin(au) * np.sin(bv)


def dome_y(X: np.ndarray, cx: np.ndarray, hw: np.ndarray, top: np.ndarray, depth: np.ndarray) -> np.ndarray:
    """Height of a hemidiaphragm dome at ``X``: highest at the lung centre, lowest at the walls."""
    t = (X - cx) / hw
    return top + depth * t * t


def _lung(X, Y, cx, hw, apex, dome, edge) -> np.ndarray:
    """Soft mask of one lung: a rounded apex over straight, slightly flaring walls, cut by the dome."""
    v = (Y - _YC) / (_YC - apex)
    u = (X - cx) / (hw * (1.0 + 0.10 * np.maximum(v, 0.0)))  # the lateral wall flares towards the base
    np.minimum(v, 0.0, out=v)
    inside = 1.0 - np.sqrt(u * u + v * v)
    return ramp(inside * (hw / edge)) * ramp((dome - Y) * (1.0 / edge))


def _rows(y_lo: np.ndarray, y_hi: np.ndarray, lo: float, hi: float) -> slice:
    """Rows of the chunk where some image reaches world heights in ``[lo, hi]`` (for local structures)."""
    hit = np.flatnonzero((y_hi >= lo) & (y_lo <= hi))
    return slice(int(hit[0]), int(hit[-1]) + 1) if len(hit) else slice(0, 0)


def render_anatomy(p: dict[str, np.ndarray], r: int) -> Canvas:
    """Render the normal chest of a chunk of images.

    Args:
        p: parameters of ``B`` images (from :func:`sample_anatomy`, possibly a chunk via :func:`take`).
        r: grid size in pixels (the supersampled image size).

    Returns:
        A :class:`Canvas` whose ``density`` ``[B, r, r]`` later receives the findings.
    """
    X, Y = world_coords(p, r)
    ax = np.abs(X)
    edge = np.float32(0.03)
    P = {k: col(v) for k, v in p.items() if np.ndim(v) == 1}
    # torso: an elliptic cross-section (thicker, brighter centrally) tapering to the neck at the top
    taper = np.clip(-(Y + 0.85) / 0.3, 0, 1)
    xb = X / (P["body_hw"] - 0.3 * taper * taper)
    thick = np.sqrt(np.clip(1.0 - xb * xb, 0.0, 1.0))
    dens = 0.03 + 0.50 * thick
    # abdomen below the diaphragm is slightly denser (liver on the right)
    dome_r = dome_y(X, P["cx_r"], P["hw_r"], P["dome_r"], P["dome_h"])
    dome_l = dome_y(X, P["cx_l"], P["hw_l"], P["dome_l"], P["dome_h"])
    right = X < 0
    dome = np.where(right, dome_r, dome_l)
    dens += thick * ramp((Y - dome) * 25.0) * (0.03 + 0.02 * right)
    # lungs (air), minus the heart, lower mediastinum and aortic knob in front of them
    lr = _lung(X, Y, P["cx_r"], P["hw_r"], P["apex"], dome_r, edge)
    ll = _lung(X, Y, P["cx_l"], P["hw_l"], P["apex"] + 0.02, dome_l, edge)
    dx, dy = X - P["heart_x"], Y - P["heart_y"]
    hu = (_COS_T * dx + _SIN_T * dy) / P["heart_hw"]
    hv = (_COS_T * dy - _SIN_T * dx) / P["heart_hh"]
    cover = ramp((1.0 - np.sqrt(hu * hu + hv * hv)) * (P["heart_hw"] / edge))
    t = np.clip((Y + 0.2) / (P["heart_y"] + 0.2), 0.0, 1.0)  # lower mediastinum widens into the heart
    np.maximum(cover, ramp((0.13 + t * t * (0.75 * P["heart_hw"] - 0.10) - np.abs(X - 0.03)) / edge), out=cover)
    y_lo, y_hi = Y.min(axis=(0, 2)), Y.max(axis=(0, 2))  # [r] world height range of each row
    sl = _rows(y_lo, y_hi, -0.40, -0.24)
    kx, ky = X[:, sl] - 0.13, Y[:, sl] + 0.32
    np.maximum(cover[:, sl], ramp((0.065 - np.sqrt(kx * kx + ky * ky)) / edge), out=cover[:, sl])
    cover = 1.0 - cover
    lr *= cover
    ll *= cover
    lungs = lr + ll
    dens -= lungs * (0.20 + 0.12 * thick)
    # vascular markings: brighter near the hila, with a faint parenchymal texture
    marks = 0.012 * plane_wave(p, p["tex_fx"][:, 0], p["tex_fy"][:, 0], p["tex_ph"][:, 0], r)
    marks += 0.012 * plane_wave(p, p["tex_fx"][:, 1], p["tex_fy"][:, 1], p["tex_ph"][:, 1], r)
    sl = _rows(y_lo, y_hi, -0.45, 0.41)
    hx, hy = ax[:, sl] - 0.19, Y[:, sl] + 0.02
    marks[:, sl] += 0.06 * np.exp((hx * hx + hy * hy) * np.float32(-1 / 0.03))
    dens += marks * lungs
    # posterior ribs (arcs rising from the spine and falling laterally), clavicles, spine, trachea
    arc = ax - 0.35
    phase = (Y - 0.9 * arc * arc) * (2 * np.pi / P["rib_period"]) + 2 * np.pi * P["rib_phase"]
    rib = np.clip(np.cos(phase) * 1.6 - 0.7, 0, 1)
    dens += 0.03 * rib * (0.3 + lungs) * ramp((0.82 - ax) * 20.0) * ramp((P["dome_l"] - Y) * 20.0)
    sl = _rows(y_lo, y_hi, -1.2, -0.5)
    a, y = ax[:, sl], Y[:, sl]
    clav = np.abs(y + 0.80 + 0.30 * a - 0.40 * a * a)
    dens[:, sl] += 0.06 * ramp((0.03 - clav) * 50.0) * ramp((0.75 - a) * 20.0) * ramp((a - 0.06) * 33.0)
    wave = plane_wave(p, np.zeros(len(X)), np.full(len(X), 2 * np.pi / 0.12), p["spine_phase"], r)
    dens += ramp((0.075 - ax) * 50.0) * (0.06 + 0.015 * wave)
    sl = _rows(y_lo, y_hi, -2.0, -0.2)
    dens[:, sl] -= 0.08 * ramp((0.028 - ax[:, sl]) * 66.0) * ramp((-0.25 - Y[:, sl]) * 25.0)
    # gastric bubble under the left hemidiaphragm
    lo = float(p["dome_l"].min()) + 0.04
    sl = _rows(y_lo, y_hi, lo, float(p["dome_l"].max()) + 0.16)
    gx, gy = (X[:, sl] - 0.40) * 10.0, (Y[:, sl] - P["dome_l"] - 0.10) * 20.0
    dens[:, sl] -= 0.07 * ramp((1.0 - np.sqrt(gx * gx + gy * gy)) * 2.5)
    return Canvas(X=X, Y=Y, lung_right=lr, lung_left=ll, density=dens.astype(np.float32, copy=False))
