"""How a configuration setting is declared: a dataclass field that carries its own documentation.

``setting(default, help, min=..., max=..., choices=..., restart=...)`` is the one way
every section of the configuration declares a key, whether the section lives in
``config`` or in ``detectors.catalog``; ``config`` validates against this metadata and
``tools.reference_docs`` renders ``config.yaml`` and the reference from it. This module
is a leaf: it imports nothing of ours, so anything declarative may use it.
"""

from __future__ import annotations

from dataclasses import field
from typing import Any


def setting(
    default: Any,
    help: str,
    *,
    min: float | None = None,
    max: float | None = None,
    choices: tuple[str, ...] | None = None,
    restart: bool = False,
    must_exist: bool = False,
    factory: bool = False,
) -> Any:
    """Declare a setting: its default (a factory with ``factory=True``), help, range, reload."""
    meta = {
        "help": help,
        "min": min,
        "max": max,
        "choices": choices,
        "restart": restart,
        "must_exist": must_exist,
    }
    if factory:
        return field(default_factory=default, metadata=meta)
    return field(default=default, metadata=meta)
