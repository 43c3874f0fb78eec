"""retain_freed_memory: large tensors reuse the process's memory instead of page-faulting fresh pages.

Measured through the minor page faults of a fresh interpreter (ru_minflt): after a warm-up, allocating, filling and
freeing a 64 MiB tensor ten times faults ~16 000 pages each time with glibc's defaults and none once the
thresholds are raised.
"""

import subprocess
import sys

import pytest

from medrobust.engine import allocator

PROBE = """
import resource, sys, torch
from medrobust.engine.allocator import retain_freed_memory
applied = retain_freed_memory() if sys.argv[1] == "on" else False
for _ in range(10):  # warm-up in either mode (the first rounds touch the pages for the first time)
    x = torch.ones(16 * 2**20)
    del x
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    x = torch.ones(16 * 2**20)  # 64 MiB, written (filled), then freed
    del x
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""

linux_glibc = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc thresholds: Linux only")


def _faults(mode: str, env: dict | None = None) -> tuple[bool, int]:
    import os

    run_env = {k: v for k, v in os.environ.items() if k not in allocator.USER_SETTINGS}
    run_env.update(env or {})
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True,
                         env=run_env).stdout.split()
    return out[0] == "True", int(out[1])


@linux_glibc
def test_raised_thresholds_stop_refaulting_large_tensors():
    applied, on = _faults("on")
    _, off = _faults("off")
    assert applied
    pages = 10 * 64 * 2**20 // 4096
    assert off > 0.5 * pages, off  # the default: every 64 MiB tensor is fresh mmap pages
    assert on < 0.05 * pages, on


@linux_glibc
def test_a_user_setting_in_the_environment_is_left_alone():
    applied, faults = _faults("on", {"MALLOC_TRIM_THRESHOLD_": "131072"})
    assert not applied
    assert faults > 0.5 * 10 * 64 * 2**20 // 4096


def test_once_per_process(monkeypatch):
    calls = []
    monkeypatch.setattr(allocator, "_applied", None)
    monkeypatch.setattr(allocator, "_set_thresholds", lambda: calls.append(1) or True)
    assert allocator.retain_freed_memory() and allocator.retain_freed_memory()
    assert calls == [1]
