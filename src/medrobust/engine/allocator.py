"""Keep freed memory in the process instead of handing it back to the OS after every large tensor.

glibc's ``malloc`` serves allocations over its mmap threshold (128 KiB, adapting up to 32 MiB) with fresh
``mmap`` pages and returns them on ``free``, and trims the heap top beyond 128 KiB, so every large tensor of an
attack or training step — 22 MiB for 256 volumes of 28³, 360 MiB for the first activation of the 3D cnn — is
page-faulted and zeroed by the kernel again. On this 2-core CPU that is most of a PGD step on volumes: ~40% of
its time was system time, and raising both thresholds made PGD-10 on 3D 2.5× faster for ~10% more peak memory
(``benchmarks/allocator.py``; the reason Intel's PyTorch guide preloads jemalloc or tcmalloc). This sets the two
glibc thresholds with ``mallopt`` at run time; no effect elsewhere (macOS, musl) or when the user set them
(``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_`` or ``GLIBC_TUNABLES`` in the environment).

Trimming is switched off, not raised: a step whose tensors together exceed any finite trim threshold frees them
all at once and the heap top is handed back anyway — the stride-1 3D cnn attacking the evaluation's 256 volumes
(~2.6 GiB) or SimCLR training on 2 × 256 views (~4.5 GiB) still faulted millions of pages with a 1 GiB threshold
and ran at half speed. The cost: a process keeps its peak heap until it exits (it reuses it, it does not grow).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc <malloc.h>
#: allocations up to this size come from the heap: 1 GiB (glibc 2.36 takes it), else mallopt(3)'s documented
#: upper limit on 64-bit, 32 MiB, where a glibc refuses more
MMAP_THRESHOLDS = (1 << 30, 32 << 20)
NEVER_TRIM = -1  # mallopt(3): "Setting M_TRIM_THRESHOLD to -1 disables trimming completely"
USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")

_applied: bool | None = None


def retain_freed_memory() -> bool:
    """Raise glibc's mmap threshold (:data:`MMAP_THRESHOLDS`) and stop trimming, once per process; True when set."""
    global _applied
    if _applied is None:
        _applied = _set_thresholds()
    return _applied


def _set_thresholds() -> bool:
    if not sys.platform.startswith("linux") or any(k in os.environ for k in USER_SETTINGS):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    mmap_set = any(mallopt(M_MMAP_THRESHOLD, size) for size in MMAP_THRESHOLDS)  # the largest glibc accepts
    return bool(mallopt(M_TRIM_THRESHOLD, NEVER_TRIM)) and mmap_set
