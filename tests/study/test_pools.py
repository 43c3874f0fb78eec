"""Pre-training pools: config errors, loading (training splits only, caps, fitting to one-geometry encoders),
run keys, supervised multi-task pre-training on the pool's labels, and a tiny study with pool arms."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medrobust import registry
from medrobust.config import ConfigError, load_config
from medrobust.methods.contract import Encoders, SourceFacts, info_of
from medrobust.models.encoders import SmallCNN
from medrobust.study.pools import load_pool
from medrobust.study.prepare import prepare
from medrobust.study.spec import expand
from medrobust.task import Task
from conftest import tiny_overrides

SMALL = ["data.n_per_site=45", "device=cpu"]


def _npz(path, shape, n=30, seed=0):
    """A MedMNIST-layout file with images of ``shape`` and binary labels."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, k in (("train", n), ("val", 6), ("test", 9)):
        arrays[f"{split}_images"] = rng.integers(0, 256, (k, *shape), dtype=np.uint8)
        arrays[f"{split}_labels"] = rng.integers(0, 2, (k, 1), dtype=np.uint8)
    np.savez(path, **arrays)
    return str(path)


def _cfg(tmp_path, pool, methods="[supervised, simclr, {name: simclr, pool: p}]", extra=()):
    return load_config(None, [*tiny_overrides(tmp_path / "s"), f"pretrain.pools={{p: {pool}}}", f"methods={methods}",
                              *extra])


@pytest.mark.parametrize("overrides, match", [
    (["methods=[{name: simclr, pool: nope}]", "pretrain.pools={a: [target], b: [target]}"],
     r"methods\[0\]\.pool.*'nope'.*pools: a, b"),
    (["methods=[{name: supervised, pool: a}]", "pretrain.pools={a: [target]}"], "does not pre-train"),
    (["methods=[supervised-multitask]", "pretrain.pools={a: [target]}"], "name one with pool"),
    (["pretrain.pools={a: [{source: synthetic}]}"], r"pools\.a\[0\].*the study's own data.*source: target"),
    (["pretrain.pools={a: [target, {source: nosuch}]}"], r"pools\.a\[1\].*nosuch"),
    (["pretrain.pools={a: [{source: target, path: x}]}"], "takes no parameters"),
    (["pretrain.pools={a: []}"], "has no sources"),
    (["pretrain.pools={a: [{source: synthetic, n_per_site: 2}]}"], r"pools\.a\[0\]\.n_per_site"),
    (["pretrain.pools={'a b': [target]}"], "plain word"),
])
def test_config_errors_name_the_key(overrides, match):
    with pytest.raises(ConfigError, match=match):
        load_config(None, overrides)


def test_a_source_that_fails_to_load_names_the_pool_and_its_index(tmp_path):
    cfg = _cfg(tmp_path, f"[target, {{source: medmnist, path: {tmp_path / 'missing.npz'}}}]")
    with pytest.raises(ConfigError, match=r"pretrain\.pools\.p\[1\] \(medmnist\(path=missing\.npz\)\) could not be loaded"):
        load_pool(cfg, "p", prepare(cfg))


def test_one_geometry_encoder_refuses_2d_with_3d_and_points_to_medformer(tmp_path):
    vol = _npz(tmp_path / "vol3d.npz", (8, 8, 8))
    cfg = _cfg(tmp_path, f"[target, {{source: medmnist, path: {vol}}}]")
    with pytest.raises(ConfigError, match=r"image_encoder 'cnn'.*pool 'p' mixes 2D and 3D.*vol3d.*1×8×8×8.*medformer"):
        load_pool(cfg, "p", prepare(cfg))


