"""The self-supervised zoo as a whole: interface, 3D volumes, BreastMNIST, no collapse, and the study."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import SHARED_DATA, tiny_overrides
from medrobust import registry
from medrobust.data.base import to_unit
from medrobust.data.views import ViewParams, random_view
from medrobust.engine.train import FitConfig, fit
from medrobust.methods.contract import Encoders, info_of
from medrobust.methods.simsiam import SimSiam
from medrobust.models.encoders import SmallCNN, SmallViT, ViTParams
from medrobust.models.layers import image_stats

ZOO = ["moco-v2", "moco-v3", "byol", "simsiam", "dino", "barlow-twins", "vicreg", "mae", "restoration", "rotation",
       "jigsaw", "multi"]
CONTRASTIVE = ["moco-v2", "moco-v3", "byol", "simsiam", "dino", "barlow-twins", "vicreg"]


def build(name, encoder, seed=0, **params):
    cls = registry.get("method", name)
    return cls(Encoders(encoder), cls.Params(**params), seed=seed)


@pytest.mark.parametrize("name", ZOO)
def test_interface_and_the_kept_encoder(name):
    info = info_of(registry.get("method", name))
    assert (info.role, info.modalities, info.counterpart) == ("self-supervised", ("image",), "supervised")
    torch.manual_seed(0)
    enc = SmallCNN(1, 2, 28, [0.5], [0.25])
    method = build(name, enc)
    assert method.image_encoder is enc and isinstance(method.generator, torch.Generator)
    own = {id(p) for p in enc.parameters()}
    for child_name, child in method.named_modules():  # teachers / key encoders are copies, never the same tensors
        if child is not enc and type(child) is type(enc):
            assert not own & {id(p) for p in child.parameters()}, child_name
            assert all(not p.requires_grad for p in child.parameters()), child_name


@pytest.mark.parametrize("name", ZOO + ["mae-vit"])
def test_trains_two_steps_on_3d_volumes(name):
    torch.manual_seed(0)
    if name == "mae-vit":
        enc, name = SmallViT(1, 3, 16, [0.5], [0.25], ViTParams(patch_size=4, dim=32, depth=1, heads=2)), "mae"
    else:
        enc = SmallCNN(1, 3, 16, [0.5], [0.25])
    volumes = torch.randint(0, 256, (8, 1, 16, 16, 16), dtype=torch.uint8)
    method = build(name, enc)
    before = [p.detach().clone() for p in enc.parameters()]
    result = fit(method, {"image": volumes}, FitConfig(steps=2, batch_size=4, lr=1e-3), seed=0)
    assert len(result.losses) == 2 and np.isfinite(result.losses).all()
    assert any(not torch.equal(b, p) for b, p in zip(before, enc.parameters())), "the encoder did not train"


@pytest.fixture(scope="module")
def breastmnist():
    path = SHARED_DATA / "breastmnist.npz"
    if not path.exists():
        pytest.skip(f"{path} not present (the shared real-data folder is optional)")
    from medrobust.data.medmnist import load_medmnist

    return load_medmnist(path)


@pytest.mark.parametrize("name", ZOO)
def test_runs_on_breastmnist(name, breastmnist):
    ds = breastmnist
    mean, std = image_stats(ds.train.images)
    torch.manual_seed(0)
    enc = SmallCNN(ds.channels, ds.spatial_dims, ds.image_shape[-1], mean, std)
    result = fit(build(name, enc), {"image": torch.as_tensor(ds.train.images)}, FitConfig(steps=3, batch_size=32),
                 seed=0)
    assert np.isfinite(result.losses).all()


@pytest.mark.parametrize("shape", [(4, 1, 20, 20), (3, 2, 6, 12, 12)])
def test_views_are_seeded_in_range_and_act_in_plane_on_volumes(shape):
    """The zoo's views (medrobust.data.views) on grayscale images and volumes: the same seed, the same views."""
    x = torch.rand(shape)
    a = random_view(x, ViewParams(), torch.Generator().manual_seed(0))
    assert torch.equal(a, random_view(x, ViewParams(), torch.Generator().manual_seed(0)))
    assert a.shape == x.shape and a.min() >= 0 and a.max() <= 1 and not torch.equal(a, x)
    flip_only = ViewParams(crop_scale=(1, 1), max_rotation=0, flip_p=1, gamma=1, contrast=0, brightness=0,
                           blur_p=0, noise_p=0)
    assert torch.allclose(random_view(x, flip_only, torch.Generator()), x.flip(-1), atol=1e-6)  # left-right only


