"""The detector catalog: every detector's name, settings and evidence, declared as data.

A detector is two things: its implementation (``detectors/<name>.py``: numpy, state,
``detect``) and its declaration here (a settings dataclass in the ``setting(...)``
style of ``config``, a :class:`DetectorSpec` naming its section help, its
implementation and the evidence keys its detections carry, and one line in
:data:`REGISTRY`). Everything else derives from the registry: the ``detectors``
section of the config schema, the ``detector`` label set of the metrics, the
configuration and detector references and the evaluation harness.

Why declarations live apart from implementations: ``config`` must decode and
validate ``detectors.*`` (``--config.check``, reload) without importing numpy or any
runtime stage, and a Python module cannot be imported by halves. So this module,
and the package ``__init__`` that re-exports it, import nothing heavy: only
``setting``, ``detection`` (the severity set) and the standard library; the
implementations are imported by name (``module:Class``, as entry points do) when
a detector is built.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..detection import SEVERITIES
from ..setting import setting as _f

_HERE = __name__.rsplit(".", 1)[0]  # netmon_exporter.detectors
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,47}$")  # a metric label value and a config key


@dataclass(frozen=True)
class DetectorSpec:
    """One detector's declaration (see the module docstring)."""

    name: str  # config key, metric label value, ``Detection.detector``
    settings: type  # frozen dataclass of setting(...) fields, with ``enabled`` and ``severity``
    help: str  # one line: the section's comment in config.yaml
    implementation: str  # "package.module:Class"; Class(settings) has ``detect``
    evidence: Mapping[str, str]  # key of Detection.evidence -> meaning

    def load(self) -> Callable[[Any], Any]:
        """Import and return the implementation class (the runtime half)."""
        module, _, attr = self.implementation.partition(":")
        return getattr(importlib.import_module(module), attr)


def registry(*specs: DetectorSpec) -> dict[str, DetectorSpec]:
    """Index specs by name, refusing names that cannot be config keys or label values."""
    out: dict[str, DetectorSpec] = {}
    for spec in specs:
        if not _NAME_RE.match(spec.name) or spec.name in out:
            raise ValueError(f"detector name {spec.name!r} is invalid or registered twice")
        out[spec.name] = spec
    return out


# Evidence shared by several detectors --------------------------------------------------
_HORIZON = "The horizon the counts cover (the detector's horizon_seconds)."
_FIRST_SEEN = "Unix time of the first counted event."
_LAST_SEEN = "Unix time of the last counted event."
_PROBES = {
    "probes": "Failed attempts (probes) counted within the horizon.",
    "probes_in_window": "Of those, the ones that started in this window.",
    "unanswered": "Probes never answered.",
    "reset": "Probes answered with a reset (closed).",
    "horizon_seconds": _HORIZON,
    "first_seen": _FIRST_SEEN,
    "last_seen": _LAST_SEEN,
}
_FLOOD_RATE = {  # flood_rate.flood_detection: these, the detector's own, then _FLOOD_SOURCES
    "packets": "Packets towards the victim in the window.",
    "peak_packets_per_second": "Busiest one-second rate, each flow spread over its life.",
    "threshold_packets_per_second": "The detector's min_packets_per_second.",
    "reply_packets": "Packets the victim sent back.",
}
_FLOOD_SOURCES = {
    "flows": "Flows towards the victim in the window.",
    "sources": "Distinct sources of those flows.",
    "top_sources": "The five sources that sent most packets, with counts.",
}


@dataclass(frozen=True)
class PortScanConfig:
    enabled: bool = _f(True, "Vertical scan: one source probing many ports of one host.")
    min_ports: int = _f(
        15, "Distinct probed ports on one host (Zeek default 15).", min=2, max=65535
    )
    horizon_seconds: float = _f(
        300.0,
        "Probes are accumulated over this many seconds, so slow "
        "scans spread over several windows are found.",
        min=1,
        max=86400,
    )
    max_state_rows: int = _f(
        1_000_000,
        "Upper bound of probes remembered across windows (oldest dropped first).",
        min=1000,
        max=100_000_000,
    )
    severity: str = _f("warning", "Severity of detections.", choices=SEVERITIES)


