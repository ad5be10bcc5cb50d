"""Flow CSVs: write ours (CICFlowMeter column names) and read CICFlowMeter/NTLFlowLyzer ones.

Output columns are the Java tool's 84 (``csv_dialects.CIC_CSV_COLUMNS``) followed
by our extra columns. Values: integers without a decimal point, other numbers in
Python's shortest round-trip form, missing values empty. ``Timestamp`` is the
flow's first packet in UTC, ``YYYY-MM-DD HH:MM:SS.ffffff``.

Files are written to a temporary name in the target directory and renamed into
place, so a crash never leaves a half-written CSV under the final name and a
re-run replaces rather than duplicates.
"""

from __future__ import annotations

import csv
import io
import os
import queue
import re
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ..capture.pcap_reader import open_regular
from ..flow_schema import (
    ADDR_DTYPE,
    CIC_FEATURES,
    EXTRA_FEATURES,
    FLOWS,
    SLICES,
    FlowBatch,
    make_batch,
    str_to_addrs,
    view,
)
from . import csv_format
from .csv_dialects import CIC_CSV_COLUMNS, header_aliases, normalise_header

OUTPUT_COLUMNS: tuple[str, ...] = (*CIC_CSV_COLUMNS, *EXTRA_FEATURES, "dns_qname")


class FlowCsvError(ValueError):
    """A flow CSV whose header we do not recognise or whose rows cannot be parsed."""


def csv_name_for(input_path: Path) -> str:
    """Return the deterministic output file name for an input file (CICFlowMeter style)."""
    name = Path(input_path).name
    if name.endswith(".gz"):
        name = name[:-3]
    return f"{name}_Flow.csv"


class FlowCsvWriter:
    """Write flow batches to ``path`` through a temporary file renamed on :meth:`close`.

    Of the records a batch may hold (``flow_record``), whole flows are written
    (CICFlowMeter semantics: one row per flow); with ``interim`` the per-window slices
    instead (a flow cut at window boundaries is one row per window it was active in).

    With ``background`` the rows are formatted and written by a thread of their own
    (the compiled formatter runs without the GIL), so a process with a spare core
    parses the next packets meanwhile; at most ``_QUEUED`` parts wait for it. The
    batches must not change after :meth:`write` (the flow table hands out new arrays).
    An error of that thread is raised by the next :meth:`write` or by :meth:`close`.
    """

    def __init__(self, path: Path, interim: bool = False, background: bool = False) -> None:
        self.path = Path(path)
        self.interim = interim
        self.tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        self._fh: BinaryIO | None = open(self.tmp, "wb")  # noqa: SIM115
        self._fh.write((",".join(OUTPUT_COLUMNS) + "\n").encode())
        self.rows = 0
        self._queue: queue.Queue[FlowBatch | None] | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._dropping = False  # aborted: the thread discards what is still queued
        if background:
            self._queue = queue.Queue(maxsize=_QUEUED)
            self._thread = threading.Thread(target=self._run, name="csv-writer", daemon=True)
            self._thread.start()

    def write(self, batch: FlowBatch) -> None:
        if not len(batch) or self._fh is None:
            return
        self._raise_error()
        batch = view(batch, SLICES if self.interim else FLOWS)
        if not len(batch):
            return
        step = csv_format.ROWS_PER_CALL
        for i in range(0, len(batch), step):
            # slices are views: no copy of ~100 columns per part
            part = batch if len(batch) <= step else batch.rows(i, i + step)
            if self._queue is not None:
                self._queue.put(part)
            else:
                self._fh.write(format_rows(part))
        self.rows += len(batch)

    def _run(self) -> None:
        assert self._queue is not None and self._fh is not None
        fh = self._fh
        while (part := self._queue.get()) is not None:
            if self._error is not None or self._dropping:
                continue
            try:
                fh.write(format_rows(part))
            except BaseException as exc:  # noqa: BLE001 - handed to the writing thread
                self._error = exc

    def _stop(self) -> None:
        if self._thread is not None and self._queue is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    def close(self) -> None:
        """Flush, fsync and move the file into place."""
        if self._fh is None:
            return
        self._stop()
        self._raise_error()
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        self._fh = None
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        """Drop the temporary file (processing failed)."""
        self._dropping = True
        self._stop()
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        self.tmp.unlink(missing_ok=True)


