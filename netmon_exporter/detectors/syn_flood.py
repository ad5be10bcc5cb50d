"""SYN flood: many half-open connections towards one victim port in one window."""

from __future__ import annotations

import numpy as np

from ..detection import Detection
from ..flow_schema import FlowBatch, addr_to_str
from .base import top_counts
from .catalog import SynFloodConfig
from .features import addr_codes, combine, distinct_per_group, group, num, tcp_outcomes


class SynFloodDetector:
    """Count half-open connections per (victim, port) and their share of its TCP flows.

    Keyed by port so that a fast vertical scan (one attempt per port) is a port
    scan, not a flood. Many distinct sources mark the flood as spoofed; then the
    source is reported as ``many`` and the victim is what matters.
    """

    name = "syn_flood"

    def __init__(self, cfg: SynFloodConfig) -> None:
        self.cfg = cfg

    def detect(self, flows: FlowBatch, window_start: float, window_end: float) -> list[Detection]:
        if not self.cfg.enabled or len(flows) == 0:
            return []
        t = tcp_outcomes(flows)
        ho = np.flatnonzero(t["half_open"])
        if len(ho) < self.cfg.min_half_open:
            return []
        codes = addr_codes(flows)
        n_addr = len(codes.table)
        port = flows["dst_port"].astype(np.int64)
        key = combine((codes.dst[ho], n_addr), (port[ho], 65536))
        gid, first, counts = group(key)
        cand = np.flatnonzero(counts >= self.cfg.min_half_open)
        if len(cand) == 0:
            return []
        tcp = np.flatnonzero(t["tcp"])
        tcp_key = combine((codes.dst[tcp], n_addr), (port[tcp], 65536))
        cand_keys = key[first[cand]]
        tcp_counts = np.bincount(
            np.searchsorted(cand_keys, tcp_key[np.isin(tcp_key, cand_keys)]), minlength=len(cand)
        )
        sources = distinct_per_group(gid, len(first), codes.src[ho], n_addr)
        syn_pkts = num(flows, "fwd_syn_cnt")[ho]
        out: list[Detection] = []
        for i, g in enumerate(cand):
            ratio = counts[g] / max(int(tcp_counts[i]), 1)
            if ratio < self.cfg.min_ratio:
                continue
            rows = ho[gid == g]
            victim = addr_to_str(codes.table[codes.dst[rows[0]]])
            vport = int(port[rows[0]])
            src_codes, src_n = np.unique(codes.src[rows], return_counts=True)
            top = top_counts(
                codes.text(src_codes[np.argsort(-src_n)[:5]]), np.sort(src_n)[::-1][:5]
            )
            spoofed = int(sources[g]) >= self.cfg.spoofed_min_sources
            source = "many" if spoofed else str(top[0]["value"])
            span = float(flows["last_ts"][rows].max() - flows["first_ts"][rows].min())
            evidence = {
                "half_open": int(counts[g]),
                "threshold": self.cfg.min_half_open,
                "tcp_flows": int(tcp_counts[i]),
                "half_open_ratio": round(float(ratio), 4),
                "sources": int(sources[g]),
                "spoofed": spoofed,
                "dst_port": vport,
                "syn_packets": int(syn_pkts[gid == g].sum()),
                "unanswered": int(t["unanswered"][rows].sum()),
                "seconds": round(span, 3),
                "top_sources": top,
            }
            who = f"{int(sources[g])} sources (spoofed)" if spoofed else source
            out.append(
                Detection(
                    detector=self.name,
                    severity=self.cfg.severity,
                    source=source,
                    target=victim,
                    window_start=window_start,
                    window_end=window_end,
                    evidence=evidence,
                    summary=(
                        f"{int(counts[g])} half-open connections to {victim}:{vport} from "
                        f"{who} ({ratio:.0%} of its TCP flows)"
                    ),
                )
            )
        return out
