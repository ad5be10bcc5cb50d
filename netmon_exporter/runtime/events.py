"""Ingest events on the daemon thread: metrics, the recent-failures window, flows to windows.

`EventRecorder.handle` turns each event the ingest service emits (file started, done,
failed, quarantined, skipped, ignored; carried flows flushed; clock skew; output
blocked; ingest errors) into metric updates and log lines, keeps the outcome of the
last files for the health check's error ratio (`recent`), and passes flows on to
`windows`.

May import (ours): `recording`, `ingest.events` (lazily, with the ingest service), and,
for types, `metrics`; this package's `windows`.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from .. import recording

if TYPE_CHECKING:
    from ..metrics import Metrics
    from .windows import Windows

log = logging.getLogger("netmon_exporter")

RECENT_FILES = 50  # files considered for the error ratio


class EventRecorder:
    """Records ingest events; ``recent`` holds the last files' outcomes (True = failure)."""

    def __init__(self, metrics: Metrics, windows: Windows) -> None:
        self.m = metrics
        self.windows = windows
        self.recent: deque[bool] = deque(maxlen=RECENT_FILES)

    def handle(self, event: Any) -> None:
        from ..ingest import events as ev

        m = self.m
        if isinstance(event, ev.FileStarted):
            m.last_activity.set(time.time())
        elif isinstance(event, ev.FileDone):
            recording.record_file_done(m, event.result, event.kind, event.lag_seconds)
            self.recent.append(False)
            self.windows.add_flows(event.result.flows)
        elif isinstance(event, ev.FileFailed):
            self._file_failed(event)
        elif isinstance(event, ev.FileQuarantined):
            recording.record_quarantined(m, event.kind, event.reason)
            log.error(
                "file quarantined",
                extra={"file": event.path, "reason": event.reason, "err": event.message},
            )
        elif isinstance(event, ev.FileSkipped):
            m.files_skipped_duplicate.inc()
        elif isinstance(event, ev.CarryFlushed):
            recording.record_carry_flushed(m, event)
            self.windows.add_flows(event.flows)
        elif isinstance(event, ev.FileIgnored):
            m.files_ignored.labels(event.reason).inc()
        elif isinstance(event, ev.ClockSkew):
            m.files_clock_skew.inc()
        elif isinstance(event, ev.OutputBlocked):
            m.errors.labels("io").inc()
            m.retries.labels("output").inc()
        elif isinstance(event, ev.IngestError):
            m.errors.labels(event.category).inc()
            log.error("ingest error", extra={"category": event.category, "err": event.message})

    def _file_failed(self, event: Any) -> None:
        m = self.m
        recording.record_file_failed(m, event.kind, event.reason)
        m.errors.labels(event.category).inc()
        if event.will_retry:
            m.retries.labels("parse").inc()
        else:
            self.recent.append(True)
        log.warning(
            "file failed",
            extra={
                "file": event.path,
                "reason": event.reason,
                "attempt": event.attempt,
                "will_retry": event.will_retry,
                "err": event.message,
            },
        )
