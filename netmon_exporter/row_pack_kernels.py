"""The compiled passes of :mod:`.row_pack` over float columns (imported on first use)."""

from __future__ import annotations

import numpy as np

from .compiled import njit
from .row_pack import CONST, RAW, U8, U16, U32

_EXACT = 9007199254740992.0  # 2**53: whole floats up to it convert to int64 and back exactly


@njit(cache=True, nogil=True)
def plan_float(x, bits):
    """(kind, base, nan bits, has NaN) of one float column (float32 or float64)."""
    n = len(x)
    first = bits[0]
    varies = False
    whole = True
    has_nan = False
    nan_bits = bits[0]
    lo = np.inf
    hi = -np.inf
    for i in range(n):
        v = x[i]
        b = bits[i]
        if b != first:
            varies = True
        if v != v:
            if not has_nan:
                has_nan = True
                nan_bits = b
            elif b != nan_bits:
                whole = False  # NaNs of different bits: only RAW gives each back
            continue
        if np.floor(v) != v or abs(v) > _EXACT or (v == 0.0 and b != 0):
            whole = False
        if v < lo:
            lo = v
        if v > hi:
            hi = v
    if not varies:
        return CONST, np.int64(first), np.int64(0), False
    if not whole or lo > hi:  # not whole numbers, or only NaNs of different bits
        return RAW, np.int64(0), np.int64(0), False
    span = hi - lo + (1.0 if has_nan else 0.0)
    if span >= 4294967296.0:
        return RAW, np.int64(0), np.int64(0), False
    kind = U8 if span < 256.0 else U16 if span < 65536.0 else U32
    return kind, np.int64(lo), np.int64(nan_bits), has_nan


@njit(cache=True, nogil=True)
def pack_float(x, base, has_nan, codes):
    shift = np.int64(1) if has_nan else np.int64(0)
    for i in range(len(x)):
        v = x[i]
        if v != v:
            codes[i] = 0
        else:
            codes[i] = np.int64(v) - base + shift


@njit(cache=True, nogil=True)
def unpack_float(codes, base, has_nan, nan_bits, out, out_bits):
    shift = np.int64(1) if has_nan else np.int64(0)
    for i in range(len(codes)):
        c = np.int64(codes[i])
        if has_nan and c == 0:
            out_bits[i] = nan_bits
        else:
            out[i] = base + c - shift
