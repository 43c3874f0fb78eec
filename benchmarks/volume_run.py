"""Where a 3D run's time goes, and what one 3D forward+backward costs against 2D.

    python benchmarks/volume_run.py [DATA.npz] [KEY=VALUE ...]
        (default: ../shared/data/adrenalmnist3d.npz with configs/medmnist.yaml, one supervised run, 10% labels,
        seed 0, every phase run even if the model fails above_chance)

Part 1 — throughput: forward+backward volumes/s of the default image encoder on 28³ volumes (batch 64) against the
2D encoder on 148² images (the same voxel count, 21 904 vs 21 952), with the 3D variants that could make 3D cheap.
Part 2 — one run of the README's MedMNIST command, its time split into fine-tuning, the attack curves, the
worst-case sequence, the attack self-checks, the corruptions and the rest (from the run's own phase notes).
Part 3 (``--auc``) — clean AUC of the supervised arm, fine-tuned as the study does (10% and 100% labels, seeds
0-2), on the file's **validation** split (where the default is chosen) and its test split, for the first block at
stride 1 (the previous default) and 2, with and without class-balanced sampling.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import torch

from medrobust.config import load_config
from medrobust.engine.allocator import retain_freed_memory
from medrobust.models.encoders import CNNParams, SmallCNN
from medrobust.study.runner import execute, resolve_corruptions, resolve_device
from medrobust.study.prepare import prepare
from medrobust.study.spec import expand

CONFIGS = "1:off,2:off,2:auto"  # stem stride:class balance[:width[:depth]], for --auc (--auc=1:off,2:auto:32:3 picks)
DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "adrenalmnist3d.npz"


def fwd_bwd_rate(encoder: torch.nn.Module, x: torch.Tensor, repeats: int = 5, precision: str = "fp32") -> float:
    head = torch.nn.Linear(encoder.feature_dim, 2)
    y = torch.randint(0, 2, (len(x),))

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = torch.nn.functional.cross_entropy(head(encoder(x)).float(), y)
        loss.backward()

    step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return len(x) / min(times)


def throughput(batch: int = 64) -> None:
    torch.manual_seed(0)
    x3, x2 = torch.rand(batch, 1, 28, 28, 28), torch.rand(batch, 1, 148, 148)
    rows = [("2D cnn (148², same voxels)", SmallCNN(1, 2, 148, [0.5], [0.25]), x2, "fp32"),
            ("3D cnn, stride-1 first block", SmallCNN(1, 3, 28, [0.5], [0.25], CNNParams(stem_stride=1)), x3, "fp32")]
    for stride in (1, 2):
        enc = SmallCNN(1, 3, 28, [0.5], [0.25], CNNParams(stem_stride=stride))
        rows.append((f"3D cnn, stride-{stride}, channels_last_3d", _cl3d(enc),
                     x3.contiguous(memory_format=torch.channels_last_3d), "fp32"))
        rows.append((f"3D cnn, stride-{stride}, bf16 autocast", SmallCNN(1, 3, 28, [0.5], [0.25],
                                                                         CNNParams(stem_stride=stride)), x3, "bf16"))
    rows.append(("3D cnn, default (stride-1 first block)", SmallCNN(1, 3, 28, [0.5], [0.25]), x3, "fp32"))
    base = None
    for name, enc, x, precision in rows:
        rate = fwd_bwd_rate(enc, x, precision=precision)
        base = base or rate
        print(f"  {name:42s} {rate:8.0f} per s  ({rate / base:.2f}× the 2D rate)")


def _cl3d(enc: torch.nn.Module) -> torch.nn.Module:
    from medrobust.engine.train import to_channels_last

    return to_channels_last(enc)


def run_phases(data: Path, extra: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config("configs/medmnist.yaml", [f"data.path={data}", f"output_dir={tmp}", "methods=[supervised]",
                                                    "seeds=[0]", "label_fractions=[0.1]",
                                                    "evaluation.evaluate_failed=true", *extra])
        torch.set_num_threads(cfg.threads or torch.get_num_threads())
        prepared = prepare(cfg)
        cfg = resolve_corruptions(cfg, prepared)
        run = expand(cfg, prepared.has_text, prepared.has_indications)[0][0]
        marks: list[tuple[float, str]] = []
        start = time.perf_counter()

        def mark(msg: str) -> None:  # printed as it happens: a long run's breakdown survives an interruption
            marks.append((time.perf_counter() - start, msg))
            print(f"    [{marks[-1][0]:7.1f} s] {msg}", flush=True)

        record = execute(run, cfg, prepared, resolve_device(cfg.device), Path(tmp), lambda _l: None, mark)
        total = time.perf_counter() - start
    phases: dict[str, float] = {}
    for (t, msg), nxt in zip(marks, [m[0] for m in marks[1:]] + [total]):
        name = "worst-case sequence" if msg.startswith("worst-case") else msg.split(" on ")[0]
        phases[name] = phases.get(name, 0.0) + nxt - t
    phases["before fine-tuning"] = marks[0][0] if marks else total
    m = record.metrics
    print(f"  {run.label}: {total:.0f} s in all; clean acc {m.clean.acc:.3f}, AUC {m.clean.auc:.3f}, balanced "
          f"{m.clean_balanced:.3f}; {m.n_adversarial} attacked volumes")
    for name, s in phases.items():
        print(f"    {name:28s} {s:7.1f} s  ({100 * s / total:4.1f}%)")


def clean_aucs(data: Path, extra: list[str]) -> None:
    import numpy as np

    from medrobust.data.base import to_unit
    from medrobust.data.fractions import label_subset
    from medrobust.engine.train import fit
    from medrobust.evaluation.metrics import auc
    from medrobust.methods.supervised import Supervised
    from medrobust.models.build import build_encoders, classifier_for
    from medrobust.study.context import inputs_of
    from medrobust.study.runner import class_balanced, finetune_budget, model_specs

    for stride, balance, width, depth in [(int(a), b, int(w or 16), int(d or 4)) for a, b, w, d in
                                          ((v.split(":") + ["", ""])[:4] for v in CONFIGS.split(","))]:
        with tempfile.TemporaryDirectory() as tmp:
            cfg = load_config("configs/medmnist.yaml", [f"data.path={data}", f"output_dir={tmp}", *extra,
                                                        f"image_encoder.stem_stride={stride}",
                                                        f"image_encoder.width={width}",
                                                        f"image_encoder.depth={depth}",
                                                        f"finetune.class_balance={balance}"])
        prepared = prepare(cfg)
        task, val = prepared.dataset.task, prepared.dataset.val
        row = {}
        for fraction in (0.1, 1.0):
            vals, tests, secs = [], [], []
            for seed in (0, 1, 2):
                labeled = label_subset(prepared.train.labels, fraction, seed, prepared.train.groups)
                index, _ = class_balanced(labeled, prepared.train.labels, task, balance, seed)
                image, _, _ = build_encoders(model_specs(cfg), inputs_of(prepared), seed)
                model = classifier_for(image, None, None, task.n_outputs)
                start = time.perf_counter()
                fit(Supervised(model, task, seed=seed), prepared.train_tensors(index, labels=True),
                    finetune_budget(cfg), seed=seed)
                secs.append(time.perf_counter() - start)
                with torch.no_grad():
                    for x, y, out in ((val.images, val.labels, vals), (prepared.test.images, prepared.test.labels, tests)):
                        probs = model(to_unit(torch.as_tensor(x))).softmax(1).numpy()
                        out.append(auc(probs, y, task))
            row[fraction] = (np.mean(vals), np.std(vals), np.mean(tests), np.std(tests), np.mean(secs))
        print(f"  stride {stride}, width {width}, depth {depth}, class_balance {balance:4s}: " + "; ".join(
            f"{f:.0%} labels val AUC {v:.3f} ± {sv:.3f}, test {t:.3f} ± {st:.3f} ({s:.0f} s per fine-tune)"
            for f, (v, sv, t, st, s) in row.items()))


def main(argv: list[str]) -> None:
    retain_freed_memory()  # as a study does (study.runner)
    data = Path(argv[0]) if argv and argv[0].endswith(".npz") else DATA
    extra = [a for a in argv if "=" in a and not a.startswith("--")]
    global CONFIGS
    picked = [a for a in argv if a.startswith("--auc")]
    if picked:
        CONFIGS = picked[0].partition("=")[2] or CONFIGS
        print(f"{torch.get_num_threads()} threads; clean AUC of supervised on {data.name} (mean ± sd over 3 seeds):")
        clean_aucs(data, extra)
        return
    print(f"{torch.get_num_threads()} threads")
    print("forward+backward, batch 64:")
    throughput()
    print(f"one run of configs/medmnist.yaml on {data.name} {' '.join(extra)}:")
    run_phases(data, extra)


if __name__ == "__main__":
    main(sys.argv[1:])
