"""Grid wall time on the `local` executor vs `sequential`, and the executor's overhead per run, in one process.

    python benchmarks/executor_grid.py [CONFIG] [KEY=VALUE ...]     (default: configs/quick.yaml, the demo)

Runs the study twice into temporary folders — sequentially with `threads` = the machine's cores, then `local` with
2 workers × cores/2 threads — and prints both wall times, their ratio, and the overhead per run of the executor
(its wall time minus the mean per-worker sum of the runs' own timed stages, over the runs).
"""

import os
import sys
import tempfile
import time

from medrobust.config import load_config
from medrobust.study.runner import run_study
from medrobust.study.store import Store


def timed_study(config, overrides):
    cfg = load_config(config, overrides)
    start = time.perf_counter()
    run_study(cfg, log=lambda _line: None)
    wall = time.perf_counter() - start
    records = Store(cfg.study_dir / "runs.sqlite").records()
    return wall, sum(r.timing.total_s for r in records), len(records)


def main(argv):
    config = argv[0] if argv and not "=" in argv[0] else "configs/quick.yaml"
    extra = [a for a in argv if "=" in a]
    cores = os.cpu_count() or 2
    with tempfile.TemporaryDirectory() as tmp:
        seq, seq_runs, n = timed_study(config, [f"output_dir={tmp}/seq", f"threads={cores}", *extra])
        loc, loc_runs, _ = timed_study(config, [f"output_dir={tmp}/local", "executor.name=local", "executor.workers=2",
                                                f"executor.threads={max(1, cores // 2)}", *extra])
    print(f"{n} runs on {cores} cores: sequential ({cores} threads) {seq:.1f} s; local 2 workers × "
          f"{max(1, cores // 2)} threads {loc:.1f} s; sequential / local = {seq / loc:.2f}")
    print(f"run stages summed: sequential {seq_runs:.1f} s, local {loc_runs:.1f} s (per run {loc_runs / n:.1f} s, "
          f"{seq_runs / n:.1f} s); executor overhead per run ≈ {(loc - loc_runs / 2) / n:.2f} s "
          "(local wall − half the summed run time, per run: spawn, data preparation per worker, ingest)")


if __name__ == "__main__":
    main(sys.argv[1:])