_QUEUED = 8  # parts of csv_format.ROWS_PER_CALL rows waiting for a background writer


def format_rows(batch: FlowBatch) -> bytes:
    """Format a batch as UTF-8 CSV lines in :data:`OUTPUT_COLUMNS` order."""
    n = len(batch)
    empty = np.full(n, "", dtype=object)
    nums = [
        batch[c] if c in batch else np.full(n, np.nan) for c in (*CIC_FEATURES, *EXTRA_FEATURES)
    ]
    return csv_format.format_flows(
        batch["src_ip"],
        batch["dst_ip"],
        batch["src_port"],
        batch["dst_port"],
        batch["protocol"],
        batch["first_ts"],
        batch.columns.get("label", empty),
        batch.columns.get("dns_qname", empty),
        nums,
    )


# -- reading -------------------------------------------------------------------------

_ISO = re.compile(r"\s*\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}")
_TS_FORMATS = (
    "%Y-%m-%d %H:%M:%S.%f",
    "%Y-%m-%d %H:%M:%S",
    "%d/%m/%Y %I:%M:%S %p",
    "%d/%m/%Y %H:%M:%S",
    "%d/%m/%Y %H:%M",
    "%Y-%m-%dT%H:%M:%S.%f",
    "%Y-%m-%dT%H:%M:%S",
)


def _parse_ts(value: str, cache: dict[str, float]) -> float:
    hit = cache.get(value)
    if hit is not None:
        return hit
    v = value.strip()
    out = float("nan")
    try:
        out = float(v)
        if out > 1e12:  # milliseconds or microseconds since the epoch
            out = out / 1e6 if out > 1e15 else out / 1e3
    except ValueError:
        for fmt in _TS_FORMATS:
            try:
                out = datetime.strptime(v, fmt).replace(tzinfo=UTC).timestamp()
                break
            except ValueError:
                continue
    cache[value] = out
    return out


def _timestamps_text(values: np.ndarray, cache: dict[str, float]) -> np.ndarray:
    """Parse a Timestamp column of ``S`` bytes: ISO in one numpy call, else per distinct value.

    Empty and unparsable values are NaN.
    """
    n = len(values)
    if n == 0:
        return np.zeros(0)
    nonempty = values[values != b""]
    if len(nonempty) and _ISO.match(nonempty[0].decode("ascii", "replace")):
        try:
            iso = values.astype("datetime64[us]")
        except ValueError:
            pass
        else:
            out = iso.astype(np.int64) / 1e6
            out[np.isnat(iso)] = np.nan
            return out
    uniq, inverse = np.unique(values, return_inverse=True)
    parsed = np.array(
        [_parse_ts(u.decode("utf-8", "replace"), cache) for u in uniq.tolist()], dtype=np.float64
    )
    return parsed[inverse.reshape(-1)]


def _finite(out: np.ndarray) -> np.ndarray:
    out[~np.isfinite(out)] = np.nan  # "Infinity", "NaN": missing
    return out


def _floats(values: np.ndarray) -> np.ndarray:
    """Parse a numeric column; empty, unparsable, "Infinity" and "NaN" values become NaN."""
    try:  # fast path: numpy parses the whole column ("Infinity" and "NaN" included)
        out = np.array(values, dtype=np.float64)
    except ValueError:
        out = np.empty(len(values), dtype=np.float64)
        for i, v in enumerate(values):
            try:
                out[i] = float(v)
            except ValueError:
                out[i] = np.nan
    return _finite(out)


