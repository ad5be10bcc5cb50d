"""Ingestion: find captures, wait until complete, process each exactly once with workers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .events import (
    CarryFlushed,
    Event,
    FileDone,
    FileFailed,
    FileQuarantined,
    FileSkipped,
    FileStarted,
    IngestError,
    IngestStatus,
)

if TYPE_CHECKING:
    from .service import IngestService

__all__ = [
    "CarryFlushed",
    "Event",
    "FileDone",
    "FileFailed",
    "FileQuarantined",
    "FileSkipped",
    "FileStarted",
    "IngestError",
    "IngestService",
    "IngestStatus",
]


def __getattr__(name: str) -> Any:
    # The service pulls in the pipeline, workers and watchdog; the scheduler core
    # and its tests need none of them, so it is imported on first use.
    if name == "IngestService":
        from .service import IngestService

        return IngestService
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
