"""Which build is running: version, revision, branch and build date, as Prometheus shows them.

Taken, in this order, from git when the package runs from a checkout (so a developer's
``--version`` names the commit), from ``BUILD_INFO.json`` beside this module when a
build wrote it (``python -m netmon_exporter.build_info`` in a checkout, before
``pip install .``; the container build, which has no ``.git``, passes
``--revision``/``--branch`` from its build arguments), else "unknown". Read once per
process.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import subprocess
import sys
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from . import __version__

PACKAGE_DIR = Path(__file__).resolve().parent
BUILD_FILE = PACKAGE_DIR / "BUILD_INFO.json"
UNKNOWN = "unknown"


@dataclass(frozen=True)
class BuildInfo:
    version: str = __version__
    revision: str = UNKNOWN
    branch: str = UNKNOWN
    build_date: str = UNKNOWN  # Prometheus's format: 20260604-00:58:54 (UTC)

    def version_text(self, program: str = "netmon-exporter") -> str:
        """Say what ``--version`` says, in Prometheus's layout."""
        return (
            f"{program}, version {self.version} (branch: {self.branch}, "
            f"revision: {self.revision})\n"
            f"  build date:       {self.build_date}\n"
            f"  python:           {platform.python_version()}\n"
            f"  platform:         {sys.platform}/{platform.machine()}"
        )


def _git(root: Path, *args: str) -> str:
    out = subprocess.run(
        ["git", "-C", str(root), *args],
        capture_output=True,
        text=True,
        timeout=5,
        check=True,
        # Never take the index lock: others may be committing in the same tree.
        env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"},
    )
    return out.stdout.strip()


def _date(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y%m%d-%H:%M:%S")


def from_git(root: Path = PACKAGE_DIR.parent) -> BuildInfo | None:
    """Describe the checkout the package runs from, or None if it is not one."""
    if not (root / ".git").exists() or not (root / "pyproject.toml").exists():
        return None
    try:
        revision = _git(root, "rev-parse", "HEAD")
        branch = _git(root, "rev-parse", "--abbrev-ref", "HEAD")
        committed = float(_git(root, "log", "-1", "--format=%ct"))
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    return BuildInfo(__version__, revision, branch, _date(committed))


def from_file(path: Path = BUILD_FILE) -> BuildInfo | None:
    """Read what the build wrote, or None if it wrote nothing usable."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    fields = {k: str(data[k]) for k in ("revision", "branch", "build_date") if data.get(k)}
    return BuildInfo(__version__, **fields)


@functools.lru_cache(maxsize=1)
def build_info() -> BuildInfo:
    """Return this build's identity (git checkout, then build file, then unknown)."""
    return from_git() or from_file() or BuildInfo()


def write_build_file(path: Path = BUILD_FILE, revision: str = "", branch: str = "") -> BuildInfo:
    """Write the build's identity for an installed copy to report (build step).

    ``revision``/``branch`` given (a container build has no ``.git``): those, else the
    checkout's; the build date is now.
    """
    if revision:
        info = BuildInfo(__version__, revision, branch or UNKNOWN)
    else:
        found = from_git()
        if found is None:
            raise SystemExit("not a git checkout and no --revision given: nothing to write")
        info = found
    info = BuildInfo(info.version, info.revision, info.branch, _date(datetime.now(UTC).timestamp()))
    path.write_text(json.dumps(asdict(info), indent=2) + "\n", encoding="utf-8")
    return info


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(
        prog="python -m netmon_exporter.build_info",
        description="Write BUILD_INFO.json beside the package (a build step).",
        allow_abbrev=False,
    )
    ap.add_argument("--revision", default="", help="commit (default: the checkout's)")
    ap.add_argument("--branch", default="", help="branch (default: the checkout's)")
    ap.add_argument("--output", type=Path, default=BUILD_FILE, help="where to write it")
    a = ap.parse_args(argv)
    print(write_build_file(a.output, a.revision.strip(), a.branch.strip()).version_text())
    return 0


if __name__ == "__main__":  # pragma: no cover - a build step
    raise SystemExit(main())
