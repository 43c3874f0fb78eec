"""Embedded synthetic multimodal, multi-site data sets (images + reports + indications + labels + site).

``SyntheticParams.modality`` picks the modality: ``"chest-xray"`` (the default, described below),
``"ultrasound"`` (:mod:`.ultrasound`: 2D B-mode sector images), ``"fundus"`` (:mod:`.fundus`: RGB fundus
photographs) or ``"ct"`` (:mod:`.ct`: 3D volumes ``[N, 1, S, S, S]``). Each has its own findings, four sites
``A``-``D`` with different acquisition, reports and indications, and the same per-site stream determinism.
:data:`MODALITIES` lists them with their label names.

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

from types import ModuleType
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from medrobust.data.base import DataError, Dataset, Split, Task
from medrobust.data.synthetic import common, ct, fundus, ultrasound
from medrobust.data.synthetic.anatomy import cardiothoracic_ratio, render_anatomy, sample_anatomy, take
from medrobust.data.synthetic.findings import FINDINGS, draw_findings, sample_findings, sample_placement
from medrobust.data.synthetic.indications import sample_indications
from medrobust.data.synthetic.reports import STYLE, sample_status, write_reports
from medrobust.data.synthetic.sites import SITE_NAMES, SITES, acquire
from medrobust.registry import register

__all__ = ["FINDINGS", "MODALITIES", "SITE_NAMES", "SyntheticParams", "generate_site", "load_synthetic"]

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
    task: Literal["abnormal", "findings"] = "abnormal"  # "findings" (multilabel) is not offered for "ct"
    # chest-xray: the default (output unchanged); ultrasound; fundus (RGB); ct (volumes, image_size <= 64)
    modality: Literal["chest-xray", "ultrasound", "fundus", "ct"] = "chest-xray"


#: modality -> its module (``None``: the chest radiographs of this module); each module has ``FINDINGS``,
#: ``LABELS`` (the binary task's class names), ``SITE_NAMES``, ``MODALITY`` (``Dataset.modality``), ``generate``
_MODULES: dict[str, ModuleType | None] = {"chest-xray": None, "ultrasound": ultrasound, "fundus": fundus, "ct": ct}
#: modality -> (Dataset.modality, finding names, binary class names, site names, image shape at size S)
MODALITIES: dict[str, tuple[str, tuple[str, ...], tuple[str, ...], tuple[str, ...], str]] = {
    "chest-xray": ("X-ray", FINDINGS, ("normal", "abnormal"), SITE_NAMES, "1 x S x S"),
    "ultrasound": (ultrasound.MODALITY, ultrasound.FINDINGS, ultrasound.LABELS, ultrasound.SITE_NAMES, "1 x S x S"),
    "fundus": (fundus.MODALITY, fundus.FINDINGS, fundus.LABELS, fundus.SITE_NAMES, "3 x S x S (RGB)"),
    "ct": (ct.MODALITY, ct.FINDINGS, ct.LABELS, ct.SITE_NAMES, "1 x S x S x S"),
}


def _stream(seed: int, site_index: int, purpose: int) -> np.random.Generator:
    """The random stream of one site and purpose (the seed is taken modulo 2**64, so negatives work)."""
    entropy = int(seed) % (1 << 64)
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(entropy, spawn_key=(site_index, purpose))))


def _check_modality(modality: str) -> None:
    if modality not in _MODULES:
        raise DataError(f"synthetic: unknown modality={modality!r}; expected one of {', '.join(map(repr, _MODULES))}")


def _check_site(site: str, modality: str = "chest-xray") -> None:
    names = MODALITIES[modality][3]
    if site not in names:
        raise DataError(f"synthetic: unknown site {site!r}" + ("" if modality == "chest-xray" else f" for modality "
                        f"{modality!r}") + f"; expected one of {', '.join(names)}")


def _generate_other(seed: int, site: str, n: int, image_size: int, modality: str):
    """:func:`generate_site` of a non-chest modality (checks first)."""
    _check_site(site, modality)
    if int(image_size) < 28:
        raise DataError(f"synthetic: image_size={image_size} is too small; expected >= 28")
    if modality == "ct" and int(image_size) > ct.MAX_SIZE:
        raise DataError(f"synthetic: image_size={image_size} is too large for modality 'ct' (volumes of "
                        f"image_size**3 voxels); expected 28 <= image_size <= {ct.MAX_SIZE}")
    if int(n) < 1:
        raise DataError(f"synthetic: n={n} images requested; expected n >= 1")
    return _MODULES[modality].generate(seed, site, int(n), int(image_size))


def generate_site(seed: int, site: str, n: int, image_size: int, modality: str = "chest-xray"
                  ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray], list[str], list[str]]:
    """Generate ``n`` images, findings, attributes, reports and indications of one site.

    Args:
        seed: data seed (any int).
        site: one of :data:`SITE_NAMES`.
        n: number of images (>= 1).
        image_size: side ``S`` of the square images (>= 28; <= 64 for ``"ct"``).
        modality: one of :data:`MODALITIES` (the default: chest radiographs).

    Returns:
        ``images`` uint8 ``[n, 1, S, S]`` (fundus ``[n, 3, S, S]``, CT ``[n, 1, S, S, S]``); ``findings``
        int64 ``[n, F]`` multi-hot in the modality's finding order (chest: :data:`FINDINGS`); ``extras``
        (int64 ``[n]`` / ``[n, F]``: ``findings``, ``report_status``, finding attributes); ``reports`` and
        ``indications`` (``n`` strings each: the report written after reading the image, the clinical history
        written before).

    Raises:
        DataError: unknown modality or site, ``image_size`` out of range or ``n < 1`` (the message names the value).
    """
    if modality != "chest-xray":
        _check_modality(modality)
        return _generate_other(seed, site, n, image_size, modality)
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
    """The synthetic multi-site data set with reports and indications, in one of :data:`MODALITIES`.

    Args:
        params: :class:`SyntheticParams` (defaults: chest radiographs, 4 sites x 900 images of 28 x 28, task
            "abnormal").

    Returns:
        A :class:`~medrobust.data.base.Dataset`: task binary (label 1 iff any finding; chest ``("normal",
        "abnormal")``, see :data:`MODALITIES` for the others) or multilabel over the modality's findings; every
        split holds every requested site, in a seeded shuffled order; ``texts`` are the reports, ``indications``
        the requests; ``extras`` hold ``findings``, ``report_status`` and the finding attributes.

    Raises:
        DataError: an unknown modality, an unknown or repeated site name, no site, or a parameter the modality
            cannot take (``task="findings"`` or ``image_size > 64`` for ``"ct"``).
    """
    params = params or SyntheticParams()
    modality = params.modality
    _check_modality(modality)
    names = MODALITIES[modality][3]
    if not params.sites:
        raise DataError(f"synthetic: sites is empty; expected a non-empty subset of {', '.join(names)}")
    for site in params.sites:
        _check_site(site, modality)
    if len(set(params.sites)) != len(params.sites):
        raise DataError(f"synthetic: sites {params.sites!r} repeat a name; expected each site at most once")
    if modality == "ct" and params.task == "findings":
        raise DataError("synthetic: task='findings' is not available for modality='ct' (its one finding, nodule, "
                        "is the binary task); expected task='abnormal'")
    parts: dict[str, list[tuple]] = {"train": [], "val": [], "test": []}
    for site_index, site in enumerate(params.sites):
        images, _, extras, reports, indications = generate_site(params.seed, site, params.n_per_site,
                                                                params.image_size, modality)
        bounds = np.cumsum((0,) + _split_sizes(params.n_per_site))
        for name, lo, hi in zip(parts, bounds[:-1], bounds[1:]):
            sl = slice(int(lo), int(hi))
            parts[name].append((images[sl], {k: v[sl] for k, v in extras.items()}, reports[sl],
                                np.full(hi - lo, site_index, dtype=np.int64), indications[sl]))
    splits = {}
    for j, (name, chunks) in enumerate(parts.items()):
        extras = {k: np.concatenate([c[1][k] for c in chunks]) for k in chunks[0][1]}
        texts = [t for c in chunks for t in c[2]]
        shuffle = (_stream(params.seed, _SHUFFLE_KEY, j) if modality == "chest-xray" else
                   common.stream(params.seed, modality, common.SHUFFLE_KEY, j))
        order = shuffle.permutation(len(texts))
        findings = extras["findings"]
        labels = findings if params.task == "findings" else findings.any(axis=1).astype(np.int64)
        split = Split(images=np.concatenate([c[0] for c in chunks]), labels=labels.astype(np.int64),
                      sites=np.concatenate([c[3] for c in chunks]), texts=texts, extras=extras,
                      indications=[t for c in chunks for t in c[4]])
        splits[name] = split.subset(order)
    readable, finding_names, class_names = MODALITIES[modality][:3]
    task = (Task("multilabel", finding_names) if params.task == "findings" else Task("binary", class_names))
    sizes = f"seed={params.seed}, n_per_site={params.n_per_site}, image_size={params.image_size}"
    source, name = ((f"synthetic({sizes})", "synthetic") if modality == "chest-xray" else
                    (f"synthetic(modality={modality}, {sizes})", f"synthetic-{modality}"))
    return Dataset(name=name, task=task, site_names=tuple(params.sites), source=source, modality=readable, **splits)


load_synthetic.Params = SyntheticParams  # type: ignore[attr-defined]
