"""Flow rows packed column by column while a window holds them (lossless, compiled).

A window keeps up to ``flow_sample.ROW_CAP`` narrow rows (:func:`flow_sample.narrow`:
the keys, ~46 float32 features, the query name) from the moment their flows come until
its analysis is done: about 250 bytes a row as numpy columns. Most of those columns hold
little: counts and flags (small whole numbers), values every row shares (a scan's
payload sizes, the weight of rows never thinned), or nothing (NaN: the DNS statistics of
every flow that is not DNS); addresses are IPv4 in an IPv6 field. So each column of a
part is stored in the narrowest form that gives back the very same bits:

* ``CONST``: every row has the same bits (NaN included); nothing but the bits is stored;
* ``U8``, ``U16``, ``U32``: whole numbers (for floats: finite, not -0.0, within 2**53)
  stored as offsets from the column's smallest value; in a float column that also holds
  NaN (all with the same bits), code 0 stands for that NaN and the offsets start at 1;
* ``RAW``: the values as they are (4 bytes for float32, 8 for float64 and int64).

Integer columns (ports, protocol) are stored the same way, fixed-size byte columns (the
16-byte addresses) as four big-endian 32-bit words each, and object columns (query names) sparsely:
only the rows whose value is not ``""``, with their row numbers.

On the benchmark's traffic a row costs ~60 bytes (one SYN and one RST per flow) to
~120 bytes (ordinary traffic) instead of ~250. Packing a column is one compiled pass to
choose its form and one to write it; unpacking is one pass, straight into the columns
of the window's batch. The kernels (:mod:`.row_pack_kernels`) run without the GIL (the
analysis thread unpacks a window while the daemon thread packs the next one's rows) and
are imported on first use: loading numba costs a process ~0.3 s and ~60 MB, more than
packing saves on small windows, so windows pack their rows only once they hold many
(``flow_sample.PACK_FROM``), and a window halfway there has them loaded on a thread of
their own (:func:`load_soon`), so that the load (mostly under the GIL) does not hold up
the daemon thread's events and the scrapes in one piece.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Container, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .flow_schema import FlowBatch, missing_column

CONST, U8, U16, U32, RAW = range(5)
_CODE_DTYPES = {U8: np.uint8, U16: np.uint16, U32: np.uint32}


@dataclass(frozen=True, slots=True)
class _Column:
    """One packed column (or one 32-bit word of a byte column)."""

    kind: int
    base: int = 0  # CONST: the bits (floats) or the value (ints); whole kinds: smallest value
    nan_bits: int = 0  # whole float kinds with ``has_nan``: the bits code 0 stands for
    has_nan: bool = False
    data: np.ndarray | None = None  # codes (whole kinds) or the values (RAW)

    @property
    def nbytes(self) -> int:
        return 0 if self.data is None else int(self.data.nbytes)


_BITS = {4: np.int32, 8: np.int64}


def _pack_floats(x: np.ndarray) -> _Column:
    from .row_pack_kernels import pack_float, plan_float  # noqa: PLC0415 - numba: lazily

    x = np.ascontiguousarray(x)
    bits = x.view(_BITS[x.dtype.itemsize])
    kind, base, nan_bits, has_nan = plan_float(x, bits)
    if kind == CONST:
        return _Column(CONST, int(base))
    if kind == RAW:
        return _Column(RAW, data=x.copy())
    codes = np.empty(len(x), _CODE_DTYPES[kind])
    pack_float(x, base, has_nan, codes)
    return _Column(int(kind), int(base), int(nan_bits), bool(has_nan), codes)


def _unpack_floats(col: _Column, out: np.ndarray) -> None:
    from .row_pack_kernels import unpack_float  # noqa: PLC0415 - numba: lazily

    bits = out.view(_BITS[out.dtype.itemsize])
    if col.kind == CONST:
        bits[:] = col.base
    elif col.kind == RAW:
        out[:] = col.data
    else:
        unpack_float(col.data, col.base, col.has_nan, col.nan_bits, out, bits)


def _pack_ints(x: np.ndarray) -> _Column:
    """An integer column (of at most 64 bits); uint64 values above 2**63 are stored RAW."""
    if not len(x):
        return _Column(RAW, data=x.copy())
    lo, hi = int(x.min()), int(x.max())
    span = hi - lo
    if span == 0:
        return _Column(CONST, lo)
    if span >= 2**32 or hi >= 2**63:  # (uint64 values above int64's range: as they are)
        return _Column(RAW, data=x.copy())
    kind = U8 if span < 256 else U16 if span < 65536 else U32
    if x.dtype.itemsize <= np.dtype(_CODE_DTYPES[kind]).itemsize:
        return _Column(RAW, data=x.copy())  # already as narrow as its codes would be
    codes = (x.astype(np.int64) - lo).astype(_CODE_DTYPES[kind])
    return _Column(kind, lo, data=codes)


def _unpack_ints(col: _Column, out: np.ndarray) -> None:
    if col.kind == CONST:
        out[:] = col.base
    elif col.kind == RAW:
        out[:] = col.data
    else:
        assert col.data is not None
        out[:] = (col.data.astype(np.int64) + col.base).astype(out.dtype)


def _words(x: np.ndarray) -> np.ndarray:
    """A fixed-size byte column (itemsize a multiple of 4) as rows of 32-bit words, read
    big-endian so that addresses of one network differ in a word's low bits."""
    return np.ascontiguousarray(x).view(_WORD).reshape(len(x), -1)