PORT_SCAN = DetectorSpec(
    name="port_scan",
    settings=PortScanConfig,
    help="Vertical port scan.",
    implementation=_HERE + ".port_scan:PortScanDetector",
    evidence={
        "distinct_ports": "Distinct ports (tcp/N, udp/N) probed on the target within the horizon.",
        "threshold": "The threshold crossed (min_ports).",
        **_PROBES,
        "open": "Probes the target answered with SYN-ACK (open ports).",
        "sample_ports": "Up to 20 of the probed ports.",
    },
)


@dataclass(frozen=True)
class AddressSweepConfig:
    enabled: bool = _f(
        True, "Horizontal scan: one source probing one port (or ICMP echo) on many hosts."
    )
    min_hosts: int = _f(
        25, "Distinct probed hosts on one port (Zeek default 25).", min=2, max=1000000
    )
    horizon_seconds: float = _f(
        300.0, "Probes are accumulated over this many seconds.", min=1, max=86400
    )
    p2p_min_ports: int = _f(
        50,
        "A source whose probes went to at least this many distinct "
        "ports, about one port per host, is a peer-to-peer client (peers "
        "listen on random ports), not a sweeper (0 disables this).",
        min=0,
        max=65536,
    )
    max_state_rows: int = _f(
        1_000_000, "Upper bound of probes remembered across windows.", min=1000, max=100_000_000
    )
    severity: str = _f("warning", "Severity of detections.", choices=SEVERITIES)


ADDRESS_SWEEP = DetectorSpec(
    name="address_sweep",
    settings=AddressSweepConfig,
    help="Horizontal scan / ICMP sweep.",
    implementation=_HERE + ".address_sweep:AddressSweepDetector",
    evidence={
        "distinct_hosts": "Distinct hosts probed on the service within the horizon.",
        "threshold": "The threshold crossed (min_hosts).",
        **_PROBES,
        "answered": "Probes a host answered (SYN-ACK or echo reply).",
        "sample_hosts": "Up to 10 of the probed hosts.",
    },
)


@dataclass(frozen=True)
class SynFloodConfig:
    enabled: bool = _f(True, "Many half-open connections to one victim port.")
    min_half_open: int = _f(
        200,
        "Half-open (SYN without the client's ACK) connections towards one victim port in a window.",
        min=1,
        max=100000000,
    )
    min_ratio: float = _f(
        0.8, "Share of the victim port's TCP flows that are half-open.", min=0, max=1
    )
    spoofed_min_sources: int = _f(
        50,
        "With at least this many sources the flood is reported as spoofed (source 'many').",
        min=2,
        max=100000000,
    )
    severity: str = _f("critical", "Severity of detections.", choices=SEVERITIES)


SYN_FLOOD = DetectorSpec(
    name="syn_flood",
    settings=SynFloodConfig,
    help="SYN flood.",
    implementation=_HERE + ".syn_flood:SynFloodDetector",
    evidence={
        "half_open": "Half-open connections towards the victim port in the window.",
        "threshold": "The threshold crossed (min_half_open).",
        "tcp_flows": "TCP flows towards the victim port in the window.",
        "half_open_ratio": "half_open / tcp_flows.",
        "sources": "Distinct sources of the half-open connections.",
        "spoofed": "Whether sources reached spoofed_min_sources (source reported as 'many').",
        "dst_port": "The victim port.",
        "syn_packets": "SYN packets sent in the half-open connections.",
        "unanswered": "Half-open connections the victim never answered.",
        "seconds": "Time from the first to the last half-open connection.",
        "top_sources": "The five sources with most half-open connections, with counts.",
    },
)


