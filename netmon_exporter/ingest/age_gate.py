"""Decide when a capture is complete enough to read.

A file is ready when (1) its mtime is at least ``min_age`` seconds old, (2) two
looks at least ``settle_seconds`` apart saw the same identity (device, inode,
size, mtime), and (3) no local process holds it open for writing (Linux
``/proc``; skipped where unavailable). (2) and (3) make ``min_age: 0`` safe: a
writer that pauses between appends is caught by (3), one on another host (NFS)
by (2) as long as it pauses for less than ``settle_seconds`` plus ``min_age``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import NamedTuple

DEFAULT_SETTLE_SECONDS = 1.0


class Identity(NamedTuple):
    """What makes a file the same file: a rename or a rewrite changes it."""

    dev: int
    ino: int
    size: int
    mtime_ns: int

    @staticmethod
    def of(st: os.stat_result) -> Identity:
        return Identity(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


@dataclass
class _Look:
    identity: Identity
    since: float  # clock time of the first look that saw this identity


class AgeGate:
    """Remember looks at files and say which are ready (see module docstring)."""

    def __init__(self, min_age_seconds: float, *, settle_seconds: float = DEFAULT_SETTLE_SECONDS,
                 open_for_writing: Callable[[Iterable[str]], set[str]] | None = None) -> None:
        self.min_age_seconds = min_age_seconds
        self.settle_seconds = settle_seconds
        self._open_for_writing = open_for_writing if open_for_writing is not None \
            else files_open_for_writing
        self._looks: dict[str, _Look] = {}

    def __len__(self) -> int:
        return len(self._looks)

    def look(self, path: str, st: os.stat_result, now: float) -> bool:
        """Record a look; return True when size and mtime are settled and old enough.

        The caller must still confirm with :meth:`confirm` before reading.
        """
        ident = Identity.of(st)
        prev = self._looks.get(path)
        if prev is None or prev.identity != ident:
            self._looks[path] = _Look(ident, now)
            return False
        return self.settled(path, now)

    def settled(self, path: str, now: float) -> bool:
        """Answer from the looks so far, without looking again."""
        prev = self._looks.get(path)
        if prev is None:
            return False
        if now - prev.identity.mtime_ns / 1e9 < self.min_age_seconds:
            return False
        return now - prev.since >= self.settle_seconds

    def confirm(self, paths: Iterable[str], now: float) -> set[str]:
        """Return the subset of candidate paths nobody is writing; restart the others' clock."""
        paths = list(paths)
        if not paths:
            return set()
        busy = self._open_for_writing(paths)
        for p in busy:
            look = self._looks.get(p)
            if look is not None:
                look.since = now
        return {p for p in paths if p not in busy}

    def identity(self, path: str) -> Identity | None:
        look = self._looks.get(path)
        return look.identity if look else None

    def forget(self, path: str) -> None:
        self._looks.pop(path, None)


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
