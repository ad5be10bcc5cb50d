"""Benign roles of infrastructure that runs on schedules: every finding here is a false alarm.

A monitoring server polling hundreds of hosts (issue 13's paging storm), NTP clients,
discovery broadcasts, DHCP renewals, update checkers and telemetry agents, and a busy
site with all of them at once. Timing is what real software does: fixed periods with
scheduler jitter, per-host phases, RTTs, lost polls.
"""

from __future__ import annotations

import numpy as np

from .cases_beacon import long_session
from .scenarios import Truth, _Capture, _outsider, _Site
from .suites import case


def _poll_times(
    rng: np.random.Generator, start: float, duration: float, period: float, jitter: float
) -> np.ndarray:
    """Times of a periodic task: a random phase, ``period`` ± ``jitter`` seconds (normal)."""
    n = int(duration / period) + 1
    t = start + float(rng.uniform(0, period)) + period * np.arange(n) + rng.normal(0, jitter, n)
    return t[(t >= start) & (t < start + duration)]


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
            if rng.random() < 0.01:  # the poller skipped this check (overrun, restart)
                continue
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


def ntp_exchange(cap: _Capture, t: float, client: str, server: str, sport: int, rtt: float) -> None:
    """One NTP client request and the server's reply (48-byte NTPv4 packets)."""
    cap.udp(t, client, server, sport, 123, bytes(48))
    cap.udp(t + rtt, server, client, 123, sport, bytes(48))


@case("benign", "ntp_clients")
def ntp_clients(cap: _Capture, site: _Site, start: float, duration: float) -> tuple[Truth, ...]:
    """Chrony and ntpd clients polling a local server and pool servers every 64 s."""
    rng = cap.rng
    local = f"{site.lan_prefix}2"
    pool = [_outsider(rng) for _ in range(4)]
    for i, client in enumerate(site.clients[:12]):
        ntpd = i % 4 == 3  # ntpd keeps port 123 (one long flow); chrony a new port per request
        servers = [local, *rng.choice(pool, 3, replace=False)]
        for server in servers:
            rtt = 0.0004 if server == local else 0.01 + float(rng.exponential(0.02))
            for t in _poll_times(rng, start, duration, 64.0, 0.5):
                if rng.random() < 0.02:  # a lost reply: chrony just waits for the next poll
                    cap.udp(t, client, str(server), 123, 123, bytes(48))
                    continue
                sport = 123 if ntpd else int(rng.integers(32768, 61000))
                ntp_exchange(cap, float(t), client, str(server), sport, rtt)
    return ()


_UBNT = b"\x01\x00\x00\x00"  # Ubiquiti discovery v1 request
_NOTIFY = (
    b"NOTIFY * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nCACHE-CONTROL: max-age=1800\r\n"
    b"NT: upnp:rootdevice\r\nNTS: ssdp:alive\r\n\r\n"
)


@case("benign", "discovery_broadcasts")
def discovery_broadcasts(
    cap: _Capture, site: _Site, start: float, duration: float
) -> tuple[Truth, ...]:
    """Ubiquiti discovery every 10 s (broadcast and unicast replies), SSDP, mDNS, WS-Discovery."""
    rng = cap.rng
    controller = f"{site.lan_prefix}3"
    devices = [f"{site.lan_prefix}{230 + i}" for i in range(6)]
    c_port = int(rng.integers(40000, 60000))
    for t in _poll_times(rng, start, duration, 10.0, 0.02):
        cap.udp(float(t), controller, "255.255.255.255", c_port, 10001, _UBNT)
        for d in devices:  # each device answers the controller, unicast, from port 10001
            cap.udp(
                float(t) + float(rng.uniform(0.001, 0.05)),
                d,
                controller,
                10001,
                c_port,
                bytes(int(rng.integers(140, 180))),
            )
    for d in devices:  # and announces itself to the broadcast address every 10 s
        d_port = int(rng.integers(40000, 60000))
        for t in _poll_times(rng, start, duration, 10.0, 0.02):
            cap.udp(float(t), d, "255.255.255.255", d_port, 10001, bytes(160))
    for d in devices[:4]:  # SSDP alive notifications and mDNS announcements
        for t in _poll_times(rng, start, duration, 60.0, 1.0):
            for k in range(3):
                cap.udp(float(t) + 0.1 * k, d, "239.255.255.250", 1900, 1900, _NOTIFY)
        for t in _poll_times(rng, start, duration, 120.0, 2.0):
            cap.udp(float(t), d, "224.0.0.251", 5353, 5353, bytes(int(rng.integers(80, 300))))
    printer = f"{site.lan_prefix}240"
    for t in _poll_times(rng, start, duration, 30.0, 0.5):  # WS-Discovery hello/probe
        cap.udp(float(t), printer, "239.255.255.250", 3702, 3702, bytes(600))
    return ()


@case("benign", "dhcp_renewals")
def dhcp_renewals(cap: _Capture, site: _Site, start: float, duration: float) -> tuple[Truth, ...]:
    """Guest-network DHCP with 2-minute leases: 30 clients renew with the server every 60 s."""
    rng = cap.rng
    server = f"{site.lan_prefix}1"
    base = site.lan_prefix.rsplit(".", 2)[0]
    for i in range(30):
        client = f"{base}.77.{10 + i}"
        for t in _poll_times(rng, start, duration, 60.0, 0.3):
            cap.udp(float(t), client, server, 68, 67, bytes(300))
            cap.udp(
                float(t) + 0.002 + float(rng.exponential(0.003)), server, client, 67, 68, bytes(300)
            )
    return ()


@case("benign", "update_and_telemetry")
def update_and_telemetry(
    cap: _Capture, site: _Site, start: float, duration: float
) -> tuple[Truth, ...]:
    """Update checks (hourly) and telemetry agents uploading varied batches every 60 s."""
    rng = cap.rng
    updates, telemetry = _outsider(rng), _outsider(rng)
    for client in site.clients[:12]:
        t = start + float(rng.uniform(0, 3600))  # hourly: at most one check in the capture
        if t < start + duration:
            cap.session(t, client, updates, 443, request=450, response=900, rtt=0.04)
    for client in site.clients[:6]:
        for t in _poll_times(rng, start, duration, 60.0, 0.2):
            # A batch of metrics and events: its size follows what happened in the minute.
            size = int(min(max(rng.lognormal(np.log(2500), 0.6), 400), 60000))
            long_session(cap, client, telemetry, 443, np.array([t]), size, 120, rtt=0.03)
    return ()


@case("benign", "busy_site", intensity=2.0)
def busy_site(cap: _Capture, site: _Site, start: float, duration: float) -> tuple[Truth, ...]:
    """Everything at once: pollers, NTP, discovery, DHCP, updates, telemetry, mail lookups."""
    from .cases_dns import mail_reputation_lookups

    for role in (
        monitoring_poller,
        ntp_clients,
        discovery_broadcasts,
        dhcp_renewals,
        update_and_telemetry,
        mail_reputation_lookups,
    ):
        role(cap, site, start, duration)
    return ()
