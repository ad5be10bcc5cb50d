"""CIC features against an independent scapy-based slow path, and the Java-bug fixes."""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from scapy.layers.dns import DNS, DNSQR
from scapy.layers.inet import IP, TCP, UDP, Ether
from scapy.layers.inet6 import IPv6, IPv6ExtHdrFragment
from scapy.utils import PcapReader, wrpcap

from netmon_exporter.flow_schema import CIC_FEATURES, FlowBatch, addrs_to_str
from netmon_exporter.pipeline import FlowSettings, process_file

DATA = Path(__file__).parent / "data" / "pcaps"
SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "pcaps"
ACTIVITY_US = 5_000_000


def _stats(xs: list[float]) -> tuple[float, float, float, float]:
    """mean, sample std, max, min (0 for empty, std 0 for one value), as the Java tool."""
    if not xs:
        return 0.0, 0.0, 0.0, 0.0
    std = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return statistics.fmean(xs), std, max(xs), min(xs)


def _packet_info(pkt, frags: dict) -> tuple | None:  # noqa: ANN001
    """Key fields of one packet by scapy: ((src, sport), (dst, dport), proto, ...).

    A later IPv4 fragment belongs to the flow of its first fragment (same addresses,
    protocol and IP id), with its bytes as payload; but for TCP, the bytes that fall
    within the segment's header are header, and every fragment carries the segment's
    flags and window once a fragment so far held them (docs/flow-features.md).
    """
    ip = pkt.getlayer(IP) or pkt.getlayer(IPv6)
    if ip is None:
        return None
    if isinstance(ip, IP):
        fkey = (ip.src, ip.dst, ip.proto, ip.id)
        if ip.frag:
            known = frags.get(fkey)
            if known is None:
                return None
            ports, head, first = known
            size, off = ip.len - ip.ihl * 4, ip.frag * 8
            hdr = flags = win = 0
            if ip.proto == 6:
                data = bytes(ip.payload)[:size]
                had = set(head)
                for k, byte in enumerate(data):  # what this fragment adds of the header
                    head.setdefault(off + k, byte)
                if 13 in head and 13 not in had:  # the first fragment gets them too
                    first[6] = head[13]
                if 14 in head and 15 in head and not {14, 15} <= had:
                    first[7] = head[14] << 8 | head[15]
                hl = max((head[12] >> 4) * 4, 20) if 12 in head else 20
                hdr = max(0, min(hl - off, size))
                flags = head.get(13, 0)
                win = (head[14] << 8 | head[15]) if 14 in head and 15 in head else 0
            return (
                (ip.src, ports[0]),
                (ip.dst, ports[1]),
                ip.proto,
                int(pkt.time * 1_000_000),
                size - hdr,
                hdr,
                flags,
                win,
            )
        if ip.flags.MF and ip.proto == 6:  # scapy leaves a header cut short as Raw
            size = ip.len - ip.ihl * 4
            raw = bytes(ip.payload)[:size]
            ports = (raw[0] << 8 | raw[1], raw[2] << 8 | raw[3])
            head = dict(enumerate(raw[:60]))
            hl = max((raw[12] >> 4) * 4, 20) if len(raw) > 12 else 20
            flags = raw[13] if len(raw) > 13 else 0
            win = (raw[14] << 8 | raw[15]) if len(raw) > 15 else 0
            ts = int(pkt.time * 1_000_000)
            hdr = min(hl, size)
            info = [(ip.src, ports[0]), (ip.dst, ports[1]), 6, ts, size - hdr, hdr, flags, win]
            frags[fkey] = (ports, head, info)
            return info  # type: ignore[return-value] - patched by later fragments
        if ip.flags.MF and isinstance(ip.payload, UDP):
            frags[fkey] = ((int(ip.payload.sport), int(ip.payload.dport)), {}, None)
        l4 = ip.payload
        ip_payload = ip.len - ip.ihl * 4
    else:
        l4 = ip.payload
        ip_payload = ip.plen
        if isinstance(l4, IPv6ExtHdrFragment):
            return None
    if isinstance(l4, TCP):
        hdr, flags, win = l4.dataofs * 4, int(l4.flags), int(l4.window)
    elif isinstance(l4, UDP):
        hdr, flags, win = 8, 0, 0
    else:
        return None
    proto = 6 if isinstance(l4, TCP) else 17
    return (
        (ip.src, int(l4.sport)),
        (ip.dst, int(l4.dport)),
        proto,
        int(pkt.time * 1_000_000),
        ip_payload - hdr,
        hdr,
        flags,
        win,
    )


