"""Is the worst case as strong as its name (issue 12, point 7)? APGD-DLR is not run twice for nothing on
two-class tasks, a budget too small for the model is caught by the convergence check, and the large-ε check
needs an attack that actually breaks the model (or proof that the image cannot move it)."""

import pytest
import torch

from medrobust.data.base import Task, to_unit
from medrobust.evaluation import adversarial, checks
from medrobust.evaluation.adversarial import (PRESETS, AttackTarget, SequenceState, build_attack, curves,
                                              sequence_steps, to_pixels, worst_case)
from medrobust.schema import Component
from conftest import GradientMasked

BINARY, MULTICLASS = Task("binary", ("normal", "abnormal")), Task("multiclass", ("a", "b", "c"))


@pytest.fixture(scope="module")
def target(trained_classifier):
    model, x, y, task = trained_classifier
    assert task.n_outputs == 2
    images = (x[:120] * 255).round().to(torch.uint8).numpy()
    return AttackTarget(model, images, y[:120].numpy(), task, batch_size=64)


def _x_adv(step, target, eps=2 / 255, seed=0):
    x, y = to_unit(target.images), torch.as_tensor(target.labels)
    return build_attack(step.spec)(target.model, x, y, eps=eps, task=target.task,
                                   generator=torch.Generator().manual_seed(seed + step.seed_offset))


def test_apgd_dlr_retraces_apgd_ce_on_two_classes(target):
    """Why it is replaced: from the same start the binary margin loss and CE take the same sign steps."""
    same_start = [adversarial.Step("a", Component(name="apgd-ce", params={"steps": 5})),
                  adversarial.Step("b", Component(name="apgd-dlr", params={"steps": 5}))]
    a, b = (_x_adv(s, target) for s in same_start)
    assert (a == b).flatten(1).all(dim=1).float().mean() >= 0.9


def test_two_class_sequence_runs_no_attack_twice_for_nothing(target):
    for preset in ("standard", "autoattack"):
        steps = sequence_steps(PRESETS[preset], BINARY)
        assert [s.spec.name for s in steps] == ["apgd-ce", "apgd-ce", "square"]
        assert [s.label for s in steps] == ["apgd-ce", "apgd-ce-restarts", "square"]
        extra = steps[1].spec.params
        assert extra["restarts"] == adversarial.BINARY_RESTARTS and "n_target_classes" not in extra
        assert extra["steps"] == PRESETS[preset][1].params["steps"]
        assert len({s.seed_offset for s in steps[:2]}) == 2, "the extra runs start elsewhere"
    first, extra = (_x_adv(s, target) for s in sequence_steps(PRESETS["standard"], BINARY)[:2])
    assert (first != extra).flatten(1).any(dim=1).float().mean() >= 0.9, "no two attacks give the same x_adv"
    # the multiclass sequence is untouched (its targeted DLR adds what CE does not)
    assert [(s.label, s.spec, s.seed_offset) for s in sequence_steps(PRESETS["standard"], MULTICLASS)] == \
        [(s.name, s, 0) for s in PRESETS["standard"]]


def test_worst_case_on_a_two_class_task_never_builds_apgd_dlr(target, monkeypatch):
    built, real = [], adversarial.build_attack
    monkeypatch.setattr(adversarial, "build_attack", lambda spec: built.append(spec) or real(spec))
    per = curves(target, [Component(name="fgsm")], [0.0, 1.0], seed=0)
    built.clear()
    worst, broke = worst_case(target, per, [0.0, 1.0], PRESETS["standard"], 0, SequenceState(None, "m"))
    assert [s.name for s in built] == ["apgd-ce", "apgd-ce", "square"]
    assert set(broke) == {"apgd-ce", "apgd-ce-restarts", "square"}


