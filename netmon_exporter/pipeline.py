"""Per-file processing: one capture (or flow CSV) in, packets counted and flows out.

This is what worker processes run. It knows nothing about Prometheus, HTTP or
signals: it returns a :class:`FileResult` and the daemon records it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeAlias

import numpy as np

from .capture import decode as D
from .capture.pcap_reader import CaptureError, CaptureReader, PacketChunk, sniff_kind
from .flow_sample import narrow
from .flow_schema import FLOWS, PROTOCOL_INDEX, PROTOCOLS, FlowBatch, view
from .flows.features import flow_batch
from .flows.flow_csv import FlowCsvError, FlowCsvWriter, csv_name_for, read_flow_csv
from .flows.flow_table import FlowTable

# Labels of metrics.SKIP_REASONS (kept literal: the pipeline does not import the
# metrics module); protocol labels come from flow_schema.PROTOCOLS.
_SKIP_REASONS = ("non_ip", "truncated", "malformed", "unsupported_link")
_STATUS_REASON = {
    D.ST_NON_IP: "non_ip",
    D.ST_TRUNCATED: "truncated",
    D.ST_MALFORMED: "malformed",
    D.ST_UNSUPPORTED_LINK: "unsupported_link",
}
# flows.max_open_flows' default (config imports nothing of ours; a test keeps them equal)
DEFAULT_MAX_OPEN_FLOWS = 200_000


class CaptureFormatError(Exception):
    """The file is not a capture or flow CSV we can read (reason is user-facing)."""

    def __init__(self, message: str, reason: str = "format") -> None:
        super().__init__(message)
        self.reason = reason  # one of metrics.FAIL_REASONS


@dataclass(frozen=True)
class FlowSettings:
    """The flow-engine subset of the config (plain values, picklable)."""

    idle_timeout_seconds: float = 120.0
    active_timeout_seconds: float = 3600.0
    activity_timeout_seconds: float = 5.0
    carry_across_files: bool = True
    tcp_close_grace_seconds: float = 2.0  # final ACK / retransmitted FIN after close
    max_file_bytes: int = 0  # 0: no limit; larger files fail "too_large"
    max_open_flows: int = DEFAULT_MAX_OPEN_FLOWS  # 0: no cap; beyond, the oldest are evicted
    # > 0: flows still open at each multiple of this many seconds (the window boundaries)
    # are cut into interim records, so windows see packets where they happen
    interim_seconds: float = 0.0
    csv_interim: bool = False  # the flow CSV holds the slices instead of whole flows
    # read and decode the next packets on a thread of their own (a process with a core
    # to spare: the flows command; workers are processes side by side already)
    read_ahead: bool = False
    # tunnels opened to reach the inner packet (capture/decode.py; 0: the outer flows)
    tunnel_depth: int = D.MAX_TUNNEL_DEPTH
    # the hash key (hash_key.py): of the distinct-name sketches of new flow tables
    # (flow_table.ST_KEY) and, in a worker, of the flow sample; 0 for the same values every
    # run, the daemon's secret one in its tasks (never in a repr, so never in a log line)
    hash_key: int = field(default=0, repr=False)

    def table_args(self) -> tuple[float, float, float, float, int, float]:
        """The flow table's settings, in :class:`FlowTable`'s argument order."""
        return (
            self.idle_timeout_seconds,
            self.active_timeout_seconds,
            self.activity_timeout_seconds,
            self.tcp_close_grace_seconds,
            self.max_open_flows,
            self.interim_seconds,
        )

    def table(self) -> FlowTable:
        return FlowTable(*self.table_args(), sketch_key=self.hash_key)


# Open flows carried from one file of a series to the next: serialised (``to_bytes``),
# as named arrays (``state_arrays``), or the live table a worker kept from the last file.
CarryState: TypeAlias = bytes | Mapping[str, np.ndarray] | FlowTable
SaveCarry: TypeAlias = Callable[[FlowTable], bytes]


@dataclass(frozen=True)
class FileResult:
    """What processing one file produced."""

    path: str
    kind: str  # "pcap" | "pcapng" | "csv"
    size_bytes: int
    seconds: float
    flows: FlowBatch  # records of this file: flows completed (carried ones included), slices
    packets_by_protocol: dict[str, int] = field(default_factory=dict)  # metrics.PROTOCOLS
    bytes_by_protocol: dict[str, int] = field(default_factory=dict)
    skipped_by_reason: dict[str, int] = field(default_factory=dict)  # metrics.SKIP_REASONS
    ip_fragments: int = 0
    # packets decoded from inside a tunnel, by the outermost (capture.decode.TUNNEL_NAMES)
    decapsulated_by_tunnel: dict[str, int] = field(default_factory=dict)
    # opaque open-flow state for the next file of the series (from a worker: a
    # reference to it in ingest.carry_store)
    carry: bytes | None = None
    csv_path: str | None = None  # flow CSV written, if any
    csv_rows: int = 0
    first_ts: float | None = None  # capture time span (epoch seconds)
    last_ts: float | None = None
    flow_count: int = 0  # flows completed (also when not collected)
    flows_by_protocol: dict[str, int] = field(default_factory=dict)  # of flow_count
    flows_evicted: int = 0  # flows ended early because the flow table was full
    warnings: tuple[str, ...] = ()  # what went wrong without stopping the file

    def flow_counts(self) -> dict[str, int]:
        """Flows completed by protocol label (exact even when ``flows`` is a sample)."""
        if self.flows_by_protocol or not len(self.flows):
            return dict(self.flows_by_protocol)
        return _flow_counts(self.flows)

    @property
    def packets(self) -> int:
        return sum(self.packets_by_protocol.values()) + sum(self.skipped_by_reason.values())


def _flow_counts(flows: FlowBatch) -> dict[str, int]:
    flows = view(flows, FLOWS)  # interim records are not flows
    idx = PROTOCOL_INDEX[np.clip(np.asarray(flows["protocol"], dtype=np.int64), 0, 256)]
    counts = np.bincount(idx, minlength=5)
    return {p: int(n) for p, n in zip(PROTOCOLS, counts, strict=True) if n}


class _Counts:
    """Per-file packet counters, updated per chunk with vectorised numpy."""

    def __init__(self) -> None:
        self.pkts = np.zeros(5, dtype=np.int64)
        self.byts = np.zeros(5, dtype=np.int64)
        self.skip = dict.fromkeys(_SKIP_REASONS, 0)
        self.frags = 0
        self.tunnels = np.zeros(len(D.TUNNEL_NAMES), dtype=np.int64)
        self.first: float | None = None
        self.last: float | None = None

    def add(self, chunk: PacketChunk) -> None:
        P = chunk.P
        status = P[:, D.F_STATUS]
        ok = status == D.ST_OK
        idx = PROTOCOL_INDEX[np.clip(P[ok, D.F_PROTO], 0, 256)]
        self.pkts += np.bincount(idx, minlength=5)
        self.byts += np.bincount(idx, weights=P[ok, D.F_WIRELEN], minlength=5).astype(np.int64)
        if not ok.all():
            for code, n in enumerate(np.bincount(status, minlength=5)):
                if code != D.ST_OK and n:
                    self.skip[_STATUS_REASON[code]] += int(n)
        self.frags += int(np.count_nonzero(P[:, D.F_FRAG]))
        tun = P[:, D.F_TUNNEL]
        if tun.any():
            self.tunnels += np.bincount(tun, minlength=len(D.TUNNEL_NAMES))
        ts = P[:, D.F_TS]
        lo, hi = float(ts.min()) / 1e6, float(ts.max()) / 1e6
        self.first = lo if self.first is None else min(self.first, lo)
        self.last = hi if self.last is None else max(self.last, hi)


def process_file(
    path: Path,
    settings: FlowSettings,
    *,
    carry: CarryState | None = None,
    csv_dir: Path | None = None,
    final: bool = True,
    collect: bool = True,
    on_flows: Callable[[FlowBatch], None] | None = None,
    on_progress: Callable[[int], None] | None = None,
    csv_path: Path | None = None,
    save_carry: SaveCarry | None = None,
) -> FileResult:
    """Parse one file into flows; raise :class:`CaptureFormatError` for unreadable input.

    ``carry`` is the ``FileResult.carry`` of the previous file of the same series;
    ``final=False`` keeps flows still open at the end in ``FileResult.carry``
    instead of ending them. ``csv_dir`` set: write the flows as CSV there (or to
    ``csv_path``). ``collect=False`` leaves ``FileResult.flows`` empty (memory stays
    bounded); ``on_flows`` receives each batch of records (finished flows and, with
    ``settings.interim_seconds``, interim slices); ``on_progress`` the uncompressed
    bytes read so far; ``save_carry`` keeps the open flows left at the end and returns
    what ``FileResult.carry`` holds (default: :meth:`FlowTable.to_bytes`).
    """
    path = Path(path)
    t0 = time.perf_counter()
    size, kind = _look_at(path, settings)
    if csv_path is None and csv_dir is not None:
        csv_path = Path(csv_dir) / csv_name_for(path)
    out = _Output(csv_path, settings.csv_interim, collect, on_flows)
    try:
        if kind == "csv":
            counts, out_carry, evicted = _process_flow_csv(
                path, settings, carry, final, out, save_carry
            )
            file_kind = "csv"
        else:
            counts, out_carry, file_kind, evicted = _process_capture(
                path, settings, carry, final, out, on_progress, save_carry
            )
        out.close()
    except CaptureFormatError:
        out.abort()
        raise
    except OSError as exc:
        out.abort()
        raise CaptureFormatError(f"{path}: I/O error ({exc.strerror or exc})", "io") from exc
    except MemoryError as exc:
        out.abort()
        raise CaptureFormatError(f"{path}: out of memory while processing", "too_large") from exc
    return FileResult(
        path=str(path),
        kind=file_kind,
        size_bytes=size,
        seconds=time.perf_counter() - t0,
        flows=FlowBatch.concat(out.batches) if collect else FlowBatch.empty(),
        packets_by_protocol={p: int(v) for p, v in zip(PROTOCOLS, counts.pkts, strict=True)},
        bytes_by_protocol={p: int(v) for p, v in zip(PROTOCOLS, counts.byts, strict=True)},
        skipped_by_reason=dict(counts.skip),
        ip_fragments=counts.frags,
        decapsulated_by_tunnel={
            name: int(n) for name, n in zip(D.TUNNEL_NAMES[1:], counts.tunnels[1:], strict=True)
        },
        carry=out_carry,
        csv_path=str(csv_path) if out.writer is not None else None,
        csv_rows=out.writer.rows if out.writer is not None else 0,
        first_ts=counts.first,
        last_ts=counts.last,
        flow_count=out.flows,
        flows_by_protocol=out.by_protocol,
        flows_evicted=evicted,
    )


def _look_at(path: Path, settings: FlowSettings) -> tuple[int, str]:
    """The file's size and kind ("pcap", "pcapng", "csv"); refuse what we cannot read."""
    try:
        size = os.stat(path).st_size
        kind = sniff_kind(path)
    except OSError as exc:
        raise CaptureFormatError(f"{path}: cannot read ({exc.strerror or exc})", "io") from exc
    if settings.max_file_bytes and size > settings.max_file_bytes:
        raise CaptureFormatError(
            f"{path}: {size} bytes is above the limit of {settings.max_file_bytes}", "too_large"
        )
    if kind == "unknown" and path.name.lower().endswith((".csv", ".csv.gz")):
        kind = "csv"
    if kind == "unknown":
        raise CaptureFormatError(f"{path}: not a pcap, pcapng or flow CSV file", "format")
    return size, kind


