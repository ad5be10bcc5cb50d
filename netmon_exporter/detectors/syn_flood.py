"""SYN flood: many half-open connections towards one victim port, judged over a sliding span."""

from __future__ import annotations

import numpy as np

from ..detection import Detection
from ..flow_sample import weights
from ..flow_schema import FlowBatch
from .base import top_counts
from .catalog import SynFloodConfig
from .features import addr_codes, num, tcp_outcomes
from .flood_rate import RATIO, RISE, Baselines, SpanCounter, severity_for, spread_bins, victim_keys

SPOOFED = "spoofed"  # evidence "reason": many sources and most connections half-open


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
        length = max(int(round(window_end - window_start)), 1)
        t0 = int(np.floor(window_start))
        t = tcp_outcomes(flows) if len(flows) else {"tcp": np.zeros(0, bool)}
        tcp = np.flatnonzero(t["tcp"])
        if not len(tcp):
            self.spans.judge(
                np.zeros(0, np.uint64), np.zeros((0, 2, length)), t0, np.zeros(0, bool)
            )
            self.baselines.update(
                np.zeros(0, np.uint64),
                np.zeros((0, 2)),
                window_start,
                window_end,
                np.zeros(0, bool),
            )
            self.since = {}
            return []
        w = weights(flows)[tcp]
        half = t["half_open"][tcp].astype(np.float64) * w
        pkey = victim_keys(flows["dst_ip"][tcp], flows["dst_port"][tcp])
        keys, inv = np.unique(pkey, return_inverse=True)
        ho = np.bincount(inv, weights=half, minlength=len(keys))
        conns = np.bincount(inv, weights=w, minlength=len(keys))
        judged = np.flatnonzero(ho >= max(1.0, 0.05 * c.min_half_open))
        if len(judged) > c.max_state_rows:
            judged = judged[np.argsort(-ho[judged], kind="stable")[: c.max_state_rows]]
        found: list[Detection] = []
        frozen = np.zeros(len(keys), bool)
        pos = np.full(len(keys), -1, np.int64)
        pos[judged] = np.arange(len(judged))
        sel = pos[inv] >= 0
        first = np.asarray(flows["first_ts"], dtype=np.float64)[tcp[sel]]
        grp = pos[inv][sel]
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
        reported = {int(k) for k in keys[frozen]}
        self.since = {k: v for k, v in self.since.items() if k in reported}
        return found

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
        c = self.cfg
        half_open, conns = float(span[0]), max(float(span[1]), 1.0)
        ratio = half_open / conns
        span_seconds = max(window_end - window_start, 1.0)
        ho_rows = rows[t["half_open"][rows]]
        if not len(ho_rows):
            return None
        codes = addr_codes(flows)
        src_codes, src_n = np.unique(codes.src[ho_rows], return_counts=True)
        sources = len(src_codes)
        base_ho, base_conns = float(base[0]), float(base[1])  # per minute
        base_ratio = base_ho / base_conns if base_conns > 0 else 0.0
        base_span = base_ho * span_seconds / 60.0
        reason = None
        if ratio >= c.min_ratio:
            reason = RATIO
        elif sources >= c.spoofed_min_sources and ratio >= c.spoofed_min_ratio:
            reason = SPOOFED
        elif (
            warm
            and ratio - base_ratio >= c.min_ratio_rise
            and half_open >= c.rise_factor * base_span
        ):
            reason = RISE
        if reason is None:
            return None
        victim = codes.text(codes.dst[ho_rows[:1]])[0]
        vport = int(flows["dst_port"][ho_rows[0]])
        top = top_counts(codes.text(src_codes[np.argsort(-src_n)[:5]]), np.sort(src_n)[::-1][:5])
        spoofed = sources >= c.spoofed_min_sources
        # the top source is the attacker when it sent most of them, else many did
        alone = int(src_n.max()) * 2 >= len(ho_rows)
        source = str(top[0]["value"]) if alone and not spoofed else "many"
        key = int(victim_keys(flows["dst_ip"][ho_rows[:1]], flows["dst_port"][ho_rows[:1]])[0])
        since = self.since.setdefault(key, window_start)
        rate = half_open / span_seconds
        w = weights(flows)[ho_rows]
        evidence = {
            "half_open": int(round(half_open)),
            "threshold": c.min_half_open,
            "tcp_flows": int(round(conns)),
            "half_open_ratio": round(ratio, 4),
            "reason": reason,
            "baseline_half_open_ratio": round(base_ratio, 4) if warm else None,
            "baseline_half_open_per_minute": round(base_ho, 1) if warm else None,
            "half_open_per_second": round(rate, 1),
            "span_seconds": span_seconds,
            "since": since,
            "sources": sources,
            "spoofed": spoofed,
            "dst_port": vport,
            "syn_packets": int(round(float((num(flows, "fwd_syn_cnt")[ho_rows] * w).sum()))),
            "unanswered": int(round(float((t["unanswered"][ho_rows] * w).sum()))),
            "seconds": round(
                float(flows["last_ts"][ho_rows].max() - flows["first_ts"][ho_rows].min()), 3
            ),
            "top_sources": top,
        }
        who = (
            f"{sources} sources" + (" (spoofed)" if spoofed else "") if source == "many" else source
        )
        why = {
            RATIO: f"{ratio:.0%} of its TCP connections",
            SPOOFED: f"{ratio:.0%} of its TCP connections, from many sources",
            RISE: f"{ratio:.0%} of its TCP connections, usually {base_ratio:.0%}",
        }[reason]
        return Detection(
            detector=self.name,
            severity=severity_for(c.severity, rate, c.critical_half_open_per_second),
            source=source,
            target=victim,
            window_start=window_start,
            window_end=window_end,
            evidence=evidence,
            summary=(
                f"{int(round(half_open))} half-open connections to {victim}:{vport} from "
                f"{who} within {span_seconds:.0f} s ({why})"
            ),
        )
