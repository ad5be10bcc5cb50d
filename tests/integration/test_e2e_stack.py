"""End to end: the real daemon, scraped by a real Prometheus, alerting through a real Alertmanager.

Prometheus runs ``prometheus/prometheus.yml`` as shipped but scraping the daemon and
evaluating rules every second, with ``alerts/netmon.rules.yml`` time-compressed 60 times
(``for: 1m`` becomes ``1s``, ``[5m]`` becomes ``[5s]``: see ``conftest.compress_rules``).
Alertmanager runs ``prometheus/alertmanager.yml`` as shipped with its receivers pointed at
a local webhook, so the routing (security findings to their own receiver, critical pages,
warning tickets) is what is tested.

Checked, in one run (under a minute):
- five real captures are processed, and the port scan in one of them reaches Alertmanager
  as a detection alert and is notified to the security receiver;
(a) every query of every dashboard panel is accepted by Prometheus, names only metrics that
    the daemon really exposes, and returns data unless its metric has no series yet;
(b) removing the watch directory makes NetmonUnhealthy fire in Prometheus, reach
    Alertmanager and page; restoring it resolves the alert and processing resumes;
(c) a bad config plus SIGHUP fires NetmonConfigReloadFailed, which opens a ticket.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from prometheus_client import CollectorRegistry

from netmon_exporter.metrics import build_metrics

from ..daemon_site import daemon_config, write_site
from .conftest import (
    SHIPPED_RULES,
    Webhook,
    alertmanager_test_config,
    compress_rules,
    prometheus_test_config,
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = ROOT / "grafana" / "dashboards"
CAPTURES = [
    ROOT / "samples" / n
    for n in ("icmp.pcap", "dns-edns-ecs.pcap", "tcp-handshake-reorder.pcap", "synscan.pcap")
]
CAPTURES.append(ROOT / "tests" / "data" / "e2e" / "tcp-retransmit-timeout.pcapng")
# Grafana variables, replaced the way Grafana would for "All instances" and a 1 s scrape
# interval ($__rate_interval is at least four scrape intervals).
SUBSTITUTIONS = {
    "$__rate_interval": "5s",
    "$__range": "5m",
    "$instance": ".+",
    "$job": ".+",
    "$site": ".*",
}

CONFIG = daemon_config(
    """\
windows:
  length_seconds: 1
alertmanager:
  urls: ["{alertmanager}"]
alerting:
  max_window_age_seconds: 0  # the sample captures are years old: push them anyway
