"""ICMP flood: a high rate of ICMP/ICMPv6 requests towards one victim."""

from __future__ import annotations

import numpy as np

from ..detection import Detection
from ..flow_schema import FlowBatch
from .catalog import IcmpFloodConfig
from .features import ICMP, ICMPV6, icmp_type
from .flood_rate import flood_candidates, flood_detection

# Error messages answer something else (e.g. a UDP scan's port unreachables); not a flood.
_V4_ERRORS = (3, 4, 5, 11, 12)
_V6_ERRORS = (1, 2, 3, 4)


class IcmpFloodDetector:
    """Peak one-second ICMP packet rate towards a victim (echo replies do not excuse it)."""

    name = "icmp_flood"

    def __init__(self, cfg: IcmpFloodConfig) -> None:
        self.cfg = cfg

    def detect(self, flows: FlowBatch, window_start: float, window_end: float) -> list[Detection]:
        if not self.cfg.enabled or len(flows) == 0:
            return []
        c = self.cfg
        proto = flows["protocol"]
        itype = icmp_type(flows)
        mask = ((proto == ICMP) & ~np.isin(itype, _V4_ERRORS)) | (
            (proto == ICMPV6) & ~np.isin(itype, _V6_ERRORS) & (itype < 133)
        )
        out = []
        for cand in flood_candidates(
            flows, mask, c.min_packets, c.min_packets_per_second, c.min_sources
        ):
            out.append(
                flood_detection(
                    self.name,
                    "ICMP",
                    cand,
                    c.severity,
                    c.min_packets_per_second,
                    window_start,
                    window_end,
                )
            )
        return out
