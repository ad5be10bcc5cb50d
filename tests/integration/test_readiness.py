"""Readiness tells whether the daemon can do its job (issue 15: README's `/-/ready` row).

A second instance pointed at a state directory another instance holds is alive but
cannot record any work: `/-/healthy` 200, `/-/ready` 503, `/health` unhealthy naming
the ledger.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest

from .daemon_process import DaemonProcess

pytestmark = [pytest.mark.integration]

CONFIG = """\
capture:
  directory: captures
  min_age_seconds: 0
output:
  directory: out
state:
  directory: state
"""


def test_second_instance_on_a_held_state_directory_is_not_ready(tmp_path: Path) -> None:
    (tmp_path / "captures").mkdir()
    (tmp_path / "config.yaml").write_text(CONFIG)
    first = DaemonProcess(tmp_path / "config.yaml").start()
    second = DaemonProcess(tmp_path / "config.yaml")
    try:
        assert first.get("/-/ready")[0] == 200
        second.proc = None
        with contextlib.suppress(AssertionError):  # start() waits for readiness: none comes
            second.start(timeout=20)
        assert second.address, "the second instance did not even listen:\n" + second.log_text()
        assert second.get("/-/healthy")[0] == 200
        assert second.get("/-/ready")[0] == 503
        status, body = second.get("/health")
        assert status == 503
        checks = json.loads(body)["checks"]
        assert "another netmon-exporter instance" in checks["state_storage"]["reason"]
        assert first.get("/-/ready")[0] == 200
    finally:
        second.stop()
        first.stop()
