"""Hosts that touch many peers (benign) and evasive scans and sweeps (hard).

* benign ``delivery_optimization``: Windows Delivery Optimization fetching an update
  from peers on tcp/7680, LAN and internet, most attempts failing; LAN peers also
  download from it;
* benign ``bittorrent_host``: a BitTorrent client in a big swarm: TCP to peers on
  their own ports (some on the common 6881 and 51413), DHT and uTP over UDP, half of
  the attempts unanswered (peers behind NAT), pieces exchanged with the rest;
* benign ``cdn_browser``: a browser on a heavy site: hundreds of servers on 443,
  completed, QUIC beside TCP, a few connections blocked (unanswered SYNs);
* hard: FIN, NULL, Xmas, ACK and Maimon scans of 1,000 ports; a UDP scan; 25 sources
  scanning 12 ports each of one host; an IPv6 scan and an IPv6 sweep that send each
  probe from another address of one /64; 30 sources sweeping a /24 on 445; a scan at
  one port per 30 s; a sweep at one host per 20 s; 14-port bursts every 5.5
  minutes; a SIP sweep hidden among unanswered UDP to random ports.

The ``port_scan_rate`` and ``address_sweep_rate`` sweeps measure the slowest
scan and sweep found within an hour.
"""

from __future__ import annotations

import numpy as np

from .cases_bruteforce import Step, exchange_session
from .scenarios import SPOOFED, Truth, _Capture, _outsider, _probe, _Site
from .suites import CaseFn, Sweep, case, sweep

# nmap's top ports start like this; the rest of a 1,000-port scan is spread below 10,000.
_TOP = (80, 23, 443, 21, 22, 25, 3389, 110, 445, 139, 143, 53, 135, 3306, 8080, 1723, 111)


def _scan_ports(rng: np.random.Generator, n: int) -> np.ndarray:
    rest = rng.choice(np.setdiff1d(np.arange(1, 10000), _TOP), n - len(_TOP), replace=False)
    return rng.permutation(np.concatenate([np.array(_TOP), rest]))[:n]


def _attacker_victim(rng: np.random.Generator, site: _Site) -> tuple[str, str]:
    attacker = _outsider(rng) if rng.random() < 0.6 else str(rng.choice(site.clients[1:12]))
    return attacker, str(rng.choice([site.ssh_server, site.mail_server, site.resolver]))


def stealth_probe(
    cap: _Capture,
    t: float,
    src: str,
    dst: str,
    sport: int,
    dport: int,
    flags: str,
    answer: bool,
    data: bytes = b"",
) -> None:
    """One probe without SYN (carrying ``data``, as nmap --data-length sends); a closed
    port answers with a reset, else nmap retries once."""
    rng = cap.rng
    seq, ack = int(rng.integers(1, 2**31)), int(rng.integers(1, 2**31))
    a = ack if "A" in flags else 0
    cap.tcp(t, src, dst, sport, dport, flags, seq, a, payload=data, window=1024)
    if answer:
        rtt = 0.001 + float(rng.random()) * 0.05
        if "A" in flags:  # RFC 793: a reset to an ACK-bearing segment carries no ACK
            cap.tcp(t + rtt, dst, src, dport, sport, "R", ack)
        else:
            end = seq + len(data) + ("F" in flags)
            cap.tcp(t + rtt, dst, src, dport, sport, "RA", 0, end)
    else:
        retry = t + 1.0 + float(rng.random()) * 0.3
        cap.tcp(retry, src, dst, sport, dport, flags, seq, 0, payload=data)


def _stealth_scan(flags: str, answers_closed: float) -> CaseFn:
    def build(cap: _Capture, site: _Site, start: float, duration: float) -> tuple[Truth, ...]:
        rng = cap.rng
        attacker, victim = _attacker_victim(rng, site)
        ports = _scan_ports(rng, 1000)
        span = 1000 / float(rng.uniform(40, 600))  # probes per second, nmap -T2 to -T4
        t0 = start + float(rng.uniform(0, duration - span - 10))
        sport = int(rng.integers(32768, 65000))  # nmap keeps one source port per scan
        for i, p in enumerate(ports):
            closed = rng.random() < answers_closed
            stealth_probe(cap, t0 + span * i / 1000, attacker, victim, sport, int(p), flags, closed)
        return (Truth("port_scan", attacker, victim),)

    return build


