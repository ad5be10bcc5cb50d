"""Health of the running daemon: inputs gathered, `health.evaluate` called, result recorded.

`HealthMonitor.update` reads the ingest status (and sets the backlog and worker gauges
from it), the outcome of the last files and the optional components' last errors,
evaluates the named checks, logs a change of state and records the report's metrics;
`report` is the last one (what ``/health`` answers).

May import (ours): `health`, `recording`, and, for types, `metrics`, `ingest.service`;
this package's `reload` and `component_errors`.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from .. import recording
from ..health import HealthInputs, HealthReport, evaluate

if TYPE_CHECKING:
    from ..ingest.service import IngestService
    from ..metrics import Metrics
    from .component_errors import ComponentErrors
    from .reload import ConfigHolder

log = logging.getLogger("netmon_exporter")


class HealthMonitor:
    """Computes and records the daemon's health; ``report`` is the latest."""

    def __init__(
        self,
        holder: ConfigHolder,
        ingest: IngestService,
        metrics: Metrics,
        errors: ComponentErrors,
        recent: deque[bool],
        analysis_backlog: Callable[[], tuple[int, float]] = lambda: (0, 0.0),
    ) -> None:
        self.holder = holder
        self._analysis_backlog = analysis_backlog  # closed windows not analysed, oldest age
        self.ingest = ingest
        self.m = metrics
        self._errors = errors
        self._recent = recent  # the last files' outcomes, True = failure (runtime/events.py)
        self.report = HealthReport("healthy", ())
        # told when the state or a check changes (the HTTP server's /metrics renders are
        # then stale: a scrape right after sees the new health)
        self.on_change: Callable[[], None] = lambda: None

    def update(self) -> HealthReport:
        cfg = self.holder.config
        st = self.ingest.status()
        self.m.backlog.set(st.backlog)
        self.m.in_progress.set(st.in_progress)
        self.m.not_ready.set(st.not_ready)
        self.m.workers_busy.set(st.workers_busy)
        awaiting, analysis_wait = self._analysis_backlog()
        self.m.windows_awaiting_analysis.set(awaiting)
        report = evaluate(
            HealthInputs(
                capture_directory=cfg.capture.directory,
                state_directory=cfg.state.directory,
                output_directory=cfg.output.directory,
                ledger_error=st.ledger_error,
                backlog_growth_streak=st.backlog_growth_streak,
                backlog_growth_limit=cfg.health.backlog_growth_intervals,
                oldest_ready_age_seconds=st.oldest_ready_age_seconds,
                max_lag_seconds=cfg.health.max_lag_seconds,
                analysis_wait_seconds=analysis_wait,
                windows_awaiting_analysis=awaiting,
                recent_files=len(self._recent),
                recent_failures=sum(self._recent),
                error_ratio_threshold=cfg.health.error_ratio_threshold,
                llm_enabled=cfg.llm.enabled,
                llm_error=self._errors.get("llm"),
                alertmanager_enabled=bool(cfg.alertmanager.urls),
                alertmanager_error=self._errors.get("alertmanager"),
                ingest_problems=st.problems,
            )
        )
        changed = report.state != self.report.state or report.checks != self.report.checks
        if report.state != self.report.state:
            failing = {c.name: c.reason for c in report.checks if not c.ok}
            log.log(
                logging.INFO if report.state == "healthy" else logging.WARNING,
                "health state changed",
                extra={"from": self.report.state, "to": report.state, "failing": failing},
            )
        self.report = report
        recording.record_health(self.m, report)
        if changed:
            self.on_change()
        return report
