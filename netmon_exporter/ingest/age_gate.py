"""Decide when a capture is complete enough to read.

A file is ready when (1) its mtime is at least ``min_age`` seconds old, (2) two
looks at least ``settle_seconds`` apart saw the same identity (device, inode,
size, mtime), and (3) nobody is known to be writing it: no filesystem event
said a writer created or wrote it without a matching close-after-write
(inotify; works whatever user the writer runs as), and no process we can
inspect holds it open for writing (Linux ``/proc``). (3) makes ``min_age: 0``
safe against local writers that pause between appends; a writer on another host
(NFS) is only caught by (1) and (2), as long as it pauses for less than
``settle_seconds`` plus ``min_age``.

A file *renamed into* the directory (a rotation script's ``mv``, a writer that
writes under a temporary name) needs no second look for (2): the rename says its
writer is done, and any write after it (an event of its own) takes the waiver
back. A close-after-write event earns no such waiver: a writer that reopens the
file for every append closes it between appends, and only the settle time
protects against reading it between two of them.

A file whose mtime lies in the future (the sensor's clock runs ahead of ours)
is aged from the first look that saw it unchanged rather than from its mtime,
so clock skew delays it by ``min_age`` instead of stranding it.

Events only tell about writers that wrote while we were watching. A file last
written *before* watching began (at start-up, or with no watcher at all) may
still be held open by a writer that paused; such a file must also have been
quiet for ``unwatched_quiet_seconds``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum

from .records import Identity

DEFAULT_SETTLE_SECONDS = 1.0
# A "being written" mark without its close event is trusted this long after the
# last write event (covers a lost close event; a writer that dies is closed by
# the kernel, which sends the event).
WRITER_STALE_SECONDS = 3600.0
DEFAULT_UNWATCHED_QUIET_SECONDS = 60.0
# mtimes further ahead than this are clock skew, not a file written "just now".
CLOCK_SKEW_TOLERANCE_SECONDS = 2.0


class Note(Enum):
    """What a filesystem event says about a file's writers."""

    WRITING = "writing"  # written to: a writer has it open
    CLOSED = "closed"  # a writer closed it after writing
    RENAMED_IN = "renamed_in"  # renamed into the directory: written elsewhere, complete


@dataclass
class _Look:
    identity: Identity
    since: float  # clock time of the first look that saw this identity


