"""Every registered defense follows the contract the study relies on (defenses/base.py)."""

import inspect

import pytest
import torch
from pydantic import ValidationError

from medrobust import registry
from medrobust.data.base import Task
from medrobust.defenses.base import DefenseInputError, NoiseSource, check_images
from medrobust.methods.supervised import Supervised
from medrobust.models.encoders import CNNParams, SmallCNN
from medrobust.models.heads import Classifier

NAMES = registry.names("defense")
TASK = Task("binary", ("normal", "abnormal"))


def test_issue_names_are_registered():
    assert {"pgd-at", "trades"} <= set(NAMES)
    assert len([n for n in NAMES if "noise" in n]) == 3 and len([n for n in NAMES if "purif" in n]) == 1


@pytest.mark.parametrize("name", NAMES)
def test_defense_surface(name):
    cls = registry.get("defense", name)
    assert cls.kind in ("training", "model")
    assert cls.kind == ("training" if name in ("pgd-at", "trades") else "model")
    with pytest.raises(ValidationError, match="not_a_param"):
        cls.Params(not_a_param=1)
    defense = cls(None, seed=3)
    assert isinstance(defense.randomized, bool) and defense.seed == 3
    # wrap sees the classifier, unlabeled images and the device: no label can reach it
    assert list(inspect.signature(defense.wrap).parameters) == ["classifier", "images", "device"]
    assert list(inspect.signature(defense.objective).parameters) == ["model", "task", "base"]
    if name in ("input-noise", "attention-noise", "fusion-noise"):
        assert defense.randomized and cls.Params().eot_samples == 8


@pytest.mark.parametrize("name", ["pgd-at", "trades"])
def test_training_defenses_leave_the_model_alone(name):
    model = Classifier(SmallCNN(1, 2, 28, [0.5], [0.25], CNNParams(width=8, depth=2)), 2)
    defense = registry.get("defense", name)()
    assert defense.wrap(model, torch.rand(4, 1, 28, 28), "cpu") is model
    base = Supervised(model, TASK)
    assert defense.objective(model, TASK, base) is not base


def test_wrong_params_type_and_bad_images_are_clear_errors():
    cls = registry.get("defense", "trades")
    with pytest.raises(DefenseInputError, match="TradesParams"):
        cls(registry.get("defense", "input-noise").Params())
    with pytest.raises(DefenseInputError, match=r"in \[0, 1\]"):
        check_images(torch.full((2, 1, 4, 4), 3.0), "purifier")
    with pytest.raises(DefenseInputError, match="shape"):
        check_images(torch.rand(4, 4), "purifier")
    with pytest.raises(DefenseInputError, match="dtype"):
        check_images(torch.ones(2, 1, 4, 4, dtype=torch.int64), "purifier")
    ok = torch.full((1, 1, 2, 2), 255, dtype=torch.uint8)
    assert check_images(ok, "purifier") is ok


def test_noise_source_is_seeded_and_leaves_the_global_rng_alone():
    state = torch.get_rng_state()
    a, b = NoiseSource(7), NoiseSource(7)
    x = torch.zeros(3, 5)
    draws = a.randn(x.shape, x)
    assert torch.equal(draws, b.randn(x.shape, x)) and not torch.equal(draws, a.randn(x.shape, x))
    a.reset()
    assert torch.equal(a.randn(x.shape, x), draws)
    u = a.rand((1000,), x)
    assert 0 <= float(u.min()) and float(u.max()) < 1 and abs(float(u.mean()) - 0.5) < 0.05
    assert torch.equal(torch.get_rng_state(), state)
