"""ICMP roles: the pings a site runs all day (benign) and tunnels inside echo (hard).

Benign: monitoring that pings hundreds of hosts every second (fping, Prometheus'
blackbox exporter, Nagios ``check_icmp``), large fixed-size pings and a jumbo-frame
test whose requests are fragmented while the replies come whole, path-MTU probing
(Linux runs stepping sizes up, Windows bisecting on one identifier beside a running
``ping -t``) and Windows ``pathping``. Their replies are echoes: they carry exactly
what the requests did, lost or fragmented as they may be.

Hard: the tools as they send (ptunnel's 28-byte header on every message, icmpsh's
64-byte output chunks and 200 ms polls, pingtunnel's downloads in replies), at the low
rates an operator uses to stay unnoticed: an interactive SSH session through ptunnel,
an HTTPS download through pingtunnel, an icmpsh reverse shell and an upload through a
ptunnel proxy that acknowledges each chunk. The finding's source is the host that
sends the echo requests (the tunnel client), its target the tunnel server.
"""

from __future__ import annotations

import struct

import numpy as np

from .scenarios import Truth, _Capture, _checksum, _outsider, _outsider6, _Site
from .suites import CaseFn, Sweep, case, sweep

PTUNNEL_HEADER = 28  # ptunnel(-ng): magic, destination, state, ack, length, seq, id
SSH_MIN = 36  # one SSH transport packet carrying a keystroke (chacha20-poly1305)
ICMPSH_CHUNK = 64  # icmpsh's default maximal data buffer (-s)


def echo(
    cap: _Capture,
    t: float,
    src: str,
    dst: str,
    ident: int,
    seq: int,
    size: int,
    reply: bool = False,
    data: bytes | None = None,
) -> None:
    """One ICMP (IPv4) or ICMPv6 echo request (or reply) carrying ``size`` bytes of data."""
    body = data if data is not None else cap.rng.bytes(size)
    if ":" in src:
        msg = struct.pack("!BBHHH", 129 if reply else 128, 0, 0, ident, seq & 0xFFFF) + body
        cap._frame(t, src, dst, 58, msg, 2)
    else:
        cap._icmp(t, src, dst, 0 if reply else 8, ident, seq & 0xFFFF, body)


def ping(
    cap: _Capture,
    t: float,
    src: str,
    dst: str,
    ident: int,
    seq: int,
    size: int,
    rtt: float,
    answered: bool = True,
    duplicated: bool = False,
) -> None:
    """An echo request and, if ``answered``, its echo reply ``rtt`` later (the same data);
    ``duplicated``: the reply comes twice (ping's "DUP!")."""
    data = bytes((seq + i) & 0xFF for i in range(size))  # ping's pattern: the same both ways
    echo(cap, t, src, dst, ident, seq, size, data=data)
    if answered:
        echo(cap, t + rtt, dst, src, ident, seq, size, reply=True, data=data)
    if answered and duplicated:
        echo(cap, t + rtt + 0.0002, dst, src, ident, seq, size, reply=True, data=data)


def _rtt(rng: np.random.Generator, base: float) -> float:
    return base * (1 + float(rng.exponential(0.3)))


# ----------------------------------------------------------------------------- benign


