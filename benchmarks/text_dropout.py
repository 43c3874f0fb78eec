"""supervised-multimodal's ``text_dropout``, selected on the validation split.

The image+indication classifier of the default study (cnn width 16 + transformer dim 64, late fusion), trained as
the study trains it (150 steps × batch 64, AdamW lr 2e-3, augmented images) on 10% of the training labels (sites
A-C) with each training example's indication left out with probability ``text_dropout``; scored on the in-site
**validation** split (never the test split the study reports), with the indication and with it left out, mean
over seeds. The image-only ``supervised`` arm is the reference line.

Run: OMP_NUM_THREADS=2 .venv/bin/python benchmarks/text_dropout.py [--seeds 0 1 2] [--values 0 0.25 0.5 0.75]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--values", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75])
    ap.add_argument("--fraction", type=float, default=0.1)
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    from medrobust import registry
    from medrobust.config import Component
    from medrobust.data.base import Task, to_unit
    from medrobust.data.fractions import label_subset
    from medrobust.data.synthetic import SyntheticParams, load_synthetic
    from medrobust.data.tokenizer import ReportTokenizer
    from medrobust.engine.train import FitConfig, fit
    from medrobust.models.build import InputFacts, ModelSpecs, build_encoders, classifier_for
    from medrobust.models.layers import image_stats

    ds = load_synthetic(SyntheticParams(n_per_site=900, sites=["A", "B", "C"]))
    train, val = ds.train, ds.val
    tok = ReportTokenizer.train(train.texts + train.indications, vocab_size=1000, max_len=64)
    mean, std = image_stats(train.images)
    specs = ModelSpecs(Component(name="cnn", params={"width": 16}),
                       Component(name="transformer", params={"dim": 64, "depth": 1, "max_len": 64}), None)
    task = Task("binary", ("normal", "abnormal"))
    val_x, val_y = to_unit(val.images), torch.as_tensor(val.labels)
    val_tokens = torch.as_tensor(tok.encode(val.indications))
    print(f"supervised-multimodal at {args.fraction:g} labels, validation split ({len(val)} images), "
          f"mean over seeds {args.seeds}")
    print("| text_dropout | val acc with indication | val acc indication left out | final train loss |")
    print("|---|---|---|---|")
    rows = {}
    for value in [None] + args.values:  # None: the image-only supervised arm
        accs, without, losses = [], [], []
        for seed in args.seeds:
            labeled = label_subset(train.labels, args.fraction, seed)
            inputs = InputFacts(tuple(ds.image_shape), mean, std, None if value is None else tok.vocab_size)
            model = classifier_for(*build_encoders(specs, inputs, seed), 2)
            name = "supervised" if value is None else "supervised-multimodal"
            cls = registry.get("method", name)
            params = cls.Params() if value is None else cls.Params(text_dropout=value)
            objective = cls(model, task, params, seed=seed)
            tensors = {"image": torch.as_tensor(train.images[labeled]), "label": torch.as_tensor(train.labels[labeled])}
            if value is not None:
                tensors["tokens"] = torch.as_tensor(tok.encode([train.indications[i] for i in labeled]))
            result = fit(objective, tensors, FitConfig(steps=150, batch_size=64, lr=2e-3), seed=seed,
                         device=torch.device("cpu"))
            model.eval()
            with torch.no_grad():
                logits = model(val_x) if value is None else model(val_x, val_tokens)
                accs.append(float((logits.argmax(1) == val_y).double().mean()))
                if value is not None:
                    without.append(float((model(val_x, missing="report").argmax(1) == val_y).double().mean()))
            losses.append(float(np.mean(result.losses[-10:])))
        label = "image only (supervised)" if value is None else f"{value:g}"
        rows[label] = np.mean(accs)
        print(f"| {label} | {100 * np.mean(accs):.1f} | "
              f"{'—' if not without else f'{100 * np.mean(without):.1f}'} | {np.mean(losses):.3f} |", flush=True)
    best = max((k for k in rows if k != "image only (supervised)"), key=rows.get)
    print(f"best on validation: text_dropout = {best}")


if __name__ == "__main__":
    main()
