"""mmr / robust-mmr: masks (exact, asymmetric, saliency), masked inputs, each robustness component, training."""

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from medrobust import registry
from medrobust.data.tokenizer import CLS, MASK, PAD, ReportTokenizer
from medrobust.engine.train import FitConfig, fit
from medrobust.methods.contract import Encoders
from medrobust.methods.masking import (
    fill_masked,
    mask_counts,
    pad_to_multiple,
    patch_grid,
    patch_mask_to_pixels,
    patchify,
    random_mask,
    saliency_mask,
)
from medrobust.methods.mmr import MMR, maskable_tokens
from medrobust.methods.robust_mmr import RobustMMR, acquisition_style
from medrobust.models.encoders import SmallCNN
from medrobust.models.fusion import Fusion, FusionClassifier
from medrobust.models.layers import image_stats
from medrobust.models.text import TextTransformer

OFF = {"text_mask_ratio": 0.5, "saliency": 0.0, "perturb_eps": 0.0, "domain_weight": 0.0, "site_weight": 0.0,
       "resilience_weight": 0.0}  # robust-mmr with every component off (mmr's symmetric default ratios)


@pytest.fixture(scope="module")
def pairs(synthetic_small):
    ds = synthetic_small
    split = ds.train.subset(np.arange(64))
    tok = ReportTokenizer.train(ds.train.texts, vocab_size=300, max_len=40)
    tensors = {"image": torch.as_tensor(split.images), "tokens": torch.as_tensor(tok.encode(split.texts)),
               "site": torch.as_tensor(split.sites)}
    return ds, tok, tensors


def build(name, pairs, **params):
    ds, tok, _ = pairs
    torch.manual_seed(0)
    mean, std = image_stats(ds.train.images)
    image, text = SmallCNN(1, 2, 28, mean, std), TextTransformer(tok.vocab_size)
    cls = registry.get("method", name)
    return cls(Encoders(image, text, Fusion(image.feature_dim, text.feature_dim)), cls.Params(**params), seed=0)


def unit_batch(tensors, n=32):
    return {k: (v[:n].float() / 255 if k == "image" else v[:n]) for k, v in tensors.items()}


def run(method, batch, seed=123, grad=True):
    method.generator.manual_seed(seed)
    with torch.set_grad_enabled(grad):
        return method(batch)


class Spy:
    """Records the arguments of a method's bound function (the last call is the training path)."""

    def __init__(self, method, name):
        self.calls, fn = [], getattr(method, name)

        def wrapped(*args, **kwargs):
            self.calls.append(args)
            return fn(*args, **kwargs)

        setattr(method, name, wrapped)


# --- masking functions -----------------------------------------------------------------------------------

@pytest.mark.parametrize("ratio", [0.25, 0.5, 0.75, 0.9])
def test_random_mask_has_exactly_the_configured_count(ratio):
    g = torch.Generator().manual_seed(0)
    mask = random_mask(50, 16, ratio, g)
    assert mask.dtype == torch.bool and mask.shape == (50, 16)
    assert (mask.sum(dim=1) == round(ratio * 16)).all()
    assert len({tuple(r.tolist()) for r in mask}) > 30, "rows are drawn independently"
    assert torch.equal(mask, random_mask(50, 16, ratio, torch.Generator().manual_seed(0))), "seeded"
    # every position is masked about ratio of the time
    assert abs(random_mask(2000, 16, ratio, g).float().mean(0) - round(ratio * 16) / 16).max() < 0.05


def test_random_mask_respects_valid_positions():
    g = torch.Generator().manual_seed(1)
    valid = torch.zeros(4, 10, dtype=torch.bool)
    for i, n in enumerate([9, 4, 1, 0]):
        valid[i, 1 : 1 + n] = True
    mask = random_mask(4, 10, 0.25, g, valid=valid)
    assert not (mask & ~valid).any()
    assert mask.sum(1).tolist() == [round(0.25 * 9), 1, 1, 0]  # at least one where possible
    assert mask_counts(valid, 0.25).tolist() == [2, 1, 1, 0]