def _bulk(pk: list[tuple], direction: int) -> tuple[float, float, float]:
    """CICFlowMeter's bulk algorithm, applied to the packets' true direction."""
    state = {
        0: {"start": None, "last": None, "n": 0, "size": 0},
        1: {"start": None, "last": None, "n": 0, "size": 0},
    }
    bulks = pkts = size = dur = 0
    for d, t, length in pk:
        me, other = state[d], state[1 - d]
        if other["last"] is not None and me["start"] is not None and other["last"] > me["start"]:
            me["start"] = None
        if length <= 0:
            continue
        if me["start"] is None or t - me["last"] > 1_000_000:
            me.update(start=t, last=t, n=1, size=length)
            continue
        me["n"] += 1
        me["size"] += length
        if d == direction and me["n"] == 4:
            bulks += 1
            pkts += me["n"]
            size += me["size"]
            dur += t - me["start"]
        elif d == direction and me["n"] > 4:
            pkts += 1
            size += length
            dur += t - me["last"]
        me["last"] = t
    if bulks == 0:
        return 0.0, 0.0, 0.0
    return size / bulks, pkts / bulks, (size / (dur / 1e6) if dur else 0.0)


def reference_flows(path: Path) -> dict[tuple, dict[str, float]]:
    """Compute the CIC features of every TCP/UDP tuple in a capture (one flow per tuple)."""
    groups: dict[tuple, list[tuple]] = defaultdict(list)
    frags: dict = {}
    with PcapReader(str(path)) as pr:
        for pkt in pr:
            info = _packet_info(pkt, frags)
            if info is not None:
                a, b = sorted([info[0], info[1]])
                groups[(a, b, info[2])].append(info)
    out = {}
    for key, pk in groups.items():
        first = pk[0]
        client = first[1] if first[2] == 6 and (first[6] & 0x12) == 0x12 else first[0]
        d = [0 if p[0] == client else 1 for p in pk]
        ts = [p[3] for p in pk]
        ln = [p[4] for p in pk]
        fwd = [i for i in range(len(pk)) if d[i] == 0]
        bwd = [i for i in range(len(pk)) if d[i] == 1]
        dur = ts[-1] - ts[0]
        fl, bl = [ln[i] for i in fwd], [ln[i] for i in bwd]
        fiat = [ts[i] - ts[i - 1] for i in range(1, len(ts))]
        fwiat = [ts[fwd[i]] - ts[fwd[i - 1]] for i in range(1, len(fwd))]
        bwiat = [ts[bwd[i]] - ts[bwd[i - 1]] for i in range(1, len(bwd))]
        active, idle = [], []
        sa = ea = ts[0]
        for t in ts[1:]:
            if t - ea > ACTIVITY_US:
                if ea - sa > 0:
                    active.append(ea - sa)
                idle.append(t - ea)
                sa = ea = t
            else:
                ea = max(ea, t)
        if ea - sa > 0:
            active.append(ea - sa)
        subflows = 1 + sum(1 for x in fiat if x > 1_000_000)
        flags = [p[6] for p in pk]
        secs = dur / 1e6
        r: dict[str, float] = {
            "Flow Duration": dur,
            "Tot Fwd Pkts": len(fl),
            "Tot Bwd Pkts": len(bl),
            "TotLen Fwd Pkts": sum(fl),
            "TotLen Bwd Pkts": sum(bl),
        }
        for name, xs in (("Fwd Pkt Len", fl), ("Bwd Pkt Len", bl)):
            m, s, mx, mn = _stats(xs)
            r.update({f"{name} Max": mx, f"{name} Min": mn, f"{name} Mean": m, f"{name} Std": s})
        r["Flow Byts/s"] = (sum(ln) / secs) if secs else 0.0
        r["Flow Pkts/s"] = (len(pk) / secs) if secs else 0.0
        for name, xs in (
            ("Flow IAT", fiat),
            ("Fwd IAT", fwiat),
            ("Bwd IAT", bwiat),
            ("Active", active),
            ("Idle", idle),
        ):
            m, s, mx, mn = _stats(xs)
            r.update({f"{name} Mean": m, f"{name} Std": s, f"{name} Max": mx, f"{name} Min": mn})
        r["Fwd IAT Tot"], r["Bwd IAT Tot"] = sum(fwiat), sum(bwiat)
        r["Fwd PSH Flags"] = sum(1 for i in fwd if flags[i] & 8)
        r["Bwd PSH Flags"] = sum(1 for i in bwd if flags[i] & 8)
        r["Fwd URG Flags"] = sum(1 for i in fwd if flags[i] & 32)
        r["Bwd URG Flags"] = sum(1 for i in bwd if flags[i] & 32)
        r["Fwd Header Len"] = sum(pk[i][5] for i in fwd)
        r["Bwd Header Len"] = sum(pk[i][5] for i in bwd)
        r["Fwd Pkts/s"] = len(fl) / secs if secs else 0.0
        r["Bwd Pkts/s"] = len(bl) / secs if secs else 0.0
        m, s, mx, mn = _stats(ln)
        r.update(
            {
                "Pkt Len Min": mn,
                "Pkt Len Max": mx,
                "Pkt Len Mean": m,
                "Pkt Len Std": s,
                "Pkt Len Var": s * s,
                "Pkt Size Avg": m,
            }
        )
        for bit, name in enumerate(
            (
                "FIN Flag Cnt",
                "SYN Flag Cnt",
                "RST Flag Cnt",
                "PSH Flag Cnt",
                "ACK Flag Cnt",
                "URG Flag Cnt",
                "ECE Flag Cnt",
                "CWE Flag Count",
            )
        ):
            r[name] = sum(1 for f in flags if f & (1 << bit))
        r["Down/Up Ratio"] = len(bl) / len(fl) if fl else 0.0
        r["Fwd Seg Size Avg"] = r["Fwd Pkt Len Mean"]
        r["Bwd Seg Size Avg"] = r["Bwd Pkt Len Mean"]
        seq = [(d[i], ts[i], ln[i]) for i in range(len(pk))]
        (r["Fwd Byts/b Avg"], r["Fwd Pkts/b Avg"], r["Fwd Blk Rate Avg"]) = _bulk(seq, 0)
        (r["Bwd Byts/b Avg"], r["Bwd Pkts/b Avg"], r["Bwd Blk Rate Avg"]) = _bulk(seq, 1)
        r["Subflow Fwd Pkts"], r["Subflow Fwd Byts"] = len(fl) / subflows, sum(fl) / subflows
        r["Subflow Bwd Pkts"], r["Subflow Bwd Byts"] = len(bl) / subflows, sum(bl) / subflows
        r["Init Fwd Win Byts"] = pk[fwd[0]][7] if fwd else -1
        r["Init Bwd Win Byts"] = pk[bwd[0]][7] if bwd else -1
        r["Fwd Act Data Pkts"] = sum(1 for x in fl if x >= 1)
        r["Fwd Seg Size Min"] = min(pk[i][5] for i in fwd) if fwd else 0
        out[key] = r
    return out


