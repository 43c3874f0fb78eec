"""APGD time per iteration vs one bare forward+backward w.r.t. the input (target: ratio ≤ 1.15).

APGD-CE with N steps does N forward+backward passes (the start and N−1 iterates) plus one forward for the
last iterate; its own work per iteration is the momentum step, two projections, best-point and
success tracking and the step-size checks. The bare reference is the same number of forward+backward
passes of the same model on the same batch, input gradient only. Also printed: Square's time per query
over one bare forward (no gradient), with a budget so small that no example is fooled, so every query
covers the whole batch. Run: .venv/bin/python benchmarks/apgd_overhead.py
"""

from __future__ import annotations

import statistics
import time

import torch

from medrobust.attacks.apgd import APGDCE, APGDDLR, APGDDLRParams, APGDParams
from medrobust.attacks.square import Square, SquareParams
from medrobust.data.base import Task
from medrobust.methods.losses import task_loss
from medrobust.models.encoders import SmallCNN
from medrobust.models.heads import Classifier


def bare_steps(model, x, y, task, steps):
    for _ in range(steps):
        xr = x.clone().requires_grad_(True)
        loss = task_loss(model(xr), y, task, reduction="none").sum()
        torch.autograd.grad(loss, xr)


def bare_forwards(model, x, n):
    with torch.no_grad():
        for _ in range(n):
            model(x)


def timed(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process): CPU time is less sensitive to other jobs' load."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def ratios(num: list[tuple[float, float]], den: list[tuple[float, float]]) -> str:
    """Best-of-N wall ratio, median of the paired (adjacent in time) wall ratios, best-of-N CPU ratio."""
    wall = min(n[0] for n in num) / min(d[0] for d in den)
    paired = statistics.median(n[0] / d[0] for n, d in zip(num, den))
    cpu = min(n[1] for n in num) / min(d[1] for d in den)
    return f"wall best-of {wall:.3f} | wall paired median {paired:.3f} | CPU time {cpu:.3f}"


def main(batch: int = 256, steps: int = 100, queries: int = 100, repeats: int = 5) -> None:
    torch.set_num_threads(2)
    torch.manual_seed(0)
    task = Task("binary", ("normal", "abnormal"))
    model = Classifier(SmallCNN(1, 2, 28, [0.5], [0.25]), 2).eval()
    x, y = torch.rand(batch, 1, 28, 28), torch.randint(0, 2, (batch,))
    with torch.no_grad():
        y_pred = model(x).argmax(dim=1)  # labels the model gets right: Square keeps querying all of them
    ce, dlr = APGDCE(APGDParams(steps=steps)), APGDDLR(APGDDLRParams(steps=steps))
    square = Square(SquareParams(n_queries=queries))
    bare_steps(model, x, y, task, 3)
    t: dict[str, list[tuple[float, float]]] = {k: [] for k in ("bare", "ce", "dlr", "fwd", "square")}
    for _ in range(repeats):  # interleaved: machine load hits every side alike
        t["bare"].append(timed(lambda: bare_steps(model, x, y, task, steps)))
        t["ce"].append(timed(lambda: ce(model, x, y, eps=2 / 255, task=task)))
        t["dlr"].append(timed(lambda: dlr(model, x, y, eps=2 / 255, task=task)))
        t["fwd"].append(timed(lambda: bare_forwards(model, x, queries)))
        t["square"].append(timed(lambda: square(model, x, y_pred, eps=1e-6, task=task)))
    best = {k: min(w for w, _ in v) for k, v in t.items()}
    print(f"batch {batch}, small CNN 28x28, APGD {steps} steps, Square {queries} queries, {repeats} repeats")
    print(f"bare fwd+bwd x{steps}: {best['bare'] * 1e3:.0f} ms | APGD-CE {best['ce'] * 1e3:.0f} ms | "
          f"APGD-DLR {best['dlr'] * 1e3:.0f} ms | bare forward x{queries}: {best['fwd'] * 1e3:.0f} ms | "
          f"Square {best['square'] * 1e3:.0f} ms")
    print(f"APGD-CE  per iteration / bare fwd+bwd: {ratios(t['ce'], t['bare'])}")
    print(f"APGD-DLR per iteration / bare fwd+bwd: {ratios(t['dlr'], t['bare'])}")
    print(f"Square   per query / bare forward:     {ratios(t['square'], t['fwd'])}")


if __name__ == "__main__":
    main()