for _name, _flags, _closed in (
    ("fin_scan", "F", 0.9),
    ("null_scan", "", 0.9),
    ("xmas_scan", "FPU", 0.9),
    ("ack_scan", "A", 0.6),  # unfiltered ports answer RST, filtered ones nothing
    ("maimon_scan", "FA", 0.9),
):
    case("hard", _name)(_stealth_scan(_flags, _closed))


@case("hard", "udp_scan")
def udp_scan(cap: _Capture, site: _Site, start: float, duration: float) -> tuple[Truth, ...]:
    """nmap -sU of the 300 top UDP ports: retries, rate-limited port unreachables."""
    rng = cap.rng
    attacker, victim = _attacker_victim(rng, site)
    ports = rng.permutation(
        np.concatenate(
            [[53, 123, 137, 161, 500, 1900], rng.choice(np.arange(1, 33000), 294, replace=False)]
        )
    )
    t0 = start + float(rng.uniform(0, duration * 0.6))
    sport = int(rng.integers(32768, 65000))
    last_unreach = -10.0
    t = t0
    for p in ports:
        cap.udp(t, attacker, victim, sport, int(p), bytes(int(rng.choice([0, 0, 0, 40]))))
        if t - last_unreach >= 1.0:  # Linux sends one port unreachable per second
            cap._icmp(t + 0.002, victim, attacker, 3, 0, 0, bytes(28))
            last_unreach = t
        else:
            cap.udp(t + 1.2, attacker, victim, sport, int(p))  # no answer yet: retry once
        t += float(rng.exponential(0.05))
    return (Truth("port_scan", attacker, victim),)


@case("hard", "ipv6_port_scan_rotating_sources")
def ipv6_port_scan_rotating_sources(
    cap: _Capture, site: _Site, start: float, duration: float
) -> tuple[Truth, ...]:
    """An IPv6 scanner that sends each probe from another address of its /64 (no address
    probes more than one port): 40-200 ports of an IPv6 host over 20-200 s."""
    rng = cap.rng
    victim = str(rng.choice(site.clients[12:]))
    prefix = f"2001:db8:{int(rng.integers(0x100, 0xFFF)):x}:{int(rng.integers(1, 0xFFFF)):x}"
    n = int(rng.integers(40, 200))
    span = float(rng.uniform(20, 200))
    t0 = start + float(rng.uniform(0, duration - span))
    for i, p in enumerate(rng.choice(np.arange(1, 10000), n, replace=False).tolist()):
        iid = ":".join(f"{int(x):x}" for x in rng.integers(0, 0x10000, 4))
        answer = "open" if p in (22, 80, 443) else str(rng.choice(["closed", "filtered"]))
        _probe(cap, t0 + span * i / n, f"{prefix}:{iid}", victim, int(p), answer)
    return (Truth("port_scan", f"{prefix}::/64", victim),)


@case("hard", "ipv6_address_sweep_rotating_sources", duration=1200.0)
def ipv6_address_sweep_rotating_sources(
    cap: _Capture, site: _Site, start: float, duration: float
) -> tuple[Truth, ...]:
    """An IPv6 sweep of tcp/22 that sends each probe from another address of its /64 (no
    address probes two hosts): 45-80 low-numbered hosts of the site's /64 (``::1``,
    ``::2``, ...: how IPv6 sweeps guess), one every 4-14 s (about 33 in 5 minutes)."""
    rng = cap.rng
    prefix = f"2001:db8:{int(rng.integers(0x100, 0xFFF)):x}:{int(rng.integers(1, 0xFFFF)):x}"
    lan = site.clients[12].rsplit("::", 1)[0]  # fd00:1::/64
    live = {int(c.rsplit("::", 1)[1], 16) for c in site.clients[12:]}
    n = int(rng.integers(45, 80))
    t = start + float(rng.uniform(0, duration - 14 * n - 10))
    for h in rng.choice(np.arange(1, 0x100), n, replace=False).tolist():
        iid = ":".join(f"{int(x):x}" for x in rng.integers(0, 0x10000, 4))
        answer = str(rng.choice(["open", "closed"])) if h in live else "filtered"
        _probe(cap, t, f"{prefix}:{iid}", f"{lan}::{h:x}", 22, answer)
        t += float(rng.uniform(4, 14))
    return (Truth("address_sweep", f"{prefix}::/64", "tcp/22"),)


