"""Per-batch derived columns shared by the detectors, computed once per batch.

Detectors see the same :class:`FlowBatch` one after another; the expensive parts
(factorising 16-byte addresses into integer codes, the half-open/probe masks)
are cached for the most recent batch so that running all detectors costs one
factorisation, not eight.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from ..flow_schema import ADDR_DTYPE, PROTOCOL_LABELS, FlowBatch, addrs_to_str

TCP, UDP, ICMP, ICMPV6 = 6, 17, 1, 58

_lock = threading.Lock()
_cache_key: object | None = None
_cache: dict[str, Any] = {}


def cached(flows: FlowBatch, name: str, compute: Callable[[FlowBatch], Any]) -> Any:
    """Return ``compute(flows)``, computed once per batch (keyed by the batch's column mapping)."""
    global _cache_key, _cache
    with _lock:
        if _cache_key is not flows.columns:
            _cache_key = flows.columns
            _cache = {}
        if name in _cache:
            return _cache[name]
    value = compute(flows)
    with _lock:
        if _cache_key is flows.columns:
            _cache[name] = value
    return value


def clear_cache() -> None:
    """Forget the cached batch (benchmarks measure cold batches)."""
    global _cache_key, _cache
    with _lock:
        _cache_key, _cache = None, {}


def col(flows: FlowBatch, name: str) -> np.ndarray:
    """Return a float64 feature column, all-NaN when the batch lacks it."""
    if name in flows:
        return np.asarray(flows[name], dtype=np.float64)
    return np.full(len(flows), np.nan)


def num(flows: FlowBatch, name: str) -> np.ndarray:
    """Return a feature column with NaN (missing) read as 0."""
    c = col(flows, name)
    return np.where(np.isnan(c), 0.0, c)


def factorize_addrs(addrs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return (codes, uniques): integer codes (int64, sorted order) for ``V16`` addresses."""
    a = np.ascontiguousarray(addrs, dtype=ADDR_DTYPE)
    if len(a) == 0:
        return np.zeros(0, dtype=np.int64), a
    words = a.view(np.uint64).reshape(-1, 2)
    hi, lo = words[:, 0], words[:, 1]
    if (hi == hi[0]).all():  # the common case: all IPv4-mapped (or one IPv6 /64)
        uniq, first, codes = np.unique(lo, return_index=True, return_inverse=True)
        return codes.astype(np.int64, copy=False), a[first]
    order = np.lexsort((lo, hi))
    hs, ls = hi[order], lo[order]
    new = np.empty(len(a), dtype=bool)
    new[0] = True
    new[1:] = (hs[1:] != hs[:-1]) | (ls[1:] != ls[:-1])
    codes = np.empty(len(a), dtype=np.int64)
    codes[order] = np.cumsum(new) - 1
    return codes, a[order[new]]


class AddrCodes:
    """Source and destination addresses of a batch as integer codes over one shared table."""

    __slots__ = ("src", "dst", "table")

    def __init__(self, src: np.ndarray, dst: np.ndarray, table: np.ndarray) -> None:
        self.src = src
        self.dst = dst
        self.table = table

    def text(self, codes: np.ndarray) -> list[str]:
        return addrs_to_str(self.table[codes])


def addr_codes(flows: FlowBatch) -> AddrCodes:
    """Return the batch's address codes (cached per batch)."""

    def compute(f: FlowBatch) -> AddrCodes:
        n = len(f)
        codes, table = factorize_addrs(np.concatenate([f["src_ip"], f["dst_ip"]]))
        return AddrCodes(codes[:n], codes[n:], table)

    return cached(flows, "addr_codes", compute)


def combine(*parts: tuple[np.ndarray, int]) -> np.ndarray:
    """Combine integer keys ``(values, cardinality)`` into one int64 key (mixed radix)."""
    key = np.zeros(len(parts[0][0]), dtype=np.int64)
    total = 1
    for values, size in parts:
        size = max(int(size), 1)
        total *= size
        if total >= 2**62:
            raise OverflowError("key space too large for an int64 key")
        key = key * size + values.astype(np.int64, copy=False)
    return key


def group(key: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (group id per row, first row of each group, rows per group) for an int key."""
    uniq, first, inverse, counts = np.unique(
        key, return_index=True, return_inverse=True, return_counts=True
    )
    return inverse.astype(np.int64, copy=False), first, counts


def unique_sorted(values: np.ndarray) -> np.ndarray:
    """Return the sorted distinct values (a sort beats numpy's hash-based unique here)."""
    if len(values) == 0:
        return values.copy()
    s = np.sort(values)
    return s[np.r_[True, s[1:] != s[:-1]]]


def distinct_per_group(
    gid: np.ndarray, n_groups: int, values: np.ndarray, n_values: int
) -> np.ndarray:
    """Count distinct ``values`` within each group."""
    if len(gid) == 0:
        return np.zeros(n_groups, dtype=np.int64)
    pairs = unique_sorted(combine((gid, n_groups), (values, n_values)))
    return np.bincount(pairs // max(n_values, 1), minlength=n_groups)


def _tcp_outcomes(flows: FlowBatch) -> dict[str, np.ndarray]:
    proto = flows["protocol"]
    tcp = proto == TCP
    fwd_pkts = num(flows, "Tot Fwd Pkts")
    bwd_pkts = num(flows, "Tot Bwd Pkts")
    fwd_bytes = num(flows, "TotLen Fwd Pkts")
    fwd_syn = col(flows, "fwd_syn_cnt")
    have_dir = ~np.isnan(fwd_syn)
    fwd_syn = np.nan_to_num(fwd_syn)
    fwd_rst = num(flows, "fwd_rst_cnt")
    bwd_syn = num(flows, "bwd_syn_cnt")
    bwd_rst = num(flows, "bwd_rst_cnt")
    # Half-open: the client sent SYN(s) and maybe a RST, never an ACK-bearing packet. Data
    # in a SYN does not open a connection (nmap --data-length, hping3 -d floods; TCP Fast
    # Open's data is followed by the client's ACK), so the SYNs may carry some.
    exact = (fwd_syn >= 1) & (fwd_pkts - fwd_syn - fwd_rst <= 0)
    # Flow CSVs without direction flag counts: SYN seen, no client data, at most SYN+RST sent.
    syn_any = num(flows, "SYN Flag Cnt") >= 1
    approx = syn_any & (fwd_bytes == 0) & (fwd_pkts <= 2) & (bwd_pkts <= 1)
    half_open = tcp & np.where(have_dir, exact, approx)
    return {
        "tcp": tcp,
        "half_open": half_open,
        "unanswered": bwd_pkts == 0,
        "reset": (bwd_rst > 0) | (np.where(have_dir, 0, num(flows, "RST Flag Cnt")) > 0),
        "synack": bwd_syn > 0,
    }


def tcp_outcomes(flows: FlowBatch) -> dict[str, np.ndarray]:
    """Return TCP masks: tcp, half_open, unanswered, reset, synack (cached per batch)."""
    return cached(flows, "tcp_outcomes", _tcp_outcomes)


def icmp_type(flows: FlowBatch) -> np.ndarray:
    """Return each flow's ICMP type (from icmp_type, else the high byte of dst_port)."""
    t = col(flows, "icmp_type")
    fallback = (flows["dst_port"].astype(np.int64) >> 8).astype(np.float64)
    return np.where(np.isnan(t), fallback, t)


def _is_multicast_or_broadcast(addrs: np.ndarray) -> np.ndarray:
    raw = np.frombuffer(np.ascontiguousarray(addrs).tobytes(), dtype=np.uint8).reshape(-1, 16)
    mapped = (raw[:, :10] == 0).all(axis=1) & (raw[:, 10] == 0xFF) & (raw[:, 11] == 0xFF)
    v4_multi = mapped & ((raw[:, 12] & 0xF0) == 0xE0)
    v4_bcast = mapped & (raw[:, 15] == 0xFF)
    v6_multi = ~mapped & (raw[:, 0] == 0xFF)
    return v4_multi | v4_bcast | v6_multi


def is_group_address(addrs: np.ndarray) -> np.ndarray:
    """Multicast and broadcast addresses (IPv4 x.x.x.255 counts as broadcast)."""
    return _is_multicast_or_broadcast(addrs)


def _probes(flows: FlowBatch) -> dict[str, np.ndarray]:
    n = len(flows)
    if n == 0:
        z = np.zeros(0, dtype=bool)
        return {
            "scan": z,
            "sweep": z,
            "outcome": np.zeros(0, dtype=np.int8),
            "sweep_port": np.zeros(0, dtype=np.int64),
        }
    t = tcp_outcomes(flows)
    proto = flows["protocol"]
    fwd_pkts = num(flows, "Tot Fwd Pkts")
    bwd_pkts = num(flows, "Tot Bwd Pkts")
    group_dst = _is_multicast_or_broadcast(flows["dst_ip"])
    udp_probe = (proto == UDP) & (bwd_pkts == 0) & (fwd_pkts <= 2) & ~group_dst
    itype = icmp_type(flows)
    echo = ((proto == ICMP) & (itype == 8)) | ((proto == ICMPV6) & (itype == 128))
    scan = t["half_open"] | udp_probe
    # 0 unanswered, 1 reset, 2 answered (SYN-ACK or echo reply)
    outcome = np.where(t["synack"] | (echo & (bwd_pkts > 0)), 2, np.where(t["reset"], 1, 0)).astype(
        np.int8
    )
    sweep_port = flows["dst_port"].astype(np.int64)
    sweep_port = np.where(echo, 8 << 8, sweep_port)
    return {
        "scan": scan,
        "sweep": scan | (echo & ~group_dst),
        "outcome": outcome,
        "sweep_port": sweep_port,
    }


def probes(flows: FlowBatch) -> dict[str, np.ndarray]:
    """Return the probe masks used by the scan detectors (cached per batch).

    A probe is a half-open TCP attempt (unanswered, reset, or SYN-ACK answered by
    a RST), an unanswered one- or two-packet UDP flow to a unicast address, or
    (for sweeps only) an ICMP echo request.
    """
    return cached(flows, "probes", _probes)


PROTO_NAMES = PROTOCOL_LABELS  # protocol number -> tcp, udp, icmp, icmpv6


def service(proto: int, port: int) -> str:
    """Format a probed service for humans: ``tcp/22``, ``icmp/echo``."""
    name = PROTO_NAMES.get(int(proto), str(int(proto)))
    if int(proto) in (ICMP, ICMPV6):
        return f"{name}/echo"
    return f"{name}/{int(port)}"


def probe_evidence(
    outcome: np.ndarray, ts: np.ndarray, count: int, in_window: int, horizon_seconds: float
) -> dict[str, object]:
    """Evidence shared by the scan detectors: how many probes and how they were answered."""
    return {
        "probes": int(count),
        "probes_in_window": int(in_window),
        "unanswered": int((outcome == 0).sum()),
        "reset": int((outcome == 1).sum()),
        "horizon_seconds": horizon_seconds,
        "first_seen": float(ts.min()),
        "last_seen": float(ts.max()),
    }
