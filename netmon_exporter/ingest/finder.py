"""Which paths are ours, and what is in the capture directory now.

Wraps the directory scan and the watchdog observer for the scheduler thread:
shard and pattern filters, the directories never entered (done, output, state),
links and special files reported once, the capture directory's own failures
reported once, and the observer restarted when its directory was replaced.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable
from pathlib import Path

from ..config import Config
from .age_gate import AgeGate, Note
from .events import Event, FileIgnored, IngestError
from .names import owned
from .records import Identity
from .watcher import Watcher, look, scan

log = logging.getLogger("netmon_exporter.ingest")


class Finder:
    """Find the files this instance takes (scheduler thread only, but ``start_watcher``)."""

    def __init__(
        self,
        cfg: Config,
        gate: AgeGate,
        on_path: Callable[[str | None, Note | None], None],
        emit: Callable[[Event], None],
    ) -> None:
        self._cfg = cfg
        self._source = re.compile(cfg.capture.source_pattern)
        self._gate = gate  # told since when write events arrive
        self._on_path = on_path
        self._emit = emit
        self._watcher: Watcher | None = None
        self.dir_error: str | None = None
        self._ignored: dict[str, str] = {}  # path -> why it is never opened (told once)

    def configure(self, cfg: Config) -> None:
        old, self._cfg = self._cfg.capture, cfg
        self._source = re.compile(cfg.capture.source_pattern)
        if (old.directory, old.recursive) != (cfg.capture.directory, cfg.capture.recursive):
            self.start_watcher()

    # ------------------------------------------------------------------ watching
    def start_watcher(self) -> None:
        if self._watcher is not None:
            self._watcher.stop()
            self._gate.watch_since = None
        c = self._cfg.capture
        self._watcher = Watcher(c.directory, c.recursive, self._on_path)
        self._restart_watcher()

    def _restart_watcher(self) -> None:
        assert self._watcher is not None
        since = time.time()  # wall clock, compared with mtimes
        self._gate.watch_since = since if self._watcher.start() else None

    @property
    def watch_error(self) -> str | None:
        return self._watcher.error if self._watcher is not None else None

    def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.stop()

    # ------------------------------------------------------------------ scope
    def owned(self, path: str) -> bool:
        c = self._cfg.capture
        return owned(os.path.basename(path), c.patterns, self._source, c.shard_index, c.shard_count)

    def _excluded(self) -> list[Path]:
        c = self._cfg
        return [c.capture.done_directory, c.output.directory, c.state.directory]

    def in_scope(self, path: str) -> bool:
        """Whether a path from an event is one of ours (directory, exclusions, patterns)."""
        return self.scope()(path)

    def scope(self) -> Callable[[str], bool]:
        """:meth:`in_scope` for the paths of one round of events: the capture and
        excluded directories, and each event's directory, are resolved once for all of
        them (``realpath`` walks every component of a path; a burst of files brings
        several events each)."""
        c = self._cfg.capture
        root = os.path.realpath(c.directory)
        excluded = [os.path.realpath(p) + os.sep for p in self._excluded()]
        dirs: dict[str, bool] = {}

        def check(path: str) -> bool:
            folder = os.path.dirname(path)
            ok = dirs.get(folder)
            if ok is None:
                real = os.path.realpath(folder)
                ok = (real == root or (c.recursive and real.startswith(root + os.sep))) and not any(
                    (real + os.sep).startswith(p) for p in excluded
                )
                dirs[folder] = ok
            return ok and self.owned(path)

        return check

    # ------------------------------------------------------------------ looking
    def look(self, path: str) -> Identity | None:
        """Stat a path as it would be read: None when gone, or when it is never opened."""
        st, reason = look(path, self._cfg.capture.follow_symlinks)
        if reason is not None:
            self._ignore(path, reason)
            return None
        return Identity.of(st) if st is not None else None

    def scan(self) -> dict[str, Identity] | None:
        """List every file we take; None when the capture directory cannot be listed."""
        c = self._cfg.capture
        ignored: dict[str, str] = {}
        try:
            found = {
                p: Identity.of(st)
                for p, st in scan(
                    c.directory,
                    recursive=c.recursive,
                    patterns=c.patterns,
                    excluded=self._excluded(),
                    follow_symlinks=c.follow_symlinks,
                    ignored=ignored.__setitem__,
                )
                if self.owned(p)
            }
        except OSError as exc:
            self._directory_failed(
                f"cannot list capture directory {c.directory}: {exc.strerror or exc}"
            )
            return None
        if self.dir_error:
            log.info("capture directory usable again", extra={"dir": str(c.directory)})
        self.dir_error = None
        w = self._watcher
        if w is not None and (not w.running or w.stale):
            self._restart_watcher()
        for path in [p for p in self._ignored if p not in found and p not in ignored]:
            del self._ignored[path]
        for path, reason in ignored.items():
            if self.owned(path):
                self._ignore(path, reason)
        return found

    def _directory_failed(self, msg: str) -> None:
        if self.dir_error != msg:
            log.error("capture directory unusable", extra={"err": msg})
            self._emit(IngestError("io", msg))
        self.dir_error = msg

    def _ignore(self, path: str, reason: str) -> None:
        if self._ignored.get(path) == reason:
            return
        self._ignored[path] = reason
        log.info("file ignored", extra={"file": path, "reason": reason})
        self._emit(FileIgnored(path, reason))