class _Output:
    """Where a file's records go: counted by protocol, the flow CSV, kept, handed on."""

    def __init__(
        self,
        csv_path: Path | None,
        interim: bool,
        collect: bool,
        on_flows: Callable[[FlowBatch], None] | None,
    ) -> None:
        self.writer = None
        if csv_path is not None:
            try:
                self.writer = FlowCsvWriter(csv_path, interim=interim)
            except OSError as exc:
                raise _output_error(csv_path, exc) from exc
        self.batches: list[FlowBatch] = []
        self.flows = 0
        self.by_protocol: dict[str, int] = {}
        self._collect, self._on_flows = collect, on_flows

    def __call__(self, batch: FlowBatch) -> None:
        if not len(batch):
            return
        for proto, n in _flow_counts(batch).items():
            self.by_protocol[proto] = self.by_protocol.get(proto, 0) + n
            self.flows += n
        if self.writer is not None:
            try:
                self.writer.write(batch)
            except OSError as exc:
                raise _output_error(self.writer.path, exc) from exc
        if self._collect:
            self.batches.append(batch)
        if self._on_flows is not None:
            self._on_flows(batch)

    def close(self) -> None:
        if self.writer is not None:
            try:
                self.writer.close()
            except OSError as exc:
                raise _output_error(self.writer.path, exc) from exc

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.abort()


