"""Beaconing: a host contacting one peer on a schedule, scored like RITA.

Two kinds of evidence, one decision:

* **Check-ins**: the start times and bytes sent of each pair's connections (source,
  destination, protocol, port) over a horizon, a connection that follows the one
  before within ``min_interval_seconds`` (a retry), or one unlike the check-ins soon
  after (a task's output), belonging to its check-in. From ``min_connections``
  check-ins a pair is scored in the manner of RITA (activecm/rita
  ``analysis/beacons.go``): a *timing* score (:func:`timing_score`: ``1 - MAD/median``
  of the intervals, the share within ±40 % of the median, ``1 - CV`` with lapses left
  out) against a bar raised for few intervals and for busy sources; a *size* score
  (``1 - MAD/median`` of the bytes sent and the share within ±25 %); and a *duration*
  score, the time the series spans over ``full_coverage_seconds`` (RITA's coverage of
  the observation, over an hour rather than a day). Their mean is the beacon score.
  RITA's Bowley skew of the interval quartiles is reported but not scored: on the 7 to
  20 intervals a pair has within an hour it is mostly noise (simulated: RITA's timing
  score at 0.7 passes 11 % of Poisson series of 8 connections and misses 23 % of
  beacons with 30 % jitter; this one passes 0.2 % and misses 14 % at 8 check-ins,
  none at 20, beats lost and tasks included). Median statistics tolerate jitter and a
  missed beat, so Cobalt-Strike-style jitter (sleep drawn from ``[S(1-j), S]``) keeps a
  high score where a coefficient of variation alone would not.
* **Bursts inside one connection**: a beacon that keeps one long-lived connection
  (or one UDP socket within the flow idle timeout) is one flow. The flow engine
  keeps each flow's idle gaps (gaps longer than its activity timeout, 5 s) as
  ``Idle Mean``/``Idle Std``, and ``Flow IAT Max`` is the longest; a flow whose gaps
  are regular and numerous and separate bursts that carry data is scored the same
  way, its terms estimated from the gaps' coefficient of variation (as if normal,
  the longest gap left out when it is a lapse), without a size term (the engine keeps
  no per-burst sizes).

What is *not* a beacon, whatever its regularity: traffic to broadcast and multicast
addresses; inbound traffic (a public source to a private address: a remote client,
or a slow password guesser, which ``brute_force`` judges); traffic between two
site-internal addresses (RFC 1918, IPv6 ULA and link-local; RITA, too, judges only
internal-to-external pairs: inside a site, timers drive monitoring, CI polling its git
server, backups and directory replication; ``judge_internal`` turns it back on, for an
implant that calls home through an internal relay); a host talking to itself;
UDP to or from the infrastructure ports in ``ignore_udp_ports`` (NTP, DHCP, discovery
protocols); DNS to a resolver (a host that answered DNS for at least
``resolver_min_clients`` clients within the horizon) and a resolver's own queries
upstream; the periodic contacts of a *poller*: a source with periodic contacts
to at least ``poller_min_destinations`` destinations on the same period (within
``poller_period_tolerance``) is monitoring infrastructure, and none of its contacts
on that period is reported (an implant beacons to one or two peers); and, its
mirror, contacts to a *polled service*: a destination service (address, protocol,
port) that at least ``prevalence_min_sources`` sources contact periodically within
the horizon is a service the site polls (every mail client of a LAN polling its
provider's IMAPS, update and management agents checking in), and no contact to it is
reported. This is RITA's *prevalence* ("a low percentage of internal hosts
communicating with an external one can be suspicious") made a rule: a C2 has one or a
few implants calling it. A source counts for a service from
:data:`PREVALENCE_MIN_CONNECTIONS` check-ins on a timer's schedule (timing score at
least :data:`PREVALENCE_MIN_TIMING`; with two or three intervals a random series
passes ``min_timing_score`` one time in three, so a popular address contacted at
random, a CDN's, would count as polled). Why a cut-off rather than a timing bar raised
per other source (as for a busy source's destinations): mail clients' timing scores
(0.95 to 0.99) sit above what jittered implants score, so a margin that silences them
at 10 sources (a bar over 0.99 at 8 check-ins: 0.016 a source) puts five hosts
beaconing with 50 % jitter (about 0.89) under their bar (0.91) more often than not;
the cut-off judges 1 to ``prevalence_min_sources - 1`` infected hosts exactly as it
judges one. *The blind spot*: a C2 that at least ``prevalence_min_sources`` of the
site's hosts beacon to on a timer's schedule (an outbreak, a worm) is not reported by
this detector, nor is a C2 sharing an address and port with a service that many hosts
poll (a fronting CDN's edge), nor one whose implant forges periodic contacts to it from
that many other addresses of its LAN (raw sockets; the sources are counted, not
vouched for: IP source guard or uRPF on the LAN stops it). Set the key to 0 to judge
every pair alone.

State, bounded by the horizon and by row caps: the connection history (pair hash,
time, bytes: 24 bytes a connection, at most ``max_state_rows``), the periodic contacts
seen (for the poller and prevalence rules: source, destination and service hashes,
period, which rule they count for: 42 bytes each, at most :data:`MAX_PERIODIC_ROWS`,
one per periodic pair seen in a window) and the (resolver, client) pairs of answered
DNS (24 bytes each, at most :data:`.dns_tunnel.MAX_RESOLVER_ROWS`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .. import hash_key
from ..detection import Detection, host_port
from ..flow_schema import FlowBatch, addr_to_str
from .base import HorizonStore, addr_words, mix64, unique_columns
from .catalog import BeaconConfig
from .dns_tunnel import DNS_PORT, ObservedResolvers, addr_hash
from .features import PROTO_NAMES, TCP, UDP, _is_multicast_or_broadcast, col, num

MAX_PERIODIC_ROWS = 200_000
_MAD_PER_SD = 0.6745  # MAD of a normal distribution, in standard deviations
REGULAR_BAND = 0.4  # an interval within ±40 % of the median is on schedule
SIZE_BAND = 0.25  # a connection within ±25 % of the median bytes sent is a like check-in
FOLLOW_UP_SHARE = 0.25  # an unlike connection this soon after a beat belongs to it
LAPSE = 1.6  # an interval of more typical ones is a lapse (beats lost), not jitter
FAN_OUT_MARGIN = 0.02  # the timing bar is raised by this per other same-period destination
SMALL_SAMPLE_MARGIN = 1.0  # the timing bar is raised by this / intervals (chance regularity)
PERIOD_MIN_CONNECTIONS = 4  # enough to tell a pair's period for the poller rule
PREVALENCE_MIN_CONNECTIONS = 3  # check-ins (two intervals) that count a source for prevalence
PREVALENCE_MIN_TIMING = 0.9  # ... on a timer's schedule (15 % of random triples pass, 4 % of 4)
erf = np.vectorize(math.erf, otypes=[np.float64])
_NO_PERIODIC: dict[str, np.ndarray] = {
    "ts": np.zeros(0),
    "src": np.zeros(0, np.uint64),
    "dst": np.zeros(0, np.uint64),
    "service": np.zeros(0, np.uint64),
    "period": np.zeros(0),
    "poller": np.zeros(0, bool),
    "prevalence": np.zeros(0, bool),
}


def is_private(addrs: np.ndarray, cgnat: bool = True) -> np.ndarray:
    """Site-internal addresses: RFC 1918, CGNAT (unless ``cgnat`` is False: a carrier's
    or an overlay VPN's space rather than a site's), link-local, IPv6 ULA and link-local."""
    raw = np.frombuffer(np.ascontiguousarray(addrs).tobytes(), dtype=np.uint8).reshape(-1, 16)
    v4 = (raw[:, :10] == 0).all(axis=1) & (raw[:, 10] == 0xFF) & (raw[:, 11] == 0xFF)
    a, b = raw[:, 12], raw[:, 13]
    private4 = (
        (a == 10)
        | ((a == 172) & ((b & 0xF0) == 16))
        | ((a == 192) & (b == 168))
        | ((a == 100) & ((b & 0xC0) == 64) & cgnat)
        | ((a == 169) & (b == 254))
    )
    private6 = ((raw[:, 0] & 0xFE) == 0xFC) | ((raw[:, 0] == 0xFE) & ((raw[:, 1] & 0xC0) == 0x80))
    return np.where(v4, private4, private6)


def service_hash(dst_h: np.ndarray, protocol: np.ndarray, port: np.ndarray) -> np.ndarray:
    """Hash a destination service: (destination address hash, protocol, port)."""
    svc = (protocol.astype(np.uint64) << np.uint64(16)) | port.astype(np.uint64)
    return mix64(dst_h ^ svc)


def pair_hash(flows: FlowBatch) -> np.ndarray:
    """Hash (src, dst, protocol, dst port) into 64 bits, keyed (hash_key.py): collisions
    are negligible at 2^-64, and cannot be computed (a C2 address in the attacker's /64
    made to share a benign pair's key, and so its timing)."""
    sh, sl = addr_words(flows["src_ip"])
    dh, dl = addr_words(flows["dst_ip"])
    svc = (flows["protocol"].astype(np.uint64) << np.uint64(16)) | flows["dst_port"].astype(
        np.uint64
    )
    h = mix64(svc, hash_key.word())
    for part in (dl, dh, sl, sh):
        h = mix64(h ^ part)
    return h


def group_quantiles(
    values: np.ndarray, gid: np.ndarray, n_groups: int, qs: tuple[float, ...]
) -> list[np.ndarray]:
    """Per-group quantiles (nearest rank, as RITA's quartiles); NaN for empty groups."""
    order = np.lexsort((values, gid))
    v = values[order]
    counts = np.bincount(gid, minlength=n_groups)
    start = np.cumsum(counts) - counts
    ok = counts > 0
    out = []
    for q in qs:
        lo = start + np.floor(q * (counts - 1)).astype(np.int64)
        hi = start + np.ceil(q * (counts - 1)).astype(np.int64)
        frac = q * (counts - 1) - np.floor(q * (counts - 1))
        r = np.full(n_groups, np.nan)
        r[ok] = v[lo[ok]] * (1 - frac[ok]) + v[hi[ok]] * frac[ok]
        out.append(r)
    return out


def group_median_mad(
    values: np.ndarray, gid: np.ndarray, n_groups: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per-group median and median absolute deviation (groups given by ``gid``)."""
    (med,) = group_quantiles(values, gid, n_groups, (0.5,))
    (mad,) = group_quantiles(np.abs(values - med[gid]), gid, n_groups, (0.5,))
    return med, mad


def dispersion_score(median: np.ndarray, mad: np.ndarray) -> np.ndarray:
    """RITA's MAD score ``1 - MAD/median`` in [0, 1]; a constant zero counts as regular."""
    with np.errstate(divide="ignore", invalid="ignore"):
        score = np.where(median > 0, 1.0 - mad / median, np.where(mad == 0, 1.0, 0.0))
    return np.clip(np.nan_to_num(score), 0.0, 1.0)


def bowley_skew(q1: np.ndarray, q2: np.ndarray, q3: np.ndarray) -> np.ndarray:
    """Bowley's quartile skew, 0 where the quartiles are too close to say (as RITA does)."""
    iqr = q3 - q1
    ok = (iqr > 0.1 * np.abs(q2)) & (q2 != q1) & (q2 != q3)
    with np.errstate(divide="ignore", invalid="ignore"):
        skew = np.where(ok, (q1 + q3 - 2 * q2) / np.where(ok, iqr, 1.0), 0.0)
    return np.clip(np.nan_to_num(skew), -1.0, 1.0)


def timing_score(dispersion: np.ndarray, regular: np.ndarray, cv: np.ndarray) -> np.ndarray:
    """Mean of the dispersion score, the on-schedule share and ``1 - CV`` of the intervals.

    The median terms tolerate jitter and a missed beat; the coefficient of variation
    (lapses left out) sees the spread of random (Poisson) contacts that a few intervals
    can hide from the median.
    """
    cv_score = np.clip(1.0 - np.nan_to_num(cv, nan=1.0), 0.0, 1.0)
    return (dispersion + regular + cv_score) / 3


def interval_scores(b_ts: np.ndarray, b_gid: np.ndarray, n_groups: int) -> dict[str, np.ndarray]:
    """Per group, from its beats' times (grouped, in time order): the intervals' quartiles
    (``q1``, ``median``, ``q3``), ``dispersion`` score, ``regular`` (on-schedule) share and
    ``cv`` (coefficient of variation, lapses left out)."""
    b_same = b_gid[1:] == b_gid[:-1]
    iv, iv_gid = np.diff(b_ts)[b_same], b_gid[1:][b_same]
    q1, med, q3 = group_quantiles(iv, iv_gid, n_groups, (0.25, 0.5, 0.75))
    deviation = np.abs(iv - med[iv_gid])
    (mad,) = group_quantiles(deviation, iv_gid, n_groups, (0.5,))
    n_iv = np.maximum(np.bincount(iv_gid, minlength=n_groups), 1)
    regular = (
        np.bincount(iv_gid, weights=deviation <= REGULAR_BAND * med[iv_gid], minlength=n_groups)
        / n_iv
    )
    # The coefficient of variation leaves out lapses (an interval of more than
    # LAPSE typical ones: missed beats, the host asleep): they are not jitter, and
    # the median terms shrug them off.
    kept = iv < LAPSE * med[iv_gid]
    n_kept = np.maximum(np.bincount(iv_gid, weights=kept, minlength=n_groups), 1)
    mean = np.bincount(iv_gid, weights=iv * kept, minlength=n_groups) / n_kept
    var = np.bincount(iv_gid, weights=kept * (iv - mean[iv_gid]) ** 2, minlength=n_groups) / n_kept
    with np.errstate(invalid="ignore", divide="ignore"):
        cv = np.sqrt(var) / mean
    return {
        "q1": q1,
        "median": med,
        "q3": q3,
        "dispersion": dispersion_score(med, mad),
        "regular": regular,
        "cv": cv,
    }


class BeaconDetector:
    """Score pairs' connection series and long flows' idle gaps for schedule-like regularity."""

    name = "beacon"

    def __init__(self, cfg: BeaconConfig) -> None:
        self.cfg = cfg
        # Connection history sorted by pair hash: per window only the pairs seen in
        # the window are looked up (binary search), and the new rows are merged in.
        self._key = np.zeros(0, dtype=np.uint64)
        self._ts = np.zeros(0, dtype=np.float64)
        self._bytes = np.zeros(0, dtype=np.float64)
        self._periodic = HorizonStore(cfg.horizon_seconds, MAX_PERIODIC_ROWS)
        self._resolvers = ObservedResolvers(cfg.horizon_seconds, cfg.resolver_min_clients)
        self._udp_ports = np.unique(np.asarray(cfg.ignore_udp_ports, dtype=np.int64))
        # Pairs with a few connections tell their period (poller and prevalence rules);
        # they are judged from ``min_connections`` on.
        tell = PERIOD_MIN_CONNECTIONS
        if cfg.prevalence_min_sources:
            tell = min(tell, PREVALENCE_MIN_CONNECTIONS)
        self._min_history = min(tell, cfg.min_connections)

    def __len__(self) -> int:
        return len(self._key)

    # ------------------------------------------------------------------ state

    def _merge(self, key: np.ndarray, ts: np.ndarray, size: np.ndarray, now: float) -> None:
        keep = self._ts >= now - self.cfg.horizon_seconds
        if not keep.all():
            self._key, self._ts, self._bytes = self._key[keep], self._ts[keep], self._bytes[keep]
        order = np.argsort(key)
        key, ts, size = key[order], ts[order], size[order]
        # Merge two sorted runs: new rows land after equal keys already kept.
        at = np.searchsorted(self._key, key, side="right") + np.arange(len(key))
        old = np.ones(len(self._key) + len(key), dtype=bool)
        old[at] = False
        merged: list[Any] = []
        for kept, added in ((self._key, key), (self._ts, ts), (self._bytes, size)):
            out = np.empty(len(old), dtype=kept.dtype)
            out[old] = kept
            out[at] = added
            merged.append(out)
        self._key, self._ts, self._bytes = merged
        excess = len(self._key) - self.cfg.max_state_rows
        if excess > 0:
            drop = np.argpartition(self._ts, excess)[:excess]
            keep = np.ones(len(self._key), dtype=bool)
            keep[drop] = False
            self._key, self._ts, self._bytes = self._key[keep], self._ts[keep], self._bytes[keep]

    def _judged(self, flows: FlowBatch, now: float) -> np.ndarray:
        """Mask of the flows that may be beacons (not broadcast, infrastructure or DNS)."""
        dst_h = addr_hash(flows["dst_ip"])
        resolvers = self._resolvers.update(flows, now)
        udp = flows["protocol"] == UDP
        infra = udp & (
            np.isin(flows["dst_port"].astype(np.int64), self._udp_ports)
            | np.isin(flows["src_port"].astype(np.int64), self._udp_ports)
        )
        # DNS to a resolver, and a resolver's own queries upstream (it forwards for clients).
        to_resolver = (flows["dst_port"] == DNS_PORT) & (
            np.isin(dst_h, resolvers) | np.isin(addr_hash(flows["src_ip"]), resolvers)
        )
        to_itself = flows["src_ip"] == flows["dst_ip"]
        # Inbound (a public source to a private address) is a client of ours, not an
        # implant calling home (RITA filters external-to-internal the same way).
        inbound = ~is_private(flows["src_ip"]) & is_private(flows["dst_ip"])
        # Both ends inside the site (RFC 1918, ULA): monitoring, CI polling its git server,
        # backups, directory replication; RITA judges internal-to-external pairs only.
        internal = np.zeros(len(flows), dtype=bool)
        if not self.cfg.judge_internal:
            internal = is_private(flows["src_ip"], cgnat=False) & is_private(
                flows["dst_ip"], cgnat=False
            )
        group = _is_multicast_or_broadcast(flows["dst_ip"])
        return ~(group | infra | to_resolver | to_itself | inbound | internal)

    # ------------------------------------------------------------------ scoring

    def _duration_score(self, span: np.ndarray) -> np.ndarray:
        return np.clip(span / self.cfg.full_coverage_seconds, 0.0, 1.0)

    def _series(self, flows: FlowBatch, now: float) -> dict[str, np.ndarray]:
        """Score the connection series of the pairs seen in this window."""
        if len(flows) == 0:
            self._merge(np.zeros(0, dtype=np.uint64), np.zeros(0), np.zeros(0), now)
            return {}
        batch_key = pair_hash(flows)
        self._merge(
            batch_key,
            np.asarray(flows["first_ts"], dtype=np.float64),
            num(flows, "TotLen Fwd Pkts"),
            now,
        )
        history = self._history(batch_key)
        if history is None:
            return {}
        pairs, gid, rows, n_rows = history
        n_groups = len(pairs)
        ts, size = self._ts[rows], self._bytes[rows]
        s_med, s_mad = group_median_mad(size, gid, n_groups)
        like = np.abs(size - s_med[gid]) <= SIZE_BAND * s_med[gid]
        beat = self._beats(ts, gid, like, n_groups)
        beats = np.bincount(gid[beat], minlength=n_groups)
        iv = interval_scores(ts[beat], gid[beat], n_groups)
        size_share = np.bincount(gid, weights=like, minlength=n_groups) / np.maximum(n_rows, 1)
        first = np.minimum.reduceat(ts, np.r_[0, np.cumsum(n_rows)[:-1]])
        last = np.maximum.reduceat(ts, np.r_[0, np.cumsum(n_rows)[:-1]])
        by_key = np.argsort(batch_key)
        at = np.searchsorted(batch_key, pairs, sorter=by_key)
        return {
            "row": by_key[at],  # a flow of the pair in this batch
            "connections": beats.astype(np.float64),
            "interval": iv["median"],
            "dispersion": 1.0 - iv["dispersion"],
            "skew": bowley_skew(iv["q1"], iv["median"], iv["q3"]),
            "regular": iv["regular"],
            "timing": timing_score(iv["dispersion"], iv["regular"], iv["cv"]),
            "bytes": s_med,
            "size": (dispersion_score(s_med, s_mad) + size_share) / 2,
            "duration": self._duration_score(last - first),
            "in_connection": np.zeros(n_groups, dtype=bool),
            "judged": beats >= self.cfg.min_connections,
            "history": n_rows.astype(np.float64),  # connections remembered
        }

    def _history(
        self, batch_key: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
        """The remembered connections of this window's pairs that have enough of them.

        Return (those pairs, each connection's pair index, its row in the history, the
        connections per pair), pair by pair and in time order; None when no pair has enough.
        """
        sorted_keys = np.sort(batch_key)
        pairs = sorted_keys[np.r_[True, sorted_keys[1:] != sorted_keys[:-1]]]
        lo = np.searchsorted(self._key, pairs, side="left")
        hi = np.searchsorted(self._key, pairs, side="right")
        cand = np.flatnonzero(hi - lo >= self._min_history)
        if len(cand) == 0:
            return None
        n_rows = hi[cand] - lo[cand]
        gid = np.repeat(np.arange(len(cand)), n_rows)
        rows = np.repeat(lo[cand] - np.cumsum(np.r_[0, n_rows[:-1]]), n_rows) + np.arange(
            n_rows.sum()
        )
        rows = rows[np.lexsort((self._ts[rows], gid))]
        return pairs[cand], gid, rows, n_rows

    def _beats(
        self, ts: np.ndarray, gid: np.ndarray, like: np.ndarray, n_groups: int
    ) -> np.ndarray:
        """Mark the connections that are beats (``like``: within the size band of check-ins).

        A beat is a check-in and what follows it closely: a connection within
        min_interval_seconds of the one before (a retry), or one unlike the check-ins
        (bytes sent outside the size band: a task's output posted) within a quarter of
        the typical interval. Intervals are measured between beats. (Merging like
        connections relative to the period would trim the short gaps of random
        contacts and make them look regular.)
        """
        same = gid[1:] == gid[:-1]
        gap = np.diff(ts)
        # The typical interval from check-in to check-in (like connections only).
        l_ts, l_gid = ts[like], gid[like]
        l_gap = np.diff(l_ts)
        apart = (l_gid[1:] == l_gid[:-1]) & (l_gap >= self.cfg.min_interval_seconds)
        typical = np.zeros(n_groups)
        if apart.any():
            (typical,) = group_quantiles(l_gap[apart], l_gid[1:][apart], n_groups, (0.5,))
        follow_up = ~like[1:] & (gap < FOLLOW_UP_SHARE * np.nan_to_num(typical[gid[1:]]))
        return np.r_[True, ~same | ((gap >= self.cfg.min_interval_seconds) & ~follow_up)]

    def _bursts(self, flows: FlowBatch, now: float) -> dict[str, np.ndarray]:
        """Score the idle gaps of long flows that ended in this window (beacons in one flow)."""
        idle = col(flows, "Idle Mean") / 1e6
        idle_sd = col(flows, "Idle Std") / 1e6
        active = np.nan_to_num(col(flows, "Active Mean") / 1e6)
        duration = col(flows, "Flow Duration") / 1e6
        longest = col(flows, "Flow IAT Max") / 1e6  # the longest idle gap
        with np.errstate(invalid="ignore", divide="ignore"):
            gaps = np.floor(duration / (idle + active) + 0.5)
            per_burst = num(flows, "TotLen Fwd Pkts") / (gaps + 1)
            # Leave the longest gap out when it is a lapse (as for series).
            rest = (gaps * idle - longest) / (gaps - 1)
            rest_var = (gaps * (idle_sd**2 + idle**2) - longest**2) / (gaps - 1) - rest**2
            missed = (gaps >= 4) & (longest >= LAPSE * rest)
            cv = np.where(missed, np.sqrt(np.maximum(rest_var, 0)) / rest, idle_sd / idle)
        cand = np.flatnonzero(
            np.isfinite(idle)
            & np.isfinite(cv)
            & (idle >= self.cfg.min_interval_seconds)
            & (gaps + 1 >= self.cfg.min_connections)
        )
        if len(cand) == 0:
            return {}
        dispersion = np.clip(1.0 - _MAD_PER_SD * cv[cand], 0.0, 1.0)
        # Share of gaps within the band, were they normal around their mean.
        with np.errstate(divide="ignore"):
            regular = erf(REGULAR_BAND / (np.maximum(cv[cand], 1e-9) * math.sqrt(2)))
        n = len(cand)
        return {
            "row": cand,
            "connections": gaps[cand] + 1,
            "interval": idle[cand] + active[cand],
            "dispersion": 1.0 - dispersion,
            "skew": np.full(n, np.nan),
            "regular": regular,
            "timing": timing_score(dispersion, regular, cv[cand]),
            "bytes": per_burst[cand],
            "size": np.full(n, np.nan),
            "duration": self._duration_score(duration[cand]),
            "in_connection": np.ones(n, dtype=bool),
            # Keep-alives tell a period (for the poller rule) but are not judged.
            "judged": per_burst[cand] >= self.cfg.min_burst_bytes,
            "history": gaps[cand] + 1,
        }

    def _remember_periodic(self, new: dict[str, np.ndarray], now: float) -> dict[str, np.ndarray]:
        kept, _ = self._periodic.update(new, now)
        return kept

    def _periodic_counts(
        self, flows: FlowBatch, found: dict[str, np.ndarray], now: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per candidate: the distinct destinations its source contacts on the same period
        (the poller rule) and the distinct sources that poll its destination service
        (the prevalence rule).

        Periodic pairs are remembered for the horizon as (source, destination, service,
        log period, which rule they count for), so a poller whose destinations come and
        go across windows, or a service whose pollers show up in different windows, is
        still recognised. A pair counts for the poller rule from
        :data:`PERIOD_MIN_CONNECTIONS` connections on with a timing score of at least
        ``min_timing_score``; for the prevalence rule from
        :data:`PREVALENCE_MIN_CONNECTIONS` check-ins on with a timing score of at least
        :data:`PREVALENCE_MIN_TIMING` (a timer's schedule: few intervals, so a stricter
        bar, or a popular address contacted at random would count as polled).
        """
        rows = found["row"]
        regular = np.isfinite(found["interval"])
        poller = regular & (found["timing"] >= self.cfg.min_timing_score)
        poller &= found["history"] >= min(PERIOD_MIN_CONNECTIONS, self.cfg.min_connections)
        prevalence = np.zeros(len(rows), dtype=bool)
        if self.cfg.prevalence_min_sources:
            bar = max(self.cfg.min_timing_score, PREVALENCE_MIN_TIMING)
            prevalence = regular & (found["timing"] >= bar)
            prevalence &= found["connections"] >= PREVALENCE_MIN_CONNECTIONS
        src_h = addr_hash(flows["src_ip"][rows])
        dst_h = addr_hash(flows["dst_ip"][rows])
        service = service_hash(dst_h, flows["protocol"][rows], flows["dst_port"][rows])
        log_period = np.log(np.maximum(np.nan_to_num(found["interval"]), 1e-3))
        new = poller | prevalence
        kept = self._remember_periodic(
            {
                "ts": np.full(int(new.sum()), now),
                "src": src_h[new],
                "dst": dst_h[new],
                "service": service[new],
                "period": log_period[new],
                "poller": poller[new],
                "prevalence": prevalence[new],
            },
            now,
        )
        told = kept["poller"]
        fan_out = self._same_period(
            kept["src"][told], kept["dst"][told], kept["period"][told], src_h, log_period
        )
        # Distinct sources per service: one entry per (service, source).
        polled = kept["prevalence"]
        (services, _), _ = unique_columns(kept["service"][polled], kept["src"][polled])
        sources = np.searchsorted(services, service, side="right") - np.searchsorted(
            services, service, side="left"
        )
        return fan_out, sources

    def _same_period(
        self,
        src: np.ndarray,
        dst: np.ndarray,
        period: np.ndarray,
        src_h: np.ndarray,
        log_period: np.ndarray,
    ) -> np.ndarray:
        """Per candidate (``src_h``, ``log_period``): the distinct remembered destinations
        (``src``, ``dst``, ``period``) of its source on the same period."""
        tol = math.log1p(self.cfg.poller_period_tolerance)
        # One entry per (source, destination, period band): a destination counts once.
        band = np.floor(period / tol).astype(np.int64).view(np.uint64)
        _, once = unique_columns(src, dst, band)
        s, p = src[once], period[once]
        _, code = np.unique(np.concatenate([s, src_h]), return_inverse=True)
        stride = 100.0  # larger than any log period: keys of two sources never interleave
        keys = np.sort(code[: len(s)] * stride + p)
        probe = code[len(s) :] * stride + log_period
        return np.searchsorted(keys, probe + tol, side="right") - np.searchsorted(
            keys, probe - tol, side="left"
        )

    # ------------------------------------------------------------------ detect

    def detect(self, flows: FlowBatch, window_start: float, window_end: float) -> list[Detection]:
        if not self.cfg.enabled:
            return []
        if len(flows):
            flows = flows.take_lazily(self._judged(flows, window_end))
        parts = [p for p in (self._series(flows, window_end), self._bursts(flows, window_end)) if p]
        if not parts:
            self._remember_periodic(_NO_PERIODIC, window_end)
            return []
        found = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        fan_out, prevalence = self._periodic_counts(flows, found, window_end)
        size = np.where(np.isnan(found["size"]), 1.0, found["size"])
        score = np.where(
            found["in_connection"],
            (found["timing"] + found["duration"]) / 2,
            (found["timing"] + size + found["duration"]) / 3,
        )
        # A few intervals look regular by chance more often, and so does one of many
        # destinations contacted at random by one busy source (a browser): the bar is
        # raised for them (the poller rule, below, is the limit of the second).
        timing_bar = (
            self.cfg.min_timing_score
            + SMALL_SAMPLE_MARGIN / np.maximum(found["connections"] - 1, 1)
            + FAN_OUT_MARGIN * np.maximum(fan_out - 1, 0)
        )
        hits = np.flatnonzero(
            found["judged"]
            & (found["interval"] >= self.cfg.min_interval_seconds)
            & (found["timing"] >= timing_bar)
            & (size >= self.cfg.min_size_score)
            & (score >= self.cfg.min_score)
            & (fan_out < self.cfg.poller_min_destinations)
            & (prevalence < (self.cfg.prevalence_min_sources or np.inf))
        )
        out: dict[tuple[str, str], Detection] = {}
        for g in hits[np.argsort(-score[hits], kind="stable")]:
            d = self._detection(
                flows, found, int(g), float(score[g]), int(fan_out[g]), window_start, window_end
            )
            out.setdefault((d.source, d.target), d)
        return list(out.values())

    def _detection(
        self,
        flows: FlowBatch,
        found: dict[str, np.ndarray],
        g: int,
        score: float,
        fan_out: int,
        window_start: float,
        window_end: float,
    ) -> Detection:
        row = int(found["row"][g])
        source = addr_to_str(flows["src_ip"][row])
        dst = addr_to_str(flows["dst_ip"][row])
        proto = int(flows["protocol"][row])
        port = int(flows["dst_port"][row])
        target = host_port(dst, port) if proto in (TCP, UDP) else dst
        inside = bool(found["in_connection"][g])
        skew = float(found["skew"][g])
        size = float(found["size"][g])
        n = int(found["connections"][g])
        interval = float(found["interval"][g])
        what = "bursts inside one connection" if inside else "connections"
        evidence = {
            "score": round(score, 3),
            "threshold": self.cfg.min_score,
            "kind": "in_connection" if inside else "connections",
            "connections": n,
            "median_interval_seconds": round(interval, 3),
            "interval_dispersion": round(float(found["dispersion"][g]), 4),
            "interval_skew": None if math.isnan(skew) else round(skew, 3),
            "regular_share": round(float(found["regular"][g]), 3),
            "timing_score": round(float(found["timing"][g]), 3),
            "median_bytes_sent": round(float(found["bytes"][g]), 1),
            "size_score": None if math.isnan(size) else round(size, 3),
            "duration_score": round(float(found["duration"][g]), 3),
            "same_period_destinations": fan_out,
            "protocol": PROTO_NAMES.get(proto, str(proto)),
            "horizon_seconds": self.cfg.horizon_seconds,
        }
        return Detection(
            detector=self.name,
            severity=self.cfg.severity,
            source=source,
            target=target,
            window_start=window_start,
            window_end=window_end,
            evidence=evidence,
            summary=(
                f"{source} contacted {target} on a schedule: {n} {what} about every "
                f"{interval:.1f} s (beacon score {score:.2f}, interval dispersion "
                f"{float(found['dispersion'][g]):.2f})"
            ),
        )
