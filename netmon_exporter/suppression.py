"""Allow-lists: set aside the findings a site has declared ordinary, right after analysis.

A monitoring server polls every host, a vulnerability scanner scans, a mail relay
opens many SMTP sessions, a mail server looks up hashed names in reputation zones:
each is a finding a detector is right to make and an on-call team is right not to
want. ``ignore`` in the config lists them, for every detector (``ignore.all``) or
for one (``ignore.<detector>``), by source or destination address/network, by
destination port and by DNS zone.

:func:`suppress` is pure: detections and rules in, (kept, suppressed) out. It never
touches flows, so traffic metrics, flow CSVs and detector state are the same with
or without allow-lists; the daemon counts what was suppressed
(``netmon_detections_suppressed_total{detector,reason}``) and the window report
lists it apart. ``reason`` is one of :data:`REASONS`: which kind of entry matched.

A detection's endpoints are read from its free-text ``source`` and ``target``, as the
detectors write them: an address (``10.0.0.5``, ``2001:db8::5``), an address and port
(``10.0.0.5:22``, ``[2001:db8::5]:22``), a service (``tcp/445``) or a DNS name; a
``port``/``dst_port`` in the evidence also counts as the destination port.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from .config import IGNORE_ALL, normalise_zone, parse_network
from .detection import Detection

if TYPE_CHECKING:
    from .config import IgnoreConfig, IgnoreSectionsConfig

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Why a finding was suppressed: the kind of allow-list entry that matched (a label value).
REASONS: tuple[str, ...] = ("source", "destination", "port", "zone")
_EVIDENCE_PORT_KEYS = ("port", "dst_port")
_SERVICE_PROTOCOLS = ("tcp", "udp", "sctp")


@dataclass(frozen=True)
class Endpoints:
    """What an allow-list can match in one detection."""

    source: IPAddress | None = None
    destination: IPAddress | None = None
    ports: frozenset[int] = frozenset()
    name: str | None = None  # a DNS name (lower case, no final dot)


@dataclass(frozen=True)
class IgnoreRules:
    """One scope's allow-list, parsed."""

    sources: tuple[IPNetwork, ...] = ()
    destinations: tuple[IPNetwork, ...] = ()
    ports: frozenset[int] = frozenset()
    zones: tuple[str, ...] = ()

    @classmethod
    def from_config(cls, cfg: IgnoreConfig) -> IgnoreRules:
        """Parse one validated ``ignore.<scope>`` section."""
        return cls(
            sources=tuple(parse_network(s) for s in cfg.sources),
            destinations=tuple(parse_network(s) for s in cfg.destinations),
            ports=frozenset(cfg.ports),
            zones=tuple(normalise_zone(z) for z in cfg.zones),
        )

    def __bool__(self) -> bool:
        return bool(self.sources or self.destinations or self.ports or self.zones)

    def match(self, ends: Endpoints) -> tuple[str, str] | None:
        """Return (reason, the entry that matched) for the first matching entry, else None."""
        if ends.source is not None:
            for net in self.sources:
                if ends.source in net:
                    return "source", str(net)
        if ends.destination is not None:
            for net in self.destinations:
                if ends.destination in net:
                    return "destination", str(net)
        common = ends.ports & self.ports
        if common:
            return "port", str(min(common))
        if ends.name is not None:
            for zone in self.zones:
                if ends.name == zone or ends.name.endswith("." + zone):
                    return "zone", zone
        return None