def _process_flow_csv(
    path: Path,
    settings: FlowSettings,
    carry: CarryState | None,
    final: bool,
    emit: Callable[[FlowBatch], None],
    save_carry: SaveCarry | None,
) -> tuple[_Counts, bytes | None, int]:
    """Read a flow CSV's flows; a carry passes through it (a CSV continues no flows)."""
    try:
        for batch in read_flow_csv(path):
            emit(batch)
    except FlowCsvError as exc:
        raise CaptureFormatError(str(exc), "format") from exc
    out_carry = None
    if carry is not None and not final:
        out_carry = _keep(_load_carry(carry, settings), save_carry)
    if carry is not None and final:
        emit(finish_carry(carry, settings))
    return _Counts(), out_carry, 0


def _output_error(path: Path | str, exc: OSError) -> CaptureFormatError:
    """A flow CSV could not be written: the capture is fine, the output is not (retried)."""
    return CaptureFormatError(f"{path}: cannot write flow CSV ({exc.strerror or exc})", "output")


def _load_carry(carry: CarryState | None, settings: FlowSettings) -> FlowTable:
    """The flow table to continue: fresh, restored, or the live one if its settings hold."""
    if carry is None:
        return settings.table()
    args = settings.table_args()
    try:
        if isinstance(carry, FlowTable):
            if carry.runs_with(*args):
                return carry
            return FlowTable.from_arrays(carry.state_arrays(), *args)  # settings reloaded
        key = settings.hash_key  # for state saved before keys: the table keeps its own
        if isinstance(carry, bytes):
            return FlowTable.from_bytes(carry, *args, sketch_key=key)
        return FlowTable.from_arrays(carry, *args, sketch_key=key)
    except ValueError as exc:
        raise CaptureFormatError(str(exc), "internal") from exc


