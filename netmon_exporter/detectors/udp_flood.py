"""UDP flood: a high, mostly unanswered packet rate towards one victim."""

from __future__ import annotations

import numpy as np

from ..detection import Detection
from ..flow_schema import FlowBatch
from .catalog import UdpFloodConfig
from .features import UDP
from .flood_rate import flood_candidates, flood_detection


class UdpFloodDetector:
    """Peak one-second UDP packet rate towards a victim, which answers little of it.

    The reply ratio keeps busy but healthy UDP services (QUIC uploads, DNS
    servers answering their clients) out; ``ignore_ports`` keeps one-way
    telemetry collectors (syslog, NetFlow, ...) out.
    """

    name = "udp_flood"

    def __init__(self, cfg: UdpFloodConfig) -> None:
        self.cfg = cfg

    def detect(self, flows: FlowBatch, window_start: float, window_end: float) -> list[Detection]:
        if not self.cfg.enabled or len(flows) == 0:
            return []
        c = self.cfg
        out = []
        mask = (flows["protocol"] == UDP) & ~np.isin(flows["dst_port"], list(c.ignore_ports))
        for cand in flood_candidates(
            flows, mask, c.min_packets, c.min_packets_per_second, c.min_sources
        ):
            ratio = cand.replies / max(cand.packets, 1)
            if ratio > c.max_response_ratio:
                continue
            out.append(
                flood_detection(
                    self.name,
                    "UDP",
                    cand,
                    c.severity,
                    c.min_packets_per_second,
                    window_start,
                    window_end,
                    reply_ratio=round(ratio, 4),
                )
            )
        return out
