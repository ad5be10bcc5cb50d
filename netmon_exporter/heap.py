"""Give freed heap memory back to the operating system (glibc keeps it otherwise), and
keep Python's garbage collector off the objects that live as long as the process.

glibc serves allocations below its mmap threshold from the heap, and raises that
threshold (up to 32 MiB) each time a larger mapped block is freed; after a flood the
heap is then full of free pages that glibc keeps, and the process's RSS stays at its
peak. Two remedies, used by the processes that handle floods (workers, the daemon's
window aggregator): a fixed threshold, so that numpy columns of a megabyte or more
are always mapped and unmapped when freed (:func:`map_large_blocks`), and
``malloc_trim(0)`` after big work, which returns the free pages that remain
(:func:`release_free_memory`). Without glibc both do nothing.

Python's cyclic garbage collector walks every object it tracks at each collection of its
oldest generation: in the daemon's main process that is 100,000-130,000 objects (modules,
scikit-learn, numba's type registries once compiled code is loaded), and each such
collection held the GIL for 40-65 ms, the slowest ``/metrics`` answers under load
(bench/README.md). :func:`freeze_long_lived` collects once and moves every object still
alive to the permanent generation, which collections skip; the daemon does it once
started, and :func:`refreeze_if_grown` again when code loaded later (numba's kernels, on
the first large window) has filled the oldest generation anew. Objects that are already
garbage are collected first; a frozen object is still freed when its last reference goes
(reference counting), so only a reference cycle that was alive at a freeze and dies
later is never collected.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
import threading
from typing import Any

LARGE_BLOCK_BYTES = 1 << 20
# Freeze again once the oldest generation holds this many objects (a collection of them
# costs the GIL several milliseconds; numba's registries alone add ~30,000).
REFREEZE_OBJECTS = 20_000
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


def freeze_long_lived() -> int:
    """Collect cyclic garbage, then exempt every object still alive from later
    collections (``gc.freeze``); return how many objects are exempt."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


def refreeze_if_grown(threshold: int = REFREEZE_OBJECTS) -> bool:
    """Freeze what is alive if the oldest generation holds ``threshold`` objects or more.

    Without a full collection first (it would be the very pause this avoids): the
    younger generations are collected, and the oldest holds objects that outlived its
    own collections, which Python runs whenever it has grown by a quarter (so often,
    while the frozen objects are not counted): they are alive, not garbage."""
    if len(gc.get_objects(generation=2)) < threshold:
        return False
    gc.collect(1)
    gc.freeze()
    return True
