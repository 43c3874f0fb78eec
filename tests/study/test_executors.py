"""The study grid on executors: the same metrics sequentially, on local processes and as submitit jobs; failed
jobs retried, then recorded without stopping the grid; only the driver writes the store."""

import pytest

from medrobust.config import load_config
from medrobust.study import executors, runner
from medrobust.study.runner import run_study
from medrobust.study.store import Store
from conftest import tiny_overrides

ARMS = ["methods=[supervised, simclr]", "label_fractions=[0.5]", "threads=1"]


def study(out, *extra):
    cfg = load_config("configs/quick.yaml", [*tiny_overrides(out), *ARMS, *extra])
    run_study(cfg, log=lambda _line: None)
    return {r.key: r for r in Store(cfg.study_dir / "runs.sqlite").records()}, cfg


@pytest.mark.slow
def test_sequential_local_and_submitit_give_identical_metrics(tmp_path):
    pytest.importorskip("submitit", reason="submitit not installed: pip install 'medrobust[slurm]'")
    seq, _ = study(tmp_path / "seq")
    local, cfg = study(tmp_path / "local", "executor.name=local", "executor.workers=2")
    sub, _ = study(tmp_path / "sub", "executor.name=submitit", "executor.cluster=local", "executor.workers=2")
    assert len(seq) == 4 and set(seq) == set(local) == set(sub)
    for key, r in seq.items():
        assert local[key].metrics.model_dump() == r.metrics.model_dump(), r.arm
        assert sub[key].metrics.model_dump() == r.metrics.model_dump(), r.arm
    assert not any((cfg.study_dir / executors.INCOMING).iterdir())  # every worker record ingested
    assert list((tmp_path / "sub" / "jobs").iterdir())  # submitit's per-job logs live in the study folder


def test_jobs_group_runs_by_pre_training(tmp_path):
    cfg = load_config("configs/quick.yaml", [*tiny_overrides(tmp_path), "methods=[supervised, simclr]"])
    from medrobust.study.spec import expand

    runs, _ = expand(cfg, True, True)
    jobs = executors.jobs_of(runs)
    simclr = [j for j in jobs if "simclr" in j.labels[0]]
    assert len(simclr) == 2 and all(len(j.keys) == 2 for j in simclr)  # one per seed: both fractions share it
    assert sum(len(j.keys) for j in jobs) == len(runs) and len(jobs) == 2 + 4


def test_a_failed_job_is_retried_then_recorded_and_the_grid_goes_on(tmp_path, monkeypatch):
    pytest.importorskip("submitit", reason="submitit not installed: pip install 'medrobust[slurm]'")
    calls = {}
    real = runner.execute

    def flaky(run, *args, **kwargs):  # seed 0 of supervised fails once; simclr seed 1 always fails
        calls[run.label] = calls.get(run.label, 0) + 1
        if run.label == "supervised | 50% labels | seed 0" and calls[run.label] == 1:
            raise RuntimeError("worker lost")
        if run.label.startswith("simclr") and run.seed == 1:
            raise RuntimeError("out of memory")
        return real(run, *args, **kwargs)

    monkeypatch.setattr(runner, "execute", flaky)
    monkeypatch.setattr("pdb.post_mortem", lambda *_a: None)  # submitit's debug cluster opens pdb on a failure
    lines = []
    cfg = load_config("configs/quick.yaml", [*tiny_overrides(tmp_path / "s"), *ARMS, "executor.name=submitit",
                                             "executor.cluster=debug", "executor.retries=1"])
    report = run_study(cfg, log=lines.append)
    stored = {r.arm + str(r.seed) for r in Store(cfg.study_dir / "runs.sqlite").records()}
    assert stored == {"supervised0", "supervised1", "simclr0"}  # retried one made it; the grid went on
    assert calls["supervised | 50% labels | seed 0"] == 2 and calls["simclr | 50% labels | seed 1"] == 2
    failed = list((cfg.study_dir / executors.FAILED).glob("*.txt"))
    assert len(failed) == 1 and "out of memory" in failed[0].read_text() and "log: " in failed[0].read_text()
    assert any("submitting it again" in line for line in lines) and any("failed after 2 tries" in line for line in lines)
    assert "Partial report: 1 of the study's 4 runs" in report.read_text()
    monkeypatch.setattr(runner, "execute", real)  # a rerun submits only what is missing
    calls.clear()
    run_study(cfg, log=lines.append)
    assert len(Store(cfg.study_dir / "runs.sqlite").keys()) == 4


def test_submitit_missing_says_how_to_install(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_submitit(name, *a, **k):
        if name == "submitit":
            raise ImportError("No module named 'submitit'")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_submitit)
    cfg = load_config("configs/quick.yaml", [*tiny_overrides(tmp_path), "executor.name=submitit"])
    with pytest.raises(ImportError, match=r"pip install 'medrobust\[slurm\]'"):
        executors._Submitit(cfg, print)


def _pinned_gpu():
    import os
    import time

    time.sleep(0.5)  # long enough that both workers take tasks
    return os.getpid(), os.environ.get("CUDA_VISIBLE_DEVICES")


def test_local_workers_are_pinned_one_gpu_each():
    assert executors.worker_gpus("auto", 3, {"CUDA_VISIBLE_DEVICES": "2,5"}) == ["2", "5", "2"]
    assert executors.worker_gpus("cpu", 2, {"CUDA_VISIBLE_DEVICES": "0"}) == [None, None]
    assert executors.worker_gpus("auto", 2, {"CUDA_VISIBLE_DEVICES": ""}) == [None, None]
    backend = executors._Local(2, print, ["3", "7"])  # the pinning itself needs no GPU: it is the environment
    try:
        seen = [f.result() for f in [backend.pool.submit(_pinned_gpu) for _ in range(6)]]
    finally:
        backend.close()
    by_pid = {}
    for pid, gpu in seen:
        by_pid.setdefault(pid, set()).add(gpu)
    assert len(by_pid) == 2 and sorted(g for gs in by_pid.values() for g in gs) == ["3", "7"]  # one GPU per process


def die_once(cfg, keys, threads):
    """A worker whose process is killed (SIGKILL, as the OOM killer does) the first time it is called."""
    import os
    import signal

    marker = cfg.study_dir / "killed-once"
    if not marker.exists():
        marker.touch()
        os.kill(os.getpid(), signal.SIGKILL)
    return runner.run_job(cfg, keys, threads)


def test_a_killed_local_worker_is_retried_on_a_new_pool(tmp_path):
    from medrobust.study.spec import expand

    cfg = load_config("configs/quick.yaml", [*tiny_overrides(tmp_path / "k"), "methods=[supervised]", "seeds=[0]",
                                             "label_fractions=[0.5]", "threads=1", "executor.name=local",
                                             "executor.workers=1", "executor.retries=1"])
    cfg.study_dir.mkdir(parents=True)
    runs, _ = expand(cfg, True, True)
    store, lines, got = Store(cfg.study_dir / "runs.sqlite"), [], []
    failed = executors.run_grid(cfg, runs, store, die_once, got.append, lines.append)
    assert failed == [] and (cfg.study_dir / "killed-once").exists()
    assert [r.key for r in got] == [runs[0].key] and runs[0].key in store
    assert any("BrokenProcessPool" in line or "terminated abruptly" in line for line in lines), lines
