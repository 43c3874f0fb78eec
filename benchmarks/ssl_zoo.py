"""Self-supervised zoo: pre-train the default CNN with every method, then probe the frozen features.

For each method (and ``random init``, the untrained encoder): pre-train the study's default encoder
(``cnn``, width 16) on the training images for a fixed step budget (AdamW, the study's pre-training
defaults: lr 2e-3, warm-up + cosine), then on frozen features, with 10% of the training labels
(stratified; mean over ``--label-seeds`` draws), evaluated on the validation split (``--split test`` only
to report a choice already made — defaults are selected on the validation split, never on the test split):

* kNN: k = 20 nearest labeled training images by cosine similarity, weighted vote with weights
  ``exp(s/0.07)`` (Wu et al. 2018, the protocol of InstDisc/DINO), on centred features (the mean of the
  labeled features subtracted first: "CL2N", Wang et al. 2019, SimpleShot) — the pooled ReLU features of
  the CNN share a large common direction that otherwise dominates every cosine;
* linear probe: multinomial logistic regression on standardised features, L2 weight 1e-3, full-batch
  L-BFGS in torch (no scikit-learn).

Each method runs in a fresh process. Peak memory of pre-training: on CPU the peak RSS during ``fit`` above
the RSS before it (Linux: the high-water mark is reset through ``/proc/self/clear_refs`` and read from
``VmHWM``; elsewhere ``ru_maxrss``, which includes data loading); on GPU ``torch.cuda.max_memory_allocated``.
Prints a markdown table.

Run: OMP_NUM_THREADS=2 .venv/bin/python benchmarks/ssl_zoo.py [--data synthetic|PATH.npz] [--steps 150]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import time

import numpy as np
import torch
import torch.nn.functional as F

ZOO = ["simclr", "moco-v2", "moco-v3", "byol", "simsiam", "dino", "barlow-twins", "vicreg", "mae", "restoration",
       "rotation", "jigsaw", "multi"]
RANDOM = "random init"


def load(data: str):
    if data == "synthetic":
        from medrobust.data.synthetic import SyntheticParams, load_synthetic

        return load_synthetic(SyntheticParams(n_per_site=900, sites=["A", "B", "C"]))
    from medrobust.data.medmnist import load_medmnist

    return load_medmnist(data)


def _status_mib(key: str) -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key + ":")) / 1024


def reset_peak_rss() -> float:
    """Reset the peak-RSS mark (Linux) and return the current RSS in MiB (0 where unsupported)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _status_mib("VmRSS")
    except OSError:
        return 0.0


def peak_rss_mib() -> float:
    try:
        return _status_mib("VmHWM")
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def features(encoder, images, device, batch: int = 512) -> torch.Tensor:
    from medrobust.data.base import to_unit

    encoder.eval()
    with torch.no_grad():
        return torch.cat([encoder.forward_features(to_unit(images[i:i + batch]).to(device)).cpu()
                          for i in range(0, len(images), batch)])


def knn_predict(train_f, train_y, test_f, n_classes: int, k: int = 20, tau: float = 0.07) -> torch.Tensor:
    mean = train_f.mean(dim=0)
    a, b = F.normalize(train_f - mean, dim=1), F.normalize(test_f - mean, dim=1)
    sim, idx = (b @ a.t()).topk(min(k, len(a)), dim=1)  # [M, k]
    votes = torch.zeros(len(b), n_classes).scatter_add_(1, train_y[idx], (sim / tau).exp())
    return votes.argmax(dim=1)


