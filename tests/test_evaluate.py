"""The evaluation: matching detections to ground truth, scoring, real captures, the CLI."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from netmon_exporter.cli import main
from netmon_exporter.config import DetectorsConfig
from netmon_exporter.detection import Detection
from netmon_exporter.tools.evaluate import (
    ScenarioResult,
    matches,
    run_real,
    run_scenarios,
    score,
)
from netmon_exporter.tools.scenarios import Scenario, Truth

PCAPS = Path(__file__).resolve().parents[2] / "shared" / "pcaps"


def det(detector: str, source: str, target: str) -> Detection:
    return Detection(detector, "warning", source, target, 0.0, 60.0)


def test_matching_rules():
    assert matches(
        det("port_scan", "1.2.3.4", "10.0.0.1"), Truth("port_scan", "1.2.3.4", "10.0.0.1")
    )
    assert not matches(
        det("port_scan", "1.2.3.5", "10.0.0.1"), Truth("port_scan", "1.2.3.4", "10.0.0.1")
    )
    assert not matches(det("address_sweep", "1.2.3.4", "tcp/22"), Truth("port_scan", "1.2.3.4"))
    assert matches(det("address_sweep", "1.2.3.4", "tcp/22"), Truth("address_sweep", "1.2.3.4"))
    assert matches(
        det("brute_force", "1.2.3.4", "10.0.0.1:22"), Truth("brute_force", "1.2.3.4", "10.0.0.1")
    )
    assert matches(det("syn_flood", "many", "10.0.0.1"), Truth("syn_flood", "many", "10.0.0.1"))
    assert matches(det("syn_flood", "9.9.9.9", "10.0.0.1"), Truth("syn_flood", "many", "10.0.0.1"))
    assert matches(
        det("beacon", "fd00::1", "2001:db8::7:443"), Truth("beacon", "fd00::1", "2001:db8::7")
    )


def test_score_counts_recall_precision_and_tolerated_findings(tmp_path):
    sc = Scenario(
        "port_scan",
        1,
        tmp_path / "x.pcap",
        (Truth("port_scan", "a", "b"), Truth("beacon", "a", "c", required=False)),
        10,
        0.0,
        1.0,
    )
    benign = Scenario("benign", 1, tmp_path / "y.pcap", (), 10, 0.0, 1.0)
    results = [
        ScenarioResult(
            sc,
            5,
            [
                det("port_scan", "a", "b"),
                det("port_scan", "a", "b"),
                det("beacon", "a", "c"),
                det("udp_flood", "z", "b"),
            ],
        ),
        ScenarioResult(benign, 5, [det("port_scan", "q", "r")]),
    ]
    s = score(results)
    assert (s["port_scan"].truths, s["port_scan"].found) == (1, 1)
    assert (s["port_scan"].detections, s["port_scan"].correct) == (2, 1)  # duplicate folded
    assert s["beacon"].truths == 0 and s["beacon"].correct == 1
    assert s["udp_flood"].precision == 0


def test_scenarios_end_to_end(tmp_path):
    kinds = ["benign", "port_scan", "syn_flood_spoofed", "brute_force"]
    results, _ = run_scenarios([3], kinds, tmp_path, DetectorsConfig(), duration=240, intensity=0.4)
    by_kind = {r.scenario.kind: r for r in results}
    assert by_kind["benign"].detections == []
    s = score(results)
    for name in ("port_scan", "syn_flood", "brute_force"):
        assert s[name].recall == 1.0 and s[name].precision == 1.0, name


@pytest.mark.skipif(not PCAPS.is_dir(), reason="shared captures not available")
def test_real_captures_expected_detections(tmp_path):
    for name in ("synscan.pcap", "icmp.pcap", "gnutella.pcap"):
        shutil.copy(PCAPS / name, tmp_path / name)
    rows = {r["file"]: r for r in run_real(tmp_path, DetectorsConfig())}
    assert rows["synscan.pcap"]["detections"] == {"port_scan": 1}
    assert rows["gnutella.pcap"]["detections"] == {}
    assert all(r["ok"] for r in rows.values())


def test_cli_prints_table_and_exit_code(capsys):
    rc = main(["evaluate", "--seeds", "1", "--kinds", "benign", "icmp_sweep", "--pcaps", ""])
    out = capsys.readouterr().out
    assert rc == 0
    assert "address_sweep" in out and "recall" in out and "bars:" in out


def test_without_pcaps_real_captures_are_skipped_not_passed(capsys):
    rc = main(["evaluate", "--seeds", "1", "--kinds", "benign"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "real captures: skipped (no --pcaps directory given)" in out
    assert "real captures as expected" not in out


def test_pcaps_that_is_not_a_directory_is_refused(tmp_path, capsys):
    rc = main(["evaluate", "--seeds", "1", "--kinds", "benign", "--pcaps", str(tmp_path / "no")])
    assert rc == 2
    assert "is not a directory" in capsys.readouterr().err
