"""Brute force: many short connections from one source to one login service."""

from __future__ import annotations

import numpy as np

from ..detection import Detection
from ..flow_schema import FlowBatch, addr_to_str
from .base import HorizonStore
from .catalog import BruteForceConfig
from .features import TCP, combine, factorize_addrs, group, num, tcp_outcomes

_SERVICE_NAMES = {
    21: "ftp",
    22: "ssh",
    23: "telnet",
    25: "smtp",
    110: "pop3",
    143: "imap",
    465: "smtps",
    587: "submission",
    993: "imaps",
    995: "pop3s",
    3389: "rdp",
}


class BruteForceDetector:
    """Count completed short connections per (source, server, login port) over a horizon.

    An attempt is a TCP connection the client completed (so not a scan probe)
    with at most ``max_flow_packets`` packets: a login that failed and was closed.
    Long interactive sessions are not attempts.
    """

    name = "brute_force"

    def __init__(self, cfg: BruteForceConfig) -> None:
        self.cfg = cfg
        self.store = HorizonStore(cfg.horizon_seconds, cfg.max_state_rows)
        self._ports = np.array(sorted(set(cfg.ports)), dtype=np.int64)

    def detect(self, flows: FlowBatch, window_start: float, window_end: float) -> list[Detection]:
        if not self.cfg.enabled:
            return []
        port = flows["dst_port"].astype(np.int64)
        pkts = num(flows, "Tot Fwd Pkts") + num(flows, "Tot Bwd Pkts")
        attempt = (
            (flows["protocol"] == TCP)
            & np.isin(port, self._ports)
            & ~tcp_outcomes(flows)["half_open"]
            & (pkts <= self.cfg.max_flow_packets)
            & (pkts > 0)
        )
        idx = np.flatnonzero(attempt)
        new = {
            "src": flows["src_ip"][idx],
            "dst": flows["dst_ip"][idx],
            "port": port[idx],
            "pkts": pkts[idx],
            "bytes": num(flows, "TotLen Fwd Pkts")[idx],
            "dur": num(flows, "Flow Duration")[idx] / 1e6,
            "ts": flows["first_ts"][idx],
        }
        rows, is_new = self.store.update(new, window_end)
        if len(is_new) < self.cfg.min_attempts or not is_new.any():
            return []
        n = len(is_new)
        codes, table = factorize_addrs(np.concatenate([rows["src"], rows["dst"]]))
        src, dst = codes[:n], codes[n:]
        gid, first, counts = group(
            combine((src, len(table)), (dst, len(table)), (rows["port"], 65536))
        )
        has_new = np.bincount(gid[is_new], minlength=len(first)) > 0
        hits = np.flatnonzero((counts >= self.cfg.min_attempts) & has_new)
        out: list[Detection] = []
        for g in hits:
            m = gid == g
            source = addr_to_str(table[src[first[g]]])
            server = addr_to_str(table[dst[first[g]]])
            p = int(rows["port"][first[g]])
            svc = _SERVICE_NAMES.get(p, f"tcp/{p}")
            ts = rows["ts"][m]
            evidence = {
                "attempts": int(counts[g]),
                "threshold": self.cfg.min_attempts,
                "attempts_in_window": int((m & is_new).sum()),
                "port": p,
                "service": svc,
                "horizon_seconds": self.cfg.horizon_seconds,
                "mean_packets": round(float(rows["pkts"][m].mean()), 1),
                "mean_bytes_sent": round(float(rows["bytes"][m].mean()), 1),
                "mean_duration_seconds": round(float(rows["dur"][m].mean()), 3),
                "first_seen": float(ts.min()),
                "last_seen": float(ts.max()),
            }
            out.append(
                Detection(
                    detector=self.name,
                    severity=self.cfg.severity,
                    source=source,
                    target=f"{server}:{p}",
                    window_start=window_start,
                    window_end=window_end,
                    evidence=evidence,
                    summary=(
                        f"{source} made {int(counts[g])} short {svc} connections to {server} "
                        f"within {self.cfg.horizon_seconds:g} s"
                    ),
                )
            )
        return out
