"""Attacks that hide their packets' headers rather than their rate (hard).

* ``fragmented_syn_scan``: ``nmap -sS -f`` (every probe's TCP header cut into 8-byte IP
  fragments, so the first fragment holds the ports and sequence number and the second
  the flags: an IDS that does not put them together sees probes without a SYN) of
  100-1,000 ports of one host, at nmap -T3 to -T4 rates, over IPv4 or IPv6;
* ``fragmented_syn_scan_mtu16``: the same with ``--mtu 16`` (two fragments, flags in
  the second).
"""

from __future__ import annotations

import numpy as np

from .scenarios import Truth, _Capture, _outsider, _outsider6, _Site
from .suites import CaseFn, case


def fragmented_probe(
    cap: _Capture, t: float, src: str, dst: str, sport: int, dport: int, answer: str, frag: int
) -> None:
    """One SYN probe sent in ``frag``-byte fragments; the target reassembles it and answers
    ('open': SYN-ACK, then the prober's kernel resets; 'closed': RST-ACK; 'filtered':
    nothing) in whole packets."""
    rng = cap.rng
    seq = int(rng.integers(1, 2**31))
    cap.tcp(t, src, dst, sport, dport, "S", seq, window=1024, frag=frag)
    rtt = 0.001 + float(rng.random()) * 0.05
    if answer == "open":
        cap.tcp(t + rtt, dst, src, dport, sport, "SA", int(rng.integers(1, 2**31)), seq + 1)
        cap.tcp(t + rtt + 0.0002, src, dst, sport, dport, "R", seq + 1)
    elif answer == "closed":
        cap.tcp(t + rtt, dst, src, dport, sport, "RA", 0, seq + 1)


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
            fragmented_probe(cap, t0 + span * i / n, attacker, victim, sport, int(p), answer, frag)
        return (Truth("port_scan", attacker, victim),)

    return build


case("hard", "fragmented_syn_scan")(_fragmented_scan(8))
case("hard", "fragmented_syn_scan_mtu16")(_fragmented_scan(16))
