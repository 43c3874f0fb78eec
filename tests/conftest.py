"""Shared fixtures: a tiny study config and a small trained classifier on the synthetic data."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(autouse=True, scope="session")
def _allocator():
    """The product's allocator setting (study.runner sets it before a study) in every test process."""
    from medrobust.engine.allocator import retain_freed_memory

    retain_freed_memory()


@pytest.fixture(autouse=True, scope="session")
def _image_cache(tmp_path_factory):
    """Decoded-image cache in a temporary folder, never the user's ~/.cache."""
    import os

    old = os.environ.get("MEDROBUST_CACHE")
    os.environ["MEDROBUST_CACHE"] = str(tmp_path_factory.mktemp("image-cache"))
    yield
    if old is None:
        os.environ.pop("MEDROBUST_CACHE", None)
    else:
        os.environ["MEDROBUST_CACHE"] = old


def tiny_overrides(out_dir: Path) -> list[str]:
    """CLI overrides that shrink the default study to seconds (same code paths, smaller numbers)."""
    return [f"output_dir={out_dir}", "name=tiny", "data.n_per_site=45", "seeds=[0,1]", "label_fractions=[0.5,1.0]",
            "pretrain.steps=4", "pretrain.batch_size=32", "finetune.steps=4", "finetune.batch_size=16",
            "evaluation.epsilons=[0,2,8]", "evaluation.attacks=[fgsm,{name: pgd, steps: 3}]",
            "evaluation.corruptions=[gaussian-noise]", "evaluation.severities=[1,5]",
            "evaluation.max_adversarial=20", "evaluation.worst_case_epsilons=[2]", "device=cpu", "methods=[supervised, supervised-multimodal, simclr, clip]",
            "multimodal.fusion=null", "multimodal.tasks=[]",
            "evaluation.report_attacks=[{name: report-word-substitution, budgets: [1]}]",
            "evaluation.evaluate_failed=true"]  # tiny budgets may not beat chance; the tests need every phase


class _ZeroGrad(torch.autograd.Function):
    """Identity forward, zero backward: hides gradients without changing predictions."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        return torch.zeros_like(g)


class GradientMasked(torch.nn.Module):
    """``model`` with its input gradients masked (for gradient-masking checks and gradient-free attacks)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(_ZeroGrad.apply(x))


@pytest.fixture(scope="session")
def synthetic_small():
    from medrobust.data.synthetic import SyntheticParams, load_synthetic

    return load_synthetic(SyntheticParams(n_per_site=180, seed=3))


@pytest.fixture(scope="session")
def trained_classifier(synthetic_small):
    """A small CNN trained for a few seconds on synthetic 'abnormal' (sites A-D mixed): clearly above chance."""
    from medrobust.data.base import to_unit
    from medrobust.engine.train import FitConfig, fit
    from medrobust.methods.supervised import Supervised, SupervisedParams
    from medrobust.models.encoders import SmallCNN
    from medrobust.models.heads import Classifier
    from medrobust.models.layers import image_stats

    ds = synthetic_small
    torch.manual_seed(0)
    mean, std = image_stats(ds.train.images)
    model = Classifier(SmallCNN(1, 2, 28, mean, std), ds.task.n_outputs)
    tensors = {"image": torch.as_tensor(ds.train.images), "label": torch.as_tensor(ds.train.labels)}
    fit(Supervised(model, ds.task, SupervisedParams(augment=False)), tensors, FitConfig(steps=300, batch_size=64, lr=3e-3), seed=0)
    x, y = to_unit(ds.test.images), torch.as_tensor(ds.test.labels)
    return model.eval(), x, y, ds.task


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (for 2-process DDP tests with gloo)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
