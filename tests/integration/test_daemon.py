"""The real daemon: catalogue on /metrics, reload by SIGHUP and HTTP, clean shutdown."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
from pathlib import Path

from ..daemon_site import daemon_config
from .daemon_process import DaemonProcess

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "samples"

CONFIG = daemon_config()  # what the daemon_site and daemon fixtures (tests/conftest.py) run


def test_metrics_catalogue_and_promtool(daemon: DaemonProcess) -> None:
    code, body = daemon.get("/metrics")
    assert code == 200
    for name in (
        "netmon_up 1.0",
        "netmon_config_last_reload_successful 1.0",
        'netmon_health_state{state="healthy"} 1.0',
        "process_start_time_seconds",
        "netmon_config_workers 1.0",
        "netmon_build_info{",
    ):
        assert name in body, name
    if shutil.which("promtool"):
        proc = subprocess.run(
            ["promtool", "check", "metrics"], input=body, text=True, capture_output=True, timeout=60
        )
        assert proc.returncode == 0 and not proc.stdout.strip(), proc.stdout + proc.stderr
    code, health = daemon.get("/health")
    assert code == 200 and json.loads(health)["state"] == "healthy"


def test_sighup_with_bad_config_keeps_old_one(daemon: DaemonProcess, daemon_site: Path) -> None:
    cfg = daemon_site / "config.yaml"
    cfg.write_text(CONFIG.replace("min_age_seconds: 0", "min_age_seconds: 400"))
    before = daemon.metric("netmon_config_reload_failures_total")
    daemon.send(signal.SIGHUP)
    daemon.wait_for(
        lambda: daemon.metric("netmon_config_last_reload_successful") == 0,
        what="reload failure gauge",
    )
    assert daemon.metric("netmon_config_reload_failures_total") == (before or 0) + 1
    assert any(
        "capture.min_age_seconds: 400 is above the maximum 300" in line for line in daemon.lines
    ), daemon.log_text()
    assert daemon.proc is not None and daemon.proc.poll() is None
    assert daemon.metric("netmon_config_min_age_seconds") == 0  # old config in force
    # Fix it and reload over HTTP: now a real change (workers 1 -> 2) is applied.
    cfg.write_text(CONFIG.replace("workers: 1", "workers: 2"))
    code, body = daemon.get("/-/reload", method="POST")
    assert code == 200, body
    assert json.loads(body)["status"] == "success"
    assert daemon.metric("netmon_config_last_reload_successful") == 1
    assert daemon.metric("netmon_config_workers") == 2
    assert daemon.metric("netmon_config_last_reload_success_timestamp_seconds") > time.time() - 60


def test_http_reload_failure_answers_500_with_reason(
    daemon: DaemonProcess, daemon_site: Path
) -> None:
    (daemon_site / "config.yaml").write_text(CONFIG + "bogus: 1\n")
    code, body = daemon.get("/-/reload", method="POST")
    assert code == 500
    assert "bogus: unknown key" in json.loads(body)["message"]
    assert daemon.get("/-/reload")[0] == 405


def test_unchanged_reload_is_a_noop(daemon: DaemonProcess) -> None:
    code, body = daemon.get("/-/reload", method="POST")
    assert code == 200 and "unchanged" in json.loads(body)["message"]


def test_restart_only_setting_is_reported(daemon: DaemonProcess, daemon_site: Path) -> None:
    (daemon_site / "config.yaml").write_text(
        CONFIG.replace("directory: state", "directory: state2")
    )
    code, body = daemon.get("/-/reload", method="POST")
    assert code == 200
    assert json.loads(body)["restart_required"] == ["state.directory"]
    assert any("needs a restart" in line and "state.directory" in line for line in daemon.lines)


def test_sigterm_exits_zero_promptly(daemon: DaemonProcess) -> None:
    start = time.monotonic()
    assert daemon.stop(signal.SIGTERM, timeout=40) == 0
    assert time.monotonic() - start < 40
    assert any("msg=stopped" in line for line in daemon.lines), daemon.log_text()


def test_bad_config_at_startup_exits_1(daemon_site: Path) -> None:
    (daemon_site / "config.yaml").write_text(CONFIG.replace("workers: 1", "workers: 99"))
    d = DaemonProcess(daemon_site / "config.yaml")
    proc = subprocess.run(d.args, capture_output=True, text=True, timeout=60, cwd=daemon_site)
    assert proc.returncode == 1
    assert "processing.workers: 99 is above the maximum 16" in proc.stderr


def test_processes_sample_captures(daemon: DaemonProcess, daemon_site: Path) -> None:
    for name in ("icmp.pcap", "tcp-handshake-reorder.pcap", "dns-edns-ecs.pcap"):
        shutil.copy(SAMPLES / name, daemon_site / "captures" / name)
    daemon.wait_for(
        lambda: daemon.metric("netmon_files_processed_total", {"kind": "pcap"}) == 3,
        timeout=60,
        what="3 files processed",
    )
    assert daemon.metric("netmon_packets_total", {"protocol": "tcp"}) > 0
    assert daemon.metric("netmon_packets_total", {"protocol": "icmp"}) > 0
    assert daemon.metric("netmon_flows_total", {"protocol": "udp"}) > 0
    assert daemon.metric("netmon_last_success_timestamp_seconds") > 0
    assert list((daemon_site / "out").rglob("*.csv")), "flow CSVs written"


def test_dead_llm_and_alertmanager_degrade_health_but_never_block_flows(daemon_site: Path) -> None:
    """A hanging LLM and an unreachable Alertmanager: files keep flowing, health degrades."""
    import socket
    import threading

    hang = socket.socket()
    hang.bind(("127.0.0.1", 0))
    hang.listen(16)  # accepts connections, never answers
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    closed_port = closed.getsockname()[1]
    closed.close()  # nothing listens here: connection refused
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        hang.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(hang.accept()[0])
            except OSError:
                continue

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    (daemon_site / "config.yaml").write_text(
        CONFIG
        + f"""\
