"""End-to-end benchmark of the daemon: rotated captures in, flows, windows, metrics, CSVs out.

The real daemon (``python -m netmon_exporter --config.file=... --web.listen-address=
127.0.0.1:0``, default settings but ``capture.min_age_seconds: 0``) is fed a capture cut
into rotated files (``bench/split.py``: ``--file-seconds`` slots, ``--series`` capture
series split by a symmetric hash of the address pair, so every flow stays in one series).
Files are dropped as ``tcpdump -G`` drops them (modified at their last packet's time): a
hidden name, then a rename into
place. Each run starts a fresh daemon (fresh ledger, outputs and windows):

* ``burst``: every file renamed in at once; the daemon works as fast as it can.
  Nothing scrapes it but the benchmark's own checks (one scrape a second until the
  flow CSVs are all there, then every 50 ms until the metrics account for them).
* ``burst+scrapes``: the same, after an idle phase, with 4 threads scraping
  ``/metrics`` every 100 ms throughout: scrape latency at idle and under full load.
  Between the two, one scraper every 2 s for 8 visits, as Prometheus scrapes (every
  visit past the render's 1-s max_age): what a Prometheus scrape waits at idle.
* ``rate``: files renamed in at ``--rate`` packets/s (a file is dropped when its last
  packet would have been captured at that rate): sustained load and file lag.

A run is done when ``netmon_files_processed_total`` and ``netmon_packets_total`` account
for every file and packet and every file's flow CSV is written. Then one packet far
ahead (a file of its own) moves the watermark so the windows still open close; the run
ends when their reports are written (``+win s``). Windows closed by the watermark during
the run are analysed and reported inside the measured time.

Printed per run: packets/s and flows/s end to end, file lag p50/p99 (rename to flow CSV
on disk; and ``netmon_file_lag_seconds``, ready to done, from its buckets), CPU seconds
and peak RSS (``VmHWM``) of every process of the daemon (main, fork server, workers),
the peak of their PSS added up (what they use together: RSS added up counts the pages
they share, numpy's and numba's code and the fork server's, once per process), and, side by side, the one-shot ``netmon-exporter flows`` on the whole capture (a whole
process, CSV written, timed as bench/flows.py times it, before and after the daemon runs,
best of the two), and that command confined to one core (``taskset -c 0``, where there
is ``taskset``): since 4f07973 the one-shot reads, builds flows and writes CSV on three
threads, so on this 2-core machine it uses both cores too, while the daemon's 1.8x target
was set against a one-shot that used one. Also: the window reports' totals (packets, flows, late flows), the flows
still carried in the ledger at the end, and an estimate of the main process's memory per
flow row held in open windows (its RSS with the last two windows open, minus its RSS once
they are reported and let go). With ``--profile``, one more burst runs with ``py-spy``
sampling the main process, and its time is split by stage. ``--root`` measures another
checkout (e.g. a ``git archive HEAD`` export while others edit this working tree).

    python bench/daemon.py                          # 1M synthetic packets, 1 and 2 workers
    python bench/daemon.py --scan                   # flow-heavy: one SYN + RST per flow
    python bench/daemon.py --workers 2 --rate 300000 --profile
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUT = HERE / "out"
sys.path.insert(0, str(HERE))

import flows as oneshot  # noqa: E402  (bench/flows.py: run_ours, measure, OUR_PYTHON)
import split as splitter  # noqa: E402

sys.path.insert(1, str(ROOT))  # after bench/, for tests/flood_capture.py
from tests.flood_capture import tick_capture  # noqa: E402

OUR_PYTHON = oneshot.OUR_PYTHON if oneshot.OUR_PYTHON.exists() else Path(sys.executable)
CODE: dict[str, Any] = {"root": ROOT, "carry": True}  # --root, --no-carry
CLK_TCK = os.sysconf("SC_CLK_TCK")
WINDOW_SECONDS = 60  # the daemon's default windows.length_seconds
ROW_CAP = 250_000  # flow_sample.ROW_CAP: rows a window keeps for analysis
_LISTEN = re.compile(r'msg="Listening on".*?address=(\S+)')

CONFIG = """\
capture:
  directory: captures
  min_age_seconds: 0
processing:
  workers: {workers}
  interval_seconds: 10
output:
  directory: out
  max_flow_csv_files: 0
state:
  directory: state
flows:
  carry_across_files: {carry}
