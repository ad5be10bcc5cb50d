"""Hostile and unlucky files through the real daemon (issue 9, items 1, 5-8, 11; issue 15 item 1).

Each test failed on the code before the fix:
- a file name holding a non-UTF-8 byte stopped all ingestion for good (the
  ledger raised ``UnicodeEncodeError``), health stayed ``healthy``;
- names over ~225 bytes could be neither processed nor quarantined;
- symbolic links were followed out of the capture directory, FIFOs opened;
- files with a future mtime (sensor clock ahead) were never processed;
- a briefly unwritable output directory quarantined good captures, and a
  quarantine move that failed was counted as a quarantine;
- a quarantined file moved back with ``mv`` went straight back to quarantine;
- flows open at the end of a series reached metrics but no CSV.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from .daemon_process import DaemonProcess
from .test_ingest_daemon import age, flows_records, metric, metric_sum, pcap_header, udp_record

pytestmark = [pytest.mark.integration]

T0 = 1_790_000_000.0

CONFIG = """\
capture:
  directory: captures
  min_age_seconds: 1
processing:
  interval_seconds: 10
  workers: 1
  max_retries: 0
  retry_delay_seconds: 1
flows:
  idle_timeout_seconds: {idle}
output:
  directory: out
state:
  directory: state
"""


def site(root: Path, idle: float = 120) -> Path:
    (root / "captures").mkdir(parents=True)
    (root / "config.yaml").write_text(CONFIG.format(idle=idle))
    return root


def pcap(path: Path, file_no: int, flows: int = 5) -> int:
    """Write a capture of ``flows`` two-packet UDP flows; return its packet count."""
    path.write_bytes(pcap_header() + flows_records(T0 + file_no * 10, file_no, flows))
    return 2 * flows


def health(d: DaemonProcess) -> dict:
    return json.loads(d.get("/health")[1])


def by_name(name: bytes, directory: Path) -> Path:
    return Path(os.fsdecode(os.path.join(os.fsencode(directory), name)))


def test_any_name_links_fifos_and_clock_skew(tmp_path: Path) -> None:
    root = site(tmp_path)
    cap = root / "captures"
    outside = tmp_path / "elsewhere.pcap"
    pcap(outside, 90)
    packets = 0
    bad = by_name(b"bad-\xff\xfe\x1b[31m.pcap", cap)  # not UTF-8, with an escape sequence
    packets += pcap(bad, 1)
    long_ok = by_name(b"a" * 240 + b".pcap", cap)  # its CSV name would pass NAME_MAX
    packets += pcap(long_ok, 2)
    packets += pcap(cap / "good.pcap", 3)
    long_bad = by_name(b"b" * 248 + b".pcap", cap)  # garbage: quarantined, under a short name
    long_bad.write_bytes(b"this is not a capture" * 10)
    (cap / "link.pcap").symlink_to(outside)
    (cap / "shadow.pcap").symlink_to("/etc/shadow")
    os.mkfifo(cap / "fifo.pcap")
    for p in (bad, long_ok, cap / "good.pcap", long_bad):
        age(p)
    future = cap / "future.pcap"
    packets += pcap(future, 4)
    ahead = time.time() + 3600  # the sensor's clock runs an hour ahead
    os.utime(future, (ahead, ahead))

    d = DaemonProcess(root / "config.yaml").start()
    try:
        d.wait_for(
            lambda: (
                metric(d, "netmon_files_processed_total", {"kind": "pcap"}) == 4
                and metric_sum(d, "netmon_files_quarantined_total") == 1
            ),
            timeout=90,
            what="4 captures processed and the garbage one quarantined",
        )
        assert metric_sum(d, "netmon_packets_total") == packets  # the link target is not read
        assert metric(d, "netmon_files_ignored_total", {"reason": "symlink"}) == 2
        assert metric(d, "netmon_files_ignored_total", {"reason": "special"}) == 1
        assert metric(d, "netmon_files_clock_skew_total") == 1
        h = health(d)
        assert h["state"] != "unhealthy" and h["checks"]["ingestion"]["ok"], h
        csvs = os.listdir(os.fsencode(root / "out" / "flows"))
        assert any(n.startswith(b"bad-\xff\xfe") for n in csvs)
        assert all(len(n) <= 255 for n in csvs) and len(csvs) >= 4
        quarantined = os.listdir(os.fsencode(root / "out" / "quarantine"))
        assert len([n for n in quarantined if n.startswith(b"bbbb")]) == 2  # capture + .reason
        # every log record is one line: the escape sequence in the name came out escaped
        assert not any("\x1b" in line for line in d.lines)
        # a good file dropped now still flows: nothing is stuck behind the odd names
        packets += pcap(cap / "later.pcap", 5)
        d.wait_for(
            lambda: metric(d, "netmon_files_processed_total", {"kind": "pcap"}) == 5,
            timeout=60,
            what="a later file processed",
        )
    finally:
        d.stop()
    assert d.proc is not None and d.proc.returncode == 0


def test_unwritable_outputs_are_retried_not_quarantined_and_mv_back_retries(
    tmp_path: Path,
) -> None:
    root = site(tmp_path)
    cap, out = root / "captures", root / "out"
    out.mkdir()
    (out / "flows").write_text("a file where the CSV directory should be")  # as root: ENOTDIR
    (out / "quarantine").write_text("same for quarantine")
    pcap(cap / "good.pcap", 1)
    (cap / "junk.pcap").write_bytes(b"not a capture at all, just junk" * 4)
    for p in cap.iterdir():
        age(p)
    d = DaemonProcess(root / "config.yaml").start()
    try:
        d.wait_for(
            lambda: (
                metric(d, "netmon_retries_total", {"stage": "output"}) >= 2
                and metric(d, "netmon_files_failed_total", {"kind": "pcap", "reason": "format"})
                == 1
            ),
            timeout=60,
            what="output retries and the junk file's failure",
        )
        h = health(d)
        assert h["state"] == "degraded" and not h["checks"]["ingestion"]["ok"], h
        assert "cannot" in h["checks"]["ingestion"]["reason"]
        assert metric_sum(d, "netmon_files_quarantined_total") == 0  # the move failed: not counted
        assert (cap / "good.pcap").exists() and (cap / "junk.pcap").exists()

        (out / "flows").unlink()  # the disk is writable again
        (out / "quarantine").unlink()
        d.wait_for(
            lambda: (
                metric(d, "netmon_files_processed_total", {"kind": "pcap"}) == 1
                and metric_sum(d, "netmon_files_quarantined_total") == 1
            ),
            timeout=60,
            what="the good file processed and the junk one quarantined once",
        )
        assert not (cap / "junk.pcap").exists() and (out / "quarantine" / "junk.pcap").exists()
        assert metric(d, "netmon_files_failed_total", {"kind": "pcap", "reason": "format"}) == 1

        # the runbook's retry: move it back. Same inode, size and mtime: still a new attempt
        os.rename(out / "quarantine" / "junk.pcap", cap / "junk.pcap")
        d.wait_for(
            lambda: (
                metric(d, "netmon_files_failed_total", {"kind": "pcap", "reason": "format"}) == 2
            ),
            timeout=60,
            what="the moved-back file tried again",
        )
        d.wait_for(
            lambda: metric_sum(d, "netmon_files_quarantined_total") == 2,
            timeout=30,
            what="quarantined again",
        )
    finally:
        d.stop()


def series_capture(path: Path, start: float, n: int) -> int:
    """UDP flows of one client, a packet every 0.2 s, still open at the end of the file."""
    recs = [
        udp_record(start + 0.2 * i, (10, 9, 0, 1 + i % 3), (192, 0, 2, 9), 50000 + i % 3, 9000)
        for i in range(n)
    ]
    path.write_bytes(pcap_header() + b"".join(recs))
    return n


def test_flows_open_at_the_end_of_a_series_reach_a_csv(tmp_path: Path) -> None:
    root = site(tmp_path, idle=5)
    cap = root / "captures"
    series_capture(cap / "sensor-0001.pcap", T0, 30)
    series_capture(cap / "sensor-0002.pcap", T0 + 6.0, 30)  # flows continue across the files
    for i, p in enumerate(sorted(cap.iterdir())):
        t = time.time() - 3600 + i
        os.utime(p, (t, t))
    d = DaemonProcess(root / "config.yaml").start()
    try:
        d.wait_for(
            lambda: (
                metric_sum(d, "netmon_flows_total") == 3
                and metric(d, "netmon_flow_csv_rows_total") == 3
            ),
            timeout=60,
            what="the three carried flows ended and written",
        )
    finally:
        d.stop()
    ends = sorted((root / "out" / "flows").glob("*_end_Flow.csv"))
    assert [p.name.split("_")[0] for p in ends] == ["sensor-0002.pcap"]
    assert len(ends[0].read_text().splitlines()) == 1 + 3
    # the carry files went with the carries: the one each file replaced, then the last
    assert list((root / "state" / "carry").iterdir()) == []
    shutil.rmtree(root / "state")
