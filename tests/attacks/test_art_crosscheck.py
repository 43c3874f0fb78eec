"""Cross-check against IBM's Adversarial Robustness Toolbox (ART, a dev/test dependency only): on the same
model, images, ε and number of steps, medrobust's PGD and APGD must be at least as strong as ART's PGD
(robust accuracy ≤ ART's + 1 percentage point), and APGD-CE at least as strong as ART's Auto-PGD.

240 held-out images (the fixture's 160 test + 80 validation images, never trained on), L∞ at
ε ∈ {1/255, 2/255} and L2 at ε = 0.1 (both in [0, 1] pixel units), 10 steps, one random start each; ART's
PGD step is ε/4 like medrobust's default, ART's APGD starts at 2ε like the paper.
"""

import numpy as np
import pytest
import torch

from medrobust import registry
from medrobust.data.base import to_unit
from medrobust.evaluation.metrics import per_example_accuracy

art = pytest.importorskip("art")
from art.attacks.evasion import AutoProjectedGradientDescent, ProjectedGradientDescent
from art.estimators.classification import PyTorchClassifier

STEPS = 10
TOLERANCE = 0.01  # one percentage point


def _accuracy(model, x, y, task):
    with torch.no_grad():
        return per_example_accuracy(model(x), y, task).mean().item()


def _medrobust(name, model, x, y, task, eps, **params):
    cls = registry.get("attack", name)
    x_adv = cls(cls.Params(steps=STEPS, **params))(model, x, y, eps=eps, task=task,
                                                   generator=torch.Generator().manual_seed(0))
    return _accuracy(model, x_adv, y, task)


def _art(attack, model, x, y, task):
    x_adv = attack.generate(x=x.numpy(), y=y.numpy())
    return _accuracy(model, torch.as_tensor(x_adv, dtype=x.dtype), y, task)


@pytest.mark.parametrize("norm,eps", [("linf", 1 / 255), ("linf", 2 / 255), ("l2", 0.1)])
def test_pgd_and_apgd_at_least_as_strong_as_art(trained_classifier, synthetic_small, norm, eps):
    model, x_test, y_test, task = trained_classifier
    x = torch.cat([x_test, to_unit(synthetic_small.val.images)])  # [240, 1, 28, 28] in [0, 1]
    y = torch.cat([y_test, torch.as_tensor(synthetic_small.val.labels)])
    assert len(x) >= 200
    np.random.seed(0)  # ART draws its random start from numpy's global generator
    classifier = PyTorchClassifier(model=model, loss=torch.nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]),
                                   nb_classes=task.n_outputs, clip_values=(0.0, 1.0), device_type="cpu")
    art_norm = np.inf if norm == "linf" else 2
    art_pgd = _art(ProjectedGradientDescent(classifier, norm=art_norm, eps=eps, eps_step=eps / 4, max_iter=STEPS,
                                            num_random_init=1, batch_size=256, verbose=False), model, x, y, task)
    art_apgd = _art(AutoProjectedGradientDescent(classifier, norm=art_norm, eps=eps, eps_step=2 * eps,
                                                 max_iter=STEPS, nb_random_init=1, batch_size=256,
                                                 loss_type="cross_entropy", verbose=False), model, x, y, task)
    ours = {name: _medrobust(name, model, x, y, task, eps, norm=norm) for name in ("pgd", "apgd-ce", "apgd-dlr")}
    clean = _accuracy(model, x, y, task)
    report = f"{norm} ε={eps:.4f} clean {clean:.4f} ART PGD {art_pgd:.4f} ART APGD {art_apgd:.4f} ours {ours}"
    print(report)
    assert art_pgd < clean - 0.1, "the cross-check needs an ε at which ART's PGD does something: " + report
    for name, acc in ours.items():
        assert acc <= art_pgd + TOLERANCE, f"medrobust {name} weaker than ART PGD: " + report
    assert ours["apgd-ce"] <= art_apgd + TOLERANCE, "medrobust APGD-CE weaker than ART APGD: " + report
