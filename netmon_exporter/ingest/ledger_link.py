"""Keep the ledger open: open it, report when it fails (once), reopen it every few seconds.

Without a working ledger no file is handed out — processing without it would
break exactly-once — and the health check ``state_storage`` fails with the reason.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from . import carry_store
from .events import Event, IngestError
from .ledger import Ledger, LedgerError

log = logging.getLogger("netmon_exporter.ingest")

REOPEN_SECONDS = 5.0
T = TypeVar("T")


class LedgerLink:
    """The scheduler thread's handle on the ledger (``ledger`` is None while it fails)."""

    def __init__(self, directory: Path, emit: Callable[[Event], None]) -> None:
        self.directory = directory  # state.directory takes effect only after a restart
        self._emit = emit
        self.ledger: Ledger | None = None
        self.error: str | None = None
        self._reopen_at = 0.0
        self._started = time.time()  # carry files older than this are from earlier runs

    def open(self, now: float) -> dict[str, float] | None:
        """Open the ledger and hand back interrupted work; return its carries (None: failed)."""
        try:
            ledger = Ledger(self.directory)
            requeued = ledger.requeue_in_progress()
            carries = ledger.carries()
            kept = carry_store.referenced_names(ledger.carry_blobs())
        except LedgerError as exc:
            self.failed(exc, now)
            return None
        removed = carry_store.sweep(carry_store.directory(self.directory), kept, self._started)
        if removed:
            log.info("removed carry files no committed file references", extra={"files": removed})
        self.ledger = ledger
        if self.error:
            log.info("ledger usable again", extra={"dir": str(self.directory)})
        self.error = None
        if requeued:
            log.info(
                "re-queued files interrupted by the last shutdown or crash",
                extra={"files": requeued},
            )
        return carries

    def due(self, now: float) -> bool:
        """Whether the ledger is closed and it is time to try opening it again."""
        return self.ledger is None and now >= self._reopen_at

    def failed(self, exc: Exception, now: float) -> None:
        msg = str(exc)
        if self.error != msg:
            log.error(
                "ledger unusable; not processing files until it works again",
                extra={"category": "ledger", "err": msg},
            )
            self._emit(IngestError("ledger", msg))
        self.error = msg
        self._reopen_at = now + REOPEN_SECONDS
        self.close()

    def run(self, fn: Callable[[Ledger], T], now: float) -> tuple[bool, T | None]:
        """Run ``fn`` on the open ledger; (False, None) when it is closed or fails."""
        if self.ledger is None:
            return False, None
        try:
            return True, fn(self.ledger)
        except LedgerError as exc:
            self.failed(exc, now)
            return False, None

    def close(self) -> None:
        if self.ledger is not None:
            self.ledger.close()
            self.ledger = None
