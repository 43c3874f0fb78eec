"""Keep freed memory in the process instead of handing it back to the OS after every large tensor.

glibc's ``malloc`` serves allocations over its mmap threshold (128 KiB, adapting up to 32 MiB) with fresh
``mmap`` pages and returns them on ``free``, and trims the heap top beyond 128 KiB, so every large tensor of an
attack or training step — 22 MiB for 256 volumes of 28³, 360 MiB for the first activation of the 3D cnn — is
page-faulted and zeroed by the kernel again. On this 2-core CPU that is most of a PGD step on volumes: ~40% of
its time was system time, and raising both thresholds made PGD-10 on 3D 2.5× faster for ~10% more peak memory
(``benchmarks/allocator.py``; the reason Intel's PyTorch guide preloads jemalloc or tcmalloc). This sets the two
glibc thresholds with ``mallopt`` at run time; no effect elsewhere (macOS, musl) or when the user set them
(``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_`` or ``GLIBC_TUNABLES`` in the environment).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc <malloc.h>
RETAIN_BYTES = 1 << 30  # allocations up to 1 GiB come from the heap; up to 1 GiB of free top is kept
USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")

_applied: bool | None = None


def retain_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds to :data:`RETAIN_BYTES` once per process; True when set."""
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
    return bool(mallopt(M_MMAP_THRESHOLD, RETAIN_BYTES)) and bool(mallopt(M_TRIM_THRESHOLD, RETAIN_BYTES))
