"""DNS roles: a mail server's reputation lookups and the site's recursive resolver
(benign); evasive tunnels, and a udp/53 sweep from a host that answers DNS for a few
neighbours (hard).

Clients resolve through the site resolver, which forwards what it has not cached to
authoritative servers from a port of its own, as a recursive resolver does; so every
name a client asks shows up twice on the wire, once from the client and once from
the resolver. Tunnels are written as their tools send them: iodine keeps one UDP
socket for the whole session and polls while idle; others open a socket per query.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from functools import partial

import numpy as np

from .cases_beacon import long_session
from .scenarios import Truth, _Capture, _outsider, _Site
from .suites import CaseFn, Sweep, case, sweep

_LETTERS = list("abcdefghijklmnopqrstuvwxyz")


def dns_exchange(
    cap: _Capture,
    t: float,
    client: str,
    server: str,
    name: str,
    sport: int | None = None,
    qtype: str = "A",
    answer: bytes | None = None,
    rtt: float = 0.01,
) -> None:
    """One query from ``client``'s ``sport`` (random when None) and its answer.

    ``answer`` is TXT data (for a tunnel's downstream); without it an A record.
    """
    from scapy.layers.dns import DNS, DNSQR, DNSRR

    rng = cap.rng
    sport = sport or int(rng.integers(20000, 65000))
    qid = int(rng.integers(0, 65535))
    cap.udp(
        t, client, server, sport, 53, bytes(DNS(id=qid, rd=1, qd=DNSQR(qname=name, qtype=qtype)))
    )
    rr = (
        DNSRR(
            rrname=name, type="TXT", rdata=[answer[i : i + 255] for i in range(0, len(answer), 255)]
        )
        if answer is not None
        else DNSRR(rrname=name, type="A", rdata="192.0.2.10", ttl=60)
    )
    reply = DNS(id=qid, qr=1, rd=1, ra=1, qd=DNSQR(qname=name, qtype=qtype), an=rr)
    cap.udp(t + rtt, server, client, 53, sport, bytes(reply))


class Resolver:
    """The site resolver: answers clients, forwarding names it has not cached upstream."""

    def __init__(self, cap: _Capture, address: str, upstreams: int = 3) -> None:
        self.cap = cap
        self.address = address
        self.upstreams = [_outsider(cap.rng) for _ in range(upstreams)]
        self._cached: dict[str, float] = {}

    def ask(
        self,
        t: float,
        client: str,
        name: str,
        sport: int | None = None,
        qtype: str = "A",
        answer: bytes | None = None,
        ttl: float = 300.0,
    ) -> None:
        rng = self.cap.rng
        rtt = 0.0005
        if t - self._cached.get(name, -1e18) > ttl:
            self._cached[name] = t
            up = str(rng.choice(self.upstreams))
            wait = 0.01 + float(rng.exponential(0.02))
            dns_exchange(self.cap, t + 0.0002, self.address, up, name, None, qtype, answer, wait)
            rtt += wait
        dns_exchange(self.cap, t, client, self.address, name, sport, qtype, answer, rtt)


def smtp_delivery(cap: _Capture, t: float, sender: str, server: str, size: int) -> None:
    """One inbound message: greeting, EHLO, MAIL, RCPT, DATA, the message, QUIT."""
    rng = cap.rng
    rtt = 0.02 + float(rng.exponential(0.04))
    steps = np.array([0.0, 1, 2, 3, 4, 5]) * (rtt + 0.01) + t
    steps[5] += size / 1e6  # the message takes its time
    requests = np.array([20, 30, 40, 10, max(size, 200), 10])
    responses = np.array([220, 30, 20, 40, 40, 20]) + rng.integers(0, 20, 6)
    long_session(cap, sender, server, 25, steps, requests, responses, rtt=rtt)


def _reversed(ip: str) -> str:
    return ".".join(reversed(ip.split(".")))


def _b32(data: bytes) -> str:
    return base64.b32encode(data).decode().rstrip("=").lower()


@case("benign", "mail_reputation_lookups")
def mail_reputation_lookups(
    cap: _Capture, site: _Site, start: float, duration: float
) -> tuple[Truth, ...]:
    """A mail server checks each inbound message against DNSBLs, URIBLs and Spamhaus HBL."""
    rng = cap.rng
    resolver = Resolver(cap, site.resolver)
    mail = site.mail_server
    key = "".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz0123456789"), 26))
    domains = [f"{''.join(rng.choice(_LETTERS, int(rng.integers(4, 12))))}.com" for _ in range(400)]
    t = start + float(rng.exponential(10))
    while t < start + duration:
        sender = _outsider(rng)
        smtp_delivery(cap, t, sender, mail, int(rng.lognormal(np.log(20000), 1.0)))
        rev = _reversed(sender)
        names = [
            f"{rev}.{zone}"
            for zone in (
                "zen.spamhaus.org",
                "bl.spamcop.net",
                "b.barracudacentral.org",
                "list.dnswl.org",
            )
        ]
        for d in rng.choice(domains, int(rng.integers(1, 6)), replace=False):
            names += [f"{d}.dbl.spamhaus.org", f"{d}.multi.uribl.com", f"{d}.multi.surbl.org"]
        sender_address = f"user{int(rng.integers(0, 10**6))}@{rng.choice(domains)}"
        digest = hashlib.sha1(sender_address.encode()).hexdigest()
        names.append(f"{digest}._email.{key}.hbl.dq.spamhaus.net")
        for _ in range(int(rng.integers(0, 3))):  # attachments: hashed file lookups
            blob = rng.bytes(32)
            names.append(f"{_b32(hashlib.sha256(blob).digest())}._file.{key}.hbl.dq.spamhaus.net")
            names.append(f"{hashlib.md5(blob).hexdigest()}.malware.hash.cymru.com")
        for i, name in enumerate(names):
            resolver.ask(t + 0.2 + 0.003 * i, mail, name, ttl=900.0)
        t += float(rng.exponential(6.0))  # about ten messages a minute, ~90 lookups a minute
    return ()


# ----------------------------------------------------------------------------- tunnels

_FNV_PRIME = np.uint64(1099511628211)
_FNV_BASIS = np.uint64(0xCBF29CE484222325)
_NONCE_CHARS = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz0123456789", np.uint8)


def _fnv_labels(h: np.ndarray, labels: list[bytes]) -> np.ndarray:
    """FNV-1a over names in wire form (each label's length byte, then its characters),
    from the states ``h`` (one per candidate)."""
    for label in labels:
        for c in (len(label), *label):
            h = (h ^ np.uint64(c)) * _FNV_PRIME
    return h


def _fmix64(h: np.ndarray) -> np.ndarray:
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(0xFF51AFD7ED558CCD)
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(0xC4CEB9FE1A85EC53)
    return h ^ (h >> np.uint64(33))


def hide_in_sketch(rng: np.random.Generator, before: list[str], after: list[str]) -> str:
    """A label to put between the labels ``before`` and ``after`` so that the name falls
    into register 0 of a 64-register name sketch with rank 1, *if the sketch's hash is
    not keyed*: the flow table's unkeyed hash (``flow_table._query_measure`` with key 0:
    FNV-1a of the name as on the wire, MurmurHash3's finaliser, the register in the low 6
    bits, the rank from bit 8 up). Every such name looks like the same one; about one
    label in 128 does, found here 512 at a time. What an attacker who knows the hash
    would send to make a tunnel of thousands of names count as one."""
    with np.errstate(over="ignore"):
        head = _fnv_labels(np.array([_FNV_BASIS]), [x.encode() for x in before])
        tail = [x.encode() for x in after]
        while True:
            nonces = rng.choice(_NONCE_CHARS, (512, 6))
            h = (np.repeat(head, 512) ^ np.uint64(6)) * _FNV_PRIME
            for j in range(6):
                h = (h ^ nonces[:, j].astype(np.uint64)) * _FNV_PRIME
            h = _fmix64(_fnv_labels(h, tail))
            hit = np.flatnonzero(
                ((h & np.uint64(63)) == 0) & (((h >> np.uint64(8)) & np.uint64(1)) == 1)
            )
            if len(hit):
                return nonces[hit[0]].tobytes().decode()


def _domain(rng: np.random.Generator) -> str:
    return f"{''.join(rng.choice(_LETTERS, int(rng.integers(5, 9))))}.{rng.choice(['com', 'net', 'io'])}"


def _data_name(rng: np.random.Generator, n_bytes: int, serial: int, domain: str) -> str:
    """A tunnel's upstream query: data in base32 labels, a serial that defeats caches."""
    label = _b32(rng.bytes(n_bytes))
    chunks = [label[j : j + 63] for j in range(0, len(label), 63)]
    return ".".join([*chunks, f"{serial:x}", domain])


@case("hard", "dns_tunnel_single_socket")
def dns_tunnel_single_socket(
    cap: _Capture, site: _Site, start: float, duration: float
) -> tuple[Truth, ...]:
    """iodine-style: every query from one UDP socket (one flow), TXT downstream, idle polls."""
    rng = cap.rng
    resolver = Resolver(cap, site.resolver)
    client = str(rng.choice(site.clients[1:12]))
    domain = _domain(rng)
    sport = int(rng.integers(20000, 65000))
    t = start + float(rng.uniform(0, 60))
    serial = 0
    while t < start + duration - 1:
        busy = rng.random() < 0.3  # a transfer: a burst of full queries, else an idle poll
        for _ in range(int(rng.integers(5, 40)) if busy else 1):
            name = _data_name(rng, int(rng.integers(60, 110)) if busy else 6, serial, domain)
            down = rng.bytes(int(rng.integers(20, 600)))
            resolver.ask(t, client, name, sport, "TXT", down)
            serial += 1
            t += float(rng.exponential(0.15))
        t += float(rng.uniform(1, 4))  # iodine's idle poll interval
    return (Truth("dns_tunnel", client, domain),)


def _iodine_to_public_resolver(
    cap: _Capture, site: _Site, start: float, duration: float, domains: int, hide: bool
) -> tuple[Truth, ...]:
    """iodine's pattern (one socket, bursts of full queries, idle polls, TXT downstream)
    straight to a public resolver, whose side the sensor does not see: each name under
    the next of ``domains`` domains, and with ``hide`` a label that makes it fall where
    every other falls in an unkeyed sketch (:func:`hide_in_sketch`)."""
    rng = cap.rng
    client = str(rng.choice(site.clients[1:12]))
    public = _outsider(rng)
    zones = [_domain(rng) for _ in range(domains)]
    sport = int(rng.integers(20000, 65000))
    t = start + float(rng.uniform(0, 60))
    serial = 0
    while t < start + duration - 1:
        busy = rng.random() < 0.3
        for _ in range(int(rng.integers(5, 40)) if busy else 1):
            label = _b32(rng.bytes(int(rng.integers(60, 110)) if busy else 6))
            data = [label[j : j + 63] for j in range(0, len(label), 63)]
            after = [f"{serial:x}", *zones[serial % domains].split(".")]
            hidden = [hide_in_sketch(rng, data, after)] if hide else []
            name = ".".join([*data, *hidden, *after])
            down = rng.bytes(int(rng.integers(20, 600)))
            dns_exchange(cap, t, client, public, name, sport, "TXT", down, rtt=0.03)
            serial += 1
            t += float(rng.exponential(0.15))
        t += float(rng.uniform(1, 4))
    return (Truth("dns_tunnel", client, zones[0] if domains == 1 else ""),)


@case("hard", "dns_tunnel_names_hidden_in_sketch")
def dns_tunnel_names_hidden_in_sketch(
    cap: _Capture, site: _Site, start: float, duration: float
) -> tuple[Truth, ...]:
    """iodine-style to a public resolver, every name with a label chosen so that, under an
    unkeyed sketch hash, all its names count as one (:func:`hide_in_sketch`)."""
    return _iodine_to_public_resolver(cap, site, start, duration, 1, hide=True)


@case("hard", "dns_tunnel_single_socket_two_domains")
def dns_tunnel_single_socket_two_domains(
    cap: _Capture, site: _Site, start: float, duration: float
) -> tuple[Truth, ...]:
    """iodine-style to a public resolver, names alternating between two domains (a record
    whose names span several domains once looked like a forwarder's and was not counted)."""
    return _iodine_to_public_resolver(cap, site, start, duration, 2, hide=False)


def _poisson_tunnel(
    cap: _Capture,
    site: _Site,
    start: float,
    duration: float,
    *,
    mean_gap: Callable[[np.random.Generator], float],
    name_bytes: tuple[int, int],
    qtypes: tuple[str, ...] = ("A",),
    downstream: tuple[int, int] | None = None,
    one_socket: bool = False,
    domains: int = 1,
    max_name: int | None = None,
) -> tuple[Truth, ...]:
    """A client sending data in names at Poisson times through the site resolver.

    ``mean_gap`` draws the mean seconds between queries (after the client, its
    domains and its socket); each name carries ``name_bytes`` (a range) of data under
    the next of ``domains`` random domains, with a query type from ``qtypes`` (drawn
    when more than one) and, with ``downstream`` (a range of bytes), a TXT answer of
    random data. ``one_socket``: every query from one source port, else a socket per
    query. ``max_name``: every name shorter than that (checked).
    """
    rng = cap.rng
    resolver = Resolver(cap, site.resolver)
    client = str(rng.choice(site.clients[1:12]))
    zones = [_domain(rng) for _ in range(domains)]
    sport = int(rng.integers(20000, 65000)) if one_socket else None
    gap = mean_gap(rng)
    t = start + float(rng.exponential(gap))
    serial = 0
    while t < start + duration:
        name = _data_name(rng, int(rng.integers(*name_bytes)), serial, zones[serial % domains])
        assert max_name is None or len(name) < max_name, name
        qtype = qtypes[0] if len(qtypes) == 1 else str(rng.choice(qtypes))
        answer = rng.bytes(int(rng.integers(*downstream))) if downstream else None
        resolver.ask(t, client, name, sport, qtype, answer)
        serial += 1
        t += float(rng.exponential(gap))
    return (Truth("dns_tunnel", client, zones[0] if domains == 1 else ""),)


def _ten_to_twenty_a_minute(rng: np.random.Generator) -> float:
    return 1 / (float(rng.uniform(10, 20)) / 60)


# Short names (9-12 bytes of data) at 10-20 queries a minute; long names (24-39 bytes).
_short_names = partial(_poisson_tunnel, mean_gap=_ten_to_twenty_a_minute, name_bytes=(9, 13))
_long_names = partial(_poisson_tunnel, name_bytes=(24, 40))


@case("hard", "dns_tunnel_single_socket_short_names")
def dns_tunnel_single_socket_short_names(
    cap: _Capture, site: _Site, start: float, duration: float
) -> tuple[Truth, ...]:
    """One UDP socket and names under 40 characters, ~10-20 queries a minute."""
    return _short_names(
        cap, site, start, duration, qtypes=("TXT",), downstream=(20, 200), one_socket=True
    )


@case("hard", "dns_tunnel_short_names")
def dns_tunnel_short_names(
    cap: _Capture, site: _Site, start: float, duration: float
) -> tuple[Truth, ...]:
    """Every name under 40 characters (small chunks), a socket per query, ~10-20 a minute."""
    return _short_names(cap, site, start, duration, max_name=40)


def _slow_tunnel(
    cap: _Capture, site: _Site, start: float, duration: float, per_minute: float
) -> tuple[Truth, ...]:
    gap = 60 / per_minute
    return _long_names(cap, site, start, duration, mean_gap=lambda _: gap, qtypes=("A", "TXT"))


@case("hard", "dns_tunnel_slow", duration=1800.0)
def dns_tunnel_slow(cap: _Capture, site: _Site, start: float, duration: float) -> tuple[Truth, ...]:
    """Long random names, one every 13-25 s on average (Poisson), for 30 minutes."""
    return _slow_tunnel(cap, site, start, duration, 60 / float(cap.rng.uniform(13, 25)))


@case("hard", "dns_tunnel_rotating_domains")
def dns_tunnel_rotating_domains(
    cap: _Capture, site: _Site, start: float, duration: float
) -> tuple[Truth, ...]:
    """Names rotated over 20 domains (about 15 per domain), ~20 queries a minute."""
    return _long_names(cap, site, start, duration, mean_gap=lambda _: 3.0, domains=20)


def _at_rate(per_minute: float) -> CaseFn:
    def build(cap: _Capture, site: _Site, start: float, duration: float) -> tuple[Truth, ...]:
        return _slow_tunnel(cap, site, start, duration, per_minute)

    build.__doc__ = f"A tunnel of long random names at {per_minute:g} queries a minute."
    return build


sweep(
    Sweep(
        name="dns_tunnel_rate",
        detector="dns_tunnel",
        parameter="queries per minute (Poisson), long random names, 60 min",
        values=(1.5, 1.2, 1.0, 0.8, 0.6, 0.4),
        make=_at_rate,
        duration=3600.0,
    )
)


@case("benign", "recursive_resolver")
def recursive_resolver(
    cap: _Capture, site: _Site, start: float, duration: float
) -> tuple[Truth, ...]:
    """The site resolver doing its own recursion for a busy office: ~3 cache misses a
    second, each walked from a root server (13) through a TLD server (60) to one of the
    zone's authoritative servers (3,000 across the internet); 3 % of authoritative
    queries time out (a server down, rate limits, a lost packet) and are retried at
    another server of the zone after 800 ms, and 40 lame servers never answer."""
    rng = cap.rng
    roots = [_outsider(rng) for _ in range(13)]
    tlds = [_outsider(rng) for _ in range(60)]
    auth = [_outsider(rng) for _ in range(3000)]
    lame = set(rng.choice(len(auth), 40, replace=False).tolist())
    resolver = site.resolver
    t = start + float(rng.uniform(0, 2))
    while t < start + duration - 5:
        name = f"{''.join(rng.choice(_LETTERS, 8))}.example{int(rng.integers(0, 900))}.com"
        client = str(rng.choice(site.clients[:12]))  # who asked (answered when it is done)
        dns_exchange(cap, t, client, resolver, name, rtt=0.15)
        if rng.random() < 0.1:  # the TLD's servers expired from the cache too
            up = str(rng.choice(roots))
            dns_exchange(cap, t, resolver, up, name, rtt=0.02 + float(rng.exponential(0.01)))
            t += 0.03
        dns_exchange(cap, t, resolver, str(rng.choice(tlds)), name, rtt=0.03)
        t += 0.035
        for _ in range(3):  # the zone's servers, until one answers
            k = int(rng.integers(0, len(auth)))
            if k in lame or rng.random() < 0.03:
                sport = int(rng.integers(20000, 65000))
                cap.udp(t, resolver, auth[k], sport, 53, bytes(40 + len(name)))
                t += 0.8
                continue
            dns_exchange(cap, t, resolver, auth[k], name, rtt=0.01 + float(rng.exponential(0.04)))
            break
        t += float(rng.exponential(1 / 3.0))
    return ()


@case("hard", "udp53_sweep_from_lan_forwarder", duration=1200.0)
def udp53_sweep_from_lan_forwarder(
    cap: _Capture, site: _Site, start: float, duration: float
) -> tuple[Truth, ...]:
    """A LAN host that answers DNS for six of its neighbours (a compromised forwarder,
    or one the attacker set up so the host counts as a resolver) sweeps udp/53 over a
    /16 for open resolvers at one host every 20 s (±20 %) for 20 minutes: under the
    fast tier's 25 hosts in 5 minutes, over the slow tier's 40 in the hour; 5 % of the
    swept hosts run DNS and answer. Its clients' queries go to two public resolvers,
    answered."""
    rng = cap.rng
    lan = site.lan_prefix
    used = {int(c.rsplit(".", 1)[1]) for c in site.clients if c.startswith(lan)}
    used |= {int(h.rsplit(".", 1)[1]) for h in (site.resolver, site.ssh_server, site.mail_server)}
    forwarder = f"{lan}{int(rng.choice(sorted(set(range(200, 250)) - used)))}"
    upstream = [_outsider(rng), _outsider(rng)]
    clients = [str(c) for c in rng.choice([c for c in site.clients if c.startswith(lan)], 6)]
    t = start + float(rng.uniform(0, 5))
    while t < start + duration - 2:  # its clients' lookups, forwarded upstream
        name = f"{''.join(rng.choice(_LETTERS, 7))}.example{int(rng.integers(0, 300))}.com"
        dns_exchange(cap, t, str(rng.choice(clients)), forwarder, name, rtt=0.05)
        dns_exchange(cap, t + 0.005, forwarder, str(rng.choice(upstream)), name, rtt=0.03)
        t += float(rng.exponential(8.0))
    net = f"{int(rng.integers(100, 200))}.{int(rng.integers(0, 255))}."
    n = int((duration - 30) / 20.0)
    times = start + 10 + np.cumsum(20.0 * rng.uniform(0.8, 1.2, n))
    hosts = rng.choice(65024, len(times), replace=False) + 256
    for tt, h in zip(times[times < start + duration - 5], hosts, strict=False):
        dst = f"{net}{int(h) // 256}.{int(h) % 256 or 1}"
        if rng.random() < 0.05:  # an open resolver answers
            dns_exchange(cap, float(tt), forwarder, dst, "version.bind", qtype="TXT")
        else:
            sport = int(rng.integers(20000, 65000))
            cap.udp(float(tt), forwarder, dst, sport, 53, bytes(29))
    return (Truth("address_sweep", forwarder, "udp/53"),)
