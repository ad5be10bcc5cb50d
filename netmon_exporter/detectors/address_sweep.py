"""Horizontal scan: one source probing one service (or ICMP echo) on many hosts.

Zeek's scan policy counts distinct hosts a source failed to connect to on one port
within 5 minutes (25 by default). This detector does the same with every probe kind
of :mod:`.scan_probes` (ICMP echo counts answered or not), in two time tiers (fast:
``min_hosts`` in ``horizon_seconds``; slow: ``slow_min_hosts`` in
``slow_horizon_seconds``), plus a network-centric view for sweeps split over many
sources (Snort's distributed portsweep: source ``many``, target the /24 or /64 and
the service, top sources in the evidence). An IPv6 source is also counted with the
other addresses of its /64 (a sweeper can send each probe from another one, and then
no address probes enough hosts, nor two of one network): the hosts its addresses
probed together on one service, in both tiers, only where no address reached the tier
by itself and only from addresses that no host answered on that service (a LAN's
hosts that mostly reach their servers do not add up their few failures). Such a /64
is reported as ``<prefix>::/64`` with its addresses in the evidence, and its probes
are left out of the distributed view.

Ordinary traffic that touches many hosts on one service is told apart per swept
service, never per source, so noise elsewhere buys nothing:

* **Peer-to-peer**: on an unprivileged port, peers that served or fetched content
  (``p2p_min_peer_bytes``) on that same service (Delivery Optimization on tcp/7680,
  BitTorrent peers on a common port); for UDP, a source whose *answered* UDP went to
  many distinct unprivileged ports, about one per peer (a DHT or Gnutella overlay).
* **Resolvers**: a host seen answering DNS for ``resolver_min_clients`` clients recurses
  for them: the authoritative servers it queries on port 53 are thousands, a few
  percent of them down, lame or rate limiting, and those are not probes, as long as
  most of them answer (``resolver_min_answered_share``): answering DNS for three
  clients does not license a sweep of port 53 over hosts that mostly run no DNS.
* **Clients of a service spread over many hosts**: a source whose completed exchanges
  on the service (content both ways) reached ``client_min_success_ratio`` times as many
  distinct hosts as it probed: a mail server delivering to its recipients' MX hosts, a
  few percent of them down. Half-open and reset-at-once probes are not completed
  exchanges, so a scanner's answered SYNs buy nothing.
* **Pollers**: a source that comes back to the same hosts on a schedule and mostly
  gets answers (a monitoring server) is not sweeping them. A sweep whose hosts mostly
  answered is held for ``poller_hold_seconds`` after its first contact so a poller's
  first round can show its schedule; mostly unanswered sweeps are reported at once.
"""

from __future__ import annotations

import numpy as np

from ..detection import Detection
from ..flow_schema import FlowBatch, addrs_to_str
from .base import HorizonStore, is_v4_mapped, member_of, network_of, network_text, top_counts
from .catalog import AddressSweepConfig
from .dns_tunnel import DNS_PORT, ObservedResolvers, addr_hash
from .features import UDP
from .scan_probes import (
    ANSWERED,
    COUNT,
    ECHO,
    KINDS,
    RESET,
    UNANSWERED,
    ContactStore,
    Members,
    by_tier,
    classify,
    count_in,
    group_ids,
    key_hash,
    kind_counts,
    probe_evidence,
    scan_detection,
    select,
    service_name,
    stable_order,
    tiers,
)

_SUMS = ("probes", "unanswered", "reset", "answered", "success")
_UDP_CODE = 1