@case("hard", "distributed_port_scan")
def distributed_port_scan(
    cap: _Capture, site: _Site, start: float, duration: float
) -> tuple[Truth, ...]:
    """25 sources each scan 12 ports of one host (disjoint slices), over three minutes."""
    rng = cap.rng
    victim = str(rng.choice([site.ssh_server, site.mail_server]))
    ports = _scan_ports(rng, 300)
    t0 = start + float(rng.uniform(0, duration * 0.6))
    for k in range(25):
        src = _outsider(rng)
        t = t0 + float(rng.uniform(0, 150))
        for p in ports[12 * k : 12 * (k + 1)]:
            answer = "open" if p in (22, 25, 80, 443) else str(rng.choice(["closed", "filtered"]))
            _probe(cap, t, src, victim, int(p), answer)
            t += float(rng.exponential(2.0))
    return (Truth("port_scan", SPOOFED, victim),)


@case("hard", "distributed_sweep_445")
def distributed_sweep_445(
    cap: _Capture, site: _Site, start: float, duration: float
) -> tuple[Truth, ...]:
    """30 sources sweep the site's /24 on tcp/445, each taking 8 or 9 hosts."""
    rng = cap.rng
    hosts = rng.permutation(np.arange(1, 255))
    t0 = start + float(rng.uniform(0, duration * 0.6))
    for chunk in np.array_split(hosts, 30):
        src = _outsider(rng)
        t = t0 + float(rng.uniform(0, 120))
        for h in chunk:
            answer = str(rng.choice(["open", "closed", "filtered", "filtered", "filtered"]))
            _probe(cap, t, src, f"{site.lan_prefix}{int(h)}", 445, answer)
            t += float(rng.exponential(3.0))
    prefix = site.lan_prefix + "0/24"
    return (Truth("address_sweep", SPOOFED, f"{prefix} tcp/445"),)


def _paced(rng: np.random.Generator, start: float, end: float, gap: float) -> np.ndarray:
    """Times one ``gap`` apart on average (±20 %), from a random start to ``end``."""
    n = int((end - start) / gap) + 1
    t = start + float(rng.uniform(0, gap)) + np.cumsum(gap * rng.uniform(0.8, 1.2, n))
    return t[t < end]


@case("hard", "slow_port_scan_30s", duration=1200.0)
def slow_port_scan_30s(
    cap: _Capture, site: _Site, start: float, duration: float
) -> tuple[Truth, ...]:
    """A SYN scan paced at one port every 30 s for 20 minutes (under 15 ports in 5 min)."""
    rng = cap.rng
    attacker, victim = _attacker_victim(rng, site)
    times = _paced(rng, start, start + duration - 10, 30.0)
    for t, p in zip(times, _scan_ports(rng, len(times)), strict=True):
        _probe(cap, float(t), attacker, victim, int(p), str(rng.choice(["closed", "filtered"])))
    return (Truth("port_scan", attacker, victim),)


@case("hard", "slow_sweep_20s", duration=1200.0)
def slow_sweep_20s(cap: _Capture, site: _Site, start: float, duration: float) -> tuple[Truth, ...]:
    """A sweep of tcp/3389 paced at one host every 20 s for 20 minutes."""
    rng = cap.rng
    attacker = _outsider(rng)
    times = _paced(rng, start, start + duration - 10, 20.0)
    hosts = rng.choice(np.arange(1, 255), len(times), replace=False)
    for t, h in zip(times, hosts, strict=True):
        answer = str(rng.choice(["open", "closed", "filtered", "filtered"]))
        _probe(cap, float(t), attacker, f"{site.lan_prefix}{int(h)}", 3389, answer)
    return (Truth("address_sweep", attacker, "tcp/3389"),)


