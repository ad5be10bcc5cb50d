"""Smoke test of bench/main_memory.py: a small rotated scan capture, the table parses."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import split  # noqa: E402
import synth  # noqa: E402

pytestmark = [pytest.mark.slow]
DETECTORS = ("port_scan", "address_swee", "syn_flood", "beacon")


def test_bench_main_memory_prints_a_row_per_window(tmp_path: Path) -> None:
    capture = tmp_path / "scan.pcap"
    synth.write_pcap(capture, 60_000, scan=True)
    pieces, packets = split.split(capture, tmp_path / "split", 5.0, series=2)
    assert packets == 60_000 and len(pieces) > 4
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "main_memory.py"),
            "--split",
            str(tmp_path / "split"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    head = next(line for line in proc.stdout.splitlines() if line.lstrip().startswith("window"))
    assert all(d in head for d in DETECTORS)
    rows = re.findall(
        r"^ *\d+ +(\d+) +(\d+) +([\d.]+) +([\d.]+) +([\d.]+)((?: +[\d.]+)+)$", proc.stdout, re.M
    )
    assert rows, proc.stdout
    # every flow of the capture is a row of some window (one SYN and one RST per flow)
    assert len(rows) >= 5 and sum(int(r[0]) for r in rows) == packets // 2
    for flows, kept, held, peak, after, cells in rows:
        assert int(kept) >= int(flows) > 0  # whole flows, and slices of those cut
        assert float(peak) >= float(held) > 0 and float(after) > 0
        assert len(cells.split()) == len(head.split()) - 6
