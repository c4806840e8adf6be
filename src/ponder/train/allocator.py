"""Keep the memory a training loop frees for its next step, instead of handing it back to the OS.

glibc's malloc serves large blocks with mmap and trims the freed top of its heap; the end-to-end phase frees and
allocates the same few GB every step, so every page was faulted in and zeroed again: 675k minor faults a step on
SmolLM2-135M, and a bfloat16 step took 5.96 s instead of 4.87 s (`benchmarks/results/tune-faults-s17.txt`).
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters
KEEP_BELOW = 1 << 30  # bytes: blocks up to this size come from the heap, and freed ones stay there


def keep_freed_memory() -> bool:
    """Raise glibc's trim and mmap thresholds; True if it took. Process-wide and for good (glibc cannot return to
    its adaptive thresholds): the process keeps its peak heap. Elsewhere than glibc, nothing happens."""
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c")).mallopt
    except (OSError, AttributeError, TypeError):
        return False
    return bool(mallopt(M_TRIM_THRESHOLD, KEEP_BELOW)) and bool(mallopt(M_MMAP_THRESHOLD, KEEP_BELOW))
