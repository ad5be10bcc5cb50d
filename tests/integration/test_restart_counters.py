"""A clean restart leaves every counter where docs/metrics.md says it is (issue 15 item 5).

The real daemon processes captures that exercise every counter the ledger restores
(files done, failed and quarantined; packets and bytes; skipped packets; IP
fragments; packets decapsulated; flows, evicted flows and flows ended with no next file of their series;
CSV rows), stops cleanly, starts again on the same state, and is scraped before and
after. Before the fix ``flows_total{tcp}`` dropped, ``packets_skipped_total`` and
``ip_fragments_total`` restarted at 0 and ``netmon_windows_kept`` read 0 with reports
on disk.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from netmon_exporter.metrics import NAMESPACE, RESTORED_COUNTERS, build_metrics

from .daemon_process import DaemonProcess
from .test_hostile_files import series_capture
from .test_ingest_daemon import T0, age, csv_rows, metric, metric_sum

pytestmark = [pytest.mark.integration]

ROOT = Path(__file__).resolve().parents[2]
CAPTURES = (
    ROOT / "samples" / "dns-edns-ecs.pcap",  # IPv4 fragments
    ROOT / "samples" / "synscan.pcap",  # 1994 open flows: evictions at max_open_flows 1000
    ROOT / "samples" / "icmp6.pcap",
    ROOT / "tests" / "data" / "pcaps" / "pppoe.pcap",  # non-IP packets
    ROOT / "tests" / "data" / "pcaps" / "trunc-ip4.pcap",  # a truncated packet
)
CONFIG = """\
capture:
  directory: captures
  min_age_seconds: 0
processing:
  workers: 1
  max_retries: 0
flows:
  idle_timeout_seconds: 4
  max_open_flows: 1000
output:
  directory: out
state:
  directory: state
"""

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(d: DaemonProcess) -> tuple[Samples, dict[str, str]]:
    """Every sample of the exposition, and each family's type."""
    _, body = d.get("/metrics")
    samples: Samples = {}
    types: dict[str, str] = {}
    for fam in text_string_to_metric_families(body):
        types[fam.name] = fam.type
        for s in fam.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples, types


def _catalogue() -> list[Metric]:
    """The metric families of metrics.py (the CPU of processes is no work counter)."""
    registry = CollectorRegistry()
    build_metrics(registry)
    return list(registry.collect())


def tunnel_capture(path: Path) -> None:
    """A TCP exchange seen through GRE, VXLAN and IP in IP (packets decapsulated)."""
    from scapy.layers.inet import GRE, IP, TCP, UDP, Ether
    from scapy.layers.vxlan import VXLAN
    from scapy.utils import wrpcap

    ETH = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")  # no ARP lookups
    outer = IP(src="10.9.0.1", dst="10.9.0.2")  # VXLAN is opened between internal ends
    inner = IP(src="10.1.1.1", dst="10.2.2.2") / TCP(sport=41000, dport=443, flags="S")
    pkts = [
        ETH / outer / GRE() / inner,
        ETH / outer / UDP(sport=49152, dport=4789) / VXLAN(vni=7) / ETH / inner,
        ETH / outer / inner,
    ]
    for k, pkt in enumerate(pkts):
        pkt.time = T0 + k
    wrpcap(str(path), pkts)


def family(samples: Samples, name: str) -> Samples:
    return {k: v for k, v in samples.items() if k[0] == name}


def test_counters_survive_a_clean_restart(tmp_path: Path) -> None:
    """Guards docs/ingestion.md: "so after a restart each reads what it read before".

    Guards docs/metrics.md: "*restored* counters start from what the ledger committed".
    Guards docs/ingestion.md: "`netmon_windows_kept` is counted from the reports on disk".
    """
    (tmp_path / "config.yaml").write_text(CONFIG)
    cap = tmp_path / "captures"
    cap.mkdir()
    for src in CAPTURES:
        shutil.copyfile(src, cap / src.name)
    (cap / "junk.pcap").write_bytes(b"not a capture, quarantined at once " * 4)
    tunnel_capture(cap / "tunnels.pcap")
    # a rotation series whose last flows stay open: ended after the idle timeout
    series_capture(cap / "sensor-0001.pcap", T0, 30)
    series_capture(cap / "sensor-0002.pcap", T0 + 6.0, 30)
    for i, p in enumerate(sorted(cap.iterdir())):
        age(p, 3600 - i)

    d = DaemonProcess(tmp_path / "config.yaml").start()
    try:
        d.wait_for(
            lambda: (
                metric_sum(d, "netmon_files_processed_total") == len(CAPTURES) + 3
                and metric_sum(d, "netmon_files_quarantined_total") == 1
                and list((tmp_path / "out" / "flows").glob("*_end_Flow.csv"))
                # the end-of-series flows are counted once their CSV rows are
                and metric(d, "netmon_flow_csv_rows_total") == csv_rows(tmp_path)[1]
            ),
            timeout=90,
            what="every capture done, junk quarantined, the series' last flows ended",
        )
        time.sleep(1.0)  # nothing more may arrive
        before, types = scrape(d)
    finally:
        assert d.stop() == 0
    reports = len(list((tmp_path / "out" / "windows").glob("window-*.json")))
    assert reports > 0

    d = DaemonProcess(tmp_path / "config.yaml").start()
    try:
        d.wait_for(
            lambda: (
                metric(d, "netmon_backlog_files") == 0
                and metric(d, "netmon_files_in_progress") == 0
            ),
            timeout=30,
            what="the restarted daemon's first scan",
        )
        time.sleep(1.0)
        after, _ = scrape(d)
    finally:
        assert d.stop() == 0

    restored = {f"{NAMESPACE}_{name}_total" for name in RESTORED_COUNTERS}
    counters = {f"{name}_total" for name, t in types.items() if t == "counter"}
    catalogue = {f"{f.name}_total" for f in _catalogue() if f.type == "counter"}
    assert catalogue <= counters, catalogue - counters
    assert restored <= counters, restored - counters
    for name in sorted(restored):
        got, want = family(after, name), family(before, name)
        assert sum(want.values()) > 0, f"{name}: the test exercised nothing"
        diff = {k[1]: (want.get(k), got.get(k)) for k in want | got if want.get(k) != got.get(k)}
        assert not diff, f"{name} (before, after) the restart: {diff}"
    # every other counter starts from 0 when the daemon starts (docs/metrics.md): it has
    # counted at most what happened since, never more than the run before
    for name in sorted(catalogue - restored):
        for key, value in family(after, name).items():
            assert value <= before.get(key, 0.0), f"{key} grew across the restart"
    assert after[("netmon_windows_kept", ())] == reports
    last = ("netmon_last_success_timestamp_seconds", ())
    assert abs(after[last] - before[last]) < 5, (before[last], after[last])