def _convergence(target, sequence, eps=2.0):
    weak = [Component(name="pgd", params={"steps": 1})]  # curves that leave the work to the sequence
    per = curves(target, weak, [0.0, eps], seed=0)
    worst, _ = worst_case(target, per, [0.0, eps], sequence, 0, SequenceState(None, "m"))
    strongest = adversarial.strongest_gradient_attack(sequence_steps(sequence, target.task), weak)
    after = adversarial.convergence(target, worst[eps], strongest, eps, 0)
    return checks.attack_converged(float(worst[eps].mean()), float(after.mean()), eps, len(target.labels),
                                   adversarial.describe(adversarial.reinforced(strongest)))


def test_convergence_check_flags_a_budget_too_small(target):
    """PGD-1 (measured: 0.53 at 2/255, PGD-20 0.10): doubling it to 2 steps × 2 runs already drops > 1 pp."""
    check = _convergence(target, [Component(name="pgd", params={"steps": 1})])
    assert not check["passed"], check
    assert "pgd (2 steps × 2 runs)" in check["detail"] and "attack budget too small" in check["detail"]


def test_convergence_check_passes_a_converged_budget(target):
    check = _convergence(target, [Component(name="apgd-ce", params={"steps": 10})])
    assert check["passed"] and "apgd-ce (20 steps × 2 runs)" in check["detail"], check


def test_strongest_gradient_attack_and_its_reinforcement():
    ce, pgd20 = Component(name="apgd-ce", params={"steps": 10}), Component(name="pgd", params={"steps": 20})
    steps = sequence_steps([Component(name="square"), ce], BINARY)
    assert adversarial.strongest_gradient_attack(steps, [pgd20]) == ce  # AutoAttack's lead attack first
    assert adversarial.strongest_gradient_attack([], [Component(name="fgsm"), pgd20,
                                                      Component(name="pgd", params={"steps": 5})]) == pgd20
    assert adversarial.strongest_gradient_attack([], [Component(name="fgsm")]) is None
    assert adversarial.reinforced(ce).params == {"steps": 20, "restarts": 2}
    assert adversarial.reinforced(Component(name="pgd")).params == {"steps": 20, "restarts": 2}


class _BoundedImageInfluence(torch.nn.Module):
    """A fixed report bias that the (squashed) image evidence cannot overturn: no ε can flip the decision."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        logits = torch.tanh(self.model(x)) * 0.1  # image evidence bounded to ±0.1
        return logits + torch.tensor([0.0, 1.0])  # the report pathway votes class 1 by a margin of 1


def _large_eps_check(target, gradient_free):
    acc, free, strong = adversarial.large_eps_accuracies(target, 128, 0, gradient_free)
    return checks.large_eps_breaks(acc, 128, "", free, strong), (acc, free, strong)


def test_large_eps_check_passes_a_healthy_cnn(target):
    check, (acc, free, strong) = _large_eps_check(target, gradient_free=True)
    assert check["passed"] and acc < 0.05 and free is None and strong is None, check


def test_large_eps_check_fails_masked_gradients(target):
    masked = AttackTarget(GradientMasked(target.model), target.images, target.labels, target.task, batch_size=64)
    for gradient_free in (False, True):  # image-only, and image pathway of an image+text model
        check, (acc, free, _) = _large_eps_check(masked, gradient_free)
        assert not check["passed"] and "gradient masking" in check["detail"], check
    assert free < acc - 0.2  # Square breaks what masked gradients hide


def test_large_eps_check_passes_bounded_image_influence_with_the_note(target):
    bounded = AttackTarget(_BoundedImageInfluence(target.model), target.images, target.labels, target.task,
                           batch_size=64)
    check, (acc, free, strong) = _large_eps_check(bounded, gradient_free=True)
    assert acc > 0.2 and strong is not None and strong >= acc - 0.02  # the 1000-query Square moved nothing either
    assert check["passed"] and "bounded image influence" in check["detail"] and "1000-query" in check["detail"]
    assert not _large_eps_check(bounded, gradient_free=False)[0]["passed"]  # image-only: no such excuse
