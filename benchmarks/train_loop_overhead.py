"""Generic training loop vs a bare PyTorch loop: same model, data, batch and number of steps.

Prints the throughput of each and the overhead ratio (target: generic loop time / bare time ≤ 1.10).
Run: .venv/bin/python benchmarks/train_loop_overhead.py
"""

from __future__ import annotations

import time

import torch

from medrobust.data.base import Task
from medrobust.engine.train import FitConfig, fit
from medrobust.methods.losses import task_loss
from medrobust.methods.supervised import Supervised, SupervisedParams
from medrobust.models.encoders import SmallCNN
from medrobust.models.heads import Classifier


def make(seed: int = 0):
    torch.manual_seed(seed)
    return Classifier(SmallCNN(1, 2, 28, [0.5], [0.25]), 2)


def bare(model, images, labels, steps, batch, task):
    """The loop a user would write by hand: shuffled batches, AdamW, uint8 -> float conversion per batch."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    g = torch.Generator().manual_seed(0)
    perm, pos = torch.randperm(len(images), generator=g), 0
    start = time.perf_counter()
    for _ in range(steps):
        if pos + batch > len(images):
            perm, pos = torch.randperm(len(images), generator=g), 0
        idx = perm[pos : pos + batch]
        pos += batch
        x, y = images[idx].float() / 255, labels[idx]
        loss = task_loss(model(x), y, task)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return time.perf_counter() - start


def main(steps: int = 150, repeats: int = 5) -> None:
    torch.set_num_threads(2)
    task = Task("binary", ("normal", "abnormal"))
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (4096, 1, 28, 28), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 2, (4096,), generator=g)
    print(f"{'batch':>5} {'bare img/s':>11} {'fit img/s':>10} {'fit/bare time':>14}")
    for batch in (64, 256):
        cfg = FitConfig(steps=steps, batch_size=batch, lr=1e-3, weight_decay=1e-4)
        bare(make(), images, labels, 10, batch, task)  # warm-up
        t_bare, t_fit = [], []
        for r in range(repeats):  # interleaved, best of N: robust to load on a shared machine
            t_bare.append(bare(make(), images, labels, steps, batch, task))
            t_fit.append(fit(Supervised(make(), task, SupervisedParams(augment=False)), {"image": images, "label": labels}, cfg, seed=r).seconds)
        b, f = min(t_bare), min(t_fit)
        print(f"{batch:>5} {steps * batch / b:>11.0f} {steps * batch / f:>10.0f} {f / b:>14.3f}")


if __name__ == "__main__":
    main()
