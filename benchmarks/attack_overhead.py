"""PGD time vs the bare forward+backward time of its steps (target: ratio ≤ 1.15).

PGD with S steps does S forward+backward passes w.r.t. the input plus one forward for the last iterate,
and the projection arithmetic. The bare reference is S forward+backward passes of the same model on the
same batch, input gradient only. Run: .venv/bin/python benchmarks/attack_overhead.py
"""

from __future__ import annotations

import time

import torch

from medrobust.attacks.fgsm import FGSM
from medrobust.attacks.pgd import PGD, PGDParams
from medrobust.data.base import Task
from medrobust.methods.losses import task_loss
from medrobust.models.encoders import SmallCNN
from medrobust.models.heads import Classifier


def bare_steps(model, x, y, task, steps):
    start = time.perf_counter()
    for _ in range(steps):
        xr = x.clone().requires_grad_(True)
        loss = task_loss(model(xr), y, task, reduction="none").sum()
        torch.autograd.grad(loss, xr)
    return time.perf_counter() - start


def main(batch: int = 256, steps: int = 10, repeats: int = 5) -> None:
    torch.set_num_threads(2)
    torch.manual_seed(0)
    task = Task("binary", ("normal", "abnormal"))
    model = Classifier(SmallCNN(1, 2, 28, [0.5], [0.25]), 2).eval()
    x, y = torch.rand(batch, 1, 28, 28), torch.randint(0, 2, (batch,))
    pgd = PGD(PGDParams(steps=steps))
    bare_steps(model, x, y, task, 3)
    t_bare, t_pgd, t_fgsm = [], [], []
    for _ in range(repeats):
        t_bare.append(bare_steps(model, x, y, task, steps))
        start = time.perf_counter()
        pgd(model, x, y, eps=2 / 255, task=task)
        t_pgd.append(time.perf_counter() - start)
        start = time.perf_counter()
        FGSM()(model, x, y, eps=2 / 255, task=task)
        t_fgsm.append(time.perf_counter() - start)
    b, p, f = min(t_bare), min(t_pgd), min(t_fgsm)
    print(f"batch {batch}, small CNN, {steps} steps")
    print(f"bare fwd+bwd x{steps}: {b * 1e3:.1f} ms | PGD-{steps}: {p * 1e3:.1f} ms | ratio PGD/bare = {p / b:.3f}")
    print(f"FGSM / one bare fwd+bwd = {f / (b / steps):.3f}")


if __name__ == "__main__":
    main()
