"""retain_freed_memory: large tensors reuse the process's memory instead of page-faulting fresh pages.

Measured through the minor page faults of a fresh interpreter (ru_minflt): after a warm-up, allocating, filling and
freeing a 64 MiB tensor ten times faults ~16 000 pages each time with glibc's defaults and none once the
thresholds are raised; and an attack step of the 3D cnn whose tensors together exceed 1 GiB keeps its memory too.
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


def _faults(mode: str, env: dict | None = None, probe: str = PROBE) -> tuple[bool, int]:
    import os

    run_env = {k: v for k, v in os.environ.items() if k not in allocator.USER_SETTINGS}
    run_env.update(env or {})
    out = subprocess.run([sys.executable, "-c", probe, mode], capture_output=True, text=True, check=True,
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


STEP_PROBE = """
import resource, sys, torch
from medrobust.engine.allocator import retain_freed_memory
applied = retain_freed_memory() if sys.argv[1] == "on" else False
torch.set_num_threads(1)
torch.manual_seed(0)
net = torch.nn.Sequential(torch.nn.Conv3d(1, 16, 3, 1, 1), torch.nn.GroupNorm(8, 16), torch.nn.ReLU(),
                          torch.nn.Conv3d(16, 32, 3, 2, 1)).requires_grad_(False)
x = torch.rand(256, 1, 28, 28, 28)
def step():  # an attack step: the input gradient
    xr = x.clone().requires_grad_(True)
    torch.autograd.grad(net(xr).square().sum(), xr)
step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):
    step()
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@linux_glibc
def test_an_attack_step_over_a_gibibyte_keeps_its_memory():
    """The stride-1 3D cnn's first blocks on 256 volumes of 28³ (the evaluation's batch): ~3 GiB alive per step.
    A 1 GiB trim threshold (the first version of the setting) still handed it back every step: ~8 first
    feature maps' worth of faults in 3 steps, measured; with trimming off 1-2."""
    trim_1g = {"MALLOC_MMAP_THRESHOLD_": str(2**30), "MALLOC_TRIM_THRESHOLD_": str(2**30)}
    _, raised = _faults("on", trim_1g, probe=STEP_PROBE)  # not applied: the user's setting is kept
    applied, on = _faults("on", probe=STEP_PROBE)
    feature_map_pages = 256 * 16 * 28**3 * 4 // 4096
    assert applied
    assert raised > 5 * feature_map_pages, raised
    assert on < 3 * feature_map_pages, on


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
