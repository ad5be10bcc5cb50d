"""Smoke test of bench/daemon.py: a tiny capture through the real daemon, the tables parse."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKETS = 20_000

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROW = re.compile(
    r"^(?P<run>burst\+scrapes|burst|rate \S+)\s+(?P<workers>\d+)\s+(?P<packets>\d+)\s+"
    r"(?P<flows>\d+)\s+(?P<seconds>[\d.]+)\s+(?P<pps>[\d,]+)\s+(?P<fps>[\d,]+)\s+"
    r"(?P<lag50>[\d.]+|-)\s+(?P<lag99>[\d.]+|-)\s+(?P<win>[\d.]+)\s+(?P<main_cpu>[\d.]+)\s+"
    r"(?P<wrk_cpu>[\d.]+)\s+(?P<main_mb>\d+)\s+(?P<wrk_mb>\d+)\s+(?P<ratio>[\d.]+x|-)$",
    re.M,
)
SCRAPES = re.compile(
    r"^(?P<phase>idle|under full load)\s+(?P<workers>\d+)\s+(?P<n>\d+)\s+(?P<errors>\d+)\s+"
    r"(?P<p50>[\d.]+)\s+(?P<p99>[\d.]+)\s+(?P<max>[\d.]+)$",
    re.M,
)
RATIO = re.compile(r"^daemon \(1 worker\) / one-shot packets/s:\s+(?P<ratio>[\d.]+)x", re.M)
PROCESS = re.compile(
    r"^  (main|fork server|worker)\s+pid \d+\s+CPU\s+[\d.]+ s\s+peak RSS\s+\d+ MB", re.M
)


@pytest.mark.skipif(not Path("/usr/bin/time").exists(), reason="needs GNU time (/usr/bin/time)")
def test_bench_daemon_runs_and_its_tables_parse(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "daemon.py"),
            "--packets",
            str(PACKETS),
            "--workers",
            "1",
            "--runs",
            "burst",
            "scrapes",
            "--idle-seconds",
            "1",
            "--out",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=400,
        env={**os.environ, "NETMON_PYTHON": sys.executable},  # the daemon runs in this venv
    )
    out = proc.stdout
    assert proc.returncode == 0, out[-3000:] + proc.stderr[-3000:]
    rows = {m["run"]: m for m in ROW.finditer(out)}
    assert set(rows) == {"burst", "burst+scrapes"}, out
    for row in rows.values():
        packets = int(row["packets"])
        assert 0.95 * PACKETS < packets <= PACKETS  # synth.py rounds flows down
        assert int(row["flows"]) > 0
        assert float(row["seconds"]) > 0
        assert int(row["pps"].replace(",", "")) > 0
        assert int(row["main_mb"]) > 0 and int(row["wrk_mb"]) > 0
    assert rows["burst"]["ratio"].endswith("x")
    phases = {m["phase"]: m for m in SCRAPES.finditer(out)}
    assert set(phases) == {"idle", "under full load"}, out
    for m in phases.values():
        assert int(m["n"]) > 0 and int(m["errors"]) == 0
        assert 0 < float(m["p50"]) <= float(m["p99"]) <= float(m["max"])
    assert RATIO.search(out), out
    if shutil.which("taskset"):
        assert re.search(
            r"^daemon \(1 worker\) / one-shot on one core packets/s:\s+[\d.]+x", out, re.M
        )
    roles = {m.group(1) for m in PROCESS.finditer(out)}
    assert roles == {"main", "fork server", "worker"}, out
    # every packet reached a window or is still held in an open flow carried to the next file
    windows = re.search(r"windows (\d+): (\d+) packets, (\d+) flows", out)
    assert windows and 0 < int(windows.group(2)) <= packets
    # one worker, two capture series: the series take turns in capture-time order, so no
    # window closes before the other series' flows for it came (none is late)
    late = re.findall(r"windows \d+: \d+ packets, \d+ flows \((\d+) late\)", out)
    assert late and set(late) == {"0"}, out
    # every process together by PSS: shared pages once, so no more than their RSS added up
    together = re.findall(
        r"every process together: peak (\d+) MB by PSS .* added up to (\d+) MB", out
    )
    assert together and all(0 < int(pss) <= int(rss) for pss, rss in together), out
    assert (tmp_path / "daemon-last.json").exists()
    assert not (tmp_path / "daemon-sites").exists()  # cleaned up without --keep
