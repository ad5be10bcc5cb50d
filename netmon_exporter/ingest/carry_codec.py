"""Lossless narrow encoding of the carry's wide matrices, column by column (compiled).

A carry file holds the open flows' accumulators: a float64 matrix of 128 columns per
flow, most of them counts, sizes and microsecond timestamps that are whole numbers in a
small range, or the same in every row (features a flow never used). Written as they are
in memory they cost ~1 kB a flow; the kernel's CPU time to write, checksum and later
drop that much page cache was about a third of a worker's time per rotated file.

Each column of a 2-D float64 or int64 array is stored in the narrowest form that gives
back the very same bits:

* ``CONST``: every row has the same bits; nothing is stored but the bits;
* ``U8``, ``U16``, ``U32``: whole numbers (finite, not -0.0, within 2**53 for floats)
  whose range fits; stored as unsigned offsets from the column's smallest value;
* ``F32``: a float that a float32 holds exactly (NaN excluded, -0.0 kept);
* ``RAW``: the 8 bytes as they are.

The encoding is a recipe (two int64 per column: kind, and the base value or constant
bits) followed by five regions, each a row-major matrix of the columns of one storage
type, in column order: raw (8 bytes), float32, uint32, uint16, uint8. Regions come in
decreasing width, so each starts aligned for its type when the whole is 8-aligned.
Two compiled passes write it (one to choose the kinds, one to pack) and one reads it.
"""

from __future__ import annotations

import numpy as np

from ..compiled import njit

CONST, U8, U16, U32, F32, RAW = range(6)
_REGION = (-1, 4, 3, 2, 1, 0)  # kind -> region: 0 raw, 1 float32, 2 uint32, 3 uint16, 4 uint8
_REGION_DTYPES = (np.int64, np.float32, np.uint32, np.uint16, np.uint8)
_EXACT = 9007199254740992.0  # 2**53: every whole float64 up to it, offsets added exactly


def packable(a: np.ndarray) -> bool:
    """Whether :func:`pack` takes ``a`` (2-D, float64 or int64, at least one row)."""
    return (
        a.ndim == 2
        and a.dtype in (np.dtype(np.float64), np.dtype(np.int64))
        and a.shape[0] >= 1
        and a.shape[1] >= 1
    )


@njit(cache=True)
def _plan_float(a, bits, kinds, base):
    # One pass, without branches in the inner loop (the compiler vectorises it across a
    # row's columns): a NaN fails the whole-number and float32 tests by itself (it
    # equals nothing), and then only CONST or RAW, which ignore lo and hi, can hold it.
    n, m = a.shape
    varies = np.zeros(m, np.uint8)
    not_whole = np.zeros(m, np.uint8)
    not_single = np.zeros(m, np.uint8)
    lo = np.full(m, np.inf)
    hi = np.full(m, -np.inf)
    first = bits[0].copy()
    for r in range(n):
        for c in range(m):
            x = a[r, c]
            b = bits[r, c]
            varies[c] |= b != first[c]
            not_whole[c] |= (np.floor(x) != x) | (abs(x) > _EXACT) | ((x == 0.0) & (b != 0))
            not_single[c] |= np.float64(np.float32(x)) != x
            lo[c] = x if x < lo[c] else lo[c]
            hi[c] = x if x > hi[c] else hi[c]
    for c in range(m):
        span = hi[c] - lo[c]
        if not varies[c]:
            kinds[c] = CONST
            base[c] = first[c]
        elif not not_whole[c] and span < 4294967296.0:
            kinds[c] = U8 if span < 256.0 else U16 if span < 65536.0 else U32
            base[c] = np.int64(lo[c])
        elif not not_single[c]:
            kinds[c] = F32
        else:
            kinds[c] = RAW


@njit(cache=True)
def _plan_int(a, kinds, base):
    n, m = a.shape
    for c in range(m):
        lo = a[0, c]
        hi = a[0, c]
        for r in range(1, n):
            x = a[r, c]
            if x < lo:
                lo = x
            elif x > hi:
                hi = x
        span = np.uint64(hi) - np.uint64(lo)  # wraps to the true span even near the limits
        if span == 0:
            kinds[c] = CONST
            base[c] = lo
        elif span < np.uint64(4294967296):
            kinds[c] = U8 if span < 256 else U16 if span < 65536 else U32
            base[c] = lo
        else:
            kinds[c] = RAW


