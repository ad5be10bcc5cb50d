"""Capture reader: every packet of real captures decoded as scapy decodes it; formats."""

from __future__ import annotations

import gzip
import ipaddress
import struct
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from scapy.layers.inet import IP, TCP, UDP, Ether
from scapy.layers.inet6 import (
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
)
from scapy.layers.ppp import PPP
from scapy.packet import Raw
from scapy.utils import PcapReader, wrpcap

from netmon_exporter.capture import decode as D
from netmon_exporter.capture.pcap_reader import CaptureError, CaptureReader, read_all

DATA = Path(__file__).parent / "data" / "pcaps"
SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "pcaps"
SCAPY_MAX_PACKETS = 5000  # scapy decodes ~5k packets/s: keep the suite fast

_EXT = (IPv6ExtHdrHopByHop, IPv6ExtHdrRouting, IPv6ExtHdrDestOpt, IPv6ExtHdrFragment)


def all_captures() -> list[Path]:
    files = {p.name: p for p in DATA.glob("*.pcap*")}
    if SHARED.is_dir():
        files.update({p.name: p for p in SHARED.glob("*.pcap*")})
    return sorted(files.values())


def scapy_key(pkt) -> tuple | None:  # noqa: ANN001
    """Return (src, dst, sport, dport, proto) of the outermost IP's TCP/UDP, else None.

    Later fragments return None (no transport header); scapy is the reference.
    """
    ip = None
    for layer in pkt.iterpayloads():
        if isinstance(layer, (IP, IPv6)):
            ip = layer
            break
        if isinstance(layer, PPP) and layer.proto == 0x57 and isinstance(layer.payload, Raw):
            ip = IPv6(bytes(layer.payload))  # scapy leaves IPv6 over PPP undecoded
            break
    if ip is None:
        return None
    if isinstance(ip, IP):
        if ip.frag != 0:
            return None
        l4 = ip.payload
    else:
        l4 = ip.payload
        while isinstance(l4, _EXT):
            if isinstance(l4, IPv6ExtHdrFragment) and l4.offset != 0:
                return None
            l4 = l4.payload
    if not isinstance(l4, (TCP, UDP)) or len(bytes(l4)) < 4:
        return None
    proto = 6 if isinstance(l4, TCP) else 17
    return (
        str(ipaddress.ip_address(ip.src)),
        str(ipaddress.ip_address(ip.dst)),
        int(l4.sport),
        int(l4.dport),
        proto,
    )


def _addr(hi: int, lo: int) -> str:
    v = ((int(hi) & (2**64 - 1)) << 64) | (int(lo) & (2**64 - 1))
    a = ipaddress.IPv6Address(v)
    return str(a.ipv4_mapped) if a.ipv4_mapped else str(a)


def our_key(row: np.ndarray) -> tuple | None:
    if row[D.F_STATUS] != D.ST_OK or row[D.F_PROTO] not in (6, 17) or row[D.F_FRAG] == 2:
        return None
    return (
        _addr(row[D.F_SHI], row[D.F_SLO]),
        _addr(row[D.F_DHI], row[D.F_DLO]),
        int(row[D.F_SPORT]),
        int(row[D.F_DPORT]),
        int(row[D.F_PROTO]),
    )


def _small(paths: list[Path]) -> list[Path]:
    out = []
    for p in paths:
        P, _, _ = read_all(p)
        if len(P) <= SCAPY_MAX_PACKETS:
            out.append(p)
    return out


@pytest.mark.parametrize("path", _small(all_captures()), ids=lambda p: p.name)
def test_every_packet_matches_scapy(path: Path) -> None:
    P, _, reader = read_all(path)
    ref = []
    with PcapReader(str(path)) as pr:
        for pkt in pr:
            ref.append((scapy_key(pkt), int(pkt.time * 1_000_000), int(pkt.wirelen or len(pkt))))
    assert len(P) == len(ref)
    ours = [(our_key(P[i]), int(P[i, D.F_TS]), int(P[i, D.F_WIRELEN])) for i in range(len(P))]
    mismatches = [(i, o, r) for i, (o, r) in enumerate(zip(ours, ref, strict=True)) if o != r]
    assert not mismatches, mismatches[:5]


