"""Tests of the synthetic ultrasound, fundus and CT modalities (and that the chest radiographs are unchanged)."""

from __future__ import annotations

import hashlib
import time

import numpy as np
import pytest
from pydantic import ValidationError
from scipy.ndimage import gaussian_filter
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from medrobust.data.base import DataError, Dataset
from medrobust.data.synthetic import MODALITIES, SyntheticParams, ct, fundus, generate_site, load_synthetic, ultrasound
from medrobust.data.synthetic.common import HEDGE_CUES

MODULES = {"ultrasound": ultrasound, "fundus": fundus, "ct": ct}
SHAPES = {"ultrasound": (1, 28, 28), "fundus": (3, 28, 28), "ct": (1, 28, 28, 28)}
N_PER_SITE = {"ultrasound": 180, "fundus": 180, "ct": 90}  # pooled fixtures (train / val / test = 2/3, 1/9, 2/9)
NEGATION_CUES = ("no ", "without", "negative for")


@pytest.fixture(scope="module")
def pooled() -> dict[str, tuple[Dataset, float]]:
    out = {}
    for modality, n in N_PER_SITE.items():
        start = time.perf_counter()
        out[modality] = load_synthetic(SyntheticParams(modality=modality, n_per_site=n)), time.perf_counter() - start
    return out


def _all(ds: Dataset) -> dict:
    splits = (ds.train, ds.val, ds.test)
    return {"images": np.concatenate([s.images for s in splits]), "sites": np.concatenate([s.sites for s in splits]),
            "findings": np.concatenate([s.extras["findings"] for s in splits]),
            "status": np.concatenate([s.extras["report_status"] for s in splits]),
            "texts": [t for s in splits for t in s.texts], "indications": [t for s in splits for t in s.indications]}


# --- chest radiographs: unchanged ----------------------------------------------------------------------


def test_chest_is_the_default_and_unchanged():
    params = dict(seed=3, n_per_site=18, sites=["D", "A"], task="findings")
    a, b = load_synthetic(SyntheticParams(**params)), load_synthetic(SyntheticParams(**params, modality="chest-xray"))
    assert SyntheticParams().modality == "chest-xray"
    assert a.name == b.name == "synthetic" and a.modality == "X-ray"
    assert a.source == b.source == "synthetic(seed=3, n_per_site=18, image_size=28)"
    digest = hashlib.sha256()
    for s, t in zip((a.train, a.val, a.test), (b.train, b.val, b.test)):
        assert s.images.tobytes() == t.images.tobytes() and s.texts == t.texts and s.indications == t.indications
        assert np.array_equal(s.labels, t.labels) and np.array_equal(s.sites, t.sites)
        digest.update(s.labels.tobytes()); digest.update(s.sites.tobytes())
        digest.update("\x1f".join(s.texts + s.indications).encode())
    # pinned from the chest generator before the other modalities were added: labels, sites, reports and
    # indications exactly; pixels by their sum and sum of squares (a tolerance of a few pixels off by one, as a
    # differently vectorised float library might round; a change of the chest's noise level is 50x larger)
    assert digest.hexdigest()[:16] == "930d612c46398ff3"
    x = np.concatenate([s.images for s in (a.train, a.val, a.test)]).astype(np.int64)
    assert np.allclose([x.sum(), (x * x).sum()], [2857258, 378627966], rtol=1e-5, atol=0), (x.sum(), (x * x).sum())
    images, findings, _, reports, _ = generate_site(3, "B", 12, 28)
    again = generate_site(3, "B", 12, 28, modality="chest-xray")
    assert images.tobytes() == again[0].tobytes() and reports == again[3] and findings.shape == (12, 4)


# --- API, shapes, determinism --------------------------------------------------------------------------


