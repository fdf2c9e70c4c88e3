"""Keep the C allocator from handing blob-sized buffers back to the kernel after every blob.

A 10 MB Put or Get allocates and frees MiB-sized buffers many times over (received gRPC messages,
chunk encodings, file reads, the joined blob). glibc's defaults return such memory to the kernel as
soon as it is freed (``munmap``, ``brk`` shrink, ``madvise``), so the next blob faults every page in
again and the kernel zeroes it: measured here, a third of the relay's CPU per blob. Raising the mmap
and trim thresholds keeps those buffers in the process for reuse. The cost is bounded: at most
:data:`TRIM_THRESHOLD_BYTES` of free memory stays mapped per malloc arena.

Process-wide, so it is applied by whoever moves blobs: the relay server and :class:`RelayClient`.
A no-op where the C library has no ``mallopt`` (musl, macOS) or when ``MALLOC_*_THRESHOLD_`` is set
in the environment (the operator chose).
"""

from __future__ import annotations

import ctypes
import os
import threading

import structlog

__all__ = ["MMAP_THRESHOLD_BYTES", "TRIM_THRESHOLD_BYTES", "tune_malloc"]

log = structlog.get_logger("relay.malloc")

MMAP_THRESHOLD_BYTES = 32 << 20  # allocations below this come from the heap, so they are reused
TRIM_THRESHOLD_BYTES = 64 << 20  # free heap memory kept per arena before it is returned

_M_TRIM_THRESHOLD = -1  # glibc <malloc.h>
_M_MMAP_THRESHOLD = -3

_lock = threading.Lock()
_done: bool | None = None


def tune_malloc() -> bool:
    """Applies the thresholds once per process; True when they are in effect (now or before)."""
    global _done
    with _lock:
        if _done is not None:
            return _done
        _done = False
        if any(k in os.environ for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")):
            return False
        try:
            mallopt = ctypes.CDLL(None).mallopt
        except (OSError, AttributeError):
            return False
        mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
        ok = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1 and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) == 1
        log.debug("relay_malloc_tuned", ok=ok, mmap_threshold=MMAP_THRESHOLD_BYTES, trim_threshold=TRIM_THRESHOLD_BYTES)
        _done = ok
        return ok
