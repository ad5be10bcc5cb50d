"""Fixed, wall-clock-aligned time windows over flows, and the JSON window report.

Flows are assigned to the window holding their ``first_ts``; a flow that crossed a
window boundary comes as interim records (one per window it was active in, each at its
own first packet) plus its whole record (see :mod:`.flow_schema` ``RECORD_*``): the
slices carry its packets and bytes to the windows where they flowed, the whole record
counts it as one flow. A window closes
when the watermark (the latest packet time seen minus a grace of one window
length) passes its end, so flows that end a little later, or come from the next
capture file, still land in their window. Flows that arrive for a window already
closed are *late*: they go to the oldest window still open and are counted as
``late_flows`` in its report (nothing is dropped, nothing counted twice).
Flows more than ``BACKFILL_SECONDS`` older than the closed boundary are a
*backfill* (old captures dropped in for analysis, another sensor's timeline): they
get windows of their own, which close at once, so their detections and reports
carry their real times instead of being mixed into today's window.

A window does not hold its flows as they came: it keeps the columns analysis reads,
narrow, at most ``flow_sample.ROW_CAP`` rows of them (a flood is thinned, small
groups of flows are kept whole; see :mod:`.flow_sample`), and an exact tally of
every flow by second and protocol. Totals and the protocol mix of the report come
from the tally; top talkers are estimated from the rows and their sampling weights.
Tallies are per second of the first packet, so with a window length that is not a
whole number of seconds a flow may be counted in the window next to the one
holding its row.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .config import WindowsConfig
from .flow_sample import (
    NO_TIME,
    PACK_FROM,
    ROW_CAP,
    FlowSample,
    SampledFlows,
    take_tally,
    tally_of,
    weights,
)
from .flow_schema import PROTOCOL_LABELS, SLICES, FlowBatch, addrs_to_str, view
from .heap import map_large_blocks, release_free_memory, release_free_memory_soon
from .text_safety import clean_data

if TYPE_CHECKING:
    from .analysis import WindowAnalysis

REPORT_SCHEMA_VERSION = 2  # 2: bytes on the wire, payload_bytes added
BACKFILL_SECONDS = 3600.0  # late by more than this: the flows get their own windows
MAX_FUTURE_SECONDS = 86400.0  # packet times beyond now + this are treated as unusable
REPORT_PREFIX = "window-"


@dataclass(frozen=True)
class ClosedWindow:
    """A closed window: its bounds (epoch seconds) and its flows.

    ``flows`` is every flow assigned to the window, or (as the aggregator builds it)
    a :class:`~.flow_sample.SampledFlows`: the rows kept for analysis and the exact
    tally of all flows.
    """

    start: float
    end: float
    flows: FlowBatch
    late_flows: int = 0


class WindowAggregator:
    """Assign flows to windows, close them by watermark, write and prune window reports."""

    def __init__(
        self,
        cfg: WindowsConfig,
        report_dir: Path,
        clock: Callable[[], float] = time.time,
        row_cap: int = ROW_CAP,
        pack_from: int = PACK_FROM,
    ) -> None:
        self.cfg = cfg
        self.report_dir = Path(report_dir)
        self._clock = clock
        self._row_cap = row_cap
        self._pack_from = pack_from  # rows from which a window holds them packed
        # window index -> what it keeps of its flows (rows for analysis, exact tally)
        self._windows: dict[int, FlowSample] = {}
        self._late: dict[int, int] = {}
        self._max_ts = -math.inf
        self._closed_until: int | None = None  # every window index below this is closed
        self._pending: list[ClosedWindow] = []  # closed by a length change, handed out next
        map_large_blocks()  # window columns go back to the OS when their window is done

    @property
    def length(self) -> float:
        return float(self.cfg.length_seconds)

    @property
    def watermark(self) -> float:
        """Latest packet time seen minus the grace (one window length)."""
        return self._max_ts - self.length

    def open_windows(self) -> int:
        return len(self._windows)

    def rows_held(self) -> int:
        """Flow rows held by the open windows (each window holds at most the row cap)."""
        return sum(len(s) for s in self._windows.values())

    def add(self, flows: FlowBatch) -> list[ClosedWindow]:
        """Add a batch of flows; return the windows the advancing watermark closed.

        ``flows`` may be a :class:`~.flow_sample.SampledFlows` (a worker's thinned
        result): its rows are analysed, its tally counted.
        """
        if len(flows) or isinstance(flows, SampledFlows):
            self._assign(flows)
        return self._take_pending() + self._close(
            lambda index: (index + 1) * self.length <= self.watermark
        )

    def flush(self) -> list[ClosedWindow]:
        """Close every open window (shutdown)."""
        return self._take_pending() + self._close(lambda index: True)

    def flush_idle(self) -> list[ClosedWindow]:
        """Close every open window because no flows came for a while.

        Flows that come later for these windows are late and go to the next
        open window, so nothing waits forever for a capture that never comes.
        """
        return self.flush()

    def reconfigure(self, cfg: WindowsConfig) -> None:
        """Apply a new config; a new window length closes every open window first.

        Those windows are returned by the next :meth:`add` or :meth:`flush`.
        """
        if cfg.length_seconds != self.cfg.length_seconds:
            self._pending.extend(self._close(lambda index: True))
            self._closed_until = None
        self.cfg = cfg

    def _take_pending(self) -> list[ClosedWindow]:
        pending, self._pending = self._pending, []
        return pending

    def _assign(self, flows: FlowBatch) -> None:
        tally = flows.tally if isinstance(flows, SampledFlows) else tally_of(flows)
        first = np.asarray(flows["first_ts"], dtype=np.float64)
        last = np.asarray(flows["last_ts"], dtype=np.float64)
        t_first = np.where(tally["sec"] == NO_TIME, np.nan, tally["sec"].astype(np.float64))
        t_last = tally["last"]
        # A time far in the future (a broken capture clock) would drag the watermark
        # ahead and make every later flow late: such times count as unusable.
        horizon = self._clock() + MAX_FUTURE_SECONDS
        times = np.concatenate([first, last, t_first, t_last])
        times = times[np.isfinite(times) & (times <= horizon)]
        if len(times):
            self._max_ts = max(self._max_ts, float(times.max()))
        # A flow without a usable time goes with the newest data seen.
        fallback = self._max_ts if np.isfinite(self._max_ts) else 0.0
        rows_at = self._indices(first, horizon, fallback)
        tally_at = self._indices(t_first, horizon, fallback)
        if self._closed_until is not None:
            backfill_before = self._closed_until - max(1, int(BACKFILL_SECONDS // self.length))
            for index, counted in ((rows_at, False), (tally_at, True)):
                late = (index < self._closed_until) & (index >= backfill_before)
                if late.any():
                    if counted:
                        n = int(tally["flows"][late].sum())
                        self._late[self._closed_until] = self._late.get(self._closed_until, 0) + n
                    index[late] = self._closed_until
        for key, rows, entries in _split(rows_at, tally_at):
            sample = self._windows.get(key)
            if sample is None:
                sample = self._windows[key] = FlowSample(self._row_cap, self._pack_from)
            part = flows if rows is None else flows.take(rows)
            sample.merge(part, tally if entries is None else take_tally(tally, entries))

    def _indices(self, first: np.ndarray, horizon: float, fallback: float) -> np.ndarray:
        first = np.where(np.isfinite(first) & (first <= horizon), first, fallback)
        return np.floor(first / self.length).astype(np.int64)

    def _close(self, ready: Any) -> list[ClosedWindow]:
        out: list[ClosedWindow] = []
        for index in sorted(self._windows):
            if not ready(index):
                break
            sample = self._windows.pop(index)
            out.append(
                ClosedWindow(
                    start=index * self.length,
                    end=(index + 1) * self.length,
                    flows=sample.result(),
                    late_flows=self._late.pop(index, 0),
                )
            )
            self._closed_until = max(self._closed_until or index + 1, index + 1)
        if np.isfinite(self._max_ts):
            # windows the watermark has passed are closed even if no flow fell into them
            passed = int(math.floor(self.watermark / self.length))
            self._closed_until = max(self._closed_until or passed, passed)
        return out

    # ------------------------------------------------------------------ reports

    def report_path(self, window: ClosedWindow) -> Path:
        stamp = _dt.datetime.fromtimestamp(window.start, _dt.UTC)
        return self.report_dir / (
            f"{REPORT_PREFIX}{stamp:%Y%m%dT%H%M%S}.{stamp.microsecond // 1000:03d}Z.json"
        )

    def write_report(self, window: ClosedWindow, analysis: WindowAnalysis, summary: str) -> Path:
        """Write the window's JSON report atomically, prune to ``max_windows``; return its path.

        A second report for the same window (e.g. after a restart) gets a ``.pN``
        suffix instead of overwriting the first.
        """
        self.report_dir.mkdir(parents=True, exist_ok=True)
        report = self.report_dict(window, analysis, summary)
        base = self.report_path(window)
        path, part = base, 2
        while path.exists():
            path = base.with_name(f"{base.name[: -len('.json')]}.p{part}.json")
            part += 1
        fd, tmp = tempfile.mkstemp(dir=self.report_dir, prefix=".tmp-", suffix=".json")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(report, fh, indent=2, allow_nan=False)
                fh.write("\n")
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        self.prune()
        release_free_memory()  # what the window's analysis freed ...
        release_free_memory_soon()  # ... and the window itself, once the daemon drops it
        return path

    def report_dict(
        self, window: ClosedWindow, analysis: WindowAnalysis, summary: str = ""
    ) -> dict[str, Any]:
        """Return the window's report as a dict (what the summariser reads, then the file)."""
        return build_report(window, analysis, summary, self.cfg.top_talkers)

    def _reports(self) -> list[Path]:
        """The reports on disk, oldest first (their names sort by window time)."""
        try:
            with os.scandir(self.report_dir) as entries:
                names = sorted(
                    e.name
                    for e in entries
                    if e.name.startswith(REPORT_PREFIX) and e.name.endswith(".json") and e.is_file()
                )
        except (FileNotFoundError, NotADirectoryError):
            return []
        return [self.report_dir / name for name in names]

    def prune(self) -> int:
        """Delete the oldest reports beyond ``max_windows``; return how many were deleted."""
        reports = self._reports()
        excess = reports[: max(len(reports) - self.cfg.max_windows, 0)]
        for p in excess:
            p.unlink(missing_ok=True)
        return len(excess)

    def reports_kept(self) -> int:
        return len(self._reports())


