"""Beacon detector: RITA-style scoring, what ordinary scheduled traffic is, the suites."""

from __future__ import annotations

import dataclasses
import ipaddress
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from netmon_exporter.config import DetectorsConfig
from netmon_exporter.detection import host_port
from netmon_exporter.detectors import REGISTRY
from netmon_exporter.detectors.beacon import (
    MAX_PERIODIC_ROWS,
    BeaconDetector,
    bowley_skew,
    dispersion_score,
    group_quantiles,
)
from netmon_exporter.flow_schema import FlowBatch
from netmon_exporter.suppression import endpoints
from netmon_exporter.tools.cases_beacon import cs_sleeps
from netmon_exporter.tools.evaluate import analyse_capture, matches
from netmon_exporter.tools.evaluate_suites import run_cases
from netmon_exporter.tools.suites import cases
from tests.helpers import column, hard_case_found, rows_batch

CFG = DetectorsConfig().beacon
T0 = 1_700_000_040.0  # a window boundary for 60 s windows
IMPLANT, C2 = "10.0.0.66", "198.51.100.7"


def batch(rows: list[dict]) -> FlowBatch:
    """Flows from row dicts; defaults: a short completed TCP connection to C2:443."""
    d = {
        "src": IMPLANT,
        "dst": C2,
        "sport": 40000,
        "dport": 443,
        "proto": 6,
        "ts": T0,
        "dur": 0.5,
        "fwd_bytes": 400.0,
        "bwd": 5,
        "idle_mean": np.nan,
        "idle_std": np.nan,
        "active_mean": np.nan,
    }
    rows = [{**d, **r} for r in rows]
    c = partial(column, rows)
    columns = {
        "Tot Fwd Pkts": [5] * len(rows),
        "Tot Bwd Pkts": c("bwd"),
        "TotLen Fwd Pkts": c("fwd_bytes"),
        "Flow Duration": [r["dur"] * 1e6 for r in rows],
        "Idle Mean": [r["idle_mean"] * 1e6 for r in rows],
        "Idle Std": [r["idle_std"] * 1e6 for r in rows],
        "Active Mean": [r["active_mean"] * 1e6 for r in rows],
    }
    return rows_batch(rows, last_ts=[r["ts"] + r["dur"] for r in rows], **columns)


