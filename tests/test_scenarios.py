"""The scenario generator: seeded, valid packets, ground truth that matches the traffic."""

from __future__ import annotations

import numpy as np
import pytest

from netmon_exporter.detectors import REGISTRY
from netmon_exporter.tools.scenarios import KINDS, SPOOFED, generate, label_flows


def test_same_seed_same_capture_other_seed_other_capture(tmp_path):
    a = generate("port_scan", 3, tmp_path / "a", duration=120, intensity=0.2)
    b = generate("port_scan", 3, tmp_path / "b", duration=120, intensity=0.2)
    c = generate("port_scan", 4, tmp_path / "c", duration=120, intensity=0.2)
    assert a.path.read_bytes() == b.path.read_bytes()
    assert a.truths == b.truths
    assert a.path.read_bytes() != c.path.read_bytes()


def test_unknown_kind_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown scenario"):
        generate("teleport", 1, tmp_path)


def test_every_attack_has_a_required_truth_and_every_detector_a_scenario(tmp_path):
    measured = set()
    for kind in KINDS:
        sc = generate(kind, 5, tmp_path, duration=120, intensity=0.1)
        required = [t for t in sc.truths if t.required]
        assert (kind == "benign") == (not required), kind
        assert sc.packets > 0 and sc.start < sc.end
        measured |= {t.detector for t in required}
        sc.path.unlink()
    assert measured == set(REGISTRY)


def test_scapy_dissects_frames_with_valid_checksums(tmp_path):
    from scapy.layers.dns import DNS
    from scapy.layers.inet import ICMP, IP, TCP, UDP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import Ether
    from scapy.utils import PcapReader

    sc = generate("dns_tunnel", 2, tmp_path, duration=60, intensity=0.2)
    seen, names = set(), set()
    with PcapReader(str(sc.path)) as reader:
        for i, p in enumerate(reader):
            if i >= 8000:
                break
            rebuilt = Ether(bytes(p))
            for layer in (IP, TCP, UDP, ICMP):
                if layer in rebuilt:
                    seen.add(layer.__name__)
                    del rebuilt[layer].chksum
            if IPv6 in p:
                seen.add("IPv6")
            assert bytes(Ether(bytes(rebuilt))) == bytes(p), p.summary()
            if DNS in p and p[DNS].qr == 0 and p[UDP].dport == 53:
                names.add(p[DNS].qd[0].qname.decode())
    assert {"IP", "TCP", "UDP", "ICMP", "IPv6"} <= seen
    assert any(".t." in n and len(n) > 40 for n in names)


def test_flows_are_labelled_by_attack_packets(tmp_path):
    from netmon_exporter.pipeline import FlowSettings, process_file

    sc = generate("syn_flood_spoofed", 1, tmp_path, duration=60, intensity=0.2)
    (truth,) = sc.truths
    assert truth.attacker == SPOOFED
    flows = process_file(sc.path, FlowSettings()).flows
    labels = label_flows(flows, sc)
    attack = labels == "syn_flood"
    assert attack.sum() >= 400
    from netmon_exporter.flow_schema import addrs_to_str

    victims = set(addrs_to_str(flows["dst_ip"][attack]))
    assert victims == {truth.victim}
    assert (labels[~attack] == "benign").all()
    assert np.unique(labels).tolist() == ["benign", "syn_flood"]
