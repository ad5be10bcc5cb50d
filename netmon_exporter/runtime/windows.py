"""Windows on the daemon thread: flows in; a closed window → analysis → triage → report.

`Windows.add_flows` feeds flows to the window aggregator and closes the windows they
complete; `flush_if_idle` closes the open windows when no flows have come for a while;
`close` analyses a window, records the analysis, triages its findings (`alerts`) and
hands the report to the reporter (`reports`).

May import (ours): `recording`, and, for types, `config`, `metrics`, `window`,
`analysis`, `flow_schema`; this package's `parts`, `alerts` and `reports`.
"""

from __future__ import annotations

import time
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
        analysis = self.parts.analyzer.analyse(window.flows, window.start, window.end)
        recording.record_analysis(self.m, analysis)  # every finding, suppressed ones too
        triage = self.alerts.triage(window, analysis)
        self.reports.submit(window, replace(analysis, detections=triage.findings))
