"""Brute force: repeated failed-login-shaped sessions to one login service.

A failed login is a short session whose server side is small (a banner or a TLS
or SSH handshake, then a refusal) and, attempt after attempt from one tool, nearly
the same size each way. Ordinary traffic that also opens many short sessions has
another shape: inbound mail delivery carries a message each time (the client's
bytes vary with it), many users behind one NAT address log in successfully and
get their own, varied and often larger responses. So, per (source, server, port):

* a *session* is a TCP connection to a login port that the client completed and
  in which it sent at least two data segments (banner checks are not sessions);
* an *attempt* is a session with at most ``max_server_bytes`` from the server and
  at most ``max_flow_packets`` packets and, between two site-internal addresses (RFC
  1918, IPv6 ULA and link-local) on a port other than RDP's, lasting at least
  ``internal_min_attempt_seconds``. A failed password costs the guesser the server's
  failure delay (PAM's 2 s for sshd, Dovecot's 2 s, busybox login's 3 s), while the
  automated key logins of a site's own hosts (check_by_ssh, a CI server polling its
  git server over SSH every minute) are over in a fraction of a second and are, in
  sizes, exactly what a failed login looks like. Inside the site, guessing a server
  without such a delay (Dropbear's ~0.3 s, a BSD sshd without PAM) is therefore not
  counted; from outside, every session is;
* attempts are *similar* when both their client and server bytes lie within
  ``similar_tolerance`` (or ``similar_min_bytes``) of the attempts' medians;
* a finding needs ``min_attempts`` similar attempts within ``horizon_seconds`` (or
  ``slow_min_attempts`` within ``slow_horizon_seconds``), while similar attempts make
  up at least ``min_similar_share`` of all the pair's sessions remembered (the slow
  horizon: a relay's varied messages are not judged on the few of the last minutes).

An IPv6 source is also judged with the other addresses of its /64 (one host or one
site picks them all: a guesser can make each attempt from another one, and then no
address makes enough): the same test per (/64, server, port), in both tiers, only where
no address of that /64 made the tier's attempts to that server and port by itself
(that address is reported as itself); the /64 is reported as ``<prefix>::/64`` with
its addresses in the evidence. The same test per (server, port) over all sources,
within ``horizon_seconds``, finds distributed guessing (``distributed_min_sources``
sources; the sessions of a /64 reported this window left out): the source is reported
as ``many`` with the top sources in the evidence. Thresholds follow Emerging Threats
(5 SSH attempts in 120 s) and Zeek (30 failed logins in 30 minutes).
"""

from __future__ import annotations

import numpy as np

from ..detection import Detection, host_port
from ..flow_schema import FlowBatch, addrs_to_str
from .base import HorizonStore, is_v4_mapped, member_of, network_of, network_text, top_counts
from .beacon import is_private
from .catalog import BruteForceConfig
from .features import TCP, num, tcp_outcomes
from .scan_probes import Members, group_ids, key_hash, select, tiers

