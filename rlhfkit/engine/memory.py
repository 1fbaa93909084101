"""Keep freed CPU memory in the process, so a training step does not page-fault every tensor anew.

glibc's `malloc` serves blocks above its mmap threshold (128 KiB, raised dynamically up to
32 MiB) with `mmap` and gives them back with `munmap` when they are freed; freed heap memory at
the top of the heap is also returned once it exceeds the trim threshold. A training step
allocates and frees the same activation tensors every step (a (tokens × 4·d) MLP activation of
the anchor reward model is 7 MiB), so every step touches fresh pages: the kernel zeroes them and
takes a minor page fault per 4 KiB page. On the anchor reward-model workload (16 pairs, fp32, 2
threads) that was ≈ 7,000 minor faults and ≈ 13 ms of system CPU time per step; with freed
memory kept, ≈ 50 faults and ≈ 4 ms, and the step ≈ 3 % faster (`benchmarks/rm_throughput.py`).
This is what PyTorch's CPU performance guide gets from preloading jemalloc or tcmalloc; `mallopt`
does it from inside the process, with no extra library.

`keep_freed_memory()` sets glibc's mmap threshold to its maximum (32 MiB: smaller blocks come
from the heap and are reused) and the trim threshold to 1 GiB (freed heap memory stays mapped).
The cost: after a peak the process keeps up to that much freed memory mapped instead of
returning it (peak RSS itself does not grow). It is a no-op where `mallopt` is not glibc's
(macOS, Windows, musl). `EngineConfig.keep_freed_memory` (default on) applies it once per
process.
"""

from __future__ import annotations

import ctypes
import functools
import sys

__all__ = ["keep_freed_memory"]

_M_TRIM_THRESHOLD = -1  # glibc malloc.h
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's largest allowed value on 64-bit (HEAP_MAX_SIZE / 2)
TRIM_THRESHOLD = 1024 * 1024 * 1024


@functools.cache
def keep_freed_memory() -> bool:
    """Tune glibc malloc as the module docstring says (once per process); True when applied."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)  # the C library this process already uses
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # noqa: B018 -- glibc only (musl has mallopt as a stub)
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(
        mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
