from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from netmon_exporter.health import DEGRADED, HEALTHY, UNHEALTHY, HealthInputs, evaluate


def inputs(tmp_path: Path, **kw: object) -> HealthInputs:
    (tmp_path / "cap").mkdir(exist_ok=True)
    base = dict(
        capture_directory=tmp_path / "cap",
        state_directory=tmp_path / "state",
        output_directory=tmp_path / "out",
    )
    base.update(kw)
    return HealthInputs(**base)  # type: ignore[arg-type]


def checks(report):  # noqa: ANN001, ANN202
    return {c.name: c for c in report.checks}


def test_healthy_when_everything_passes(tmp_path: Path) -> None:
    report = evaluate(inputs(tmp_path))
    assert report.state == HEALTHY
    assert all(c.ok for c in report.checks)
    assert set(checks(report)) == {
        "capture_directory",
        "state_storage",
        "output_storage",
        "keeping_up",
        "error_ratio",
        "llm",
        "alertmanager",
        "ingestion",
    }


def test_missing_capture_directory_is_unhealthy_with_reason(tmp_path: Path) -> None:
    report = evaluate(inputs(tmp_path, capture_directory=tmp_path / "gone"))
    assert report.state == UNHEALTHY
    c = checks(report)["capture_directory"]
    assert not c.ok and "does not exist" in c.reason


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read a chmod 000 directory")
def test_unreadable_capture_directory_is_unhealthy(tmp_path: Path) -> None:
    d = tmp_path / "cap"
    d.mkdir()
    d.chmod(0)
    try:
        assert evaluate(inputs(tmp_path)).state == UNHEALTHY
    finally:
        d.chmod(0o755)


def test_ledger_error_is_unhealthy(tmp_path: Path) -> None:
    report = evaluate(inputs(tmp_path, ledger_error="database disk image is malformed"))
    assert report.state == UNHEALTHY
    assert "malformed" in checks(report)["state_storage"].reason


def test_state_directory_blocked_by_a_file_is_unhealthy(tmp_path: Path) -> None:
    (tmp_path / "blocker").write_text("x")
    report = evaluate(inputs(tmp_path, state_directory=tmp_path / "blocker" / "state"))
    assert report.state == UNHEALTHY


def test_growing_backlog_degrades(tmp_path: Path) -> None:
    report = evaluate(inputs(tmp_path, backlog_growth_streak=5, backlog_growth_limit=5))
    assert report.state == DEGRADED
    assert not checks(report)["keeping_up"].ok
    assert evaluate(inputs(tmp_path, backlog_growth_streak=4)).state == HEALTHY


def test_old_waiting_file_degrades(tmp_path: Path) -> None:
    report = evaluate(inputs(tmp_path, oldest_ready_age_seconds=700, max_lag_seconds=600))
    assert report.state == DEGRADED


def test_windows_waiting_long_for_analysis_degrade(tmp_path: Path) -> None:
    """Files keep flowing but the detectors fall behind: closed windows pile up."""
    fine = inputs(tmp_path, analysis_wait_seconds=600, windows_awaiting_analysis=2)
    assert evaluate(fine).state == HEALTHY
    report = evaluate(inputs(tmp_path, analysis_wait_seconds=601, windows_awaiting_analysis=3))
    assert report.state == DEGRADED
    reason = checks(report)["keeping_up"].reason
    assert "3 closed window(s) wait for analysis" in reason and "601s ago" in reason


def test_error_ratio_threshold(tmp_path: Path) -> None:
    assert evaluate(inputs(tmp_path, recent_files=10, recent_failures=2)).state == HEALTHY
    report = evaluate(inputs(tmp_path, recent_files=10, recent_failures=3))
    assert report.state == DEGRADED
    assert "3 of 10" in checks(report)["error_ratio"].reason


def test_optional_components_only_count_when_enabled(tmp_path: Path) -> None:
    assert evaluate(inputs(tmp_path, llm_error="boom")).state == HEALTHY
    report = evaluate(inputs(tmp_path, llm_enabled=True, llm_error="connection refused"))
    assert report.state == DEGRADED
    report = evaluate(inputs(tmp_path, alertmanager_enabled=True, alertmanager_error="503"))
    assert report.state == DEGRADED


def test_report_dict_shape(tmp_path: Path) -> None:
    d = evaluate(inputs(tmp_path)).to_dict()
    assert d["state"] == "healthy"
    assert d["checks"]["capture_directory"]["ok"] is True
    assert "reason" in d["checks"]["keeping_up"]


def test_contained_ingestion_errors_degrade_with_the_reason(tmp_path: Path) -> None:
    report = evaluate(
        dataclasses.replace(
            inputs(tmp_path), ingest_problems=("cannot write output: No space left on device",)
        )
    )
    assert report.state == DEGRADED
    assert "No space left" in checks(report)["ingestion"].reason
