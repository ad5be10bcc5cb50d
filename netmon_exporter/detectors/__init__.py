"""Explainable detectors: one module each, one interface, one registry line each."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..config import DetectorsConfig
from .address_sweep import AddressSweepDetector
from .base import Detector
from .beacon import BeaconDetector
from .brute_force import BruteForceDetector
from .dns_tunnel import DnsTunnelDetector
from .icmp_flood import IcmpFloodDetector
from .port_scan import PortScanDetector
from .syn_flood import SynFloodDetector
from .udp_flood import UdpFloodDetector

# Detector name (== DetectorsConfig field == metrics.DETECTORS value) -> class.
REGISTRY: dict[str, Callable[[Any], Detector]] = {
    "port_scan": PortScanDetector,
    "address_sweep": AddressSweepDetector,
    "syn_flood": SynFloodDetector,
    "udp_flood": UdpFloodDetector,
    "icmp_flood": IcmpFloodDetector,
    "brute_force": BruteForceDetector,
    "dns_tunnel": DnsTunnelDetector,
    "beacon": BeaconDetector,
}


def build_detector(name: str, cfg: DetectorsConfig) -> Detector:
    """Build the detector ``name`` from its section of the config."""
    return REGISTRY[name](getattr(cfg, name))


def build_detectors(cfg: DetectorsConfig) -> list[Detector]:
    """Build every enabled detector, in registry order."""
    return [build_detector(name, cfg) for name in REGISTRY if getattr(cfg, name).enabled]


__all__ = ["REGISTRY", "Detector", "build_detector", "build_detectors"]
