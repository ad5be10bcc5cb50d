"""Vertical port scan: one source probing many ports of one host, or many sources one host.

Zeek's scan policy counts distinct ports a source failed to connect to on one host
within 5 minutes (15 by default). This detector does the same with more probe kinds
(SYN, FIN/Maimon, Xmas, NULL/ACK, UDP; see :mod:`.scan_probes`) and two time tiers
(fast: ``min_ports`` in ``horizon_seconds``; slow: ``slow_min_ports`` in
``slow_horizon_seconds``), so a scan paced under the fast tier, or in bursts kept
under it, still adds up. A target-centric view (Snort's distributed portscan)
finds many sources each probing a few ports of one host: the source is reported as
``many`` with the top sources in the evidence. An IPv6 source is also counted with the
other addresses of its /64 (one host or one site picks them all: a scanner can send each
probe from another one, and then no address, nor any few of them, probes enough ports):
such a /64 is reported as ``<prefix>::/64`` with its addresses in the evidence.
"""

from __future__ import annotations

import numpy as np

from ..detection import Detection
from ..flow_schema import FlowBatch, addrs_to_str
from .base import is_v4_mapped, member_of, network_of, network_text, top_counts
from .catalog import PortScanConfig
from .scan_probes import (
    ANSWERED,
    COUNT,
    ECHO,
    KINDS,
    RESET,
    UNANSWERED,
    ContactStore,
    Members,
    classify,
    count_in,
    group_ids,
    key_hash,
    kind_counts,
    pair_runs,
    probe_evidence,
    scan_detection,
    select,
    service_name,
    tiers,
)

_SUMS = ("probes", "unanswered", "reset", "open")


