"""Write flow-heavy captures fast (numpy and struct, no scapy): a spoofed-source SYN flood,
and connections that complete their handshake and then stay idle.

In the flood every packet is its own flow: a TCP SYN from a distinct (pseudo-random)
source address and port to one victim, evenly spread over ``seconds``. 1.5 M packets
take about two seconds to build and compress. Run as
``python -m tests.flood_capture OUT [FLOWS] [--handshakes]`` (``--handshakes``: FLOWS
idle connections of three packets each instead).
"""

from __future__ import annotations

import gzip
import os
import struct
import sys
from pathlib import Path

import numpy as np

_ETH = bytes.fromhex("0200000000aa0200000000bb0800")
_REC = 16 + 14 + 20 + 20  # record header + Ethernet + IPv4 + TCP
_START = 1_700_000_000.0


def _be(buf: np.ndarray, col: int, values: np.ndarray, nbytes: int) -> None:
    """Write ``values`` big-endian into ``nbytes`` columns of every record from ``col``."""
    v = values.astype(np.uint64)
    for k in range(nbytes):
        buf[:, col + k] = (v >> np.uint64(8 * (nbytes - 1 - k))) & np.uint64(0xFF)


def _le32(buf: np.ndarray, col: int, values: np.ndarray) -> None:
    buf[:, col : col + 4] = values.astype("<u4").view(np.uint8).reshape(-1, 4)


def flood_sources(flows: int, seed: int = 7) -> np.ndarray:
    """Return ``flows`` distinct IPv4 source addresses (uint32) that look random."""
    i = np.arange(flows, dtype=np.uint64)
    # an odd multiplier is a bijection modulo 2**24: distinct low bits, so distinct sources
    low = (i * np.uint64(2654435761) + np.uint64(seed)) & np.uint64(0xFFFFFF)
    return (np.uint64(11 << 24) + low).astype(np.uint32)


