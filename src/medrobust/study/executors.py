"""Run the study's grid on an executor: ``local`` (a pool of processes on this machine) or ``submitit`` (SLURM, or
submitit's ``local`` / ``debug`` clusters). ``sequential`` is the runner's own loop.

A *job* is every pending run that shares one pre-training (same method, pool and seed: the first run pre-trains
and caches the encoder, the others load it), or a single run without pre-training. A worker prepares the data
itself (deterministic), runs its job's runs with a fixed thread count and writes one record per finished run,
atomically, as ``incoming/<key>.json`` in the study folder; only the driver writes ``runs.sqlite`` (SQLite locking
on network file systems is unreliable), ingesting those files as jobs finish and at the start of every study (a
killed driver loses nothing a worker finished). A failed job is submitted again up to ``executor.retries`` times;
then its error and log are recorded in ``failed/<job>.txt`` and the rest of the grid goes on. Ctrl-C cancels the
submitted jobs.
"""

from __future__ import annotations

import os
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from medrobust.config import StudyConfig
from medrobust.fileio import atomic_write_text
from medrobust.record import RunRecord
from medrobust.study.spec import RunSpec
from medrobust.study.store import Store

INCOMING = "incoming"
FAILED = "failed"


@dataclass(frozen=True)
class Job:
    """Runs executed one after another in one worker (they share a pre-training)."""

    name: str
    keys: tuple[str, ...]
    labels: tuple[str, ...]


def jobs_of(pending: list[RunSpec]) -> list[Job]:
    """Group the pending runs by pre-training (``pretrain_key``); runs without one are a job each."""
    groups: dict[str, list[RunSpec]] = {}
    for run in pending:
        groups.setdefault(run.pretrain_key or run.key, []).append(run)
    return [Job(f"job-{k[:10]}", tuple(r.key for r in rs), tuple(r.label for r in rs)) for k, rs in groups.items()]


def deliver(study_dir: Path, record: RunRecord) -> None:
    """In a worker: hand a finished run's record to the driver (an atomic file in ``incoming/``)."""
    atomic_write_text(Path(study_dir) / INCOMING / f"{record.key}.json", record.to_json())


def check_visible(study_dir: Path) -> None:
    """In a worker: the study folder must be there (on SLURM, on a file system the nodes share)."""
    if not Path(study_dir).is_dir():
        raise FileNotFoundError(f"{study_dir} is not visible from this worker ({os.uname().nodename}): the study "
                                "folder must be on a file system the workers share")


def ingest(study_dir: Path, store: Store) -> list[RunRecord]:
    """Move every worker-written record of ``incoming/`` into the store (the one writer); returns them."""
    folder = Path(study_dir) / INCOMING
    out = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        record = RunRecord.from_json(path.read_text())
        store.put(record)
        path.unlink()
        (Path(study_dir) / "eval_state" / f"{record.key}.json").unlink(missing_ok=True)
        out.append(record)
    return out


def worker_gpus(device: str, workers: int, env: dict[str, str] | None = None) -> list[str | None]:
    """The GPU each ``local`` worker process is pinned to: the devices of ``CUDA_VISIBLE_DEVICES`` (or all that
    torch sees) dealt round-robin; ``None`` each for ``device: cpu`` or where there is no GPU."""
    env = os.environ if env is None else env
    if device == "cpu":
        return [None] * workers
    if env.get("CUDA_VISIBLE_DEVICES") is not None:
        visible = [d.strip() for d in env["CUDA_VISIBLE_DEVICES"].split(",") if d.strip()]
    else:
        import torch

        visible = [str(i) for i in range(torch.cuda.device_count())]
    return [visible[i % len(visible)] for i in range(workers)] if visible else [None] * workers


def _pin(gpus) -> None:
    """A ``local`` worker process's initializer: take one GPU for the process's life (before CUDA starts)."""
    gpu = gpus.get()
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu


class _Local:
    """A pool of ``workers`` spawned processes (spawn: no forked torch state), each pinned to one GPU of
    :func:`worker_gpus` when there are GPUs."""

    def __init__(self, workers: int, worker: Callable, gpus: list[str | None] | None = None):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        ctx = multiprocessing.get_context("spawn")
        queue = ctx.Queue()
        for gpu in gpus or [None] * workers:
            queue.put(gpu)
        self.pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_pin, initargs=(queue,))
        self.worker = worker

    def submit(self, job: Job, cfg: StudyConfig, threads: int):
        return self.pool.submit(self.worker, cfg, job.keys, threads)

    @staticmethod
    def done(handle) -> bool:
        return handle.done()

    @staticmethod
    def result(handle):
        return handle.result()

    @staticmethod
    def log_path(_handle) -> str:
        return "(the driver's stderr)"

    def cancel(self, handles) -> None:
        for h in handles:
            h.cancel()
        self.pool.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        self.pool.shutdown()


