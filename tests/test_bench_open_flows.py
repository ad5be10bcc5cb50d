"""Smoke test of bench/open_flows.py: small captures, the table parses, seeds pay off."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ROW = re.compile(
    r"^(?P<capture>flood|synth|dns|idle)\s+(?P<seeds>yes|no)\s+(?P<packets>[\d,]+)\s+(?P<open>[\d,]+)\s+"
    r"(?P<rows>[\d,]+)\s+(?P<rss>-?[\d,]+)$",
    re.M,
)

pytestmark = [pytest.mark.slow]


def _n(text: str) -> int:
    return int(text.replace(",", ""))


def test_bench_open_flows_prints_what_an_open_flow_costs(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "open_flows.py"),
            "--flows",
            "30000",
            "--packets",
            "20000",
            "--exchanges",
            "5000",
            "--connections",
            "5000",
            "--out",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    rows = {(m["capture"], m["seeds"]): m for m in ROW.finditer(proc.stdout)}
    assert set(rows) == {
        (c, s) for c in ("flood", "synth", "dns", "idle") for s in ("yes", "no")
    }, proc.stdout
    seeded, rowed = rows["flood", "yes"], rows["flood", "no"]
    assert _n(seeded["open"]) == _n(rowed["open"]) == 30_000  # every flood flow is open
    assert _n(seeded["rows"]) <= 400 < 1000 < _n(rowed["rows"])
    assert _n(rows["synth", "yes"]["open"]) == _n(rows["synth", "no"]["open"]) > 0
    for case in ("dns", "idle"):  # every exchange, every idle connection is open
        seeded, rowed = rows[case, "yes"], rows[case, "no"]
        assert _n(seeded["open"]) == _n(rowed["open"]) == 5_000, case
        assert _n(seeded["rows"]) <= 400 < 1000 < _n(rowed["rows"]), case