_WORD = np.dtype(">u4")


def _packable_bytes(dtype: np.dtype) -> bool:
    return dtype.kind == "V" and dtype.fields is None and dtype.itemsize % 4 == 0


class PackedRows:
    """The rows of a :class:`~.flow_schema.FlowBatch`, packed column by column.

    :meth:`unpack` gives back every column with its name, order, dtype and bits (numbers
    stored in the other byte order come back in the machine's, as ``np.concatenate``
    gives them).
    """

    __slots__ = ("_cols", "_n")

    def __init__(self, batch: FlowBatch) -> None:
        n = len(batch)
        self._n = n
        cols: list[tuple[str, np.dtype, object]] = []
        for name, values in batch.columns.items():
            a = np.asarray(values)
            if a.dtype.byteorder not in "=|":  # as np.concatenate would: native byte order
                a = a.astype(a.dtype.newbyteorder("="))
            dt = a.dtype
            packed: object
            if n == 0 or a.ndim != 1:
                packed = a.copy()
            elif dt.kind == "f" and dt.itemsize in _BITS and dt.isnative:
                packed = _pack_floats(a)
            elif dt.kind in "iu" and dt.itemsize <= 8:
                packed = _pack_ints(a)
            elif _packable_bytes(dt):
                w = _words(a)
                packed = tuple(_pack_ints(w[:, j]) for j in range(w.shape[1]))
            elif dt.kind == "O":
                at = np.flatnonzero(a != "")
                packed = (at.astype(np.int32 if n < 2**31 else np.int64), a[at])
            else:
                packed = a.copy()
            cols.append((name, dt, packed))
        self._cols = cols

    def __len__(self) -> int:
        return self._n

    @property
    def spec(self) -> list[tuple[str, np.dtype]]:
        """The columns' names and dtypes, in order."""
        return [(name, dt) for name, dt, _ in self._cols]

    @property
    def nbytes(self) -> int:
        """Bytes of the packed columns' data (not counting Python objects or strings)."""
        total = 0
        for _, _, packed in self._cols:
            if isinstance(packed, _Column):
                total += packed.nbytes
            elif isinstance(packed, tuple) and packed and isinstance(packed[0], _Column):
                total += sum(c.nbytes for c in packed)
            elif isinstance(packed, tuple):
                total += int(packed[0].nbytes + packed[1].nbytes)
            else:
                total += int(packed.nbytes)  # type: ignore[attr-defined]
        return total

    def unpack(self) -> FlowBatch:
        out = {name: np.empty(self._n, dt) for name, dt, _ in self._cols}
        self.unpack_into(out, 0)
        return FlowBatch(out)

    def unpack_into(
        self, out: Mapping[str, np.ndarray], at: int, only: Container[str] | None = None
    ) -> None:
        """Write the rows into ``out[name][at : at + len(self)]`` for every column (or
        for the columns named in ``only``)."""
        n = self._n
        for name, dt, packed in self._cols:
            if only is not None and name not in only:
                continue
            dest = out[name][at : at + n]
            if dest.dtype != dt or len(dest) != n:
                raise ValueError(f"column {name!r}: cannot unpack {dt} x {n} into {dest.dtype}")
            if isinstance(packed, _Column):
                if dt.kind == "f":
                    _unpack_floats(packed, dest)
                else:
                    _unpack_ints(packed, dest)
            elif isinstance(packed, tuple) and packed and isinstance(packed[0], _Column):
                words = dest.view(_WORD).reshape(n, -1)
                for j, word in enumerate(packed):
                    _unpack_ints(word, words[:, j])
            elif isinstance(packed, tuple):
                dest[:] = ""
                dest[packed[0]] = packed[1]
            else:
                dest[:] = packed


