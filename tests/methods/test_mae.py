"""MAE / SimMIM: patch layout, masking, losses against explicit loops, visible-only encoding, clear errors."""

import pytest
import torch
import torch.nn.functional as F

from medrobust.engine.train import FitConfig, fit
from medrobust.methods.contract import Encoders
from medrobust.methods.mae import (MAE, MAEParams, mae_loss, patchify, random_masking, simmim_loss, simmim_mask,
                                   unpatchify)
from medrobust.models.encoders import SmallCNN, SmallViT, ViTParams


@pytest.mark.parametrize("shape,patch", [((2, 3, 8, 12), 4), ((2, 1, 6, 6, 6), 3)])
def test_patchify_round_trip_and_conv_patch_order(shape, patch):
    torch.manual_seed(0)
    x = torch.rand(shape)
    tokens = patchify(x, patch)
    d = len(shape) - 2
    assert tokens.shape == (shape[0], (shape[2] // patch) * (shape[-1] // patch) ** (d - 1), patch ** d * shape[1])
    assert torch.equal(unpatchify(tokens, patch, shape[1], shape[2:]), x)
    # a strided conv patch embedding gives the same tokens as a linear map of the patchified pixels
    conv = (torch.nn.Conv2d if d == 2 else torch.nn.Conv3d)(shape[1], 5, patch, patch, bias=False)
    emb = conv(x).flatten(2).transpose(1, 2)  # [N, P, 5], the ViT's patch_tokens layout
    w = conv.weight.permute(0, *range(2, 2 + d), 1).reshape(5, -1)  # (spatial..., channel) order
    assert torch.allclose(emb, tokens @ w.t(), atol=1e-5)


def test_random_masking_counts_and_restore_indices():
    ids_keep, mask, ids_restore = random_masking(3, 16, 0.4, torch.Generator().manual_seed(0))
    assert ids_keep.shape == (3, 10) and mask.shape == (3, 16)  # round(16 · 0.6) = 10 visible
    assert torch.equal(mask.sum(dim=1), torch.full((3,), 6.0))
    for i in range(3):
        assert set(ids_keep[i].tolist()) == set((mask[i] == 0).nonzero().flatten().tolist())
        order = torch.cat([ids_keep[i], (mask[i] == 1).nonzero().flatten()])
        assert torch.equal(torch.sort(order).values, torch.arange(16))
    shuffled = torch.cat([ids_keep, torch.full((3, 6), -1)], dim=1)  # [visible; masked] -> patch order
    assert torch.equal(shuffled.gather(1, ids_restore) == -1, mask.bool())
    with pytest.raises(ValueError, match="at least one patch"):
        random_masking(1, 4, 0.99, torch.Generator())


@pytest.mark.parametrize("norm_pix", [False, True])
def test_mae_loss_matches_explicit_loop(norm_pix):
    torch.manual_seed(1)
    pred, target = torch.randn(2, 5, 4), torch.rand(2, 5, 4)
    mask = torch.tensor([[1.0, 0, 1, 0, 0], [0, 1, 1, 1, 0]])
    total, count = 0.0, 0
    for i in range(2):
        for j in range(5):
            if mask[i, j]:
                t = target[i, j]
                if norm_pix:
                    t = (t - t.mean()) / (t.var() + 1e-6).sqrt()
                total += float(((pred[i, j] - t) ** 2).mean())
                count += 1
    assert abs(mae_loss(pred, target, mask, norm_pix).item() - total / count) < 1e-5


def test_simmim_mask_and_loss():
    mask = simmim_mask(torch.Size([3, 1, 10, 10]), 4, 0.4, torch.Generator().manual_seed(0))  # 3x3 cells
    assert mask.shape == (3, 1, 10, 10)
    cells = F.pad(mask, (0, 2, 0, 2))[:, 0, ::4, ::4]  # one value per cell
    assert torch.equal(cells.flatten(1).sum(dim=1), torch.full((3,), 4.0))  # round(9 · 0.4) = 4 cells
    torch.manual_seed(2)
    pred, x = torch.rand(3, 2, 10, 10), torch.rand(3, 2, 10, 10)
    total, masked = 0.0, 0
    for i in range(3):
        for h in range(10):
            for w in range(10):
                if mask[i, 0, h, w]:
                    masked += 1
                    total += sum(abs(float(pred[i, c, h, w]) - float(x[i, c, h, w])) for c in range(2))
    explicit = total / (masked * 2)
    assert abs(simmim_loss(pred, x, mask).item() - explicit) < 1e-5


def test_mae_on_vit_encodes_only_visible_patches():
    torch.manual_seed(0)
    enc = SmallViT(1, 2, 28, [0.5], [0.25], ViTParams(dim=32, depth=1, heads=2))
    method = MAE(Encoders(enc), params=MAEParams(mask_ratio=0.75), seed=0)
    seen = []
    enc.blocks.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].shape))
    out = method({"image": torch.rand(3, 1, 28, 28)})
    assert method.use_mae and torch.isfinite(out["loss"])
    assert seen == [torch.Size([3, 1 + 4, 32])]  # [CLS] + 4 of 16 patches


