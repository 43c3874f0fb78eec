"""Encoders (2D/3D, normalisation inside), report encoder, classifier with a fixed report."""

import pytest
import torch

from medrobust import registry
from medrobust.data.tokenizer import CLS, PAD, ReportTokenizer
from medrobust.models.heads import Classifier, FixedReport
from medrobust.models.text import TextTransformer


@pytest.mark.parametrize("name", ["cnn", "vit", "medformer"])
@pytest.mark.parametrize("dims, channels", [(2, 1), (2, 3), (3, 1)])
def test_image_encoders_surface_2d_and_3d(name, dims, channels):
    cls = registry.get("encoder", name)
    torch.manual_seed(0)
    enc = cls(channels, dims, 28, [0.5] * channels, [0.25] * channels, cls.Params())
    x = torch.rand(3, channels, *([28] * dims))
    f = enc.forward_features(x)
    assert f.shape == (3, enc.feature_dim) and torch.isfinite(f).all()
    # normalisation lives inside: the same [0,1] image with different declared stats gives different features
    other = cls(channels, dims, 28, [0.1] * channels, [0.5] * channels, cls.Params())
    other.load_state_dict({k: v for k, v in enc.state_dict().items() if "norm_in" not in k and "body.0" not in k},
                          strict=False)
    assert not torch.allclose(other.forward_features(x), f)


def test_vit_rejects_indivisible_patch():
    cls = registry.get("encoder", "vit")
    with pytest.raises(ValueError, match="not divisible by patch_size"):
        cls(1, 2, 30, [0.5], [0.25], cls.Params(patch_size=7))


def test_tokenizer_is_deterministic_and_padded():
    texts = ["No pleural effusion.", "Small left effusion. Heart size normal.", "Possible nodule in the right upper lobe."]
    a, b = ReportTokenizer.train(texts * 5, vocab_size=60, max_len=12), ReportTokenizer.train(texts * 5, 60, 12)
    ids = a.encode(texts)
    assert ids.shape == (3, 12) and (ids[:, 0] == CLS).all()
    assert (ids == b.encode(texts)).all()
    assert a.decode(ids[0]) == "no pleural effusion."
    shuffled = ReportTokenizer.train(list(reversed(texts * 5)), 60, 12)
    assert (shuffled.encode(texts) == ids).all(), "the vocabulary must not depend on the order of the reports"
    assert ReportTokenizer.from_json(a.to_json()).encode(texts).tolist() == ids.tolist()
    assert (a.encode([""])[0, 1:] == PAD).all()


def test_text_encoder_ignores_padding():
    torch.manual_seed(0)
    enc = TextTransformer(50).eval()
    tokens = torch.tensor([[CLS, 5, 6, 7, PAD, PAD]])
    longer = torch.tensor([[CLS, 5, 6, 7, PAD, PAD, PAD, PAD]])
    assert torch.allclose(enc(tokens), enc(longer), atol=1e-5)
    assert not torch.allclose(enc(tokens), enc(torch.tensor([[CLS, 5, 9, 7, PAD, PAD]])))


def test_fixed_report_equals_full_model_and_its_gradient():
    torch.manual_seed(0)
    image = registry.get("encoder", "cnn")(1, 2, 28, [0.5], [0.25])
    model = Classifier(image, 2, TextTransformer(50)).eval()
    x, tokens = torch.rand(4, 1, 28, 28), torch.randint(4, 50, (4, 10))
    fixed = FixedReport(model, tokens)
    assert torch.allclose(fixed(x), model(x, tokens), atol=1e-6)
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    fixed(xa).sum().backward()
    model(xb, tokens).sum().backward()
    assert torch.allclose(xa.grad, xb.grad, atol=1e-6)


def test_late_fusion_classifier_drops_a_missing_modality():
    torch.manual_seed(0)
    image = registry.get("encoder", "cnn")(1, 2, 28, [0.5], [0.25])
    model = Classifier(image, 3, TextTransformer(50)).eval()
    x, tokens = torch.rand(4, 1, 28, 28), torch.randint(4, 50, (4, 10))
    w_img = model.head.weight[:, : image.feature_dim]
    w_txt = model.head.weight[:, image.feature_dim:]
    with torch.no_grad():
        img_only = model(x, missing="report")
        txt_only = model(None, tokens, missing="image")
        assert torch.allclose(img_only, image(x) @ w_img.T + model.head.bias, atol=1e-5)
        assert torch.allclose(txt_only, model.text_features(tokens) @ w_txt.T + model.head.bias, atol=1e-5)
        both = model(x, tokens)
        # late fusion is additive in the logits: joint = image-only + report-only - bias
        assert torch.allclose(both, img_only + txt_only - model.head.bias, atol=1e-5)
        emb = model.text_encoder.embed(tokens)
        assert torch.allclose(model.text_features_from_embeddings(emb, tokens), model.text_features(tokens))
    with pytest.raises(ValueError, match="needs report tokens"):
        model(x)
    with pytest.raises(ValueError, match="missing must be"):
        model(x, tokens, missing="text")
    with pytest.raises(ValueError, match="cannot drop its image"):
        Classifier(image, 3)(None, missing="image")
