"""APGD-CE/DLR, Square and PGD-L2: budgets, ε=0, strength vs PGD, the paper's formulas, gradient masking,
automatic EOT, multilabel targets, mode/grad hygiene and input checks."""

import pytest
import torch
from torch import nn

from medrobust import registry
from medrobust.attacks.apgd import (apgd_checkpoints, binary_margin_loss, dlr_loss, dlr_loss_targeted,
                                    multilabel_margin_loss)
from medrobust.attacks.base import AttackInputError
from medrobust.attacks.square import p_schedule
from medrobust.data.base import Task
from medrobust.evaluation.metrics import per_example_accuracy
from conftest import GradientMasked

FAST = {"apgd-ce": {"steps": 10}, "apgd-dlr": {"steps": 10}, "square": {"n_queries": 50}}
# (name, params, norm, budgets): L2 budgets are in the same [0, 1] pixel units, larger than L∞ ones
ATTACKS = [("fgsm", {}, "linf", [2 / 255, 8 / 255]),
           ("pgd", {}, "linf", [2 / 255, 8 / 255]),
           ("pgd", {"norm": "l2"}, "l2", [0.1, 1.0]),
           ("apgd-ce", {}, "linf", [2 / 255, 8 / 255]),
           ("apgd-ce", {"norm": "l2"}, "l2", [0.1, 1.0]),
           ("apgd-dlr", {}, "linf", [2 / 255, 8 / 255]),
           ("apgd-dlr", {"norm": "l2"}, "l2", [0.1, 1.0]),
           ("square", {}, "linf", [2 / 255, 8 / 255])]
CASES = [(n, p, norm, e) for n, p, norm, eps in ATTACKS for e in eps]
ID = [f"{n}-{norm}-{e:.3g}" for n, p, norm, e in CASES]


def attack(name, **params):
    cls = registry.get("attack", name)
    return cls(cls.Params(**{**FAST.get(name, {}), **params}))


def accuracy(model, x, y, task):
    with torch.no_grad():
        return per_example_accuracy(model(x), y, task).mean().item()


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_new_attacks_are_registered_with_strict_params():
    assert {"apgd-ce", "apgd-dlr", "square", "pgd"} <= set(registry.names("attack"))
    for name in ("apgd-ce", "apgd-dlr", "square", "pgd"):
        with pytest.raises(Exception, match="extra"):
            registry.get("attack", name).Params(bogus=1)
    assert registry.get("attack", "apgd-dlr").Params().n_target_classes == 9
    assert registry.get("attack", "pgd")(registry.get("attack", "pgd").Params(norm="l2")).norm == "l2"


@pytest.mark.parametrize("name,params,norm,eps", CASES, ids=ID)
def test_budget_range_shape_dtype(trained_classifier, name, params, norm, eps):
    model, x, y, task = trained_classifier
    x, y = x[:48], y[:48]
    x_before = x.clone()
    x_adv = attack(name, **params)(model, x, y, eps=eps, task=task, generator=gen())
    assert torch.equal(x, x_before), "the clean input must not be modified in place"
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    d = (x_adv - x).flatten(1)
    size = d.abs().max(dim=1).values if norm == "linf" else d.norm(dim=1)  # [N]
    assert size.max().item() <= eps + 1e-6, f"{name} left its {norm} ball: {size.max().item()} > {eps}"
    assert x_adv.min().item() >= 0.0 and x_adv.max().item() <= 1.0
    assert (x_adv != x).any(), "a non-zero budget must change the input"


@pytest.mark.parametrize("name,params", [(n, p) for n, p, _, _ in ATTACKS], ids=[f"{n}-{no}" for n, _, no, _ in ATTACKS])
def test_eps_zero_is_identity(trained_classifier, name, params):
    model, x, y, task = trained_classifier
    x_adv = attack(name, **params)(model, x[:32], y[:32], eps=0.0, task=task, generator=gen(1))
    assert torch.equal(x_adv, x[:32])


def test_pgd_l2_projects_around_clean_input_with_large_step(trained_classifier):
    model, x, y, task = trained_classifier
    x_adv = attack("pgd", norm="l2", steps=20, step_size=3.0)(model, x[:32], y[:32], eps=0.3, task=task)
    assert (x_adv - x[:32]).flatten(1).norm(dim=1).max().item() <= 0.3 + 1e-6


