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
    largest: float | np.ndarray = 1400,
    dur: float = 0.5,
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
                "dur": dur,
            }
            for i in range(n)
        ]
    )
    largest_a = np.broadcast_to(np.asarray(largest, float), (n,)).copy()
    return FlowBatch({**batch.columns, "Fwd Pkt Len Max": largest_a})


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


# ------------------------------------------------------------------ IPv6 /64 sources


def _lan(n: int, first: int = 1) -> list[str]:
    """``n`` addresses of one /64 with random-looking interface ids (privacy addresses)."""
    return [
        f"2001:db8:5:1:{k * 7919 % 65536:x}:{k + 3:x}:2:{k + 1:x}" for k in range(first, first + n)
    ]


def test_an_ipv6_guesser_that_changes_address_every_attempt_is_found_by_its_64():
    """One attempt every 30 s, each from a new address of one /64: no address reaches a
    tier, the distributed view sees 4 attempts a fast horizon. The /64 reaches the slow
    tier (30 alike attempts in 30 minutes) with its 30th attempt, not before."""
    det = BruteForceDetector(CFG.brute_force)
    addrs = _lan(80)
    rng = np.random.default_rng(1)
    found_at = None
    for k in range(40):
        start = T0 + 60 * k
        batch = sessions(
            2,
            sent=1850 + 8 * rng.integers(0, 3, 2),
            received=1720 + 8 * rng.integers(0, 3, 2),
            src=addrs[2 * k : 2 * k + 2],
            dst="fd00::22",
            start=start + 10,
            step=30,
        )
        got = run(det, batch, start)
        if got:
            found_at = (k, got)
            break
    assert found_at is not None
    k, (d,) = found_at
    assert k == 14  # attempts 29 and 30
    assert (d.source, d.target) == ("2001:db8:5:1::/64", "[fd00::22]:22")
    assert d.evidence["horizon_seconds"] == CFG.brute_force.slow_horizon_seconds
    assert d.evidence["attempts"] == 30 and d.evidence["sources"] == 30
    assert len(d.evidence["top_sources"]) == 5 and d.evidence["attempts_in_window"] == 2
    assert d.summary.startswith("30 addresses of 2001:db8:5:1::/64 made 30 similar short ssh")


def test_a_64_at_the_fast_tier_is_found_once_and_not_also_as_many():
    # five attempts from five addresses within 120 s: the fast tier; four are not
    five = sessions(5, src=_lan(5), dst="fd00::22", step=20)
    (d,) = run(BruteForceDetector(CFG.brute_force), five)
    assert d.source == "2001:db8:5:1::/64" and d.evidence["attempts"] == 5
    assert d.evidence["horizon_seconds"] == CFG.brute_force.horizon_seconds
    four = sessions(4, src=_lan(4), dst="fd00::22", step=25)
    assert run(BruteForceDetector(CFG.brute_force), four) == []
    # 40 addresses in a minute also make a distributed guess: reported once, as the /64
    fast = sessions(40, src=_lan(40), dst="fd00::22", step=1.4)
    (d,) = run(BruteForceDetector(CFG.brute_force), fast)
    assert d.source == "2001:db8:5:1::/64" and d.evidence["sources"] == 40
    # with a botnet beside it, the botnet is still "many" (without the /64's sessions)
    bots = [f"198.51.100.{i % 12 + 1}" for i in range(24)]
    both = sessions(64, src=_lan(40) + bots, dst="fd00::22", step=0.9)
    found = {d.source: d for d in run(BruteForceDetector(CFG.brute_force), both)}
    assert set(found) == {"2001:db8:5:1::/64", "many"}
    assert found["many"].evidence["sources"] == 12


def test_one_guessing_address_of_a_64_is_reported_as_itself_once():
    src = ["2001:db8:5:1::7"] * 8 + ["2001:db8:5:1::8"]
    (d,) = run(BruteForceDetector(CFG.brute_force), sessions(9, src=src, dst="fd00::22", step=6))
    assert d.source == "2001:db8:5:1::7" and d.evidence["attempts"] == 8


