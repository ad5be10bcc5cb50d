"""AlertPusher against the real Alertmanager binary, with a webhook receiver behind it.

Alertmanager runs on a free 127.0.0.1 port without clustering and with a temporary
storage path; its only receiver is a webhook on 127.0.0.1 served by this test, so
both what Alertmanager stores (GET /api/v2/alerts) and what it notifies
(firing, then resolved) are checked.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from netmon_exporter.alerting import AlertPusher
from netmon_exporter.config import AlertmanagerConfig
from netmon_exporter.detection import Detection

from ..loopback_http import LoopbackServer

pytestmark = pytest.mark.integration


def _binary() -> str | None:
    for name in ("prometheus-alertmanager", "alertmanager"):
        found = shutil.which(name)
        if found:
            return found
    return (
        "/usr/bin/prometheus-alertmanager"
        if Path("/usr/bin/prometheus-alertmanager").exists()
        else None
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Webhook:
    """Collects Alertmanager webhook notifications."""

    def __init__(self) -> None:
        self.notifications: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.server = LoopbackServer(self._record)

    def _record(
        self, path: str, headers: dict[str, str], raw: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        with self.lock:
            self.notifications.append(json.loads(raw))
        return 200, {}, b""

    @property
    def url(self) -> str:
        return f"{self.server.base_url}/hook"

    def alerts(self) -> list[dict[str, Any]]:
        with self.lock:
            return [a for n in self.notifications for a in n.get("alerts", [])]

    def close(self) -> None:
        self.server.close()


@dataclass
class RealAlertmanager:
    url: str
    webhook: Webhook
    process: subprocess.Popen[bytes]

    def alerts(self, **params: str) -> list[dict[str, Any]]:
        resp = requests.get(f"{self.url}/api/v2/alerts", params=params, timeout=5)
        resp.raise_for_status()
        return list(resp.json())


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[RealAlertmanager]:
    binary = _binary()
    if binary is None:
        pytest.skip(
            "Alertmanager binary not found (apt install prometheus-alertmanager, or put "
            "'alertmanager' on PATH)"
        )
    webhook = Webhook()
    config = tmp_path / "alertmanager.yml"
    config.write_text(
        "route:\n"
        "  receiver: hook\n"
        "  group_by: [alertname, source, target]\n"
        "  group_wait: 100ms\n"
        "  group_interval: 1s\n"
        "  repeat_interval: 1h\n"
        "receivers:\n"
        "  - name: hook\n"
        "    webhook_configs:\n"
        f"      - url: {webhook.url}\n"
        "        send_resolved: true\n"
    )
    port = _free_port()
    log_path = tmp_path / "alertmanager.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--cluster.listen-address=",
                "--log.level=debug",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            if process.poll() is not None:
                pytest.fail(
                    f"alertmanager exited with {process.returncode}:\n"
                    f"{log_path.read_text()[-3000:]}"
                )
            try:
                if requests.get(f"{url}/-/ready", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"alertmanager not ready in 20 s:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.1)
        yield RealAlertmanager(url, webhook, process)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        webhook.close()


def _wait_for(predicate: Any, seconds: float, what: str) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    pytest.fail(f"timed out after {seconds:g}s waiting for {what}")


def _scan_notifications(alertmanager: RealAlertmanager, status: str) -> Any:
    """The port scan's notifications with ``status`` the receiver got (waits up to 10 s)."""
    return _wait_for(
        lambda: [
            a
            for a in alertmanager.webhook.alerts()
            if a["labels"]["alertname"] == "NetmonPortScan" and a["status"] == status
        ],
        10,
        f"the {status} notification",
    )