@dataclass(frozen=True)
class SuppressionRules:
    """Every allow-list: ``everywhere`` (``ignore.all``) and one per detector."""

    everywhere: IgnoreRules = field(default_factory=IgnoreRules)
    by_detector: Mapping[str, IgnoreRules] = field(default_factory=dict)

    @classmethod
    def from_config(cls, cfg: IgnoreSectionsConfig) -> SuppressionRules:
        """Parse the validated ``ignore`` section (empty lists are left out)."""
        scopes = {f.name: IgnoreRules.from_config(getattr(cfg, f.name)) for f in fields(cfg)}
        everywhere = scopes.pop(IGNORE_ALL)
        return cls(everywhere, {name: rules for name, rules in scopes.items() if rules})

    def __bool__(self) -> bool:
        return bool(self.everywhere) or any(self.by_detector.values())

    def match(self, det: Detection) -> tuple[str, str, str] | None:
        """Return (scope, reason, entry) of the rule suppressing ``det``, else None.

        The detector's own list is tried first, so the report names the most specific
        entry when both would match.
        """
        ends = endpoints(det)
        own = self.by_detector.get(det.detector)
        for scope, rules in ((det.detector, own), (IGNORE_ALL, self.everywhere)):
            if rules:
                hit = rules.match(ends)
                if hit is not None:
                    return scope, hit[0], hit[1]
        return None


@dataclass(frozen=True)
class Suppressed:
    """A finding set aside by an allow-list, and the entry that did it."""

    detection: Detection
    scope: str  # "all" or the detector's name: ignore.<scope>
    reason: str  # one of REASONS
    entry: str  # the matching entry, normalised ("10.0.5.0/24", "25", "spamhaus.org")

    def to_dict(self) -> dict[str, Any]:
        """Return the detection as in reports, with the rule that suppressed it."""
        key = {"source": "sources", "destination": "destinations"}.get(
            self.reason, self.reason + "s"
        )
        return {
            **self.detection.to_dict(),
            "suppressed_by": f"ignore.{self.scope}.{key}",
            "reason": self.reason,
            "entry": self.entry,
        }


def suppress(
    detections: Iterable[Detection], rules: SuppressionRules
) -> tuple[list[Detection], list[Suppressed]]:
    """Split detections into those kept and those an allow-list suppresses (order kept)."""
    kept: list[Detection] = []
    suppressed: list[Suppressed] = []
    if not rules:
        return list(detections), suppressed
    for det in detections:
        hit = rules.match(det)
        if hit is None:
            kept.append(det)
        else:
            suppressed.append(Suppressed(det, *hit))
    return kept, suppressed


# -------------------------------------------------------------------- reading endpoints


def endpoints(det: Detection) -> Endpoints:
    """Read the source address, destination address, ports and DNS name of a detection."""
    destination, port, name = _parse_target(det.target)
    ports = {port} if port is not None else set()
    for key in _EVIDENCE_PORT_KEYS:
        value = det.evidence.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 65536:
            ports.add(value)
    return Endpoints(_source(det.source), destination, frozenset(ports), name)


def _address(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        return None


def _source(text: str) -> IPAddress | None:
    """A detection's source: an address, or a network's first address (a port scan from
    the addresses of one IPv6 /64 is reported as ``<prefix>::/64``; an allow-list entry
    matches it when it holds that whole network's start, e.g. the /64 itself)."""
    addr = _address(text)
    if addr is None and "/" in text:
        try:
            return ipaddress.ip_network(text.strip(), strict=True).network_address
        except ValueError:
            return None
    return addr


def _port(text: str) -> int | None:
    if text.isascii() and text.isdigit() and 0 < int(text) < 65536:
        return int(text)
    return None


def _parse_target(text: str) -> tuple[IPAddress | None, int | None, str | None]:
    """Return (address, port, DNS name) of a detection's target; unknown parts are None.

    An IPv6 address with a port must be bracketed (``[2001:db8::5]:443``): unbracketed,
    ``2001:db8::5:443`` is read as one address, never guessed apart.
    """
    text = text.strip()
    if not text:
        return None, None, None
    addr = _address(text)
    if addr is not None:
        return addr, None, None
    if text.startswith("["):
        inner, _, rest = text[1:].partition("]")
        return _address(inner), _port(rest[1:]) if rest.startswith(":") else None, None
    host, sep, tail = text.rpartition(":")
    if sep and ":" not in host:
        addr = _address(host)
        if addr is not None:
            return addr, _port(tail), None
    proto, sep, tail = text.partition("/")
    if sep and proto.lower() in _SERVICE_PROTOCOLS:
        return None, _port(tail), None
    try:
        return None, None, normalise_zone(text)
    except ValueError:
        return None, None, None
