"""Tests of the embedded synthetic multi-site chest-radiograph data set (images, reports, labels, sites)."""

from __future__ import annotations

import re
import time

import numpy as np
import pytest
from pydantic import ValidationError

from medrobust import registry
from medrobust.data.base import DataError, Dataset
from medrobust.data.synthetic import FINDINGS, SITE_NAMES, SyntheticParams, generate_site, load_synthetic
from medrobust.data.synthetic.lexicon import HEDGE_CUES, NEGATIONS, SYNONYMS

ATTRIBUTES = {  # extras key -> largest code
    "nodule_side": 2, "nodule_zone": 2, "effusion_side": 3, "effusion_size": 3, "cardiomegaly_grade": 2,
    "consolidation_side": 2, "consolidation_zone": 2,
}
ATTRIBUTE_OF = {"nodule_side": 0, "nodule_zone": 0, "effusion_side": 1, "effusion_size": 1,
                "cardiomegaly_grade": 2, "consolidation_side": 3, "consolidation_zone": 3}


@pytest.fixture(scope="module")
def default_run() -> tuple[Dataset, float]:
    start = time.perf_counter()
    ds = load_synthetic()
    return ds, time.perf_counter() - start


@pytest.fixture(scope="module")
def ds(default_run) -> Dataset:
    return default_run[0]


@pytest.fixture(scope="module")
def pooled(ds) -> dict:
    """All splits of the default data set concatenated (images as float [N, S, S])."""
    splits = (ds.train, ds.val, ds.test)
    out = {k: np.concatenate([s.extras[k] for s in splits]) for k in ds.train.extras}
    out["images"] = np.concatenate([s.images for s in splits])[:, 0].astype(np.float64)
    out["sites"] = np.concatenate([s.sites for s in splits])
    out["texts"] = [t for s in splits for t in s.texts]
    return out


def _mentions(text: str, phrases) -> bool:
    low = text.lower()
    return any(p in low for p in phrases)


def _clauses(text: str) -> list[str]:
    """Sentences / shorthand items (a '.' between digits, as in '1.4 cm', does not split)."""
    return [c for c in re.split(r"(?<!\d)\.(?!\d)|[;\n]", text.lower()) if c.strip()]


# --- API, shapes, determinism, parameters -------------------------------------------------------------


def test_registered_with_params():
    assert registry.get("data", "synthetic") is load_synthetic
    assert load_synthetic.Params is SyntheticParams
    assert SITE_NAMES == ("A", "B", "C", "D")
    assert FINDINGS == ("nodule", "effusion", "cardiomegaly", "consolidation")


