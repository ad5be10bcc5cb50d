"""Allow-lists: which findings ignore.* sets aside, and why (tables of detections and rules)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from netmon_exporter.config import (
    IGNORE_EXAMPLES,
    ConfigError,
    IgnoreConfig,
    IgnoreSectionsConfig,
    parse_config,
)
from netmon_exporter.detection import Detection
from netmon_exporter.detectors import REGISTRY
from netmon_exporter.suppression import (
    REASONS,
    SuppressionRules,
    endpoints,
    suppress,
)

ROOT = Path(__file__).parent.parent


def det(detector: str, source: str, target: str, **evidence: Any) -> Detection:
    return Detection(detector, "warning", source, target, 0.0, 60.0, evidence, "s")


def rules(**scopes: dict[str, Any]) -> SuppressionRules:
    """Rules from ``all=dict(sources=[...])``, ``beacon=dict(...)``, as the config gives them."""
    sections = {
        name: IgnoreConfig(**{k: tuple(v) for k, v in lists.items()})
        for name, lists in scopes.items()
    }
    return SuppressionRules.from_config(IgnoreSectionsConfig(**sections))


# (name, rules, detection, expected (scope, reason, entry) or None)
CASES: list[tuple[str, SuppressionRules, Detection, tuple[str, str, str] | None]] = [
    (
        "v4 source in a network, for every detector",
        rules(all={"sources": ["10.0.5.0/24"]}),
        det("beacon", "10.0.5.10", "10.1.0.1:161"),
        ("all", "source", "10.0.5.0/24"),
    ),
    (
        "v4 source outside the network",
        rules(all={"sources": ["10.0.5.0/24"]}),
        det("beacon", "10.0.6.10", "10.1.0.1:161"),
        None,
    ),
    (
        "a bare address is a /32",
        rules(beacon={"sources": ["10.0.5.10"]}),
        det("beacon", "10.0.5.10", "10.1.0.1:161"),
        ("beacon", "source", "10.0.5.10/32"),
    ),
    (
        "v6 source",
        rules(port_scan={"sources": ["2001:db8:5::/48"]}),
        det("port_scan", "2001:db8:5::9", "2001:db8:1::1"),
        ("port_scan", "source", "2001:db8:5::/48"),
    ),
    (
        "a v4 network never matches a v6 address",
        rules(all={"sources": ["0.0.0.0/0"]}),
        det("port_scan", "2001:db8:5::9", "10.0.0.1"),
        None,
    ),
    (
        "v6 destination, bracketed with a port",
        rules(all={"destinations": ["2001:db8:1::/64"]}),
        det("beacon", "10.0.0.1", "[2001:db8:1::7]:443"),
        ("all", "destination", "2001:db8:1::/64"),
    ),
    (
        "v6 destination without a port",
        rules(all={"destinations": ["2001:db8:1::7/128"]}),
        det("port_scan", "10.0.0.1", "2001:db8:1::7"),
        ("all", "destination", "2001:db8:1::7/128"),
    ),
    (
        "v4 destination with a port",
        rules(udp_flood={"destinations": ["10.0.9.20"]}),
        det("udp_flood", "many", "10.0.9.20"),
        ("udp_flood", "destination", "10.0.9.20/32"),
    ),
    (
        "per-detector list does not apply to another detector",
        rules(beacon={"sources": ["10.0.5.10"]}),
        det("port_scan", "10.0.5.10", "10.1.0.1"),
        None,
    ),
    (
        "the detector's own list is named before the global one",
        rules(all={"sources": ["10.0.0.0/8"]}, beacon={"sources": ["10.0.5.10"]}),
        det("beacon", "10.0.5.10", "10.1.0.1:161"),
        ("beacon", "source", "10.0.5.10/32"),
    ),
    (
        "port from the target",
        rules(brute_force={"ports": [25]}),
        det("brute_force", "198.51.100.7", "10.0.2.25:25"),
        ("brute_force", "port", "25"),
    ),
    (
        "port from a service target (tcp/445)",
        rules(all={"ports": [445]}),
        det("address_sweep", "10.0.0.9", "tcp/445"),
        ("all", "port", "445"),
    ),
    (
        "port from the evidence (dst_port)",
        rules(syn_flood={"ports": [443]}),
        det("syn_flood", "many", "10.0.2.80", dst_port=443),
        ("syn_flood", "port", "443"),
    ),
    (
        "another port",
        rules(brute_force={"ports": [25]}),
        det("brute_force", "198.51.100.7", "10.0.2.25:22"),
        None,
    ),
    (
        "an ICMP sweep has no port",
        rules(all={"ports": [8]}),
        det("address_sweep", "10.0.0.9", "icmp/echo"),
        None,
    ),
    (
        "zone: the zone itself",
        rules(dns_tunnel={"zones": ["zen.spamhaus.org"]}),
        det("dns_tunnel", "10.0.2.25", "zen.spamhaus.org"),
        ("dns_tunnel", "zone", "zen.spamhaus.org"),
    ),
    (
        "zone: a name under it, any case, final dot",
        rules(dns_tunnel={"zones": ["Spamhaus.ORG."]}),
        det("dns_tunnel", "10.0.2.25", "HBL.spamhaus.org."),
        ("dns_tunnel", "zone", "spamhaus.org"),
    ),
    (
        "zone: a look-alike is not under it",
        rules(dns_tunnel={"zones": ["spamhaus.org"]}),
        det("dns_tunnel", "10.0.2.25", "evilspamhaus.org"),
        None,
    ),
    (
        "a 'many' source is no address",
        rules(all={"sources": ["0.0.0.0/0", "::/0"]}),
        det("syn_flood", "many", "10.0.2.80"),
        None,
    ),
]


@pytest.mark.parametrize(
    ("name", "rule", "detection", "expected"), CASES, ids=[c[0] for c in CASES]
)
def test_match(
    name: str,
    rule: SuppressionRules,
    detection: Detection,
    expected: tuple[str, str, str] | None,
) -> None:
    assert rule.match(detection) == expected


def test_suppress_splits_keeps_order_and_names_the_rule() -> None:
    r = rules(beacon={"sources": ["10.0.5.10"]}, dns_tunnel={"zones": ["spamhaus.org"]})
    found = [
        det("beacon", "10.0.5.10", "10.1.0.1:161"),
        det("port_scan", "203.0.113.9", "10.1.0.1"),
        det("dns_tunnel", "10.0.2.25", "x1.hbl.spamhaus.org"),
        det("beacon", "10.0.0.7", "198.51.100.1:443"),
    ]
    kept, suppressed = suppress(found, r)
    assert kept == [found[1], found[3]]
    assert [s.detection for s in suppressed] == [found[0], found[2]]
    assert [(s.scope, s.reason) for s in suppressed] == [
        ("beacon", "source"),
        ("dns_tunnel", "zone"),
    ]
    first = suppressed[0].to_dict()
    assert first["suppressed_by"] == "ignore.beacon.sources"
    assert (first["reason"], first["entry"], first["source"]) == (
        "source",
        "10.0.5.10/32",
        "10.0.5.10",
    )
    assert suppressed[1].to_dict()["suppressed_by"] == "ignore.dns_tunnel.zones"
    assert {s.reason for s in suppressed} <= set(REASONS)


def test_no_rules_keep_everything() -> None:
    found = [det("beacon", "10.0.5.10", "10.1.0.1:161")]
    assert not SuppressionRules()
    assert suppress(found, SuppressionRules()) == (found, [])


def test_endpoints_are_read_without_guessing() -> None:
    ends = endpoints(det("beacon", "10.0.0.1", "2001:db8::5:443"))
    # Unbracketed IPv6 with a port is one address: never split by guess.
    assert str(ends.destination) == "2001:db8::5:443" and ends.ports == frozenset()
    ends = endpoints(det("brute_force", " 10.0.0.1 ", "10.0.0.2:99999", port=22))
    assert str(ends.source) == "10.0.0.1" and ends.ports == frozenset({22})
    assert endpoints(det("x", "", "")).name is None
    assert endpoints(det("x", "", "bad name!")).name is None


def test_rules_from_yaml_and_reload_equality() -> None:
    text = """