def test_saliency_mask_takes_the_top_scores_and_differs_from_random():
    g = torch.Generator().manual_seed(2)
    scores = torch.rand(40, 16, generator=g)
    k = round(0.5 * 16)
    top = torch.zeros_like(scores, dtype=torch.bool).scatter_(1, scores.topk(k, dim=1).indices, True)
    full = saliency_mask(scores, 0.5, 1.0, torch.Generator().manual_seed(3))
    assert torch.equal(full, top)
    half = saliency_mask(scores, 0.5, 0.5, torch.Generator().manual_seed(3))
    assert (half.sum(1) == k).all()
    top4 = torch.zeros_like(top).scatter_(1, scores.topk(4, dim=1).indices, True)
    assert not (top4 & ~half).any(), "the salient half of the mask is the 4 highest-scoring patches"
    rand = random_mask(40, 16, 0.5, torch.Generator().manual_seed(3))
    assert not torch.equal(rand, half) and not torch.equal(rand, full)
    # random masks hit the top patches at the base rate, saliency masks far above it
    assert (rand & top).sum() / rand.sum() < 0.65 < (half & top).sum() / half.sum()
    # frac 0 consumes the generator like a random mask and gives the same mask
    assert torch.equal(saliency_mask(scores, 0.5, 0.0, torch.Generator().manual_seed(3)), rand)
    valid = torch.ones(40, 16, dtype=torch.bool)
    valid[:, 8:] = False
    masked_valid = saliency_mask(scores, 0.5, 1.0, g, valid=valid)
    assert not (masked_valid & ~valid).any() and (masked_valid.sum(1) == 4).all()
    with pytest.raises(ValueError, match="saliency_frac must be in"):
        saliency_mask(scores, 0.5, 1.5, g)


def test_patchify_pixel_mask_and_mean_fill():
    x = torch.rand(2, 3, 8, 12)
    patches = patchify(x, 4)  # [2, 6, 48]
    assert patches.shape == (2, 6, 48)
    assert torch.equal(patches[1, 4].view(3, 4, 4), x[1, :, 4:8, 4:8])  # row 1, column 1 of the 2x3 grid
    mask = torch.zeros(2, 6, dtype=torch.bool)
    mask[0, 5] = mask[1, 0] = True
    pix = patch_mask_to_pixels(mask, tuple(x.shape), 4)
    assert pix.shape == (2, 1, 8, 12) and pix.sum() == 32 and pix[0, 0, 4:8, 8:12].all() and pix[1, 0, :4, :4].all()
    filled = fill_masked(x, pix)
    mean = x.mean(dim=(2, 3))  # [2, 3]
    assert torch.allclose(filled[0, :, 4:8, 8:12], mean[0].view(3, 1, 1).expand(3, 4, 4))
    assert torch.equal(filled[~pix.expand_as(x)], x[~pix.expand_as(x)])
    with pytest.raises(ValueError, match="not divisible by patch_size 5"):
        patchify(x, 5)
    with pytest.raises(ValueError, match=r"\[N, C, H, W\] or volumes"):
        patchify(torch.rand(1, 1, 8), 4)
    v = torch.rand(2, 2, 4, 8, 8)  # volumes: cubic patches, (channel, d, h, w) inside a patch
    cubes = patchify(v, 4)
    assert cubes.shape == (2, 4, 128) and torch.equal(cubes[1, 3].view(2, 4, 4, 4), v[1, :, :, 4:8, 4:8])
    vmask = torch.zeros(2, 4, dtype=torch.bool)
    vmask[0, 3] = True
    vpix = patch_mask_to_pixels(vmask, tuple(v.shape), 4)
    assert vpix.shape == (2, 1, 4, 8, 8) and vpix.sum() == 64 and vpix[0, 0, :, 4:, 4:].all()
    # a size that is not a multiple: the border-padded grid, cropped back to the image
    assert patch_grid((2, 3, 10, 12), 4) == (3, 3)
    odd = patch_mask_to_pixels(torch.ones(2, 9, dtype=torch.bool), (2, 3, 10, 12), 4)
    assert odd.shape == (2, 1, 10, 12) and odd.all()
    assert patchify(pad_to_multiple(torch.rand(2, 3, 10, 12), 4), 4).shape == (2, 9, 48)


# --- the methods -----------------------------------------------------------------------------------------

def test_surfaces_and_defaults(pairs):
    for name, cls, shown in (("mmr", MMR, "MMR"), ("robust-mmr", RobustMMR, "Robust-MMR")):
        assert registry.get("method", name) is cls
        info = cls.info
        assert (info.display_name, info.role, info.modalities, info.counterpart, info.uses_fusion) == (
            shown, "self-supervised", ("image", "text"), "supervised-multimodal", True)
    p = RobustMMR.Params()
    assert p.image_mask_ratio != p.text_mask_ratio, "robust-mmr masks asymmetrically by default"
    assert min(p.saliency, p.perturb_eps, p.domain_weight, p.site_weight, p.resilience_weight) > 0, "all on"
    method = build("mmr", pairs)
    assert method.mlm_head.out_features == pairs[1].vocab_size


@pytest.mark.parametrize("name, params", [("mmr", {"image_mask_ratio": 0.75, "text_mask_ratio": 0.3}),
                                          ("robust-mmr", {}), ("robust-mmr", {"saliency": 1.0})])
