"""Beaconing: a host contacting one peer at regular intervals with similar sizes (RITA-style)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..detection import Detection
from ..flow_schema import FlowBatch, addr_to_str
from .base import addr_words, mix64
from .catalog import BeaconConfig
from .features import PROTO_NAMES, num


def pair_hash(flows: FlowBatch) -> np.ndarray:
    """Hash (src, dst, protocol, dst port) into 64 bits; collisions are negligible at 2^-64."""
    sh, sl = addr_words(flows["src_ip"])
    dh, dl = addr_words(flows["dst_ip"])
    svc = (flows["protocol"].astype(np.uint64) << np.uint64(16)) | flows["dst_port"].astype(
        np.uint64
    )
    h = mix64(svc)
    for part in (dl, dh, sl, sh):
        h = mix64(h ^ part)
    return h


def group_median_mad(
    values: np.ndarray, gid: np.ndarray, n_groups: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per-group median and median absolute deviation (groups given by ``gid``)."""
    med = _group_median(values, gid, n_groups)
    return med, _group_median(np.abs(values - med[gid]), gid, n_groups)


def _group_median(values: np.ndarray, gid: np.ndarray, n_groups: int) -> np.ndarray:
    order = np.lexsort((values, gid))
    v = values[order]
    counts = np.bincount(gid, minlength=n_groups)
    start = np.cumsum(counts) - counts
    lo = start + (counts - 1) // 2
    hi = start + counts // 2
    out = np.full(n_groups, np.nan)
    ok = counts > 0
    out[ok] = (v[lo[ok]] + v[hi[ok]]) / 2
    return out


class BeaconDetector:
    """Judge the regularity of each pair's connection start times over a long horizon.

    A pair beacons when it has at least ``min_connections`` connections in the
    horizon, a median interval of at least ``min_interval_seconds``, intervals that
    vary little (robust coefficient of variation, 1.4826 x MAD / median, so a
    missed beat is tolerated, and at least ``min_regular_share`` of them within
    twice that of the median) and bytes sent that vary little (coefficient of
    variation). History
    is kept as 64-bit pair hashes, times and sizes only, bounded by the horizon
    and ``max_state_rows``. One connection per flow: a beacon that reuses one
    long-lived flow is not seen (its packets are inside the flow).
    """

    name = "beacon"

    def __init__(self, cfg: BeaconConfig) -> None:
        self.cfg = cfg
        # History sorted by pair hash: per window only the pairs seen in the
        # window are looked up (binary search), and the new rows are merged in.
        self._key = np.zeros(0, dtype=np.uint64)
        self._ts = np.zeros(0, dtype=np.float64)
        self._bytes = np.zeros(0, dtype=np.float64)

    def __len__(self) -> int:
        return len(self._key)

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

    def detect(self, flows: FlowBatch, window_start: float, window_end: float) -> list[Detection]:
        if not self.cfg.enabled:
            return []
        if len(flows) == 0:
            self._merge(np.zeros(0, dtype=np.uint64), np.zeros(0), np.zeros(0), window_end)
            return []
        batch_key = pair_hash(flows)
        self._merge(
            batch_key,
            np.asarray(flows["first_ts"], dtype=np.float64),
            num(flows, "TotLen Fwd Pkts"),
            window_end,
        )
        k = self.cfg.min_connections
        sorted_keys = np.sort(batch_key)
        pairs = sorted_keys[np.r_[True, sorted_keys[1:] != sorted_keys[:-1]]]
        lo = np.searchsorted(self._key, pairs, side="left")
        hi = np.searchsorted(self._key, pairs, side="right")
        cand = np.flatnonzero(hi - lo >= k)
        if len(cand) == 0:
            return []
        n_rows = hi[cand] - lo[cand]
        gid = np.repeat(np.arange(len(cand)), n_rows)
        rows = np.repeat(lo[cand] - np.cumsum(np.r_[0, n_rows[:-1]]), n_rows) + np.arange(
            n_rows.sum()
        )
        by_time = np.lexsort((self._ts[rows], gid))
        rows = rows[by_time]
        ts, size = self._ts[rows], self._bytes[rows]
        n_groups = len(cand)
        same = gid[1:] == gid[:-1]
        iv = np.diff(ts)[same]
        iv_gid = gid[1:][same]
        iv_med, iv_mad = group_median_mad(iv, iv_gid, n_groups)
        # Robust coefficient of variation: equals the CV for normal jitter, but a
        # missed or doubled beat (one outlying interval) does not hide the beacon.
        iv_cv = 1.4826 * iv_mad / np.maximum(iv_med, 1e-9)
        # ... but with few intervals the MAD alone can be small by chance: most
        # intervals must also sit close to the median.
        close = np.abs(iv - iv_med[iv_gid]) <= 2 * self.cfg.max_interval_cv * iv_med[iv_gid]
        regular = np.bincount(iv_gid, weights=close, minlength=n_groups) / np.maximum(
            np.bincount(iv_gid, minlength=n_groups), 1
        )
        s_mean = np.bincount(gid, weights=size, minlength=n_groups) / n_rows
        s_var = np.bincount(gid, weights=size * size, minlength=n_groups) / n_rows - s_mean**2
        s_cv = np.sqrt(np.maximum(s_var, 0)) / np.maximum(s_mean, 1.0)
        hits = np.flatnonzero(
            (iv_med >= self.cfg.min_interval_seconds)
            & (iv_cv <= self.cfg.max_interval_cv)
            & (regular >= self.cfg.min_regular_share)
            & (s_cv <= self.cfg.max_size_cv)
        )
        out: list[Detection] = []
        for g in hits:
            row = int(np.flatnonzero(batch_key == pairs[cand[g]])[0])
            source = addr_to_str(flows["src_ip"][row])
            dst = addr_to_str(flows["dst_ip"][row])
            proto = int(flows["protocol"][row])
            port = int(flows["dst_port"][row])
            target = f"{dst}:{port}" if proto in (6, 17) else dst
            evidence = {
                "connections": int(n_rows[g]),
                "threshold": self.cfg.min_connections,
                "median_interval_seconds": round(float(iv_med[g]), 3),
                "interval_robust_cv": round(float(iv_cv[g]), 4),
                "regular_share": round(float(regular[g]), 3),
                "mean_bytes_sent": round(float(s_mean[g]), 1),
                "size_cv": round(float(s_cv[g]), 4),
                "protocol": PROTO_NAMES.get(proto, str(proto)),
                "horizon_seconds": self.cfg.horizon_seconds,
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
                        f"{source} contacted {target} {int(n_rows[g])} times every "
                        f"{iv_med[g]:.1f} s (interval robust CV {iv_cv[g]:.3f}, size CV "
                        f"{s_cv[g]:.3f})"
                    ),
                )
            )
        return out