"""


# ----------------------------------------------------------------------------- /proc


def _ppid_map() -> dict[int, int]:
    out: dict[int, int] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        out[int(d)] = int(stat.rsplit(")", 1)[1].split()[1])
    return out


def descendants(pid: int) -> dict[int, int]:
    """Every process below ``pid``: {pid: parent pid}."""
    parent = _ppid_map()
    kids: dict[int, list[int]] = {}
    for p, pp in parent.items():
        kids.setdefault(pp, []).append(p)
    out: dict[int, int] = {}
    todo = [pid]
    while todo:
        p = todo.pop()
        for c in kids.get(p, []):
            out[c] = p
            todo.append(c)
    return out


def cpu_seconds(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def _proc_kib(pid: int, file: str, name: str) -> int:
    """The kiB figure ``name`` of ``/proc/PID/FILE`` (0 when the process is gone)."""
    try:
        with open(f"/proc/{pid}/{file}") as f:
            for line in f:
                if line.startswith(name + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def status_kib(pid: int, name: str) -> int:
    return _proc_kib(pid, "status", name)


def pss_kib(pid: int) -> int:
    """A process's proportional set size: its private pages and its share of pages it
    shares (libraries, the fork server's copy-on-write pages), so that the PSS of a group
    of processes adds up to the memory they use together, unlike their RSS."""
    return _proc_kib(pid, "smaps_rollup", "Pss")


def cmdline(pid: int) -> str:
    try:
        return (
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
    except OSError:
        return ""


@dataclass
class Proc:
    pid: int
    role: str
    cpu0: float = 0.0  # CPU seconds when the measured phase began (or when first seen)
    cpu: float = 0.0  # last CPU seconds read
    hwm_kib: int = 0  # VmHWM (kernel's peak RSS)
    peak_rss_kib: int = 0  # largest VmRSS sampled
    rss_kib: int = 0

    @property
    def cpu_used(self) -> float:
        return max(0.0, self.cpu - self.cpu0)


class Poller:
    """A daemon thread calling :meth:`poll` every ``every`` seconds, from start to stop."""

    def __init__(self, name: str, every: float) -> None:
        self._every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def poll(self) -> None:
        raise NotImplementedError

    def start(self) -> Self:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            self.poll()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()


class Sampler(Poller):
    """Poll CPU and memory of the daemon and its descendants every 100 ms."""

    def __init__(self, pid: int) -> None:
        super().__init__("sampler", 0.1)
        self.pid = pid
        self.procs: dict[int, Proc] = {}
        self._tree_at = 0.0
        self._lock = threading.Lock()
        self._in_phase = False  # once the measured phase began, new processes count from 0
        self._polls = 0
        self.pss_peak_kib = 0  # largest sum of every process's PSS (sampled every 0.5 s)
        self.rss_at_pss_peak_kib = 0  # the sum of their RSS at that moment
        self.refresh(force=True)

    def _role(self, pid: int, parent: int, tree: dict[int, int]) -> str:
        if pid == self.pid:
            return "main"
        cmd = cmdline(pid)
        if "resource_tracker" in cmd:
            return "resource tracker"
        if "forkserver" in cmd and parent == self.pid:
            return "fork server"
        if parent != self.pid and tree.get(parent) == self.pid:
            return "worker"
        return "other"

    def refresh(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._tree_at < 0.5:
            return
        self._tree_at = now
        tree = descendants(self.pid)
        with self._lock:
            for pid in [self.pid, *tree]:
                if pid not in self.procs:
                    role = self._role(pid, tree.get(pid, 0), tree)
                    c = cpu_seconds(pid)
                    if c is None:
                        continue
                    # a process born during the phase is charged from its birth
                    self.procs[pid] = Proc(pid, role, cpu0=0.0 if self._in_phase else c, cpu=c)

    def sample(self) -> None:
        self.refresh()
        with self._lock:
            for p in self.procs.values():
                c = cpu_seconds(p.pid)
                if c is None:
                    continue  # exited: keep the last reading
                p.cpu = c
                p.rss_kib = status_kib(p.pid, "VmRSS")
                p.hwm_kib = max(p.hwm_kib, status_kib(p.pid, "VmHWM"))
                p.peak_rss_kib = max(p.peak_rss_kib, p.rss_kib)
            self._polls += 1
            if self._in_phase and self._polls % 5 == 0:  # reading PSS walks page tables
                pss = sum(pss_kib(p.pid) for p in self.procs.values())
                if pss > self.pss_peak_kib:
                    self.pss_peak_kib = pss
                    self.rss_at_pss_peak_kib = sum(p.rss_kib for p in self.procs.values())

    def begin_phase(self) -> None:
        self.sample()
        with self._lock:
            for p in self.procs.values():
                p.cpu0 = p.cpu
            self._in_phase = True

    def poll(self) -> None:
        self.sample()

    def stop(self) -> None:
        super().stop()
        self.sample()

    def rows(self) -> list[Proc]:
        order = {"main": 0, "fork server": 1, "worker": 2, "resource tracker": 3, "other": 4}
        with self._lock:
            return sorted(self.procs.values(), key=lambda p: (order[p.role], p.pid))


# ----------------------------------------------------------------------------- HTTP


def http_get(address: str, path: str, timeout: float = 30.0) -> tuple[int, bytes]:
    host, port = address.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")


def parse_metrics(text: str, prefix: str = "netmon_") -> dict[str, list[tuple[str, float]]]:
    """{name: [(labels text, value)]} for samples whose name starts with ``prefix``."""
    out: dict[str, list[tuple[str, float]]] = {}
    for line in text.splitlines():
        if not line.startswith(prefix):
            continue
        m = _SAMPLE.match(line)
        if m:
            out.setdefault(m.group(1), []).append((m.group(2) or "", float(m.group(3))))
    return out


def total(samples: dict[str, list[tuple[str, float]]], name: str, label: str = "") -> float:
    return sum(v for labels, v in samples.get(name, []) if label in labels)


def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """Prometheus's histogram_quantile over cumulative (le, count) buckets."""
    buckets = sorted(buckets)
    if not buckets or buckets[-1][1] <= 0:
        return math.nan
    rank = q * buckets[-1][1]
    prev_le, prev_c = 0.0, 0.0
    for le, c in buckets:
        if c >= rank:
            if math.isinf(le):
                return prev_le
            return prev_le + (le - prev_le) * (rank - prev_c) / max(c - prev_c, 1e-12)
        prev_le, prev_c = le, c
    return buckets[-1][0]


def lag_buckets(samples: dict[str, list[tuple[str, float]]]) -> list[tuple[float, float]]:
    out = []
    for labels, v in samples.get("netmon_file_lag_seconds_bucket", []):
        m = re.search(r'le="([^"]+)"', labels)
        if m:
            out.append((float(m.group(1)), v))
    return out


SCHEDULED_PERIOD, SCHEDULED_VISITS = 2.0, 8  # one scraper, as Prometheus (shortened)


class Scrapers:
    """``threads`` clients scraping ``/metrics`` every ``period`` seconds (keep-alive)."""

    def __init__(self, address: str, threads: int = 4, period: float = 0.1) -> None:
        self.address, self.period = address, period
        self.latencies: list[float] = []
        self.errors = 0
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, name=f"scraper-{i}", daemon=True)
            for i in range(threads)
        ]

    def start(self) -> Scrapers:
        for t in self._threads:
            t.start()
        return self

    def _run(self) -> None:
        host, port = self.address.rsplit(":", 1)
        conn: http.client.HTTPConnection | None = None
        next_at = time.monotonic()
        while not self._stop.is_set():
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(host, int(port), timeout=30)
                t0 = time.perf_counter()
                conn.request("GET", "/metrics")
                r = conn.getresponse()
                r.read()
                dt = time.perf_counter() - t0
                if r.status == 200:
                    self.latencies.append(dt)
                else:
                    self.errors += 1
            except (OSError, http.client.HTTPException):
                self.errors += 1
                if conn is not None:
                    conn.close()
                conn = None
            next_at += self.period
            self._stop.wait(max(0.0, next_at - time.monotonic()))
        if conn is not None:
            conn.close()

    def stop(self) -> dict[str, float]:
        self._stop.set()
        for t in self._threads:
            t.join()
        return scrape_stats(self.latencies, self.errors)


