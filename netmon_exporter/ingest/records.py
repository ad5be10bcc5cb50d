"""What ingestion knows about one file, as plain data shared by the ledger and the scheduler.

A file is identified by its path plus device, inode, size and mtime (its
:class:`Identity`): renamed, or replaced under the same name, it is a new file.
The ledger keeps one :class:`Entry` per identity in one of the row states below.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import NamedTuple

# Ledger row states (stored as text; see docs/ingestion.md section 3).
SEEN = "seen"  # passed the age gate, waiting for a worker
IN_PROGRESS = "in_progress"  # handed to a worker (back to seen at the next start-up)
FAILED = "failed"  # an attempt failed; next_retry says when to try again
DONE = "done"  # processed: never processed again
QUARANTINED = "quarantined"  # retries exhausted, moved aside
GONE = "gone"  # disappeared (or changed) before it was processed


class Identity(NamedTuple):
    """What makes a file the same file: a rename or a rewrite changes it."""

    dev: int
    ino: int
    size: int
    mtime_ns: int

    @staticmethod
    def of(st: os.stat_result) -> Identity:
        return Identity(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


@dataclass(frozen=True)
class Entry:
    """One ledger row."""

    id: int
    path: str
    identity: Identity
    series: str | None
    kind: str
    state: str
    attempts: int
    next_retry: float | None
    reason: str | None
    message: str | None
    ready_at: float