def test_default_dataset_shapes_and_types(ds):
    assert ds.name == "synthetic" and ds.site_names == SITE_NAMES
    assert ds.source == "synthetic(seed=0, n_per_site=900, image_size=28)"
    assert ds.task.kind == "binary" and ds.task.label_names == ("normal", "abnormal")
    assert ds.image_shape == (1, 28, 28) and ds.has_text
    for split, n in ((ds.train, 2400), (ds.val, 400), (ds.test, 800)):
        assert split.images.shape == (n, 1, 28, 28) and split.images.dtype == np.uint8
        assert split.labels.dtype == np.int64 and split.sites.dtype == np.int64
        assert np.array_equal(np.bincount(split.sites, minlength=4), [n // 4] * 4)
        assert np.array_equal(split.labels, split.extras["findings"].any(axis=1).astype(np.int64))
        assert all(isinstance(t, str) and t for t in split.texts)
        assert split.extras["findings"].shape == split.extras["report_status"].shape == (n, 4)
        for key in ("findings", "report_status", *ATTRIBUTES):
            assert split.extras[key].dtype == np.int64 and len(split.extras[key]) == n
        assert split.images.min() < 40 and split.images.max() > 200  # uses the 8-bit range
        assert not np.array_equal(split.sites[: n // 4], np.sort(split.sites[: n // 4]))  # shuffled


def test_attributes_agree_with_findings(pooled):
    f = pooled["findings"]
    assert set(np.unique(f)) == {0, 1}
    for key, top in ATTRIBUTES.items():
        v = pooled[key]
        present = f[:, ATTRIBUTE_OF[key]] == 1
        assert np.all((v > 0) == present), key
        assert set(np.unique(v[present])) == set(range(1, top + 1)), key
    size = pooled["nodule_size_mm"][f[:, 0] == 1]
    assert size.min() >= 12 and size.max() <= 30


def test_prevalence_and_correlation(pooled):
    f = pooled["findings"]
    assert 0.40 <= (f.sum(axis=1) == 0).mean() <= 0.50
    assert np.all((f.mean(axis=0) > 0.10) & (f.mean(axis=0) < 0.30))
    assert (f.sum(axis=1) >= 2).mean() > 0.05  # multi-label
    cmg = f[:, 2] == 1
    assert f[cmg, 1].mean() > f[~cmg, 1].mean() + 0.15  # effusion more likely with cardiomegaly


def test_findings_task_and_site_subset():
    ds = load_synthetic(SyntheticParams(n_per_site=90, sites=["D", "A"], task="findings"))
    assert ds.task.kind == "multilabel" and ds.task.label_names == FINDINGS
    assert ds.site_names == ("D", "A")
    assert ds.train.labels.shape == (120, 4) and np.array_equal(ds.train.labels, ds.train.extras["findings"])
    assert (len(ds.train), len(ds.val), len(ds.test)) == (120, 20, 40)
    # a site's data does not depend on the other sites requested: the site-A samples are generate_site's
    images, _, _, reports, indications = generate_site(0, "A", 90, 28)
    a = np.flatnonzero(ds.train.sites == 1)
    assert sorted(ds.train.images[i].tobytes() for i in a) == sorted(images[k].tobytes() for k in range(60))
    assert sorted(ds.train.texts[i] for i in a) == sorted(reports[:60])
    assert sorted(ds.train.indications[i] for i in a) == sorted(indications[:60])


def test_deterministic_and_seed_dependent():
    a = generate_site(3, "B", 40, 28)
    b = generate_site(3, "B", 40, 28)
    c = generate_site(4, "B", 40, 28)
    assert a[0].tobytes() == b[0].tobytes() and a[3] == b[3] and a[4] == b[4]
    assert all(np.array_equal(a[2][k], b[2][k]) for k in a[2])
    assert a[0].tobytes() != c[0].tobytes() and a[3] != c[3]
    assert generate_site(-1, "B", 5, 28)[0].tobytes() != generate_site(1, "B", 5, 28)[0].tobytes()
    p = SyntheticParams(seed=5, n_per_site=18, sites=["C", "D"])
    d1, d2 = load_synthetic(p), load_synthetic(p)
    for s in ("train", "val", "test"):
        x, y = getattr(d1, s), getattr(d2, s)
        assert x.images.tobytes() == y.images.tobytes() and x.texts == y.texts
        assert np.array_equal(x.sites, y.sites) and np.array_equal(x.labels, y.labels)


def test_image_size_64_and_128():
    images, findings, _, reports, _ = generate_site(0, "D", 24, 64)
    assert images.shape == (24, 1, 64, 64) and images.dtype == np.uint8 and images.std() > 10
    assert findings.shape == (24, 4) and len(reports) == 24
    ds = load_synthetic(SyntheticParams(n_per_site=9, image_size=128, sites=["A"]))
    assert ds.image_shape == (1, 128, 128)


def test_bad_params_name_the_value():
    with pytest.raises(DataError, match="'E'"):
        load_synthetic(SyntheticParams(sites=["A", "E"]))
    with pytest.raises(DataError, match="empty"):
        load_synthetic(SyntheticParams(sites=[]))
    with pytest.raises(DataError, match="repeat"):
        load_synthetic(SyntheticParams(sites=["A", "A"]))
    with pytest.raises(ValidationError, match="image_size"):
        SyntheticParams(image_size=27)
    with pytest.raises(ValidationError, match="n_per_site"):
        SyntheticParams(n_per_site=8)
    with pytest.raises(ValidationError, match="colour"):
        SyntheticParams(colour=True)
    with pytest.raises(DataError, match="20"):
        generate_site(0, "A", 10, 20)
    with pytest.raises(DataError, match="'Z'"):
        generate_site(0, "Z", 10, 28)


def test_generation_is_fast(default_run):
    # the target is < 3 s for the default set on 2 quiet cores; the bound here only catches gross
    # regressions (such as per-pixel Python loops) without failing on a busy machine
    assert default_run[1] < 12.0


# --- reports -------------------------------------------------------------------------------------------


def test_report_status_agrees_with_labels_and_text(pooled):
    f, status, texts = pooled["findings"], pooled["report_status"], pooled["texts"]
    assert np.all(np.isin(status[f == 1], (2, 3, 4))) and np.all(np.isin(status[f == 0], (0, 1, 5)))
    for i, text in enumerate(texts):
        # the INDICATION section quotes the request, written before the image was read: its question ("? pleural
        # effusion") is a suspicion, not what the report says about the image
        text = "\n".join(ln for ln in text.splitlines() if not ln.startswith("INDICATION:"))
        for j, name in enumerate(FINDINGS):
            code = status[i, j]
            syn, neg = SYNONYMS[name], NEGATIONS[name]
            if code == 2:
                assert _mentions(text, syn) and not _mentions(text, neg), (name, text)
            elif code == 1:
                assert _mentions(text, neg), (name, text)
            elif code in (0, 4):
                assert not _mentions(text, syn) and not _mentions(text, neg), (name, code, text)
            else:  # hedged (present or not): a sentence names the finding with an uncertainty cue
                assert any(_mentions(c, syn) and _mentions(c, HEDGE_CUES) for c in _clauses(text)), (name, text)


def test_report_error_rates(pooled):
    f, status = pooled["findings"], pooled["report_status"]
    present, absent = status[f == 1], status[f == 0]
    assert 0.04 <= (present == 4).mean() <= 0.09  # omitted
    assert 0.07 <= (present == 3).mean() <= 0.14  # hedged
    assert 0.015 <= (absent == 5).mean() <= 0.045  # false-positive hedge
    assert (absent == 1).mean() > 0.4  # pertinent negatives are common


def test_reports_informative_but_not_label_copies(ds, pooled):
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    vec = CountVectorizer(ngram_range=(1, 2), binary=True, min_df=3, token_pattern=r"[^\s.;:,]+")
    x_train, x_test = vec.fit_transform(ds.train.texts), vec.transform(ds.test.texts)
    for j, name in enumerate(FINDINGS):
        y_train, y_test = ds.train.extras["findings"][:, j], ds.test.extras["findings"][:, j]
        clf = LogisticRegression(C=1.0, solver="liblinear").fit(x_train, y_train)
        auc = roc_auc_score(y_test, clf.predict_proba(x_test)[:, 1])
        acc = (clf.predict(x_test) == y_test).mean()
        assert auc > 0.85 and acc < 1.0, (name, auc, acc)
    texts = pooled["texts"]
    assert len(set(texts)) > 0.5 * len(texts)
    # the writing style shifts between sites: a bag of words tells the sites apart
    clf = LogisticRegression(C=1.0, max_iter=2000).fit(x_train, ds.train.sites)
    assert (clf.predict(x_test) == ds.test.sites).mean() > 0.9


def test_site_styles(pooled):
    by_site = {s: [t for t, k in zip(pooled["texts"], pooled["sites"]) if k == i] for i, s in enumerate(SITE_NAMES)}
    assert np.mean(["FINDINGS:" in t and "IMPRESSION:" in t for t in by_site["A"]]) == 1.0
    assert np.mean(["portable" in t.lower() for t in by_site["C"]]) == 1.0
    assert np.mean([bool(re.search(r"\b(CMG|eff|consol|nod)\b", t)) for t in by_site["D"]]) > 0.8
    assert np.mean([len(t) for t in by_site["B"]]) < 0.6 * np.mean([len(t) for t in by_site["A"]])


# --- images ------------------------------------------------------------------------------------------


def _region(img: np.ndarray, rows: tuple[float, float], cols: tuple[float, float]) -> np.ndarray:
    """Part of ``[..., S, S]`` images between fractional row / column bounds."""
    s = img.shape[-1]
    return img[..., int(rows[0] * s):int(rows[1] * s), int(cols[0] * s):int(cols[1] * s)]


def _only(pooled, j: int) -> np.ndarray:
    f = pooled["findings"]
    return (f[:, j] == 1) & (f.sum(axis=1) == 1)


def test_cardiothoracic_ratio_of_the_rendered_heart():
    """Measured like a radiologist: widest cardiac silhouette / widest inner thorax (on the lung masks)."""
    from medrobust.data.synthetic import anatomy

    rng = np.random.default_rng(0)
    grade = np.repeat([0, 1, 2], 8)
    pose = anatomy.Pose(zoom_sd=0.0, shift_sd=0.0, rot_sd=0.0)
    p = anatomy.sample_anatomy(rng, anatomy.cardiothoracic_ratio(rng, grade), pose)
    canvas = anatomy.render_anatomy(p, 256)
    x, y = canvas.X[0, 0], canvas.Y[0, :, 0]
    mid = int(np.argmin(np.abs(x - 0.03)))  # the mediastinum
    measured = []
    for i in range(len(grade)):
        air = (canvas.lung_right[i] + canvas.lung_left[i]) > 0.5
        widest = 0.0
        for row in np.flatnonzero((y > -0.2) & (y < min(p["dome_r"][i], p["dome_l"][i]) - 0.02)):
            lo = mid - int(np.argmax(air[row, mid::-1]))  # nearest lung pixel on each side of the midline
            hi = mid + int(np.argmax(air[row, mid:]))
            widest = max(widest, x[hi] - x[lo])
        measured.append(widest / (x[air.any(0)].max() - x[air.any(0)].min()))
    measured = np.array(measured)
    assert measured[grade == 0].max() < 0.55 and measured[grade > 0].min() > 0.56, measured
    assert measured[grade == 2].mean() > measured[grade == 1].mean()


@pytest.mark.parametrize("site", [0, 3])
def test_cardiomegaly_changes_the_heart_border_not_the_apices(pooled, site):
    at = pooled["sites"] == site
    normal = at & (pooled["findings"].sum(axis=1) == 0)
    diff = pooled["images"][at & _only(pooled, 2)].mean(0) - pooled["images"][normal].mean(0)
    heart = _region(diff, (0.45, 0.75), (0.60, 0.90)).mean()  # image right = patient left heart border
    apices = np.abs(np.concatenate([_region(diff, (0.08, 0.30), c).ravel() for c in ((0.1, 0.35), (0.65, 0.9))]))
    assert heart > 15 and heart > 5 * apices.mean(), (heart, apices.mean())


@pytest.mark.parametrize("site", [0, 3])
def test_effusion_brightens_its_own_base(pooled, site):
    at = pooled["sites"] == site
    normal_mean = pooled["images"][at & (pooled["findings"].sum(axis=1) == 0)].mean(0)
    right_base, left_base = ((0.55, 0.80), (0.05, 0.35)), ((0.55, 0.80), (0.65, 0.95))
    for side, own, other in ((1, right_base, left_base), (2, left_base, right_base)):
        diff = pooled["images"][at & _only(pooled, 1) & (pooled["effusion_side"] == side)].mean(0) - normal_mean
        gain_own, gain_other = _region(diff, *own).mean(), _region(diff, *other).mean()
        assert gain_own > 10 and gain_own > gain_other + 8, (side, gain_own, gain_other)


@pytest.fixture(scope="module")
def tophat(pooled) -> np.ndarray:
    """White top-hat (image minus its 3x3 grey opening): the brightness of small bright spots."""
    from scipy.ndimage import white_tophat

    return white_tophat(pooled["images"], size=(1, 3, 3))


@pytest.mark.parametrize("site", [0, 1, 2, 3])
def test_nodules_raise_the_local_maximum(pooled, tophat, site):
    at = pooled["sites"] == site
    normal = tophat[at & (pooled["findings"].sum(axis=1) == 0)]
    upper = at & _only(pooled, 0) & (pooled["nodule_zone"] == 1)
    rows = (0.12, 0.48)
    right_zone, left_zone = (rows, (0.08, 0.45)), (rows, (0.55, 0.92))  # upper lung zones (image left = right)
    peak = lambda x, zone: _region(x, *zone).reshape(len(x), -1).max(axis=1).mean()
    for side, own, other in ((1, right_zone, left_zone), (2, left_zone, right_zone)):
        nod = tophat[upper & (pooled["nodule_side"] == side)]
        gain_own, gain_other = peak(nod, own) - peak(normal, own), peak(nod, other) - peak(normal, other)
        assert gain_own > 10 and gain_own > 3 * abs(gain_other) + 5, (site, side, gain_own, gain_other)


def _intensity_features(images: np.ndarray) -> np.ndarray:
    """Mean, std, percentiles and high-frequency energy per image, ``[N, 8]``."""
    x = images[:, 0].astype(np.float64) / 255.0
    flat = x.reshape(len(x), -1)
    hf = np.abs(np.diff(x, axis=1)).mean(axis=(1, 2)) + np.abs(np.diff(x, axis=2)).mean(axis=(1, 2))
    lap = np.abs(4 * x[:, 1:-1, 1:-1] - x[:, :-2, 1:-1] - x[:, 2:, 1:-1] - x[:, 1:-1, :-2] - x[:, 1:-1, 2:])
    return np.column_stack([flat.mean(1), flat.std(1), *np.percentile(flat, [5, 50, 95], axis=1), hf,
                            lap.mean(axis=(1, 2)), (flat < 0.1).mean(1)])


def test_sites_differ_in_appearance(ds):
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(_intensity_features(ds.train.images))
    clf = LogisticRegression(max_iter=2000).fit(scaler.transform(_intensity_features(ds.train.images)), ds.train.sites)
    acc = (clf.predict(scaler.transform(_intensity_features(ds.test.images))) == ds.test.sites).mean()
    assert acc > 0.85, acc  # chance is 0.25


def test_held_out_site_is_a_real_domain_shift(ds):
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    d = ds.site_names.index("D")
    pixels = lambda split, m: split.images[m].reshape(int(m.sum()), -1) / 255.0
    clf = LogisticRegression(C=0.01, max_iter=1000).fit(pixels(ds.train, ds.train.sites != d),
                                                         ds.train.labels[ds.train.sites != d])
    held_in, held_out = ds.test.sites != d, ds.test.sites == d
    acc_in = (clf.predict(pixels(ds.test, held_in)) == ds.test.labels[held_in]).mean()
    y_out = ds.test.labels[held_out]
    p_out = clf.predict_proba(pixels(ds.test, held_out))[:, 1]
    acc_out = ((p_out > 0.5) == y_out).mean()
    majority = max(y_out.mean(), 1 - y_out.mean())
    assert acc_in > 0.7
    assert acc_out < acc_in - 0.05, (acc_in, acc_out)  # accuracy drops on the unseen site
    assert acc_out > majority + 0.05 and roc_auc_score(y_out, p_out) > 0.7, (acc_out, majority)  # above chance
