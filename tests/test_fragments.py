"""TCP headers cut across IP fragments (``nmap -f``, ``--mtu 16``): put back together.

A SYN probe sent in 8-byte fragments holds its ports and sequence number in the first
fragment and its flags and window in the second. Read fragment by fragment, it was a
packet without flags followed by 12 bytes of "payload", so a fragmented SYN scan was
no scan at all (the hard cases ``fragmented_syn_scan*`` were found 0/3). The decoder now
reads the header fields where they are, gives them to every fragment of the segment
(to the first one too, when it is in the same packet table), and counts header bytes
as header. scapy builds the IPv4 fragments here (``fragment``), the scenario generator
the IPv6 ones; the tests check that scapy reads those as well-formed fragments.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scapy.layers.inet import IP, TCP, Ether, fragment
from scapy.layers.inet6 import IPv6, IPv6ExtHdrFragment
from scapy.packet import Raw
from scapy.utils import wrpcap

from netmon_exporter.capture import decode as D
from netmon_exporter.capture.pcap_reader import read_all
from netmon_exporter.detectors.features import tcp_outcomes
from netmon_exporter.detectors.scan_probes import SYN, classify
from netmon_exporter.pipeline import FlowSettings, process_file
from netmon_exporter.tools.scenarios import _Capture

# explicit addresses: scapy would otherwise look up (ARP) a MAC for each packet
ETH = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")

MSS_OPTS = [
    ("MSS", 1460),
    ("NOP", None),
    ("WScale", 7),
    ("SAckOK", b""),
    ("NOP", None),
    ("NOP", None),
]


def _v4(
    tmp_path: Path,
    segment: TCP,
    fragsize: int,
    reply: str | None = "RA",
    ident: int = 7,
    name: str = "f.pcap",
) -> Path:
    """One TCP segment from 198.51.100.7 in ``fragsize``-byte fragments, then the reply."""
    frags = fragment(IP(src="198.51.100.7", dst="10.0.0.5", id=ident) / segment, fragsize=fragsize)
    pkts = []
    for k, f in enumerate(frags):
        p = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / f
        p.time = 100.0 + k * 1e-5
        pkts.append(p)
    if reply:
        r = (
            ETH
            / IP(src="10.0.0.5", dst="198.51.100.7")
            / TCP(sport=segment.dport, dport=segment.sport, flags=reply, ack=segment.seq + 1)
        )
        r.time = 100.01
        pkts.append(r)
    path = tmp_path / name
    wrpcap(str(path), pkts)
    return path


def _syn(**kw) -> TCP:  # noqa: ANN003
    return TCP(sport=40123, dport=3306, flags="S", seq=1000, window=1024, **kw)


def test_nmap_f_syn_each_fragment_carries_the_flags_and_the_header_is_header(
    tmp_path: Path,
) -> None:
    P, _, _ = read_all(_v4(tmp_path, _syn(), 8, reply=None))
    assert list(P[:, D.F_FRAG]) == [1, 2, 2]
    assert (P[:, D.F_FLAGS] == 0x02).all()  # the first fragment's too (given back)
    assert (P[:, D.F_WIN] == 1024).all()
    assert (P[:, D.F_SPORT] == 40123).all() and (P[:, D.F_DPORT] == 3306).all()
    assert list(P[:, D.F_HDR]) == [8, 8, 4] and (P[:, D.F_PAY] == 0).all()


def test_a_syn_with_options_in_8_byte_fragments_is_all_header(tmp_path: Path) -> None:
    P, _, _ = read_all(_v4(tmp_path, _syn(options=MSS_OPTS), 8, reply=None))
    assert len(P) == 4  # a 32-byte header
    assert int(P[:, D.F_HDR].sum()) == 32 and (P[:, D.F_PAY] == 0).all()
    assert (P[:, D.F_FLAGS] == 0x02).all()


def test_mtu16_first_fragment_has_the_flags_the_second_is_header(tmp_path: Path) -> None:
    P, _, _ = read_all(_v4(tmp_path, _syn(), 16, reply=None))
    assert list(P[:, D.F_HDR]) == [16, 4] and (P[:, D.F_PAY] == 0).all()
    assert (P[:, D.F_FLAGS] == 0x02).all()


def test_a_fragmented_data_segment_counts_header_then_payload(tmp_path: Path) -> None:
    seg = TCP(sport=40123, dport=80, flags="PA", seq=5, ack=9, window=501) / Raw(b"x" * 45)
    P, _, _ = read_all(_v4(tmp_path, seg, 16, reply=None))
    assert int(P[:, D.F_HDR].sum()) == 20 and int(P[:, D.F_PAY].sum()) == 45
    assert list(P[:, D.F_HDR]) == [16, 4, 0, 0, 0]
    assert (P[:, D.F_FLAGS] == 0x18).all()


def test_a_fragmented_syn_probe_is_a_half_open_syn_probe(tmp_path: Path) -> None:
    for size in (8, 16):
        flows = process_file(
            _v4(tmp_path, _syn(), size, name=f"p{size}.pcap"), FlowSettings()
        ).flows
        assert len(flows) == 1
        assert int(flows["fwd_syn_cnt"][0]) == int(flows["Tot Fwd Pkts"][0]) == -(-20 // size)
        assert int(flows["TotLen Fwd Pkts"][0]) == 0
        assert int(flows["Fwd Header Len"][0]) == 20
        assert bool(tcp_outcomes(flows)["half_open"][0])
        assert int(classify(flows)["kinds"][0]) == SYN


def test_ipv6_fragmented_syn_is_put_together_too(tmp_path: Path) -> None:
    cap = _Capture(np.random.default_rng(3))
    cap.tcp(50.0, "2001:db8:1::7", "2001:db8:2::5", 40123, 22, "S", 1000, window=1024, frag=8)
    cap.tcp(50.01, "2001:db8:2::5", "2001:db8:1::7", 22, 40123, "RA", 0, 1001)
    path = tmp_path / "v6.pcap"
    cap.write(path)
    from scapy.utils import rdpcap

    got = rdpcap(str(path))  # scapy reads them as the fragments they are meant to be
    offsets = [(p[IPv6ExtHdrFragment].offset, p[IPv6ExtHdrFragment].m) for p in got[:3]]
    assert offsets == [(0, 1), (1, 1), (2, 0)] and all(IPv6 in p for p in got)
    P, _, _ = read_all(path)
    assert (P[:3, D.F_FLAGS] == 0x02).all() and list(P[:3, D.F_HDR]) == [8, 8, 4]
    flows = process_file(path, FlowSettings()).flows
    assert len(flows) == 1 and int(classify(flows)["kinds"][0]) == SYN
    assert bool(tcp_outcomes(flows)["half_open"][0])


def test_across_a_packet_table_boundary_the_later_fragments_still_carry_the_flags(
    tmp_path: Path,
) -> None:
    # The first fragment is the last row of one packet table: it is handed on before the
    # flags arrive, so it stays without them (docs/flow-features.md says so); the later
    # fragments, in the next table, carry them.
    path = _v4(tmp_path, _syn(), 8, reply=None)
    P, _, _ = read_all(path, max_packets=1, read_size=64)
    assert list(P[:, D.F_FLAGS]) == [0, 0x02, 0x02]
    assert list(P[:, D.F_HDR]) == [8, 8, 4] and (P[:, D.F_PAY] == 0).all()


def test_later_fragments_before_their_first_stay_portless(tmp_path: Path) -> None:
    # Reordered fragments (fragroute): not put together (a limit docs/flow-features.md states).
    frags = fragment(IP(src="198.51.100.7", dst="10.0.0.5", id=9) / _syn(), fragsize=8)
    pkts = []
    for k, f in enumerate([frags[1], frags[2], frags[0]]):
        p = ETH / f
        p.time = 100.0 + k * 1e-5
        pkts.append(p)
    path = tmp_path / "reordered.pcap"
    wrpcap(str(path), pkts)
    P, _, _ = read_all(path)
    assert list(P[:, D.F_SPORT]) == [0, 0, 40123] and list(P[:, D.F_FLAGS]) == [0, 0, 0]


def test_the_fragment_cache_slot_is_keyed(tmp_path: Path) -> None:
    # Unkeyed, anyone could pick an IP id whose datagram takes the slot of another's first
    # fragment (one in 4096 ids does) and send it in between, so that the later
    # fragments find no ports and no flags. With a key the reader draws, the id that
    # collides under one key does not under another.
    addr = D.V4_MAPPED_LO_PREFIX
    src, dst = addr | 0xC6336407, addr | 0x0A000005

    def slot(ident: int, key: int) -> int:
        return int(D._frag_slot(0, src, 0, dst, 6, ident, key))

    k1, k2 = 12345, 67890
    victim = slot(7, k1)
    decoy = next(i for i in range(8, 1 << 16) if slot(i, k1) == victim)
    assert slot(decoy, k2) != slot(7, k2)
    # the decoy, sent between the victim's fragments, evicts it under k1 only
    frags = fragment(IP(src="198.51.100.7", dst="10.0.0.5", id=7) / _syn(), fragsize=8)
    other = fragment(IP(src="198.51.100.7", dst="10.0.0.5", id=decoy) / _syn(), fragsize=8)
    pkts = []
    for k, f in enumerate([frags[0], other[0], frags[1], frags[2]]):
        p = ETH / f
        p.time = 100.0 + k * 1e-5
        pkts.append(p)
    path = tmp_path / "decoy.pcap"
    wrpcap(str(path), pkts)
    from netmon_exporter.capture.pcap_reader import CaptureReader

    def victims_later_rows(key: int) -> np.ndarray:
        reader = CaptureReader(path)
        reader.frag = D.fragment_cache(key)
        P = np.concatenate([c.P.copy() for c in reader])
        return P[[2, 3]]

    evicted, kept = victims_later_rows(k1), victims_later_rows(k2)
    assert (evicted[:, D.F_SPORT] == 0).all() and (evicted[:, D.F_FLAGS] == 0).all()
    assert (kept[:, D.F_SPORT] == 40123).all() and (kept[:, D.F_FLAGS] == 0x02).all()
    # every reader draws its own key
    assert D.fragment_cache()[D.FRAG_SLOTS, 0] != D.fragment_cache()[D.FRAG_SLOTS, 0]