def test_pool_takes_training_splits_caps_them_and_fits_2d_images_to_the_target(tmp_path):
    rgb = _npz(tmp_path / "rgb.npz", (14, 14, 3), n=30, seed=1)
    cfg = _cfg(tmp_path, f"[target, {{source: medmnist, path: {rgb}, max_images: 20, weight: 3}}]")
    data = prepare(cfg)
    pool = load_pool(cfg, "p", data)
    target, other = pool.parts
    assert target.images is data.train.images and target.labels is None and target.facts.task is None
    assert other.images.shape == (20, 1, 28, 28) and other.images.dtype == np.uint8  # capped, gray, resized
    raw = np.load(rgb)["train_images"].astype(np.float64) / 255
    pick = np.sort(np.random.default_rng([1, 0x9001]).choice(30, 20, replace=False))  # the documented subset
    gray = raw[pick] @ np.array([0.299, 0.587, 0.114])  # BT.601 luma, [20, 14, 14]
    up = torch.nn.functional.interpolate(torch.as_tensor(gray)[:, None].float(), size=(28, 28), mode="bilinear",
                                         align_corners=False)
    np.testing.assert_allclose(other.images[:, 0] / 255, up[:, 0].numpy(), atol=1 / 255 + 1e-6)
    assert other.facts.task.n_outputs == 2 and len(other.labels) == 20
    assert any("fitted from 3×14×14" in n for n in pool.notes)
    m = pool.mixture(info_of(registry.get("method", "simclr")))
    assert m.ids == (0, 1) and m.weights == (1.0, 3.0)
    sup = pool.mixture(info_of(registry.get("method", "supervised-multitask")))
    assert sup.ids == (1,) and "label" in sup.parts[0]  # the target's labels never enter pre-training
    clip = pool.mixture(info_of(registry.get("method", "clip")), target_pairs=np.arange(10))
    assert clip.ids == (0,) and clip.parts[0]["tokens"].shape[0] == 10  # reports: the target's pairs only
    assert torch.equal(clip.parts[0]["tokens"], torch.as_tensor(data.reports.train[:10]))
    with pytest.raises(ConfigError, match="no source with image-report pairs"):
        load_pool(_cfg(tmp_path, f"[{{source: medmnist, path: {rgb}}}]"), "p", data).check(
            info_of(registry.get("method", "clip")))


def test_pool_changes_only_its_arms_keys(tmp_path):
    base = _cfg(tmp_path, "[target]")
    more = load_config(None, [*tiny_overrides(tmp_path / "s"), "pretrain.pools={p: [target], q: [target, "
                              "{source: synthetic, seed: 3}]}", "methods=[supervised, simclr, {name: simclr, pool: p}]"])
    runs_a, _ = expand(base, True, True)
    runs_b, _ = expand(more, True, True)
    assert [r.key for r in runs_a] == [r.key for r in runs_b], "an unused pool does not re-run anything"
    by_arm = {r.arm: r for r in runs_a if r.seed == 0 and r.fraction == 0.5}
    assert set(by_arm) == {"supervised", "simclr", "simclr @ p"}
    assert by_arm["simclr @ p"].pretrain_key != by_arm["simclr"].pretrain_key
    assert by_arm["simclr @ p"].method.target_only_label == "simclr"


