"""Keep freed memory inside the process instead of handing it back to the kernel.

A training step (and each batch of importance samples) allocates and frees the same few large
buffers over and over. With glibc's default settings many of them come back as fresh mmap'd or
trimmed pages, so each step pays hundreds of page faults (about 300 per step of freyvae's trainer
here, by getrusage; none with this setting). Raising the two thresholds keeps the pages warm;
tests/test_heap.py shows the mechanism.
"""

from __future__ import annotations

import ctypes
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameter numbers
MMAP_THRESHOLD_MAX = 32 << 20  # the largest value glibc accepts on 64-bit systems


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed buffers up to 32 MiB; False where that does not apply."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(mallopt(M_TRIM_THRESHOLD, 2**31 - 1)) and bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX))
