"""glibc allocator settings for chip-by-chip work (prediction, training).

glibc returns freed memory above 128 KiB to the kernel (``munmap`` / heap trimming), so every
chip-sized array and every activation tensor is a fresh mapping whose pages the kernel faults
in and zeroes again. On the 2-core test machine that was 40 % of predict's CPU time (system
time). Raising the mmap and trim thresholds keeps those buffers in the process for reuse: memory
stays bounded by the largest working set (one band of windows), predict runs 15-40 % faster.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

__all__ = ["tune_malloc"]

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: allocations above this still get their own mapping (glibc's maximum on 64-bit is 32 MiB
#: for the dynamic threshold; mallopt accepts more)
MMAP_THRESHOLD = 64 * 2**20
#: free memory at the top of the heap above this is given back to the kernel
TRIM_THRESHOLD = 512 * 2**20
_done = False


def tune_malloc() -> bool:
    """Apply the thresholds once per process; returns whether they are in effect.

    Does nothing outside Linux/glibc, when ``GEOSEG_MALLOC_TUNING=0``, or when the user set
    ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` themselves.
    """
    global _done
    if _done:
        return True
    if (
        not sys.platform.startswith("linux")
        or os.environ.get("GEOSEG_MALLOC_TUNING", "1") == "0"
        or "MALLOC_MMAP_THRESHOLD_" in os.environ
        or "MALLOC_TRIM_THRESHOLD_" in os.environ
    ):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others: no mallopt
        return False
    _done = bool(
        mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
    return _done
