"""Run a study: prepare data once, train and evaluate every pending run, store each as it finishes.

Resumable by construction: finished runs are in the store (skipped on restart) and pre-trained encoders
are cached as checkpoints (reused by every label fraction and by a restarted study). Under ``torchrun``
all ranks train together; rank 0 evaluates and writes.
"""

from __future__ import annotations

import platform
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from medrobust import __version__, registry
from medrobust.config import ConfigError, StudyConfig, dump, load_config
from medrobust.corruptions.sets import check_corruptions, corruption_set
from medrobust.data.base import to_unit
from medrobust.data.fractions import label_subset, oversample, rare_class
from medrobust.engine import distributed
from medrobust.engine.allocator import retain_freed_memory
from medrobust.engine.train import FitConfig, FitResult
from medrobust.evaluation.adversarial import eps_key, sequence_steps
from medrobust.evaluation.robustness import evaluate
from medrobust.fileio import atomic_write_text
from medrobust.methods.contract import augmented_corruptions_of, display_name_of, info_of
from medrobust.methods.supervised import views_first
from medrobust.models.build import ModelSpecs, classifier_for
from medrobust.models.knn import KNNClassifier
from medrobust.record import ComponentFacts, RecordError, RunRecord, Sizes, SkippedArm, StudyFacts, Timing
from medrobust.report.browser import snapshot_report
from medrobust.report.render import write_report
from medrobust.study.context import RunContext, decision_objective, pretrain, timed
from medrobust.study.downstream import run_downstream
from medrobust.study.executors import check_visible, deliver, ingest, jobs_of, run_grid
from medrobust.study.pools import Pool, pool_for
from medrobust.study.progress import Progress
from medrobust.study.projection import projection_lines
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


def model_specs(cfg: StudyConfig) -> ModelSpecs:
    return ModelSpecs(cfg.image_encoder, cfg.text_encoder, cfg.multimodal.fusion)


def finetune_budget(cfg: StudyConfig) -> FitConfig:
    return FitConfig(**cfg.finetune.model_dump(exclude={"mode", "knn_k", "knn_temperature", "class_balance"}))


def class_balanced(labeled: np.ndarray, labels: np.ndarray, task, mode: str, seed: int
                   ) -> tuple[np.ndarray, str | None]:
    """The labeled examples fine-tuning draws its batches from, and what balancing did (None: nothing): with
    ``mode`` oversample, or auto and a rare class (:func:`rare_class`), every class repeated up to the largest."""
    n_classes = len(task.label_names)
    if task.multilabel or mode == "off" or (mode == "auto" and rare_class(labels[labeled], n_classes) is None):
        return labeled, None
    counts = np.bincount(labels[labeled], minlength=n_classes)
    c = int(np.argmin(np.where(counts > 0, counts, counts.max() + 1)))
    out = oversample(labeled, labels[labeled], seed)
    return out, (f"class-balanced sampling: the rarest class, {task.label_names[c]!r}, is {counts[c]} of "
                 f"{len(labeled)} labeled examples ({counts[c] / len(labeled):.0%}); each class repeated up to "
                 f"{counts.max()} ({len(out)} in all)")


def arm_augmentations(run: RunSpec, objective_cls: type, objective_params) -> list[str]:
    """The corruptions that the run's training augmentations cover, sorted: a self-supervised arm's pre-training
    views and the fine-tuning objective's (none for a kNN probe, which does not train)."""
    method_cls = registry.get("method", run.method.name)
    seen = set(augmented_corruptions_of(objective_cls, objective_params)) if run.mode != "knn" else set()
    if info_of(method_cls).pretrains:
        seen |= set(augmented_corruptions_of(method_cls, method_cls.Params.model_validate(run.method.params)))
    return sorted(seen)


