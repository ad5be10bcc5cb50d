"""Seeds: flows of up to three packets kept without a row of accumulators give the very
same records.

A flow's 1 kB row of accumulators is made at its fourth packet (or at a third that
closes it or carries DNS); until then its packets are kept in three words each and the
row rebuilt from them when needed. These tests run
the same traffic with and without seeds and compare every record bit for bit: a
realistic mix where most flows have one or two packets (an unanswered SYN scan, a
spoofed SYN flood, UDP and ICMP probes and answers, backscatter), seeds that cross
window boundaries, get more packets after a cut, close with FINs or a RST, time out, are
evicted by the cap, are carried to the next file, and packets whose fields do not fit a
seed; DNS exchanges (a seed keeps what their DNS adds beside it); random traffic; every
test capture through the whole pipeline; then what an open flow costs, and carry state
an attacker forged.
"""

from __future__ import annotations

import socket
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.dns import DNS, DNSQR, DNSRR

from netmon_exporter.capture.pcap_reader import CaptureReader
from netmon_exporter.flows import flow_table as T
from netmon_exporter.flows.flow_table import FinishedFlows, FlowTable
from netmon_exporter.ingest import carry_store
from netmon_exporter.pipeline import FlowSettings, process_file
from tests import dns_capture
from tests.flood_capture import handshake_records, syn_flood_records

DATA = Path(__file__).parent / "data" / "pcaps"
T0 = 1_700_000_030.0  # 10 s before a minute boundary: windows are cut within the capture

# idle, active, activity, grace; then cap and slice length per case
_TIMES = (20.0, 90.0, 5.0, 2.0)


_ETH4 = bytes.fromhex("0200000000aa0200000000bb0800")
_ETH6 = bytes.fromhex("0200000000aa0200000000bb86dd")
S_, SA, R_, RA, A_, PA, FA = 0x02, 0x12, 0x04, 0x14, 0x10, 0x18, 0x11


def _ip(src: str, dst: str, proto: int, l4: bytes) -> bytes:
    if ":" in src:
        a, b = socket.inet_pton(socket.AF_INET6, src), socket.inet_pton(socket.AF_INET6, dst)
        return _ETH6 + struct.pack("!IHBB16s16s", 0x60000000, len(l4), proto, 64, a, b) + l4
    a, b = socket.inet_aton(src), socket.inet_aton(dst)
    head = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 0, 0, 64, proto, 0, a, b)
    return _ETH4 + head + l4


def _tcp(
    src: str, dst: str, sp: int, dp: int, flags: int, pay: bytes = b"", win: int = 1024
) -> bytes:
    return _ip(src, dst, 6, struct.pack("!HHIIBBHHH", sp, dp, 1, 0, 0x50, flags, win, 0, 0) + pay)


def _udp(src: str, dst: str, sp: int, dp: int, pay: bytes = b"") -> bytes:
    return _ip(src, dst, 17, struct.pack("!HHHH", sp, dp, 8 + len(pay), 0) + pay)


def _icmp(src: str, dst: str, kind: int, code: int, ident: int, pay: bytes = b"") -> bytes:
    return _ip(src, dst, 1, struct.pack("!BBHHH", kind, code, 0, ident, 1) + pay)


