"""Vertical port scan: one source probing many ports of one host (Zeek's scan policy)."""

from __future__ import annotations

import numpy as np

from ..detection import Detection
from ..flow_schema import FlowBatch, addr_to_str
from .base import HorizonStore
from .catalog import PortScanConfig
from .features import (
    UDP,
    combine,
    distinct_per_group,
    factorize_addrs,
    group,
    probe_evidence,
    probes,
)


class PortScanDetector:
    """Count distinct probed ports per (source, host) over a horizon of several windows.

    Only failed attempts count (half-open TCP: unanswered, reset, or answered with
    SYN-ACK and then torn down by the prober; unanswered UDP), so busy clients
    talking to many services of one server do not look like scanners.
    """

    name = "port_scan"

    def __init__(self, cfg: PortScanConfig) -> None:
        self.cfg = cfg
        self.store = HorizonStore(cfg.horizon_seconds, cfg.max_state_rows)

    def detect(self, flows: FlowBatch, window_start: float, window_end: float) -> list[Detection]:
        if not self.cfg.enabled:
            return []
        p = probes(flows)
        idx = np.flatnonzero(p["scan"])
        new = {
            "src": flows["src_ip"][idx],
            "dst": flows["dst_ip"][idx],
            "service": (
                np.where(flows["protocol"][idx] == UDP, 65536, 0)
                + flows["dst_port"][idx].astype(np.int64)
            ),
            "outcome": p["outcome"][idx],
            "ts": flows["first_ts"][idx],
        }
        rows, is_new = self.store.update(new, window_end)
        if len(is_new) < self.cfg.min_ports or not is_new.any():
            return []
        n = len(is_new)
        codes, table = factorize_addrs(np.concatenate([rows["src"], rows["dst"]]))
        src, dst = codes[:n], codes[n:]
        gid, first, counts = group(combine((src, len(table)), (dst, len(table))))
        n_groups = len(first)
        ports = distinct_per_group(gid, n_groups, rows["service"], 131072)
        has_new = np.bincount(gid[is_new], minlength=n_groups) > 0
        hits = np.flatnonzero((ports >= self.cfg.min_ports) & has_new)
        out: list[Detection] = []
        for g in hits:
            m = gid == g
            services = np.unique(rows["service"][m])
            outcome = rows["outcome"][m]
            ts = rows["ts"][m]
            source = addr_to_str(table[src[first[g]]])
            target = addr_to_str(table[dst[first[g]]])
            sample = [f"{'udp' if s >= 65536 else 'tcp'}/{s % 65536}" for s in services[:20]]
            evidence = {
                "distinct_ports": int(ports[g]),
                "threshold": self.cfg.min_ports,
                **probe_evidence(
                    outcome, ts, counts[g], (m & is_new).sum(), self.cfg.horizon_seconds
                ),
                "open": int((outcome == 2).sum()),
                "sample_ports": sample,
            }
            out.append(
                Detection(
                    detector=self.name,
                    severity=self.cfg.severity,
                    source=source,
                    target=target,
                    window_start=window_start,
                    window_end=window_end,
                    evidence=evidence,
                    summary=(
                        f"{source} probed {int(ports[g])} distinct ports on {target} within "
                        f"{self.cfg.horizon_seconds:g} s ({evidence['unanswered']} unanswered, "
                        f"{evidence['reset']} reset)"
                    ),
                )
            )
        return out
