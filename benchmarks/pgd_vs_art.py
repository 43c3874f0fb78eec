"""medrobust PGD / APGD-CE vs the Adversarial Robustness Toolbox (ART, a dev dependency) on the same model,
batch, ε and steps: wall time of each and the speed ratio ART / medrobust (> 1: medrobust is faster).

Both run L∞ at ε = 2/255 with one random start; PGD with step ε/4, APGD starting at 2ε. ART works on numpy
arrays and its APGD evaluates the loss separately from the gradient, medrobust stays in torch and reuses
the logits of each gradient pass. Run: .venv/bin/python benchmarks/pgd_vs_art.py
"""

from __future__ import annotations

import time

import numpy as np
import torch

from medrobust.attacks.apgd import APGDCE, APGDParams
from medrobust.attacks.pgd import PGD, PGDParams
from medrobust.data.base import Task
from medrobust.models.encoders import SmallCNN
from medrobust.models.heads import Classifier


def timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(batch: int = 256, steps: int = 10, repeats: int = 3, eps: float = 2 / 255) -> None:
    from art.attacks.evasion import AutoProjectedGradientDescent, ProjectedGradientDescent
    from art.estimators.classification import PyTorchClassifier

    torch.set_num_threads(2)
    torch.manual_seed(0)
    np.random.seed(0)
    task = Task("binary", ("normal", "abnormal"))
    model = Classifier(SmallCNN(1, 2, 28, [0.5], [0.25]), 2).eval()
    x = torch.rand(batch, 1, 28, 28)
    with torch.no_grad():
        y = model(x).argmax(dim=1)  # labels the model gets right: ART's APGD skips examples already wrong
    xn, yn = x.numpy(), y.numpy()
    classifier = PyTorchClassifier(model=model, loss=torch.nn.CrossEntropyLoss(), input_shape=(1, 28, 28),
                                   nb_classes=2, clip_values=(0.0, 1.0), device_type="cpu")
    art_pgd = ProjectedGradientDescent(classifier, norm=np.inf, eps=eps, eps_step=eps / 4, max_iter=steps,
                                       num_random_init=1, batch_size=batch, verbose=False)
    art_apgd = AutoProjectedGradientDescent(classifier, norm=np.inf, eps=eps, eps_step=2 * eps, max_iter=steps,
                                            nb_random_init=1, batch_size=batch, loss_type="cross_entropy",
                                            verbose=False)
    pgd, apgd = PGD(PGDParams(steps=steps)), APGDCE(APGDParams(steps=steps))
    pgd(model, x, y, eps=eps, task=task)  # warm-up
    art_pgd.generate(x=xn, y=yn)
    times: dict[str, list[float]] = {"pgd": [], "art_pgd": [], "apgd": [], "art_apgd": []}
    for _ in range(repeats):  # interleaved, best of `repeats`
        times["pgd"].append(timed(lambda: pgd(model, x, y, eps=eps, task=task)))
        times["art_pgd"].append(timed(lambda: art_pgd.generate(x=xn, y=yn)))
        times["apgd"].append(timed(lambda: apgd(model, x, y, eps=eps, task=task)))
        times["art_apgd"].append(timed(lambda: art_apgd.generate(x=xn, y=yn)))
    t = {k: min(v) for k, v in times.items()}
    print(f"batch {batch}, small CNN 28x28, L∞ ε=2/255, {steps} steps, best of {repeats}")
    print(f"PGD:  medrobust {t['pgd'] * 1e3:.0f} ms | ART {t['art_pgd'] * 1e3:.0f} ms | "
          f"ART / medrobust = {t['art_pgd'] / t['pgd']:.2f}")
    print(f"APGD: medrobust {t['apgd'] * 1e3:.0f} ms | ART {t['art_apgd'] * 1e3:.0f} ms | "
          f"ART / medrobust = {t['art_apgd'] / t['apgd']:.2f}")


if __name__ == "__main__":
    main()
