"""Is the worst case as strong as its name (issue 12, point 7)? APGD-DLR is not run twice for nothing on
two-class tasks."""

import pytest
import torch

from medrobust.data.base import Task, to_unit
from medrobust.evaluation import adversarial
from medrobust.evaluation.adversarial import (PRESETS, AttackTarget, SequenceState, build_attack, curves,
                                              sequence_steps, to_pixels, worst_case)
from medrobust.schema import Component

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
