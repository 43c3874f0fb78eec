"""Purifier: trained on images only (instrumented: no label ever reaches it), frozen during fine-tuning,
denoises better than doing nothing, and its randomised / quantised variants declare EOT / BPDA."""

import pytest
import torch
import torch.nn.functional as F

from medrobust.attacks.pgd import PGD, PGDParams
from medrobust.data.base import to_unit
from medrobust.data.tokenizer import CLS, PAD
from medrobust.defenses.purifier import DenoisingAutoencoder, PurifiedClassifier, Purifier, PurifierParams
from medrobust.engine.train import FitConfig, fit
from medrobust.methods.losses import task_loss
from medrobust.methods.supervised import Supervised, SupervisedParams
from medrobust.models.encoders import CNNParams, SmallCNN
from medrobust.models.heads import Classifier, FixedReport
from medrobust.models.text import TextParams, TextTransformer


def classifier(task, text=False):
    torch.manual_seed(0)
    txt = TextTransformer(40, TextParams(vocab_size=40, max_len=10, dim=16, heads=2)) if text else None
    return Classifier(SmallCNN(1, 2, 28, [0.4], [0.25], CNNParams(width=8, depth=4)), task.n_outputs, txt)


@pytest.fixture
def recorder(monkeypatch):
    """Every input the denoiser's forward receives (the instrumentation of the no-label check)."""
    seen = []
    real = DenoisingAutoencoder.forward

    def forward(self, *args, **kwargs):
        assert len(args) == 1 and not kwargs, "the purifier takes one image tensor and nothing else"
        seen.append(args[0].detach().clone())
        return real(self, *args, **kwargs)

    monkeypatch.setattr(DenoisingAutoencoder, "forward", forward)
    return seen


@pytest.fixture(scope="module")
def trained(synthetic_small):
    ds = synthetic_small
    defense = Purifier(PurifierParams(steps=60, batch_size=64, width=8), seed=0)
    model = defense.wrap(classifier(ds.task), torch.as_tensor(ds.train.images), "cpu")  # uint8, as the study passes
    return defense, model, ds


def test_training_sees_only_corrupted_training_images(synthetic_small, recorder):
    ds = synthetic_small
    train = to_unit(ds.train.images)  # [N, 1, 28, 28]
    defense, model = Purifier(PurifierParams(steps=4, batch_size=32, sigma=0.0, linf=8.0), seed=0), classifier(ds.task)
    rng = torch.get_rng_state()
    defense.wrap(model, train, "cpu")
    assert torch.equal(torch.get_rng_state(), rng)
    assert len(recorder) == 4
    for batch in recorder:
        assert batch.dtype == torch.float32 and batch.shape == (32, 1, 28, 28)
        # each input is a training image moved by at most the L∞ training noise: derived from images only
        dist = (batch[:, None] - train[None]).abs().flatten(2).amax(dim=2)  # [32, N]
        assert (dist.min(dim=1).values <= 8 / 255 + 1e-6).all()


def test_fine_tuning_and_inference_feed_the_purifier_the_images_and_never_update_it(trained, recorder):
    _, model, ds = trained
    assert all(not p.requires_grad for p in model.purifier.parameters())
    before = {k: v.clone() for k, v in model.purifier.state_dict().items()}
    data = {"image": torch.as_tensor(ds.train.images[:64]), "label": torch.as_tensor(ds.train.labels[:64])}
    fit(Supervised(model, ds.task, SupervisedParams(augment=False)), data, FitConfig(steps=2, batch_size=16), seed=0)
    assert all(torch.equal(v, model.purifier.state_dict()[k]) for k, v in before.items())
    images = to_unit(data["image"])
    for seen in recorder:  # the purifier's input is a batch of the training images, bit for bit
        assert seen.shape == (16, 1, 28, 28) and all((images == row).flatten(1).all(1).any() for row in seen)
    recorder.clear()
    x = to_unit(ds.test.images[:10])
    with torch.no_grad():
        out = model(x)
        assert out.shape == (10, ds.task.n_outputs)
        assert torch.equal(out, model.classifier(model.purifier(x))), "the pipeline is classifier(purifier(x))"
    assert torch.equal(recorder[0], x)


def test_purifier_denoises_test_images(trained):
    defense, model, ds = trained
    assert defense.train_seconds > 0 and model.purifier_train_seconds == defense.train_seconds
    assert defense.train_losses[-1] < 0.7 * defense.train_losses[0]
    clean = to_unit(ds.test.images)
    noisy = (clean + 0.1 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    with torch.no_grad():
        purified = model.purifier(noisy)
    assert F.mse_loss(purified, clean) < 0.7 * F.mse_loss(noisy, clean)  # measured 0.0047 vs 0.0094


def test_default_pipeline_is_deterministic_and_differentiable(trained):
    _, model, ds = trained
    assert not model.randomized and not model.non_differentiable
    x = to_unit(ds.test.images[:8]).requires_grad_(True)
    task_loss(model(x), torch.as_tensor(ds.test.labels[:8]), ds.task).backward()
    assert x.grad.abs().sum() > 0, "attacks go straight through the purifier"


def test_quantized_purifier_declares_bpda(trained):
    _, model, ds = trained
    q = PurifiedClassifier(model.classifier, model.purifier, PurifierParams(quantize=True, levels=16), 0, 1.0)
    assert q.non_differentiable and not q.randomized
    x, y = to_unit(ds.test.images[:8]), torch.as_tensor(ds.test.labels[:8])
    with torch.no_grad():
        levels = q.purify(x) * 15
        assert torch.allclose(levels, levels.round(), atol=1e-5)
        assert torch.equal(q(x), q.bpda_forward(x)), "BPDA changes the backward pass only"
    grads = []
    for forward in (q, q.bpda_forward):
        xr = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(task_loss(forward(xr), y, ds.task), xr, allow_unused=True)
        grads.append(torch.zeros_like(x) if g is None else g)
    assert grads[0].abs().sum() == 0 and grads[1].abs().sum() > 0
    x_adv = PGD(PGDParams(steps=5))(q, x, y, eps=8 / 255, task=ds.task, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert task_loss(q(x_adv), y, ds.task) > task_loss(q(x), y, ds.task), "the BPDA attack makes progress"


def test_randomized_purifier_declares_eot_and_works_with_a_fixed_report(trained):
    _, model, ds = trained
    params = PurifierParams(randomized=True, test_sigma=0.05)
    r = PurifiedClassifier(model.classifier, model.purifier, params, 0, 1.0)
    x = to_unit(ds.test.images[:8])
    with torch.no_grad():
        assert r.randomized and r.eot_samples == 8 and not torch.equal(r(x), r(x))
    mm = PurifiedClassifier(classifier(ds.task, text=True), model.purifier, params, 0, 1.0)
    tokens = torch.randint(4, 40, (8, 10))
    tokens[:, 0], tokens[:, 7:] = CLS, PAD
    fixed = FixedReport(mm, tokens=tokens)
    with torch.no_grad():
        assert fixed.randomized and fixed(x).shape == mm(x, tokens).shape == (8, ds.task.n_outputs)
