"""Noise-injection defenses: random in train and eval, identity when the noise is off, learnable scales get
gradients, the classifier surface is kept, image+report fusion noise works with tokens and FixedReport."""

import copy

import pytest
import torch

from medrobust import registry
from medrobust.attacks.pgd import PGD, PGDParams
from medrobust.data.base import Task
from medrobust.data.tokenizer import CLS, PAD
from medrobust.defenses.base import DefenseInputError
from medrobust.engine.train import FitConfig, fit
from medrobust.methods.losses import task_loss
from medrobust.methods.supervised import Supervised
from medrobust.models.encoders import CNNParams, SmallCNN, SmallViT, ViTParams
from medrobust.models.fusion import Fusion, FusionClassifier, FusionParams
from medrobust.models.heads import Classifier, FixedReport
from medrobust.models.text import TextParams, TextTransformer

TASK = Task("binary", ("normal", "abnormal"))


def classifier(text=False, spatial_dims=2):
    torch.manual_seed(0)
    txt = TextTransformer(40, TextParams(vocab_size=40, max_len=10, dim=16, heads=2)) if text else None
    return Classifier(SmallCNN(1, spatial_dims, 16, [0.4], [0.25], CNNParams(width=8, depth=3)), 2, txt)


def fusion_classifier():
    """An image+report model whose report and image tokens meet inside a fusion transformer."""
    torch.manual_seed(0)
    image = SmallCNN(1, 2, 16, [0.4], [0.25], CNNParams(width=8, depth=3))
    text = TextTransformer(40, TextParams(vocab_size=40, max_len=10, dim=16, heads=2))
    return FusionClassifier(image, 2, text, Fusion(image.feature_dim, 16, FusionParams(dim=16, heads=2)))


def images(n=6, spatial=(16, 16)):
    return torch.rand(n, 1, *spatial, generator=torch.Generator().manual_seed(1))


def tokens(n=6):
    t = torch.randint(4, 40, (n, 10), generator=torch.Generator().manual_seed(2))
    t[:, 0], t[:, 7:] = CLS, PAD
    return t


def wrap(name, model, **params):
    cls = registry.get("defense", name)
    return cls(cls.Params(**params), seed=0).wrap(model, images(), "cpu")


@pytest.mark.parametrize("name", ["input-noise", "attention-noise", "fusion-noise"])
def test_random_in_train_and_eval_and_surface_kept(name):
    base = classifier(text=True)
    model = wrap(name, base)
    x, t = images(), tokens()
    assert model.randomized and not model.non_differentiable and model.eot_samples == 8
    assert model.uses_text and model.text_encoder is base.text_encoder and model.head is base.head
    assert torch.equal(model.text_features(t), base.text_features(t))
    rng = torch.get_rng_state()
    for mode in (model.train(), model.eval()):
        with torch.no_grad():
            a, b = mode(x, t), mode(x, text_features=base.text_features(t))
        assert a.shape == (6, 2) and not torch.allclose(a, b), f"noise must be active in {mode.training=}"
    assert torch.equal(torch.get_rng_state(), rng), "noise comes from the defense's own generator"
    again = wrap(name, classifier(text=True))
    with torch.no_grad():
        assert torch.equal(wrap(name, classifier(text=True))(x, t), again(x, t)), "same seed, same noise"
    clone = copy.deepcopy(model)
    with torch.no_grad():
        assert torch.equal(clone(x, t), model(x, t)), "a copy continues the same noise stream"


@pytest.mark.parametrize("name", ["input-noise", "attention-noise", "fusion-noise"])
def test_identity_when_the_noise_is_off(name):
    base = classifier(text=True)
    model = wrap(name, base, sigma=1e-12)
    x, t = images(), tokens()
    with torch.no_grad():
        assert torch.allclose(model(x, t), base(x, t), atol=1e-5), "new layers start as the identity"


def test_input_noise_perturbs_only_the_pixels_within_range():
    base = classifier()
    seen = []
    base.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach()))
    model = wrap("input-noise", base, sigma=0.05)
    x = images(200)
    with torch.no_grad():
        model(x)
    noisy = seen[0]
    inside = (noisy > 0) & (noisy < 1)
    assert noisy.min() >= 0 and noisy.max() <= 1
    assert abs(float((noisy - x)[inside].std()) - 0.05) < 0.005


