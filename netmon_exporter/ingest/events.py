"""What ingestion tells the daemon: frozen events and a status snapshot.

The ingest service never touches metrics; the daemon turns these events into
metric updates, window aggregation and health. Events of one file arrive in
order (started, failed..., done or quarantined).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: the scheduler core imports this module lightly
    from ..flow_schema import FlowBatch
    from ..pipeline import FileResult


@dataclass(frozen=True)
class FileStarted:
    """A file was handed to a worker (``attempt`` counts from 1)."""

    path: str
    kind: str
    attempt: int


@dataclass(frozen=True)
class FileDone:
    """A file was processed and recorded as done in the ledger (exactly once)."""

    result: FileResult  # ``carry`` is stripped: the ledger keeps it
    kind: str  # one of metrics.FILE_KINDS
    lag_seconds: float  # from ready (age gate passed) to done
    attempts: int  # attempts it took, the successful one included


@dataclass(frozen=True)
class FileFailed:
    """One attempt failed; ``will_retry`` False means the file is being quarantined."""

    path: str
    kind: str
    reason: str  # one of metrics.FAIL_REASONS
    message: str
    attempt: int
    will_retry: bool
    category: str  # one of metrics.ERROR_CATEGORIES
    retry_in_seconds: float | None = None


@dataclass(frozen=True)
class FileQuarantined:
    """A file exhausted its retries and was moved to the quarantine directory."""

    path: str  # where it was found
    kind: str
    reason: str  # one of metrics.FAIL_REASONS (of the last attempt)
    message: str
    quarantine_path: str = ""  # where it is now ("" if it could not be moved)


@dataclass(frozen=True)
class FileSkipped:
    """A file the ledger already has as done (or quarantined) was found again.

    Happens after a crash between recording a file as done and moving or
    deleting it; the pending after-processing action is completed, nothing is
    counted again.
    """

    path: str
    kind: str
    state: str  # "done" or "quarantined"


@dataclass(frozen=True)
class CarryFlushed:
    """Flows held open across a rotation ended because no next file came in time.

    They are written to their own flow CSV (``csv_path``, ``csv_rows``) named
    after the file whose end left them open. ``flows_by_protocol`` is what the
    ledger committed with the carry's drop (what restarted counters are restored to).
    """

    flows: FlowBatch
    series: str = ""
    csv_path: str | None = None
    csv_rows: int = 0
    flows_by_protocol: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class OutputBlocked:
    """A file's outputs could not be written (disk full, read-only remount).

    The capture is fine: it is retried after ``retry_in_seconds`` without using
    up its retries, and never quarantined for it.
    """

    path: str
    message: str
    retry_in_seconds: float


@dataclass(frozen=True)
class FileIgnored:
    """A file matching the patterns that is never opened (told once per path)."""

    path: str
    reason: str  # one of metrics.IGNORE_REASONS


@dataclass(frozen=True)
class ClockSkew:
    """A file's mtime lies in the future: the writer's clock is ahead (told once per file)."""

    path: str
    ahead_seconds: float


@dataclass(frozen=True)
class IngestError:
    """Something outside a single file went wrong (directory, ledger, moving files)."""

    category: str  # one of metrics.ERROR_CATEGORIES
    message: str


Event = (
    FileStarted
    | FileDone
    | FileFailed
    | FileQuarantined
    | FileSkipped
    | CarryFlushed
    | FileIgnored
    | ClockSkew
    | OutputBlocked
    | IngestError
)


@dataclass(frozen=True)
class IngestStatus:
    """A snapshot of ingestion for the daemon's gauges and health checks."""

    backlog: int = 0  # ready or waiting for a retry (netmon_backlog_files)
    in_progress: int = 0  # handed to a worker (netmon_files_in_progress)
    workers_busy: int = 0  # worker processes with a file (netmon_workers_busy)
    not_ready: int = 0  # seen, still being written or too young (netmon_files_not_ready)
    oldest_ready_age_seconds: float = 0.0  # how long the oldest ready file has waited
    backlog_growth_streak: int = 0  # consecutive intervals the backlog grew
    ledger_error: str | None = None  # why the ledger is unusable (health: state_storage)
    ledger_open: bool = False  # the ledger is open and ours (readiness)
    problems: tuple[str, ...] = ()  # contained errors, unwritable outputs, no watcher
