"""AlertPusher against real HTTP servers on 127.0.0.1 playing Alertmanager."""

from __future__ import annotations

import json
import logging
import threading
import time
import unicodedata
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest

from netmon_exporter.alerting import (
    MAX_LABEL_CHARS,
    AlertPusher,
    alertname,
    build_labels,
    rfc3339,
)
from netmon_exporter.config import AlertingConfig, AlertmanagerConfig
from netmon_exporter.detection import Detection

from .loopback_http import LoopbackServer

T0 = 1_800_000_000.0


class FakeAlertmanager:
    """Records every POST /api/v2/alerts body; answers with ``status`` after ``delay``."""

    def __init__(self) -> None:
        self.posts: list[list[dict[str, Any]]] = []
        self.paths: list[str] = []
        self.status = 200
        self.delay = 0.0
        self.error_body = b'{"message":"bad things"}'
        self.release = threading.Event()
        self.server = LoopbackServer(self._answer)

    def _answer(
        self, path: str, headers: dict[str, str], raw: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        self.paths.append(path)
        self.posts.append(json.loads(raw))
        if self.delay:
            self.release.wait(self.delay)
        return self.status, {}, b"" if self.status == 200 else self.error_body

    @property
    def url(self) -> str:
        return self.server.base_url

    @property
    def alerts(self) -> list[dict[str, Any]]:
        return [a for post in self.posts for a in post]

    def close(self) -> None:
        self.release.set()
        self.server.close()


@pytest.fixture
def am() -> Iterator[FakeAlertmanager]:
    fake = FakeAlertmanager()
    yield fake
    fake.close()


@pytest.fixture
def am2() -> Iterator[FakeAlertmanager]:
    fake = FakeAlertmanager()
    yield fake
    fake.close()


def closed_port_url() -> str:
    fake = FakeAlertmanager()
    url = fake.url
    fake.close()
    return url


def cfg(*urls: str, **kw: Any) -> AlertmanagerConfig:
    settings: dict[str, Any] = {
        "urls": tuple(urls),
        "timeout_seconds": 2.0,
        "resend_interval_seconds": 60.0,
        "resolve_after_seconds": 300.0,
        "max_alerts_per_push": 200,
    }
    settings.update(kw)
    return AlertmanagerConfig(**settings)


def alerting(**kw: Any) -> AlertingConfig:
    return AlertingConfig(**{"sensor": "sensor-1", **kw})


def det(
    source: str = "10.0.0.5",
    detector: str = "port_scan",
    severity: str = "warning",
    target: str = "10.0.1.1",
    **evidence: Any,
) -> Detection:
    return Detection(
        detector,
        severity,
        source,
        target,
        T0 - 60,
        T0,
        evidence or {"distinct_ports": 250, "ratio": 0.98765},
        f"{source} probed 250 ports on {target}",
    )


def ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


# ------------------------------------------------------------------ payload


def test_first_push_sends_labels_annotations_and_times(am: FakeAlertmanager) -> None:
    pusher = AlertPusher(cfg(am.url), alerting(), external_url="http://netmon.example:9700/")
    assert not pusher.due(T0)
    pusher.observe([det()], now=T0)
    assert pusher.due(T0)
    result = pusher.push(T0 + 1)
    assert (result.sent, result.failed, result.errors, result.retries) == (1, 0, [], 0)
    assert result.ok and result.seconds > 0
    assert am.paths == ["/api/v2/alerts"]
    (alert,) = am.alerts
    assert alert["labels"] == {
        "alertname": "NetmonPortScan",
        "category": "security",
        "detector": "port_scan",
        "severity": "warning",
        "source": "10.0.0.5",
        "target": "10.0.1.1",
        "instance": "sensor-1",
        "service": "netmon-exporter",
    }
    ann = alert["annotations"]
    assert ann["summary"] == "10.0.0.5 probed 250 ports on 10.0.1.1"
    assert "distinct_ports=250" in ann["description"] and "ratio=0.988" in ann["description"]
    assert json.loads(ann["evidence"]) == {"distinct_ports": 250, "ratio": 0.98765}
    assert ts(ann["window_start"]) == T0 - 60 and ts(ann["window_end"]) == T0
    assert ts(ann["first_seen"]) == T0 - 60 and ts(ann["last_seen"]) == T0
    assert ann["windows"] == "1"
    assert json.loads(ann["peak_evidence"]) == {"distinct_ports": 250, "ratio": 0.98765}
    assert ts(alert["startsAt"]) == T0
    assert ts(alert["endsAt"]) == T0 + 1 + 300  # now + resolve window
    assert alert["generatorURL"] == "http://netmon.example:9700/"
    assert all(isinstance(v, str) for v in ann.values())
    (outcome,) = result.outcomes
    assert (outcome.url, outcome.accepted, outcome.failed, outcome.status) == (am.url, 1, 0, 200)


def test_active_alerts_resent_every_interval_with_same_start(am: FakeAlertmanager) -> None:
    pusher = AlertPusher(cfg(am.url))
    pusher.observe([det()], now=T0)
    pusher.push(T0)
    assert not pusher.due(T0 + 30)
    later = Detection("port_scan", "warning", "10.0.0.5", "10.0.1.1", T0, T0 + 60, {}, "again")
    pusher.observe([later], now=T0 + 30)  # same key again: nothing new to send
    assert not pusher.due(T0 + 59)
    assert pusher.due(T0 + 60)
    pusher.push(T0 + 60)
    first, second = am.alerts
    assert first["labels"] == second["labels"]
    assert ts(second["startsAt"]) == T0
    assert ts(second["endsAt"]) == T0 + 60 + 300
    assert ts(second["annotations"]["first_seen"]) == T0 - 60
    assert ts(second["annotations"]["last_seen"]) == T0 + 60
    assert second["annotations"]["windows"] == "2"
    assert second["annotations"]["summary"] == "again"
    # the peak is the stronger first finding, not the latest
    assert json.loads(second["annotations"]["peak_evidence"])["distinct_ports"] == 250


def test_endsat_outlives_the_resend_interval(am: FakeAlertmanager) -> None:
    pusher = AlertPusher(cfg(am.url, resend_interval_seconds=600, resolve_after_seconds=60))
    pusher.observe([det()], now=T0)
    pusher.push(T0)
    assert ts(am.alerts[0]["endsAt"]) == T0 + 1200


def test_unseen_detection_resolved_once_then_dropped(am: FakeAlertmanager) -> None:
    pusher = AlertPusher(cfg(am.url))
    pusher.observe([det("10.0.0.5"), det("10.0.0.6")], now=T0)
    pusher.push(T0)
    pusher.observe([det("10.0.0.6")], now=T0 + 240)
    assert pusher.due(T0 + 300)  # 10.0.0.5 unseen for 300 s
    assert pusher.active_by_detector() == {"port_scan": 1}
    result = pusher.push(T0 + 300)
    assert (result.sent, result.resolved) == (2, 1)
    by_source = {a["labels"]["source"]: a for a in am.posts[-1]}
    assert ts(by_source["10.0.0.5"]["endsAt"]) == T0 + 300  # resolved now
    assert ts(by_source["10.0.0.6"]["endsAt"]) == T0 + 300 + 300  # still active
    assert pusher.active_count() == 1
    assert pusher.active_by_detector() == {"port_scan": 1}
    pusher.push(T0 + 360)
    assert [a["labels"]["source"] for a in am.posts[-1]] == ["10.0.0.6"]
    # seen again later: a new alert with a new start
    pusher.observe([det("10.0.0.5")], now=T0 + 400)
    pusher.push(T0 + 400)
    again = next(a for a in am.posts[-1] if a["labels"]["source"] == "10.0.0.5")
    assert ts(again["startsAt"]) == T0 + 400


def test_seen_again_before_the_resolve_window_stays_active(am: FakeAlertmanager) -> None:
    pusher = AlertPusher(cfg(am.url))
    pusher.observe([det()], now=T0)
    pusher.push(T0)
    for minute in range(1, 10):
        pusher.observe([det()], now=T0 + 60 * minute)
        if pusher.due(T0 + 60 * minute):
            pusher.push(T0 + 60 * minute)
    assert all(ts(a["endsAt"]) > T0 + 60 * 9 for a in am.posts[-1])
    assert all(ts(a["startsAt"]) == T0 for a in am.alerts)
    assert pusher.active_count() == 1


def test_severity_escalation_ends_the_old_label_set(am: FakeAlertmanager) -> None:
    pusher = AlertPusher(cfg(am.url))
    pusher.observe([det(severity="warning")], now=T0)
    pusher.push(T0)
    pusher.observe([det(severity="critical")], now=T0 + 10)
    assert pusher.due(T0 + 10)
    pusher.push(T0 + 10)
    last = {a["labels"]["severity"]: a for a in am.posts[-1]}
    assert ts(last["warning"]["endsAt"]) == T0 + 10
    assert ts(last["critical"]["endsAt"]) > T0 + 10
    # a lower severity afterwards does not flap the label set
    pusher.observe([det(severity="warning")], now=T0 + 20)
    assert not pusher.due(T0 + 20)


def test_no_urls_never_due_and_push_sends_nothing() -> None:
    pusher = AlertPusher(cfg())
    pusher.observe([det()], now=T0)
    assert not pusher.due(T0)
    assert pusher.push(T0).sent == 0
    # still tracks what is active (for the daemon's gauge), and forgets what is over
    pusher.observe([det("10.0.0.6")], now=T0 + 200)
    assert pusher.active_by_detector() == {"port_scan": 2}
    pusher.observe([], now=T0 + 300)
    assert pusher.active_count() == 1
    pusher.observe([], now=T0 + 500)
    assert pusher.active_count() == 0


# ------------------------------------------------------------------ bounds


def test_labels_capped_and_kept_distinct() -> None:
    long_a, long_b = "a" * 500 + "1", "a" * 500 + "2"
    la, lb = build_labels(det(long_a), "warning"), build_labels(det(long_b), "warning")
    assert len(la["source"]) <= MAX_LABEL_CHARS and la["source"] != lb["source"]
    weird = build_labels(det("evil\nsource\x00", target=""), "warning")
    assert weird["source"] == "evil\\nsource\\u0000" and "target" not in weird
    assert alertname("dns_tunnel") == "NetmonDnsTunnel"
    assert alertname("beacon") == "NetmonBeacon"
    assert alertname("Bad Name!") == "NetmonDetection"
    assert alertname("x" * 200) == "NetmonDetection"


def test_batches_bounded_by_max_alerts_per_push(am: FakeAlertmanager) -> None:
    pusher = AlertPusher(cfg(am.url, max_alerts_per_push=3))
    pusher.observe([det(f"10.0.0.{i}") for i in range(7)], now=T0)
    result = pusher.push(T0)
    assert [len(p) for p in am.posts] == [3, 3, 1]
    assert result.sent == 7
    assert len({a["labels"]["source"] for a in am.alerts}) == 7


def test_active_set_bounded_oldest_evicted_and_counted(am: FakeAlertmanager) -> None:
    pusher = AlertPusher(cfg(am.url), alerting(max_incidents=5, resolve_after_windows=10))
    assert pusher.observe([det(f"10.0.0.{i}") for i in range(5)], now=T0).evicted == 0
    pusher.observe([det("10.0.0.0")], now=T0 + 1)  # refreshed: now the newest
    assert pusher.observe([det("10.0.9.1"), det("10.0.9.2")], now=T0 + 2).evicted == 2
    result = pusher.push(T0 + 3)
    assert result.evicted == 2 and pusher.evicted_total == 2
    sources = {a["labels"]["source"] for a in am.alerts}
    assert sources == {"10.0.0.0", "10.0.0.3", "10.0.0.4", "10.0.9.1", "10.0.9.2"}
    assert pusher.push(T0 + 100).evicted == 0


# ------------------------------------------------------------------ failures


def test_ha_pair_one_down_counts_as_sent_and_failure_per_url(
    am: FakeAlertmanager, am2: FakeAlertmanager
) -> None:
    am2.status = 500
    dead = closed_port_url()
    pusher = AlertPusher(cfg(am.url, am2.url, dead))
    pusher.observe([det("10.0.0.5"), det("10.0.0.6")], now=T0)
    result = pusher.push(T0)
    assert (result.sent, result.failed) == (2, 0)
    assert len(am.alerts) == 2 and len(am2.alerts) == 2
    outcomes = {o.url: o for o in result.outcomes}
    assert outcomes[am.url].ok and outcomes[am.url].accepted == 2
    assert outcomes[am2.url].status == 500 and outcomes[am2.url].failed == 2
    assert "HTTP 500" in (outcomes[am2.url].error or "")
    assert outcomes[dead].status is None and "cannot connect" in (outcomes[dead].error or "")
    assert len(result.errors) == 2
    assert pusher.failures_by_url == {am.url: 0, am2.url: 1, dead: 1}
    assert not pusher.due(T0 + 1)  # delivered: next is the resend


def test_all_down_keeps_alerts_and_retries_with_backoff(am: FakeAlertmanager) -> None:
    am.status = 503
    pusher = AlertPusher(cfg(am.url))
    pusher.observe([det()], now=T0)
    first = pusher.push(T0)
    assert (first.sent, first.failed, first.retries) == (0, 1, 0)
    assert not first.ok and "HTTP 503" in first.errors[0]
    assert not pusher.due(T0 + 4)  # backoff 5 s
    assert pusher.due(T0 + 5)
    second = pusher.push(T0 + 5)
    assert second.retries == 1 and second.failed == 1
    assert not pusher.due(T0 + 14) and pusher.due(T0 + 15)  # then 10 s
    # The scan ends while Alertmanager is down. Once it is back, the incident is sent
    # firing first (nobody was told of it), and resolved one resend interval later.
    am.status = 200
    result = pusher.push(T0 + 400)
    assert (result.sent, result.resolved, result.retries) == (1, 0, 1)
    assert ts(am.posts[-1][0]["endsAt"]) > T0 + 400
    assert not pusher.due(T0 + 459)
    assert pusher.due(T0 + 460)
    result = pusher.push(T0 + 460)
    assert (result.sent, result.resolved) == (1, 1)
    assert ts(am.posts[-1][0]["endsAt"]) == T0 + 460
    assert pusher.active_count() == 0
    assert not pusher.due(T0 + 1000)


def test_unreachable_and_hanging_endpoints_never_raise(am: FakeAlertmanager) -> None:
    am.delay = 30
    pusher = AlertPusher(cfg(am.url, closed_port_url(), "http://[::1", timeout_seconds=0.3))
    pusher.observe([det()], now=T0)
    started = time.monotonic()
    result = pusher.push(T0)
    assert time.monotonic() - started < 3  # URLs are pushed concurrently
    assert result.failed == 1 and len(result.errors) == 3
    assert any("no answer within 0.3s" in e for e in result.errors)


def test_4xx_reports_alertmanager_message(am: FakeAlertmanager) -> None:
    am.status = 400
    pusher = AlertPusher(cfg(am.url))
    pusher.observe([det()], now=T0)
    result = pusher.push(T0)
    assert 'HTTP 400: {"message":"bad things"}' in result.errors[0]


def test_credentials_in_url_never_logged(
    am: FakeAlertmanager, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    port = am.server.port
    am.status = 500
    pusher = AlertPusher(cfg(f"http://admin:hunter2@127.0.0.1:{port}"))
    pusher.observe([det()], now=T0)
    result = pusher.push(T0)
    assert result.failed == 1
    text = caplog.text + repr(result) + repr(pusher) + repr(pusher.failures_by_url)
    assert "hunter2" not in text and f"127.0.0.1:{port}/api/v2/alerts" in result.errors[0]


# ------------------------------------------------------------------ concurrency


def test_observe_and_push_from_two_threads(am: FakeAlertmanager) -> None:
    pusher = AlertPusher(cfg(am.url, max_alerts_per_push=50), alerting(max_incidents=300))
    stop = threading.Event()
    errors: list[BaseException] = []
    clock = {"now": T0}

    def main_loop() -> None:
        try:
            for i in range(400):
                clock["now"] += 1
                pusher.observe([det(f"10.1.{i % 7}.{j}") for j in range(i % 40)], now=clock["now"])
        except BaseException as exc:  # noqa: BLE001 - surfaced by the assertion below
            errors.append(exc)
        finally:
            stop.set()

    def push_loop() -> None:
        try:
            while not stop.is_set():
                if pusher.due(clock["now"]):
                    pusher.push(clock["now"])
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=main_loop), threading.Thread(target=push_loop)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    assert pusher.active_count() <= 300
    pusher.push(clock["now"] + 10_000)  # everything resolves; the never sent fire first
    final = pusher.push(clock["now"] + 20_000)
    assert final.failed == 0 and pusher.active_count() == 0
    assert all(ts(a["endsAt"]) == clock["now"] + 20_000 for a in am.posts[-1])


def test_rfc3339_format() -> None:
    assert rfc3339(0.0) == "1970-01-01T00:00:00.000Z"
    assert rfc3339(T0 + 0.25) == "2027-01-15T08:00:00.250Z"
    assert rfc3339(float("nan")) == "1970-01-01T00:00:00.000Z"


class HookedSession:
    """A requests.Session stand-in that runs ``hook`` just before each real POST."""

    def __init__(self, hook: Any) -> None:
        import requests

        self._session = requests.Session()
        self.hook = hook

    def post(self, *args: Any, **kwargs: Any) -> Any:
        self.hook()
        return self._session.post(*args, **kwargs)


def test_detection_seen_again_while_its_resolution_is_in_flight_stays(am: FakeAlertmanager) -> None:
    pusher: AlertPusher

    def observe_during_post() -> None:
        pusher.observe([det()], now=T0 + 300)

    session = HookedSession(lambda: None)
    pusher = AlertPusher(cfg(am.url), session=session)  # type: ignore[arg-type]
    pusher.observe([det()], now=T0)
    pusher.push(T0)
    session.hook = observe_during_post
    result = pusher.push(T0 + 300)  # sends the resolution...
    assert result.resolved == 1 and ts(am.posts[-1][0]["endsAt"]) == T0 + 300
    assert pusher.active_count() == 1  # ...but it was seen again meanwhile
    session.hook = lambda: None
    assert pusher.due(T0 + 301)  # and the reactivation is sent
    pusher.push(T0 + 301)
    assert ts(am.posts[-1][0]["endsAt"]) > T0 + 301


def test_alertmanagers_pushed_concurrently(am: FakeAlertmanager, am2: FakeAlertmanager) -> None:
    am.delay = am2.delay = 30
    pusher = AlertPusher(cfg(am.url, am2.url, timeout_seconds=1.0))
    pusher.observe([det()], now=T0)
    started = time.monotonic()
    result = pusher.push(T0)
    assert result.failed == 1
    assert time.monotonic() - started < 1.8  # one timeout, not two in a row


# ------------------------------------------------------------------ hostile text


def test_hostile_dns_name_escaped_in_labels_and_annotations(am: FakeAlertmanager) -> None:
    name = "x\x1b[2J\u202etxt.evil\u2028line\r\n.example"
    pusher = AlertPusher(cfg(am.url))
    pusher.observe([det(source="10.0.0.9", detector="dns_tunnel", target=name)], now=T0)
    assert pusher.push(T0).sent == 1
    alert = am.alerts[0]
    values = [*alert["labels"].values(), *alert["annotations"].values()]
    assert not [c for v in values for c in v if unicodedata.category(c)[0] in "CZ" and c != " "]
    assert alert["labels"]["target"] == "x\\u001b[2J\\u202etxt.evil\\u2028line\\r\\n.example"
    assert alert["labels"]["target"] in alert["annotations"]["summary"]


def test_error_body_echoing_credentials_is_redacted(
    am: FakeAlertmanager, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    am.status = 401
    am.error_body = (
        b"unauthorized: Authorization: Basic YWRtaW46aHVudGVyMg== from "
        b"http://admin:hunter2@proxy.example/\r\nInjected: 1"
    )
    pusher = AlertPusher(cfg(am.url))
    pusher.observe([det()], now=T0)
    result = pusher.push(T0)
    text = result.errors[0] + caplog.text
    assert "YWRtaW46aHVudGVyMg" not in text and "hunter2" not in text
    assert "[REDACTED]" in result.errors[0] and "\n" not in result.errors[0]


# ------------------------------------------------------------------ incidents and identity


def test_incident_resolves_after_quiet_windows_not_per_window(am: FakeAlertmanager) -> None:
    pusher = AlertPusher(cfg(am.url), alerting(resolve_after_windows=2))
    for minute in range(4):  # four windows of the same scan: one alert, re-sent
        pusher.observe([det()], now=T0 + 60 * minute)
        if pusher.due(T0 + 60 * minute):
            pusher.push(T0 + 60 * minute)
    assert {json.dumps(a["labels"], sort_keys=True) for a in am.alerts} == {
        json.dumps(am.alerts[0]["labels"], sort_keys=True)
    }
    pusher.observe([], now=T0 + 240)
    assert pusher.push(T0 + 240).resolved == 0  # one quiet window: still active
    pusher.observe([], now=T0 + 300)
    assert pusher.due(T0 + 300)
    result = pusher.push(T0 + 300)
    assert (result.sent, result.resolved) == (1, 1)
    assert ts(am.posts[-1][0]["endsAt"]) == T0 + 300
    assert am.posts[-1][0]["annotations"]["windows"] == "4"
    assert pusher.active_count() == 0


def test_generator_url_template_filled_and_encoded(am: FakeAlertmanager) -> None:
    template = (
        "https://grafana.example/d/netmon?var-detector={detector}&var-source={source}"
        "&from={from_ms}&to={to_ms}"
    )
    pusher = AlertPusher(
        cfg(am.url), alerting(generator_url=template), external_url="http://ignored:9864"
    )
    pusher.observe([det("2001:db8::5")], now=T0)
    pusher.push(T0)
    assert am.alerts[0]["generatorURL"] == (
        "https://grafana.example/d/netmon?var-detector=port_scan&var-source=2001%3Adb8%3A%3A5"
        f"&from={int((T0 - 60) * 1000)}&to={int(T0 * 1000)}"
    )


def test_summary_finding_is_one_alert_naming_no_address(am: FakeAlertmanager) -> None:
    from netmon_exporter.incidents import cap_findings

    spoofed = [det(f"198.51.100.{i}") for i in range(400)]
    findings, folded = cap_findings(spoofed, 10)
    pusher = AlertPusher(cfg(am.url), alerting())
    pusher.observe(findings, now=T0)
    assert pusher.push(T0).sent == 11 and folded == 390
    others = [a for a in am.alerts if a["labels"]["source"] == "others"]
    assert len(others) == 1 and others[0]["labels"]["target"] == "others"
    assert "390 more port_scan findings" in others[0]["annotations"]["summary"]


def test_reload_keeps_incidents_and_new_urls_hear_of_them(
    am: FakeAlertmanager, am2: FakeAlertmanager
) -> None:
    pusher = AlertPusher(cfg(am.url), alerting())
    pusher.observe([det()], now=T0)
    pusher.push(T0)
    pusher.reconfigure(cfg(am.url), alerting(max_findings_per_detector=3))
    assert pusher.active_count() == 1 and not pusher.due(T0 + 1)  # nothing to re-page
    pusher.reconfigure(cfg(am2.url), alerting())
    assert pusher.due(T0 + 2)
    pusher.push(T0 + 2)
    (moved,) = am2.alerts
    assert ts(moved["startsAt"]) == T0  # the same incident, not a new one


def test_reload_with_a_new_sensor_name_ends_the_old_label_set(am: FakeAlertmanager) -> None:
    pusher = AlertPusher(cfg(am.url), alerting(sensor="tap-a"))
    pusher.observe([det()], now=T0)
    pusher.push(T0)
    pusher.reconfigure(cfg(am.url), alerting(sensor="tap-b"), now=T0 + 1)
    assert pusher.due(T0 + 1)
    pusher.push(T0 + 1)
    by_instance = {a["labels"]["instance"]: a for a in am.posts[-1]}
    assert ts(by_instance["tap-a"]["endsAt"]) == T0 + 1
    assert ts(by_instance["tap-b"]["endsAt"]) > T0 + 1


def test_sensor_defaults_to_the_host_name(am: FakeAlertmanager) -> None:
    import socket

    pusher = AlertPusher(cfg(am.url), AlertingConfig())
    pusher.observe([det()], now=T0)
    pusher.push(T0)
    assert am.alerts[0]["labels"]["instance"] == socket.gethostname()
    assert am.alerts[0]["labels"]["category"] == "security"


def test_incident_opened_and_resolved_between_two_pushes_fires_first(am: FakeAlertmanager) -> None:
    """A backlog of windows can open and close an incident within a second: it still pages."""
    pusher = AlertPusher(cfg(am.url, resend_interval_seconds=30), alerting(resolve_after_windows=1))
    pusher.observe([det()], now=T0)
    pusher.observe([], now=T0 + 0.1)  # resolved before any push
    assert pusher.due(T0 + 0.2)
    first = pusher.push(T0 + 0.2)
    assert (first.sent, first.resolved) == (1, 0)
    assert ts(am.posts[-1][0]["endsAt"]) > T0 + 1  # firing, so group_wait sees it
    assert not pusher.due(T0 + 29)  # held firing for one resend interval
    assert pusher.due(T0 + 30.2)
    second = pusher.push(T0 + 30.2)
    assert (second.sent, second.resolved) == (1, 1)
    assert pusher.active_count() == 0
