"""Soak: thousands of small captures plus hostile ones, while scrapes and SIGHUPs run (issue 9).

Bounded to a couple of minutes. Asserts what an operator needs from a daemon that
runs for months: resident memory and open descriptors flat after warm-up, every
file accounted for (processed, quarantined or ignored, each exactly once), the
daemon answering scrapes throughout and healthy at the end.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from .daemon_process import DaemonProcess
from .test_ingest_daemon import flows_records, metric, metric_sum, pcap_header

pytestmark = [pytest.mark.integration, pytest.mark.slow]

T0 = 1_790_000_000.0
SOAK_SECONDS = float(os.environ.get("NETMON_SOAK_SECONDS", "75"))

CONFIG = """\
capture:
  directory: captures
  min_age_seconds: 0
processing:
  interval_seconds: 10
  workers: {workers}
  max_retries: 0
  retry_delay_seconds: 1
windows:
  max_windows: 20
output:
  directory: out
state:
  directory: state
"""


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (workers and the fork server), from /proc."""
    parent: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        parent[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        kids = [c for c, pp in parent.items() if pp == p]
        out += kids
        todo += kids
    return out


def rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


class Dropper:
    """Drops good and hostile captures, remembering what each should become."""

    def __init__(self, cap: Path, outside: Path) -> None:
        self.cap, self.outside = cap, outside
        self.n = 0
        self.good = self.junk = self.links = self.special = self.skewed = 0

    def _name(self, stem: bytes) -> Path:
        self.n += 1
        return Path(os.fsdecode(os.fsencode(self.cap) + b"/" + stem + b"-%06d.pcap" % self.n))

    def _write(self, path: Path, data: bytes) -> None:
        tmp = path.with_name("." + path.name + ".tmp")  # hidden while written, then renamed
        tmp.write_bytes(data)
        os.replace(tmp, path)

    def batch(self, size: int) -> None:
        for i in range(size):
            kind = self.n % 50
            if kind == 1:
                self._write(self._name(b"junk"), b"not a capture " * 8)
                self.junk += 1
            elif kind == 2:
                self._name(b"link").symlink_to(self.outside)
                self.links += 1
            elif kind == 3:
                os.mkfifo(self._name(b"fifo"))
                self.special += 1
            elif kind == 4:
                p = self._name(b"ahead")
                self._write(p, pcap_header() + flows_records(T0 + self.n, self.n % 200, 2))
                t = time.time() + 7200
                os.utime(p, (t, t))
                self.skewed += 1
                self.good += 1
            else:
                stem = b"bad-\xff\x1b" if kind == 5 else (b"x" * 200 if kind == 6 else b"ok")
                self._write(
                    self._name(stem), pcap_header() + flows_records(T0 + self.n, self.n % 200, 2)
                )
                self.good += 1
            del i


def test_soak_thousands_of_files_with_scrapes_and_sighups(tmp_path: Path) -> None:
    root = tmp_path
    cap = root / "captures"
    cap.mkdir()
    cfg = root / "config.yaml"
    cfg.write_text(CONFIG.format(workers=2))
    outside = tmp_path / "outside.pcap"
    outside.write_bytes(pcap_header() + flows_records(T0, 1, 2))
    d = DaemonProcess(cfg).start()
    drop = Dropper(cap, outside)
    stop = threading.Event()
    scrape_times: list[float] = []
    scrape_errors: list[str] = []

    def scrape() -> None:
        while not stop.is_set():
            t0 = time.monotonic()
            try:
                for path in ("/metrics", "/health"):
                    with urllib.request.urlopen(d.url + path, timeout=10) as r:
                        r.read()
            except Exception as exc:  # noqa: BLE001 - any failure is the finding
                if "503" not in str(exc):
                    scrape_errors.append(repr(exc))
            scrape_times.append(time.monotonic() - t0)
            stop.wait(0.05)

    def sighup() -> None:
        n = 0
        while not stop.wait(2.0):
            n += 1
            cfg.write_text(CONFIG.format(workers=1 + n % 2))
            d.send(signal.SIGHUP)

    assert d.proc is not None
    pid = d.proc.pid
    try:
        drop.batch(200)  # warm up: workers compiled, windows open, caches full
        d.wait_for(
            lambda: metric(d, "netmon_files_processed_total", {"kind": "pcap"}) >= drop.good - 4,
            timeout=90,
            what="warm-up files processed",
        )
        time.sleep(2)
        base_rss = rss_kb(pid)
        base_fds = fds(pid)
        threads = [threading.Thread(target=f, daemon=True) for f in (scrape, sighup)]
        for t in threads:
            t.start()
        peak_total = 0
        deadline = time.monotonic() + SOAK_SECONDS
        while time.monotonic() < deadline:
            drop.batch(25)
            peak_total = max(peak_total, rss_kb(pid) + sum(map(rss_kb, descendants(pid))))
            time.sleep(0.4)
        stop.set()
        for t in threads:
            t.join(15)
        d.wait_for(
            lambda: (
                metric(d, "netmon_files_processed_total", {"kind": "pcap"}) == drop.good
                and metric_sum(d, "netmon_files_quarantined_total") == drop.junk
                and metric(d, "netmon_files_ignored_total", {"reason": "symlink"}) == drop.links
                and metric(d, "netmon_files_ignored_total", {"reason": "special"}) == drop.special
            ),
            timeout=180,
            what=f"every file accounted for ({drop.n} dropped)",
        )
        assert metric(d, "netmon_files_clock_skew_total") == drop.skewed
        d.wait_for(lambda: metric(d, "netmon_backlog_files") == 0, timeout=30, what="no backlog")
        time.sleep(3)
        end_rss, end_fds = rss_kb(pid), fds(pid)
        status, body = d.get("/health")
    finally:
        stop.set()
        d.stop()
    scrape_times.sort()
    p50 = scrape_times[len(scrape_times) // 2]
    p99 = scrape_times[int(len(scrape_times) * 0.99)]
    print(
        f"\nsoak: {drop.n} files ({drop.good} good, {drop.junk} junk, {drop.links} links, "
        f"{drop.special} FIFOs, {drop.skewed} clock-skewed) in {SOAK_SECONDS:.0f}s; "
        f"main RSS {base_rss / 1024:.0f} -> {end_rss / 1024:.0f} MB, fds {base_fds} -> {end_fds}, "
        f"peak RSS daemon+workers {peak_total / 1024:.0f} MB; "
        f"{len(scrape_times)} scrape rounds p50 {p50 * 1000:.0f} ms p99 {p99 * 1000:.0f} ms"
    )
    assert drop.n > 1500
    assert not scrape_errors, scrape_errors[:5]
    assert p99 < 2.0, f"scrape p99 {p99:.2f}s"
    assert end_fds - base_fds <= 8, (base_fds, end_fds)
    assert end_rss - base_rss < 80 * 1024, (base_rss, end_rss)
    assert peak_total < 1024 * 1024
    assert status == 200, body
