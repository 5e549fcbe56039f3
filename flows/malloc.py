"""glibc's allocator kept from handing batch-sized blocks back to the kernel.

Every step of the flow allocates and frees blocks of a few hundred kilobytes
a batch: feature matrices, model inputs and outputs, the pickles a cluster
sends between processes. glibc serves a block of 128 KiB or more by ``mmap``
and unmaps it when freed, and trims the top of the heap once 128 KiB lie free
there, so the next batch's block is fresh memory again and every 4 KiB page
of it costs a page fault when first written: a 240 KB pickle's buffer is
about 60 faults, every time (docs/performance.md has the measured cost).

:func:`tune_malloc` raises both thresholds (``mallopt``), so those blocks
stay in the heap and are reused. The price is memory the process keeps after
a peak: up to :data:`TRIM_THRESHOLD` free at the top of the heap.

Where the operator already tunes the allocator (``GLIBC_TUNABLES`` with a
``glibc.malloc`` setting, or any ``MALLOC_*`` variable), their choice stands. On
a C library other than glibc nothing changes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
from collections.abc import Mapping

log = logging.getLogger(__name__)

# Blocks below this come from the heap, not from their own mapping (glibc's
# ceiling for it on 64-bit is 32 MiB).
MMAP_THRESHOLD = 16 * 1024 * 1024
# Free memory at the top of the heap is returned to the kernel only above this.
TRIM_THRESHOLD = 64 * 1024 * 1024
# mallopt's parameter numbers (glibc's malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def operator_tuned(environ: Mapping[str, str]) -> str | None:
    """The variable by which the operator tunes the allocator, if any.

    >>> operator_tuned({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"})
    'GLIBC_TUNABLES'
    >>> operator_tuned({"MALLOC_ARENA_MAX": "2", "PATH": "/bin"})
    'MALLOC_ARENA_MAX'
    >>> operator_tuned({"PATH": "/bin"}) is None
    True
    >>> operator_tuned({"GLIBC_TUNABLES": "glibc.pthread.rseq=0"}) is None
    True
    """
    if "glibc.malloc." in environ.get("GLIBC_TUNABLES", ""):
        return "GLIBC_TUNABLES"
    for name in sorted(environ):
        if name.startswith("MALLOC_"):
            return name
    return None


def tune_malloc(environ: Mapping[str, str] = os.environ) -> bool:
    """Raise glibc's mmap and trim thresholds; False where it changed nothing (logged why)."""
    if not _glibc():
        return False
    tuned = operator_tuned(environ)
    if tuned is not None:
        log.info("glibc's allocator is tuned by %s: left as it is", tuned)
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    mallopt = libc.mallopt
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    # mallopt returns 1 on success, 0 on a value it refuses.
    done: bool = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
    done = mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1 and done
    if not done:
        log.warning("glibc refused the allocator's thresholds: left as they were")
    return done


def _glibc() -> bool:
    try:
        return os.confstr("CS_GNU_LIBC_VERSION") is not None
    except (ValueError, OSError):  # not a name this platform knows, or not glibc
        return False
