"""What the flood detectors (SYN, UDP, ICMP) share: busiest spans, baselines, flood shapes.

A flood is judged on the per-window slices of flows (``reads = "slices"``), so the
packets of a long flood are in the window where they were sent, not where the flow
ended. Three pieces of state, all bounded, carry across windows:

* :class:`SpanCounter`: per victim, the counts of the last ``span`` seconds of the
  window before, so a burst cut in two by a window boundary is judged whole (the
  busiest ``span`` seconds ending in this window; Zeek's SYN-flood policy counts
  attempts over a sliding interval the same way);
* :class:`Baselines`: per victim, an exponential moving average of its traffic over
  recent windows (FastNetMon's ``average_calculation_time`` idea, over minutes rather
  than seconds, and learnt only from windows without a finding for that victim, so a
  flood does not become its own baseline);
* the shape of the traffic: how many sources, whether one source alone has a flood's
  rate, whether the victim exchanges traffic with it.

A steady stream that was there before (cameras to a recorder, a replication job) has a
baseline and no rise against it; a flood is a rise against the victim's own baseline or
traffic shaped like an attack (many or spoofed sources, one source at a flood's rate
that the victim never answers). See docs/detectors.md (Floods).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from .. import hash_key
from ..detection import Detection
from ..flow_sample import weights
from ..flow_schema import FlowBatch
from .base import addr_words, mix64, top_counts
from .features import addr_codes, num

# Why a flood was reported (evidence "reason").
MANY_SOURCES = "many_sources"  # at least spoofed_min_sources sources
ONE_SOURCE = "one_source"  # one source alone at the flood rate (UDP: never answered)
RISE = "rise"  # a rise against the victim's own baseline
RATIO = "ratio"  # SYN: most of the port's connections half-open


def victim_keys(addrs: np.ndarray, ports: np.ndarray | None = None) -> np.ndarray:
    """A 64-bit key per victim address (and port): stable across windows (keyed with the
    process's key, hash_key.py)."""
    hi, lo = addr_words(addrs)
    with np.errstate(over="ignore"):
        key = mix64(mix64(hi, hash_key.word()) ^ lo)
        if ports is not None:
            key = mix64(key ^ ports.astype(np.uint64))
    return key


def spread_bins(
    group: np.ndarray,
    n_groups: int,
    first: np.ndarray,
    last: np.ndarray,
    values: np.ndarray,
    t0: int,
    nbins: int,
) -> np.ndarray:
    """Spread each row's value evenly over the seconds of [first, last] (clamped to
    ``t0 .. t0 + nbins - 1``); return an (n_groups, nbins) table of per-second sums."""
    b0 = np.clip(np.floor(first).astype(np.int64) - t0, 0, nbins - 1)
    b1 = np.clip(np.floor(last).astype(np.int64) - t0, 0, nbins - 1)
    b1 = np.maximum(b1, b0)
    per = values / (b1 - b0 + 1)
    width = nbins + 1
    diff = np.bincount(group * width + b0, weights=per, minlength=n_groups * width)
    diff -= np.bincount(group * width + b1 + 1, weights=per, minlength=n_groups * width)
    return np.cumsum(diff.reshape(n_groups, width), axis=1)[:, :nbins]


def window_seconds(window_start: float, window_end: float) -> tuple[int, int]:
    """The window's per-second bins: its first second and how many seconds (at least 1)."""
    return int(np.floor(window_start)), max(int(round(window_end - window_start)), 1)


def busiest_keys(totals: np.ndarray, threshold: float, max_keys: int) -> np.ndarray:
    """The keys worth judging (and keeping for the next window): those with a fair share
    of a flood (5 % of ``threshold``, at least 1), at most the ``max_keys`` busiest."""
    judged = np.flatnonzero(totals >= max(1.0, 0.05 * threshold))
    if len(judged) > max_keys:
        judged = judged[np.argsort(-totals[judged], kind="stable")[:max_keys]]
    return judged


def judged_rows(inv: np.ndarray, judged: np.ndarray, n_keys: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of a judged key (``inv``: each row's key), and each such row's index in ``judged``."""
    pos = np.full(n_keys, -1, np.int64)
    pos[judged] = np.arange(len(judged))
    sel = pos[inv] >= 0
    return sel, pos[inv][sel]


def still_flooded(
    since: dict[int, float], keys: np.ndarray, frozen: np.ndarray
) -> dict[int, float]:
    """Keep when each flood began for the keys reported in this window (``frozen``) only."""
    reported = {int(k) for k in keys[frozen]}
    return {k: v for k, v in since.items() if k in reported}


def peak_rate(first: np.ndarray, last: np.ndarray, packets: np.ndarray) -> float:
    """Return the busiest one-second packet rate, spreading each flow's packets over its life.

    A flood that lasts ten seconds of a sixty-second window is judged on its own
    rate, not diluted by the quiet rest of the window.
    """
    t0 = int(np.floor(float(first.min())))
    nbins = int(min(np.floor(float(last.max())) - t0 + 1, 86400))
    group = np.zeros(len(first), np.int64)
    return float(spread_bins(group, 1, first, last, packets, t0, nbins).max())


@dataclass
class SpanResult:
    """Per key: the busiest span of seconds ending in the window, and this window's peak."""

    totals: np.ndarray  # (keys, columns): sums over the busiest span (by column 0)
    peak: np.ndarray  # (keys,): the busiest second of column 0 in this window


class SpanCounter:
    """Per-second counts per key, the tail of each window kept for the next one.

    :meth:`judge` takes this window's per-second table of the keys worth judging and
    returns, per key, the busiest span of one window length that ends in this window,
    counting the seconds kept from the window before. At most ``max_keys`` keys are kept
    (the busiest), each for one window length less a second.
    """

    def __init__(self, columns: int, max_keys: int) -> None:
        self.columns = columns
        self.max_keys = max_keys
        self.clear()

    def __len__(self) -> int:
        return len(self._keys)

    def clear(self) -> None:
        self._keys = np.zeros(0, np.uint64)
        self._t0 = 0
        self._bins = np.zeros((0, self.columns, 0))  # (keys, columns, seconds from _t0)

    def judge(self, keys: np.ndarray, bins: np.ndarray, t0: int, keep: np.ndarray) -> SpanResult:
        """Judge ``keys`` (unique) with ``bins`` (keys, columns, seconds from ``t0``: the
        window); keep the tails of the ``keep`` ones for the next window."""
        n, _, span = bins.shape
        if span == 0 or n == 0:
            self.clear()
            return SpanResult(np.zeros((n, self.columns)), np.zeros(n))
        before = np.zeros((n, self.columns, span - 1))
        if len(self._keys):
            at = np.minimum(np.searchsorted(self._keys, keys), len(self._keys) - 1)
            hit = np.flatnonzero(self._keys[at] == keys)
            lo = t0 - (span - 1) - self._t0  # the kept seconds t0 - span + 1 .. t0 - 1
            a, b = max(lo, 0), min(lo + span - 1, self._bins.shape[2])
            if len(hit) and b > a:
                before[hit, :, a - lo : b - lo] = self._bins[at[hit], :, a:b]
        full = np.concatenate([before, bins], axis=2)
        csum = np.concatenate([np.zeros((n, self.columns, 1)), np.cumsum(full, axis=2)], axis=2)
        ends = np.arange(span - 1, 2 * span - 1)  # spans ending at each second of the window
        sums = csum[:, :, ends + 1] - csum[:, :, ends + 1 - span]
        best = np.argmax(sums[:, 0, :], axis=1)
        totals = sums[np.arange(n), :, best]
        peak = bins[:, 0, :].max(axis=1)
        self._store(keys[keep], full[keep][:, :, span:], t0 + 1)
        return SpanResult(totals, peak)

    def _store(self, keys: np.ndarray, tails: np.ndarray, t0: int) -> None:
        if not len(keys) or tails.shape[2] == 0:
            self.clear()
            return
        if len(keys) > self.max_keys:
            busiest = np.argsort(-tails[:, 0, :].sum(axis=1), kind="stable")[: self.max_keys]
            keys, tails = keys[busiest], tails[busiest]
        order = np.argsort(keys)
        self._keys, self._bins, self._t0 = keys[order], tails[order], t0


class Baselines:
    """Per key, an exponential moving average of per-window values (bounded, bias-corrected).

    :meth:`update` folds one window in: keys not seen count as 0 (their average
    decays); ``frozen`` keys (a flood is being reported for them) keep their average and
    are not started. A key is *warm* once followed for ``warmup`` seconds. At most
    ``max_keys`` keys are followed: the ones with the largest averages (of ``rank``).
    """

    def __init__(
        self, time_constant: float, warmup: float, columns: int, max_keys: int, rank: int = 0
    ) -> None:
        self.tau = max(float(time_constant), 1.0)
        self.warmup = float(warmup)
        self.max_keys = max_keys
        self.columns = columns
        self.rank = rank  # the column whose largest averages are kept beyond max_keys
        self._keys = np.zeros(0, np.uint64)
        self._avg = np.zeros((0, columns))
        self._since = np.zeros(0)  # when each key was first followed
        self._until = -np.inf  # end of the last window folded in

    def __len__(self) -> int:
        return len(self._keys)

    def _find(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if not len(self._keys) or not len(keys):
            return np.zeros(len(keys), np.int64), np.zeros(len(keys), bool)
        at = np.minimum(np.searchsorted(self._keys, keys), len(self._keys) - 1)
        return at, self._keys[at] == keys

    def lookup(self, keys: np.ndarray, now: float) -> tuple[np.ndarray, np.ndarray]:
        """Return (averages (keys, columns), warm mask) for ``keys``; unknown keys: 0, cold."""
        avg = np.zeros((len(keys), self.columns))
        warm = np.zeros(len(keys), dtype=bool)
        at, hit = self._find(keys)
        if not hit.any():
            return avg, warm
        age = now - self._since[at[hit]]
        # bias correction: an average started at 0 weighs only 1 - exp(-age / tau)
        weight = -np.expm1(-np.maximum(age, 1e-9) / self.tau)
        avg[hit] = self._avg[at[hit]] / weight[:, None]
        warm[hit] = age >= self.warmup
        return avg, warm

    def update(
        self, keys: np.ndarray, values: np.ndarray, start: float, end: float, frozen: np.ndarray
    ) -> None:
        """Fold the window [start, end) in: ``values`` (keys, columns) for ``keys``."""
        gap = end - max(start, self._until) if np.isfinite(self._until) else end - start
        decay = float(np.exp(-max(gap, 0.0) / self.tau))
        self._until = max(self._until, end)
        avg = self._avg * decay
        at, hit = self._find(keys)
        hold = hit & frozen
        avg[at[hold]] = self._avg[at[hold]]  # a flood is not learnt, nor forgotten
        learn = hit & ~frozen
        avg[at[learn]] += (1 - decay) * values[learn]
        new = ~hit & ~frozen
        keys_all = np.concatenate([self._keys, keys[new]])
        avg_all = np.concatenate([avg, (1 - decay) * values[new]])
        since_all = np.concatenate([self._since, np.full(int(new.sum()), float(start))])
        alive = avg_all.max(axis=1, initial=0.0) > 1e-6
        keys_all, avg_all, since_all = keys_all[alive], avg_all[alive], since_all[alive]
        if len(keys_all) > self.max_keys:
            top = np.argsort(-avg_all[:, self.rank], kind="stable")[: self.max_keys]
            keys_all, avg_all, since_all = keys_all[top], avg_all[top], since_all[top]
        order = np.argsort(keys_all)
        self._keys, self._avg, self._since = keys_all[order], avg_all[order], since_all[order]


@dataclass(frozen=True)
class Victim:
    """The traffic towards one victim in a window's slices, and how it is shaped."""

    key: int
    victim: str
    victim_code: int  # in the batch's address codes
    top_code: int
    rows: np.ndarray  # row indices into the batch
    packets: float  # towards the victim, weighted
    replies: float  # the victim's packets back on those flows
    flows: float
    sources: int
    top_sources: list[dict[str, object]]
    top_source: str
    top_source_pps: float  # the top source's own busiest second
    span_packets: float  # the busiest span (packets), carried seconds included
    peak_pps: float  # the busiest second of this window
    extra: dict[str, object] = field(default_factory=dict)


def describe(
    flows: FlowBatch,
    rows: np.ndarray,
    key: int,
    span_packets: float,
    peak_pps: float,
) -> Victim:
    """Summarise the rows towards one victim: sources, their packets, the top one's rate."""
    codes = addr_codes(flows)
    w = weights(flows)[rows]
    fwd = num(flows, "Tot Fwd Pkts")[rows] * w
    bwd = num(flows, "Tot Bwd Pkts")[rows] * w
    src_codes, inv = np.unique(codes.src[rows], return_inverse=True)
    per_src = np.bincount(inv, weights=fwd, minlength=len(src_codes))
    order = np.argsort(-per_src, kind="stable")[:5]
    labels = codes.text(src_codes[order])
    top_rows = inv == order[0]
    first = np.asarray(flows["first_ts"], dtype=np.float64)[rows][top_rows]
    last = np.asarray(flows["last_ts"], dtype=np.float64)[rows][top_rows]
    top_pps = peak_rate(first, last, fwd[top_rows])
    return Victim(
        key=int(key),
        victim=codes.text(codes.dst[rows[:1]])[0],
        victim_code=int(codes.dst[rows[0]]),
        top_code=int(src_codes[order[0]]),
        rows=rows,
        packets=float(fwd.sum()),
        replies=float(bwd.sum()),
        flows=float(w.sum()),
        sources=len(src_codes),
        top_sources=top_counts(labels, per_src[order]),
        top_source=labels[0],
        top_source_pps=round(top_pps, 1),
        span_packets=float(span_packets),
        peak_pps=round(float(peak_pps), 1),
    )


def flood_source(v: Victim) -> str:
    """Name the attacker: the top source when it sent most packets, else ``many``."""
    top = v.top_sources[0]
    return str(top["value"]) if float(top["count"]) * 2 >= v.packets else "many"  # type: ignore[arg-type]


def severity_for(base: str, rate: float, critical_rate: float) -> str:
    """The detector's severity, raised to ``critical`` at ``critical_rate`` (0: never)."""
    if critical_rate > 0 and rate >= critical_rate:
        return "critical"
    return base


def flood_detection(
    detector: str,
    what: str,
    v: Victim,
    severity: str,
    threshold_pps: float,
    reason: str,
    baseline_pps: float | None,
    since: float,
    window_start: float,
    window_end: float,
    **extra_evidence: object,
) -> Detection:
    """Build the detection of one flooded victim (``what``: "UDP", "ICMP")."""
    source = flood_source(v)
    evidence = {
        "packets": int(round(v.packets)),
        "peak_packets_per_second": v.peak_pps,
        "threshold_packets_per_second": threshold_pps,
        "reply_packets": int(round(v.replies)),
        **extra_evidence,
        "reason": reason,
        "baseline_packets_per_second": None if baseline_pps is None else round(baseline_pps, 1),
        "top_source_packets_per_second": v.top_source_pps,
        "span_packets": int(round(v.span_packets)),
        "since": since,
        "flows": int(round(v.flows)),
        "sources": v.sources,
        "top_sources": v.top_sources,
    }
    sender = source if source != "many" else f"{v.sources} sources"
    why = {
        MANY_SOURCES: "many sources",
        ONE_SOURCE: "one source at a flood's rate",
        RISE: f"a rise over its baseline of {baseline_pps or 0:.0f}/s",
    }.get(reason, reason)
    return Detection(
        detector=detector,
        severity=severity,
        source=source,
        target=v.victim,
        window_start=window_start,
        window_end=window_end,
        evidence=evidence,
        summary=(
            f"{what} flood of {int(round(v.packets))} packets (peak {v.peak_pps:.0f}/s) to "
            f"{v.victim} from {sender} ({why})"
        ),
    )


class VolumeSettings(Protocol):
    """The settings UDP and ICMP floods share (``catalog.UdpFloodConfig``, ``IcmpFloodConfig``)."""

    @property
    def enabled(self) -> bool: ...
    @property
    def min_packets_per_second(self) -> float: ...
    @property
    def min_packets(self) -> int: ...
    @property
    def min_sources(self) -> int: ...
    @property
    def spoofed_min_sources(self) -> int: ...
    @property
    def rise_factor(self) -> float: ...
    @property
    def baseline_seconds(self) -> float: ...
    @property
    def baseline_warmup_seconds(self) -> float: ...
    @property
    def critical_packets_per_second(self) -> float: ...
    @property
    def max_state_rows(self) -> int: ...
    @property
    def severity(self) -> str: ...


class VolumeFlood:
    """A flood of packets towards one victim (UDP, ICMP): the shared judgement.

    Per window, over the slices of the protocol's flows towards each victim:

    1. volume: at least ``min_packets`` in the busiest span of one window length (the
       seconds kept from the window before included) and a busiest second of at least
       ``min_packets_per_second`` (each flow's packets spread over its slice);
    2. shape or rise: ``spoofed_min_sources`` sources or more (``many_sources``); or
       one source alone at the flood rate that the victim never sends this protocol
       back to (``one_source``; :meth:`exchanges` says what counts); or, once the
       victim's baseline is warm, a rise of at least the flood rate and at least
       ``rise_factor`` times the baseline (``rise``).

    Volume without shape or rise is a steady stream (cameras, replication), not a flood.
    Subclasses pick the flows (:meth:`rows`) and say whether the victim answering a
    source excuses it (:attr:`answers_excuse`).
    """

    name = ""
    what = ""
    reads = "slices"  # per-window slices: a long flood is judged where its packets are
    answers_excuse = True

    def __init__(self, cfg: VolumeSettings) -> None:
        self.cfg: VolumeSettings = cfg
        c = cfg
        self.spans = SpanCounter(1, int(c.max_state_rows))
        self.baselines = Baselines(
            c.baseline_seconds,
            c.baseline_warmup_seconds,
            1,
            int(c.max_state_rows),
        )
        self.since: dict[int, float] = {}  # victims being flooded -> first window start

    def rows(self, flows: FlowBatch) -> np.ndarray:
        raise NotImplementedError

    def exchanges(self, flows: FlowBatch, victim: Victim) -> bool:
        """Whether the victim sends this protocol back to the top source (an exchange)."""
        return False

    def extra(self, v: Victim) -> dict[str, object]:
        return {}

    def detect(self, flows: FlowBatch, window_start: float, window_end: float) -> list[Detection]:
        c = self.cfg
        if not c.enabled:
            return []
        t0, length = window_seconds(window_start, window_end)
        idx = self.rows(flows) if len(flows) else np.zeros(0, np.int64)
        keys_all = np.zeros(0, np.uint64)
        per_key = np.zeros(0)
        found: list[Detection] = []
        frozen = np.zeros(0, bool)
        peaks = np.zeros(0)
        judged = np.zeros(0, np.int64)
        if len(idx):
            w = weights(flows)[idx]
            fwd = num(flows, "Tot Fwd Pkts")[idx] * w
            vkey = victim_keys(flows["dst_ip"][idx])
            keys_all, inv = np.unique(vkey, return_inverse=True)
            per_key = np.bincount(inv, weights=fwd, minlength=len(keys_all)).astype(np.float64)
            judged = busiest_keys(per_key, float(c.min_packets), int(c.max_state_rows))
            found, frozen, peaks = self._judge(
                flows, idx, inv, fwd, keys_all, judged, t0, length, window_start, window_end
            )
        else:
            self.spans.judge(
                np.zeros(0, np.uint64), np.zeros((0, 1, length)), t0, np.zeros(0, bool)
            )
        # the baseline follows each victim's busiest second (its mean rate when too small
        # to be judged), so a bursty but ordinary service is compared with its own bursts
        values = per_key / float(length)
        values[judged] = np.maximum(values[judged], peaks)
        self.baselines.update(keys_all, values[:, None], window_start, window_end, frozen)
        self.since = still_flooded(self.since, keys_all, frozen)
        return found

    def _judge(
        self,
        flows: FlowBatch,
        idx: np.ndarray,
        inv: np.ndarray,
        fwd: np.ndarray,
        keys_all: np.ndarray,
        judged: np.ndarray,
        t0: int,
        length: int,
        window_start: float,
        window_end: float,
    ) -> tuple[list[Detection], np.ndarray, np.ndarray]:
        """Judge the ``judged`` victims; return (detections, reported mask, their peaks)."""
        c = self.cfg
        frozen = np.zeros(len(keys_all), bool)
        sel, grp = judged_rows(inv, judged, len(keys_all))
        first = np.asarray(flows["first_ts"], dtype=np.float64)[idx[sel]]
        last = np.asarray(flows["last_ts"], dtype=np.float64)[idx[sel]]
        bins = spread_bins(grp, len(judged), first, last, fwd[sel], t0, length)
        res = self.spans.judge(keys_all[judged], bins[:, None, :], t0, np.ones(len(judged), bool))
        base, warm = self.baselines.lookup(keys_all[judged], window_start)
        out: list[Detection] = []
        min_pps = float(c.min_packets_per_second)
        cand = np.flatnonzero((res.totals[:, 0] >= float(c.min_packets)) & (res.peak >= min_pps))
        for j in cand:
            g = judged[j]
            v = describe(flows, idx[inv == g], int(keys_all[g]), res.totals[j, 0], res.peak[j])
            if not self._volume_ok(v):
                continue
            reason = self._reason(flows, v, float(base[j, 0]), bool(warm[j]))
            if reason is None:
                continue
            frozen[g] = True
            since = self.since.setdefault(v.key, window_start)
            severity = severity_for(
                c.severity,
                v.peak_pps,
                float(c.critical_packets_per_second),
            )
            out.append(
                flood_detection(
                    self.name,
                    self.what,
                    v,
                    severity,
                    min_pps,
                    reason,
                    float(base[j, 0]) if warm[j] else None,
                    since,
                    window_start,
                    window_end,
                    **self.extra(v),
                )
            )
        return out, frozen, res.peak

    def _volume_ok(self, v: Victim) -> bool:
        return v.sources >= int(self.cfg.min_sources)

    def _reason(self, flows: FlowBatch, v: Victim, baseline: float, warm: bool) -> str | None:
        c = self.cfg
        min_pps = float(c.min_packets_per_second)
        if v.sources >= int(c.spoofed_min_sources):
            return MANY_SOURCES
        if v.top_source_pps >= min_pps and not (self.answers_excuse and self.exchanges(flows, v)):
            return ONE_SOURCE
        rise = v.peak_pps - baseline
        if warm and rise >= min_pps and v.peak_pps >= float(c.rise_factor) * baseline:
            return RISE
        return None
