"""Benign roles of infrastructure that polls: a monitoring server (issue 13's paging storm)."""

from __future__ import annotations

from .scenarios import Truth, _Capture, _Site
from .suites import case


@case("benign", "monitoring_poller")
def monitoring_poller(
    cap: _Capture, site: _Site, start: float, duration: float
) -> tuple[Truth, ...]:
    """A monitoring server polls 200 hosts every 30 s: ping, SNMP get, HTTP health check."""
    rng = cap.rng
    poller = f"{site.lan_prefix}5"
    base = site.lan_prefix.rsplit(".", 2)[0]  # "10.a"
    hosts = [f"{base}.{200 + i // 250}.{1 + i % 250}" for i in range(200)]
    phase = {h: float(rng.uniform(0, 30)) for h in hosts}  # each check has its own offset
    up = {h: rng.random() > 0.03 for h in hosts}  # a few hosts are down all along
    t0 = start + float(rng.uniform(0, 30))
    for k in range(int(duration // 30)):
        for i, h in enumerate(hosts):
            t = t0 + k * 30 + phase[h] + float(rng.normal(0, 0.05))
            rtt = 0.0005 + float(rng.exponential(0.002))
            cap.icmp_echo(t, poller, h, ident=4242, seq=k * 200 + i, reply=up[h])
            sport = 40000 + (k * 200 + i) % 20000
            cap.udp(t + 0.01, poller, h, sport, 161, bytes(45))
            if up[h]:
                cap.udp(t + 0.01 + rtt, h, poller, 161, sport, bytes(80))
            if i % 2 == 0 and up[h]:
                cap.session(t + 0.02, poller, h, 80, request=120, response=350, rtt=rtt * 2)
    return ()
