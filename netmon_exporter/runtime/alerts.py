"""Findings on their way to Alertmanager: triage on the daemon thread, pushes on their own.

`Alerts.triage` sets allow-listed findings aside, caps the rest, holds back windows too
old to page about and hands the others to the alert pusher (which folds them into
incidents). The pusher thread (`start`) pushes what is due every second, records the
outcome and reports Alertmanager's last error for the health checks.

May import (ours): `metrics`, `recording`, `incidents` (lazily), and, for types,
`window`, `analysis`; this package's `parts`, `reload` and `component_errors`.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

from .. import recording
from ..metrics import DETECTORS

if TYPE_CHECKING:
    from ..analysis import WindowAnalysis
    from ..incidents import WindowTriage
    from ..metrics import Metrics
    from ..window import ClosedWindow
    from .component_errors import ComponentErrors
    from .parts import Parts
    from .reload import ConfigHolder

log = logging.getLogger("netmon_exporter")


class Alerts:
    """Triage of each closed window's findings, and the Alertmanager pusher thread."""

    def __init__(
        self,
        holder: ConfigHolder,
        parts: Parts,
        metrics: Metrics,
        errors: ComponentErrors,
        stop_event: threading.Event,
    ) -> None:
        self.holder = holder
        self.parts = parts
        self.m = metrics
        self._errors = errors
        self._stop_event = stop_event
        self._holding_back = False  # the last window was too old to push
        self._thread = threading.Thread(target=self._push_loop, name="alert-pusher", daemon=True)

    def start(self) -> None:
        """Start the pusher thread; it pushes once more after the stop event, then ends."""
        self._thread.start()

    def triage(self, window: ClosedWindow, analysis: WindowAnalysis) -> WindowTriage:
        """Set aside allow-listed findings, cap the rest, and hand them to the pusher.

        Return the :class:`~.incidents.WindowTriage` (what the report should say).
        """
        from ..incidents import triage_window

        cfg = self.holder.config.alerting
        pusher = self.parts.pusher
        now = time.time()
        triage = triage_window(
            analysis.detections,
            self.parts.suppression,
            window_end=window.end,
            now=now,
            max_findings_per_detector=cfg.max_findings_per_detector,
            max_window_age_seconds=cfg.max_window_age_seconds,
            sticky=pusher.active_keys(),
        )
        self._record_suppressed(window, triage)
        if triage.held_back:
            self.m.alert_windows_held_back.inc()
            # Said at info once per run of old windows (a replay can be thousands of them).
            log.log(
                logging.DEBUG if self._holding_back else logging.INFO,
                "window not pushed to Alertmanager",
                extra={
                    "window_end": window.end,
                    "findings": len(triage.findings),
                    "reason": triage.held_back,
                },
            )
            self._holding_back = True
            return triage
        self._holding_back = False
        observed = pusher.observe(triage.findings, now)
        for inc in observed.opened:
            if inc.latest.detector in DETECTORS:
                self.m.incidents_opened.labels(inc.latest.detector).inc()
        return triage

    def _record_suppressed(self, window: ClosedWindow, triage: WindowTriage) -> None:
        for (detector, reason), n in triage.suppressed_counts().items():
            if detector in DETECTORS:
                self.m.detections_suppressed.labels(detector, reason).inc(n)
        if triage.suppressed and log.isEnabledFor(logging.DEBUG):
            rules: dict[str, int] = {}
            for s in triage.suppressed:
                rule = f"{s.to_dict()['suppressed_by']}: {s.entry}"
                rules[rule] = rules.get(rule, 0) + 1
            log.debug(
                "findings suppressed by allow-lists",
                extra={"window_end": window.end, "count": len(triage.suppressed), "rules": rules},
            )

    def _push_loop(self) -> None:
        while not self._stop_event.wait(1.0):
            self._push_once()
        self._push_once()

    def _push_once(self) -> None:
        now = time.time()
        pusher = self.parts.pusher
        generation = self._errors.generation("alertmanager")
        try:
            recording.record_active_detections(self.m, pusher.active_by_detector())
            if not pusher.due(now):
                return
            result = pusher.push(now)
        except Exception as exc:  # the pusher thread must survive anything
            log.exception("alert push crashed")
            self._errors.report("alertmanager", generation, str(exc))
            self.m.errors.labels("alertmanager").inc()
            return
        self.m.alertmanager_seconds.observe(result.seconds)
        self.m.alerts_sent.inc(result.sent)
        if result.failed:
            self.m.alerts_failed.inc(result.failed)
            self.m.errors.labels("alertmanager").inc()
            self.m.retries.labels("alertmanager").inc()
            err = "; ".join(result.errors)[:300] or "push failed"
            self._errors.report("alertmanager", generation, err)
            log.warning("alertmanager push failed", extra={"err": err})
        elif result.sent:
            self._errors.report("alertmanager", generation, None)