@pytest.mark.parametrize("eps", [1 / 255, 2 / 255])
@pytest.mark.parametrize("name", ["apgd-ce", "apgd-dlr"])
def test_apgd_at_least_as_strong_as_pgd(trained_classifier, name, eps):
    model, x, y, task = trained_classifier
    pgd = accuracy(model, attack("pgd", steps=10)(model, x, y, eps=eps, task=task, generator=gen()), y, task)
    apgd = accuracy(model, attack(name, steps=10)(model, x, y, eps=eps, task=task, generator=gen()), y, task)
    clean = accuracy(model, x, y, task)
    assert apgd < clean - 0.2, f"{name} should break the undefended model at {eps * 255:.0f}/255"
    assert apgd <= pgd + 1 / len(x) + 1e-9, f"{name} {apgd:.4f} weaker than PGD {pgd:.4f}"


def test_apgd_checkpoints_follow_the_paper():
    # p = 0, .22, .41, .57, .70, .80, .87, .93, .99 (then 1.05 > 1); w_j = ceil(p_j * N)
    assert apgd_checkpoints(100) == [0, 22, 41, 57, 70, 80, 87, 93, 99]
    assert apgd_checkpoints(10) == [0, 3, 5, 6, 7, 8, 9, 10]
    assert apgd_checkpoints(1000)[:4] == [0, 220, 410, 570]


def test_dlr_losses_match_their_formulas():
    z = torch.tensor([[3.0, 1.0, 0.5, -1.0], [0.2, -0.4, 2.0, 1.0]])
    y, t = torch.tensor([1, 2]), torch.tensor([2, 3])
    # untargeted: -(z_y - max_{i!=y} z_i) / (z_pi1 - z_pi3)
    expected = torch.tensor([-(1.0 - 3.0) / (3.0 - 0.5), -(2.0 - 1.0) / (2.0 - 0.2)])
    assert torch.allclose(dlr_loss(z, y), expected)
    # targeted: -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)
    expected_t = torch.tensor([-(1.0 - 0.5) / (3.0 - (0.5 - 1.0) / 2), -(2.0 - 1.0) / (2.0 - (0.2 - 0.4) / 2)])
    assert torch.allclose(dlr_loss_targeted(z, y, t), expected_t)
    # random rows against a direct per-row computation
    g = gen(5)
    z, y, t = torch.randn(16, 6, generator=g), torch.randint(0, 6, (16,), generator=g), torch.randint(0, 6, (16,), generator=g)
    for i in range(16):
        s = sorted(z[i].tolist(), reverse=True)
        other = max(v for j, v in enumerate(z[i].tolist()) if j != y[i])
        assert dlr_loss(z, y)[i].item() == pytest.approx(-(z[i, y[i]].item() - other) / (s[0] - s[2]), rel=1e-5)
        assert dlr_loss_targeted(z, y, t)[i].item() == pytest.approx(
            -(z[i, y[i]].item() - z[i, t[i]].item()) / (s[0] - 0.5 * (s[2] + s[3])), rel=1e-5)
    assert torch.allclose(binary_margin_loss(torch.tensor([[2.0, -1.0]]), torch.tensor([0])), torch.tensor([-3.0]))
    ml = multilabel_margin_loss(torch.tensor([[2.0, -1.0, 0.5]]), torch.tensor([[1, 1, 1]]))
    # s_k = (1 - 2y_k) z_k = [-2, 1, -0.5]: the still-correct findings 1 and 3 count, flipped finding 2 gives 0
    assert torch.allclose(ml, torch.tensor([-2.5]))


def test_square_schedule_halves_p_at_rescaled_iterations():
    assert p_schedule(0, 10000, 0.8) == 0.8 and p_schedule(11, 10000, 0.8) == 0.4
    assert p_schedule(600, 10000, 0.8) == 0.8 / 16 and p_schedule(9000, 10000, 0.8) == 0.8 / 512
    assert p_schedule(2, 1000, 0.8) == 0.4  # 2/1000 of the budget = iteration 20 of 10 000


