"""Write a generated file, or check that the committed copy is up to date.

Shared by the asset generators (``alerts/generate.py``, ``grafana/dashboards.py``),
which are plain scripts, not part of the package: each puts this directory on
``sys.path`` and imports :func:`write_or_check`.
"""

from __future__ import annotations

import difflib
import sys
from pathlib import Path


def write_or_check(path: Path, text: str, check: bool, context: int = 3) -> bool:
    """Write ``text`` to ``path``, or with ``check`` compare it; False when the file is stale.

    A stale file's unified diff (``context`` lines around each change) goes to stdout.
    """
    if not check:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path}")
        return True
    current = path.read_text(encoding="utf-8") if path.exists() else ""
    if current == text:
        return True
    sys.stdout.writelines(
        difflib.unified_diff(
            current.splitlines(keepends=True),
            text.splitlines(keepends=True),
            str(path),
            "generated",
            n=context,
        )
    )
    return False
