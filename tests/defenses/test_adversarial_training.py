"""PGD-AT and TRADES objectives: TRADES β=0 is clean fine-tuning, the loss matches the paper's formula, the
inner maximisation stays in the ε-ball and raises its objective, generation runs in eval mode without
touching the global RNG, and image+report / multilabel models work."""

import copy

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from medrobust.data.base import Task
from medrobust.data.tokenizer import CLS, PAD
from medrobust.defenses.adversarial_training import (
    PGDAT,
    AdversarialTrainingParams,
    Trades,
    TradesParams,
    kl_per_example,
    trades_loss,
)
from medrobust.engine.train import FitConfig, fit
from medrobust.methods.losses import task_loss
from medrobust.methods.supervised import Supervised, SupervisedParams
from medrobust.models.encoders import CNNParams, SmallCNN
from medrobust.models.heads import Classifier
from medrobust.models.text import TextParams, TextTransformer

BINARY = Task("binary", ("normal", "abnormal"))
MULTI = Task("multilabel", ("nodule", "effusion", "cardiomegaly"))


def small_cnn(n_out=2, seed=0, text=False):
    torch.manual_seed(seed)
    txt = TextTransformer(40, TextParams(vocab_size=40, max_len=10, dim=16, heads=2)) if text else None
    return Classifier(SmallCNN(1, 2, 28, [0.4], [0.25], CNNParams(width=8, depth=4)), n_out, txt)


@pytest.fixture(scope="module")
def data(synthetic_small):
    ds = synthetic_small
    return {"image": torch.as_tensor(ds.train.images[:128]), "label": torch.as_tensor(ds.train.labels[:128])}


def batch_of(data, n=16):
    return {"image": data["image"][:n].float() / 255, "label": data["label"][:n]}


