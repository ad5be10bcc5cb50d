"""The last error of each optional component (LLM, Alertmanager) for the health checks.

May import: nothing of ours.
"""

from __future__ import annotations

import threading


class ComponentErrors:
    """The last error of each optional component, written from its own thread.

    A reload that replaces a component bumps its generation: a call that started under
    the old settings cannot then report an error (or a recovery) for the new ones.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._errors: dict[str, str | None] = {}
        self._generations: dict[str, int] = {}

    def generation(self, name: str) -> int:
        with self._lock:
            return self._generations.get(name, 0)

    def report(self, name: str, generation: int, error: str | None) -> None:
        with self._lock:
            if self._generations.get(name, 0) == generation:
                self._errors[name] = error

    def reset(self, name: str) -> None:
        with self._lock:
            self._generations[name] = self._generations.get(name, 0) + 1
            self._errors[name] = None

    def get(self, name: str) -> str | None:
        with self._lock:
            return self._errors.get(name)
