"""Pre-training on a diverse pool vs on the target only vs random init: frozen-feature probes on the validation split.

For a study config (its data, encoder, pre-training budget and pools), each arm pre-trains exactly as the study does
(:func:`medrobust.study.context.pretrain`, the same checkpoints) in a fresh process; then, on frozen features of the
target's held-in training images, with 10% of their labels (stratified; mean ± sd over ``--label-seeds`` subsets),
scored on the target's held-in **validation** split (never the test split: this benchmark selects defaults):

* kNN: k = 20, cosine on centred features, vote weights exp(s / 0.07) (as ``benchmarks/ssl_zoo.py``);
* linear probe: logistic regression on standardised features, L-BFGS (as ``benchmarks/ssl_zoo.py``).

Both as accuracy and balanced accuracy (mean per-class recall; the real targets are imbalanced). Also the
pre-training time and peak memory (RSS high-water mark during pre-training above the level before it), so pool
pre-training can be compared with single-source pre-training at the same step budget.

Run: OMP_NUM_THREADS=2 .venv/bin/python benchmarks/pool_probe.py configs/quick.yaml --arms "random init" simclr \
         "simclr @ diverse" "supervised-multitask @ diverse" [key=value overrides ...]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ssl_zoo import RANDOM, features, knn_predict, linear_predict, peak_rss_mib, reset_peak_rss  # noqa: E402


def balanced(pred: torch.Tensor, y: torch.Tensor, n_classes: int) -> float:
    recalls = [float((pred[y == c] == c).float().mean()) for c in range(n_classes) if (y == c).any()]
    return float(np.mean(recalls))


def run_arm(arm: str, args) -> dict:
    torch.set_num_threads(args.threads)
    from medrobust import registry
    from medrobust.config import load_config
    from medrobust.data.fractions import label_subset
    from medrobust.methods.contract import info_of
    from medrobust.study.context import RunContext, pretrain
    from medrobust.study.pools import pool_for
    from medrobust.study.prepare import prepare
    from medrobust.study.runner import finetune_budget, model_specs
    from medrobust.study.spec import expand

    cfg = load_config(args.config, args.overrides)
    data = prepare(cfg)
    ds = data.dataset
    if ds.task.multilabel:
        raise SystemExit("multilabel tasks are not supported by this benchmark")
    held = set(cfg.data.holdout_sites)
    val = ds.val.subset(~np.isin(ds.val.sites, [ds.site_names.index(s) for s in held]) & ds.val.labeled)
    device = torch.device("cpu")
    seconds = memory = 0.0
    if arm == RANDOM:
        run = next(r for r in expand(cfg, data.has_text, data.has_indications)[0] if r.method.name == "supervised")
        encoder = RunContext(run, data, model_specs(cfg), finetune_budget(cfg), device).modules()[0]
    else:
        run = next((r for r in expand(cfg, data.has_text, data.has_indications)[0]
                    if r.method.label == arm and r.seed == args.seed), None)
        if run is None or not info_of(registry.get("method", run.method.name)).pretrains:
            raise SystemExit(f"{arm!r} is not a pre-training arm of {args.config} (its methods: "
                             f"{[m.label for m in cfg.methods]})")
        pool = None if run.method.pool is None else pool_for(cfg, run.method.pool, data)
        with tempfile.TemporaryDirectory() as tmp:
            base = reset_peak_rss()
            pre = pretrain(run, model_specs(cfg), data, cfg.pretrain, device, Path(tmp), lambda s: None, pool)
            memory = peak_rss_mib() - base
            seconds = pre.seconds
            encoder = RunContext(run, data, model_specs(cfg), finetune_budget(cfg), device, pre, pool).modules()[0]
    train_f, val_f = features(encoder, data.train.images, device), features(encoder, val.images, device)
    labeled = data.train.labeled
    n_classes = ds.task.n_outputs
    rows = {"knn": [], "knn_bal": [], "linear": [], "linear_bal": []}
    val_y = torch.as_tensor(val.labels)
    for s in range(args.label_seeds):
        idx = label_subset(data.train.labels, args.fraction, s, data.train.groups)
        idx = torch.as_tensor(idx[labeled[idx]])
        y = torch.as_tensor(data.train.labels)[idx]
        for name, predict in (("knn", knn_predict), ("linear", linear_predict)):
            pred = predict(train_f[idx], y, val_f, n_classes)
            rows[name].append(float((pred == val_y).float().mean()))
            rows[f"{name}_bal"].append(balanced(pred, val_y, n_classes))
    return {"arm": arm, "seconds": seconds, "memory": memory, "n_labeled": len(idx), "n_val": len(val),
            "n_train": len(data.train), **{k: (np.mean(v), np.std(v)) for k, v in rows.items()}}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config")
    ap.add_argument("overrides", nargs="*", help="key=value config overrides")
    ap.add_argument("--arms", nargs="+", required=True, help="'random init' and arm labels of the config")
    ap.add_argument("--fraction", type=float, default=0.1)
    ap.add_argument("--label-seeds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0, help="pre-training seed")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    ctx = mp.get_context("spawn")
    rows = []
    for arm in args.arms:
        start = time.perf_counter()
        with ctx.Pool(1) as pool:
            rows.append(pool.apply(run_arm, (arm, args)))
        print(f"# {arm}: done in {time.perf_counter() - start:.0f} s", flush=True)
    r = rows[0]
    print(f"\n{args.config} {' '.join(args.overrides)}: {r['n_train']} training images ({r['n_labeled']} labeled, "
          f"{args.fraction:g}), {r['n_val']} validation; probes mean ± sd over {args.label_seeds} label subsets\n")
    print("| arm | kNN acc | kNN bal. acc | linear acc | linear bal. acc | pre-train s | peak memory MiB |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        cell = lambda k: f"{r[k][0]:.3f} ± {r[k][1]:.3f}"  # noqa: E731
        print(f"| {r['arm']} | {cell('knn')} | {cell('knn_bal')} | {cell('linear')} | {cell('linear_bal')} | "
              f"{r['seconds']:.1f} | {r['memory']:.0f} |")


if __name__ == "__main__":
    main()
