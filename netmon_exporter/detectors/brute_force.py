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
  at most ``max_flow_packets`` packets;
* attempts are *similar* when both their client and server bytes lie within
  ``similar_tolerance`` (or ``similar_min_bytes``) of the attempts' medians;
* a finding needs ``min_attempts`` similar attempts within ``horizon_seconds`` (or
  ``slow_min_attempts`` within ``slow_horizon_seconds``), while similar attempts make
  up at least ``min_similar_share`` of all the pair's sessions remembered (the slow
  horizon: a relay's varied messages are not judged on the few of the last minutes).

The same test per (server, port) over all sources, within ``horizon_seconds``, finds
distributed guessing
(``distributed_min_sources`` sources): the source is reported as ``many`` with the
top sources in the evidence. Thresholds follow Emerging Threats (5 SSH attempts in
120 s) and Zeek (30 failed logins in 30 minutes).
"""

from __future__ import annotations

import numpy as np

from ..detection import Detection, host_port
from ..flow_schema import FlowBatch, addrs_to_str
from .base import HorizonStore, top_counts
from .catalog import BruteForceConfig
from .features import TCP, num, tcp_outcomes
from .scan_probes import Members, group_ids, select, tiers

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


class BruteForceDetector:
    """Similar small sessions per (source, server, port) in two tiers, and per (server, port)."""

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
        }

    def _similar(self, rows: dict[str, np.ndarray]) -> np.ndarray:
        """Mark the attempts near the attempts' median size on both sides."""
        cfg = self.cfg
        attempt = (rows["received"] <= cfg.max_server_bytes) & (
            rows["pkts"] <= cfg.max_flow_packets
        )
        if not attempt.any():
            return attempt
        out = attempt.copy()
        for side in ("sent", "received"):
            med = float(np.median(rows[side][attempt]))
            tol = max(cfg.similar_tolerance * med, cfg.similar_min_bytes)
            out &= np.abs(rows[side] - med) <= tol
        return out

    def detect(self, flows: FlowBatch, window_start: float, window_end: float) -> list[Detection]:
        if not self.cfg.enabled or not self.tiers:
            return []
        rows, is_new = self.store.update(self._sessions(flows), window_end)
        if not is_new.any():
            return []
        out = self._pairs(rows, is_new, window_start, window_end)
        if self.cfg.distributed_min_sources:
            horizon = self.tiers[0][0]
            live = (rows["ts"] >= window_end - horizon) | is_new
            out += self._distributed(
                select(rows, live), is_new[live], horizon, window_start, window_end
            )
        return out

    def _pairs(
        self,
        rows: dict[str, np.ndarray],
        is_new: np.ndarray,
        window_start: float,
        window_end: float,
    ) -> list[Detection]:
        """Judge each pair's shape on all its remembered sessions, count it per tier.

        The share of alike attempts is taken over every session of the pair within the
        slow horizon, so a relay's varied messages are not judged on the ten of them
        that fell in the last two minutes; the attempts are counted per tier.
        """
        gid, first, _ = group_ids(rows["src"], rows["dst"], rows["port"])
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
        who = f"{ev['sources']} sources" if source == "many" else source
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
