"""Where files go after processing: kept, moved, deleted or quarantined; old outputs pruned."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..flow_schema import FlowBatch
from ..flows.flow_csv import FlowCsvWriter

QUARANTINE_DIR = "quarantine"
FLOWS_DIR = "flows"
NAME_MAX = 255  # bytes in one path component (Linux, most file systems)
# What quarantine may add to a name: ".99999" (free name), ".reason", then ".<>.tmp".
_QUARANTINE_EXTRA = len(".99999") + len(".reason") + len("..tmp")


def fit_name(name: str, room: int = NAME_MAX) -> str:
    """Return ``name`` shortened to at most ``room`` bytes, unique by a hash of the whole.

    Names are bytes (any the OS holds, undecodable ones included); a long one
    keeps its head and tail (the suffix says what the file is) around ``~`` and
    12 hex digits of its SHA-256, so two long names sharing a prefix stay apart.
    """
    raw = os.fsencode(name)
    if len(raw) <= room:
        return name
    digest = hashlib.sha256(raw).hexdigest()[:12].encode()
    tail = raw[-24:] if len(raw) > 24 else b""
    head = raw[: max(0, room - len(digest) - len(tail) - 2)]
    return os.fsdecode(head + b"~" + digest + b"~" + tail)


_WHAT_TO_DO = {
    "format": "The file is not a pcap, pcapng or flow CSV this version can read. Check what "
    "wrote it; if it is a valid capture, report it with the file attached.",
    "truncated": "The file ends in the middle of a record. If the capture tool was still "
    "writing it, raise capture.min_age_seconds; otherwise the file is damaged.",
    "io": "The file could not be read (permissions, disk or network file system errors).",
    "timeout": "Processing took longer than processing.file_timeout_seconds; raise it for very "
    "large files, or report the file if it is small.",
    "worker_crash": "The worker process died while reading the file (memory limit or a crash "
    "in a native library). Report the file.",
    "too_large": "The file needed more memory than available; split it or add memory.",
    "internal": "An unexpected error in netmon-exporter. Report it with the message above.",
}


def after_processing(
    path: Path, action: str, done_directory: Path, capture_directory: Path
) -> Path | None:
    """Keep, move or delete a processed file; return where it is now (None: deleted).

    Moves keep the path relative to the capture directory, so rotation
    subdirectories survive and equal names in different folders do not clash.
    """
    if action == "keep":
        return path
    if action == "delete":
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        return None
    if action != "move":
        raise ValueError(f"unknown after_processing action {action!r}")
    try:
        rel = path.relative_to(capture_directory)
    except ValueError:
        rel = Path(path.name)
    target = _free_name(done_directory / rel)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(path), str(target))
    return target


@dataclass(frozen=True)
class QuarantineNote:
    path: str
    kind: str
    reason: str
    message: str
    attempts: int
    when: float


def quarantine(path: Path, output_directory: Path, note: QuarantineNote) -> Path:
    """Move ``path`` into ``output/quarantine/`` with a ``<name>.reason`` file beside it.

    The reason file is written first (atomically), so a crash in between leaves
    an explanation rather than an unexplained capture.
    """
    qdir = output_directory / QUARANTINE_DIR
    qdir.mkdir(parents=True, exist_ok=True)
    target = _free_name(qdir / fit_name(path.name, NAME_MAX - _QUARANTINE_EXTRA))
    reason_file = target.with_name(target.name + ".reason")
    when = dt.datetime.fromtimestamp(note.when, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    text = (
        f"file: {note.path}\n"
        f"kind: {note.kind}\n"
        f"quarantined_at: {when}\n"
        f"reason: {note.reason}\n"
        f"attempts: {note.attempts}\n"
        f"error: {note.message}\n"
        f"what_to_do: {_WHAT_TO_DO.get(note.reason, _WHAT_TO_DO['internal'])}\n"
        "to retry: move (or copy) the file back into the capture directory; it is then a "
        "new attempt\n"
    )
    tmp = reason_file.with_name(f".{reason_file.name}.tmp")
    tmp.write_text(text, encoding="utf-8", errors="backslashreplace")
    os.replace(tmp, reason_file)
    if path.exists():
        shutil.move(str(path), str(target))
    return target


def _free_name(target: Path) -> Path:
    if not target.exists():
        return target
    for i in range(1, 100000):
        candidate = target.with_name(f"{target.name}.{i}")
        if not candidate.exists():
            return candidate
    raise FileExistsError(f"no free name for {target}")


def flow_csv_name(path: Path, capture_directory: Path, mtime_ns: int, part: str = "") -> str:
    """Name the flow CSV of one capture: deterministic, and unique per file identity.

    CICFlowMeter's ``<name>_Flow.csv`` plus the capture's mtime (UTC), so a redo
    after a crash rewrites the same CSV while a file replaced under the same name
    (a ring buffer of ``tcpdump -W``) gets a new one; subdirectories are part of
    the name, so equal names in different folders do not clash. ``part`` marks
    a second CSV of the same capture (``_end``: flows still open when its
    rotation series ended). Long names are shortened by :func:`fit_name`.

    Joining the folders with ``__`` must not make two captures one name (``a/b.pcap``
    and a top-level ``a__b.pcap``, or ``a_/b`` and ``a/_b``, modified in the same second,
    would share a CSV and the later would overwrite the earlier). So a path whose parts
    could be split back more than one way (a part holding ``__`` or ``~``, or starting or
    ending with ``_``) gets ``~`` and 12 hex digits of its SHA-256 appended. Other names
    hold no ``~`` at all, so the two kinds never meet (and :func:`fit_name`'s shortened
    names carry a hash of the whole name too).
    """
    try:
        rel = path.relative_to(capture_directory)
    except ValueError:
        rel = Path(path.name)
    parts = list(rel.parts)
    if parts and parts[-1].endswith(".gz"):
        parts[-1] = parts[-1][:-3]  # x.pcap.gz is x.pcap compressed (gzip keeps the mtime)
    name = "__".join(parts)
    if any("__" in p or "~" in p or p.startswith("_") or p.endswith("_") for p in parts):
        raw = b"/".join(os.fsencode(p) for p in parts)
        name += "~" + hashlib.sha256(raw).hexdigest()[:12]
    try:
        stamp = dt.datetime.fromtimestamp(mtime_ns // 1_000_000_000, dt.UTC)
        when = f"{stamp:%Y%m%dT%H%M%S}Z"
    except (ValueError, OverflowError, OSError):  # an mtime past year 9999: say it as is
        when = f"{mtime_ns // 1_000_000_000}s"
    tail = f"_{when}{part}_Flow.csv"
    # room for the writer's ".<name>.<pid>.tmp" while it writes
    return fit_name(name, NAME_MAX - len(os.fsencode(tail)) - len("..4194304.tmp")) + tail


def write_end_csv(
    flows: FlowBatch,
    origin: Path,
    mtime_ns: int,
    capture_directory: Path,
    output_directory: Path,
    interim: bool = False,
) -> tuple[str, int]:
    """Write the flows left open at the end of a series beside its last file's CSV.

    Named after that file (``origin``) with ``_end``, so a crash before the carry is
    dropped rewrites the same CSV rather than duplicating rows. Returns (path, rows).
    ``interim``: their last slices rather than whole flows (``output.flows_csv_interim``).
    """
    directory = output_directory / FLOWS_DIR
    directory.mkdir(parents=True, exist_ok=True)
    name = flow_csv_name(origin, capture_directory, mtime_ns, part="_end")
    writer = FlowCsvWriter(directory / name, interim=interim)
    try:
        writer.write(flows)
        writer.close()
    except BaseException:
        writer.abort()
        raise
    return str(writer.path), writer.rows


def prune_flow_csvs(
    directory: Path, *, now: float, retention_hours: float, max_files: int
) -> list[Path]:
    """Delete flow CSVs older than the retention or beyond the newest ``max_files``.

    0 disables either limit. Returns the deleted paths.
    """
    try:
        entries = [
            (e.stat().st_mtime, Path(e.path))
            for e in os.scandir(directory)
            if e.is_file() and e.name.endswith(".csv") and not e.name.startswith(".")
        ]
    except FileNotFoundError:
        return []
    entries.sort()
    doomed: list[Path] = []
    if retention_hours > 0:
        cutoff = now - retention_hours * 3600
        doomed = [p for t, p in entries if t < cutoff]
        entries = [(t, p) for t, p in entries if t >= cutoff]
    if max_files > 0 and len(entries) > max_files:
        doomed += [p for _, p in entries[: len(entries) - max_files]]
    deleted = []
    for p in doomed:
        try:
            p.unlink()
            deleted.append(p)
        except FileNotFoundError:
            pass
    return deleted
