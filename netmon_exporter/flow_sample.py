"""What the main process keeps of flows: the columns analysis reads, narrow, in a bounded sample.

Worker processes hand flows to the main process, and windows hold them until they
close. Neither needs all ~90 feature columns of every flow, and a flood of millions of
one-packet flows must not make either grow without bound. So:

* :func:`narrow` keeps only the columns that detectors, models and reports read
  (:data:`ANALYSIS_FEATURES`), the features as float32 (relative error below 6e-8,
  counts exact up to 16,777,216) and the keys at their own widths: about 190 bytes a
  flow instead of about 800;
* :class:`FlowSample` keeps at most ``cap`` such rows. When more come, it thins the
  heaviest groups of flows (same destination address, port and protocol) and leaves
  the small groups whole ("water-filling"): a flood is cut down to a large uniform
  sample of itself while a scan, a brute force or a beacon in the same window keeps
  every row. Each kept row carries its sampling weight (``sample_weight``, the inverse
  of its chance of being kept) so estimated sums (top talkers) stay unbiased, and
  exact totals (flows, packets and bytes per protocol and second of first packet) are
  tallied for every flow, kept or not.

Which rows are kept is decided by a hash of each flow (its priority), not by chance:
a flow thinned in a worker and again in a window gets consistent decisions, and
runs are reproducible.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from . import hash_key, row_pack
from .flow_schema import (
    FEATURE_COLUMNS,
    KEY_COLUMNS,
    MODEL_FEATURES,
    FlowBatch,
    LazyColumns,
    is_first,
    is_flow,
    is_slice,
)
from .row_pack import PackedRows

# Rows kept for per-flow analysis per window (about 50 MB) and per file a worker
# sends (a window usually gathers several files).
ROW_CAP = 250_000
FILE_ROW_CAP = 100_000
PACK_ROWS = 16_384  # rows a window gathers before it packs them (see FlowSample) ...
PACK_FROM = 100_000  # ... once it holds this many (~25 MB unpacked; below, see row_pack)
WEIGHT = "sample_weight"

# What detectors (detectors/*.py), reports (window.py) and the models' default feature set
# (models.DEFAULT_FEATURES, the one `train` uses) read; tests/test_memory_rows.py checks
# that this stays in step with those modules.
ANALYSIS_FEATURES: tuple[str, ...] = (
    *(f for f in MODEL_FEATURES if f not in KEY_COLUMNS),
    "fwd_syn_cnt",
    "bwd_syn_cnt",
    "fwd_rst_cnt",
    "bwd_rst_cnt",
    "icmp_type",
    "Idle Mean",  # beacon: regular idle gaps between bursts inside one long flow
    "Idle Std",
    "Active Mean",
    # per-query DNS statistics (dns_tunnel), per flow or per slice
    "dns_queries",
    "dns_nxdomain",
    "dns_qnames",
    "dns_zones",
    "dns_qname_len_total",
    "dns_qname_len_max",
    "dns_label_entropy",
    "dns_query_bytes",
    "dns_response_bytes",
    # whole flow or per-window slice (flow_schema.RECORD_*), and a slice's flow's age
    "flow_record",
    "flow_age",
    # top talkers (window.py): bytes on the wire, as netmon_bytes_total counts them
    "fwd_wire_bytes",
    "bwd_wire_bytes",
)
ANALYSIS_STRINGS: tuple[str, ...] = ("dns_qname",)
assert set(ANALYSIS_FEATURES) <= set(FEATURE_COLUMNS)

# The exact tally: one entry per (second of the first packet, protocol number).
# ``bytes``: on the wire (frame lengths, as netmon_bytes_total); ``payload_bytes``: transport
# payload (CICFlowMeter's TotLen), both of the records' own packets.
# ``flows``: flows begun (counted at their first record), ``whole``: whole-flow records.
TALLY_FIELDS = ("sec", "protocol", "flows", "whole", "packets", "bytes", "payload_bytes", "last")
NO_TIME = np.int64(-(2**62))  # ``sec`` of flows without a usable first packet time


def empty_tally() -> dict[str, np.ndarray]:
    return {
        "sec": np.zeros(0, np.int64),
        "protocol": np.zeros(0, np.int64),
        "flows": np.zeros(0, np.int64),
        "whole": np.zeros(0, np.int64),
        "packets": np.zeros(0, np.int64),
        "bytes": np.zeros(0, np.int64),
        "payload_bytes": np.zeros(0, np.int64),
        "last": np.zeros(0, np.float64),
    }


@dataclass(frozen=True)
class SampledFlows(FlowBatch):
    """Narrow rows kept for analysis plus the exact tally of every flow they stand for."""

    tally: Mapping[str, np.ndarray] = field(default_factory=empty_tally)

    @property
    def flows_total(self) -> int:
        return int(self.tally["flows"].sum())

    @property
    def sampled_out(self) -> int:
        """Whole flows offered but not kept as rows (interim slices are not flows)."""
        return max(int(self.tally["whole"].sum()) - int(is_flow(self).sum()), 0)


def _num(batch: FlowBatch, name: str) -> np.ndarray:
    if name not in batch:
        return np.zeros(len(batch))
    return np.nan_to_num(np.asarray(batch[name], dtype=np.float64), nan=0.0)


def tally_of(batch: FlowBatch) -> dict[str, np.ndarray]:
    """Count every flow of ``batch`` by second of its first packet and protocol.

    Flows are counted by their first record (``flow_schema.is_first``: a flow never
    cut, or a cut flow's first slice), packets and bytes by their slices (each at the
    second of the slice's first packet): a flow cut at window boundaries adds its
    traffic to the windows where it flowed and counts once, where it began, as soon as
    its first slice is handed out (not minutes later, when it ends).
    """
    n = len(batch)
    if n == 0:
        return empty_tally()
    first = np.asarray(batch["first_ts"], dtype=np.float64)
    last = np.asarray(batch["last_ts"], dtype=np.float64)
    ok = np.isfinite(first) & (np.abs(first) < 2.0**61)
    sec = np.where(ok, np.floor(np.where(ok, first, 0.0)), 0).astype(np.int64)
    sec[~ok] = NO_TIME
    proto = np.asarray(batch["protocol"], dtype=np.int64)
    packets = _num(batch, "Tot Fwd Pkts") + _num(batch, "Tot Bwd Pkts")
    wire = _num(batch, "fwd_wire_bytes") + _num(batch, "bwd_wire_bytes")  # 0 from flow CSVs
    payload = _num(batch, "TotLen Fwd Pkts") + _num(batch, "TotLen Bwd Pkts")
    flows = whole = np.ones(n, np.int64)
    if "flow_record" in batch:
        traffic = is_slice(batch)
        flows = is_first(batch).astype(np.int64)
        whole = is_flow(batch).astype(np.int64)
        packets = np.where(traffic, packets, 0.0)
        wire = np.where(traffic, wire, 0.0)
        payload = np.where(traffic, payload, 0.0)
    return _group_tally(sec, proto, flows, whole, packets, wire, payload, last)


def _group_tally(
    sec: np.ndarray,
    proto: np.ndarray,
    flows: np.ndarray,
    whole: np.ndarray,
    packets: np.ndarray,
    wire: np.ndarray,
    payload: np.ndarray,
    last: np.ndarray,
) -> dict[str, np.ndarray]:
    if len(sec) == 0:
        return empty_tally()
    order = np.lexsort((proto, sec))
    s, p = sec[order], proto[order]
    start = np.flatnonzero(np.r_[True, (s[1:] != s[:-1]) | (p[1:] != p[:-1])])
    last = np.where(np.isfinite(last), last, -np.inf)[order]
    return {
        "sec": s[start],
        "protocol": p[start],
        "flows": np.add.reduceat(flows[order], start).astype(np.int64),
        "whole": np.add.reduceat(whole[order], start).astype(np.int64),
        "packets": np.round(np.add.reduceat(packets[order], start)).astype(np.int64),
        "bytes": np.round(np.add.reduceat(wire[order], start)).astype(np.int64),
        "payload_bytes": np.round(np.add.reduceat(payload[order], start)).astype(np.int64),
        "last": np.maximum.reduceat(last, start),
    }


def merge_tallies(tallies: list[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Add tallies together (entries of the same second and protocol are summed)."""
    tallies = [t for t in tallies if len(t["sec"])]
    if not tallies:
        return empty_tally()
    if len(tallies) == 1:
        return dict(tallies[0])
    cat = {k: np.concatenate([t[k] for t in tallies]) for k in TALLY_FIELDS}
    return _group_tally(*(cat[k] for k in TALLY_FIELDS))


def progress_tally(latest: float) -> dict[str, np.ndarray]:
    """A tally entry of no flows that says how far a capture has been read (``latest``).

    With interim records every packet before the window holding ``latest`` has been
    handed out (open flows are cut at each boundary), so windows may close up to there
    even when the newest packets are still in open flows.
    """
    if not np.isfinite(latest) or abs(latest) >= 2.0**61:
        return empty_tally()
    return {
        "sec": np.array([int(np.floor(latest))], np.int64),
        "protocol": np.zeros(1, np.int64),
        "flows": np.zeros(1, np.int64),
        "whole": np.zeros(1, np.int64),
        "packets": np.zeros(1, np.int64),
        "bytes": np.zeros(1, np.int64),
        "payload_bytes": np.zeros(1, np.int64),
        "last": np.array([float(latest)]),
    }


def take_tally(tally: Mapping[str, np.ndarray], index: np.ndarray) -> dict[str, np.ndarray]:
    return {k: tally[k][index] for k in TALLY_FIELDS}


def narrow(batch: FlowBatch) -> FlowBatch:
    """Keep the columns analysis reads: keys, :data:`ANALYSIS_FEATURES` as float32, names.

    Missing columns become missing values (0 for keys, NaN for features, "" for names);
    a ``sample_weight`` column (1 when absent) says how many flows each row stands for.
    """
    n = len(batch)
    cols: dict[str, np.ndarray] = {}
    for name, dtype in KEY_COLUMNS.items():
        if name in batch:
            cols[name] = np.ascontiguousarray(batch[name], dtype=dtype)
        else:
            cols[name] = np.zeros(n, dtype=dtype)
    for name in ANALYSIS_FEATURES:
        if name in batch:
            cols[name] = np.asarray(batch[name], dtype=np.float32)
        else:
            cols[name] = np.full(n, np.nan, dtype=np.float32)
    for name in ANALYSIS_STRINGS:
        cols[name] = batch[name] if name in batch else np.full(n, "", dtype=object)
    if WEIGHT in batch:
        w = np.asarray(batch[WEIGHT], dtype=np.float32)
        cols[WEIGHT] = np.where(np.isfinite(w) & (w >= 1), w, np.float32(1))
    else:
        cols[WEIGHT] = np.ones(n, dtype=np.float32)
    return FlowBatch(cols)


def weights(batch: FlowBatch) -> np.ndarray:
    """How many flows each row stands for (1 for rows that were never thinned)."""
    if WEIGHT not in batch:
        return np.ones(len(batch))
    w = np.asarray(batch[WEIGHT], dtype=np.float64)
    return np.where(np.isfinite(w) & (w >= 1), w, 1.0)


_M1, _M2, _GOLD = (
    np.uint64(0xBF58476D1CE4E5B9),
    np.uint64(0x94D049BB133111EB),
    np.uint64(0x9E3779B97F4A7C15),
)


def _mix(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser (wrapping uint64 arithmetic)."""
    z = x + _GOLD
    z ^= z >> np.uint64(30)
    z *= _M1
    z ^= z >> np.uint64(27)
    z *= _M2
    z ^= z >> np.uint64(31)
    return z


def _words(addrs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    w = np.ascontiguousarray(addrs).view(np.uint64).reshape(-1, 2)
    return w[:, 0], w[:, 1]


def group_keys(rows: FlowBatch) -> np.ndarray:
    """Hash (destination address, destination port, protocol): the groups that get thinned
    (keyed, hash_key.py)."""
    hi, lo = _words(rows["dst_ip"])
    svc = (rows["dst_port"].astype(np.uint64) << np.uint64(8)) | rows["protocol"].astype(np.uint64)
    with np.errstate(over="ignore"):
        return _mix(_mix(_mix(svc ^ hash_key.word()) ^ hi) ^ lo)


def priorities(rows: FlowBatch) -> np.ndarray:
    """A uniform number in [0, 1) per flow, from a hash of its key and first packet time.

    Keyed (hash_key.py): unkeyed, a sender could pick source ports and times whose flows
    rank last, and so are thinned away first wherever their group is thinned."""
    shi, slo = _words(rows["src_ip"])
    dhi, dlo = _words(rows["dst_ip"])
    ports = (rows["src_port"].astype(np.uint64) << np.uint64(24)) | (
        rows["dst_port"].astype(np.uint64) << np.uint64(8)
    )
    ports |= rows["protocol"].astype(np.uint64)
    t = np.ascontiguousarray(rows["first_ts"], dtype=np.float64).view(np.uint64)
    with np.errstate(over="ignore"):
        h = _mix(ports ^ _mix(t ^ hash_key.word()))
        for part in (shi, slo, dhi, dlo):
            h = _mix(h ^ part)
    return (h >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def water_level(counts: np.ndarray, target: int) -> int:
    """Largest T >= 1 with sum(min(count, T)) <= target (T = max count if all fit)."""
    c = np.sort(counts)
    if c.sum() <= target:
        return int(c[-1]) if len(c) else 0
    m = len(c)
    below = np.concatenate([[0], np.cumsum(c)[:-1]])  # sum of the counts before i
    # with T = c[i], groups i.. are cut to c[i]: total = below[i] + c[i] * (m - i)
    over = np.flatnonzero(below + c * (m - np.arange(m)) > target)[0]
    return max(1, int((target - below[over]) // (m - over)))


class FlowSample:
    """At most ``cap`` narrow rows standing for every flow offered, and the exact tally.

    With ``pack_from`` (a window's sample) the rows are held packed column by column
    (:mod:`.row_pack`) in parts of about ``PACK_ROWS`` once the sample holds that many
    rows, and :meth:`result` hands them out unpacked only when its columns are first read
    (when the window is analysed, not while it waits for that).
    """

    def __init__(self, cap: int = ROW_CAP, pack_from: int | None = None) -> None:
        self.cap = max(1, int(cap))
        self.pack_from = pack_from
        self._rows: list[FlowBatch | PackedRows] = []
        self._loose = 0  # rows at the end of _rows not packed yet (``pack_from`` only)
        self._u: list[np.ndarray] = []  # priority of each row
        self._g: list[np.ndarray] = []  # group key of each row
        self._p: list[np.ndarray] = []  # chance of each row to have been kept
        self._ranked = False  # whether u/g/p are known for every row (once thinning began)
        self._n = 0
        self._tallies: list[Mapping[str, np.ndarray]] = []
        self._tau_keys = np.zeros(0, np.uint64)  # thinned groups, sorted ...
        self._tau = np.zeros(0, np.float64)  # ... and the priority a row must be below
        self._tau_all = 1.0  # for every group (when groups alone are too many)

    def __len__(self) -> int:
        return self._n

    @property
    def flows_total(self) -> int:
        return int(sum(int(t["flows"].sum()) for t in self._tallies))

    def add(self, batch: FlowBatch) -> None:
        """Offer every flow of ``batch`` (tallied exactly, kept as rows within the cap)."""
        if len(batch):
            self.merge(batch, tally_of(batch))

    def merge(self, batch: FlowBatch, tally: Mapping[str, np.ndarray]) -> None:
        """Offer rows already thinned elsewhere (``sample_weight``) with their flows' tally."""
        if len(tally["sec"]):
            self._tallies.append(tally)
            if len(self._tallies) > 64:
                self._tallies = [merge_tallies(self._tallies)]
        if not len(batch):
            return
        rows = narrow(batch)
        if self._tau_all >= 1.0 and not len(self._tau_keys) and not self._ranked:
            # nothing thinned yet: priorities are only needed once something must be
            self._rows.append(rows)
            self._n += len(rows)
            self._pack_loose(len(rows))
            if self._n > self.cap:
                self._thin()
            return
        self._rank()
        u, g = priorities(rows), group_keys(rows)
        p = 1.0 / weights(rows)
        tau = np.full(len(rows), self._tau_all)
        if len(self._tau_keys):
            at = np.minimum(np.searchsorted(self._tau_keys, g), len(self._tau_keys) - 1)
            hit = self._tau_keys[at] == g
            tau[hit] = np.minimum(tau[hit], self._tau[at[hit]])
        keep = u < tau
        if not keep.all():
            rows, u, g, p, tau = rows.take(keep), u[keep], g[keep], p[keep], tau[keep]
        self._append(rows, u, g, np.minimum(p, tau))
        if self._n > self.cap:
            self._thin()

    def _append(self, rows: FlowBatch, u: np.ndarray, g: np.ndarray, p: np.ndarray) -> None:
        self._rows.append(rows)
        self._u.append(u)
        self._g.append(g)
        self._p.append(p)
        self._n += len(rows)
        self._pack_loose(len(rows))

    def _pack_loose(self, added: int) -> None:
        """Pack the rows added last once there are ``PACK_ROWS`` of them (and the sample
        holds ``pack_from`` rows)."""
        if self.pack_from is None:
            return
        self._loose += added
        if self._n >= self.pack_from // 2:
            row_pack.load_soon()  # the kernels, before this window needs them
        if self._loose < PACK_ROWS or self._n < self.pack_from:
            return
        k = len(self._rows)
        while k > 0 and not isinstance(self._rows[k - 1], PackedRows):
            k -= 1
        self._rows[k:] = [PackedRows(row_pack.join(self._rows[k:]))]
        self._loose = 0

    def _rank(self) -> None:
        """Compute u/g/p of every row (once: from then on rows come with theirs)."""
        if self._ranked:
            return
        for part in self._rows:
            rows = part.unpack() if isinstance(part, PackedRows) else part
            self._u.append(priorities(rows))
            self._g.append(group_keys(rows))
            self._p.append(1.0 / weights(rows))
        self._ranked = True

    def _state(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        self._rank()
        u, g, p = (np.concatenate(x) if x else np.zeros(0) for x in (self._u, self._g, self._p))
        g = g.astype(np.uint64, copy=False)
        self._u, self._g, self._p = [u], [g], [p]
        return u, g, p

    def _thin(self) -> None:
        """Cut the heaviest groups so that a quarter of the cap is free again."""
        u, g, p = self._state()
        target = self.cap * 3 // 4
        keys, gid, counts = np.unique(g, return_inverse=True, return_counts=True)
        if len(keys) > target:
            # more groups than rows allowed: a uniform sample of everything
            tau_all = float(np.partition(u, target)[target])
            keep = u < tau_all
            p = np.minimum(p, tau_all)
            self._tau_all = min(self._tau_all, tau_all)
        else:
            level = water_level(counts, target)
            order = np.lexsort((u, gid))
            start = np.cumsum(counts) - counts
            rank = np.empty(len(u), np.int64)
            rank[order] = np.arange(len(u)) - np.repeat(start, counts)
            keep = rank < level
            big = np.flatnonzero(counts > level)
            tau = u[order[start[big] + level]]  # the priority of the first row cut
            cut = np.full(len(keys), 1.0)
            cut[big] = tau
            p = np.minimum(p, cut[gid])
            self._note_tau(keys[big], tau)
        # part by part, so that only one part is ever copied at a time
        at = 0
        for i, part in enumerate(self._rows):
            mine = keep[at : at + len(part)]
            at += len(part)
            if mine.all():
                continue
            if isinstance(part, PackedRows):
                self._rows[i] = PackedRows(part.unpack().take(mine))
            else:
                self._rows[i] = part.take(mine)
        self._rows = [r for r in self._rows if len(r)]
        self._u, self._g, self._p = [u[keep]], [g[keep]], [p[keep]]
        self._n = int(keep.sum())
        self._loose = 0
        for part in reversed(self._rows):
            if isinstance(part, PackedRows):
                break
            self._loose += len(part)

    def _note_tau(self, keys: np.ndarray, tau: np.ndarray) -> None:
        if not len(keys):
            return
        all_keys = np.concatenate([self._tau_keys, keys.astype(np.uint64)])
        all_tau = np.concatenate([self._tau, tau])
        order = np.lexsort((all_tau, all_keys))  # per key, the smallest threshold first
        all_keys, all_tau = all_keys[order], all_tau[order]
        first = np.r_[True, all_keys[1:] != all_keys[:-1]]
        self._tau_keys, self._tau = all_keys[first], all_tau[first]

    def parts(self, rows: int = 32768) -> list[FlowBatch]:
        """The kept rows (with ``sample_weight``), in pieces of about ``rows``."""
        out: list[FlowBatch] = []
        for group, w in self._groups(rows):
            joined = row_pack.join(group)
            if w is not None:
                joined = FlowBatch({**joined.columns, WEIGHT: w})
            out.append(joined)
        return out

    def _groups(self, rows: int) -> list[tuple[list[FlowBatch | PackedRows], np.ndarray | None]]:
        """The parts in groups of about ``rows`` rows, each with the weights its rows
        get (None: the rows' own, when nothing was thinned here)."""
        w = None  # never thinned here: the rows' own weights are right
        if self._tau_all < 1.0 or len(self._tau_keys):
            _, _, p = self._state()
            w = (1.0 / np.maximum(p, 1e-300)).astype(np.float32)
        out: list[tuple[list[FlowBatch | PackedRows], np.ndarray | None]] = []
        group: list[FlowBatch | PackedRows] = []
        size = at = 0
        for part in [*self._rows, None]:
            if part is not None and (size + len(part) <= rows or not group):
                group.append(part)
                size += len(part)
                continue
            if group:
                out.append((group, None if w is None else w[at : at + size]))
                at += size
            group, size = ([part], len(part)) if part is not None else ([], 0)
        return out

    def tally(self) -> dict[str, np.ndarray]:
        """The exact tally of every flow offered."""
        self._tallies = [merge_tallies(self._tallies)]
        return dict(self._tallies[0])

    def result(self) -> SampledFlows:
        """The kept rows (with ``sample_weight``) and the tally of every flow offered.

        With ``pack_from``, the rows are joined (and unpacked) when a column is first read.
        """
        groups = self._groups(max(self._n, 1))
        if not groups:
            return SampledFlows(narrow(FlowBatch.empty()).columns, self.tally())
        group, w = groups[0]
        if self.pack_from is not None:
            return SampledFlows(Unpacking(group, w), self.tally())
        rows = row_pack.join(group)
        if w is not None:
            rows = FlowBatch({**rows.columns, WEIGHT: w})
        return SampledFlows(rows.columns, self.tally())


class Unpacking(LazyColumns):
    """Columns of packed rows, each unpacked when it is first read; until then only the
    packed parts are held, and a column nobody reads is never unpacked (the window's
    analysis reads about half of them)."""

    def __init__(self, parts: list[FlowBatch | PackedRows], weight: np.ndarray | None) -> None:
        names: dict[str, None] = {}
        for p in parts:
            names.update(dict.fromkeys(row_pack.names(p)))
        if weight is not None:
            names[WEIGHT] = None
        super().__init__(names, sum(len(p) for p in parts))
        self._parts: list[FlowBatch | PackedRows] | None = parts
        self._weight = weight

    @property
    def unpacked(self) -> bool:
        """Whether every column is unpacked (and the packed rows let go)."""
        return self._parts is None

    def _make(self, name: str) -> np.ndarray:
        if name == WEIGHT and self._weight is not None:
            return self._weight
        if self.row_count == 0:  # as join gives it: the columns of an empty batch
            return row_pack.join(self._parts or []).columns[name]
        return row_pack.join_column(self._parts or [], name)

    def _all_made(self) -> None:
        self._parts = None  # every column is out: the packed rows can go