"""
)
BAD_CONFIG_LINE = "  interval_seconds: 5\n"  # below the minimum of 10


def _dashboard_targets() -> list[tuple[str, str, dict[str, Any]]]:
    """Every Prometheus query of the dashboards: panel targets and annotations."""
    out = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        dashboard = json.loads(path.read_text())
        for panel in dashboard["panels"]:
            for target in panel.get("targets", []):
                if target["datasource"]["type"] == "prometheus":
                    out.append((path.stem, panel["title"], target))
        for annotation in dashboard["annotations"]["list"]:
            out.append((path.stem, f"annotation {annotation['name']}", annotation))
    return out


def _findings_target() -> dict[str, Any]:
    dashboard = json.loads((DASHBOARDS / "netmon-detections.json").read_text())
    (panel,) = [p for p in dashboard["panels"] if p["title"] == "Current security findings"]
    (target,) = panel["targets"]
    return target


def _expand(expr: str) -> str:
    for var, value in SUBSTITUTIONS.items():
        expr = expr.replace(var, value)
    assert "$" not in expr, f"unsubstituted variable in {expr}"
    return expr


def _metric_names(expr: str) -> set[str]:
    from tests.test_dashboards import metric_names_in

    return metric_names_in(expr)


def _families_without_samples() -> set[str]:
    """Labelled families with no pre-initialised series: absent until first observed."""
    registry = CollectorRegistry()
    build_metrics(registry)
    empty = set()
    for fam in registry.collect():
        if not fam.samples:
            empty |= {fam.name, f"{fam.name}_total", f"{fam.name}_info"}
    return empty


def test_stack_end_to_end(
    tmp_path: Path,
    start_daemon: Any,
    start_prometheus: Any,
    start_alertmanager: Any,
    webhook: Webhook,
) -> None:
    t0 = time.monotonic()
    am = start_alertmanager(alertmanager_test_config(webhook.url))

    site = tmp_path / "site"
    captures = site / "captures"
    good_config = CONFIG.format(alertmanager=am.url)
    config_file = write_site(site, good_config)
    daemon = start_daemon(config_file)
    instance = daemon.address

    rules = tmp_path / "netmon.rules.compressed.yml"
    compressed = compress_rules(SHIPPED_RULES, rules)
    prom = start_prometheus(prometheus_test_config([instance], f"127.0.0.1:{am.port}", [rules]))

    def plog() -> str:
        return daemon.log_text() + "\n--- prometheus\n" + prom.log()

    # Real captures in; Prometheus sees them processed.
    for capture in CAPTURES:
        shutil.copy2(capture, captures / capture.name)
    wait_until(
        lambda: prom.value(f'up{{job="netmon", instance="{instance}"}}') == 1,
        30,
        "Prometheus to scrape the daemon",
        log=plog,
    )
    wait_until(
        lambda: (prom.value("sum(netmon_files_processed_total)") or 0) >= len(CAPTURES),
        45,
        f"{len(CAPTURES)} files processed as seen by Prometheus",
        log=plog,
    )
    assert prom.value("sum(netmon_files_failed_total)") == 0
    assert (prom.value("sum(netmon_packets_total)") or 0) > 0
    assert (prom.value("sum(netmon_flows_total)") or 0) > 0
    assert prom.value('sum(netmon_files_processed_total{kind="pcapng"})') == 1

    # synscan.pcap is a port scan: the detection is counted, pushed by the daemon to
    # Alertmanager and routed by its severity like any other alert.
    wait_until(
        lambda: (prom.value('sum(netmon_detections_total{detector="port_scan"})') or 0) > 0,
        40,
        "the port scan to be detected",
        log=plog,
    )
    scans = wait_until(
        lambda: am.alerts("NetmonPortScan"), 20, "the port-scan detection in Alertmanager", log=plog
    )
    # Security findings go to their own receiver, whatever their severity.
    assert [r["name"] for r in scans[0]["receivers"]] == ["security"]
    notified = wait_until(
        lambda: webhook.alerts("/security", "NetmonPortScan", "firing"),
        20,
        "the port-scan detection to be notified",
        log=am.log,
    )
    assert notified[0]["labels"]["source"] and notified[0]["labels"]["target"]

    # The Detections dashboard's findings table reads the same finding from Alertmanager's
    # API, with its URL and column selectors as committed (the Infinity plugin itself is
    # not run here).
    findings = _findings_target()
    rows = requests.get(am.url + findings["url"], timeout=10).json()
    scan_rows = [r for r in rows if r["labels"].get("alertname") == "NetmonPortScan"]
    assert scan_rows, rows
    for column in findings["columns"]:
        value: Any = scan_rows[0]
        for part in column["selector"].split("."):
            value = value[part]
        assert value, f"findings column {column['text']} is empty"

    # Every compressed rule evaluates without error (all names are the shipped ones).
    shipped_names = {r["alert"] for g in compressed["groups"] for r in g["rules"]}
    wait_until(
        lambda: {r["name"] for r in prom.rules() if r["health"] == "ok"} >= shipped_names,
        15,
        "every alert rule to evaluate",
        log=plog,
    )
    bad_rules = [(r["name"], r.get("lastError")) for r in prom.rules() if r["health"] == "err"]
    assert bad_rules == []

    # (a) every dashboard query is valid, uses known metrics and returns data when it can.
    wait_until(
        lambda: (prom.value(f'count_over_time(up{{instance="{instance}"}}[5s])') or 0) >= 4,
        15,
        "enough scrapes for rate() over $__rate_interval",
        log=plog,
    )
    known = prom.metric_names()
    may_be_absent = _families_without_samples() | {"ALERTS"}  # Prometheus's, once one fires
    now = time.time()
    targets = _dashboard_targets()
    assert len(targets) > 50
    for dash, title, target in targets:
        expr = _expand(target["expr"])
        where = f"{dash} / {title}: {expr}"
        names = _metric_names(expr)
        unknown = {n for n in names if n not in known and n not in may_be_absent}
        assert not unknown, f"{where}: Prometheus has no series named {unknown}"
        instant = prom.query(expr)
        assert instant["status"] == "success", f"{where}: {instant}"
        assert instant["data"]["resultType"] in {"vector", "scalar"}, where
        if not target.get("instant") and not title.startswith("annotation "):
            ranged = prom.query_range(expr, now - 30, now)
            assert ranged["status"] == "success", f"{where}: {ranged}"
            assert ranged["data"]["resultType"] == "matrix", where
        has_series = names <= known
        filtered = re.search(r"\)\s*>\s*0\s*$", expr) is not None
        event = title.startswith("annotation ")  # empty while nothing happens
        if has_series and not filtered and not event:
            assert instant["data"]["result"], f"{where}: no data although its series exist"

    # (b) the watch directory disappears: unhealthy fires, pages, and resolves.
    away = site / "captures.away"
    captures.rename(away)
    firing = wait_until(
        lambda: prom.alerts("NetmonUnhealthy", "firing"),
        30,  # a health check every 10 s, then "for: 5m" compressed to 5 s
        "NetmonUnhealthy to fire in Prometheus",
        log=plog,
    )
    labels = firing[0]["labels"]
    assert labels["severity"] == "critical"
    assert labels["instance"] == instance and labels["job"] == "netmon"
    assert "capture_directory" in firing[0]["annotations"]["description"]
    assert firing[0]["annotations"]["runbook_url"].startswith("https://")
    assert firing[0]["annotations"]["runbook_url"].endswith("/alerts/runbook.md#netmonunhealthy")
    assert firing[0]["annotations"]["dashboard_url"].endswith(
        f"/d/netmon-overview?var-job=netmon&var-instance={instance.replace(':', '%3A')}"
    )
    held = wait_until(
        lambda: am.alerts("NetmonUnhealthy"),
        20,
        "NetmonUnhealthy to reach Alertmanager",
        log=am.log,
    )
    assert [r["name"] for r in held[0]["receivers"]] == ["pager"]
    wait_until(
        lambda: webhook.alerts("/page", "NetmonUnhealthy", "firing"),
        20,
        "NetmonUnhealthy to be paged",
        log=am.log,
    )
    assert webhook.alerts("/ticket", "NetmonUnhealthy") == []
    assert prom.value(f'netmon_up{{instance="{instance}"}}') == 0

    away.rename(captures)
    wait_until(
        lambda: not prom.alerts("NetmonUnhealthy"),
        20,
        "NetmonUnhealthy to resolve in Prometheus",
        log=plog,
    )
    wait_until(
        lambda: webhook.alerts("/page", "NetmonUnhealthy", "resolved"),
        20,
        "the resolved NetmonUnhealthy notification",
        log=am.log,
    )
    wait_until(
        lambda: prom.value(f'netmon_up{{instance="{instance}"}}') == 1,
        10,
        "netmon_up back to 1",
        log=plog,
    )
    # ... and it works again: a capture arriving now is processed.
    shutil.copy2(ROOT / "samples" / "icmp6.pcap", captures / "late.pcap")
    wait_until(
        lambda: prom.value("sum(netmon_files_processed_total)") == len(CAPTURES) + 1,
        30,
        "a capture dropped after the restore to be processed",
        log=plog,
    )

    # (c) a bad edit and SIGHUP: the reload is refused and the alert fires.
    config_file.write_text(good_config.replace("  interval_seconds: 10\n", BAD_CONFIG_LINE))
    assert daemon.proc is not None
    daemon.proc.send_signal(signal.SIGHUP)
    wait_until(
        lambda: prom.value(f'netmon_config_last_reload_successful{{instance="{instance}"}}') == 0,
        15,
        "the failed reload to be scraped",
        log=plog,
    )
    firing = wait_until(
        lambda: prom.alerts("NetmonConfigReloadFailed", "firing"),
        25,
        "NetmonConfigReloadFailed to fire",
        log=plog,
    )
    assert firing[0]["labels"]["severity"] == "warning"
    held = wait_until(
        lambda: am.alerts("NetmonConfigReloadFailed"),
        20,
        "NetmonConfigReloadFailed to reach Alertmanager",
        log=am.log,
    )
    assert [r["name"] for r in held[0]["receivers"]] == ["ticket"]
    wait_until(
        lambda: webhook.alerts("/ticket", "NetmonConfigReloadFailed", "firing"),
        20,
        "NetmonConfigReloadFailed to open a ticket",
        log=am.log,
    )
    # The old configuration keeps running.
    assert prom.value(f'netmon_config_interval_seconds{{instance="{instance}"}}') == 10
    assert prom.value(f'netmon_up{{instance="{instance}"}}') == 1

    assert time.monotonic() - t0 < 150, "the end-to-end test has become slow"


def test_compress_rules_scales_durations_only(tmp_path: Path) -> None:
    doc = compress_rules(SHIPPED_RULES, tmp_path / "rules.yml")
    rules = {r["alert"]: r for g in doc["groups"] for r in g["rules"]}
    assert rules["NetmonExporterDown"]["for"] == "5s"
    assert rules["NetmonConfigReloadFailed"]["expr"].startswith(
        'max_over_time(netmon_config_last_reload_successful{job="netmon"}[5s]) == 0'
    )
    spike = rules["NetmonDetectionRateSpike"]["expr"]
    assert "[10s]" in spike and "[360s] offset 10s" in spike and "> 10" in spike
    assert "> 600" in rules["NetmonNoCapturesArriving"]["expr"]
    assert not any(re.search(r"\[\d+[mh]\]|offset \d+[mh]", r["expr"]) for r in rules.values())
    assert set(rules) == {
        r["alert"] for g in yaml.safe_load(SHIPPED_RULES.read_text())["groups"] for r in g["rules"]
    }
