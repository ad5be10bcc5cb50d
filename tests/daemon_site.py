"""The config the tests run the real daemon on, and the directory it runs in.

Every daemon a test starts reads ``captures/`` under its config file's directory as soon
as files appear (``min_age_seconds: 0``) and writes ``out/`` and ``state/`` beside it.
"""

from __future__ import annotations

from pathlib import Path


def daemon_config(sections: str = "", *, workers: int = 1, processing: str = "") -> str:
    """The smallest config a test daemon runs on, with ``workers`` workers.

    ``processing`` adds indented lines to the ``processing`` section; ``sections`` adds
    top-level sections after the others. Both may hold ``str.format`` fields.
    """
    return (
        "capture:\n"
        "  directory: captures\n"
        "  min_age_seconds: 0\n"
        "processing:\n"
        "  interval_seconds: 10\n"
        f"  workers: {workers}\n"
        f"{processing}"
        "output:\n"
        "  directory: out\n"
        "state:\n"
        "  directory: state\n"
        f"{sections}"
    )


def write_site(root: Path, config: str) -> Path:
    """Make ``root`` a place for the daemon: an empty ``captures/`` and ``config``.

    Returns the config file (``root / "config.yaml"``).
    """
    (root / "captures").mkdir(parents=True)
    config_file = root / "config.yaml"
    config_file.write_text(config)
    return config_file