@case("hard", "burst_scan_14_ports")
def burst_scan_14_ports(
    cap: _Capture, site: _Site, start: float, duration: float
) -> tuple[Truth, ...]:
    """Bursts of 14 ports (one under Zeek's 15) every 5.5 minutes."""
    rng = cap.rng
    attacker, victim = _attacker_victim(rng, site)
    ports = iter(_scan_ports(rng, 200))
    t = start + float(rng.uniform(0, 60))
    while t < start + duration - 20:
        for k in range(14):
            _probe(cap, t + 0.05 * k, attacker, victim, int(next(ports)), "closed")
        t += 330.0
    return (Truth("port_scan", attacker, victim),)


@case("hard", "sip_sweep_with_udp_decoys")
def sip_sweep_with_udp_decoys(
    cap: _Capture, site: _Site, start: float, duration: float
) -> tuple[Truth, ...]:
    """A SIP OPTIONS sweep of udp/5060 mixed with unanswered UDP to random ports and hosts."""
    rng = cap.rng
    attacker = _outsider(rng)
    prefix = f"172.{int(rng.integers(16, 31))}.{int(rng.integers(0, 255))}."
    t0 = start + float(rng.uniform(0, duration * 0.6))
    sport = int(rng.integers(5061, 65000))
    for i, h in enumerate(rng.choice(np.arange(1, 255), 60, replace=False)):
        t = t0 + 2.0 * i + float(rng.random())
        cap.udp(t, attacker, f"{prefix}{int(h)}", sport, 5060, bytes(420))
        if rng.random() < 0.1:  # a PBX answers (404 or 200)
            cap.udp(t + 0.03, f"{prefix}{int(h)}", attacker, 5060, sport, bytes(380))
    for _ in range(150):  # decoys: random hosts, random unprivileged ports, never answered
        t = t0 + float(rng.uniform(0, 150))
        dst = f"{int(rng.integers(20, 220))}.{int(rng.integers(0, 255))}.0.{int(rng.integers(1, 254))}"
        cap.udp(
            t,
            attacker,
            dst,
            int(rng.integers(1024, 65535)),
            int(rng.integers(1024, 65535)),
            bytes(int(rng.integers(20, 200))),
        )
    return (Truth("address_sweep", attacker, "udp/5060"),)


# ----------------------------------------------------------------------------- benign


def _transfer(rng: np.random.Generator, down: int, up: int = 0) -> list[Step]:
    """A peer-protocol session: handshakes, then blocks one way (and some the other)."""
    steps: list[Step] = [("c", 68, 0.0), ("s", 68, 0.0), ("s", int(rng.integers(40, 300)), 0.0)]
    while down > 0 or up > 0:
        if down > 0:
            n = min(down, 16384 * int(rng.integers(1, 5)))
            steps += [("c", 17 * int(rng.integers(1, 5)), 0.01), ("s", n, 0.0)]
            down -= n
        if up > 0:
            n = min(up, 16384)
            steps += [("s", 17, 0.01), ("c", n, 0.0)]
            up -= n
    return steps


def _failed_connect(cap: _Capture, t: float, src: str, dst: str, dport: int, reset: bool) -> None:
    """A connection attempt that fails: reset, or SYN retransmitted at 1, 3 (and 7) s."""
    rng = cap.rng
    sport = int(rng.integers(49152, 65535))
    seq = int(rng.integers(1, 2**31))
    cap.tcp(t, src, dst, sport, dport, "S", seq)
    if reset:
        cap.tcp(t + 0.02 + float(rng.exponential(0.05)), dst, src, dport, sport, "RA", 0, seq + 1)
        return
    for d in (1.0, 3.0, 7.0)[: int(rng.integers(2, 4))]:
        cap.tcp(t + d, src, dst, sport, dport, "S", seq)


