"""Image attacks on a trained classifier: projection around the clean input, strength ordering, multilabel.

The contract every image attack meets (budget, [0, 1], ε=0, modes, determinism, input checks) is tested over
the whole registry in ``test_contract.py``."""

import torch

from medrobust import registry
from medrobust.evaluation.metrics import per_example_accuracy

EPS = [0.5 / 255, 2 / 255, 8 / 255]


def attack(name, **params):
    cls = registry.get("attack", name)
    return cls(cls.Params(**params))


def test_classifier_fixture_learned(trained_classifier):
    model, x, y, task = trained_classifier
    with torch.no_grad():
        acc = per_example_accuracy(model(x), y, task).mean().item()
    majority = max(y.float().mean().item(), 1 - y.float().mean().item())
    assert acc > majority + 0.15, f"fixture model should be clearly above chance ({majority:.3f}), got {acc:.3f}"


def test_pgd_projects_around_clean_input_with_large_step(trained_classifier):
    """Steps far larger than ε must still end within ε of the clean image (not of the previous iterate)."""
    model, x, y, task = trained_classifier
    eps = 2 / 255
    x_adv = attack("pgd", steps=20, step_size=3.0)(model, x[:64], y[:64], eps=eps, task=task)
    assert (x_adv - x[:64]).abs().max().item() <= eps + 1e-6


def test_pgd_at_least_as_strong_as_fgsm_and_monotone(trained_classifier):
    model, x, y, task = trained_classifier
    accs = {}
    for name in ("fgsm", "pgd"):
        for eps in EPS:
            x_adv = attack(name)(model, x, y, eps=eps, task=task, generator=torch.Generator().manual_seed(0))
            with torch.no_grad():
                accs[name, eps] = per_example_accuracy(model(x_adv), y, task).mean().item()
    for eps in EPS:
        assert accs["pgd", eps] <= accs["fgsm", eps] + 1e-9, accs
    pgd = [accs["pgd", e] for e in EPS]
    assert pgd == sorted(pgd, reverse=True), pgd
    assert pgd[-1] < 0.5, f"PGD at 8/255 should break an undefended model, got {pgd[-1]:.3f}"


def test_multilabel_attack_flips_finding_decisions():
    """Multilabel targets: the attack works on the per-finding decisions (BCE), not an argmax."""
    from medrobust.data.base import Task

    task = Task("multilabel", ("a", "b", "c"))
    torch.manual_seed(0)
    w = torch.randn(3, 16)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    with torch.no_grad():
        model[1].weight.copy_(w)
        model[1].bias.zero_()
    x = torch.rand(32, 1, 4, 4)
    y = (model(x) > 0).long()  # labels the model gets right
    x_adv = attack("pgd", steps=20)(model, x, y, eps=0.5, task=task)
    with torch.no_grad():
        acc = per_example_accuracy(model(x_adv), y, task).mean().item()
    assert acc < 0.5