class AddressSweepDetector:
    """Distinct probed hosts per (source, service) and per (IPv6 /64, service) in two
    tiers, and per network over sources."""

    name = "address_sweep"

    def __init__(self, cfg: AddressSweepConfig) -> None:
        self.cfg = cfg
        self.tiers = tiers(
            (cfg.horizon_seconds, cfg.min_hosts), (cfg.slow_horizon_seconds, cfg.slow_min_hosts)
        )
        horizon = max([h for h, _ in self.tiers] or [cfg.horizon_seconds])
        self.store = ContactStore(
            horizon, cfg.max_state_rows, sums=_SUMS, maxes=("content",), ors=("kinds",)
        )
        self.overlay = HorizonStore(horizon, cfg.max_state_rows)
        self.resolvers = (
            ObservedResolvers(horizon, cfg.resolver_min_clients)
            if cfg.resolver_min_clients
            else None
        )
        self._prev_end: float | None = None
        self._recursing = np.zeros(0, dtype=np.uint64)  # see _recursing_services
        self._overlay_members = np.zeros(0, dtype=np.uint64)

    # ------------------------------------------------------------------ state

    def _new_rows(self, flows: FlowBatch) -> dict[str, np.ndarray]:
        """Probe rows, plus contacts that worked for the (source, service) keys with probes."""
        c = classify(flows)
        ts = np.asarray(flows["first_ts"], dtype=np.float64)
        # A flow's own span counts as a revisit: a poller's echo requests to one host
        # with one identifier (or a long poll) are one flow over many minutes.
        last = np.maximum(np.asarray(flows["last_ts"], dtype=np.float64), ts)
        probe = np.flatnonzero((c["kinds"] != 0) & c["known"])
        keys = key_hash(flows["src_ip"][probe], c["svc"][probe])
        old = self.store.rows
        if len(old.get("last", ())):
            had = old["probes"] > 0
            keys = np.concatenate([keys, key_hash(old["src"][had], old["svc"][had])])
        keys.sort()
        ok = c["success"] & c["known"] & ~c["group_dst"]
        out_ok = np.flatnonzero(ok)
        out_ok = out_ok[member_of(key_hash(flows["src_ip"][out_ok], c["svc"][out_ok]), keys)]
        # Content the source served on its own service counts for a peer service too.
        in_ok = np.flatnonzero(ok & (c["content"] >= self.cfg.p2p_min_peer_bytes))
        in_ok = in_ok[member_of(key_hash(flows["dst_ip"][in_ok], c["svc"][in_ok]), keys)]
        outcome = c["outcome"]
        parts = []
        for idx, src, dst, is_probe in (
            (probe, "src_ip", "dst_ip", True),
            (out_ok, "src_ip", "dst_ip", False),
            (in_ok, "dst_ip", "src_ip", False),
        ):
            o = outcome[idx]
            n = len(idx)
            one = np.ones(n, dtype=COUNT)  # counters of one contact within the horizon
            zero = np.zeros(n, dtype=COUNT)
            parts.append(
                {
                    "src": flows[src][idx],
                    "dst": flows[dst][idx],
                    "svc": c["svc"][idx],
                    "first": ts[idx],
                    "last": last[idx],
                    "probes": one if is_probe else zero,
                    "unanswered": (o == UNANSWERED).astype(COUNT) if is_probe else zero,
                    "reset": (o == RESET).astype(COUNT) if is_probe else zero,
                    "answered": (o == ANSWERED).astype(COUNT) if is_probe else zero,
                    "success": zero if is_probe else one,
                    "content": np.zeros(n) if is_probe else c["content"][idx],
                    "kinds": (c["kinds"][idx] if is_probe else zero).astype(KINDS),
                }
            )
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def _update_overlay(self, flows: FlowBatch, window_end: float) -> None:
        """Remember, per source and window, answered UDP to distinct unprivileged ports."""
        c = classify(flows)
        port = np.asarray(flows["dst_port"]).astype(np.int64)
        idx = np.flatnonzero(
            c["success"] & (np.asarray(flows["protocol"]) == UDP) & (port >= 1024) & ~c["group_dst"]
        )
        if len(idx) == 0:
            self.overlay.update(
                {
                    "src": flows["src_ip"][:0],
                    "ports": np.zeros(0),
                    "hosts": np.zeros(0),
                    "ts": np.zeros(0),
                },
                window_end,
            )
            return
        gid, first, _ = group_ids(flows["src_ip"][idx])
        n = len(first)
        ports = np.zeros(n)
        hosts = np.zeros(n)
        for col, out in ((port[idx], ports), (key_hash(flows["dst_ip"][idx]), hosts)):
            _, pair_first = np.unique(key_hash(gid.astype(np.int64), col), return_index=True)
            out += np.bincount(gid[pair_first], minlength=n)
        keep = ports >= 3
        self.overlay.update(
            {
                "src": flows["src_ip"][idx][first][keep],
                "ports": ports[keep],
                "hosts": hosts[keep],
                "ts": np.full(int(keep.sum()), window_end),
            },
            window_end,
        )

    def _overlay_sources(self, now: float, horizon: float) -> np.ndarray:
        """Hashes of the sources that look like members of a UDP peer-to-peer overlay."""
        rows, _ = self.overlay.update(
            {
                "src": np.zeros(0, dtype="V16"),
                "ports": np.zeros(0),
                "hosts": np.zeros(0),
                "ts": np.zeros(0),
            },
            now,
        )
        live = rows["ts"] >= now - horizon if len(rows.get("ts", ())) else np.zeros(0, bool)
        if not live.any() or not self.cfg.p2p_min_ports:
            return np.zeros(0, dtype=np.uint64)
        gid, first, _ = group_ids(rows["src"][live])
        ports = np.bincount(gid, weights=rows["ports"][live])
        hosts = np.bincount(gid, weights=rows["hosts"][live])
        p2p = (ports >= self.cfg.p2p_min_ports) & (2 * ports >= hosts)
        return key_hash(rows["src"][live][first[p2p]])

    # ------------------------------------------------------------------ detection

    def detect(self, flows: FlowBatch, window_start: float, window_end: float) -> list[Detection]:
        if not self.cfg.enabled:
            return []
        resolvers = self.resolvers.update(flows, window_end) if self.resolvers else None
        new = self._new_rows(flows)
        self._update_overlay(flows, window_end)
        rows, touched = self.store.update(new, window_end)
        self._recursing = self._recursing_services(rows, resolvers)
        prev_end, self._prev_end = self._prev_end, window_end
        self._overlay_members = self._overlay_sources(window_end, self.store.horizon)
        if len(touched) == 0 or not (rows["probes"] > 0).any():
            return []
        new_probe = new["probes"] > 0
        new_keys = key_hash(new["src"][new_probe], new["svc"][new_probe])
        out: list[Detection] = []
        reported: set[int] = set()
        nets: set[int] = set()  # (/64, service) hashes reported this window
        window = (window_start, window_end)
        hot = self._hot_prefixes(rows, touched)
        # the first tier's groups serve the distributed rule too: it is judged right after
        # that tier (its findings still come last), and each tier's groups let go after it
        distributed: list[Detection] = []
        for k, (horizon, threshold, live, fresh) in enumerate(
            by_tier(rows, touched, self.tiers, window_end)
        ):
            if not len(live["last"]):
                continue
            g = self._groups(live, window_end)
            out += self._single(
                live, fresh, g, new_keys, horizon, threshold, reported, window, prev_end
            )
            if hot is not None:
                tier_hot = hot[rows["last"] >= window_end - horizon]  # by_tier's rows
                out += self._by_prefix(live, fresh, g, tier_hot, horizon, threshold, nets, window)
            if k == 0 and self.cfg.distributed_min_sources:
                skip = np.sort(np.fromiter(nets, dtype=np.uint64, count=len(nets)))
                distributed = self._distributed(live, fresh, g, horizon, window, skip)
        return out + distributed

    def _recursing_services(
        self, rows: dict[str, np.ndarray], resolvers: np.ndarray | None
    ) -> np.ndarray:
        """Keys (source, service) of resolvers recursing on port 53, sorted.

        ``resolvers``: address hashes of the hosts seen answering DNS for clients
        (:class:`.dns_tunnel.ObservedResolvers`). Their unanswered queries to port 53
        are recursion (authoritative servers down, lame or rate limiting), not probes,
        while most of the hosts they queried there (``resolver_min_answered_share``,
        over every contact remembered, so a short outage of the resolver's uplink does
        not end it) answered: a host that answers DNS for a few clients and sweeps port 53
        over hosts that mostly do not run DNS is still a sweeper."""
        empty = np.zeros(0, dtype=np.uint64)
        if resolvers is None or not len(resolvers) or not len(rows.get("svc", ())):
            return empty
        svc = rows["svc"]
        idx = np.flatnonzero((svc == _UDP_CODE * 65536 + DNS_PORT) | (svc == DNS_PORT))
        idx = idx[member_of(addr_hash(rows["src"][idx]), resolvers)]
        if not len(idx):
            return empty
        keys, inv = np.unique(key_hash(rows["src"][idx], svc[idx]), return_inverse=True)
        answered = (rows["answered"][idx] > 0) | (rows["success"][idx] > 0)
        contacted = np.bincount(inv, minlength=len(keys))
        got = np.bincount(inv, weights=answered, minlength=len(keys))
        return keys[got >= self.cfg.resolver_min_answered_share * contacted]

    @staticmethod
    def _hot_prefixes(rows: dict[str, np.ndarray], touched: np.ndarray) -> np.ndarray | None:
        """Mark the probes of IPv6 sources whose (/64, service) a probe of this window
        touched (None if there is none): only those groups are counted per /64."""
        v6 = np.flatnonzero(~is_v4_mapped(rows["src"]) & (rows["probes"] > 0))
        if len(v6) == 0 or not touched[v6].any():
            return None
        keys = key_hash(network_of(rows["src"][v6]), rows["svc"][v6])
        hot = np.zeros(len(touched), dtype=bool)
        hot[v6[member_of(keys, np.sort(keys[touched[v6]]))]] = True
        return hot

    def _groups(self, rows: dict[str, np.ndarray], now: float) -> dict[str, np.ndarray]:
        """Per (source, service): swept hosts and the tests that exempt or hold it."""
        cfg = self.cfg
        gid, first, contacted = group_ids(rows["src"], rows["svc"])
        n = len(first)

        def count(mask: np.ndarray) -> np.ndarray:
            return np.bincount(gid, weights=mask.astype(np.float64), minlength=n)

        swept = count(rows["probes"] > 0)
        answered = count((rows["answered"] > 0) | (rows["success"] > 0))
        # Came back: another connection later on (a retransmitted SYN is the same flow),
        # or, for ICMP, more echo requests later in the same flow (one identifier).
        again = (rows["probes"] + rows["success"] >= 2) | ((rows["kinds"] & ECHO) != 0)
        revisited = count(again & (rows["last"] - rows["first"] >= cfg.revisit_seconds))
        peers = count(rows["content"] >= cfg.p2p_min_peer_bytes)
        served = count(rows["success"] > 0)
        order = stable_order(gid)
        starts = np.flatnonzero(np.r_[True, gid[order][1:] != gid[order][:-1]]) if n else order
        first_seen = np.minimum.reduceat(rows["first"][order], starts) if n else np.zeros(0)
        svc = rows["svc"][first]
        code, port = svc // 65536, svc % 65536
        unprivileged = (code <= _UDP_CODE) & (port >= 1024)
        p2p = np.zeros(n, dtype=bool)
        if cfg.p2p_min_peers:
            need = np.maximum(cfg.p2p_min_peers, np.ceil(cfg.p2p_min_peer_share * swept))
            p2p |= unprivileged & (peers >= need)
        overlay = self._overlay_members
        if len(overlay):
            p2p |= (
                unprivileged & (code == _UDP_CODE) & np.isin(key_hash(rows["src"][first]), overlay)
            )
        share = cfg.poller_min_share
        mostly_answered = answered >= share * contacted
        poller = (share < 1) & mostly_answered & (revisited >= share * contacted)
        held = mostly_answered & (now - first_seen < cfg.poller_hold_seconds)
        ratio = cfg.client_min_success_ratio
        client = np.zeros(n, dtype=bool) if ratio <= 0 else served >= ratio * swept
        if len(self._recursing):
            keys = key_hash(rows["src"][first], svc)
            client |= member_of(keys, self._recursing)
        return {
            "gid": gid,
            "first": first,
            "swept": swept,
            "answered": answered,
            "first_seen": first_seen,
            "exempt": p2p | poller | client,
            "held": held,
        }

    def _single(
        self,
        rows: dict[str, np.ndarray],
        touched: np.ndarray,
        g: dict[str, np.ndarray],
        new_keys: np.ndarray,
        horizon: float,
        threshold: int,
        reported: set[int],
        window: tuple[float, float],
        prev_end: float | None,
    ) -> list[Detection]:
        """Single sources sweeping a service; ``g``: the rows' groups (:meth:`_groups`)."""
        window_end = window[1]
        gid, first = g["gid"], g["first"]
        n = len(first)
        has_new = np.bincount(gid[touched & (rows["probes"] > 0)], minlength=n) > 0
        hold = self.cfg.poller_hold_seconds
        newly_due = (
            np.zeros(n, dtype=bool)
            if prev_end is None
            else (prev_end - g["first_seen"] < hold) & (window_end - g["first_seen"] >= hold)
        )
        hits = np.flatnonzero(
            (g["swept"] >= threshold) & ~g["exempt"] & ~g["held"] & (has_new | newly_due)
        )
        if len(hits) == 0:
            return []
        members = Members(gid, n)
        keys = key_hash(rows["src"][first[hits]], rows["svc"][first[hits]])
        out = []
        for i, key, in_window in zip(hits, keys, count_in(new_keys, keys), strict=True):
            if int(key) in reported:
                continue
            reported.add(int(key))
            m = members(i)
            m = m[rows["probes"][m] > 0]
            source = addrs_to_str(rows["src"][first[i] : first[i] + 1])[0]
            target = service_name(int(rows["svc"][first[i]]))
            ev = self._evidence(
                select(rows, m), threshold, horizon, int(in_window), int(g["answered"][i])
            )
            summary = (
                f"{source} probed {target} on {ev['distinct_hosts']} distinct hosts "
                f"within {horizon:g} s ({ev['unanswered']} unanswered, "
                f"{ev['answered']} answered)"
            )
            top = [{"value": source, "count": ev["distinct_hosts"]}]
            out.append(
                scan_detection(
                    self.name, self.cfg.severity, source, target, ev, (1, top), summary, window
                )
            )
        return out

    def _by_prefix(
        self,
        rows: dict[str, np.ndarray],
        touched: np.ndarray,
        g: dict[str, np.ndarray],
        hot: np.ndarray,
        horizon: float,
        threshold: int,
        reported: set[int],
        window: tuple[float, float],
    ) -> list[Detection]:
        """IPv6 sources counted by /64: a (/64, service) whose addresses together probed
        ``threshold`` distinct hosts, none of them that many by itself (that address is
        :meth:`_single`'s finding), with a probe new this window. ``rows``: the tier's
        contacts; ``hot``: the probes of (/64, service) groups this window touched; ``g``:
        the rows' groups (:meth:`_groups`). An address counts only if no host answered it
        on the service and it is not exempt (peer-to-peer, poller)."""
        gid = g["gid"]
        idx = np.flatnonzero(hot & (g["answered"][gid] == 0) & ~g["exempt"][gid])
        if len(idx) == 0:
            return []
        r = select(rows, idx)
        net, fresh = network_of(r["src"]), touched[idx]
        grp, first, _ = group_ids(net, r["svc"])
        n = len(first)
        _, host_first, _ = group_ids(net, r["svc"], r["dst"])
        hosts = np.bincount(grp[host_first], minlength=n)
        most = np.zeros(n)
        np.maximum.at(most, grp, g["swept"][gid[idx]])
        has_new = np.bincount(grp[fresh], minlength=n) > 0
        hits = np.flatnonzero((hosts >= threshold) & (most < threshold) & has_new)
        if len(hits) == 0:
            return []
        members = Members(grp, n)
        keys = key_hash(net[first[hits]], r["svc"][first[hits]])
        out = []
        for i, key in zip(hits.tolist(), keys.tolist(), strict=True):
            if key in reported:  # found by a faster tier this window
                continue
            reported.add(key)
            m = members(i)
            pr = select(r, m)
            source = network_text(net[first[i] : first[i] + 1])
            target = service_name(int(r["svc"][first[i]]))
            _, a_first, a_hosts = group_ids(pr["src"])  # rows: distinct (address, host)
            top = top_counts(addrs_to_str(pr["src"][a_first]), a_hosts)
            ev = self._evidence(pr, threshold, horizon, int(fresh[m].sum()), 0)
            summary = (
                f"{len(a_first)} addresses of {source} probed {target} on "
                f"{ev['distinct_hosts']} distinct hosts within {horizon:g} s (a source that "
                f"changes address within its /64; {ev['unanswered']} unanswered; "
                f"top: {top[0]['value']})"
            )
            out.append(
                scan_detection(
                    self.name,
                    self.cfg.severity,
                    source,
                    target,
                    ev,
                    (len(a_first), top),
                    summary,
                    window,
                )
            )
        return out

    def _distributed(
        self,
        rows: dict[str, np.ndarray],
        touched: np.ndarray,
        g: dict[str, np.ndarray],
        horizon: float,
        window: tuple[float, float],
        skip: np.ndarray,
    ) -> list[Detection]:
        """Many sources, each probing a few hosts of one network on one service; ``g``:
        the rows' groups (:meth:`_groups`); ``skip``: (/64, service) hashes reported by
        :meth:`_by_prefix` this window (sorted), whose probes are not counted again."""
        cfg = self.cfg
        per_row_swept = g["swept"][g["gid"]]
        # Only hosts that never answered the source count: many clients pinging or trying
        # the same few live servers is a busy network, not a sweep (Zeek: failed only).
        failed = (rows["probes"] > 0) & (rows["answered"] == 0) & (rows["success"] == 0)
        ok = failed & ~g["exempt"][g["gid"]] & (per_row_swept < cfg.min_hosts)
        if len(skip):
            v6 = np.flatnonzero(ok & ~is_v4_mapped(rows["src"]))
            keys = key_hash(network_of(rows["src"][v6]), rows["svc"][v6])
            ok[v6[member_of(keys, skip)]] = False
        if not ok.any():
            return []
        rows, touched = select(rows, ok), touched[ok]
        net = network_of(rows["dst"])
        # hosts per (source, network, service)
        sn, sn_first, sn_hosts = group_ids(rows["src"], net, rows["svc"])
        contrib = sn_hosts[sn] >= cfg.distributed_min_hosts_per_source
        if not contrib.any():
            return []
        rows, touched, net = select(rows, contrib), touched[contrib], net[contrib]
        sn, sn_first, sn_hosts = group_ids(rows["src"], net, rows["svc"])
        tgt, tgt_first, _ = group_ids(net, rows["svc"])
        n_tgt = len(tgt_first)
        _, host_first, _ = group_ids(rows["dst"], rows["svc"])  # a host lies in one network
        tgt_hosts = np.bincount(tgt[host_first], minlength=n_tgt)
        has_new = np.bincount(tgt[touched], minlength=n_tgt) > 0
        n_sources = np.bincount(tgt[sn_first], minlength=n_tgt)
        hits = np.flatnonzero(
            has_new & (tgt_hosts >= cfg.min_hosts) & (n_sources >= cfg.distributed_min_sources)
        )
        members = Members(tgt, n_tgt)
        out = []
        for t in hits:
            m = members(t)
            src_g, src_first, _ = group_ids(rows["src"][m])
            n_sources_t = len(src_first)
            tr = select(rows, m)
            target = f"{network_text(net[tgt_first[t] : tgt_first[t] + 1])} " + service_name(
                int(rows["svc"][tgt_first[t]])
            )
            per_source = np.bincount(src_g)
            top = top_counts(addrs_to_str(tr["src"][src_first]), per_source)
            ev = self._evidence(
                tr,
                cfg.min_hosts,
                horizon,
                int(touched[m].sum()),
                int(((tr["answered"] > 0) | (tr["success"] > 0)).sum()),
            )
            summary = (
                f"{n_sources_t} sources probed {target} on {ev['distinct_hosts']} "
                f"distinct hosts within {horizon:g} s (distributed sweep; "
                f"top: {top[0]['value']})"
            )
            out.append(
                scan_detection(
                    self.name, cfg.severity, "many", target, ev, (n_sources_t, top), summary, window
                )
            )
        return out

    @staticmethod
    def _evidence(
        rows: dict[str, np.ndarray], threshold: int, horizon: float, in_window: int, answered: int
    ) -> dict[str, object]:
        hosts = np.unique(rows["dst"])
        return {
            **probe_evidence(rows, "distinct_hosts", len(hosts), threshold, horizon, in_window),
            "answered": answered,
            "sample_hosts": addrs_to_str(hosts[:10]),
            "probe_kinds": kind_counts(rows["kinds"]),
        }
