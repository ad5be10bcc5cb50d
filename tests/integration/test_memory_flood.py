"""Memory of the real daemon on a spoofed-source SYN flood (issue 9 item 3, issue 12).

One capture of 1.5 M one-packet flows goes through the real daemon (watcher, worker
process, pipe, windows, analysis, report) with the default flow and window settings;
peak RSS of the main process and of every worker (``VmHWM``), and the main process's
RSS once the flood's window is closed and reported, must stay within budget.

Also a script that prints the figures for any checkout (to compare with old code)::

    python -m tests.integration.test_memory_flood [--root CHECKOUT] [--flows N]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ..flood_capture import tick_capture, write_syn_flood
from .daemon_process import DaemonProcess

ROOT = Path(__file__).resolve().parents[2]
FLOWS = 1_500_000
START = 1_700_000_000.0
MIB = 1 << 20

CONFIG = """\
capture:
  directory: captures
  min_age_seconds: 0
processing:
  interval_seconds: 10
output:
  directory: out
  flows_csv: false
state:
  directory: state
"""


def _status_kib(pid: int, field_name: str) -> int:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    return 0


def _children() -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = Path(f"/proc/{d}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        out.setdefault(ppid, []).append(int(d))
    return out


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (forkserver, workers, resource tracker)."""
    kids = _children()
    out, todo = [], [pid]
    while todo:
        for c in kids.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


@dataclass
class Sampler:
    """Poll the RSS of a process tree; keep the peak of the sum and per-process peaks."""

    pid: int
    peak_total_kib: int = 0
    peak_kib: dict[int, int] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Sampler:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            total = 0
            for p in [self.pid, *descendants(self.pid)]:
                rss = _status_kib(p, "VmRSS")
                total += rss
                hwm = _status_kib(p, "VmHWM")
                self.peak_kib[p] = max(self.peak_kib.get(p, 0), hwm)
            self.peak_total_kib = max(self.peak_total_kib, total)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


def _metric(d: DaemonProcess, name: str, labels: dict[str, str] | None = None) -> float:
    v = d.metric(name, labels)
    return 0.0 if v is None else v


_RUNTIME = """
import sklearn.ensemble  # what the daemon's main process has loaded before any window
import netmon_exporter.daemon
def rss():
    return int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0])
before = rss()
from netmon_exporter import row_pack
row_pack.exercise()
print(rss() - before)
"""


