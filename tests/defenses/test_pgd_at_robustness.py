"""PGD-AT raises PGD-10 robust accuracy at ε = 2/255 over the same model fine-tuned without it (synthetic data)."""

import copy

import numpy as np
import torch

from medrobust import registry
from medrobust.data.base import to_unit
from medrobust.engine.train import FitConfig, fit
from medrobust.evaluation.metrics import per_example_accuracy
from medrobust.methods.supervised import Supervised
from medrobust.models.encoders import CNNParams, SmallCNN
from medrobust.models.heads import Classifier
from medrobust.models.layers import image_stats


def test_pgd_at_beats_clean_finetuning_under_pgd(synthetic_small):
    ds = synthetic_small
    torch.manual_seed(0)
    mean, std = image_stats(ds.train.images)
    init = Classifier(SmallCNN(1, 2, 28, mean, std, CNNParams(width=8, depth=4)), ds.task.n_outputs)
    tensors = {"image": torch.as_tensor(ds.train.images), "label": torch.as_tensor(ds.train.labels)}
    cfg = FitConfig(steps=150, batch_size=64, lr=3e-3)
    x, y = to_unit(ds.test.images), torch.as_tensor(ds.test.labels)
    pgd = registry.get("attack", "pgd")(registry.get("attack", "pgd").Params(steps=10))
    majority = np.bincount(ds.test.labels).max() / len(ds.test.labels)

    results = {}
    for name in ("none", "pgd-at"):
        model = copy.deepcopy(init)
        base = Supervised(model, ds.task)
        defense = registry.get("defense", name)(seed=0) if name != "none" else None
        fit(defense.objective(model, ds.task, base) if defense else base, tensors, cfg, seed=0)
        model.eval()
        x_adv = pgd(model, x, y, eps=2 / 255, task=ds.task, generator=torch.Generator().manual_seed(0))
        assert (x_adv - x).abs().max() <= 2 / 255 + 1e-6
        with torch.no_grad():
            results[name] = {"clean": float(per_example_accuracy(model(x), y, ds.task).mean()),
                             "pgd": float(per_example_accuracy(model(x_adv), y, ds.task).mean())}
    # measured (CPU, torch 2.13): none clean 0.78 / PGD 0.18; pgd-at clean 0.68 / PGD 0.59 (~20 s on a loaded machine)
    for name, r in results.items():
        assert r["clean"] >= majority + 0.05, f"{name} did not learn ({r} vs majority {majority:.3f})"
    assert results["pgd-at"]["pgd"] >= results["none"]["pgd"] + 0.10, results