@case("benign", "icmp_monitoring_many_hosts", duration=300.0)
def icmp_monitoring_many_hosts(
    cap: _Capture, site: _Site, start: float, duration: float
) -> tuple[Truth, ...]:
    """fping every second to 500 hosts, blackbox probes to 40 sites, check_icmp to 100."""
    rng = cap.rng
    base = site.lan_prefix.rsplit(".", 2)[0]  # "10.a"
    # fping -l -p 1000 -b 56 (its default size): one identifier, a round every second
    poller = f"{site.lan_prefix}6"
    hosts = [f"{base}.{210 + i // 250}.{1 + i % 250}" for i in range(500)]
    down = rng.random(500) < 0.03
    ident = int(rng.integers(1, 65000))
    seq = 0
    for r in np.arange(start + float(rng.uniform(0, 1)), start + duration, 1.0):
        for i, h in enumerate(hosts):
            t = float(r) + i * 0.001  # fping -i 1: a millisecond between targets
            answered = not down[i] and rng.random() > 0.005
            ping(cap, t, poller, h, ident, seq, 56, _rtt(rng, 0.0005), answered)
            seq += 1
    # blackbox exporter: one echo per probe (36 bytes), a new identifier each, every 15 s
    prober = f"{site.lan_prefix}7"
    sites = [_outsider(rng) for _ in range(40)]
    for s in sites:
        for t in np.arange(start + float(rng.uniform(0, 15)), start + duration, 15.0):
            rtt = _rtt(rng, 0.01 + 0.04 * rng.random())
            ping(cap, float(t), prober, s, int(rng.integers(1, 65000)), 1, 36, rtt)
    # check_icmp (Nagios): every 60 s per host, 5 echoes of 68 bytes 80 ms apart, a process each
    for h in hosts[:100]:
        for t in np.arange(start + float(rng.uniform(0, 60)), start + duration, 60.0):
            pid = int(rng.integers(1000, 65000))
            for k in range(5):
                ping(cap, float(t) + 0.08 * k, prober, h, pid, k, 68, _rtt(rng, 0.0005))
    return ()


@case("benign", "large_pings_and_jumbo_test", duration=600.0)
def large_pings_and_jumbo_test(
    cap: _Capture, site: _Site, start: float, duration: float
) -> tuple[Truth, ...]:
    """ping -s 1400 -i 0.2, replies duplicated, Windows ping -l 1472, 2000-8972 bytes to a jumbo NAS."""
    rng = cap.rng
    admin, win = site.clients[0], str(rng.choice(site.clients[1:12]))
    server = str(rng.choice(site.v4_servers))
    t0 = start + float(rng.uniform(10, 60))
    ident = int(rng.integers(1, 65000))
    for k in range(int(180 / 0.2)):  # three minutes of ping -s 1400 -i 0.2
        lost = rng.random() < 0.01
        ping(cap, t0 + 0.2 * k, admin, server, ident, k, 1400, _rtt(rng, 0.02), not lost)
    # ping -s 1200 to a host whose bonded links (round robin, no LAG on the switch) send
    # every reply twice: DUP!, two minutes
    dup_host, ident = f"{site.lan_prefix}231", int(rng.integers(1, 65000))
    t0 = start + float(rng.uniform(10, 300))
    for k in range(120):
        ping(cap, t0 + k, admin, dup_host, ident, k, 1200, _rtt(rng, 0.0005), duplicated=True)
    t0 = start + float(rng.uniform(100, 300))
    for k in range(120):  # Windows: identifier 1, 32 bytes by default, here -l 1472
        ping(cap, t0 + k, win, site.ssh_server, 1, 100 + k, 1472, _rtt(rng, 0.0005))
    # jumbo-frame test from a 1500-byte segment to a NAS with 9000-byte frames, seen at
    # the NAS: ping -c 10 -s N, N stepping up to 8972, a process each; every request
    # comes in 1480-byte fragments, every reply leaves whole
    nas = f"{site.lan_prefix}230"
    t = start + float(rng.uniform(100, 400))
    for size in (2000, 3000, 4000, 5000, 6000, 7000, 8000, 8972):
        ident = int(rng.integers(1, 65000))
        for k in range(10):
            data = bytes((k + i) & 0xFF for i in range(size))
            msg = struct.pack("!BBHHH", 8, 0, 0, ident, k) + data
            msg = msg[:2] + struct.pack("!H", _checksum(msg)) + msg[4:]
            cap._frame(t + k, admin, nas, 1, msg, None, frag=1480)
            echo(cap, t + k + _rtt(rng, 0.0008), nas, admin, ident, k, size, True, data)
        t += 12
    return ()