def test_training_masks_have_the_configured_ratios(pairs, name, params):
    method = build(name, pairs, **params)
    spy = Spy(method, "reconstruction")
    batch = unit_batch(pairs[2])
    run(method, batch, grad=False)
    _, _, _, tokens, image_mask, token_mask = spy.calls[-1]
    p = method.params
    assert image_mask.shape == (32, 16) and (image_mask.sum(1) == round(p.image_mask_ratio * 16)).all()
    valid = maskable_tokens(tokens)
    expected = [max(1, round(p.text_mask_ratio * int(n))) for n in valid.sum(1)]
    assert token_mask.sum(1).tolist() == expected and not (token_mask & ~valid).any()
    assert (tokens[token_mask] != PAD).all() and (tokens[token_mask] != CLS).all()


def test_masked_inputs_fill_patches_and_replace_tokens(pairs):
    method = build("mmr", pairs)
    batch = unit_batch(pairs[2], 8)
    x, tokens = method.check_batch(batch)
    image_mask, token_mask = method.random_masks(x, tokens)
    x_in, tok_in = method.masked_inputs(x, tokens, image_mask, token_mask)
    pix = patch_mask_to_pixels(image_mask, tuple(x.shape), 7).expand_as(x)
    mean = x.mean(dim=(1, 2, 3), keepdim=True).expand_as(x)
    assert torch.allclose(x_in[pix], mean[pix]) and torch.equal(x_in[~pix], x[~pix])
    assert (tok_in[token_mask] == MASK).all() and torch.equal(tok_in[~token_mask], tokens[~token_mask])


def test_robust_mmr_with_every_component_off_is_exactly_mmr(pairs):
    batch = unit_batch(pairs[2])
    mmr, robust = build("mmr", pairs), build("robust-mmr", pairs, **OFF)
    a, b = run(mmr, batch), run(robust, batch)
    assert set(b) == {"loss", "mim", "mlm"}
    assert torch.allclose(a["loss"], b["loss"], atol=1e-6) and torch.allclose(a["mim"], b["mim"], atol=1e-6)


@pytest.mark.parametrize("component", [
    {"text_mask_ratio": 0.25}, {"saliency": 0.5}, {"perturb_eps": 2.0}, {"perturb_eps": 8.0, "perturb": "random"},
    {"domain_weight": 0.5}, {"site_weight": 0.1}, {"resilience_weight": 0.5}])
def test_each_component_switched_on_changes_the_loss(pairs, component):
    batch = unit_batch(pairs[2])
    off = run(build("robust-mmr", pairs, **OFF), batch, grad=False)
    assert torch.equal(off["loss"], run(build("robust-mmr", pairs, **OFF), batch, grad=False)["loss"]), "deterministic"
    on = run(build("robust-mmr", pairs, **{**OFF, **component}), batch, grad=False)
    assert torch.isfinite(on["loss"])
    assert abs(on["loss"].item() - off["loss"].item()) > 1e-5, f"{component} did not change the loss"
    for term, weight in (("domain", "domain_weight"), ("site", "site_weight"), ("resilience", "resilience_weight")):
        if weight in component:  # an added term: the reconstruction part is unchanged, loss = mmr + w * term
            assert on[term] > 0 and torch.allclose(on["mim"], off["mim"]) and torch.allclose(on["mlm"], off["mlm"])
            assert torch.allclose(on["loss"], off["loss"] + component[weight] * on[term], atol=1e-5)


def test_gradient_pass_and_perturbation(pairs):
    method = build("robust-mmr", pairs, saliency=1.0, perturb_eps=4.0)
    batch = unit_batch(pairs[2], 16)
    x, tokens = method.check_batch(batch)
    grad_x, grad_emb, clean = method.input_gradients(x, tokens)
    assert all(p.grad is None for p in method.parameters()), "the saliency pass must not touch parameter grads"
    assert grad_x.shape == x.shape and grad_emb.shape == (*tokens.shape, method.text_encoder.feature_dim)
    assert clean.shape == (16, 16, method.image_encoder.feature_dim) and grad_x.abs().sum() > 0
    # saliency = 1: the image mask is the top-k patches by gradient L1 norm
    image_mask, _ = method.masks(x, tokens, grad_x, grad_emb)
    scores = patchify(grad_x.abs(), 7).sum(-1)
    assert torch.equal(image_mask, torch.zeros_like(image_mask).scatter_(1, scores.topk(8, dim=1).indices, True))
    # the reconstruction path sees the masked image + an FGSM step on visible pixels only; targets stay clean
    spy_fuse, spy_rec = Spy(method, "fuse"), Spy(method, "reconstruction")
    run(method, batch, grad=False)
    x_in, (_, _, target, _, mask, _) = spy_fuse.calls[-1][0], spy_rec.calls[-1]
    assert torch.equal(target, x)
    base = fill_masked(x, patch_mask_to_pixels(mask, tuple(x.shape), 7))
    delta = x_in - base
    visible = ~patch_mask_to_pixels(mask, tuple(x.shape), 7).expand_as(x)
    assert delta.abs().max() <= 4 / 255 + 1e-6 and (delta[~visible] == 0).all()
    inside = visible & (base > 4 / 255) & (base < 1 - 4 / 255) & (grad_x != 0)
    assert torch.allclose(delta[inside], 4 / 255 * grad_x[inside].sign(), atol=1e-6)