def execute(run: RunSpec, cfg: StudyConfig, data: PreparedData, device: torch.device, study_dir: Path,
            log: Log, phase: Log | None = None) -> RunRecord | None:
    """Pre-train (or load), fine-tune and evaluate one run; the record on rank 0 (None on other ranks). ``phase``
    is told what the run is doing (fine-tuning, attack curves, each worst-case step, corruptions)."""
    phase = phase or (lambda _msg: None)
    info = info_of(registry.get("method", run.method.name))
    specs = model_specs(cfg)
    pool = None if run.method.pool is None else pool_for(cfg, run.method.pool, data)
    pretrained = pretrain(run, specs, data, cfg.pretrain, device, study_dir / "checkpoints", log, pool) \
        if info.pretrains else None
    ctx = RunContext(run, data, specs, finetune_budget(cfg), device, pretrained, pool)
    task = data.dataset.task
    model = classifier_for(*ctx.modules(), task.n_outputs)
    defense, defense_s = None, 0.0
    if run.method.defense is not None:
        defense_cls = registry.get("defense", run.method.defense.name)
        defense = defense_cls(defense_cls.Params.model_validate(run.method.defense.params), seed=run.seed)
        # e.g. the purifier trains here, on unlabeled training images only
        model, defense_s = timed(defense.wrap, model, torch.as_tensor(data.train.images), device)
    objective_cls, method_cls = ctx.objective, registry.get("method", run.method.name)
    objective_params = objective_cls.Params.model_validate(run.method.params if objective_cls is method_cls else {})
    objective = objective_cls(model, task, objective_params, seed=run.seed)
    if defense is not None:  # the defense's objective sees the augmented batch (views drawn once, first)
        objective = views_first(objective, defense.objective(model, task, objective))
    labeled = label_subset(data.train.labels, run.fraction, run.seed, data.train.groups)
    trained, balance = (labeled, None) if run.mode == "knn" else \
        class_balanced(labeled, data.train.labels, task, cfg.finetune.class_balance, run.seed)
    phase(f"fine-tuning on {len(labeled)} labeled examples" + (" (class-balanced)" if balance else ""))
    if run.mode == "knn":  # no training: the labeled images are the neighbour bank
        start = time.perf_counter()
        bank = data.train_tensors(labeled, labels=True)
        model = KNNClassifier(model.image_encoder.to(device), to_unit(bank["image"]).to(device),
                              bank["label"].to(device), task, cfg.finetune.knn_k, cfg.finetune.knn_temperature)
        finetune = FitResult(losses=[float("nan")], seconds=time.perf_counter() - start, samples=len(labeled))
    else:
        finetune = ctx.fit(objective, data.train_tensors(trained, labels=True,
                                                         text="indication" if ctx.uses_text else None), model)
    metrics = inference_s = eval_s = None
    if distributed.is_main():
        model = model.cpu().eval()
        inference_s = _inference_seconds(model, data.eval_data, cfg.evaluation.batch_size)
        state = study_dir / "eval_state" / f"{run.key}.json"
        metrics, eval_s = timed(evaluate, model, data.eval_data, cfg.evaluation, progress=phase, state_path=state)
    tasks, tasks_s = None, 0.0
    mm = cfg.multimodal
    if info.uses_text and mm.tasks and defense is None and run.mode == "full":  # tasks start from the undefended modules
        tasks, tasks_s = timed(run_downstream, ctx, labeled, mm.tasks, cfg.evaluation, mm.retrieval_pairs,
                               mm.vqa_questions, mm.report_edits, mm.task_steps)
    distributed.barrier()
    if not distributed.is_main():
        return None
    return RunRecord(
        key=run.key, arm=run.arm, method=run.method.name,
        display_name=display_name_of(method_cls, cfg.image_encoder.name,
                                     method_cls.Params.model_validate(run.method.params)),
        method_params=run.method.params, augmented=arm_augmentations(run, objective_cls, objective_params),
        role=info.role, counterpart=decision_objective(run.method.name, run.method.decides_with_text)
        if info.pretrains else None,
        task_counterpart=info.counterpart if info.pretrains and info.uses_text else None,
        pretrained_on=info.modalities if info.pretrains else None, pool=run.method.pool,
        target_only=run.method.target_only_label if run.method.pool else None,
        modalities=info_of(objective_cls).modalities, finetune_mode=run.mode,
        defense=None if defense is None else run.method.defense.name, undefended=run.method.base_label,
        randomized=bool(getattr(model, "randomized", False)), fraction=run.fraction, seed=run.seed,
        class_balance=balance,
        metrics=metrics, tasks=tasks,
        timing=Timing(pretrain_s=0.0 if pretrained is None else pretrained.seconds,
                      pretrain_cached=pretrained is not None and pretrained.cached, defense_s=defense_s,
                      finetune_s=finetune.seconds, inference_s=inference_s, eval_s=eval_s, tasks_s=tasks_s),
        sizes=Sizes(n_labeled=int(len(labeled)), n_train=len(data.train), n_test=len(data.test),
                    n_adversarial=metrics.n_adversarial, n_holdout=0 if data.holdout is None else len(data.holdout),
                    final_loss=float(np.mean(finetune.losses[-10:])) if run.mode != "knn" else None))


