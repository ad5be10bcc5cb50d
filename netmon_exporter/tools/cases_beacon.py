"""Evasive beacons (hard suite) and the jitter sweep.

Implants are written as their frameworks schedule them: Cobalt Strike sleeps ``S``
minus a random share of up to ``jitter`` of ``S`` (so intervals are uniform in
``[S(1 - j), S]``); others draw symmetric jitter (``S(1 ± j)``). Check-ins are
constant-size requests answered by a small constant response; now and then the
operator tasks the implant (a bigger response, then a POST of the output a few
seconds later) and now and then a beat is lost (host asleep, network down). Several
hosts of one campaign call one C2 at one sleep, each on its own phase, amid a LAN whose
hosts all poll one mail server (the beacon detector's prevalence rule must tell them
apart).
"""

from __future__ import annotations

import numpy as np

from .cases_bruteforce import mail_users
from .scenarios import Truth, _Capture, _outsider, _Site
from .suites import CaseFn, Sweep, case, sweep


def long_session(
    cap: _Capture,
    client: str,
    server: str,
    dport: int,
    times: np.ndarray,
    request: int | np.ndarray,
    response: int | np.ndarray,
    rtt: float = 0.05,
    jitter_bytes: float = 0.0,
) -> None:
    """One TCP connection with one request/response exchange at each of ``times``.

    Requests and responses of any size (segments of at most 1400 bytes), one size for
    all exchanges or one per exchange; ``jitter_bytes`` varies each exchange's sizes by
    up to that share (0: constant). With one time it is an ordinary upload or download.
    """
    requests = np.broadcast_to(np.asarray(request), np.shape(times))
    responses = np.broadcast_to(np.asarray(response), np.shape(times))
    rng = cap.rng
    sport = int(rng.integers(32768, 61000))
    c_seq, s_seq = int(rng.integers(1, 2**31)), int(rng.integers(1, 2**31))
    t = float(times[0]) - 0.5
    cap.tcp(t, client, server, sport, dport, "S", c_seq)
    cap.tcp(t + rtt / 2, server, client, dport, sport, "SA", s_seq, c_seq + 1)
    cap.tcp(t + rtt, client, server, sport, dport, "A", c_seq + 1, s_seq + 1)
    c_seq, s_seq = c_seq + 1, s_seq + 1
    for t, request, response in zip(times, requests, responses, strict=True):
        scale = 1 + jitter_bytes * float(rng.uniform(-1, 1))
        left = max(int(request * scale), 1)
        u = float(t)
        while left > 0:  # the request, in segments the server acknowledges every other one
            n = min(left, 1400)
            cap.tcp(
                u, client, server, sport, dport, "PA" if n == left else "A", c_seq, s_seq, bytes(n)
            )
            c_seq += n
            left -= n
            u += 0.0005
        left = max(int(response * scale), 1)
        u += rtt / 2 + float(rng.exponential(rtt / 4))
        while left > 0:
            n = min(left, 1400)
            cap.tcp(u, server, client, dport, sport, "PA", s_seq, c_seq, bytes(n))
            s_seq += n
            left -= n
            u += 0.0005
        cap.tcp(u + rtt / 2, client, server, sport, dport, "A", c_seq, s_seq)
    end = float(times[-1]) + 1.0
    cap.tcp(end, client, server, sport, dport, "FA", c_seq, s_seq)
    cap.tcp(end + rtt / 2, server, client, dport, sport, "FA", s_seq, c_seq + 1)
    cap.tcp(end + rtt, client, server, sport, dport, "A", c_seq + 1, s_seq + 1)


def cs_sleeps(
    rng: np.random.Generator, sleep: float, jitter: float, n: int, symmetric: bool = False
) -> np.ndarray:
    """Intervals of an implant: Cobalt Strike's ``[S(1-j), S]``, or symmetric ``S(1 ± j)``."""
    if symmetric:
        return sleep * (1 + rng.uniform(-jitter, jitter, n))
    return sleep * (1 - jitter * rng.random(n))


def _implant_and_c2(cap: _Capture, site: _Site) -> tuple[str, str]:
    """An infected client of the site and the outside command-and-control server it calls."""
    return str(cap.rng.choice(site.clients[1:12])), _outsider(cap.rng)


def _implant(
    cap: _Capture,
    site: _Site,
    start: float,
    duration: float,
    jitter: float,
    symmetric: bool = False,
    sleep: tuple[float, float] = (20.0, 70.0),
) -> tuple[Truth, ...]:
    """An HTTPS beacon with a new connection per check-in; returns its truth."""
    rng = cap.rng
    client, c2 = _implant_and_c2(cap, site)
    port = int(rng.choice([443, 443, 80, 8443]))
    s = float(rng.uniform(*sleep))
    _check_ins(cap, client, c2, port, s, jitter, start, duration, symmetric)
    return (Truth("beacon", client, c2),)


def _check_ins(
    cap: _Capture,
    client: str,
    c2: str,
    port: int,
    s: float,
    jitter: float,
    start: float,
    duration: float,
    symmetric: bool = False,
) -> None:
    """An implant's HTTP(S) check-ins, a sleep of ``s`` seconds with ``jitter``
    (:func:`cs_sleeps`) between them, a connection each, tasked now and then (output
    POSTed a few seconds later), a beat lost now and then."""
    rng = cap.rng
    request, response = int(rng.integers(200, 600)), int(rng.integers(60, 400))
    t = start + float(rng.uniform(0, s))
    end = start + duration
    gaps = cs_sleeps(rng, s, jitter, int(duration / (s * (1 - jitter))) + 2, symmetric)
    for gap in gaps:
        if t >= end:
            break
        rtt = 0.03 + float(rng.exponential(0.02))
        if rng.random() < 0.05:  # a lost beat
            pass
        elif rng.random() < 0.08:  # tasked: output comes back in a POST a few seconds later
            cap.session(t, client, c2, port, request=request, response=int(response * 8), rtt=rtt)
            cap.session(
                t + float(rng.uniform(1, 6)),
                client,
                c2,
                port,
                request=int(rng.integers(1000, 20000)),
                response=response,
                rtt=rtt,
            )
        else:
            cap.session(t, client, c2, port, request=request, response=response, rtt=rtt)
        t += float(gap)


