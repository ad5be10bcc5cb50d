"""Alert rules, their promtool unit tests, the runbook and the Prometheus/Alertmanager configs."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry

from netmon_exporter.metrics import build_metrics

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "alerts" / "netmon.rules.yml"
RULE_TESTS = ROOT / "alerts" / "netmon.rules.test.yml"
RUNBOOK = ROOT / "alerts" / "runbook.md"
PROM_DIR = ROOT / "prometheus"

REQUIRED_ALERTS = {
    "NetmonExporterDown",
    "NetmonExporterAbsent",
    "NetmonUnhealthy",
    "NetmonDegraded",
    "NetmonBacklogGrowing",
    "NetmonFileLagHigh",
    "NetmonFileFailureRatioHigh",
    "NetmonFilesQuarantined",
    "NetmonNoCapturesArriving",
    "NetmonConfigReloadFailed",
    "NetmonLLMSummariesFailing",
    "NetmonAlertmanagerPushFailing",
    "NetmonDetectionRateSpike",
}
# Series that come from Prometheus itself or the default process collector.
NON_EXPORTER_METRICS = {"up", "process_start_time_seconds", "ALERTS"}

needs_promtool = pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool not installed (apt-get install prometheus)"
)
needs_amtool = pytest.mark.skipif(
    shutil.which("amtool") is None,
    reason="amtool not installed (apt-get install prometheus-alertmanager)",
)


def _rules() -> list[dict]:
    doc = yaml.safe_load(RULES.read_text())
    return [r for g in doc["groups"] for r in g["rules"] if "alert" in r]


_SUFFIXES = {
    "counter": ("_total",),
    "gauge": ("",),
    "info": ("_info",),
    "histogram": ("_bucket", "_sum", "_count"),
}


def _exposed_names() -> set[str]:
    """Series names of the whole catalogue (labelled families may have no samples yet)."""
    registry = CollectorRegistry()
    build_metrics(registry)
    return {fam.name + suffix for fam in registry.collect() for suffix in _SUFFIXES[fam.type]}


def _anchors(markdown: str) -> set[str]:
    """GitHub-style anchors of the level-2 headings."""
    return {
        re.sub(r"[^a-z0-9 -]", "", h.strip().lower()).replace(" ", "-")
        for h in re.findall(r"^## (.+)$", markdown, flags=re.M)
    }


def _run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)


@needs_promtool
def test_promtool_check_rules_is_clean() -> None:
    out = _run("promtool", "check", "rules", str(RULES))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


@needs_promtool
def test_promtool_unit_tests_pass() -> None:
    out = _run("promtool", "test", "rules", str(RULE_TESTS))
    assert out.returncode == 0, out.stdout + out.stderr


def test_required_alerts_exist_with_conventions() -> None:
    rules = _rules()
    names = [r["alert"] for r in rules]
    assert len(names) == len(set(names)), "duplicate alert names"
    assert set(names) >= REQUIRED_ALERTS
    for r in rules:
        assert re.fullmatch(r"Netmon[A-Z][A-Za-z]+", r["alert"]), r["alert"]
        assert r["labels"]["severity"] in {"critical", "warning"}, r["alert"]
        ann = r["annotations"]
        assert {"summary", "description", "runbook_url"} <= set(ann), r["alert"]
        assert ann["runbook_url"] == f"alerts/runbook.md#{r['alert'].lower()}"
    severities = {r["alert"]: r["labels"]["severity"] for r in rules}
    assert severities["NetmonUnhealthy"] == "critical"
    assert severities["NetmonDegraded"] == "warning"


def test_reload_failed_alert_survives_missed_scrapes() -> None:
    rule = next(r for r in _rules() if r["alert"] == "NetmonConfigReloadFailed")
    assert re.fullmatch(
        r"max_over_time\(netmon_config_last_reload_successful\[\d+m\]\) == 0", rule["expr"].strip()
    )


def test_every_alert_has_a_runbook_section() -> None:
    anchors = _anchors(RUNBOOK.read_text())
    for r in _rules():
        anchor = r["annotations"]["runbook_url"].split("#", 1)[1]
        assert anchor in anchors, f"alerts/runbook.md has no section for {r['alert']}"
    text = RUNBOOK.read_text()
    for r in _rules():
        section = text.split(f"## {r['alert']}\n", 1)[1].split("\n## ", 1)[0]
        for part in ("**Meaning.**", "**Impact.**", "**What to check.**", "**How to fix.**"):
            assert part in section, f"runbook section {r['alert']} lacks {part}"


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    doc = yaml.safe_load(RULE_TESTS.read_text())
    assert doc["rule_files"] == ["netmon.rules.yml"]
    fires: set[str] = set()
    quiet: set[str] = set()
    for case in doc["tests"]:
        for check in case.get("alert_rule_test", []):
            (fires if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {r["alert"] for r in _rules()}
    assert names - fires == set(), "alerts without a firing test case"
    assert names - quiet == set(), "alerts without a non-firing test case"


def test_rule_expressions_use_only_exported_metrics() -> None:
    exposed = _exposed_names() | NON_EXPORTER_METRICS
    doc = yaml.safe_load(RULES.read_text())
    for group in doc["groups"]:
        for r in group["rules"]:
            for name in re.findall(r"\b(netmon_[a-z_]+|process_[a-z_]+|up)\b", r["expr"]):
                assert name in exposed, f"{r['alert']} uses unknown metric {name}"


@needs_promtool
@pytest.mark.parametrize("name", ["prometheus.yml", "federation.yml", "remote-write.yml"])
def test_prometheus_configs_are_valid(name: str) -> None:
    out = _run("promtool", "check", "config", str(PROM_DIR / name))
    assert out.returncode == 0, out.stdout + out.stderr


def test_prometheus_config_wires_the_shipped_rules_and_job() -> None:
    cfg = yaml.safe_load((PROM_DIR / "prometheus.yml").read_text())
    rule_files = [(PROM_DIR / f).resolve() for f in cfg["rule_files"]]
    assert RULES.resolve() in rule_files
    jobs = {j["job_name"]: j for j in cfg["scrape_configs"]}
    targets = [t for sc in jobs["netmon"]["static_configs"] for t in sc["targets"]]
    assert targets and all(t.endswith(":9864") for t in targets)


@needs_amtool
def test_alertmanager_config_is_valid() -> None:
    out = _run("amtool", "check-config", str(PROM_DIR / "alertmanager.yml"))
    assert out.returncode == 0, out.stdout + out.stderr


@needs_amtool
@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        (
            ["alertname=NetmonUnhealthy", "severity=critical", "instance=h:9864", "job=netmon"],
            "pager",
        ),
        (
            ["alertname=NetmonDegraded", "severity=warning", "instance=h:9864", "job=netmon"],
            "ticket",
        ),
        (["alertname=NetmonPortScan", "severity=critical", "detector=port_scan"], "pager"),
        (["alertname=NetmonBeacon", "severity=info", "detector=beacon"], "ticket"),
    ],
)
def test_alertmanager_routes_critical_to_pager_and_warning_to_ticket(
    labels: list[str], receiver: str
) -> None:
    out = _run(
        "amtool",
        "config",
        "routes",
        "test",
        f"--config.file={PROM_DIR / 'alertmanager.yml'}",
        *labels,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.strip() == receiver
