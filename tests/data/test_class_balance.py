"""Class-balanced fine-tuning for imbalanced tasks: when it switches on, what oversampling gives, and that on an
imbalanced toy task the default training beats the majority-class guess in balanced accuracy (training without
balancing does not)."""

import numpy as np
import pytest
import torch

from medrobust.data.base import Task
from medrobust.data.fractions import oversample, rare_class
from medrobust.engine.train import FitConfig, fit
from medrobust.methods.supervised import Supervised
from medrobust.models.encoders import SmallCNN
from medrobust.models.heads import Classifier
from medrobust.study.runner import class_balanced
from medrobust.task import balanced_accuracy

TASK = Task("binary", ("normal", "lesion"))


def test_rare_class_is_under_half_its_balanced_share():
    assert rare_class(np.array([0] * 90 + [1] * 10), 2) == (1, pytest.approx(0.1))
    assert rare_class(np.array([0] * 76 + [1] * 24), 2) == (1, pytest.approx(0.24))
    assert rare_class(np.array([0] * 70 + [1] * 30), 2) is None
    assert rare_class(np.array([0] * 50 + [1] * 40 + [2] * 10), 3) == (2, pytest.approx(0.1))  # < 1/6
    assert rare_class(np.array([0] * 45 + [1] * 35 + [2] * 20), 3) is None
    assert rare_class(np.array([1] * 10), 2) is None  # one class present: nothing to balance
    assert rare_class(np.zeros((10, 3), dtype=int), 3) is None  # multilabel rows


def test_oversample_repeats_each_class_up_to_the_largest():
    index = np.arange(100, 140)
    labels = np.array([0] * 33 + [1] * 7)
    out = oversample(index, labels, seed=3)
    lab = dict(zip(index, labels))
    counts = np.bincount([lab[i] for i in out])
    assert counts.tolist() == [33, 33] and set(out) == set(index)
    minority = [i for i in out if lab[i] == 1]
    assert max(np.unique(minority, return_counts=True)[1]) - min(np.unique(minority, return_counts=True)[1]) <= 1
    assert np.array_equal(out, oversample(index, labels, seed=3))
    assert not np.array_equal(np.sort(out), np.sort(oversample(index, labels, seed=4)))  # 33 % 7 drawn by seed


def test_class_balanced_modes_and_note():
    labels = np.array([0] * 90 + [1] * 10)
    labeled = np.arange(100)
    out, note = class_balanced(labeled, labels, TASK, "auto", 0)
    assert len(out) == 180 and "'lesion', is 10 of 100 labeled examples (10%)" in note
    out, note = class_balanced(labeled, labels, TASK, "off", 0)
    assert out is labeled and note is None
    even = np.array([0, 1] * 50)
    out, note = class_balanced(labeled, even, TASK, "auto", 0)
    assert out is labeled and note is None
    assert len(class_balanced(labeled, even, TASK, "oversample", 0)[0]) == 100


def _toy(n, positive, seed):
    """28×28 noise; a lesion is a faint 6×6 brighter patch at a random place (``positive`` share of ``n``)."""
    g = torch.Generator().manual_seed(seed)
    y = (torch.rand(n, generator=g) < positive).long()
    x = torch.rand(n, 1, 28, 28, generator=g) * 0.6
    for i in torch.nonzero(y).flatten():
        r, c = torch.randint(0, 22, (2,), generator=g)
        x[i, :, r : r + 6, c : c + 6] += 0.35
    return (x.clamp(0, 1) * 255).to(torch.uint8), y


def _train(mode):
    x, y = _toy(300, 0.1, seed=0)
    index, _ = class_balanced(np.arange(len(y)), y.numpy(), TASK, mode, seed=0)
    torch.manual_seed(0)
    model = Classifier(SmallCNN(1, 2, 28, [0.3], [0.18]), TASK.n_outputs)
    fit(Supervised(model, TASK, seed=0), {"image": x[index], "label": y[index]},
        FitConfig(steps=120, batch_size=32, lr=2e-3), seed=0)
    xt, yt = _toy(400, 0.1, seed=1)
    with torch.no_grad():
        return balanced_accuracy(model(xt.float() / 255), yt, TASK)


def test_default_training_beats_the_majority_guess_on_an_imbalanced_task():
    default, off = _train("auto"), _train("off")
    assert default > 0.65, f"balanced accuracy {default:.3f} with class-balanced sampling (majority guess: 0.5)"
    assert default > off + 0.05, (default, off)