@dataclass(frozen=True)
class UdpFloodConfig:
    enabled: bool = _f(True, "Detect this flood.")
    min_packets_per_second: float = _f(
        1000.0,
        "Packets per second towards one victim, over the "
        "time its flows were active (at least 1 s).",
        min=1,
        max=1e9,
    )
    min_packets: int = _f(
        2000, "Packets towards the victim in the window.", min=1, max=1_000_000_000
    )
    max_response_ratio: float = _f(
        0.2,
        "Largest ratio of the victim's reply packets to the "
        "packets it received (floods go unanswered; 1 disables).",
        min=0,
        max=1,
    )
    min_sources: int = _f(
        1, "Distinct sources needed (spoofed floods use many).", min=1, max=1000000
    )
    ignore_ports: tuple[int, ...] = _f(
        (162, 514, 2055, 4739, 6343),
        "Destination ports whose collectors legitimately "
        "receive unanswered UDP at high rates (SNMP traps, "
        "syslog, NetFlow, IPFIX, sFlow).",
    )
    severity: str = _f("critical", "Severity of detections.", choices=SEVERITIES)


UDP_FLOOD = DetectorSpec(
    name="udp_flood",
    settings=UdpFloodConfig,
    help="UDP flood.",
    implementation=_HERE + ".udp_flood:UdpFloodDetector",
    evidence={
        **_FLOOD_RATE,
        "reply_ratio": "reply_packets / packets (at most max_response_ratio).",
        **_FLOOD_SOURCES,
    },
)


@dataclass(frozen=True)
class IcmpFloodConfig:
    enabled: bool = _f(True, "Detect ICMP/ICMPv6 floods.")
    min_packets_per_second: float = _f(
        500.0,
        "ICMP packets per second towards one victim, over "
        "the time its flows were active (at least 1 s).",
        min=1,
        max=1e9,
    )
    min_packets: int = _f(
        1000, "ICMP packets towards the victim in the window.", min=1, max=1_000_000_000
    )
    min_sources: int = _f(1, "Distinct sources needed.", min=1, max=1000000)
    severity: str = _f("critical", "Severity of detections.", choices=SEVERITIES)


ICMP_FLOOD = DetectorSpec(
    name="icmp_flood",
    settings=IcmpFloodConfig,
    help="ICMP flood.",
    implementation=_HERE + ".icmp_flood:IcmpFloodDetector",
    evidence={**_FLOOD_RATE, **_FLOOD_SOURCES},
)


@dataclass(frozen=True)
class BruteForceConfig:
    enabled: bool = _f(True, "Many short connections from one source to a login service.")
    ports: tuple[int, ...] = _f(
        (21, 22, 23, 25, 110, 143, 465, 587, 993, 995, 3389),
        "Login service ports (FTP, SSH, Telnet, SMTP, POP3, IMAP, RDP).",
    )
    min_attempts: int = _f(
        5, "Connection attempts (ET rules: 5 SSH attempts in 120 s).", min=2, max=1000000
    )
    horizon_seconds: float = _f(
        120.0, "Attempts are counted over this many seconds.", min=1, max=86400
    )
    max_flow_packets: int = _f(
        40, "Flows with more packets are sessions, not attempts.", min=1, max=1000000
    )
    max_state_rows: int = _f(
        1_000_000, "Upper bound of attempts remembered across windows.", min=1000, max=100_000_000
    )
    severity: str = _f("warning", "Severity of detections.", choices=SEVERITIES)


BRUTE_FORCE = DetectorSpec(
    name="brute_force",
    settings=BruteForceConfig,
    help="Login brute force.",
    implementation=_HERE + ".brute_force:BruteForceDetector",
    evidence={
        "attempts": "Short completed connections to the login port within the horizon.",
        "threshold": "The threshold crossed (min_attempts).",
        "attempts_in_window": "Of those, the ones that started in this window.",
        "port": "The login port.",
        "service": "The service usually on that port (ssh, rdp, ...).",
        "horizon_seconds": _HORIZON,
        "mean_packets": "Mean packets per attempt.",
        "mean_bytes_sent": "Mean bytes the source sent per attempt.",
        "mean_duration_seconds": "Mean attempt duration.",
        "first_seen": _FIRST_SEEN,
        "last_seen": _LAST_SEEN,
    },
)


