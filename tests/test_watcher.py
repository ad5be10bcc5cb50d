"""File discovery: patterns, shards, kinds, series, scans and watchdog events."""

from __future__ import annotations

import re
import threading
import time
import zlib
from pathlib import Path

import pytest

from netmon_exporter.config import CaptureConfig
from netmon_exporter.ingest.age_gate import Note
from netmon_exporter.ingest.names import file_kind, in_shard, matches, series_of
from netmon_exporter.ingest.watcher import Watcher, scan

PATTERNS = ("*.pcap", "*.pcapng", "*.pcap.gz", "*.csv")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("a.pcap", True),
        ("a.pcapng", True),
        ("a.pcap.gz", True),
        ("flows.csv", True),
        ("a.pcap.tmp", False),
        ("a.txt", False),
        (".a.pcap", False),
        ("a.PCAP", False),
    ],
)
def test_matches_patterns_and_skips_hidden_files(name: str, expected: bool) -> None:
    assert matches(name, PATTERNS) is expected


def test_shards_partition_names_stably() -> None:
    names = [f"cap-{i:05d}.pcap" for i in range(3000)]
    owners = [[s for s in range(3) if in_shard(n, s, 3)] for n in names]
    assert all(len(o) == 1 for o in owners)
    counts = [sum(1 for o in owners if o == [s]) for s in range(3)]
    assert min(counts) > 800  # roughly even
    # stable across processes and versions: a plain CRC-32 of the name
    assert in_shard("cap-00001.pcap", zlib.crc32(b"cap-00001.pcap") % 7, 7)
    assert all(in_shard(n, 0, 1) for n in names[:10])


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("a.pcap", "pcap"),
        ("a.pcap.gz", "pcap"),
        ("a.pcapng", "pcapng"),
        ("a.PCAPNG.gz", "pcapng"),
        ("flows.csv", "csv"),
        ("flows.csv.gz", "csv"),
        ("x.cap", "pcap"),
    ],
)
def test_file_kind_from_name(name: str, kind: str) -> None:
    assert file_kind(name) == kind


@pytest.mark.parametrize(
    ("name", "series"),
    [
        ("eth0-0001.pcap", "eth0"),  # rotation scripts: zero-padded counters
        ("a-000.pcap", "a"),
        ("1764410400.pcap", ""),  # tcpdump -G 60 -w '%s.pcap'
        ("eth0-1764410400.pcap.gz", "eth0"),
        ("edge.20261128120000.pcap.gz", "edge"),  # tcpdump -G with strftime
        ("edge-20261128-120000.pcapng", "edge"),
        ("edge_20261128T1200.pcap", "edge"),
        ("ring_00001_20261129120000.pcapng", "ring"),  # dumpcap -b files:N
        ("ring_00012_20261129120500.pcapng.gz", "ring"),
        ("trace.pcap3", "trace"),  # tcpdump -C 100 -W 10
        ("trace.pcapng12", "trace"),
        # names that merely end in digits stand alone (issue 10)
        ("tls1.2.pcap", None),
        ("smb311.pcap", None),
        ("quic-29.pcap", None),
        ("eth0_17.pcapng", None),
        ("dump1.pcap", None),
        ("42.pcap", None),
        ("single.pcap", None),
        ("flows-0001.csv", None),  # flow CSVs carry nothing across files
    ],
)
def test_series_from_default_source_pattern(name: str, series: str | None) -> None:
    pattern = re.compile(CaptureConfig().source_pattern)
    assert series_of(name, pattern) == series


def test_scan_respects_patterns_recursion_and_exclusions(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "done").mkdir()
    for rel in ("a.pcap", "b.txt", ".c.pcap", "sub/d.pcapng", "done/e.pcap"):
        (tmp_path / rel).write_bytes(b"x")
    flat = {Path(p).name for p, _ in scan(tmp_path, recursive=False, patterns=PATTERNS)}
    assert flat == {"a.pcap"}
    deep = {
        Path(p).name
        for p, _ in scan(tmp_path, recursive=True, patterns=PATTERNS, excluded=[tmp_path / "done"])
    }
    assert deep == {"a.pcap", "d.pcapng"}


def test_scan_of_missing_directory_raises(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        list(scan(tmp_path / "nope", recursive=False, patterns=PATTERNS))


def test_watcher_reports_new_and_moved_in_files(tmp_path: Path) -> None:
    seen: list[str | None] = []
    states: list[tuple[str | None, Note | None]] = []
    got = threading.Event()

    def on_path(p: str | None, note: Note | None) -> None:
        seen.append(p)
        states.append((p, note))
        got.set()

    w = Watcher(tmp_path, False, on_path)
    if not w.start():
        pytest.skip(f"inotify unavailable here: {w.error}")
    try:
        (tmp_path / "new.pcap").write_bytes(b"abc")
        assert got.wait(5)
        tmp = tmp_path.parent / f"{tmp_path.name}-outside.pcap"
        tmp.write_bytes(b"x")
        tmp.rename(tmp_path / "moved.pcap")
        deadline = time.time() + 5
        while str(tmp_path / "moved.pcap") not in seen and time.time() < deadline:
            time.sleep(0.05)
    finally:
        w.stop()
    new, moved = str(tmp_path / "new.pcap"), str(tmp_path / "moved.pcap")
    # created (says nothing), written (a writer has it open), closed after writing
    assert [s for p, s in states if p == new][0] is None
    assert [s for p, s in states if p == new and s is not None] == [Note.WRITING, Note.CLOSED]
    assert (moved, Note.RENAMED_IN) in states  # renamed in: complete
    assert (moved, Note.WRITING) not in states and (moved, Note.CLOSED) not in states
    assert not w.running


def test_watcher_on_missing_directory_reports_why(tmp_path: Path) -> None:
    w = Watcher(tmp_path / "missing", False, lambda p, writing: None)
    assert w.start() is False
    assert w.error is not None and "relying on rescans" in w.error


def test_watcher_notices_its_directory_was_replaced(tmp_path: Path) -> None:
    d = tmp_path / "cap"
    d.mkdir()
    seen: list[str | None] = []
    w = Watcher(d, False, lambda p, writing: seen.append(p))
    if not w.start():
        pytest.skip(f"inotify unavailable here: {w.error}")
    try:
        assert not w.stale
        d.rmdir()
        deadline = time.time() + 5
        while None not in seen and time.time() < deadline:
            time.sleep(0.05)
        assert None in seen  # the deletion asked for a full rescan
        assert w.stale
        d.mkdir()  # (often with the same inode number)
        assert w.stale
        assert w.start() and not w.stale  # restarted on the new directory
        (d / "after.pcap").write_bytes(b"x")
        deadline = time.time() + 5
        while str(d / "after.pcap") not in seen and time.time() < deadline:
            time.sleep(0.05)
        assert str(d / "after.pcap") in seen
    finally:
        w.stop()