def _keep(table: FlowTable, save_carry: SaveCarry | None) -> bytes:
    return save_carry(table) if save_carry is not None else table.to_bytes()


def _process_capture(
    path: Path,
    settings: FlowSettings,
    carry: CarryState | None,
    final: bool,
    emit: Callable[[FlowBatch], None],
    on_progress: Callable[[int], None] | None,
    save_carry: SaveCarry | None,
) -> tuple[_Counts, bytes | None, str, int]:
    table = _load_carry(carry, settings)
    evicted_before = table.evicted  # a live table kept from the last file counted those
    counts = _Counts()
    reader = CaptureReader(path, read_ahead=settings.read_ahead, tunnel_depth=settings.tunnel_depth)
    try:
        for chunk in reader:
            counts.add(chunk)
            table.add(chunk.P, chunk.PE, chunk.buf, lambda part: emit(flow_batch(part)))
            if on_progress is not None:
                on_progress(reader.bytes_read)
    except CaptureError as exc:
        raise CaptureFormatError(str(exc), exc.reason) from exc
    if reader.truncated_tail:
        if reader.packets == 0:
            raise CaptureFormatError(f"{path}: capture ends inside its first record", "truncated")
        counts.skip["truncated"] += 1
    out_carry = None
    if final or not settings.carry_across_files:
        table.finish(lambda part: emit(flow_batch(part)))
    else:
        out_carry = _keep(table, save_carry)
    return counts, out_carry, reader.kind, table.evicted - evicted_before


def finish_carry(carry: CarryState, settings: FlowSettings) -> FlowBatch:
    """End every flow held in ``carry`` (no next file came) and return them."""
    table = _load_carry(carry, settings)
    return flow_batch(table.finish())


def finish_carry_rows(carry: CarryState, settings: FlowSettings) -> FlowBatch:
    """End every flow held in ``carry``; return them narrowed for analysis (main process).

    Features are computed a few thousand flows at a time, so memory stays near the
    size of the carry rather than of every feature of every carried flow.
    """
    table = _load_carry(carry, settings)
    parts: list[FlowBatch] = []
    table.finish(lambda part: parts.append(narrow(flow_batch(part))))
    return FlowBatch.concat(parts)