def test_simmim_variant_feeds_the_cnn_masked_pixels():
    torch.manual_seed(0)
    enc = SmallCNN(1, 2, 28, [0.5], [0.25])
    method = MAE(Encoders(enc), seed=0)
    assert not method.use_mae
    with torch.no_grad():
        method.heads["1ch-2d"].mask_value.fill_(0.25)
    seen = []
    enc.body.register_forward_hook(lambda mod, inp, out: seen.append(inp[0]))  # the pixels the CNN gets
    x = torch.full((2, 1, 28, 28), 0.8)  # constant: views keep it constant
    method({"image": x})
    values = seen[0].unique()
    assert {round(v, 4) for v in values.tolist()} == {0.25, 0.8}
    assert abs(float((seen[0] == 0.25).float().mean()) - 0.4) < 0.06  # ~mask ratio of the (cropped) cells


def test_mae_variant_needs_a_vit():
    enc = SmallCNN(1, 2, 28, [0.5], [0.25])
    with pytest.raises(ValueError, match="image_encoder.name=vit"):
        MAE(Encoders(enc), params=MAEParams(variant="mae"))


def test_mae_on_vit_loss_falls():
    torch.manual_seed(0)
    enc = SmallViT(1, 2, 28, [0.5], [0.25], ViTParams(dim=32, depth=2, heads=2))
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 28), torch.linspace(0, 1, 28), indexing="ij")
    phase = torch.rand(64, 1, 1) * 6
    images = ((torch.sin(6 * xx + phase) * torch.cos(4 * yy) + 1) / 2 * 255).to(torch.uint8).unsqueeze(1)
    result = fit(MAE(Encoders(enc), seed=0), {"image": images}, FitConfig(steps=40, batch_size=16, lr=3e-3), seed=0)
    first, last = sum(result.losses[:5]) / 5, sum(result.losses[-5:]) / 5
    assert last < 0.9 * first, f"MAE loss {first:.3f} -> {last:.3f}"


def test_tables_name_the_variant_built_for_the_encoder():
    """On a CNN ``mae`` is the SimMIM-style variant, and the report must say so; MAE only on a ViT."""
    from medrobust.methods.contract import display_name_of

    assert display_name_of(MAE, "cnn") == "SimMIM-style masked image modelling (MAE on a CNN)"
    assert display_name_of(MAE, "vit") == "MAE" == display_name_of(MAE, "vit", MAEParams(variant="auto"))
    assert display_name_of(MAE, "vit", MAEParams(variant="simmim")).startswith("SimMIM-style")
    # the name follows what __init__ builds
    assert not MAE(Encoders(SmallCNN(1, 2, 28, [0.5], [0.25]))).use_mae
    assert MAE(Encoders(SmallViT(1, 2, 28, [0.5], [0.25], ViTParams(dim=32, depth=1, heads=2)))).use_mae
