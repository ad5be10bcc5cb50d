"""SYN flood: many half-open connections towards one victim port, judged over a sliding span."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..detection import Detection, host_port
from ..flow_sample import weights
from ..flow_schema import FlowBatch
from .base import top_counts
from .catalog import SynFloodConfig
from .features import addr_codes, num, tcp_outcomes
from .flood_rate import (
    RATIO,
    RISE,
    Baselines,
    SpanCounter,
    busiest_keys,
    judged_rows,
    severity_for,
    spread_bins,
    still_flooded,
    victim_keys,
    window_seconds,
)

SPOOFED = "spoofed"  # evidence "reason": many sources and most connections half-open


@dataclass(frozen=True)
class PortSpan:
    """One (victim, port)'s busiest span: the counts its judgement reads."""

    rows: np.ndarray  # its half-open connections (rows of the window's flows)
    half_open: float
    tcp_flows: float  # at least 1
    seconds: float  # the span's length
    source_codes: np.ndarray  # distinct sources of the half-open connections (address codes)
    source_counts: np.ndarray  # their half-open connections
    baseline_per_minute: float  # the port's usual half-open connections per minute
    baseline_ratio: float  # the port's usual half-open share
    warm: bool  # the baseline followed long enough to compare with

    @property
    def ratio(self) -> float:
        return self.half_open / self.tcp_flows

    @property
    def sources(self) -> int:
        return len(self.source_codes)


