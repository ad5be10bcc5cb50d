"""Shared arithmetic of the volumetric flood detectors (UDP, ICMP)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..detection import Detection
from ..flow_schema import FlowBatch
from .base import top_counts
from .features import addr_codes, distinct_per_group, group, num


@dataclass(frozen=True)
class FloodCandidate:
    """The traffic towards one victim in a window, with its peak one-second rate."""

    victim: str
    packets: int
    replies: int
    flows: int
    sources: int
    peak_pps: float
    top_sources: list[dict[str, object]]


def peak_rate(first: np.ndarray, last: np.ndarray, packets: np.ndarray) -> float:
    """Return the busiest one-second packet rate, spreading each flow's packets over its life.

    A flood that lasts ten seconds of a sixty-second window is judged on its own
    rate, not diluted by the quiet rest of the window.
    """
    t0 = float(first.min())
    nbins = int(min(np.ceil(float(last.max()) - t0), 86400)) + 2
    b0 = np.clip((first - t0).astype(np.int64), 0, nbins - 1)
    b1 = np.clip((last - t0).astype(np.int64), 0, nbins - 1)
    short = b1 <= b0
    points = np.bincount(b0[short], weights=packets[short], minlength=nbins)
    spread = ~short
    per_bin = packets[spread] / (b1[spread] - b0[spread] + 1)
    diff = np.bincount(b0[spread], weights=per_bin, minlength=nbins + 1)
    diff -= np.bincount(b1[spread] + 1, weights=per_bin, minlength=nbins + 1)
    return float((points + np.cumsum(diff)[:nbins]).max())


def flood_candidates(
    flows: FlowBatch, mask: np.ndarray, min_packets: int, min_pps: float, min_sources: int
) -> list[FloodCandidate]:
    """Group the flows in ``mask`` by destination and return victims above the thresholds."""
    idx = np.flatnonzero(mask)
    if len(idx) == 0:
        return []
    codes = addr_codes(flows)
    fwd = num(flows, "Tot Fwd Pkts")[idx]
    if fwd.sum() < min_packets:
        return []
    bwd = num(flows, "Tot Bwd Pkts")[idx]
    dst = codes.dst[idx]
    gid, first, counts = group(dst)
    packets = np.bincount(gid, weights=fwd, minlength=len(first))
    cand = np.flatnonzero(packets >= min_packets)
    if len(cand) == 0:
        return []
    sources = distinct_per_group(gid, len(first), codes.src[idx], len(codes.table))
    out = []
    for g in cand:
        if sources[g] < min_sources:
            continue
        m = gid == g
        rows = idx[m]
        pps = peak_rate(flows["first_ts"][rows], flows["last_ts"][rows], fwd[m])
        if pps < min_pps:
            continue
        src_codes, inv = np.unique(codes.src[rows], return_inverse=True)
        per_src = np.bincount(inv, weights=fwd[m])
        order = np.argsort(-per_src)[:5]
        out.append(
            FloodCandidate(
                victim=codes.text(dst[first[g] : first[g] + 1])[0],
                packets=int(packets[g]),
                replies=int(bwd[m].sum()),
                flows=int(counts[g]),
                sources=int(sources[g]),
                peak_pps=round(pps, 1),
                top_sources=top_counts(codes.text(src_codes[order]), per_src[order]),
            )
        )
    return out


def flood_source(c: FloodCandidate) -> str:
    """Name the attacker: the top source when it sent most packets, else ``many``."""
    top = c.top_sources[0]
    return str(top["value"]) if int(top["count"]) * 2 >= c.packets else "many"  # type: ignore[call-overload]


def flood_detection(
    detector: str,
    what: str,
    cand: FloodCandidate,
    severity: str,
    threshold_pps: float,
    window_start: float,
    window_end: float,
    **extra_evidence: object,
) -> Detection:
    """Build the detection of one flood candidate (``what``: "UDP", "ICMP")."""
    source = flood_source(cand)
    evidence = {
        "packets": cand.packets,
        "peak_packets_per_second": cand.peak_pps,
        "threshold_packets_per_second": threshold_pps,
        "reply_packets": cand.replies,
        **extra_evidence,
        "flows": cand.flows,
        "sources": cand.sources,
        "top_sources": cand.top_sources,
    }
    sender = source if source != "many" else f"{cand.sources} sources"
    return Detection(
        detector=detector,
        severity=severity,
        source=source,
        target=cand.victim,
        window_start=window_start,
        window_end=window_end,
        evidence=evidence,
        summary=(
            f"{what} flood of {cand.packets} packets (peak {cand.peak_pps:.0f}/s) to "
            f"{cand.victim} from {sender}"
        ),
    )