def _ours_by_tuple(fl: FlowBatch) -> dict[tuple, list[int]]:
    src, dst = addrs_to_str(fl["src_ip"]), addrs_to_str(fl["dst_ip"])
    out: dict[tuple, list[int]] = defaultdict(list)
    for i in range(len(fl)):
        a, b = sorted([(src[i], int(fl["src_port"][i])), (dst[i], int(fl["dst_port"][i]))])
        out[(a, b, int(fl["protocol"][i]))].append(i)
    return out


def _captures() -> list[Path]:
    names = [
        "tcp-handshake-reorder.pcap",
        "tcp-missing-syn.pcap",
        "tcp-fin-retransmission.pcap",
        "dns-edns-ecs.pcap",
        "vlan-collisions.pcap",
    ]
    paths = [DATA / n for n in names]
    for n in ("netflix-tls.pcap", "kakaotalk-sll.pcap", "quic.pcap", "reddit-ipv6.pcap"):
        if (SHARED / n).exists():
            paths.append(SHARED / n)
    return paths


@pytest.mark.parametrize("path", _captures(), ids=lambda p: p.name)
def test_every_cic_feature_matches_the_scapy_slow_path(path: Path) -> None:
    # timeouts long enough that every tuple is one flow (except TCP close + reuse)
    fl = process_file(
        path, FlowSettings(idle_timeout_seconds=1e6, active_timeout_seconds=1e7)
    ).flows
    ours = _ours_by_tuple(fl)
    ref = reference_flows(path)
    compared = 0
    for key, r in ref.items():
        rows = ours.get(key)
        assert rows, key
        if len(rows) != 1:  # closed and reopened: slow path treats the tuple as one flow
            continue
        i = rows[0]
        for name in CIC_FEATURES:
            assert fl[name][i] == pytest.approx(r[name], rel=1e-9, abs=1e-6), (key, name)
        compared += 1
    assert compared >= 1