def pct(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    s = sorted(values)
    k = (len(s) - 1) * q
    lo, hi = math.floor(k), math.ceil(k)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def scrape_stats(lat: list[float], errors: int) -> dict[str, float]:
    return {
        "n": len(lat),
        "errors": errors,
        "p50_ms": pct(lat, 0.5) * 1e3,
        "p99_ms": pct(lat, 0.99) * 1e3,
        "max_ms": max(lat) * 1e3 if lat else math.nan,
    }


# ----------------------------------------------------------------------------- daemon


class Daemon:
    """The real daemon in its own site directory; stderr kept for when something fails."""

    def __init__(self, site: Path) -> None:
        self.site = site
        self.lines: deque[str] = deque(maxlen=400)
        self.proc: subprocess.Popen[str] | None = None
        self.address = ""

    def start(self, timeout: float = 90.0) -> Daemon:
        self.proc = subprocess.Popen(
            [
                str(OUR_PYTHON),
                "-m",
                "netmon_exporter",
                f"--config.file={self.site / 'config.yaml'}",
                "--web.listen-address=127.0.0.1:0",
                "--log.format=logfmt",
            ],
            cwd=self.site,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(CODE["root"])},
        )
        threading.Thread(target=self._read, daemon=True).start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                m = _LISTEN.search(line)
                if m and not self.address:
                    self.address = m.group(1)
            if self.address:
                with contextlib.suppress(OSError):
                    if http_get(self.address, "/-/ready", 5)[0] == 200:
                        return self
            self.check()
            time.sleep(0.05)
        raise RuntimeError("the daemon did not become ready:\n" + self.log_tail())

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    def log_tail(self, n: int = 40) -> str:
        return "\n".join(list(self.lines)[-n:])

    def check(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"the daemon exited ({self.proc.returncode}):\n" + self.log_tail())

    def metrics(self) -> dict[str, list[tuple[str, float]]]:
        status, body = http_get(self.address, "/metrics")
        if status != 200:
            raise RuntimeError(f"/metrics answered {status}")
        return parse_metrics(body.decode())

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def warm_workers(d: Daemon, workers: int, timeout: float = 300.0) -> None:
    """Wait until the fork server and ``workers`` workers exist and stopped warming up."""
    assert d.proc is not None
    deadline = time.monotonic() + timeout
    last, still_since = -1.0, time.monotonic()
    while time.monotonic() < deadline:
        d.check()
        tree = descendants(d.proc.pid)
        procs = [d.proc.pid, *tree]
        n_workers = sum(1 for p, pp in tree.items() if pp != d.proc.pid)
        used = sum(cpu_seconds(p) or 0.0 for p in procs)
        if used != last:
            last, still_since = used, time.monotonic()
        if n_workers >= workers and time.monotonic() - still_since >= 0.6:
            return
        time.sleep(0.1)


class CsvWatcher(Poller):
    """Note when each flow CSV appears in ``out/flows`` (polled every 20 ms)."""

    def __init__(self, directory: Path) -> None:
        super().__init__("csv-watch", 0.02)
        self.directory = directory
        self.seen: dict[str, float] = {}

    def poll(self) -> None:
        try:
            names = os.listdir(self.directory)
        except OSError:
            return
        now = time.monotonic()
        for n in names:
            if n.endswith("_Flow.csv") and not n.startswith(".") and n not in self.seen:
                self.seen[n] = now

    def count(self) -> int:
        return sum(1 for n in list(self.seen) if not n.endswith("_end_Flow.csv"))


@dataclass
class RunResult:
    mode: str
    workers: int
    packets: int
    flows: int
    seconds: float  # rename of the first file to the last file accounted for
    window_seconds: float  # the tick processed to the last window report written
    lag_p50: float
    lag_p99: float
    hist_lag_p50: float
    hist_lag_p99: float
    procs: list[Proc]
    windows: int
    window_packets: int
    window_flows: int
    window_late: int
    carried: int  # flows the one-shot has that the daemon still holds (open at a series' end)
    scrapes_idle: dict[str, float] | None = None
    scrapes_scheduled: dict[str, float] | None = None  # one scraper on a schedule, idle
    scrapes_load: dict[str, float] | None = None
    idle_main_cpu_per_scrape_ms: float = math.nan
    held_rows: int = 0
    held_windows: int = 0
    main_rss_held_kib: int = 0
    main_rss_released_kib: int = 0
    profile: dict[str, dict[str, float]] = field(default_factory=dict)
    profile_file: str = ""
    files: int = 0
    feed_seconds: float = 0.0  # first to last file renamed in
    carry_bytes: int = 0  # carried-flow state at the end (every series)
    carry_series: int = 0
    pss_peak_kib: int = 0  # every process of the daemon together (see Sampler)
    rss_at_pss_peak_kib: int = 0

    @property
    def pps(self) -> float:
        return self.packets / self.seconds if self.seconds > 0 else 0.0

    @property
    def fps(self) -> float:
        return self.flows / self.seconds if self.seconds > 0 else 0.0

    def cpu(self, role: str) -> float:
        return sum(p.cpu_used for p in self.procs if p.role == role)

    def peak_mb(self, role: str) -> float:
        return max((p.hwm_kib for p in self.procs if p.role == role), default=0) / 1024

    @property
    def bytes_per_held_row(self) -> float:
        if self.held_rows <= 0:
            return math.nan
        return (self.main_rss_held_kib - self.main_rss_released_kib) * 1024 / self.held_rows