def linear_predict(train_f, train_y, test_f, n_classes: int, l2: float = 1e-3) -> torch.Tensor:
    mean, std = train_f.mean(dim=0), train_f.std(dim=0).clamp_min(1e-6)
    xa, xb = (train_f - mean) / std, (test_f - mean) / std
    w = torch.zeros(xa.shape[1], n_classes, requires_grad=True)
    b = torch.zeros(n_classes, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=500, history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(xa @ w + b, train_y) + l2 * w.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return (xb @ w + b).argmax(dim=1)


def knn_accuracy(train_f, train_y, test_f, test_y, n_classes: int, k: int = 20, tau: float = 0.07) -> float:
    return float((knn_predict(train_f, train_y, test_f, n_classes, k, tau) == test_y).float().mean())


def linear_accuracy(train_f, train_y, test_f, test_y, n_classes: int, l2: float = 1e-3) -> float:
    return float((linear_predict(train_f, train_y, test_f, n_classes, l2) == test_y).float().mean())


def probes(train_f, train_y, test_f, test_y, labels: np.ndarray, fraction: float, n_classes: int,
           label_seeds: int) -> dict:
    """kNN and linear probe accuracy (mean and sd over ``label_seeds`` stratified label subsets)."""
    from medrobust.data.fractions import label_subset

    knn, lin = [], []
    for s in range(label_seeds):
        idx = torch.as_tensor(label_subset(labels, fraction, s))
        knn.append(knn_accuracy(train_f[idx], train_y[idx], test_f, test_y, n_classes))
        lin.append(linear_accuracy(train_f[idx], train_y[idx], test_f, test_y, n_classes))
    return {"knn": np.mean(knn), "knn_sd": np.std(knn), "linear": np.mean(lin), "linear_sd": np.std(lin),
            "n_labeled": len(idx)}


def each_in_fresh_process(run_one, args) -> list[dict]:
    """``run_one(method, args)`` for every ``args.methods``, each in a fresh process (its own peak memory)."""
    ctx = mp.get_context("spawn")
    rows = []
    for method in args.methods:
        start = time.perf_counter()
        with ctx.Pool(1) as pool:
            rows.append(pool.apply(run_one, (method, args)))
        print(f"# {method}: done in {time.perf_counter() - start:.0f} s", flush=True)
    return rows


def run_one(method: str, args) -> dict:
    torch.set_num_threads(args.threads)
    from medrobust import registry
    from medrobust.engine.train import FitConfig, fit
    from medrobust.methods.contract import Encoders
    from medrobust.models.encoders import SmallCNN
    from medrobust.models.layers import image_stats

    ds = load(args.data)
    if ds.task.multilabel:
        raise SystemExit(f"{args.data}: multilabel tasks are not supported by this benchmark")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    shape = ds.image_shape
    mean, std = image_stats(ds.train.images)
    torch.manual_seed(args.seed)
    encoder = SmallCNN(shape[0], len(shape) - 1, shape[-1], mean, std)
    seconds, memory = 0.0, 0.0
    if method != RANDOM:
        cls = registry.get("method", method)
        model = cls(Encoders(encoder), cls.Params.model_validate(json.loads(args.params).get(method, {})),
                    seed=args.seed)
        cfg = FitConfig(steps=args.steps, batch_size=args.batch, lr=args.lr)
        base = reset_peak_rss()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        result = fit(model, {"image": torch.as_tensor(ds.train.images)}, cfg, seed=args.seed, device=device)
        seconds = result.seconds
        memory = (torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda"
                  else peak_rss_mib() - base)
    split = getattr(ds, args.split)
    train_f, eval_f = features(encoder, ds.train.images, device), features(encoder, split.images, device)
    train_y, eval_y = torch.as_tensor(ds.train.labels), torch.as_tensor(split.labels)
    std_feat = F.normalize(eval_f, dim=1).std(dim=0).mean().item() * eval_f.shape[1] ** 0.5
    return {"method": method, "seconds": seconds, "memory": memory, "std": std_feat, "n_train": len(ds.train),
            "n_eval": len(split), **probes(train_f, train_y, eval_f, eval_y, ds.train.labels, args.fraction,
                                           ds.task.n_outputs, args.label_seeds)}


def pretrain_probe_args(description: str, methods: list[str], params_example: str) -> argparse.ArgumentParser:
    """The options every pre-train-then-probe benchmark takes (budget, probes, threads, methods, parameters)."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--label-seeds", type=int, default=5, help="label subsets averaged over")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "2")))
    ap.add_argument("--methods", nargs="*", default=[RANDOM] + methods)
    ap.add_argument("--params", default="{}", help=f"JSON of method parameters, e.g. '{params_example}'")
    ap.add_argument("--split", choices=("val", "test"), default="val",
                    help="split the probes are scored on: select defaults on val; test only to report a final choice")
    return ap


def main(argv=None) -> None:
    ap = pretrain_probe_args(__doc__.splitlines()[0], ZOO, '{"rotation": {"views": {}}}')
    ap.add_argument("--data", default="synthetic", help="'synthetic' (sites A-C, 900 per site) or a MedMNIST .npz")
    ap.add_argument("--fraction", type=float, default=0.1, help="labeled fraction of the training split")
    args = ap.parse_args(argv)
    rows = each_in_fresh_process(run_one, args)
    r = rows[0]
    print(f"\ndata {args.data}: {r['n_train']} training images ({r['n_labeled']} labeled, {args.fraction:g}), "
          f"{r['n_eval']} {args.split}; {args.steps} steps x batch {args.batch}, lr {args.lr:g}; "
          f"probe accuracy = mean ± sd over {args.label_seeds} label subsets\n")
    print("| method | kNN acc | linear acc | pretrain time s | peak memory MiB | feature std·√D |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['method']} | {r['knn']:.3f} ± {r['knn_sd']:.3f} | {r['linear']:.3f} ± {r['linear_sd']:.3f} | "
              f"{r['seconds']:.1f} | {r['memory']:.0f} | {r['std']:.2f} |")


if __name__ == "__main__":
    main()
