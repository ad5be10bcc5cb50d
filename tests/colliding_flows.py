"""SYNs whose flows collide in a hash table keyed by nothing: what a hash-flooding attacker
sends to make a flow table's lookups quadratic.

The flow table hashes each flow's key words (addresses as two 64-bit words, ports,
protocol) with an FNV-style chain (xor, then multiply by an odd constant) and takes the
low bits. Unkeyed, or with only the starting value keyed, bits 0..50 of such a hash depend
only on bits 0..50 of the words (a product's low bits depend only on its factors' low
bits), so keys that differ only in bits 51..63 of their address words land in one slot of
any table up to 2**20 slots, whatever the key. In an IPv6 address (two big-endian words)
those are the 9th byte and the top 5 bits of the 10th: the top of the interface id, which
the owner of any /64 picks. So 8192 sources of one /64 collide with no search at all;
each source port is another such cluster. Frames are built with numpy (no scapy):
IPv6/TCP SYNs from those sources (8192 a source port) to one server port, one flow each::

    python -m tests.colliding_flows OUT.pcap FLOWS [--spread]

``--spread`` varies the low bits of the interface id instead: as many flows, of the same
sizes, that do not collide, to compare with.
"""

from __future__ import annotations

import struct
import sys
from pathlib import Path

import numpy as np

VICTIM = bytes.fromhex("20010db8ffff00000000000000000080")  # 2001:db8:ffff::80
PREFIX = bytes.fromhex("20010db800aa")  # the attacker's /48: 2001:db8:aa::/48


PER_PORT = 1 << 13  # sources of one /64 whose address words differ only in bits 51..63


def sources(n: int, spread: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``n`` IPv6 sources (16-byte rows, one /64) and their source ports: ``PER_PORT``
    colliding sources a port, or as many ``spread`` ones."""
    out = np.zeros((n, 16), np.uint8)
    out[:, :6] = np.frombuffer(PREFIX, np.uint8)
    i = np.arange(n)
    k = i % PER_PORT
    if spread:  # the low bits of the interface id: different slots
        out[:, 14] = k >> 8
        out[:, 15] = k & 0xFF
    else:  # bits 51..63 of the low word: the 9th byte and the top 5 bits of the 10th
        out[:, 8] = k >> 5
        out[:, 9] = (k & 31) << 3
    out[:, 12] = 1  # never the all-zero interface id
    return out, 40000 + i // PER_PORT


def syn_frames(
    src: np.ndarray, sport: np.ndarray, t0: float = 1_700_000_000.0, rate: float = 20_000.0
) -> bytes:
    """A classic pcap of one SYN from each source (and port) to ``VICTIM``:443, ``rate`` a
    second."""
    n = len(src)
    eth = np.frombuffer(bytes.fromhex("0200000000aa0200000000bb86dd"), np.uint8)
    ip6 = np.zeros((n, 40), np.uint8)
    ip6[:, 0] = 0x60
    ip6[:, 4:6] = np.frombuffer(struct.pack("!H", 20), np.uint8)
    ip6[:, 6] = 6  # TCP
    ip6[:, 7] = 64
    ip6[:, 8:24] = src
    ip6[:, 24:40] = np.frombuffer(VICTIM, np.uint8)
    tcp = np.zeros((n, 20), np.uint8)
    tcp[:, 0] = sport >> 8
    tcp[:, 1] = sport & 0xFF
    tcp[:, 2:4] = np.frombuffer(struct.pack("!H", 443), np.uint8)
    tcp[:, 12] = 0x50
    tcp[:, 13] = 0x02  # SYN
    tcp[:, 14:16] = np.frombuffer(struct.pack("!H", 64240), np.uint8)
    frames = np.concatenate([np.broadcast_to(eth, (n, 14)), ip6, tcp], axis=1)  # 74 bytes
    us = np.round((t0 + np.arange(n) / rate) * 1e6).astype(np.int64)
    hdr = np.zeros((n, 4), np.uint32)
    hdr[:, 0] = us // 1_000_000
    hdr[:, 1] = us % 1_000_000
    hdr[:, 2:] = frames.shape[1]
    recs = np.concatenate([hdr.astype("<u4").view(np.uint8).reshape(n, 16), frames], axis=1)
    head = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
    return head + recs.tobytes()


if __name__ == "__main__":
    n = int(sys.argv[2])
    Path(sys.argv[1]).write_bytes(syn_frames(*sources(n, "--spread" in sys.argv)))
