"""Resolver traffic as a capture: what a busy site's DNS looks like on the wire.

Clients ask one resolver; every exchange has its own source port (as stub resolvers
pick them), so each is a flow of its own. The mix follows what a capture at a site's
resolver shows: most queries answered within a few milliseconds (names drawn from a
popular set, some in mixed case), some NXDOMAIN, some unanswered, some retried from the
same port a second later (a third packet), some answers whose query the capture missed,
a few queries without a question, and long random labels up to 63 characters and names
up to the 255-character limit (what tunnelling and DGAs send). Frames are built with
``struct`` (thousands a second; scapy builds only hundreds), deterministic per seed::

    python -m tests.dns_capture OUT.pcap EXCHANGES [SECONDS]
"""

from __future__ import annotations

import struct
import sys
from pathlib import Path

import numpy as np

_ETH4 = bytes.fromhex("0200000000aa0200000000bb0800")
RESOLVER = "10.0.0.53"
POPULAR = [
    "www.example.org",
    "API.Example.COM",
    "mail.example.net",
    "cdn.static.example.org",
    "time.example.com",
    "login.corp.example",
    "updates.vendor.example",
    "a.b.c.d.e.f.example.org",
]
_ALPHABET = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz0123456789", dtype=np.uint8)


def dns_message(
    ident: int,
    name: str | None,
    *,
    response: bool = False,
    rcode: int = 0,
    answer: bool = False,
) -> bytes:
    """A DNS message: header, at most one question (``name``), at most one A answer."""
    flags = 0x0100 | (0x8080 if response else 0) | rcode
    msg = struct.pack("!HHHHHH", ident, flags, 0 if name is None else 1, int(answer), 0, 0)
    if name is not None:
        labels = b"".join(bytes([len(x)]) + x.encode() for x in name.split("."))
        msg += labels + b"\0" + struct.pack("!HH", 1, 1)
    if answer:
        msg += b"\xc0\x0c" + struct.pack("!HHIH4s", 1, 1, 60, 4, bytes([10, 9, 9, 9]))
    return msg


def udp_frame(src: str, dst: str, sp: int, dp: int, pay: bytes) -> bytes:
    """An Ethernet/IPv4/UDP frame."""
    a = bytes(int(x) for x in src.split("."))
    b = bytes(int(x) for x in dst.split("."))
    l4 = struct.pack("!HHHH", sp, dp, 8 + len(pay), 0) + pay
    head = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 0, 0, 64, 17, 0, a, b)
    return _ETH4 + head + l4


def _random_name(rng: np.random.Generator, long: bool) -> str:
    if not long:
        return str(POPULAR[int(rng.integers(len(POPULAR)))])
    labels, size = [], 0
    target = int(rng.integers(40, 254))  # up to the 255-character limit (dots included)
    while size < target - 16:
        n = int(min(63, rng.integers(8, 64), target - 16 - size))
        if n < 1:
            break
        labels.append(bytes(rng.choice(_ALPHABET, n)).decode())
        size += n + 1
    return ".".join([*labels, "tunnel", "example"])


def exchanges(
    count: int, seconds: float = 10.0, start: float = 1_700_000_001.0, seed: int = 3
) -> list[tuple[float, bytes]]:
    """``count`` exchanges spread over ``seconds`` (timestamps, frames), in time order."""
    rng = np.random.default_rng(seed)
    out: list[tuple[float, bytes]] = []
    times = np.sort(rng.uniform(start, start + seconds, count))
    for k, t in enumerate(times):
        t = float(t)
        client = f"10.1.{(k // 250) % 250}.{k % 250 + 1}"
        sport = 1024 + (k * 7919) % 64000
        name = _random_name(rng, bool(rng.random() < 0.1))
        ident = int(rng.integers(65536))
        kind = rng.random()
        query = udp_frame(client, RESOLVER, sport, 53, dns_message(ident, name))
        rtt = float(rng.uniform(0.001, 0.04))
        if kind < 0.72:  # answered
            reply = dns_message(ident, name, response=True, answer=True)
            out += [(t, query), (t + rtt, udp_frame(RESOLVER, client, 53, sport, reply))]
        elif kind < 0.80:  # NXDOMAIN
            reply = dns_message(ident, name, response=True, rcode=3)
            out += [(t, query), (t + rtt, udp_frame(RESOLVER, client, 53, sport, reply))]
        elif kind < 0.87:  # unanswered
            out.append((t, query))
        elif kind < 0.90:  # retried a second later from the same port, then answered
            reply = dns_message(ident, name, response=True, answer=True)
            out += [(t, query), (t + 1.0, query)]
            out.append((t + 1.0 + rtt, udp_frame(RESOLVER, client, 53, sport, reply)))
        elif kind < 0.96:  # the answer only (the query was not captured)
            reply = dns_message(ident, name, response=True, answer=True)
            out.append((t, udp_frame(RESOLVER, client, 53, sport, reply)))
        else:  # no question in the query; the answer has one
            bare = udp_frame(client, RESOLVER, sport, 53, dns_message(ident, None))
            reply = dns_message(ident, name, response=True, answer=True)
            out += [(t, bare), (t + rtt, udp_frame(RESOLVER, client, 53, sport, reply))]
    out.sort(key=lambda p: p[0])
    return out


def write_pcap(path: Path, pkts: list[tuple[float, bytes]]) -> Path:
    """A classic pcap (Ethernet, microseconds) of ``pkts``, in the order given."""
    recs = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]
    for t, frame in pkts:
        us = round(t * 1e6)
        recs.append(struct.pack("<IIII", us // 1_000_000, us % 1_000_000, len(frame), len(frame)))
        recs.append(frame)
    path.write_bytes(b"".join(recs))
    return path


if __name__ == "__main__":
    seconds = float(sys.argv[3]) if len(sys.argv) > 3 else 10.0
    write_pcap(Path(sys.argv[1]), exchanges(int(sys.argv[2]), seconds))
