from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from netmon_exporter.config import Config
from netmon_exporter.health import CheckResult, HealthReport
from netmon_exporter.metrics import DETECTORS, FILE_KINDS, PROTOCOLS, SETTINGS, build_metrics
from netmon_exporter.recording import record_health, record_settings


def exposition() -> str:
    r = CollectorRegistry()
    m = build_metrics(r)
    record_settings(m, Config())
    record_health(m, HealthReport("degraded", (CheckResult("keeping_up", False, False, "x"),)))
    return generate_latest(r).decode()


def test_catalogue_names_follow_conventions() -> None:
    text = exposition()
    names = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")}
    assert all(n.startswith("netmon_") for n in names)
    for line in text.splitlines():
        if line.startswith("# TYPE") and line.endswith(" counter"):
            assert line.split()[2].endswith("_total"), line
    required = [
        "netmon_up",
        "netmon_health_state",
        "netmon_health_check_ok",
        "netmon_files_processed_total",
        "netmon_files_failed_total",
        "netmon_files_quarantined_total",
        "netmon_packets_total",
        "netmon_bytes_total",
        "netmon_flows_total",
        "netmon_windows_processed_total",
        "netmon_detections_total",
        "netmon_alerts_sent_total",
        "netmon_alerts_failed_total",
        "netmon_classifications_total",
        "netmon_llm_summaries_total",
        "netmon_llm_summaries_failed_total",
        "netmon_file_processing_seconds_bucket",
        "netmon_window_processing_seconds_bucket",
        "netmon_llm_request_seconds_bucket",
        "netmon_alertmanager_push_seconds_bucket",
        "netmon_file_size_bytes_bucket",
        "netmon_file_lag_seconds_bucket",
        "netmon_last_activity_timestamp_seconds",
        "netmon_last_success_timestamp_seconds",
        "netmon_backlog_files",
        "netmon_files_in_progress",
        "netmon_retries_total",
        "netmon_errors_total",
        "netmon_config_last_reload_successful",
        "netmon_config_last_reload_success_timestamp_seconds",
        "netmon_build_info",
        "netmon_model_loaded",
    ]
    for name in required:
        assert f"\n{name}" in text, name
    assert "# TYPE netmon_model_info gauge" in text
    for setting in SETTINGS:
        assert f"\nnetmon_config_{setting} " in text, setting


def test_label_values_are_preinitialised() -> None:
    r = CollectorRegistry()
    build_metrics(r)
    for kind in FILE_KINDS:
        assert r.get_sample_value("netmon_files_processed_total", {"kind": kind}) == 0
    for proto in PROTOCOLS:
        assert r.get_sample_value("netmon_packets_total", {"protocol": proto}) == 0
    for det in DETECTORS:
        assert (
            r.get_sample_value("netmon_detections_total", {"detector": det, "severity": "critical"})
            == 0
        )


def test_settings_and_health_are_recorded() -> None:
    r = CollectorRegistry()
    m = build_metrics(r)
    record_settings(m, Config())
    assert r.get_sample_value("netmon_config_workers") == 2
    assert r.get_sample_value("netmon_config_parallel") == 1
    assert r.get_sample_value("netmon_config_min_age_seconds") == 10
    record_health(
        m, HealthReport("unhealthy", (CheckResult("capture_directory", False, True, "gone"),))
    )
    assert r.get_sample_value("netmon_up") == 0
    assert r.get_sample_value("netmon_health_state", {"state": "unhealthy"}) == 1
    assert r.get_sample_value("netmon_health_state", {"state": "healthy"}) == 0
    assert r.get_sample_value("netmon_health_check_ok", {"check": "capture_directory"}) == 0


@pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool not installed (make test installs it)"
)
def test_promtool_check_metrics_is_clean() -> None:
    proc = subprocess.run(
        ["promtool", "check", "metrics"],
        input=exposition(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == "" and proc.stderr.strip() == ""


def test_bulk_anomaly_scores_match_single_observations() -> None:
    import numpy as np

    from netmon_exporter.recording import _observe_many

    values = np.array([0.0, 0.05, 0.1, 0.5, 0.55, 0.95, 1.0, 0.3])
    bulk, single = CollectorRegistry(), CollectorRegistry()
    _observe_many(build_metrics(bulk), values)
    m = build_metrics(single)
    for v in values:
        m.anomaly_score.observe(float(v))
    for le in ("0.1", "0.5", "0.6", "1.0", "+Inf"):
        labels = {"le": le}
        assert bulk.get_sample_value(
            "netmon_anomaly_score_bucket", labels
        ) == single.get_sample_value("netmon_anomaly_score_bucket", labels), le
    assert bulk.get_sample_value("netmon_anomaly_score_count") == len(values)
    assert abs(bulk.get_sample_value("netmon_anomaly_score_sum") - values.sum()) < 1e-9


def test_counters_are_seeded_from_ledger_totals() -> None:
    from netmon_exporter.ingest.ledger import Totals
    from netmon_exporter.recording import seed_from_totals

    r = CollectorRegistry()
    m = build_metrics(r)
    seed_from_totals(
        m,
        Totals(
            done_by_kind={"pcap": 3, "csv": 1},
            quarantined_by_kind_reason={("pcap", "format"): 2},
            packets_by_protocol={"tcp": 100, "udp": 7},
            bytes_by_protocol={"tcp": 6400},
            flows=9,
            csv_rows=9,
            flows_by_protocol={"tcp": 5, "udp": 4},
        ),
    )
    assert r.get_sample_value("netmon_files_processed_total", {"kind": "pcap"}) == 3
    assert r.get_sample_value("netmon_files_processed_total", {"kind": "csv"}) == 1
    assert (
        r.get_sample_value("netmon_files_quarantined_total", {"kind": "pcap", "reason": "format"})
        == 2
    )
    assert r.get_sample_value("netmon_packets_total", {"protocol": "tcp"}) == 100
    assert r.get_sample_value("netmon_bytes_total", {"protocol": "tcp"}) == 6400
    assert r.get_sample_value("netmon_flows_total", {"protocol": "udp"}) == 4
    assert r.get_sample_value("netmon_flow_csv_rows_total") == 9


def test_seeding_restores_exactly_the_restored_counters() -> None:
    """Every counter metrics.RESTORED_COUNTERS names (and its HELP says survives) is seeded;
    no other counter is."""
    from netmon_exporter.ingest.ledger import Totals
    from netmon_exporter.metrics import RESTORED_COUNTERS, RESTORED_NOTE
    from netmon_exporter.recording import seed_from_totals

    r = CollectorRegistry()
    m = build_metrics(r)
    seed_from_totals(
        m,
        Totals(
            done_by_kind={"pcap": 3},
            quarantined_by_kind_reason={("pcap", "format"): 1},
            packets_by_protocol={"tcp": 100},
            bytes_by_protocol={"tcp": 6400},
            flows=9,
            csv_rows=9,
            flows_by_protocol={"tcp": 9},
            failed_by_kind_reason={("pcap", "format"): 2},
            skipped_by_reason={"non_ip": 4},
            ip_fragments=5,
            flows_evicted=6,
            last_done_at=1_700_000_000.0,
            decapsulated_by_tunnel={"vxlan": 7},
        ),
    )
    for family in r.collect():
        if family.type != "counter" or not family.name.startswith("netmon_"):
            continue
        name = family.name.removeprefix("netmon_")
        total = sum(s.value for s in family.samples if s.name.endswith("_total"))
        assert (total > 0) == (name in RESTORED_COUNTERS), family.name
        assert (RESTORED_NOTE in family.documentation) == (name in RESTORED_COUNTERS)
    assert (
        r.get_sample_value("netmon_files_failed_total", {"kind": "pcap", "reason": "format"}) == 2
    )
    assert r.get_sample_value("netmon_packets_skipped_total", {"reason": "non_ip"}) == 4
    assert r.get_sample_value("netmon_last_success_timestamp_seconds") == 1_700_000_000.0


def test_top_talkers_are_ranks_without_addresses_unless_opted_in() -> None:
    """Guards docs/metrics.md: "`rank` 1 to `windows.top_talkers` (at most 100), one series per rank from start-up".

    Issue 14: no addresses in labels by default (no series churn); opt in with
    windows.top_talker_addresses, bounded by windows.top_talkers.
    """
    from netmon_exporter.recording import record_top_talkers

    r = CollectorRegistry()
    m = build_metrics(r)

    def series() -> dict[tuple[str, str], float]:
        (family,) = (f for f in r.collect() if f.name == "netmon_top_talker_bytes")
        return {(s.labels["rank"], s.labels["address"]): s.value for s in family.samples}

    talkers = [
        {"address": "10.0.0.5", "bytes_sent": 900},
        {"address": "10.0.0.6", "bytes_sent": 100},
    ]
    record_top_talkers(m, [], 3)  # start-up
    assert series() == {("1", ""): 0, ("2", ""): 0, ("3", ""): 0}
    record_top_talkers(m, talkers, 3)
    assert series() == {("1", ""): 900, ("2", ""): 100, ("3", ""): 0}
    record_top_talkers(m, talkers, 3, addresses=True)
    assert series() == {("1", "10.0.0.5"): 900, ("2", "10.0.0.6"): 100}
    record_top_talkers(m, talkers * 3, 3, addresses=True)
    assert len(series()) == 3  # bounded by windows.top_talkers


# ---------------------------------------------------------------- issue 14: the exposition


def test_no_created_series() -> None:
    text = exposition()
    assert "_created" not in text
    assert "netmon_files_processed_total" in text


def test_build_info_names_the_revision() -> None:
    from netmon_exporter.build_info import build_info

    r = CollectorRegistry()
    build_metrics(r)
    info = build_info()
    labels = {
        "version": info.version,
        "revision": info.revision,
        "branch": info.branch,
        "build_date": info.build_date,
    }
    sample = [s for f in r.collect() if f.name == "netmon_build" for s in f.samples][0]
    assert sample.name == "netmon_build_info" and sample.value == 1
    assert labels.items() <= sample.labels.items()


def test_alert_help_says_what_resends_and_restarts_do() -> None:
    text = exposition()
    sent = next(x for x in text.splitlines() if x.startswith("# HELP netmon_alerts_sent_total"))
    assert "re-sent" in sent and "not distinct alerts" in sent and "restarts" in sent
    failed = next(x for x in text.splitlines() if x.startswith("# HELP netmon_alerts_failed_total"))
    assert "restarts" in failed


# ---------------------------------------------------------------- worker processes


def fake_proc(root: Path, procs: dict[int, tuple[int, str, int, int, int]]) -> None:
    """Write /proc/<pid>/{stat,cmdline,fd/} for pid -> (ppid, cmdline, ticks, child_ticks, rss)."""
    for pid, (ppid, cmd, ticks, child, rss) in procs.items():
        d = root / str(pid)
        (d / "fd").mkdir(parents=True)
        for fd in range(pid % 5 + 3):
            (d / "fd" / str(fd)).touch()
        fields = ["S", str(ppid)] + ["0"] * 9 + [str(ticks), "0", str(child), "0"]
        fields += ["0"] * 6 + [str(rss)] + ["0"] * 20
        (d / "stat").write_text(f"{pid} (python3 (a) b) " + " ".join(fields) + "\n")
        (d / "cmdline").write_bytes(cmd.encode().replace(b" ", b"\0"))
    (root / "self").mkdir(exist_ok=True)


FORKSERVER = "python -c from multiprocessing.forkserver import main; main(8, 9)"
TRACKER = "python -c from multiprocessing.resource_tracker import main;main(7)"


def samples(r: CollectorRegistry) -> dict[tuple[str, str], float]:
    return {
        (s.name, s.labels.get("worker", "")): s.value
        for f in r.collect()
        for s in f.samples
        if s.name.startswith("netmon_worker")
    }


def test_worker_collector_reads_descendants_from_proc(tmp_path: Path) -> None:
    from netmon_exporter.process_metrics import WorkerProcessCollector

    procs = {
        100: (1, "netmon-exporter", 500, 40, 1000),
        101: (100, FORKSERVER, 10, 300, 2000),
        102: (100, TRACKER, 1, 0, 500),
        230: (101, FORKSERVER, 700, 0, 60000),  # workers: forked, same cmdline
        210: (101, FORKSERVER, 900, 0, 50000),
        999: (1, "unrelated", 5000, 0, 10),
        998: (999, "unrelated child", 5000, 0, 10),
    }
    fake_proc(tmp_path, procs)
    r = CollectorRegistry()
    collector = WorkerProcessCollector(r, pid=100, proc=tmp_path)
    got = samples(r)
    tick, page = collector._ticks_per_second, collector._page_size
    assert got[("netmon_worker_cpu_seconds_total", "0")] == 900 / tick  # lowest pid: slot 0
    assert got[("netmon_worker_cpu_seconds_total", "1")] == 700 / tick
    assert got[("netmon_worker_cpu_seconds_total", "fork_server")] == 10 / tick
    assert got[("netmon_worker_cpu_seconds_total", "other")] == 1 / tick
    assert got[("netmon_worker_resident_memory_bytes", "1")] == 60000 * page
    assert got[("netmon_worker_open_fds", "0")] == 210 % 5 + 3
    # Every descendant and what they reaped, plus what the daemon itself reaped.
    total = (10 + 300) + 1 + 700 + 900 + 40
    assert got[("netmon_workers_cpu_seconds_total", "")] == total / tick
    assert {w for _, w in got} <= {"0", "1", "fork_server", "other", ""}


def test_worker_slots_are_kept_and_the_total_never_goes_back(tmp_path: Path) -> None:
    from netmon_exporter.process_metrics import WorkerProcessCollector

    procs = {
        100: (1, "netmon-exporter", 0, 0, 1),
        101: (100, FORKSERVER, 0, 0, 1),
        210: (101, FORKSERVER, 900, 0, 1),
        230: (101, FORKSERVER, 700, 0, 1),
    }
    fake_proc(tmp_path / "a", procs)
    r = CollectorRegistry()
    collector = WorkerProcessCollector(r, pid=100, proc=tmp_path / "a")
    tick = collector._ticks_per_second
    first = samples(r)
    # Worker 210 exits and is reaped by the fork server (its CPU moves to cutime);
    # a new worker 150 (a lower, reused pid) takes the free slot 0; 230 keeps slot 1.
    procs[101] = (100, FORKSERVER, 0, 900, 1)
    del procs[210]
    procs[150] = (101, FORKSERVER, 50, 0, 1)
    fake_proc(tmp_path / "b", procs)
    collector.proc = tmp_path / "b"
    second = samples(r)
    assert second[("netmon_worker_cpu_seconds_total", "1")] == 700 / tick
    assert second[("netmon_worker_cpu_seconds_total", "0")] == 50 / tick
    total = ("netmon_workers_cpu_seconds_total", "")
    assert second[total] == first[total] + 50 / tick
    # The fork server dies: its workers are re-parented away; the total holds.
    fake_proc(tmp_path / "c", {100: (1, "netmon-exporter", 0, 0, 1)})
    collector.proc = tmp_path / "c"
    assert samples(r)[total] == second[total]


def add_children_files(root: Path, procs: dict[int, tuple[int, str, int, int, int]]) -> None:
    """Add /proc/<pid>/task/<tid>/children, as CONFIG_PROC_CHILDREN kernels have them.

    A second thread of each process holds its odd-numbered children (a child belongs to
    the thread that forked it).
    """
    for pid in procs:
        kids = sorted(c for c, (ppid, *_) in procs.items() if ppid == pid)
        for tid, mine in ((pid, kids[::2]), (pid + 10_000, kids[1::2])):
            (root / str(pid) / "task" / str(tid)).mkdir(parents=True)
            text = "".join(f"{c} " for c in mine)
            (root / str(pid) / "task" / str(tid) / "children").write_text(text)


def test_worker_collector_reads_only_its_subtree_through_children_files(tmp_path: Path) -> None:
    """With children files, only the daemon's subtree is read, not every process on the host."""
    from netmon_exporter.process_metrics import WorkerProcessCollector

    procs = {
        100: (1, "netmon-exporter", 500, 40, 1000),
        101: (100, FORKSERVER, 10, 300, 2000),
        102: (100, TRACKER, 1, 0, 500),
        230: (101, FORKSERVER, 700, 0, 60000),
        210: (101, FORKSERVER, 900, 0, 50000),
        250: (101, FORKSERVER, 100, 0, 50000),
    }
    fake_proc(tmp_path, procs)
    add_children_files(tmp_path, procs)
    # A stranger whose stat claims the daemon as its parent: the /proc walk would count
    # it, the children files do not list it (and an unreadable stat must not matter).
    fake_proc(tmp_path, {999: (100, "stranger", 5000, 0, 10), 998: (1, "x", 0, 0, 1)})
    (tmp_path / "998" / "stat").write_text("garbage")
    r = CollectorRegistry()
    collector = WorkerProcessCollector(r, pid=100, proc=tmp_path)
    assert collector._tree_stats() is not None
    got = samples(r)
    tick = collector._ticks_per_second
    assert got[("netmon_worker_cpu_seconds_total", "0")] == 900 / tick
    assert got[("netmon_worker_cpu_seconds_total", "1")] == 700 / tick
    assert got[("netmon_worker_cpu_seconds_total", "2")] == 100 / tick
    assert got[("netmon_worker_cpu_seconds_total", "other")] == 1 / tick
    total = (10 + 300) + 1 + 700 + 900 + 100 + 40
    assert got[("netmon_workers_cpu_seconds_total", "")] == total / tick
    # Without children files (an old kernel): the same answer from the whole /proc walk,
    # the stranger included, which is why the children files are preferred.
    shutil.rmtree(tmp_path / "100" / "task")
    assert collector._tree_stats() is None
    walked = samples(r)
    assert walked[("netmon_workers_cpu_seconds_total", "")] == (total + 5000) / tick


@pytest.mark.skipif(
    not Path(f"/proc/self/task/{os.getpid()}/children").exists(),
    reason="kernel without CONFIG_PROC_CHILDREN",
)
def test_worker_collector_uses_children_files_on_the_real_proc() -> None:
    from netmon_exporter.process_metrics import WorkerProcessCollector

    tree = WorkerProcessCollector(pid=os.getpid())._tree_stats()
    assert tree is not None and tree[0].pid == os.getpid()


def test_worker_collector_on_the_real_proc() -> None:
    """Forked children of a process show up, with memory and fds.

    The parent is a fresh interpreter of its own, not pytest's: earlier tests may have
    left a fork server or resource tracker below pytest, which changes the labels.
    """
    import subprocess
    import sys
    import time

    from netmon_exporter.process_metrics import WorkerProcessCollector

    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import os, time\nif os.fork() == 0:\n    time.sleep(30)\nelse:\n    time.sleep(30)",
        ],
        start_new_session=True,  # killed as a group: the forked child too
    )
    try:
        got: dict[tuple[str, str], float] = {}
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            r = CollectorRegistry()
            WorkerProcessCollector(r, pid=parent.pid)
            got = samples(r)
            if ("netmon_worker_resident_memory_bytes", "0") in got:
                break
            time.sleep(0.05)
        assert got[("netmon_worker_resident_memory_bytes", "0")] > 1e6
        assert got[("netmon_worker_open_fds", "0")] >= 1
    finally:
        os.killpg(parent.pid, signal.SIGKILL)
        parent.wait()