@dataclass(frozen=True)
class DnsTunnelConfig:
    enabled: bool = _f(
        True, "Long, high-entropy query names; many unique subdomains of one domain."
    )
    min_qname_length: int = _f(
        40, "Query names at least this long count as suspicious.", min=1, max=255
    )
    min_entropy: float = _f(
        3.5, "Shannon entropy (bits/char) above which a name is suspicious.", min=0, max=8
    )
    min_unique_subdomains: int = _f(
        50, "Distinct names under one domain from one source.", min=2, max=1000000
    )
    min_suspicious_share: float = _f(
        0.5, "Share of those names that must be long and high-entropy.", min=0, max=1
    )
    horizon_seconds: float = _f(
        600.0, "Names are accumulated over this many seconds.", min=1, max=86400
    )
    max_state_rows: int = _f(
        1_000_000, "Upper bound of names remembered across windows.", min=1000, max=100_000_000
    )
    severity: str = _f("warning", "Severity of detections.", choices=SEVERITIES)


DNS_TUNNEL = DetectorSpec(
    name="dns_tunnel",
    settings=DnsTunnelConfig,
    help="DNS tunnelling.",
    implementation=_HERE + ".dns_tunnel:DnsTunnelDetector",
    evidence={
        "unique_names": "Distinct query names under the domain within the horizon.",
        "threshold": "The threshold crossed (min_unique_subdomains).",
        "queries": "Queries under the domain within the horizon.",
        "suspicious_share": "Share of names that are long and high-entropy.",
        "mean_name_length": "Mean query name length (characters).",
        "max_name_length": "Longest query name (characters).",
        "mean_entropy": "Mean Shannon entropy of the names (bits per character).",
        "horizon_seconds": _HORIZON,
        "sample_names": "Up to 3 of the names (cut at 80 characters).",
    },
)


@dataclass(frozen=True)
class BeaconConfig:
    enabled: bool = _f(True, "A host contacting one peer at regular intervals with similar sizes.")
    min_connections: int = _f(
        8, "Connections needed before regularity is judged.", min=3, max=1000000
    )
    max_interval_cv: float = _f(
        0.1,
        "Largest robust coefficient of variation of the intervals "
        "(1.4826 x MAD / median: a missed beat is tolerated).",
        min=0,
        max=10,
    )
    max_size_cv: float = _f(
        0.2, "Largest coefficient of variation of the bytes sent.", min=0, max=10
    )
    min_regular_share: float = _f(
        0.8,
        "Share of intervals within 2 x max_interval_cv of the "
        "median (few samples can fake a small MAD).",
        min=0,
        max=1,
    )
    min_interval_seconds: float = _f(
        5.0, "Shorter median intervals are bursts, not beacons.", min=0, max=86400
    )
    horizon_seconds: float = _f(3600.0, "History kept per pair.", min=10, max=604800)
    max_state_rows: int = _f(
        1_000_000,
        "Upper bound of connections remembered across windows.",
        min=1000,
        max=100_000_000,
    )
    severity: str = _f("warning", "Severity of detections.", choices=SEVERITIES)


BEACON = DetectorSpec(
    name="beacon",
    settings=BeaconConfig,
    help="Beaconing.",
    implementation=_HERE + ".beacon:BeaconDetector",
    evidence={
        "connections": "Connections of the pair within the horizon.",
        "threshold": "The threshold crossed (min_connections).",
        "median_interval_seconds": "Median time between connection starts.",
        "interval_robust_cv": "1.4826 x MAD / median of the intervals.",
        "regular_share": "Share of intervals within 2 x max_interval_cv of the median.",
        "mean_bytes_sent": "Mean bytes the source sent per connection.",
        "size_cv": "Coefficient of variation of the bytes sent.",
        "protocol": "Transport protocol of the pair.",
        "horizon_seconds": _HORIZON,
    },
)


# One line per detector, in the order of config.yaml, the metrics and the reports.
REGISTRY: dict[str, DetectorSpec] = registry(
    PORT_SCAN,
    ADDRESS_SWEEP,
    SYN_FLOOD,
    UDP_FLOOD,
    ICMP_FLOOD,
    BRUTE_FORCE,
    DNS_TUNNEL,
    BEACON,
)
