"""Give freed heap memory back to the operating system (glibc keeps it otherwise).

glibc serves allocations below its mmap threshold from the heap, and raises that
threshold (up to 32 MiB) each time a larger mapped block is freed; after a flood the
heap is then full of free pages that glibc keeps, and the process's RSS stays at its
peak. Two remedies, used by the processes that handle floods (workers, the daemon's
window aggregator): a fixed threshold, so that numpy columns of a megabyte or more
are always mapped and unmapped when freed (:func:`map_large_blocks`), and
``malloc_trim(0)`` after big work, which returns the free pages that remain
(:func:`release_free_memory`). Without glibc both do nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import threading
from typing import Any

LARGE_BLOCK_BYTES = 1 << 20
_M_MMAP_THRESHOLD = -3  # mallopt parameter (malloc.h)


@functools.cache
def _libc() -> Any:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None)
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    except (OSError, AttributeError):
        return None
    return libc


def map_large_blocks(threshold: int = LARGE_BLOCK_BYTES) -> bool:
    """Serve allocations of ``threshold`` bytes or more by mmap, returned to the OS on free."""
    libc = _libc()
    return bool(libc is not None and libc.mallopt(_M_MMAP_THRESHOLD, int(threshold)))


def release_free_memory() -> bool:
    """Return free heap pages to the OS; False where that is not possible."""
    libc = _libc()
    if libc is None:
        return False
    libc.malloc_trim(0)
    return True


_later_lock = threading.Lock()
_later: threading.Timer | None = None


def release_free_memory_soon(delay_seconds: float = 3.0) -> None:
    """Trim once more in a moment (when whoever holds the data just processed let go of it)."""
    global _later
    with _later_lock:
        if _later is not None and _later.is_alive():
            return
        _later = threading.Timer(delay_seconds, release_free_memory)
        _later.daemon = True
        _later.start()