def test_acquisition_style_changes_intensity_not_geometry():
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(6, 1, 28, 28)
    x[:, :, 8:20, 8:20] = 0.8
    styled = acquisition_style(x, registry.get("method", "robust-mmr").Params().style, 0.3, g)
    assert styled.shape == x.shape and styled.min() >= 0 and styled.max() <= 1
    assert (styled - x).abs().mean() > 0.01
    inside, outside = styled[:, :, 10:18, 10:18].mean(), styled[:, :, :4, :4].mean()
    assert inside > outside + 0.3, "the bright square stays where it was"


def test_site_adversary_needs_valid_sites(pairs):
    batch = unit_batch(pairs[2], 8)
    method = build("robust-mmr", pairs, **{**OFF, "site_weight": 0.1, "n_sites": 4})
    with pytest.raises(ValueError, match="no 'site'"):
        method({k: v for k, v in batch.items() if k != "site"})
    with pytest.raises(ValueError, match=r"n_sites=4"):
        method({**batch, "site": torch.full((8,), 4)})
    out = run(method, batch)
    assert 0 <= out["site_accuracy"] <= 1
    build("robust-mmr", pairs, **OFF)({k: v for k, v in batch.items() if k != "site"})  # no adversary: no sites needed


def test_bad_configuration_errors(pairs):
    _, tok, tensors = pairs
    image, text = SmallCNN(1, 2, 28, [0.5], [0.25]), TextTransformer(tok.vocab_size)
    fusion = Fusion(image.feature_dim, text.feature_dim)
    with pytest.raises(ValueError, match="needs a fusion module"):
        MMR(Encoders(image, text))
    with pytest.raises(ValueError, match="needs a text encoder"):
        RobustMMR(Encoders(image, None, fusion))
    for bad, match in (({"image_mask_ratio": 1.0}, "image_mask_ratio"), ({"text_mask_ratio": 0}, "text_mask_ratio"),
                       ({"mim_weight": 0, "mlm_weight": 0}, "at least one"), ({"mask_ratio": 0.5}, "extra"),
                       ({"saliency": 1.5}, "saliency"), ({"perturb": "pgd"}, "perturb"), ({"n_sites": 1}, "n_sites")):
        with pytest.raises(ValidationError, match=match):
            RobustMMR.Params(**bad)
    method = MMR(Encoders(image, text, fusion), MMR.Params(patch_size=8))
    batch = unit_batch(tensors, 4)
    assert torch.isfinite(method(batch)["loss"])  # 28 px at patch 8: a border-padded 4x4 grid
    with pytest.raises(ValueError, match=r"no head for 1ch-3d.*built for 1ch-2d"):  # a 2D encoder's method
        MMR(Encoders(image, text, fusion))({"image": torch.rand(4, 1, 28, 28, 28), "tokens": batch["tokens"]})
    with pytest.raises(ValueError, match="no 'tokens'"):
        MMR(Encoders(image, text, fusion))({"image": batch["image"]})


def test_fusion_classifier_from_pretrained_parts_handles_dropped_modalities(pairs):
    method = build("robust-mmr", pairs)
    model = FusionClassifier(method.image_encoder, 2, method.text_encoder, method.fusion).eval()
    batch = unit_batch(pairs[2], 6)
    with torch.no_grad():
        outs = [model(batch["image"], batch["tokens"]), model(batch["image"], missing="report"),
                model(None, batch["tokens"], missing="image")]
    assert all(o.shape == (6, 2) and torch.isfinite(o).all() for o in outs)


@pytest.mark.parametrize("name", ["mmr", "robust-mmr"])
def test_loss_falls_when_trained(pairs, name):
    method = build(name, pairs)
    batch = unit_batch(pairs[2], 64)
    before = run(method, batch, grad=False)
    result = fit(method, pairs[2], FitConfig(steps=24, batch_size=32, lr=3e-3, warmup_fraction=0.0), seed=0)
    after = run(method, batch, grad=False)
    assert np.isfinite(result.losses).all() and len(result.losses) == 24
    assert after["loss"] < 0.85 * before["loss"], f"{name}: {before['loss']:.3f} -> {after['loss']:.3f}"
    falling = ["mim", "mlm"] + (["domain", "resilience"] if name == "robust-mmr" else [])
    assert all(after[k] < before[k] for k in falling), {k: (float(before[k]), float(after[k])) for k in falling}
