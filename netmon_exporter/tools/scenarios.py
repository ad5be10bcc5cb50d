"""Seeded, labelled scenario captures: benign background plus one attack, written with scapy.

Each scenario is a pcap of a small site (clients browsing, resolving names,
pinging, one interactive SSH session, a mail submission, multicast chatter,
a QUIC download, a bulk upload) with at most one attack on top, and a ground
truth naming the detector that should fire, the attacker and the victim. The
seed varies addresses, rates, ports, counts and timing so that thresholds are
judged on a spread of attacks, not tuned to one trace.
"""

from __future__ import annotations

import base64
import ipaddress
import struct
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from ..flow_schema import FlowBatch, addrs_to_str

SPOOFED = "many"  # the attacker of a spoofed flood: any source, judged by its victim


@dataclass(frozen=True)
class Truth:
    """An attack that a detector should report: ``victim`` empty means any target.

    ``required=False`` marks a finding that is right but not demanded: e.g. a DNS
    tunnel client polling its resolver at a fixed period is also a beacon. Such a
    detection counts as correct for precision and is not counted for recall.
    ``deadline`` (epoch seconds) demands timeliness: a flood must be found in a window
    that starts before it, not once its flow has ended.
    """

    detector: str
    attacker: str
    victim: str = ""
    required: bool = True
    deadline: float = 0.0  # the finding's window must start before this (0: any time)


@dataclass(frozen=True)
class Scenario:
    """A generated capture and its ground truth."""

    kind: str
    seed: int
    path: Path
    truths: tuple[Truth, ...]
    packets: int
    start: float
    end: float
    attack_pairs: frozenset[tuple[str, str]] = frozenset()  # (src, dst) of attack packets


# ----------------------------------------------------------------------------- packets

_TCP_FLAGS = {"F": 0x01, "S": 0x02, "R": 0x04, "P": 0x08, "A": 0x10, "U": 0x20}


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


