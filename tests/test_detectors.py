"""Detectors on hand-built flow batches: each fires on its behaviour and stays quiet on look-alikes."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from functools import partial

import numpy as np
import pytest

from netmon_exporter import metrics
from netmon_exporter.analysis import Analyzer
from netmon_exporter.config import DetectorsConfig, ModelsConfig
from netmon_exporter.detection import SEVERITIES
from netmon_exporter.detectors import REGISTRY, Detector, build_detector
from netmon_exporter.detectors.address_sweep import AddressSweepDetector
from netmon_exporter.detectors.beacon import BeaconDetector
from netmon_exporter.detectors.brute_force import BruteForceDetector
from netmon_exporter.detectors.dns_tunnel import (
    DnsTunnelDetector,
    registered_domain,
    shannon_entropy,
)
from netmon_exporter.detectors.features import factorize_addrs
from netmon_exporter.detectors.flood_rate import peak_rate
from netmon_exporter.detectors.icmp_flood import IcmpFloodDetector
from netmon_exporter.detectors.port_scan import PortScanDetector
from netmon_exporter.detectors.syn_flood import SynFloodDetector
from netmon_exporter.detectors.udp_flood import UdpFloodDetector
from netmon_exporter.flow_schema import FlowBatch, addrs_to_str, str_to_addrs
from tests.helpers import column, rows_batch

CFG = DetectorsConfig()
T0 = 1_700_000_040.0  # a window boundary for 60 s windows


def flows(rows: list[dict]) -> FlowBatch:
    """Build a batch from row dicts; unspecified fields take the values of a completed TCP flow."""
    d = {
        "src": "10.0.0.1",
        "dst": "10.0.0.2",
        "sport": 40000,
        "dport": 80,
        "proto": 6,
        "ts": T0,
        "dur": 0.5,
        "fwd": 5,
        "bwd": 5,
        "fwd_bytes": 300,
        "bwd_bytes": 1500,
        "fwd_syn": 1,
        "bwd_syn": 1,
        "fwd_rst": 0,
        "bwd_rst": 0,
        "itype": np.nan,
        "qname": "",
    }
    rows = [{**d, **r} for r in rows]
    c = partial(column, rows)
    columns = {
        "Tot Fwd Pkts": c("fwd"),
        "Tot Bwd Pkts": c("bwd"),
        "TotLen Fwd Pkts": c("fwd_bytes"),
        "TotLen Bwd Pkts": c("bwd_bytes"),
        "Flow Duration": [r["dur"] * 1e6 for r in rows],
        "fwd_syn_cnt": c("fwd_syn"),
        "bwd_syn_cnt": c("bwd_syn"),
        "fwd_rst_cnt": c("fwd_rst"),
        "bwd_rst_cnt": c("bwd_rst"),
        "icmp_type": c("itype"),
        "dns_qname": c("qname"),
    }
    return rows_batch(rows, last_ts=[r["ts"] + r["dur"] for r in rows], **columns)


HALF_OPEN = {"fwd": 1, "bwd": 1, "fwd_bytes": 0, "bwd_bytes": 0, "bwd_syn": 0, "bwd_rst": 1}
UNANSWERED = {"fwd": 2, "bwd": 0, "fwd_bytes": 0, "bwd_bytes": 0, "fwd_syn": 2, "bwd_syn": 0}
UDP = {"proto": 17, "fwd_syn": 0, "bwd_syn": 0}


def run(det, batch: FlowBatch, start: float = T0, length: float = 60.0):
    """Run one window; every detection must carry exactly the evidence its spec declares."""
    found = det.detect(batch, start, start + length)
    for d in found:
        assert list(d.evidence) == list(REGISTRY[d.detector].evidence), d.detector
    return found


def every_detector(cfg) -> list[Detector]:
    return [build_detector(name, cfg) for name in REGISTRY]


# ---------------------------------------------------------------- registry and helpers


def test_config_section_and_metric_labels_derive_from_the_registry():
    assert [f.name for f in dataclasses.fields(DetectorsConfig)] == list(REGISTRY)
    assert (*REGISTRY, *metrics.MODEL_KINDS) == metrics.DETECTORS
    built = every_detector(CFG)
    assert [d.name for d in built] == list(REGISTRY)
    assert all(isinstance(d, Detector) for d in built)
    for spec in REGISTRY.values():
        assert isinstance(getattr(CFG, spec.name), spec.settings)
        settings = {f.name: f for f in dataclasses.fields(spec.settings)}
        assert settings["enabled"].default is True, spec.name
        assert settings["severity"].metadata["choices"] == SEVERITIES, spec.name
        assert spec.evidence and "threshold" in "".join(spec.evidence), spec.name


def test_the_catalog_imports_no_implementation_or_numpy():
    code = (
        "import sys, netmon_exporter.config, netmon_exporter.detectors;"
        "print(sorted(m for m in sys.modules if m.startswith(('numpy', 'netmon_exporter.'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert "numpy" not in out and "port_scan" not in out and "netmon_exporter.config" in out


def test_analyzer_skips_disabled_detectors(tmp_path):
    cfg = dataclasses.replace(CFG, beacon=dataclasses.replace(CFG.beacon, enabled=False))
    names = [d.name for d in Analyzer(cfg, ModelsConfig(), tmp_path).detectors]
    assert names == [n for n in REGISTRY if n != "beacon"]


def test_factorize_addrs_mixed_families_round_trips():
    addrs = str_to_addrs(["10.0.0.2", "2001:db8::1", "10.0.0.1", "2001:db8::1", "10.0.0.2"])
    codes, table = factorize_addrs(addrs)
    assert len(table) == 3
    assert codes[0] == codes[4] and codes[1] == codes[3]
    assert addrs_to_str(table[codes]) == addrs_to_str(addrs)


@pytest.mark.parametrize("seed", range(4))
def test_unique_columns_answers_as_numpy_unique_over_rows(seed: int) -> None:
    from netmon_exporter.detectors.base import unique_columns

    rng = np.random.default_rng(seed)
    for n in (0, 1, 2, 50, 3000):
        k = int(rng.integers(1, 4))
        cols = [rng.integers(0, 6, n).astype(np.uint64) * np.uint64(2**61) for _ in range(k)]
        cols[-1] = cols[-1] + rng.integers(0, 3, n).astype(np.uint64)  # repeats, big values
        got, first = unique_columns(*cols)
        want, want_first = np.unique(np.stack(cols), axis=1, return_index=True)
        assert got.dtype == want.dtype and np.array_equal(got, want)
        assert np.array_equal(first, want_first)


def test_peak_rate_is_not_diluted_by_a_quiet_window():
    # 5000 packets in 2 s inside a 60 s window: about 2500/s, not 83/s
    first = np.array([100.0, 130.0])
    last = np.array([102.0, 130.1])
    assert peak_rate(first, last, np.array([5000.0, 10.0])) == pytest.approx(5000 / 3, rel=0.01)


def test_registered_domain_and_entropy():
    assert registered_domain("a.b.example.com") == "example.com"
    assert registered_domain("x.y.example.co.uk") == "example.co.uk"
    assert shannon_entropy("aaaa") == 0
    assert shannon_entropy("abcd") == pytest.approx(2.0)


# ---------------------------------------------------------------- port scan


def test_port_scan_found_with_evidence():
    batch = flows(
        [
            {**HALF_OPEN, "src": "10.0.0.66", "dst": "10.0.0.9", "dport": p, "ts": T0 + p * 0.1}
            for p in range(1, 21)
        ]
    )
    (d,) = run(PortScanDetector(CFG.port_scan), batch)
    assert (d.detector, d.source, d.target) == ("port_scan", "10.0.0.66", "10.0.0.9")
    assert d.evidence["distinct_ports"] == 20 and d.evidence["reset"] == 20
    assert d.severity == CFG.port_scan.severity


def test_port_scan_below_threshold_is_quiet():
    batch = flows([{**HALF_OPEN, "dport": p} for p in range(1, 15)])
    assert run(PortScanDetector(CFG.port_scan), batch) == []


def test_slow_port_scan_accumulates_across_windows_within_horizon():
    det = PortScanDetector(CFG.port_scan)
    w1 = flows([{**UNANSWERED, "dport": p, "ts": T0 + p} for p in range(1, 11)])
    w2 = flows([{**UNANSWERED, "dport": p, "ts": T0 + 60 + p} for p in range(11, 21)])
    assert run(det, w1) == []
    (d,) = run(det, w2, T0 + 60)
    assert d.evidence["distinct_ports"] == 20 and d.evidence["probes_in_window"] == 10


def test_slow_port_scan_beyond_horizon_is_forgotten():
    det = PortScanDetector(CFG.port_scan)
    run(det, flows([{**UNANSWERED, "dport": p, "ts": T0 + p} for p in range(1, 11)]))
    late = T0 + 600
    assert (
        run(det, flows([{**UNANSWERED, "dport": p, "ts": late + p} for p in range(11, 21)]), late)
        == []
    )


def test_client_using_many_services_is_not_a_scan():
    batch = flows([{"dport": p, "ts": T0 + p} for p in range(1, 40)])  # completed, with data
    assert run(PortScanDetector(CFG.port_scan), batch) == []


# ---------------------------------------------------------------- address sweep


def test_tcp_sweep_found():
    batch = flows(
        [
            {**UNANSWERED, "src": "10.0.0.66", "dst": f"10.1.0.{i}", "dport": 445}
            for i in range(1, 31)
        ]
    )
    (d,) = run(AddressSweepDetector(CFG.address_sweep), batch)
    assert (d.source, d.target, d.evidence["distinct_hosts"]) == ("10.0.0.66", "tcp/445", 30)


def test_icmp_echo_sweep_found_even_when_answered_after_the_poller_hold():
    batch = flows(
        [
            {
                "proto": 1,
                "src": "10.0.0.66",
                "dst": f"10.1.0.{i}",
                "dport": 0x0800,
                "sport": 0,
                "itype": 8,
                "fwd": 1,
                "bwd": 1,
                "fwd_syn": 0,
                "bwd_syn": 0,
            }
            for i in range(1, 31)
        ]
    )
    det = AddressSweepDetector(CFG.address_sweep)
    assert run(det, batch) == []  # mostly answered: held so that a poller can show itself
    found, start = [], T0
    while not found and start < T0 + 2 * CFG.address_sweep.poller_hold_seconds:
        start += 60
        found = run(det, flows([]), start)
    (d,) = found  # nobody came back to those hosts: a sweep, reported once the hold is over
    assert start - T0 >= CFG.address_sweep.poller_hold_seconds - 60
    assert d.target == "icmp/echo" and d.evidence["answered"] == 30


def test_udp_to_multicast_groups_is_not_a_sweep():
    batch = flows(
        [
            {
                **UDP,
                "dst": f"239.255.{i}.250",
                "dport": 1900,
                "fwd": 1,
                "bwd": 0,
            }
            for i in range(1, 40)
        ]
    )
    assert run(AddressSweepDetector(CFG.address_sweep), batch) == []


# ---------------------------------------------------------------- SYN flood


def test_spoofed_syn_flood_names_victim_and_many_sources():
    batch = flows(
        [
            {
                **UNANSWERED,
                "fwd": 1,
                "fwd_syn": 1,
                "src": f"10.{i // 250}.{i % 250}.1",
                "dst": "192.0.2.10",
                "dport": 25565,
                "ts": T0 + i * 0.01,
            }
            for i in range(400)
        ]
    )
    (d,) = run(SynFloodDetector(CFG.syn_flood), batch)
    assert (d.source, d.target) == ("many", "192.0.2.10")
    assert d.evidence["spoofed"] and d.evidence["half_open"] == 400
    assert d.evidence["dst_port"] == 25565


def test_single_source_syn_flood_names_attacker():
    batch = flows(
        [
            {**HALF_OPEN, "src": "10.0.0.66", "sport": 1024 + i, "dst": "192.0.2.10", "dport": 80}
            for i in range(300)
        ]
    )
    (d,) = run(SynFloodDetector(CFG.syn_flood), batch)
    assert d.source == "10.0.0.66" and not d.evidence["spoofed"]


def test_fast_port_scan_is_not_a_syn_flood():
    batch = flows([{**HALF_OPEN, "dport": p} for p in range(1, 1001)])
    assert run(SynFloodDetector(CFG.syn_flood), batch) == []


def test_busy_server_with_some_half_open_is_not_a_flood():
    rows = [{"src": f"10.0.{i // 250}.{i % 250}", "sport": 2000 + i} for i in range(1500)]
    rows += [{**HALF_OPEN, "src": f"10.9.{i // 250}.{i % 250}"} for i in range(250)]
    assert run(SynFloodDetector(CFG.syn_flood), flows(rows)) == []


# ---------------------------------------------------------------- UDP / ICMP floods


def test_udp_flood_found_and_rate_in_evidence():
    batch = flows(
        [
            {
                **UDP,
                "src": "10.0.0.66",
                "sport": 5000 + i,
                "dst": "192.0.2.20",
                "dport": 53,
                "fwd": 2000,
                "bwd": 0,
                "dur": 2.0,
                "ts": T0 + 10 + i * 0.2,
            }
            for i in range(10)
        ]
    )
    (d,) = run(UdpFloodDetector(CFG.udp_flood), batch)
    assert (d.source, d.target) == ("10.0.0.66", "192.0.2.20")
    assert d.evidence["peak_packets_per_second"] >= 1000 and d.evidence["reply_ratio"] == 0


def test_answered_bulk_udp_is_not_a_flood():
    # a QUIC upload: lots of packets, but the server acknowledges a good share
    batch = flows(
        [
            {
                **UDP,
                "dport": 443,
                "fwd": 20000,
                "bwd": 8000,
                "dur": 5.0,
            }
        ]
    )
    assert run(UdpFloodDetector(CFG.udp_flood), batch) == []


def test_busy_telemetry_collector_is_not_a_flood():
    batch = flows(
        [
            {
                **UDP,
                "src": f"10.5.0.{i}",
                "dst": "10.0.0.9",
                "dport": 2055,
                "fwd": 2000,
                "bwd": 0,
                "dur": 1.0,
            }
            for i in range(1, 6)
        ]
    )
    assert run(UdpFloodDetector(CFG.udp_flood), batch) == []
    keep_all = dataclasses.replace(CFG.udp_flood, ignore_ports=())
    assert len(run(UdpFloodDetector(keep_all), batch)) == 1


def test_slow_udp_is_not_a_flood():
    batch = flows(
        [
            {
                **UDP,
                "dport": 514,
                "fwd": 5000,
                "bwd": 0,
                "dur": 59.0,
            }
        ]
    )
    assert run(UdpFloodDetector(CFG.udp_flood), batch) == []


def test_icmp_flood_found_even_if_answered():
    batch = flows(
        [
            {
                "proto": 1,
                "src": "10.0.0.66",
                "dst": "192.0.2.30",
                "dport": 0x0800,
                "sport": i,
                "itype": 8,
                "fwd": 1000,
                "bwd": 1000,
                "dur": 1.0,
                "fwd_syn": 0,
                "bwd_syn": 0,
                "ts": T0 + i,
            }
            for i in range(3)
        ]
    )
    (d,) = run(IcmpFloodDetector(CFG.icmp_flood), batch)
    assert (d.source, d.target) == ("10.0.0.66", "192.0.2.30")


def test_icmp_errors_are_not_a_flood():
    batch = flows(
        [
            {
                "proto": 1,
                "dport": 0x0303,
                "itype": 3,
                "fwd": 3000,
                "bwd": 0,
                "dur": 1.0,
                "fwd_syn": 0,
                "bwd_syn": 0,
            }
        ]
    )
    assert run(IcmpFloodDetector(CFG.icmp_flood), batch) == []


# ---------------------------------------------------------------- brute force


def _ssh(
    n: int, start: float = T0, step: float = 5.0, pkts: int = 20, received: int = 1500
) -> FlowBatch:
    return flows(
        [
            {
                "src": "10.0.0.66",
                "dst": "10.0.0.22",
                "dport": 22,
                "sport": 50000 + i,
                "fwd": pkts // 2,
                "bwd": pkts // 2,
                "bwd_bytes": received,
                "ts": start + i * step,
                "dur": 2.4,  # a refused password: PAM's 2-s failure delay inside
            }
            for i in range(n)
        ]
    )


def test_brute_force_found():
    (d,) = run(BruteForceDetector(CFG.brute_force), _ssh(6))
    assert (d.source, d.target) == ("10.0.0.66", "10.0.0.22:22")
    assert d.evidence["attempts"] == 6 and d.evidence["service"] == "ssh"


def test_few_logins_or_long_sessions_are_not_brute_force():
    assert run(BruteForceDetector(CFG.brute_force), _ssh(4)) == []
    long = _ssh(10, pkts=900, received=400_000)  # interactive sessions
    assert run(BruteForceDetector(CFG.brute_force), long) == []


def test_brute_force_counts_across_windows_within_horizon():
    det = BruteForceDetector(CFG.brute_force)
    assert run(det, _ssh(3, T0 + 40)) == []
    (d,) = run(det, _ssh(3, T0 + 65), T0 + 60)
    assert d.evidence["attempts"] == 6 and d.evidence["attempts_in_window"] == 3


# ---------------------------------------------------------------- DNS tunnel


def _dns(names: list[str], src: str = "10.0.0.66") -> FlowBatch:
    return flows(
        [
            {
                **UDP,
                "src": src,
                "dst": "10.0.0.53",
                "dport": 53,
                "sport": 30000 + i,
                "fwd": 1,
                "bwd": 1,
                "qname": q,
                "ts": T0 + i * 0.5,
            }
            for i, q in enumerate(names)
        ]
    )


def test_dns_tunnel_found():
    rng = np.random.default_rng(3)
    alphabet = np.array(list("abcdefghijklmnopqrstuvwxyz234567"))
    names = ["".join(rng.choice(alphabet, 50)) + ".t.evil-c2.com" for _ in range(60)]
    (d,) = run(DnsTunnelDetector(CFG.dns_tunnel), _dns(names))
    assert (d.source, d.target) == ("10.0.0.66", "evil-c2.com")
    assert d.evidence["unique_names"] == 60 and d.evidence["suspicious_share"] == 1.0


def test_many_ordinary_names_and_reverse_lookups_are_not_tunnels():
    normal = [f"host{i}.example.com" for i in range(80)]
    arpa = [
        ".".join("0123456789abcdef"[(i * 7 + j) % 16] for j in range(32)) + ".ip6.arpa"
        for i in range(80)
    ]
    det = DnsTunnelDetector(CFG.dns_tunnel)
    assert run(det, _dns(normal)) == []
    assert run(det, _dns(arpa)) == []


# ---------------------------------------------------------------- beacon


def _beacon_windows(intervals: np.ndarray, sizes: np.ndarray) -> list:
    det = BeaconDetector(CFG.beacon)
    ts = T0 + np.cumsum(intervals)
    found = []
    for w in range(int(ts.max() // 60 - T0 // 60) + 1):
        start = T0 + 60 * w
        sel = (ts >= start) & (ts < start + 60)
        batch = flows(
            [
                {
                    "src": "10.0.0.66",
                    "dst": "198.51.100.7",
                    "dport": 443,
                    "sport": 40000 + i,
                    "ts": float(t),
                    "fwd_bytes": float(s),
                }
                for i, (t, s) in enumerate(zip(ts[sel], sizes[sel], strict=True))
            ]
        )
        found += run(det, batch, start)
    return found


def test_regular_beacon_found():
    rng = np.random.default_rng(1)
    found = _beacon_windows(30 * (1 + rng.uniform(-0.03, 0.03, 25)), 400 + rng.integers(0, 20, 25))
    assert found and found[0].source == "10.0.0.66" and found[0].target == "198.51.100.7:443"
    assert found[0].evidence["connections"] >= CFG.beacon.min_connections


def test_beacon_with_a_missed_beat_is_still_found():
    rng = np.random.default_rng(6)
    intervals = 40 * (1 + rng.uniform(-0.02, 0.02, 14))
    intervals[6] *= 2  # one beat lost
    found = _beacon_windows(intervals, np.full(14, 300))
    assert found and found[-1].evidence["interval_dispersion"] < 0.1


def test_group_median_mad():
    from netmon_exporter.detectors.beacon import group_median_mad

    med, mad = group_median_mad(np.array([1.0, 2, 3, 100, 5, 5]), np.array([0, 0, 0, 0, 1, 1]), 3)
    assert med[:2].tolist() == [2.5, 5.0] and mad[:2].tolist() == [1.0, 0.0]
    assert np.isnan(med[2])


def test_irregular_contacts_are_not_beacons():
    rng = np.random.default_rng(2)
    assert _beacon_windows(rng.exponential(30, 20), np.full(20, 400)) == []
    assert _beacon_windows(np.full(20, 30.0), rng.integers(100, 5000, 20)) == []


def test_peer_to_peer_exemption_needs_answered_peers_not_unanswered_decoys():
    rng = np.random.default_rng(4)
    ports = rng.choice(np.arange(1024, 65535), 80, replace=False)
    udp = {**UDP, "src": "10.0.0.15", "fwd_bytes": 60}
    sweep = [
        {**udp, "dst": f"10.3.{i}.1", "dport": 6346, "fwd": 1, "bwd": 0, "bwd_bytes": 0}
        for i in range(30)
    ]
    # A Gnutella/DHT overlay: peers on their own random ports, answering.
    peers = [
        {**udp, "dst": f"10.2.{i}.1", "dport": int(ports[i]), "fwd": 2, "bwd": 2} for i in range(40)
    ]
    decoys = [{**p, "bwd": 0, "bwd_bytes": 0} for p in peers]  # the same, never answered
    assert run(AddressSweepDetector(CFG.address_sweep), flows(peers + sweep)) == []
    (d,) = run(AddressSweepDetector(CFG.address_sweep), flows(decoys + sweep))
    assert d.target == "udp/6346"
    off = dataclasses.replace(CFG.address_sweep, p2p_min_ports=0)
    (d,) = run(AddressSweepDetector(off), flows(peers + sweep))
    assert d.target == "udp/6346"
    # An overlay member's sweep of a privileged or TCP service is judged on its own.
    smb = [
        {**UNANSWERED, "src": "10.0.0.15", "dst": f"10.4.0.{i}", "dport": 445} for i in range(30)
    ]
    (d,) = run(AddressSweepDetector(CFG.address_sweep), flows(peers + smb))
    assert d.target == "tcp/445"


# ---------------------------------------------------------------- robustness


def test_all_detectors_accept_empty_batches_and_missing_columns():
    from netmon_exporter.flow_schema import FlowBatch

    sparse = FlowBatch(
        {
            "src_ip": str_to_addrs(["10.0.0.1"] * 3),
            "dst_ip": str_to_addrs(["10.0.0.2"] * 3),
            "src_port": np.array([1, 2, 3], dtype=np.uint16),
            "dst_port": np.array([22, 53, 80], dtype=np.uint16),
            "protocol": np.array([6, 17, 1], dtype=np.uint8),
            "first_ts": np.full(3, T0),
            "last_ts": np.full(3, T0 + 1),
        }
    )
    for det in every_detector(CFG):
        assert det.detect(FlowBatch.empty(), T0, T0 + 60) == []
        assert det.detect(sparse, T0, T0 + 60) == []


def test_random_batches_never_crash_and_evidence_is_json():
    import json

    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    low = dataclasses.replace(
        CFG,
        port_scan=dataclasses.replace(CFG.port_scan, min_ports=2),
        address_sweep=dataclasses.replace(CFG.address_sweep, min_hosts=2),
        syn_flood=dataclasses.replace(CFG.syn_flood, min_half_open=1, min_ratio=0.0),
        udp_flood=dataclasses.replace(CFG.udp_flood, min_packets=1, min_packets_per_second=1),
        icmp_flood=dataclasses.replace(CFG.icmp_flood, min_packets=1, min_packets_per_second=1),
        brute_force=dataclasses.replace(CFG.brute_force, min_attempts=2),
        dns_tunnel=dataclasses.replace(
            CFG.dns_tunnel,
            min_unique_subdomains=2,
            min_suspicious_share=0.0,
            min_volume_names=2,
            min_volume_bytes=0,
            min_fresh_share=0.0,
            min_active_minutes=1,
        ),
        beacon=dataclasses.replace(
            CFG.beacon,
            min_connections=3,
            min_score=0,
            min_timing_score=0,
            min_size_score=0,
            min_interval_seconds=0,
        ),
    )
    row = st.fixed_dictionaries(
        {
            "src": st.sampled_from(["10.0.0.1", "10.0.0.2", "fd00::1"]),
            "dst": st.sampled_from(["10.0.0.3", "10.0.0.4", "2001:db8::1", "239.1.1.1"]),
            "dport": st.sampled_from([0, 22, 53, 80, 0x0800]),
            "proto": st.sampled_from([1, 6, 17, 58]),
            "ts": st.floats(T0 - 1000, T0 + 59),
            "dur": st.floats(0, 100),
            "fwd": st.integers(0, 3000),
            "bwd": st.integers(0, 3000),
            "fwd_bytes": st.sampled_from([0, 10, np.nan]),
            "fwd_syn": st.sampled_from([0, 1, np.nan]),
            "bwd_syn": st.sampled_from([0, 1]),
            "bwd_rst": st.sampled_from([0, 1]),
            "qname": st.sampled_from(
                ["", "a.example.com", "x" * 50 + ".evil.com", "1.in-addr.arpa"]
            ),
        }
    )

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.lists(row, min_size=1, max_size=40))
    def check(rows):
        batch = flows(rows)
        for det in every_detector(low):
            for d in det.detect(batch, T0, T0 + 60):
                json.dumps(d.to_dict(), allow_nan=False)
                assert d.detector == det.name and d.source and d.target
                assert list(d.evidence) == list(REGISTRY[det.name].evidence), det.name

    check()


def test_beacon_history_stays_sorted_and_bounded():
    cfg = dataclasses.replace(CFG.beacon, max_state_rows=1000, horizon_seconds=120)
    det = BeaconDetector(cfg)
    rng = np.random.default_rng(8)
    for w in range(6):
        start = T0 + 60 * w
        batch = flows(
            [
                {
                    "src": f"10.0.{i % 7}.{i % 5}",
                    "dst": "198.51.100.2",  # outside: pairs inside the site are not judged
                    "dport": int(p),
                    "ts": start + float(t),
                }
                for i, (p, t) in enumerate(
                    zip(rng.integers(1, 9, 400), rng.uniform(0, 60, 400), strict=True)
                )
            ]
        )
        det.detect(batch, start, start + 60)
        assert len(det) <= 1000
        assert (det._key[1:] >= det._key[:-1]).all()
        assert det._ts.min() >= start + 60 - 120


# ---------------------------------------------------------------- adding a detector

# A throwaway detector, declared and implemented in one file for the test's sake (in the
# package the declaration half goes to detectors/catalog.py, the rest to detectors/<name>.py).
LOUD_HOST = """
from collections import Counter
from dataclasses import dataclass