class AgeGate:
    """Remember looks at files and say which are ready (see module docstring)."""

    def __init__(
        self,
        min_age_seconds: float,
        *,
        settle_seconds: float = DEFAULT_SETTLE_SECONDS,
        open_for_writing: Callable[[Iterable[str]], set[str]] | None = None,
        unwatched_quiet_seconds: float = DEFAULT_UNWATCHED_QUIET_SECONDS,
    ) -> None:
        self.min_age_seconds = min_age_seconds
        self.settle_seconds = settle_seconds
        self.unwatched_quiet_seconds = unwatched_quiet_seconds
        # Wall-clock time (like mtimes) since when write events arrive; None: no events.
        self.watch_since: float | None = None
        self._open_for_writing = (
            open_for_writing if open_for_writing is not None else files_open_for_writing
        )
        self._looks: dict[str, _Look] = {}
        self._writing: dict[str, float] = {}  # path -> time of the last write event
        self._closed: set[str] = set()  # seen closed after writing, or renamed in: complete
        self._renamed: set[str] = set()  # renamed in, not written since: no settle time
        # path -> identity whose clock skew was reported: told once per file, whatever
        # the scheduler forgets and looks at again (a reload re-judges every waiting file)
        self._skew_told: dict[str, Identity] = {}

    def __len__(self) -> int:
        return len(self._looks)

    def look(self, path: str, ident: Identity, now: float) -> bool:
        """Record a look; return True when size and mtime are settled and old enough.

        The caller must still confirm with :meth:`confirm` before reading.
        """
        prev = self._looks.get(path)
        if prev is None or prev.identity != ident:
            if prev is not None:  # changed unseen since the rename: settle as usual
                self._renamed.discard(path)
            self._looks[path] = _Look(ident, now)
            return False
        return self.settled(path, now)

    def settled(self, path: str, now: float) -> bool:
        """Answer from the looks so far, without looking again."""
        prev = self._looks.get(path)
        if prev is None:
            return False
        mtime = prev.identity.mtime_ns / 1e9
        need = self.min_age_seconds
        if path not in self._closed and (self.watch_since is None or mtime < self.watch_since):
            need = max(need, self.unwatched_quiet_seconds)  # its writes were not watched
        age = now - mtime
        if age < -CLOCK_SKEW_TOLERANCE_SECONDS:
            # The writer's clock is ahead (sensor and processor disagree): an mtime in
            # the future says nothing about age, so count from when we first saw this
            # identity unchanged instead.
            age = now - prev.since
        if age < need:
            return False
        return path in self._renamed or now - prev.since >= self.settle_seconds

    def skew(self, path: str, now: float) -> float:
        """Seconds by which the file's mtime lies in the future (0 when it does not)."""
        prev = self._looks.get(path)
        if prev is None:
            return 0.0
        ahead = prev.identity.mtime_ns / 1e9 - now
        return ahead if ahead > CLOCK_SKEW_TOLERANCE_SECONDS else 0.0

    def new_skew(self, path: str, now: float) -> float:
        """Like :meth:`skew`, but only the first time for a file (a path and its identity)."""
        ahead = self.skew(path, now)
        look = self._looks.get(path)
        if not ahead or look is None or self._skew_told.get(path) == look.identity:
            return 0.0
        self._skew_told[path] = look.identity
        return ahead

    def note(self, path: str, note: Note, now: float) -> None:
        """Record a filesystem event: a writer created or wrote the file, closed it after
        writing, or it was renamed in. The last two also vouch that its writes were seen;
        a rename also waives the settle time until the next write (module docstring)."""
        if note is Note.WRITING:
            self._writing[path] = now
            self._closed.discard(path)
            self._renamed.discard(path)
            return
        self._writing.pop(path, None)
        self._closed.add(path)
        if note is Note.RENAMED_IN:
            self._renamed.add(path)
        else:  # closed after writing: written since it came, so settle as usual
            self._renamed.discard(path)

    def writing(self, path: str, now: float) -> bool:
        t = self._writing.get(path)
        return t is not None and now - t < WRITER_STALE_SECONDS

    def prune_writing(self, now: float, exists: Callable[[str], bool]) -> None:
        for path, t in list(self._writing.items()):
            if now - t >= WRITER_STALE_SECONDS or not exists(path):
                del self._writing[path]
        self._closed = {p for p in self._closed if exists(p)}
        self._renamed = {p for p in self._renamed if exists(p)}
        self._skew_told = {p: i for p, i in self._skew_told.items() if exists(p)}

    def confirm(self, paths: Iterable[str], now: float) -> set[str]:
        """Return the subset of candidate paths nobody is writing; restart the others' clock."""
        paths = list(paths)
        if not paths:
            return set()
        busy = {p for p in paths if self.writing(p, now)}
        rest = [p for p in paths if p not in busy]
        if rest:
            busy |= self._open_for_writing(rest)
        for p in busy:
            look = self._looks.get(p)
            if look is not None:
                look.since = now
        return {p for p in paths if p not in busy}

    def identity(self, path: str) -> Identity | None:
        look = self._looks.get(path)
        return look.identity if look else None

    def prune_looks(self, keep: set[str]) -> None:
        """Forget the looks at paths no longer followed (write marks stay)."""
        for path in [p for p in self._looks if p not in keep]:
            del self._looks[path]

    def forget(self, path: str) -> None:
        """Drop what we know of a path, except that a writer has it open."""
        self._looks.pop(path, None)
        self._closed.discard(path)
        self._renamed.discard(path)


def files_open_for_writing(paths: Iterable[str], proc: str = "/proc") -> set[str]:
    """Return which of ``paths`` some local process has open for writing (Linux only).

    Processes we may not inspect are skipped: the settle time still applies.
    """
    wanted: dict[str, str] = {}
    for p in paths:
        wanted[os.path.realpath(p)] = p
    if not wanted or not os.path.isdir(proc):
        return set()
    busy: set[str] = set()
    try:
        pids = [d for d in os.listdir(proc) if d.isdigit()]
    except OSError:
        return set()
    for pid in pids:
        fd_dir = f"{proc}/{pid}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"{fd_dir}/{fd}")
            except OSError:
                continue
            original = wanted.get(target)
            if original is None or original in busy:
                continue
            if _writable_fd(f"{proc}/{pid}/fdinfo/{fd}"):
                busy.add(original)
    return busy


def _writable_fd(fdinfo: str) -> bool:
    try:
        with open(fdinfo, encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags:"):
                    return int(line.split()[1], 8) & 0o3 in (1, 2)  # O_WRONLY, O_RDWR
    except (OSError, ValueError, IndexError):
        return True  # it is open and we cannot tell how: assume a writer
    return True
