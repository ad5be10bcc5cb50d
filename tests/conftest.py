"""Fixtures shared by the unit and integration tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .daemon_site import daemon_config, write_site
from .integration.daemon_process import DaemonProcess


@pytest.fixture
def daemon_site(tmp_path: Path) -> Path:
    """``tmp_path`` with an empty ``captures/`` and ``config.yaml`` of :func:`daemon_config`."""
    write_site(tmp_path, daemon_config())
    return tmp_path


@pytest.fixture
def daemon(daemon_site: Path) -> Iterator[DaemonProcess]:
    """The real daemon running on :func:`daemon_site`'s config (killed at teardown)."""
    d = DaemonProcess(daemon_site / "config.yaml").start()
    yield d
    d.kill()