class SynFloodDetector:
    """Half-open connections per (victim, port), over the busiest span of one window length.

    The span may start in the window before (its last seconds are kept), so bursts cut
    by a window boundary are counted whole (Zeek's SYN-flood policy counts attempts over
    a sliding interval too). A port is flooded when it has ``min_half_open`` half-open
    connections in the span and either most of its connections are half-open
    (``min_ratio``), or many sources make half of them half-open (``spoofed_min_sources``,
    ``spoofed_min_ratio``), or the half-open share rose by ``min_ratio_rise`` over the
    port's own baseline (a busy server serving its clients while flooded). Keyed by port
    so that a fast vertical scan (one attempt per port) is a port scan, not a flood.
    """

    name = "syn_flood"
    reads = "slices"  # per-window slices: a long flood is judged where its packets are

    def __init__(self, cfg: SynFloodConfig) -> None:
        self.cfg = cfg
        self.spans = SpanCounter(2, cfg.max_state_rows)  # half-open, TCP connections
        # per (victim, port): half-open and TCP connections per window (learnt when quiet)
        self.baselines = Baselines(
            cfg.baseline_seconds, cfg.baseline_warmup_seconds, 2, cfg.max_state_rows, rank=1
        )
        self.since: dict[int, float] = {}

    def detect(self, flows: FlowBatch, window_start: float, window_end: float) -> list[Detection]:
        c = self.cfg
        if not c.enabled:
            return []
        t0, length = window_seconds(window_start, window_end)
        t = tcp_outcomes(flows) if len(flows) else {"tcp": np.zeros(0, bool)}
        tcp = np.flatnonzero(t["tcp"])
        if not len(tcp):
            self._quiet(t0, length, window_start, window_end)
            return []
        w = weights(flows)[tcp]
        half = t["half_open"][tcp].astype(np.float64) * w
        pkey = victim_keys(flows["dst_ip"][tcp], flows["dst_port"][tcp])
        keys, inv = np.unique(pkey, return_inverse=True)
        ho = np.bincount(inv, weights=half, minlength=len(keys))
        conns = np.bincount(inv, weights=w, minlength=len(keys))
        judged = busiest_keys(ho, c.min_half_open, c.max_state_rows)
        found: list[Detection] = []
        frozen = np.zeros(len(keys), bool)
        sel, grp = judged_rows(inv, judged, len(keys))
        first = np.asarray(flows["first_ts"], dtype=np.float64)[tcp[sel]]
        bins = np.stack(
            [
                spread_bins(grp, len(judged), first, first, half[sel], t0, length),
                spread_bins(grp, len(judged), first, first, w[sel], t0, length),
            ],
            axis=1,
        )
        res = self.spans.judge(keys[judged], bins, t0, np.ones(len(judged), bool))
        per_min = 60.0 / length
        base, warm = self.baselines.lookup(keys[judged], window_start)
        for j in np.flatnonzero(res.totals[:, 0] >= c.min_half_open):
            g = judged[j]
            rows = tcp[inv == g]
            det = self._judge(
                flows,
                t,
                rows,
                res.totals[j],
                base[j],
                bool(warm[j]),
                window_start,
                window_end,
            )
            if det is not None:
                frozen[g] = True
                found.append(det)
        # the baseline: half-open and TCP connections per minute of each port with traffic
        values = np.stack([ho, conns], axis=1) * per_min
        self.baselines.update(keys, values, window_start, window_end, frozen)
        self.since = still_flooded(self.since, keys, frozen)
        return found

    def _quiet(self, t0: int, length: int, window_start: float, window_end: float) -> None:
        """A window without TCP: no span carried over, no flood ongoing, baselines decay."""
        self.spans.judge(np.zeros(0, np.uint64), np.zeros((0, 2, length)), t0, np.zeros(0, bool))
        self.baselines.update(
            np.zeros(0, np.uint64), np.zeros((0, 2)), window_start, window_end, np.zeros(0, bool)
        )
        self.since = {}

    def _judge(
        self,
        flows: FlowBatch,
        t: dict[str, np.ndarray],
        rows: np.ndarray,
        span: np.ndarray,
        base: np.ndarray,
        warm: bool,
        window_start: float,
        window_end: float,
    ) -> Detection | None:
        """Decide on one (victim, port) with enough half-open connections in its span.

        ``base``: the port's baseline half-open and TCP connections per minute.
        """
        ho_rows = rows[t["half_open"][rows]]
        if not len(ho_rows):
            return None
        codes = addr_codes(flows)
        src_codes, src_n = np.unique(codes.src[ho_rows], return_counts=True)
        base_ho, base_conns = float(base[0]), float(base[1])  # per minute
        p = PortSpan(
            rows=ho_rows,
            half_open=float(span[0]),
            tcp_flows=max(float(span[1]), 1.0),
            seconds=max(window_end - window_start, 1.0),
            source_codes=src_codes,
            source_counts=src_n,
            baseline_per_minute=base_ho,
            baseline_ratio=base_ho / base_conns if base_conns > 0 else 0.0,
            warm=warm,
        )
        reason = self._reason(p)
        if reason is None:
            return None
        return self._detection(flows, t, p, reason, window_start, window_end)

    def _reason(self, p: PortSpan) -> str | None:
        """Why the port is flooded (:data:`RATIO`, :data:`SPOOFED`, :data:`RISE`), or None."""
        c = self.cfg
        ratio = p.ratio
        if ratio >= c.min_ratio:
            return RATIO
        if p.sources >= c.spoofed_min_sources and ratio >= c.spoofed_min_ratio:
            return SPOOFED
        base_span = p.baseline_per_minute * p.seconds / 60.0
        if (
            p.warm
            and ratio - p.baseline_ratio >= c.min_ratio_rise
            and p.half_open >= c.rise_factor * base_span
        ):
            return RISE
        return None

    def _detection(
        self,
        flows: FlowBatch,
        t: dict[str, np.ndarray],
        p: PortSpan,
        reason: str,
        window_start: float,
        window_end: float,
    ) -> Detection:
        """Report a flooded port: who (the top source when it sent most, else many), evidence."""
        c = self.cfg
        codes = addr_codes(flows)
        ho_rows, src_n = p.rows, p.source_counts
        victim = codes.text(codes.dst[ho_rows[:1]])[0]
        vport = int(flows["dst_port"][ho_rows[0]])
        top = top_counts(
            codes.text(p.source_codes[np.argsort(-src_n)[:5]]), np.sort(src_n)[::-1][:5]
        )
        spoofed = p.sources >= c.spoofed_min_sources
        # the top source is the attacker when it sent most of them, else many did
        alone = int(src_n.max()) * 2 >= len(ho_rows)
        source = str(top[0]["value"]) if alone and not spoofed else "many"
        key = int(victim_keys(flows["dst_ip"][ho_rows[:1]], flows["dst_port"][ho_rows[:1]])[0])
        since = self.since.setdefault(key, window_start)
        rate = p.half_open / p.seconds
        w = weights(flows)[ho_rows]
        evidence = {
            "half_open": int(round(p.half_open)),
            "threshold": c.min_half_open,
            "tcp_flows": int(round(p.tcp_flows)),
            "half_open_ratio": round(p.ratio, 4),
            "reason": reason,
            "baseline_half_open_ratio": round(p.baseline_ratio, 4) if p.warm else None,
            "baseline_half_open_per_minute": round(p.baseline_per_minute, 1) if p.warm else None,
            "half_open_per_second": round(rate, 1),
            "span_seconds": p.seconds,
            "since": since,
            "sources": p.sources,
            "spoofed": spoofed,
            "dst_port": vport,
            "syn_packets": int(round(float((num(flows, "fwd_syn_cnt")[ho_rows] * w).sum()))),
            "unanswered": int(round(float((t["unanswered"][ho_rows] * w).sum()))),
            "seconds": round(
                float(flows["last_ts"][ho_rows].max() - flows["first_ts"][ho_rows].min()), 3
            ),
            "top_sources": top,
        }
        return Detection(
            detector=self.name,
            severity=severity_for(c.severity, rate, c.critical_half_open_per_second),
            source=source,
            target=victim,
            window_start=window_start,
            window_end=window_end,
            evidence=evidence,
            summary=self._summary(p, reason, source, spoofed, host_port(victim, vport)),
        )

    @staticmethod
    def _summary(p: PortSpan, reason: str, source: str, spoofed: bool, where: str) -> str:
        ratio = p.ratio
        who = (
            f"{p.sources} sources" + (" (spoofed)" if spoofed else "")
            if source == "many"
            else source
        )
        why = {
            RATIO: f"{ratio:.0%} of its TCP connections",
            SPOOFED: f"{ratio:.0%} of its TCP connections, from many sources",
            RISE: f"{ratio:.0%} of its TCP connections, usually {p.baseline_ratio:.0%}",
        }[reason]
        return (
            f"{int(round(p.half_open))} half-open connections to {where} from "
            f"{who} within {p.seconds:.0f} s ({why})"
        )
