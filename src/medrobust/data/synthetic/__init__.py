"""Embedded synthetic multimodal, multi-site chest-radiograph data set (images + reports + labels + site).

Needs no download. Each image is a chest-radiograph-like grayscale picture (thorax, two dark lung
fields, heart and mediastinum, spine, ribs, diaphragm domes) rendered at 2x supersampling and
area-downsampled, with up to four findings (:data:`FINDINGS`) drawn locally, acquired by one of four
sites (:data:`SITE_NAMES`) that differ in field of view, blur, intensity response, bias field and noise,
and quantised to uint8. Each image comes with a free-text report in its site's style, written from its
findings with realistic omissions and hedges (recorded in ``extras["report_status"]``).

Determinism: every random draw comes from ``numpy.random.Generator(PCG64)`` streams seeded by
``SeedSequence(seed, spawn_key=(site index, purpose))``, so a site's data does not depend on which
other sites are requested, and the same parameters give byte-identical arrays and identical texts.

Example:
    >>> from medrobust.data.synthetic import SyntheticParams, load_synthetic
    >>> ds = load_synthetic(SyntheticParams(n_per_site=90, sites=["A", "D"], task="findings"))
    >>> ds.train.images.shape, ds.train.labels.shape   # [N, 1, 28, 28], [N, 4]
    ((120, 1, 28, 28), (120, 4))
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from medrobust.data.base import DataError, Dataset, Split, Task
from medrobust.data.synthetic.anatomy import cardiothoracic_ratio, render_anatomy, sample_anatomy, take
from medrobust.data.synthetic.findings import FINDINGS, draw_findings, sample_findings, sample_placement
from medrobust.data.synthetic.indications import sample_indications
from medrobust.data.synthetic.reports import STYLE, sample_status, write_reports
from medrobust.data.synthetic.sites import SITE_NAMES, SITES, acquire
from medrobust.registry import register

__all__ = ["FINDINGS", "SITE_NAMES", "SyntheticParams", "generate_site", "load_synthetic"]

_LABELS, _ANATOMY, _ACQUISITION, _REPORTS, _INDICATIONS = range(5)  # purposes of the per-site random streams
_SHUFFLE_KEY = 1000  # spawn-key prefix of the split-shuffling streams
_PIXELS_PER_CHUNK = 1 << 18  # supersampled pixels rendered at once (bounds memory, keeps caches warm)


class SyntheticParams(BaseModel):
    """Parameters of the synthetic data set."""

    model_config = ConfigDict(extra="forbid")
    seed: int = 0  # data generation seed (independent of training seeds)
    n_per_site: int = Field(900, ge=9)  # split train/val/test = 2/3, 1/9, 2/9 of each site
    image_size: int = Field(28, ge=28)
    sites: list[str] = ["A", "B", "C", "D"]  # subset of SITE_NAMES
    task: Literal["abnormal", "findings"] = "abnormal"


def _stream(seed: int, site_index: int, purpose: int) -> np.random.Generator:
    """The random stream of one site and purpose (the seed is taken modulo 2**64, so negatives work)."""
    entropy = int(seed) % (1 << 64)
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(entropy, spawn_key=(site_index, purpose))))


def _check_site(site: str) -> None:
    if site not in SITES:
        raise DataError(f"synthetic: unknown site {site!r}; expected one of {', '.join(SITE_NAMES)}")


def generate_site(seed: int, site: str, n: int, image_size: int
                  ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray], list[str], list[str]]:
    """Generate ``n`` images, findings, attributes, reports and indications of one site.

    Args:
        seed: data seed (any int).
        site: one of :data:`SITE_NAMES`.
        n: number of images (>= 1).
        image_size: side ``S`` of the square images (>= 28).

    Returns:
        ``images`` uint8 ``[n, 1, S, S]``; ``findings`` int64 ``[n, 4]`` multi-hot in :data:`FINDINGS`
        order; ``extras`` (int64 ``[n]`` / ``[n, 4]``: ``findings``, ``report_status``, finding
        attributes); ``reports`` and ``indications`` (``n`` strings each: the report written after reading the
        image, the clinical history written before).

    Raises:
        DataError: unknown site, ``image_size < 28`` or ``n < 1`` (the message names the value).
    """
    _check_site(site)
    if int(image_size) < 28:
        raise DataError(f"synthetic: image_size={image_size} is too small; expected >= 28")
    if int(n) < 1:
        raise DataError(f"synthetic: n={n} images requested; expected n >= 1")
    k, prof, size = SITE_NAMES.index(site), SITES[site], int(image_size)
    findings, attrs = sample_findings(_stream(seed, k, _LABELS), n, prof.prevalence)
    rng = _stream(seed, k, _ANATOMY)
    p = sample_anatomy(rng, cardiothoracic_ratio(rng, attrs["cardiomegaly_grade"]), prof.pose)
    q = sample_placement(rng, p, attrs)
    r = 2 * size  # 2x supersampling
    chunk = max(1, _PIXELS_PER_CHUNK // (r * r))
    images = np.empty((n, 1, size, size), dtype=np.uint8)
    acq = _stream(seed, k, _ACQUISITION)
    for start in range(0, n, chunk):
        sl = slice(start, min(start + chunk, n))
        pc = take(p, sl)
        canvas = render_anatomy(pc, r)  # density [B, r, r]
        draw_findings(canvas, pc, take(q, sl), findings[sl], take(attrs, sl))
        images[sl] = acquire(canvas.density, prof, acq, size)
    indications = sample_indications(_stream(seed, k, _INDICATIONS), findings, attrs, STYLE[site])
    rng = _stream(seed, k, _REPORTS)
    status = sample_status(rng, findings, attrs, site)
    reports = write_reports(rng, status, attrs, site, indications)
    extras = {"findings": findings.copy(), "report_status": status, **attrs}
    return images, findings, extras, reports, indications


def _split_sizes(n: int) -> tuple[int, int, int]:
    """Train / val / test sizes of one site: 2/3, 1/9, 2/9 (600 / 100 / 200 at 900)."""
    n_val, n_test = n // 9, (2 * n) // 9
    return n - n_val - n_test, n_val, n_test


@register("data", "synthetic")
def load_synthetic(params: SyntheticParams | None = None) -> Dataset:
    """The synthetic multi-site chest-radiograph data set with reports.

    Args:
        params: :class:`SyntheticParams` (defaults: 4 sites x 900 images of 28 x 28, task "abnormal").

    Returns:
        A :class:`~medrobust.data.base.Dataset`: task binary ``("normal", "abnormal")`` (label 1 iff any
        finding) or multilabel over :data:`FINDINGS`; every split holds every requested site, in a
        seeded shuffled order; ``texts`` are the reports; ``extras`` hold ``findings``,
        ``report_status`` and the finding attributes.

    Raises:
        DataError: an unknown or repeated site name, or no site.
    """
    params = params or SyntheticParams()
    if not params.sites:
        raise DataError(f"synthetic: sites is empty; expected a non-empty subset of {', '.join(SITE_NAMES)}")
    for site in params.sites:
        _check_site(site)
    if len(set(params.sites)) != len(params.sites):
        raise DataError(f"synthetic: sites {params.sites!r} repeat a name; expected each site at most once")
    parts: dict[str, list[tuple]] = {"train": [], "val": [], "test": []}
    for site_index, site in enumerate(params.sites):
        images, _, extras, reports, indications = generate_site(params.seed, site, params.n_per_site,
                                                                params.image_size)
        bounds = np.cumsum((0,) + _split_sizes(params.n_per_site))
        for name, lo, hi in zip(parts, bounds[:-1], bounds[1:]):
            sl = slice(int(lo), int(hi))
            parts[name].append((images[sl], {k: v[sl] for k, v in extras.items()}, reports[sl],
                                np.full(hi - lo, site_index, dtype=np.int64), indications[sl]))
    splits = {}
    for j, (name, chunks) in enumerate(parts.items()):
        extras = {k: np.concatenate([c[1][k] for c in chunks]) for k in chunks[0][1]}
        texts = [t for c in chunks for t in c[2]]
        order = _stream(params.seed, _SHUFFLE_KEY, j).permutation(len(texts))
        findings = extras["findings"]
        labels = findings if params.task == "findings" else findings.any(axis=1).astype(np.int64)
        split = Split(images=np.concatenate([c[0] for c in chunks]), labels=labels.astype(np.int64),
                      sites=np.concatenate([c[3] for c in chunks]), texts=texts, extras=extras,
                      indications=[t for c in chunks for t in c[4]])
        splits[name] = split.subset(order)
    task = (Task("multilabel", FINDINGS) if params.task == "findings" else Task("binary", ("normal", "abnormal")))
    source = f"synthetic(seed={params.seed}, n_per_site={params.n_per_site}, image_size={params.image_size})"
    return Dataset(name="synthetic", task=task, site_names=tuple(params.sites), source=source, **splits)


load_synthetic.Params = SyntheticParams  # type: ignore[attr-defined]