@dataclass
class Capture:
    path: Path
    pieces: list[splitter.Piece]
    split_dir: Path
    packets: int
    file_seconds: float
    oneshot: oneshot.Run | None = None
    oneshot_one_core: oneshot.Run | None = None  # the same on one core (taskset -c 0)

    @property
    def first_ts(self) -> float:
        return min(p.first_ts for p in self.pieces)

    @property
    def last_ts(self) -> float:
        return max(p.last_ts for p in self.pieces)

    def prefix(self, packets: int) -> Capture:
        """The first files (in drop order) holding at most ``packets`` packets (at least one)."""
        keep, n = [], 0
        for p in self.pieces:
            if keep and n + p.packets > packets:
                break
            keep.append(p)
            n += p.packets
        return Capture(self.path, keep, self.split_dir, n, self.file_seconds)

    def windows(self) -> int:
        """Windows holding packets (every one of them has flows that start in it here)."""
        return int(self.last_ts // WINDOW_SECONDS - self.first_ts // WINDOW_SECONDS) + 1


def _site(name: str) -> Path:
    site = OUT / "daemon-sites" / name
    if site.exists():
        shutil.rmtree(site)
    (site / "captures").mkdir(parents=True)
    return site


def run_daemon(
    cap: Capture,
    workers: int,
    mode: str,
    rate: float = 0.0,
    scrape: bool = False,
    idle_seconds: float = 5.0,
    profile: bool = False,
    timeout: float = 600.0,
) -> RunResult:
    name = f"{mode.replace('+', '-')}-w{workers}"
    site = _site(name)
    (site / "config.yaml").write_text(
        CONFIG.format(workers=workers, carry="true" if CODE["carry"] else "false")
    )
    captures = site / "captures"
    hidden: list[tuple[Path, Path, splitter.Piece]] = []
    for p in cap.pieces:  # hard links: no copying, the same page-cached bytes every run
        tmp = captures / f".{p.name}.part"
        os.link(cap.split_dir / p.name, tmp)
        # modified when its last packet was written, as a capture tool leaves its files
        # (the daemon orders a series' files, and the series among themselves, by mtime)
        os.utime(tmp, (p.last_ts, p.last_ts))
        hidden.append((tmp, captures / p.name, p))
    n_files = len(cap.pieces)
    d = Daemon(site).start()
    assert d.proc is not None
    try:
        warm_workers(d, workers)
        sampler = Sampler(d.proc.pid)
        idle_stats = scheduled = None
        per_scrape = math.nan
        if scrape:
            sampler.sample()
            main0 = cpu_seconds(d.proc.pid) or 0.0
            s = Scrapers(d.address).start()
            time.sleep(idle_seconds)
            idle_stats = s.stop()
            used = (cpu_seconds(d.proc.pid) or 0.0) - main0
            per_scrape = used / max(1, idle_stats["n"]) * 1e3
            # as Prometheus scrapes (its interval, shortened): each visit past the render's
            # max_age, so without a render made ahead each one waits for a render
            scheduled_stats = Scrapers(d.address, threads=1, period=SCHEDULED_PERIOD).start()
            time.sleep(SCHEDULED_PERIOD * SCHEDULED_VISITS - SCHEDULED_PERIOD / 2)
            scheduled = scheduled_stats.stop()
        csvs = CsvWatcher(site / "out" / "flows").start()
        sampler.begin_phase()
        sampler.start()
        scrapers = Scrapers(d.address).start() if scrape else None
        spies = (
            [
                start_py_spy(d.proc.pid, OUT / f"daemon-profile-{name}-gil.txt", gil=True),
                start_py_spy(d.proc.pid, OUT / f"daemon-profile-{name}-busy.txt", gil=False),
            ]
            if profile
            else []
        )
        if spies:
            time.sleep(1.0)  # py-spy attached
        drops: dict[str, float] = {}
        feeder = threading.Thread(
            target=_feed, args=(hidden, rate, drops), name="feeder", daemon=True
        )
        t0 = time.monotonic()
        feeder.start()
        deadline = t0 + timeout
        # until every CSV is there, look at the metrics once a second only
        next_check = 0.0
        while csvs.count() < n_files:
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out: {csvs.count()}/{n_files} flow CSVs\n{d.log_tail()}")
            if time.monotonic() >= next_check:
                d.check()
                m = d.metrics()
                bad = total(m, "netmon_files_failed_total") + total(
                    m, "netmon_files_quarantined_total"
                )
                if bad:
                    raise RuntimeError(f"files failed or quarantined\n{d.log_tail()}")
                next_check = time.monotonic() + 1.0
            time.sleep(0.02)
        while True:
            t_ask = time.monotonic()
            m = d.metrics()
            if (
                total(m, "netmon_files_processed_total", 'kind="pcap"') >= n_files
                and total(m, "netmon_packets_total") >= cap.packets
            ):
                break
            if t_ask > deadline:
                raise RuntimeError(f"timed out waiting for the metrics\n{d.log_tail()}")
            time.sleep(0.05)
        t_done = t_ask
        feeder.join()
        if scrapers is not None:
            load_stats = scrapers.stop()
        profile_stages: dict[str, dict[str, float]] = {}
        for kind, spy in zip(("gil", "busy"), spies, strict=False):
            if spy is not None:
                profile_stages[kind] = stop_py_spy(spy)
        sampler.stop()
        procs = sampler.rows()
        flows_done = int(total(m, "netmon_flows_total"))
        lag_hist = lag_buckets(m)
        csvs.stop()
        lags = []
        for csv_name, seen in csvs.seen.items():
            piece = csv_name.split("_", 1)[0]
            if piece in drops and not csv_name.endswith("_end_Flow.csv"):
                lags.append(seen - drops[piece])

        carry_bytes, carry_series = ledger_carry(site / "state")
        # the windows still open: what the main process holds for them, then let them go
        time.sleep(1.0)
        reports = site / "out" / "windows"
        before = set(os.listdir(reports)) if reports.exists() else set()
        rss_held = status_kib(d.proc.pid, "VmRSS")
        tick_capture(captures / "tick.pcap", cap.last_ts + 2 * WINDOW_SECONDS + 1)
        while total(d.metrics(), "netmon_files_processed_total", 'kind="pcap"') < n_files + 1:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the tick file was not processed\n{d.log_tail()}")
            time.sleep(0.05)
        t_tick = time.monotonic()
        expected = cap.windows()
        t_win = t_tick
        while True:
            got = (
                sorted(  # not the writer's hidden .tmp-*.json files
                    n
                    for n in os.listdir(reports)
                    if n.startswith("window-") and n.endswith(".json")
                )
                if reports.exists()
                else []
            )
            if len(got) >= expected:
                t_win = time.monotonic()
                break
            if time.monotonic() > min(deadline, t_tick + 60):
                print(f"  note: {len(got)} window reports, expected {expected}", flush=True)
                break
            time.sleep(0.02)
        time.sleep(4.0)  # the daemon trims its heap 3 s after a window report
        rss_released = status_kib(d.proc.pid, "VmRSS")
        win_packets = win_flows = win_late = held_rows = held_windows = 0
        for n in got:
            try:
                rep = json.loads((reports / n).read_text())
            except (OSError, ValueError):
                continue
            win_packets += int(rep["totals"]["packets"])
            win_flows += int(rep["totals"]["flows"])
            win_late += int(rep["totals"].get("late_flows", 0))
            if n not in before:
                held_windows += 1
                held_rows += int(rep["analysis"]["flows_analysed"])
        one = cap.oneshot.flows if cap.oneshot is not None else -1
        return RunResult(
            mode=mode,
            workers=workers,
            packets=cap.packets,
            flows=flows_done,
            seconds=t_done - t0,
            window_seconds=t_win - t_tick,
            lag_p50=pct(lags, 0.5),
            lag_p99=pct(lags, 0.99),
            hist_lag_p50=histogram_quantile(0.5, lag_hist),
            hist_lag_p99=histogram_quantile(0.99, lag_hist),
            procs=procs,
            pss_peak_kib=sampler.pss_peak_kib,
            rss_at_pss_peak_kib=sampler.rss_at_pss_peak_kib,
            windows=len(got),
            window_packets=win_packets,
            window_flows=win_flows,
            window_late=win_late,
            carried=max(0, one - flows_done) if one >= 0 else -1,
            scrapes_idle=idle_stats,
            scrapes_scheduled=scheduled,
            scrapes_load=load_stats if scrape else None,
            idle_main_cpu_per_scrape_ms=per_scrape,
            held_rows=held_rows,
            held_windows=held_windows,
            main_rss_held_kib=rss_held,
            main_rss_released_kib=rss_released,
            profile=profile_stages,
            profile_file=str(OUT / f"daemon-profile-{name}-{{gil,busy}}.txt") if profile else "",
            files=n_files,
            feed_seconds=max(drops.values()) - t0 if drops else 0.0,
            carry_bytes=carry_bytes,
            carry_series=carry_series,
        )
    finally:
        d.stop()


def ledger_carry(state: Path) -> tuple[int, int]:
    """(bytes, series) of the flows carried to the next file of each series.

    The ledger holds a reference per series (or, in older code, the state itself); the
    bytes counted are the carried state's, wherever it is kept.
    """
    import sqlite3

    try:
        db = sqlite3.connect(f"file:{state / 'ledger.sqlite3'}?mode=ro", uri=True, timeout=5)
        try:
            blobs = [bytes(b) for (b,) in db.execute("SELECT blob FROM carry")]
        finally:
            db.close()
    except sqlite3.Error:
        return 0, 0
    total = 0
    for blob in blobs:
        if blob.startswith(b"netmon-carry-ref"):  # ingest/carry_store.py: a carry file
            total += int(json.loads(blob.split(b"\n", 1)[1])["size"])
        else:
            total += len(blob)
    return total, len(blobs)


def _feed(hidden: list[tuple[Path, Path, splitter.Piece]], rate: float, drops: dict) -> None:
    """Rename the files into place: all at once, or each when its packets are 'captured'."""
    t0 = time.monotonic()
    sent = 0
    for tmp, final, piece in hidden:
        sent += piece.packets
        if rate > 0:
            wait = t0 + sent / rate - time.monotonic()
            if wait > 0:
                time.sleep(wait)
        os.replace(tmp, final)
        drops[piece.name] = time.monotonic()


# ----------------------------------------------------------------------------- profile

# Stages of the main process, by the deepest frame of ours (or of a library) on the stack.
# Each rule: (stage, file part, function or "" for any).
STAGE_RULES: list[tuple[str, str, str]] = [
    ("HTTP and /metrics", "tornado/", ""),
    ("HTTP and /metrics", "netmon_exporter/http_server.py", ""),
    ("HTTP and /metrics", "prometheus_client/", ""),
    ("HTTP and /metrics", "netmon_exporter/process_metrics.py", ""),
    ("ingest: scheduling, age gate, watcher", "netmon_exporter/ingest/", ""),
    ("ingest: scheduling, age gate, watcher", "watchdog/", ""),
    ("ledger (sqlite: marks, carried flows)", "netmon_exporter/ingest/ledger", ""),
    ("ledger (sqlite: marks, carried flows)", "netmon_exporter/ingest/executor.py", ""),
    ("ledger (sqlite: marks, carried flows)", "netmon_exporter/ingest/disposal.py", ""),
    ("sending tasks (pickle, pipe)", "netmon_exporter/ingest/workers.py", "submit"),
    ("receiving results (pipe, unpickle, join)", "netmon_exporter/ingest/workers.py", "wait"),
    ("receiving results (pipe, unpickle, join)", "netmon_exporter/ingest/workers.py", "_receive"),
    ("receiving results (pipe, unpickle, join)", "netmon_exporter/ingest/workers.py", "_joined"),
    ("receiving results (pipe, unpickle, join)", "netmon_exporter/ingest/mailbox.py", ""),
    ("main loop: events", "netmon_exporter/daemon.py", "run"),
    ("main loop: events", "netmon_exporter/runtime/events.py", ""),
    ("recording metrics", "netmon_exporter/recording.py", ""),
    ("health and housekeeping", "netmon_exporter/daemon.py", "_housekeeping"),
    ("health and housekeeping", "netmon_exporter/runtime/health_monitor.py", ""),
    ("windows (assign, sample, tally)", "netmon_exporter/runtime/windows.py", "add_flows"),
    ("windows (assign, sample, tally)", "netmon_exporter/window.py", ""),
    ("windows (assign, sample, tally)", "netmon_exporter/flow_sample.py", ""),
    ("analysis (detectors, models)", "netmon_exporter/runtime/windows.py", "_analyse"),
    ("analysis (detectors, models)", "netmon_exporter/analysis.py", ""),
    ("analysis (detectors, models)", "netmon_exporter/detectors/", ""),
    ("analysis (detectors, models)", "netmon_exporter/models.py", ""),
    ("incidents and alerting", "netmon_exporter/runtime/alerts.py", ""),
    ("incidents and alerting", "netmon_exporter/incidents.py", ""),
    ("incidents and alerting", "netmon_exporter/suppression.py", ""),
    ("incidents and alerting", "netmon_exporter/alerting.py", ""),
    ("window reports (JSON, summary)", "netmon_exporter/runtime/reports.py", ""),
    ("window reports (JSON, summary)", "netmon_exporter/window.py", "write_report"),
    ("window reports (JSON, summary)", "netmon_exporter/window.py", "report_dict"),
    ("window reports (JSON, summary)", "netmon_exporter/summarise.py", ""),
]
# Where a rule above matches inside a more specific one, the more specific wins:
# these pairs say which stage keeps a frame found below it.
_KEEP_BELOW = {
    "receiving results (pipe, unpickle, join)",
    "sending tasks (pickle, pipe)",
    "ledger (sqlite: marks, carried flows)",
    "window reports (JSON, summary)",
    "HTTP and /metrics",
}
PROFILE_RATE = 200  # samples per second


def _frame_stage(frame: str) -> str | None:
    # py-spy raw frames: "function (path/to/file.py:line)"
    m = re.match(r"(.*?) \((.*?)(?::\d+)?\)$", frame)
    func, path = (m.group(1), m.group(2)) if m else (frame, "")
    func = func.rsplit(".", 1)[-1]  # py-spy names methods Class.method
    found = None
    for stage, part, fn in STAGE_RULES:
        if part in path and (not fn or fn == func):
            found = stage  # later rules are more specific
    return found


def stage_of(stack: list[str]) -> str:
    """The stage of one sampled stack (root first)."""
    stage = None
    for frame in stack:
        s = _frame_stage(frame)
        if s is None:
            continue
        if stage in _KEEP_BELOW and s not in _KEEP_BELOW:
            continue
        stage = s
    return stage or "other (interpreter, threads, GC)"


# A sampled stack whose innermost frame is one of these is a thread waiting, not working.
_WAITS = {
    ("threading.py", "wait"),
    ("threading.py", "_wait_for_tstate_lock"),
    ("threading.py", "join"),
    ("selectors.py", "select"),
    ("queue.py", "get"),
    ("multiprocessing/connection.py", "wait"),
    ("watchdog/observers/inotify_c.py", "_check_inotify_fd"),
    ("watchdog/utils/delayed_queue.py", "get"),
    ("concurrent/futures/thread.py", "_worker"),  # an idle pool thread (queue get in C)
}


def _is_wait(leaf: str) -> bool:
    m = re.match(r"(.*?) \((.*?)(?::\d+)?\)$", leaf)
    if not m:
        return False
    func, path = m.group(1).rsplit(".", 1)[-1], m.group(2)
    return func in ("sleep", "poll") or any(path.endswith(f) and func == fn for f, fn in _WAITS)


def start_py_spy(pid: int, out: Path, gil: bool) -> subprocess.Popen[bytes] | None:
    exe = shutil.which("py-spy", path=str(OUR_PYTHON.parent)) or shutil.which("py-spy")
    if exe is None:
        print("  py-spy not found (pip install py-spy): no profile", flush=True)
        return None
    cmd = [exe, "record", "--pid", str(pid), "--rate", str(PROFILE_RATE), "--format", "raw"]
    cmd += ["--nonblocking", "--output", str(out), *(["--gil"] if gil else ["--idle"])]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    proc.out_path = out  # type: ignore[attr-defined]
    return proc


def stop_py_spy(proc: subprocess.Popen[bytes]) -> dict[str, float]:
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    out: Path = proc.out_path  # type: ignore[attr-defined]
    if not out.exists():
        print(f"  py-spy wrote nothing: {err.decode(errors='replace')[-300:]}", flush=True)
        return {}
    return summarise_profile(out)


def summarise_profile(path: Path) -> dict[str, float]:
    """{stage: seconds} from py-spy's raw (collapsed) output; waiting stacks left out."""
    stages: dict[str, float] = {}
    for line in path.read_text(errors="replace").splitlines():
        stack_text, _, count = line.rpartition(" ")
        if not stack_text or not count.isdigit():
            continue
        stack = stack_text.split(";")
        if _is_wait(stack[-1]):
            continue
        stage = stage_of(stack)
        stages[stage] = stages.get(stage, 0.0) + int(count) / PROFILE_RATE
    return stages


# ----------------------------------------------------------------------------- main


def run_oneshot(path: Path, out: Path, one_core: bool = False) -> oneshot.Run:
    """``netmon-exporter flows FILE -o OUT.csv`` of the checkout under test, as bench/flows.py
    times it (a whole process; wall time, GNU time's peak RSS); with ``one_core``, confined
    to the first CPU (``taskset -c 0``): its three threads then share one core."""
    secs, rss, text = oneshot.measure(
        [
            *(["taskset", "-c", "0"] if one_core else []),
            str(OUR_PYTHON),
            "-m",
            "netmon_exporter",
            "flows",
            str(path),
            "-o",
            str(out),
            "--no-progress",
        ],
        cwd=CODE["root"],  # python -m puts the working directory first on sys.path
    )
    m = re.match(r"(\d+) packets, (\d+) flows in ([0-9.]+) s \(([0-9,]+) packets/s\)", text)
    if not m:
        raise RuntimeError(f"unexpected summary: {text!r}")
    return oneshot.Run(
        "netmon flows",
        int(m.group(1)),
        secs,
        rss,
        int(m.group(2)),
        f"CLI says {m.group(4)} packets/s",
    )


def revision(root: Path) -> str:
    """The checkout's commit, and whether its tracked files differ from it."""
    try:
        rev = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        return rev + (" + uncommitted changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        stamp = root / "REVISION"
        return stamp.read_text().strip() if stamp.exists() else "unknown revision"


def prepare(a: argparse.Namespace) -> Capture:
    OUT.mkdir(parents=True, exist_ok=True)
    if a.file:
        path = a.file
    else:
        path = OUT / f"synth-{a.packets}{'-scan' if a.scan else ''}.pcap"
        if not path.exists():
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            subprocess.run(
                [
                    str(OUR_PYTHON),
                    str(HERE / "synth.py"),
                    str(tmp),
                    "--packets",
                    str(a.packets),
                    *(["--scan"] if a.scan else []),
                ],
                check=True,
                stdout=subprocess.DEVNULL,
            )
            os.replace(tmp, path)
    split_dir = OUT / f"daemon-split-{path.stem}-{a.file_seconds:g}s-{a.series}series"
    pieces, packets = splitter.split_cached(path, split_dir, a.file_seconds, a.series)
    return Capture(path, pieces, split_dir, packets, a.file_seconds)


def fmt(v: float, spec: str = ".2f") -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def print_results(cap: Capture, runs: list[RunResult]) -> None:
    one = cap.oneshot
    size_mb = cap.path.stat().st_size / 1e6
    series = len({p.series for p in cap.pieces})
    print()
    print(f"code: {CODE['root']} ({revision(CODE['root'])}); {time.strftime('%Y-%m-%d %H:%M')}")
    print(
        f"capture: {cap.path} ({size_mb:.0f} MB, {cap.packets} packets), cut into "
        f"{len(cap.pieces)} files of {cap.file_seconds:g} s in {series} "
        f"series; a fresh daemon per run"
        + ("" if CODE["carry"] else "; flows.carry_across_files: false")
    )
    if one is not None:
        print(
            f"one-shot `netmon-exporter flows` (whole process, CSV written): "
            f"{one.seconds:.2f} s, {one.pps:,.0f} packets/s, {one.flows / one.seconds:,.0f} "
            f"flows/s, {one.flows} flows, peak RSS {one.rss_mb:.0f} MB  ({one.note})"
        )
    core = cap.oneshot_one_core
    if core is not None:
        print(
            f"the same on one core (taskset -c 0; its reading, flow table and CSV threads "
            f"share it): {core.seconds:.2f} s, {core.pps:,.0f} packets/s"
        )
    print()
    print(
        f"{'run':18}{'workers':>8}{'packets':>10}{'flows':>9}{'seconds':>9}{'packets/s':>11}"
        f"{'flows/s':>10}{'lag p50':>8}{'lag p99':>8}{'+win s':>7}{'main CPU':>9}"
        f"{'wrk CPU':>8}{'main MB':>8}{'wrk MB':>7}{'vs one-shot':>12}"
    )
    for r in runs:
        ratio = "-"
        if one is not None and one.pps and not r.mode.startswith("rate"):
            ratio = f"{r.pps / one.pps:.2f}x"
        print(
            f"{r.mode:18}{r.workers:>8}{r.packets:>10}{r.flows:>9}{r.seconds:>9.2f}"
            f"{r.pps:>11,.0f}{r.fps:>10,.0f}{fmt(r.lag_p50):>8}{fmt(r.lag_p99):>8}"
            f"{r.window_seconds:>7.2f}{r.cpu('main'):>9.2f}{r.cpu('worker'):>8.2f}"
            f"{r.peak_mb('main'):>8.0f}{r.peak_mb('worker'):>7.0f}{ratio:>12}"
        )
    print(
        "  seconds: first file renamed in -> last file's flows, CSV and metrics done "
        "(windows closed by the watermark included); +win s: the remaining open windows "
        "analysed and reported after one more file moves the watermark. lag: rename -> "
        "flow CSV on disk, per file. CPU: seconds during the run; MB: peak RSS (VmHWM)."
    )
    print()
    for r in runs:
        print(
            f"{r.mode} ({r.workers} worker{'s' if r.workers > 1 else ''}): "
            f"netmon_file_lag_seconds p50 {fmt(r.hist_lag_p50)} s, p99 {fmt(r.hist_lag_p99)} s "
            f"(ready -> done, from buckets); windows {r.windows}: {r.window_packets} packets, "
            f"{r.window_flows} flows ({r.window_late} late); flows still carried at the "
            "series' ends: "
            f"{r.carried if r.carried >= 0 else '-'}"
        )
        main_cpu = r.cpu("main")
        print(
            f"  {r.files} files renamed in over {r.feed_seconds:.2f} s; done "
            f"{r.seconds - r.feed_seconds:.2f} s after the last one"
        )
        print(
            f"  main process: {main_cpu / max(r.flows, 1) * 1e6:.1f} us CPU per flow, "
            f"{main_cpu / max(r.packets, 1) * 1e9:.0f} ns per packet, "
            f"{main_cpu / max(r.files, 1) * 1e3:.1f} ms per file"
        )
        if r.carry_series and r.carried >= 0:
            print(
                f"  carried to the next file at the end: {r.carried} flows in {r.carry_series} "
                f"series, {r.carry_bytes / 1e6:.1f} MB of state "
                f"({r.carry_bytes / max(r.carried, 1):.0f} B per flow)"
            )
        for p in r.procs:
            if p.role == "other" and p.cpu_used < 0.01:
                continue
            print(
                f"  {p.role:16} pid {p.pid:<8} CPU {p.cpu_used:7.2f} s   peak RSS "
                f"{p.hwm_kib / 1024:6.0f} MB (sampled max {p.peak_rss_kib / 1024:.0f} MB)"
            )
        if r.pss_peak_kib:
            print(
                f"  every process together: peak {r.pss_peak_kib / 1024:.0f} MB by PSS "
                f"(sampled every 0.5 s; their RSS then added up to "
                f"{r.rss_at_pss_peak_kib / 1024:.0f} MB, shared pages counted once per process)"
            )
        if r.held_rows:
            print(
                f"  open windows at the end: {r.held_windows} holding {r.held_rows} flow rows; "
                f"main RSS {r.main_rss_held_kib / 1024:.0f} MB with them, "
                f"{r.main_rss_released_kib / 1024:.0f} MB once reported and let go: "
                f"~{fmt(r.bytes_per_held_row, '.0f')} B per flow row held (RSS difference)"
            )
        if r.profile:
            print_profile(r)
    scraped = [r for r in runs if r.scrapes_idle is not None]
    if scraped:
        print()
        print(
            "/metrics scrapes: 4 threads, every 100 ms each, keep-alive connections; then, "
            f"idle, one scraper every {SCHEDULED_PERIOD:g} s (Prometheus' schedule, shortened)"
        )
        print(
            f"{'phase':22}{'workers':>8}{'scrapes':>9}{'errors':>7}{'p50 ms':>8}{'p99 ms':>8}{'max ms':>8}"
        )
        for r in scraped:
            for phase, s in (
                ("idle", r.scrapes_idle),
                (f"idle, 1 every {SCHEDULED_PERIOD:g} s", r.scrapes_scheduled),
                ("under full load", r.scrapes_load),
            ):
                if s is None:
                    continue
                print(
                    f"{phase:22}{r.workers:>8}{s['n']:>9.0f}{s['errors']:>7.0f}"
                    f"{s['p50_ms']:>8.1f}{s['p99_ms']:>8.1f}{s['max_ms']:>8.1f}"
                )
            print(
                f"  (idle: {fmt(r.idle_main_cpu_per_scrape_ms, '.1f')} ms of main-process CPU "
                "per scrape)"
            )
    if one is not None:
        print()
        for r in runs:
            if r.mode == "burst":
                print(
                    f"daemon ({r.workers} worker{'s' if r.workers > 1 else ''}) / one-shot "
                    f"packets/s: {r.pps / one.pps:5.2f}x  (flows {r.flows} + {r.carried} "
                    f"still carried vs {one.flows}; issue 12 target with 2 workers: >= 1.8x)"
                )
                if core is not None:
                    print(
                        f"daemon ({r.workers} worker{'s' if r.workers > 1 else ''}) / one-shot "
                        f"on one core packets/s: {r.pps / core.pps:5.2f}x"
                    )


def print_profile(r: RunResult) -> None:
    gil, busy = r.profile.get("gil", {}), r.profile.get("busy", {})
    tot = sum(gil.values())
    print(
        f"  main-process profile (py-spy {PROFILE_RATE} Hz; {r.profile_file}): GIL = samples of "
        f"the thread holding the GIL ({tot:.2f} s vs {r.cpu('main'):.2f} s CPU of the process); "
        "busy = samples of every thread not waiting (GIL, I/O such as the ledger's fsync, "
        "native code without the GIL)"
    )
    print(f"    {'stage':42}{'GIL s':>7}{'%':>6}{'us/flow':>9}{'busy s':>8}")
    for stage in sorted(set(gil) | set(busy), key=lambda k: (-gil.get(k, 0.0), -busy.get(k, 0.0))):
        g = gil.get(stage, 0.0)
        print(
            f"    {stage:42}{g:7.2f}{100 * g / max(tot, 1e-9):6.1f}"
            f"{g / max(r.flows, 1) * 1e6:9.2f}{busy.get(stage, 0.0):8.2f}"
        )


def main() -> int:
    global OUT
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--file", type=Path, help="a pcap to use instead of a synthetic capture")
    ap.add_argument("--packets", type=int, default=1_000_000, help="synthetic capture size")
    ap.add_argument("--scan", action="store_true", help="flow-heavy: one SYN + RST per flow")
    ap.add_argument("--file-seconds", type=float, default=5.0, help="rotation (tcpdump -G)")
    ap.add_argument(
        "--series",
        type=int,
        default=2,
        help="capture series (interfaces) the packets are spread over by address pair; the "
        "files of one series are processed one after the other (flows carried across them)",
    )
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument(
        "--rate",
        type=float,
        default=25_000,
        help="packets/s of the rate run (0: no rate run)",
    )
    ap.add_argument(
        "--rate-seconds",
        type=float,
        default=20.0,
        help="the rate run feeds the first files holding --rate x this many packets",
    )
    ap.add_argument(
        "--runs",
        nargs="+",
        default=["burst", "scrapes", "rate"],
        choices=["burst", "scrapes", "rate"],
        help="which runs (scrapes: burst+scrapes, with an idle phase first)",
    )
    ap.add_argument("--idle-seconds", type=float, default=5.0, help="idle scrape phase")
    ap.add_argument(
        "--profile",
        action="store_true",
        help="one more burst with the most workers, py-spy on the main process",
    )
    ap.add_argument("--no-oneshot", action="store_true", help="skip the one-shot comparison")
    ap.add_argument(
        "--no-carry",
        action="store_true",
        help="flows.carry_across_files: false (flows cut at file boundaries; shows what "
        "carrying open flows through the ledger costs)",
    )
    ap.add_argument("--keep", action="store_true", help="keep the daemons' site directories")
    ap.add_argument("--out", type=Path, default=OUT, help="outputs (default: bench/out)")
    ap.add_argument("--timeout", type=float, default=600.0, help="per run")
    ap.add_argument(
        "--root",
        type=Path,
        default=ROOT,
        help="checkout whose daemon and flows command are measured (e.g. a clean "
        "`git archive HEAD` export while others edit this working tree)",
    )
    a = ap.parse_args()
    CODE["root"] = a.root.resolve()
    CODE["carry"] = not a.no_carry
    OUT = a.out.resolve()
    if a.rate <= 0 and "rate" in a.runs:
        a.runs.remove("rate")

    cap = prepare(a)
    print(
        f"{cap.path.name}: {cap.packets} packets in {len(cap.pieces)} rotated files "
        f"({cap.split_dir})",
        flush=True,
    )
    if not a.no_oneshot:
        run_oneshot(cap.split_dir / cap.pieces[0].name, OUT / "daemon-warm.csv")  # warm
        cap.oneshot = run_oneshot(cap.path, OUT / "daemon-oneshot.csv")
        print(f"  one-shot flows: {cap.oneshot.seconds:.2f} s", flush=True)
        if shutil.which("taskset"):
            cap.oneshot_one_core = run_oneshot(cap.path, OUT / "daemon-oneshot.csv", True)
            print(f"  one-shot flows on one core: {cap.oneshot_one_core.seconds:.2f} s", flush=True)
        oneshot_times = [cap.oneshot.seconds]
    runs: list[RunResult] = []
    failed: list[str] = []
    plan: list[tuple[int, str]] = []
    if a.no_oneshot:
        oneshot_times = []
    for w in a.workers:
        for r in a.runs:
            plan.append((w, {"scrapes": "burst+scrapes", "rate": "rate"}.get(r, r)))
    if a.profile:
        plan.append((max(a.workers), "burst+profile"))
    try:
        for w, mode in plan:
            label = f"rate {a.rate / 1000:g}k/s" if mode == "rate" else mode
            part = cap.prefix(int(a.rate * a.rate_seconds)) if mode == "rate" else cap
            try:
                r = run_daemon(
                    part,
                    w,
                    mode,
                    rate=a.rate if mode == "rate" else 0.0,
                    scrape=mode == "burst+scrapes",
                    idle_seconds=a.idle_seconds,
                    profile=mode == "burst+profile",
                    timeout=a.timeout,
                )
            except RuntimeError as exc:
                failed.append(f"{label} ({w} workers): {exc}")
                print(f"  {label:18} {w} worker(s): FAILED: {str(exc)[:2000]}", flush=True)
                continue
            r.mode = label
            runs.append(r)
            print(
                f"  {label:18} {w} worker(s): {r.seconds:6.2f} s, {r.pps:,.0f} packets/s",
                flush=True,
            )
        if cap.oneshot is not None:  # once more after the daemon runs: the best of the two
            again = run_oneshot(cap.path, OUT / "daemon-oneshot.csv")
            print(f"  one-shot flows again: {again.seconds:.2f} s", flush=True)
            oneshot_times.append(again.seconds)
            if again.seconds < cap.oneshot.seconds:
                cap.oneshot = again
            cap.oneshot.note += (
                "; best of " + " and ".join(f"{t:.2f}" for t in oneshot_times) + " s"
            )
    finally:
        if not a.keep:
            shutil.rmtree(OUT / "daemon-sites", ignore_errors=True)
            for p in (OUT / "daemon-warm.csv", OUT / "daemon-oneshot.csv"):
                p.unlink(missing_ok=True)
    print_results(cap, runs)
    for f in failed:
        print(f"FAILED: {f.splitlines()[0]}")
    dump = {
        "code": str(CODE["root"]),
        "failed": failed,
        "capture": str(cap.path),
        "packets": cap.packets,
        "files": len(cap.pieces),
        "oneshot": None
        if cap.oneshot is None
        else {
            "seconds": cap.oneshot.seconds,
            "flows": cap.oneshot.flows,
            "rss_mb": cap.oneshot.rss_mb,
        },
        "runs": [
            {
                **{k: v for k, v in r.__dict__.items() if k != "procs"},
                "procs": [p.__dict__ | {"cpu_used": p.cpu_used} for p in r.procs],
            }
            for r in runs
        ],
    }
    (OUT / "daemon-last.json").write_text(json.dumps(dump, indent=1, default=str))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