@case("benign", "mtu_probing_and_pathping", duration=600.0)
def mtu_probing_and_pathping(
    cap: _Capture, site: _Site, start: float, duration: float
) -> tuple[Truth, ...]:
    """Path-MTU probing (Linux steps, Windows bisecting beside ping -t) and pathping."""
    rng = cap.rng
    gateway = f"{site.lan_prefix}1"
    path_mtu = 1464  # a PPPoE uplink (1492): larger echoes get "fragmentation needed"
    target = str(rng.choice(site.v4_servers))

    def probe(t: float, src: str, ident: int, seq: int, size: int) -> None:
        if size <= path_mtu:
            ping(cap, t, src, target, ident, seq, size, _rtt(rng, 0.02))
        else:
            echo(cap, t, src, target, ident, seq, size)
            quote = bytes(28)  # the unused word, the original IP header and 8 bytes
            cap._icmp(t + 0.001, gateway, src, 3, 0, 1492 & 0xFFFF, quote)

    # Linux: ping -M do -c 3 -s N for N = 1200, 1204, ... 1500: a process (identifier) each
    linux = site.clients[0]
    t = start + float(rng.uniform(10, 60))
    for size in range(1200, 1501, 4):
        ident = int(rng.integers(1, 65000))
        for k in range(3):
            probe(t + k, linux, ident, k, size)
        t += 3.2
    # Windows: ping -t (32 bytes) left running while ping -f -l N -n 2 bisects, all on
    # identifier 1: one flow of mixed sizes, the too-large ones unanswered
    win = str(rng.choice(site.clients[1:12]))
    t0 = start + float(rng.uniform(10, 100))
    seq = int(rng.integers(1, 30000))
    for k in range(400):
        ping(cap, t0 + k, win, target, 1, seq, 32, _rtt(rng, 0.02))
        seq += 1
    lo, hi, t = 1000, 1500, t0 + 30
    while hi - lo > 1:
        size = (lo + hi) // 2
        for k in range(2):
            probe(t + k, win, 1, seq, size)
            seq += 1
        lo, hi = (size, hi) if size <= path_mtu else (lo, size)
        t += 6
    # pathping: 3 TTL-limited echoes per hop (time exceeded from each router, the
    # target's echo reply at the last hop), then 100 echoes to each router 0.25 s apart
    routers = [gateway] + [_outsider(rng) for _ in range(6)]
    far = _outsider(rng)
    t = start + float(rng.uniform(200, 400))
    for hop, r in enumerate(routers + [far]):
        for _ in range(3):
            if r == far:
                ping(cap, t, win, far, 1, seq, 32, _rtt(rng, 0.03))
            else:
                echo(cap, t, win, far, 1, seq, 32)
                cap._icmp(t + _rtt(rng, 0.002 * (hop + 1)), r, win, 11, 0, 0, bytes(28))
            seq += 1
            t += 0.5
    for k in range(100):
        for r in routers:
            ping(cap, t + 0.25 * k, win, r, 1, seq, 32, _rtt(rng, 0.003))
            seq += 1
    return ()


# ----------------------------------------------------------------------------- hard


def _endpoints(cap: _Capture, site: _Site, v6_share: float = 0.0) -> tuple[str, str]:
    """A client of the site and an outside server (IPv6 with probability ``v6_share``)."""
    rng = cap.rng
    if rng.random() < v6_share:
        return str(rng.choice(site.clients[12:])), _outsider6(rng)
    return str(rng.choice(site.clients[1:12])), _outsider(rng)


class _Tunnel:
    """One echo identifier between a client and a tunnel server: the client's requests,
    the server's replies (its data, or acks), and, when the server's kernel still answers
    pings, the kernel's echo of every request."""

    def __init__(
        self, cap: _Capture, client: str, server: str, rtt: float, kernel_echo: bool
    ) -> None:
        self.cap, self.client, self.server = cap, client, server
        self.rtt, self.kernel_echo = rtt, kernel_echo
        self.ident = int(cap.rng.integers(1, 65000))
        self.seq = int(cap.rng.integers(0, 65000))

    def new_identifier(self) -> None:
        self.ident = int(self.cap.rng.integers(1, 65000))

    def request(self, t: float, size: int) -> None:
        data = self.cap.rng.bytes(size)
        echo(self.cap, t, self.client, self.server, self.ident, self.seq, size, data=data)
        if self.kernel_echo:
            at = t + self.rtt / 2 * (1 + 0.2 * self.cap.rng.random())
            echo(self.cap, at, self.server, self.client, self.ident, self.seq, size, True, data)
        self.seq += 1

    def reply(self, t: float, size: int) -> None:
        echo(self.cap, t, self.server, self.client, self.ident, self.seq - 1, size, reply=True)


