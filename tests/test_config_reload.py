"""The running daemon refuses hostile config files on reload at once and keeps running.

Before the fix, a "billion laughs" config sent by SIGHUP made the daemon expand the
aliases into its error message until it died of MemoryError, and a config replaced by a
link to /dev/zero was read until memory ran out.
"""

from __future__ import annotations

import json
import signal
import time

import pytest

from .daemon_site import daemon_config
from .integration.daemon_process import DaemonProcess
from .test_config_hostile import BOMB_CONFIG

pytestmark = pytest.mark.integration

CONFIG = daemon_config()  # what the daemon fixture (tests/conftest.py) runs


def test_sighup_with_an_alias_bomb_is_refused_quickly(daemon: DaemonProcess) -> None:
    daemon.config_file.write_text(BOMB_CONFIG)
    start = time.monotonic()
    daemon.send(signal.SIGHUP)
    daemon.wait_for(
        lambda: daemon.metric("netmon_config_last_reload_successful") == 0,
        timeout=10,
        what="the reload to fail",
    )
    assert time.monotonic() - start < 10
    assert daemon.proc is not None and daemon.proc.poll() is None
    assert any("YAML anchors (&name)" in line for line in daemon.lines), daemon.log_text()
    assert daemon.metric("netmon_config_workers") == 1  # the old config is still in force
    # Scrapes are answered, and a fixed file is taken again.
    daemon.config_file.write_text(CONFIG.replace("workers: 1", "workers: 2"))
    code, body = daemon.get("/-/reload", method="POST")
    assert code == 200, body
    assert daemon.metric("netmon_config_workers") == 2


def test_http_reload_of_a_link_to_dev_zero_answers_500_at_once(daemon: DaemonProcess) -> None:
    daemon.config_file.unlink()
    daemon.config_file.symlink_to("/dev/zero")
    start = time.monotonic()
    code, body = daemon.get("/-/reload", method="POST")
    assert time.monotonic() - start < 10
    assert code == 500
    assert "is a character device, not a regular file" in json.loads(body)["message"]
    assert daemon.proc is not None and daemon.proc.poll() is None
    assert daemon.get("/metrics")[0] == 200