def _implant_case(jitter: float, doc: str, symmetric: bool = False) -> CaseFn:
    def build(cap: _Capture, site: _Site, start: float, duration: float) -> tuple[Truth, ...]:
        return _implant(cap, site, start, duration, jitter, symmetric=symmetric)

    build.__doc__ = doc
    return build


# Beacons with a new connection per check-in: (case, jitter, symmetric, what it is).
_IMPLANT_CASES = (
    (
        "beacon_jitter_30",
        0.3,
        False,
        "Cobalt-Strike-style beacon, sleep 20-70 s with 30 % jitter, tasked now and then.",
    ),
    (
        "beacon_jitter_50",
        0.5,
        False,
        "Cobalt-Strike-style beacon, sleep 20-70 s with 50 % jitter, tasked now and then.",
    ),
    (
        "beacon_jitter_symmetric_25",
        0.25,
        True,
        "Beacon with symmetric ±25 % jitter around a 20-70 s sleep.",
    ),
)
for _name, _jitter, _symmetric, _doc in _IMPLANT_CASES:
    case("hard", _name)(_implant_case(_jitter, _doc, symmetric=_symmetric))


@case("hard", "beacon_few_hosts_one_c2_among_lan_pollers")
def beacon_few_hosts_one_c2_among_lan_pollers(
    cap: _Capture, site: _Site, start: float, duration: float
) -> tuple[Truth, ...]:
    """3 to 5 hosts of a LAN infected by one campaign beacon to one C2 at the same sleep
    (20-70 s, 30 % jitter), each on its own phase; the LAN's 30 hosts, the infected ones
    among them, poll their provider's IMAPS (the prevalence rule's benign service)."""
    rng = cap.rng
    hosts = [
        f"{site.lan_prefix}{int(h)}" for h in rng.choice(np.arange(200, 255), 30, replace=False)
    ]
    mail_users(cap, start, duration, lambda user, t: hosts[user], _outsider(rng))
    infected = [str(h) for h in rng.choice(hosts, int(rng.integers(3, 6)), replace=False)]
    c2, port = _outsider(rng), int(rng.choice([443, 443, 80, 8443]))
    sleep = float(rng.uniform(20, 70))
    for client in infected:
        _check_ins(cap, client, c2, port, sleep, 0.3, start, duration)
    return tuple(Truth("beacon", client, c2) for client in infected)


@case("hard", "beacon_in_one_tls_connection")
def beacon_in_one_tls_connection(
    cap: _Capture, site: _Site, start: float, duration: float
) -> tuple[Truth, ...]:
    """Check-ins every 20-60 s (20 % jitter) inside one long-lived TLS connection."""
    rng = cap.rng
    client, c2 = _implant_and_c2(cap, site)
    sleep = float(rng.uniform(20, 60))
    t0 = start + float(rng.uniform(1, 30))
    gaps = cs_sleeps(rng, sleep, 0.2, int(duration / (sleep * 0.8)) + 2)
    times = t0 + np.concatenate([[0.0], np.cumsum(gaps)])
    times = times[times < start + duration - 2]
    times = times[rng.random(len(times)) >= 0.05]  # a beat lost now and then
    long_session(
        cap,
        client,
        c2,
        443,
        times,
        request=int(rng.integers(250, 600)),
        response=int(rng.integers(80, 400)),
        rtt=0.03 + float(rng.uniform(0, 0.1)),
    )
    return (Truth("beacon", client, c2),)


@case("hard", "beacon_udp_one_socket")
def beacon_udp_one_socket(
    cap: _Capture, site: _Site, start: float, duration: float
) -> tuple[Truth, ...]:
    """A UDP implant polling its server from one socket every 15-45 s (30 % jitter)."""
    rng = cap.rng
    client, c2 = _implant_and_c2(cap, site)
    port = int(rng.choice([443, 8080, 4444, 53]))
    sport = int(rng.integers(32768, 61000))
    sleep = float(rng.uniform(15, 45))
    t = start + float(rng.uniform(0, sleep))
    size = int(rng.integers(120, 400))
    while t < start + duration:
        if rng.random() >= 0.05:
            cap.udp(t, client, c2, sport, port, bytes(size))
            cap.udp(t + 0.04 + float(rng.exponential(0.02)), c2, client, port, sport, bytes(64))
        t += float(cs_sleeps(rng, sleep, 0.3, 1)[0])
    return (Truth("beacon", client, c2),)


def _jittered(jitter_percent: float) -> CaseFn:
    return _implant_case(
        jitter_percent / 100, f"Cobalt-Strike-style beacon with {jitter_percent:g} % jitter."
    )


sweep(
    Sweep(
        name="beacon_jitter",
        detector="beacon",
        parameter="Cobalt Strike jitter %, sleep 20-70 s, 15 min",
        values=(50, 60, 70, 80, 90, 99),
        make=_jittered,
    )
)
