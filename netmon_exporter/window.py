"""Fixed, wall-clock-aligned time windows over flows, and the JSON window report.

Flows are assigned to the window holding their ``first_ts``. A window closes
when the watermark (the latest packet time seen minus a grace of one window
length) passes its end, so flows that end a little later, or come from the next
capture file, still land in their window. Flows that arrive for a window already
closed are *late*: they go to the oldest window still open and are counted as
``late_flows`` in its report (nothing is dropped, nothing counted twice).
Flows more than ``BACKFILL_SECONDS`` older than the closed boundary are a
*backfill* (old captures dropped in for analysis, another sensor's timeline): they
get windows of their own, which close at once, so their detections and reports
carry their real times instead of being mixed into today's window.
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
from .flow_schema import FlowBatch, addrs_to_str
from .text_safety import clean_data

if TYPE_CHECKING:
    from .analysis import WindowAnalysis

REPORT_SCHEMA_VERSION = 1
BACKFILL_SECONDS = 3600.0  # late by more than this: the flows get their own windows
MAX_FUTURE_SECONDS = 86400.0  # packet times beyond now + this are treated as unusable
REPORT_PREFIX = "window-"
_PROTOCOLS = {6: "tcp", 17: "udp", 1: "icmp", 58: "icmpv6"}


@dataclass(frozen=True)
class ClosedWindow:
    """A closed window: its bounds (epoch seconds) and every flow assigned to it."""

    start: float
    end: float
    flows: FlowBatch
    late_flows: int = 0


class WindowAggregator:
    """Assign flows to windows, close them by watermark, write and prune window reports."""

    def __init__(
        self, cfg: WindowsConfig, report_dir: Path, clock: Callable[[], float] = time.time
    ) -> None:
        self.cfg = cfg
        self.report_dir = Path(report_dir)
        self._clock = clock
        # window index -> parts: (batch, its rows in this window or None for all rows);
        # rows are gathered once, when the window closes.
        self._parts: dict[int, list[tuple[FlowBatch, np.ndarray | None]]] = {}
        self._late: dict[int, int] = {}
        self._max_ts = -math.inf
        self._closed_until: int | None = None  # every window index below this is closed
        self._pending: list[ClosedWindow] = []  # closed by a length change, handed out next

    @property
    def length(self) -> float:
        return float(self.cfg.length_seconds)

    @property
    def watermark(self) -> float:
        """Latest packet time seen minus the grace (one window length)."""
        return self._max_ts - self.length

    def open_windows(self) -> int:
        return len(self._parts)

    def add(self, flows: FlowBatch) -> list[ClosedWindow]:
        """Add a batch of flows; return the windows the advancing watermark closed."""
        if len(flows):
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
        first = np.asarray(flows["first_ts"], dtype=np.float64)
        last = np.asarray(flows["last_ts"], dtype=np.float64)
        # A time far in the future (a broken capture clock) would drag the watermark
        # ahead and make every later flow late: such times count as unusable.
        horizon = self._clock() + MAX_FUTURE_SECONDS
        times = np.concatenate([first, last])
        times = times[np.isfinite(times) & (times <= horizon)]
        if len(times):
            self._max_ts = max(self._max_ts, float(times.max()))
        # A flow without a usable time goes with the newest data seen.
        fallback = self._max_ts if np.isfinite(self._max_ts) else 0.0
        first = np.where(np.isfinite(first) & (first <= horizon), first, fallback)
        index = np.floor(first / self.length).astype(np.int64)
        if self._closed_until is not None:
            backfill_before = self._closed_until - max(1, int(BACKFILL_SECONDS // self.length))
            late = (index < self._closed_until) & (index >= backfill_before)
            if late.any():
                self._late[self._closed_until] = self._late.get(self._closed_until, 0) + int(
                    late.sum()
                )
                index[late] = self._closed_until
        if (index == index[0]).all():  # the common case: the whole batch in one window
            self._parts.setdefault(int(index[0]), []).append((flows, None))
            return
        order = np.argsort(index, kind="stable")
        sorted_index = index[order]
        bounds = np.flatnonzero(np.diff(sorted_index)) + 1
        for rows in np.split(order, bounds):
            key = int(index[rows[0]])
            self._parts.setdefault(key, []).append((flows, rows))

    def _close(self, ready: Any) -> list[ClosedWindow]:
        out: list[ClosedWindow] = []
        for index in sorted(self._parts):
            if not ready(index):
                break
            parts = self._parts.pop(index)
            out.append(
                ClosedWindow(
                    start=index * self.length,
                    end=(index + 1) * self.length,
                    flows=_gather(parts),
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
        return path

    def report_dict(
        self, window: ClosedWindow, analysis: WindowAnalysis, summary: str = ""
    ) -> dict[str, Any]:
        """Return the window's report as a dict (what the summariser reads, then the file)."""
        return build_report(window, analysis, summary, self.cfg.top_talkers)

    def _reports(self) -> list[Path]:
        if not self.report_dir.is_dir():
            return []
        return sorted(p for p in self.report_dir.glob(f"{REPORT_PREFIX}*.json") if p.is_file())

    def prune(self) -> int:
        """Delete the oldest reports beyond ``max_windows``; return how many were deleted."""
        reports = self._reports()
        excess = reports[: max(len(reports) - self.cfg.max_windows, 0)]
        for p in excess:
            p.unlink(missing_ok=True)
        return len(excess)

    def reports_kept(self) -> int:
        return len(self._reports())