def _to_int(f: np.ndarray, dtype: type) -> np.ndarray:
    info = np.iinfo(dtype)
    bad = ~np.isfinite(f) | (f < 0) | (f > info.max)
    f[bad] = 0
    return f.astype(dtype)


class _Columns:
    """Column access for one chunk of rows: numbers, addresses and text by column index."""

    n: int

    def floats(self, i: int) -> np.ndarray:
        raise NotImplementedError

    def float_columns(self, cols: list[int]) -> np.ndarray:
        """Parse several columns; row k of the result is column ``cols[k]``."""
        out = np.empty((len(cols), self.n), dtype=np.float64)
        for k, i in enumerate(cols):
            out[k] = self.floats(i)
        return out

    def addrs(self, i: int) -> np.ndarray:
        raise NotImplementedError

    def texts(self, i: int) -> np.ndarray:
        """Return the column's values as an ``S`` (bytes) array, trimmed."""
        raise NotImplementedError


class _RowColumns(_Columns):
    """Rows split by the csv module (files with quoted fields)."""

    def __init__(self, rows: list[list[str]]) -> None:
        self.n = len(rows)
        self.table = np.empty((self.n, len(rows[0])), dtype=object)  # rows share one width
        self.table[:] = rows

    def floats(self, i: int) -> np.ndarray:
        return _floats(self.table[:, i])

    def addrs(self, i: int) -> np.ndarray:
        return str_to_addrs(self.table[:, i])

    def texts(self, i: int) -> np.ndarray:
        return np.array(
            [v.strip().encode("utf-8", "surrogateescape") for v in self.table[:, i]], dtype=bytes
        )


