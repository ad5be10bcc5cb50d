"""Find capture files: watchdog events for speed, directory scans for completeness.

Events only say "look at this path soon"; the scan (at start-up and every
interval) is what guarantees nothing is missed on file systems without events
(NFS, SMB) and that files present before start-up are found.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from .age_gate import Note
from .names import matches

log = logging.getLogger("netmon_exporter.ingest")


class _StopRaceFilter(logging.Filter):
    """Drop watchdog's benign error about events racing an observer's stop."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "called when the thread is inactive" not in str(record.msg)


logging.getLogger("watchdog.observers.inotify").addFilter(_StopRaceFilter())


def classify(st: os.stat_result, follow_symlinks: bool) -> str | None:
    """Return why a file found by ``lstat`` is never opened (metrics.IGNORE_REASONS), or None.

    A link is judged by its target only when links are followed (the caller
    then passes the target's stat).
    """
    if stat.S_ISLNK(st.st_mode):
        return None if follow_symlinks else "symlink"
    if not stat.S_ISREG(st.st_mode):
        return "special"
    return None


def look(path: str, follow_symlinks: bool) -> tuple[os.stat_result | None, str | None]:
    """Stat one path as the scheduler must: (stat of what would be read, ignore reason).

    ``(None, None)``: the path is gone (or a dangling link).
    """
    try:
        st = os.lstat(path)
        reason = classify(st, follow_symlinks)
        if reason is None and stat.S_ISLNK(st.st_mode):
            st = os.stat(path)
            reason = classify(st, follow_symlinks)
    except OSError:
        return None, None
    return st, reason


def scan(
    directory: Path,
    *,
    recursive: bool,
    patterns: Sequence[str],
    excluded: Sequence[Path] = (),
    follow_symlinks: bool = False,
    ignored: Callable[[str, str], None] | None = None,
) -> Iterator[tuple[str, os.stat_result]]:
    """Yield (path, stat) of every regular file matching the patterns.

    Raises OSError if ``directory`` itself cannot be listed; unreadable
    subdirectories are skipped. ``excluded`` directories (done, quarantine,
    output, state) are never entered, nor are linked directories. Symbolic
    links to files are followed only with ``follow_symlinks``; links not
    followed and special files (FIFOs, sockets, devices) matching the patterns
    are reported to ``ignored(path, reason)`` instead.
    """
    skip = {os.path.realpath(p) for p in excluded}
    stack = [str(directory)]
    first = True
    while stack:
        current = stack.pop()
        try:
            it = os.scandir(current)
        except OSError:
            if first:
                raise
            continue
        first = False
        with it:
            for entry in it:
                try:
                    if entry.is_dir(follow_symlinks=False):
                        if recursive and os.path.realpath(entry.path) not in skip:
                            stack.append(entry.path)
                        continue
                    if not matches(entry.name, patterns):
                        continue
                    st, reason = look(entry.path, follow_symlinks)
                    if reason is not None and ignored is not None:
                        ignored(entry.path, reason)
                    if st is not None and reason is None:
                        yield entry.path, st
                except OSError:
                    continue  # vanished between listing and stat


class Watcher:
    """A watchdog observer that reports changed paths to a callback.

    ``on_path(path, note)`` is called from the observer thread for every file
    event: ``note`` is :class:`~.age_gate.Note` ``WRITING`` when the file was written
    to (a writer has it open), ``CLOSED`` when a writer closed it after writing,
    ``RENAMED_IN`` when it was renamed in (complete), None when it says nothing
    about writers (created — watchdog also reports files found in a new directory
    as created, after their writer may have closed them —, attributes changed,
    deleted). ``on_path(None, None)`` asks
    for a full scan (a directory appeared, or the watch was lost).
    """

    def __init__(
        self, directory: Path, recursive: bool, on_path: Callable[[str | None, Note | None], None]
    ) -> None:
        self.directory = directory
        self.recursive = recursive
        self._on_path = on_path
        self._observer: object | None = None
        self._lock = threading.Lock()
        self._root: tuple[int, int] | None = None
        self._root_lost = False
        self.error: str | None = None

    @property
    def running(self) -> bool:
        obs = self._observer
        return obs is not None and obs.is_alive()  # type: ignore[attr-defined]

    @property
    def stale(self) -> bool:
        """The watched directory was replaced (deleted and recreated, remounted)."""
        if self._root_lost:
            return True
        return self._root is not None and _dir_identity(self.directory) != self._root

    def start(self) -> bool:
        """Start the observer; on failure remember why and return False (scans still work)."""
        from watchdog.events import FileSystemEvent, FileSystemEventHandler

        on_path = self._on_path
        watcher = self
        root = os.fsdecode(os.path.abspath(self.directory))

        class _Handler(FileSystemEventHandler):
            def on_any_event(self, event: FileSystemEvent) -> None:
                kind = event.event_type
                if kind in ("opened", "closed_no_write"):
                    return
                src = os.fsdecode(event.src_path)
                dest = os.fsdecode(getattr(event, "dest_path", "") or "")
                if kind in ("deleted", "moved") and src and os.path.abspath(src) == root:
                    watcher._root_lost = True  # inotify dropped the watch with it
                    on_path(None, None)
                    return
                if event.is_directory:
                    if kind in ("created", "moved"):
                        on_path(None, None)
                    return
                if event.is_synthetic:
                    # made up for the contents of a directory that just appeared: says
                    # nothing about writers (its close may have come before the watch)
                    on_path(dest or src, None)
                    return
                if kind == "moved":
                    if src:
                        on_path(src, None)
                    if dest:
                        on_path(dest, Note.RENAMED_IN)  # written elsewhere, complete
                elif kind == "modified":
                    on_path(src, Note.WRITING)
                elif kind == "closed":
                    on_path(src, Note.CLOSED)
                else:
                    on_path(src, None)

        with self._lock:
            self._stop_locked()
            observer = _observer()
            try:
                observer.schedule(_Handler(), str(self.directory), recursive=self.recursive)
                observer.start()
            except (OSError, RuntimeError) as exc:
                self.error = (
                    f"cannot watch {self.directory} ({exc}); relying on rescans every interval"
                )
                log.warning("filesystem events unavailable", extra={"err": self.error})
                with contextlib.suppress(Exception):  # best effort on a half-started observer
                    observer.stop()
                return False
            self._observer = observer
            self._root = _dir_identity(self.directory)
            self._root_lost = False
            self.error = None
            return True

    def stop(self) -> None:
        with self._lock:
            self._stop_locked()

    def _stop_locked(self) -> None:
        obs = self._observer
        self._observer = None
        if obs is None:
            return
        obs.stop()  # type: ignore[attr-defined]
        obs.join(timeout=5)  # type: ignore[attr-defined]


def _observer() -> Any:
    """An observer that reports renames into the directory as moves, not creations."""
    try:
        from watchdog.observers.inotify import InotifyObserver

        return InotifyObserver(generate_full_events=True)
    except (ImportError, OSError):
        from watchdog.observers import Observer

        return Observer()


def _dir_identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino
