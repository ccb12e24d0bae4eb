"""Peak RSS of this process, for benchmark children.

``getrusage``'s ``ru_maxrss`` is not a child's own peak on Linux: ``execve`` keeps the peak of
the memory the child started with, a forked (or vforked) copy of its parent, every page counted,
so a benchmark parent that holds a full-frame forward pass or has imported torch lifts every
child's figure. ``VmHWM`` in ``/proc/self/status`` is the program's own peak; elsewhere the
``ru_maxrss`` figure is the only one there is.
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path


def status_mb(key: str = "VmHWM") -> float:
    """``key`` of ``/proc/self/status`` in MB (``VmHWM``: peak, ``VmRSS``: now); NaN if absent."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith(key + ":"):
                return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def peak_rss_mb() -> float:
    """This program's peak resident memory in MB (``VmHWM`` on Linux, else ``ru_maxrss``)."""
    if sys.platform.startswith("linux"):
        return status_mb("VmHWM")
    scale = 1024 * 1024 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB elsewhere
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale, 1)
