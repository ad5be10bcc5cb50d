"""Turn the plain results of the stages into metric updates (main process only)."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from .config import Config
from .flow_schema import FlowBatch, protocol_counts
from .health import HealthReport
from .metrics import (
    DETECTORS,
    FAIL_REASONS,
    FILE_KINDS,
    HEALTH_STATES,
    MODEL_KINDS,
    PROTOCOLS,
    SETTINGS,
    SEVERITIES,
    SKIP_REASONS,
    TUNNELS,
    Metrics,
)

if TYPE_CHECKING:
    from .ingest.ledger import Totals


def _label(value: str, allowed: tuple[str, ...], fallback: str) -> str:
    return value if value in allowed else fallback


def record_flows(m: Metrics, flows: FlowBatch) -> None:
    for proto, n in protocol_counts(flows).items():
        m.flows.labels(proto).inc(n)


def record_carry_flushed(m: Metrics, event: Any) -> None:
    """Record flows ended with no next file of their series (an ingest.CarryFlushed).

    Counts what the ledger committed with the carry's drop, so a restart restores
    exactly this.
    """
    counts = event.flows_by_protocol or protocol_counts(event.flows)
    for proto, n in counts.items():
        m.flows.labels(_label(proto, PROTOCOLS, "other")).inc(int(n))
    if event.csv_rows:
        m.flow_csv_rows.inc(int(event.csv_rows))


def record_file_done(m: Metrics, result: Any, kind: str, lag_seconds: float | None) -> None:
    """Record a successfully processed file (a pipeline.FileResult)."""
    kind = _label(kind, FILE_KINDS, "pcap")
    m.files_processed.labels(kind).inc()
    m.file_seconds.labels(kind).observe(max(0.0, float(result.seconds)))
    m.file_size.labels(kind).observe(max(0, int(result.size_bytes)))
    if lag_seconds is not None:
        m.file_lag.observe(max(0.0, float(lag_seconds)))
    for proto, n in (result.packets_by_protocol or {}).items():
        m.packets.labels(_label(proto, PROTOCOLS, "other")).inc(int(n))
    for proto, n in (result.bytes_by_protocol or {}).items():
        m.bytes.labels(_label(proto, PROTOCOLS, "other")).inc(int(n))
    for reason, n in (result.skipped_by_reason or {}).items():
        m.packets_skipped.labels(_label(reason, SKIP_REASONS, "malformed")).inc(int(n))
    if result.ip_fragments:
        m.ip_fragments.inc(int(result.ip_fragments))
    for tunnel, n in (getattr(result, "decapsulated_by_tunnel", None) or {}).items():
        if tunnel in TUNNELS and n:
            m.packets_decapsulated.labels(tunnel).inc(int(n))
    if result.csv_rows:
        m.flow_csv_rows.inc(int(result.csv_rows))
    # exact even when result.flows is the sample a worker kept for analysis
    flow_counts = getattr(result, "flow_counts", None)
    for proto, n in (flow_counts() if flow_counts else protocol_counts(result.flows)).items():
        m.flows.labels(_label(proto, PROTOCOLS, "other")).inc(int(n))
    if getattr(result, "flows_evicted", 0):
        m.flows_evicted.inc(int(result.flows_evicted))
    m.last_success.set(time.time())


def record_file_failed(m: Metrics, kind: str, reason: str) -> None:
    m.files_failed.labels(
        _label(kind, FILE_KINDS, "pcap"), _label(reason, FAIL_REASONS, "internal")
    ).inc()


def record_quarantined(m: Metrics, kind: str, reason: str) -> None:
    m.files_quarantined.labels(
        _label(kind, FILE_KINDS, "pcap"), _label(reason, FAIL_REASONS, "internal")
    ).inc()


def record_analysis(m: Metrics, analysis: Any) -> None:
    """Record a window's analysis (analysis.WindowAnalysis)."""
    m.windows_processed.inc()
    m.window_seconds.observe(float(analysis.seconds))
    m.flows_analysed.inc(int(analysis.flows_analysed))
    for d in analysis.detections:
        m.detections.labels(
            _label(d.detector, DETECTORS, "anomaly"), _label(d.severity, SEVERITIES, "warning")
        ).inc()
    for cls, n in (analysis.class_counts or {}).items():
        m.classifications.labels(str(cls)[:64]).inc(int(n))
    scores = np.asarray(analysis.anomaly_scores, dtype=np.float64)
    if scores.size:
        _observe_many(m, scores)


def _observe_many(m: Metrics, values: np.ndarray) -> None:
    """Observe many values at once: bucket with numpy, then add per bucket.

    ``Histogram.observe`` per value costs ~1 µs each, too much for every flow of a big
    window. prometheus-client has no public bulk API, so this adds to its per-bucket
    values; if its internals ever change, fall back to observing one by one.
    """
    hist = m.anomaly_score
    try:
        bounds = np.asarray(hist._upper_bounds, dtype=np.float64)  # noqa: SLF001
        buckets, total = hist._buckets, hist._sum  # noqa: SLF001
    except AttributeError:  # pragma: no cover - depends on the client version
        for v in values.tolist():
            hist.observe(v)
        return
    counts = np.bincount(np.searchsorted(bounds, values, side="left"), minlength=len(bounds))
    for bucket, c in zip(buckets, counts.tolist(), strict=False):
        if c:
            bucket.inc(c)
    total.inc(float(values.sum()))