# ---------------------------------------------------------------- a real scrape of the daemon

DAEMON_CONFIG = """\
capture:
  directory: captures
  min_age_seconds: 0
processing:
  workers: 2
output:
  directory: out
state:
  directory: state
"""


def scrape(url: str, gzip_ok: bool) -> tuple[bytes, bytes, dict[str, str]]:
    import gzip as gz
    import urllib.request

    headers = {"Accept-Encoding": "gzip"} if gzip_ok else {}
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=30) as r:
        raw = r.read()
        got = dict(r.headers)
    plain = gz.decompress(raw) if got.get("Content-Encoding") == "gzip" else raw
    return raw, plain, got


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_real_scrape_is_clean_cheap_and_shows_the_workers(tmp_path: Path) -> None:
    from .integration.daemon_process import DaemonProcess

    (tmp_path / "captures").mkdir()
    (tmp_path / "config.yaml").write_text(DAEMON_CONFIG)
    d = DaemonProcess(tmp_path / "config.yaml").start()
    try:

        def workers_up() -> bool:
            body = scrape(d.url + "/metrics", False)[1].decode()
            return 'netmon_worker_resident_memory_bytes{worker="1"}' in body

        d.wait_for(workers_up, timeout=60, what="two worker processes")
        zipped, text, headers = scrape(d.url + "/metrics", True)
        assert headers["Content-Encoding"] == "gzip" and len(zipped) < len(text) / 4
        body = text.decode()
        assert "_created" not in body
        for series in (
            'netmon_worker_cpu_seconds_total{worker="0"}',
            'netmon_worker_cpu_seconds_total{worker="fork_server"}',
            'netmon_worker_open_fds{worker="1"}',
            "netmon_workers_cpu_seconds_total ",
            'revision="',
        ):
            assert series in body, series
        proc = subprocess.run(
            ["promtool", "check", "metrics"], input=text, capture_output=True, timeout=60
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert proc.stdout + proc.stderr == b""  # not even a lint warning
    finally:
        d.stop()