def _write_pcap(
    path: Path,
    frames: list[tuple[float, bytes]],
    *,
    little: bool = True,
    nanosec: bool = False,
    linktype: int = 1,
    snaplen: int = 65535,
) -> None:
    e = "<" if little else ">"
    magic = 0xA1B23C4D if nanosec else 0xA1B2C3D4
    out = [struct.pack(e + "IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype)]
    for ts, data in frames:
        sec = int(ts)
        frac = round((ts - sec) * (1e9 if nanosec else 1e6))
        cap = data[:snaplen]
        out.append(struct.pack(e + "IIII", sec, frac, len(cap), len(data)) + cap)
    path.write_bytes(b"".join(out))


def _tcp(sport: int = 1234, dport: int = 80, flags: str = "S", payload: bytes = b"") -> bytes:
    return bytes(
        Ether()
        / IP(src="10.0.0.1", dst="10.0.0.2")
        / TCP(sport=sport, dport=dport, flags=flags, window=1000)
        / payload
    )


@pytest.mark.parametrize("little", [True, False])
@pytest.mark.parametrize("nanosec", [True, False])
def test_pcap_byte_orders_and_resolutions(tmp_path: Path, little: bool, nanosec: bool) -> None:
    f = tmp_path / "x.pcap"
    _write_pcap(
        f,
        [(1700000000.123456, _tcp()), (1700000001.5, _tcp(payload=b"abc"))],
        little=little,
        nanosec=nanosec,
    )
    P, _, reader = read_all(f)
    assert reader.kind == "pcap"
    assert P[:, D.F_TS].tolist() == [1700000000123456, 1700000001500000]
    assert P[:, D.F_PAY].tolist() == [0, 3]
    assert P[:, D.F_WIN].tolist() == [1000, 1000]
    assert P[:, D.F_FLAGS].tolist() == [2, 2]


def _block(btype: int, body: bytes) -> bytes:
    body += b"\0" * (-len(body) % 4)
    n = 12 + len(body)
    return struct.pack("<II", btype, n) + body + struct.pack("<I", n)


def _opt(code: int, value: bytes) -> bytes:
    return struct.pack("<HH", code, len(value)) + value + b"\0" * (-len(value) % 4)


def test_pcapng_interfaces_with_own_link_types_and_resolutions(tmp_path: Path) -> None:
    shb = _block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
    idb0 = _block(1, struct.pack("<HHI", 1, 0, 65535))  # Ethernet, µs
    idb1 = _block(1, struct.pack("<HHI", 101, 0, 65535) + _opt(9, b"\x09") + _opt(0, b""))
    raw_ip = bytes(IP(src="192.0.2.1", dst="192.0.2.2") / UDP(sport=5, dport=6) / b"hello")
    eth = _tcp()

    def epb(ifid: int, ts: int, data: bytes) -> bytes:
        return _block(
            6, struct.pack("<IIIII", ifid, ts >> 32, ts & 0xFFFFFFFF, len(data), len(data)) + data
        )

    spb = _block(3, struct.pack("<I", len(eth)) + eth)
    nrb = _block(4, b"\0\0\0\0")  # name resolution block: skipped
    f = tmp_path / "x.pcapng"
    f.write_bytes(
        shb
        + idb0
        + idb1
        + epb(0, 1_700_000_000_000_001, eth)
        + nrb
        + epb(1, 1_700_000_000_000_000_002, raw_ip)
        + spb
        + epb(7, 5, eth)
    )
    P, _, reader = read_all(f)
    assert reader.kind == "pcapng"
    assert len(P) == 4
    assert P[0, D.F_TS] == 1_700_000_000_000_001
    assert P[1, D.F_TS] == 1_700_000_000_000_000  # nanoseconds truncated to µs
    assert (P[1, D.F_PROTO], P[1, D.F_SPORT], P[1, D.F_DPORT], P[1, D.F_PAY]) == (17, 5, 6, 5)
    assert P[2, D.F_STATUS] == D.ST_OK and P[2, D.F_TS] == P[1, D.F_TS]  # SPB: no timestamp
    assert P[3, D.F_STATUS] == D.ST_MALFORMED  # unknown interface id


def test_pcapng_big_endian_section(tmp_path: Path) -> None:
    def blk(btype: int, body: bytes) -> bytes:
        body += b"\0" * (-len(body) % 4)
        n = 12 + len(body)
        return struct.pack(">II", btype, n) + body + struct.pack(">I", n)

    eth = _tcp(flags="SA")
    data = (
        blk(0x0A0D0D0A, struct.pack(">IHHq", 0x1A2B3C4D, 1, 0, -1))
        + blk(1, struct.pack(">HHI", 1, 0, 65535))
        + blk(6, struct.pack(">IIIII", 0, 0, 42, len(eth), len(eth)) + eth)
    )
    f = tmp_path / "be.pcapng"
    f.write_bytes(data)
    P, _, _ = read_all(f)
    assert P[:, D.F_TS].tolist() == [42]
    assert P[0, D.F_FLAGS] == 0x12


def test_gzip_capture_and_small_read_size(tmp_path: Path) -> None:
    frames = [(1.0 + i, _tcp(sport=1000 + i, payload=b"x" * i)) for i in range(50)]
    f = tmp_path / "x.pcap"
    _write_pcap(f, frames)
    g = tmp_path / "x.pcap.gz"
    g.write_bytes(gzip.compress(f.read_bytes()))
    a, _, _ = read_all(f)
    b, _, rb = read_all(g, read_size=97, max_packets=7)  # records straddle every read
    assert rb.kind == "pcap"
    assert np.array_equal(a, b)


def test_truncated_last_record_is_counted_not_fatal(tmp_path: Path) -> None:
    f = tmp_path / "x.pcap"
    _write_pcap(f, [(1.0, _tcp()), (2.0, _tcp(payload=b"y" * 100))])
    f.write_bytes(f.read_bytes()[:-30])
    P, _, reader = read_all(f)
    assert len(P) == 1 and reader.truncated_tail == 1


def test_snaplen_truncated_frames_keep_ports(tmp_path: Path) -> None:
    f = tmp_path / "x.pcap"
    _write_pcap(f, [(1.0, _tcp(payload=b"z" * 500)), (2.0, _tcp())], snaplen=38)
    P, _, _ = read_all(f)
    # 14 Ethernet + 20 IP + 4 bytes of TCP: ports yes, flags unknown; payload from IP length
    assert P[:, D.F_STATUS].tolist() == [D.ST_OK, D.ST_OK]
    assert P[:, D.F_SPORT].tolist() == [1234, 1234]
    assert P[:, D.F_PAY].tolist() == [500, 0]
    assert P[:, D.F_WIRELEN].tolist() == [len(_tcp(payload=b"z" * 500)), len(_tcp())]


@pytest.mark.parametrize(
    "data,reason",
    [
        (b"", "format"),
        (b"GET / HTTP/1.1\r\n", "format"),
        (
            struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
            + struct.pack("<IIII", 1, 0, 0x7FFFFFFF, 60),
            "format",
        ),
        (b"\xd4\xc3\xb2\xa1\x02\x00", "truncated"),
    ],
)
def test_unreadable_files_raise(tmp_path: Path, data: bytes, reason: str) -> None:
    f = tmp_path / "bad.pcap"
    f.write_bytes(data)
    with pytest.raises(CaptureError) as exc:
        list(CaptureReader(f))
    assert exc.value.reason == reason


def test_link_types_and_encapsulations() -> None:
    expect = {  # file: (packets decoded into flows, non-IP packets)
        "linux-sll2.pcap": (4, 2),
        "pppoe.pcap": (25, 40),
        "q-in-q.pcap": (4, 1),
        "vlan-collisions.pcap": (42, 0),
        "ipv6-hbh-routing0.pcap": (1, 0),
    }
    for name, (ok, non_ip) in expect.items():
        P, _, _ = read_all(DATA / name)
        st = P[:, D.F_STATUS]
        assert (int((st == D.ST_OK).sum()), int((st == D.ST_NON_IP).sum())) == (ok, non_ip), name


def test_truncated_headers_are_skipped_as_truncated() -> None:
    for name in ("trunc-ip4.pcap", "trunc-ip6-ext.pcap"):
        P, _, _ = read_all(DATA / name)
        assert P[:, D.F_STATUS].tolist() == [D.ST_TRUNCATED], name


def test_ipv6_later_fragment_borrows_first_fragment_ports() -> None:
    P, _, _ = read_all(DATA / "ipv6-fragmented-dns.pcap")
    frag = P[:, D.F_FRAG]
    assert (frag == 1).sum() >= 1 and (frag == 2).sum() >= 1
    first = P[frag == 1]
    later = P[frag == 2]
    # id 1: first fragment not captured (ports unknown); id 2: borrowed from its first one
    assert [(int(r[D.F_SPORT]), int(r[D.F_DPORT])) for r in first] == [(53, 51851)]
    assert [(int(r[D.F_SPORT]), int(r[D.F_DPORT])) for r in later] == [
        (0, 0),
        (53, 51851),
        (53, 51851),
    ]


def test_dns_query_name_features(tmp_path: Path) -> None:
    from scapy.layers.dns import DNS, DNSQR

    q = bytes(
        Ether()
        / IP(src="10.0.0.1", dst="10.0.0.53")
        / UDP(sport=3333, dport=53)
        / DNS(rd=1, qd=DNSQR(qname="AbC.example.com"))
    )
    r = bytes(
        Ether()
        / IP(src="10.0.0.53", dst="10.0.0.1")
        / UDP(sport=53, dport=3333)
        / DNS(qr=1, rcode=3, qd=DNSQR(qname="abc.example.com"))
    )
    f = tmp_path / "dns.pcap"
    wrpcap(str(f), [Ether(q), Ether(r)])
    P, PE, _ = read_all(f)
    assert P[:, D.F_DNS].tolist() == [0, 1]
    assert P[:, D.F_RCODE].tolist() == [0, 3]
    assert P[:, D.F_QLEN].tolist() == [15, 15]
    assert P[:, D.F_QLABELS].tolist() == [3, 3]
    name = "abc.example.com"
    counts = np.array([name.count(c) for c in set(name)]) / len(name)
    assert PE[0] == pytest.approx(-(counts * np.log2(counts)).sum())


@pytest.mark.parametrize(
    "linktype,prefix",
    [
        (0, struct.pack("<I", 2)),  # BSD null, host byte order
        (108, struct.pack(">I", 2)),  # OpenBSD loopback, network byte order
        (228, b""),  # raw IPv4
        (101, b""),  # raw IP
        (113, b"\x00\x00\x00\x01\x00\x06" + bytes(8) + b"\x08\x00"),  # Linux cooked v1
    ],
)
def test_other_link_types(tmp_path: Path, linktype: int, prefix: bytes) -> None:
    ip = bytes(
        IP(src="192.0.2.7", dst="192.0.2.8", options=[]) / TCP(sport=7, dport=8, flags="PA") / b"hi"
    )
    f = tmp_path / "l.pcap"
    _write_pcap(f, [(1.0, prefix + ip)], linktype=linktype)
    P, _, _ = read_all(f)
    assert our_key(P[0]) == ("192.0.2.7", "192.0.2.8", 7, 8, 6)
    assert P[0, D.F_PAY] == 2


def test_ipv4_options_and_unsupported_link(tmp_path: Path) -> None:
    from scapy.layers.inet import IPOption_Router_Alert

    ip = bytes(
        IP(src="192.0.2.7", dst="192.0.2.8", options=[IPOption_Router_Alert()])
        / UDP(sport=1, dport=2)
        / b"abcd"
    )
    f = tmp_path / "o.pcap"
    _write_pcap(f, [(1.0, bytes(Ether(type=0x0800)) + ip)])
    P, _, _ = read_all(f)
    assert (P[0, D.F_SPORT], P[0, D.F_DPORT], P[0, D.F_PAY]) == (1, 2, 4)
    _write_pcap(f, [(1.0, ip)], linktype=147)  # a user DLT: not decoded, counted
    P, _, _ = read_all(f)
    assert P[0, D.F_STATUS] == D.ST_UNSUPPORTED_LINK


def _chunks_held(reader: CaptureReader, hold: float = 0.0) -> list[tuple[np.ndarray, ...]]:
    """Every chunk's packets, query-name bytes, and whether it stayed the same while it was
    held (``hold`` seconds: the read-ahead thread fills the other turn meanwhile)."""
    out = []
    for chunk in reader:
        P, PE = chunk.P.copy(), chunk.PE.copy()
        names = [bytes(chunk.buf[q : q + n + 2]) for q, n in P[:, [D.F_QOFF, D.F_QLEN]] if q >= 0]
        if hold:
            time.sleep(hold)
        same = np.array_equal(P, chunk.P) and np.array_equal(PE, chunk.PE, equal_nan=True)
        later = [bytes(chunk.buf[q : q + n + 2]) for q, n in P[:, [D.F_QOFF, D.F_QLEN]] if q >= 0]
        out.append((P, PE, np.array(names, dtype=object), np.array([same and later == names])))
    return out


@pytest.mark.parametrize("sizes", [{}, {"read_size": 97, "max_packets": 7}])
def test_reading_ahead_gives_the_same_chunks(tmp_path: Path, sizes: dict[str, int]) -> None:
    """A second thread reading and decoding the next chunk (the flows command) hands out
    the very packets, query names and end states of the plain reader, for every test
    capture, gzip and pcapng, truncated and corrupt ones, in large and tiny blocks; a
    chunk held by the consumer is never overwritten by the read-ahead."""
    frames = [(1.0 + i, _tcp(sport=1000 + i, payload=b"x" * i)) for i in range(60)]
    plain = tmp_path / "x.pcap"
    _write_pcap(plain, frames)
    gz = tmp_path / "x.pcap.gz"
    gz.write_bytes(gzip.compress(plain.read_bytes()))
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(plain.read_bytes()[:-30])
    corrupt = tmp_path / "corrupt.pcap"
    raw = bytearray(plain.read_bytes())
    at = 24 + 16 * 30 + sum(len(f) for _, f in frames[:30]) + 8  # record 30's caplen
    raw[at : at + 4] = struct.pack("<I", 0x7FFFFFFF)
    corrupt.write_bytes(bytes(raw))
    files = [*sorted(DATA.glob("*.pcap*")), plain, gz, cut, corrupt]
    for path in files:
        runs = []
        for ahead in (False, True):
            reader = CaptureReader(path, read_ahead=ahead, **sizes)
            try:
                chunks, error = _chunks_held(reader, hold=0.002 if ahead else 0.0), None
            except CaptureError as exc:
                chunks, error = [], (exc.reason, str(exc))
            ends = (reader.kind, reader.truncated_tail, reader.packets, reader.bytes_read)
            runs.append((chunks, error, ends))
        (a, err_a, ends_a), (b, err_b, ends_b) = runs
        assert err_a == err_b and ends_a == ends_b, path.name
        assert (err_a is not None) == (path == corrupt), (path.name, err_a)
        assert ends_a[1] == (path == cut), path.name
        assert len(a) == len(b), path.name
        for x, y in zip(a, b, strict=True):
            assert np.array_equal(x[0], y[0]) and np.array_equal(x[1], y[1], equal_nan=True)
            assert x[2].tolist() == y[2].tolist() and y[3].all(), path.name
    assert sum(len(c) for c in _chunks_held(CaptureReader(plain, read_ahead=True, **sizes))) > 0


def test_a_consumer_that_stops_early_stops_the_reading_thread(tmp_path: Path) -> None:
    frames = [(1.0 + i, _tcp(sport=1000 + i, payload=b"x" * 40)) for i in range(400)]
    f = tmp_path / "x.pcap"
    _write_pcap(f, frames)
    before = {t.name for t in threading.enumerate()}
    reader = CaptureReader(f, read_ahead=True, read_size=256, max_packets=3)
    it = iter(reader)
    next(it)
    assert "capture-reader" in {t.name for t in threading.enumerate()}
    it.close()  # the consumer stops (an error, Ctrl-C)
    assert {t.name for t in threading.enumerate()} <= before
    # and one whose processing raises
    with pytest.raises(RuntimeError):
        for _ in CaptureReader(f, read_ahead=True, read_size=256, max_packets=3):
            raise RuntimeError("the flow table failed")
    assert {t.name for t in threading.enumerate()} <= before


def test_buffers_serve_the_next_reader_never_two_at_once(tmp_path: Path) -> None:
    """A reader that is done hands its buffers to the next one (no fresh 15 MB per file),
    and readers iterated side by side never share them: each gives what it gives alone,
    whatever file the buffers held before (a longer one, a gzip one, one cut short)."""
    files = []
    for i, n in enumerate((300, 40, 120)):
        f = tmp_path / f"f{i}.pcap"
        _write_pcap(
            f, [(1.0 + k, _tcp(sport=2000 + 7 * i + k, payload=b"y" * (k % 90))) for k in range(n)]
        )
        files.append(f)
    gz = tmp_path / "g.pcap.gz"
    gz.write_bytes(gzip.compress(files[0].read_bytes()))
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(files[0].read_bytes()[:-25])
    files += [gz, cut, *sorted(DATA.glob("*.pcap*"))[:3]]
    alone = [_chunks_held(CaptureReader(f, read_size=512, max_packets=11)) for f in files]

    def same(a: list, b: list) -> bool:
        return len(a) == len(b) and all(
            np.array_equal(x[0], y[0]) and x[2].tolist() == y[2].tolist()
            for x, y in zip(a, b, strict=True)
        )

    first = CaptureReader(files[0], read_size=512, max_packets=11)
    bufs = {id(c.buf) for c in first}
    second = CaptureReader(files[1], read_size=512, max_packets=11)
    assert {id(c.buf) for c in second} == bufs  # reused, not made anew
    for ahead in (False, True):
        readers = [CaptureReader(f, read_size=512, max_packets=11, read_ahead=ahead) for f in files]
        its = [iter(r) for r in readers]
        got: list[list] = [[] for _ in files]
        live = set(range(len(files)))
        while live:  # one chunk of each reader in turn, all of them open together
            held = {}
            for i in sorted(live):
                chunk = next(its[i], None)
                if chunk is None:
                    live.discard(i)
                    continue
                held[i] = chunk
            for i, chunk in held.items():
                P = chunk.P.copy()
                names = [
                    bytes(chunk.buf[q : q + n + 2]) for q, n in P[:, [D.F_QOFF, D.F_QLEN]] if q >= 0
                ]
                got[i].append((P, None, np.array(names, dtype=object)))
            assert len({id(c.buf) for c in held.values()}) == len(held)  # never shared
        for f, a, b in zip(files, alone, got, strict=True):
            assert same(a, b), (f.name, ahead)