def compiled_runtime_mib(root: Path = ROOT) -> float:
    """What loading the row-packing kernels adds to a process like the daemon's main
    process (once, at the first window of 50 k rows or more; it stays loaded): their
    modules built ahead of time, or numba's JIT and runtime (``NETMON_KERNELS=jit``)."""
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", _RUNTIME],
        env={**os.environ, "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return int(out.stdout.split()[-1]) / 1024


def run_flood(site: Path, capture: Path, root: Path = ROOT, timeout: float = 240.0) -> dict:
    """Run the daemon of checkout ``root`` on ``capture``; return memory and time figures."""
    site.mkdir(parents=True, exist_ok=True)
    (site / "captures").mkdir(exist_ok=True)
    cfg = site / "config.yaml"
    cfg.write_text(CONFIG)
    env = {"PYTHONPATH": str(root)}
    d = DaemonProcess(cfg, env=env).start()
    assert d.proc is not None
    try:
        time.sleep(1.0)  # let the forkserver and the workers settle
        baseline_kib = _status_kib(d.proc.pid, "VmRSS")
        sampler = Sampler(d.proc.pid).start()
        t0 = time.monotonic()
        tmp = site / "captures" / ".flood.tmp"
        shutil.copyfile(capture, tmp)
        os.replace(tmp, site / "captures" / "flood.pcap.gz")
        d.wait_for(
            lambda: _metric(d, "netmon_files_processed_total", {"kind": "pcap"}) >= 1,
            timeout=timeout,
            what="the flood file processed",
        )
        file_seconds = time.monotonic() - t0
        tick_capture(site / "captures" / "tick.pcap", START + 600)
        d.wait_for(
            lambda: (
                _metric(d, "netmon_windows_processed_total") >= 1
                and any((site / "out" / "windows").glob("window-*.json"))
            ),
            timeout=timeout,
            what="the flood window closed and reported",
        )
        total_seconds = time.monotonic() - t0
        time.sleep(5.0)  # the daemon lets go of the window; memory is trimmed after 3 s
        after_kib = _status_kib(d.proc.pid, "VmRSS")
        sampler.stop()
        main_peak = _status_kib(d.proc.pid, "VmHWM")
        # forkserver children: the workers (the forkserver itself and the resource
        # tracker stay small, so the largest peak is a worker's)
        workers = {p: kib for p, kib in sampler.peak_kib.items() if p != d.proc.pid}
        report = json.loads(sorted((site / "out" / "windows").glob("window-*.json"))[0].read_text())
        return {
            "main_baseline_mib": baseline_kib / 1024,
            "main_peak_mib": main_peak / 1024,
            "main_after_window_mib": after_kib / 1024,
            "main_compiled_runtime_mib": compiled_runtime_mib(root),
            "worker_peak_mib": max(workers.values(), default=0) / 1024,
            "total_peak_mib": sampler.peak_total_kib / 1024,
            "file_seconds": file_seconds,
            "to_report_seconds": total_seconds,
            "report": report,
            "evicted": _metric(d, "netmon_flows_evicted_total"),
        }
    finally:
        d.stop()


@pytest.mark.integration
@pytest.mark.slow
def test_daemon_memory_on_a_1_5m_flow_syn_flood(tmp_path: Path) -> None:
    # numba's on-disk cache as after the first run: the fork server loads compiled code
    # instead of compiling it (which alone costs ~200 MB in a fresh checkout)
    import netmon_exporter.ingest.warm_pipeline  # noqa: F401

    capture = tmp_path / "flood.pcap.gz"
    write_syn_flood(capture, FLOWS, seconds=30.0, start=START)
    got = run_flood(tmp_path / "site", capture)
    report = got["report"]
    print(
        {k: (round(v, 1) if isinstance(v, float) else v) for k, v in got.items() if k != "report"}
    )
    # every flow is counted exactly, even though the window keeps a sample for analysis
    assert report["totals"]["flows"] == FLOWS
    assert report["totals"]["packets"] == FLOWS
    assert report["protocols"]["tcp"]["flows"] == FLOWS
    floods = [d for d in report["detections"] if d["detector"] == "syn_flood"]
    assert floods and floods[0]["target"] == "10.0.0.1", report["detections"]
    # one-packet flows are seeds (~190 B open) and the last open flows are handed out in
    # pieces: the worker measured ~185 MB (403 MB before seeds, 3.5 GB before the cap)
    assert got["worker_peak_mib"] < 300, got
    assert got["main_peak_mib"] < 450, got
    assert got["total_peak_mib"] < 900, got
    # the window is let go: what stays is the compiled kernels (loaded for the flood's
    # window: ~4 MiB built ahead of time, ~100 MiB with numba's JIT) and ~45-50 MiB more,
    # measured both ways since the main process no longer imports numba at start (which
    # hid it); the window's 1.5 M flows alone would be hundreds of MiB
    held = got["main_after_window_mib"] - got["main_baseline_mib"]
    assert held < got["main_compiled_runtime_mib"] + 60, got


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", type=Path, default=ROOT, help="checkout whose daemon runs")
    p.add_argument("--flows", type=int, default=FLOWS)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        capture = Path(tmp) / "flood.pcap.gz"
        write_syn_flood(capture, args.flows, seconds=30.0, start=START)
        got = run_flood(Path(tmp) / "site", capture, root=args.root.resolve())
    report = got.pop("report")
    for k, v in got.items():
        print(f"{k:24s} {v:10.1f}")
    print("report totals", report["totals"], "analysis", report["analysis"])
    print("detections", [(d["detector"], d["target"]) for d in report["detections"]])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