@case("benign", "delivery_optimization")
def delivery_optimization(
    cap: _Capture, site: _Site, start: float, duration: float
) -> tuple[Truth, ...]:
    """Windows Delivery Optimization fetching an update from peers on tcp/7680."""
    rng = cap.rng
    host = str(rng.choice(site.clients[1:12]))
    base = site.lan_prefix.rsplit(".", 2)[0]
    lan = [f"{base}.{int(rng.integers(0, 4)) + 30}.{int(h)}" for h in rng.choice(254, 40) + 1]
    wan = [_outsider(rng) for _ in range(110)]
    lan_up = {p: rng.random() < 0.45 for p in lan}
    wan_up = {p: rng.random() < 0.2 for p in wan}
    t = start + float(rng.uniform(0, 60))
    while t < start + duration - 30:  # a download job asks 20-40 peers within seconds
        for peer in rng.choice(lan + wan, int(rng.integers(20, 40)), replace=False):
            peer = str(peer)
            u = t + float(rng.exponential(4.0))
            up = lan_up.get(peer, wan_up.get(peer, False))
            if up:
                steps = _transfer(rng, int(rng.integers(64, 1024)) * 1024)
                exchange_session(
                    cap, u, host, peer, 7680, steps, rtt=0.002 if peer in lan_up else 0.06
                )
            else:
                _failed_connect(cap, u, host, peer, 7680, reset=rng.random() < 0.15)
        t += float(rng.exponential(150.0))
    for peer in rng.choice(lan, 6, replace=False):  # LAN peers fetch from this host too
        u = start + float(rng.uniform(0, duration - 60))
        steps = _transfer(rng, int(rng.integers(256, 2048)) * 1024)
        exchange_session(cap, u, str(peer), host, 7680, steps, rtt=0.002)
    return ()


@case("benign", "bittorrent_host")
def bittorrent_host(cap: _Capture, site: _Site, start: float, duration: float) -> tuple[Truth, ...]:
    """A BitTorrent client in a big swarm: TCP and uTP peers, DHT, half of them unreachable."""
    rng = cap.rng
    host = str(rng.choice(site.clients[1:12]))
    listen = 51413
    peers = [_outsider(rng) for _ in range(400)]
    port = {
        p: int(rng.choice([6881, 51413])) if rng.random() < 0.3 else int(rng.integers(1024, 65535))
        for p in peers
    }
    reachable = {p: rng.random() < 0.45 for p in peers}
    dht_sport = int(rng.integers(1024, 65535))
    t = start
    while t < start + duration - 10:
        peer = str(rng.choice(peers))
        if rng.random() < 0.6:  # TCP peer connection
            if reachable[peer]:
                steps = _transfer(
                    rng, int(rng.integers(1, 40)) * 16384, int(rng.integers(0, 8)) * 16384
                )
                exchange_session(
                    cap, t, host, peer, port[peer], steps, rtt=0.05 + float(rng.random()) * 0.2
                )
            else:
                _failed_connect(cap, t, host, peer, port[peer], reset=rng.random() < 0.1)
        else:  # uTP over UDP from the listen socket
            if reachable[peer]:
                for k in range(int(rng.integers(4, 40))):
                    u = t + 0.05 * k
                    cap.udp(u, host, peer, listen, port[peer], bytes(int(rng.integers(20, 60))))
                    cap.udp(u + 0.04, peer, host, port[peer], listen, bytes(1400))
            else:
                for k in range(int(rng.integers(1, 3))):
                    cap.udp(t + 2.0 * k, host, peer, listen, port[peer], bytes(20))
        t += float(rng.exponential(1.5))
    t = start
    while t < start + duration:  # DHT lookups: small queries, answered or not
        node = str(rng.choice(peers))
        cap.udp(t, host, node, dht_sport, port[node], bytes(int(rng.integers(90, 110))))
        if reachable[node] or rng.random() < 0.3:
            cap.udp(t + 0.08, node, host, port[node], dht_sport, bytes(int(rng.integers(200, 400))))
        t += float(rng.exponential(0.8))
    for peer in rng.choice(peers, 25, replace=False):  # peers that connect to us
        u = start + float(rng.uniform(0, duration - 30))
        steps = _transfer(rng, 0, int(rng.integers(1, 30)) * 16384)
        exchange_session(cap, u, str(peer), host, listen, steps, rtt=0.1)
    return ()