def record_label(record: RunRecord) -> str:
    """``"simclr | 10% labels | seed 0"``, as :attr:`RunSpec.label`."""
    return f"{record.arm} | {record.fraction * 100:g}% labels | seed {record.seed}"


def resolve_corruptions(cfg: StudyConfig, data: PreparedData) -> StudyConfig:
    """``cfg`` with ``evaluation.corruptions: auto`` replaced by the data's modality's set (what is stored in
    study.yaml and hashed into run keys); an explicit list checked against the data's image shape."""
    shape = data.dataset.image_shape
    where = f"the {data.dataset.name} images" + (f" ({data.dataset.modality})" if data.dataset.modality else "")
    if cfg.evaluation.corruptions == "auto":
        names = corruption_set(data.dataset.modality, shape)
        return cfg.model_copy(update={"evaluation": cfg.evaluation.model_copy(update={"corruptions": names})})
    try:
        check_corruptions(cfg.evaluation.corruptions, shape, where)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return cfg


def load_pools(cfg: StudyConfig, data: PreparedData) -> list[Pool]:
    """Every pool an arm of ``cfg`` pre-trains on, loaded and checked against each of its arms' methods before any
    run starts (a source that fails to load, a 2D+3D mix for a one-geometry encoder, a pool without the reports or
    labels a method needs: each a :class:`ConfigError` naming the pool)."""
    pools = {}
    for m in cfg.methods:
        if m.pool is None:
            continue
        pool = pool_for(cfg, m.pool, data)  # loaded once per study (data.cache)
        info = info_of(registry.get("method", m.name))
        if not (info.uses_text and not data.has_text):  # such an arm is skipped (the target has no reports)
            pool.check(info)
        pools[m.pool] = pool
    return list(pools.values())


def _inference_seconds(model: torch.nn.Module, ev, batch_size: int) -> float:
    """Seconds for one clean prediction of every in-site test image (with its report): the deployment cost."""
    start = time.perf_counter()
    with torch.no_grad():
        for s in range(0, len(ev.test_images), batch_size):
            x = to_unit(ev.test_images[s : s + batch_size])
            tokens = None if ev.test_tokens is None or not model.uses_text else torch.as_tensor(
                ev.test_tokens[s : s + batch_size])
            model(x, tokens) if tokens is not None else model(x)
    return time.perf_counter() - start


def class_shares(labels: np.ndarray, task) -> list[float]:
    """Each class's share of ``labels`` (single-label tasks; [] for multilabel)."""
    if task.multilabel or not len(labels):
        return []
    counts = np.bincount(np.asarray(labels), minlength=len(task.label_names))
    return [round(float(c) / counts.sum(), 4) for c in counts]


