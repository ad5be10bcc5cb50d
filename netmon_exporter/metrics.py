"""Every metric of netmon-exporter: names, help, labels and buckets, in one place.

Metrics are registered on a registry that is passed in (never the global one).
Label values come from the small closed sets below and are pre-initialised to 0
so that dashboards and ``rate()`` see every series from the first scrape.
Stages return plain results; only the daemon (main process) records them here.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    disable_created_metrics,
)

from . import flow_schema
from .build_info import build_info
from .detection import MODEL_KINDS, SEVERITIES
from .detectors import REGISTRY
from .suppression import REASONS as SUPPRESSION_REASONS

NAMESPACE = "netmon"

# Closed label sets ---------------------------------------------------------------
PROTOCOLS = flow_schema.PROTOCOLS  # tcp, udp, icmp, icmpv6, other
FILE_KINDS = ("pcap", "pcapng", "csv")
FAIL_REASONS = ("format", "truncated", "io", "timeout", "worker_crash", "too_large", "internal")
SKIP_REASONS = ("non_ip", "truncated", "malformed", "unsupported_link")
TUNNELS = ("ip-in-ip", "gre", "erspan", "vxlan", "geneve")  # capture.decode.TUNNEL_NAMES
ERROR_CATEGORIES = ("parse", "io", "ledger", "model", "llm", "alertmanager", "config", "internal")
RETRY_STAGES = ("parse", "output", "llm", "alertmanager")
IGNORE_REASONS = ("symlink", "special")
HEALTH_STATES = ("healthy", "degraded", "unhealthy")
HEALTH_CHECKS = (
    "capture_directory",
    "state_storage",
    "output_storage",
    "keeping_up",
    "error_ratio",
    "llm",
    "alertmanager",
    "ingestion",
)
DEFAULT_CLASSES = ("benign", "anomalous")
# Every registered detector, then the model detections.
DETECTORS: tuple[str, ...] = (*REGISTRY, *MODEL_KINDS)

# Counters restored at start-up from what the ledger committed
# (recording.seed_from_totals): a restart, clean or not, neither resets them nor counts
# anything twice. Every other counter and histogram starts from 0 when the daemon starts.
RESTORED_COUNTERS = (
    "files_processed",
    "files_failed",
    "files_quarantined",
    "packets",
    "bytes",
    "packets_skipped",
    "ip_fragments",
    "packets_decapsulated",
    "flows",
    "flows_evicted",
    "flow_csv_rows",
)
RESTORED_NOTE = "Survives restarts: restored from the ledger at start-up."
# What a restart does to the metrics that are neither a counter restored or started from
# 0, nor a gauge of the present state set again at start-up (docs/metrics.md says it).
AFTER_RESTART = {
    "last_success_timestamp_seconds": "restored: when the ledger last marked a file done",
    "last_activity_timestamp_seconds": "0 until a file is picked up",
    "windows_kept": "counted from the reports on disk",
    "top_talker_bytes": "0 for every rank until the next window report (with addresses: no "
    "series until then)",
    "detections_active": "0 until a window has findings (incidents start afresh)",
}
# Labelled metrics whose label values are not a closed set pre-initialised to 0, and what
# bounds their series (docs/metrics.md lists them; a test checks every other labelled
# metric has its series from the start).
OPEN_LABELS = {
    "top_talker_bytes": "`rank` 1 to `windows.top_talkers` (at most 100), one series per "
    "rank from start-up; `address` is empty (Prometheus drops an empty label), unless "
    "`windows.top_talker_addresses` is on: then it is the talker's IP address, at most "
    "`windows.top_talkers` series, all replaced at each window report and none before the "
    "first, so addresses churn series. The window reports list the talkers with their "
    "addresses either way.",
    "model_info": "one series per loaded model (at most two: `anomaly`, `classifier`), its "
    "labels the model's metadata; none while no model is loaded (`netmon_model_loaded` says "
    "which are).",
    "classifications": "`class`: `benign` and `anomalous` from the start; a loaded "
    "classifier's own classes (as many as the model has) once it is loaded.",
    "build": "one series; its labels are this build's versions.",
    "worker_cpu_seconds": "`worker`: a worker slot `0` to `15`, `fork_server` or `other`; "
    "series only for the processes running (the same for the other `netmon_worker_*`).",
    "worker_resident_memory_bytes": "as `netmon_worker_cpu_seconds_total`.",
    "worker_open_fds": "as `netmon_worker_cpu_seconds_total`.",
}

_SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
_LAG_BUCKETS = (0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
_SIZE_BUCKETS = (1e3, 1e4, 1e5, 1e6, 1e7, 5e7, 1e8, 5e8, 1e9, 4e9)
_SCORE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


@dataclass(frozen=True)
class Metrics:
    """Handles on every metric; built once per registry by :func:`build_metrics`."""

    registry: CollectorRegistry
    # identity and health
    build_info: Info
    up: Gauge
    health_state: Gauge
    health_check: Gauge
    last_activity: Gauge
    last_success: Gauge
    backlog: Gauge
    in_progress: Gauge
    not_ready: Gauge
    workers_busy: Gauge
    # work done
    files_processed: Counter
    files_failed: Counter
    files_quarantined: Counter
    files_skipped_duplicate: Counter
    files_ignored: Counter
    files_clock_skew: Counter
    retries: Counter
    errors: Counter
    packets: Counter
    bytes: Counter
    packets_skipped: Counter
    ip_fragments: Counter
    packets_decapsulated: Counter
    flows: Counter
    flows_evicted: Counter
    flow_csv_rows: Counter
    windows_processed: Counter
    windows_kept: Gauge
    windows_awaiting_analysis: Gauge
    flows_analysed: Counter
    detections: Counter
    detections_active: Gauge
    classifications: Counter
    anomaly_score: Histogram
    alerts_sent: Counter
    alerts_failed: Counter
    llm_summaries: Counter
    llm_failed: Counter
    top_talker_bytes: Gauge
    # time taken
    file_seconds: Histogram
    file_size: Histogram
    file_lag: Histogram
    window_seconds: Histogram
    llm_seconds: Histogram
    alertmanager_seconds: Histogram
    # config and models
    reload_successful: Gauge
    reload_success_ts: Gauge
    reloads: Counter
    reloads_failed: Counter
    setting: dict[str, Gauge]
    model_info: Gauge
    model_loaded: Gauge
    # allow-lists and incidents
    detections_suppressed: Counter
    incidents_opened: Counter
    alert_windows_held_back: Counter


# Active settings exported as gauges: metric suffix -> (help, config attribute path)
SETTINGS: dict[str, tuple[str, str]] = {
    "interval_seconds": ("Active rescan and housekeeping interval.", "processing.interval_seconds"),
    "max_windows": ("Active number of window reports kept.", "windows.max_windows"),
    "min_age_seconds": ("Active minimum capture age before processing.", "capture.min_age_seconds"),
    "workers": ("Active number of worker processes.", "processing.workers"),
    "max_retries": ("Active retries before quarantine.", "processing.max_retries"),
    "retry_delay_seconds": ("Active first retry delay.", "processing.retry_delay_seconds"),
    "parallel": ("1 if files are processed in parallel.", "processing.parallel"),
    "batch_size": ("Active files dispatched per round.", "processing.batch_size"),
    "file_timeout_seconds": ("Active per-file timeout.", "processing.file_timeout_seconds"),
    "window_length_seconds": ("Active window length.", "windows.length_seconds"),
}


def build_metrics(registry: CollectorRegistry) -> Metrics:
    """Create and register every metric on ``registry``, with label values pre-initialised."""
    # No _created series: they were a quarter of every scrape and nothing reads them.
    # (A process-wide switch in prometheus-client, read at every collection.)
    disable_created_metrics()
    ns = NAMESPACE
    r = registry

    def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
        if name in RESTORED_COUNTERS:
            doc = f"{doc} {RESTORED_NOTE}"
        return Counter(name, doc, labels, namespace=ns, registry=r)

    def gauge(name: str, doc: str, labels: tuple[str, ...] = ()) -> Gauge:
        return Gauge(name, doc, labels, namespace=ns, registry=r)

    def hist(
        name: str, doc: str, buckets: tuple[float, ...], labels: tuple[str, ...] = ()
    ) -> Histogram:
        return Histogram(name, doc, labels, namespace=ns, registry=r, buckets=buckets)

    m = Metrics(
        registry=r,
        build_info=Info(
            "build", "Build and runtime versions of netmon-exporter.", namespace=ns, registry=r
        ),
        up=gauge("up", "1 when the processor is healthy or degraded, 0 when unhealthy."),
        health_state=gauge(
            "health_state", "Current health state (1 for the active state).", ("state",)
        ),
        health_check=gauge(
            "health_check_ok", "1 when the named health check passes, else 0.", ("check",)
        ),
        last_activity=gauge(
            "last_activity_timestamp_seconds",
            "Unix time of the last file picked up for processing.",
        ),
        last_success=gauge(
            "last_success_timestamp_seconds", "Unix time of the last file processed successfully."
        ),
        backlog=gauge("backlog_files", "Files seen and waiting to be processed."),
        in_progress=gauge(
            "files_in_progress",
            "Files handed to a worker process: being processed, or queued on the worker "
            "processing the file before them in their series.",
        ),
        not_ready=gauge(
            "files_not_ready",
            "Files found but not ready yet (too young, still being written, or settling).",
        ),
        workers_busy=gauge("workers_busy", "Worker processes busy with a file."),
        files_processed=counter("files_processed", "Files processed successfully.", ("kind",)),
        files_failed=counter(
            "files_failed", "File processing attempts that failed.", ("kind", "reason")
        ),
        files_quarantined=counter(
            "files_quarantined",
            "Files moved to quarantine after exhausting retries.",
            ("kind", "reason"),
        ),
        files_skipped_duplicate=counter(
            "files_skipped_duplicate", "Files skipped because the ledger already has them done."
        ),
        files_ignored=counter(
            "files_ignored",
            "Files matching the patterns that are never opened: symbolic links (unless "
            "capture.follow_symlinks) and special files (FIFOs, sockets, devices).",
            ("reason",),
        ),
        files_clock_skew=counter(
            "files_clock_skew",
            "Files found with a modification time in the future (writer's clock ahead); "
            "processed once their size is stable.",
        ),
        retries=counter("retries", "Retries scheduled, by stage.", ("stage",)),
        errors=counter("errors", "Errors, by category.", ("category",)),
        packets=counter("packets", "Packets parsed, by transport protocol.", ("protocol",)),
        bytes=counter(
            "bytes", "Bytes on the wire (original length), by transport protocol.", ("protocol",)
        ),
        packets_skipped=counter(
            "packets_skipped", "Packets not turned into flows, by reason.", ("reason",)
        ),
        ip_fragments=counter("ip_fragments", "IPv4/IPv6 fragments seen."),
        packets_decapsulated=counter(
            "packets_decapsulated",
            "Packets decoded from inside a tunnel (IP in IP, GRE, ERSPAN, VXLAN, Geneve), by "
            "the outermost tunnel: their flows are the inner packets'.",
            ("tunnel",),
        ),
        flows=counter("flows", "Flows completed, by transport protocol.", ("protocol",)),
        flows_evicted=counter(
            "flows_evicted",
            "Flows ended early because a worker's flow table was full (flows.max_open_flows).",
        ),
        flow_csv_rows=counter("flow_csv_rows", "Rows written to flow CSV files."),
        windows_processed=counter("windows_processed", "Time windows closed and reported."),
        windows_kept=gauge("windows_kept", "Window reports currently kept on disk."),
        windows_awaiting_analysis=gauge(
            "windows_awaiting_analysis",
            "Closed windows not analysed yet, the one being analysed included (health "
            "keeping_up fails when the oldest closed more than health.max_lag_seconds ago).",
        ),
        flows_analysed=counter("flows_analysed", "Flows passed through detectors and models."),
        detections=counter(
            "detections", "Detections raised, by detector and severity.", ("detector", "severity")
        ),
        detections_active=gauge(
            "detections_active", "Detections currently active (not yet resolved).", ("detector",)
        ),
        classifications=counter("classifications", "Flows classified, by class.", ("class",)),
        anomaly_score=hist(
            "anomaly_score",
            "Anomaly scores of analysed flows (0 normal, 1 anomalous).",
            _SCORE_BUCKETS,
        ),
        alerts_sent=counter(
            "alerts_sent",
            "Alert deliveries accepted by at least one Alertmanager. An active detection is "
            "re-sent every alertmanager.resend_interval_seconds and once more when it "
            "resolves, and each send counts: this is deliveries, not distinct alerts "
            "(netmon_detections_total counts those). Starts from 0 when the daemon restarts.",
        ),
        alerts_failed=counter(
            "alerts_failed",
            "Alert deliveries no Alertmanager accepted (each failed push counts its alerts "
            "again; they are retried). Starts from 0 when the daemon restarts.",
        ),
        llm_summaries=counter("llm_summaries", "Window summaries written by the LLM."),
        llm_failed=counter(
            "llm_summaries_failed", "Window summaries the LLM failed to write (templated one used)."
        ),
        top_talker_bytes=gauge(
            "top_talker_bytes",
            "Bytes sent by the top talkers of the last window, by rank (1 to "
            "windows.top_talkers); address is empty unless windows.top_talker_addresses is on.",
            ("rank", "address"),
        ),
        file_seconds=hist(
            "file_processing_seconds",
            "Time to process one file, by kind.",
            _SECONDS_BUCKETS,
            ("kind",),
        ),
        file_size=hist(
            "file_size_bytes", "Size of processed files, by kind.", _SIZE_BUCKETS, ("kind",)
        ),
        file_lag=hist(
            "file_lag_seconds", "Time from a file being ready to it being processed.", _LAG_BUCKETS
        ),
        window_seconds=hist(
            "window_processing_seconds", "Time to analyse and report one window.", _SECONDS_BUCKETS
        ),
        llm_seconds=hist(
            "llm_request_seconds", "Duration of LLM summary requests.", _SECONDS_BUCKETS
        ),
        alertmanager_seconds=hist(
            "alertmanager_push_seconds", "Duration of pushes to Alertmanager.", _SECONDS_BUCKETS
        ),
        reload_successful=gauge(
            "config_last_reload_successful", "1 if the last configuration reload succeeded."
        ),
        reload_success_ts=gauge(
            "config_last_reload_success_timestamp_seconds",
            "Unix time of the last successful configuration reload.",
        ),
        reloads=counter("config_reloads", "Configuration reloads attempted."),
        reloads_failed=counter("config_reload_failures", "Configuration reloads that failed."),
        setting={name: gauge(f"config_{name}", doc) for name, (doc, _) in SETTINGS.items()},
        model_info=gauge(
            "model_info",
            "Loaded model (1), with its metadata as labels.",
            ("kind", "algorithm", "version", "trained_at", "digest"),
        ),
        model_loaded=gauge(
            "model_loaded", "1 if a model of this kind is loaded, else 0.", ("kind",)
        ),
        detections_suppressed=counter(
            "detections_suppressed",
            "Detections set aside by an allow-list (ignore.*), by detector and the kind of "
            "entry that matched (source, destination, port, zone); also counted in "
            "netmon_detections_total, never reported or alerted.",
            ("detector", "reason"),
        ),
        incidents_opened=counter(
            "incidents_opened",
            "Incidents opened (a finding that was not already an open incident), by "
            "detector: each is one new alert.",
            ("detector",),
        ),
        alert_windows_held_back=counter(
            "alert_windows_held_back",
            "Windows not pushed to Alertmanager because they ended more than "
            "alerting.max_window_age_seconds ago (replayed or backfilled captures, a "
            "backlog); they still get reports and metrics.",
        ),
    )
    _preinitialise(m)
    import numpy

    info = build_info()
    m.build_info.info(
        {
            "version": info.version,
            "revision": info.revision,
            "branch": info.branch,
            "build_date": info.build_date,
            "python_version": platform.python_version(),
            "numpy_version": numpy.__version__,
        }
    )
    return m


def _preinitialise(m: Metrics) -> None:
    for kind in FILE_KINDS:
        m.files_processed.labels(kind)
        m.file_seconds.labels(kind)
        m.file_size.labels(kind)
        for reason in FAIL_REASONS:
            m.files_failed.labels(kind, reason)
            m.files_quarantined.labels(kind, reason)
    for stage in RETRY_STAGES:
        m.retries.labels(stage)
    for reason in IGNORE_REASONS:
        m.files_ignored.labels(reason)
    for cat in ERROR_CATEGORIES:
        m.errors.labels(cat)
    for proto in PROTOCOLS:
        m.packets.labels(proto)
        m.bytes.labels(proto)
        m.flows.labels(proto)
    for reason in SKIP_REASONS:
        m.packets_skipped.labels(reason)
    for tunnel in TUNNELS:
        m.packets_decapsulated.labels(tunnel)
    for det in DETECTORS:
        m.detections_active.labels(det)
        for sev in SEVERITIES:
            m.detections.labels(det, sev)
    for cls in DEFAULT_CLASSES:
        m.classifications.labels(cls)
    for state in HEALTH_STATES:
        m.health_state.labels(state)
    for check in HEALTH_CHECKS:
        m.health_check.labels(check)
    for kind in MODEL_KINDS:
        m.model_loaded.labels(kind)
    for det in DETECTORS:
        m.incidents_opened.labels(det)
        for reason in SUPPRESSION_REASONS:
            m.detections_suppressed.labels(det, reason)


# Worker processes (read from /proc by process_metrics.WorkerProcessCollector) ----------
WORKER_SLOTS = 16  # worker label values "0".."15"; the most processing.workers allows
WORKER_PROCESS_HELP = {
    "worker_cpu_seconds": "CPU time (user + system) of each worker process and the fork "
    "server; a worker replaced after a crash or timeout starts its slot again from 0.",
    "worker_resident_memory_bytes": "Resident memory of each worker process and the fork server.",
    "worker_open_fds": "Open file descriptors of each worker process and the fork server.",
    "workers_cpu_seconds": "CPU time of all worker processes, the fork server and their "
    "helpers, including processes that have exited (no resets while the daemon runs; "
    "starts from 0 when it restarts).",
}