@pytest.mark.parametrize("name", ["attention-noise", "fusion-noise"])
def test_learnable_noise_scale_receives_gradient_and_trains(name):
    model = wrap(name, classifier(text=True), sigma=0.8)
    x, t, y = images(), tokens(), torch.tensor([0, 1, 0, 1, 1, 0])
    task_loss(model(x, t), y, TASK).backward()
    scale = model.attention.log_sigma if name == "attention-noise" else model.log_sigma
    assert scale.grad is not None and scale.grad.abs() > 0 and torch.isfinite(scale.grad)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    data = {"image": images(32), "tokens": tokens(32), "label": torch.randint(0, 2, (32,))}
    fit(Supervised(model, TASK), data, FitConfig(steps=3, batch_size=8), seed=0)
    assert not torch.equal(before[next(k for k in before if k.endswith("log_sigma"))], scale.detach())
    assert set(model.noise_scales()) == {"attention_sigma" if name == "attention-noise" else "fusion_sigma"}


def test_attention_noise_wraps_the_conv_body_2d_and_3d_and_rejects_other_encoders():
    base = classifier()
    model = wrap("attention-noise", base)
    assert isinstance(base.image_encoder, SmallCNN), "the caller's classifier is left unchanged"
    assert model.image_encoder.feature_dim == base.image_encoder.feature_dim
    assert model.image_encoder.encoder is base.image_encoder and model.head is base.head
    with torch.no_grad():
        assert model.image_encoder.forward_features(images()).shape == (6, base.image_encoder.feature_dim)
    vol = wrap("attention-noise", classifier(spatial_dims=3))
    with torch.no_grad():
        assert vol(torch.rand(2, 1, 8, 8, 8)).shape == (2, 2)
    vit = Classifier(SmallViT(1, 2, 16, [0.4], [0.25], ViTParams(patch_size=4, dim=16, depth=1, heads=2)), 2)
    with pytest.raises(DefenseInputError, match="SmallViT.*input-noise"):
        wrap("attention-noise", vit)
    with pytest.raises(DefenseInputError, match="odd"):
        wrap("attention-noise", classifier(), kernel_size=4)


def test_fusion_noise_needs_an_image_report_arm_and_works_with_tokens_and_fixed_report():
    with pytest.raises(ValueError, match="image\\+report"):
        wrap("fusion-noise", classifier())
    base = classifier(text=True)
    model = wrap("fusion-noise", base)
    x, t, y = images(), tokens(), torch.tensor([0, 1, 0, 1, 1, 0])
    fixed = FixedReport(model, tokens=t)
    assert fixed.randomized and not fixed.non_differentiable
    with torch.no_grad():
        assert model(x, t).shape == fixed(x).shape == (6, 2)
    x_adv = PGD(PGDParams(steps=2))(fixed, x, y, eps=8 / 255, task=TASK, generator=torch.Generator().manual_seed(0))
    assert (x_adv - x).abs().max() <= 8 / 255 + 1e-6 and not torch.equal(x_adv, x)
    with pytest.raises(ValueError, match="tokens"):
        model(x)
    quiet = wrap("fusion-noise", base, sigma=1e-12)
    with torch.no_grad():  # a missing report is zero report features, as in the undefended classifier
        img = base.image_encoder.forward_features(x)
        expected = base.head(torch.cat([img, img.new_zeros(6, 16)], dim=1))
        assert torch.allclose(quiet(x, missing="report"), expected, atol=1e-5)
        assert quiet(None, t, missing="image").shape == (6, 2)
    with pytest.raises(ValueError, match="missing"):
        quiet(x, t, missing="text")


@pytest.mark.parametrize("name", ["input-noise", "attention-noise", "fusion-noise", "purifier"])
def test_defenses_wrap_a_fusion_encoder_classifier(name):
    base = fusion_classifier()
    params = {"steps": 2, "batch_size": 4} if name == "purifier" else {"sigma": 1e-12}
    model = wrap(name, base, **params)
    x, t = images(), tokens()
    with torch.no_grad():
        assert model(x, t).shape == FixedReport(model, tokens=t)(x).shape == (6, 2)
        assert model(None, t, missing="image").shape == model(x, missing="report").shape == (6, 2)
        if name != "purifier":  # with the noise off the new layers are the identity
            assert torch.allclose(model(x, t), base(x, t), atol=1e-5)
            assert torch.allclose(model(x, missing="report"), base(x, missing="report"), atol=1e-5)
    if name in ("attention-noise", "fusion-noise"):
        noisy = wrap(name, fusion_classifier())
        with torch.no_grad():
            assert not torch.allclose(noisy(x, t), noisy(x, t))
