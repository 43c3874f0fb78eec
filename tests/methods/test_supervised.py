"""The supervised objective augments its labeled batches like the self-supervised arms (the fair-comparison
fix of the augmentation confound): spied on the images the model sees during fit()."""

import pytest
import torch

from medrobust import registry
from medrobust.data.base import Task
from medrobust.data.views import ViewParams, covered_corruptions
from medrobust.defenses.adversarial_training import PGDAT, AdversarialTrainingParams
from medrobust.engine.train import FitConfig, fit
from medrobust.methods import supervised as supervised_mod
from medrobust.methods.contract import augmented_corruptions_of, info_of
from medrobust.methods.supervised import Supervised, SupervisedParams, views_first
from medrobust.models.encoders import SmallCNN
from medrobust.models.heads import Classifier

TASK = Task("binary", ("negative", "positive"))


def data(n: int = 32) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {"image": torch.rand(n, 1, 28, 28, generator=g), "label": torch.randint(0, 2, (n,), generator=g)}


def spied_model() -> tuple[Classifier, list[torch.Tensor]]:
    """A tiny classifier and the list its forward appends each training-mode input image batch to."""
    torch.manual_seed(0)
    model = Classifier(SmallCNN(1, 2, 28, [0.5], [0.25]), TASK.n_outputs)
    seen: list[torch.Tensor] = []
    model.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone()) if m.training else None)
    return model, seen


def in_raw(x: torch.Tensor, raw: torch.Tensor) -> torch.Tensor:
    """``bool [N]``: whether each image of ``x`` is (exactly) one of the raw images."""
    return (x.flatten(1)[:, None] == raw.flatten(1)[None]).all(dim=2).any(dim=1)


@pytest.mark.parametrize("augment", [True, False])
def test_training_batches_are_augmented_when_on_and_raw_when_off(augment):
    tensors = data()
    model, seen = spied_model()
    fit(Supervised(model, TASK, SupervisedParams(augment=augment), seed=3), tensors, FitConfig(steps=3, batch_size=8),
        seed=0)
    assert len(seen) == 3
    raw = in_raw(torch.cat(seen), tensors["image"])
    assert (not raw.any()) if augment else raw.all()


def test_the_views_are_seeded_and_eval_mode_is_untouched():
    batch = data(8)
    a = Supervised(spied_model()[0], TASK, seed=1).view(batch)["image"]
    assert torch.equal(a, Supervised(spied_model()[0], TASK, seed=1).view(batch)["image"])
    assert not torch.equal(a, Supervised(spied_model()[0], TASK, seed=2).view(batch)["image"])
    assert Supervised(spied_model()[0], TASK).eval().view(batch) is batch


@pytest.mark.parametrize("name", [n for n in registry.names("method")
                                  if info_of(registry.get("method", n)).self_supervised])
def test_every_counterpart_augments_with_the_ssl_view_family(name):
    """The counterpart built as the study builds it (no parameters) applies every intensity transform the arm's
    own views apply (bias-field, Robust-MMR's extra site style, has no ViewParams knob)."""
    cls = registry.get("method", name)
    counterpart = registry.get("method", info_of(cls).counterpart)
    assert counterpart.Params().augment
    assert set(augmented_corruptions_of(cls, cls.Params())) - {"bias-field"} <= \
        set(augmented_corruptions_of(counterpart, counterpart.Params()))


def test_augmented_corruptions_follow_the_views():
    assert augmented_corruptions_of(Supervised, SupervisedParams()) == sorted(covered_corruptions(ViewParams()))
    assert augmented_corruptions_of(Supervised, SupervisedParams(augment=False)) == []
    quiet = ViewParams(gamma=1.0, contrast=0.0, brightness=0.0, blur_p=0.0, noise_p=0.0)
    assert covered_corruptions(quiet) == []
    assert covered_corruptions(quiet.model_copy(update={"noise_p": 0.1})) == ["gaussian-noise"]
    assert covered_corruptions(quiet.model_copy(update={"gamma": 1.2, "blur_p": 0.5})) == ["gaussian-blur", "gamma", "gamma-down"]


def test_adversarial_training_attacks_the_augmented_image_and_views_are_drawn_once(monkeypatch):
    """Behind a defense, the views come first (Madry et al. augment, then attack) and are not redrawn on x_adv."""
    calls = []
    real = supervised_mod.random_view
    monkeypatch.setattr(supervised_mod, "random_view", lambda x, p, g: calls.append(1) or real(x, p, g))
    model, seen = spied_model()
    base = Supervised(model, TASK, seed=0)
    defense = PGDAT(AdversarialTrainingParams(eps=8.0, steps=2), seed=0)
    objective = views_first(base, defense.objective(model, TASK, base))
    batch = data(8)
    objective.train()
    objective(batch)
    assert len(calls) == 1, "one view per batch, drawn before the attack"
    view = Supervised(spied_model()[0], TASK, seed=0).view(batch)["image"]  # the same view, same seed
    trained_on = seen[-1]
    assert (trained_on - view).abs().max() <= 8.0 / 255 + 1e-6, "x_adv lies around the augmented image"
    assert not torch.equal(trained_on, view)
    assert views_first(base, base) is base  # a defense that keeps the objective: the objective augments itself
