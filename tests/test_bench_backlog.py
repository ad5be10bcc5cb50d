"""Smoke test of bench/backlog.py: a small backlog of each kind is worked off and timed."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ROW = re.compile(
    r"^(?P<kind>loose|series|hosts\d+)\s+(?P<n>[\d,]+) files\s+(?P<wall>[\d.]+) s\s+[\d.]+ ms/file"
    r"\s+main CPU\s+(?P<cpu>[\d.]+) s\s+[\d.]+ ms/file\s+done at 25% .* 100% [\d.]+ s$",
    re.M,
)

pytestmark = [pytest.mark.slow]


def test_bench_backlog_works_off_each_kind_of_backlog() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "backlog.py"), "loose:40", "series:30", "hosts7:30"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {m["kind"]: m for m in ROW.finditer(proc.stdout)}
    assert sorted(rows) == ["hosts7", "loose", "series"], proc.stdout
    assert "TIMEOUT" not in proc.stdout
    for m in rows.values():
        assert float(m["wall"]) > 0 and float(m["cpu"]) > 0
