"""Fusion encoder and FusionClassifier: shapes, dropped modalities, packed report features, padding."""

import pytest
import torch

from medrobust import registry
from medrobust.data.tokenizer import CLS, PAD
from medrobust.models.encoders import SmallCNN, SmallViT, ViTParams
from medrobust.models.fusion import Fusion, FusionClassifier, FusionParams, sincos_positions
from medrobust.models.text import TextTransformer


def make(image="cnn", n_outputs=3, vocab=50):
    torch.manual_seed(0)
    if image == "cnn":
        enc = SmallCNN(1, 2, 28, [0.5], [0.25])
    else:
        enc = SmallViT(1, 2, 28, [0.5], [0.25], ViTParams(dim=32, depth=1, heads=4))
    text = TextTransformer(vocab)
    fusion = Fusion(enc.feature_dim, text.feature_dim)
    return FusionClassifier(enc, n_outputs, text, fusion).eval()


def reports(n=4, length=10, vocab=50, seed=0):
    """Token ids with [CLS] first and a different number of trailing [PAD] per report."""
    g = torch.Generator().manual_seed(seed)
    t = torch.randint(4, vocab, (n, length), generator=g)
    t[:, 0] = CLS
    for i in range(1, n):
        t[i, length - 2 * i:] = PAD
    return t


def test_fusion_registered_with_defaults_and_token_shapes():
    assert registry.get("encoder", "fusion") is Fusion and Fusion.modality == "fusion"
    p = FusionParams()
    assert (p.dim, p.depth, p.heads, p.mlp_ratio) == (64, 1, 4, 2.0)
    torch.manual_seed(0)
    fusion = Fusion(24, 40, FusionParams(dim=32, depth=2))
    assert fusion.feature_dim == 32 and len(fusion.blocks.layers) == 2
    img, txt = torch.randn(3, 16, 24), torch.randn(3, 9, 40)
    pad = torch.zeros(3, 9, dtype=torch.bool)
    pad[0, 5:] = True
    pooled, img_out, txt_out = fusion(img, txt, pad)
    assert pooled.shape == (3, 32) and img_out.shape == (3, 16, 32) and txt_out.shape == (3, 9, 32)
    pooled_i, img_only, none_t = fusion(img, None)
    pooled_t, none_i, txt_only = fusion(None, txt, pad)
    assert none_t is None and none_i is None and img_only.shape == (3, 16, 32) and txt_only.shape == (3, 9, 32)
    for a, b in ((pooled, pooled_i), (pooled, pooled_t), (pooled_i, pooled_t)):
        assert not torch.allclose(a, b, atol=1e-4), "each modality must contribute to the pooled feature"
    assert torch.isfinite(torch.cat([pooled, pooled_i, pooled_t])).all()


def test_fusion_ignores_padding_and_checks_inputs():
    torch.manual_seed(0)
    fusion = Fusion(8, 8, FusionParams(dim=16, heads=2)).eval()
    img, txt = torch.randn(2, 4, 8), torch.randn(2, 5, 8)
    pad = torch.tensor([[False, False, False, True, True], [False] * 5])
    longer = torch.cat([txt, torch.randn(2, 3, 8) * 50], dim=1)  # extra padded positions with large values
    longer_pad = torch.cat([pad, torch.ones(2, 3, dtype=torch.bool)], dim=1)
    with torch.no_grad():
        a, b = fusion(img, txt, pad), fusion(img, longer, longer_pad)
        changed = txt.clone()
        changed[0, 3:] = -7.0  # values under padding of report 0
        c = fusion(img, changed, pad)
    assert torch.allclose(a[0], b[0], atol=1e-5) and torch.allclose(a[1], b[1], atol=1e-5)
    assert torch.allclose(a[2], b[2][:, :5], atol=1e-5)
    assert torch.allclose(a[0], c[0], atol=1e-5)
    with pytest.raises(ValueError, match="both modalities are missing"):
        fusion(None, None)
    with pytest.raises(ValueError, match=r"image_tokens must be \[N, tokens, 8\]"):
        fusion(torch.randn(2, 4, 7), None)
    with pytest.raises(ValueError, match="2 images but 3 reports"):
        fusion(img, torch.randn(3, 5, 8))
    with pytest.raises(ValueError, match="text_pad must be"):
        fusion(img, txt, pad[:, :4])
    with pytest.raises(ValueError, match="not divisible by heads"):
        Fusion(8, 8, FusionParams(dim=30, heads=4))
    with pytest.raises(ValueError, match="extra"):
        FusionParams(width=3)


def test_sincos_positions_distinct_and_bounded():
    pos = sincos_positions(16, 64)
    assert pos.shape == (16, 64) and pos.abs().max() <= 1.0
    assert torch.allclose(pos[0, :32], torch.zeros(32)) and torch.allclose(pos[0, 32:], torch.ones(32))
    dist = torch.cdist(pos, pos) + torch.eye(16)
    assert dist.min() > 0.1, "every position must get a distinct code"
    assert sincos_positions(5, 9).shape == (5, 9)


