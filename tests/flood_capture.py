"""Write flow-heavy captures fast (numpy and struct, no scapy): a spoofed-source SYN flood.

Every packet is its own flow: a TCP SYN from a distinct (pseudo-random) source address
and port to one victim, evenly spread over ``seconds``. 1.5 M packets take about two
seconds to build and compress. Run as ``python -m tests.flood_capture OUT [FLOWS]``.
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
    buf = np.zeros((n, _REC), dtype=np.uint8)
    ts = np.round((start + np.arange(n) * (seconds / max(n, 1))) * 1e6).astype(np.int64)
    _le32(buf, 0, ts // 1_000_000)
    _le32(buf, 4, ts % 1_000_000)
    _le32(buf, 8, np.full(n, _REC - 16))
    _le32(buf, 12, np.full(n, _REC - 16))
    buf[:, 16:30] = np.frombuffer(_ETH, dtype=np.uint8)
    ip = 30
    buf[:, ip] = 0x45
    _be(buf, ip + 2, np.full(n, 40), 2)
    _be(buf, ip + 4, np.arange(n) & 0xFFFF, 2)
    buf[:, ip + 8] = 64
    buf[:, ip + 9] = 6
    _be(buf, ip + 12, flood_sources(n, seed), 4)
    _be(buf, ip + 16, np.full(n, int.from_bytes(bytes(map(int, victim.split("."))), "big")), 4)
    tcp = ip + 20
    _be(buf, tcp, rng.integers(1024, 65536, n), 2)
    _be(buf, tcp + 2, np.full(n, port), 2)
    _be(buf, tcp + 4, rng.integers(0, 1 << 32, n, dtype=np.uint64), 4)
    buf[:, tcp + 12] = 0x50
    buf[:, tcp + 13] = 0x02  # SYN
    _be(buf, tcp + 14, np.full(n, 64240), 2)
    return buf.tobytes()


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
    out = Path(argv[0])
    flows = int(argv[1]) if len(argv) > 1 else 1_500_000
    write_syn_flood(out, flows)
    print(f"{out}: {flows} one-packet SYN flows, {out.stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
