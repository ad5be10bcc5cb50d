"""The detector catalog: every detector's name, settings and evidence, declared as data.

A detector is two things: its implementation (``detectors/<name>.py``: numpy, state,
``detect``) and its declaration here (a settings dataclass in the ``setting(...)``
style of ``config``, a :class:`DetectorSpec` naming its section help, its
implementation, the evidence keys its detections carry and the one that measures a
finding's strength, and one line in
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
    # the evidence key that says how strong a finding is: an incident's peak finding is
    # the one with the largest value (incidents.magnitude)
    peak_evidence: str

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
    "peak_packets_per_second": "Busiest one-second rate in the window, each flow's packets "
    "spread over its slice of the window.",
    "threshold_packets_per_second": "The detector's min_packets_per_second.",
    "reply_packets": "Packets the victim sent back.",
}
_FLOOD_SOURCES = {
    "flows": "Flows (per-window slices) towards the victim in the window.",
    "sources": "Distinct sources of those flows.",
    "top_sources": "The five sources that sent most packets, with counts.",
}


@dataclass(frozen=True)
class PortScanConfig:
    enabled: bool = _f(
        True,
        "Vertical scan: one source probing many ports of one host (SYN, FIN, Maimon, "
        "Xmas, NULL, ACK and UDP probes), or many sources probing one host.",
    )
    min_ports: int = _f(
        15,
        "Fast tier: distinct probed ports on one host within horizon_seconds (Zeek default 15).",
        min=2,
        max=65535,
    )
    horizon_seconds: float = _f(
        300.0,
        "Fast tier horizon: probes are accumulated over this many seconds (Zeek: 5 minutes).",
        min=1,
        max=86400,
    )
    slow_min_ports: int = _f(
        25,
        "Slow tier: distinct probed ports on one host within slow_horizon_seconds, so a "
        "scan paced under the fast tier (or in bursts kept under it) still adds up "
        "(0 disables the tier).",
        min=0,
        max=65535,
    )
    slow_horizon_seconds: float = _f(
        3600.0,
        "Slow tier horizon (and how long a probed host and port is remembered).",
        min=1,
        max=86400,
    )
    distributed_min_sources: int = _f(
        5,
        "Distributed scan: at least this many sources, each probing at least "
        "distributed_min_ports_per_source ports of one host within horizon_seconds "
        "(0 disables the view).",
        min=0,
        max=1000000,
    )
    distributed_min_ports_per_source: int = _f(
        3,
        "Distinct ports a source must probe on the host to count towards a distributed scan.",
        min=1,
        max=65535,
    )
    distributed_min_ports: int = _f(
        30,
        "Distinct ports those sources probed on the host together.",
        min=2,
        max=65535,
    )
    max_state_rows: int = _f(
        1_000_000,
        "Upper bound of (source, host, port) contacts remembered across windows "
        "(least recently seen dropped first).",
        min=1000,
        max=100_000_000,
    )
    severity: str = _f("warning", "Severity of detections.", choices=SEVERITIES)


_SCAN_SOURCES = {
    "probe_kinds": "Probes by kind (syn, fin, xmas, null/ack, udp, echo), counted per "
    "distinct contact.",
    "sources": "Distinct sources (1, or several for a distributed scan reported as 'many').",
    "top_sources": "The five sources with most distinct ports (or hosts), with counts.",
}


PORT_SCAN = DetectorSpec(
    name="port_scan",
    settings=PortScanConfig,
    help="Vertical port scan.",
    implementation=_HERE + ".port_scan:PortScanDetector",
    evidence={
        "distinct_ports": "Distinct ports (tcp/N, udp/N) probed on the target within the horizon.",
        "threshold": "The threshold crossed (min_ports, slow_min_ports or distributed_min_ports).",
        **_PROBES,
        "open": "Probes the target answered with SYN-ACK (open ports).",
        "sample_ports": "Up to 20 of the probed ports.",
        **_SCAN_SOURCES,
    },
    peak_evidence="distinct_ports",
)


@dataclass(frozen=True)
class AddressSweepConfig:
    enabled: bool = _f(
        True,
        "Horizontal scan: one source probing one service (or ICMP echo) on many hosts, "
        "or many sources sweeping one network.",
    )
    min_hosts: int = _f(
        25,
        "Fast tier: distinct probed hosts on one service within horizon_seconds (Zeek default 25).",
        min=2,
        max=1000000,
    )
    horizon_seconds: float = _f(300.0, "Fast tier horizon (Zeek: 5 minutes).", min=1, max=86400)
    slow_min_hosts: int = _f(
        40,
        "Slow tier: distinct probed hosts on one service within slow_horizon_seconds "
        "(0 disables the tier).",
        min=0,
        max=1000000,
    )
    slow_horizon_seconds: float = _f(
        3600.0,
        "Slow tier horizon (and how long a contact is remembered).",
        min=1,
        max=86400,
    )
    distributed_min_sources: int = _f(
        5,
        "Distributed sweep: at least this many sources, each failing to reach at least "
        "distributed_min_hosts_per_source hosts of one /24 (IPv6: /64) on one service "
        "(hosts that never answered it), min_hosts hosts together, within horizon_seconds "
        "(0 disables the view).",
        min=0,
        max=1000000,
    )
    distributed_min_hosts_per_source: int = _f(
        2,
        "Hosts a source must probe in the network to count towards a distributed sweep.",
        min=1,
        max=1000000,
    )
    p2p_min_ports: int = _f(
        20,
        "A source that exchanged UDP both ways with peers on at least this many distinct "
        "unprivileged ports, about one port per peer, runs a peer-to-peer overlay "
        "(peers listen on random ports); its UDP sweeps of unprivileged ports are not "
        "reported. Only answered exchanges count, so unanswered decoys buy nothing "
        "(0 disables this).",
        min=0,
        max=65536,
    )
    p2p_min_peers: int = _f(
        3,
        "A swept unprivileged service is peer-to-peer (Delivery Optimization, BitTorrent "
        "peers on a common port) when at least this many of the hosts the source "
        "reached on that same service exchanged p2p_min_peer_bytes with it (0 disables "
        "this).",
        min=0,
        max=1000000,
    )
    p2p_min_peer_share: float = _f(
        0.1,
        "... and when those content peers number at least this share of the swept hosts.",
        min=0,
        max=1,
    )
    p2p_min_peer_bytes: int = _f(
        16384,
        "Bytes one side of a session must carry for its peer to count as a content peer "
        "(one BitTorrent block).",
        min=1,
        max=1_000_000_000,
    )
    resolver_min_clients: int = _f(
        3,
        "A host that answered DNS for this many clients within slow_horizon_seconds is a "
        "resolver: the authoritative servers it queries on port 53 while recursing "
        "(thousands, a few percent of them not answering) are not swept (0 disables this).",
        min=0,
        max=1000000,
    )
    resolver_min_answered_share: float = _f(
        0.3,
        "... while at least this share of the hosts the resolver queried on port 53 "
        "(within slow_horizon_seconds) answered it: a host that answers DNS for a few "
        "clients and sweeps port 53 over hosts that mostly do not run DNS (a few percent "
        "answer) is still reported, while a resolver whose IPv6 is broken (about half "
        "of the servers' addresses unanswered) is not (0: every resolver's queries are "
        "exempt).",
        min=0,
        max=1,
    )
    client_min_success_ratio: float = _f(
        10.0,
        "A source whose completed exchanges on the swept service reached at least this "
        "many times as many distinct hosts as it probed is a client of a service spread "
        "over many hosts (a mail server delivering to recipients' MX hosts, a crawler): "
        "its failures are not a sweep (0 disables this).",
        min=0,
        max=1000000,
    )
    revisit_seconds: float = _f(
        10.0,
        "A host contacted again at least this long after the first contact is revisited "
        "(a poller's schedule; retries of one probe come sooner).",
        min=0,
        max=86400,
    )
    poller_min_share: float = _f(
        0.5,
        "A source whose contacts on the service are mostly revisited and mostly answered "
        "(each at least this share of the hosts) polls them: a monitoring server, not a "
        "sweeper (1 disables this).",
        min=0,
        max=1,
    )
    poller_hold_seconds: float = _f(
        300.0,
        "A sweep most of whose hosts answered is reported only once its first contact is "
        "this old, so a poller's first round can show its schedule (mostly unanswered "
        "sweeps are reported at once).",
        min=0,
        max=86400,
    )
    max_state_rows: int = _f(
        1_000_000,
        "Upper bound of (source, host, service) contacts remembered across windows "
        "(least recently seen dropped first).",
        min=1000,
        max=100_000_000,
    )
    severity: str = _f("warning", "Severity of detections.", choices=SEVERITIES)


ADDRESS_SWEEP = DetectorSpec(
    name="address_sweep",
    settings=AddressSweepConfig,
    help="Horizontal scan / ICMP sweep.",
    implementation=_HERE + ".address_sweep:AddressSweepDetector",
    evidence={
        "distinct_hosts": "Distinct hosts probed on the service within the horizon.",
        "threshold": "The threshold crossed (min_hosts or slow_min_hosts).",
        **_PROBES,
        "answered": "Probed hosts that answered (SYN-ACK, echo reply) or served the source.",
        "sample_hosts": "Up to 10 of the probed hosts.",
        **_SCAN_SOURCES,
    },
    peak_evidence="distinct_hosts",
)


_FLOOD_BASELINE_SECONDS = (
    "Time constant of each victim's baseline (an exponential moving average of its "
    "traffic in windows without a finding for it)."
)
_FLOOD_WARMUP = "A victim's baseline is used once it has been followed this long."
_FLOOD_STATE_ROWS = (
    "Upper bound of victims followed (baselines) and of victims whose last seconds are "
    "carried into the next window (the busiest kept)."
)
_FLOOD_SEVERITY = (
    "Severity of detections; raised to critical at the critical rate (critical pages: "
    "see docs/detectors.md, Floods)."
)


@dataclass(frozen=True)
class SynFloodConfig:
    enabled: bool = _f(True, "Many half-open connections to one victim port.")
    min_half_open: int = _f(
        200,
        "Half-open (SYN without the client's ACK) connections towards one victim port within "
        "the busiest span of one window length (the last seconds of the window before "
        "included, so bursts cut by a window boundary count whole).",
        min=1,
        max=100000000,
    )
    min_ratio: float = _f(
        0.8, "Share of the victim port's TCP connections that are half-open.", min=0, max=1
    )
    spoofed_min_sources: int = _f(
        50,
        "With at least this many sources the flood is reported as spoofed (source 'many').",
        min=2,
        max=100000000,
    )
    spoofed_min_ratio: float = _f(
        0.5,
        "Half-open share that is enough when the half-open connections come from "
        "spoofed_min_sources sources or more.",
        min=0,
        max=1,
    )
    min_ratio_rise: float = _f(
        0.3,
        "Once the port's baseline is warm: a rise of the half-open share by this much over "
        "the port's own is enough (a busy server serving its clients while flooded).",
        min=0,
        max=1,
    )
    rise_factor: float = _f(
        2.0,
        "... provided the half-open connections are also this many times the port's usual.",
        min=1,
        max=1000,
    )
    baseline_seconds: float = _f(600.0, _FLOOD_BASELINE_SECONDS, min=60, max=86400)
    baseline_warmup_seconds: float = _f(180.0, _FLOOD_WARMUP, min=0, max=86400)
    critical_half_open_per_second: float = _f(
        1000.0,
        "Half-open connections per second (over the span) at which a SYN flood is critical "
        "(0: never).",
        min=0,
        max=1e9,
    )
    max_state_rows: int = _f(50_000, _FLOOD_STATE_ROWS, min=100, max=10_000_000)
    severity: str = _f("warning", _FLOOD_SEVERITY, choices=SEVERITIES)


_FLOOD_STATE = {
    "since": "Start of the first window of this flood (reported in every window it lasts).",
}


SYN_FLOOD = DetectorSpec(
    name="syn_flood",
    settings=SynFloodConfig,
    help="SYN flood.",
    implementation=_HERE + ".syn_flood:SynFloodDetector",
    evidence={
        "half_open": "Half-open connections towards the victim port in the busiest span.",
        "threshold": "The threshold crossed (min_half_open).",
        "tcp_flows": "TCP connections towards the victim port in the same span.",
        "half_open_ratio": "half_open / tcp_flows.",
        "reason": "ratio (min_ratio), spoofed (many sources, spoofed_min_ratio) or rise "
        "(over the port's baseline, min_ratio_rise).",
        "baseline_half_open_ratio": "The port's usual half-open share (null while not warm).",
        "baseline_half_open_per_minute": "The port's usual half-open connections per minute "
        "(null while not warm).",
        "half_open_per_second": "half_open / span_seconds (what critical_half_open_per_second "
        "is compared with).",
        "span_seconds": "Length of the span (one window).",
        **_FLOOD_STATE,
        "sources": "Distinct sources of the half-open connections (this window).",
        "spoofed": "Whether sources reached spoofed_min_sources (source reported as 'many').",
        "dst_port": "The victim port.",
        "syn_packets": "SYN packets sent in the half-open connections (this window).",
        "unanswered": "Half-open connections the victim never answered (this window).",
        "seconds": "Time from the first to the last half-open connection (this window).",
        "top_sources": "The five sources with most half-open connections, with counts.",
    },
    peak_evidence="half_open",
)


_FLOOD_SHAPE = {
    "reason": "many_sources (spoofed_min_sources), one_source (one source alone at "
    "the flood rate, not in an exchange with the victim) or rise (over the victim's "
    "baseline, rise_factor).",
    "baseline_packets_per_second": "The victim's usual busiest second (null while not warm).",
    "top_source_packets_per_second": "The busiest second of the top source alone.",
    "span_packets": "Packets in the busiest span of one window length (min_packets).",
    **_FLOOD_STATE,
}


@dataclass(frozen=True)
class UdpFloodConfig:
    enabled: bool = _f(True, "Detect this flood.")
    min_packets_per_second: float = _f(
        1000.0,
        "Packets per second towards one victim in its busiest second (each flow's packets "
        "spread over its slice of the window).",
        min=1,
        max=1e9,
    )
    min_packets: int = _f(
        2000,
        "Packets towards the victim within the busiest span of one window length (the last "
        "seconds of the window before included).",
        min=1,
        max=1_000_000_000,
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
    spoofed_min_sources: int = _f(
        50,
        "With at least this many sources the traffic is shaped like a spoofed or "
        "distributed flood.",
        min=2,
        max=100000000,
    )
    rise_factor: float = _f(
        2.0,
        "Once the victim's baseline is warm, a busiest second this many times its usual "
        "one, and higher by min_packets_per_second, is a flood whatever its shape.",
        min=1,
        max=1000,
    )
    baseline_seconds: float = _f(600.0, _FLOOD_BASELINE_SECONDS, min=60, max=86400)
    baseline_warmup_seconds: float = _f(180.0, _FLOOD_WARMUP, min=0, max=86400)
    critical_packets_per_second: float = _f(
        50000.0,
        "Busiest-second rate at which a UDP flood is critical (0: never).",
        min=0,
        max=1e9,
    )
    max_state_rows: int = _f(50_000, _FLOOD_STATE_ROWS, min=100, max=10_000_000)
    ignore_ports: tuple[int, ...] = _f(
        (162, 514, 2055, 4739, 6343),
        "Destination ports whose collectors legitimately "
        "receive unanswered UDP at high rates (SNMP traps, "
        "syslog, NetFlow, IPFIX, sFlow).",
    )
    severity: str = _f("warning", _FLOOD_SEVERITY, choices=SEVERITIES)


UDP_FLOOD = DetectorSpec(
    name="udp_flood",
    settings=UdpFloodConfig,
    help="UDP flood.",
    implementation=_HERE + ".udp_flood:UdpFloodDetector",
    evidence={
        **_FLOOD_RATE,
        "reply_ratio": "reply_packets / packets (at most max_response_ratio).",
        **_FLOOD_SHAPE,
        **_FLOOD_SOURCES,
    },
    peak_evidence="peak_packets_per_second",
)


@dataclass(frozen=True)
class IcmpFloodConfig:
    enabled: bool = _f(True, "Detect ICMP/ICMPv6 floods.")
    min_packets_per_second: float = _f(
        500.0,
        "ICMP packets per second towards one victim in its busiest second (each flow's "
        "packets spread over its slice of the window).",
        min=1,
        max=1e9,
    )
    min_packets: int = _f(
        1000,
        "ICMP packets towards the victim within the busiest span of one window length.",
        min=1,
        max=1_000_000_000,
    )
    min_sources: int = _f(1, "Distinct sources needed.", min=1, max=1000000)
    spoofed_min_sources: int = _f(
        50,
        "With at least this many sources the traffic is shaped like a spoofed or "
        "distributed flood.",
        min=2,
        max=100000000,
    )
    rise_factor: float = _f(
        2.0,
        "Once the victim's baseline is warm, a busiest second this many times its usual "
        "one, and higher by min_packets_per_second, is a flood whatever its shape.",
        min=1,
        max=1000,
    )
    baseline_seconds: float = _f(600.0, _FLOOD_BASELINE_SECONDS, min=60, max=86400)
    baseline_warmup_seconds: float = _f(180.0, _FLOOD_WARMUP, min=0, max=86400)
    critical_packets_per_second: float = _f(
        20000.0,
        "Busiest-second rate at which an ICMP flood is critical (0: never).",
        min=0,
        max=1e9,
    )
    max_state_rows: int = _f(50_000, _FLOOD_STATE_ROWS, min=100, max=10_000_000)
    severity: str = _f("warning", _FLOOD_SEVERITY, choices=SEVERITIES)


ICMP_FLOOD = DetectorSpec(
    name="icmp_flood",
    settings=IcmpFloodConfig,
    help="ICMP flood.",
    implementation=_HERE + ".icmp_flood:IcmpFloodDetector",
    evidence={**_FLOOD_RATE, **_FLOOD_SHAPE, **_FLOOD_SOURCES},
    peak_evidence="peak_packets_per_second",
)


@dataclass(frozen=True)
class BruteForceConfig:
    enabled: bool = _f(
        True,
        "Repeated failed-login-shaped sessions (short, small and alike on the server "
        "side) to a login service, from one source or from many.",
    )
    ports: tuple[int, ...] = _f(
        (21, 22, 23, 25, 110, 143, 465, 587, 993, 995, 3389),
        "Login service ports (FTP, SSH, Telnet, SMTP, POP3, IMAP, RDP).",
    )
    min_attempts: int = _f(
        5,
        "Fast tier: similar attempts from one source to one server and port within "
        "horizon_seconds (ET rules: 5 SSH attempts in 120 s).",
        min=2,
        max=1000000,
    )
    horizon_seconds: float = _f(120.0, "Fast tier horizon.", min=1, max=86400)
    slow_min_attempts: int = _f(
        30,
        "Slow tier: similar attempts within slow_horizon_seconds (Zeek: 30 failed SSH "
        "logins in 30 minutes; 0 disables the tier).",
        min=0,
        max=1000000,
    )
    slow_horizon_seconds: float = _f(
        1800.0, "Slow tier horizon (and how long sessions are remembered).", min=1, max=86400
    )
    max_server_bytes: int = _f(
        16384,
        "Sessions whose server sent more are not attempts: a refusal after a TLS or SSH "
        "handshake is a few KB, a successful mail or file session is more.",
        min=1,
        max=1_000_000_000,
    )
    max_flow_packets: int = _f(
        400,
        "Sessions with more packets are interactive, not attempts (several passwords "
        "per connection stay far below).",
        min=1,
        max=1000000,
    )
    similar_tolerance: float = _f(
        0.25,
        "Attempts are alike when the bytes each side sent lie within this fraction of "
        "the attempts' median (or similar_min_bytes, whichever is larger).",
        min=0,
        max=10,
    )
    similar_min_bytes: int = _f(
        512,
        "Smallest tolerance in bytes (password lengths and protocol chatter vary a little).",
        min=0,
        max=1_000_000,
    )
    internal_min_attempt_seconds: float = _f(
        1.0,
        "Between two site-internal addresses (RFC 1918, IPv6 ULA), a session to a login "
        "port other than RDP is an attempt only if it lasted this long: a failed password "
        "costs the server's failure delay (PAM and Dovecot 2 s, busybox login 3 s), while "
        "a site's automated key logins (check_by_ssh, CI polling git over SSH) take a "
        "fraction of a second. Guessing a server without a failure delay from inside is "
        "then not counted (0: every session counts).",
        min=0,
        max=3600,
    )
    min_similar_share: float = _f(
        0.7,
        "Share of all the pair's sessions within slow_horizon_seconds (distributed: of the "
        "server's within horizon_seconds) that must be alike attempts: delivered mail "
        "(varied messages) and many users behind one address (varied, larger "
        "responses) fall below it.",
        min=0,
        max=1,
    )
    distributed_min_sources: int = _f(
        10,
        "Distributed guessing: alike attempts against one server and port from at least "
        "this many sources within horizon_seconds (0 disables the view).",
        min=0,
        max=1000000,
    )
    distributed_min_attempts: int = _f(
        20,
        "Alike attempts those sources made together.",
        min=2,
        max=1000000,
    )
    max_state_rows: int = _f(
        1_000_000, "Upper bound of sessions remembered across windows.", min=1000, max=100_000_000
    )
    severity: str = _f("warning", "Severity of detections.", choices=SEVERITIES)


BRUTE_FORCE = DetectorSpec(
    name="brute_force",
    settings=BruteForceConfig,
    help="Login brute force.",
    implementation=_HERE + ".brute_force:BruteForceDetector",
    evidence={
        "attempts": "Alike attempts to the login port within the horizon.",
        "threshold": "The threshold crossed (min_attempts, slow_min_attempts or "
        "distributed_min_attempts).",
        "attempts_in_window": "Of those, the ones that started in this window.",
        "port": "The login port.",
        "service": "The service usually on that port (ssh, rdp, ...).",
        "horizon_seconds": _HORIZON,
        "mean_packets": "Mean packets per attempt.",
        "mean_bytes_sent": "Mean bytes the source sent per attempt.",
        "mean_duration_seconds": "Mean attempt duration.",
        "first_seen": _FIRST_SEEN,
        "last_seen": _LAST_SEEN,
        "mean_bytes_received": "Mean bytes the server sent per attempt.",
        "similar_share": "Share of the sessions (the pair's within the slow horizon; for "
        "'many', the server's within the horizon) that are alike attempts.",
        "server_resets": "Attempts the server ended with a reset.",
        "sources": "Distinct sources (1, or several for distributed guessing reported as 'many').",
        "top_sources": "The five sources with most attempts, with counts.",
    },
    peak_evidence="attempts",
)


@dataclass(frozen=True)
class DnsTunnelConfig:
    enabled: bool = _f(
        True, "Many distinct, long or random query names under one domain from one source."
    )
    min_qname_length: int = _f(40, "Query names at least this long count as long.", min=1, max=255)
    min_entropy: float = _f(
        3.5, "Shannon entropy (bits/char) from which a long name counts as random.", min=0, max=8
    )
    min_unique_subdomains: int = _f(
        50,
        "Long names rule: distinct names under one domain (or spread over several) "
        "from one source within the horizon.",
        min=2,
        max=1000000,
    )
    min_suspicious_share: float = _f(
        0.5, "Long names rule: share of those names that are long and random.", min=0, max=1
    )
    min_volume_names: int = _f(
        100,
        "Volume rule (short names): distinct names under one domain from one source "
        "within the horizon.",
        min=2,
        max=1000000,
    )
    min_volume_bytes: int = _f(
        1500,
        "Volume rule: characters of subdomain those distinct names carry together.",
        min=0,
        max=1_000_000_000,
    )
    min_fresh_share: float = _f(
        0.8,
        "Volume rule: distinct names / queries (a poller asks the same names again).",
        min=0,
        max=1,
    )
    min_active_minutes: int = _f(
        5,
        "Volume rule: distinct minutes with queries (a one-off burst is not a channel).",
        min=1,
        max=100000,
    )
    # Reputation and blocklist lookups: long, random-looking names by design, answered
    # by the provider's own servers (no attacker can receive data through them).
    reputation_zones: tuple[str, ...] = _f(
        (
            "spamhaus.org",  # zen, sbl, xbl, pbl, dbl, zrd (public mirrors)
            "spamhaus.net",  # Data Query Service: <key>.zen.dq..., hashed HBL (_file, _email)
            "spamcop.net",  # bl.spamcop.net
            "uribl.com",  # multi.uribl.com
            "surbl.org",  # multi.surbl.org
            "barracudacentral.org",  # b.barracudacentral.org
            "dnswl.org",  # list.dnswl.org
            "mailspike.net",  # bl.mailspike.net, rep.mailspike.net
            "abusix.zone",  # Abusix Mail Intelligence
            "senderscore.com",  # bl.score.senderscore.com
            "hash.cymru.com",  # Team Cymru malware hash registry
            "sophosxl.net",  # Sophos Live Protection file and URL lookups
            "avqs.mcafee.com",  # McAfee/Trellix GTI file reputation
            "avts.mcafee.com",
        ),
        "Zones whose names are never tunnels: DNS blocklists, URI blocklists, hashed "
        "lookups (Spamhaus HBL, Team Cymru MHR) and antivirus reputation services; add "
        "your own (each covers every name under it).",
    )
    resolver_min_clients: int = _f(
        3,
        "A host that answered DNS for this many clients within the horizon is a "
        "resolver: names it forwards for clients seen here are judged at the client.",
        min=1,
        max=1000000,
    )
    horizon_seconds: float = _f(
        3600.0, "Names are accumulated over this many seconds.", min=1, max=86400
    )
    max_state_rows: int = _f(
        1_000_000,
        "Upper bound of (source, name, window) rows remembered (about 70 bytes each).",
        min=1000,
        max=100_000_000,
    )
    severity: str = _f("warning", "Severity of detections.", choices=SEVERITIES)


DNS_TUNNEL = DetectorSpec(
    name="dns_tunnel",
    settings=DnsTunnelConfig,
    help="DNS tunnelling.",
    implementation=_HERE + ".dns_tunnel:DnsTunnelDetector",
    evidence={
        "rule": "long_names, volume (short names) or spread (over several domains).",
        "unique_names": "Distinct query names within the horizon (a one-socket stream "
        "counts its queries).",
        "threshold": "The threshold crossed (min_unique_subdomains or min_volume_names).",
        "queries": "Queries under the domain(s) within the horizon.",
        "domains": "Registered domains the names are under (1 unless spread).",
        "suspicious_share": "Share of names that are long and high-entropy.",
        "name_bytes": "Characters of subdomain the distinct names carry.",
        "fresh_share": "Distinct names / queries.",
        "active_minutes": "Distinct minutes with queries.",
        "mean_name_length": "Mean query name length (characters).",
        "max_name_length": "Longest query name (characters).",
        "mean_entropy": "Mean Shannon entropy of the names (bits per character).",
        "horizon_seconds": _HORIZON,
        "sample_names": "Up to 3 of the names (cut at 80 characters).",
        "sample_domains": "Up to 5 of the domains, most names first (the target is 'many' "
        "when spread).",
    },
    peak_evidence="unique_names",
)


@dataclass(frozen=True)
class IcmpTunnelConfig:
    enabled: bool = _f(
        True,
        "ICMP echo carrying data between two hosts: replies that are not echoes of the "
        "requests (more data than the requests, or less than the answered requests "
        "carried), in sizes that vary (ptunnel, pingtunnel, hans, icmpsh).",
    )
    min_payload_bytes: int = _f(
        16384,
        "Echo payload (requests and replies) of the exchanges whose replies are not "
        "echoes, from one source to one destination within the horizon (a few commands' "
        "output through icmpsh; ping's replies return exactly what it sent, so no amount "
        "of ordinary ping counts).",
        min=1,
        max=1_000_000_000_000,
    )
    min_packets: int = _f(
        50,
        "Echo messages (requests and replies) of those exchanges: a few odd exchanges "
        "are not a channel.",
        min=1,
        max=1_000_000_000,
    )
    horizon_seconds: float = _f(
        3600.0,
        "Exchanges are accumulated over this many seconds (a slow interactive session adds up).",
        min=60,
        max=86400,
    )
    max_state_rows: int = _f(
        200_000,
        "Upper bound of records remembered (one per flow and window whose replies are not "
        "echoes, about 100 bytes each; ordinary pings leave none).",
        min=1000,
        max=100_000_000,
    )
    severity: str = _f("warning", "Severity of detections.", choices=SEVERITIES)


ICMP_TUNNEL = DetectorSpec(
    name="icmp_tunnel",
    settings=IcmpTunnelConfig,
    help="ICMP tunnelling.",
    implementation=_HERE + ".icmp_tunnel:IcmpTunnelDetector",
    evidence={
        "payload_bytes": "Echo payload (both directions) of the exchanges whose replies are "
        "not echoes, within the horizon.",
        "threshold": "The threshold crossed (min_payload_bytes).",
        "messages": "Echo messages of those exchanges (requests and replies).",
        "requests": "Requests the source sent in them.",
        "replies": "Replies the destination sent in them.",
        "request_bytes": "Payload of the requests.",
        "reply_bytes": "Payload of the replies (an echo returns what its request carried).",
        "max_request_bytes": "Largest request payload of their flows.",
        "max_reply_bytes": "Largest reply payload of their flows.",
        "size_spread_bytes": "How much message sizes vary: a direction's largest payload "
        "minus its smallest mean over a flow's window (ping sends one size).",
        "reason": "replies_carry_more (than the requests), replies_carry_less (than the "
        "answered requests carried) or both.",
        "records": "Flow records (a flow's messages within one window) counted.",
        "horizon_seconds": _HORIZON,
        "first_seen": _FIRST_SEEN,
        "last_seen": _LAST_SEEN,
    },
    peak_evidence="payload_bytes",
)


@dataclass(frozen=True)
class BeaconConfig:
    enabled: bool = _f(
        True, "A host contacting one peer on a schedule (RITA-style score, jitter tolerated)."
    )
    min_connections: int = _f(
        8,
        "Check-ins needed before a pair is scored: connections starting at least "
        "min_interval_seconds after the one before (closer ones, such as a task's output "
        "posted right after a check-in, belong to it), or bursts inside one connection.",
        min=3,
        max=1000000,
    )
    min_interval_seconds: float = _f(
        5.0, "Shorter median intervals are bursts, not beacons.", min=0, max=86400
    )
    min_score: float = _f(
        0.8,
        "Beacon score (mean of the timing, size and duration scores; bursts inside one "
        "connection: of timing and duration) at or above which a pair is reported.",
        min=0,
        max=1,
    )
    min_timing_score: float = _f(
        0.7,
        "Timing score needed: the mean of 1 - MAD/median of the intervals, the share of "
        "intervals within ±40 % of the median and 1 - their coefficient of variation "
        "(intervals over 1.6 typical ones, lost beats, left out). 0.7 keeps "
        "Cobalt-Strike-style jitter up to 60 % in, random (Poisson) contacts (about 0.2) "
        "out. The bar is raised by 1 / intervals (0.14 at 8 check-ins, 0.05 at 20) and by "
        "0.02 per other destination of the source on the same period.",
        min=0,
        max=1,
    )
    min_size_score: float = _f(
        0.8,
        "Size score needed: the mean of 1 - MAD/median of the bytes sent and the share of "
        "connections within ±25 % of the median. A schedule whose content varies "
        "(telemetry batches, reports: about 0.5) carries data, not check-ins (about 0.9).",
        min=0,
        max=1,
    )
    full_coverage_seconds: float = _f(
        900.0,
        "A series spanning this long gets the full duration score; a short regular burst "
        "(a download in chunks, retries) scores low, and a new beacon is reported after "
        "6 to 15 minutes, depending on its regularity.",
        min=1,
        max=604800,
    )
    min_burst_bytes: float = _f(
        100.0,
        "Bursts inside one connection must carry at least this many bytes from the "
        "source on average; smaller ones are keep-alives (TLS, MQTT, WebSocket pings).",
        min=0,
        max=1e9,
    )
    poller_min_destinations: int = _f(
        10,
        "A source with periodic contacts to this many destinations on the same period "
        "is a poller (monitoring), not an implant; its contacts on that period are not "
        "reported.",
        min=2,
        max=1000000,
    )
    poller_period_tolerance: float = _f(
        0.1, "Periods within this relative difference are the same period.", min=0.01, max=1
    )
    prevalence_min_sources: int = _f(
        10,
        "A destination (address, protocol, port) that this many sources contact on a "
        "timer's schedule within the horizon (each from 3 check-ins, timing score 0.9) "
        "is a service the site polls (mail clients, update and management agents), not "
        "a command-and-control server: contacts to it are not reported. So is a C2 that "
        "this many hosts beacon to (an outbreak: the rule's blind spot). 0 disables the "
        "rule.",
        min=0,
        max=1000000,
    )
    judge_internal: bool = _f(
        False,
        "Also judge pairs whose two ends are site-internal (RFC 1918, IPv6 ULA and "
        "link-local): off, as RITA, because what runs on a timer inside a site is "
        "monitoring, CI polling its git server, backups and directory replication; on "
        "finds an implant whose command channel goes through an internal relay, at the "
        "cost of those.",
    )
    ignore_udp_ports: tuple[int, ...] = _f(
        (67, 68, 123, 137, 138, 546, 547, 1900, 3702, 5353, 5355, 5678, 10001),
        "UDP infrastructure services whose schedules are not beacons, matched on either "
        "port: DHCP(v6), NTP, NetBIOS, SSDP, WS-Discovery, mDNS, LLMNR, MikroTik and "
        "Ubiquiti discovery.",
    )
    resolver_min_clients: int = _f(
        3,
        "DNS to a host that answered DNS for this many clients within the horizon is "
        "DNS to a resolver, not a beacon (DNS beacons are dns_tunnel's to find).",
        min=1,
        max=1000000,
    )
    horizon_seconds: float = _f(3600.0, "History kept per pair.", min=10, max=604800)
    max_state_rows: int = _f(
        1_000_000,
        "Upper bound of connections remembered across windows (24 bytes each).",
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
        "score": "Beacon score: mean of timing, size and duration scores (0-1).",
        "threshold": "The score crossed (min_score).",
        "kind": "connections (a series of connections) or in_connection (bursts in one flow).",
        "connections": "Check-ins of the pair within the horizon: connections starting at "
        "least min_interval_seconds after the one before (or bursts inside one connection).",
        "median_interval_seconds": "Median time between connection starts (or bursts).",
        "interval_dispersion": "MAD / median of the intervals (from the idle-gap CV in one flow).",
        "interval_skew": "Bowley skew of the intervals (null inside one connection).",
        "regular_share": "Share of intervals within ±40 % of the median (estimated in one flow).",
        "timing_score": "Mean of 1 - interval_dispersion, regular_share and 1 - the "
        "intervals' coefficient of variation.",
        "median_bytes_sent": "Median bytes the source sent per connection (mean per burst).",
        "size_score": "Mean of 1 - MAD / median of the bytes sent and the share within "
        "±25 % of the median (null inside one connection).",
        "duration_score": "Time spanned by the series / full_coverage_seconds (at most 1).",
        "same_period_destinations": "Destinations the source contacts on the same period.",
        "protocol": "Transport protocol of the pair.",
        "horizon_seconds": _HORIZON,
    },
    peak_evidence="connections",
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
    ICMP_TUNNEL,
    BEACON,
)
