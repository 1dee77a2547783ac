"""Freed tensor memory stays in the process for the next step (Linux with glibc).

glibc's malloc serves a large block (from 128 KiB, a threshold that adapts up to 32 MiB) with its own `mmap` and
gives it back to the kernel with `munmap` when it is freed; a heap top that holds more than 128 KiB free is
trimmed as well. A training step on the CPU allocates and frees activations and gradients of up to hundreds of
MB, so the next step asks the kernel for the same memory again, and every page of it is faulted in and zeroed
anew: 80,000 to 150,000 page faults per step on the models of llmctl's benchmarks (`python
tests/bench_train.py --allocator` prints what keeping them buys).

`keep_freed_memory` raises both thresholds with `mallopt`, so freed blocks stay in the heap and the next step
reuses them: the process keeps the memory of its busiest step, which it needed anyway, instead of returning it
between steps. Blocks of 1 GiB or more still get their own mapping, and at most 2 GiB of free memory stays at
the heap's top. GPUs have their own caching allocator; this is for the CPU side.

Nothing is changed where the user has chosen: glibc's malloc tunables or environment variables, or another
allocator preloaded (jemalloc, tcmalloc, mimalloc). `LLMCTL_KEEP_FREED_MEMORY=0` leaves glibc's defaults.
"""

from __future__ import annotations

import os
import platform
import sys

# mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD = 1 << 30  # blocks below 1 GiB come from the heap
TRIM_THRESHOLD = 2**31 - 1  # up to 2 GiB free at the heap's top stays (mallopt takes a C int)

OFF_SWITCH = "LLMCTL_KEEP_FREED_MEMORY"
_USER_VARIABLES = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_")
_OTHER_ALLOCATORS = ("jemalloc", "tcmalloc", "mimalloc")

_done: str | None = None


def keep_freed_memory() -> str | None:
    """Raise glibc's mmap and trim thresholds for this process (once); the line that says what was done, or
    None where nothing was (not glibc, or the user chose the allocator's settings)."""
    global _done
    if _done is not None:
        return _done
    if not _applies():
        return None
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.mallopt.restype = ctypes.c_int
        ok = libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and libc.mallopt(_M_TRIM_THRESHOLD,
                                                                                      TRIM_THRESHOLD) == 1
    except (OSError, AttributeError):
        return None
    if not ok:
        return None
    _done = ("freed tensors stay in the process for the next step (glibc malloc: blocks under 1 GiB from the "
             "heap, trimmed above 2 GiB free)")
    return _done


def _applies() -> bool:
    """glibc on Linux, and the user chose nothing: no off switch, no malloc tunables, no other allocator."""
    if os.environ.get(OFF_SWITCH, "").strip().lower() in ("0", "false", "no", "off"):
        return False
    if sys.platform != "linux" or platform.libc_ver()[0] != "glibc":
        return False
    if any(name in os.environ for name in _USER_VARIABLES) or "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    return not any(name in os.environ.get("LD_PRELOAD", "") for name in _OTHER_ALLOCATORS)
