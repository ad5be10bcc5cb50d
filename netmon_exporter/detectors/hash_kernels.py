"""Keys of many rows hashed in one compiled pass (the scan detectors' grouping).

:func:`.scan_probes.key_hash` hashes a key of several columns (addresses as two 64-bit
words, services, networks) with the SplitMix64 finaliser (:func:`.base.mix64`), word by
word. In numpy that is about ten passes over every word's column and a temporary per
step; the address sweep groups its contact store (up to a million rows) several times
a window, and on scan-heavy traffic those passes were a third of the main process's
analysis. :func:`mix_first` and :func:`mix_next` compute the same 64-bit values in one pass per
word, without temporaries. Loading
compiled code costs a process numba's runtime (~30 MB) the first time, so only keys of
``scan_probes.HASH_KERNEL_ROWS`` rows or more take this path (by then the contact merge
and the windows' row packing have loaded it).
"""

from __future__ import annotations

import numpy as np

from ..compiled import njit


@njit(cache=True, nogil=True, inline="always")
def _mix(z):
    """:func:`.base.mix64` of one value (uint64 arithmetic wraps, as numpy's does)."""
    z = z + np.uint64(0x9E3779B97F4A7C15)
    z ^= z >> np.uint64(30)
    z = z * np.uint64(0xBF58476D1CE4E5B9)
    z ^= z >> np.uint64(27)
    z = z * np.uint64(0x94D049BB133111EB)
    z ^= z >> np.uint64(31)
    return z


@njit(cache=True, nogil=True)
def mix_first(w, key):
    """``mix64(w, key)``: the hash of a key's first word, keyed."""
    out = np.empty(len(w), np.uint64)
    for i in range(len(w)):
        out[i] = _mix(w[i] ^ key)
    return out


@njit(cache=True, nogil=True)
def mix_next(h, w):
    """``h = mix64(h ^ mix64(w))`` in place: the next word of the key."""
    for i in range(len(w)):
        h[i] = _mix(h[i] ^ _mix(w[i]))


def warm() -> None:
    """Compile (or load) the forms :func:`.scan_probes.key_hash` runs: words contiguous
    or strided (an address's halves), writable or read-only (a store's columns)."""
    pairs = np.zeros((2, 2), np.uint64)
    frozen = pairs.copy()
    frozen.flags.writeable = False
    for w in (pairs[:, 0], frozen[:, 0], pairs[0], frozen[0]):
        mix_next(mix_first(w, np.uint64(0)), w)