@pytest.mark.parametrize("modality", list(MODULES))
def test_shapes_types_and_names(pooled, modality):
    ds, _ = pooled[modality]
    mod = MODULES[modality]
    n = N_PER_SITE[modality]
    assert ds.name == f"synthetic-{modality}" and ds.modality == mod.MODALITY == MODALITIES[modality][0]
    assert ds.source == f"synthetic(modality={modality}, seed=0, n_per_site={n}, image_size=28)"
    assert ds.site_names == ("A", "B", "C", "D") and ds.image_shape == SHAPES[modality]
    assert ds.spatial_dims == (3 if modality == "ct" else 2) and ds.channels == (3 if modality == "fundus" else 1)
    assert ds.task.kind == "binary" and ds.task.label_names == mod.LABELS and ds.has_text and ds.has_indications
    for split, k in ((ds.train, n - n // 9 - 2 * n // 9), (ds.val, n // 9), (ds.test, 2 * n // 9)):
        assert split.images.dtype == np.uint8 and split.images.shape == (4 * k, *SHAPES[modality])
        assert np.array_equal(np.bincount(split.sites, minlength=4), [k] * 4)
        assert np.array_equal(split.labels, split.extras["findings"].any(axis=1).astype(np.int64))
        assert split.extras["findings"].shape == split.extras["report_status"].shape == (4 * k, len(mod.FINDINGS))
        assert all(v.dtype == np.int64 and len(v) == 4 * k for v in split.extras.values())
        assert all(isinstance(t, str) and t for t in split.texts + split.indications)
        assert all("\n" not in t for t in split.indications)  # one line each
        assert split.images.min() < 30 and split.images.max() > 200  # black background, bright structures
    if modality != "ct":
        multi = load_synthetic(SyntheticParams(modality=modality, n_per_site=18, sites=["C"], task="findings"))
        assert multi.task.kind == "multilabel" and multi.task.label_names == mod.FINDINGS
        assert np.array_equal(multi.train.labels, multi.train.extras["findings"])


def test_other_sizes():
    cases = (("ultrasound", 64, (1, 64, 64)), ("fundus", 96, (3, 96, 96)), ("ct", 40, (1, 40, 40, 40)))
    for modality, size, shape in cases:
        images, findings, _, reports, indications = generate_site(1, "B", 3, size, modality)
        assert images.shape == (3, *shape) and images.dtype == np.uint8 and images.std() > 10, modality
        assert len(reports) == len(indications) == 3 and len(findings) == 3


@pytest.mark.parametrize("modality", list(MODULES))
def test_deterministic_and_sites_independent(modality):
    p = SyntheticParams(modality=modality, seed=7, n_per_site=18, sites=["D", "A"])
    d1, d2 = load_synthetic(p), load_synthetic(p)
    for x, y in zip((d1.train, d1.val, d1.test), (d2.train, d2.val, d2.test)):
        assert x.images.tobytes() == y.images.tobytes() and x.texts == y.texts and x.indications == y.indications
        assert np.array_equal(x.labels, y.labels) and np.array_equal(x.sites, y.sites)
    other = load_synthetic(SyntheticParams(modality=modality, seed=8, n_per_site=18, sites=["D", "A"]))
    assert other.train.images.tobytes() != d1.train.images.tobytes() and other.train.texts != d1.train.texts
    # the site-A samples are generate_site's, whatever other sites are requested
    images, _, _, reports, indications = generate_site(7, "A", 18, 28, modality)
    a = np.flatnonzero(d1.train.sites == 1)
    assert sorted(d1.train.images[i].tobytes() for i in a) == sorted(images[k].tobytes() for k in range(12))
    assert sorted(d1.train.texts[i] for i in a) == sorted(reports[:12])
    assert sorted(d1.train.indications[i] for i in a) == sorted(indications[:12])
    alone = load_synthetic(SyntheticParams(modality=modality, seed=7, n_per_site=18, sites=["A"]))
    assert sorted(alone.train.images[i].tobytes() for i in range(12)) == sorted(images[k].tobytes() for k in range(12))


def test_modalities_do_not_share_streams():
    from medrobust.data.synthetic import _stream
    from medrobust.data.synthetic.common import stream

    draws = {m: stream(7, m, 0, 0).random(4).tobytes() for m in MODULES}
    draws["chest-xray"] = _stream(7, 0, 0).random(4).tobytes()
    assert len(set(draws.values())) == 4


# --- labels ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("modality", list(MODULES))
def test_prevalence_not_degenerate(pooled, modality):
    v = _all(pooled[modality][0])
    f, sites = v["findings"], v["sites"]
    for k in range(4):
        assert 0.33 <= f[sites == k].any(axis=1).mean() <= 0.6, (modality, k)
    assert np.all((f.mean(axis=0) > 0.08) & (f.mean(axis=0) < 0.6)), f.mean(axis=0)
    if f.shape[1] > 1:
        assert (f.sum(axis=1) >= 2).mean() > 0.02  # findings co-occur: the multilabel task is not one-hot


def _features(modality: str, images: np.ndarray) -> np.ndarray:
    """Simple location-free lesion statistics per image."""
    x = images.astype(np.float32) / 255
    if modality == "ultrasound":
        return x.reshape(len(x), -1)  # pixels (lesions are large dark regions in the bright gland layer)
    if modality == "fundus":
        g = x[:, 1]  # green channel: red lesions dark, exudates bright
        hp = (g - gaussian_filter(g, (0, 1.5, 1.5))) * (np.hypot(*np.meshgrid(*[np.linspace(-1, 1, 28)] * 2)) < 0.7)
        return np.stack([np.abs(hp).mean((1, 2)), (hp < -0.04).sum((1, 2)), (hp > 0.04).sum((1, 2))], axis=1)
    v = x[:, 0]  # CT: bright voxels standing out of a dark (lung) neighbourhood
    m = gaussian_filter(v, (0, 1.5, 1.5, 1.5))
    return np.stack([((v - m > d) & (m < 0.3)).sum((1, 2, 3)) for d in (0.08, 0.12, 0.16)], axis=1).astype(float)


def _probe_inputs(modality: str, split, sites) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features (per-site copies for CT, whose statistics have a site-dependent baseline), labels, sites."""
    keep = np.isin(split.sites, sites)
    x, y, s = _features(modality, split.images[keep]), split.labels[keep], split.sites[keep]
    if modality == "ct":
        onehot = np.eye(4)[s]
        x = np.concatenate([onehot, (x[:, :, None] * onehot[:, None, :]).reshape(len(x), -1)], axis=1)
    return x, y, s


# CT: the probe's voxel statistic is too crude for the low-dose site D (noisy, thick slices); its nodules are
# still drawn (test_findings_are_drawn) and stand well above its noise
@pytest.mark.parametrize("modality,floor,sites", [("ultrasound", 0.85, [0, 1, 2, 3]), ("fundus", 0.75, [0, 1, 2, 3]),
                                                  ("ct", 0.8, [0, 1, 2])])
def test_label_signal_is_in_the_images(pooled, modality, floor, sites):
    ds, _ = pooled[modality]
    x, y, _ = _probe_inputs(modality, ds.train, sites)
    x_test, y_test, s_test = _probe_inputs(modality, ds.test, sites)
    scale = x.std(axis=0) + 1e-6

    p = LogisticRegression(C=0.1, max_iter=2000).fit(x / scale, y).predict_proba(x_test / scale)[:, 1]
    aucs = [roc_auc_score(y_test[s_test == k], p[s_test == k]) for k in sites]  # within each held-out site
    assert np.mean(aucs) > floor and min(aucs) > 0.6, (modality, aucs)


@pytest.mark.parametrize("modality", list(MODULES))
def test_findings_are_drawn(modality):
    """The same images rendered without their findings (same random draws): negatives are byte-identical,
    every positive changes by clearly more than the noise."""
    from medrobust.data.synthetic import common as cm

    mod = MODULES[modality]
    for k, site in enumerate(mod.SITE_NAMES):
        n = 24 if modality == "ct" else 60
        f, attrs = mod.sample_labels(cm.stream(0, modality, k, cm.LABELS), n, mod.SITES[site])
        def streams():
            return cm.stream(0, modality, k, cm.ANATOMY), cm.stream(0, modality, k, cm.ACQUISITION)

        with_f = mod.render(*streams(), f, attrs, mod.SITES[site], 28).astype(np.int64)
        no_findings = {key: v if key == "eye" else v * 0 for key, v in attrs.items()}  # the same eye, no lesion
        without = mod.render(*streams(), f * 0, no_findings, mod.SITES[site], 28)
        diff = np.abs(with_f - without).reshape(n, -1).max(axis=1)
        pos = f.any(axis=1)
        assert pos.any() and (~pos).any() and np.all(diff[~pos] == 0), (modality, site)
        assert np.mean(diff[pos] >= 15) >= 0.9, (modality, site, np.sort(diff[pos]))


@pytest.mark.parametrize("modality", list(MODULES))
def test_sites_differ(pooled, modality):
    """Intensity statistics (and colour for fundus) tell the acquisition sites apart."""
    ds, _ = pooled[modality]

    def stats(images):
        x = images.reshape(len(images), images.shape[1], -1).astype(np.float32) / 255
        flat = x.reshape(len(x), -1)
        hp = np.abs(np.diff(images.astype(np.float32) / 255, axis=-1)).reshape(len(x), -1).mean(axis=1)
        return np.column_stack([x.mean(axis=2), np.percentile(flat, [10, 50, 75, 90, 99], axis=1).T,
                                flat.std(axis=1), hp, (flat < 0.02).mean(axis=1)])

    clf = LogisticRegression(max_iter=5000).fit(stats(ds.train.images), ds.train.sites)
    assert (clf.predict(stats(ds.test.images)) == ds.test.sites).mean() > 0.8
    means = [ds.train.images[ds.train.sites == k].mean() for k in range(4)]
    assert max(means) - min(means) > 8, means  # gray levels


# --- reports and indications ----------------------------------------------------------------------------


def _asserts(text: str, synonyms) -> bool:
    """Whether a clause of ``text`` names the finding without negating it."""
    clauses = [c for c in text.lower().replace(";", ".").replace("\n", ".").split(". ") if c.strip()]
    return any(any(s in c for s in synonyms) and not any(c.strip().startswith(n.strip()) or f" {n}" in c
                                                           for n in NEGATION_CUES) for c in clauses)


@pytest.mark.parametrize("modality", list(MODULES))
def test_reports_agree_with_labels(pooled, modality):
    v = _all(pooled[modality][0])
    mod = MODULES[modality]
    f, status = v["findings"], v["status"]
    texts = ["\n".join(ln for ln in t.splitlines() if not ln.startswith("INDICATION:")) for t in v["texts"]]
    assert np.all(np.isin(status[f == 1], (2, 3, 4))) and np.all(np.isin(status[f == 0], (0, 1, 5)))
    for j, name in enumerate(mod.FINDINGS):
        said = np.array([_asserts(t, mod.SYNONYMS[name]) for t in texts])
        pos, neg = said[f[:, j] == 1].mean(), said[f[:, j] == 0].mean()
        assert pos > 0.8 and neg < 0.25 and pos > neg + 0.6, (name, pos, neg)
        for i in np.flatnonzero(status[:, j] == 2)[:50]:  # stated: named, without a hedge in that sentence
            assert any(s in texts[i].lower() for s in mod.SYNONYMS[name]), (name, texts[i])
        for i in np.flatnonzero(status[:, j] == 3)[:50]:  # hedged: an uncertainty cue
            assert any(c in texts[i].lower() for c in HEDGE_CUES), (name, texts[i])
    by_site = [[t for t, k in zip(v["texts"], v["sites"]) if k == s] for s in range(4)]
    assert all("FINDINGS:" in t and "IMPRESSION:" in t for t in by_site[0])  # site A: structured
    assert np.mean([len(t) for t in by_site[3]]) < 0.6 * np.mean([len(t) for t in by_site[0]])  # D: shorthand
    assert len(set(v["texts"])) > 0.3 * len(texts)
    # indications are written before the image is read: they never carry the report's findings section
    assert not any("FINDINGS" in t or "IMPRESSION" in t for t in v["indications"])
    assert len(set(v["indications"])) > 0.2 * len(texts)


# --- errors -------------------------------------------------------------------------------------------


def test_errors_name_the_parameter():
    with pytest.raises(ValidationError, match="modality"):
        SyntheticParams(modality="mri")
    with pytest.raises(DataError, match=r"modality='mri'.*'ultrasound'"):
        generate_site(0, "A", 5, 28, modality="mri")
    with pytest.raises(DataError, match="modality='mri'"):
        load_synthetic(SyntheticParams.model_construct(**{**SyntheticParams().model_dump(), "modality": "mri"}))
    with pytest.raises(DataError, match=r"'E'.*'fundus'.*A, B, C, D"):
        load_synthetic(SyntheticParams(modality="fundus", sites=["A", "E"]))
    with pytest.raises(DataError, match=r"image_size=65.*'ct'.*<= 64"):
        load_synthetic(SyntheticParams(modality="ct", image_size=65, n_per_site=9, sites=["A"]))
    with pytest.raises(DataError, match=r"task='findings'.*modality='ct'.*expected task='abnormal'"):
        load_synthetic(SyntheticParams(modality="ct", task="findings", n_per_site=9))
    with pytest.raises(DataError, match="image_size=20"):
        generate_site(0, "A", 5, 20, modality="ultrasound")
    with pytest.raises(DataError, match="n=0"):
        generate_site(0, "A", 0, 28, modality="fundus")
    with pytest.raises(DataError, match="repeat"):
        load_synthetic(SyntheticParams(modality="ultrasound", sites=["B", "B"]))


def test_generation_is_fast(pooled):
    # measured (2 quiet cores, 4 sites): 4 x 900 ultrasound ~0.5 s, fundus ~1 s, 4 x 300 CT volumes ~1.5 s; the
    # bounds only catch gross regressions such as per-pixel Python loops
    per_image = {m: t / (4 * N_PER_SITE[m]) for m, (_, t) in pooled.items()}
    assert per_image["ultrasound"] < 2e-3 and per_image["fundus"] < 3e-3 and per_image["ct"] < 1.2e-2, per_image
