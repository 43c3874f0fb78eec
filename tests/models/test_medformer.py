"""medformer: one trunk, an input adapter per signature, sin-cos positions for any grid, the encoder surface."""

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from medrobust import registry
from medrobust.attacks.fgsm import FGSM
from medrobust.models.encoders import SmallCNN, SmallViT, ViTParams
from medrobust.models.heads import Classifier
from medrobust.models.medformer import Medformer, MedformerParams, sincos_grid
from medrobust.task import Task, task_loss

SMALL = MedformerParams(dim=32, depth=2, heads=2)
#: (channels, spatial shape, tokens at the default patch sizes 4 (2D) and 7 (3D))
INPUTS = [(1, (28, 28), 49), (3, (28, 28), 49), (1, (64, 64), 256), (1, (28, 28, 28), 64)]
STATS = {1: ([0.5], [0.25]), 3: ([0.4, 0.3, 0.2], [0.2, 0.25, 0.3])}


def pooled(seed: int = 0, params: MedformerParams = SMALL) -> Medformer:
    """A medformer built for 1ch 2D with adapters added for 3ch 2D and 1ch 3D."""
    torch.manual_seed(seed)
    enc = Medformer(1, 2, 28, *STATS[1], params)
    enc.add_input(3, 2, *STATS[3])
    enc.add_input(1, 3, *STATS[1])
    return enc


def test_registered_with_strict_params_and_the_adapter_flag():
    assert registry.get("encoder", "medformer") is Medformer and Medformer.adapts_inputs is True
    assert not hasattr(SmallCNN, "adapts_inputs") and not hasattr(SmallViT, "adapts_inputs")
    assert MedformerParams() == MedformerParams(dim=64, depth=2, heads=4, mlp_ratio=2.0, patch_size=4, patch_size_3d=7)
    with pytest.raises(ValidationError, match="no_such_key"):
        MedformerParams.model_validate({"no_such_key": 1})
    with pytest.raises(ValueError, match="not divisible by heads"):
        Medformer(1, 2, 28, [0.5], [0.25], MedformerParams(dim=30, heads=4))


@pytest.mark.parametrize("channels, spatial, tokens", INPUTS)
def test_shapes_for_each_source(channels, spatial, tokens):
    enc = pooled()
    x = torch.rand(3, channels, *spatial)
    f, t = enc.forward_features(x), enc.forward_tokens(x)
    assert f.shape == (3, 32) and enc.feature_dim == 32 and torch.isfinite(f).all()
    assert t.shape == (3, tokens, 32) and torch.isfinite(t).all()
    assert torch.equal(enc(x), f)  # forward = forward_features


