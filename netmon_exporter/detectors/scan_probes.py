"""What counts as a scan probe, the bounded memory of contacts the scan detectors share,
and the frame of their findings (tiers, probe evidence, sources).

A *probe* is an attempt the target did not accept (Zeek's "failed connection",
Snort's "negative response"), read from a flow's counters:

* ``syn``: half-open TCP (SYNs, perhaps a RST, never an ACK or data from the
  prober), or a handshake the prober completed and reset at once without data
  (Zeek's ``ShR``, nmap's connect scan of an open port);
* ``fin`` / ``xmas`` / ``null/ack``: TCP without a SYN either way and without data,
  answered by resets only or not at all: FIN and Maimon (FIN/ACK), Xmas
  (FIN/PSH/URG), NULL and ACK scans. The window's columns carry FIN and PSH in
  total only; a reset answer carries neither, so they are the prober's. NULL and
  ACK probes answered by a reset cannot be told apart (the ACK count is a total).
  Such a flow may also be the tail of a connection picked up after the idle
  timeout (a keepalive, a late FIN); a server's tail goes *from* its service port
  *to* the client's higher, unprivileged port, so flows with that orientation
  are not counted (Zeek flips mid-stream flows by the same likely-server-port
  reading);
* ``udp``: an unanswered UDP flow of at most three packets to a unicast address,
  except the traceroute range 33434-33534 (traceroute and mtr send one probe per
  port there);
* ``echo``: an ICMP/ICMPv6 echo request to a unicast address, answered or not
  (sweeps only; a ping sweep maps live hosts).

:class:`ContactStore` keeps one row per (source, destination, service) with the
first and last time and counters, so an hour of history costs one row per distinct
probed pair rather than one per probe. :func:`by_tier` gives each time tier its
contacts, :func:`probe_evidence` and :func:`scan_detection` the evidence and the
detection every scan finding has.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import numpy as np

from .. import hash_key
from ..detection import Detection
from ..flow_schema import PROTOCOLS, FlowBatch
from .base import addr_pairs, addr_words, mix64
from .contact_merge import MAX, MIN, SUM, key_words, merge_column, merge_positions
from .features import (
    ICMP,
    ICMPV6,
    TCP,
    UDP,
    _is_multicast_or_broadcast,
    cached,
    col,
    icmp_type,
    num,
    tcp_outcomes,
)

# Probe kinds, one bit each (``kinds`` columns are bit masks).
SYN, FIN, XMAS, NULL_ACK, UDP_PROBE, ECHO = 1, 2, 4, 8, 16, 32
# Contact stores' column types: a contact's counters within the horizon (int32; a store
# of a million rows is ~100 MB, and int64 counters were a third of it; they add up in
# int64 and saturate, so a day-long horizon over 1-s windows of a 250,000-row flood of
# one contact stops at 2**31 - 1 instead of wrapping) and kind masks.
COUNT = np.int32
KINDS = np.int16
KIND_NAMES: dict[int, str] = {
    SYN: "syn",
    FIN: "fin",
    XMAS: "xmas",
    NULL_ACK: "null/ack",
    UDP_PROBE: "udp",
    ECHO: "echo",
}
TRACEROUTE_PORTS = (33434, 33534)  # inclusive: the default range of traceroute and mtr

# Outcome of a probe: the target never answered, answered with a reset, or answered
# (SYN-ACK of an open port, an echo reply).
UNANSWERED, RESET, ANSWERED = 0, 1, 2

# Service codes: protocol code * 65536 + port (ICMP echo: port 0).
PROTO_CODE = {TCP: 0, UDP: 1, ICMP: 2, ICMPV6: 3}
CODE_NAME = dict(enumerate(PROTOCOLS[:4]))  # probe code -> tcp, udp, icmp, icmpv6
N_SERVICES = 4 * 65536


def service_name(svc: int) -> str:
    """Format a service code for humans: ``tcp/22``, ``udp/161``, ``icmp/echo``."""
    code, port = divmod(int(svc), 65536)
    if code >= 2:
        return f"{CODE_NAME[code]}/echo"
    return f"{CODE_NAME[code]}/{port}"


def _classify(flows: FlowBatch) -> dict[str, np.ndarray]:
    n = len(flows)
    proto = np.asarray(flows["protocol"]).astype(np.int64)
    tcp, udp = proto == TCP, proto == UDP
    fwd, bwd = num(flows, "Tot Fwd Pkts"), num(flows, "Tot Bwd Pkts")
    fwd_bytes, bwd_bytes = num(flows, "TotLen Fwd Pkts"), num(flows, "TotLen Bwd Pkts")
    fwd_syn = col(flows, "fwd_syn_cnt")
    have_dir = ~np.isnan(fwd_syn)
    fwd_syn = np.nan_to_num(fwd_syn)
    bwd_syn = num(flows, "bwd_syn_cnt")
    fwd_rst, bwd_rst = num(flows, "fwd_rst_cnt"), num(flows, "bwd_rst_cnt")
    fin, psh = num(flows, "FIN Flag Cnt"), num(flows, "PSH Flag Cnt")
    sport = np.asarray(flows["src_port"]).astype(np.int64)
    dport = np.asarray(flows["dst_port"]).astype(np.int64)
    group_dst = _is_multicast_or_broadcast(flows["dst_ip"]) if n else np.zeros(0, dtype=bool)
    t = tcp_outcomes(flows)
    no_data = (fwd_bytes == 0) & (bwd_bytes == 0)

    # A handshake the prober completed and reset at once, nothing sent (Zeek's ShR).
    connect_reset = tcp & have_dir & (fwd_syn >= 1) & (bwd_syn >= 1) & (fwd_rst >= 1) & no_data
    syn = t["half_open"] | connect_reset
    resets_only = (bwd == 0) | ((bwd <= bwd_rst) & (bwd_bytes == 0))
    server_tail = (sport < dport) & (dport >= 1024)
    # A probe without SYN may carry data (nmap --data-length): the target's answer is
    # what tells (nothing, or resets without data)
    stealth = (
        tcp
        & have_dir
        & (fwd_syn == 0)
        & (bwd_syn == 0)
        & (fwd_rst == 0)
        & (fwd >= 1)
        & (fwd <= 3)
        & resets_only
        & ~server_tail
        & ~group_dst
    )
    traceroute = (dport >= TRACEROUTE_PORTS[0]) & (dport <= TRACEROUTE_PORTS[1])
    udp_probe = udp & (bwd == 0) & (fwd >= 1) & (fwd <= 3) & ~group_dst & ~traceroute
    itype = icmp_type(flows)
    echo = (((proto == ICMP) & (itype == 8)) | ((proto == ICMPV6) & (itype == 128))) & ~group_dst

    kinds = np.zeros(n, dtype=np.int64)
    kinds[syn] = SYN
    kinds[stealth & (fin > 0) & (psh > 0)] = XMAS
    kinds[stealth & (fin > 0) & (psh == 0)] = FIN
    kinds[stealth & (fin == 0)] = NULL_ACK
    kinds[udp_probe] = UDP_PROBE
    kinds[echo] = ECHO
    answered_tcp = t["synack"] & (kinds == SYN)
    outcome = np.where(
        answered_tcp | (echo & (bwd > 0)),
        ANSWERED,
        np.where((kinds != 0) & ((bwd_rst > 0) | t["reset"]) & tcp, RESET, UNANSWERED),
    ).astype(np.int8)
    # A contact that worked: a TCP connection the client completed (not a probe) or an
    # answered UDP exchange; the bytes the larger side sent tell a content exchange.
    success = (tcp & ~t["half_open"] & (kinds == 0) & (fwd_bytes + bwd_bytes > 0)) | (
        udp & (bwd > 0) & (fwd > 0)
    )
    code = np.zeros(n, dtype=np.int64)
    for number, c in PROTO_CODE.items():
        code[proto == number] = c
    port = np.where(echo | (code >= 2), 0, dport)
    return {
        "kinds": kinds,
        "outcome": outcome,
        "success": success,
        "known": np.isin(proto, list(PROTO_CODE)),
        "svc": code * 65536 + port,
        "content": np.maximum(fwd_bytes, bwd_bytes),
        "group_dst": group_dst,
    }


def classify(flows: FlowBatch) -> dict[str, np.ndarray]:
    """Return per-flow ``kinds`` (probe bit, 0 if none), ``outcome``, ``success``, ``svc``.

    Cached per batch: both scan detectors read it.
    """
    return cached(flows, "scan_probes", _classify)


# Keys of this many rows or more are hashed in one compiled pass (see hash_kernels).
HASH_KERNEL_ROWS = 100_000


def key_hash(*parts: np.ndarray) -> np.ndarray:
    """Hash equal-length key columns (``V16`` addresses or integers) into one uint64,
    keyed (hash_key.py)."""
    words = _key_words(parts)  # int64: the bits astype would give, no copy
    key = hash_key.word()
    h: np.ndarray | None = None
    if len(words[0]) >= HASH_KERNEL_ROWS:
        from .hash_kernels import mix_first, mix_next

        for w in words:
            if h is None:
                h = mix_first(w, key)
            else:
                mix_next(h, w)
    else:
        for w in words:
            h = mix64(w, key) if h is None else mix64(h ^ mix64(w))
    assert h is not None
    return h


class ContactStore:
    """Contacts merged per (``src``, ``dst``, ``svc``): first/last time and counters.

    ``sums`` columns add up, ``maxes`` keep the largest value, ``ors`` are bit masks.
    Memory is bounded twice: keys not seen within the horizon are dropped, and
    beyond ``max_rows`` the least recently seen go first.
    """

    def __init__(
        self,
        horizon_seconds: float,
        max_rows: int,
        sums: tuple[str, ...],
        maxes: tuple[str, ...] = (),
        ors: tuple[str, ...] = (),
    ) -> None:
        self.horizon = float(horizon_seconds)
        self.max_rows = int(max_rows)
        self.sums, self.maxes, self.ors = sums, maxes, ors
        self._cols: dict[str, np.ndarray] = {}
        # stores of this many rows or more are merged in one compiled pass (see update)
        self.merge_kernel_rows = MERGE_KERNEL_ROWS

    def __len__(self) -> int:
        return len(self._cols.get("last", ()))

    @property
    def rows(self) -> dict[str, np.ndarray]:
        return self._cols

    def clear(self) -> None:
        self._cols = {}

    def update(
        self, new: Mapping[str, np.ndarray], now: float
    ) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Merge ``new`` rows (``first``/``last`` times) in; return (rows, touched mask).

        Rows stay sorted by key (source, destination, service). A store of up to
        ``MERGE_KERNEL_ROWS`` rows is merged by sorting it and the new rows together; a
        larger one (scan-heavy traffic) by sorting only the new rows and merging both in
        one compiled pass (:mod:`.contact_merge`): no sort of the whole store, one copy
        of it instead of three. Below that size the compiled pass is not worth what
        loading compiled code costs a process that has none (~0.3 s and ~60 MB).
        """
        names = ("src", "dst", "svc", "first", "last", *self.sums, *self.maxes, *self.ors)
        fresh = {k: np.asarray(new[k]) for k in names}
        old, self._cols = self._cols, {}
        if old and len(old["last"]) + len(fresh["last"]) >= self.merge_kernel_rows:
            pending = [dict(old)]  # the merge holds the only reference: it lets columns go
            del old
            merged, touched = self._merge_in_one_pass(pending.pop(), fresh, names, now)
        else:
            merged, touched = self._merge_by_sorting(old, fresh, names)
            del old
            if len(touched) == 0:  # nothing at all (the new rows' own arrays, left as they are)
                self._cols = merged
                return merged, touched
            keep = self._keep(merged["last"], touched, now)
            if keep is not None:
                merged = {k: v[keep] for k, v in merged.items()}
                touched = touched[keep]
        for column in merged.values():  # handed out uncopied (`select`): never written
            column.flags.writeable = False
        self._cols = merged
        return merged, touched

    def _keep(self, last: np.ndarray, touched: np.ndarray, now: float) -> np.ndarray | None:
        """Which merged rows stay (None: all of them): seen within the horizon or touched
        now, and at most ``max_rows``, the least recently seen going first."""
        if len(touched) == 0:
            return None
        keep = (last >= now - self.horizon) | touched
        if len(keep) > self.max_rows:
            cut = np.sort(last)[-self.max_rows]
            keep &= last >= cut
            if keep.sum() > self.max_rows:  # ties at the cut
                keep[np.flatnonzero(keep)[: int(keep.sum()) - self.max_rows]] = False
        return None if keep.all() else keep

    def _merge_by_sorting(
        self, old: dict[str, np.ndarray], fresh: dict[str, np.ndarray], names: tuple[str, ...]
    ) -> tuple[dict[str, np.ndarray], np.ndarray]:
        n_new = len(fresh["last"])
        cols = {k: np.concatenate([old[k], fresh[k]]) for k in names} if old else fresh
        is_new = np.zeros(len(cols["last"]), dtype=bool)
        if n_new:
            is_new[-n_new:] = True
        if len(is_new) == 0:
            return cols, is_new
        shi, slo = addr_words(cols["src"])
        dhi, dlo = addr_words(cols["dst"])
        order = np.lexsort((cols["svc"], dlo, dhi, slo, shi))
        s = {k: v[order] for k, v in cols.items()}
        is_new = is_new[order]
        k_shi, k_slo, k_dhi, k_dlo = shi[order], slo[order], dhi[order], dlo[order]
        starts = np.flatnonzero(
            np.r_[
                True,
                (k_shi[1:] != k_shi[:-1])
                | (k_slo[1:] != k_slo[:-1])
                | (k_dhi[1:] != k_dhi[:-1])
                | (k_dlo[1:] != k_dlo[:-1])
                | (s["svc"][1:] != s["svc"][:-1]),
            ]
        )
        merged = {
            "src": s["src"][starts],
            "dst": s["dst"][starts],
            "svc": s["svc"][starts],
            "first": np.minimum.reduceat(s["first"], starts),
            "last": np.maximum.reduceat(s["last"], starts),
        }
        for k in self.sums:  # (add widens small ints to int64: saturated back)
            merged[k] = _saturated(np.add.reduceat(s[k], starts), s[k].dtype)
        for k in self.maxes:
            merged[k] = np.maximum.reduceat(s[k], starts)
        for k in self.ors:
            merged[k] = np.bitwise_or.reduceat(s[k], starts)
        touched = np.maximum.reduceat(is_new.astype(np.int8), starts).astype(bool)
        return merged, touched

    def _merge_in_one_pass(
        self,
        old: dict[str, np.ndarray],
        fresh: dict[str, np.ndarray],
        names: tuple[str, ...],
        now: float,
    ) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Merge, keeping only the rows :meth:`_keep` keeps, column by column: each old
        column is let go (``old`` is the caller's copy of the store's dict) once its merged
        column is made, so the store is held about once, not twice, while it is merged
        (a store at its million-row bound is ~75 MB), and the rows that go are never
        copied."""
        if len(fresh["last"]):
            order = np.lexsort(_sort_keys(fresh))
            fresh = {k: v[order] for k, v in fresh.items()}
        dest_old, dest_new, size = merge_positions(*_words(old), *_words(fresh))
        touched = np.zeros(size, dtype=bool)
        touched[dest_new] = True
        last = self._merged_column("last", old, fresh, dest_old, dest_new, size)
        keep = self._keep(last, touched, now)
        merged: dict[str, np.ndarray] = {}
        for k in names:
            out = (
                last
                if k == "last"
                else self._merged_column(k, old, fresh, dest_old, dest_new, size)
            )
            del old[k]
            merged[k] = out if keep is None else out[keep]
        return merged, touched if keep is None else touched[keep]

    def _merged_column(
        self,
        k: str,
        old: dict[str, np.ndarray],
        fresh: dict[str, np.ndarray],
        dest_old: np.ndarray,
        dest_new: np.ndarray,
        size: int,
    ) -> np.ndarray:
        """Column ``k`` of the merged store: rows placed where :func:`merge_positions` says,
        rows of one key combined (min, max, bitwise or, saturated sum)."""
        dtype = np.result_type(old[k], fresh[k])
        if k in ("src", "dst", "svc"):
            out = np.empty(size, dtype)
            out[dest_new] = fresh[k]
            out[dest_old] = old[k]
            return out
        code = _MERGE_CODES.get(_combine(k, self))
        if (
            code is not None
            and old[k].dtype == fresh[k].dtype == dtype
            and (dtype.kind in "iu" if code == SUM else dtype.kind in "iuf")
            and dtype.itemsize <= 8
            and (dtype.kind != "u" or code != SUM or dtype.itemsize < 8)
        ):
            info = np.iinfo(dtype) if dtype.kind in "iu" else None
            lo, hi = (int(info.min), int(info.max)) if info is not None else (0, 0)
            out = np.empty(size, dtype)
            if merge_column(old[k], fresh[k], dest_old, dest_new, out, code, lo, hi):
                return out
        combine = _combine(k, self)
        # counters add up in int64 and are saturated back to their own type
        work = np.dtype(np.int64) if k in self.sums and dtype.kind in "iu" else dtype
        out = np.full(size, _identity(k, work, self), work)
        combine.at(out, dest_new, fresh[k])
        # a key is once in the store: combine it with what the new rows brought
        out[dest_old] = combine(out[dest_old], old[k])
        return _saturated(out, dtype)


# Stores merged in one compiled pass from this many rows on (see ContactStore.update).
MERGE_KERNEL_ROWS = 200_000


def _words(cols: Mapping[str, np.ndarray]) -> tuple[np.ndarray, ...]:
    return key_words(cols["src"], cols["dst"], cols["svc"])


def _sort_keys(cols: Mapping[str, np.ndarray]) -> tuple[np.ndarray, ...]:
    """``np.lexsort`` keys (last one first) in the order :mod:`.contact_merge` merges."""
    s, d, v = _words(cols)
    return (v, d[:, 1], d[:, 0], s[:, 1], s[:, 0])


_MERGE_CODES: dict[np.ufunc, int] = {np.minimum: MIN, np.maximum: MAX, np.add: SUM}


def _combine(name: str, store: ContactStore) -> np.ufunc:
    if name == "first":
        return np.minimum
    if name == "last" or name in store.maxes:
        return np.maximum
    if name in store.ors:
        return np.bitwise_or
    return np.add


def _saturated(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``values`` in ``dtype``, integers beyond its range held at its limits (a counter of
    ``COUNT`` stays at its maximum instead of wrapping to a negative count)."""
    if values.dtype == dtype or dtype.kind not in "iu":
        return values.astype(dtype, copy=False)
    info = np.iinfo(dtype)
    return np.clip(values, info.min, info.max).astype(dtype)


