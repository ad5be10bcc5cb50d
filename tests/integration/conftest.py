"""Fixtures for integration tests: real Prometheus, real Alertmanager, a webhook, the daemon.

Everything listens on 127.0.0.1, on ports picked free at run time; every process is
started by the fixture and stopped by it. Reusable pieces:

- :func:`free_port` / the ``free_port`` fixture;
- :class:`Webhook`: collects Alertmanager notifications, by path;
- :class:`PrometheusServer` / the ``start_prometheus`` fixture: the Debian ``prometheus``
  binary with a config generated from ``prometheus/prometheus.yml``
  (:func:`prometheus_test_config`), 1 s scrape and evaluation intervals, and the shipped
  alert rules time-compressed by :func:`compress_rules`;
- :class:`AlertmanagerServer` / the ``start_alertmanager`` fixture: the Debian
  ``prometheus-alertmanager`` binary with a config generated from
  ``prometheus/alertmanager.yml`` (:func:`alertmanager_test_config`) whose receivers are a
  local :class:`Webhook`;
- the ``start_daemon`` fixture: the real daemon (:class:`DaemonProcess`) on port 0, the
  port parsed from its ``msg="Listening on"`` log line.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from ..loopback_http import LoopbackServer
from .daemon_process import DaemonProcess

ROOT = Path(__file__).resolve().parents[2]
SHIPPED_PROMETHEUS = ROOT / "prometheus" / "prometheus.yml"
SHIPPED_ALERTMANAGER = ROOT / "prometheus" / "alertmanager.yml"
SHIPPED_RULES = ROOT / "alerts" / "netmon.rules.yml"
_DURATION = re.compile(r"(\d+)(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def free_port() -> int:
    """Return a TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def binary(*names: str) -> str | None:
    for name in names:
        found = shutil.which(name) or (
            f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None
        )
        if found:
            return found
    return None


PROMETHEUS_BIN = binary("prometheus")
ALERTMANAGER_BIN = binary("prometheus-alertmanager", "alertmanager")
needs_prometheus = pytest.mark.skipif(
    PROMETHEUS_BIN is None, reason="prometheus not installed (make system-deps)"
)
needs_alertmanager = pytest.mark.skipif(
    ALERTMANAGER_BIN is None, reason="alertmanager not installed (make system-deps)"
)


def wait_until(
    predicate: Callable[[], Any],
    timeout: float,
    what: str,
    interval: float = 0.2,
    log: Callable[[], str] | None = None,
) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail with ``what`` otherwise."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except (OSError, requests.RequestException, urllib.error.URLError, KeyError) as exc:
            last_error = exc
        time.sleep(interval)
    detail = f" (last error: {last_error})" if last_error else ""
    raise AssertionError(
        f"timed out after {timeout:.0f}s waiting for {what}{detail}"
        + (f"\n{log()[-4000:]}" if log else "")
    )


# --------------------------------------------------------------------------- processes


