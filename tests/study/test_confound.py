"""The study's side of the augmentation confound, on a tiny grid.

* the fine-tuning batches of a self-supervised arm's counterpart are augmented; ``supervised(augment=False)``
  trains on the raw images (spied on the images the classifier sees inside ``fit``);
* the record lists the corruptions the arm's augmentations cover, and names ``mae`` on a CNN SimMIM-style.
"""

import pytest
import torch

import medrobust.study.context as context_mod
from conftest import tiny_overrides
from medrobust.config import load_config
from medrobust.data.base import to_unit
from medrobust.study.prepare import prepare
from medrobust.study.runner import execute
from medrobust.study.spec import expand

#: what the default views apply: five corruptions, three of them in both directions
FIVE = ["brightness", "brightness-down", "contrast", "contrast-up", "gamma", "gamma-down", "gaussian-blur",
        "gaussian-noise"]


def tiny(tmp_path, *more: str):
    cfg = load_config("configs/quick.yaml", tiny_overrides(tmp_path) + ["seeds=[0]", "label_fractions=[1.0]",
                                                                        "evaluation.worst_case=[]", *more])
    return cfg, prepare(cfg)


def spy_on_fit(monkeypatch) -> list[dict]:
    """Each fit() of the study: the tensors it got, and the images its classifier saw in training mode."""
    calls, real = [], context_mod.fit

    def spy(method, tensors, fit_cfg, **kw):
        seen = []
        model = getattr(method, "model", None)
        hook = None if model is None else model.register_forward_pre_hook(
            lambda m, args: seen.append(args[0].detach().clone()) if m.training else None)
        try:
            return real(method, tensors, fit_cfg, **kw)
        finally:
            calls.append({"method": type(method).__name__, "tensors": tensors, "seen": seen})
            if hook is not None:
                hook.remove()

    monkeypatch.setattr(context_mod, "fit", spy)
    return calls


def raw_share(seen: list[torch.Tensor], images: torch.Tensor) -> float:
    """The share of the seen images that are exactly one of the raw training images."""
    x, raw = torch.cat(seen).flatten(1), to_unit(images).flatten(1)
    return (x[:, None] == raw[None]).all(dim=2).any(dim=1).float().mean().item()


def test_counterpart_batches_are_augmented_and_the_ablation_trains_on_raw_images(tmp_path, monkeypatch):
    cfg, data = tiny(tmp_path, "methods=[simclr, {name: supervised, augment: false}]")
    calls = spy_on_fit(monkeypatch)
    records = {}
    for run in expand(cfg, data.has_text)[0]:
        records[run.arm] = execute(run, cfg, data, torch.device("cpu"), tmp_path, log=lambda _m: None)
    ssl_ft, plain = [c for c in calls if c["method"] == "Supervised"]  # simclr's fine-tuning, then the ablation
    assert ssl_ft["seen"] and plain["seen"]
    assert raw_share(ssl_ft["seen"], ssl_ft["tensors"]["image"]) == 0.0, "simclr's fine-tuning saw raw images"
    assert raw_share(plain["seen"], plain["tensors"]["image"]) == 1.0, "augment=false still augmented"
    assert records["simclr"].augmented == FIVE  # pre-training views ∪ the counterpart's fine-tuning views
    assert records["supervised(augment=False)"].augmented == []
    assert records["supervised(augment=False)"].display_name == "Supervised"
    assert "jpeg" not in FIVE  # the default study's corruptions include one no augmentation covers
    from medrobust.corruptions.sets import corruption_set

    assert load_config("configs/quick.yaml").evaluation.corruptions == "auto"
    assert "jpeg" in corruption_set("X-ray", (1, 28, 28))  # what auto gives the synthetic chest X-rays


def test_mae_on_the_cnn_is_recorded_as_simmim_style(tmp_path):
    cfg, data = tiny(tmp_path, "methods=[mae]")
    (run,), _ = expand(cfg, data.has_text)
    record = execute(run, cfg, data, torch.device("cpu"), tmp_path, log=lambda _m: None)
    assert record.display_name == "SimMIM-style masked image modelling (MAE on a CNN)"
    assert record.augmented == FIVE  # mae's own views are geometric only; the counterpart's fine-tuning adds these