def record_active_detections(m: Metrics, active: Mapping[str, int]) -> None:
    for det in DETECTORS:
        m.detections_active.labels(det).set(active.get(det, 0))


def record_top_talkers(
    m: Metrics, talkers: Iterable[Mapping[str, Any]], limit: int, addresses: bool = False
) -> None:
    """Replace the top-talker series with the last window's (``[]`` at start-up).

    Without ``addresses`` (windows.top_talker_addresses) there is one series per rank
    1..``limit``, address empty, 0 where the window had fewer talkers: a closed set with
    no churn. With it, one series per talker, labelled with its address.
    """
    m.top_talker_bytes.clear()
    ranked = list(talkers)[:limit]
    for rank in range(1, (len(ranked) if addresses else limit) + 1):
        t = ranked[rank - 1] if rank <= len(ranked) else {}
        address = str(t.get("address", ""))[:45] if addresses else ""
        m.top_talker_bytes.labels(str(rank), address).set(
            float(t.get("bytes_sent", t.get("bytes", 0)))
        )


def record_health(m: Metrics, report: HealthReport) -> None:
    for state in HEALTH_STATES:
        m.health_state.labels(state).set(1 if state == report.state else 0)
    for c in report.checks:
        m.health_check.labels(c.name).set(1 if c.ok else 0)
    m.up.set(0 if report.state == "unhealthy" else 1)


def record_settings(m: Metrics, cfg: Config) -> None:
    for name, (_, path) in SETTINGS.items():
        section, key = path.split(".")
        value = getattr(getattr(cfg, section), key)
        m.setting[name].set(float(value))


def record_models(m: Metrics, models: Iterable[Mapping[str, str]]) -> None:
    m.model_info.clear()
    models = list(models)
    loaded = {info.get("kind", "") for info in models}
    for kind in MODEL_KINDS:
        m.model_loaded.labels(kind).set(1 if kind in loaded else 0)
    for info in models:
        m.model_info.labels(
            info.get("kind", ""),
            info.get("algorithm", ""),
            info.get("version", ""),
            info.get("trained_at", ""),
            info.get("digest", "")[:16],
        ).set(1)


def seed_from_totals(m: Metrics, totals: Totals) -> None:
    """Raise the counters of ``metrics.RESTORED_COUNTERS`` to what the ledger committed.

    Called once at start-up, before any work: each counter then reads what it read
    before the restart (clean or not), as the labels mapping here is the one the
    ``record_*`` functions use when the work is done.
    """
    for kind, n in totals.done_by_kind.items():
        m.files_processed.labels(_label(kind, FILE_KINDS, "pcap")).inc(int(n))
    for (kind, reason), n in totals.failed_by_kind_reason.items():
        m.files_failed.labels(
            _label(kind, FILE_KINDS, "pcap"), _label(reason, FAIL_REASONS, "internal")
        ).inc(int(n))
    for (kind, reason), n in totals.quarantined_by_kind_reason.items():
        record_quarantined_n(m, kind, reason, int(n))
    for proto, n in totals.packets_by_protocol.items():
        m.packets.labels(_label(proto, PROTOCOLS, "other")).inc(int(n))
    for proto, n in totals.bytes_by_protocol.items():
        m.bytes.labels(_label(proto, PROTOCOLS, "other")).inc(int(n))
    for reason, n in totals.skipped_by_reason.items():
        m.packets_skipped.labels(_label(reason, SKIP_REASONS, "malformed")).inc(int(n))
    if totals.ip_fragments:
        m.ip_fragments.inc(int(totals.ip_fragments))
    for tunnel, n in totals.decapsulated_by_tunnel.items():
        if tunnel in TUNNELS and n:
            m.packets_decapsulated.labels(tunnel).inc(int(n))
    for proto, n in totals.flows_by_protocol.items():
        m.flows.labels(_label(proto, PROTOCOLS, "other")).inc(int(n))
    if totals.flows_evicted:
        m.flows_evicted.inc(int(totals.flows_evicted))
    if totals.csv_rows:
        m.flow_csv_rows.inc(int(totals.csv_rows))
    if totals.last_done_at:
        m.last_success.set(float(totals.last_done_at))


def record_quarantined_n(m: Metrics, kind: str, reason: str, n: int) -> None:
    m.files_quarantined.labels(
        _label(kind, FILE_KINDS, "pcap"), _label(reason, FAIL_REASONS, "internal")
    ).inc(n)


def preinit_classes(m: Metrics, classes: Iterable[str]) -> None:
    """Create the classification series of a loaded model's classes (bounded by the model)."""
    for cls in classes:
        m.classifications.labels(str(cls)[:64])