def _identity(name: str, dtype: np.dtype, store: ContactStore) -> object:
    """What combining with leaves a value as it is (for keys only the new rows have)."""
    if name == "first" or name == "last" or name in store.maxes:
        low = name != "first"
        if dtype.kind == "f":
            return -np.inf if low else np.inf
        info = np.iinfo(dtype)
        return info.min if low else info.max
    return 0


def select(rows: Mapping[str, np.ndarray], mask: np.ndarray) -> dict[str, np.ndarray]:
    """The rows ``mask`` (booleans or indices) picks. A mask of every row hands out the
    columns themselves, not a copy (a contact store of a million rows is ~100 MB a copy):
    detectors read the rows they are given, never write them."""
    mask = np.asarray(mask)
    if mask.dtype == bool and mask.all():
        return dict(rows)
    return {k: v[mask] for k, v in rows.items()}


def kind_counts(kinds: np.ndarray) -> dict[str, int]:
    """Count rows per probe kind (a row's mask may hold several kinds)."""
    return {
        name: int(((kinds & bit) != 0).sum())
        for bit, name in KIND_NAMES.items()
        if ((kinds & bit) != 0).any()
    }


def group_ids(*parts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Group rows by the key columns: (group id per row, first row per group, rows per group).

    Groups are numbered in the order of their keys' hashes, as ``np.unique`` numbers them;
    done by hand so that fewer row-long temporaries live at once (the address sweep groups
    its contact store's million rows several times a window). The hashes are sorted by
    numpy's default (vectorised, not stable) sort, ~5x faster than a stable one on a
    million rows; a group's first row is then its smallest row number, found per group.

    The hash is not keyed, and SplitMix64 can be inverted: an attacker who chooses
    addresses (an IPv6 /64, ports) can make two different keys hash alike. So every row's
    key is compared with its group's first row's (a gather and a compare per key word);
    should any differ, the rows are grouped by their keys themselves instead
    (:func:`_exact_group_ids`: groups then numbered in key order).
    """
    n = len(parts[0])
    if n == 0:
        z = np.zeros(0, dtype=np.int64)
        return z, z, z
    gid, first, counts = _hashed_group_ids(parts, n)
    rep = first[gid]  # each row's group's first row
    for w in _key_words(parts):
        if not np.array_equal(w, w[rep]):
            return _exact_group_ids(parts, n)
    return gid, first, counts


def _key_words(parts: tuple[np.ndarray, ...]) -> list[np.ndarray]:
    """The key columns as the uint64 words they are hashed from (views where they can)."""
    words: list[np.ndarray] = []
    for p in parts:
        if p.dtype.kind == "V":
            words += addr_words(p)
        elif p.dtype == np.int64:
            words.append(p.view(np.uint64))
        else:
            words.append(p.astype(np.uint64, copy=False))
    return words


def _exact_group_ids(
    parts: tuple[np.ndarray, ...], n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`group_ids` by the keys' words themselves (sorted, first word first)."""
    words = _key_words(parts)
    order = np.lexsort(words[::-1])
    starts = np.zeros(n, dtype=bool)
    starts[0] = True
    for w in words:
        sw = w[order]
        starts[1:] |= sw[1:] != sw[:-1]
    return _groups(order, starts, n)


def _groups(
    order: np.ndarray, starts: np.ndarray, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(group id per row, first row per group, rows per group) from rows in sorted order
    (``order``) and where a new key starts among them (``starts``)."""
    at = np.flatnonzero(starts)
    first = np.minimum.reduceat(order, at)
    gid = np.empty(n, dtype=np.int64)
    gid[order] = np.cumsum(starts) - 1
    counts = np.diff(np.append(at, n))
    return gid, first, counts


def _hashed_group_ids(
    parts: tuple[np.ndarray, ...], n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    h = key_hash(*parts)
    order = np.argsort(h)
    sorted_h = h[order]
    del h
    starts = np.empty(n, dtype=bool)
    starts[0] = True
    np.not_equal(sorted_h[1:], sorted_h[:-1], out=starts[1:])
    del sorted_h
    return _groups(order, starts, n)


def stable_order(gid: np.ndarray) -> np.ndarray:
    """``np.argsort(gid, kind="stable")`` for group ids (non-negative integers), ~5x faster:
    rows of a group in row order. Each row's key (group, row) is unique, so numpy's
    default vectorised sort gives the one stable order."""
    n = len(gid)
    if n == 0 or max(int(gid.max()), -int(gid.min())) >= 2**62 // n:  # keys would not fit
        return np.argsort(gid, kind="stable")
    key = gid.astype(np.int64) * n
    key += np.arange(n, dtype=np.int64)
    key.sort()
    key %= n
    return key


def tiers(*pairs: tuple[float, int]) -> list[tuple[float, int]]:
    """The (horizon seconds, threshold) tiers in use, shortest first (threshold 0: off)."""
    return sorted((float(h), int(t)) for h, t in pairs if t > 0)


def pair_runs(rows: Mapping[str, np.ndarray]) -> np.ndarray:
    """Per row, the number of its (source, destination) pair, counted from 0.

    A contact store's rows are sorted by (source, destination, service), so each pair's
    rows are one run: the pairs are found by comparing neighbours, without hashing or
    sorting (numbered in store order, not in :func:`group_ids`' order).
    """
    n = len(rows["last"])
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    src, dst = addr_pairs(rows["src"]), addr_pairs(rows["dst"])
    change = np.empty(n, dtype=bool)
    change[0] = True
    change[1:] = (src[1:] != src[:-1]).any(axis=1) | (dst[1:] != dst[:-1]).any(axis=1)
    return np.cumsum(change) - 1


def by_tier(
    rows: dict[str, np.ndarray], touched: np.ndarray, tiers: list[tuple[float, int]], now: float
) -> Iterator[tuple[float, int, dict[str, np.ndarray], np.ndarray]]:
    """Each tier's (horizon, threshold, rows, touched): the contacts last seen within its horizon."""
    for horizon, threshold in tiers:
        live = rows["last"] >= now - horizon
        yield horizon, threshold, select(rows, live), touched[live]


def probe_evidence(
    rows: Mapping[str, np.ndarray],
    count_key: str,
    count: int,
    threshold: int,
    horizon: float,
    in_window: int,
) -> dict[str, object]:
    """The evidence a scan finding opens with: the count that crossed ``threshold``
    (``count_key``: distinct ports or hosts), then its probes' counts and times."""
    return {
        count_key: count,
        "threshold": threshold,
        "probes": int(rows["probes"].sum()),
        "probes_in_window": in_window,
        "unanswered": int(rows["unanswered"].sum()),
        "reset": int(rows["reset"].sum()),
        "horizon_seconds": horizon,
        "first_seen": float(rows["first"].min()),
        "last_seen": float(rows["last"].max()),
    }


def scan_detection(
    detector: str,
    severity: str,
    source: str,
    target: str,
    evidence: dict[str, object],
    sources: tuple[int, list[dict[str, object]]],
    summary: str,
    window: tuple[float, float],
) -> Detection:
    """A scan finding: ``evidence`` closed by its ``sources`` (how many, and the top ones
    with counts), from one source or ``many``."""
    evidence["sources"], evidence["top_sources"] = sources
    return Detection(detector, severity, source, target, *window, evidence, summary)


class Members:
    """The rows of each group, found in O(1) per group after one stable sort."""

    def __init__(self, gid: np.ndarray, n_groups: int) -> None:
        self.order = stable_order(gid)
        self.bounds = np.r_[0, np.cumsum(np.bincount(gid, minlength=n_groups))]

    def __call__(self, g: int | np.integer) -> np.ndarray:
        return self.order[self.bounds[g] : self.bounds[g + 1]]


def count_in(keys: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Count how often each of ``wanted`` occurs in ``keys`` (both uint64 hashes)."""
    if len(keys) == 0 or len(wanted) == 0:
        return np.zeros(len(wanted), dtype=np.int64)
    ordered = np.sort(keys)  # numpy's vectorised sort, not np.unique's hashing
    return np.searchsorted(ordered, wanted, "right") - np.searchsorted(ordered, wanted, "left")
