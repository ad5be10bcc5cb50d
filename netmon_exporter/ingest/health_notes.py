"""What ingestion tells the health checks besides its backlog: problems that age out.

A contained error, an unwritable output or a failed quarantine move degrades the
``ingestion`` check with its reason for ``RECENT_SECONDS`` (or until cleared,
e.g. once a file succeeds again); a watcher that could not start stays listed
while it is down.
"""

from __future__ import annotations

RECENT_SECONDS = 300.0


class Problems:
    """Named problems, each with when it was last seen."""

    def __init__(self) -> None:
        self._items: dict[str, tuple[float, str]] = {}  # key -> (when, what)

    def note(self, key: str, message: str, now: float) -> None:
        self._items[key] = (now, message)

    def clear(self, key: str) -> None:
        self._items.pop(key, None)

    def current(self, now: float, watch_error: str | None) -> tuple[str, ...]:
        """Return the problems younger than ``RECENT_SECONDS``, plus a watcher that is down."""
        for key, (when, _) in list(self._items.items()):
            if now - when > RECENT_SECONDS:
                del self._items[key]
        out = [msg for _, msg in self._items.values()]
        if watch_error:
            out.append(f"filesystem events unavailable, rescans only: {watch_error}")
        return tuple(out)


class Growth:
    """Count consecutive intervals in which the backlog grew (health: keeping_up)."""

    def __init__(self) -> None:
        self.streak = 0
        self._last = 0

    def note(self, backlog: int) -> None:
        self.streak = self.streak + 1 if backlog > self._last else 0
        self._last = backlog