def test_addresses_of_many_64s_or_of_ipv4_networks_are_not_added_up():
    others = [f"2001:db8:{k + 1:x}:1::9" for k in range(8)]
    assert run(BruteForceDetector(CFG.brute_force), sessions(8, src=others, step=10)) == []
    v4 = [f"203.0.113.{k + 1}" for k in range(8)]  # one /24: IPv4 addresses are not rotated
    assert run(BruteForceDetector(CFG.brute_force), sessions(8, src=v4, step=10)) == []


def _imaps_logins(
    rng: np.random.Generator, n: int, mail: float, resumed: float
) -> dict[str, np.ndarray]:
    """Sizes of ``n`` IMAPS logins that work (TLS, LOGIN, SELECT, maybe FETCH, LOGOUT):
    the client's hello varies with its software, resumed TLS skips the certificate, new
    mail adds headers and bodies (as ``cases_bruteforce._imap_poll`` writes them); the
    largest client segment is the hello."""
    hello = np.array([517, 583, 646, 259])[rng.integers(0, 4, n)] + 2 * rng.integers(0, 4, n)
    tls = rng.random(n) < resumed
    sent = hello + np.where(tls, 80, 126) + 76 + rng.integers(0, 30, n)
    received = np.where(tls, 230, 4200) + 640 + rng.integers(0, 490, n)
    new = rng.random(n) < mail
    sent = sent + 110 * new
    body = np.clip(rng.lognormal(np.log(4500), 0.9, n), 900, 400_000).astype(int)
    received = received + new * (rng.integers(1500, 9000, n) + (rng.random(n) < 0.7) * body)
    return {"sent": sent, "received": received, "largest": hello}


def test_hosts_of_a_64_lan_logging_in_once_each_are_not_guessing():
    """A NAT-less IPv6 site: 60 hosts of one /64 (privacy addresses), each one login
    that works within ten minutes, then 120 more within half an hour. Half find new mail
    (larger, varied responses), some resume TLS: the alike share stays far under 70 %."""
    rng = np.random.default_rng(7)
    det = BruteForceDetector(CFG.brute_force)
    logins = _imaps_logins(rng, 60, mail=0.55, resumed=0.4)
    lan = sessions(60, **logins, src=_lan(60), dst="fd00::25", port=993, step=10)
    assert run(det, lan, length=600) == []
    for w in range(1, 4):
        logins = _imaps_logins(rng, 40, mail=0.55, resumed=0.4)
        start = T0 + 600 * w
        more = sessions(40, **logins, src=_lan(40, 100 * w), dst="fd00::25", port=993, start=start)
        assert run(det, more, start, 600) == []


def test_a_quiet_64_lan_whose_polls_are_mostly_alike_stays_under_the_share():
    """Near the share: no new mail, so every poll is alike but for TLS resumption (four
    in ten resume): 66 logins in 30 minutes, 34 of them alike (52 %), under 70 %."""
    rng = np.random.default_rng(11)
    logins = _imaps_logins(rng, 66, mail=0.0, resumed=0.4)
    lan = sessions(66, **logins, src=_lan(66), dst="fd00::25", port=993, step=27)
    det = BruteForceDetector(CFG.brute_force)
    assert run(det, lan, length=1800) == []
    # the same LAN with guesses instead (alike, no resumption) is found
    guesses = sessions(66, 900, 5000, _lan(66), "fd00::25", 993, step=27, largest=517)
    (d,) = run(BruteForceDetector(CFG.brute_force), guesses, length=1800)
    assert d.source == "2001:db8:5:1::/64"


