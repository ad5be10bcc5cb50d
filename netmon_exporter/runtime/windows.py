"""Windows: flows in on the daemon thread; each closed window analysed on its own thread.

`Windows.add_flows` feeds flows to the window aggregator and closes the windows they
complete; `flush_if_idle` closes the open windows when no flows have come for a while;
`close` queues a closed window for the analysis thread, which analyses it, records the
analysis, triages its findings (`alerts`) and hands the report to the reporter
(`reports`), one window at a time, in order. So the daemon thread keeps taking ingest
events while the detectors work through a large window (their numpy work mostly runs
without the GIL); at most ``MAX_WAITING`` closed windows wait, then `close` waits too
(memory stays bounded). The analysis holds `Parts.analysis_lock`, which a reload takes
to swap components in, so a window is analysed and triaged under one config, whole.

May import (ours): `recording`, and, for types, `config`, `metrics`, `window`,
`analysis`, `flow_schema`; this package's `parts`, `alerts` and `reports`.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from dataclasses import replace
from typing import TYPE_CHECKING

from .. import recording

if TYPE_CHECKING:
    from ..config import Config
    from ..flow_schema import FlowBatch
    from ..metrics import Metrics
    from ..window import ClosedWindow
    from .alerts import Alerts
    from .parts import Parts
    from .reports import Reports


log = logging.getLogger("netmon_exporter")

MAX_WAITING = 2  # closed windows queued for analysis before the daemon thread waits


class Windows:
    """Flows into windows, and what happens to each window that closes."""

    def __init__(
        self,
        parts: Parts,
        metrics: Metrics,
        alerts: Alerts,
        reports: Reports,
        idle_since: float,
    ) -> None:
        self.parts = parts
        self.m = metrics
        self.alerts = alerts
        self.reports = reports
        self.last_flows_wall = idle_since  # wall time flows last came in
        self._queue: queue.Queue[ClosedWindow | None] = queue.Queue(maxsize=MAX_WAITING)
        self._thread: threading.Thread | None = None
        # when each closed window not yet analysed was closed (monotonic), oldest first
        self._closed_at: deque[float] = deque()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="analysis", daemon=True)
        self._thread.start()

    def drain(self, deadline: float) -> bool:
        """Analyse the windows still queued (until ``deadline``); False if some were left."""
        thread = self._thread
        if thread is None:
            return True
        try:
            self._queue.put(None, timeout=max(0.0, deadline - time.monotonic()))
        except queue.Full:
            return False
        thread.join(timeout=max(0.0, deadline - time.monotonic()))
        self._thread = None
        return not thread.is_alive()

    @property
    def waiting(self) -> int:
        """Closed windows queued for analysis."""
        return self._queue.qsize()

    def backlog(self) -> tuple[int, float]:
        """Closed windows not analysed yet (the one being analysed included), and how
        long ago the oldest of them closed, in seconds (0 when none)."""
        closed = list(self._closed_at)
        return len(closed), (time.monotonic() - closed[0]) if closed else 0.0

    def add_flows(self, flows: FlowBatch) -> None:
        if len(flows):
            self.last_flows_wall = time.time()
        for window in self.parts.aggregator.add(flows):
            self.close(window)

    def flush_if_idle(self, cfg: Config) -> None:
        """Close the open windows when no flows have come for two windows (or an interval)."""
        idle = time.time() - self.last_flows_wall
        if idle > max(2 * cfg.windows.length_seconds, cfg.processing.interval_seconds):
            for window in self.parts.aggregator.flush_idle():
                self.close(window)

    def close(self, window: ClosedWindow) -> None:
        """Queue ``window`` for analysis (analysed here when no analysis thread runs)."""
        self._closed_at.append(time.monotonic())
        if self._thread is None or not self._thread.is_alive():
            try:  # not started, drained at shutdown, or (never) dead
                self._analyse(window)
            finally:
                self._closed_at.popleft()
        else:
            self._queue.put(window)  # waits while MAX_WAITING windows wait

    def _run(self) -> None:
        while (window := self._queue.get()) is not None:
            try:
                self._analyse(window)
            except Exception:  # one window's failure must not stop the analysis of the rest
                log.exception("cannot analyse a window", extra={"window_start": window.start})
                self.m.errors.labels("internal").inc()
            finally:
                self._closed_at.popleft()

    def _analyse(self, window: ClosedWindow) -> None:
        with self.parts.analysis_lock:
            analysis = self.parts.analyzer.analyse(window.flows, window.start, window.end)
            recording.record_analysis(self.m, analysis)  # every finding, suppressed ones too
            triage = self.alerts.triage(window, analysis)
        self.reports.submit(window, replace(analysis, detections=triage.findings))