@case("benign", "cdn_browser")
def cdn_browser(cap: _Capture, site: _Site, start: float, duration: float) -> tuple[Truth, ...]:
    """Heavy browsing: hundreds of CDN and ad servers on 443, QUIC, a few blocked trackers."""
    rng = cap.rng
    user = str(rng.choice(site.clients[1:12]))
    servers = [_outsider(rng) for _ in range(350)]
    blocked = set(rng.choice(servers, 6, replace=False).tolist())  # the firewall drops these
    t = start + float(rng.uniform(0, 20))
    while t < start + duration - 30:  # a page: 20-80 connections within a few seconds
        for server in rng.choice(servers, int(rng.integers(20, 80)), replace=False):
            server = str(server)
            u = t + float(rng.exponential(1.5))
            if server in blocked:
                _failed_connect(cap, u, user, server, 443, reset=False)
            elif rng.random() < 0.15:  # HTTP/3 over QUIC
                for k in range(int(rng.integers(3, 30))):
                    cap.udp(u + 0.01 * k, server, user, 443, 50000 + int(t) % 1000, bytes(1200))
                    if k % 3 == 0:
                        cap.udp(
                            u + 0.01 * k + 0.002,
                            user,
                            server,
                            50000 + int(t) % 1000,
                            443,
                            bytes(40),
                        )
            else:
                steps: list[Step] = [
                    ("c", 583, 0.0),
                    ("s", int(rng.integers(2500, 5000)), 0.0),
                    ("c", 80, 0.0),
                    ("c", int(rng.integers(300, 900)), 0.0),
                    ("s", int(rng.lognormal(np.log(20000), 1.2)) + 100, 0.02),
                ]
                exchange_session(
                    cap, u, user, server, 443, steps, rtt=0.01 + float(rng.random()) * 0.08
                )
        t += float(rng.exponential(20.0))
    return ()


# ----------------------------------------------------------------------------- sweeps


def _scan_at(per_minute: float) -> CaseFn:
    def build(cap: _Capture, site: _Site, start: float, duration: float) -> tuple[Truth, ...]:
        rng = cap.rng
        attacker, victim = _attacker_victim(rng, site)
        times = _paced(rng, start, start + duration - 10, 60.0 / per_minute)
        for t, p in zip(times, _scan_ports(rng, max(len(times), 20)), strict=False):
            _probe(cap, float(t), attacker, victim, int(p), str(rng.choice(["closed", "filtered"])))
        return (Truth("port_scan", attacker, victim),)

    return build


def _sweep_at(per_minute: float) -> CaseFn:
    def build(cap: _Capture, site: _Site, start: float, duration: float) -> tuple[Truth, ...]:
        rng = cap.rng
        attacker = _outsider(rng)
        times = _paced(rng, start, start + duration - 10, 60.0 / per_minute)
        base = site.lan_prefix.rsplit(".", 2)[0]
        hosts = rng.choice(np.arange(0, 1024), len(times), replace=False)
        for t, h in zip(times, hosts, strict=True):
            dst = f"{base}.{100 + int(h) // 254}.{1 + int(h) % 254}"
            _probe(cap, float(t), attacker, dst, 22, str(rng.choice(["closed", "filtered"])))
        return (Truth("address_sweep", attacker, "tcp/22"),)

    return build


sweep(
    Sweep(
        name="port_scan_rate",
        detector="port_scan",
        parameter="ports per minute on one host, for an hour",
        values=(1.0, 0.6, 0.45, 0.4, 0.35, 0.25),
        make=_scan_at,
        duration=3600.0,
    )
)
sweep(
    Sweep(
        name="address_sweep_rate",
        detector="address_sweep",
        parameter="hosts per minute on tcp/22, for an hour",
        values=(1.5, 1.0, 0.8, 0.67, 0.55, 0.4),
        make=_sweep_at,
        duration=3600.0,
    )
)