def feature_spread(encoder, images) -> float:
    """Mean per-dimension std of the L2-normalised features, times √D (SimSiam, Chen & He 2021, §4.1).

    ``√D`` puts it on a common scale: features spread uniformly on the sphere give ≈ 1, a collapsed encoder
    (the same vector for every image) gives 0.
    """
    with torch.no_grad():
        f = F.normalize(encoder.forward_features(images), dim=1)  # [N, D]
    return float(f.std(dim=0).mean()) * f.shape[1] ** 0.5


class _InvarianceOnly(SimSiam):
    """Negative control: pull two views' encoder features together with nothing against collapse
    (no negatives, no predictor, no stop-gradient) — known to collapse (Chen & He 2021, §4)."""

    def forward(self, batch):
        x = batch["image"]
        v = torch.cat([random_view(x, self.params.views, self.generator) for _ in range(2)])
        z1, z2 = self.image_encoder.forward_features(v).chunk(2)
        return {"loss": -F.cosine_similarity(z1, z2).mean()}


# Threshold on feature_spread after 40 steps. Measured (batch 64, lr 3e-3, synthetic_small): untrained CNN
# 0.14; the zoo's methods 0.03-0.14; the negative control 0.001; DINO without head BatchNorm and MoCo v2
# without it (both collapsed: loss at log K) 0.005 and 0.003. The pooled ReLU features of this CNN share a
# large common direction, so healthy values sit well below the sphere-uniform 1; 0.015 is half the
# smallest healthy value and three times the largest collapsed one.
COLLAPSED_BELOW = 0.015


@pytest.mark.parametrize("name", CONTRASTIVE + ["invariance-only control"])
def test_short_training_does_not_collapse_and_loss_falls(name, synthetic_small):
    ds = synthetic_small
    mean, std = image_stats(ds.train.images)
    torch.manual_seed(0)
    enc = SmallCNN(1, 2, 28, mean, std)
    method = (_InvarianceOnly(Encoders(enc), seed=0) if name.startswith("invariance")
              else build(name, enc, **({"local_crops": 0} if name == "dino" else {})))
    result = fit(method, {"image": torch.as_tensor(ds.train.images)}, FitConfig(steps=40, batch_size=64, lr=3e-3),
                 seed=0)
    spread = feature_spread(enc, to_unit(ds.test.images))
    first, last = np.mean(result.losses[:5]), np.mean(result.losses[-5:])
    if name.startswith("invariance"):
        assert spread < COLLAPSED_BELOW, f"the control did not collapse (spread {spread:.4f}); the check is blind"
        return
    assert spread > COLLAPSED_BELOW, f"{name} collapsed: feature spread {spread:.4f}"
    assert last < first, f"{name}: loss {first:.3f} -> {last:.3f} did not fall"


@pytest.mark.slow
def test_every_zoo_method_runs_in_the_study(tmp_path, capsys):
    from medrobust.cli import main

    out = tmp_path / "study"
    overrides = tiny_overrides(out) + ["seeds=[0]", "label_fractions=[1.0]", f"methods=[supervised,{','.join(ZOO)}]",
                                       "evaluation.worst_case=[]", "evaluation.epsilons=[0,2]",
                                       "evaluation.attacks=[fgsm]"]  # the zoo's wiring is the point, not attacks
    assert main(["study", "configs/quick.yaml", *overrides]) == 0
    from medrobust.study.store import Store

    records = {r.method: r for r in Store(out / "runs.sqlite").records()}
    assert set(records) == {"supervised", *ZOO}
    for name in ZOO:
        r = records[name]
        assert r.role == "self-supervised" and not r.timing.pretrain_cached
        assert 0 <= r.metrics.clean.acc <= 1
    text = (out / "report" / "report.md").read_text()
    shown = {name: info_of(registry.get("method", name)).display_name for name in ZOO}
    assert all(name in text or shown[name] in text for name in ZOO)
