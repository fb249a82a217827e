"""Process memory hygiene: let freed tensor memory go back to the operating system.

glibc raises its mmap threshold each time a large block is freed (up to 32 MiB on 64-bit), after which the
profile's per-batch tensors of a few MiB come from the heap instead of fresh mappings. The heap fragments and
never shrinks, so a long corpus pass grew the process by hundreds of MiB over its batches although every batch's
tensors were released. Fixing the threshold (which also turns the dynamic adjustment off) keeps large blocks
in mappings that are unmapped on free; measured by `bench/probe_engine.py --only memory`.
"""

from __future__ import annotations

import ctypes
import logging
import sys

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1  # mallopt parameters of glibc's malloc.h
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 1 << 20  # blocks from 1 MiB up are mapped (a tensor of 512 x 512 floats, for scale)

_applied = False


def return_freed_memory_to_os() -> bool:
    """Fix glibc's mmap and trim thresholds for this process (once); False where there is no glibc."""
    global _applied
    if _applied:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        ok = libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
        ok = ok and libc.mallopt(_M_TRIM_THRESHOLD, 2 * MMAP_THRESHOLD) == 1
    except (OSError, AttributeError):  # musl or another libc without mallopt
        return False
    if not ok:
        log.debug("mallopt refused the memory thresholds; keeping glibc's defaults")
    _applied = ok
    return ok
