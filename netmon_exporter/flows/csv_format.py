"""Fast CSV row formatting for flow batches (compiled number formatting)."""

from __future__ import annotations

import numpy as np

from ..compiled import njit
from ..text_safety import csv_cell

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
    k = 1  # digit count by comparisons: one division per digit, not two
    p = np.int64(10)
    while k < 19 and v >= p:
        k += 1
        p *= 10
    u = np.uint64(v)  # unsigned: division by 10 without floor-division fix-ups
    for j in range(k - 1, -1, -1):
        out[w + j] = np.uint8(48 + u % np.uint64(10))
        u //= np.uint64(10)
    return w + k


@njit(cache=True, inline="always")
def _put_float(out, w, x):
    """Write ``x``: integral values as integers, others with 6 significant decimals."""
    if x != x:
        return w  # NaN: empty field
    ax = abs(x)
    if ax == np.inf:
        if x < 0:
            out[w] = 45
            w += 1
        out[w] = 73  # Inf
        out[w + 1] = 110
        out[w + 2] = 102
        return w + 3
    if ax < 1e15 and x == np.floor(x):
        return _put_int(out, w, np.int64(x))
    if ax >= 1e12 or ax < 1e-6:
        # exponent form d.dddddde[+-]xx
        if x < 0:
            out[w] = 45
            w += 1
        e = np.int64(np.floor(np.log10(ax)))
        m = ax / 10.0**e
        if m >= 10.0:
            m /= 10.0
            e += 1
        mi = np.int64(np.round(m * 1e6))
        if mi >= 10000000:
            mi //= 10
            e += 1
        out[w] = 48 + mi // 1000000
        w = _put_frac(out, w + 1, mi % 1000000)
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
    return _put_frac(out, w, frac)


@njit(cache=True, inline="always")
def _put_frac(out, w, frac):
    """Write the millionths ``frac`` (0 <= frac < 10**6) as ".ddd" without trailing zeros."""
    if not frac:
        return w
    out[w] = 46
    w += 1
    digits = 6
    while frac % 10 == 0:
        frac //= 10
        digits -= 1
    for j in range(digits - 1, -1, -1):
        out[w + j] = 48 + frac % 10
        frac //= 10
    return w + digits


@njit(cache=True, inline="always")
def _put_text(out, w, t, i):
    for k in range(t.shape[1]):
        c = t[i, k]
        if c == 0:
            break
        out[w] = c
        w += 1
    return w


@njit(cache=True)
def _put_addr(out, w, a, i):
    """Write address row ``a[i]`` (16 bytes): IPv4-mapped as a dotted quad, else RFC 5952."""
    mapped = a[i, 10] == 255 and a[i, 11] == 255
    for k in range(10):
        if a[i, k] != 0:
            mapped = False
    if mapped:
        for k in range(12, 16):
            w = _put_int(out, w, np.int64(a[i, k]))
            if k < 15:
                out[w] = 46
                w += 1
        return w
    g = np.empty(8, dtype=np.int64)
    for k in range(8):
        g[k] = (np.int64(a[i, 2 * k]) << 8) | np.int64(a[i, 2 * k + 1])
    best, best_len, run, run_len = -1, 0, -1, 0
    for k in range(8):
        if g[k] == 0:
            if run < 0:
                run, run_len = k, 0
            run_len += 1
            if run_len > best_len:
                best, best_len = run, run_len
        else:
            run = -1
    if best_len < 2:
        best = -1
    k = 0
    while k < 8:
        if k == best:
            out[w] = 58
            out[w + 1] = 58
            w += 2
            k += best_len
            continue
        if k > 0 and k != best + best_len:
            out[w] = 58
            w += 1
        v = g[k]
        started = False
        for sh in (12, 8, 4, 0):
            d = (v >> sh) & 15
            if d or started or sh == 0:
                out[w] = 48 + d if d < 10 else 87 + d
                w += 1
                started = True
        k += 1
    return w


@njit(cache=True, inline="always")
def _put2(out, w, v):
    out[w] = 48 + v // 10
    out[w + 1] = 48 + v % 10
    return w + 2


