"""Ingestion: find captures, wait until complete, process each exactly once with workers."""

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
