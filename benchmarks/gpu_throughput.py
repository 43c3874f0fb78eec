"""Images/s of SimCLR pre-training steps and of PGD-10 on a GPU, fp32 vs bf16 (training autocast; PGD's
gradients are fp32 in the study, measured here in both to show what low precision would buy), for the default
encoder (cnn width 16, 28 px) and a larger one (cnn width 64, depth 5, 64 px). Issue 17's GPU figures.

Run on a GPU machine: .venv/bin/python benchmarks/gpu_throughput.py   (``--device cpu --quick``: a smoke run)
"""

from __future__ import annotations

import argparse
import time

import torch

from medrobust.attacks.pgd import PGD, PGDParams
from medrobust.data.base import Task
from medrobust.engine.train import FitConfig, fit
from medrobust.methods.contract import Encoders
from medrobust.methods.simclr import SimCLR
from medrobust.models.encoders import CNNParams, SmallCNN
from medrobust.models.heads import Classifier

ENCODERS = {"cnn-16 @28px": (28, CNNParams(width=16)), "cnn-64x5 @64px": (64, CNNParams(width=64, depth=5))}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def pretrain_rate(size: int, params: CNNParams, precision: str, device: torch.device, steps: int, batch: int) -> float:
    torch.manual_seed(0)
    method = SimCLR(Encoders(SmallCNN(1, 2, size, [0.5], [0.25], params), None, None))
    data = {"image": torch.randint(0, 256, (batch * 4, 1, size, size), dtype=torch.uint8)}
    cfg = FitConfig(steps=steps, batch_size=batch, precision=precision, channels_last=device.type == "cuda")
    fit(method, data, cfg.model_copy(update={"steps": 2}), seed=0, device=device)  # warm-up (cudnn autotune)
    sync(device)
    start = time.perf_counter()
    fit(method, data, cfg, seed=0, device=device)
    sync(device)
    return steps * batch / (time.perf_counter() - start)


def pgd_rate(size: int, params: CNNParams, precision: str, device: torch.device, batch: int) -> float:
    torch.manual_seed(0)
    model = Classifier(SmallCNN(1, 2, size, [0.5], [0.25], params), 2).to(device).eval()
    x, y = torch.rand(batch, 1, size, size, device=device), torch.randint(0, 2, (batch,), device=device)
    pgd, task = PGD(PGDParams(steps=10)), Task("binary", ("normal", "abnormal"))
    ctx = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    with ctx:
        pgd(model, x, y, eps=2 / 255, task=task)
    sync(device)
    start = time.perf_counter()
    with ctx:
        pgd(model, x, y, eps=2 / 255, task=task)
    sync(device)
    return batch / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--quick", action="store_true", help="tiny counts (a smoke run of the script)")
    a = ap.parse_args()
    device = torch.device(a.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run this on a GPU machine (or --device cpu --quick to try the script)")
    steps, batch = (3, 32) if a.quick else (50, 256)
    print(f"device {torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}; SimCLR {steps} steps of "
          f"{batch}; PGD-10 on {batch} images")
    for name, (size, params) in ENCODERS.items():
        rates = {p: (pretrain_rate(size, params, p, device, steps, batch), pgd_rate(size, params, p, device, batch))
                 for p in ("fp32", "bf16")}
        (pf, af), (pb, ab) = rates["fp32"], rates["bf16"]
        print(f"{name}: pre-training {pf:.0f} img/s fp32, {pb:.0f} bf16 ({pb / pf:.2f}x) | PGD-10 {af:.0f} img/s "
              f"fp32, {ab:.0f} bf16 ({ab / af:.2f}x)")


if __name__ == "__main__":
    main()
