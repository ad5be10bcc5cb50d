"""Brute force judged by session shape: alike small attempts, tiers, distributed guessing.

Unit tests on hand-built sessions, then every hard brute-force case of
``tools/cases_bruteforce.py`` through the real flow engine. (The benign cases of all
modules are checked for scan and brute-force findings in ``test_detectors_scans``.)
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from netmon_exporter.config import DetectorsConfig
from netmon_exporter.detectors.brute_force import BruteForceDetector
from netmon_exporter.flow_schema import FlowBatch
from netmon_exporter.tools.evaluate import analyse_capture, matches
from netmon_exporter.tools.evaluate_suites import found, run_cases
from netmon_exporter.tools.suites import cases

from .test_detectors import CFG, T0, flows, run


def sessions(
    n: int,
    sent: float | np.ndarray = 1700,
    received: float | np.ndarray = 1800,
    src: str | list[str] = "203.0.113.7",
    dst: str = "10.0.0.22",
    port: int = 22,
    start: float = T0,
    step: float = 5.0,
    pkts: int = 30,
    largest: float = 1400,
) -> FlowBatch:
    """``n`` completed sessions; ``largest`` is the biggest client segment (Fwd Pkt Len Max)."""
    sent_a = np.broadcast_to(np.asarray(sent, float), (n,))
    recv_a = np.broadcast_to(np.asarray(received, float), (n,))
    srcs = [src] * n if isinstance(src, str) else src
    batch = flows(
        [
            {
                "src": srcs[i],
                "dst": dst,
                "dport": port,
                "sport": 40000 + i,
                "fwd": pkts // 2,
                "bwd": pkts // 2,
                "fwd_bytes": float(sent_a[i]),
                "bwd_bytes": float(recv_a[i]),
                "ts": start + i * step,
            }
            for i in range(n)
        ]
    )
    return FlowBatch({**batch.columns, "Fwd Pkt Len Max": np.full(n, float(largest))})


def test_six_passwords_per_connection_over_the_old_packet_cap():
    """Guards docs/detectors.md: "six passwords in one SSH connection are about 42 packets"."""
    batch = sessions(8, sent=2310, received=2120, pkts=42, step=12)
    (d,) = run(BruteForceDetector(CFG.brute_force), batch)
    assert (d.source, d.target) == ("203.0.113.7", "10.0.0.22:22")
    assert d.evidence["attempts"] == 8 and d.evidence["mean_packets"] == 42
    assert d.evidence["similar_share"] == 1.0 and d.evidence["mean_bytes_received"] == 2120


def test_slow_guessing_found_by_the_slow_tier():
    det = BruteForceDetector(CFG.brute_force)
    found_at = None
    for k in range(40):  # one attempt every 30 s: 4 per 120 s, under the fast tier
        start = T0 + 60 * k
        got = run(det, sessions(2, start=start + 10, step=30), start)
        if got:
            found_at = (k, got[0])
            break
    assert found_at is not None
    k, d = found_at
    assert d.evidence["horizon_seconds"] == CFG.brute_force.slow_horizon_seconds
    assert d.evidence["attempts"] >= CFG.brute_force.slow_min_attempts
    assert k < 16  # found within 16 minutes


def test_mail_delivery_carrying_messages_is_not_guessing():
    """Guards docs/detectors.md: "each session carries a message, so the client side varies with it"."""
    rng = np.random.default_rng(3)
    messages = np.clip(rng.lognormal(np.log(4500), 0.9, 12), 900, 400_000) + 700
    mail = sessions(12, sent=messages, received=4600, port=25, step=10, largest=1400)
    assert run(BruteForceDetector(CFG.brute_force), mail) == []
    # the same sessions with alike, small client sides are guesses (SMTP AUTH)
    auth = sessions(12, sent=800, received=4600, port=25, step=10, largest=517)
    (d,) = run(BruteForceDetector(CFG.brute_force), auth)
    assert d.evidence["service"] == "smtp"


def test_many_users_behind_one_address_with_varied_responses_are_not_guessing():
    rng = np.random.default_rng(5)
    received = np.where(
        rng.random(20) < 0.5, 4800 + rng.integers(0, 700, 20), rng.integers(9000, 300_000, 20)
    )
    nat = sessions(20, sent=700 + rng.integers(0, 400, 20), received=received, port=993, step=5)
    assert run(BruteForceDetector(CFG.brute_force), nat) == []


def test_banner_checks_and_interactive_sessions_are_not_attempts():
    banner = sessions(10, sent=20, received=60, largest=20)  # one client segment
    interactive = sessions(10, received=500_000, pkts=2000)
    assert run(BruteForceDetector(CFG.brute_force), banner) == []
    assert run(BruteForceDetector(CFG.brute_force), interactive) == []


def test_distributed_guessing_from_many_sources():
    bots = [f"198.51.100.{i % 40 + 1}" for i in range(80)]
    batch = sessions(80, src=bots, step=1.4)
    (d,) = run(BruteForceDetector(CFG.brute_force), batch)
    assert (d.source, d.target) == ("many", "10.0.0.22:22")
    assert d.evidence["sources"] == 40 and len(d.evidence["top_sources"]) == 5
    few = sessions(12, src=[f"198.51.100.{i % 6 + 1}" for i in range(12)], step=9)
    assert run(BruteForceDetector(CFG.brute_force), few) == []


def test_many_users_of_a_service_with_varied_sessions_are_not_distributed_guessing():
    rng = np.random.default_rng(6)
    users = [f"198.51.100.{i + 1}" for i in range(60)]
    batch = sessions(
        60, src=users, sent=rng.integers(600, 9000, 60), received=rng.integers(900, 16000, 60)
    )
    assert run(BruteForceDetector(CFG.brute_force), batch) == []


def test_views_can_be_switched_off():
    cfg = dataclasses.replace(CFG.brute_force, slow_min_attempts=0, distributed_min_sources=0)
    det = BruteForceDetector(cfg)
    assert [h for h, _ in det.tiers] == [cfg.horizon_seconds]
    bots = [f"198.51.100.{i % 40 + 1}" for i in range(80)]
    assert run(det, sessions(80, src=bots, step=1.4)) == []


HARD = [c for c in cases("hard") if "cases_bruteforce" in c.build.__module__]


@pytest.mark.parametrize("case", HARD, ids=lambda c: c.name)
def test_every_hard_brute_force_case_is_found_with_the_right_attacker(case, tmp_path: Path):
    (r,) = run_cases([case], [1], tmp_path, DetectorsConfig(), analyse_capture)
    assert r.scenario.truths and found(r, matches), [
        (d.detector, d.source, d.target) for d in r.detections
    ]


def test_an_ipv6_server_is_bracketed_before_its_port_and_allow_lists_read_it():
    """``fd00::22:22`` would read as another address (and no port): the target is
    ``[fd00::22]:22``, so a destination or port allow-list entry matches it."""
    from netmon_exporter.config import IgnoreConfig
    from netmon_exporter.suppression import IgnoreRules, endpoints

    batch = sessions(
        8, sent=2310, received=2120, pkts=42, step=12, src="2001:db8::7", dst="fd00::22"
    )
    (d,) = run(BruteForceDetector(CFG.brute_force), batch)
    assert (d.source, d.target) == ("2001:db8::7", "[fd00::22]:22")
    ends = endpoints(d)
    assert str(ends.destination) == "fd00::22" and ends.ports == {22}
    assert IgnoreRules.from_config(IgnoreConfig(destinations=("fd00::22/128",))).match(ends)
    assert IgnoreRules.from_config(IgnoreConfig(ports=(22,))).match(ends)