@njit(cache=True, inline="always")
def _put_time(out, w, us):
    """Write epoch microseconds as ``YYYY-MM-DD HH:MM:SS.ffffff`` (UTC)."""
    days = us // 86400000000
    rem = us - days * 86400000000
    z = days + 719468
    era = (z if z >= 0 else z - 146096) // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    y = yoe + era * 400
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + 3 if mp < 10 else mp - 9
    if m <= 2:
        y += 1
    if 0 <= y < 1000:
        for p in (100, 10):
            if y < p:
                out[w] = 48
                w += 1
    w = _put_int(out, w, y)
    out[w] = 45
    w = _put2(out, w + 1, m)
    out[w] = 45
    w = _put2(out, w + 1, d)
    out[w] = 32
    secs = rem // 1000000
    w = _put2(out, w + 1, secs // 3600)
    out[w] = 58
    w = _put2(out, w + 1, (secs // 60) % 60)
    out[w] = 58
    w = _put2(out, w + 1, secs % 60)
    out[w] = 46
    w += 1
    f = rem % 1000000
    for j in range(5, -1, -1):
        out[w + j] = 48 + f % 10
        f //= 10
    return w + 6


@njit(cache=True, nogil=True)
def _format(src, dst, sport, dport, proto, ts_us, ts_ok, label, qname, nums, out):
    """Format rows into ``out``; return the number of bytes written."""
    w = 0
    n = len(sport)
    for i in range(n):
        # Flow ID: src-dst-sport-dport-proto
        w = _put_addr(out, w, src, i)
        out[w] = 45
        w = _put_addr(out, w + 1, dst, i)
        out[w] = 45
        w = _put_int(out, w + 1, np.int64(sport[i]))
        out[w] = 45
        w = _put_int(out, w + 1, np.int64(dport[i]))
        out[w] = 45
        w = _put_int(out, w + 1, np.int64(proto[i]))
        out[w] = 44
        w = _put_addr(out, w + 1, src, i)
        out[w] = 44
        w = _put_int(out, w + 1, np.int64(sport[i]))
        out[w] = 44
        w = _put_addr(out, w + 1, dst, i)
        out[w] = 44
        w = _put_int(out, w + 1, np.int64(dport[i]))
        out[w] = 44
        w = _put_int(out, w + 1, np.int64(proto[i]))
        out[w] = 44
        w += 1
        if ts_ok[i]:
            w = _put_time(out, w, ts_us[i])
        nf = nums.shape[1]
        for k in range(nf):
            out[w] = 44
            w += 1
            if k == 76:  # Label sits between the CIC features and our extras
                w = _put_text(out, w, label, i)
                out[w] = 44
                w += 1
            v = nums[i, k]
            if v == 0.0:  # the most common value: no call
                out[w] = 48
                w += 1
            elif v == v:
                w = _put_float(out, w, v)
        out[w] = 44
        w += 1
        w = _put_text(out, w, qname, i)
        out[w] = 10
        w += 1
    return w


def _csv_field(v: str) -> str:
    return '"' + v.replace('"', '""') + '"' if any(c in v for c in ',"\n\r') else v


# Characters a text cell may hold and be written as it is: no escaping (clean_text), no
# CSV quoting, and (but for a leading "-") no formula to defuse (csv_cell).
_PLAIN = np.zeros(128, dtype=bool)
for _c in b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-":
    _PLAIN[_c] = True
_PLAIN_MAX = 256  # longer cells take the slow path (DNS names are at most 255)


def _fixed(values: np.ndarray) -> np.ndarray:
    """Return text values as a (n, width) uint8 matrix (zero padded), CSV-quoted if needed.

    Text cells (labels, DNS names from packets) are made safe for spreadsheets by
    :func:`~netmon_exporter.text_safety.csv_cell`; numeric columns never pass here. Cells
    of letters, digits, dots, dashes and underscores alone (most DNS names and labels) are
    what that makes of them, so they are copied in bulk (numpy) and only the others pass
    through it one by one.
    """
    n = len(values)
    nonempty = np.flatnonzero(values.astype(bool))  # truth of each value, in C
    if not len(nonempty):
        return np.zeros((n, 1), dtype=np.uint8)
    plain = np.zeros(0, dtype=np.int64)
    chars = np.zeros((0, 1), dtype=np.uint32)
    given = values[nonempty]
    lens = np.zeros(0, dtype=np.int64)
    if all(type(v) is str for v in given):  # noqa: E721  # str itself: its text is itself
        lens = np.fromiter(map(len, given), dtype=np.int64, count=len(given))
    short = np.flatnonzero(lens <= _PLAIN_MAX)  # bounds the matrix below
    if len(short):
        # code points, zero padded (numpy drops trailing NULs: the lengths are Python's)
        chars = given[short].astype(str).view(np.uint32).reshape(len(short), -1)
        inside = np.arange(chars.shape[1]) < lens[short, None]
        ok = ((chars < 128) & _PLAIN[np.minimum(chars, 127)]) | ~inside
        ok = ok.all(axis=1) & (chars[:, 0] != ord("-"))
        plain, chars = short[ok], chars[ok]
    slow = np.setdiff1d(np.arange(len(nonempty)), plain, assume_unique=True).tolist()
    enc = [_csv_field(csv_cell(given[k])).encode("utf-8", "backslashreplace") for k in slow]
    width = max([len(e) for e in enc] + [chars.shape[1] if len(plain) else 1])
    out = np.zeros((n, width), dtype=np.uint8)
    if len(plain):
        out[nonempty[plain], : chars.shape[1]] = chars
    for k, e in zip(slow, enc, strict=True):
        out[nonempty[k], : len(e)] = np.frombuffer(e, dtype=np.uint8)
    return out


def format_flows(
    src: np.ndarray,
    dst: np.ndarray,
    sport: np.ndarray,
    dport: np.ndarray,
    proto: np.ndarray,
    first_ts: np.ndarray,
    label: np.ndarray,
    qname: np.ndarray,
    nums: list[np.ndarray],
) -> bytes:
    """Format flow rows as UTF-8 CSV lines.

    ``src``/``dst`` are V16 addresses, ``first_ts`` epoch seconds (NaN: empty field),
    ``nums`` the 76 CIC features then the extra columns.
    """
    n = len(sport)
    if n == 0:
        return b""
    if n > ROWS_PER_CALL:  # bound the output buffer
        step = ROWS_PER_CALL
        return b"".join(
            format_flows(
                src[i : i + step],
                dst[i : i + step],
                sport[i : i + step],
                dport[i : i + step],
                proto[i : i + step],
                first_ts[i : i + step],
                label[i : i + step],
                qname[i : i + step],
                [c[i : i + step] for c in nums],
            )
            for i in range(0, n, step)
        )
    a = np.frombuffer(np.ascontiguousarray(src).tobytes(), dtype=np.uint8).reshape(n, 16)
    b = np.frombuffer(np.ascontiguousarray(dst).tobytes(), dtype=np.uint8).reshape(n, 16)
    us = np.round(np.asarray(first_ts, dtype=np.float64) * 1e6)
    ts_ok = np.isfinite(us) & (np.abs(us) < 2.0**62)
    ts_us = np.where(ts_ok, us, 0).astype(np.int64)
    lab = _fixed(np.asarray(label, dtype=object))
    qn = _fixed(np.asarray(qname, dtype=object))
    # one row per feature (contiguous copies), read by the kernel as one row per flow
    mat = np.stack([np.asarray(c, dtype=np.float64) for c in nums]).T
    per_row = 4 * 40 + 27 + lab.shape[1] + qn.shape[1] + 40 + mat.shape[1] * 24
    out = np.empty(n * per_row, dtype=np.uint8)
    w = _format(
        a,
        b,
        np.asarray(sport),
        np.asarray(dport),
        np.asarray(proto),
        ts_us,
        ts_ok,
        lab,
        qn,
        mat,
        out,
    )
    return out[:w].tobytes()


# -- parsing ---------------------------------------------------------------------------
# The flow CSV reader's compiled kernels: split a block of complete, unquoted CSV lines
# into field offsets, then convert columns in bulk. Whatever a kernel cannot convert
# exactly is flagged and converted by the caller in Python (float(), ipaddress), so the
# result equals the csv-module path's.

_POW10 = np.array([10.0**k for k in range(23)])  # exact in binary64 up to 1e22


@njit(cache=True, inline="always")
def _is_space(c):
    return c == 32 or c == 9 or c == 13


@njit(cache=True)
def split_fields(buf, width, starts, ends):
    """Split ``buf`` (lines of unquoted CSV) into the first ``width`` fields of each line.

    Fields are trimmed of spaces, tabs and CR; missing fields are empty; blank lines are
    skipped. Fills ``starts``/``ends`` (rows x width); returns the number of rows.
    """
    n = len(buf)
    row = 0
    i = 0
    while i < n:
        col = 0
        fs = i
        while True:
            end_of_line = i == n or buf[i] == 10
            if end_of_line or buf[i] == 44:
                if col < width:
                    s = fs
                    e = i
                    while s < e and _is_space(buf[s]):
                        s += 1
                    while e > s and _is_space(buf[e - 1]):
                        e -= 1
                    starts[row, col] = s
                    ends[row, col] = e
                col += 1
                if end_of_line:
                    break
                fs = i + 1
            i += 1
        i += 1  # past the newline
        if col == 1 and starts[row, 0] == ends[row, 0]:
            continue  # blank line
        for c in range(col, width):
            starts[row, c] = 0
            ends[row, c] = 0
        row += 1
    return row


@njit(cache=True, inline="always")
def _parse_number(buf, s, e):
    """Return (value, ok) for the field ``buf[s:e]`` (see :func:`parse_floats`)."""
    if s == e:
        return np.nan, True
    if e - s == 1 and 48 <= buf[s] <= 57:  # one digit: the most common field ("0")
        return float(buf[s] - 48), True
    neg = False
    if buf[s] == 45 or buf[s] == 43:
        neg = buf[s] == 45
        s += 1
    mant = np.int64(0)
    exp = 0
    digits = 0
    dot = False
    while s < e:
        c = buf[s]
        if 48 <= c <= 57:
            digits += 1
            if mant >= 100000000000000000:  # 1e17: more would overflow
                return 0.0, False
            mant = mant * 10 + (c - 48)
            if dot:
                exp -= 1
        elif c == 46 and not dot:
            dot = True
        else:
            break
        s += 1
    if digits == 0:
        return 0.0, False
    if s < e and (buf[s] == 101 or buf[s] == 69):
        s += 1
        eneg = False
        if s < e and (buf[s] == 45 or buf[s] == 43):
            eneg = buf[s] == 45
            s += 1
        ev = 0
        edigits = 0
        while s < e and 48 <= buf[s] <= 57 and ev < 10000:
            ev = ev * 10 + (buf[s] - 48)
            edigits += 1
            s += 1
        if edigits == 0:
            return 0.0, False
        exp += -ev if eneg else ev
    if s != e:
        return 0.0, False
    if mant == 0:
        v = 0.0
    elif mant <= 9007199254740992 and -22 <= exp <= 22:
        v = float(mant)
        if exp >= 0:
            v *= _POW10[exp]
        else:
            v /= _POW10[-exp]
    else:
        return 0.0, False
    return (-v if neg else v), True


@njit(cache=True)
def parse_floats(buf, starts, ends, cols, out, bad):
    """Parse columns ``cols`` as decimal numbers into ``out[:, k]``; empty fields are NaN.

    Row by row (offsets, text and output in memory order). A field is flagged in
    ``bad[:, k]`` (left for Python's float()) unless it is plain decimal or exponent
    notation whose value is exact by Clinger's fast path (an integer mantissa of at most
    2**53, a power of ten up to 1e22), which makes the result correctly rounded.
    Returns the number of flagged fields.
    """
    nbad = 0
    for r in range(starts.shape[0]):
        for k in range(len(cols)):
            c = cols[k]
            v, ok = _parse_number(buf, starts[r, c], ends[r, c])
            out[r, k] = v
            bad[r, k] = not ok
            if not ok:
                nbad += 1
    return nbad


@njit(cache=True)
def parse_ipv4(buf, starts, ends, col, out, bad):
    """Parse column ``col`` as dotted-quad IPv4 into ``out`` (rows x 16, IPv4-mapped).

    Empty fields are all-zero; anything else (IPv6, junk) is flagged in ``bad``.
    """
    nbad = 0
    for r in range(out.shape[0]):
        s = starts[r, col]
        e = ends[r, col]
        bad[r] = False
        for k in range(16):
            out[r, k] = 0
        if s == e:
            continue
        part = 0
        v = 0
        nd = 0
        ok = True
        while s <= e:
            if s == e or buf[s] == 46:
                if nd == 0 or v > 255 or part > 3:
                    ok = False
                    break
                out[r, 12 + part] = v
                part += 1
                v = 0
                nd = 0
            elif 48 <= buf[s] <= 57 and nd < 3 and not (nd == 1 and v == 0):
                v = v * 10 + (buf[s] - 48)  # (no leading zeros: inet_pton refuses them)
                nd += 1
            else:
                ok = False
                break
            s += 1
        if ok and part == 4:
            out[r, 10] = 255
            out[r, 11] = 255
        else:
            for k in range(16):
                out[r, k] = 0
            bad[r] = True
            nbad += 1
    return nbad


@njit(cache=True)
def gather_text(buf, starts, ends, col, out):
    """Copy column ``col``'s fields into ``out`` (rows x width, zero padded)."""
    for r in range(out.shape[0]):
        s = starts[r, col]
        e = ends[r, col]
        for k in range(e - s):
            out[r, k] = buf[s + k]


@njit(cache=True)
def transpose(rows, out):
    """``out[k, r] = rows[r, k]`` in tiles of rows (cache- and TLB-friendly)."""
    n, m = rows.shape
    for r0 in range(0, n, 64):
        r1 = min(r0 + 64, n)
        for k in range(m):
            for r in range(r0, r1):
                out[k, r] = rows[r, k]