@njit(cache=True)
def _pack(a, bits, is_float, kinds, base, slot, r8, r4f, r4, r2, r1):
    n, m = a.shape
    for r in range(n):
        for c in range(m):
            k = kinds[c]
            if k == CONST:
                continue
            j = slot[c]
            if k == RAW:
                r8[r, j] = bits[r, c]
            elif k == F32:
                r4f[r, j] = np.float32(a[r, c])
            else:
                off = (np.int64(a[r, c]) if is_float else bits[r, c]) - base[c]
                if k == U32:
                    r4[r, j] = np.uint32(off)
                elif k == U16:
                    r2[r, j] = np.uint16(off)
                else:
                    r1[r, j] = np.uint8(off)


@njit(cache=True)
def _unpack(out, bits, is_float, kinds, base, slot, r8, r4f, r4, r2, r1):
    n, m = out.shape
    for r in range(n):
        for c in range(m):
            k = kinds[c]
            j = slot[c]
            if k == CONST:
                bits[r, c] = base[c]
            elif k == RAW:
                bits[r, c] = r8[r, j]
            elif k == F32:
                out[r, c] = np.float64(r4f[r, j])
            else:
                if k == U32:
                    off = np.int64(r4[r, j])
                elif k == U16:
                    off = np.int64(r2[r, j])
                else:
                    off = np.int64(r1[r, j])
                if is_float:
                    out[r, c] = np.float64(base[c] + off)
                else:
                    bits[r, c] = base[c] + off


def _slots(kinds: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """Each column's index within its region, and the number of columns per region."""
    slot = np.zeros(len(kinds), np.int64)
    counts = [0] * len(_REGION_DTYPES)
    for c, k in enumerate(kinds.tolist()):
        region = _REGION[k]
        if region >= 0:
            slot[c] = counts[region]
            counts[region] += 1
    return slot, counts


def pack(a: np.ndarray) -> list[np.ndarray]:
    """``a`` (see :func:`packable`) as the pieces to write one after the other: the
    recipe, then the five regions (empty ones included; their sizes follow from the
    recipe and the number of rows)."""
    a = np.ascontiguousarray(a)
    n, m = a.shape
    is_float = a.dtype == np.float64
    bits = a.view(np.int64)
    kinds = np.zeros(m, np.int64)
    base = np.zeros(m, np.int64)
    if is_float:
        _plan_float(a, bits, kinds, base)
    else:
        _plan_int(a, kinds, base)
    slot, counts = _slots(kinds)
    regions = [np.empty((n, k), dt) for k, dt in zip(counts, _REGION_DTYPES, strict=True)]
    _pack(a, bits, is_float, kinds, base, slot, *regions)
    return [np.stack([kinds, base]), *regions]


def packed_size(shape: tuple[int, ...], recipe: np.ndarray) -> int:
    """Bytes of the packed form of an array of ``shape`` with ``recipe``."""
    n, m = shape
    _, counts = _slots(recipe[0])
    sizes = (k * np.dtype(dt).itemsize for k, dt in zip(counts, _REGION_DTYPES, strict=True))
    return 16 * m + n * sum(sizes)


def unpack(buf: np.ndarray, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    """The array :func:`pack` encoded into the bytes ``buf`` (uint8, 8-aligned); raise
    ValueError if they are not such an encoding."""
    dtype = np.dtype(dtype)
    if len(shape) != 2 or dtype not in (np.dtype(np.float64), np.dtype(np.int64)):
        raise ValueError(f"packed array of {dtype} {tuple(shape)}: not a 2-D float64/int64")
    n, m = (int(x) for x in shape)
    if n < 1 or m < 1 or 16 * m > len(buf):
        raise ValueError(f"packed array of shape {(n, m)} in {len(buf)} bytes")
    recipe = buf[: 16 * m].view(np.int64).reshape(2, m)
    kinds, base = recipe[0], recipe[1]
    if kinds.min() < CONST or kinds.max() > RAW or (dtype == np.int64 and (kinds == F32).any()):
        raise ValueError("packed array with an unknown column kind")
    slot, counts = _slots(kinds)
    if packed_size((n, m), recipe) != len(buf):
        raise ValueError(f"packed array of shape {(n, m)} is not {len(buf)} bytes")
    regions, at = [], 16 * m
    for k, dt in zip(counts, _REGION_DTYPES, strict=True):
        size = n * k * np.dtype(dt).itemsize
        regions.append(buf[at : at + size].view(dt).reshape(n, k))
        at += size
    out = np.empty((n, m), dtype)
    _unpack(out, out.view(np.int64), dtype == np.float64, kinds, base, slot, *regions)
    return out
