"""What glibc's default thresholds cost a PGD attack and a training step, and what ``retain_freed_memory`` buys.

    python benchmarks/allocator.py

Each case runs in a fresh interpreter three ways: glibc's defaults; both thresholds at 1 GiB through glibc's own
environment variables (the first version of the setting, which trimmed the heap once a step's tensors exceeded
1 GiB); and :func:`medrobust.engine.allocator.retain_freed_memory`. Cases: PGD-10 at ε = 2/255 (after one
untimed warm-up) on the default cnn — 3D at stride 1 on 64 and on 256 volumes of 28³ (256: the evaluation's
batch), stride 2, 2D on 28² and 64² images — and one training step (forward, backward, Adam) of the stride-1 3D
cnn on 512 volumes (SimCLR's two views of a 256 batch). Prints wall, user and system seconds and peak memory.
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
kind = sys.argv[2]
dims, side, stride, n, repeats = (int(v) for v in sys.argv[3:8])
torch.manual_seed(0)
enc = SmallCNN(1, dims, side, [0.5], [0.25], CNNParams(stem_stride=stride))
model = torch.nn.Sequential(enc, torch.nn.Linear(enc.feature_dim, 2))
x, y = torch.rand(n, 1, *([side] * dims)), torch.randint(0, 2, (n,))
pgd, task, opt = PGD(PGDParams(steps=10)), Task("binary", ("a", "b")), torch.optim.Adam(model.parameters())

def run():
    if kind == "pgd":
        pgd(model.eval(), x, y, eps=2 / 255, task=task)
        return
    opt.zero_grad()
    torch.nn.functional.cross_entropy(model.train()(x), y).backward()
    opt.step()

run()
r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
for _ in range(repeats):
    run()
r1 = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps(dict(applied=applied, wall=(time.perf_counter() - t0) / repeats,
                      user=(r1.ru_utime - r0.ru_utime) / repeats, sys=(r1.ru_stime - r0.ru_stime) / repeats,
                      rss_mib=r1.ru_maxrss / 1024)))
"""

CASES = [("PGD-10, 3D cnn stride 1, 64 volumes of 28³", ("pgd", 3, 28, 1, 64, 1)),
         ("PGD-10, 3D cnn stride 1, 256 volumes of 28³", ("pgd", 3, 28, 1, 256, 1)),
         ("PGD-10, 3D cnn stride 2, 256 volumes of 28³", ("pgd", 3, 28, 2, 256, 3)),
         ("PGD-10, 2D cnn, 256 images of 28²", ("pgd", 2, 28, 1, 256, 5)),
         ("PGD-10, 2D cnn, 256 images of 64²", ("pgd", 2, 64, 1, 256, 3)),
         ("train step, 3D cnn stride 1, 512 volumes", ("train", 3, 28, 1, 512, 3))]
#: glibc's environment variables for the first version of the setting (both thresholds 1 GiB)
TRIM_1GIB = {"MALLOC_MMAP_THRESHOLD_": str(2**30), "MALLOC_TRIM_THRESHOLD_": str(2**30)}


def measure(mode: str, args: tuple, env: dict | None = None) -> dict:
    out = subprocess.run([sys.executable, "-c", CASE, mode, *map(str, args)], capture_output=True, text=True,
                         check=True, env={"OMP_NUM_THREADS": "2", "PATH": "", **(env or {})})
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    print("per attack / step: glibc defaults | both thresholds 1 GiB (env) | retain_freed_memory (2 threads):")
    for name, args in CASES:
        runs = measure("off", args), measure("off", args, TRIM_1GIB), measure("on", args)
        assert runs[2]["applied"] and not runs[0]["applied"]
        cols = " | ".join(f"{r['wall']:6.2f} s (sys {r['sys']:5.2f}, {r['rss_mib']:5.0f} MiB)" for r in runs)
        print(f"  {name:44s} {cols}; {runs[0]['wall'] / runs[2]['wall']:.2f}× / "
              f"{runs[1]['wall'] / runs[2]['wall']:.2f}×", flush=True)


if __name__ == "__main__":
    main()
