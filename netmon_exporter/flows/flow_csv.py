"""Flow CSVs: write ours (CICFlowMeter column names) and read CICFlowMeter/NTLFlowLyzer ones.

Output columns are the Java tool's 84 (``flow_schema.CIC_CSV_COLUMNS``) followed
by our extra columns. Values: integers without a decimal point, other numbers in
Python's shortest round-trip form, missing values empty. ``Timestamp`` is the
flow's first packet in UTC, ``YYYY-MM-DD HH:MM:SS.ffffff``.

Files are written to a temporary name in the target directory and renamed into
place, so a crash never leaves a half-written CSV under the final name and a
re-run replaces rather than duplicates.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ..flow_schema import (
    CIC_CSV_COLUMNS,
    CIC_FEATURES,
    EXTRA_FEATURES,
    FlowBatch,
    header_aliases,
    make_batch,
    normalise_header,
    str_to_addrs,
)
from . import csv_format

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
    """Write flow batches to ``path`` through a temporary file renamed on :meth:`close`."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        self._fh: BinaryIO | None = open(self.tmp, "wb")  # noqa: SIM115
        self._fh.write((",".join(OUTPUT_COLUMNS) + "\n").encode())
        self.rows = 0

    def write(self, batch: FlowBatch) -> None:
        if not len(batch) or self._fh is None:
            return
        step = csv_format.ROWS_PER_CALL
        for i in range(0, len(batch), step):
            part = batch if len(batch) <= step else batch.take(np.arange(i, min(i + step,
                                                                                len(batch))))
            self._fh.write(format_rows(part))
        self.rows += len(batch)

    def close(self) -> None:
        """Flush, fsync and move the file into place."""
        if self._fh is None:
            return
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        self._fh = None
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        """Drop the temporary file (processing failed)."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        self.tmp.unlink(missing_ok=True)


def format_rows(batch: FlowBatch) -> bytes:
    """Format a batch as UTF-8 CSV lines in :data:`OUTPUT_COLUMNS` order."""
    n = len(batch)
    empty = np.full(n, "", dtype=object)
    nums = [batch[c] if c in batch else np.full(n, np.nan) for c in (*CIC_FEATURES,
                                                                    *EXTRA_FEATURES)]
    return csv_format.format_flows(
        batch["src_ip"], batch["dst_ip"], batch["src_port"], batch["dst_port"],
        batch["protocol"], batch["first_ts"],
        batch.columns.get("label", empty), batch.columns.get("dns_qname", empty), nums)


# -- reading -------------------------------------------------------------------------

_ISO = re.compile(r"\s*\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}")
_TS_FORMATS = ("%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%d %H:%M:%S", "%d/%m/%Y %I:%M:%S %p",
               "%d/%m/%Y %H:%M:%S", "%d/%m/%Y %H:%M", "%Y-%m-%dT%H:%M:%S.%f",
               "%Y-%m-%dT%H:%M:%S")


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


def _timestamps(values: np.ndarray, cache: dict[str, float]) -> np.ndarray:
    """Parse a Timestamp column: ISO in one numpy call when possible, else per value."""
    if len(values) and _ISO.match(str(values[0])):
        try:
            iso = np.array(values, dtype="datetime64[us]")
            return iso.astype(np.int64) / 1e6
        except ValueError:
            pass
    return np.array([_parse_ts(v, cache) for v in values], dtype=np.float64)


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
    out[~np.isfinite(out)] = np.nan
    return out


def _ints(values: np.ndarray, dtype: type) -> np.ndarray:
    f = _floats(values)
    info = np.iinfo(dtype)
    bad = ~np.isfinite(f) | (f < 0) | (f > info.max)
    f[bad] = 0
    return f.astype(dtype)


# A flow CSV without address columns (CIC-IDS2017 "MachineLearningCVE", CIC-IDS2018) must
# still name this many of the CICFlowMeter features to be taken for one.
_MIN_FEATURES_WITHOUT_ADDRESSES = 10


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
            f"{'with' if has_addresses else 'without'} Src IP/Dst IP)")
    return index


def read_flow_csv(path: Path, *, chunk_rows: int = 50_000) -> Iterator[FlowBatch]:
    """Yield the flows of a CICFlowMeter (Java/Python), CIC-IDS2017/2018 or NTLFlowLyzer CSV.

    Columns the source lacks are missing (NaN), not zero. Without address columns
    (CIC-IDS2017 "MachineLearningCVE", CIC-IDS2018) the addresses are all-zero, ports
    absent from the header 0, and without a Timestamp column ``first_ts``/``last_ts``
    are NaN. "Infinity" and "NaN" values are NaN. Header lines repeated inside the
    data (CIC-IDS2018 files have them) are skipped.
    """
    with open(path, newline="", encoding="utf-8", errors="replace") as fh:
        reader = csv.reader(fh)
        try:
            header = next(reader)
        except StopIteration:
            raise FlowCsvError(f"{path}: empty file, expected a flow CSV header") from None
        except csv.Error as exc:
            raise FlowCsvError(f"{path}: not a CSV file ({exc})") from exc
        index = _header_index(path, header)
        width = max(index.values()) + 1
        ts_cache: dict[str, float] = {}
        rows: list[list[str]] = []
        try:
            for row in reader:
                if not row:
                    continue
                if row == header:  # a repeated header line
                    continue
                if len(row) != width:
                    row = (row + [""] * width)[:width]
                rows.append(row)
                if len(rows) >= chunk_rows:
                    yield _rows_to_batch(rows, index, ts_cache)
                    rows = []
        except csv.Error as exc:
            raise FlowCsvError(f"{path}: malformed CSV near line {reader.line_num} "
                               f"({exc})") from exc
        if rows:
            yield _rows_to_batch(rows, index, ts_cache)


def _rows_to_batch(rows: list[list[str]], index: dict[str, int],
                   ts_cache: dict[str, float]) -> FlowBatch:
    n = len(rows)
    table = np.empty((n, len(rows[0])), dtype=object)  # rows are padded to one width
    table[:] = rows

    def col(name: str) -> np.ndarray:
        return table[:, index[name]]

    cols: dict[str, object] = {}
    for name, key in (("Src IP", "src_ip"), ("Dst IP", "dst_ip")):
        if name in index:  # else all-zero (missing key column)
            cols[key] = str_to_addrs(col(name))
    if "Src Port" in index:
        cols["src_port"] = _ints(col("Src Port"), np.uint16)
    if "Dst Port" in index:
        cols["dst_port"] = _ints(col("Dst Port"), np.uint16)
    if "Protocol" in index:
        cols["protocol"] = _ints(col("Protocol"), np.uint8)
    for name in (*CIC_FEATURES, *EXTRA_FEATURES):
        if name in index:
            cols[name] = _floats(col(name))
    if "Pkt Size Avg" not in cols and "Pkt Len Mean" in cols:
        cols["Pkt Size Avg"] = cols["Pkt Len Mean"]
    if "Timestamp" in index:
        first = _timestamps(col("Timestamp"), ts_cache)
        cols["first_ts"] = first
        if "Flow Duration" in cols:
            dur = np.asarray(cols["Flow Duration"], dtype=np.float64)
            cols["last_ts"] = first + np.nan_to_num(dur) / 1e6
        else:
            cols["last_ts"] = first
    else:  # unknown time (CIC-IDS2017 MachineLearningCVE): NaN, not the epoch
        cols["first_ts"] = np.full(n, np.nan)
        cols["last_ts"] = np.full(n, np.nan)
    if "Label" in index:
        cols["label"] = np.array([v.strip() for v in col("Label")], dtype=object)
    if "dns_qname" in index:
        cols["dns_qname"] = np.array(col("dns_qname"), dtype=object)
    return make_batch(n, **cols)  # type: ignore[arg-type]
