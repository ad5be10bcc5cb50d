"""ICMP flood: a high rate of ICMP/ICMPv6 requests towards one victim, shaped like an attack."""

from __future__ import annotations

import numpy as np

from ..flow_schema import FlowBatch
from .catalog import IcmpFloodConfig
from .features import ICMP, ICMPV6, icmp_type
from .flood_rate import VolumeFlood

# Error messages answer something else (e.g. a UDP scan's port unreachables); not a flood.
_V4_ERRORS = (3, 4, 5, 11, 12)
_V6_ERRORS = (1, 2, 3, 4)


class IcmpFloodDetector(VolumeFlood):
    """ICMP towards a victim at a flood's rate (see VolumeFlood).

    Echo replies do not excuse it: a host answers pings whoever sends them, so a
    ``ping -f`` from one source is a flood however well it is answered.
    """

    name = "icmp_flood"
    what = "ICMP"
    answers_excuse = False

    def __init__(self, cfg: IcmpFloodConfig) -> None:
        super().__init__(cfg)

    def rows(self, flows: FlowBatch) -> np.ndarray:
        proto = flows["protocol"]
        itype = icmp_type(flows)
        mask = ((proto == ICMP) & ~np.isin(itype, _V4_ERRORS)) | (
            (proto == ICMPV6) & ~np.isin(itype, _V6_ERRORS) & (itype < 133)
        )
        return np.flatnonzero(mask)
