"""Flood detectors across windows: sliding spans, baselines, attack shapes, severities.

Issues 11 and 13: floods are reported where they start, bursts cut by a window boundary
count whole, a flood at a busy server is judged against the port's own baseline, and a
steady stream (cameras to a recorder) is not a flood.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from netmon_exporter.analysis import Analyzer
from netmon_exporter.config import DetectorsConfig, ModelsConfig
from netmon_exporter.detectors import REGISTRY
from netmon_exporter.detectors.icmp_flood import IcmpFloodDetector
from netmon_exporter.detectors.syn_flood import SynFloodDetector
from netmon_exporter.detectors.udp_flood import UdpFloodDetector
from netmon_exporter.flow_schema import RECORD_SLICE, RECORD_WHOLE, FlowBatch

from .test_detectors import HALF_OPEN, flows

CFG = DetectorsConfig()
T0 = 1_700_000_040.0  # a window boundary (60 s windows)
W = 60.0


def run(det, batch: FlowBatch, window: int):  # noqa: ANN001, ANN201
    start = T0 + window * W
    found = det.detect(batch, start, start + W)
    for d in found:
        assert list(d.evidence) == list(REGISTRY[d.detector].evidence), d.detector
    return found


def syns(
    n: int, t0: float, t1: float, dst: str = "192.0.2.10", src: str = "10.0.0.66"
) -> list[dict]:
    ts = np.linspace(t0, t1, n, endpoint=False)
    return [
        {
            **HALF_OPEN,
            "src": src,
            "sport": 1024 + i,
            "dst": dst,
            "dport": 443,
            "ts": float(t),
            "dur": 0,
        }
        for i, t in enumerate(ts)
    ]


def completed(n: int, t0: float, t1: float, dst: str = "192.0.2.10") -> list[dict]:
    ts = np.linspace(t0, t1, n, endpoint=False)
    return [
        {
            "src": f"10.1.{i // 250}.{i % 250}",
            "sport": 2000 + i,
            "dst": dst,
            "dport": 443,
            "ts": float(t),
        }
        for i, t in enumerate(ts)
    ]


def udp(
    src: str,
    dst: str,
    pps: float,
    t0: float,
    t1: float,
    sport: int = 5004,
    dport: int = 50000,
    bwd: float = 0,
) -> dict:
    return {
        "proto": 17,
        "src": src,
        "dst": dst,
        "sport": sport,
        "dport": dport,
        "fwd": pps * (t1 - t0),
        "bwd": bwd,
        "ts": t0,
        "dur": t1 - t0,
        "fwd_syn": 0,
        "bwd_syn": 0,
    }


# ---------------------------------------------------------------- SYN floods


def test_a_syn_burst_cut_by_a_window_boundary_counts_whole() -> None:
    det = SynFloodDetector(CFG.syn_flood)
    boundary = T0 + W
    assert run(det, flows(syns(165, boundary - 5, boundary)), 0) == []  # 165 < 200
    (d,) = run(det, flows(syns(165, boundary, boundary + 5)), 1)
    assert d.evidence["half_open"] == 330 and d.evidence["reason"] == "ratio"
    assert d.window_start == boundary
    # without the seconds kept from the window before, half a burst is not a flood
    fresh = SynFloodDetector(CFG.syn_flood)
    assert run(fresh, flows(syns(165, boundary, boundary + 5)), 1) == []


def test_four_split_bursts_are_each_found() -> None:
    det = SynFloodDetector(CFG.syn_flood)
    found = []
    for w in range(8):
        start = T0 + w * W
        rows = syns(165, start, start + 4) if w % 2 == 1 else []  # second halves
        rows += syns(165, start + W - 4, start + W) if w % 2 == 0 else []  # first halves
        rows += completed(5, start, start + W, dst="192.0.2.99")  # other traffic
        found += run(det, flows(rows), w)
    assert [int((d.window_start - T0) // W) for d in found] == [1, 3, 5, 7]


def test_a_flood_at_a_busy_server_is_found_against_its_baseline() -> None:
    det = SynFloodDetector(CFG.syn_flood)
    for w in range(5):  # 200 completed connections a minute, 2 failed
        start = T0 + w * W
        rows = completed(200, start, start + W) + syns(2, start, start + 10, src="10.7.7.7")
        assert run(det, flows(rows), w) == []
    start = T0 + 5 * W
    rows = completed(200, start, start + W) + syns(400, start, start + W)  # 67 % half-open
    (d,) = run(det, flows(rows), 5)
    assert d.evidence["reason"] == "rise" and 0.6 < d.evidence["half_open_ratio"] < 0.7
    assert d.evidence["baseline_half_open_ratio"] < 0.05
    assert d.source == "10.0.0.66" and d.target == "192.0.2.10"
    # the same window without a baseline: 67 % is below the 80 % rule
    assert run(SynFloodDetector(CFG.syn_flood), flows(rows), 5) == []


def test_a_busy_server_with_its_usual_failures_stays_quiet() -> None:
    det = SynFloodDetector(CFG.syn_flood)
    for w in range(10):  # many clients, 10 % of connections fail, every minute
        start = T0 + w * W
        rows = completed(1800, start, start + W) + [
            {**r, "src": f"10.9.{i // 250}.{i % 250}"}
            for i, r in enumerate(syns(200, start, start + W))
        ]
        assert run(det, flows(rows), w) == []


def test_a_flood_is_reported_in_every_window_it_lasts_with_its_start() -> None:
    det = SynFloodDetector(CFG.syn_flood)
    found = [run(det, flows(syns(500, T0 + w * W, T0 + (w + 1) * W)), w) for w in range(3)]
    assert [len(f) for f in found] == [1, 1, 1]
    assert {f[0].evidence["since"] for f in found} == {T0}


def test_syn_flood_severity_is_critical_only_at_the_critical_rate() -> None:
    (d,) = run(SynFloodDetector(CFG.syn_flood), flows(syns(600, T0, T0 + W)), 0)
    assert d.severity == "warning"
    fast = dataclasses.replace(CFG.syn_flood, critical_half_open_per_second=5)
    (d,) = run(SynFloodDetector(fast), flows(syns(600, T0, T0 + W)), 0)
    assert d.severity == "critical" and d.evidence["half_open_per_second"] == 10


def test_a_syn_flood_whose_syns_carry_data_is_a_syn_flood() -> None:
    # hping3 -S -d 120 --flood: every SYN carries bytes; it opens no connection all the same
    rows = [{**r, "fwd_bytes": 120} for r in syns(600, T0, T0 + W)]
    (d,) = run(SynFloodDetector(CFG.syn_flood), flows(rows), 0)
    assert d.evidence["half_open"] == 600


# ---------------------------------------------------------------- UDP floods

NVR = "10.0.9.20"


def cameras(window: int, extra: list[dict] | None = None) -> FlowBatch:
    start = T0 + window * W
    rows = []
    for k in range(4):
        cam = f"10.0.9.{21 + k}"
        rows.append(udp(cam, NVR, 350, start, start + W, sport=6970, dport=50000 + 2 * k))
        # RTCP: the recorder's receiver reports to the camera (an exchange)
        rows.append(udp(NVR, cam, 0.2, start, start + W, sport=50001 + 2 * k, dport=6971))
    return flows(rows + (extra or []))


def test_ip_cameras_streaming_to_a_recorder_are_not_a_flood() -> None:
    det = UdpFloodDetector(CFG.udp_flood)
    for w in range(10):
        assert run(det, cameras(w), w) == []


def test_a_rise_over_the_recorders_baseline_is_a_flood() -> None:
    det = UdpFloodDetector(CFG.udp_flood)
    for w in range(5):
        assert run(det, cameras(w), w) == []
    start = T0 + 5 * W
    attack = [
        udp(f"203.0.113.{i}", NVR, 400, start, start + W, sport=999, dport=7) for i in range(4)
    ]
    (d,) = run(det, cameras(5, attack), 5)
    assert d.evidence["reason"] == "rise" and d.target == NVR and d.source == "many"
    assert 1300 < d.evidence["baseline_packets_per_second"] < 1500


def test_one_source_at_a_flood_rate_is_a_flood_unless_in_an_exchange() -> None:
    flood = [udp("198.51.100.7", "192.0.2.20", 1500, T0 + 5, T0 + 50, sport=4444, dport=53)]
    (d,) = run(UdpFloodDetector(CFG.udp_flood), flows(flood), 0)
    assert d.evidence["reason"] == "one_source" and d.source == "198.51.100.7"
    assert d.severity == "warning"
    # a transfer whose receiver sends feedback over UDP is an exchange, not a flood
    feedback = flood + [
        udp("192.0.2.20", "198.51.100.7", 50, T0 + 5, T0 + 50, sport=53, dport=4444)
    ]
    assert run(UdpFloodDetector(CFG.udp_flood), flows(feedback), 0) == []


def test_many_sources_are_a_flood_at_once() -> None:
    rows = [udp(f"198.51.{i // 200}.{i % 200}", "192.0.2.20", 40, T0, T0 + 30) for i in range(60)]
    (d,) = run(UdpFloodDetector(CFG.udp_flood), flows(rows), 0)
    assert d.evidence["reason"] == "many_sources" and d.source == "many"


def test_udp_flood_severity_is_critical_only_at_the_critical_rate() -> None:
    flood = [udp("198.51.100.7", "192.0.2.20", 60000, T0 + 5, T0 + 10)]
    (d,) = run(UdpFloodDetector(CFG.udp_flood), flows(flood), 0)
    assert d.severity == "critical"


def test_multicast_streams_are_not_victims() -> None:
    rows = [udp("10.0.0.5", "239.1.1.1", 2000, T0, T0 + W)]
    assert run(UdpFloodDetector(CFG.udp_flood), flows(rows), 0) == []


# ---------------------------------------------------------------- ICMP floods


def test_ping_flood_from_one_source_is_found_however_answered() -> None:
    rows = [
        {
            "proto": 1,
            "src": "198.51.100.9",
            "dst": "192.0.2.30",
            "dport": 0x0800,
            "sport": 0,
            "itype": 8,
            "fwd": 600 * 50,
            "bwd": 600 * 50,
            "ts": T0 + 10,
            "dur": 50.0,
            "fwd_syn": 0,
            "bwd_syn": 0,
        }
    ]
    (d,) = run(IcmpFloodDetector(CFG.icmp_flood), flows(rows), 0)
    assert d.evidence["reason"] == "one_source" and d.source == "198.51.100.9"


# ---------------------------------------------------------------- state and views


def test_flood_state_is_bounded() -> None:
    small = dataclasses.replace(CFG.udp_flood, max_state_rows=100)
    det = UdpFloodDetector(small)
    for w in range(3):
        start = T0 + w * W
        rows = [
            udp("10.0.0.1", f"10.{w}.{i // 250}.{i % 250}", 300, start, start + W)
            for i in range(1000)
        ]
        run(det, flows(rows), w)
        assert len(det.baselines) <= 100 and len(det.spans) <= 100
    syn = SynFloodDetector(dataclasses.replace(CFG.syn_flood, max_state_rows=100))
    rows = [r for i in range(300) for r in syns(20, T0, T0 + W, dst=f"10.5.{i // 250}.{i % 250}")]
    run(syn, flows(rows), 0)
    assert len(syn.baselines) <= 100 and len(syn.spans) <= 100


def test_floods_are_judged_on_slices_and_scans_on_whole_flows(tmp_path: Path) -> None:
    """A long flow's whole record does not count as traffic of the window it ends in."""
    whole = udp("198.51.100.7", "192.0.2.20", 1500, T0 - 600, T0 + 30)  # 10 minutes
    tail = udp("198.51.100.7", "192.0.2.20", 10, T0, T0 + 30)  # its last slice
    batch = flows([whole, tail])
    batch = FlowBatch(
        {**batch.columns, "flow_record": np.array([RECORD_WHOLE, RECORD_SLICE], float)}
    )
    analyzer = Analyzer(CFG, ModelsConfig(), tmp_path)
    result = analyzer.analyse(batch, T0, T0 + W)
    assert [d.detector for d in result.detections] == []
    assert result.flows_analysed == 1  # the whole flow, not its slice
    # the same record read as traffic of this window would have been a flood
    alone = FlowBatch({**batch.columns, "flow_record": np.array([RECORD_SLICE] * 2, float)})
    assert [d.detector for d in analyzer.analyse(alone, T0, T0 + W).detections] == ["udp_flood"]
