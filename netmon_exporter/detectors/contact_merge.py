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

from ..compiled import njit
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


# How rows of one key combine in a merged column (:func:`merge_column`; bit masks are
# merged by numpy: ``|`` would not type for the float columns the same code serves).
MIN, MAX, SUM = 0, 1, 3


@njit(cache=True, nogil=True, inline="always")
def _combined(op, acc, x):
    if op == MIN:
        # as np.minimum / np.maximum: NaN wins
        if acc != acc:
            return acc
        return x if (x != x or x < acc) else acc
    if acc != acc:  # MAX
        return acc
    return x if (x != x or x > acc) else acc


@njit(cache=True, nogil=True)
def merge_column(old, fresh, dest_old, dest_new, out, op, lo, hi):
    """Column of the merged store, in one pass: each position of ``out`` combines the new
    rows placed there (a run: the new rows are sorted by key) and then the store's row
    placed there (at most one), in that order, as ``np.<op>.at`` on the new rows and
    then ``np.<op>`` with the store's row would (``op``: MIN, MAX or SUM). Counters (``op`` SUM) add up in int64
    and are held within [``lo``, ``hi``] (the column's integer range). Returns False,
    having written nothing that counts, if the positions are not in order (the caller
    then merges with numpy)."""
    n, m = len(dest_old), len(dest_new)
    for j in range(1, m):
        if dest_new[j] < dest_new[j - 1]:
            return False
    for i in range(1, n):
        if dest_old[i] <= dest_old[i - 1]:
            return False
    i = j = 0
    for p in range(len(out)):
        if op == SUM:
            total = np.int64(0)
            while j < m and dest_new[j] == p:
                total += np.int64(fresh[j])
                j += 1
            if i < n and dest_old[i] == p:
                total += np.int64(old[i])
                i += 1
            out[p] = min(max(total, lo), hi)
            continue
        have = False
        acc = out[p]
        while j < m and dest_new[j] == p:
            acc = _combined(op, acc, fresh[j]) if have else fresh[j]
            have = True
            j += 1
        if i < n and dest_old[i] == p:
            acc = _combined(op, acc, old[i]) if have else old[i]
            have = True
            i += 1
        if not have:  # a position no row was placed at: not a merge's
            return False
        out[p] = acc
    return i == n and j == m