class PortScanDetector:
    """Distinct probed ports per (source, host) in two tiers, and per host over sources."""

    name = "port_scan"

    def __init__(self, cfg: PortScanConfig) -> None:
        self.cfg = cfg
        self.tiers = tiers(
            (cfg.horizon_seconds, cfg.min_ports), (cfg.slow_horizon_seconds, cfg.slow_min_ports)
        )
        horizon = max([h for h, _ in self.tiers] or [cfg.horizon_seconds])
        self.store = ContactStore(horizon, cfg.max_state_rows, sums=_SUMS, ors=("kinds",))

    def detect(self, flows: FlowBatch, window_start: float, window_end: float) -> list[Detection]:
        if not self.cfg.enabled:
            return []
        c = classify(flows)
        idx = np.flatnonzero((c["kinds"] != 0) & (c["kinds"] != ECHO) & c["known"])
        outcome = c["outcome"][idx]
        ts = np.asarray(flows["first_ts"], dtype=np.float64)[idx]
        new = {
            "src": flows["src_ip"][idx],
            "dst": flows["dst_ip"][idx],
            "svc": c["svc"][idx],
            "first": ts,
            "last": ts,
            # counters of one contact within the horizon: int32; probe kinds: a few bits
            "probes": np.ones(len(idx), dtype=COUNT),
            "unanswered": (outcome == UNANSWERED).astype(COUNT),
            "reset": (outcome == RESET).astype(COUNT),
            "open": (outcome == ANSWERED).astype(COUNT),
            "kinds": c["kinds"][idx].astype(KINDS),
        }
        rows, touched = self.store.update(new, window_end)
        if not touched.any():
            return []
        new_keys = key_hash(new["src"], new["dst"])
        out: list[Detection] = []
        reported: set[tuple[bytes, bytes]] = set()
        window = (window_start, window_end)
        pair = pair_runs(rows)
        for horizon, threshold in self.tiers:
            # only pairs a new contact touched can be reported: look at their rows alone
            live = rows["last"] >= window_end - horizon
            hot = np.zeros(int(pair[-1]) + 1, dtype=bool)
            hot[pair[touched & live]] = True
            idx = np.flatnonzero(live & hot[pair])
            out += self._single(
                select(rows, idx), touched[idx], new_keys, horizon, threshold, reported, window
            )
        v6 = np.flatnonzero(~is_v4_mapped(rows["src"]))
        if len(v6) and touched[v6].any():
            # only (/64, host) pairs a new contact touched can be reported: their rows alone
            net = network_of(rows["src"][v6])
            keys = key_hash(net, rows["dst"][v6])
            hot = member_of(keys, np.sort(keys[touched[v6]]))
            v6, net = v6[hot], net[hot]
            out += self._by_prefix(select(rows, v6), net, touched[v6], window_end, reported, window)
        if self.cfg.distributed_min_sources and self.tiers:
            cfg, horizon = self.cfg, self.tiers[0][0]
            live = rows["last"] >= window_end - horizon
            per_row = np.bincount(pair[live], minlength=int(pair[-1]) + 1)[pair]  # its pair's
            contrib = live & (per_row >= cfg.distributed_min_ports_per_source)
            idx = np.flatnonzero(contrib & (per_row < cfg.min_ports))
            out += self._distributed(select(rows, idx), touched[idx], per_row[idx], horizon, window)
        return out

    def _single(
        self,
        rows: dict[str, np.ndarray],
        touched: np.ndarray,
        new_keys: np.ndarray,
        horizon: float,
        threshold: int,
        reported: set[tuple[bytes, bytes]],
        window: tuple[float, float],
    ) -> list[Detection]:
        gid, first, ports = group_ids(rows["src"], rows["dst"])
        if len(ports) == 0:
            return []
        has_new = np.bincount(gid[touched], minlength=len(ports)) > 0
        hits = np.flatnonzero((ports >= threshold) & has_new)
        if len(hits) == 0:
            return []
        members = Members(gid, len(ports))
        in_window = count_in(new_keys, key_hash(rows["src"][first[hits]], rows["dst"][first[hits]]))
        out = []
        for g, fresh in zip(hits, in_window, strict=True):
            m = members(g)
            src, dst = rows["src"][first[g]], rows["dst"][first[g]]
            key = (src.tobytes(), dst.tobytes())
            if key in reported:
                continue
            reported.add(key)
            source, target = addrs_to_str(np.array([src, dst]))
            ev = self._evidence(select(rows, m), threshold, horizon, int(fresh))
            kinds = ", ".join(kind_counts(rows["kinds"][m]))
            summary = (
                f"{source} probed {int(ports[g])} distinct ports on {target} within "
                f"{horizon:g} s ({ev['unanswered']} unanswered, {ev['reset']} reset; "
                f"{kinds} probes)"
            )
            top = [{"value": source, "count": int(ports[g])}]
            out.append(
                scan_detection(
                    self.name, self.cfg.severity, source, target, ev, (1, top), summary, window
                )
            )
        return out

    def _by_prefix(
        self,
        rows: dict[str, np.ndarray],
        net: np.ndarray,
        touched: np.ndarray,
        window_end: float,
        reported: set[tuple[bytes, bytes]],
        window: tuple[float, float],
    ) -> list[Detection]:
        """IPv6 sources counted by /64 (``rows``: contacts of IPv6 sources, ``net``: each
        one's /64), tier by tier: a /64 whose addresses together probed a tier's number
        of distinct ports of one host within its horizon, none of them that many by
        itself (that address is :meth:`_single`'s finding), with a contact new this
        window. The groups are made once for every tier."""
        if not touched.any():
            return []
        gid, first, _ = group_ids(net, rows["dst"])
        n = len(first)
        port, port_first, _ = group_ids(net, rows["dst"], rows["svc"])
        addr, addr_first, _ = group_ids(rows["src"], rows["dst"])
        has_new = np.bincount(gid[touched], minlength=n) > 0
        members = Members(gid, n)
        out = []
        for horizon, threshold in self.tiers:
            alive = rows["last"] >= window_end - horizon
            # distinct ports (a port probed from two addresses counts once) and addresses
            # per (/64, host) within the horizon, and the most ports of one address
            live_port = np.zeros(len(port_first), bool)
            live_port[port[alive]] = True
            ports = np.bincount(gid[port_first[live_port]], minlength=n)
            addr_ports = np.bincount(addr[alive], minlength=len(addr_first))
            addrs = np.bincount(gid[addr_first[addr_ports > 0]], minlength=n)
            most = np.zeros(n, np.int64)
            np.maximum.at(most, gid[addr_first], addr_ports)
            hits = np.flatnonzero((ports >= threshold) & (most < threshold) & has_new)
            for g in hits.tolist():
                key = (net[first[g]].tobytes() + b"/64", rows["dst"][first[g]].tobytes())
                if key in reported:  # found by a faster tier this window
                    continue
                reported.add(key)
                m = members(g)
                m = m[alive[m]]
                hr = select(rows, m)
                source = network_text(net[first[g] : first[g] + 1])
                target = addrs_to_str(rows["dst"][first[g] : first[g] + 1])[0]
                _, a_first, a_rows = group_ids(hr["src"])
                top = top_counts(addrs_to_str(hr["src"][a_first]), a_rows)
                ev = self._evidence(hr, threshold, horizon, int(touched[m].sum()))
                summary = (
                    f"{int(addrs[g])} addresses of {source} probed {int(ports[g])} distinct "
                    f"ports on {target} within {horizon:g} s (a source that changes address "
                    f"within its /64; top: {top[0]['value']})"
                )
                out.append(
                    scan_detection(
                        self.name,
                        self.cfg.severity,
                        source,
                        target,
                        ev,
                        (int(addrs[g]), top),
                        summary,
                        window,
                    )
                )
        return out

    def _distributed(
        self,
        rows: dict[str, np.ndarray],
        touched: np.ndarray,
        per_row: np.ndarray,
        horizon: float,
        window: tuple[float, float],
    ) -> list[Detection]:
        """Many sources, each probing a few ports of one host (each below the fast tier).

        ``rows``: the live contacts of pairs with at least distributed_min_ports_per_source
        and fewer than min_ports live contacts; ``per_row``: that count, per row.
        """
        cfg = self.cfg
        if len(per_row) == 0:
            return []
        host, host_first, _ = group_ids(rows["dst"])
        n_hosts = len(host_first)
        has_new = np.bincount(host[touched], minlength=n_hosts) > 0
        # rows are distinct (source, host, port): sources = distinct pairs, ports = distinct svc
        pair, pair_first, _ = group_ids(rows["src"], rows["dst"])
        n_sources = np.bincount(host[pair_first], minlength=n_hosts)
        hp, hp_first, _ = group_ids(rows["dst"], rows["svc"])
        n_ports = np.bincount(host[hp_first], minlength=n_hosts)
        hits = np.flatnonzero(
            has_new
            & (n_sources >= cfg.distributed_min_sources)
            & (n_ports >= cfg.distributed_min_ports)
        )
        members = Members(host, n_hosts)
        out = []
        for h in hits:
            m = members(h)
            src_gid, src_first, _ = group_ids(rows["src"][m])
            ports = int(n_ports[h])
            hr = select(rows, m)
            target = addrs_to_str(rows["dst"][host_first[h] : host_first[h] + 1])[0]
            per_source = per_row[m][src_first]
            top = top_counts(addrs_to_str(hr["src"][src_first]), per_source)
            ev = self._evidence(hr, cfg.distributed_min_ports, horizon, int(touched[m].sum()))
            summary = (
                f"{len(src_first)} sources probed {ports} distinct ports on {target} within "
                f"{horizon:g} s (distributed scan; top: {top[0]['value']})"
            )
            out.append(
                scan_detection(
                    self.name,
                    cfg.severity,
                    "many",
                    target,
                    ev,
                    (len(src_first), top),
                    summary,
                    window,
                )
            )
        return out

    @staticmethod
    def _evidence(
        rows: dict[str, np.ndarray], threshold: int, horizon: float, in_window: int
    ) -> dict[str, object]:
        services = np.unique(rows["svc"])
        return {
            **probe_evidence(rows, "distinct_ports", len(services), threshold, horizon, in_window),
            "open": int(rows["open"].sum()),
            "sample_ports": [service_name(s) for s in services[:20]],
            "probe_kinds": kind_counts(rows["kinds"]),
        }
