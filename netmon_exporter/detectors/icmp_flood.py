"""ICMP flood: a high rate of ICMP/ICMPv6 requests towards one victim."""

from __future__ import annotations

import numpy as np

from ..config import IcmpFloodConfig
from ..detection import Detection
from ..flow_schema import FlowBatch
from .features import ICMP, ICMPV6, icmp_type
from .flood_rate import flood_candidates, flood_source

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
            source = flood_source(cand)
            evidence = {
                "packets": cand.packets,
                "peak_packets_per_second": cand.peak_pps,
                "threshold_packets_per_second": c.min_packets_per_second,
                "reply_packets": cand.replies,
                "flows": cand.flows,
                "sources": cand.sources,
                "top_sources": cand.top_sources,
            }
            out.append(
                Detection(
                    detector=self.name,
                    severity=c.severity,
                    source=source,
                    target=cand.victim,
                    window_start=window_start,
                    window_end=window_end,
                    evidence=evidence,
                    summary=(
                        f"ICMP flood of {cand.packets} packets (peak {cand.peak_pps:.0f}/s) to "
                        f"{cand.victim} from {source if source != 'many' else f'{cand.sources} sources'}"
                    ),
                )
            )
        return out