def test_detections_fire_and_resolve_in_real_alertmanager(alertmanager: RealAlertmanager) -> None:
    now = time.time()
    scan = Detection(
        "port_scan",
        "warning",
        "10.0.0.5",
        "10.0.1.1",
        now - 60,
        now,
        {"distinct_ports": 250},
        "10.0.0.5 probed 250 ports on 10.0.1.1",
    )
    flood = Detection(
        "syn_flood",
        "critical",
        "192.0.2.9",
        "10.0.1.2:443",
        now - 60,
        now,
        {"syn_per_second": 912.5},
        "SYN flood against 10.0.1.2:443",
    )
    # Resolve quickly so the test does not wait minutes (the config decoder allows >= 10 s
    # and >= 5 s; a resolution goes out once the firing alert is a resend interval old).
    cfg = AlertmanagerConfig(
        urls=(alertmanager.url,),
        timeout_seconds=5,
        resend_interval_seconds=1,
        resolve_after_seconds=1.5,
        max_alerts_per_push=10,
    )
    pusher = AlertPusher(cfg, external_url="http://netmon.example:9700/")

    pusher.observe([scan, flood])
    assert pusher.due()
    result = pusher.push()
    assert (result.sent, result.failed, result.errors) == (2, 0, [])

    stored = {a["labels"]["alertname"]: a for a in alertmanager.alerts()}
    assert set(stored) == {"NetmonPortScan", "NetmonSynFlood"}
    scan_alert = stored["NetmonPortScan"]
    assert scan_alert["labels"] == {
        "alertname": "NetmonPortScan",
        "category": "security",
        "detector": "port_scan",
        "severity": "warning",
        "source": "10.0.0.5",
        "target": "10.0.1.1",
        "instance": socket.gethostname(),
        "service": "netmon-exporter",
    }
    assert scan_alert["status"]["state"] == "active"
    assert scan_alert["annotations"]["summary"] == "10.0.0.5 probed 250 ports on 10.0.1.1"
    assert "distinct_ports=250" in scan_alert["annotations"]["description"]
    assert json.loads(scan_alert["annotations"]["evidence"]) == {"distinct_ports": 250}
    assert scan_alert["generatorURL"] == "http://netmon.example:9700/"
    assert stored["NetmonSynFlood"]["labels"]["severity"] == "critical"
    assert stored["NetmonSynFlood"]["labels"]["target"] == "10.0.1.2:443"

    # The firing notification reaches the receiver with the annotations.
    fired = _scan_notifications(alertmanager, "firing")
    assert fired[0]["annotations"]["summary"] == scan.summary

    # The flood keeps being seen; the scan does not and is resolved.
    time.sleep(0.8)
    pusher.observe([flood])
    time.sleep(0.9)  # scan unseen for > 1.5 s, flood for < 1.5 s
    assert pusher.due()
    result = pusher.push()
    assert (result.sent, result.resolved, result.failed) == (2, 1, 0)
    assert pusher.active_count() == 1

    # GET /api/v2/alerts leaves out resolved alerts: only the flood remains, still one copy.
    remaining = alertmanager.alerts()
    assert [a["labels"]["alertname"] for a in remaining] == ["NetmonSynFlood"]
    assert remaining[0]["status"]["state"] == "active"

    resolved = _scan_notifications(alertmanager, "resolved")
    assert resolved[0]["labels"]["source"] == "10.0.0.5"
    assert not [
        a
        for a in alertmanager.webhook.alerts()
        if a["labels"]["alertname"] == "NetmonSynFlood" and a["status"] == "resolved"
    ]


def test_second_alertmanager_down_still_delivers(alertmanager: RealAlertmanager) -> None:
    dead = f"http://127.0.0.1:{_free_port()}"
    cfg = AlertmanagerConfig(urls=(dead, alertmanager.url), timeout_seconds=2)
    pusher = AlertPusher(cfg)
    now = time.time()
    pusher.observe(
        [
            Detection(
                "beacon",
                "info",
                "10.0.0.7",
                "203.0.113.5:443",
                now - 60,
                now,
                {"period_seconds": 30.0, "jitter": 0.02},
                "beaconing",
            )
        ]
    )
    result = pusher.push()
    assert (result.sent, result.failed) == (1, 0)
    assert len(result.errors) == 1 and "cannot connect" in result.errors[0]
    assert pusher.failures_by_url == {dead: 1, alertmanager.url: 0}
    (alert,) = alertmanager.alerts(filter='alertname="NetmonBeacon"')
    assert alert["labels"]["target"] == "203.0.113.5:443"
