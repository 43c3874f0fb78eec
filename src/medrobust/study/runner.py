"""Run a study: prepare data once, train and evaluate every pending run, store each as it finishes.

Resumable by construction: finished runs are in the store (skipped on restart) and pre-trained encoders
are cached as checkpoints (reused by every label fraction and by a restarted study). Under ``torchrun``
all ranks train together; rank 0 evaluates and writes.
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from medrobust import __version__, registry
from medrobust.config import StudyConfig, dump
from medrobust.schema import Component
from medrobust.data.fractions import label_subset
from medrobust.engine import checkpoint, distributed
from medrobust.engine.train import FitConfig, fit
from medrobust.evaluation.robustness import evaluate, eps_key
from medrobust.fileio import atomic_write_text
from medrobust.data.base import to_unit
from medrobust.models.heads import Classifier
from medrobust.study.prepare import PreparedData, prepare
from medrobust.study.spec import RunSpec, expand
from medrobust.study.store import Store

Log = Callable[[str], None]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device: cuda was requested but no CUDA device is available (use device=cpu or auto)")
    if name == "cuda" and distributed.world_size() > 1:
        return torch.device("cuda", distributed.rank() % torch.cuda.device_count())
    return torch.device(name)


def build_encoders(cfg: StudyConfig, data: PreparedData, seed: int, pretraining_fusion: bool = False):
    """Fresh image and report encoders and fusion module (``None`` where absent), initialised from ``seed``.

    The fusion module comes from ``multimodal.fusion``; with ``pretraining_fusion`` (methods that pre-train
    through a fusion encoder, e.g. mmr) one is built with the default parameters when the config has none:
    the downstream models then use the pre-trained encoders with late fusion.
    """
    torch.manual_seed(seed)
    image_cls = registry.get("encoder", cfg.image_encoder.name)
    shape = data.dataset.image_shape
    image = image_cls(shape[0], len(shape) - 1, shape[-1], data.mean, data.std,
                      image_cls.Params.model_validate(cfg.image_encoder.params))
    text = fusion = None
    if data.has_text:
        text_cls = registry.get("encoder", cfg.text_encoder.name)
        text = text_cls(data.tokenizer.vocab_size, text_cls.Params.model_validate(cfg.text_encoder.params))
        spec = cfg.multimodal.fusion or (Component(name="fusion") if pretraining_fusion else None)
        if spec is not None:
            fusion_cls = registry.get("encoder", spec.name)
            fusion = fusion_cls(image.feature_dim, text.feature_dim, fusion_cls.Params.model_validate(spec.params))
    return image, text, fusion


def _modules(image, text, fusion) -> dict:
    return {"image": image} | ({"text": text} if text is not None else {}) | \
        ({"fusion": fusion} if fusion is not None else {})


def _pretrain(run: RunSpec, cfg: StudyConfig, data: PreparedData, image, text, fusion, device, ckpt_dir: Path,
              log: Log) -> tuple[float, bool]:
    """Pre-train (or load the cached) modules of a self-supervised arm in place; returns (seconds, cached)."""
    path = ckpt_dir / f"{run.method.name}-seed{run.seed}-{run.pretrain_key}.pt"
    cls = registry.get("method", run.method.name)
    use_text = "text" in cls.modalities
    use_fusion = getattr(cls, "uses_fusion", False)
    modules = _modules(image, text if use_text else None, fusion if use_fusion else None)
    if path.exists():
        checkpoint.load_modules(path, modules)
        return 0.0, True
    kwargs = {"fusion": fusion} if use_fusion else {}
    method = cls(image, text if use_text else None, cls.Params.model_validate(run.method.params), seed=run.seed,
                 **kwargs)
    log(f"pre-training {run.method.label} (seed {run.seed}) on {len(data.train)} training "
        f"{'image-report pairs' if use_text else 'images'}, {cfg.pretrain.steps} steps")
    quarter = max(1, cfg.pretrain.steps // 4)
    progress = lambda step, total: step % quarter == 0 and log(f"  pre-training {run.method.label}: step {step}/{total}")  # noqa: E731
    result = fit(method, data.train_tensors(labels=False, text=use_text, sites=True), cfg.pretrain, seed=run.seed,
                 device=device, progress=progress)
    if distributed.is_main():
        checkpoint.save_modules(path, modules, meta={"method": run.method.label, "seed": run.seed,
                                                     "losses": result.losses[:: max(1, len(result.losses) // 50)]})
    distributed.barrier()
    return result.seconds, False


def classifier_for(image, text, fusion, n_outputs: int):
    """Image-only, late-fusion or fusion-encoder classifier, by what is given."""
    if text is None:
        return Classifier(image, n_outputs)
    if fusion is not None:
        from medrobust.models.fusion import FusionClassifier

        return FusionClassifier(image, n_outputs, text, fusion)
    return Classifier(image, n_outputs, text)


class Arm:
    """The modules of one run, freshly initialised (or pre-trained) for each downstream task."""

    def __init__(self, run: RunSpec, cfg: StudyConfig, data: PreparedData, device, ckpt_dir: Path, log: Log):
        self.run, self.cfg, self.data, self.device, self.ckpt_dir, self.log = run, cfg, data, device, ckpt_dir, log
        self.method_cls = registry.get("method", run.method.name)
        ssl = self.method_cls.kind == "self-supervised"
        self.objective_cls = registry.get("method", self.method_cls.counterpart) if ssl else self.method_cls
        self.uses_text = "text" in self.objective_cls.modalities
        self.mode = run.mode if ssl else "full"
        self.linear = self.mode == "linear"
        self.pretrain_s, self.cached, self.first = 0.0, False, True

    def modules(self):
        uses_fusion = getattr(self.method_cls, "uses_fusion", False)
        image, text, fusion = build_encoders(self.cfg, self.data, self.run.seed, pretraining_fusion=uses_fusion)
        if self.method_cls.kind == "self-supervised":
            seconds, cached = _pretrain(self.run, self.cfg, self.data, image, text, fusion, self.device,
                                        self.ckpt_dir, self.log)
            if self.first:  # later tasks of the run reload what the first one pre-trained
                self.pretrain_s, self.cached, self.first = seconds, cached, False
        if self.cfg.multimodal.fusion is None:
            fusion = None  # late fusion downstream (a pre-training fusion module is not carried over)
        return image, (text if self.uses_text else None), (fusion if self.uses_text else None)

    def fit(self, objective: torch.nn.Module, tensors: dict, model: torch.nn.Module):
        if self.linear:
            model.freeze_encoders()
        budget = FitConfig(**self.cfg.finetune.model_dump(exclude={"mode", "knn_k", "knn_temperature"}))
        return fit(objective, tensors, budget, seed=self.run.seed, device=self.device)


def execute(run: RunSpec, cfg: StudyConfig, data: PreparedData, device: torch.device, ckpt_dir: Path,
            log: Log) -> dict | None:
    """Train and evaluate one run; the record on rank 0 (None on other ranks)."""
    arm = Arm(run, cfg, data, device, ckpt_dir, log)
    task = data.dataset.task
    model = classifier_for(*arm.modules(), task.n_outputs)
    defense, defense_s = None, 0.0
    if run.method.defense is not None:
        defense_cls = registry.get("defense", run.method.defense.name)
        defense = defense_cls(defense_cls.Params.model_validate(run.method.defense.params), seed=run.seed)
        start = time.perf_counter()  # e.g. the purifier trains here, on unlabeled training images only
        model = defense.wrap(model, torch.as_tensor(data.train.images), device)
        defense_s = time.perf_counter() - start
    objective = arm.objective_cls(model, task, arm.objective_cls.Params.model_validate(
        run.method.params if arm.objective_cls is arm.method_cls else {}))
    if defense is not None:
        objective = defense.objective(model, task, objective)
    labeled = label_subset(data.train.labels, run.fraction, run.seed)
    if arm.mode == "knn":  # no training: the labeled images are the neighbour bank
        from medrobust.engine.train import FitResult
        from medrobust.models.knn import KNNClassifier

        start = time.perf_counter()
        bank = data.train_tensors(labeled, labels=True, text=False)
        model = KNNClassifier(model.image_encoder.to(device), to_unit(bank["image"]).to(device),
                              bank["label"].to(device), task, cfg.finetune.knn_k, cfg.finetune.knn_temperature)
        finetune = FitResult(losses=[float("nan")], seconds=time.perf_counter() - start, samples=len(labeled))
    else:
        finetune = arm.fit(objective, data.train_tensors(labeled, labels=True, text=arm.uses_text), model)
    record = None
    if distributed.is_main():
        model = model.cpu().eval()
        inference_s = _inference_seconds(model, data.eval_data, cfg.evaluation.batch_size)
        start = time.perf_counter()
        state = ckpt_dir.parent / "eval_state" / f"{run.key}.json"
        metrics = evaluate(model, data.eval_data, cfg.evaluation, state_path=state)
        eval_s = time.perf_counter() - start
        record = {
            "key": run.key, "method": run.arm, "method_name": run.method.name, "fraction": run.fraction,
            "defense": None if defense is None else run.method.defense.name, "undefended": run.method.base_label,
            "randomized": bool(getattr(model, "randomized", False)),
            "seed": run.seed, "kind": arm.method_cls.kind, "counterpart": arm.method_cls.counterpart,
            "modalities": list(arm.objective_cls.modalities),
            "finetune_mode": arm.mode, "method_params": run.method.params,
            "metrics": metrics,
            "timing": {"pretrain_s": arm.pretrain_s, "pretrain_cached": arm.cached, "finetune_s": finetune.seconds,
                       "defense_s": defense_s, "inference_s": inference_s, "eval_s": eval_s},
            "info": {"n_labeled": int(len(labeled)), "n_train": len(data.train), "n_test": len(data.test),
                     "n_adv": metrics.pop("n_adversarial"),
                     "n_holdout": 0 if data.holdout is None else len(data.holdout),
                     "final_loss": float(np.mean(finetune.losses[-10:])) if arm.mode != "knn" else None},
        }
    if arm.uses_text and cfg.multimodal.tasks and defense is None and arm.mode == "full":  # tasks start from the undefended modules
        from medrobust.study.downstream import run_downstream

        start = time.perf_counter()
        tasks = run_downstream(arm, labeled)
        if record is not None:
            record["multimodal"] = tasks
            record["timing"]["tasks_s"] = time.perf_counter() - start  # retrieval + VQA: fine-tune and evaluate
    distributed.barrier()
    return record


def _inference_seconds(model: torch.nn.Module, ev, batch_size: int) -> float:
    """Seconds for one clean prediction of every in-site test image (with its report): the deployment cost."""
    from medrobust.data.base import to_unit

    start = time.perf_counter()
    with torch.no_grad():
        for s in range(0, len(ev.test_images), batch_size):
            x = to_unit(ev.test_images[s : s + batch_size])
            tokens = None if ev.test_tokens is None or not model.uses_text else torch.as_tensor(
                ev.test_tokens[s : s + batch_size])
            model(x, tokens) if tokens is not None else model(x)
    return time.perf_counter() - start


def setup_info(cfg: StudyConfig, data: PreparedData, skipped: list[dict], runtime_s: float | None,
               runs: list[RunSpec] = ()) -> dict:
    ds = data.dataset
    held = set(cfg.data.holdout_sites)
    task = f"{ds.task.kind}: {' / '.join(ds.task.label_names)}"
    def names(specs):
        return ", ".join(f"{a.name}{'' if not a.params else ' ' + str(a.params)}" for a in specs) or "none"

    attacks, sequence = names(cfg.evaluation.attacks), names(cfg.evaluation.sequence())
    return {
        "study": cfg.name, "data": data.describe(), "task": task,
        "train_sites": [s for s in ds.site_names if s not in held], "holdout_sites": list(cfg.data.holdout_sites),
        "methods": list(dict.fromkeys([r.arm for r in runs] or [m.label for m in cfg.methods])), "fractions": cfg.label_fractions, "seeds": cfg.seeds,
        "epsilons": [eps_key(e) for e in cfg.evaluation.epsilons],
        "reference_epsilon": eps_key(cfg.evaluation.reference_epsilon),
        "attack": f"L∞ image attacks on {cfg.evaluation.max_adversarial} fixed test images: curves {attacks} "
                  f"(every example, every ε); then the worst-case sequence {sequence} at ε "
                  f"{'all' if cfg.evaluation.worst_case_epsilons is None else cfg.evaluation.worst_case_epsilons}"
                  f" (×1/255; AutoAttack style: each "
                  f"attack only on examples still correct); robust accuracy = per-example worst case over all. "
                  f"Image+report models: the image is attacked with the report left clean",
        "corruptions": cfg.evaluation.corruptions, "severities": cfg.evaluation.severities,
        "encoder": f"image {cfg.image_encoder.name} {cfg.image_encoder.params or ''}".strip()
                   + (f"; report {cfg.text_encoder.name}" if data.has_text else ""),
        "budgets": f"pre-training {cfg.pretrain.steps} steps × batch {cfg.pretrain.batch_size}; fine-tuning "
                   f"{cfg.finetune.steps} steps × batch {cfg.finetune.batch_size} (pre-trained arms: "
                   f"{', '.join(cfg.finetune.mode)})",
        "downstream": _downstream(cfg),
        "skipped": skipped, "config_yaml": dump(cfg), "runtime_s": runtime_s,
        "versions": {"medrobust": __version__, "torch": torch.__version__, "python": platform.python_version()},
    }


def _downstream(cfg: StudyConfig) -> str:
    """What the image+report arms are fine-tuned and evaluated with, in words."""
    mm = cfg.multimodal
    model = ("late fusion: the (pre-trained) image and report encoders' features concatenated; a fusion "
             "transformer from pre-training (mmr, robust-mmr) is not used downstream" if mm.fusion is None else
             f"the fusion transformer ({mm.fusion.name} {mm.fusion.params or ''}".rstrip() + "): image patch and "
             "report tokens in one transformer, pre-trained by mmr / robust-mmr, fresh for the other arms")
    tasks = f"; tasks besides classification: {', '.join(mm.tasks)}" if mm.tasks else ""
    return model + tasks


def run_study(cfg: StudyConfig, log: Log = print) -> Path:
    """Run every pending run of ``cfg`` and write the report; returns the path of report.md."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    distributed.setup(device)
    study_dir = cfg.study_dir
    started = time.perf_counter()
    data = prepare(cfg)
    runs, skipped = expand(cfg, data.has_text)
    for s in skipped:
        log(f"skipping {s['method']}: {s['reason']}")
    store = Store(study_dir / "runs.sqlite") if distributed.is_main() else None
    if distributed.is_main():
        atomic_write_text(study_dir / "study.yaml", dump(cfg))
    done = distributed.broadcast_object(store.keys() if store else None)
    pending = [r for r in runs if r.key not in done]
    log(f"study '{cfg.name}': {len(runs)} runs, {len(runs) - len(pending)} already finished, "
        f"{len(pending)} to run; data: {data.describe()}")
    for i, run in enumerate(pending, 1):
        t0 = time.perf_counter()
        record = execute(run, cfg, data, device, study_dir / "checkpoints", log)
        if record is not None:
            store.put(record)
            (study_dir / "eval_state" / f"{run.key}.json").unlink(missing_ok=True)  # the run is stored
            m = record["metrics"]
            ref = eps_key(cfg.evaluation.reference_epsilon)
            log(f"[{i}/{len(pending)}] {run.label}: clean acc {m['clean']['acc']:.3f}; attacked examples "
                f"{m['attacks']['worst']['0']:.3f} -> {m['attacks']['worst'][ref]:.3f} at {ref}/255 "
                f"({time.perf_counter() - t0:.1f} s"
                f"{', pre-training cached' if record['timing']['pretrain_cached'] else ''})")
    if not distributed.is_main():
        return study_dir / "report" / "report.md"
    setup = setup_info(cfg, data, skipped, time.perf_counter() - started if pending else None, runs)
    setup["has_text"] = data.has_text
    atomic_write_text(study_dir / "setup.json", json.dumps(setup, indent=1))
    return write_study_report(study_dir, store)


def write_study_report(study_dir: Path, store: Store | None = None) -> Path:
    """(Re)build the report of the study in ``study_dir`` from its store, config and setup."""
    from medrobust.config import load_config
    from medrobust.report.render import write_report

    study_dir = Path(study_dir)
    for name in ("study.yaml", "setup.json", "runs.sqlite"):
        if not (study_dir / name).is_file():
            raise FileNotFoundError(f"{study_dir / name} is missing: {study_dir} is not a finished study folder "
                                    "(run `medrobust study` first)")
    cfg = load_config(study_dir / "study.yaml")
    setup = json.loads((study_dir / "setup.json").read_text())
    store = store or Store(study_dir / "runs.sqlite")
    runs, _ = expand(cfg, setup["has_text"])
    return write_report(store.records([r.key for r in runs]), setup, study_dir / "report")