def _gather(parts: list[tuple[FlowBatch, np.ndarray | None]]) -> FlowBatch:
    """Build one batch from parts, copying each column once."""
    if len(parts) == 1 and parts[0][1] is None:
        return parts[0][0]
    names = list(parts[0][0].columns)
    if any(list(b.columns) != names for b, _ in parts):  # differing sources: slow path
        return FlowBatch.concat([b if rows is None else b.take(rows) for b, rows in parts])
    return FlowBatch(
        {
            k: np.concatenate(
                [b.columns[k] if rows is None else b.columns[k][rows] for b, rows in parts]
            )
            for k in names
        }
    )


def _num(flows: FlowBatch, name: str) -> np.ndarray:
    if name not in flows:
        return np.zeros(len(flows))
    return np.nan_to_num(np.asarray(flows[name], dtype=np.float64), nan=0.0)


def _iso(ts: float) -> str:
    return _dt.datetime.fromtimestamp(ts, _dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def top_talkers(flows: FlowBatch, n: int) -> list[dict[str, Any]]:
    """Rank addresses by bytes sent (forward bytes as source plus backward bytes as destination)."""
    if n <= 0 or len(flows) == 0:
        return []
    from .detectors.features import addr_codes

    codes = addr_codes(flows)
    m = len(codes.table)
    fwd_b, bwd_b = _num(flows, "TotLen Fwd Pkts"), _num(flows, "TotLen Bwd Pkts")
    fwd_p, bwd_p = _num(flows, "Tot Fwd Pkts"), _num(flows, "Tot Bwd Pkts")
    sent = np.bincount(codes.src, weights=fwd_b, minlength=m) + np.bincount(
        codes.dst, weights=bwd_b, minlength=m
    )
    received = np.bincount(codes.src, weights=bwd_b, minlength=m) + np.bincount(
        codes.dst, weights=fwd_b, minlength=m
    )
    packets = np.bincount(codes.src, weights=fwd_p, minlength=m) + np.bincount(
        codes.dst, weights=bwd_p, minlength=m
    )
    flows_n = np.bincount(codes.src, minlength=m) + np.bincount(codes.dst, minlength=m)
    order = np.lexsort((-packets, -sent))[:n]
    names = addrs_to_str(codes.table[order])
    return [
        {
            "rank": i + 1,
            "address": names[i],
            "bytes_sent": int(sent[j]),
            "bytes_received": int(received[j]),
            "packets_sent": int(packets[j]),
            "flows": int(flows_n[j]),
        }
        for i, j in enumerate(order)
    ]


def protocol_mix(flows: FlowBatch) -> dict[str, dict[str, int]]:
    """Flows, packets and bytes per transport protocol (tcp, udp, icmp, icmpv6, other)."""
    proto = np.asarray(flows["protocol"]) if len(flows) else np.zeros(0, dtype=np.uint8)
    pkts = _num(flows, "Tot Fwd Pkts") + _num(flows, "Tot Bwd Pkts")
    byts = _num(flows, "TotLen Fwd Pkts") + _num(flows, "TotLen Bwd Pkts")
    out: dict[str, dict[str, int]] = {}
    known = np.zeros(len(proto), dtype=bool)
    for number, name in _PROTOCOLS.items():
        m = proto == number
        known |= m
        out[name] = {
            "flows": int(m.sum()),
            "packets": int(pkts[m].sum()),
            "bytes": int(byts[m].sum()),
        }
    out["other"] = {
        "flows": int((~known).sum()),
        "packets": int(pkts[~known].sum()),
        "bytes": int(byts[~known].sum()),
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
            "flows": len(flows),
            "packets": sum(v["packets"] for v in mix.values()),
            "bytes": sum(v["bytes"] for v in mix.values()),
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
            "seconds": round(analysis.seconds, 6),
        },
        "summary": summary,
    }