@pytest.mark.parametrize("grid", [(7, 7), (16, 16), (4, 4, 4), (10, 10, 10), (5, 3), (1, 1)])
def test_sincos_positions_are_distinct_for_any_grid(grid):
    pos = sincos_grid(grid, 64)
    n = 1
    for g in grid:
        n *= g
    assert pos.shape == (n, 64) and torch.isfinite(pos).all()
    if n > 1:
        dist = torch.cdist(pos, pos) + torch.eye(n) * 1e9
        assert dist.min() > 0.1, "two positions share a code"
    # per axis: channels [a·w, (a+1)·w) depend on axis a's coordinate only (raster order)
    width = 2 * (64 // (2 * len(grid)))
    blocks = pos.view(*grid, 64)
    first = blocks.select(0, 0)[..., :width]  # axis-0 coordinate 0, every other coordinate
    assert torch.allclose(first, first.reshape(-1, width)[0].expand_as(first))
    assert (pos[:, len(grid) * width:] == 0).all()


def test_positions_are_computed_per_grid_and_cached():
    enc = pooled()
    enc(torch.rand(2, 1, 28, 28))
    enc(torch.rand(2, 1, 64, 64))
    grids = sorted(key[0] for key in enc._positions)
    assert grids == [(7, 7), (16, 16)]
    cached = next(v for k, v in enc._positions.items() if k[0] == (7, 7))
    enc(torch.rand(2, 1, 28, 28))
    assert next(v for k, v in enc._positions.items() if k[0] == (7, 7)) is cached
    assert not any("position" in k for k in enc.state_dict()), "fixed positions are not state"


def test_sizes_not_divisible_by_the_patch_are_padded_with_the_adapter_mean():
    """30² at patch 4 -> an 8x8 grid: the same as the 32² image padded (bottom, right) with the mean intensity."""
    enc = pooled().eval()
    x = torch.rand(2, 1, 30, 30)
    padded = F.pad(x, (0, 2, 0, 2), value=STATS[1][0][0])
    assert enc.forward_tokens(x).shape == (2, 64, 32)
    assert torch.allclose(enc.forward_features(x), enc.forward_features(padded), atol=1e-5)
    assert enc.forward_tokens(torch.rand(1, 1, 20, 20, 20)).shape == (1, 27, 32)  # 20³ -> 21³ -> 3³ at patch 7


def test_add_input_is_idempotent_and_unknown_signatures_are_named():
    enc = pooled()
    assert enc.signatures == ("1ch-2d", "3ch-2d", "1ch-3d")
    adapter, count = enc.adapters["3ch-2d"], sum(p.numel() for p in enc.parameters())
    assert enc.add_input(3, 2, [0.9] * 3, [0.1] * 3) == "3ch-2d"  # exists: no-op, first statistics kept
    assert enc.adapters["3ch-2d"] is adapter and sum(p.numel() for p in enc.parameters()) == count
    assert torch.equal(adapter.norm_in.mean.flatten(), torch.tensor(STATS[3][0]))
    with pytest.raises(ValueError, match=r"2ch-2d.*1ch-2d, 3ch-2d, 1ch-3d"):
        enc(torch.rand(2, 2, 28, 28))
    with pytest.raises(ValueError, match="3 means and stds"):
        enc.add_input(3, 2, [0.5], [0.5])
    only_2d = Medformer(1, 2, 28, [0.5], [0.25], SMALL)
    with pytest.raises(ValueError, match=r"no input adapter for 1ch-3d.*it has 1ch-2d.*add_input"):
        only_2d(torch.rand(1, 1, 28, 28, 28))


@pytest.mark.parametrize("channels, spatial, tokens", INPUTS[:2] + INPUTS[3:])
def test_input_gradients_and_fgsm_raise_the_loss(channels, spatial, tokens):
    task = Task("binary", ("negative", "positive"))
    torch.manual_seed(1)
    model = Classifier(pooled(), task.n_outputs).eval()
    x, y = torch.rand(4, channels, *spatial), torch.tensor([0, 1, 0, 1])
    xg = x.clone().requires_grad_(True)
    task_loss(model(xg), y, task).backward()
    assert xg.grad is not None and xg.grad.abs().sum() > 0
    x_adv = FGSM()(model, x, y, eps=8 / 255, task=task)
    assert (x_adv - x).abs().max() <= 8 / 255 + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    with torch.no_grad():
        assert task_loss(model(x_adv), y, task) > task_loss(model(x), y, task)


def test_state_dict_round_trip_with_the_same_add_input_calls():
    trained = pooled(seed=0)
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(torch.randn_like(p) * 0.1)  # stands in for training
    fresh = pooled(seed=7)
    fresh.load_state_dict(trained.state_dict())  # strict
    for channels, spatial, _ in INPUTS:
        x = torch.rand(2, channels, *spatial)
        assert torch.equal(fresh(x), trained(x))
    with pytest.raises(RuntimeError, match="3ch-2d"):  # a medformer without those adapters does not fit
        Medformer(1, 2, 28, [0.5], [0.25], SMALL).load_state_dict(trained.state_dict())


@pytest.mark.parametrize("channels, dims, patch", [(1, 2, 4), (3, 2, 4), (1, 3, 7)])
def test_one_adapter_medformer_matches_a_vit_of_the_same_size(channels, dims, patch):
    mean, std = STATS[channels]
    med = Medformer(channels, dims, 28, mean, std, MedformerParams(dim=32, depth=2, heads=2))
    vit = SmallViT(channels, dims, 28, mean, std, ViTParams(patch_size=patch, dim=32, depth=2, heads=2))
    x = torch.rand(2, channels, *([28] * dims))
    assert med.feature_dim == vit.feature_dim
    assert med.forward_features(x).shape == vit.forward_features(x).shape
    assert med.forward_tokens(x).shape == vit.forward_tokens(x).shape
    trunk = {k: v.shape for k, v in med.state_dict().items() if k.startswith(("blocks.", "norm."))}
    assert trunk == {k: v.shape for k, v in vit.state_dict().items() if k.startswith(("blocks.", "norm."))}
    assert med.patch_size_of(dims) == vit.patch_size_of(dims) == patch
    tokens, cls = med.embed_tokens(x)  # the token-encoder interface MAE uses, as on the ViT
    vtokens, vcls = vit.embed_tokens(x)
    assert tokens.shape == vtokens.shape and cls.shape == vcls.shape
    encoded = med.encode_sequence(torch.cat([cls, tokens], 1))
    assert encoded.shape == vit.encode_sequence(torch.cat([vcls, vtokens], 1)).shape
