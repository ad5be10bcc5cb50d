"""Write a synthetic Ethernet/IPv4 pcap with realistic flow shapes, vectorised with numpy.

Traffic mix (by packets, roughly): TCP connections with handshake, data in both
directions and a FIN/FIN/ACK close (~85 %), DNS query/response pairs (~6 %),
longer UDP flows (~5 %) and ICMP echo pairs (~4 %). Every flow has its own
5-tuple, so every correct flow meter finds the same number of flows.
``--scan`` makes the traffic flow-heavy instead: one SYN (and a RST) per flow.
"""

from __future__ import annotations

import argparse
import struct
from pathlib import Path

import numpy as np


def _flows(rng: np.random.Generator, target: int, scan: bool) -> dict[str, np.ndarray]:
    """Return per-packet columns (unsorted): flow id, time, direction, proto, flags, payload."""
    cols: dict[str, list[np.ndarray]] = {
        k: [] for k in ("fid", "t", "dir", "proto", "flags", "pay", "kind")
    }
    duration = 300.0
    fid0 = 0

    def add(fid, t, d, proto, flags, pay, kind):  # noqa: ANN001
        for k, v in zip(
            ("fid", "t", "dir", "proto", "flags", "pay", "kind"),
            (fid, t, d, proto, flags, pay, kind),
            strict=True,
        ):
            cols[k].append(np.asarray(v))

    def pairs(fid0, start, reply_after, proto, flags, pay, kind):  # noqa: ANN001
        """One packet each way per flow, the reply ``reply_after`` s later; the rest per direction."""
        n = len(start)
        add(
            np.repeat(np.arange(n), 2) + fid0,
            np.repeat(start, 2) + np.tile([0.0, reply_after], n),
            np.tile([0, 1], n),
            np.full(2 * n, proto),
            np.tile(flags, n),
            np.tile(pay, n),
            np.tile(kind, n),
        )

    if scan:
        n = target // 2
        pairs(0, np.sort(rng.uniform(0, duration, n)), 0.0002, 6, [0x02, 0x14], [0, 0], [0, 0])
        return {k: np.concatenate(v) for k, v in cols.items()}

    # TCP connections: 3 handshake + m data + 3 close packets
    n_tcp_pk = int(target * 0.85)
    m = rng.integers(0, 40, size=n_tcp_pk // 26 + 1)
    sizes = m + 6
    keep = np.cumsum(sizes) <= n_tcp_pk
    m, sizes = m[keep], sizes[keep]
    nf = len(m)
    fid = np.repeat(np.arange(nf), sizes) + fid0
    pos = np.arange(sizes.sum()) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    last = np.repeat(sizes, sizes)
    d = rng.integers(0, 2, size=len(fid))
    flags = np.full(len(fid), 0x18)  # PSH|ACK
    pay = rng.choice(
        np.array([0, 40, 120, 536, 1200, 1448]), size=len(fid), p=[0.35, 0.1, 0.15, 0.1, 0.1, 0.2]
    )
    hs = pos < 3
    d[pos == 0], flags[pos == 0] = 0, 0x02
    d[pos == 1], flags[pos == 1] = 1, 0x12
    d[pos == 2], flags[pos == 2] = 0, 0x10
    fin1, fin2, ack = pos == last - 3, pos == last - 2, pos == last - 1
    d[fin1], flags[fin1] = 0, 0x11
    d[fin2], flags[fin2] = 1, 0x11
    d[ack], flags[ack] = 0, 0x10
    pay[hs | fin1 | fin2 | ack] = 0
    start = rng.uniform(0, duration, nf)
    gaps = rng.exponential(0.02, size=len(fid))
    gaps[pos == 0] = 0
    csum = np.cumsum(gaps)
    t = np.repeat(start, sizes) + csum - np.repeat(csum[np.cumsum(sizes) - sizes], sizes)
    add(fid, t, d, np.full(len(fid), 6), flags, pay, np.zeros(len(fid), int))
    fid0 += nf
    # DNS pairs
    n_dns = int(target * 0.03)
    pairs(fid0, rng.uniform(0, duration, n_dns), 0.003, 17, [0, 0], [38, 38], [1, 2])
    fid0 += n_dns
    # longer UDP flows (media-like) of 20 packets
    n_udp = int(target * 0.05) // 20
    fid = np.repeat(np.arange(n_udp), 20) + fid0
    t = np.repeat(rng.uniform(0, duration, n_udp), 20) + np.tile(np.arange(20) * 0.02, n_udp)
    add(
        fid,
        t,
        rng.integers(0, 2, size=20 * n_udp),
        np.full(20 * n_udp, 17),
        np.zeros(20 * n_udp, int),
        np.full(20 * n_udp, 160),
        np.zeros(20 * n_udp, int),
    )
    fid0 += n_udp
    # ICMP echo pairs
    n_icmp = int(target * 0.04) // 2
    pairs(fid0, rng.uniform(0, duration, n_icmp), 0.001, 1, [0, 0], [56, 56], [3, 4])
    return {k: np.concatenate(v) for k, v in cols.items()}


def write_pcap(path: Path, packets: int, seed: int = 1, scan: bool = False) -> tuple[int, int]:
    """Write the capture; return (packets, flows)."""
    rng = np.random.default_rng(seed)
    c = _flows(rng, packets, scan)
    order = np.argsort(c["t"], kind="stable")
    c = {k: v[order] for k, v in c.items()}
    n = len(order)
    nflows = int(c["fid"].max()) + 1
    fid = c["fid"].astype(np.int64)
    # addresses and ports derived from the flow id, unique per flow
    cli = (10 << 24) | (fid % 65000 + 1)
    srv = (172 << 24) | (16 << 16) | (fid // 65000 % 250 + 1)
    cport = 1024 + fid % 60000
    sport = np.where(c["proto"] == 17, np.where(c["kind"] > 0, 53, 5004), 443)
    sport = np.where(c["proto"] == 6, np.where(fid % 3 == 0, 80, 443), sport)
    toserver = c["dir"] == 0
    src = np.where(toserver, cli, srv)
    dst = np.where(toserver, srv, cli)
    sp = np.where(toserver, cport, sport)
    dp = np.where(toserver, sport, cport)
    proto = c["proto"].astype(np.int64)
    l4 = np.where(proto == 6, 20, 8)
    dns = c["kind"] > 0
    pay = c["pay"].astype(np.int64)
    iplen = 20 + l4 + pay
    caplen = 14 + iplen
    rec = 16 + caplen
    off = np.concatenate([[0], np.cumsum(rec)[:-1]]) + 24
    total = int(off[-1] + rec[-1])
    buf = np.zeros(total, dtype=np.uint8)
    buf[:24] = np.frombuffer(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1), np.uint8)
    ts_us = 1_700_000_000 * 1_000_000 + (c["t"] * 1e6).astype(np.int64)

    def put(o: np.ndarray, v: np.ndarray, nbytes: int, little: bool = False) -> None:
        for k in range(nbytes):
            shift = 8 * (k if little else nbytes - 1 - k)
            buf[o + k] = (v >> shift) & 0xFF

    put(off, ts_us // 1_000_000, 4, True)
    put(off + 4, ts_us % 1_000_000, 4, True)
    put(off + 8, caplen, 4, True)
    put(off + 12, caplen, 4, True)
    e = off + 16
    put(e, np.full(n, 0x0200000000AA), 6)
    put(e + 6, np.full(n, 0x0200000000BB), 6)
    put(e + 12, np.full(n, 0x0800), 2)
    ip = e + 14
    buf[ip] = 0x45
    put(ip + 2, iplen, 2)
    put(ip + 4, np.arange(n) & 0xFFFF, 2)
    buf[ip + 8] = 64
    buf[ip + 9] = proto
    put(ip + 12, src, 4)
    put(ip + 16, dst, 4)
    t4 = ip + 20
    icmp = proto == 1
    put(t4[~icmp], sp[~icmp], 2)
    put(t4[~icmp] + 2, dp[~icmp], 2)
    tcp = proto == 6
    put(t4[tcp] + 4, (fid[tcp] * 7919) & 0xFFFFFFFF, 4)
    buf[t4[tcp] + 12] = 0x50
    buf[t4[tcp] + 13] = c["flags"][tcp]
    put(t4[tcp] + 14, np.full(int(tcp.sum()), 64240), 2)
    udp = proto == 17
    put(t4[udp] + 4, 8 + pay[udp], 2)
    buf[t4[icmp]] = np.where(c["kind"][icmp] == 3, 8, 0)
    put(t4[icmp] + 4, fid[icmp] & 0xFFFF, 2)
    # DNS payload: header + one question www<n>.example.com A IN
    dq = t4[dns] + 8
    put(dq, fid[dns] & 0xFFFF, 2)
    resp = c["kind"][dns] == 2
    put(dq + 2, np.where(resp, 0x8180, 0x0100), 2)
    put(dq + 4, np.ones(len(dq), np.int64), 2)
    q = dq + 12
    buf[q] = 8
    digits = fid[dns]
    for k in range(8):
        buf[q + 1 + k] = 97 + (digits >> (3 * k)) % 26
    buf[q + 9] = 7
    for k, ch in enumerate(b"example"):
        buf[q + 10 + k] = ch
    buf[q + 17] = 3
    for k, ch in enumerate(b"com"):
        buf[q + 18 + k] = ch
    put(q + 22, np.ones(len(q), np.int64), 2)
    put(q + 24, np.ones(len(q), np.int64), 2)
    with open(path, "wb") as fh:
        fh.write(buf.tobytes())
    return n, nflows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("output", type=Path)
    ap.add_argument("--packets", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--scan", action="store_true", help="flow-heavy: SYN/RST pairs only")
    a = ap.parse_args()
    n, f = write_pcap(a.output, a.packets, a.seed, a.scan)
    print(f"wrote {a.output}: {n} packets, {f} flows, {a.output.stat().st_size / 1e6:.0f} MB")


if __name__ == "__main__":
    main()