llm:
  enabled: true
  url: http://127.0.0.1:{hang.getsockname()[1]}/v1
  timeout_seconds: 1
  max_retries: 0
alertmanager:
  urls: [http://127.0.0.1:{closed_port}]
  timeout_seconds: 1
alerting:
  max_window_age_seconds: 0  # the sample captures are years old: push them anyway
"""
    )
    d = DaemonProcess(daemon_site / "config.yaml").start()
    try:
        names = ["synscan.pcap", "icmp.pcap", "dns-edns-ecs.pcap", "tcp-handshake-reorder.pcap"]
        for name in names:
            shutil.copy(SAMPLES / name, daemon_site / "captures" / name)
        d.wait_for(
            lambda: d.metric("netmon_files_processed_total", {"kind": "pcap"}) == 4,
            timeout=60,
            what="all files processed despite dead dependencies",
        )
        d.wait_for(
            lambda: (
                (d.metric("netmon_llm_summaries_failed_total") or 0) >= 1
                and (d.metric("netmon_alerts_failed_total") or 0) >= 1
            ),
            timeout=60,
            what="LLM and Alertmanager failures counted",
        )

        def both_failing() -> bool:
            checks = json.loads(d.get("/health")[1])["checks"]
            return not checks["llm"]["ok"] and not checks["alertmanager"]["ok"]

        d.wait_for(both_failing, timeout=10, what="llm and alertmanager checks failing")
        code, body = d.get("/health")
        checks = json.loads(body)["checks"]
        assert code == 200
        assert json.loads(body)["state"] == "degraded"
        assert "no answer within 1s" in checks["llm"]["reason"]
        assert "Connection refused" in checks["alertmanager"]["reason"]
        assert checks["capture_directory"]["ok"]
        assert d.metric("netmon_health_check_ok", {"check": "llm"}) == 0
        assert d.metric("netmon_up") == 1
        reports = list((daemon_site / "out" / "windows").glob("window-*.json"))
        assert reports, "window reports written with the templated summary"
        assert all(json.loads(p.read_text())["summary"] for p in reports)
    finally:
        assert d.stop() == 0
        stop.set()
        t.join()
        hang.close()
        for s in accepted:
            s.close()


def test_trained_model_is_loaded_and_described(daemon_site: Path) -> None:
    """`train --baseline` output configured in models.anomaly_path is loaded and exported."""
    import sys

    model = daemon_site / "state" / "models" / "anomaly.skops"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "netmon_exporter",
            "train",
            "--baseline",
            str(SAMPLES / "ftp-cwd-navigation.pcap"),
            str(SAMPLES / "dns-edns-ecs.pcap"),
            "-o",
            str(model),
            "--trees",
            "20",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=daemon_site,
    )
    assert proc.returncode == 0, proc.stderr
    (daemon_site / "config.yaml").write_text(CONFIG + f"models:\n  anomaly_path: {model}\n")
    d = DaemonProcess(daemon_site / "config.yaml").start()
    try:
        assert d.metric("netmon_model_loaded", {"kind": "anomaly"}) == 1
        assert d.metric("netmon_model_loaded", {"kind": "classifier"}) == 0
        assert d.metric("netmon_model_info", {"kind": "anomaly"}) == 1
        shutil.copy(SAMPLES / "synscan.pcap", daemon_site / "captures" / "synscan.pcap")
        shutil.copy(SAMPLES / "icmp.pcap", daemon_site / "captures" / "icmp.pcap")
        d.wait_for(
            lambda: (d.metric("netmon_flows_analysed_total") or 0) > 0,
            timeout=60,
            what="flows analysed",
        )
        count = d.metric("netmon_anomaly_score_count")
        assert count is not None and count > 0
        # A broken model file on reload is refused; the loaded model stays.
        bad = daemon_site / "state" / "models" / "bad.skops"
        bad.write_bytes(b"not a model")
        (daemon_site / "config.yaml").write_text(CONFIG + f"models:\n  anomaly_path: {bad}\n")
        code, body = d.get("/-/reload", method="POST")
        assert code == 500 and "models:" in json.loads(body)["message"], body
        assert d.metric("netmon_config_last_reload_successful") == 0
        assert d.metric("netmon_model_loaded", {"kind": "anomaly"}) == 1
        assert d.metric("netmon_errors_total", {"category": "model"}) == 1
    finally:
        assert d.stop() == 0
    # The same broken model at start-up: refused with a clear message, no traceback.
    proc = subprocess.run(d.args, capture_output=True, text=True, timeout=120, cwd=daemon_site)
    assert proc.returncode == 1 and "model error:" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