def test_fragmented_tcp_features_match_the_scapy_slow_path(tmp_path: Path) -> None:
    # nmap -f probes (8-byte fragments), a --mtu 16 probe, and a session whose segments
    # are cut into 16- and 24-byte fragments: header bytes, flags and windows are the
    # segment's (see _packet_info), in every CIC feature.
    from scapy.layers.inet import fragment

    pkts: list[tuple[float, object]] = []
    t = 10.0

    def send(seg: object, src: str, dst: str, size: int) -> None:
        nonlocal t
        ip = IP(src=src, dst=dst, id=int(t * 100) & 0xFFFF) / seg
        for f in fragment(ip, fragsize=size) if size else [ip]:
            pkts.append((t, Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / f))
            t += 0.0003
        t += 0.01

    for k, port in enumerate((21, 22, 23, 8080)):
        send(TCP(sport=41000, dport=port, flags="S", seq=k, window=1024), C, S, 8)
        send(TCP(sport=port, dport=41000, flags="RA", ack=k + 1), S, C, 0)
    send(TCP(sport=41001, dport=443, flags="S", seq=7, window=1024), C, S, 16)
    send(TCP(sport=41002, dport=80, flags="S", seq=1, window=29200), C, S, 0)
    send(TCP(sport=80, dport=41002, flags="SA", seq=9, ack=2, window=65160), S, C, 0)
    send(TCP(sport=41002, dport=80, flags="A", seq=2, ack=10, window=229), C, S, 0)
    for n in (40, 300, 7):
        send(TCP(sport=41002, dport=80, flags="PA", seq=2, ack=10) / (b"q" * n), C, S, 24)
        send(TCP(sport=80, dport=41002, flags="PA", seq=10, ack=2) / (b"r" * 3 * n), S, C, 16)
    path = _write(tmp_path / "fragmented.pcap", pkts)
    fl = process_file(
        path, FlowSettings(idle_timeout_seconds=1e6, active_timeout_seconds=1e7)
    ).flows
    ours, ref = _ours_by_tuple(fl), reference_flows(path)
    assert len(ref) == 6
    for key, r in ref.items():
        (i,) = ours[key]
        for name in CIC_FEATURES:
            assert fl[name][i] == pytest.approx(r[name], rel=1e-9, abs=1e-6), (key, name)