def tokens(n, length=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    t = torch.randint(4, 40, (n, length), generator=g)
    t[:, 0] = CLS
    t[:, 7:] = PAD  # 6 real tokens per report
    return t


def test_trades_with_beta_zero_is_clean_finetuning(data):
    init = small_cnn()
    trades_model, clean_model, robust_model = copy.deepcopy(init), copy.deepcopy(init), copy.deepcopy(init)
    cfg = FitConfig(steps=6, batch_size=16, lr=3e-3)
    objective = Trades(TradesParams(beta=0.0), seed=5).objective(trades_model, BINARY, Supervised(trades_model, BINARY))
    r_trades = fit(objective, data, cfg, seed=1)
    r_clean = fit(Supervised(clean_model, BINARY), data, cfg, seed=1)
    assert r_trades.losses == r_clean.losses
    for (name, a), b in zip(trades_model.named_parameters(), clean_model.parameters()):
        assert torch.equal(a, b), name
    # not vacuous: a positive β changes the trajectory
    robust = Trades(TradesParams(beta=1.0), seed=5).objective(robust_model, BINARY, Supervised(robust_model, BINARY))
    fit(robust, data, cfg, seed=1)
    assert not torch.equal(robust_model.head.weight, clean_model.head.weight)


def test_trades_loss_matches_the_formula():
    g = torch.Generator().manual_seed(0)
    clean, adv = torch.randn(8, 3, generator=g), torch.randn(8, 3, generator=g)
    y = torch.randint(0, 3, (8,), generator=g)
    reference = F.cross_entropy(clean, y) + 2.5 * F.kl_div(F.log_softmax(adv, 1), F.softmax(clean, 1),
                                                           reduction="batchmean")
    task3 = Task("multiclass", ("a", "b", "c"))
    assert torch.allclose(trades_loss(clean, adv, y, task3, 2.5), reference, atol=1e-6)
    # multilabel: BCE summed over findings + β · Bernoulli KL summed over findings, both averaged over examples
    ym = torch.randint(0, 2, (8, 3), generator=g)
    p, q = torch.sigmoid(clean), torch.sigmoid(adv)
    bern = (p * torch.log(p / q) + (1 - p) * torch.log((1 - p) / (1 - q))).sum(1)
    bce = F.binary_cross_entropy(p, ym.float(), reduction="none").sum(1)
    assert torch.allclose(kl_per_example(clean, adv, MULTI), bern, atol=1e-5)
    assert torch.allclose(trades_loss(clean, adv, ym, MULTI, 0.5), bce.mean() + 0.5 * bern.mean(), atol=1e-5)
    assert kl_per_example(clean, clean, task3).abs().max() < 1e-6 and (kl_per_example(clean, adv, task3) > 0).all()


@pytest.mark.parametrize("defense", ["pgd-at", "trades"])
def test_inner_maximisation_stays_in_the_ball_and_raises_its_objective(data, defense):
    model = small_cnn()
    fit(Supervised(model, BINARY, SupervisedParams(augment=False)), data, FitConfig(steps=80, batch_size=32, lr=3e-3),
        seed=0)
    batch = batch_of(data, 32)
    cls, P = (PGDAT, AdversarialTrainingParams) if defense == "pgd-at" else (Trades, TradesParams)
    objective = cls(P(eps=4.0, steps=5), seed=0).objective(model, BINARY, Supervised(model, BINARY))
    x = batch["image"]
    with torch.no_grad():
        clean = model(x)
    if defense == "pgd-at":
        x_adv, _ = objective.inner_max(batch, batch["label"], lambda lg, y: task_loss(lg, y, BINARY, "none"),
                                       lambda v: v)
        with torch.no_grad():
            assert task_loss(model(x_adv), batch["label"], BINARY) > task_loss(clean, batch["label"], BINARY) + 0.05
    else:
        start = (x + 0.001 * torch.randn(x.shape)).clamp(0, 1)
        x_adv, _ = objective.inner_max(batch, clean, lambda lg, c: kl_per_example(c, lg, BINARY), lambda v: v + 0.001
                                       * torch.randn(v.shape))
        with torch.no_grad():
            kl_adv, kl_start = kl_per_example(clean, model(x_adv), BINARY), kl_per_example(clean, model(start), BINARY)
        assert kl_adv.mean() > 100 * kl_start.mean()
    assert (x_adv - x).abs().max() <= 4 / 255 + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    assert (x_adv - x).abs().max() > 3 / 255, "the steps should reach the boundary of the ball"


@pytest.mark.parametrize("defense", ["pgd-at", "trades"])
def test_generation_is_in_eval_mode_seeded_and_leaves_rng_and_grads_alone(data, defense):
    model = small_cnn()
    objective = PGDAT(seed=1) if defense == "pgd-at" else Trades(seed=1)
    objective = objective.objective(model, BINARY, Supervised(model, BINARY)).train()
    modes = []
    model.register_forward_pre_hook(lambda m, args: modes.append(m.training))
    rng = torch.get_rng_state()
    out = objective(batch_of(data))
    assert torch.equal(torch.get_rng_state(), rng), "adversarial generation must not draw from the global RNG"
    assert model.training and all(p.grad is None for p in model.parameters())
    steps = AdversarialTrainingParams().steps
    # pgd-at: `steps` eval-mode passes, then the loss at x_adv in train mode; trades: one more eval pass (the
    # KL's clean reference) and two train-mode passes (clean and adversarial logits)
    assert modes.count(False) == steps + (1 if defense == "trades" else 0)
    assert modes.count(True) == (2 if defense == "trades" else 1)
    out["loss"].backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    again = (PGDAT(seed=1) if defense == "pgd-at" else Trades(seed=1))
    again = again.objective(model, BINARY, Supervised(model, BINARY))
    assert torch.equal(again(batch_of(data))["loss"], out["loss"].detach()), "same seed, same adversarial loss"


def test_pgd_at_with_zero_budget_is_the_base_loss(data):
    model = small_cnn()
    base = Supervised(model, BINARY, SupervisedParams(augment=False))  # no views: the two calls draw alike
    objective = PGDAT(AdversarialTrainingParams(eps=0.0)).objective(model, BINARY, base)
    batch = batch_of(data)
    assert torch.equal(objective(batch)["loss"], base(batch)["loss"])


@pytest.mark.parametrize("defense", ["pgd-at", "trades"])
def test_image_report_model_attacks_the_image_with_the_report_fixed_and_optionally_the_report(data, defense):
    model = small_cnn(text=True)
    batch = {**batch_of(data, 8), "tokens": tokens(8)}
    cls, P = (PGDAT, AdversarialTrainingParams) if defense == "pgd-at" else (Trades, TradesParams)
    image_only = cls(P(eps=8.0), seed=0).objective(model, BINARY, Supervised(model, BINARY))
    out = image_only(batch)
    out["loss"].backward()
    assert model.text_encoder.token.weight.grad.abs().sum() > 0, "the report encoder is fine-tuned too"
    with torch.no_grad():
        clean_loss = task_loss(model(batch["image"], batch["tokens"]), batch["label"], BINARY)
    joint = cls(P(eps=8.0, report_budget=0.5), seed=0).objective(model, BINARY, Supervised(model, BINARY))
    x_adv, delta = joint.inner_max(batch, batch["label"], lambda lg, y: task_loss(lg, y, BINARY, "none"), lambda v: v)
    from medrobust.attacks.text import embedding_scale

    radius = 0.5 * embedding_scale(model.text_encoder)
    norms = delta.norm(dim=-1)  # [N, L]
    real = (batch["tokens"] != PAD) & (batch["tokens"] != CLS)
    assert norms[~real].max() == 0 and norms[real].max() <= radius * (1 + 1e-5) and norms[real].min() > 0
    with torch.no_grad():
        joint_loss = task_loss(joint.logits(x_adv, batch, delta), batch["label"], BINARY)
        image_loss = task_loss(joint.logits(x_adv, batch, None), batch["label"], BINARY)
    assert joint_loss > image_loss > clean_loss
    assert torch.isfinite(joint(batch)["loss"])
    with pytest.raises(ValueError, match="tokens"):
        image_only(batch_of(data, 8))


@pytest.mark.parametrize("defense", ["pgd-at", "trades"])
def test_multilabel_tasks_train(data, defense):
    model = small_cnn(n_out=3)
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 2, (128, 3), generator=g)
    obj = (PGDAT() if defense == "pgd-at" else Trades()).objective(model, MULTI, Supervised(model, MULTI))
    result = fit(obj, {"image": data["image"], "label": labels}, FitConfig(steps=4, batch_size=16), seed=0)
    assert len(result.losses) == 4 and all(torch.isfinite(torch.tensor(result.losses)))
    if defense == "trades":
        assert obj(batch_of({"image": data["image"], "label": labels}))["kl"] > 0


def test_bad_params_name_the_key():
    with pytest.raises(ValidationError, match="eps"):
        AdversarialTrainingParams(eps=-1)
    with pytest.raises(ValidationError, match="beta"):
        TradesParams(beta=-0.5)