def _tcp_records(
    ts_us: np.ndarray,
    src: np.ndarray,
    dst: np.ndarray,
    sport: np.ndarray,
    dport: np.ndarray,
    seq: np.ndarray,
    flags: np.ndarray,
    win: np.ndarray,
) -> bytes:
    """Return pcap records (Ethernet, IPv4, a 20-byte TCP header, no payload), one per
    element of the arrays, in their order; addresses are uint32, times microseconds."""
    n = len(ts_us)
    buf = np.zeros((n, _REC), dtype=np.uint8)
    _le32(buf, 0, ts_us // 1_000_000)
    _le32(buf, 4, ts_us % 1_000_000)
    _le32(buf, 8, np.full(n, _REC - 16))
    _le32(buf, 12, np.full(n, _REC - 16))
    buf[:, 16:30] = np.frombuffer(_ETH, dtype=np.uint8)
    ip = 30
    buf[:, ip] = 0x45
    _be(buf, ip + 2, np.full(n, 40), 2)
    _be(buf, ip + 4, np.arange(n) & 0xFFFF, 2)
    buf[:, ip + 8] = 64
    buf[:, ip + 9] = 6
    _be(buf, ip + 12, src, 4)
    _be(buf, ip + 16, dst, 4)
    tcp = ip + 20
    _be(buf, tcp, sport, 2)
    _be(buf, tcp + 2, dport, 2)
    _be(buf, tcp + 4, seq, 4)
    buf[:, tcp + 12] = 0x50
    buf[:, tcp + 13] = flags
    _be(buf, tcp + 14, win, 2)
    return buf.tobytes()


def _addr(text: str) -> int:
    return int.from_bytes(bytes(map(int, text.split("."))), "big")


def syn_flood_records(
    flows: int,
    seconds: float = 30.0,
    start: float = _START,
    victim: str = "10.0.0.1",
    port: int = 80,
    seed: int = 7,
) -> bytes:
    """Return the pcap body (records only) of ``flows`` one-packet SYN flows to ``victim``."""
    rng = np.random.default_rng(seed)
    n = int(flows)
    ts = np.round((start + np.arange(n) * (seconds / max(n, 1))) * 1e6).astype(np.int64)
    return _tcp_records(
        ts,
        flood_sources(n, seed),
        np.full(n, _addr(victim)),
        rng.integers(1024, 65536, n),
        np.full(n, port),
        rng.integers(0, 1 << 32, n, dtype=np.uint64),
        np.full(n, 0x02),  # SYN
        np.full(n, 64240),
    )


def handshake_records(
    conns: int,
    seconds: float = 30.0,
    start: float = _START,
    server: str = "10.0.0.1",
    port: int = 443,
    seed: int = 7,
) -> bytes:
    """Return the pcap body of ``conns`` TCP connections that complete their handshake
    (SYN, SYN-ACK, ACK; round trips of 0.2-80 ms) and then stay idle: what a client
    holding a pool of idle connections, or a connection flood from real sources, leaves
    open. Connections start evenly over ``seconds``; records are in time order."""
    rng = np.random.default_rng(seed)
    n = int(conns)
    t0 = start + np.arange(n) * (seconds / max(n, 1))
    rtt = rng.uniform(0.0002, 0.08, n)
    ts = np.round(np.concatenate([t0, t0 + rtt / 2, t0 + rtt]) * 1e6).astype(np.int64)
    client = flood_sources(n, seed)
    srv = np.full(n, _addr(server), dtype=np.uint32)
    cport = rng.integers(1024, 65536, n)
    sport = np.full(n, port)
    up = np.ones(n, dtype=bool)
    from_client = np.concatenate([up, ~up, up])
    order = np.argsort(ts, kind="stable")
    return _tcp_records(
        ts[order],
        np.where(from_client, np.tile(client, 3), np.tile(srv, 3))[order],
        np.where(from_client, np.tile(srv, 3), np.tile(client, 3))[order],
        np.where(from_client, np.tile(cport, 3), np.tile(sport, 3))[order],
        np.where(from_client, np.tile(sport, 3), np.tile(cport, 3))[order],
        rng.integers(0, 1 << 32, 3 * n, dtype=np.uint64),
        np.repeat(np.array([0x02, 0x12, 0x10], dtype=np.uint8), n)[order],  # SYN, SYN-ACK, ACK
        np.repeat(np.array([64240, 65160, 502]), n)[order],
    )


def write_syn_flood(path: Path, flows: int = 1_500_000, **kwargs: object) -> int:
    """Write the flood as a classic pcap (gzip-compressed if ``path`` ends in .gz)."""
    header = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
    body = syn_flood_records(flows, **kwargs)  # type: ignore[arg-type]
    path = Path(path)
    if path.name.endswith(".gz"):
        with gzip.open(path, "wb", compresslevel=1) as fh:
            fh.write(header)
            fh.write(body)
    else:
        path.write_bytes(header + body)
    return flows


def tick_capture(path: Path, ts: float) -> None:
    """One UDP packet at ``ts``, a file of its own (written under a dot-name, then renamed):
    it moves the watermark past the open windows."""
    payload = b"x" * 20
    udp = struct.pack("!HHHH", 5000, 5001, 8 + len(payload), 0) + payload
    ip = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0, bytes([10, 9, 9, 9]), bytes(4)
    )
    frame = b"\x00\x11\x22\x33\x44\x55\x66\x77\x88\x99\xaa\xbb\x08\x00" + ip + udp
    sec = int(ts)
    rec = struct.pack("<IIII", sec, int((ts - sec) * 1e6), len(frame), len(frame)) + frame
    tmp = path.with_name("." + path.name + ".part")
    tmp.write_bytes(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1) + rec)
    os.replace(tmp, path)


def main(argv: list[str]) -> int:
    handshakes = "--handshakes" in argv
    argv = [a for a in argv if a != "--handshakes"]
    out = Path(argv[0])
    flows = int(argv[1]) if len(argv) > 1 else 1_500_000
    if handshakes:
        header = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
        out.write_bytes(header + handshake_records(flows, seconds=100.0))
        print(f"{out}: {flows} idle connections of three packets, {out.stat().st_size} bytes")
        return 0
    write_syn_flood(out, flows)
    print(f"{out}: {flows} one-packet SYN flows, {out.stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
