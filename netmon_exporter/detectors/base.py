"""Shared runtime helpers of the detectors: bounded history across windows, hashing, top-N."""

from __future__ import annotations

import numpy as np

from ..flow_schema import addrs_to_str


class HorizonStore:
    """Rows (equal-length numpy columns, one of them ``ts``) remembered for a time horizon.

    Memory is bounded twice: rows older than the horizon are dropped, and beyond
    ``max_rows`` the oldest rows are dropped first.
    """

    def __init__(self, horizon_seconds: float, max_rows: int) -> None:
        self.horizon = float(horizon_seconds)
        self.max_rows = int(max_rows)
        self._cols: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        ts = self._cols.get("ts")
        return 0 if ts is None else len(ts)

    def update(
        self, new: dict[str, np.ndarray], now: float
    ) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Add ``new`` rows, drop expired ones; return (all kept rows, mask of the new rows)."""
        n_new = len(new["ts"])
        if self._cols:
            cols = {k: np.concatenate([self._cols[k], new[k]]) for k in new}
        else:
            cols = {k: np.asarray(v) for k, v in new.items()}
        is_new = np.zeros(len(cols["ts"]), dtype=bool)
        if n_new:
            is_new[-n_new:] = True
        keep = cols["ts"] >= now - self.horizon
        keep |= is_new  # rows of this window are always judged, even if their clock is odd
        if not keep.all():
            cols = {k: v[keep] for k, v in cols.items()}
            is_new = is_new[keep]
        if len(is_new) > self.max_rows:
            order = np.argsort(cols["ts"], kind="stable")[-self.max_rows :]
            order.sort()
            cols = {k: v[order] for k, v in cols.items()}
            is_new = is_new[order]
        for column in cols.values():  # handed out uncopied (scan_probes.select): never written
            column.flags.writeable = False
        self._cols = cols
        return cols, is_new

    def clear(self) -> None:
        self._cols = {}


def mix64(x: np.ndarray, key: np.uint64 | None = None) -> np.ndarray:
    """SplitMix64 finaliser: a well-spread 64-bit hash of uint64 values (wrapping arithmetic).

    ``key`` (``hash_key.word()``) is mixed in first: the first step of a hash of what
    traffic controls is keyed (see hash_key.py); the steps after it need not be."""
    z = x.astype(np.uint64, copy=True)
    if key is not None:
        z ^= key
    z += np.uint64(0x9E3779B97F4A7C15)
    z ^= z >> np.uint64(30)
    z *= np.uint64(0xBF58476D1CE4E5B9)
    z ^= z >> np.uint64(27)
    z *= np.uint64(0x94D049BB133111EB)
    z ^= z >> np.uint64(31)
    return z


def member_of(values: np.ndarray, ordered: np.ndarray) -> np.ndarray:
    """``np.isin(values, ordered)`` for ``ordered`` sorted: one binary search per value.
    ``np.isin`` first makes its second array unique by hashing it, ~5x slower on the
    million hashes of a contact store than sorting it once (numpy's vectorised sort)."""
    if len(values) == 0 or len(ordered) == 0:
        return np.zeros(len(values), dtype=bool)
    pos = np.searchsorted(ordered, values)
    pos[pos == len(ordered)] = 0
    return ordered[pos] == values


def addr_pairs(addrs: np.ndarray) -> np.ndarray:
    """``V16`` addresses as an (n, 2) uint64 array, one row per address (a view)."""
    return np.ascontiguousarray(addrs).view(np.uint64).reshape(-1, 2)


def is_v4_mapped(addrs: np.ndarray) -> np.ndarray:
    """Whether each ``V16`` address is an IPv4 one (``::ffff:a.b.c.d``)."""
    raw = np.ascontiguousarray(addrs).view(np.uint8).reshape(-1, 16)  # a view, not a copy
    return (raw[:, :10] == 0).all(axis=1) & (raw[:, 10] == 0xFF) & (raw[:, 11] == 0xFF)


def network_of(addrs: np.ndarray) -> np.ndarray:
    """Return each ``V16`` address's /24 (IPv4-mapped) or /64 (IPv6) network address."""
    raw = np.ascontiguousarray(addrs).view(np.uint8).reshape(-1, 16).copy()
    v4 = is_v4_mapped(addrs)
    raw[v4, 15] = 0
    raw[~v4, 8:] = 0
    return raw.view(addrs.dtype).reshape(-1) if len(raw) else addrs[:0]


def network_text(net: np.ndarray) -> str:
    text = addrs_to_str(net)[0]
    return f"{text}/64" if ":" in text else f"{text}/24"


def addr_words(addrs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return the two uint64 halves of ``V16`` addresses."""
    w = addr_pairs(addrs)
    return w[:, 0], w[:, 1]


def unique_columns(*cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct rows of equal-length columns, in lexicographic order (first column
    first), and the index of each one's first occurrence: what
    ``np.unique(np.stack(cols), axis=1, return_index=True)`` returns, about five times
    faster (a stable ``lexsort`` of the columns instead of a sort of the rows as
    opaque records)."""
    n = len(cols[0])
    order = np.lexsort(cols[::-1])
    ordered = [c[order] for c in cols]
    new = np.ones(n, dtype=bool)
    if n > 1:
        new[1:] = np.logical_or.reduce([c[1:] != c[:-1] for c in ordered])
    return np.stack([c[new] for c in ordered]), order[new]


def top_counts(labels: list[str], counts: np.ndarray, k: int = 5) -> list[dict[str, object]]:
    """Return the ``k`` largest counts as ``[{"value": label, "count": n}]``."""
    order = np.argsort(-np.asarray(counts), kind="stable")[:k]
    return [{"value": labels[i], "count": int(counts[i])} for i in order]