def _pcap(path: Path, pkts: list[tuple[float, bytes]]) -> Path:
    recs = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]
    for t, frame in sorted(pkts, key=lambda p: p[0]):
        us = round(t * 1e6)
        recs.append(struct.pack("<IIII", us // 1_000_000, us % 1_000_000, len(frame), len(frame)))
        recs.append(frame)
    path.write_bytes(b"".join(recs))
    return path


def _mix(path: Path) -> Path:
    """About 3,000 packets over ~150 s: mostly one-packet flows, at rates seen in the field."""
    rng = np.random.default_rng(11)
    pkts: list[tuple[float, bytes]] = []
    att, srv, cli, dns = "198.51.100.7", "10.0.0.2", "10.0.0.9", "10.0.0.53"
    # an unanswered SYN scan at 25 probes/s (1,000 ports); a few ports answer
    for k, port in enumerate(int(p) for p in rng.permutation(np.arange(1, 1001))):
        t = T0 + 0.5 + k * 0.04
        pkts.append((t, _tcp(att, srv, 40000, port, S_)))
        if port % 97 == 0:  # open: SYN-ACK, then the scanner's RST
            pkts.append((t + 0.001, _tcp(srv, att, port, 40000, SA)))
            pkts.append((t + 0.002, _tcp(att, srv, 40000, port, R_)))
        elif port % 89 == 0:  # closed, and says so
            pkts.append((t + 0.001, _tcp(srv, att, port, 40000, RA)))
    # a spoofed SYN flood: 600 sources, one packet each, over 12 s
    for k in range(600):
        src = f"203.0.{k // 250}.{k % 250 + 1}"
        pkts.append((T0 + 40 + k * 0.02, _tcp(src, srv, 1024 + k, 443, S_, win=29200)))
    # backscatter: lone SYN-ACKs (the receiver is then the client) and RSTs; some repeat
    # within the close grace (the same flow), some after it (a new flow)
    for k in range(150):
        t = T0 + 55 + k * 0.3
        peer = f"192.0.2.{k % 200 + 1}"
        flags = SA if k % 2 else R_
        pkts.append((t, _tcp(peer, srv, 80, 30000 + k, flags)))
        if k % 5 == 0:
            pkts.append((t + (1.0 if k % 10 == 0 else 3.5), _tcp(peer, srv, 80, 30000 + k, flags)))
    # UDP and ICMP probes over the minute boundary at T0 + 70; some answered, some only
    # after the boundary (a seed cut, then given its row)
    for k in range(300):
        t = T0 + 50 + k * 0.1
        dst = f"10.0.1.{k % 250 + 1}"
        if k % 3 == 0:
            pkts.append((t, _udp(att, dst, 50000 + k, 161, b"\x30\x26")))
            if k % 12 == 0:
                pkts.append((t + 15, _udp(dst, att, 161, 50000 + k, b"\x30" * 40)))
        elif k % 3 == 1:
            pkts.append((t, _icmp(att, dst, 8, 0, k)))
            if k % 7 == 1:
                pkts.append((t + 0.002, _icmp(dst, att, 0, 0, k)))
        else:
            pkts.append((t, _icmp(dst, att, 3, 3, 0, bytes(28))))
    for k in range(40):  # IPv6 singles
        pkts.append(
            (
                T0 + 70 + k * 0.5,
                _udp("2001:db8::7", f"2001:db8::{k + 100:x}", 5353, 9000 + k, b"x" * k),
            )
        )
    # DNS: seeds too, their DNS kept beside them; half the queries answered
    for k in range(30):
        t = T0 + 10 + k * 4.0
        name = f"h{k}.example.org"
        pkts.append(
            (t, _udp(cli, dns, 20000 + k, 53, bytes(DNS(id=k, rd=1, qd=DNSQR(qname=name)))))
        )
        if k % 2:
            answer = DNS(id=k, qr=1, qd=DNSQR(qname=name), an=DNSRR(rrname=name, rdata="10.9.9.9"))
            pkts.append((t + 0.01, _udp(dns, cli, 53, 20000 + k, bytes(answer))))
    # three-packet flows (seeds still, unless the third packet closes the flow or comes
    # after it closed): handshakes then idle across the boundary at T0 + 70, some that
    # send again after it (a cut seed of three, then a row), a client that closes at once
    # (a FIN or a RST third), a SYN retried after the server's RST, a UDP request asked
    # again and a third echo
    for k in range(240):
        t = T0 + 20 + k * 0.35
        cp = 43000 + k
        up = [(0.0, True, S_, b""), (0.004, False, SA, b""), (0.008, True, A_, b"")]
        v = k % 8
        if v == 4:  # sends again after the boundary: its fourth packet, a row
            up.append((35.0, True, PA, b"ping"))
        elif v == 5:  # the client closes at once: FINs both ways, the last ACK
            up[2] = (0.008, True, FA, b"")
            up += [(0.012, False, FA, b""), (0.016, True, A_, b"")]
        elif v == 6:
            up[2] = (0.008, True, R_, b"")
        elif v == 7:  # refused, then the SYN again within the close grace
            up = [(0.0, True, S_, b""), (0.004, False, RA, b""), (1.0, True, S_, b"")]
        for dt, out, flags, pay in up:
            frame = (
                _tcp(cli, srv, cp, 443, flags, pay) if out else _tcp(srv, cli, 443, cp, flags, pay)
            )
            pkts.append((t + dt, frame))
    # a DNS exchange, then a third packet on its port that is not DNS (too short to
    # parse): the seed keeps it, its DNS from the first two
    for k in range(20):
        t = T0 + 12 + k * 3.0
        name = f"q{k}.example.net"
        sp = 21000 + k
        pkts.append((t, _udp(cli, dns, sp, 53, bytes(DNS(id=k, rd=1, qd=DNSQR(qname=name))))))
        answer = DNS(id=k, qr=1, qd=DNSQR(qname=name), an=DNSRR(rrname=name, rdata="10.9.9.8"))
        pkts.append((t + 0.01, _udp(dns, cli, 53, sp, bytes(answer))))
        pkts.append((t + 0.5, _udp(cli, dns, sp, 53, b"\x00\x01")))
    for k in range(60):
        t = T0 + 30 + k * 1.1
        dst = f"10.0.2.{k + 1}"
        if k % 2:
            for dt, out in ((0.0, True), (0.01, False), (2.0, True)):
                a, b = (att, dst) if out else (dst, att)
                pkts.append((t + dt, _udp(a, b, 51000 + k, 123, b"n" * 48)))
        else:
            for dt, kind in ((0.0, 8), (0.002, 0), (1.0, 8)):
                a, b = (att, dst) if kind == 8 else (dst, att)
                pkts.append((t + dt, _icmp(a, b, kind, 0, 900 + k)))
    # ordinary sessions: keep-alives every 25 s (cut at each boundary), short exchanges
    for k in range(6):
        t = T0 + 1 + k * 25
        pkts.append((t, _tcp(cli, srv, 41000, 22, PA, b"k" * 48)))
        pkts.append((t + 0.05, _tcp(srv, cli, 22, 41000, A_)))
    for k in range(40):
        t = T0 + 2 + k * 3.3
        sp = 42000 + k
        for dt, up, flags, pay in (
            (0.0, True, S_, b""),
            (0.001, False, SA, b""),
            (0.002, True, A_, b""),
            (0.003, True, PA, b"GET / HTTP/1.1\r\n\r\n"),
            (0.02, False, PA, b"y" * 700),
            (0.03, True, FA, b""),
            (0.031, False, FA, b""),
            (0.032, True, A_, b""),
        ):
            frame = _tcp(cli, srv, sp, 80, flags, pay) if up else _tcp(srv, cli, 80, sp, flags, pay)
            pkts.append((t + dt, frame))
    return _pcap(path, pkts)


@pytest.fixture(scope="module")
def mix(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _mix(tmp_path_factory.mktemp("seeds") / "mix.pcap")


def _run(
    path: Path,
    seeds: bool,
    chunk: int,
    cap: int = 0,
    slice_s: float = 0.0,
    carry_every: int = 0,
    tmp: Path | None = None,
    evicted: list[int] | None = None,
) -> FinishedFlows:
    """Records of ``path`` fed in chunks of ``chunk`` packets, the table saved and restored
    (through a carry file when ``tmp`` is given) after every ``carry_every`` chunks; the
    flows the cap ended early are added to ``evicted[0]``."""
    args = (*_TIMES, cap, slice_s)
    table = FlowTable(*args, seeds=seeds)
    out = []
    evicted = evicted if evicted is not None else [0]
    for k, c in enumerate(CaptureReader(path, max_packets=chunk, read_size=4096)):
        out.append(table.add(c.P, c.PE, c.buf))
        if carry_every and (k + 1) % carry_every == 0:
            arrays = table.state_arrays()
            if tmp is not None:
                ref = carry_store.save_arrays(tmp, k, arrays)
                loaded = carry_store.load(tmp, ref)
                assert isinstance(loaded, dict)
                arrays = loaded
            else:
                arrays = {name: np.array(a) for name, a in arrays.items()}
            evicted[0] += table.evicted
            table = FlowTable.from_arrays(arrays, *args, seeds=seeds)
    out.append(table.finish())
    evicted[0] += table.evicted
    return FinishedFlows.concat(out)


def _names(rec: FinishedFlows) -> list[bytes]:
    out = []
    for off, ln in zip(rec.S[:, T.S_QPOOL_OFF], rec.S[:, T.S_QPOOL_LEN], strict=True):
        out.append(bytes(rec.pool[int(off) : int(off + ln)]) if ln > 0 else b"")
    return out


def _same(a: FinishedFlows, b: FinishedFlows) -> None:
    assert len(a) == len(b)
    assert np.array_equal(a.K, b.K)
    assert np.array_equal(a.kinds(), b.kinds())
    sa, sb = a.S.copy(), b.S.copy()
    sa[:, T.S_QPOOL_OFF] = sb[:, T.S_QPOOL_OFF] = 0  # offsets into each run's own pool
    bad = np.flatnonzero((sa.view(np.uint64) != sb.view(np.uint64)).any(axis=1))
    assert not len(bad), (
        bad[:5],
        np.flatnonzero(sa[bad[0]].view(np.uint64) != sb[bad[0]].view(np.uint64)),
    )
    assert np.array_equal(a.dns().view(np.uint64), b.dns().view(np.uint64))
    assert _names(a) == _names(b)


# (chunk, cap, slice length, carry every): how a capture is fed, both ways
_FEEDS = [
    (32768, 0, 0.0, 0),
    (97, 0, 60.0, 0),  # window cuts: seeds cut, then given rows or ended
    (250, 300, 60.0, 0),  # the cap evicts seeds and rows alike
    (64, 0, 60.0, 3),  # carried between "files" every 3 chunks
]


def _both_ways(path: Path, feed: tuple[int, int, float, int]) -> tuple[FinishedFlows, int]:
    """The records of ``path`` with seeds, checked equal to those without; and how many
    flows the cap evicted."""
    evicted = [0]
    with_seeds = _run(path, True, *feed, evicted=evicted)
    _same(with_seeds, _run(path, False, *feed))
    return with_seeds, evicted[0]


@pytest.mark.parametrize(("chunk", "cap", "slice_s", "carry_every"), [*_FEEDS, (500, 400, 60.0, 2)])
def test_records_are_the_same_with_and_without_seeds(
    mix: Path, chunk: int, cap: int, slice_s: float, carry_every: int
) -> None:
    with_seeds, evicted = _both_ways(mix, (chunk, cap, slice_s, carry_every))
    kinds = with_seeds.kinds()
    if slice_s:
        assert (kinds == T.REC_SLICE).sum() > 50  # the case is what it says: seeds were cut
    pkts = with_seeds.S[:, T.S_PKTS][kinds != T.REC_SLICE]
    assert (pkts == 1).mean() > 0.5  # most flows had one packet
    assert (evicted > 100) == bool(cap)  # the cap ended seeds and rows early


def test_seeds_carried_through_carry_files_come_back_the_same(mix: Path, tmp_path: Path) -> None:
    _same(
        _run(mix, True, 200, 0, 60.0, 1, tmp=tmp_path),
        _run(mix, False, 200, 0, 60.0, 0),
    )


def test_flows_have_no_rows_until_a_fourth_packet(mix: Path) -> None:
    table = FlowTable(*_TIMES, 0, 60.0)
    for c in CaptureReader(mix, max_packets=2000):  # the first 2,000 packets: in the flood
        table.add(c.P, c.PE, c.buf)
        break
    n = table.open_flows
    assert n > 400
    seeds = int((table.srow[:n] < 0).sum())
    rows = int(table.st[T.ST_SROWS])
    assert seeds > 0.5 * n and rows == n - seeds
    # every row in use belongs to the flow that points at it
    assert np.array_equal(table.srow[table.owner[:rows]], np.arange(rows))


def test_a_third_packet_stays_in_the_seed_unless_it_changes_the_flow(mix: Path) -> None:
    table = FlowTable(*_TIMES, 0, 60.0)
    kinds: set[int] = set()
    for c in CaptureReader(mix, max_packets=300):
        table.add(c.P, c.PE, c.buf)
        n = table.open_flows
        kinds.update(int(k) for k in np.unique(table.srow[:n][table.srow[:n] < 0]))
        key = table.K[:n]
        idle = (key[:, T.K_PROTO] == 6) & ((key[:, T.K_APORT] == 443) | (key[:, T.K_BPORT] == 443))
        srow = table.srow[:n][idle & (table.status[:n] != T.FLOW_DONE)]
        # no open connection of the mix to port 443 has a row before its fourth packet
        # unless its third packet closed it, or came after it closed
        if len(srow):
            grown = table.S[srow[srow >= 0], T.S_PKTS]
            assert (grown >= 3).all()
    assert {T.SEED, T.SEED2, T.SEED3, T.SEED3_CUT, T.SEED2_CUT, T.SEED_CUT} <= kinds


def test_a_seed_cut_at_a_boundary_then_answered_is_one_flow_in_two_records(
    tmp_path: Path,
) -> None:
    # an SNMP probe 5 s before the minute boundary, answered 10 s after it: one flow,
    # cut at the boundary (slice: the probe), ended as its last slice and its whole
    b = 1_700_000_040.0  # a minute boundary
    path = _pcap(
        tmp_path / "late.pcap",
        [
            (b - 5, _udp("10.0.0.1", "10.0.0.2", 5000, 161, b"q" * 30)),
            (b + 10, _udp("10.0.0.2", "10.0.0.1", 161, 5000, b"a" * 90)),
        ],
    )
    for seeds in (True, False):
        rec = _run(path, seeds, 1, 0, 60.0, 1)
        assert list(rec.kinds()) == [T.REC_SLICE, T.REC_WHOLE, T.REC_TAIL]
        assert list(rec.S[:, T.S_PKTS]) == [1, 2, 2]
        assert list(rec.S[:, T.S_B_PKTS]) == [0, 1, 1]  # the tail counts from the cut
    _same(_run(path, True, 1, 0, 60.0, 1), _run(path, False, 1, 0, 60.0, 1))


def test_packets_whose_fields_do_not_fit_a_seed_get_a_row_at_once(tmp_path: Path) -> None:
    # pcap records may claim any original length: one beyond what a seed keeps (2**31)
    path = tmp_path / "huge.pcap"
    recs = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]
    for k, orig in enumerate((0x7FFFFFFF, 0x80000000, 0xFFFFFFFF)):
        frame = _udp("10.0.0.1", f"10.0.0.{k + 2}", 1, 2, b"z")  # distinct flows
        recs.append(struct.pack("<IIII", 1_700_000_000 + k, 0, len(frame), orig))
        recs.append(frame)
    path.write_bytes(b"".join(recs))
    table = FlowTable(*_TIMES)
    for c in CaptureReader(path):
        table.add(c.P, c.PE, c.buf)
    assert list(table.srow[: table.open_flows]) == [T.SEED, 0, 1]
    _same(_run(path, True, 1), _run(path, False, 1))
    assert list(_run(path, True, 1).S[:, T.S_BYTES]) == [0x7FFFFFFF, 0x80000000, 0xFFFFFFFF]


def test_every_test_capture_gives_the_same_flows_with_and_without_seeds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    s = FlowSettings(interim_seconds=60.0)
    for path in sorted(DATA.glob("*.pcap*")):
        monkeypatch.setattr(T, "SEEDS", True)
        a = process_file(path, s).flows
        monkeypatch.setattr(T, "SEEDS", False)
        b = process_file(path, s).flows
        assert a is not None and b is not None and len(a) == len(b), path.name
        for name, col in a.columns.items():
            other = b.columns[name]
            if col.dtype.kind in "fiub":
                assert np.array_equal(col.view(np.uint8), other.view(np.uint8)), (path.name, name)
            else:
                assert list(col) == list(other), (path.name, name)


def _flood_table(path: Path, flows: int, seeds: bool) -> FlowTable:
    if not path.exists():
        header = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
        path.write_bytes(header + syn_flood_records(flows, seconds=10.0))
    table = FlowTable(*_TIMES, 0, 60.0, seeds=seeds)
    for c in CaptureReader(path, max_packets=1 << 15):
        table.add(c.P, c.PE, c.buf)
    assert table.open_flows == flows
    return table


def test_an_open_one_packet_flow_costs_under_400_bytes(tmp_path: Path) -> None:
    # a spoofed SYN flood: every flow open (idle timeout not reached), one packet each
    path = tmp_path / "flood.pcap"
    with_seeds = _flood_table(path, 100_000, True)
    per_flow = with_seeds.state_bytes() / with_seeds.open_flows
    assert per_flow <= 400, per_flow
    assert int(with_seeds.st[T.ST_SROWS]) == 0
    without = _flood_table(path, 100_000, False)
    assert without.state_bytes() / without.open_flows > 1000  # what a row costs
    # and they end the same
    _same(with_seeds.finish(), without.finish())


def _open_cost(path: Path, flows: int) -> tuple[FlowTable, FlowTable]:
    """``path`` fed with and without seeds, every one of its ``flows`` still open: with
    seeds an open flow costs at most 400 B, without more than 1 kB (a row), and both end
    with the same records."""

    def table(seeds: bool) -> FlowTable:
        t = FlowTable(*_TIMES, 0, 60.0, seeds=seeds)
        for c in CaptureReader(path, max_packets=1 << 15):
            t.add(c.P, c.PE, c.buf)
        assert t.open_flows == flows
        return t

    with_seeds, without = table(True), table(False)
    per_flow = with_seeds.state_bytes() / with_seeds.open_flows
    assert per_flow <= 400, per_flow
    assert without.state_bytes() / without.open_flows > 1000
    return with_seeds, without


def test_an_open_idle_connection_costs_under_400_bytes(tmp_path: Path) -> None:
    # 30,000 connections that completed their handshake in 10 s and stay idle: all open
    path = tmp_path / "idle.pcap"
    header = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
    path.write_bytes(header + handshake_records(30_000, seconds=10.0))
    with_seeds, without = _open_cost(path, 30_000)
    assert int(with_seeds.st[T.ST_SROWS]) == 0
    assert (with_seeds.srow[:30_000] == T.SEED3).all()
    done = with_seeds.finish()
    _same(done, without.finish())
    assert (done.S[:, T.S_PKTS] == 3).all()


def _saved(mix: Path) -> tuple[dict[str, np.ndarray], tuple]:
    args = (*_TIMES, 0, 60.0)
    table = FlowTable(*args)
    for c in CaptureReader(mix, max_packets=1500):  # in the flood: many seeds open
        table.add(c.P, c.PE, c.buf)
        break
    arrays = {name: np.array(a) for name, a in table.state_arrays().items()}
    assert (arrays["srow"] < 0).sum() > 100 and (arrays["srow"] >= 0).sum() >= 1
    assert len(arrays["dns_seeds"]) >= 3  # open DNS exchanges: seeds
    return arrays, args


def _seed_dns(a: dict[str, np.ndarray]) -> np.ndarray:
    """The flows whose seeds have DNS."""
    return np.flatnonzero((a["srow"] < 0) & (a["seed"][:, T.SD_DNS] >= 0))


def _names_overlap(a: dict[str, np.ndarray]) -> None:
    """Every kept name at offset 0 of a pool as long as the longest: each in range, but
    more name bytes than the pool has, which compaction would copy past the end of the
    next pool."""
    code = a["dns_seeds"][:, T.DS_CODE :: T.NDS_PACKET].astype(np.int64)
    kept = ((code >> T.DC_NAME_SHIFT) & 3) == T.DC_NAME_KEPT
    assert kept.sum() >= 2 and not (a["S"][:, T.S_QPOOL_LEN] > 0).any()
    a["dns_seeds"][:, T.DS_POFF :: T.NDS_PACKET][kept] = 0.0
    longest = int(((code >> T.DC_NAME_LEN) & 511)[kept].max())
    a["pool"] = a["pool"][:longest]
    a["st"][T.ST_POOL] = longest


def _kept_name(a: dict[str, np.ndarray]) -> tuple[int, int]:
    """(row of dns_seeds, column of its offset) of a name kept in the pool."""
    code = a["dns_seeds"][:, T.DS_CODE :: T.NDS_PACKET].astype(np.int64)
    x, p = np.argwhere(((code >> T.DC_NAME_SHIFT) & 3) == T.DC_NAME_KEPT)[0]
    return int(x), int(p * T.NDS_PACKET + T.DS_POFF)


@pytest.mark.parametrize(
    "forge",
    [
        lambda a: a["srow"].__setitem__(np.flatnonzero(a["srow"] >= 0)[0], 10**6),  # no row
        lambda a: a["srow"].__setitem__(np.flatnonzero(a["srow"] < 0)[0], a["srow"].max()),
        lambda a: a["srow"].__setitem__(0, min(T.SEED_KINDS) - 1),  # not a seed mark
        lambda a: a.__setitem__("seed", a["seed"][:-1]),  # seeds missing
        lambda a: a.__setitem__("seed", a["seed"].astype(np.float64)),
        lambda a: a.pop("srow"),  # half of the seeds
        lambda a: a.__setitem__("S", a["S"][:-1]),  # a row missing
        # the seeds' DNS
        lambda a: a.__setitem__("dns_seeds", a["dns_seeds"][:-1]),  # a row missing
        lambda a: a.__setitem__("dns_seeds", a["dns_seeds"].astype(np.float32)),
        lambda a: a["seed"].__setitem__((_seed_dns(a)[:2], T.SD_DNS), 0),  # a shared row
        lambda a: a["seed"].__setitem__((_seed_dns(a)[0], T.SD_DNS), -2),
        lambda a: a["dns_seeds"].__setitem__((0, T.DS_CODE), 0.5),  # not a whole number
        lambda a: a["dns_seeds"].__setitem__((0, T.DS_CODE), -1.0),
        lambda a: a["dns_seeds"].__setitem__((0, T.DS_CODE), 2.0**60),
        lambda a: a["dns_seeds"].__setitem__((0, T.DS_ENT), np.nan),
        lambda a: a["dns_seeds"].__setitem__(_kept_name(a), len(a["pool"]) - 3),  # past the end
        lambda a: a["dns_seeds"].__setitem__(_kept_name(a), -1.0),
        _names_overlap,
    ],
)
def test_forged_seed_state_is_refused(mix: Path, forge) -> None:  # noqa: ANN001
    arrays, args = _saved(mix)
    forge(arrays)
    with pytest.raises(ValueError, match="invalid carry state"):
        FlowTable.from_arrays(arrays, *args)


def test_any_seed_words_give_records_not_a_crash(mix: Path) -> None:
    # the words are the attacker's (a forged carry): every field is masked when read
    arrays, args = _saved(mix)
    rng = np.random.default_rng(5)
    dns = arrays["seed"][:, T.SD_DNS].copy()
    arrays["seed"] = rng.integers(-(2**63), 2**63 - 1, size=arrays["seed"].shape, dtype=np.int64)
    arrays["seed"][:, T.SD_DNS] = dns  # which row of dns_seeds is checked when loaded
    # and the seeds' DNS codes: any whole numbers, names not kept (their offsets are checked)
    code = rng.integers(0, 2**53, size=arrays["dns_seeds"][:, :: T.NDS_PACKET].shape)
    code &= ~np.int64(3 << T.DC_NAME_SHIFT)
    arrays["dns_seeds"][:, T.DS_CODE :: T.NDS_PACKET] = code
    table = FlowTable.from_arrays(arrays, *args)
    rec = table.finish()
    assert len(rec) >= len(arrays["K"]) and np.isfinite(rec.S[:, T.S_PKTS]).all()


_hosts = st.sampled_from(["10.0.0.1", "10.0.0.2", "2001:db8::1"])  # few: flows recur
_pkt = st.tuples(
    st.sampled_from([0.0, 0.001, 0.5, 1.9, 2.1, 4.0, 19.0, 21.0, 31.0]),  # gap: timeouts near
    _hosts,
    _hosts,
    st.sampled_from([1000, 53]),
    st.sampled_from([80, 53]),
    st.sampled_from(["tcp", "udp", "icmp"]),
    st.sampled_from([S_, SA, A_, PA, FA, R_, RA, 0x01, 0x29]),
    st.integers(min_value=0, max_value=40),
)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    spec=st.lists(_pkt, min_size=1, max_size=60),
    chunk=st.integers(min_value=1, max_value=9),
    cap=st.sampled_from([0, 1000, 2, 5]),
    slice_s=st.sampled_from([0.0, 5.0, 10.0, 60.0]),
    carry_every=st.integers(min_value=0, max_value=3),
)
def test_any_traffic_gives_the_same_records_with_and_without_seeds(
    tmp_path: Path, spec: list[tuple], chunk: int, cap: int, slice_s: float, carry_every: int
) -> None:
    t = 1_700_000_055.0  # 5 s before a minute boundary
    pkts = []
    for gap, src, dst, sp, dp, proto, flags, size in spec:
        t += gap
        if (":" in src) != (":" in dst):
            dst = src
        if proto == "tcp":
            frame = _tcp(src, dst, sp, dp, flags, b"x" * size)
        elif proto == "udp" and 53 in (sp, dp) and size % 2:  # DNS, in every form
            name = None if size % 7 == 1 else f"N{size}.Test"  # a query without a question
            rcode = 3 if size % 5 == 1 else 0  # NXDOMAIN
            msg = dns_capture.dns_message(size, name, response=sp == 53, rcode=rcode)
            frame = _udp(src, dst, sp, dp, msg)
        elif proto == "udp":
            frame = _udp(src, dst, sp, dp, b"y" * size)
        else:
            frame = _icmp(src, dst, 8 if size % 2 else 3, 0, sp, b"z" * size)
        pkts.append((t, frame))
    path = _pcap(tmp_path / "any.pcap", pkts)
    _same(
        _run(path, True, chunk, cap, slice_s, carry_every),
        _run(path, False, chunk, cap, slice_s, carry_every),
    )


@pytest.mark.parametrize(
    ("flags", "gap", "flows"),
    [
        ((FA, FA), 3.0, 2),  # FINs both ways close it: after the grace, a new flow
        ((FA, FA), 1.0, 1),  # within the grace: the last ACK joins it
        ((FA, A_), 3.0, 1),  # one FIN: still open
        ((A_, R_), 3.0, 2),  # a RST closes it
        ((FA, FA | 0x02), 1.0, 1),  # (flags as they come; the third packet is an ACK)
    ],
)
def test_a_two_packet_seed_closes_as_a_flow_with_a_row_would(
    tmp_path: Path, flags: tuple[int, int], gap: float, flows: int
) -> None:
    # a capture that starts as a connection closes: its last packets, both ways
    c, s, t = "10.0.0.1", "10.0.0.2", 1_700_000_001.0
    path = _pcap(
        tmp_path / "close.pcap",
        [
            (t, _tcp(c, s, 40000, 443, flags[0])),
            (t + 0.01, _tcp(s, c, 443, 40000, flags[1])),
            (t + 0.01 + gap, _tcp(c, s, 40000, 443, A_)),
        ],
    )
    table = FlowTable(*_TIMES)
    for chunk in CaptureReader(path, max_packets=2):
        table.add(chunk.P, chunk.PE, chunk.buf)
        assert table.srow[0] == T.SEED2  # two packets, no row
        break
    got = _run(path, True, 1)
    assert len(got) == flows
    _same(got, _run(path, False, 1))


# DNS ---------------------------------------------------------------------------------


def _resolver(path: Path, count: int, seconds: float, start: float = T0) -> Path:
    if not path.exists():
        dns_capture.write_pcap(path, dns_capture.exchanges(count, seconds, start))
    return path


@pytest.fixture(scope="module")
def resolver(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # 3,000 exchanges over 60 s, across the minute boundary at T0 + 10
    return _resolver(tmp_path_factory.mktemp("dns") / "resolver.pcap", 3000, 60.0)


@pytest.mark.parametrize(("chunk", "cap", "slice_s", "carry_every"), [*_FEEDS, (500, 400, 5.0, 2)])
def test_dns_exchanges_give_the_same_records_with_and_without_seeds(
    resolver: Path, chunk: int, cap: int, slice_s: float, carry_every: int
) -> None:
    # cuts fall between queries and answers; the cap evicts seeds with DNS
    with_seeds, evicted = _both_ways(resolver, (chunk, cap, slice_s, carry_every))
    # the case is what it says: names, NXDOMAIN, answers alone, retries
    S, kinds = with_seeds.S, with_seeds.kinds()
    whole = kinds != T.REC_SLICE
    assert (S[whole, T.S_DNS_HAS] == 1).all()
    assert (S[whole, T.S_DNS_NX] > 0).sum() > 150
    assert ((S[whole, T.S_DNS_Q] == 0) & (S[whole, T.S_QPOOL_LEN] > 0)).sum() > 100
    assert (S[whole, T.S_PKTS] == 3).sum() > 50
    assert (S[whole, T.S_DNS_QLEN] > 200).sum() > 5
    assert b"api.example.com" in set(_names(with_seeds))  # in lower case
    bare = (with_seeds.dns()[:, T.D_QNAMED] == 0) & (S[:, T.S_DNS_Q] == 1)
    assert (bare & whole & (S[:, T.S_QPOOL_LEN] > 0)).sum() > 50  # the answer's name
    if slice_s:
        assert (kinds == T.REC_SLICE).sum() > 50
    assert (evicted > 100) == bool(cap)


def test_dns_exchanges_carried_through_carry_files_come_back_the_same(
    resolver: Path, tmp_path: Path
) -> None:
    _same(
        _run(resolver, True, 150, 0, 60.0, 1, tmp=tmp_path),
        _run(resolver, False, 150, 0, 60.0, 0),
    )


def test_a_dns_exchange_has_no_row_until_a_third_packet(resolver: Path) -> None:
    table = FlowTable(*_TIMES, 0, 60.0)
    for c in CaptureReader(resolver, max_packets=4000):
        table.add(c.P, c.PE, c.buf)
        break
    n = table.open_flows
    srow, dns = table.srow[:n], table.seed[:n, T.SD_DNS]
    seeds = srow < 0
    assert n > 800 and seeds.mean() > 0.95
    assert (dns[seeds] >= 0).all()  # every one carried DNS
    assert int(table.st[T.ST_SROWS]) == n - seeds.sum()  # the retried ones
    # each seed its own row of DS
    assert len(np.unique(dns[seeds])) == seeds.sum() <= int(table.st[T.ST_DSEEDS])


def test_names_that_find_the_pool_full_are_the_same_with_and_without_seeds(
    resolver: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(T, "POOL_BYTES", 4096)  # room for a few dozen names a chunk
    with_seeds = _run(resolver, True, 200, 0, 60.0, 2)
    _same(with_seeds, _run(resolver, False, 200, 0, 60.0, 2))
    S = with_seeds.S
    assert ((S[:, T.S_QPOOL_LEN] == 0) & (S[:, T.S_DNS_QLEN] > 0)).sum() > 100  # no room
    assert (S[:, T.S_QPOOL_LEN] > 0).sum() > 100


def test_an_open_dns_exchange_costs_under_400_bytes(tmp_path: Path) -> None:
    # 20,000 exchanges in 10 s: all still open (the idle timeout is 20 s); without seeds
    # each has a row and a DNS row
    path = _resolver(tmp_path / "busy.pcap", 20_000, 10.0, 1_700_000_001.0)
    with_seeds, without = _open_cost(path, 20_000)
    _same(with_seeds.finish(), without.finish())


def test_names_that_overlap_in_the_pool_are_refused(resolver: Path) -> None:
    # rows' names as well as seeds': more name bytes than the pool has would be copied
    # past the end of the next pool when the table is compacted
    args = (*_TIMES, 0, 60.0)
    table = FlowTable(*args, seeds=False)
    for c in CaptureReader(resolver, max_packets=1000):
        table.add(c.P, c.PE, c.buf)
        break
    arrays = {name: np.array(a) for name, a in table.state_arrays().items()}
    named = arrays["S"][:, T.S_QPOOL_LEN] > 0
    assert named.sum() > 100
    FlowTable.from_arrays(arrays, *args)  # as saved: fine
    arrays["S"][named, T.S_QPOOL_OFF] = 0.0  # each in range of a pool as long as the longest
    longest = int(arrays["S"][named, T.S_QPOOL_LEN].max())
    arrays["pool"] = arrays["pool"][:longest]
    arrays["st"][T.ST_POOL] = longest
    with pytest.raises(ValueError, match="invalid carry state: names overlap"):
        FlowTable.from_arrays(arrays, *args)


@pytest.mark.parametrize("width", [T.SD_SECOND, T.SD_DNS, T.SD_THIRD])
def test_carries_saved_when_seeds_were_narrower_still_load(
    resolver: Path, tmp_path: Path, width: int
) -> None:
    # seeds of one packet (3 words), of two without DNS (6), of two with DNS (7): what
    # earlier releases saved; carried seeds of those have no third packet
    if width == T.SD_THIRD:
        path = resolver
    else:
        path = tmp_path / "flood.pcap"
        header = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
        path.write_bytes(header + syn_flood_records(3000, seconds=10.0))
    args = (*_TIMES, 0, 60.0)
    table = FlowTable(*args)
    for c in CaptureReader(path, max_packets=2500):
        table.add(c.P, c.PE, c.buf)
        break
    arrays = {name: np.array(a) for name, a in table.state_arrays().items()}
    srow = arrays["srow"]
    assert (srow < 0).sum() > 900 and not np.isin(srow, (T.SEED3, T.SEED3_CUT)).any()
    if width < T.SD_THIRD:
        assert (arrays["seed"][:, T.SD_DNS] < 0).all() and not len(arrays["dns_seeds"])
    old = dict(arrays, seed=arrays["seed"][:, :width].copy())
    if width == T.SD_SECOND:
        assert (srow[srow < 0] == T.SEED).all()
    got = FlowTable.from_arrays(old, *args).finish()
    _same(got, FlowTable.from_arrays(arrays, *args).finish())
    assert len(got) >= len(srow)  # every flow ended (a cut one as its tail and its whole)


def test_the_closed_list_stays_in_order_of_last_packets(tmp_path: Path) -> None:
    # a connection refused (closed), another refused, then a late ACK of the first within
    # the close grace: the first's third packet moves it behind the second (a closed
    # seed's third packet gives it a row; kept as a seed it would stay in front, and
    # the grace of the flows behind it would be read from the wrong one)
    c, s, t = "10.0.0.1", "10.0.0.2", 1_700_000_001.0
    path = _pcap(
        tmp_path / "refused.pcap",
        [
            (t, _tcp(c, s, 40000, 443, S_)),
            (t + 0.01, _tcp(s, c, 443, 40000, RA)),
            (t + 0.2, _tcp(c, s, 40001, 443, S_)),
            (t + 0.21, _tcp(s, c, 443, 40001, RA)),
            (t + 1.0, _tcp(c, s, 40000, 443, A_)),  # a late ACK: within the grace, the same flow
        ],
    )
    table = FlowTable(*_TIMES)
    for chunk in CaptureReader(path, max_packets=1):
        table.add(chunk.P, chunk.PE, chunk.buf)
    n = table.open_flows
    closed = T.list_order(table.links, table.lru, n, 2)
    last = T.last_times(table.S, table.srow, table.seed, n)
    assert len(closed) == 2 and list(last[closed]) == sorted(last[closed]), last[closed]
    _same(_run(path, True, 1), _run(path, False, 1))