class _Capture:
    """Collects timestamped frames and writes them as one time-sorted pcap.

    Headers are packed directly (scapy builds a packet in ~0.5 ms here, too slow
    for floods of thousands); scapy encodes the DNS messages and writes the file,
    and the tests check that scapy dissects every kind of frame with valid checksums.
    """

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.frames: list[tuple[float, bytes]] = []
        self._ip_id = int(rng.integers(0, 65535))
        self.tagging = False  # set while the attack is generated
        self.attack_pairs: set[tuple[str, str]] = set()

    @staticmethod
    def _addr(ip: str) -> bytes:
        return ipaddress.ip_address(ip).packed

    def _frame(
        self,
        t: float,
        src: str,
        dst: str,
        proto: int,
        l4: bytes,
        csum_at: int | None,
        frag: int = 0,
    ) -> None:
        """Append one IP packet carrying ``l4``; ``frag`` (a multiple of 8): cut it into
        fragments of that many transport bytes (as ``nmap -f`` does with 8), sent in
        order 10 us apart."""
        if self.tagging:
            self.attack_pairs.add((src, dst))
        s, d = self._addr(src), self._addr(dst)
        if csum_at is not None:
            if len(s) == 4:
                pseudo = s + d + struct.pack("!BBH", 0, proto, len(l4))
            else:
                pseudo = s + d + struct.pack("!IxxxB", len(l4), proto)
            c = _checksum(pseudo + l4) or 0xFFFF
            l4 = l4[:csum_at] + struct.pack("!H", c) + l4[csum_at + 2 :]
        ethertype = 0x0800 if len(s) == 4 else 0x86DD
        eth = b"\x02\x00" + d[-4:] + b"\x02\x00" + s[-4:] + struct.pack("!H", ethertype)
        if len(s) == 4:
            self._ip_id = (self._ip_id + 1) & 0xFFFF
        if frag <= 0 or frag % 8 or len(l4) <= frag:
            self.frames.append((float(t), eth + self._ip_header(s, d, proto, len(l4)) + l4))
            return
        ident = self._ip_id if len(s) == 4 else int(self.rng.integers(1, 2**32))
        for k, off in enumerate(range(0, len(l4), frag)):
            piece, more = l4[off : off + frag], off + frag < len(l4)
            if len(s) == 4:
                hdr = self._ip_header(s, d, proto, len(piece), (more << 13) | (off // 8), ident)
            else:  # a fragment extension header before the piece
                fh = struct.pack("!BBHI", proto, 0, off | more, ident)
                hdr = self._ip_header(s, d, 44, len(fh) + len(piece)) + fh
            self.frames.append((float(t) + k * 1e-5, eth + hdr + piece))

    def _ip_header(
        self, s: bytes, d: bytes, proto: int, size: int, frag: int = 0x4000, ident: int = -1
    ) -> bytes:
        """An IPv4 (``frag``: flags and offset; DF by default) or IPv6 header."""
        if len(s) != 4:
            return struct.pack("!IHBB16s16s", 0x60000000, size, proto, 64, s, d)
        ident = self._ip_id if ident < 0 else ident
        hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + size, ident, frag, 64, proto, 0, s, d)
        return hdr[:10] + struct.pack("!H", _checksum(hdr)) + hdr[12:]

    def tcp(
        self,
        t: float,
        src: str,
        dst: str,
        sport: int,
        dport: int,
        flags: str,
        seq: int = 0,
        ack: int = 0,
        payload: bytes = b"",
        window: int = 64240,
        frag: int = 0,
    ) -> None:
        bits = sum(_TCP_FLAGS[f] for f in flags)
        l4 = (
            struct.pack(
                "!HHIIBBHHH",
                sport,
                dport,
                seq & 0xFFFFFFFF,
                ack & 0xFFFFFFFF,
                5 << 4,
                bits,
                window,
                0,
                0,
            )
            + payload
        )
        self._frame(t, src, dst, 6, l4, 16, frag)

    def udp(
        self, t: float, src: str, dst: str, sport: int, dport: int, payload: bytes = b""
    ) -> None:
        l4 = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
        self._frame(t, src, dst, 17, l4, 6)

    def _icmp(
        self, t: float, src: str, dst: str, itype: int, ident: int, seq: int, data: bytes
    ) -> None:
        msg = struct.pack("!BBHHH", itype, 0, 0, ident, seq) + data
        msg = msg[:2] + struct.pack("!H", _checksum(msg)) + msg[4:]
        self._frame(t, src, dst, 1, msg, None)

    def icmp_echo(
        self, t: float, src: str, dst: str, ident: int, seq: int, reply: bool, size: int = 56
    ) -> None:
        data = bytes(size)
        self._icmp(t, src, dst, 8, ident, seq, data)
        if reply:
            self._icmp(t + 0.0005 + self.rng.random() * 0.002, dst, src, 0, ident, seq, data)

    def dns(
        self, t: float, client: str, resolver: str, name: str, answer: bool = True, qtype: str = "A"
    ) -> None:
        from scapy.layers.dns import DNS, DNSQR, DNSRR

        sport = int(self.rng.integers(20000, 65000))
        qid = int(self.rng.integers(0, 65535))
        q = DNS(id=qid, rd=1, qd=DNSQR(qname=name, qtype=qtype))
        self.udp(t, client, resolver, sport, 53, bytes(q))
        if answer:
            rr = (
                DNSRR(rrname=name, type="TXT", rdata=[b"ok" + bytes(8)])
                if qtype == "TXT"
                else DNSRR(rrname=name, type="A", rdata="93.184.216.34", ttl=300)
            )
            r = DNS(id=qid, qr=1, rd=1, ra=1, qd=DNSQR(qname=name, qtype=qtype), an=rr)
            self.udp(t + 0.005 + self.rng.random() * 0.02, resolver, client, 53, sport, bytes(r))

    def session(
        self,
        t: float,
        client: str,
        server: str,
        dport: int,
        request: int,
        response: int,
        rtt: float = 0.02,
        sport: int | None = None,
        exchanges: int = 1,
        refusal_delay: float = 0.0,
    ) -> float:
        """A complete TCP connection: handshake, request/response exchanges, FIN close.

        ``refusal_delay``: seconds the server waits before each answer after the first
        (a login server's failure delay: PAM's 2 s, Dovecot's 2 s, vsftpd's 1 s)."""
        sport = sport or int(self.rng.integers(32768, 61000))
        c_seq, s_seq = int(self.rng.integers(1, 2**31)), int(self.rng.integers(1, 2**31))
        self.tcp(t, client, server, sport, dport, "S", c_seq)
        self.tcp(t + rtt / 2, server, client, dport, sport, "SA", s_seq, c_seq + 1)
        t += rtt
        self.tcp(t, client, server, sport, dport, "A", c_seq + 1, s_seq + 1)
        c_seq, s_seq = c_seq + 1, s_seq + 1
        for k in range(exchanges):
            t += 0.001 + self.rng.random() * 0.01
            req = max(int(request * (0.8 + 0.4 * self.rng.random())), 1)
            self.tcp(t, client, server, sport, dport, "PA", c_seq, s_seq, bytes(min(req, 1400)))
            c_seq += min(req, 1400)
            t += rtt / 2 + (refusal_delay if k else 0.0)
            left = max(int(response * (0.8 + 0.4 * self.rng.random())), 1)
            segs = 0
            while left > 0:
                n = min(left, 1400)
                self.tcp(
                    t,
                    server,
                    client,
                    dport,
                    sport,
                    "PA" if n == left else "A",
                    s_seq,
                    c_seq,
                    bytes(n),
                )
                s_seq += n
                left -= n
                segs += 1
                t += 0.0005
                if segs % 2 == 0 or left <= 0:
                    self.tcp(t + rtt / 2, client, server, sport, dport, "A", c_seq, s_seq)
            t += rtt / 2
        t += 0.01
        self.tcp(t, client, server, sport, dport, "FA", c_seq, s_seq)
        self.tcp(t + rtt / 2, server, client, dport, sport, "FA", s_seq, c_seq + 1)
        self.tcp(t + rtt, client, server, sport, dport, "A", c_seq + 1, s_seq + 1)
        return t + rtt

    def write(self, path: Path) -> int:
        from scapy.utils import RawPcapWriter

        self.frames.sort(key=lambda f: f[0])
        path.parent.mkdir(parents=True, exist_ok=True)
        with RawPcapWriter(str(path), linktype=1, sync=False) as w:
            w.write_header(None)
            for t, frame in self.frames:
                sec = int(t)
                w.write_packet(frame, sec=sec, usec=int(round((t - sec) * 1e6)) % 1000000)
        return len(self.frames)


# ----------------------------------------------------------------------------- the site


@dataclass(frozen=True)
class _Site:
    clients: tuple[str, ...]
    servers: tuple[str, ...]
    resolver: str
    ssh_server: str
    mail_server: str
    lan_prefix: str  # "10.a.b." for sweeps of the site's own /24

    @property
    def v4_servers(self) -> tuple[str, ...]:
        return tuple(s for s in self.servers if ":" not in s)

    @property
    def v6_servers(self) -> tuple[str, ...]:
        return tuple(s for s in self.servers if ":" in s)


def _site(rng: np.random.Generator) -> _Site:
    a, b = int(rng.integers(1, 250)), int(rng.integers(1, 250))
    lan = f"10.{a}.{b}."
    hosts = rng.choice(np.arange(10, 200), 16, replace=False)
    clients = tuple(f"{lan}{h}" for h in hosts[:12]) + ("fd00:1::10", "fd00:1::11")
    servers = tuple(
        f"{int(rng.integers(20, 220))}.{int(rng.integers(0, 255))}."
        f"{int(rng.integers(0, 255))}.{int(rng.integers(1, 254))}"
        for _ in range(25)
    )
    servers6 = ("2001:db8:10::80", "2001:db8:20::443")
    return _Site(
        clients=clients,
        servers=servers + servers6,
        resolver=f"{lan}{int(hosts[12])}",
        ssh_server=f"{lan}{int(hosts[13])}",
        mail_server=f"{lan}{int(hosts[14])}",
        lan_prefix=lan,
    )


_SSDP = (
    b'M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nMAN: "ssdp:discover"\r\n'
    b"MX: 1\r\nST: ssdp:all\r\n\r\n"
)
_NAMES = (
    "www.example.com",
    "static.cdn-example.net",
    "api.weather.example.org",
    "mail.example.com",
    "images.shop-example.com",
    "fonts.example-static.com",
    "r3---sn-4g5e6nz7.googlevideo.example.com",
    "login.microsoftonline.example.com",
    "update.os-vendor.example",
    "telemetry.app.example.io",
    "news.example.co.uk",
)


def _browsing(cap: _Capture, site: _Site, start: float, duration: float, intensity: float) -> None:
    """Each visit resolves a name (IPv4 clients), then one or more HTTPS/HTTP connections."""
    rng = cap.rng
    for _ in range(int(rng.integers(60, 100) * intensity)):
        client = str(rng.choice(site.clients))
        t = start + rng.random() * duration
        server = str(rng.choice(site.v6_servers if ":" in client else site.v4_servers))
        if ":" not in client:
            cap.dns(t, client, site.resolver, str(rng.choice(_NAMES)))
        for _ in range(int(rng.integers(1, 4))):
            t += rng.random() * 2
            cap.session(
                t + 0.03,
                client,
                server,
                int(rng.choice([443, 443, 443, 80, 8443])),
                request=int(rng.integers(200, 900)),
                response=int(rng.integers(300, 12000)),
                rtt=0.01 + rng.random() * 0.08,
                exchanges=int(rng.integers(1, 4)),
            )


def _pings(cap: _Capture, site: _Site, start: float, duration: float, intensity: float) -> None:
    """Pings now and then: a few answered echoes from a LAN client to a server."""
    rng = cap.rng
    for _ in range(int(rng.integers(3, 8) * intensity) + 1):
        client = str(rng.choice(site.clients[:12]))
        t = start + rng.random() * duration
        ident = int(rng.integers(1, 65000))
        for s in range(int(rng.integers(1, 5))):
            cap.icmp_echo(t + s, client, str(rng.choice(site.v4_servers)), ident, s, reply=True)


def _ssh_and_mail(
    cap: _Capture, site: _Site, start: float, duration: float, intensity: float
) -> None:
    """One long interactive SSH session by the admin and a couple of mail submissions."""
    rng = cap.rng
    cap.session(
        start + rng.random() * duration / 2,
        site.clients[0],
        site.ssh_server,
        22,
        request=120,
        response=300,
        rtt=0.002,
        exchanges=int(rng.integers(25, 50)),
    )
    for _ in range(2):
        cap.session(
            start + rng.random() * duration,
            str(rng.choice(site.clients[:12])),
            site.mail_server,
            587,
            request=1200,
            response=200,
            exchanges=6,
        )


def _multicast_chatter(
    cap: _Capture, site: _Site, start: float, duration: float, intensity: float
) -> None:
    """Multicast/broadcast chatter that nobody answers (SSDP, mDNS, NetBIOS)."""
    rng = cap.rng
    for _ in range(int(rng.integers(10, 30) * intensity)):
        client = str(rng.choice(site.clients[:12]))
        t = start + rng.random() * duration
        kind = int(rng.integers(0, 3))
        if kind == 0:
            cap.udp(t, client, "239.255.255.250", int(rng.integers(40000, 60000)), 1900, _SSDP)
        elif kind == 1:
            cap.udp(t, client, "224.0.0.251", 5353, 5353, bytes(40))
        else:
            cap.udp(t, client, site.lan_prefix + "255", 137, 137, bytes(50))


def _crawler(cap: _Capture, site: _Site, start: float, duration: float, intensity: float) -> None:
    """Look-alikes of a sweep and of a SYN flood, neither an attack.

    A client fetches from many servers at once (completed connections, not a sweep),
    then retries towards a dead server (a few half-open connections, not a flood).
    """
    rng = cap.rng
    v4_servers = site.v4_servers
    crawler = str(rng.choice(site.clients[:12]))
    t = start + rng.random() * duration * 0.8
    for server in rng.choice(v4_servers, min(len(v4_servers), 25), replace=False):
        cap.session(
            t + rng.random() * 20,
            crawler,
            str(server),
            443,
            request=400,
            response=int(rng.integers(500, 5000)),
        )
    dead = _outsider(rng)
    t = start + rng.random() * duration * 0.8
    for _ in range(int(rng.integers(3, 7))):
        sport = int(rng.integers(32768, 61000))
        for k in range(3):
            cap.tcp(t + (2**k - 1), crawler, dead, sport, 443, "S", 1000)
        t += 8


def _video_call(
    cap: _Capture, site: _Site, start: float, duration: float, intensity: float
) -> None:
    """Look-alike of a UDP flood: a video call, steady two-way UDP."""
    rng = cap.rng
    caller, peer = str(rng.choice(site.clients[:12])), str(rng.choice(site.v4_servers))
    t = start + rng.random() * duration * 0.5
    cport, pport = int(rng.integers(40000, 60000)), int(rng.integers(3478, 3500))
    for i in range(int(rng.integers(500, 1500) * intensity) + 50):
        cap.udp(t + i * 0.02, caller, peer, cport, pport, bytes(160))
        cap.udp(t + i * 0.02 + 0.007, peer, caller, pport, cport, bytes(160))


def _quic_download(
    cap: _Capture, site: _Site, start: float, duration: float, intensity: float
) -> None:
    """A QUIC-like download: a stream of large UDP datagrams, an acknowledgement every third."""
    rng = cap.rng
    client, server = str(rng.choice(site.clients[:12])), str(rng.choice(site.v4_servers))
    t = start + rng.random() * duration / 2
    sport = int(rng.integers(40000, 60000))
    for i in range(int(rng.integers(150, 400) * intensity) + 20):
        cap.udp(t + i * 0.004, server, client, 443, sport, bytes(1200))
        if i % 3 == 0:
            cap.udp(t + i * 0.004 + 0.001, client, server, sport, 443, bytes(40))


def _bulk_upload(
    cap: _Capture, site: _Site, start: float, duration: float, intensity: float
) -> None:
    """A bulk upload over SSH: fifty full-sized requests on one connection."""
    rng = cap.rng
    cap.session(
        start + rng.random() * duration / 2,
        str(rng.choice(site.clients[:12])),
        str(rng.choice(site.v4_servers)),
        22,
        request=1400,
        response=100,
        exchanges=50,
    )


_Role = Callable[[_Capture, _Site, float, float, float], None]

# The roles of the site's everyday traffic, written one after another from the one
# random generator: the order is part of every capture's seed (append, do not reorder).
_BACKGROUND_ROLES: tuple[_Role, ...] = (
    _browsing,
    _pings,
    _ssh_and_mail,
    _multicast_chatter,
    _crawler,
    _video_call,
    _quic_download,
    _bulk_upload,
)


def _background(
    cap: _Capture, site: _Site, start: float, duration: float, intensity: float
) -> None:
    """The site's benign traffic over ``duration`` seconds; ``intensity`` scales its amount."""
    for role in _BACKGROUND_ROLES:
        role(cap, site, start, duration, intensity)


# ----------------------------------------------------------------------------- attacks


def _outsider(rng: np.random.Generator) -> str:
    return (
        f"{int(rng.integers(100, 200))}.{int(rng.integers(0, 255))}."
        f"{int(rng.integers(0, 255))}.{int(rng.integers(1, 254))}"
    )


def _outsider6(rng: np.random.Generator) -> str:
    return f"2001:db8:{int(rng.integers(0x100, 0xFFF)):x}::{int(rng.integers(1, 0xFFFF)):x}"


def _probe(
    cap: _Capture,
    t: float,
    src: str,
    dst: str,
    dport: int,
    answer: str,
    sport: int | None = None,
    frag: int = 0,
    data: bytes = b"",
) -> None:
    """One SYN probe (from a random source port unless ``sport``; sent in ``frag``-byte
    fragments, 0: whole; carrying ``data``); the target answers 'open' (SYN-ACK, which
    acknowledges the SYN, not its data; the prober's kernel resets), 'closed' (RST-ACK
    of the whole segment) or 'filtered' (nothing), in whole packets."""
    rng = cap.rng
    sport = int(rng.integers(32768, 61000)) if sport is None else sport
    seq = int(rng.integers(1, 2**31))
    cap.tcp(t, src, dst, sport, dport, "S", seq, payload=data, window=1024, frag=frag)
    rtt = 0.001 + rng.random() * 0.05
    if answer == "open":
        cap.tcp(t + rtt, dst, src, dport, sport, "SA", int(rng.integers(1, 2**31)), seq + 1)
        cap.tcp(t + rtt + 0.0002, src, dst, sport, dport, "R", seq + 1)
    elif answer == "closed":
        cap.tcp(t + rtt, dst, src, dport, sport, "RA", 0, seq + 1 + len(data))


def _port_scan(
    cap: _Capture, site: _Site, start: float, duration: float, slow: bool
) -> tuple[Truth, ...]:
    rng = cap.rng
    attacker = _outsider(rng) if rng.random() < 0.5 else str(rng.choice(site.clients[1:12]))
    victim = str(rng.choice([site.ssh_server, site.mail_server, site.resolver]))
    if rng.random() < 0.25:  # over IPv6
        attacker, victim = _outsider6(rng), str(rng.choice(site.clients[12:]))
    n = int(rng.integers(20, 45)) if slow else int(rng.integers(60, 1000))
    ports = rng.choice(np.arange(1, 10000), n, replace=False)
    # A slow scan stays within the detector's definition (15 ports in 300 s) but is
    # spread over several windows.
    span = float(rng.uniform(150, 280)) if slow else n / float(rng.uniform(50, 2000))
    t0 = start + rng.random() * (duration - span)
    closed = str(rng.choice(["closed", "filtered"]))
    for i, p in enumerate(ports):
        answer = "open" if p in (22, 25, 53, 80, 443, 587) else closed
        _probe(cap, t0 + span * i / n, attacker, victim, int(p), answer)
    return (Truth("port_scan", attacker, victim),)


def _tcp_sweep(cap: _Capture, site: _Site, start: float, duration: float) -> tuple[Truth, ...]:
    rng = cap.rng
    attacker = _outsider(rng) if rng.random() < 0.5 else str(rng.choice(site.clients[1:12]))
    port = int(rng.choice([22, 23, 445, 3389, 80, 5900]))
    n = int(rng.integers(30, 254))
    hosts = rng.choice(np.arange(1, 255), n, replace=False)
    span = min(n / float(rng.uniform(5, 500)), duration * 0.8)
    t0 = start + rng.random() * (duration - span)
    prefix = site.lan_prefix if rng.random() < 0.5 else f"172.16.{int(rng.integers(0, 255))}."
    for i, h in enumerate(hosts):
        answer = str(rng.choice(["open", "closed", "filtered", "filtered"]))
        _probe(cap, t0 + span * i / n, attacker, f"{prefix}{int(h)}", port, answer)
    return (Truth("address_sweep", attacker),)


def _icmp_sweep(cap: _Capture, site: _Site, start: float, duration: float) -> tuple[Truth, ...]:
    rng = cap.rng
    attacker = str(rng.choice(site.clients[1:12])) if rng.random() < 0.5 else _outsider(rng)
    n = int(rng.integers(30, 254))
    hosts = rng.choice(np.arange(1, 255), n, replace=False)
    span = min(n / float(rng.uniform(5, 300)), duration * 0.8)
    t0 = start + rng.random() * (duration - span)
    ident = int(rng.integers(1, 65000))
    for i, h in enumerate(hosts):
        cap.icmp_echo(
            t0 + span * i / n,
            attacker,
            f"{site.lan_prefix}{int(h)}",
            ident,
            i,
            reply=bool(rng.random() < 0.3),
        )
    return (Truth("address_sweep", attacker),)


def _syn_flood(
    cap: _Capture, site: _Site, start: float, duration: float, spoofed: bool
) -> tuple[Truth, ...]:
    rng = cap.rng
    attacker = SPOOFED if spoofed else _outsider(rng)
    victim = str(rng.choice([site.mail_server, site.ssh_server]))
    port = int(rng.choice([80, 443, 25, 8080]))
    n = int(rng.integers(400, 3000))
    span = n / float(rng.uniform(200, 3000))
    t0 = start + rng.random() * (duration - span)
    answers = bool(rng.random() < 0.5)
    for i in range(n):
        src = _outsider(rng) if spoofed else attacker
        sport = int(rng.integers(1024, 65535))
        t = t0 + span * i / n
        seq = int(rng.integers(1, 2**31))
        cap.tcp(t, src, victim, sport, port, "S", seq, window=512)
        if answers:
            cap.tcp(
                t + 0.0003, victim, src, port, sport, "SA", int(rng.integers(1, 2**31)), seq + 1
            )
    return (Truth("syn_flood", attacker, victim),)


def _udp_flood(cap: _Capture, site: _Site, start: float, duration: float) -> tuple[Truth, ...]:
    rng = cap.rng
    attacker = _outsider(rng)
    victim = str(rng.choice([site.resolver, site.mail_server]))
    port = int(rng.choice([53, 123, 80, 27015, int(rng.integers(1024, 65535))]))
    n = int(rng.integers(3000, 9000))
    span = n / float(rng.uniform(1500, 6000))
    t0 = start + rng.random() * (duration - span)
    size = int(rng.integers(16, 512))
    fixed_sport = int(rng.integers(1024, 65535)) if rng.random() < 0.5 else 0
    for i in range(n):
        sport = fixed_sport or int(rng.integers(1024, 65535))
        cap.udp(t0 + span * i / n, attacker, victim, sport, port, bytes(size))
    return (Truth("udp_flood", attacker, victim),)


def _icmp_flood(cap: _Capture, site: _Site, start: float, duration: float) -> tuple[Truth, ...]:
    rng = cap.rng
    attacker = _outsider(rng)
    victim = str(rng.choice([site.resolver, site.mail_server, site.ssh_server]))
    n = int(rng.integers(2000, 6000))
    span = n / float(rng.uniform(1000, 4000))
    t0 = start + rng.random() * (duration - span)
    reply_share = float(rng.choice([0.0, 0.5, 1.0]))
    ident = int(rng.integers(1, 65000))
    size = int(rng.integers(8, 1400))
    for i in range(n):
        cap.icmp_echo(
            t0 + span * i / n,
            attacker,
            victim,
            ident,
            i % 65536,
            reply=bool(rng.random() < reply_share),
            size=size,
        )
    return (Truth("icmp_flood", attacker, victim),)


def _brute_force(cap: _Capture, site: _Site, start: float, duration: float) -> tuple[Truth, ...]:
    rng = cap.rng
    attacker = _outsider(rng) if rng.random() < 0.6 else str(rng.choice(site.clients[1:12]))
    port = int(rng.choice([22, 22, 3389, 21, 23, 587, 143, 110]))
    victim = site.mail_server if port in (587, 143, 110) else site.ssh_server
    if rng.random() < 0.25:  # over IPv6
        attacker, victim = _outsider6(rng), str(rng.choice(site.clients[12:]))
    n = int(rng.integers(8, 60))
    t = start + rng.random() * duration * 0.3
    # the server's failure delay before each refusal (after the banner or greeting):
    # PAM's for sshd, busybox login's, vsftpd's, Dovecot's for mail; none for RDP (NLA)
    refusal = {22: 2.0, 23: 3.0, 21: 1.0, 587: 2.0, 143: 2.0, 110: 2.0}.get(port, 0.0)
    for _ in range(n):
        end = cap.session(
            t,
            attacker,
            victim,
            port,
            request=int(rng.integers(40, 200)),
            response=int(rng.integers(40, 300)),
            rtt=0.005 + rng.random() * 0.05,
            exchanges=int(rng.integers(2, 6)),
            refusal_delay=refusal,
        )
        t = end + rng.exponential(float(rng.uniform(0.3, 4.0)))
    return (Truth("brute_force", attacker, victim),)


def _dns_tunnel(cap: _Capture, site: _Site, start: float, duration: float) -> tuple[Truth, ...]:
    rng = cap.rng
    client = str(rng.choice(site.clients[1:12]))
    domain = f"{''.join(rng.choice(list('abcdefghijklmnopqrstuvwxyz'), 7))}.{rng.choice(['com', 'net', 'io'])}"
    n = int(rng.integers(60, 300))
    span = duration * (0.2 + 0.6 * rng.random())
    t0 = start + rng.random() * (duration - span)
    encoding = str(rng.choice(["base32", "hex"]))
    qtype = str(rng.choice(["A", "TXT"]))
    polling = bool(rng.random() < 0.5)  # fixed-period polling, or bursts of data
    times = (
        t0 + span * np.arange(n) / n + rng.random(n) * 0.1
        if polling
        else t0 + np.sort(rng.random(n)) * span
    )
    for i in range(n):
        data = rng.bytes(int(rng.integers(20, 36)))
        label = (
            base64.b32encode(data).decode().rstrip("=").lower()
            if encoding == "base32"
            else data.hex()
        )
        chunks = [label[j : j + 63] for j in range(0, len(label), 63)]
        name = ".".join([*chunks, f"{i:x}", "t", domain])
        cap.dns(float(times[i]), client, site.resolver, name, True, qtype)
    return (
        Truth("dns_tunnel", client, domain),
        Truth("beacon", client, site.resolver, required=False),
    )


def _beacon(cap: _Capture, site: _Site, start: float, duration: float) -> tuple[Truth, ...]:
    rng = cap.rng
    client = str(rng.choice(site.clients[1:12]))
    c2 = _outsider(rng)
    port = int(rng.choice([443, 80, 8080, 8443]))
    interval = float(rng.uniform(15, 90))
    jitter = float(rng.uniform(0, 0.05))
    beats = max(int(duration / interval), 10)
    request, response = int(rng.integers(150, 600)), int(rng.integers(100, 2000))
    t = start + rng.random() * interval
    for _ in range(beats):
        if rng.random() >= 0.05:  # now and then a beat is lost (host asleep, network down)
            cap.session(
                t, client, c2, port, request=request, response=response, rtt=0.05, exchanges=1
            )
        t += interval * (1 + rng.uniform(-jitter, jitter))
    return (Truth("beacon", client, c2),)


def _icmp_tunnel(cap: _Capture, site: _Site, start: float, duration: float) -> tuple[Truth, ...]:
    """A TCP session through an ICMP tunnel (ptunnel's 28-byte header on every message):
    the client's requests carry its data and acks, the server's replies its own data."""
    rng = cap.rng
    client, server = str(rng.choice(site.clients[1:12])), _outsider(rng)
    ident, rtt = int(rng.integers(1, 65000)), 0.02 + 0.08 * rng.random()
    upload = bool(rng.random() < 0.5)  # the data goes out (requests) or comes in (replies)
    n = int(rng.integers(80, 400))
    span = duration * (0.2 + 0.6 * rng.random())
    t0 = start + rng.random() * (duration - span)
    for i in range(n):
        t = t0 + span * i / n
        data, ack = 28 + int(rng.integers(40, 1025)), 28
        cap._icmp(t, client, server, 8, ident, i, rng.bytes(data if upload else ack))
        cap._icmp(t + rtt, server, client, 0, ident, i, rng.bytes(ack if upload else data))
    return (Truth("icmp_tunnel", client, server),)


Attack = Callable[[_Capture, _Site, float, float], tuple[Truth, ...]]

# Scenario kind -> the attack written over the benign background, each naming in its
# truths the detector that should fire. A new detector's scenario is a function above
# and a line here; ``evaluate`` lists registered detectors that no scenario covers.
# The order is part of each capture's seed: append, do not reorder.
ATTACKS: dict[str, Attack] = {
    "port_scan": partial(_port_scan, slow=False),
    "slow_port_scan": partial(_port_scan, slow=True),
    "tcp_sweep": _tcp_sweep,
    "icmp_sweep": _icmp_sweep,
    "syn_flood": partial(_syn_flood, spoofed=False),
    "syn_flood_spoofed": partial(_syn_flood, spoofed=True),
    "udp_flood": _udp_flood,
    "icmp_flood": _icmp_flood,
    "brute_force": _brute_force,
    "dns_tunnel": _dns_tunnel,
    "beacon": _beacon,
    "icmp_tunnel": _icmp_tunnel,
}
KINDS: tuple[str, ...] = ("benign", *ATTACKS)


def generate(
    kind: str, seed: int, out_dir: Path, *, duration: float = 600.0, intensity: float = 1.0
) -> Scenario:
    """Write the scenario ``kind`` for ``seed`` to ``out_dir`` and return it with its truth.

    ``duration`` is the capture's time span in seconds (beacons need several
    intervals); ``intensity`` scales the amount of background traffic.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown scenario {kind!r} (known: {', '.join(KINDS)})")
    rng = np.random.default_rng([seed, KINDS.index(kind)])
    cap = _Capture(rng)
    site = _site(rng)
    # Random start (not window-aligned) on a random day, so windows split attacks differently.
    start = 1_700_000_000.0 + (seed % 1000) * 86_400 + float(rng.uniform(0, 3600))
    _background(cap, site, start, duration, intensity)
    cap.tagging = True
    attack = ATTACKS.get(kind)
    truths = attack(cap, site, start, duration) if attack else ()
    return write_scenario(
        cap, kind, seed, Path(out_dir) / f"scenario-{kind}-seed{seed}.pcap", truths
    )


def write_scenario(
    cap: _Capture, kind: str, seed: int, path: Path, truths: tuple[Truth, ...]
) -> Scenario:
    """Write the capture and return it as a :class:`Scenario` with its truths."""
    n = cap.write(path)
    return Scenario(
        kind=kind,
        seed=seed,
        path=path,
        truths=truths,
        packets=n,
        start=cap.frames[0][0],
        end=cap.frames[-1][0],
        attack_pairs=frozenset(cap.attack_pairs),
    )


def label_flows(flows: FlowBatch, scenario: Scenario) -> np.ndarray:
    """Label each flow made by attack packets with the attack's detector name, else ``benign``.

    Detector names, not scenario kinds: a spoofed and a single-source SYN flood
    look the same flow by flow, and so do fast and slow scans.
    """
    labels = np.full(len(flows), "benign", dtype=object)
    if not scenario.attack_pairs or not scenario.truths or len(flows) == 0:
        return labels
    pairs = {(a, b) for a, b in scenario.attack_pairs} | {(b, a) for a, b in scenario.attack_pairs}
    src, dst = addrs_to_str(flows["src_ip"]), addrs_to_str(flows["dst_ip"])
    hit = np.fromiter(
        ((s, d) in pairs for s, d in zip(src, dst, strict=True)), dtype=bool, count=len(flows)
    )
    labels[hit] = scenario.truths[0].detector
    return labels