def test_square_breaks_a_gradient_masked_model(trained_classifier):
    model, x, y, task = trained_classifier
    masked, eps = GradientMasked(model).eval(), 4 / 255
    clean = accuracy(model, x, y, task)
    pgd = accuracy(model, attack("pgd")(masked, x, y, eps=eps, task=task, generator=gen()), y, task)
    square = accuracy(model, attack("square", n_queries=100)(masked, x, y, eps=eps, task=task, generator=gen()),
                      y, task)
    assert pgd >= clean - 0.05, f"masked gradients should stop PGD: {pgd:.3f} vs clean {clean:.3f}"
    assert square <= clean - 0.2, f"Square (no gradients) should still break it: {square:.3f} vs {clean:.3f}"


class _NoisyGrad(torch.autograd.Function):
    """Identity forward; backward flips each pixel's gradient sign on half the passes (×3 otherwise), so one
    pass gives a random sign per pixel while the expectation (what EOT estimates) is the true gradient."""

    @staticmethod
    def forward(ctx, x, generator):
        ctx.generator = generator
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g):
        flip = torch.rand(g.shape, generator=ctx.generator) < 0.5
        return torch.where(flip, -g, 3 * g), None


class RandomizedGrad(nn.Module):
    randomized = True
    eot_samples = 8

    def __init__(self, model):
        super().__init__()
        self.model, self.generator = model, gen(0)

    def forward(self, x):
        return self.model(_NoisyGrad.apply(x, self.generator))


@pytest.mark.parametrize("name", ["pgd", "apgd-ce"])
def test_eot_is_used_automatically_for_randomized_models(trained_classifier, name):
    model, x, y, task = trained_classifier
    x, y, eps, noisy = x[:64], y[:64], 2 / 255, RandomizedGrad(model).eval()
    steps = {"steps": 5}
    auto = accuracy(model, attack(name, **steps)(noisy, x, y, eps=eps, task=task, generator=gen()), y, task)
    single = accuracy(model, attack(name, eot_samples=1, **steps)(noisy, x, y, eps=eps, task=task, generator=gen()),
                      y, task)
    assert auto <= single - 0.3, f"EOT (automatic) {auto:.3f} should beat one sample {single:.3f}"


def _linear_multilabel():
    task = Task("multilabel", ("a", "b", "c"))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    with torch.no_grad():
        model[1].bias.zero_()
    x = torch.rand(32, 1, 4, 4)
    with torch.no_grad():
        y = (model(x) > 0).long()  # labels the model gets right
    return model, x, y, task


@pytest.mark.parametrize("name", ["apgd-ce", "apgd-dlr", "square"])
def test_multilabel_attacks_flip_finding_decisions(name):
    model, x, y, task = _linear_multilabel()
    params = {"n_queries": 200} if name == "square" else {"steps": 20}
    x_adv = attack(name, **params)(model, x, y, eps=0.5, task=task, generator=gen())
    assert (x_adv - x).abs().max().item() <= 0.5 + 1e-6
    assert accuracy(model, x_adv, y, task) < 0.5


def test_apgd_dlr_runs_every_target_class_and_keeps_the_worst_case():
    """Class 1 is always the runner-up but can never overtake class 0 (same weights, lower bias); class 2,
    third at the clean point, can. Targeting only the runner-up must fail; adding target 2 must succeed."""
    task = Task("multiclass", tuple("abcde"))
    g = gen(2)
    w, v = torch.randn(16, generator=g), torch.randn(16, generator=g).sign()
    linear = nn.Linear(16, 5)
    with torch.no_grad():
        linear.weight.copy_(torch.stack([w, w, w + v, w - v, w - v]))
        linear.bias.copy_(torch.tensor([0.0, -0.1, -0.5 * v.sum().item() - 1.0, -10.0, -10.0]))
    model = nn.Sequential(nn.Flatten(), linear)
    x = torch.rand(256, 1, 4, 4, generator=g)
    with torch.no_grad():
        order = model(x).argsort(dim=1, descending=True)[:, :3]
    x = x[(order == torch.tensor([0, 1, 2])).all(dim=1)]  # clean ranking 0 > 1 > 2
    y = torch.zeros(len(x), dtype=torch.long)
    acc = {k: accuracy(model, attack("apgd-dlr", n_target_classes=k)(model, x, y, eps=0.1, task=task,
                                                                     generator=gen()), y, task)
           for k in (1, 2, 4)}
    assert acc[1] >= 0.9, acc  # the runner-up is unreachable
    assert acc[2] <= acc[1] - 0.3 and acc[4] <= acc[2], acc