def test_an_allow_list_entry_covering_the_64_silences_its_finding():
    from netmon_exporter.config import IgnoreConfig
    from netmon_exporter.suppression import IgnoreRules, endpoints

    (d,) = run(BruteForceDetector(CFG.brute_force), sessions(8, src=_lan(8), dst="fd00::22"))
    ends = endpoints(d)
    assert str(ends.source) == "2001:db8:5:1::" and ends.ports == {22}
    assert IgnoreRules.from_config(IgnoreConfig(sources=("2001:db8:5::/48",))).match(ends)
    assert IgnoreRules.from_config(IgnoreConfig(sources=("2001:db8:5:1::/64",))).match(ends)
    assert not IgnoreRules.from_config(IgnoreConfig(sources=(_lan(1)[0] + "/128",))).match(ends)


@pytest.mark.parametrize("seed", range(4))
def test_the_similar_test_of_all_groups_at_once_is_the_test_of_each_group(seed: int):
    """``_similar_by`` (every /64 group in one sort) marks what ``_similar`` marks per group."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 400))
    gid = rng.integers(0, int(rng.integers(1, 30)), n)
    rows = {
        "sent": rng.choice([800.0, 1700.0, 5000.0], n) + rng.integers(0, 900, n),
        "received": rng.integers(100, 20000, n).astype(float),
        "pkts": rng.integers(4, 500, n).astype(float),
        "dur": rng.uniform(0, 3, n),
        "internal": rng.random(n) < 0.5,
        "port": rng.choice([22, 3389], n),
    }
    det = BruteForceDetector(CFG.brute_force)
    got = det._similar_by(rows, gid, int(gid.max()) + 1)
    for g in np.unique(gid):
        m = gid == g
        assert np.array_equal(got[m], det._similar({k: v[m] for k, v in rows.items()})), g


AUTOMATION = [
    c for c in cases("benign") if c.name in ("ci_git_polling_over_ssh", "nagios_check_by_ssh")
]


@pytest.mark.parametrize("case", AUTOMATION, ids=lambda c: c.name)
def test_a_sites_automated_key_logins_are_not_guessing(case, tmp_path: Path):
    """Guards docs/detectors.md: "`internal_min_attempt_seconds`". A CI server polling its
    git server over SSH every minute and check_by_ssh: in sizes each session is a failed
    password; without the failure delay's floor they are reported (as they were)."""
    assert len(AUTOMATION) == 2
    (r,) = run_cases([case], [1], tmp_path, DetectorsConfig(), analyse_capture)
    assert r.detections == []
    off = DetectorsConfig(
        brute_force=dataclasses.replace(CFG.brute_force, internal_min_attempt_seconds=0)
    )
    (r,) = run_cases([case], [1], tmp_path, off, analyse_capture)
    assert r.detections and {d.detector for d in r.detections} == {"brute_force"}


def test_inside_the_site_a_quick_session_is_no_attempt_unless_rdp():
    """The floor holds only between two internal addresses, and not for RDP."""
    cfg = CFG.brute_force
    floor = cfg.internal_min_attempt_seconds
    assert floor == 1.0

    def found(src: str, dst: str, dur: float, port: int = 22) -> bool:
        batch = sessions(
            8, sent=2310, received=2120, pkts=42, step=12, src=src, dst=dst, port=port, dur=dur
        )
        return bool(run(BruteForceDetector(cfg), batch))

    assert not found("10.0.0.7", "10.0.0.22", 0.3)  # a key login, no failure delay
    assert found("10.0.0.7", "10.0.0.22", floor + 0.5)  # a password refused after PAM's delay
    assert not found("fd00::7", "fd00::22", 0.3)
    assert found("10.0.0.7", "10.0.0.22", 0.3, port=3389)  # NLA refuses at once
    assert found("198.51.100.7", "10.0.0.22", 0.3)  # from outside: every session counts
    assert found("10.0.0.7", "100.70.0.22", 0.3)  # a carrier's space is not the site's
    off = dataclasses.replace(cfg, internal_min_attempt_seconds=0)
    assert run(
        BruteForceDetector(off),
        sessions(
            8, sent=2310, received=2120, pkts=42, step=12, src="10.0.0.7", dst="10.0.0.22", dur=0.3
        ),
    )