def _split(
    rows_at: np.ndarray, tally_at: np.ndarray
) -> list[tuple[int, np.ndarray | None, np.ndarray | None]]:
    """Return (window index, its rows, its tally entries); None means all of them."""
    keys = np.union1d(rows_at, tally_at)
    if len(keys) == 1:
        return [(int(keys[0]), None, None)]
    parts = []
    for at in (rows_at, tally_at):
        order = np.argsort(at, kind="stable")
        lo = np.searchsorted(at[order], keys, side="left")
        hi = np.searchsorted(at[order], keys, side="right")
        parts.append((order, lo, hi))
    (ro, rlo, rhi), (to, tlo, thi) = parts
    return [(int(k), ro[rlo[i] : rhi[i]], to[tlo[i] : thi[i]]) for i, k in enumerate(keys.tolist())]


def _num(flows: FlowBatch, name: str) -> np.ndarray:
    if name not in flows:
        return np.zeros(len(flows))
    return np.nan_to_num(np.asarray(flows[name], dtype=np.float64), nan=0.0)


def _iso(ts: float) -> str:
    return _dt.datetime.fromtimestamp(ts, _dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def top_talkers(flows: FlowBatch, n: int) -> list[dict[str, Any]]:
    """Rank addresses by wire bytes sent (forward as source plus backward as destination).

    Rows that stand for several flows (``sample_weight``, a thinned flood) count as
    many, so the figures are estimates where a window was sampled. Long flows count by
    their slices in this window (bytes that flowed here), not as whole flows.
    """
    flows = view(flows, SLICES)
    if n <= 0 or len(flows) == 0:
        return []
    from .detectors.features import addr_codes

    codes = addr_codes(flows)
    m = len(codes.table)
    w = weights(flows)
    fwd_b, bwd_b = _num(flows, "fwd_wire_bytes") * w, _num(flows, "bwd_wire_bytes") * w
    fwd_p, bwd_p = _num(flows, "Tot Fwd Pkts") * w, _num(flows, "Tot Bwd Pkts") * w
    sent = np.bincount(codes.src, weights=fwd_b, minlength=m) + np.bincount(
        codes.dst, weights=bwd_b, minlength=m
    )
    received = np.bincount(codes.src, weights=bwd_b, minlength=m) + np.bincount(
        codes.dst, weights=fwd_b, minlength=m
    )
    packets = np.bincount(codes.src, weights=fwd_p, minlength=m) + np.bincount(
        codes.dst, weights=bwd_p, minlength=m
    )
    flows_n = np.bincount(codes.src, weights=w, minlength=m) + np.bincount(
        codes.dst, weights=w, minlength=m
    )
    order = np.lexsort((-packets, -sent))[:n]
    names = addrs_to_str(codes.table[order])
    return [
        {
            "rank": i + 1,
            "address": names[i],
            "bytes_sent": int(round(sent[j])),
            "bytes_received": int(round(received[j])),
            "packets_sent": int(round(packets[j])),
            "flows": int(round(flows_n[j])),
        }
        for i, j in enumerate(order)
    ]


def protocol_mix(flows: FlowBatch) -> dict[str, dict[str, int]]:
    """Flows, packets, wire and payload bytes per transport protocol (tcp, udp, icmp, ...).

    Exact for sampled windows too: counted from the tally of every flow.
    """
    tally = flows.tally if isinstance(flows, SampledFlows) else tally_of(flows)
    proto = tally["protocol"]
    out: dict[str, dict[str, int]] = {}
    known = np.zeros(len(proto), dtype=bool)
    for number, name in [*PROTOCOL_LABELS.items(), (-1, "other")]:
        m = proto == number if number >= 0 else ~known
        known |= m
        out[name] = {
            "flows": int(tally["flows"][m].sum()),
            "packets": int(tally["packets"][m].sum()),
            "bytes": int(tally["bytes"][m].sum()),
            "payload_bytes": int(tally["payload_bytes"][m].sum()),
        }
    return out


def build_report(
    window: ClosedWindow, analysis: WindowAnalysis, summary: str, top_n: int
) -> dict[str, Any]:
    """Return the report as a JSON-ready dict (schema: docs/window-report.md)."""
    flows = window.flows
    mix = protocol_mix(flows)
    scores = np.asarray(analysis.anomaly_scores, dtype=np.float64)
    anomaly: dict[str, Any] = {"scored_flows": int(len(scores))}
    if len(scores):
        anomaly.update(
            {
                "threshold": analysis.anomaly_threshold,
                "anomalous_flows": int((scores >= analysis.anomaly_threshold).sum()),
                "mean": round(float(scores.mean()), 4),
                "p50": round(float(np.quantile(scores, 0.5)), 4),
                "p95": round(float(np.quantile(scores, 0.95)), 4),
                "max": round(float(scores.max()), 4),
            }
        )
    by_detector: dict[str, int] = {}
    for d in analysis.detections:
        by_detector[d.detector] = by_detector.get(d.detector, 0) + 1
    return {
        "schema_version": REPORT_SCHEMA_VERSION,
        "window": {
            "start": window.start,
            "end": window.end,
            "start_iso": _iso(window.start),
            "end_iso": _iso(window.end),
            "length_seconds": window.end - window.start,
        },
        "totals": {
            "flows": sum(v["flows"] for v in mix.values()),
            "packets": sum(v["packets"] for v in mix.values()),
            "bytes": sum(v["bytes"] for v in mix.values()),
            "payload_bytes": sum(v["payload_bytes"] for v in mix.values()),
            "late_flows": window.late_flows,
        },
        "protocols": mix,
        "top_talkers": top_talkers(flows, top_n),
        "detections": [clean_data(d.to_dict()) for d in analysis.detections],
        "detections_by_detector": by_detector,
        "classifications": dict(sorted(analysis.class_counts.items())),
        "anomaly": anomaly,
        "analysis": {
            "flows_analysed": analysis.flows_analysed,
            "flows_sampled_out": flows.sampled_out if isinstance(flows, SampledFlows) else 0,
            "seconds": round(analysis.seconds, 6),
        },
        "summary": summary,
    }
