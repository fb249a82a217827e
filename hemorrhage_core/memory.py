"""Process memory hygiene: give memory freed by a finished batch back to the operating system.

glibc keeps freed heap memory for reuse and raises its mmap threshold after large frees (up to 32 MiB), so the
per-batch tensors of a few MiB come from a heap that fragments and never shrinks: a corpus pass grew the process
by hundreds of MiB over its batches although every batch's tensors were released. `malloc_trim(0)` after each
batch returns the free pages (also those inside the heap) to the system. Fixing the mmap threshold instead kept
memory flat too but made every forward pass 15-30 % slower (fresh zeroed pages for each large tensor), so it is
not used. Measured by `bench/probe_engine.py --only memory`.
"""

from __future__ import annotations

import ctypes
import functools
import sys


@functools.cache
def _malloc_trim():
    """glibc's malloc_trim, or None where there is no glibc (macOS, musl)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def release_freed_memory() -> bool:
    """Return free heap pages to the OS (cheap: no allocation is moved). False where it is not available."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