def _command_output(rng: np.random.Generator) -> tuple[int, int]:
    """A shell command an operator types (its length) and the size of its output."""
    command, low, high = [
        (6, 20, 40),  # whoami
        (12, 400, 900),  # net user
        (13, 1500, 4000),  # ipconfig /all
        (10, 2500, 4500),  # systeminfo
        (8, 4000, 9000),  # tasklist
        (12, 2500, 6000),  # netstat -ano
        (14, 600, 1800),  # dir C:\Users
        (24, 1000, 5000),  # type notes.txt
    ][int(rng.integers(0, 8))]
    return command, int(rng.integers(low, high))


@case("hard", "ptunnel_ssh_session")
def ptunnel_ssh_session(
    cap: _Capture, site: _Site, start: float, duration: float
) -> tuple[Truth, ...]:
    """An interactive SSH session through ptunnel for ~12 minutes: keystrokes, outputs."""
    rng = cap.rng
    client, proxy = _endpoints(cap, site)
    tun = _Tunnel(cap, client, proxy, 0.03 + 0.05 * rng.random(), rng.random() < 0.5)
    t = start + float(rng.uniform(5, 90))
    end = t + float(rng.uniform(600, 780))
    next_poll = t
    while t < end:
        # think, with the client's polls (header only, answered alike) every ~1.5 s
        pause = float(rng.exponential(12.0)) + 2
        while next_poll < t + pause:
            tun.request(next_poll, PTUNNEL_HEADER)
            tun.reply(next_poll + tun.rtt, PTUNNEL_HEADER)
            next_poll += float(rng.uniform(1.0, 2.0))
        t += pause
        command, output = _command_output(rng)
        for _ in range(command + 1):  # each keystroke goes out and is echoed by the shell
            tun.request(t, PTUNNEL_HEADER + SSH_MIN)
            tun.reply(t + tun.rtt, PTUNNEL_HEADER + SSH_MIN)
            t += float(rng.uniform(0.12, 0.35))
        left = output + SSH_MIN
        while left > 0:  # the output, in the proxy's replies of up to 1024 bytes of data
            chunk = min(left, int(rng.integers(200, 1025)))
            tun.reply(t + tun.rtt, PTUNNEL_HEADER + chunk)
            tun.request(t + tun.rtt * 1.5, PTUNNEL_HEADER)  # the client's ack
            left -= chunk
            t += 0.02 + tun.rtt
        next_poll = max(next_poll, t)
    return (Truth("icmp_tunnel", client, proxy),)


@case("hard", "pingtunnel_https_download", duration=600.0)
def pingtunnel_https_download(
    cap: _Capture, site: _Site, start: float, duration: float
) -> tuple[Truth, ...]:
    """Browsing through pingtunnel: a page and a 30-300 KB download, in large replies."""
    rng = cap.rng
    client, server = _endpoints(cap, site, v6_share=0.3)
    tun = _Tunnel(cap, client, server, 0.04 + 0.06 * rng.random(), False)
    t = start + float(rng.uniform(10, 200))
    for size in (int(rng.integers(8_000, 40_000)), int(rng.integers(30_000, 300_000))):
        tun.new_identifier()  # a TCP connection through the tunnel: an identifier of its own
        # TLS handshake: client hello out, server hello and certificates back
        tun.request(t, 60 + 517)
        for chunk in (1300, 1300, 1300, 900):
            tun.reply(t + tun.rtt, 60 + chunk)
        t += tun.rtt * 1.2
        tun.request(t, 60 + 126)
        tun.request(t + 0.01, 60 + int(rng.integers(300, 700)))  # the HTTP request
        t += tun.rtt
        left = size
        while left > 0:  # the response: ~1300-byte segments, the client acks every second
            n = 0
            while left > 0 and n < 8:
                chunk = min(left, 1300)
                tun.reply(t, 60 + chunk)
                left -= chunk
                t += float(rng.uniform(0.005, 0.02))
                n += 1
            tun.request(t, 60 + int(rng.integers(0, 40)))
            t += tun.rtt
        t += float(rng.uniform(5, 60))
    return (Truth("icmp_tunnel", client, server),)