@dataclass
class _Process:
    name: str
    args: list[str]
    workdir: Path
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = self.workdir / f"{self.name}.log"

    def start(self) -> None:
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                self.args,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.workdir,
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class PrometheusServer:
    """A real Prometheus on 127.0.0.1 with a generated config."""

    def __init__(self, config: dict[str, Any], workdir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = workdir / "prometheus.yml"
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        assert PROMETHEUS_BIN is not None
        self._process = _Process(
            "prometheus",
            [
                PROMETHEUS_BIN,
                f"--config.file={self.config_path}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--web.enable-lifecycle",
                "--log.level=warn",
            ],
            workdir,
        )

    def start(self, timeout: float = 60) -> PrometheusServer:
        self._process.start()
        wait_until(lambda: self._ready(), timeout, "Prometheus to be ready", log=self.log)
        return self

    def _ready(self) -> bool:
        if not self._process.alive():
            raise AssertionError("Prometheus exited:\n" + self.log())
        return requests.get(f"{self.url}/-/ready", timeout=2).status_code == 200

    def log(self) -> str:
        return self._process.log()

    def stop(self) -> None:
        self._process.stop()

    def api(self, path: str, **params: Any) -> dict[str, Any]:
        """GET /api/v1/<path>; return the decoded body (error bodies included)."""
        resp = requests.get(f"{self.url}/api/v1/{path}", params=params, timeout=30)
        body: dict[str, Any] = resp.json()
        return body

    def query(self, expr: str, **params: Any) -> dict[str, Any]:
        return self.api("query", query=expr, **params)

    def query_range(self, expr: str, start: float, end: float, step: str = "1s") -> dict[str, Any]:
        return self.api("query_range", query=expr, start=start, end=end, step=step)

    def value(self, expr: str) -> float | None:
        """The single value of an instant query (None when empty)."""
        body = self.query(expr)
        assert body["status"] == "success", body
        result = body["data"]["result"]
        return float(result[0]["value"][1]) if result else None

    def alerts(self, name: str, state: str | None = None) -> list[dict[str, Any]]:
        body = self.api("alerts")
        return [
            a
            for a in body["data"]["alerts"]
            if a["labels"]["alertname"] == name and (state is None or a["state"] == state)
        ]

    def rules(self) -> list[dict[str, Any]]:
        body = self.api("rules")
        return [r for g in body["data"]["groups"] for r in g["rules"]]

    def metric_names(self) -> set[str]:
        return set(self.api("label/__name__/values")["data"])


class AlertmanagerServer:
    """A real Alertmanager on 127.0.0.1, clustering off, with a generated config."""

    def __init__(self, config: dict[str, Any], workdir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = workdir / "alertmanager.yml"
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        assert ALERTMANAGER_BIN is not None
        self._process = _Process(
            "alertmanager",
            [
                ALERTMANAGER_BIN,
                f"--config.file={self.config_path}",
                f"--storage.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--cluster.listen-address=",
                "--log.level=warn",
            ],
            workdir,
        )

    def start(self, timeout: float = 60) -> AlertmanagerServer:
        self._process.start()
        wait_until(lambda: self._ready(), timeout, "Alertmanager to be ready", log=self.log)
        return self

    def _ready(self) -> bool:
        if not self._process.alive():
            raise AssertionError("Alertmanager exited:\n" + self.log())
        return requests.get(f"{self.url}/-/ready", timeout=2).status_code == 200

    def log(self) -> str:
        return self._process.log()

    def stop(self) -> None:
        self._process.stop()

    def alerts(self, name: str | None = None) -> list[dict[str, Any]]:
        """Alerts Alertmanager holds (GET /api/v2/alerts), optionally of one name."""
        resp = requests.get(f"{self.url}/api/v2/alerts", timeout=10)
        resp.raise_for_status()
        return [a for a in resp.json() if name is None or a["labels"].get("alertname") == name]


class Webhook:
    """Collects Alertmanager webhook notifications; ``received[path]`` lists the payloads."""

    def __init__(self) -> None:
        self.received: dict[str, list[dict[str, Any]]] = {}
        self._lock = threading.Lock()
        self.server = LoopbackServer(self._record)

    def _record(
        self, path: str, headers: dict[str, str], raw: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        with self._lock:
            self.received.setdefault(path, []).append(json.loads(raw))
        return 200, {}, b""

    @property
    def url(self) -> str:
        return self.server.base_url

    def alerts(self, path: str, name: str, status: str | None = None) -> list[dict[str, Any]]:
        """Alerts named ``name`` notified on ``path`` (optionally only firing/resolved)."""
        with self._lock:
            payloads = list(self.received.get(path, []))
        return [
            a
            for p in payloads
            for a in p["alerts"]
            if a["labels"].get("alertname") == name and (status is None or a["status"] == status)
        ]

    def close(self) -> None:
        self.server.close()


# --------------------------------------------------------------------------- configs


def _scale_duration(text: str, factor: float) -> str:
    """'5m' / 60 -> '5s'; never below 1s."""
    seconds = sum(int(n) * _UNIT_SECONDS[u] for n, u in _DURATION.findall(text))
    return f"{max(1, round(seconds / factor))}s"


def compress_rules(source: Path, dest: Path, factor: float = 60) -> dict[str, Any]:
    """Write a copy of a rule file with every duration divided by ``factor``.

    ``for:`` durations, range selectors (``[5m]``) and ``offset`` are scaled (minute ->
    second for the default 60), so that a test scraping and evaluating every second sees
    each alert go through the same pending/firing/resolved life as in production, only
    60 times faster. Thresholds on values (``> 1800`` seconds) are left alone: the alerts
    that depend on them are covered by ``promtool test rules`` instead.
    """
    doc = yaml.safe_load(source.read_text())
    for group in doc["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = _scale_duration(rule["for"], factor)
            rule["expr"] = re.sub(
                r"\[(\d+(?:ms|s|m|h|d))+\]",
                lambda m: f"[{_scale_duration(m.group(0)[1:-1], factor)}]",
                rule["expr"],
            )
            rule["expr"] = re.sub(
                r"offset (\d+(?:ms|s|m|h|d))+",
                lambda m: f"offset {_scale_duration(m.group(0)[7:], factor)}",
                rule["expr"],
            )
    dest.write_text(yaml.safe_dump(doc, sort_keys=False))
    return doc


def prometheus_test_config(
    targets: list[str], alertmanager: str | None, rule_files: list[Path], interval: str = "1s"
) -> dict[str, Any]:
    """``prometheus/prometheus.yml`` as shipped, pointed at this test's processes.

    Kept: the ``netmon`` job (name, labels, settings) and the external labels. Changed: the
    scrape and evaluation intervals, the targets, the Alertmanager and the rule files.
    Jobs for services the test does not run (Prometheus, Alertmanager self-scrapes) are
    dropped.
    """
    shipped = yaml.safe_load(SHIPPED_PROMETHEUS.read_text())
    cfg: dict[str, Any] = {"global": dict(shipped["global"])}
    cfg["global"].update(
        scrape_interval=interval, evaluation_interval=interval, scrape_timeout=interval
    )
    cfg["rule_files"] = [str(p) for p in rule_files]
    if alertmanager:
        cfg["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]}
    job = next(j for j in shipped["scrape_configs"] if j["job_name"] == "netmon")
    job = dict(job)
    labels = job["static_configs"][0].get("labels", {})
    job["static_configs"] = [{"targets": targets, "labels": labels}]
    cfg["scrape_configs"] = [job]
    return cfg


def alertmanager_test_config(webhook_url: str, wait: str = "1s") -> dict[str, Any]:
    """``prometheus/alertmanager.yml`` as shipped, receivers redirected to ``webhook_url``.

    Routing, matchers, inhibition and receivers are kept; each webhook keeps its path
    (``/page``, ``/ticket``) on the local server, and the grouping waits are shortened.
    """
    cfg: dict[str, Any] = yaml.safe_load(SHIPPED_ALERTMANAGER.read_text())
    for receiver in cfg["receivers"]:
        for hook in receiver.get("webhook_configs", []):
            hook["url"] = webhook_url + requests.utils.urlparse(hook["url"]).path

    def shorten(route: dict[str, Any]) -> None:
        for key in ("group_wait", "group_interval"):
            if key in route or route is cfg["route"]:
                route[key] = wait
        for child in route.get("routes", []):
            shorten(child)

    shorten(cfg["route"])
    return cfg


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(name="free_port")
def free_port_fixture() -> int:
    return free_port()


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook()
    yield hook
    hook.close()


@pytest.fixture
def start_alertmanager(tmp_path: Path) -> Iterator[Callable[..., AlertmanagerServer]]:
    """Factory: ``start_alertmanager(config)`` starts one (stopped at teardown)."""
    started: list[AlertmanagerServer] = []

    def start(config: dict[str, Any]) -> AlertmanagerServer:
        if ALERTMANAGER_BIN is None:
            pytest.skip("alertmanager not installed (make system-deps)")
        am = AlertmanagerServer(config, tmp_path / f"alertmanager{len(started)}")
        started.append(am)
        return am.start()

    yield start
    for am in started:
        am.stop()


@pytest.fixture
def start_prometheus(tmp_path: Path) -> Iterator[Callable[..., PrometheusServer]]:
    """Factory: ``start_prometheus(config)`` starts one (stopped at teardown)."""
    started: list[PrometheusServer] = []

    def start(config: dict[str, Any]) -> PrometheusServer:
        if PROMETHEUS_BIN is None:
            pytest.skip("prometheus not installed (make system-deps)")
        prom = PrometheusServer(config, tmp_path / f"prometheus{len(started)}")
        started.append(prom)
        return prom.start()

    yield start
    for prom in started:
        prom.stop()


@pytest.fixture
def start_daemon() -> Iterator[Callable[..., DaemonProcess]]:
    """Factory: ``start_daemon(config_file, *flags)`` runs the real daemon on port 0."""
    started: list[DaemonProcess] = []

    def start(config_file: Path, *flags: str) -> DaemonProcess:
        daemon = DaemonProcess(config_file, *flags)
        started.append(daemon)
        return daemon.start()

    yield start
    for daemon in started:
        try:
            daemon.stop(timeout=30)
        except AssertionError:
            daemon.kill()