class _Submitit:
    """submitit's AutoExecutor; logs in ``jobs/`` of the study folder."""

    def __init__(self, cfg: StudyConfig, worker: Callable):
        self.worker = worker
        try:
            import submitit
        except ImportError:
            raise ImportError("executor 'submitit' needs the submitit package: pip install 'medrobust[slurm]' "
                              "(or pip install submitit)") from None
        e = cfg.executor
        self.ex = submitit.AutoExecutor(folder=cfg.study_dir / "jobs" / "%j", cluster=e.cluster)
        params = dict(timeout_min=e.time_min, gpus_per_node=e.gpus_per_job, name=f"medrobust-{cfg.name}")
        if e.cpus_per_task:
            params["cpus_per_task"] = e.cpus_per_task
        if e.mem_gb:
            params["mem_gb"] = e.mem_gb
        if e.cluster == "slurm":
            params.update({k: v for k, v in (("slurm_partition", e.partition), ("slurm_account", e.account)) if v})
            params.update({f"slurm_{k}": v for k, v in e.slurm.items()})
        self.ex.update_parameters(**params)
        self.errors: dict[int, BaseException] = {}

    def submit(self, job: Job, cfg: StudyConfig, threads: int):
        return self.ex.submit(self.worker, cfg, job.keys, threads)

    def done(self, handle) -> bool:
        try:
            return handle.done()
        except Exception as err:  # noqa: BLE001 - the debug cluster runs the job inside done(); result() raises it
            self.errors[id(handle)] = err
            return True

    def result(self, handle):
        if id(handle) in self.errors:
            raise self.errors.pop(id(handle))
        return handle.result()

    @staticmethod
    def log_path(handle) -> str:
        return str(getattr(handle.paths, "stderr", "?"))

    def cancel(self, handles) -> None:
        for h in handles:
            h.cancel(check=False)

    def close(self) -> None:
        pass


def run_grid(cfg: StudyConfig, pending: list[RunSpec], store: Store, worker: Callable,
             on_record: Callable[[RunRecord], None], log: Callable[[str], None], poll_s: float = 0.2) -> list[str]:
    """Run ``pending`` on ``cfg.executor`` (``local`` or ``submitit``), at most ``workers`` jobs at once; every
    finished run's record goes to ``store`` (and ``on_record``) as its job ends. ``worker(cfg, keys, threads)`` runs
    one job in a worker (a module-level function, pickled by name: the runner's ``run_job``)
    and writes each finished run's record with :func:`deliver`. Returns the names of the jobs that failed after
    their retries (each with ``failed/<job>.txt``)."""
    e = cfg.executor
    threads = e.threads or cfg.threads or 1
    gpus = worker_gpus(cfg.device, e.workers) if e.name == "local" else None
    backend = _Local(e.workers, worker, gpus) if e.name == "local" else _Submitit(cfg, worker)
    queue, running, tries, failed = list(jobs_of(pending)), {}, {}, []
    (cfg.study_dir / INCOMING).mkdir(parents=True, exist_ok=True)
    try:
        while queue or running:
            while queue and len(running) < e.workers:
                job = queue.pop(0)
                tries[job.name] = tries.get(job.name, 0) + 1
                running[job.name] = (job, backend.submit(job, cfg, threads))
            time.sleep(poll_s)
            for name, (job, handle) in list(running.items()):
                if not backend.done(handle):
                    continue
                del running[name]
                try:
                    backend.result(handle)
                    error = None
                except Exception:  # noqa: BLE001 - a worker's failure is recorded, the grid goes on
                    error = traceback.format_exc()
                for record in ingest(cfg.study_dir, store):  # what it finished, failed or not
                    on_record(record)
                if error is None:
                    continue
                left = [k for k in job.keys if k not in store]
                if tries[name] <= e.retries and left:
                    log(f"{name} ({', '.join(job.labels)}) failed, submitting it again "
                        f"({tries[name]} of {e.retries} retries): {error.strip().splitlines()[-1]}")
                    queue.append(Job(name, tuple(left), tuple(lb for k, lb in zip(job.keys, job.labels) if k in left)))
                    if e.name == "local" and "BrokenProcessPool" in error:
                        backend.close()
                        backend = _Local(e.workers, worker, gpus)
                else:
                    path = cfg.study_dir / FAILED / f"{name}.txt"
                    atomic_write_text(path, f"runs: {', '.join(job.labels)}\nlog: {backend.log_path(handle)}\n\n{error}")
                    log(f"{name} ({', '.join(job.labels)}) failed after {tries[name]} tries; error and log path in "
                        f"{path}")
                    failed.append(name)
    except KeyboardInterrupt:
        backend.cancel([h for _, h in running.values()])
        log(f"interrupted: {len(running)} submitted job(s) cancelled; finished runs are kept")
        raise
    backend.close()
    return failed