@pytest.mark.parametrize("image", ["cnn", "vit"])
def test_classifier_shapes_and_dropped_modalities(image):
    model = make(image)
    x, t = torch.rand(4, 1, 28, 28), reports()
    with torch.no_grad():
        joint = model(x, t)
        img_only = model(x, missing="report")
        txt_only = model(None, t, missing="image")
        txt_only_ignores_image = model(torch.rand(4, 1, 28, 28), t, missing="image")
        img_only_ignores_tokens = model(x, t, missing="report")
    for logits in (joint, img_only, txt_only):
        assert logits.shape == (4, 3) and torch.isfinite(logits).all()
    assert torch.allclose(txt_only, txt_only_ignores_image) and torch.allclose(img_only, img_only_ignores_tokens)
    assert not torch.allclose(joint, img_only, atol=1e-4) and not torch.allclose(joint, txt_only, atol=1e-4)
    # encode_image / encode_text are the fused pooled features with the other modality dropped
    assert torch.allclose(model.encode_image(x), model.features(x, missing="report"))
    assert torch.allclose(model.encode_text(t), model.features(None, t, missing="image"))
    assert model.encode_image(x).shape == (4, model.fusion.feature_dim)
    assert torch.allclose(model.head(model.encode_text(t)), txt_only, atol=1e-6)
    # the report changes the prediction of the joint model (the fusion is not ignoring it)
    assert not torch.allclose(model(x, t), model(x, t.roll(1, dims=0)), atol=1e-5)


def test_packed_text_features_carry_the_pad_channel_and_reproduce_the_model():
    model = make()
    x, t = torch.rand(4, 1, 28, 28), reports()
    with torch.no_grad():
        feats = model.text_features(t)
        assert feats.shape == (4, 10, model.text_encoder.feature_dim + 1)
        assert torch.equal(feats[..., -1], (t != PAD).float())
        assert torch.allclose(model(x, text_features=feats), model(x, t), atol=1e-6)
        emb = model.text_encoder.embed(t)
        assert torch.allclose(model.text_features_from_embeddings(emb, t), feats, atol=1e-6)
        # attacks expand the packed features along dim 0: row i of the result is row i's prediction
        rep = feats[:1].expand(4, -1, -1)
        assert torch.allclose(model(x, text_features=rep), model(x, t[:1].expand(4, -1)), atol=1e-6)


def test_embedding_gradient_reaches_the_report_for_report_side_attacks():
    model = make()
    x, t = torch.rand(4, 1, 28, 28), reports()
    emb = model.text_encoder.embed(t).detach().requires_grad_(True)
    model(x, text_features=model.text_features_from_embeddings(emb, t)).sum().backward()
    real = (t != PAD)
    assert emb.grad[real].abs().sum(-1).min() > 0, "every real token must influence the logits"


def test_classifier_errors_and_freezing():
    model = make()
    x, t = torch.rand(2, 1, 28, 28), reports(2)
    with pytest.raises(ValueError, match="needs report tokens"):
        model(x)
    with pytest.raises(ValueError, match="needs an image"):
        model(None, t)
    with pytest.raises(ValueError, match="missing must be"):
        model(x, t, missing="text")
    with pytest.raises(ValueError, match="needs a text encoder and a fusion"):
        FusionClassifier(model.image_encoder, 2, model.text_encoder, None)
    assert model.uses_text and model.randomized is False and model.non_differentiable is False
    model.freeze_encoders()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"head.weight", "head.bias"}


def test_encoder_token_surfaces_match_their_pooled_features():
    torch.manual_seed(0)
    cnn, vit = SmallCNN(1, 2, 28, [0.5], [0.25]), SmallViT(1, 2, 28, [0.5], [0.25])
    text = TextTransformer(50).eval()
    x, t = torch.rand(3, 1, 28, 28), reports(3)
    with torch.no_grad():
        tok = cnn.forward_tokens(x)
        assert tok.shape == (3, 16, cnn.feature_dim)  # 28 -> 14 -> 7 -> 4: a 4x4 map
        assert torch.allclose(tok.mean(dim=1), cnn.forward_features(x), atol=1e-6)
        assert vit.forward_tokens(x).shape == (3, 16, vit.feature_dim)
        states = text.forward_tokens(t)
        assert states.shape == (3, 10, text.feature_dim)
        assert torch.allclose(text.forward_token_embeddings(text.embed(t), t), states)
        assert torch.allclose(states.mean(dim=-1), torch.zeros(3, 10), atol=1e-5), "states come after the LayerNorm"


def test_fixed_report_wraps_the_fusion_classifier_with_the_same_function_and_gradient():
    from medrobust.models.heads import FixedReport

    model = make()
    x, t = torch.rand(4, 1, 28, 28), reports()
    fixed = FixedReport(model, t)
    assert torch.allclose(fixed(x), model(x, t), atol=1e-6)
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    fixed(xa).sum().backward()
    model(xb, t).sum().backward()
    assert torch.allclose(xa.grad, xb.grad, atol=1e-6) and xa.grad.abs().sum() > 0
