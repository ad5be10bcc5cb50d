"""Attacks that hide their packets' headers rather than their rate (hard).

* ``fragmented_syn_scan``: ``nmap -sS -f`` (every probe's TCP header cut into 8-byte IP
  fragments, so the first fragment holds the ports and sequence number and the second
  the flags: an IDS that does not put them together sees probes without a SYN) of
  100-1,000 ports of one host, at nmap -T3 to -T4 rates, over IPv4 or IPv6;
* ``fragmented_syn_scan_mtu16``: the same with ``--mtu 16`` (two fragments, flags in
  the second);
* ``syn_scan_with_data``: ``nmap -sS --data-length N`` (20-60 random bytes in every SYN,
  so that no probe is an empty SYN) of 100-1,000 ports;
* ``fin_scan_with_data``: ``nmap -sF --data-length N`` (FIN probes carrying 20-60
  bytes) of 1,000 ports, closed ports answering with resets;
* ``syn_flood_with_payload``: ``hping3 -S --flood --rand-source -d N`` (a spoofed SYN
  flood whose SYNs carry 64-512 bytes), 600-1,200 SYNs a minute for 3 minutes, beside
  the site's ordinary connections to the same server.
"""

from __future__ import annotations

import numpy as np

from .cases_scans import _scan_ports, stealth_probe
from .scenarios import SPOOFED, Truth, _Capture, _outsider, _outsider6, _probe, _Site
from .suites import CaseFn, case


def _fragmented_scan(frag: int) -> CaseFn:
    def build(cap: _Capture, site: _Site, start: float, duration: float) -> tuple[Truth, ...]:
        rng = cap.rng
        if rng.random() < 0.5:
            attacker, victim = _outsider(rng), str(rng.choice([site.ssh_server, site.mail_server]))
        else:
            attacker, victim = _outsider6(rng), str(rng.choice(site.clients[12:]))
        n = int(rng.integers(100, 1000))
        ports = rng.choice(np.arange(1, 10000), n, replace=False).tolist()
        span = n / float(rng.uniform(40, 600))  # probes per second, nmap -T3 to -T4
        t0 = start + float(rng.uniform(0, duration - span - 10))
        sport = int(rng.integers(32768, 65000))  # nmap keeps one source port per scan
        closed = str(rng.choice(["closed", "filtered"]))
        for i, p in enumerate(ports):
            answer = "open" if p in (22, 25, 80, 443) else closed
            _probe(cap, t0 + span * i / n, attacker, victim, int(p), answer, sport, frag)
        return (Truth("port_scan", attacker, victim),)

    return build


case("hard", "fragmented_syn_scan")(_fragmented_scan(8))
case("hard", "fragmented_syn_scan_mtu16")(_fragmented_scan(16))


@case("hard", "syn_scan_with_data")
def syn_scan_with_data(
    cap: _Capture, site: _Site, start: float, duration: float
) -> tuple[Truth, ...]:
    rng = cap.rng
    attacker = _outsider(rng)
    victim = str(rng.choice([site.ssh_server, site.mail_server, site.resolver]))
    n = int(rng.integers(100, 1000))
    size = int(rng.integers(20, 61))  # nmap sends the same length of random bytes each time
    span = n / float(rng.uniform(40, 600))
    t0 = start + float(rng.uniform(0, duration - span - 10))
    sport = int(rng.integers(32768, 65000))
    closed = str(rng.choice(["closed", "filtered"]))
    for i, p in enumerate(rng.choice(np.arange(1, 10000), n, replace=False).tolist()):
        answer = "open" if p in (22, 25, 53, 443) else closed
        data = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
        _probe(cap, t0 + span * i / n, attacker, victim, p, answer, sport, data=data)
    return (Truth("port_scan", attacker, victim),)


@case("hard", "syn_flood_with_payload")
def syn_flood_with_payload(
    cap: _Capture, site: _Site, start: float, duration: float
) -> tuple[Truth, ...]:
    rng = cap.rng
    victim = str(rng.choice([site.mail_server, site.ssh_server]))
    port = 443 if victim == site.mail_server else 22
    cap.tagging = False  # not the attack
    for t in np.sort(rng.uniform(start, start + duration, int(duration / 60 * 40))).tolist():
        client = str(rng.choice(site.clients))  # the server's ordinary users, all along
        cap.session(
            t, client, victim, port, int(rng.integers(200, 900)), int(rng.integers(1_000, 40_000))
        )
    size = int(rng.integers(64, 513))
    per_minute = float(rng.uniform(600, 1200))
    t0 = start + float(rng.uniform(60, 120))
    cap.tagging = True
    for t in np.sort(rng.uniform(t0, t0 + 180, int(per_minute * 3))).tolist():
        seq = int(rng.integers(1, 2**31))
        sport = int(rng.integers(1024, 65535))
        cap.tcp(t, _outsider(rng), victim, sport, port, "S", seq, payload=bytes(size), window=512)
    deadline = (np.floor(t0 / 60.0) + 2) * 60.0
    return (Truth("syn_flood", SPOOFED, victim, deadline=deadline),)


@case("hard", "fin_scan_with_data")
def fin_scan_with_data(
    cap: _Capture, site: _Site, start: float, duration: float
) -> tuple[Truth, ...]:
    rng = cap.rng
    attacker = _outsider(rng)
    victim = str(rng.choice([site.ssh_server, site.mail_server, site.resolver]))
    size = int(rng.integers(20, 61))
    span = 1000 / float(rng.uniform(40, 600))
    t0 = start + float(rng.uniform(0, duration - span - 10))
    sport = int(rng.integers(32768, 65000))
    for i, p in enumerate(_scan_ports(rng, 1000).tolist()):
        data = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
        closed = bool(rng.random() < 0.9)
        stealth_probe(cap, t0 + span * i / 1000, attacker, victim, sport, p, "F", closed, data)
    return (Truth("port_scan", attacker, victim),)
