"""Horizontal scan: one source probing one service (or ICMP echo) on many hosts."""

from __future__ import annotations

import numpy as np

from ..detection import Detection
from ..flow_schema import FlowBatch, addr_to_str
from .base import HorizonStore
from .catalog import AddressSweepConfig
from .features import (
    ICMP,
    ICMPV6,
    TCP,
    UDP,
    combine,
    distinct_per_group,
    factorize_addrs,
    group,
    probe_evidence,
    probes,
    service,
)

_PROTO_CODE = {TCP: 0, UDP: 1, ICMP: 2, ICMPV6: 3}
_CODE_PROTO = {v: k for k, v in _PROTO_CODE.items()}


class AddressSweepDetector:
    """Count distinct probed hosts per (source, service) over a horizon (Zeek: 25 hosts).

    TCP and UDP count only failed attempts (see ``features.probes``); ICMP echo
    requests count whether answered or not, since a ping sweep maps live hosts.
    """

    name = "address_sweep"

    def __init__(self, cfg: AddressSweepConfig) -> None:
        self.cfg = cfg
        self.store = HorizonStore(cfg.horizon_seconds, cfg.max_state_rows)

    def detect(self, flows: FlowBatch, window_start: float, window_end: float) -> list[Detection]:
        if not self.cfg.enabled:
            return []
        p = probes(flows)
        proto = flows["protocol"]
        idx = np.flatnonzero(p["sweep"] & np.isin(proto, list(_PROTO_CODE)))
        pcode = np.zeros(len(idx), dtype=np.int64)
        for number, code in _PROTO_CODE.items():
            pcode[proto[idx] == number] = code
        new = {
            "src": flows["src_ip"][idx],
            "dst": flows["dst_ip"][idx],
            "service": pcode * 65536 + p["sweep_port"][idx] % 65536,
            "outcome": p["outcome"][idx],
            "ts": flows["first_ts"][idx],
        }
        rows, is_new = self.store.update(new, window_end)
        if len(is_new) < self.cfg.min_hosts or not is_new.any():
            return []
        n = len(is_new)
        codes, table = factorize_addrs(np.concatenate([rows["src"], rows["dst"]]))
        src, dst = codes[:n], codes[n:]
        gid, first, counts = group(combine((src, len(table)), (rows["service"], 4 * 65536)))
        n_groups = len(first)
        hosts = distinct_per_group(gid, n_groups, dst, len(table))
        has_new = np.bincount(gid[is_new], minlength=n_groups) > 0
        hits = np.flatnonzero((hosts >= self.cfg.min_hosts) & has_new)
        if len(hits) and self.cfg.p2p_min_ports:
            hits = hits[
                ~self._peer_to_peer(src, dst, rows["service"], len(table))[src[first[hits]]]
            ]
        out: list[Detection] = []
        for g in hits:
            m = gid == g
            svc = int(rows["service"][first[g]])
            target = service(_CODE_PROTO[svc // 65536], svc % 65536)
            source = addr_to_str(table[src[first[g]]])
            outcome = rows["outcome"][m]
            ts = rows["ts"][m]
            sample = [addr_to_str(a) for a in table[np.unique(dst[m])[:10]]]
            evidence = {
                "distinct_hosts": int(hosts[g]),
                "threshold": self.cfg.min_hosts,
                **probe_evidence(
                    outcome, ts, counts[g], (m & is_new).sum(), self.cfg.horizon_seconds
                ),
                "answered": int((outcome == 2).sum()),
                "sample_hosts": sample,
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
                        f"{source} probed {target} on {int(hosts[g])} distinct hosts within "
                        f"{self.cfg.horizon_seconds:g} s"
                    ),
                )
            )
        return out

    def _peer_to_peer(
        self, src: np.ndarray, dst: np.ndarray, svc: np.ndarray, n_addr: int
    ) -> np.ndarray:
        """Mark sources whose probes look like a P2P client's: many ports, ~one per host."""
        port_probe = svc < 2 * 65536  # TCP and UDP, not ICMP echo
        s, d, v = src[port_probe], dst[port_probe], svc[port_probe]
        ports = distinct_per_group(s, n_addr, v, 2 * 65536)
        hosts = distinct_per_group(s, n_addr, d, n_addr)
        return (ports >= self.cfg.p2p_min_ports) & (2 * ports >= hosts)