def study_facts(cfg: StudyConfig, data: PreparedData, runs: list[RunSpec], skipped: list[dict],
                invocation_s: float | None, pools: list[Pool] = ()) -> StudyFacts:
    """The facts the report is written from (the words are the report's)."""
    ds, ev = data.dataset, cfg.evaluation
    held = set(cfg.data.holdout_sites)
    comp = lambda c: ComponentFacts(name=c.name, params=c.params)  # noqa: E731
    return StudyFacts(
        study=cfg.name, data=data.describe(), data_notes=list(data.notes) + [n for p in pools for n in p.notes],
        pools=[p.describe() for p in pools], task_kind=ds.task.kind, label_names=list(ds.task.label_names),
        class_shares=class_shares(data.test.labels, ds.task),
        train_sites=[s for s in ds.site_names if s not in held], holdout_sites=list(cfg.data.holdout_sites),
        arms=list(dict.fromkeys([r.arm for r in runs] or [m.label for m in cfg.methods])),
        fractions=cfg.label_fractions, seeds=cfg.seeds, epsilons=[eps_key(e) for e in ev.epsilons],
        reference_epsilon=eps_key(ev.reference_epsilon), attacks=[comp(a) for a in ev.attacks],
        worst_case=[ComponentFacts(name=step.label, params=step.spec.params)  # as it runs (2-class: no DLR)
                    for step in sequence_steps(ev.sequence(), ds.task)],
        worst_case_epsilons=None if ev.worst_case_epsilons is None else [eps_key(e) for e in ev.worst_case_epsilons],
        max_adversarial=min(ev.max_adversarial, len(data.test)), corruptions=ev.corruptions, severities=ev.severities,
        corruption_families={c: registry.get("corruption", c).family for c in ev.corruptions},
        image_encoder=comp(cfg.image_encoder), text_encoder=comp(cfg.text_encoder) if data.has_text else None,
        pretrain=cfg.pretrain.model_dump(), finetune=cfg.finetune.model_dump(),
        fusion=None if cfg.multimodal.fusion is None else comp(cfg.multimodal.fusion), tasks=cfg.multimodal.tasks,
        has_text=data.has_text, has_indications=data.has_indications,
        context_name=ds.context_name,
        skipped=[SkippedArm(arm=s["method"], reason=s["reason"]) for s in skipped],
        config_yaml=dump(cfg), invocation_s=invocation_s, expected_runs=len(runs),
        versions={"medrobust": __version__, "torch": torch.__version__, "python": platform.python_version()})


def run_study(cfg: StudyConfig, log: Log = print) -> Path:
    """Run every pending run of ``cfg`` and write the report; returns the path of report.md."""
    retain_freed_memory()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    distributed.setup(device)
    study_dir = cfg.study_dir
    started = time.perf_counter()
    data = prepare(cfg)
    cfg = resolve_corruptions(cfg, data)
    runs, skipped = expand(cfg, data.has_text, data.has_indications)
    for s in skipped:
        log(f"skipping {s['method']}: {s['reason']}")
    pools = load_pools(cfg, data)
    store = Store(study_dir / "runs.sqlite") if distributed.is_main() else None
    if distributed.is_main():
        atomic_write_text(study_dir / "study.yaml", dump(cfg))
        # the facts before any run, so `medrobust report` can render a study that was stopped midway (partial)
        atomic_write_text(study_dir / "setup.json", study_facts(cfg, data, runs, skipped, None, pools).model_dump_json(indent=1))
    if store is not None:
        ingest(study_dir, store)  # records workers finished before a driver was stopped
    done = distributed.broadcast_object(store.keys() if store else None)
    pending = [r for r in runs if r.key not in done]
    log(f"study '{cfg.name}': {len(runs)} runs, {len(runs) - len(pending)} already finished, "
        f"{len(pending)} to run; data: {data.describe()}")
    for note in data.notes:
        log(f"data: {note}")
    for pool in pools:
        log(f"pool {pool.describe()}")
        for note in pool.notes:
            log(f"data: {note}")

    if pending and distributed.is_main():
        for line in projection_lines(cfg, data, len(pending), len({r.pretrain_key for r in pending} - {None})):
            log(line)
    ref = eps_key(cfg.evaluation.reference_epsilon)
    progress = Progress(len(pending), log) if distributed.is_main() else None
    say = progress.say if progress else log

    def finished(record: RunRecord, seconds: float | None) -> None:
        worst = record.metrics.attacks.get("worst")
        took = f"{seconds:.1f} s" if seconds is not None else f"{record.timing.total_s:.1f} s in its worker"
        progress.run_finished(
            f"{record_label(record)}: clean acc {record.metrics.clean.acc:.3f}; "
            + (f"attacked examples {worst['0']:.3f} -> {worst[ref]:.3f} at {ref}/255" if worst else
               "did not beat the majority class: attacks and corruptions skipped")
            + f" ({took}{', pre-training cached' if record.timing.pretrain_cached else ''}")

    if cfg.executor.name != "sequential" and pending:
        if distributed.world_size() > 1:
            raise ConfigError(f"executor '{cfg.executor.name}' spreads runs over processes; under torchrun use "
                              "executor.name=sequential (DDP inside each run)")
        say(f"executor {cfg.executor.name}: {len(jobs_of(pending))} jobs, {cfg.executor.workers} at once")
        try:
            failed = run_grid(cfg, pending, store, run_job, lambda r: finished(r, None), say)
        finally:
            progress.close()
        if failed:
            say(f"{len(failed)} job(s) failed (see {study_dir / 'failed'}); the report shows the runs that finished; "
                "run the study command again to retry what is missing")
        pending = []
    try:
        for run in pending:
            t0 = time.perf_counter()
            if progress:
                progress.run_started(run.label)
            record = execute(run, cfg, data, device, study_dir, say, progress.phase if progress else None)
            if record is not None:
                store.put(record)
                (study_dir / "eval_state" / f"{run.key}.json").unlink(missing_ok=True)  # the run is stored
                finished(record, time.perf_counter() - t0)
    finally:
        if progress:
            progress.close()
    if not distributed.is_main():
        return study_dir / "report" / "report.md"
    facts = study_facts(cfg, data, runs, skipped, time.perf_counter() - started if pending else None, pools)
    atomic_write_text(study_dir / "setup.json", facts.model_dump_json(indent=1))
    return write_study_report(study_dir, store)