def _write(path: Path, pkts: list[tuple[float, object]]) -> Path:
    for t, p in pkts:
        p.time = t
    wrpcap(str(path), [p for _, p in pkts])
    return path


C, S = "10.0.0.1", "10.0.0.2"


def test_zero_duration_rates_are_zero_not_infinite(tmp_path: Path) -> None:
    f = _write(tmp_path / "one.pcap", [(5.0, Ether() / IP(src=C, dst=S) / UDP() / b"abc")])
    fl = process_file(f, FlowSettings()).flows
    assert fl["Flow Byts/s"][0] == 0 and fl["Flow Pkts/s"][0] == 0
    assert fl["Down/Up Ratio"][0] == 0
    assert fl["Init Bwd Win Byts"][0] == -1


def test_bulk_is_counted_in_the_direction_that_sent_it(tmp_path: Path) -> None:
    # five forward data packets close together: one forward bulk of 5 packets
    pk = [
        (
            1.0 + 0.01 * k,
            Ether() / IP(src=C, dst=S) / TCP(sport=9, dport=80, flags="PA") / (b"d" * 100),
        )
        for k in range(5)
    ]
    pk.append((1.2, Ether() / IP(src=S, dst=C) / TCP(sport=80, dport=9, flags="A")))
    fl = process_file(_write(tmp_path / "b.pcap", pk), FlowSettings()).flows
    assert (fl["Fwd Byts/b Avg"][0], fl["Fwd Pkts/b Avg"][0]) == (500, 5)
    assert fl["Fwd Blk Rate Avg"][0] == pytest.approx(500 / 0.04)
    assert (fl["Bwd Byts/b Avg"][0], fl["Bwd Pkts/b Avg"][0]) == (0, 0)


def test_out_of_order_timestamps_never_give_negative_times(tmp_path: Path) -> None:
    pk = [
        (t, Ether() / IP(src=C, dst=S) / UDP(sport=1, dport=2) / b"x")
        for t in (10.0, 9.0, 20.0, 8.0, 30.0)
    ]
    fl = process_file(_write(tmp_path / "o.pcap", pk), FlowSettings()).flows
    for name in ("Flow IAT Min", "Fwd IAT Min", "Active Min", "Idle Min", "Flow Duration"):
        assert fl[name][0] >= 0, name


def test_dns_features(tmp_path: Path) -> None:
    def q(name: str, t: float) -> tuple[float, object]:
        return t, Ether() / IP(src=C, dst=S) / UDP(sport=5555, dport=53) / DNS(
            rd=1, qd=DNSQR(qname=name)
        )

    r = (
        0.5,
        Ether()
        / IP(src=S, dst=C)
        / UDP(sport=53, dport=5555)
        / DNS(qr=1, rcode=3, qd=DNSQR(qname="Xq7.Tunnel.example")),
    )
    pk = [q("Xq7.Tunnel.example", 0.1), r, q("other.example", 0.9)]
    fl = process_file(_write(tmp_path / "d.pcap", pk), FlowSettings()).flows
    assert len(fl) == 1
    name = "xq7.tunnel.example"
    assert fl["dns_qname"][0] == name
    assert (fl["dns_queries"][0], fl["dns_nxdomain"][0]) == (2, 1)
    assert (fl["dns_qname_len"][0], fl["dns_qname_labels"][0]) == (len(name), 3)
    p = [name.count(c) / len(name) for c in set(name)]
    assert fl["dns_qname_entropy"][0] == pytest.approx(-sum(x * math.log2(x) for x in p))
    # a non-DNS flow has the DNS columns missing, not zero
    other = _write(tmp_path / "u.pcap", [(1.0, Ether() / IP(src=C, dst=S) / UDP(dport=9))])
    fu = process_file(other, FlowSettings()).flows
    assert np.isnan(fu["dns_queries"][0]) and fu["dns_qname"][0] == ""


