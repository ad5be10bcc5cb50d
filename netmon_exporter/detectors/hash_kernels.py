"""Keys of many rows hashed in one compiled pass (the scan detectors' grouping).

:func:`.scan_probes.key_hash` hashes a key of several columns (addresses as two 64-bit
words, services, networks) with the SplitMix64 finaliser (:func:`.base.mix64`), word by
word. In numpy that is about ten passes over every word's column and a temporary per
step; the address sweep groups its contact store (up to a million rows) several times
a window, and on scan-heavy traffic those passes were a third of the main process's
analysis. :func:`hash_words` computes the same 64-bit values in one pass. Loading
compiled code costs a process numba's runtime (~30 MB) the first time, so only keys of
``scan_probes.HASH_KERNEL_ROWS`` rows or more take this path (by then the contact merge
and the windows' row packing have loaded it).
"""

from __future__ import annotations

import numpy as np
from numba import njit


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
def hash_words(words):
    """Per column ``i`` of ``words`` (k rows of uint64, one per word of the key):
    ``mix64(w0)``, then ``h = mix64(h ^ mix64(w))`` for each further word, as
    :func:`.scan_probes.key_hash` chains them."""
    k, n = words.shape
    out = np.empty(n, np.uint64)
    for i in range(n):
        h = _mix(words[0, i])
        for j in range(1, k):
            h = _mix(h ^ _mix(words[j, i]))
        out[i] = h
    return out