def _icmpsh(
    cap: _Capture, slave: str, master: str, t: float, end: float, delay: float, output: int
) -> None:
    """icmpsh: the slave polls every ``delay`` s with up to 64 bytes of output; the master
    answers each poll with a command or nothing. Commands come until ``output`` bytes of
    output have been asked for."""
    rng = cap.rng
    rtt = 0.03 + 0.05 * rng.random()
    ident, seq = int(rng.integers(1, 65000)), 0
    pending, asked = 0, 0
    next_command = t + float(rng.uniform(10, 40))
    while t < end:
        chunk = min(pending, ICMPSH_CHUNK)
        pending -= chunk
        echo(cap, t, slave, master, ident, seq, chunk)
        command = 0
        if t >= next_command and pending == 0 and asked < output:
            command, out = _command_output(rng)
            out = min(out, output - asked)
            pending, asked = out, asked + out
            next_command = t + float(rng.uniform(15, 60))
        echo(cap, t + rtt, master, slave, ident, seq, command, reply=True)
        seq += 1
        t += delay + rtt + float(rng.uniform(0, 0.01))


@case("hard", "icmpsh_reverse_shell")
def icmpsh_reverse_shell(
    cap: _Capture, site: _Site, start: float, duration: float
) -> tuple[Truth, ...]:
    """An icmpsh reverse shell: polls every 0.2-1 s, 20-36 KB of command output in 64-byte chunks."""
    rng = cap.rng
    slave, master = _endpoints(cap, site)
    t0 = start + float(rng.uniform(5, 60))
    delay = float(rng.choice([0.2, 0.5, 1.0]))  # the default -d 200, or slower
    _icmpsh(cap, slave, master, t0, t0 + 780, delay, int(rng.integers(20_000, 36_000)))
    return (Truth("icmp_tunnel", slave, master),)


@case("hard", "icmp_exfiltration_upload")
def icmp_exfiltration_upload(
    cap: _Capture, site: _Site, start: float, duration: float
) -> tuple[Truth, ...]:
    """An archive of 64-512 KB uploaded through a ptunnel proxy at 4-10 chunks a second,
    each acknowledged."""
    rng = cap.rng
    client, proxy = _endpoints(cap, site, v6_share=0.3)
    tun = _Tunnel(cap, client, proxy, 0.03 + 0.05 * rng.random(), rng.random() < 0.3)
    t = start + float(rng.uniform(10, 120))
    rate = float(rng.uniform(4, 10))
    left = int(rng.integers(64_000, 512_000))
    while left > 0:
        # the proxy reads what the TCP socket holds: mostly full 1024-byte chunks
        chunk = min(left, 1024 if rng.random() < 0.8 else int(rng.integers(100, 1024)))
        tun.request(t, PTUNNEL_HEADER + chunk)
        tun.reply(t + tun.rtt, PTUNNEL_HEADER)  # the proxy's ack, header only
        left -= chunk
        t += float(rng.exponential(1 / rate))
    return (Truth("icmp_tunnel", client, proxy),)


# ----------------------------------------------------------------------------- sweeps


def _icmpsh_output(kib: float) -> CaseFn:
    def build(cap: _Capture, site: _Site, start: float, duration: float) -> tuple[Truth, ...]:
        rng = cap.rng
        slave, master = _endpoints(cap, site)
        t0 = start + float(rng.uniform(5, 30))
        _icmpsh(cap, slave, master, t0, t0 + 840, 1.0, int(kib * 1024))
        return (Truth("icmp_tunnel", slave, master),)

    build.__doc__ = f"An icmpsh shell (1 s polls) carrying {kib:g} KiB of output in 14 minutes."
    return build


sweep(
    Sweep(
        name="icmp_tunnel_output",
        detector="icmp_tunnel",
        parameter="KiB of icmpsh command output, 1 s polls, 14 minutes",
        values=(20.0, 17.0, 15.0, 12.0, 8.0),
        make=_icmpsh_output,
    )
)