from netmon_exporter.detection import SEVERITIES, Detection
from netmon_exporter.detectors.catalog import DetectorSpec
from netmon_exporter.flow_schema import addrs_to_str
from netmon_exporter.setting import setting


@dataclass(frozen=True)
class LoudHostConfig:
    enabled: bool = setting(True, "A source starting many flows in one window.")
    min_flows: int = setting(1000, "Flows from one source in a window.", min=1, max=10**9)
    severity: str = setting("info", "Severity of detections.", choices=SEVERITIES)


class LoudHostDetector:
    name = "loud_host"

    def __init__(self, cfg):
        self.cfg = cfg

    def detect(self, flows, window_start, window_end):
        counts = Counter(addrs_to_str(flows["src_ip"]))
        return [
            Detection(self.name, self.cfg.severity, src, "any", window_start, window_end,
                      {"flows": n, "threshold": self.cfg.min_flows}, f"{src} started {n} flows")
            for src, n in counts.items() if n >= self.cfg.min_flows
        ]


SPEC = DetectorSpec(
    name="loud_host",
    settings=LoudHostConfig,
    help="Loud hosts.",
    implementation="loud_host:LoudHostDetector",
    evidence={"flows": "Flows the source started.", "threshold": "min_flows."},
    peak_evidence="flows",
)
"""

PROBE = """
import sys, tempfile
sys.path.insert(0, sys.argv[1])
import loud_host
from netmon_exporter.detectors import catalog
catalog.REGISTRY.update(catalog.registry(loud_host.SPEC))  # the registry line

