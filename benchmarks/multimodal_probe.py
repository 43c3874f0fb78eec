"""Multimodal pre-training: does it learn image features? Linear and kNN probes after clip, convirt, mmr, robust-mmr.

Pre-trains the study's default image encoder (``cnn``, width 16) with the report encoder (``transformer``, dim 64)
and, for mmr / robust-mmr, the fusion encoder (dim 64, depth 1), on the synthetic training pairs (sites A-C,
900 per site), for a fixed step budget (150 × 256, AdamW lr 2e-3 as in the study). Then the frozen *image*
features are probed with 10% of the training labels (task: normal vs abnormal; mean over label draws),
evaluated on the validation split (``--split``), exactly as ``benchmarks/ssl_zoo.py`` does (kNN k=20, linear = L-BFGS logistic
regression). ``random init`` is the untrained encoder. Time and peak memory of pre-training per method.

Run: OMP_NUM_THREADS=2 .venv/bin/python benchmarks/multimodal_probe.py [--steps 150] [--batch 256] [--params '{"robust-mmr": {"domain_weight": 0.5}}']
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ssl_zoo import (RANDOM, each_in_fresh_process, features, peak_rss_mib, pretrain_probe_args,  # noqa: E402
                     probes, reset_peak_rss)

METHODS = ["clip", "convirt", "mmr", "robust-mmr"]


def run_one(method: str, args) -> dict:
    torch.set_num_threads(args.threads)
    from medrobust import registry
    from medrobust.data.synthetic import SyntheticParams, load_synthetic
    from medrobust.data.tokenizer import ReportTokenizer
    from medrobust.engine.train import FitConfig, fit
    from medrobust.methods.contract import Encoders, info_of
    from medrobust.models.encoders import SmallCNN
    from medrobust.models.fusion import Fusion
    from medrobust.models.layers import image_stats
    from medrobust.models.text import TextParams, TextTransformer

    ds = load_synthetic(SyntheticParams(n_per_site=900, sites=["A", "B", "C"]))
    mean, std = image_stats(ds.train.images)
    torch.manual_seed(args.seed)
    image = SmallCNN(1, 2, 28, mean, std)
    seconds = memory = 0.0
    if method != RANDOM:
        tok = ReportTokenizer.train(ds.train.texts, vocab_size=1000, max_len=64)
        text = TextTransformer(tok.vocab_size, TextParams(max_len=64))
        cls = registry.get("method", method)
        fusion = Fusion(image.feature_dim, text.feature_dim) if info_of(cls).uses_fusion else None
        model = cls(Encoders(image, text, fusion), cls.Params.model_validate(json.loads(args.params).get(method, {})),
                    seed=args.seed)
        tensors = {"image": torch.as_tensor(ds.train.images), "tokens": torch.as_tensor(tok.encode(ds.train.texts)),
                   "site": torch.as_tensor(ds.train.sites).long()}
        base = reset_peak_rss()
        result = fit(model, tensors, FitConfig(steps=args.steps, batch_size=args.batch, lr=args.lr), seed=args.seed,
                     device=torch.device("cpu"))
        seconds, memory = result.seconds, peak_rss_mib() - base
    device = torch.device("cpu")
    split = getattr(ds, args.split)
    train_f, eval_f = features(image, ds.train.images, device), features(image, split.images, device)
    train_y, eval_y = torch.as_tensor(ds.train.labels), torch.as_tensor(split.labels)
    return {"method": method, "seconds": seconds, "memory": memory,
            **probes(train_f, train_y, eval_f, eval_y, ds.train.labels, 0.1, 2, args.label_seeds)}


def main(argv=None) -> None:
    ap = pretrain_probe_args(__doc__.splitlines()[0], METHODS, '{"robust-mmr": {"domain_weight": 0.5}}')
    args = ap.parse_args(argv)
    rows = each_in_fresh_process(run_one, args)
    rand = next((r["linear"] for r in rows if r["method"] == RANDOM), float("nan"))
    print(f"synthetic pairs, {args.steps} steps × batch {args.batch}, parameters {args.params}, "
          f"probes at 10% labels, scored on the {args.split} split "
          f"(mean over {args.label_seeds} label draws)\n")
    print("| method | kNN acc | linear acc (± sd) | linear − random init (pp) | pre-train time s | peak memory MiB |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['method']} | {r['knn']:.3f} | {r['linear']:.3f} ± {r['linear_sd']:.3f} | "
              f"{100 * (r['linear'] - rand):+.1f} | {r['seconds']:.1f} | {r['memory']:.0f} |")


if __name__ == "__main__":
    main()
