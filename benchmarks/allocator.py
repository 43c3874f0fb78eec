"""What glibc's default thresholds cost a PGD attack, and what ``retain_freed_memory`` buys.

    python benchmarks/allocator.py

Each case runs in a fresh interpreter with and without :func:`medrobust.engine.allocator.retain_freed_memory`:
PGD-10 at ε = 2/255 (after one untimed warm-up attack) on the default cnn — 3D at stride 1 and 2 on 28³ volumes,
2D on 28² and 64² images — and prints wall, user and system seconds, their ratio and the peak resident memory.
"""

from __future__ import annotations

import json
import subprocess
import sys

CASE = """
import json, resource, sys, time, torch
from medrobust.engine.allocator import retain_freed_memory
applied = retain_freed_memory() if sys.argv[1] == "on" else False
torch.set_num_threads(2)
from medrobust.attacks.pgd import PGD, PGDParams
from medrobust.models.encoders import CNNParams, SmallCNN
from medrobust.task import Task
dims, side, stride, n, repeats = (int(v) for v in sys.argv[2:7])
torch.manual_seed(0)
enc = SmallCNN(1, dims, side, [0.5], [0.25], CNNParams(stem_stride=stride))
model = torch.nn.Sequential(enc, torch.nn.Linear(enc.feature_dim, 2)).eval()
x, y = torch.rand(n, 1, *([side] * dims)), torch.randint(0, 2, (n,))
pgd, task = PGD(PGDParams(steps=10)), Task("binary", ("a", "b"))
pgd(model, x, y, eps=2 / 255, task=task)
r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
for _ in range(repeats):
    pgd(model, x, y, eps=2 / 255, task=task)
r1 = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps(dict(applied=applied, wall=(time.perf_counter() - t0) / repeats,
                      user=(r1.ru_utime - r0.ru_utime) / repeats, sys=(r1.ru_stime - r0.ru_stime) / repeats,
                      rss_mib=r1.ru_maxrss / 1024)))
"""

CASES = [("3D cnn, stride 1, 64 volumes of 28³", (3, 28, 1, 64, 1)),
         ("3D cnn, stride 2, 256 volumes of 28³", (3, 28, 2, 256, 3)),
         ("2D cnn, 256 images of 28²", (2, 28, 1, 256, 5)),
         ("2D cnn, 256 images of 64²", (2, 64, 1, 256, 3))]


def measure(mode: str, args: tuple) -> dict:
    out = subprocess.run([sys.executable, "-c", CASE, mode, *map(str, args)], capture_output=True, text=True,
                         check=True, env={"OMP_NUM_THREADS": "2", "PATH": ""})
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    print("PGD-10 per attack, glibc defaults -> retain_freed_memory (one case at a time, 2 threads):")
    for name, args in CASES:
        off, on = measure("off", args), measure("on", args)
        assert on["applied"] and not off["applied"]
        print(f"  {name:38s} wall {off['wall']:6.2f} -> {on['wall']:6.2f} s ({off['wall'] / on['wall']:.2f}×); "
              f"system {off['sys']:5.2f} -> {on['sys']:5.2f} s; user {off['user']:5.2f} -> {on['user']:5.2f} s; "
              f"peak RSS {off['rss_mib']:5.0f} -> {on['rss_mib']:5.0f} MiB", flush=True)


if __name__ == "__main__":
    main()