ignore:
  all:
    sources: [192.0.2.16/28]
  beacon:
    sources: [10.0.5.10]
  brute_force:
    ports: [25]
  dns_tunnel:
    zones: [zen.spamhaus.org, hbl.spamhaus.org.]
"""
    cfg = parse_config(text, check_paths=False)
    r = SuppressionRules.from_config(cfg.ignore)
    assert r.match(det("port_scan", "192.0.2.20", "10.0.0.1")) == ("all", "source", "192.0.2.16/28")
    assert r.match(det("dns_tunnel", "10.0.0.3", "ab12.hbl.spamhaus.org")) is not None
    assert set(r.by_detector) == {"beacon", "brute_force", "dns_tunnel"}
    assert parse_config(text, check_paths=False).ignore == cfg.ignore  # a reload sees no change


@pytest.mark.parametrize(
    ("yaml_text", "error"),
    [
        (
            "ignore:\n  all:\n    sources: [10.0.5.7/24]\n",
            "ignore.all.sources[0]: '10.0.5.7/24' has host bits set; write the network "
            "(10.0.5.0/24) or the address (10.0.5.7/32)",
        ),
        (
            "ignore:\n  beacon:\n    destinations: [monitoring]\n",
            "ignore.beacon.destinations[0]: 'monitoring' is not an IP address or network "
            "(e.g. 10.0.5.10, 10.0.5.0/24, 2001:db8::/48)",
        ),
        ("ignore:\n  all:\n    ports: [0]\n", "ignore.all.ports[0]: 0 is not a port (1-65535)"),
        (
            "ignore:\n  all:\n    ports: [70000]\n",
            "ignore.all.ports[0]: 70000 is above the maximum 65535",
        ),
        (
            "ignore:\n  dns_tunnel:\n    zones: ['*.spamhaus.org']\n",
            "ignore.dns_tunnel.zones[0]: '*.spamhaus.org' must not start with '*.': a zone "
            "already covers every name under it",
        ),
        (
            "ignore:\n  no_such_detector:\n    sources: []\n",
            "ignore.no_such_detector: unknown key (allowed: ",
        ),
    ],
)
def test_invalid_entries_are_refused_with_their_key_path(yaml_text: str, error: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(yaml_text, check_paths=False)
    assert any(e.startswith(error) for e in info.value.errors), info.value.errors


def test_every_detector_has_an_allow_list_and_examples_name_real_detectors() -> None:
    names = {f for f in IgnoreSectionsConfig.__dataclass_fields__}
    assert names == {"all", *REGISTRY}
    assert set(IGNORE_EXAMPLES) <= set(REGISTRY)
    shipped = (ROOT / "config.yaml").read_text(encoding="utf-8")
    assert "ignore:" in shipped and "monitoring server" in shipped and "NAT gateway" in shipped
