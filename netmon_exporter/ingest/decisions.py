"""What the scheduler core is told and what it decides: plain frozen data.

Inputs (worker outcomes, in :class:`Succeeded` .. :class:`Interrupted`) go into
:class:`~.scheduler.Scheduler`; decisions come out, in the order the shell must
carry them out. A decision that writes the ledger and fails stops the rest of
its list; the shell then resyncs the core from the ledger once it is back.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from .records import Identity


@dataclass(frozen=True)
class FileInfo:
    """What a file is: where, which identity, which series, which kind (never changes)."""

    path: str
    identity: Identity
    series: str | None
    kind: str


# ----------------------------------------------------------------- outcomes (inputs)
@dataclass(frozen=True)
class Succeeded:
    """The worker processed the file; ``carry``: it left flows open for the next file."""

    carry: bool = False


@dataclass(frozen=True)
class Failed:
    """The attempt failed for a reason of the file's own (metrics.FAIL_REASONS)."""

    reason: str
    message: str


@dataclass(frozen=True)
class OutputFailed:
    """The capture is fine but its outputs could not be written (disk full, read-only)."""

    message: str


@dataclass(frozen=True)
class Vanished:
    """The attempt failed and the file is gone: nothing left to retry."""


@dataclass(frozen=True)
class Interrupted:
    """The attempt was cut short by a shutdown: hand the file back for the next start."""


@dataclass(frozen=True)
class NotRun:
    """A file queued behind its series' previous file was not processed: that file did
    not succeed, or its outcome could not be recorded. Not an attempt; it waits again."""


Result = Succeeded | Failed | OutputFailed | Vanished | Interrupted | NotRun


# ----------------------------------------------------------------- decisions (outputs)
class Why(Enum):
    """Why a path is no longer followed (what else the shell does besides forgetting it)."""

    FINISHED = "finished"  # done, quarantined or handed back: nothing more to record
    GONE = "gone"  # disappeared before it was processed: mark the row gone
    CHANGED = "changed"  # changed after it was found ready: mark gone, it is a new file
    VANISHED = "vanished"  # disappeared while being processed: mark gone, report it
    SET_ASIDE = "set_aside"  # contained after an unexpected error


@dataclass(frozen=True)
class StartFile:
    """Hand the file to a worker (``attempt`` counts from 1)."""

    key: int  # ledger row
    file: FileInfo
    use_carry: bool  # continue the flows its series carried, and carry its own on
    attempt: int
    # queued behind the running file of its series (that ledger row), to the same worker,
    # which goes on with that file's open flows if, and only if, it succeeded; 0: not queued
    after: int = 0


@dataclass(frozen=True)
class Forget:
    """Stop following a path (the age gate forgets it); ``key`` > 0: mark its row gone."""

    path: str
    why: Why = Why.FINISHED
    key: int = 0


@dataclass(frozen=True)
class RecordDone:
    """Record success (and the series' new carry, with ``update_carry``), then report it."""

    key: int
    file: FileInfo
    update_carry: bool
    lag_seconds: float  # from ready to done
    attempts: int  # the successful one included


@dataclass(frozen=True)
class RecordRetry:
    """Record a failed attempt; the file is tried again in ``retry_in`` seconds."""

    key: int
    file: FileInfo
    reason: str
    message: str
    attempt: int
    retry_in: float


@dataclass(frozen=True)
class RecordQuarantine:
    """Record that the file used up its retries (the move follows as :class:`Quarantine`)."""

    key: int
    file: FileInfo
    reason: str
    message: str
    attempt: int


@dataclass(frozen=True)
class RetryOutput:
    """Outputs could not be written: try again in ``retry_in`` s, no attempt used up."""

    key: int
    file: FileInfo
    message: str
    retry_in: float


@dataclass(frozen=True)
class HandBack:
    """Give an interrupted file back to the ledger, to be redone after the next start
    (``again``: the file stays followed and waits for a worker once more)."""

    key: int
    file: FileInfo
    again: bool = False


@dataclass(frozen=True)
class EndCarry:
    """End the flows the series carried and report them (no next file came, or it failed)."""

    series: str


@dataclass(frozen=True)
class Quarantine:
    """Move a file the ledger has quarantined aside, with a note saying why."""

    key: int
    file: FileInfo
    reason: str
    message: str
    attempts: int
    when: float
    recovered: bool  # found again after a restart (or a failed move) rather than just now


@dataclass(frozen=True)
class Dispose:
    """Keep, move or delete a processed file as configured.

    ``recovered``: the ledger already had it done (a crash before the move): report
    it as skipped, count nothing.
    """

    file: FileInfo
    recovered: bool = False


Decision = (
    StartFile
    | Forget
    | RecordDone
    | RecordRetry
    | RecordQuarantine
    | RetryOutput
    | HandBack
    | EndCarry
    | Quarantine
    | Dispose
)