from prometheus_client import CollectorRegistry
from netmon_exporter import metrics
from netmon_exporter.analysis import Analyzer
from netmon_exporter.config import ConfigError, ModelsConfig, parse_config
from netmon_exporter.flow_schema import make_batch, str_to_addrs
from netmon_exporter.tools import evaluate, reference_docs

cfg = parse_config("detectors:\\n  loud_host:\\n    min_flows: 3\\n", check_paths=False)
assert cfg.detectors.loud_host.min_flows == 3 and cfg.detectors.port_scan.min_ports == 15
try:
    parse_config("detectors:\\n  loud_host:\\n    min_flows: 0\\n", check_paths=False)
except ConfigError as exc:
    assert exc.errors == ["detectors.loud_host.min_flows: 0 is below the minimum 1"], exc.errors
else:
    raise AssertionError("min_flows: 0 was accepted")

assert metrics.DETECTORS[-3:] == ("loud_host", "anomaly", "classifier")
reg = CollectorRegistry()
metrics.build_metrics(reg)
labels = {"detector": "loud_host", "severity": "info"}
assert reg.get_sample_value("netmon_detections_total", labels) == 0

assert "  loud_host:  # Loud hosts." in reference_docs.render_yaml()
assert "`detectors.loud_host.min_flows` | `1000` | 1–" in reference_docs.render_markdown()
assert "## `loud_host`: Loud hosts." in reference_docs.render_detectors_markdown()
assert "`loud_host`" in reference_docs.render_metrics_markdown()

batch = make_batch(4, src_ip=str_to_addrs(["10.0.0.9"] * 4), dst_ip=str_to_addrs(["10.0.0.1"] * 4))
with tempfile.TemporaryDirectory() as tmp:
    found = Analyzer(cfg.detectors, ModelsConfig(), tmp).analyse(batch, 0.0, 60.0).detections
assert [(d.detector, d.source, d.evidence) for d in found] == [
    ("loud_host", "10.0.0.9", {"flows": 4, "threshold": 3})
], found

assert "loud_host" in evaluate.JUDGED
assert any(row.startswith("loud_host ") for row in evaluate.format_scores({}))
print("ok")
"""


def test_a_new_detector_is_its_module_plus_one_registry_line(tmp_path):
    """Config schema, metric labels, reference docs, analysis and evaluation follow the registry."""
    (tmp_path / "loud_host.py").write_text(LOUD_HOST, encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, str(tmp_path)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stdout + proc.stderr
