"""Merge new contacts into a store kept sorted by key, in one pass (compiled).

The scan detectors keep up to ``max_state_rows`` (a million by default) contacts, one
row per (source, destination, service). Merging a window's contacts by sorting the store
and the new rows together costs a sort of the whole store and three copies of it every
window; on scan-heavy traffic that was most of the analysis time and hundreds of
megabytes at each window's close. The store is already sorted by its key, so only the
new rows are sorted, and :func:`merge_positions` walks both sequences once and says where
each row of either lands in the merged store (rows with the same key land together).

A key is five words compared in order: the two uint64 halves of the source address, the
two of the destination, and the service number; the order is that of
``np.lexsort((svc, dlo, dhi, slo, shi))`` (:func:`key_words` gives them as the kernel
reads them).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .base import addr_pairs


def key_words(src: np.ndarray, dst: np.ndarray, svc: np.ndarray) -> tuple[np.ndarray, ...]:
    """The key as the kernel reads it: each address as two uint64 words (a view, no
    copy) and the service as uint64 (a signed service keeps its order)."""
    s = np.asarray(svc)
    if s.dtype.kind == "i":
        s = s.astype(np.int64).view(np.uint64) ^ np.uint64(1 << 63)
    return (addr_pairs(src), addr_pairs(dst), np.ascontiguousarray(s, dtype=np.uint64))


@njit(cache=True, inline="always")
def _cmp(s1, d1, v1, i, s2, d2, v2, j):
    """-1, 0 or 1 as key ``i`` of the first rows is below, equal to or above key ``j``."""
    for x, y in (
        (s1[i, 0], s2[j, 0]),
        (s1[i, 1], s2[j, 1]),
        (d1[i, 0], d2[j, 0]),
        (d1[i, 1], d2[j, 1]),
        (v1[i], v2[j]),
    ):
        if x < y:
            return -1
        if x > y:
            return 1
    return 0


@njit(cache=True, nogil=True)
def merge_positions(as_, ad, av, bs, bd, bv):
    """Positions in the merged sequence of the rows of ``a`` and of ``b``, and its length.

    ``a`` (the store) and ``b`` (new rows) are each sorted by key (:func:`key_words`);
    ``a`` has no repeated key, ``b`` may. Equal keys get one position. Runs without the
    GIL: a merge into a store of a million rows takes tens of milliseconds, which the
    HTTP thread answering ``/metrics`` would otherwise wait out.
    """
    n, m = len(av), len(bv)
    dest_a = np.empty(n, np.int64)
    dest_b = np.empty(m, np.int64)
    i = j = 0
    k = -1
    ls, ld, lv, last = as_, ad, av, -1  # the key placed last: row ``last`` of those arrays
    while i < n or j < m:
        take_a = j >= m or (i < n and _cmp(as_, ad, av, i, bs, bd, bv, j) <= 0)
        s, d, v, r = (as_, ad, av, i) if take_a else (bs, bd, bv, j)
        if last < 0 or _cmp(ls, ld, lv, last, s, d, v, r) != 0:
            k += 1  # a new key
        if take_a:
            dest_a[i] = k
            i += 1
        else:
            dest_b[j] = k
            j += 1
        ls, ld, lv, last = s, d, v, r
    return dest_a, dest_b, k + 1
