"""What passes between the scheduler thread and the rest of the daemon.

The :class:`Inbox` collects what other threads ask of the scheduler (watch
events, a new config, a rescan, stopping) and wakes it; the :class:`Outbox`
holds the events and status snapshot it hands the daemon, and counts the
results not yet taken so the scheduler can stop dispatching when the daemon
falls behind.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
import time
from collections.abc import Callable

from ..config import Config
from .age_gate import Note
from .events import Event, FileDone, IngestStatus

MAX_CHANGED_PATHS = 10000  # beyond this many pending watch events, rescan instead


class Inbox:
    """Requests for the scheduler thread, and the pipe that wakes it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._changed: dict[str, Note | None] = {}  # path -> writer state from events
        self._scan = True  # a full scan is wanted
        self._woken = False
        self._config: Config | None = None
        self.stopping = threading.Event()
        self.stop_deadline = 0.0  # monotonic
        self._r, self._w = os.pipe()
        os.set_blocking(self._r, False)
        os.set_blocking(self._w, False)

    @property
    def wake_fd(self) -> int:
        return self._r

    def wake(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._w, b"\0")

    def drain(self) -> None:
        """Take the wake-ups so far (the scheduler is about to look at everything)."""
        with self._lock:
            self._woken = False
        with contextlib.suppress(BlockingIOError, OSError):
            while os.read(self._r, 4096):
                pass

    def on_path(self, path: str | None, note: Note | None = None) -> None:
        """Take a watch event (observer thread): remember it, wake the scheduler once."""
        with self._lock:
            if path is None or len(self._changed) >= MAX_CHANGED_PATHS:
                self._scan = True
                self._changed.clear()
            elif note is not None or path not in self._changed:
                self._changed[path] = note
            if self._woken:
                return
            self._woken = True
        self.wake()

    def request_scan(self) -> None:
        with self._lock:
            self._scan = True

    def take_changes(self) -> tuple[dict[str, Note | None], bool]:
        """Return the paths changed since the last call, and whether a full scan is wanted."""
        with self._lock:
            changed, self._changed = self._changed, {}
            full, self._scan = self._scan, False
        return changed, full

    def put_config(self, cfg: Config) -> None:
        with self._lock:
            self._config = cfg
        self.wake()

    def take_config(self) -> Config | None:
        with self._lock:
            cfg, self._config = self._config, None
        return cfg

    def stop(self, timeout: float) -> None:
        self.stop_deadline = time.monotonic() + max(0.0, timeout)
        self.stopping.set()
        self.wake()

    def close(self) -> None:
        os.close(self._w)
        os.close(self._r)


class Outbox:
    """Events and the status snapshot for the daemon (``wake``: a result was taken)."""

    def __init__(self, wake: Callable[[], None]) -> None:
        self._events: queue.Queue[Event] = queue.Queue()
        self._lock = threading.Lock()
        self._undelivered = 0  # FileDone events not yet polled (they hold flows)
        self._status = IngestStatus()
        self._wake = wake

    def emit(self, event: Event) -> None:
        if isinstance(event, FileDone):
            with self._lock:
                self._undelivered += 1
        self._events.put(event)

    @property
    def undelivered(self) -> int:
        with self._lock:
            return self._undelivered

    def poll(self, timeout: float, max_events: int) -> list[Event]:
        """Return the events so far, waiting up to ``timeout`` for the first one."""
        out: list[Event] = []
        try:
            out.append(
                self._events.get(timeout=timeout) if timeout > 0 else self._events.get_nowait()
            )
        except queue.Empty:
            return out
        while len(out) < max_events:
            try:
                out.append(self._events.get_nowait())
            except queue.Empty:
                break
        done = sum(1 for e in out if isinstance(e, FileDone))
        if done:
            with self._lock:
                self._undelivered -= done
            self._wake()  # dispatching may have waited for results to be taken
        return out

    @property
    def status(self) -> IngestStatus:
        with self._lock:
            return self._status

    @status.setter
    def status(self, st: IngestStatus) -> None:
        with self._lock:
            self._status = st
