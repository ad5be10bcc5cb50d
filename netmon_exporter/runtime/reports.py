"""Window reports: the reporter thread that summarises (LLM or template) and writes them.

`Reports.submit` hands an analysed window to the reporter thread, or, when too many are
waiting for their summary, writes it at once with the templated summary, so a slow LLM
neither stalls the main loop nor piles up windows. It records the summaries, the top
talkers and the reports kept on disk, and reports the LLM's last error for the health
checks. `reap` takes finished reports off the queue; `shutdown` gives the waiting ones
the template and lets the one in progress finish until the deadline.

May import (ours): `metrics`, `recording`, `summarise`, and, for types, `window`,
`analysis`; this package's `parts`, `reload` and `component_errors`.
"""

from __future__ import annotations

import concurrent.futures
import logging
import time
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import recording
from ..summarise import template_summary

if TYPE_CHECKING:
    from ..analysis import WindowAnalysis
    from ..metrics import Metrics
    from ..window import ClosedWindow
    from .component_errors import ComponentErrors
    from .parts import Parts
    from .reload import ConfigHolder

log = logging.getLogger("netmon_exporter")

MAX_PENDING_REPORTS = 16  # windows waiting for their summary; beyond, the template is used


class Reports:
    """The reporter thread and the windows waiting for it, oldest first."""

    def __init__(
        self, holder: ConfigHolder, parts: Parts, metrics: Metrics, errors: ComponentErrors
    ) -> None:
        self.holder = holder
        self.parts = parts
        self.m = metrics
        self._errors = errors
        self._reporter = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="reporter")
        # (future, window, analysis) of reports handed to the reporter thread, oldest first
        self._pending: deque[
            tuple[concurrent.futures.Future[None], ClosedWindow, WindowAnalysis]
        ] = deque()
        self._behind = False  # summaries falling behind (warned once per episode)

    def submit(self, window: ClosedWindow, analysis: WindowAnalysis) -> None:
        """Report ``window``: on the reporter thread, or at once with the template if behind."""
        waiting = sum(1 for f, _, _ in self._pending if not f.done())
        llm_enabled = self.holder.config.llm.enabled
        # A slow LLM must neither stall this loop nor pile up windows (each holds its flows):
        # past the bound, windows get the templated summary at once.
        if waiting >= MAX_PENDING_REPORTS:
            # Said once per episode, and only when an LLM is what we are waiting for
            # (without one, a burst of windows is just report files being written).
            if not self._behind and llm_enabled:
                log.warning(
                    "summaries are falling behind; using the templated summary",
                    extra={"waiting": waiting},
                )
            self._behind = True
            self._report_with_template(window, analysis)
            return
        if self._behind and llm_enabled:
            log.info("summaries caught up", extra={"waiting": waiting})
        self._behind = False
        fut = self._reporter.submit(self._report, window, analysis)
        self._pending.append((fut, window, analysis))

    def reap(self) -> None:
        """Take finished reports off the queue, logging and counting failed ones."""
        while self._pending and self._pending[0][0].done():
            fut, _, _ = self._pending.popleft()
            if fut.exception() is not None:
                log.error("window report failed", exc_info=fut.exception())
                self.m.errors.labels("io").inc()

    def shutdown(self, deadline: float) -> None:
        """Waiting reports get the templated summary now; the one being summarised may
        finish until ``deadline`` (``time.monotonic()``)."""
        self._reporter.shutdown(wait=False, cancel_futures=True)
        for fut, window, analysis in self._pending:
            if fut.cancelled():
                self._report_with_template(window, analysis)
        running = [f for f, _, _ in self._pending if not f.done()]
        concurrent.futures.wait(running, timeout=max(0.0, deadline - time.monotonic()))

    def _report_with_template(self, window: ClosedWindow, analysis: WindowAnalysis) -> None:
        aggregator = self.parts.aggregator
        report = aggregator.report_dict(window, analysis)
        path = aggregator.write_report(window, analysis, template_summary(report))
        self._reported(window, report, path)

    def _report(self, window: ClosedWindow, analysis: WindowAnalysis) -> None:
        aggregator = self.parts.aggregator
        report = aggregator.report_dict(window, analysis)
        summariser, generation = self.parts.summariser, self._errors.generation("llm")
        result = summariser.summarise(report)
        if result.attempts:
            self.m.llm_seconds.observe(result.seconds)
        if result.source == "llm":
            self.m.llm_summaries.inc()
            self._errors.report("llm", generation, None)
        elif summariser.enabled:
            self.m.llm_failed.inc()
            self.m.errors.labels("llm").inc()
            self._errors.report("llm", generation, result.error or "LLM unavailable")
        if result.attempts > 1:
            self.m.retries.labels("llm").inc(result.attempts - 1)
        path = aggregator.write_report(window, analysis, result.text)
        self._reported(window, report, path)

    def _reported(self, window: ClosedWindow, report: dict[str, Any], path: Path) -> None:
        """Record a written report's top talkers and the reports on disk; log a pruned one.

        Reports are kept newest by window time (docs/window-report.md), so a backfilled
        window older than all the kept ones loses its report right away.
        """
        w = self.holder.config.windows
        talkers = report.get("top_talkers", [])
        recording.record_top_talkers(self.m, talkers, w.top_talkers, w.top_talker_addresses)
        self.m.windows_kept.set(self.parts.aggregator.reports_kept())
        if not path.exists():
            log.info(
                "window report deleted at once: older than the newest windows.max_windows "
                "reports (kept by window time); raise windows.max_windows to keep backfills",
                extra={"window_start": window.start, "report": path.name},
            )
