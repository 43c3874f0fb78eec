"""Corruption severities calibrated on the data they are for, and what each corruption costs.

1. For every registered corruption and each modality whose set (``medrobust.corruptions.sets``) contains it: mean
   SSIM (scikit-image, data range 1) and PSNR to the clean image at severities 1–5, on a fixed sample of that
   modality's embedded synthetic data (64 test images of 28², or 16 CT volumes of 28³; MRI artefacts on the CT
   volumes, the only embedded 3D data).
2. Cost: seconds to corrupt a batch of 256 28×28 gray images (and 32 28³ volumes) at severity 3, relative to one
   forward pass of the default CNN (width 16) on the same batch (best of 3).

Prints two Markdown tables. Run: OMP_NUM_THREADS=2 .venv/bin/python benchmarks/corruption_calibration.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "corruptions"))
from test_ssim_monotone import mean_ssim  # noqa: E402

from medrobust import registry  # noqa: E402
from medrobust.corruptions.sets import SETS  # noqa: E402
from medrobust.data.base import to_unit  # noqa: E402
from medrobust.data.synthetic import SyntheticParams, load_synthetic  # noqa: E402
from medrobust.models.encoders import SmallCNN  # noqa: E402

DATA = {"x-ray": "chest-xray", "ultrasound": "ultrasound", "fundus photography": "fundus", "ct": "ct", "mri": "ct"}


def sample(modality: str) -> torch.Tensor:
    n = 300 if modality == "ct" else 90
    ds = load_synthetic(SyntheticParams(modality=modality, n_per_site=n))
    k = 16 if modality == "ct" else 64
    return to_unit(ds.test.images[np.random.default_rng(0).choice(len(ds.test), k, replace=False)])


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = ((a - b) ** 2).flatten(1).mean(1).clamp_min(1e-10)
    return float((10 * torch.log10(1 / mse)).mean())


def best_of(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    registry.load_all()
    print("| corruption | family | data | SSIM s1 | s2 | s3 | s4 | s5 | PSNR s1 | s3 | s5 |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    cache = {}
    for modality, names in SETS.items():
        if modality not in DATA:
            continue
        data = cache.setdefault(DATA[modality], sample(DATA[modality]))
        for name in names:
            if name not in registry.names("corruption"):
                continue
            fn = registry.get("corruption", name)
            if base_dims(data) not in fn.dims or (fn.channels and data.shape[1] not in fn.channels):
                continue
            outs = [fn(data, s, generator=torch.Generator().manual_seed(0)) for s in range(1, 6)]
            ssim = [mean_ssim(data, o) for o in outs]
            p = [psnr(data, o) for o in outs]
            print(f"| {name} | {fn.family} | {modality} ({DATA[modality]}) | "
                  + " | ".join(f"{v:.3f}" for v in ssim) + f" | {p[0]:.1f} | {p[2]:.1f} | {p[4]:.1f} |")
    torch.manual_seed(0)
    x2, x3 = torch.rand(256, 1, 28, 28), torch.rand(32, 1, 28, 28, 28)
    cnn2, cnn3 = SmallCNN(1, 2, 28, [0.5], [0.25]).eval(), SmallCNN(1, 3, 28, [0.5], [0.25]).eval()
    with torch.no_grad():
        f2, f3 = best_of(lambda: cnn2(x2)), best_of(lambda: cnn3(x3))
    print(f"\none CNN forward: {f2 * 1000:.1f} ms (256 × 28²), {f3 * 1000:.1f} ms (32 × 28³)\n")
    print("| corruption | 256 × 28² ms | × CNN forward | 32 × 28³ ms | × CNN forward |")
    print("|---|---|---|---|---|")
    for name in registry.names("corruption"):
        fn = registry.get("corruption", name)
        cells = []
        for x, f, d in ((x2, f2, 2), (x3, f3, 3)):
            if d not in fn.dims or (fn.channels and 1 not in fn.channels):
                cells += ["—", "—"]
                continue
            t = best_of(lambda: fn(x, 3, generator=torch.Generator().manual_seed(0)))
            cells += [f"{t * 1000:.1f}", f"{t / f:.1f}"]
        print(f"| {name} | " + " | ".join(cells) + " |")


def base_dims(x: torch.Tensor) -> int:
    return x.ndim - 2


if __name__ == "__main__":
    main()