SERVICE_NAMES = {
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
RDP_PORT = 3389  # NLA refuses at once: no failure delay to tell a failed login by


def _medians(values: np.ndarray, gid: np.ndarray, mask: np.ndarray, n: int) -> np.ndarray:
    """The median of ``values[mask]`` in each of ``n`` groups (``gid``: each row's), as
    ``np.median`` gives it (NaN for a group with no such row): one sort for all."""
    idx = np.flatnonzero(mask)
    order = idx[np.lexsort((values[idx], gid[idx]))]
    counts = np.bincount(gid[idx], minlength=n)
    starts = np.cumsum(counts) - counts
    has = counts > 0
    v = values[order].astype(np.float64)
    med = np.full(n, np.nan)
    lo, hi = starts[has] + (counts[has] - 1) // 2, starts[has] + counts[has] // 2
    med[has] = (v[lo] + v[hi]) / 2
    return med


class BruteForceDetector:
    """Similar small sessions per (source, server, port) and per (IPv6 /64, server, port)
    in two tiers, and per (server, port)."""

    name = "brute_force"

    def __init__(self, cfg: BruteForceConfig) -> None:
        self.cfg = cfg
        self.tiers = tiers(
            (cfg.horizon_seconds, cfg.min_attempts),
            (cfg.slow_horizon_seconds, cfg.slow_min_attempts),
        )
        horizon = max([h for h, _ in self.tiers] or [cfg.horizon_seconds])
        self.store = HorizonStore(horizon, cfg.max_state_rows)
        self._ports = np.array(sorted(set(cfg.ports)), dtype=np.int64)

    def _sessions(self, flows: FlowBatch) -> dict[str, np.ndarray]:
        port = np.asarray(flows["dst_port"]).astype(np.int64)
        fwd_pkts, bwd_pkts = num(flows, "Tot Fwd Pkts"), num(flows, "Tot Bwd Pkts")
        sent, received = num(flows, "TotLen Fwd Pkts"), num(flows, "TotLen Bwd Pkts")
        largest = num(flows, "Fwd Pkt Len Max")
        session = (
            (np.asarray(flows["protocol"]) == TCP)
            & np.isin(port, self._ports)
            & ~tcp_outcomes(flows)["half_open"]
            & (sent > largest)  # at least two client data segments
            & (received > 0)
        )
        idx = np.flatnonzero(session)
        return {
            "src": flows["src_ip"][idx],
            "dst": flows["dst_ip"][idx],
            "port": port[idx],
            "sent": sent[idx],
            "received": received[idx],
            "pkts": fwd_pkts[idx] + bwd_pkts[idx],
            "dur": num(flows, "Flow Duration")[idx] / 1e6,
            "reset": num(flows, "bwd_rst_cnt")[idx],
            "ts": np.asarray(flows["first_ts"], dtype=np.float64)[idx],
            "internal": is_private(flows["src_ip"][idx], cgnat=False)
            & is_private(flows["dst_ip"][idx], cgnat=False),
        }

    def _attempts(self, rows: dict[str, np.ndarray]) -> np.ndarray:
        """Mark the sessions that may be login attempts (see the module docstring)."""
        cfg = self.cfg
        attempt = (rows["received"] <= cfg.max_server_bytes) & (
            rows["pkts"] <= cfg.max_flow_packets
        )
        if cfg.internal_min_attempt_seconds > 0 and len(attempt):
            quick = rows["internal"] & (rows["dur"] < cfg.internal_min_attempt_seconds)
            attempt &= ~(quick & (rows["port"] != RDP_PORT))
        return attempt

    def _similar(self, rows: dict[str, np.ndarray]) -> np.ndarray:
        """Mark the attempts near the attempts' median size on both sides."""
        cfg = self.cfg
        attempt = self._attempts(rows)
        if not attempt.any():
            return attempt
        out = attempt.copy()
        for side in ("sent", "received"):
            med = float(np.median(rows[side][attempt]))
            tol = max(cfg.similar_tolerance * med, cfg.similar_min_bytes)
            out &= np.abs(rows[side] - med) <= tol
        return out

    def _similar_by(self, rows: dict[str, np.ndarray], gid: np.ndarray, n: int) -> np.ndarray:
        """:meth:`_similar` within each of ``n`` groups (``gid``: each row's), all at once
        (one sort per side, no loop over groups)."""
        cfg = self.cfg
        attempt = self._attempts(rows)
        out = attempt.copy()
        for side in ("sent", "received"):
            med = _medians(rows[side], gid, attempt, n)[gid]  # NaN: a group without attempts
            tol = np.maximum(cfg.similar_tolerance * med, cfg.similar_min_bytes)
            out &= np.abs(rows[side] - med) <= tol
        return out

    def detect(self, flows: FlowBatch, window_start: float, window_end: float) -> list[Detection]:
        if not self.cfg.enabled or not self.tiers:
            return []
        rows, is_new = self.store.update(self._sessions(flows), window_end)
        if not is_new.any():
            return []
        pair = group_ids(rows["src"], rows["dst"], rows["port"])
        out = self._pairs(rows, is_new, pair, window_start, window_end)
        found, nets = self._by_prefix(rows, is_new, pair[0], window_start, window_end)
        out += found
        if self.cfg.distributed_min_sources:
            horizon = self.tiers[0][0]
            live = (rows["ts"] >= window_end - horizon) | is_new
            if len(nets):  # a /64 reported this window is not also part of ``many``
                live = self._without_nets(rows, live, nets)
            out += self._distributed(
                select(rows, live), is_new[live], horizon, window_start, window_end
            )
        return out

    def _pairs(
        self,
        rows: dict[str, np.ndarray],
        is_new: np.ndarray,
        pair: tuple[np.ndarray, np.ndarray, np.ndarray],
        window_start: float,
        window_end: float,
    ) -> list[Detection]:
        """Judge each pair's shape on all its remembered sessions, count it per tier.

        The share of alike attempts is taken over every session of the pair within the
        slow horizon, so a relay's varied messages are not judged on the ten of them
        that fell in the last two minutes; the attempts are counted per tier. ``pair``:
        the rows' (source, server, port) groups (:func:`.scan_probes.group_ids`).
        """
        gid, first, _ = pair
        n = len(first)
        has_new = np.bincount(gid[is_new], minlength=n) > 0
        lives = [(rows["ts"] >= window_end - h) | is_new for h, _ in self.tiers]
        enough = np.zeros(n, dtype=bool)
        for (_, threshold), live in zip(self.tiers, lives, strict=True):
            enough |= np.bincount(gid[live], minlength=n) >= threshold
        members = Members(gid, n)
        out = []
        for g in np.flatnonzero(has_new & enough):
            m = members(g)
            pr = select(rows, m)
            similar = self._similar(pr)
            if similar.mean() < self.cfg.min_similar_share:
                continue
            for (horizon, threshold), live in zip(self.tiers, lives, strict=True):
                alike = similar & live[m]
                k = int(alike.sum())
                if k < threshold:
                    continue
                source = addrs_to_str(pr["src"][:1])[0]
                ev = self._evidence(pr, alike, is_new[m], threshold, horizon)
                ev["similar_share"] = round(float(similar.mean()), 3)
                ev["sources"] = 1
                ev["top_sources"] = [{"value": source, "count": k}]
                out.append(self._detection(source, pr, ev, horizon, window_start, window_end))
                break
        return out

    def _by_prefix(
        self,
        rows: dict[str, np.ndarray],
        is_new: np.ndarray,
        pair: np.ndarray,
        window_start: float,
        window_end: float,
    ) -> tuple[list[Detection], np.ndarray]:
        """IPv6 sources judged per (/64, server, port), as :meth:`_pairs` judges a pair:
        the share of alike attempts over the group's sessions within the slow horizon,
        then each tier's count, where no address of the /64 made that many alike
        attempts by itself (that address is :meth:`_pairs`' finding). Only groups a
        session of this window touched are grouped, and all of them are judged at once
        (a LAN's /64 makes many groups). ``pair``: each row's (source, server, port)
        group. Returns the findings and the sorted (/64, server, port) hashes of the
        groups reported."""
        none = np.zeros(0, dtype=np.uint64)
        v6 = np.flatnonzero(~is_v4_mapped(rows["src"]))
        if len(v6) == 0 or not is_new[v6].any():
            return [], none
        net = network_of(rows["src"][v6])
        keys = key_hash(net, rows["dst"][v6], rows["port"][v6])
        hot = member_of(keys, np.sort(keys[is_new[v6]]))
        v6, net, keys = v6[hot], net[hot], keys[hot]
        pr, new = select(rows, v6), is_new[v6]
        gid, first, sessions = group_ids(net, pr["dst"], pr["port"])
        n = len(first)
        similar = self._similar_by(pr, gid, n)
        share = np.bincount(gid, weights=similar, minlength=n) / sessions
        addr = pair[v6]  # each row's address's sessions to the group's server and port
        n_addr = int(addr.max()) + 1
        tier = np.full(n, -1)  # the first tier each group is reported in
        for t, (horizon, threshold) in enumerate(self.tiers):
            alike = similar & ((pr["ts"] >= window_end - horizon) | new)
            per_addr = np.bincount(addr[alike], minlength=n_addr)
            most = np.zeros(n, dtype=np.int64)
            np.maximum.at(most, gid, per_addr[addr])
            hit = (np.bincount(gid[alike], minlength=n) >= threshold) & (most < threshold)
            tier[hit & (tier < 0) & (share >= self.cfg.min_similar_share)] = t
        hits = np.flatnonzero(tier >= 0)
        if len(hits) == 0:
            return [], none
        members = Members(gid, n)
        out: list[Detection] = []
        for g in hits.tolist():
            horizon, threshold = self.tiers[tier[g]]
            m = members(g)
            gr = select(pr, m)
            alike = similar[m] & ((gr["ts"] >= window_end - horizon) | new[m])
            _, a_first, per_addr = group_ids(gr["src"][alike])
            ev = self._evidence(gr, alike, new[m], threshold, horizon)
            ev["similar_share"] = round(float(share[g]), 3)
            ev["sources"] = len(a_first)
            ev["top_sources"] = top_counts(addrs_to_str(gr["src"][alike][a_first]), per_addr)
            source = network_text(net[first[g] : first[g] + 1])
            out.append(self._detection(source, gr, ev, horizon, window_start, window_end))
        return out, np.sort(keys[first[hits]])

    @staticmethod
    def _without_nets(
        rows: dict[str, np.ndarray], mask: np.ndarray, nets: np.ndarray
    ) -> np.ndarray:
        """``mask`` less the sessions of IPv6 sources whose (/64, server, port) hash is
        one of ``nets`` (sorted)."""
        v6 = np.flatnonzero(mask & ~is_v4_mapped(rows["src"]))
        keys = key_hash(network_of(rows["src"][v6]), rows["dst"][v6], rows["port"][v6])
        out = mask.copy()
        out[v6[member_of(keys, nets)]] = False
        return out

    def _distributed(
        self,
        rows: dict[str, np.ndarray],
        is_new: np.ndarray,
        horizon: float,
        window_start: float,
        window_end: float,
    ) -> list[Detection]:
        cfg = self.cfg
        gid, first, sessions = group_ids(rows["dst"], rows["port"])
        has_new = np.bincount(gid[is_new], minlength=len(first)) > 0
        members = Members(gid, len(first))
        out = []
        for g in np.flatnonzero(has_new & (sessions >= cfg.distributed_min_attempts)):
            m = members(g)
            pr = select(rows, m)
            similar = self._similar(pr)
            k = int(similar.sum())
            if k < cfg.distributed_min_attempts or k < cfg.min_similar_share * len(similar):
                continue
            src_g, src_first, _ = group_ids(pr["src"][similar])
            if len(src_first) < cfg.distributed_min_sources:
                continue
            ev = self._evidence(pr, similar, is_new[m], cfg.distributed_min_attempts, horizon)
            ev["sources"] = len(src_first)
            ev["top_sources"] = top_counts(
                addrs_to_str(pr["src"][similar][src_first]), np.bincount(src_g)
            )
            out.append(self._detection("many", pr, ev, horizon, window_start, window_end))
        return out

    def _evidence(
        self,
        rows: dict[str, np.ndarray],
        similar: np.ndarray,
        is_new: np.ndarray,
        threshold: int,
        horizon: float,
    ) -> dict[str, object]:
        port = int(rows["port"][0])
        a = select(rows, similar)
        return {
            "attempts": int(similar.sum()),
            "threshold": threshold,
            "attempts_in_window": int((similar & is_new).sum()),
            "port": port,
            "service": SERVICE_NAMES.get(port, f"tcp/{port}"),
            "horizon_seconds": horizon,
            "mean_packets": round(float(a["pkts"].mean()), 1),
            "mean_bytes_sent": round(float(a["sent"].mean()), 1),
            "mean_duration_seconds": round(float(a["dur"].mean()), 3),
            "first_seen": float(a["ts"].min()),
            "last_seen": float(a["ts"].max()),
            "mean_bytes_received": round(float(a["received"].mean()), 1),
            "similar_share": round(float(similar.mean()), 3),
            "server_resets": int((a["reset"] > 0).sum()),
        }

    def _detection(
        self,
        source: str,
        rows: dict[str, np.ndarray],
        ev: dict[str, object],
        horizon: float,
        window_start: float,
        window_end: float,
    ) -> Detection:
        server = addrs_to_str(rows["dst"][:1])[0]
        port = int(rows["port"][0])
        who = source
        if source == "many":
            who = f"{ev['sources']} sources"
        elif source.endswith("/64"):
            who = f"{ev['sources']} addresses of {source}"
        return Detection(
            detector=self.name,
            severity=self.cfg.severity,
            source=source,
            target=host_port(server, port),  # [IPv6]:port, read back by suppression
            window_start=window_start,
            window_end=window_end,
            evidence=ev,
            summary=(
                f"{who} made {ev['attempts']} similar short {ev['service']} sessions to "
                f"{server} within {horizon:g} s (about {ev['mean_bytes_sent']:.0f} bytes "
                f"sent and {ev['mean_bytes_received']:.0f} received each)"
            ),
        )
