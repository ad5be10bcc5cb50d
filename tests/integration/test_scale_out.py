"""Scale-out worked example (docs/scale-out.md): two shards of one capture directory.

Two real daemons watch the same directory with ``capture.shard_index`` 0 and 1 of
``capture.shard_count`` 2, each with its own state and output directory; one real
Prometheus scrapes both with the shipped ``netmon`` job. Every file must be processed by
exactly one instance: the per-instance counts follow the documented assignment
(``crc32(file name) mod shard_count``), they add up to the number of files dropped, and
they stay there after both instances have rescanned the directory.
"""

from __future__ import annotations

import shutil
import time
import zlib
from pathlib import Path
from typing import Any

import pytest

from .conftest import SHIPPED_RULES, prometheus_test_config, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
SOURCES = [
    ROOT / "samples" / n
    for n in ("icmp.pcap", "icmp6.pcap", "dns-edns-ecs.pcap", "tcp-handshake-reorder.pcap")
]
# Names without a trailing number, so that each file stands alone (no rotation series).
NAMES = [f"site-{tag}.pcap" for tag in "abcdefghijklmn"]
RESCAN_SECONDS = 10

CONFIG = """\
capture:
  directory: {captures}
  min_age_seconds: 0
  shard_index: {index}
  shard_count: 2
processing:
  interval_seconds: {rescan}
  workers: 1
output:
  directory: out
state:
  directory: state
"""


def shard_of(name: str, count: int = 2) -> int:
    """The assignment documented in docs/scale-out.md."""
    return zlib.crc32(name.encode()) % count


def test_two_shards_count_each_file_once(
    tmp_path: Path, start_daemon: Any, start_prometheus: Any
) -> None:
    expected = [sum(1 for n in NAMES if shard_of(n) == i) for i in (0, 1)]
    assert all(expected), "the file names must give both shards work"

    captures = tmp_path / "captures"
    captures.mkdir()
    daemons = []
    for index in (0, 1):
        site = tmp_path / f"shard{index}"
        site.mkdir()
        (site / "config.yaml").write_text(
            CONFIG.format(captures=captures, index=index, rescan=RESCAN_SECONDS)
        )
        daemons.append(start_daemon(site / "config.yaml"))
    instances = [d.address for d in daemons]
    prom = start_prometheus(prometheus_test_config(instances, None, [SHIPPED_RULES]))

    def logs() -> str:
        return "\n".join(d.log_text() for d in daemons) + "\n--- prometheus\n" + prom.log()

    # The shipped rules, unmodified, load and evaluate cleanly against real series.
    wait_until(
        lambda: all(r["health"] == "ok" for r in prom.rules()) and prom.rules(),
        15,
        "every shipped alert rule to evaluate",
        log=logs,
    )

    for i, name in enumerate(NAMES):
        shutil.copy2(SOURCES[i % len(SOURCES)], captures / name)

    total = 'sum(netmon_files_processed_total{job="netmon"})'
    wait_until(
        lambda: prom.value(total) == len(NAMES),
        60,
        f"{len(NAMES)} files processed across both shards",
        log=logs,
    )

    def per_instance() -> list[float | None]:
        return [
            prom.value(f'sum(netmon_files_processed_total{{instance="{i}"}})') for i in instances
        ]

    assert per_instance() == expected
    assert prom.value('sum(netmon_files_failed_total{job="netmon"})') == 0
    assert prom.value('sum(netmon_files_skipped_duplicate_total{job="netmon"})') == 0

    # Both instances rescan the shared directory; nothing is picked up a second time.
    scans_done = time.time() + RESCAN_SECONDS + 2
    wait_until(
        lambda: (
            time.time() > scans_done
            and prom.value('min(timestamp(netmon_up{job="netmon"}))') > scans_done
        ),
        RESCAN_SECONDS + 15,
        "a scrape after the next rescan of both instances",
        log=logs,
    )
    assert per_instance() == expected
    assert prom.value(total) == len(NAMES)
    # Packets add up across shards like any counter.
    by_instance = [prom.value(f'sum(netmon_packets_total{{instance="{i}"}})') for i in instances]
    assert all(v and v > 0 for v in by_instance)
    assert prom.value('sum(netmon_packets_total{job="netmon"})') == sum(by_instance)
