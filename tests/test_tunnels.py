"""Tunnels: the packet inside is the one decoded (as Zeek and Suricata decapsulate).

A tap on a WAN link sees GRE and IP in IP between sites; AWS VPC Traffic Mirroring
delivers every mirrored packet inside VXLAN (UDP 4789); switches mirror remotely with
ERSPAN (GRE); ISP links carry MPLS. Read as their outer headers, all of a site's
traffic was a handful of tunnel flows, and no detector saw a scan through them. scapy
builds every encapsulation here and is the reference for the inner packet.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scapy.contrib.erspan import ERSPAN_II, ERSPAN_III
from scapy.contrib.geneve import GENEVE
from scapy.contrib.mpls import MPLS
from scapy.layers.inet import GRE, IP, TCP, UDP, Ether
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Dot1Q
from scapy.layers.vxlan import VXLAN
from scapy.utils import wrpcap

from netmon_exporter.capture import decode as D
from netmon_exporter.capture.pcap_reader import CaptureReader, read_all
from netmon_exporter.detectors.port_scan import PortScanDetector
from netmon_exporter.metrics import TUNNELS
from netmon_exporter.pipeline import FlowSettings, process_file

# explicit addresses: scapy would otherwise look up (ARP) a MAC for each packet
ETH = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")

OUTER = IP(src="192.0.2.1", dst="192.0.2.2")
OUTER6 = IPv6(src="2001:db8:ffff::1", dst="2001:db8:ffff::2")
# VXLAN and Geneve are opened between site-internal outer addresses only (a mirror
# session's source and target, an overlay's nodes)
MIRROR = IP(src="10.99.0.1", dst="10.99.0.2")
MIRROR6 = IPv6(src="fd00:99::1", dst="fd00:99::2")
INNER4 = IP(src="10.1.1.1", dst="10.2.2.2") / TCP(sport=41234, dport=22, flags="S", window=1024)
INNER6 = IPv6(src="2001:db8:1::1", dst="2001:db8:2::2") / UDP(sport=5300, dport=53) / (b"q" * 12)


def _read(tmp_path: Path, pkts: list) -> np.ndarray:  # noqa: ANN001
    for k, p in enumerate(pkts):
        p.time = 1_700_000_000 + k
    path = tmp_path / "t.pcap"
    wrpcap(str(path), pkts)
    P, _, _ = read_all(path)
    return P


def _is_inner4(row: np.ndarray) -> bool:
    return (
        row[D.F_STATUS] == D.ST_OK
        and row[D.F_IPV] == 4
        and row[D.F_SLO] == (0xFFFF << 32) | 0x0A010101
        and row[D.F_DLO] == (0xFFFF << 32) | 0x0A020202
        and (row[D.F_PROTO], row[D.F_SPORT], row[D.F_DPORT], row[D.F_FLAGS]) == (6, 41234, 22, 2)
        and row[D.F_WIN] == 1024
        and row[D.F_PAY] == 0
    )


ENCAPSULATED = {
    "ipip": (ETH / OUTER / INNER4, D.TUN_IP),
    "4in6": (ETH / OUTER6 / INNER4, D.TUN_IP),
    "gre": (ETH / OUTER / GRE() / INNER4, D.TUN_GRE),
    "gre-key-seq-csum": (
        ETH
        / OUTER
        / GRE(chksum_present=1, key_present=1, key=77, seqnum_present=1, sequence_number=9)
        / INNER4,
        D.TUN_GRE,
    ),
    "gre-ethernet-vlan": (
        ETH / OUTER / GRE(proto=0x6558) / ETH / Dot1Q(vlan=12) / INNER4,
        D.TUN_GRE,
    ),
    "erspan-ii": (
        ETH / OUTER / GRE(seqnum_present=1) / ERSPAN_II(session_id=3) / ETH / INNER4,
        D.TUN_ERSPAN,
    ),
    "erspan-iii": (ETH / OUTER / GRE() / ERSPAN_III() / ETH / INNER4, D.TUN_ERSPAN),
    "vxlan": (
        ETH / MIRROR / UDP(sport=49152, dport=4789) / VXLAN(vni=42) / ETH / INNER4,
        D.TUN_VXLAN,
    ),
    "vxlan-over-ipv6": (
        ETH / MIRROR6 / UDP(sport=49152, dport=4789) / VXLAN(vni=42) / ETH / INNER4,
        D.TUN_VXLAN,
    ),
    "geneve": (
        ETH / MIRROR / UDP(sport=49152, dport=6081) / GENEVE(proto=0x6558) / ETH / INNER4,
        D.TUN_GENEVE,
    ),
    "vxlan-then-gre": (
        ETH
        / MIRROR
        / UDP(sport=49152, dport=4789)
        / VXLAN(vni=42)
        / ETH
        / IP(src="172.16.0.1", dst="172.16.0.2")
        / GRE()
        / INNER4,
        D.TUN_VXLAN,
    ),
}


@pytest.mark.parametrize("name", list(ENCAPSULATED))
def test_the_inner_packet_is_decoded(tmp_path: Path, name: str) -> None:
    pkt, kind = ENCAPSULATED[name]
    (row,) = _read(tmp_path, [pkt])
    assert _is_inner4(row)
    assert row[D.F_TUNNEL] == kind  # the outermost tunnel
    assert row[D.F_WIRELEN] == len(pkt)  # bytes on the wire: the tunnel's included


def test_ipv6_inside_ipv4_and_mpls_labels(tmp_path: Path) -> None:
    six_in_four, mpls = _read(
        tmp_path,
        [
            ETH / OUTER / INNER6,
            Ether(src=ETH.src, dst=ETH.dst, type=0x8847)
            / MPLS(label=100, s=0)
            / MPLS(label=200, s=1)
            / INNER4,
        ],
    )
    assert (six_in_four[D.F_IPV], six_in_four[D.F_PROTO]) == (6, 17)
    assert (six_in_four[D.F_SPORT], six_in_four[D.F_DPORT], six_in_four[D.F_PAY]) == (5300, 53, 12)
    assert six_in_four[D.F_TUNNEL] == D.TUN_IP
    assert _is_inner4(mpls) and mpls[D.F_TUNNEL] == D.TUN_NONE  # a label stack, no tunnel


def test_what_is_not_a_tunnel_this_decoder_opens_stays_the_outer_packet(tmp_path: Path) -> None:
    rows = _read(
        tmp_path,
        [
            # UDP to 4789 without VXLAN's I flag: an application's datagram
            ETH / OUTER / UDP(sport=5000, dport=4789) / (b"\x00" * 8 + bytes(INNER4)),
            # GRE version 1 (PPTP's enhanced GRE, carrying PPP)
            ETH / OUTER / GRE(version=1, proto=0x880B) / (b"\x00" * 8),
            # GRE with a payload type it does not read (WCCP)
            ETH / OUTER / GRE(proto=0x883E) / bytes(INNER4),
            # VXLAN whose inner frame is ARP, not IP
            ETH
            / OUTER
            / UDP(dport=4789)
            / VXLAN()
            / Ether(src=ETH.src, dst=ETH.dst, type=0x0806)
            / (b"\x00" * 28),
            # IP in IP fragmented: its first fragment (the inner packet arrives in pieces)
            ETH / IP(src="192.0.2.1", dst="192.0.2.2", flags="MF", proto=4) / bytes(INNER4),
        ],
    )
    assert [int(r[D.F_PROTO]) for r in rows] == [17, 47, 47, 17, 4]
    assert (rows[:, D.F_TUNNEL] == 0).all() and (rows[:, D.F_STATUS] == D.ST_OK).all()
    assert rows[0, D.F_DPORT] == 4789 and rows[3, D.F_DPORT] == 4789


def test_an_inner_header_cut_by_the_snapshot_length_leaves_the_outer_packet(
    tmp_path: Path,
) -> None:
    pkt = ETH / OUTER / GRE() / INNER4
    path = tmp_path / "snap.pcap"
    from scapy.utils import RawPcapWriter

    raw = bytes(pkt)
    with RawPcapWriter(str(path), linktype=1, snaplen=40) as w:
        w.write_header(None)
        w.write_packet(raw[:40], sec=1, usec=0, wirelen=len(raw))  # inner header cut
    (row,) = read_all(path)[0]
    assert (row[D.F_STATUS], row[D.F_PROTO], row[D.F_TUNNEL]) == (D.ST_OK, 47, 0)


def test_vxlan_and_geneve_across_the_internet_are_flows_of_their_own(tmp_path: Path) -> None:
    """Guards docs/flow-features.md: "opened only between site-internal"; a channel to
    an outside host shaped like VXLAN (UDP 4789, the I flag, an inner frame) or Geneve
    is the flow it is, not the inner packets it claims to carry."""
    out4 = IP(src="10.0.0.5", dst="203.0.113.9")
    out6 = IPv6(src="fd00::5", dst="2001:db8:9::9")
    pkts = [
        ETH / out4 / UDP(sport=40000, dport=4789) / VXLAN(vni=1) / ETH / INNER4,
        ETH / out6 / UDP(sport=40000, dport=4789) / VXLAN(vni=1) / ETH / INNER4,
        ETH / IP(src="203.0.113.9", dst="10.0.0.5") / UDP(sport=6081, dport=6081)
        / GENEVE(proto=0x6558) / ETH / INNER4,
        ETH / OUTER / UDP(sport=40000, dport=4789) / VXLAN(vni=1) / ETH / INNER4,  # 192.0.2/24
        # between internal addresses (CGNAT, link-local, ULA): a mirror or an overlay
        ETH / IP(src="100.64.0.1", dst="172.16.0.9") / UDP(dport=4789) / VXLAN() / ETH / INNER4,
        ETH / IPv6(src="fe80::1", dst="fd12::9") / UDP(dport=6081) / GENEVE(proto=0x6558)
        / ETH / INNER4,
    ]  # fmt: skip
    rows = _read(tmp_path, pkts)
    for r in rows[:4]:
        assert (r[D.F_PROTO], r[D.F_TUNNEL]) == (17, 0) and r[D.F_DPORT] in (4789, 6081)
    assert [r[D.F_TUNNEL] for r in rows[4:]] == [D.TUN_VXLAN, D.TUN_GENEVE]
    assert all(_is_inner4(r) for r in rows[4:])
    # GRE and IP in IP between public addresses (site-to-site tunnels) are still opened
    gre = _read(tmp_path, [ENCAPSULATED["gre"][0], ENCAPSULATED["ipip"][0]])
    assert all(_is_inner4(r) for r in gre)


def test_tunnels_deeper_than_the_limit_are_left_as_they_are(tmp_path: Path) -> None:
    deep = ETH / OUTER / GRE() / IP(src="172.16.0.1", dst="172.16.0.2") / GRE() / OUTER
    (row,) = _read(tmp_path, [deep / GRE() / INNER4])
    assert D.MAX_TUNNEL_DEPTH == 2
    assert (row[D.F_PROTO], row[D.F_TUNNEL]) == (47, D.TUN_GRE)  # two opened, a third not
    assert row[D.F_SLO] == (0xFFFF << 32) | 0xC0000201


def test_tunnel_depth_opens_fewer_tunnels_or_none(tmp_path: Path) -> None:
    """Guards docs/flow-features.md: "`flows.tunnel_depth`"."""
    two = ENCAPSULATED["vxlan-then-gre"][0]
    pkts = [two, ENCAPSULATED["gre"][0]]
    for k, p in enumerate(pkts):
        p.time = 1_700_000_000 + k
    path = tmp_path / "t.pcap"
    wrpcap(str(path), pkts)

    def rows(depth: int) -> np.ndarray:
        reader = CaptureReader(path, tunnel_depth=depth)
        return np.concatenate([c.P.copy() for c in reader])

    deep, one, none = rows(2), rows(1), rows(0)
    assert all(_is_inner4(r) for r in deep)
    # depth 1: the VXLAN opened, the GRE inside it not; the plain GRE opened
    assert (one[0, D.F_PROTO], one[0, D.F_TUNNEL]) == (47, D.TUN_VXLAN)
    assert one[0, D.F_SLO] == (0xFFFF << 32) | 0xAC100001  # 172.16.0.1
    assert _is_inner4(one[1])
    # depth 0: every packet is its outer header's (UDP to 4789, GRE)
    assert [(r[D.F_PROTO], r[D.F_DPORT], r[D.F_TUNNEL]) for r in none] == [
        (17, 4789, 0),
        (47, 0, 0),
    ]
    assert none[0, D.F_SLO] == (0xFFFF << 32) | 0x0A630001  # the mirror's 10.99.0.1
    assert none[1, D.F_SLO] == (0xFFFF << 32) | 0xC0000201  # the GRE's 192.0.2.1
    # through the pipeline: flows of the outer header, nothing decapsulated
    res = process_file(path, FlowSettings(tunnel_depth=0))
    assert sum(res.decapsulated_by_tunnel.values()) == 0
    assert res.packets_by_protocol["udp"] == 1 and res.packets_by_protocol["other"] == 1
    res = process_file(path, FlowSettings())
    assert res.decapsulated_by_tunnel["vxlan"] == 1 and res.decapsulated_by_tunnel["gre"] == 1
    with pytest.raises(ValueError, match="tunnel_depth"):
        CaptureReader(path, tunnel_depth=3)


def test_a_mirrored_session_is_one_flow_of_the_inner_addresses(tmp_path: Path) -> None:
    # AWS VPC Traffic Mirroring: each packet of the session, both ways, inside VXLAN from
    # the mirror source's ENI to the target; a scan seen only that way is a scan.
    def mirrored(inner: object) -> object:
        return ETH / MIRROR / UDP(sport=65000, dport=4789) / VXLAN(vni=5) / ETH / inner

    c, s = "10.0.0.5", "10.0.0.9"
    session = [
        IP(src=c, dst=s) / TCP(sport=50000, dport=443, flags="S"),
        IP(src=s, dst=c) / TCP(sport=443, dport=50000, flags="SA"),
        IP(src=c, dst=s) / TCP(sport=50000, dport=443, flags="A"),
        IP(src=c, dst=s) / TCP(sport=50000, dport=443, flags="PA") / (b"x" * 300),
        IP(src=s, dst=c) / TCP(sport=443, dport=50000, flags="PA") / (b"y" * 1200),
    ]
    scan = [
        IP(src="198.51.100.9", dst=s) / TCP(sport=61000, dport=p, flags="S") for p in range(1, 31)
    ]
    replies = [
        IP(src=s, dst="198.51.100.9") / TCP(sport=p, dport=61000, flags="RA") for p in range(1, 31)
    ]
    pkts = [mirrored(p) for p in session]
    for probe, reply in zip(scan, replies, strict=True):
        pkts += [mirrored(probe), mirrored(reply)]
    for k, p in enumerate(pkts):
        p.time = 1_700_000_000 + k * 0.01
    path = tmp_path / "mirror.pcap"
    wrpcap(str(path), pkts)
    res = process_file(path, FlowSettings())
    assert res.decapsulated_by_tunnel == {t: (len(pkts) if t == "vxlan" else 0) for t in TUNNELS}
    assert res.packets_by_protocol["tcp"] == len(pkts) and res.packets_by_protocol["udp"] == 0
    fl = res.flows
    web = np.flatnonzero(np.asarray(fl["dst_port"]) == 443)
    assert len(web) == 1 and int(fl["Tot Fwd Pkts"][web[0]]) == 3
    assert int(fl["TotLen Bwd Pkts"][web[0]]) == 1200
    (d,) = PortScanDetector(_cfg()).detect(fl, 1_699_999_980.0, 1_700_000_040.0)
    assert (d.source, d.target) == ("198.51.100.9", s)


def _cfg():  # noqa: ANN202
    from netmon_exporter.config import DetectorsConfig

    return DetectorsConfig().port_scan


def test_the_tunnel_names_are_the_metric_labels() -> None:
    assert D.TUNNEL_NAMES[1:] == TUNNELS


def test_flows_tunnel_depth_reaches_the_workers_settings() -> None:
    from netmon_exporter.config import ConfigError, parse_config
    from netmon_exporter.ingest.executor import flow_settings

    text = "capture:\n  directory: /tmp\nflows:\n  tunnel_depth: {}\n"
    assert flow_settings(parse_config(text.format(0), check_paths=False)).tunnel_depth == 0
    assert flow_settings(parse_config(text.format(2), check_paths=False)).tunnel_depth == 2
    with pytest.raises(ConfigError, match="flows.tunnel_depth"):
        parse_config(text.format(3), check_paths=False)


def test_the_flows_command_takes_tunnel_depth(tmp_path: Path) -> None:
    import csv

    from netmon_exporter.cli import main

    pkts = [ENCAPSULATED["vxlan"][0]]
    pkts[0].time = 1_700_000_000
    path = tmp_path / "v.pcap"
    wrpcap(str(path), pkts)
    for depth, dport in ((2, "22"), (0, "4789")):
        out = tmp_path / f"d{depth}.csv"
        assert (
            main(
                ["flows", str(path), "-o", str(out), "--tunnel-depth", str(depth), "--no-progress"]
            )
            == 0
        )
        (row,) = list(csv.DictReader(out.open()))
        assert row["Dst Port"] == dport
