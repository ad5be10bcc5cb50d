"""The ingest service: finds captures, gates them, runs workers, records outcomes durably.

A thin public face over the scheduler thread (:mod:`.loop`), which feeds the
pure scheduling core (:mod:`.scheduler`) and carries out its decisions
(:mod:`.executor`). The daemon talks to it through :meth:`IngestService.poll_events`,
:meth:`IngestService.status`, :meth:`IngestService.apply_config` and
:meth:`IngestService.stop`. Nothing here touches metrics.

Exactly once: a file is recorded ``done`` in the ledger (together with the
open flows carried to the next file of its series) *before* its
:class:`FileDone` event is emitted, and a ``done`` file is never processed
again. Work interrupted by a crash is redone from the start; the per-file flow
CSV is rewritten under the same name, so nothing is duplicated.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from .. import pipeline
from ..config import Config
from ..pipeline import CarryState, FlowSettings
from .age_gate import DEFAULT_SETTLE_SECONDS, DEFAULT_UNWATCHED_QUIET_SECONDS, AgeGate
from .events import Event, IngestStatus
from .ledger import Totals, read_totals
from .loop import SchedulerLoop
from .mailbox import Inbox, Outbox
from .workers import ProcessFn


class IngestService:
    """Watch the capture directory and process every file exactly once.

    ``clock`` (wall-clock seconds) drives ages, retries, carries and intervals;
    worker timeouts use real monotonic time. ``process`` and ``finish`` default
    to the real pipeline; tests inject fakes (``process`` must be picklable:
    a module-level function, accepting the pipeline's keyword arguments).
    """

    def __init__(
        self,
        config: Config,
        *,
        clock: Callable[[], float] = time.time,
        process: ProcessFn | None = None,
        finish: Callable[[CarryState, FlowSettings], Any] | None = None,
        settle_seconds: float = DEFAULT_SETTLE_SECONDS,
        unwatched_quiet_seconds: float = DEFAULT_UNWATCHED_QUIET_SECONDS,
        open_for_writing: Callable[[Iterable[str]], set[str]] | None = None,
        rng: random.Random | None = None,
        max_pending_results: int | None = None,
    ) -> None:
        self._cfg = config
        self._inbox = Inbox()
        self._outbox = Outbox(self._inbox.wake)
        gate = AgeGate(
            config.capture.min_age_seconds,
            settle_seconds=settle_seconds,
            open_for_writing=open_for_writing,
            unwatched_quiet_seconds=unwatched_quiet_seconds,
        )
        self._loop = SchedulerLoop(
            config,
            self._inbox,
            self._outbox,
            clock=clock,
            process=process if process is not None else pipeline.process_file,
            finish=finish if finish is not None else pipeline.finish_carry,
            gate=gate,
            rng=rng or random.Random(),
            max_pending_results=max_pending_results,
        )
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start watching and the scheduler thread (problems arrive as events and in status)."""
        if self._thread is not None:
            raise RuntimeError("IngestService already started")
        # Watch before returning: files created from now on are seen being written.
        self._loop.finder.start_watcher()
        self._thread = threading.Thread(target=self._loop.run, name="ingest", daemon=True)
        self._thread.start()

    def stop(self, timeout: float) -> None:
        """Stop taking work; let in-flight files finish within ``timeout``, hand back the rest.

        Files handed back are processed again after the next start. Events
        emitted while stopping stay available to :meth:`poll_events`.
        """
        self._inbox.stop(timeout)
        if self._thread is not None:
            self._thread.join(timeout=max(0.0, timeout) + 30)

    def apply_config(self, cfg: Config) -> None:
        """Take a new config at the next scheduling round; in-flight files are not disturbed."""
        self._inbox.put_config(cfg)

    def poll_events(self, timeout: float = 0.0, max_events: int = 1000) -> list[Event]:
        """Return the events emitted so far, waiting up to ``timeout`` for the first one."""
        return self._outbox.poll(timeout, max_events)

    def status(self) -> IngestStatus:
        return self._outbox.status

    def committed_totals(self) -> Totals | None:
        """What the ledger has committed (files by kind, packets, bytes, flows, CSV rows).

        Lets the daemon seed its counters after a restart so totals survive a
        crash without double counting. Safe from any thread.
        """
        return read_totals(self._cfg.state.directory)
