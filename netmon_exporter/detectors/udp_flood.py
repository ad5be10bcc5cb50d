"""UDP flood: a high, unanswered packet rate towards one victim, shaped like an attack."""

from __future__ import annotations

import numpy as np

from ..flow_schema import FlowBatch
from .catalog import UdpFloodConfig
from .features import UDP, addr_codes, is_group_address, num
from .flood_rate import Victim, VolumeFlood


class UdpFloodDetector(VolumeFlood):
    """UDP towards a victim at a flood's rate that it answers little of (see VolumeFlood).

    The reply ratio keeps busy but healthy UDP services (QUIC, DNS servers answering
    their clients) out; ``ignore_ports`` keeps one-way telemetry collectors (syslog,
    NetFlow, ...) out; multicast and broadcast groups are not victims (IPTV, discovery).
    A source the victim sends UDP to (RTCP receiver reports to a camera, a transfer
    tool's feedback) is in an exchange, not flooding it alone.
    """

    name = "udp_flood"
    what = "UDP"

    def __init__(self, cfg: UdpFloodConfig) -> None:
        super().__init__(cfg)
        self.flood_cfg: UdpFloodConfig = cfg

    def rows(self, flows: FlowBatch) -> np.ndarray:
        c = self.flood_cfg
        mask = (flows["protocol"] == UDP) & ~np.isin(flows["dst_port"], list(c.ignore_ports))
        if mask.any():
            mask &= ~is_group_address(flows["dst_ip"])
        return np.flatnonzero(mask)

    def _volume_ok(self, v: Victim) -> bool:
        return super()._volume_ok(v) and (
            v.replies <= self.flood_cfg.max_response_ratio * max(v.packets, 1.0)
        )

    def exchanges(self, flows: FlowBatch, v: Victim) -> bool:
        codes = addr_codes(flows)
        udp = flows["protocol"] == UDP
        back = (
            (codes.src == v.top_code)
            & (codes.dst == v.victim_code)
            & (num(flows, "Tot Bwd Pkts") > 0)
        ) | (
            (codes.src == v.victim_code)
            & (codes.dst == v.top_code)
            & (num(flows, "Tot Fwd Pkts") > 0)
        )
        return bool((udp & back).any())

    def extra(self, v: Victim) -> dict[str, object]:
        return {"reply_ratio": round(v.replies / max(v.packets, 1.0), 4)}
