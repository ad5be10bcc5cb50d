"""Fast CSV row formatting for flow batches (compiled number formatting)."""

from __future__ import annotations

import numpy as np
from numba import njit

ROWS_PER_CALL = 4096


@njit(cache=True, inline="always")
def _put_int(out, w, v):
    if v < 0:
        out[w] = 45
        w += 1
        v = -v
    if v == 0:
        out[w] = 48
        return w + 1
    k = 0
    tmp = v
    while tmp > 0:
        tmp //= 10
        k += 1
    for j in range(k - 1, -1, -1):
        out[w + j] = 48 + v % 10
        v //= 10
    return w + k


@njit(cache=True)
def _put_float(out, w, x):
    """Write ``x``: integral values as integers, others with 6 significant decimals."""
    if x != x:
        return w  # NaN: empty field
    if x == np.inf:
        for c in (73, 110, 102):  # Inf
            out[w] = c
            w += 1
        return w
    if x == -np.inf:
        for c in (45, 73, 110, 102):
            out[w] = c
            w += 1
        return w
    ax = abs(x)
    if ax < 1e15 and x == np.floor(x):
        return _put_int(out, w, np.int64(x))
    if ax >= 1e12 or ax < 1e-6:
        # exponent form d.dddddde[+-]xx
        if x < 0:
            out[w] = 45
            w += 1
        e = np.int64(np.floor(np.log10(ax)))
        m = ax / 10.0 ** e
        if m >= 10.0:
            m /= 10.0
            e += 1
        mi = np.int64(np.round(m * 1e6))
        if mi >= 10000000:
            mi //= 10
            e += 1
        out[w] = 48 + mi // 1000000
        w += 1
        frac = mi % 1000000
        if frac:
            out[w] = 46
            w += 1
            digits = 6
            while frac % 10 == 0:
                frac //= 10
                digits -= 1
            for j in range(digits - 1, -1, -1):
                out[w + j] = 48 + frac % 10
                frac //= 10
            w += digits
        out[w] = 101
        w += 1
        if e < 0:
            out[w] = 45
            w += 1
            e = -e
        return _put_int(out, w, e)
    # fixed point with up to 6 decimals
    if x < 0:
        out[w] = 45
        w += 1
    scaled = np.int64(np.round(ax * 1e6))
    ip = scaled // 1000000
    frac = scaled % 1000000
    w = _put_int(out, w, ip)
    if frac:
        out[w] = 46
        w += 1
        digits = 6
        while frac % 10 == 0:
            frac //= 10
            digits -= 1
        for j in range(digits - 1, -1, -1):
            out[w + j] = 48 + frac % 10
            frac //= 10
        w += digits
    return w


@njit(cache=True)
def _put_text(out, w, t, i):
    for k in range(t.shape[1]):
        c = t[i, k]
        if c == 0:
            break
        out[w] = c
        w += 1
    return w


@njit(cache=True)
def _format(sport, dport, proto, src, dst, ts, label, qname, nums, out):
    """Format rows into ``out``; return the number of bytes written."""
    w = 0
    n = len(sport)
    for i in range(n):
        # Flow ID: src-dst-sport-dport-proto
        w = _put_text(out, w, src, i)
        out[w] = 45
        w += 1
        w = _put_text(out, w, dst, i)
        out[w] = 45
        w += 1
        w = _put_int(out, w, np.int64(sport[i]))
        out[w] = 45
        w += 1
        w = _put_int(out, w, np.int64(dport[i]))
        out[w] = 45
        w += 1
        w = _put_int(out, w, np.int64(proto[i]))
        out[w] = 44
        w += 1
        w = _put_text(out, w, src, i)
        out[w] = 44
        w += 1
        w = _put_int(out, w, np.int64(sport[i]))
        out[w] = 44
        w += 1
        w = _put_text(out, w, dst, i)
        out[w] = 44
        w += 1
        w = _put_int(out, w, np.int64(dport[i]))
        out[w] = 44
        w += 1
        w = _put_int(out, w, np.int64(proto[i]))
        out[w] = 44
        w += 1
        w = _put_text(out, w, ts, i)
        nf = nums.shape[0]
        for k in range(nf):
            out[w] = 44
            w += 1
            if k == 76:  # Label sits between the CIC features and our extras
                w = _put_text(out, w, label, i)
                out[w] = 44
                w += 1
            w = _put_float(out, w, nums[k, i])
        out[w] = 44
        w += 1
        w = _put_text(out, w, qname, i)
        out[w] = 10
        w += 1
    return w


def _fixed(values: np.ndarray, quote: bool = False) -> np.ndarray:
    """Return text values as a (n, width) uint8 matrix (zero padded), CSV-quoted if needed."""
    vals = [str(v) for v in values]
    if quote:
        vals = ['"' + v.replace('"', '""') + '"' if any(c in v for c in ',"\n\r') else v
                for v in vals]
    arr = np.array([v.encode("utf-8", "backslashreplace") for v in vals], dtype=bytes)
    width = max(arr.dtype.itemsize, 1)
    return np.frombuffer(arr.astype(f"S{width}").tobytes(), dtype=np.uint8).reshape(len(vals),
                                                                                   width)


def format_flows(sport: np.ndarray, dport: np.ndarray, proto: np.ndarray,
                 text: dict[str, np.ndarray], nums: list[np.ndarray]) -> bytes:
    """Format flow rows as UTF-8 CSV; ``nums`` are the 76 CIC features then the extras."""
    n = len(sport)
    if n == 0:
        return b""
    if n > ROWS_PER_CALL:  # bound the output buffer
        return b"".join(
            format_flows(sport[i:i + ROWS_PER_CALL], dport[i:i + ROWS_PER_CALL],
                         proto[i:i + ROWS_PER_CALL],
                         {k: v[i:i + ROWS_PER_CALL] for k, v in text.items()},
                         [c[i:i + ROWS_PER_CALL] for c in nums])
            for i in range(0, n, ROWS_PER_CALL))
    src = _fixed(text["src"])
    dst = _fixed(text["dst"])
    ts = _fixed(text["ts"])
    label = _fixed(text["label"], quote=True)
    qname = _fixed(text["dns_qname"], quote=True)
    mat = np.ascontiguousarray(np.vstack(nums), dtype=np.float64)
    per_row = 2 * src.shape[1] + 2 * dst.shape[1] + ts.shape[1] + label.shape[1] \
        + qname.shape[1] + 40 + mat.shape[0] * 24
    out = np.empty(n * per_row, dtype=np.uint8)
    w = _format(sport, dport, proto, src, dst, ts, label, qname, mat, out)
    return out[:w].tobytes()
