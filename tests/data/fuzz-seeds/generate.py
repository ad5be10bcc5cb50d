"""Write the fuzz seeds of this folder: captures of what the decoder opens that no real
capture in ``../pcaps`` holds (tunnels, IPv4 fragments cutting a TCP header), so that
the mutation fuzz (``tests/test_fuzz_reader.py``) mutates those paths too.

    python tests/data/fuzz-seeds/generate.py      # rewrites tunnels.pcap, fragments.pcap

scapy builds every packet; the output is deterministic (fixed times, addresses, IDs).
"""

from __future__ import annotations

from pathlib import Path

from scapy.contrib.erspan import ERSPAN_II, ERSPAN_III
from scapy.contrib.geneve import GENEVE
from scapy.contrib.mpls import MPLS
from scapy.layers.inet import GRE, ICMP, IP, TCP, UDP, Ether, fragment
from scapy.layers.inet6 import IPv6, IPv6ExtHdrFragment
from scapy.layers.l2 import Dot1Q
from scapy.layers.vxlan import VXLAN
from scapy.utils import wrpcap

HERE = Path(__file__).resolve().parent
ETH = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
OUT4 = IP(src="192.0.2.1", dst="192.0.2.2")
OUT6 = IPv6(src="2001:db8:ffff::1", dst="2001:db8:ffff::2")
MIR4 = IP(src="10.99.0.1", dst="10.99.0.2")  # VXLAN and Geneve: opened between these
MIR6 = IPv6(src="fd00:99::1", dst="fd00:99::2")


def _inner() -> list:
    return [
        IP(src="10.1.1.1", dst="10.2.2.2") / TCP(sport=41234, dport=22, flags="S", window=1024),
        IP(src="10.2.2.2", dst="10.1.1.1") / TCP(sport=22, dport=41234, flags="SA") / (b"x" * 40),
        IPv6(src="2001:db8:1::1", dst="2001:db8:2::2") / UDP(sport=5300, dport=53) / (b"q" * 12),
        IP(src="10.1.1.1", dst="10.2.2.2") / ICMP(type=8, id=7) / (b"p" * 56),
    ]


def tunnels() -> list:
    out = []
    for inner in _inner():
        out += [
            ETH / OUT4 / inner,
            ETH / OUT6 / inner,
            ETH / OUT4 / GRE() / inner,
            ETH / OUT4 / GRE(chksum_present=1, key_present=1, key=77, seqnum_present=1) / inner,
            ETH / OUT4 / GRE(proto=0x6558) / ETH / Dot1Q(vlan=12) / inner,
            ETH / OUT4 / GRE(seqnum_present=1) / ERSPAN_II(session_id=3) / ETH / inner,
            ETH / OUT4 / GRE() / ERSPAN_III() / ETH / inner,
            ETH / OUT4 / UDP(sport=49152, dport=4789) / VXLAN(vni=42) / ETH / inner,
            ETH / MIR4 / UDP(sport=49152, dport=4789) / VXLAN(vni=42) / ETH / inner,
            ETH / MIR6 / UDP(sport=49152, dport=4789) / VXLAN(vni=42) / ETH / inner,
            ETH / MIR4 / UDP(sport=49152, dport=6081) / GENEVE(proto=0x6558) / ETH / inner,
            ETH / MPLS(label=100, s=0) / MPLS(label=200, s=1) / inner,
            ETH
            / MIR4
            / UDP(sport=49152, dport=4789)
            / VXLAN(vni=42)
            / ETH
            / IP(src="172.16.0.1", dst="172.16.0.2")
            / GRE()
            / inner,
        ]
    return out


def fragments() -> list:
    syn = IP(src="198.51.100.7", dst="10.0.0.9", id=4242) / TCP(
        sport=40000, dport=80, flags="S", options=[("MSS", 1460), ("NOP", None), ("WScale", 7)]
    )
    out = [ETH / f for f in fragment(syn, fragsize=8)]  # nmap -f
    out += [ETH / f for f in fragment(syn, fragsize=16)]  # nmap --mtu 16
    data = (
        IP(src="198.51.100.7", dst="10.0.0.9", id=4243) / UDP(sport=5000, dport=53) / (b"d" * 300)
    )
    out += [ETH / f for f in fragment(data, fragsize=64)]
    six = IPv6(src="2001:db8::7", dst="2001:db8::9")
    tcp6 = TCP(sport=40001, dport=443, flags="S")
    raw = bytes((six / tcp6)[TCP])  # checksum over the IPv6 pseudo-header
    out += [
        ETH / six / IPv6ExtHdrFragment(nh=6, id=99, offset=0, m=1) / raw[:8],
        ETH / six / IPv6ExtHdrFragment(nh=6, id=99, offset=1, m=0) / raw[8:],
    ]
    return out


def main() -> None:
    for name, pkts in (("tunnels.pcap", tunnels()), ("fragments.pcap", fragments())):
        for k, p in enumerate(pkts):
            p.time = 1_700_000_000 + k * 0.01
        wrpcap(str(HERE / name), pkts)
        print(f"{name}: {len(pkts)} packets")


if __name__ == "__main__":
    main()