def test_square_on_volumes_uses_cubes_and_rejects_other_shapes():
    task = Task("binary", ("n", "y"))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(6 * 6 * 6, 2))
    x = torch.rand(16, 1, 6, 6, 6)
    with torch.no_grad():
        y = model(x).argmax(dim=1)
    x_adv = attack("square", n_queries=100)(model, x, y, eps=0.1, task=task, generator=gen())
    assert (x_adv - x).abs().max().item() <= 0.1 + 1e-6 and accuracy(model, x_adv, y, task) < 1.0
    with pytest.raises(NotImplementedError, match=r"\(16, 216\)"):
        attack("square")(model, x.flatten(1), y, eps=0.1, task=task)


class ModeRecorder(nn.Module):
    """Records ``self.training`` at every forward pass."""

    def __init__(self, model):
        super().__init__()
        self.model, self.modes = model, []

    def forward(self, x):
        self.modes.append(self.training)
        return self.model(x)


@pytest.mark.parametrize("name,params", [("apgd-ce", {}), ("apgd-dlr", {"norm": "l2"}), ("square", {}),
                                         ("pgd", {"norm": "l2"})])
def test_eval_mode_during_attack_restored_after_and_param_grads_untouched(trained_classifier, name, params):
    model, x, y, task = trained_classifier
    recorder = ModeRecorder(model)
    recorder.zero_grad(set_to_none=True)
    recorder.train()
    try:
        attack(name, **params)(recorder, x[:8], y[:8], eps=1 / 255, task=task)
        assert recorder.modes and not any(recorder.modes), "the model must be in eval mode during the attack"
        assert recorder.training and model.training, "attack must restore train mode"
        assert all(p.grad is None for p in model.parameters()), "attacks must not accumulate parameter gradients"
    finally:
        model.eval()
    recorder.eval()
    attack(name, **params)(recorder, x[:8], y[:8], eps=1 / 255, task=task)
    assert not recorder.training


@pytest.mark.parametrize("name", ["apgd-ce", "apgd-dlr", "square"])
def test_bad_inputs_are_rejected(trained_classifier, name):
    model, x, y, task = trained_classifier
    with pytest.raises(AttackInputError, match=r"\[0, 1\]"):
        attack(name)(model, x[:4] * 255, y[:4], eps=1 / 255, task=task)
    bad = x[:4].clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(AttackInputError, match="NaN"):
        attack(name)(model, bad, y[:4], eps=1 / 255, task=task)
    with pytest.raises(AttackInputError, match="eps"):
        attack(name)(model, x[:4], y[:4], eps=-1.0, task=task)


def test_square_on_an_image_report_model_queries_each_example_with_its_own_report():
    """Square attacks the examples not yet fooled: the bound report features must follow that subset."""
    from medrobust import registry
    from medrobust.models.heads import Classifier, FixedReport
    from medrobust.models.text import TextTransformer

    torch.manual_seed(0)
    model = Classifier(registry.get("encoder", "cnn")(1, 2, 28, [0.5], [0.25]), 2, TextTransformer(50)).eval()
    x, tokens = torch.rand(12, 1, 28, 28), torch.randint(4, 50, (12, 8))
    fixed = FixedReport(model, tokens)
    y = fixed(x).argmax(1)  # every example starts correct
    y[:4] = 1 - y[:4]  # ... except four, so the first query leaves a strict subset active
    square = registry.get("attack", "square")(registry.get("attack", "square").Params(n_queries=30))
    x_adv = square(fixed, x, y, eps=64 / 255, task=Task("binary", ("a", "b")), generator=torch.Generator().manual_seed(0))
    assert (x_adv - x).abs().max() <= 64 / 255 + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    sub = fixed.select(torch.tensor([5, 7]))
    assert torch.allclose(sub(x[[5, 7]]), model(x[[5, 7]], tokens[[5, 7]]), atol=1e-6)
