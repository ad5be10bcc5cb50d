from __future__ import annotations

import shutil
import subprocess

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from netmon_exporter.config import Config
from netmon_exporter.health import CheckResult, HealthReport
from netmon_exporter.metrics import DETECTORS, FILE_KINDS, PROTOCOLS, SETTINGS, build_metrics
from netmon_exporter.recording import record_health, record_settings


def exposition() -> str:
    r = CollectorRegistry()
    m = build_metrics(r)
    record_settings(m, Config())
    record_health(m, HealthReport("degraded", (CheckResult("keeping_up", False, False, "x"),)))
    return generate_latest(r).decode()


def test_catalogue_names_follow_conventions() -> None:
    text = exposition()
    names = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")}
    assert all(n.startswith("netmon_") for n in names)
    for line in text.splitlines():
        if line.startswith("# TYPE") and line.endswith(" counter"):
            assert line.split()[2].endswith("_total"), line
    required = [
        "netmon_up",
        "netmon_health_state",
        "netmon_health_check_ok",
        "netmon_files_processed_total",
        "netmon_files_failed_total",
        "netmon_files_quarantined_total",
        "netmon_packets_total",
        "netmon_bytes_total",
        "netmon_flows_total",
        "netmon_windows_processed_total",
        "netmon_detections_total",
        "netmon_alerts_sent_total",
        "netmon_alerts_failed_total",
        "netmon_classifications_total",
        "netmon_llm_summaries_total",
        "netmon_llm_summaries_failed_total",
        "netmon_file_processing_seconds_bucket",
        "netmon_window_processing_seconds_bucket",
        "netmon_llm_request_seconds_bucket",
        "netmon_alertmanager_push_seconds_bucket",
        "netmon_file_size_bytes_bucket",
        "netmon_file_lag_seconds_bucket",
        "netmon_last_activity_timestamp_seconds",
        "netmon_last_success_timestamp_seconds",
        "netmon_backlog_files",
        "netmon_files_in_progress",
        "netmon_retries_total",
        "netmon_errors_total",
        "netmon_config_last_reload_successful",
        "netmon_config_last_reload_success_timestamp_seconds",
        "netmon_build_info",
        "netmon_model_loaded",
    ]
    for name in required:
        assert f"\n{name}" in text, name
    assert "# TYPE netmon_model_info gauge" in text
    for setting in SETTINGS:
        assert f"\nnetmon_config_{setting} " in text, setting


def test_label_values_are_preinitialised() -> None:
    r = CollectorRegistry()
    build_metrics(r)
    for kind in FILE_KINDS:
        assert r.get_sample_value("netmon_files_processed_total", {"kind": kind}) == 0
    for proto in PROTOCOLS:
        assert r.get_sample_value("netmon_packets_total", {"protocol": proto}) == 0
    for det in DETECTORS:
        assert (
            r.get_sample_value("netmon_detections_total", {"detector": det, "severity": "critical"})
            == 0
        )


def test_settings_and_health_are_recorded() -> None:
    r = CollectorRegistry()
    m = build_metrics(r)
    record_settings(m, Config())
    assert r.get_sample_value("netmon_config_workers") == 2
    assert r.get_sample_value("netmon_config_parallel") == 1
    assert r.get_sample_value("netmon_config_min_age_seconds") == 10
    record_health(
        m, HealthReport("unhealthy", (CheckResult("capture_directory", False, True, "gone"),))
    )
    assert r.get_sample_value("netmon_up") == 0
    assert r.get_sample_value("netmon_health_state", {"state": "unhealthy"}) == 1
    assert r.get_sample_value("netmon_health_state", {"state": "healthy"}) == 0
    assert r.get_sample_value("netmon_health_check_ok", {"check": "capture_directory"}) == 0


@pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool not installed (make test installs it)"
)
def test_promtool_check_metrics_is_clean() -> None:
    proc = subprocess.run(
        ["promtool", "check", "metrics"],
        input=exposition(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == "" and proc.stderr.strip() == ""


def test_bulk_anomaly_scores_match_single_observations() -> None:
    import numpy as np

    from netmon_exporter.recording import _observe_many

    values = np.array([0.0, 0.05, 0.1, 0.5, 0.55, 0.95, 1.0, 0.3])
    bulk, single = CollectorRegistry(), CollectorRegistry()
    _observe_many(build_metrics(bulk), values)
    m = build_metrics(single)
    for v in values:
        m.anomaly_score.observe(float(v))
    for le in ("0.1", "0.5", "0.6", "1.0", "+Inf"):
        labels = {"le": le}
        assert bulk.get_sample_value(
            "netmon_anomaly_score_bucket", labels
        ) == single.get_sample_value("netmon_anomaly_score_bucket", labels), le
    assert bulk.get_sample_value("netmon_anomaly_score_count") == len(values)
    assert abs(bulk.get_sample_value("netmon_anomaly_score_sum") - values.sum()) < 1e-9


def test_counters_are_seeded_from_ledger_totals() -> None:
    from netmon_exporter.ingest.ledger import Totals
    from netmon_exporter.recording import seed_from_totals

    r = CollectorRegistry()
    m = build_metrics(r)
    seed_from_totals(
        m,
        Totals(
            done_by_kind={"pcap": 3, "csv": 1},
            quarantined_by_kind_reason={("pcap", "format"): 2},
            packets_by_protocol={"tcp": 100, "udp": 7},
            bytes_by_protocol={"tcp": 6400},
            flows=9,
            csv_rows=9,
            flows_by_protocol={"tcp": 5, "udp": 4},
        ),
    )
    assert r.get_sample_value("netmon_files_processed_total", {"kind": "pcap"}) == 3
    assert r.get_sample_value("netmon_files_processed_total", {"kind": "csv"}) == 1
    assert (
        r.get_sample_value("netmon_files_quarantined_total", {"kind": "pcap", "reason": "format"})
        == 2
    )
    assert r.get_sample_value("netmon_packets_total", {"protocol": "tcp"}) == 100
    assert r.get_sample_value("netmon_bytes_total", {"protocol": "tcp"}) == 6400
    assert r.get_sample_value("netmon_flows_total", {"protocol": "udp"}) == 4
    assert r.get_sample_value("netmon_flow_csv_rows_total") == 9