def test_supervised_multitask_has_a_head_per_labeled_source_and_learns():
    torch.manual_seed(0)
    enc = SmallCNN(1, 2, 12, [0.5], [0.25])
    sources = (SourceFacts("target", (1, 12, 12), (0.5,), (0.25,)),
               SourceFacts("a", (1, 12, 12), (0.5,), (0.25,), Task("binary", ("n", "y"))),
               SourceFacts("b", (1, 12, 12), (0.5,), (0.25,), Task("multiclass", ("x", "y", "z"))))
    cls = registry.get("method", "supervised-multitask")
    method = cls(Encoders(enc, sources=sources), cls.Params(augment=False), seed=0)
    assert sorted(method.heads) == ["1", "2"] and method.heads["2"].out_features == 3
    g = torch.Generator().manual_seed(1)
    x = torch.rand(32, 1, 12, 12, generator=g)
    y = (x.mean(dim=(1, 2, 3)) > x.mean()).long()  # brightness decides
    batch = {"image": x, "label": y, "source": torch.full((32,), 1)}
    opt = torch.optim.Adam(method.parameters(), lr=1e-2)
    first = method(batch)["loss"].item()
    for _ in range(40):
        loss = method(batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first
    with pytest.raises(ValueError, match="source 0, which has no labels"):
        method({**batch, "source": torch.zeros(32, dtype=torch.long)})
    with pytest.raises(ValueError, match="none has labels"):
        cls(Encoders(enc, sources=sources[:1]))


@pytest.mark.slow
def test_tiny_study_with_pool_arms_reports_the_diversity_comparisons(tmp_path):
    from medrobust.study.runner import run_study
    from medrobust.study.store import Store

    other = _npz(tmp_path / "other.npz", (14, 14), n=40, seed=2)
    cfg = _cfg(tmp_path, f"[target, {{source: medmnist, path: {other}}}]",
               methods="[supervised, simclr, {name: simclr, pool: p}, {name: supervised-multitask, pool: p}]",
               extra=["label_fractions=[0.5]", "evaluation.max_adversarial=10"])
    report = run_study(cfg, log=lambda s: None)
    records = Store(cfg.study_dir / "runs.sqlite").records()
    assert len(records) == 4 * 2
    pooled = [r for r in records if r.pool]
    assert {r.arm for r in pooled} == {"simclr @ p", "supervised-multitask @ p"}
    assert all(r.pool == "p" and r.target_only in ("simclr", "supervised-multitask") for r in pooled)
    assert {r.role for r in pooled} == {"self-supervised", "supervised-pretraining"}
    ckpts = sorted(p.name for p in (cfg.study_dir / "checkpoints").iterdir())
    assert sum(n.startswith("simclr@p-seed") for n in ckpts) == 2 and sum(n.startswith("simclr-seed") for n in ckpts) == 2
    text = report.read_text() + (report.parent / "appendix.md").read_text()
    assert "**Diversity**" in text and "`simclr @ p` vs the same method pre-trained on the target only (`simclr`)" in text
    assert "`supervised-multitask @ p` vs supervised training on the target's sparse labels" in text
    assert "**Pre-training pools:** p: target (synthetic)" in text and "other.npz" in text
    assert "diversity" in text  # the family of the comparison table


@pytest.mark.slow
def test_medformer_study_pre_trains_on_a_pool_of_2d_3d_gray_rgb_and_two_sizes(tmp_path):
    """One medformer pre-trains on the chest target, RGB fundus (28²), ultrasound at another size (36²) and CT
    volumes (28³), then fine-tunes and is evaluated on the target; its checkpoint holds every adapter."""
    from medrobust.engine import checkpoint
    from medrobust.study.runner import run_study
    from medrobust.study.store import Store

    pool = ("[target, {source: synthetic, modality: fundus, n_per_site: 30}, "
            "{source: synthetic, modality: ultrasound, n_per_site: 30, image_size: 36}, "
            "{source: synthetic, modality: ct, n_per_site: 18, sites: [A, B]}]")
    cfg = _cfg(tmp_path, pool, methods="[supervised, {name: mae, pool: p}, {name: supervised-multitask, pool: p}]",
               extra=["label_fractions=[0.5]", "seeds=[0]", "image_encoder={name: medformer, dim: 32, depth: 1}",
                      "pretrain.steps=12", "evaluation.max_adversarial=10"])
    logs = []
    run_study(cfg, log=logs.append)
    records = {r.arm: r for r in Store(cfg.study_dir / "runs.sqlite").records()}
    assert set(records) == {"supervised", "mae @ p", "supervised-multitask @ p"}
    assert all(0 <= r.metrics.clean.acc <= 1 for r in records.values())
    line = next(s for s in logs if s.startswith("pool p:"))
    assert "3×28×28" in line and "1×36×36" in line and "1×28×28×28" in line  # each source as it is
    assert not any("fitted from" in s for s in logs), "medformer takes every geometry: nothing is resized"
    ckpt = next((cfg.study_dir / "checkpoints").glob("mae@p-seed0-*.pt"))
    state = torch.load(ckpt, weights_only=True)["modules"]["image"]
    adapters = {k.split(".")[1] for k in state if k.startswith("adapters.")}
    assert adapters == {"1ch-2d", "3ch-2d", "1ch-3d"}
    steps = [s for s in logs if "pre-training mae @ p: step" in s]
    assert steps[-1].endswith("step 12/12")


def test_what_reading_a_pool_source_did_is_in_the_pool_notes(tmp_path):
    from medrobust.data.synthetic import SyntheticParams, load_synthetic
    from medrobust.data.writers import write_manifest

    manifest = write_manifest(load_synthetic(SyntheticParams(n_per_site=9, modality="ultrasound")), tmp_path / "us")
    cfg = _cfg(tmp_path, f"[target, {{source: manifest, path: {manifest}, image_size: 20}}]")
    notes = load_pool(cfg, "p", prepare(cfg)).notes
    assert any(n.startswith("pool p: manifest(image_size=20, path=manifest.jsonl): images fitted to 1×20×20") for n in notes)
    assert any("fitted from 1×20×20 to the target's 1×28×28" in n for n in notes)  # then to the cnn's one geometry