class _FieldColumns(_Columns):
    """Rows of a byte block split into field offsets by :func:`csv_format.split_fields`."""

    def __init__(self, block: bytes, buf: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> None:
        self.block, self.buf, self.starts, self.ends = block, buf, starts, ends
        self.n = len(starts)

    def _field(self, r: int, i: int) -> bytes:
        return self.block[self.starts[r, i] : self.ends[r, i]]

    def floats(self, i: int) -> np.ndarray:
        return self.float_columns([i])[0]

    def float_columns(self, cols: list[int]) -> np.ndarray:
        """Parse several columns in one pass; row k of the result is column ``cols[k]``."""
        rows = np.empty((self.n, len(cols)), dtype=np.float64)
        bad = np.empty((self.n, len(cols)), dtype=np.bool_)
        if csv_format.parse_floats(
            self.buf, self.starts, self.ends, np.array(cols, dtype=np.int64), rows, bad
        ):
            for r, k in zip(*np.nonzero(bad), strict=True):  # "Infinity", 17-digit values
                try:
                    rows[r, k] = float(self._field(int(r), cols[int(k)]))
                except ValueError:
                    rows[r, k] = np.nan
        out = np.empty((len(cols), self.n), dtype=np.float64)
        csv_format.transpose(rows, out)
        return _finite(out)

    def addrs(self, i: int) -> np.ndarray:
        raw = np.empty((self.n, 16), dtype=np.uint8)
        bad = np.empty(self.n, dtype=np.bool_)
        if csv_format.parse_ipv4(self.buf, self.starts, self.ends, i, raw, bad):
            rows = np.flatnonzero(bad)
            other = str_to_addrs(
                [self._field(r, i).decode("utf-8", "replace") for r in rows.tolist()]
            )
            raw[rows] = np.frombuffer(other.tobytes(), dtype=np.uint8).reshape(-1, 16)
        return raw.view(ADDR_DTYPE).reshape(self.n)

    def texts(self, i: int) -> np.ndarray:
        lengths = self.ends[:, i] - self.starts[:, i]
        width = max(int(lengths.max(initial=0)), 1)
        out = np.zeros((self.n, width), dtype=np.uint8)
        csv_format.gather_text(self.buf, self.starts, self.ends, i, out)
        return out.view(f"S{width}").reshape(self.n)


def _strings(values: np.ndarray) -> np.ndarray:
    """Decode an ``S`` array to an object array of str (each distinct value decoded once)."""
    if len(values) == 0:
        return np.zeros(0, dtype=object)
    uniq, inverse = np.unique(values, return_inverse=True)
    decoded = np.array([u.decode("utf-8", "replace").strip() for u in uniq.tolist()], dtype=object)
    return decoded[inverse.reshape(-1)]


# A flow CSV without address columns (CIC-IDS2017 "MachineLearningCVE", CIC-IDS2018) must
# still name this many of the CICFlowMeter features to be taken for one.
_MIN_FEATURES_WITHOUT_ADDRESSES = 10
_BLOCK_BYTES = 8 << 20  # bytes of CSV converted per compiled pass


def _header_index(path: Path, header: list[str]) -> dict[str, int]:
    """Map the Java short name of each recognised column to its index; reject non-flow CSVs."""
    aliases = header_aliases()
    index: dict[str, int] = {}
    for i, name in enumerate(header):
        short = aliases.get(normalise_header(name))
        if short is not None and short not in index:  # first of duplicated columns wins
            index[short] = i
    features = [c for c in CIC_FEATURES if c in index]
    has_addresses = {"Src IP", "Dst IP"} <= set(index)
    if len(features) < (5 if has_addresses else _MIN_FEATURES_WITHOUT_ADDRESSES):
        raise FlowCsvError(
            f"{path}: header is not a CICFlowMeter, CIC-IDS2017/2018 or NTLFlowLyzer flow CSV "
            f"(found {len(header)} columns, {len(features)} known features, "
            f"{'with' if has_addresses else 'without'} Src IP/Dst IP)"
        )
    return index


def read_flow_csv(path: Path, *, chunk_rows: int = 50_000) -> Iterator[FlowBatch]:
    """Yield the flows of a CICFlowMeter (Java/Python), CIC-IDS2017/2018 or NTLFlowLyzer CSV.

    Columns the source lacks are missing (NaN), not zero. Without address columns
    (CIC-IDS2017 "MachineLearningCVE", CIC-IDS2018) the addresses are all-zero, ports
    absent from the header 0, and without a Timestamp column ``first_ts``/``last_ts``
    are NaN. "Infinity" and "NaN" values are NaN. Header lines repeated inside the
    data (CIC-IDS2018 files have them) are skipped.

    The file is read in blocks of complete lines split and converted by compiled code;
    from the first block that contains a double quote on, the csv module splits the
    rows instead (quoted fields may hold commas and newlines). Batches have at most
    ``chunk_rows`` rows.
    """
    with open_regular(path) as fh:
        first = fh.readline()
        if not first:
            raise FlowCsvError(f"{path}: empty file, expected a flow CSV header")
        header_line = first.rstrip(b"\r\n")
        text = header_line.decode("utf-8", "replace").removeprefix("\ufeff")
        try:
            header = next(csv.reader([text]), [])
        except csv.Error as exc:
            raise FlowCsvError(f"{path}: not a CSV file ({exc})") from exc
        index = _header_index(path, header)
        width = max(index.values()) + 1
        ts_cache: dict[str, float] = {}
        offset = len(first)  # file offset of the next block
        rest = b""
        while True:
            data = fh.read(_BLOCK_BYTES)
            if data:
                data = rest + data if rest else data
                cut = data.rfind(b"\n") + 1
                if cut == 0:
                    rest = data
                    continue
                block, rest = data[:cut], data[cut:]
            elif rest:
                block, rest = rest, b""
            else:
                return
            if b'"' in block:
                fh.seek(offset)
                yield from _read_quoted(
                    path, fh, header, index, width, chunk_rows, offset, ts_cache
                )
                return
            yield from _block_batches(block, header_line, index, width, chunk_rows, ts_cache)
            offset += len(block)


def _block_batches(
    block: bytes,
    header_line: bytes,
    index: dict[str, int],
    width: int,
    chunk_rows: int,
    ts_cache: dict[str, float],
) -> Iterator[FlowBatch]:
    if header_line in block:  # drop repeated header lines
        block = b"".join(
            ln for ln in block.splitlines(keepends=True) if ln.rstrip(b"\r\n") != header_line
        )
    buf = np.frombuffer(block, dtype=np.uint8)
    cap = block.count(b"\n") + 1
    starts = np.empty((cap, width), dtype=np.int32)
    ends = np.empty((cap, width), dtype=np.int32)
    n = csv_format.split_fields(buf, width, starts, ends)
    for i in range(0, n, chunk_rows):
        j = min(i + chunk_rows, n)
        yield _build_batch(_FieldColumns(block, buf, starts[i:j], ends[i:j]), index, ts_cache)


def _read_quoted(
    path: Path,
    fh: BinaryIO,
    header: list[str],
    index: dict[str, int],
    width: int,
    chunk_rows: int,
    offset: int,
    ts_cache: dict[str, float],
) -> Iterator[FlowBatch]:
    """Read the rest of the file (from ``fh``'s position, ``offset``) with the csv module."""
    text = io.TextIOWrapper(fh, encoding="utf-8", errors="replace", newline="")
    reader = csv.reader(text)
    rows: list[list[str]] = []
    try:
        for row in reader:
            if not row or row == header:  # blank or a repeated header line
                continue
            if len(row) != width:
                row = (row + [""] * width)[:width]
            rows.append(row)
            if len(rows) >= chunk_rows:
                yield _build_batch(_RowColumns(rows), index, ts_cache)
                rows = []
    except csv.Error as exc:
        with open(path, "rb") as again:
            line = again.read(offset).count(b"\n") + reader.line_num
        raise FlowCsvError(f"{path}: malformed CSV near line {line} ({exc})") from exc
    finally:
        text.detach()
    if rows:
        yield _build_batch(_RowColumns(rows), index, ts_cache)


def _build_batch(src: _Columns, index: dict[str, int], ts_cache: dict[str, float]) -> FlowBatch:
    n = src.n
    cols: dict[str, object] = {}
    for name, key in (("Src IP", "src_ip"), ("Dst IP", "dst_ip")):
        if name in index:  # else all-zero (missing key column)
            cols[key] = src.addrs(index[name])
    keys = [
        (name, key, dtype)
        for name, key, dtype in (
            ("Src Port", "src_port", np.uint16),
            ("Dst Port", "dst_port", np.uint16),
            ("Protocol", "protocol", np.uint8),
        )
        if name in index
    ]  # else 0
    features = [name for name in (*CIC_FEATURES, *EXTRA_FEATURES) if name in index]
    values = src.float_columns([index[k[0]] for k in keys] + [index[f] for f in features])
    for j, (_, key, dtype) in enumerate(keys):
        cols[key] = _to_int(values[j], dtype)
    for j, name in enumerate(features, start=len(keys)):
        cols[name] = values[j]
    if "Pkt Size Avg" not in cols and "Pkt Len Mean" in cols:
        cols["Pkt Size Avg"] = cols["Pkt Len Mean"]
    if "Timestamp" in index:
        first = _timestamps_text(src.texts(index["Timestamp"]), ts_cache)
        cols["first_ts"] = first
        if "Flow Duration" in cols:
            dur = np.asarray(cols["Flow Duration"], dtype=np.float64)
            cols["last_ts"] = first + np.nan_to_num(dur) / 1e6
        else:
            cols["last_ts"] = first.copy()
    else:  # unknown time (CIC-IDS2017 MachineLearningCVE): NaN, not the epoch
        cols["first_ts"] = np.full(n, np.nan)
        cols["last_ts"] = np.full(n, np.nan)
    if "Label" in index:
        cols["label"] = _strings(src.texts(index["Label"]))
    if "dns_qname" in index:
        cols["dns_qname"] = _strings(src.texts(index["dns_qname"]))
    return make_batch(n, **cols)  # type: ignore[arg-type]
