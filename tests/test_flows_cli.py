"""``netmon-exporter flows``: CSV out, summary line, clean errors, rotated files."""

from __future__ import annotations

import csv
import re
import subprocess
import sys
from pathlib import Path

import pytest

from netmon_exporter.cli import main
from netmon_exporter.flows.flow_csv import OUTPUT_COLUMNS

DATA = Path(__file__).parent / "data" / "pcaps"
ROOT = Path(__file__).resolve().parents[1]
SUMMARY = re.compile(r"^(\d+) packets, (\d+) flows in [0-9.]+ s \(([0-9,]+) packets/s\) -> ")


def _rows(path: Path) -> list[list[str]]:
    with open(path, newline="") as fh:
        return list(csv.reader(fh))


def test_writes_csv_and_prints_summary(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out.csv"
    rc = main(
        [
            "flows",
            str(DATA / "tcp-missing-syn.pcap"),
            str(DATA / "icmp.pcap"),
            "-o",
            str(out),
            "--no-progress",
        ]
    )
    assert rc == 0
    line = capsys.readouterr().out.strip()
    m = SUMMARY.match(line)
    assert m, line
    assert (int(m.group(1)), int(m.group(2))) == (21 + 12, 2)
    rows = _rows(out)
    assert tuple(rows[0]) == OUTPUT_COLUMNS
    assert len(rows) == 3
    assert rows[1][1:6] == ["141.42.64.125", "56730", "125.190.109.199", "80", "6"]


def _run_flows(capture: Path, out: Path) -> subprocess.CompletedProcess[str]:
    """``netmon-exporter flows CAPTURE -o OUT`` as a user runs it (a process of its own)."""
    return subprocess.run(
        [sys.executable, "-m", "netmon_exporter", "flows", str(capture), "-o", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_unreadable_file_is_one_line_and_nonzero(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pcap"
    bad.write_bytes(b"this is not a capture")
    out = tmp_path / "o.csv"
    p = _run_flows(bad, out)
    assert p.returncode == 1
    assert "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1
    assert "bad.pcap" in p.stderr and "not a pcap" in p.stderr
    assert not out.exists()


def test_missing_file_and_bad_option(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["flows", str(tmp_path / "none.pcap"), "-o", str(tmp_path / "o.csv")]) == 1
    assert "no such file" in capsys.readouterr().err
    rc = main(
        ["flows", str(DATA / "icmp.pcap"), "-o", str(tmp_path / "o.csv"), "--idle-timeout", "0"]
    )
    assert rc == 2


def test_rotated_files_continue_flows(tmp_path: Path) -> None:
    from scapy.utils import rdpcap, wrpcap

    pkts = rdpcap(str(DATA / "tcp-missing-syn.pcap"))
    a, b = tmp_path / "a.pcap", tmp_path / "b.pcap"
    wrpcap(str(a), pkts[:10])
    wrpcap(str(b), pkts[10:])
    out = tmp_path / "o.csv"
    assert main(["flows", str(a), str(b), "-o", str(out), "--rotated", "--no-progress"]) == 0
    assert len(_rows(out)) == 2  # one flow, not two halves
    assert main(["flows", str(a), str(b), "-o", str(out), "--no-progress"]) == 0
    assert len(_rows(out)) == 3


def test_progress_bar_when_forced(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Guards docs/flow-features.md: "`--progress` shows one for every file".

    A tiny capture (a few hundred bytes) still gets its bar, left at 100% on its own
    line, although stderr is not a terminal (issue 15: nothing showed under 16 MB).
    """
    small = DATA / "tcp-missing-syn.pcap"
    assert small.stat().st_size < 1 << 20
    flow_csv = tmp_path / "in.csv"
    assert main(["flows", str(small), "-o", str(flow_csv), "--no-progress"]) == 0
    capsys.readouterr()
    args = ["flows", str(small), str(flow_csv), "-o", str(tmp_path / "o.csv"), "--progress"]
    assert main(args) == 0
    # what a terminal or a log viewer shows: each line's last state after carriage returns
    lines = [line.rsplit("\r", 1)[-1] for line in capsys.readouterr().err.split("\n") if line]
    assert len(lines) == 2, lines  # one kept line per file, a flow CSV as input too
    assert all(line.rstrip().endswith("MB/s") and "100.0%" in line for line in lines), lines


def test_no_progress_bar_by_default_when_not_a_terminal(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert main(["flows", str(DATA / "tcp-missing-syn.pcap"), "-o", str(tmp_path / "o.csv")]) == 0
    assert capsys.readouterr().err == ""


def test_ctrl_c_stops_every_thread_and_leaves_no_csv(tmp_path: Path) -> None:
    """The command reads ahead and writes the CSV on threads of their own: Ctrl-C in the
    middle of a large capture still ends it at once, with status 130, one line on stderr
    and no CSV (final or temporary) left behind. A capture corrupt in its middle ends it
    the same way, with status 1."""
    import importlib.util
    import signal
    import time

    spec = importlib.util.spec_from_file_location("bench_synth", ROOT / "bench" / "synth.py")
    assert spec and spec.loader
    synth = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(synth)
    pcap = tmp_path / "big.pcap"
    synth.write_pcap(pcap, 400_000, seed=2)
    out = tmp_path / "out" / "o.csv"
    out.parent.mkdir()
    cmd = [sys.executable, "-m", "netmon_exporter", "flows", str(pcap), str(pcap), str(pcap)]
    proc = subprocess.Popen(
        [*cmd, "-o", str(out)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 60
    while not any(out.parent.iterdir()) and time.monotonic() < deadline:  # writing began
        time.sleep(0.02)
    time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err.decode().strip().splitlines() == ["netmon-exporter flows: interrupted"]
    assert list(out.parent.iterdir()) == []

    import struct

    raw = bytearray(pcap.read_bytes())
    at = 24  # walk the record headers to one in the middle; make its length absurd
    while at < len(raw) // 2:
        at += 16 + struct.unpack_from("<I", raw, at + 8)[0]
    raw[at + 8 : at + 12] = struct.pack("<I", 0x7FFFFFFF)
    bad = tmp_path / "bad.pcap"
    bad.write_bytes(bytes(raw))
    p = _run_flows(bad, out)
    assert p.returncode == 1, p.stderr
    assert "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1
    assert "corrupt record header" in p.stderr, p.stderr
    assert list(out.parent.iterdir()) == []