_PREPARED: dict[str, tuple] = {}  # per worker process: the prepared data of the study, read once


def run_job(cfg: StudyConfig, keys: tuple[str, ...], threads: int) -> list[str]:
    """An executor's worker (study.executors): run ``keys`` of the study ``cfg`` with ``threads`` CPU threads, each
    finished run's record delivered to the driver as a file. Returns the keys run."""
    retain_freed_memory()
    torch.set_num_threads(threads)
    check_visible(cfg.study_dir)
    tag = cfg.model_dump_json()
    if tag not in _PREPARED:
        data = prepare(cfg)
        _PREPARED.clear()
        _PREPARED[tag] = (data, resolve_corruptions(cfg, data))
    data, cfg = _PREPARED[tag]
    by_key = {r.key: r for r in expand(cfg, data.has_text, data.has_indications)[0]}
    device = resolve_device(cfg.device)
    for key in keys:
        deliver(cfg.study_dir, execute(by_key[key], cfg, data, device, cfg.study_dir, lambda _line: None))
    return list(keys)


def write_study_report(study_dir: Path, store: Store | None = None, log: Log | None = None) -> Path:
    """(Re)build the report of the study in ``study_dir`` from its store, config and facts; for a study stopped
    midway, from the runs that finished (the report says it is partial, and ``log`` how many runs are missing)."""
    study_dir = Path(study_dir)
    for name in ("study.yaml", "setup.json", "runs.sqlite"):
        if not (study_dir / name).is_file():
            raise FileNotFoundError(f"{study_dir / name} is missing: {study_dir} is not a finished study folder "
                                    "(run `medrobust study` first)")
    cfg = load_config(study_dir / "study.yaml")
    try:
        facts = StudyFacts.model_validate_json((study_dir / "setup.json").read_text())
    except ValueError:
        raise RecordError(f"{study_dir / 'setup.json'} was written by an older medrobust; run the study command "
                          "again (finished runs are kept) to rewrite it") from None
    store = store or Store(study_dir / "runs.sqlite")
    runs, _ = expand(cfg, facts.has_text, facts.has_indications)
    records = store.records([r.key for r in runs])
    if log is not None and len(records) < len(runs):
        log(f"partial study: {len(runs) - len(records)} of {len(runs)} runs have not finished; the report shows the "
            f"{len(records)} that have (run the study command again to complete it)")
    if not records:
        raise RecordError(f"{study_dir}: no run has finished yet; nothing to report")
    path = write_report(records, facts, study_dir / "report")
    try:
        snapshot_report(path.parent)  # report.png, where a headless Chromium exists
    except RuntimeError as err:  # the report is written; only its screenshot is missing
        (log or print)(f"report.png not written: {err}")
    return path
