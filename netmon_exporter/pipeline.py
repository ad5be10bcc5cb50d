"""Per-file processing: one capture (or flow CSV) in, packets counted and flows out.

This is what worker processes run. It knows nothing about Prometheus, HTTP or
signals: it returns a :class:`FileResult` and the daemon records it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .flow_schema import FlowBatch


class CaptureFormatError(Exception):
    """The file is not a capture or flow CSV we can read (reason is user-facing)."""

    def __init__(self, message: str, reason: str = "format") -> None:
        super().__init__(message)
        self.reason = reason  # one of metrics.FAIL_REASONS


@dataclass(frozen=True)
class FlowSettings:
    """The flow-engine subset of the config (plain values, picklable)."""

    idle_timeout_seconds: float = 120.0
    active_timeout_seconds: float = 3600.0
    activity_timeout_seconds: float = 5.0
    carry_across_files: bool = True


@dataclass(frozen=True)
class FileResult:
    """What processing one file produced."""

    path: str
    kind: str                       # "pcap" | "pcapng" | "csv"
    size_bytes: int
    seconds: float
    flows: FlowBatch                # flows completed in this file (carried ones included)
    packets_by_protocol: dict[str, int] = field(default_factory=dict)   # metrics.PROTOCOLS
    bytes_by_protocol: dict[str, int] = field(default_factory=dict)
    skipped_by_reason: dict[str, int] = field(default_factory=dict)     # metrics.SKIP_REASONS
    ip_fragments: int = 0
    carry: bytes | None = None      # opaque open-flow state for the next file of the series
    csv_path: str | None = None     # flow CSV written, if any
    csv_rows: int = 0
    first_ts: float | None = None   # capture time span (epoch seconds)
    last_ts: float | None = None


def process_file(path: Path, settings: FlowSettings, *, carry: bytes | None = None,
                 csv_dir: Path | None = None, final: bool = True) -> FileResult:
    """Parse one file into flows; raise :class:`CaptureFormatError` for unreadable input.

    ``carry`` is the ``FileResult.carry`` of the previous file of the same series;
    ``final=False`` keeps flows still open at the end in ``FileResult.carry``
    instead of ending them. ``csv_dir`` set: write the flows as CSV there.
    """
    raise NotImplementedError  # implemented by the flow engine (issue 3)


def finish_carry(carry: bytes, settings: FlowSettings) -> FlowBatch:
    """End every flow held in ``carry`` (no next file came) and return them."""
    raise NotImplementedError  # implemented by the flow engine (issue 3)