def windows(rows: list[dict], cfg=CFG, det: BeaconDetector | None = None) -> list:
    """Feed rows (with "ts") window by window; return every detection."""
    det = det or BeaconDetector(cfg)
    ts = np.array([r["ts"] for r in rows])
    out = []
    last = int((ts.max() - T0) // 60) + 1 if len(ts) else 1
    for w in range(last):
        start = T0 + 60 * w
        sel = [r for r, t in zip(rows, ts, strict=True) if start <= t < start + 60]
        for d in det.detect(batch(sel) if sel else FlowBatch.empty(), start, start + 60):
            assert list(d.evidence) == list(REGISTRY["beacon"].evidence)
            out.append(d)
    return out


def series(intervals: np.ndarray, sizes: np.ndarray | float = 400.0, **row) -> list[dict]:
    ts = T0 + 1 + np.cumsum(intervals)
    sizes = np.broadcast_to(sizes, ts.shape)
    return [
        {"ts": float(t), "fwd_bytes": float(s), "sport": 40000 + i, **row}
        for i, (t, s) in enumerate(zip(ts, sizes, strict=True))
    ]


# ---------------------------------------------------------------- statistics


def test_group_quantiles_interpolate_like_the_median():
    v = np.array([4.0, 1, 3, 2, 10, 20])
    g = np.array([0, 0, 0, 0, 1, 1])
    q1, med, q3 = group_quantiles(v, g, 3, (0.25, 0.5, 0.75))
    assert med[:2].tolist() == [2.5, 15.0] and q1[0] == 1.75 and q3[0] == 3.25
    assert np.isnan(med[2])


def test_dispersion_and_skew_scores():
    assert dispersion_score(np.array([10.0, 0.0, 0.0]), np.array([2.0, 0.0, 1.0])).tolist() == [
        0.8,
        1.0,
        0.0,
    ]
    # quartiles too close to judge: no skew (as RITA)
    assert bowley_skew(np.array([9.9]), np.array([10.0]), np.array([10.1])).tolist() == [0.0]
    assert bowley_skew(np.array([1.0]), np.array([2.0]), np.array([5.0]))[0] == pytest.approx(0.5)


# ---------------------------------------------------------------- jitter and scoring


@pytest.mark.parametrize("jitter", [0.0, 0.3, 0.5])
def test_cobalt_strike_jitter_is_tolerated(jitter):
    rng = np.random.default_rng(11)
    found = windows(series(cs_sleeps(rng, 45.0, jitter, 25), 420 + rng.integers(0, 30, 25)))
    assert found and {(d.source, d.target) for d in found} == {(IMPLANT, f"{C2}:443")}
    d = found[-1]
    assert d.evidence["kind"] == "connections" and d.evidence["score"] >= CFG.min_score
    assert d.evidence["timing_score"] >= CFG.min_timing_score


def test_an_ipv6_target_is_bracketed_before_its_port():
    rng = np.random.default_rng(11)
    rows = series(cs_sleeps(rng, 45.0, 0.3, 25), src="fd00::66", dst="2001:db8::7")
    found = windows(rows)
    assert found and {d.target for d in found} == {"[2001:db8::7]:443"}
    # read back as address and port (allow-lists match it), never as one longer address
    ends = endpoints(found[-1])
    assert ends.destination == ipaddress.ip_address("2001:db8::7") and ends.ports == {443}
    assert host_port("10.0.0.1", 443) == "10.0.0.1:443"


def test_a_tasked_beacon_keeps_its_schedule():
    """Output posted soon after a check-in (within a quarter period, unlike it) is its beat."""
    rng = np.random.default_rng(13)
    rows = series(cs_sleeps(rng, 40.0, 0.5, 28), 420 + rng.integers(0, 30, 28))
    for r in rows[3::5]:  # every fifth check-in was tasked
        rows.append({**r, "ts": r["ts"] + float(rng.uniform(5.2, 7)), "fwd_bytes": 6000.0})
    rows.sort(key=lambda r: r["ts"])
    found = windows(rows)
    assert found and found[-1].evidence["regular_share"] >= 0.9


def test_missed_beats_do_not_hide_a_beacon():
    rng = np.random.default_rng(14)
    intervals = cs_sleeps(rng, 45.0, 0.3, 24)
    intervals[[5, 11, 17]] *= 2  # three beats lost (host asleep)
    found = windows(series(intervals))
    assert found and found[-1].evidence["timing_score"] >= CFG.min_timing_score


def test_symmetric_jitter_is_tolerated():
    rng = np.random.default_rng(12)
    assert windows(series(cs_sleeps(rng, 40.0, 0.25, 25, symmetric=True)))


def test_random_contacts_and_varied_content_are_not_beacons():
    rng = np.random.default_rng(2)
    for seed in range(5):
        r = np.random.default_rng(seed)
        assert windows(series(r.exponential(40, 30))) == [], seed
    # a fixed schedule whose content varies (telemetry batches) carries data
    assert windows(series(np.full(25, 60.0), rng.lognormal(np.log(2500), 0.6, 25))) == []


def test_a_short_regular_burst_is_not_a_beacon():
    """Ten connections five seconds apart (a download in chunks, retries) span too little."""
    cfg = dataclasses.replace(CFG, min_interval_seconds=5)
    rows = series(np.full(10, 5.5))
    rows.append({"ts": T0 + 1800, "src": "10.0.0.9", "dst": "10.0.0.10"})  # time passes
    assert windows(rows, cfg) == []


def test_a_beacon_is_found_once_it_spans_enough_of_the_time_observed():
    det = BeaconDetector(CFG)
    # an hour of other traffic observed first, then a new beacon every 30 s
    windows(
        [{"ts": T0 + 60 * k, "src": "10.0.0.9", "dst": "10.0.0.10"} for k in range(60)], det=det
    )
    rows = series(np.full(40, 30.0))
    for r in rows:
        r["ts"] += 3600
    found = windows(rows, det=det)
    assert found
    first = min(d.window_end for d in found) - (T0 + 3600)
    assert 5 * 60 <= first <= 15 * 60  # 40 % of full_coverage_seconds to all of it


# ---------------------------------------------------------------- ordinary traffic


def test_a_poller_is_not_a_beacon_but_its_other_schedule_is():
    rows = []
    for h in range(30):  # 30 hosts polled every 30 s, each with its own phase
        for r in series(np.full(30, 30.0) + 0.01 * h, dst=f"10.0.1.{h + 1}", dport=161, proto=17):
            r["ts"] += h * 0.7
            rows.append(r)
    assert windows(rows) == []
    implant = series(cs_sleeps(np.random.default_rng(3), 75.0, 0.2, 12))
    found = windows(rows + implant)
    assert [(d.source, d.target) for d in found][-1] == (IMPLANT, f"{C2}:443")
    assert {d.target for d in found} == {f"{C2}:443"}


def test_the_poller_rule_remembers_destinations_across_windows():
    """A slow poller: each window sees only a few of its destinations."""
    rows = []
    for h in range(12):
        for r in series(np.full(14, 240.0), dst=f"10.0.1.{h + 1}", dport=80):
            r["ts"] += h * 20
            rows.append(r)
    assert windows(rows) == []


MAIL = "203.0.113.25"  # a mail provider's IMAPS server, outside


def lan_pollers(n: int, seed: int = 4) -> list:
    """``n`` LAN hosts (10.0.2.1 on) each polling :data:`MAIL`'s IMAPS on its own
    schedule (every 60 or 90 s, a timer's jitter, its own phase): ordinary mail clients,
    each a pair the detector would report on its own."""
    rng = np.random.default_rng(seed)
    rows = []
    for h in range(1, n + 1):
        period = float(rng.choice([60.0, 90.0]))
        beats = series(period + rng.normal(0, 2, int(900 / period)), 700 + rng.integers(0, 20))
        phase = rng.uniform(0, 60)
        for r in beats:
            r.update(src=f"10.0.2.{h}", dst=MAIL, dport=993, ts=r["ts"] + phase)
        rows += beats
    return rows


def _pairs(found: list) -> set:
    return {(d.source, d.target) for d in found}


def test_a_service_many_lan_hosts_poll_is_not_a_beacon():
    """The prevalence rule: 20 hosts of the site poll one mail server, each on its own
    schedule; each pair alone is a beacon, the service is one the site polls."""
    n = CFG.prevalence_min_sources
    assert windows(lan_pollers(2 * n)) == []
    alone = windows([r for r in lan_pollers(2 * n) if r["src"] == "10.0.2.1"])
    assert _pairs(alone) == {("10.0.2.1", f"{MAIL}:993")}


def test_one_source_fewer_than_prevalence_min_sources_is_still_reported():
    """At the threshold the pollers are quiet; one host fewer and every pair is reported
    (the rule does not reach below its threshold)."""
    n = CFG.prevalence_min_sources
    assert windows(lan_pollers(n)) == []
    fewer = windows(lan_pollers(n - 1))
    assert _pairs(fewer) == {(f"10.0.2.{h}", f"{MAIL}:993") for h in range(1, n)}


@pytest.mark.parametrize("hosts", [1, 3, 5])
def test_a_few_hosts_beaconing_to_one_c2_are_found_amid_lan_pollers(hosts: int):
    """One to five hosts infected by one campaign, one sleep (30 % jitter), each its own
    phase, on a LAN whose 20 hosts (the infected among them) poll their mail server: the
    infected are reported, the mail pollers are not."""
    rng = np.random.default_rng(9)
    rows = lan_pollers(2 * CFG.prevalence_min_sources)
    infected = [f"10.0.2.{h}" for h in (3, 7, 11, 15, 19)[:hosts]]
    for host in infected:
        phase = rng.uniform(0, 50)
        for r in series(cs_sleeps(rng, 50.0, 0.3, 18), 420 + rng.integers(0, 30, 18), src=host):
            r["ts"] += phase
            rows.append(r)
    assert _pairs(windows(rows)) == {(h, f"{C2}:443") for h in infected}


def test_the_prevalence_rule_can_be_switched_off():
    rows = lan_pollers(2 * CFG.prevalence_min_sources)
    assert windows(rows) == []
    off = windows(rows, dataclasses.replace(CFG, prevalence_min_sources=0))
    assert len(_pairs(off)) >= CFG.prevalence_min_sources
    assert {t for _, t in _pairs(off)} == {f"{MAIL}:993"}


def test_random_contacts_of_many_hosts_do_not_make_a_service_polled():
    """A popular address (a CDN's) that 40 hosts contact at random, four times each: a
    random series of four looks regular to the timing score's 0.7 one time in three,
    so sources count for prevalence only on a timer's schedule (0.9), and a beacon to
    that address from one more host is still reported."""
    rng = np.random.default_rng(21)
    rows = []
    for h in range(1, 41):
        phase = rng.uniform(0, 300)
        for r in series(rng.exponential(150, 4), rng.lognormal(np.log(400), 0.05, 4)):
            r.update(src=f"10.0.3.{h}", ts=r["ts"] + phase)
            rows.append(r)
    beacon = series(cs_sleeps(rng, 45.0, 0.3, 20), 420 + rng.integers(0, 30, 20))
    assert _pairs(windows(rows + beacon)) == {(IMPLANT, f"{C2}:443")}


def test_infrastructure_services_broadcast_and_resolvers_are_not_beacons():
    ntp = series(np.full(20, 64.0), proto=17, dport=123)
    ntpd = series(np.full(20, 64.0), proto=17, dport=123, sport=123)
    dhcp = series(np.full(20, 60.0), proto=17, sport=68, dport=67, dst="10.0.0.1")
    ubnt_reply = series(np.full(60, 10.0), proto=17, sport=10001, dport=51000, dst="10.0.0.3")
    bcast = series(np.full(60, 10.0), proto=17, dport=9999, dst="255.255.255.255")
    mcast = series(np.full(30, 30.0), proto=17, dport=9999, dst="239.1.2.3")
    for rows in (ntp, ntpd, dhcp, ubnt_reply, bcast, mcast):
        assert windows(rows) == [], rows[0]
    # DNS every 30 s: to a resolver that answers three clients it is not a beacon...
    resolver = "203.0.113.53"
    dns = series(np.full(30, 30.0), proto=17, dport=53, dst=resolver)
    others = [
        {"ts": T0 + 5 + k, "src": f"10.0.0.{20 + k}", "dst": resolver, "dport": 53, "proto": 17}
        for k in range(3)
    ]
    assert windows(others + dns) == []
    # ...to a host no one else uses for DNS it is judged
    assert windows(dns)


def test_pairs_inside_the_site_are_judged_only_when_asked():
    """Guards docs/detectors.md: "`judge_internal`"."""
    # CI polling the site's git server, a monitor polling a host: both ends private
    for src, dst in (
        ("10.0.0.5", "10.0.9.9"),
        ("192.168.1.5", "172.16.0.9"),
        ("fd00::5", "fd00:1::9"),
    ):
        rows = series(np.full(25, 60.0), src=src, dst=dst, dport=22)
        assert windows(rows) == [], (src, dst)
        on = dataclasses.replace(CFG, judge_internal=True)
        assert _pairs(windows(rows, on)) == {(src, host_port(dst, 22))}
    # a carrier's or an overlay VPN's space (100.64/10) is not the site's: still judged
    assert windows(series(np.full(25, 60.0), src="10.0.0.5", dst="100.70.1.2", dport=443))
    # and the site's hosts calling outside are judged as ever
    assert windows(series(np.full(25, 60.0), src="10.0.0.5", dst="198.51.100.9", dport=443))


def test_inbound_schedules_and_self_traffic_are_not_beacons():
    """A public source calling a private address is a client (or a guesser: brute_force's)."""
    inbound = series(np.full(25, 30.0), src="203.0.113.5", dst="10.0.0.22", dport=22)
    assert windows(inbound) == []
    assert windows(series(np.full(25, 30.0), dst=IMPLANT)) == []
    outbound = series(np.full(25, 30.0), src="10.0.0.22", dst="203.0.113.5", dport=22)
    assert windows(outbound)


def test_ignored_udp_ports_are_configurable():
    ntp = series(np.full(20, 64.0), proto=17, dport=123)
    assert windows(ntp, dataclasses.replace(CFG, ignore_udp_ports=()))


# ---------------------------------------------------------------- inside one connection


def long_flow(idle: float, idle_sd: float, bursts: int, fwd_bytes: float, **row) -> dict:
    active = 0.2
    return {
        "ts": T0 + 2,
        "dur": bursts * (idle + active),
        "idle_mean": idle,
        "idle_std": idle_sd,
        "active_mean": active,
        "fwd_bytes": fwd_bytes,
        **row,
    }


def test_regular_bursts_inside_one_connection_are_a_beacon():
    # the flow ends (and is judged) in the window after its last burst
    (d,) = windows([long_flow(40.0, 6.0, 25, 25 * 450.0), {"ts": T0 + 1000, "src": "10.9.9.9"}])
    assert (d.source, d.target) == (IMPLANT, f"{C2}:443")
    assert d.evidence["kind"] == "in_connection" and d.evidence["connections"] == 26
    assert d.evidence["interval_skew"] is None and d.evidence["size_score"] is None


def test_keepalives_and_irregular_sessions_inside_one_connection_are_not():
    pad = {"ts": T0 + 1000, "src": "10.9.9.9"}
    assert windows([long_flow(30.0, 1.0, 40, 40 * 35.0), pad]) == []  # TLS/MQTT pings
    assert windows([long_flow(40.0, 40.0, 25, 25 * 450.0), pad]) == []  # interactive use
    assert windows([long_flow(40.0, 2.0, 4, 4 * 450.0), pad]) == []  # too few bursts


# ---------------------------------------------------------------- state


def test_state_stays_bounded():
    cfg = dataclasses.replace(CFG, max_state_rows=1000, horizon_seconds=120)
    det = BeaconDetector(cfg)
    rng = np.random.default_rng(8)
    for w in range(6):
        start = T0 + 60 * w
        rows = [
            {"src": f"10.0.{i % 7}.{i % 5}", "dport": int(p), "ts": start + float(t)}
            for i, (p, t) in enumerate(
                zip(rng.integers(1, 9, 400), rng.uniform(0, 60, 400), strict=True)
            )
        ]
        det.detect(batch(rows), start, start + 60)
        assert len(det) <= 1000
        assert len(det._periodic) <= MAX_PERIODIC_ROWS


# ---------------------------------------------------------------- the suites


def _ours(results) -> list:
    return [
        (r.case.key, d.detector, d.source, d.target)
        for r in results
        for d in r.detections
        if d.detector in ("beacon", "dns_tunnel")
    ]


@pytest.mark.slow
def test_busy_benign_roles_raise_no_beacon_or_dns_tunnel(tmp_path: Path):
    """Every registered benign role, shipped config, one seed: no beacon, no tunnel."""
    results = run_cases(cases("benign"), [1], tmp_path, DetectorsConfig(), analyse_capture)
    assert {r.case.name for r in results} >= {
        "monitoring_poller",
        "ntp_clients",
        "discovery_broadcasts",
        "dhcp_renewals",
        "update_and_telemetry",
        "mail_reputation_lookups",
        "busy_site",
        "ipv6_lan_mail_users",
        "lan_mail_users",
    }
    assert _ours(results) == []


BEACON_CASES = [
    "beacon_few_hosts_one_c2_among_lan_pollers",
    "beacon_jitter_30",
    "beacon_jitter_50",
    "beacon_jitter_symmetric_25",
    "beacon_in_one_tls_connection",
    "beacon_udp_one_socket",
]


@pytest.mark.parametrize("name", BEACON_CASES)
def test_evasive_beacon_is_found(tmp_path: Path, name: str):
    r = hard_case_found(tmp_path, name)
    # and nothing else is called a beacon
    wrong = [d for d in r.detections if d.detector == "beacon" and not found_one(d, r)]
    assert wrong == []


def found_one(d, r) -> bool:
    return any(matches(d, t) for t in r.scenario.truths)


def _c2_sharing_the_key_of(src: str, dst: str, dport: int, prefix: str) -> str:
    """An address in ``prefix`` (a /64 of the attacker's) whose pair with ``src`` hashes,
    unkeyed, like (``src``, ``dst``, TCP ``dport``): what an attacker computes with the
    inverse of SplitMix64's finaliser to hide a beacon in a benign pair's timing."""
    from netmon_exporter.detectors.base import addr_words
    from netmon_exporter.flow_schema import str_to_addrs
    from tests.test_detectors_scans import _mix, _unmix

    (dh_b,), (dl_b,) = (w.tolist() for w in addr_words(str_to_addrs([dst])))
    (dh_a,), _ = (w.tolist() for w in addr_words(str_to_addrs([prefix])))
    svc = (6 << 16) | dport
    h1_b = _mix(_mix(svc) ^ dl_b)
    dl_a = _unmix(h1_b ^ dh_b ^ dh_a) ^ _mix(svc)
    raw = dh_a.to_bytes(8, "little") + dl_a.to_bytes(8, "little")
    return str(ipaddress.IPv6Address(raw))


def test_a_c2_address_crafted_to_share_a_benign_pairs_hash_does_not_hide_the_beacon():
    """Unkeyed, the C2's pair and a benign pair of the same implant get one key and one
    timing series, and the beacon is lost in the benign pair's irregular connections.
    Keyed with a secret the attacker does not have (hash_key.py), they stay apart."""
    from netmon_exporter import hash_key
    from netmon_exporter.detectors.beacon import pair_hash

    implant, cdn = "2001:db8:a::66", "2001:db8:cd0::10"
    c2 = _c2_sharing_the_key_of(implant, cdn, 443, "2001:db8:bad:1::")
    assert ipaddress.ip_address(c2) in ipaddress.ip_network("2001:db8:bad:1::/64")
    rng = np.random.default_rng(5)
    beats = series(cs_sleeps(rng, 45.0, 0.2, 40), src=implant, dst=c2)
    browsing = series(
        rng.exponential(30.0, 60), rng.lognormal(np.log(3000), 1.0, 60), src=implant, dst=cdn
    )
    rows = sorted(beats + browsing, key=lambda r: r["ts"])
    pairs = batch([beats[0], browsing[0]])
    before = hash_key.current()
    try:
        hash_key.use(0)
        assert pair_hash(pairs)[0] == pair_hash(pairs)[1]  # the crafted collision
        assert not [d for d in windows(rows) if c2 in d.target]  # hidden, unkeyed
        hash_key.use(0x9D2C_5680_1F3B_A7E5)
        assert pair_hash(pairs)[0] != pair_hash(pairs)[1]
        found = [d for d in windows(rows) if c2 in d.target]
        assert found and {d.source for d in found} == {implant}
    finally:
        hash_key.use(before)
    assert windows(beats)  # the beacon alone is found (the case is a fair one)