def test_flow_batch_has_every_schema_column_with_its_dtype() -> None:
    from netmon_exporter.flow_schema import FEATURE_COLUMNS, KEY_COLUMNS, STRING_COLUMNS

    fl = process_file(DATA / "dns-edns-ecs.pcap", FlowSettings()).flows
    assert set(fl.columns) == set(KEY_COLUMNS) | set(FEATURE_COLUMNS) | set(STRING_COLUMNS)
    for name, dtype in KEY_COLUMNS.items():
        assert fl[name].dtype == dtype, name
    for name in FEATURE_COLUMNS:
        assert fl[name].dtype == np.float64, name
    for name in STRING_COLUMNS:
        assert fl[name].dtype == object, name
    assert all(len(v) == len(fl) for v in fl.columns.values())


def test_query_names_are_read_from_the_pool_as_bytes_decode_to_text() -> None:
    """Names in bulk (ASCII) and one by one (other bytes, NUL, offsets off the pool) give
    what decoding each name's bytes gives."""
    from netmon_exporter.flows import flow_table as T
    from netmon_exporter.flows.features import _query_names

    names = [b"www.example.org", b"caf\xc3\xa9.example", b"nul\x00in.example", b"x" * 255,
             b"a", b"tab\tin", b"\xff\xfe", b"last.example"]  # fmt: skip
    pool = np.frombuffer(b"".join(names), dtype=np.uint8)
    n = len(names) + 3
    S = np.zeros((n, T.NS))
    at = 0
    for i, name in enumerate(names):
        S[i, T.S_QPOOL_OFF], S[i, T.S_QPOOL_LEN] = at, len(name)
        at += len(name)
    S[len(names), T.S_QPOOL_LEN] = -1  # no name
    S[len(names) + 1, [T.S_QPOOL_OFF, T.S_QPOOL_LEN]] = len(pool) - 3, 10  # runs off the end
    S[len(names) + 2, [T.S_QPOOL_OFF, T.S_QPOOL_LEN]] = 4, 0  # no room was left
    done = T.FinishedFlows(np.zeros((n, T.NK), dtype=np.int64), S, pool)
    want = [name.decode("ascii", "backslashreplace") for name in names]
    want += ["", pool[len(pool) - 3 :].tobytes().decode("ascii", "backslashreplace"), ""]
    assert list(_query_names(done)) == want


@pytest.mark.parametrize("m", [16, 64])
def test_sketch_estimates_are_the_textbook_hyperloglog(m: int) -> None:
    """The table-driven estimate equals HyperLogLog's formula (Flajolet et al., 2007,
    with linear counting for small counts) register by register, whatever the columns'
    unused slots hold, on sketches from empty to saturated."""
    from netmon_exporter.flows import features as F
    from netmon_exporter.flows import flow_table as T

    rng = np.random.default_rng(m)
    n, per, bits = 3000, T.HLL_PER_COL, T.HLL_BITS
    cols = -(-m // per)
    fill = rng.random((n, 1)) ** 3  # most sketches sparse, some full
    regs = rng.integers(1, 1 << bits, (n, cols * per)) * (rng.random((n, cols * per)) < fill)
    regs[:, m:] = rng.integers(0, 1 << bits, (n, cols * per - m))  # not the sketch's
    words = (regs.reshape(n, cols, per) << (bits * np.arange(per))).sum(axis=2)
    DN = np.zeros((n, cols + 5))
    DN[:, 2 : 2 + cols] = words
    rows = rng.random(n) < 0.8
    got = F._hll_estimate(DN, 2, m, rows)
    want = np.zeros(n)
    alpha = {16: 0.673, 64: 0.709}[m]
    for i in np.flatnonzero(rows):
        r = regs[i, :m]
        est = alpha * m * m / sum(2.0 ** -int(x) for x in r)
        zeros = int((r == 0).sum())
        if est <= 2.5 * m and zeros:
            est = m * math.log(m / zeros)
        want[i] = round(est)
    assert np.array_equal(got, want)
    assert (got[~rows] == 0).all() and got[rows].max() > 4 * m  # full sketches were made