def join(parts: Sequence[FlowBatch | PackedRows]) -> FlowBatch:
    """The rows of ``parts`` (packed or not) as one batch; packed parts are unpacked
    straight into the joined columns (no second copy of the window)."""
    parts = [p for p in parts if len(p)]
    if not any(isinstance(p, PackedRows) for p in parts):
        return FlowBatch.concat(parts)  # type: ignore[arg-type]
    spec = _spec(parts[0])
    if any(_spec(p) != spec for p in parts[1:]):
        return FlowBatch.concat([p.unpack() if isinstance(p, PackedRows) else p for p in parts])
    total = sum(len(p) for p in parts)
    out = {name: np.empty(total, dt) for name, dt in spec}
    at = 0
    for p in parts:
        if isinstance(p, PackedRows):
            p.unpack_into(out, at)
        else:
            for name, _ in spec:
                out[name][at : at + len(p)] = p[name]
        at += len(p)
    return FlowBatch(out)


def join_column(parts: Sequence[FlowBatch | PackedRows], name: str) -> np.ndarray:
    """Column ``name`` of ``join(parts)``, bit for bit, without unpacking the others.

    ``parts`` must hold at least one row and have ``name`` in their columns (as the
    joined batch would have it: :func:`names` of some part)."""
    parts = [p for p in parts if len(p)]
    dtypes = [_dtype(p, name) for p in parts]
    if len(parts) == 1 or any(dt is None for dt in dtypes) or len(set(dtypes)) > 1:
        # as join's fallback, FlowBatch.concat, builds it (missing values filled)
        pieces = [_column(p, name, dt) for p, dt in zip(parts, dtypes, strict=True)]
        return pieces[0] if len(pieces) == 1 else np.concatenate(pieces)
    out = np.empty(sum(len(p) for p in parts), dtypes[0])
    at = 0
    for p in parts:
        if isinstance(p, PackedRows):
            p.unpack_into({name: out}, at, only=(name,))
        else:
            out[at : at + len(p)] = p[name]
        at += len(p)
    return out


def _dtype(part: FlowBatch | PackedRows, name: str) -> np.dtype | None:
    """The dtype of ``part``'s column ``name`` (None: it has none)."""
    if isinstance(part, PackedRows):
        return next((dt for n, dt in part.spec if n == name), None)
    return np.asarray(part[name]).dtype if name in part else None


def _column(part: FlowBatch | PackedRows, name: str, dtype: np.dtype | None) -> np.ndarray:
    """``part``'s column ``name`` (of ``dtype``; None: missing values)."""
    if dtype is None:
        return missing_column(name, len(part))
    if not isinstance(part, PackedRows):
        return part[name]
    col = np.empty(len(part), dtype)
    part.unpack_into({name: col}, 0, only=(name,))
    return col


def names(part: FlowBatch | PackedRows) -> list[str]:
    """The names of ``part``'s columns, in order."""
    return [name for name, _ in _spec(part)]


def _spec(part: FlowBatch | PackedRows) -> list[tuple[str, np.dtype]]:
    if isinstance(part, PackedRows):
        return part.spec
    return [(name, np.asarray(col).dtype) for name, col in part.columns.items()]


def exercise() -> None:
    """Pack and unpack float32 and float64 columns of whole numbers of each code width,
    with and without NaN, and of other values: every specialization the kernels use."""
    cols = {}
    for dtype in (np.float32, np.float64):
        for span in (2, 300, 70_000):
            for nan in (False, True):
                x = [0.0, span, 1.0, np.nan if nan else 1.0]
                cols[f"{np.dtype(dtype).name}-{span}-{nan}"] = np.array(x, dtype)
        cols[f"{np.dtype(dtype).name}-raw"] = np.array([0.5, 1.5, 2.5, 3.5], dtype)
    PackedRows(FlowBatch(cols)).unpack()


_loading: list[threading.Thread] = []


def load_soon() -> None:
    """Load the compiled kernels on a thread of their own, once (see the module doc)."""
    if _loading or "netmon_exporter.row_pack_kernels" in sys.modules:
        return
    thread = threading.Thread(target=exercise, name="row-pack-load", daemon=True)
    _loading.append(thread)
    thread.start()
