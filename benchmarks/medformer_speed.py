"""Training throughput of ``medformer`` vs the plain ``vit`` of the same width, depth, heads and patch size.

One training step = forward (encoder + linear head), cross-entropy, backward, AdamW step, on a single-source
batch: 1-channel 28² images (batch 128, patch 4: 49 tokens) and 1-channel 28³ volumes (batch 32, patch 7: 64
tokens). The medformer has the default sizes (width 64, depth 2, 4 heads) and, besides its own adapter, adapters
for 3-channel 2D and the other dimension, as it would on a pool (unused ones cost nothing per step but their
place in the optimiser). Repeats are interleaved and the best of each is kept (robust to load on a shared
machine); the ratio is medformer time / vit time in the same run (target: ≤ 1.15).

Run: OMP_NUM_THREADS=2 .venv/bin/python benchmarks/medformer_speed.py [--steps 30] [--repeats 5]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from medrobust.models.encoders import SmallViT, ViTParams
from medrobust.models.heads import Classifier
from medrobust.models.medformer import Medformer, MedformerParams


def build(name: str, dims: int) -> torch.nn.Module:
    torch.manual_seed(0)
    p = MedformerParams()
    if name == "vit":
        patch = p.patch_size if dims == 2 else p.patch_size_3d
        enc = SmallViT(1, dims, 28, [0.5], [0.25], ViTParams(patch_size=patch, dim=p.dim, depth=p.depth,
                                                             heads=p.heads, mlp_ratio=p.mlp_ratio))
    else:
        enc = Medformer(1, dims, 28, [0.5], [0.25], p)
        enc.add_input(3, 2, [0.5] * 3, [0.25] * 3)
        enc.add_input(1, 5 - dims, [0.5], [0.25])
    return Classifier(enc, 2)


def train_time(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int) -> float:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    start = time.perf_counter()
    for _ in range(steps):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return time.perf_counter() - start


def main(steps: int = 30, repeats: int = 5) -> None:
    torch.set_num_threads(2)
    print(f"{'input':>12} {'batch':>5} {'vit img/s':>10} {'medformer img/s':>16} {'medformer/vit time':>19}")
    for dims, batch in ((2, 128), (3, 32)):
        g = torch.Generator().manual_seed(0)
        x = torch.rand(batch, 1, *([28] * dims), generator=g)
        y = torch.randint(0, 2, (batch,), generator=g)
        models = {name: build(name, dims) for name in ("vit", "medformer")}
        for model in models.values():
            train_time(model, x, y, 3)  # warm-up
        times: dict[str, list[float]] = {name: [] for name in models}
        for _ in range(repeats):
            for name, model in models.items():
                times[name].append(train_time(model, x, y, steps))
        vit, med = min(times["vit"]), min(times["medformer"])
        shape = "1x" + "x".join(["28"] * dims)
        print(f"{shape:>12} {batch:>5} {steps * batch / vit:>10.0f} {steps * batch / med:>16.0f} {med / vit:>19.3f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    main(args.steps, args.repeats)
