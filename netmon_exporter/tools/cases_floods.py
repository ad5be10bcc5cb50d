"""Floods, and the steady high-rate streams a real site has that are not floods.

Benign: IP cameras streaming RTP to a recorder (issue 13: a *critical* ``udp_flood``
before), a nightly backup and a UDP file transfer with its feedback channel, a group
video call through a media server, a busy web server with short connections and a few
failed ones, application servers warming up database connection pools (1,500
connections to one port in seconds, kept open and idle). Hard: floods that the window-per-flow engine used to report only when
their flow ended (``ping -f`` on one identifier for 8 minutes, a UDP flood on one fixed
5-tuple), SYN floods cut in two by minute boundaries, and a SYN flood at a server that
keeps serving its clients (67 % half-open). Each hard truth has a deadline: the flood
must be found in the window where it starts or the next one.

Packets of a stream are the same frame at different times (built once with the
scenario writer, then repeated), so minutes of hundreds of packets per second stay
quick to write.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .scenarios import SPOOFED, Truth, _Capture, _outsider, _Site
from .suites import CaseFn, Sweep, case, sweep

WINDOW = 60.0  # the default window length: deadlines are "this window or the next"


def _frame(cap: _Capture, build: Callable[[_Capture], None]) -> list[bytes]:
    """Build frames with a scratch writer (same addresses, no timestamps)."""
    scratch = _Capture(cap.rng)
    build(scratch)
    return [f for _, f in scratch.frames]


def _repeat(cap: _Capture, times: np.ndarray, frame: bytes, src: str, dst: str) -> None:
    """Add ``frame`` at each of ``times`` (and mark the pair when writing an attack)."""
    cap.frames.extend((float(t), frame) for t in times)
    if cap.tagging and len(times):
        cap.attack_pairs.add((src, dst))


def _ticks(
    rng: np.random.Generator, t0: float, t1: float, rate: float, jitter: float
) -> np.ndarray:
    """Times of a paced stream: ``rate`` per second from t0 to t1, each late by up to
    ``jitter`` of its interval (sender scheduling), in order."""
    n = max(int((t1 - t0) * rate), 0)
    t = t0 + np.arange(n) / rate + rng.uniform(0, jitter / rate, n)
    return np.sort(t)


def _udp_stream(
    cap: _Capture,
    t0: float,
    t1: float,
    src: str,
    dst: str,
    sport: int,
    dport: int,
    rate: float,
    size: int,
    jitter: float = 0.3,
) -> None:
    frame = _frame(cap, lambda c: c.udp(0.0, src, dst, sport, dport, bytes(size)))[0]
    _repeat(cap, _ticks(cap.rng, t0, t1, rate, jitter), frame, src, dst)


def _deadline(t: float) -> float:
    """Found in the window holding ``t`` or in the next one."""
    return (np.floor(t / WINDOW) + 2) * WINDOW


# ----------------------------------------------------------------------------- benign


@case("benign", "ip_cameras_nvr", duration=420.0)
def ip_cameras_nvr(cap: _Capture, site: _Site, start: float, duration: float) -> tuple[Truth, ...]:
    """Four IP cameras stream RTP at ~350 pps each to a recorder, RTCP reports both ways."""
    rng = cap.rng
    nvr = f"{site.lan_prefix}240"
    for k in range(4):
        camera = f"{site.lan_prefix}{241 + k}"
        rtp, client = 6970 + 2 * k, 50000 + 4 * k
        # RTSP set-up (DESCRIBE, SETUP, PLAY) from the recorder, before the stream starts
        cap.session(start + 0.1 * k, nvr, camera, 554, request=300, response=900, exchanges=3)
        t0 = start + 1 + float(rng.uniform(0, 1))
        rate = 350 * (0.95 + 0.1 * rng.random())
        _udp_stream(cap, t0, start + duration, camera, nvr, rtp, client, rate, 200)
        # RTCP: sender reports from the camera, receiver reports from the recorder (~5 s)
        for t in np.arange(t0 + rng.uniform(0, 5), start + duration, 5.0):
            cap.udp(float(t), camera, nvr, rtp + 1, client + 1, bytes(52))
            cap.udp(float(t) + 0.02, nvr, camera, client + 1, rtp + 1, bytes(32))
    return ()


@case("benign", "backup_and_file_transfer", duration=420.0)
def backup_and_file_transfer(
    cap: _Capture, site: _Site, start: float, duration: float
) -> tuple[Truth, ...]:
    """A nightly backup over TCP and a UDP bulk transfer (FASP/UDT style) with feedback."""
    rng = cap.rng
    server, backup = site.ssh_server, f"{site.lan_prefix}250"
    # rsync over ssh: one long TCP connection, data one way, ACKs back
    cap.session(
        start + 2, server, backup, 22, request=1400, response=200, exchanges=3000, rtt=0.001
    )
    # replication to a remote site: 2000 pps of datagrams for two minutes, the receiver's
    # feedback every 20 ms on the same 5-tuple, and its control session
    remote = _outsider(rng)
    t0 = start + float(rng.uniform(30, 60))
    cap.session(t0 - 1, server, remote, 33001, request=400, response=600, exchanges=2)
    _udp_stream(cap, t0, t0 + 120, server, remote, 33001, 33001, 2000, 600)
    _udp_stream(cap, t0 + 0.01, t0 + 120, remote, server, 33001, 33001, 50, 60)
    return ()


@case("benign", "video_conference", duration=360.0)
def video_conference(
    cap: _Capture, site: _Site, start: float, duration: float
) -> tuple[Truth, ...]:
    """A gallery-view call through a media server: ~1600 pps down, ~200 pps up (one 5-tuple)."""
    rng = cap.rng
    client, sfu = str(rng.choice(site.clients[:12])), _outsider(rng)
    cport, sport = int(rng.integers(50000, 60000)), 3478
    t0 = start + float(rng.uniform(5, 30))
    t1 = t0 + 240
    _udp_stream(cap, t0, t1, sfu, client, sport, cport, 1600, 300)
    _udp_stream(cap, t0, t1, client, sfu, cport, sport, 200, 300)
    return ()


def _web_visits(
    cap: _Capture, server: str, start: float, duration: float, per_minute: float
) -> None:
    """Visitors to a web server: ``per_minute`` connections a minute on average, in visits.

    A visit (Poisson arrivals) is a page and its resources: 1 to ~8 short connections
    within a few seconds, mostly from new addresses, some from returning regulars; 2 %
    of connection attempts fail (SYN and retries, never completed).
    """
    rng = cap.rng
    regulars = [_outsider(rng) for _ in range(200)]
    per_visit = 3.0  # mean connections per visit
    t = start + float(rng.exponential(60 / per_minute * per_visit))
    while t < start + duration:
        c = str(rng.choice(regulars)) if rng.random() < 0.3 else _outsider(rng)
        for _ in range(int(rng.geometric(1 / per_visit))):
            at = t + float(rng.exponential(1.0))
            if rng.random() < 0.02:  # a flaky client: SYN and retries, never completed
                sport = int(rng.integers(32768, 61000))
                for k in range(3):
                    cap.tcp(at + (2**k - 1), c, server, sport, 443, "S", 1000)
                continue
            cap.session(
                at,
                c,
                server,
                443,
                request=int(rng.integers(200, 800)),
                response=int(rng.integers(500, 20000)),
                rtt=0.01 + 0.05 * rng.random(),
            )
        t += float(rng.exponential(60 / per_minute * per_visit))


@case("benign", "busy_web_server")
def busy_web_server(cap: _Capture, site: _Site, start: float, duration: float) -> tuple[Truth, ...]:
    """A web server with ~400 short connections a minute in visits, ~2 % failed SYNs."""
    _web_visits(cap, site.mail_server, start, duration, 400)
    return ()


@case("benign", "connection_pool_warmup")
def connection_pool_warmup(
    cap: _Capture, site: _Site, start: float, duration: float
) -> tuple[Truth, ...]:
    """Application servers warm up their database connection pools: one opens 1,000
    connections to a PostgreSQL server in 3 s (handshake, startup, authentication),
    then keeps them open and idle, a few in use now and then; a second one restarts
    mid-way and opens another 500 in 2 s. 1,500 SYNs to one port of one host in
    seconds, every one answered and kept."""
    rng = cap.rng
    db = f"{site.lan_prefix}{int(rng.integers(200, 250))}"
    apps = [str(site.clients[7]), str(site.clients[8])]
    for app, n, t0, span in (
        (apps[0], 1000, start + 5.0, 3.0),
        (apps[1], 500, start + duration / 2, 2.0),
    ):
        used = []
        for k in range(n):
            t = t0 + span * k / n + float(rng.uniform(0, 0.002))
            sport = 20000 + k
            cs, ss = int(rng.integers(1, 2**31)), int(rng.integers(1, 2**31))
            cap.tcp(t, app, db, sport, 5432, "S", cs)
            cap.tcp(t + 0.0004, db, app, 5432, sport, "SA", ss, cs + 1)
            cs, ss = cs + 1, ss + 1
            cap.tcp(t + 0.0008, app, db, sport, 5432, "A", cs, ss)
            for who, size in (("c", 8), ("s", 1), ("c", 41), ("s", 24), ("c", 109), ("s", 328)):
                t += 0.001
                if who == "c":  # SSLRequest / startup / SCRAM messages, and the answers
                    cap.tcp(t, app, db, sport, 5432, "PA", cs, ss, bytes(size))
                    cs += size
                else:
                    cap.tcp(t, db, app, 5432, sport, "PA", ss, cs, bytes(size))
                    ss += size
            used.append((sport, cs, ss))
        for sport, cs, ss in used[:: max(1, n // 40)]:  # a few carry queries later
            t = t0 + span + float(rng.uniform(5, duration / 2 - 10))
            cap.tcp(t, app, db, sport, 5432, "PA", cs, ss, bytes(int(rng.integers(60, 400))))
            cap.tcp(
                t + 0.002, db, app, 5432, sport, "PA", ss, cs, bytes(int(rng.integers(100, 4000)))
            )
    return ()


# ----------------------------------------------------------------------------- hard


@case("hard", "ping_flood_8_minutes", duration=600.0)
def ping_flood_8_minutes(
    cap: _Capture, site: _Site, start: float, duration: float
) -> tuple[Truth, ...]:
    """``ping -f`` on one identifier, ~600 echo requests a second for 8 minutes, answered."""
    rng = cap.rng
    attacker, victim = _outsider(rng), str(rng.choice([site.resolver, site.mail_server]))
    ident = int(rng.integers(1, 65000))
    t0 = start + float(rng.uniform(20, 90))
    req, rep = _frame(cap, lambda c: c.icmp_echo(0.0, attacker, victim, ident, 1, True, 56))
    times = _ticks(rng, t0, t0 + 480, 600, 0.5)
    _repeat(cap, times, req, attacker, victim)
    _repeat(cap, times + 0.0004, rep, victim, attacker)
    return (Truth("icmp_flood", attacker, victim, deadline=_deadline(t0)),)


@case("hard", "udp_flood_one_5_tuple", duration=420.0)
def udp_flood_one_5_tuple(
    cap: _Capture, site: _Site, start: float, duration: float
) -> tuple[Truth, ...]:
    """A UDP flood on one fixed 5-tuple, ~1500 pps for five minutes: one flow all along."""
    rng = cap.rng
    attacker, victim = _outsider(rng), str(rng.choice([site.resolver, site.mail_server]))
    t0 = start + float(rng.uniform(20, 90))
    port = int(rng.choice([53, 123, 443, 27015]))
    sport = int(rng.integers(1024, 65535))
    _udp_stream(cap, t0, t0 + 300, attacker, victim, sport, port, 1500, 128)
    return (Truth("udp_flood", attacker, victim, deadline=_deadline(t0)),)


def _syn_burst(
    cap: _Capture, t0: float, t1: float, n: int, victim: str, port: int, attacker: str
) -> None:
    rng = cap.rng
    for t in np.sort(rng.uniform(t0, t1, n)):
        src = _outsider(rng) if attacker == SPOOFED else attacker
        cap.tcp(
            float(t),
            src,
            victim,
            int(rng.integers(1024, 65535)),
            port,
            "S",
            int(rng.integers(1, 2**31)),
            window=512,
        )


@case("hard", "syn_flood_split_bursts", duration=600.0)
def syn_flood_split_bursts(
    cap: _Capture, site: _Site, start: float, duration: float
) -> tuple[Truth, ...]:
    """Four bursts of 330 SYNs, each cut in two by a minute boundary (165 on each side)."""
    rng = cap.rng
    victim = str(rng.choice([site.mail_server, site.ssh_server]))
    attacker = SPOOFED if rng.random() < 0.5 else _outsider(rng)
    port = int(rng.choice([80, 443, 25]))
    first_boundary = (np.floor(start / WINDOW) + 2) * WINDOW
    boundaries = first_boundary + WINDOW * np.sort(rng.choice(np.arange(0, 7), 4, replace=False))
    for b in boundaries:
        half = float(rng.uniform(2, 8))  # the burst lasts 2 * half seconds
        _syn_burst(cap, b - half, b, 165, victim, port, attacker)
        _syn_burst(cap, b, b + half, 165, victim, port, attacker)
    return (Truth("syn_flood", attacker, victim, deadline=_deadline(boundaries[0])),)


@case("hard", "syn_flood_at_busy_server")
def syn_flood_at_busy_server(
    cap: _Capture, site: _Site, start: float, duration: float
) -> tuple[Truth, ...]:
    """400 SYNs a minute at a server that keeps completing 200 connections a minute (67 %)."""
    rng = cap.rng
    server = site.mail_server
    _web_visits(cap, server, start, duration, 200)  # its clients, all along
    attackers = [_outsider(rng) for _ in range(int(rng.integers(1, 4)))]  # not spoofed
    t0 = start + float(rng.uniform(300, 420))  # after the server's baseline is known
    for a in attackers:
        _syn_burst(cap, t0, t0 + 300, 2000 // len(attackers), server, 443, a)
    return (
        Truth(
            "syn_flood",
            attackers[0] if len(attackers) == 1 else SPOOFED,
            server,
            deadline=_deadline(t0),
        ),
    )


# ----------------------------------------------------------------------------- sweeps


def _udp_at(pps: float) -> CaseFn:
    def build(cap: _Capture, site: _Site, start: float, duration: float) -> tuple[Truth, ...]:
        rng = cap.rng
        attacker, victim = _outsider(rng), str(rng.choice([site.resolver, site.mail_server]))
        t0 = start + float(rng.uniform(20, 60))
        _udp_stream(
            cap, t0, t0 + 90, attacker, victim, 40000, int(rng.integers(1024, 65535)), pps, 256
        )
        return (Truth("udp_flood", attacker, victim, deadline=_deadline(t0)),)

    build.__doc__ = f"A one-way UDP flood from one source at {pps:g} pps for 90 s."
    return build


def _icmp_at(pps: float) -> CaseFn:
    def build(cap: _Capture, site: _Site, start: float, duration: float) -> tuple[Truth, ...]:
        rng = cap.rng
        attacker, victim = _outsider(rng), str(rng.choice([site.resolver, site.mail_server]))
        t0 = start + float(rng.uniform(20, 60))
        req, rep = _frame(cap, lambda c: c.icmp_echo(0.0, attacker, victim, 7, 1, True, 56))
        times = _ticks(rng, t0, t0 + 90, pps, 0.5)
        _repeat(cap, times, req, attacker, victim)
        _repeat(cap, times + 0.0004, rep, victim, attacker)
        return (Truth("icmp_flood", attacker, victim, deadline=_deadline(t0)),)

    build.__doc__ = f"ping -f from one source at {pps:g} echo requests a second for 90 s."
    return build


def _syn_at(per_minute: float) -> CaseFn:
    def build(cap: _Capture, site: _Site, start: float, duration: float) -> tuple[Truth, ...]:
        rng = cap.rng
        victim = str(rng.choice([site.mail_server, site.ssh_server]))
        t0 = start + float(rng.uniform(20, 60))
        _syn_burst(cap, t0, t0 + 180, int(per_minute * 3), victim, 8443, SPOOFED)
        return (Truth("syn_flood", SPOOFED, victim, deadline=_deadline(t0)),)

    build.__doc__ = f"A spoofed SYN flood of {per_minute:g} SYNs a minute for 3 minutes."
    return build


sweep(
    Sweep(
        name="udp_flood_rate",
        detector="udp_flood",
        parameter="packets per second, one source, 90 s",
        values=(1100.0, 1000.0, 900.0, 800.0, 600.0, 400.0),
        make=_udp_at,
        duration=240.0,
    )
)
sweep(
    Sweep(
        name="icmp_flood_rate",
        detector="icmp_flood",
        parameter="echo requests per second, one source, 90 s",
        values=(550.0, 500.0, 450.0, 400.0, 300.0, 200.0),
        make=_icmp_at,
        duration=240.0,
    )
)
sweep(
    Sweep(
        name="syn_flood_rate",
        detector="syn_flood",
        parameter="SYNs per minute, spoofed, 3 min",
        values=(240.0, 210.0, 190.0, 170.0, 140.0, 100.0),
        make=_syn_at,
        duration=300.0,
    )
)
