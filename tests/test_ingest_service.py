"""IngestService with fault injection: fake process functions that hang, crash or fail.

The fakes are module-level so worker processes can import them. They act on
the file's content: ``HANG`` sleeps forever, ``CRASH`` kills the worker,
``BAD`` raises a format error, ``SLOW <seconds>`` sleeps first; anything else
succeeds and writes ``<name>.out`` (temp + rename, like the real flow CSVs)
holding the carry it was given.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest

from netmon_exporter.config import (
    CaptureConfig,
    Config,
    FlowsConfig,
    OutputConfig,
    ProcessingConfig,
    StateConfig,
    WindowsConfig,
)
from netmon_exporter.flow_schema import FlowBatch, make_batch
from netmon_exporter.ingest import (
    CarryFlushed,
    FileDone,
    FileFailed,
    FileQuarantined,
    FileSkipped,
    FileStarted,
    IngestError,
    IngestService,
    carry_store,
)
from netmon_exporter.ingest.decisions import Dispose, EndCarry, FileInfo, Quarantine, RecordDone
from netmon_exporter.ingest.executor import Executor
from netmon_exporter.ingest.ledger import LEDGER_FILE, Ledger
from netmon_exporter.ingest.ledger_link import LedgerLink
from netmon_exporter.ingest.records import Identity
from netmon_exporter.ingest.scheduler import Rules, Scheduler
from netmon_exporter.pipeline import CaptureFormatError, FileResult, FlowSettings

REPO = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------- fakes


def fake_process(
    path: Path,
    settings: FlowSettings,
    *,
    carry: bytes | None = None,
    csv_dir: Path | None = None,
    final: bool = True,
    csv_path: Path | None = None,  # the real pipeline writes its CSV there; the fake its .out
) -> FileResult:
    data = path.read_bytes()
    if data.startswith(b"HANG"):
        time.sleep(3600)
    if data.startswith(b"CRASH"):
        os._exit(9)
    if data.startswith(b"BAD"):
        raise CaptureFormatError(f"{path.name}: not a capture (bad magic {data[:4]!r})", "format")
    if data.startswith(b"SLOW"):
        time.sleep(float(data.split()[1]))
    log = os.environ.get("FAKE_INVOCATION_LOG")
    if log:
        with open(log, "a") as f:
            f.write(f"{os.getpid()} {path.name}\n")
    seen = carry or b""
    if csv_dir is not None:
        out = csv_dir / f"{path.name}.out"
        tmp = csv_dir / f".{path.name}.{os.getpid()}.tmp"
        tmp.write_bytes(seen)
        os.replace(tmp, out)
    return FileResult(
        path=str(path),
        kind="pcap",
        size_bytes=len(data),
        seconds=0.001,
        flows=FlowBatch.empty(),
        packets_by_protocol={"tcp": 1},
        carry=None if final else seen + path.name.encode() + b";",
        csv_rows=seen.count(b";"),
    )


def fake_finish(blob: bytes, settings: FlowSettings) -> FlowBatch:
    return make_batch(blob.count(b";"))


# --------------------------------------------------------------------------- helpers


class FastClock:
    """Wall-clock time running ``factor`` times faster (retry delays, intervals, carries)."""

    def __init__(self, factor: float) -> None:
        self.factor = factor
        self.base = time.time()
        self.m0 = time.monotonic()

    def __call__(self) -> float:
        return self.base + (time.monotonic() - self.m0) * self.factor


def make_config(
    tmp_path: Path,
    *,
    capture: dict[str, Any] | None = None,
    processing: dict[str, Any] | None = None,
    flows: dict[str, Any] | None = None,
) -> Config:
    (tmp_path / "cap").mkdir(exist_ok=True)
    cap: dict[str, Any] = dict(
        directory=tmp_path / "cap", min_age_seconds=0.0, done_directory=tmp_path / "done"
    )
    cap.update(capture or {})
    proc: dict[str, Any] = dict(
        interval_seconds=10.0,
        workers=2,
        max_retries=1,
        retry_delay_seconds=1.0,
        file_timeout_seconds=30.0,
    )
    proc.update(processing or {})
    return Config(
        capture=CaptureConfig(**cap),
        processing=ProcessingConfig(**proc),
        flows=FlowsConfig(**(flows or {})),
        output=OutputConfig(directory=tmp_path / "out"),
        state=StateConfig(directory=tmp_path / "state"),
    )


def service(cfg: Config, clock: Callable[[], float] | None = None, **kw: Any) -> IngestService:
    # Files written before the service watched are trusted without the long quiet
    # period here: nobody writes them any more, and /proc (same user) would see it.
    kw.setdefault("settle_seconds", 0.2)
    kw.setdefault("unwatched_quiet_seconds", 0.0)
    return IngestService(
        cfg, clock=clock or time.time, process=fake_process, finish=fake_finish, **kw
    )


def collect(
    svc: IngestService,
    until: Callable[[list[Any]], bool],
    timeout: float,
    events: list[Any] | None = None,
) -> list[Any]:
    events = [] if events is None else events
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        events.extend(svc.poll_events(0.1))
        if until(events):
            return events
    raise AssertionError(f"timed out; events so far: {[type(e).__name__ for e in events]}")


def drive(svc: IngestService, until: Callable[[list[Any]], bool], timeout: float) -> list[Any]:
    """Start the service, collect its events until ``until`` says enough, stop it."""
    svc.start()
    try:
        return collect(svc, until, timeout)
    finally:
        svc.stop(5)


def eventually(check: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Wait for a status snapshot to catch up with the events (it is taken once per round)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def of(events: Iterable[Any], kind: type) -> list[Any]:
    return [e for e in events if isinstance(e, kind)]


def done_names(events: Iterable[Any]) -> list[str]:
    return [Path(e.result.path).name for e in of(events, FileDone)]


def write_files(directory: Path, names: Iterable[str], content: bytes = b"ok") -> None:
    for name in names:
        (directory / name).write_bytes(content)


# --------------------------------------------------------------------------- tests


def test_files_are_processed_once_in_series_order_with_carry(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, processing={"workers": 3})
    cap = tmp_path / "cap"
    # two rotation series and a file of no series; mtimes give the time order
    names = [f"east-{i:04d}.pcap" for i in range(4)] + [f"west-{i:04d}.pcap" for i in range(3)]
    for k, name in enumerate(names):
        (cap / name).write_bytes(b"ok")
        os.utime(cap / name, ns=(10**18 + k * 10**9, 10**18 + k * 10**9))
    (cap / "lonely.pcap").write_bytes(b"ok")
    svc = service(cfg)
    events = drive(svc, lambda ev: len(of(ev, FileDone)) == 8, 20)
    assert sorted(done_names(events)) == sorted([*names, "lonely.pcap"])
    order = done_names(events)
    assert [n for n in order if n.startswith("east")] == names[:4]
    assert [n for n in order if n.startswith("west")] == names[4:]
    out = tmp_path / "out" / "flows"
    # each file saw exactly the files before it in its series as carry
    assert (
        out / "east-0003.pcap.out"
    ).read_bytes() == b"east-0000.pcap;east-0001.pcap;east-0002.pcap;"
    assert (out / "west-0000.pcap.out").read_bytes() == b""
    assert (out / "lonely.pcap.out").read_bytes() == b""
    started = of(events, FileStarted)
    assert len(started) == 8 and {e.attempt for e in started} == {1}
    assert all(
        e.lag_seconds >= 0 and e.attempts == 1 and e.result.carry is None
        for e in of(events, FileDone)
    )
    led = Ledger(cfg.state.directory)
    try:
        assert led.counts() == {"done": 8}
        # the ledger references the carry file the worker wrote; replaced ones are gone
        ref = led.get_carry("east")
        assert ref is not None and carry_store.is_ref(ref)
        carry_dir = carry_store.directory(cfg.state.directory)
        state = carry_store.load(carry_dir, ref)
        assert state == b"".join(f"{n};".encode() for n in names[:4])
        files = sorted(p.name for p in carry_dir.iterdir())
        assert files == sorted(
            carry_store.parse(led.get_carry(s) or b"").name for s in ("east", "west")
        )
    finally:
        led.close()


@pytest.mark.parametrize("broken", [b"BAD", b"CRASH", b"HANG"])
def test_a_file_queued_behind_a_failing_one_waits_and_goes_on_from_the_ledger(
    tmp_path: Path, broken: bytes
) -> None:
    """The next file of a series waits behind the running one on its worker; when that
    one fails (an error, its worker crashing, a timeout kill), the file behind it is not
    run on its flows: it waits its turn and goes on from what the ledger holds."""
    cfg = make_config(
        tmp_path, processing={"max_retries": 0, "workers": 2, "file_timeout_seconds": 2.0}
    )
    cap = tmp_path / "cap"
    names = [f"s-{i:04d}.pcap" for i in range(1, 7)]
    for k, n in enumerate(names):
        (cap / n).write_bytes(broken if n == "s-0003.pcap" else b"SLOW 0.3")
        os.utime(cap / n, ns=(10**18 + k * 10**9,) * 2)
    svc = service(cfg)
    busy: set[tuple[int, int]] = set()  # (files handed out, workers busy) as the status said

    def five_done(ev: list[Any]) -> bool:
        st = svc.status()
        busy.add((st.in_progress, st.workers_busy))
        return len(of(ev, FileDone)) == 5

    events = drive(svc, five_done, 30)
    # a file queued behind another is handed out, but no second worker is busy with it
    assert max(w for _, w in busy) <= 1 < max(n for n, _ in busy)
    assert done_names(events) == [n for n in names if n != "s-0003.pcap"]
    (q,) = of(events, FileQuarantined)
    assert Path(q.path).name == "s-0003.pcap"
    (flushed,) = of(events, CarryFlushed)
    assert len(flushed.flows) == 2  # s-0001 and s-0002's open flows, ended once
    out = tmp_path / "out" / "flows"
    seen = {n: (out / f"{n}.out").read_bytes() for n in done_names(events)}
    assert seen == {
        "s-0001.pcap": b"",
        "s-0002.pcap": b"s-0001.pcap;",
        "s-0004.pcap": b"",  # a fresh start after the quarantine, not s-0003's leftovers
        "s-0005.pcap": b"s-0004.pcap;",
        "s-0006.pcap": b"s-0004.pcap;s-0005.pcap;",
    }
    assert all(e.attempts == 1 for e in of(events, FileDone))  # waiting is not an attempt
    # files did wait behind their predecessor: started before it was done
    order = [
        (type(e).__name__, Path(getattr(e, "path", "") or e.result.path).name)
        for e in events
        if isinstance(e, (FileStarted, FileDone))
    ]
    queued = [
        n
        for n, prev in zip(names[1:], names[:-1], strict=True)
        if ("FileDone", prev) in order
        and order.index(("FileStarted", n)) < order.index(("FileDone", prev))
    ]
    assert "s-0002.pcap" in queued and "s-0006.pcap" in queued
    started = [Path(e.path).name for e in of(events, FileStarted)]
    # queued behind s-0003 while that one still ran (always, for the one that hangs;
    # one that fails at once may be gone first), then run on its own
    runs = started.count("s-0004.pcap")
    assert runs == 2 if broken == b"HANG" else runs in (1, 2)


@pytest.mark.parametrize("window", [60.0, 86400.0])
def test_series_on_their_own_workers_stay_within_half_a_window(
    tmp_path: Path, window: float
) -> None:
    """A backlog of two series, one slow to process (a busier interface): with a worker
    each, the fast one does not run more than half a window (capture time) ahead of the
    slow one, which would close windows the slow one still has flows for. With a day-long
    window the same backlog shows the fast series running far ahead (the check bites)."""
    cfg = make_config(tmp_path, processing={"workers": 2})
    cfg = dataclasses.replace(cfg, windows=WindowsConfig(length_seconds=window))
    cap = tmp_path / "cap"
    mtimes: dict[str, float] = {}
    for k in range(12):  # a file every 10 s of capture in each series
        for series, content in (("a", b"SLOW 0.01"), ("b", b"SLOW 0.12")):
            name = f"{series}-{k:04d}.pcap"
            (cap / name).write_bytes(content)
            mtimes[name] = 1_700_000_000.0 + 10 * k
            os.utime(cap / name, (mtimes[name], mtimes[name]))
    svc = service(cfg)
    events = drive(svc, lambda ev: len(of(ev, FileDone)) == 24, 60)
    order = done_names(events)
    assert sorted(order) == sorted(mtimes)

    def overtaken(name: str) -> list[str]:  # files of the other series it ran ahead of
        before = set(order[: order.index(name)])
        return [
            other
            for other in mtimes
            if other[0] != name[0]
            and mtimes[other] < mtimes[name] - 30.0  # half of a 60-s window
            and other not in before
        ]

    ahead = {name: overtaken(name) for name in order if overtaken(name)}
    if window == 60.0:
        assert ahead == {}, order
    else:
        assert len(ahead) >= 3, order


@pytest.mark.parametrize("broken", [b"BAD", b"CRASH", b"HANG"])
def test_a_file_queued_behind_another_series_file_survives_its_failure(
    tmp_path: Path, broken: bytes
) -> None:
    """One worker, two series: b's file is queued behind a's on the busy worker. When
    a's file fails (an error, the worker crashing, a timeout kill), b's file is not hurt:
    run there at once if the worker lives, else handed back "not run" (no attempt used)
    and run later; each series' flows carry on as they should."""
    cfg = make_config(
        tmp_path, processing={"max_retries": 0, "workers": 1, "file_timeout_seconds": 2.0}
    )
    cap = tmp_path / "cap"
    content = {
        "a-0001.pcap": b"SLOW 0.2",
        "b-0001.pcap": b"SLOW 0.2",
        "a-0002.pcap": broken,
        "b-0002.pcap": b"SLOW 0.2",
        "a-0003.pcap": b"SLOW 0.2",
        "b-0003.pcap": b"SLOW 0.2",
    }
    for k, (n, data) in enumerate(content.items()):  # alternating in capture time
        (cap / n).write_bytes(data)
        os.utime(cap / n, ns=(10**18 + k * 10**9,) * 2)
    svc = service(cfg)
    events = drive(svc, lambda ev: len(of(ev, FileDone)) == 5, 30)
    assert sorted(done_names(events)) == sorted(n for n in content if n != "a-0002.pcap")
    (q,) = of(events, FileQuarantined)
    assert Path(q.path).name == "a-0002.pcap"
    assert all(e.attempts == 1 for e in of(events, FileDone))  # waiting is not an attempt
    started = [Path(e.path).name for e in of(events, FileStarted)]
    # queued behind the hanging file (always) or one that crashes at once (when queued in
    # time), b-0002 is handed out again after the worker died; never after a plain error
    runs = started.count("b-0002.pcap")
    assert runs == 2 if broken == b"HANG" else runs == 1 if broken == b"BAD" else runs in (1, 2)
    out = tmp_path / "out" / "flows"
    seen = {n: (out / f"{n}.out").read_bytes() for n in done_names(events)}
    assert seen == {
        "a-0001.pcap": b"",
        "b-0001.pcap": b"",
        "b-0002.pcap": b"b-0001.pcap;",
        "a-0003.pcap": b"",  # a fresh start after the quarantine ended a's flows
        "b-0003.pcap": b"b-0001.pcap;b-0002.pcap;",
    }


def test_a_task_holding_its_carry_inline_is_not_queued_on_a_busy_worker(tmp_path: Path) -> None:
    """A worker reads its next task only once its file is done: a queued task larger than
    the pipe's buffer (flows carried inline, from a ledger written before carry files)
    would block the scheduler's send while the worker may be blocked sending its result
    rows. Such a task is refused at once; one holding a carry reference is queued."""
    from netmon_exporter.ingest.workers import Task, WorkerPool

    cap = tmp_path / "cap"
    cap.mkdir()
    for name in ("a.pcap", "b.pcap", "c.pcap"):
        (cap / name).write_bytes(b"SLOW 0.5")
    carry_dir = tmp_path / "carry"
    ref = carry_store.save(carry_dir, 3, b"c-before;")
    settings = FlowSettings()

    def task(key: int, name: str, carry: bytes | None) -> Task:
        return Task(
            key,
            str(cap / name),
            settings,
            carry,
            str(tmp_path),
            False,
            30.0,
            carry_dir=str(carry_dir),
        )

    pool = WorkerPool(fake_process, 1)
    outcomes: list[Any] = []
    try:
        deadline = time.monotonic() + 60
        while pool.idle() == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        pool.submit(task(1, "a.pcap", None))
        t0 = time.monotonic()
        assert not pool.submit_queued(task(2, "b.pcap", b"x" * 4_000_000))  # inline state
        assert time.monotonic() - t0 < 0.3
        assert pool.submit_queued(task(3, "c.pcap", ref))
        assert not pool.submit_queued(task(4, "b.pcap", None))  # one queued per worker
        while len(outcomes) < 2 and time.monotonic() < deadline:
            outcomes += pool.wait(0.5)
    finally:
        pool.shutdown(5.0, lambda o: None)
    assert [o.task.key for o in outcomes] == [1, 3] and all(o.result for o in outcomes)
    assert (tmp_path / "c.pcap.out").read_bytes() == b"c-before;"  # from its own carry


def test_a_series_carried_inline_by_an_old_ledger_waits_for_a_free_worker(
    tmp_path: Path,
) -> None:
    """After an upgrade the ledger may hold a series' open flows inline (written before
    carry files): its next file is not queued on a busy worker (see the pool test
    above), it starts when a worker is free and goes on from those flows."""
    import sqlite3

    cfg = make_config(tmp_path, processing={"workers": 1})
    cap = tmp_path / "cap"
    write_files(cap, ["b-0001.pcap"])
    drive(service(cfg), lambda ev: len(of(ev, FileDone)) == 1, 15)
    ledger = next((tmp_path / "state").rglob("ledger.sqlite3"))
    with sqlite3.connect(ledger) as db:  # as a ledger from before carry files held it
        assert db.execute("UPDATE carry SET blob=?", (b"b-0001.pcap;" + b"#" * 3_000_000,)).rowcount
    (cap / "a-0001.pcap").write_bytes(b"SLOW 0.5")
    (cap / "b-0002.pcap").write_bytes(b"SLOW 0.1")
    os.utime(cap / "a-0001.pcap", (1, 1))  # a first, then b (capture time)
    svc = service(cfg)
    events = drive(svc, lambda ev: len(of(ev, FileDone)) == 2, 30)
    order = [
        (type(e).__name__, Path(e.path if isinstance(e, FileStarted) else e.result.path).name)
        for e in events
        if isinstance(e, (FileStarted, FileDone))
    ]
    assert order == [
        ("FileStarted", "a-0001.pcap"),
        ("FileDone", "a-0001.pcap"),
        ("FileStarted", "b-0002.pcap"),
        ("FileDone", "b-0002.pcap"),
    ]
    out = (tmp_path / "out" / "flows" / "b-0002.pcap.out").read_bytes()
    assert out.startswith(b"b-0001.pcap;#") and len(out) > 3_000_000


def _split_pcap(src: Path, parts: int) -> list[bytes]:
    """Cut a classic pcap into ``parts`` captures of consecutive records (as rotation does)."""
    import struct

    data = src.read_bytes()
    head, pos, records = data[:24], 24, []
    while pos + 16 <= len(data):
        (incl,) = struct.unpack_from("<I", data, pos + 8)
        records.append(data[pos : pos + 16 + incl])
        pos += 16 + incl
    step = -(-len(records) // parts)
    return [head + b"".join(records[i : i + step]) for i in range(0, len(records), step)]


def _csv_flows(paths: Iterable[Path]) -> list[tuple[str, ...]]:
    """Each flow of the CSVs as (Flow ID, packets and payload bytes each way), sorted."""
    import csv

    rows = []
    for path in paths:
        with path.open(newline="") as f:
            for r in csv.DictReader(f):
                fields = ("Tot Fwd Pkts", "Tot Bwd Pkts", "TotLen Fwd Pkts", "TotLen Bwd Pkts")
                rows.append((r["Flow ID"], *(r[k] for k in fields)))
    return sorted(rows)


@pytest.mark.parametrize("sample", ["ftp-cwd-navigation.pcap", "reddit-ipv6.pcap"])
def test_a_burst_of_a_rotated_series_gives_the_one_shot_flows(tmp_path: Path, sample: str) -> None:
    """The real pipeline, files queued behind each other on the worker that holds their
    series' flow table: every flow once, whole, as one pass over the capture finds it."""
    from netmon_exporter.ingest.executor import flow_settings
    from netmon_exporter.pipeline import process_file

    cfg = make_config(tmp_path, processing={"workers": 2}, flows={"idle_timeout_seconds": 5.0})
    cap = tmp_path / "cap"
    pieces = _split_pcap(REPO / "samples" / sample, 8)
    names = [f"s-{i:04d}.pcap" for i in range(1, len(pieces) + 1)]
    for k, (name, piece) in enumerate(zip(names, pieces, strict=True)):
        (tmp_path / f".{name}").write_bytes(piece)
        os.utime(tmp_path / f".{name}", ns=(10**18 + k * 10**9,) * 2)
    for name in names:  # a burst: renamed in at once, as a backlog after an outage
        os.rename(tmp_path / f".{name}", cap / name)
    svc = IngestService(cfg, clock=FastClock(20), settle_seconds=0.2, unwatched_quiet_seconds=0.0)
    events = drive(svc, lambda ev: len(of(ev, FileDone)) == len(names) and of(ev, CarryFlushed), 60)
    assert done_names(events) == names
    order = [
        (type(e).__name__, Path(e.path if isinstance(e, FileStarted) else e.result.path).name)
        for e in events
        if isinstance(e, (FileStarted, FileDone))
    ]
    assert any(  # some file did wait behind the one before it, on that one's worker
        order.index(("FileStarted", n)) < order.index(("FileDone", prev))
        for n, prev in zip(names[1:], names[:-1], strict=True)
    )
    one_shot = tmp_path / "one-shot"
    one_shot.mkdir()
    process_file(REPO / "samples" / sample, flow_settings(cfg), csv_dir=one_shot)
    expected = _csv_flows(one_shot.iterdir())  # ftp: one control connection over all 8 files
    assert _csv_flows((tmp_path / "out" / "flows").iterdir()) == expected and expected


def test_one_worker_two_series_queues_the_next_file_and_keeps_each_series_whole(
    tmp_path: Path,
) -> None:
    """More series than workers: the file that would start next (the other series') is
    queued on the busy worker, which starts it the moment its file is done; each series
    still goes on from its own flows (two flow tables on one worker, interleaved), and
    every flow comes out once, whole, as one pass over each capture finds it."""
    from netmon_exporter.ingest.executor import flow_settings
    from netmon_exporter.pipeline import process_file

    cfg = make_config(tmp_path, processing={"workers": 1}, flows={"idle_timeout_seconds": 5.0})
    cap = tmp_path / "cap"
    names: list[str] = []
    for s, sample in enumerate(["ftp-cwd-navigation.pcap", "reddit-ipv6.pcap"]):
        for k, piece in enumerate(_split_pcap(REPO / "samples" / sample, 6)):
            name = f"{'ab'[s]}-{k + 1:04d}.pcap"
            (tmp_path / f".{name}").write_bytes(piece)
            # the series' files alternate in capture time
            os.utime(tmp_path / f".{name}", ns=(10**18 + (2 * k + s) * 10**9,) * 2)
            names.append(name)
    for name in names:
        os.rename(tmp_path / f".{name}", cap / name)
    svc = IngestService(cfg, clock=FastClock(20), settle_seconds=0.2, unwatched_quiet_seconds=0.0)
    events = drive(
        svc, lambda ev: len(of(ev, FileDone)) == len(names) and len(of(ev, CarryFlushed)) == 2, 60
    )
    done = done_names(events)
    assert sorted(done) == sorted(names)
    for series in "ab":  # each series in its order
        assert [n for n in done if n[0] == series] == sorted(n for n in names if n[0] == series)
    order = [
        (type(e).__name__, Path(e.path if isinstance(e, FileStarted) else e.result.path).name)
        for e in events
        if isinstance(e, (FileStarted, FileDone))
    ]
    handed = [n for kind, n in order if kind == "FileStarted"]
    # a file of one series handed out while the other series' file still ran
    assert any(
        order.index(("FileStarted", n)) < order.index(("FileDone", prev))
        for n, prev in zip(handed[1:], handed[:-1], strict=True)
        if n[0] != prev[0]
    ), order
    one_shot = tmp_path / "one-shot"
    one_shot.mkdir()
    for sample in ["ftp-cwd-navigation.pcap", "reddit-ipv6.pcap"]:
        process_file(REPO / "samples" / sample, flow_settings(cfg), csv_dir=one_shot)
    expected = _csv_flows(one_shot.iterdir())
    assert _csv_flows((tmp_path / "out" / "flows").iterdir()) == expected and expected


# ------------------------------------------------------------- the executor, without threads


def executor(cfg: Config, events: list[Any]) -> tuple[Executor, LedgerLink, Scheduler]:
    import random

    from netmon_exporter.ingest.age_gate import AgeGate

    link = LedgerLink(cfg.state.directory, events.append)
    assert link.open(0.0) is not None
    core = Scheduler(Rules.of(cfg), random.Random(0))
    ex = Executor(cfg, core, AgeGate(0.0), link, events.append, fake_finish, lambda: 100.0)
    return ex, link, core


def test_ending_a_carry_writes_its_csv_then_drops_it(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    path = tmp_path / "cap" / "s-0001.pcap"
    events: list[Any] = []
    ex, link, _ = executor(cfg, events)
    assert link.ledger is not None
    (row,) = link.ledger.record_ready([(str(path), Identity(1, 2, 3, 10**18), "s", "pcap")], 1.0)
    link.ledger.mark_done(row.id, 2.0, series="s", carry=b"a;b;", update_carry=True)
    assert ex.apply([EndCarry("s")])
    (flushed,) = of(events, CarryFlushed)
    assert (flushed.series, len(flushed.flows), flushed.csv_rows) == ("s", 2, 2)
    assert Path(flushed.csv_path).name == "s-0001.pcap_20010909T014640Z_end_Flow.csv"
    assert link.ledger.carries() == {}
    # counted with the drop, as the event says: a restart restores exactly this
    totals = link.ledger.totals()
    assert sum(flushed.flows_by_protocol.values()) == 2
    assert totals.flows_by_protocol == flushed.flows_by_protocol
    assert (totals.flows, totals.csv_rows) == (2, 2)
    link.close()


def test_a_failed_quarantine_move_is_told_once_and_counted_when_it_succeeds(
    tmp_path: Path,
) -> None:
    cfg = make_config(tmp_path)
    path = tmp_path / "cap" / "junk.pcap"
    path.write_bytes(b"junk")
    (tmp_path / "out").write_text("not a directory")  # the output directory is unusable
    events: list[Any] = []
    ex, link, _ = executor(cfg, events)
    info = FileInfo(str(path), Identity.of(path.stat()), None, "pcap")
    move = Quarantine(1, info, "format", "not a capture", 1, 100.0, recovered=False)
    assert ex.apply([move]) and ex.apply([dataclasses.replace(move, recovered=True)])
    assert [type(e) for e in events] == [IngestError] and path.exists()
    assert "cannot move" in ex.problems.current(100.0, None)[0]
    (tmp_path / "out").unlink()  # writable again: the rescan finds it quarantined, moves it
    assert ex.apply([dataclasses.replace(move, recovered=True)])
    assert [type(e) for e in events] == [IngestError, FileQuarantined]  # counted once, now
    assert not path.exists() and (tmp_path / "out" / "quarantine" / "junk.pcap").exists()
    link.close()


def test_a_failed_ledger_write_stops_the_rest_of_the_decisions(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, capture={"after_processing": "delete"})
    path = tmp_path / "cap" / "x.pcap"
    path.write_bytes(b"ok")
    events: list[Any] = []
    ex, link, _ = executor(cfg, events)
    info = FileInfo(str(path), Identity.of(path.stat()), None, "pcap")
    link.close()  # as after a failed write
    result = fake_process(path, FlowSettings())
    assert not ex.apply([RecordDone(1, info, False, 0.0, 1), Dispose(info)], result)
    assert events == [] and path.exists()  # not reported, not deleted: it is redone


def test_quarantined_file_ends_the_flows_carried_into_it(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, processing={"max_retries": 0})
    cap = tmp_path / "cap"
    for k, (name, content) in enumerate(
        [("q-0001.pcap", b"ok"), ("q-0002.pcap", b"BAD"), ("q-0003.pcap", b"ok")]
    ):
        (cap / name).write_bytes(content)
        os.utime(cap / name, ns=(10**18 + k * 10**9,) * 2)
    svc = service(cfg)
    events = drive(svc, lambda ev: len(of(ev, FileDone)) == 2, 15)
    kinds = [type(e).__name__ for e in events if not isinstance(e, FileStarted)]
    assert kinds == ["FileDone", "FileFailed", "CarryFlushed", "FileQuarantined", "FileDone"]
    assert len(of(events, CarryFlushed)[0].flows) == 1  # q-1's open flows
    assert (tmp_path / "out" / "flows" / "q-0003.pcap.out").read_bytes() == b""  # fresh start


def test_carry_survives_a_restart_instead_of_being_flushed(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    cap = tmp_path / "cap"
    write_files(cap, ["r-0001.pcap"])
    svc = service(cfg)
    drive(svc, lambda ev: len(of(ev, FileDone)) == 1, 15)
    assert of(svc.poll_events(0), CarryFlushed) == []
    write_files(cap, ["r-0002.pcap"])
    svc = service(cfg)
    drive(svc, lambda ev: len(of(ev, FileDone)) == 1, 15)
    assert (tmp_path / "out" / "flows" / "r-0002.pcap.out").read_bytes() == b"r-0001.pcap;"


def test_hang_is_killed_retried_then_quarantined_while_others_flow(tmp_path: Path) -> None:
    clock = FastClock(10)
    cfg = make_config(tmp_path, processing={"file_timeout_seconds": 1.0, "max_retries": 1})
    cap = tmp_path / "cap"
    (cap / "hang.pcap").write_bytes(b"HANG")
    svc = service(cfg, clock)
    svc.start()
    try:
        events = collect(svc, lambda ev: bool(of(ev, FileStarted)), 10)
        write_files(cap, [f"good{i}.pcap" for i in range(5)])  # arrive while it hangs
        events = collect(svc, lambda ev: bool(of(ev, FileQuarantined)), 20, events)
        write_files(cap, ["after.pcap"])  # the killed workers were replaced
        events = collect(svc, lambda ev: len(of(ev, FileDone)) == 6, 20, events)
    finally:
        svc.stop(5)
    failed = of(events, FileFailed)
    assert [(f.reason, f.attempt, f.will_retry, f.category) for f in failed] == [
        ("timeout", 1, True, "parse"),
        ("timeout", 2, False, "parse"),
    ]
    assert failed[0].retry_in_seconds is not None and 1.0 <= failed[0].retry_in_seconds <= 1.5
    assert sorted(done_names(events)) == ["after.pcap"] + [f"good{i}.pcap" for i in range(5)]
    first_done = events.index(of(events, FileDone)[0])
    assert first_done < events.index(failed[0])  # good files did not wait for the hang
    q = of(events, FileQuarantined)[0]
    assert (q.reason, Path(q.quarantine_path).name) == ("timeout", "hang.pcap")
    reason = (tmp_path / "out" / "quarantine" / "hang.pcap.reason").read_text()
    assert "reason: timeout" in reason and "attempts: 2" in reason
    assert "file_timeout_seconds" in reason
    assert not (cap / "hang.pcap").exists()


def test_crash_and_format_error_are_quarantined_with_reasons(tmp_path: Path) -> None:
    clock = FastClock(20)
    cfg = make_config(tmp_path, processing={"max_retries": 2})
    cap = tmp_path / "cap"
    (cap / "crash.pcap").write_bytes(b"CRASH")
    (cap / "bad.pcap").write_bytes(b"BAD!")
    write_files(cap, ["fine.pcap"])
    svc = service(cfg, clock)
    events = drive(svc, lambda ev: len(of(ev, FileQuarantined)) == 2, 20)
    by_file: dict[str, list[tuple[str, int, bool]]] = {}
    for f in of(events, FileFailed):
        by_file.setdefault(Path(f.path).name, []).append((f.reason, f.attempt, f.will_retry))
    assert by_file["crash.pcap"] == [
        ("worker_crash", 1, True),
        ("worker_crash", 2, True),
        ("worker_crash", 3, False),
    ]
    assert by_file["bad.pcap"] == [("format", 1, True), ("format", 2, True), ("format", 3, False)]
    assert done_names(events) == ["fine.pcap"]
    qdir = tmp_path / "out" / "quarantine"
    assert "bad magic b'BAD!'" in (qdir / "bad.pcap.reason").read_text()
    assert "exited with status 9" in (qdir / "crash.pcap.reason").read_text()


def test_slowly_appended_file_is_not_read_before_complete(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    cap = tmp_path / "cap"
    final_sizes: dict[str, int] = {}

    def writer(name: str, reopen: bool, pause: float) -> None:
        path = cap / name
        chunks = [b"P" * 100] * 5
        if reopen:  # a writer that closes between appends: only the settle time protects
            for c in chunks:
                with path.open("ab") as f:
                    f.write(c)
                time.sleep(pause)
        else:  # a writer holding the file open with pauses longer than the settle time
            with path.open("ab") as f:
                for c in chunks:
                    f.write(c)
                    f.flush()
                    time.sleep(pause)
        final_sizes[name] = path.stat().st_size

    # /proc shows nothing (the writer runs as another user, or ProtectProc=invisible):
    # inotify's write and close-after-write events are what hold the file back
    svc = service(
        cfg, settle_seconds=1.0, open_for_writing=lambda paths: set(), unwatched_quiet_seconds=60.0
    )
    svc.start()
    try:
        threads = [
            threading.Thread(target=writer, args=("held-1.pcap", False, 1.3)),
            threading.Thread(target=writer, args=("reopened-1.pcap", True, 0.4)),
        ]
        for t in threads:
            t.start()
        events: list[Any] = []
        while any(t.is_alive() for t in threads):
            events.extend(svc.poll_events(0.1))
            early = [
                Path(e.path).name
                for e in of(events, FileStarted)
                if Path(e.path).name not in final_sizes
            ]
            assert early == [], "a file was picked up while being written"
        events = collect(svc, lambda ev: len(of(ev, FileDone)) == 2, 15, events)
    finally:
        svc.stop(5)
    sizes = {Path(e.result.path).name: e.result.size_bytes for e in of(events, FileDone)}
    assert sizes == final_sizes == {"held-1.pcap": 500, "reopened-1.pcap": 500}


def test_a_file_renamed_in_skips_the_settle_time_one_written_in_place_does_not(
    tmp_path: Path,
) -> None:
    """``min_age: 0``: a rotation script's ``mv`` (or a burst of them) is read at once;
    a file written in place still waits for two looks ``settle_seconds`` apart."""
    cfg = make_config(tmp_path)
    cap = tmp_path / "cap"
    settle = 3.0
    svc = service(cfg, settle_seconds=settle, open_for_writing=lambda paths: set())
    svc.start()
    try:
        time.sleep(0.3)  # watching
        (cap / "inplace-1.pcap").write_bytes(b"P" * 100)
        closed_at = time.monotonic()
        hidden = cap / ".moved-1.pcap.part"  # not a capture name: out of scope until renamed
        hidden.write_bytes(b"M" * 100)
        hidden.rename(cap / "moved-1.pcap")
        started: dict[str, float] = {}

        def both_started(ev: list[Any]) -> bool:
            for e in of(ev, FileStarted):
                started.setdefault(Path(e.path).name, time.monotonic())
            return len(started) == 2

        collect(svc, both_started, 15)
    finally:
        svc.stop(5)
    assert started["moved-1.pcap"] < started["inplace-1.pcap"]
    assert started["moved-1.pcap"] - closed_at < settle
    assert started["inplace-1.pcap"] - closed_at >= settle


def test_workers_change_on_apply_config_without_losing_in_flight_files(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, processing={"workers": 1, "batch_size": 4})
    cap = tmp_path / "cap"
    names = [f"f{i:02d}x.pcap" for i in range(12)]  # no rotation series: independent
    write_files(cap, names, b"SLOW 0.3")
    svc = service(cfg)
    svc.start()
    try:
        events = collect(svc, lambda ev: len(of(ev, FileDone)) >= 1, 15)
        assert eventually(lambda: svc.status().workers_busy == 1)
        svc.apply_config(
            dataclasses.replace(cfg, processing=dataclasses.replace(cfg.processing, workers=3))
        )
        events = collect(svc, lambda ev: svc.status().workers_busy == 3, 10, events)
        svc.apply_config(cfg)  # back to one while three are in flight
        peak_after = peak_handed = 0

        def settled(ev: list[Any]) -> bool:
            nonlocal peak_after, peak_handed
            st = svc.status()
            peak_handed = max(peak_handed, st.in_progress)
            # the retiring workers finish their file and the one queued behind it (two
            # rounds of 0.3 s after the change, when at most 2 + 6 files were done);
            # the last files run on one worker
            if len(of(ev, FileDone)) >= 10:
                peak_after = max(peak_after, st.workers_busy)
            return len(of(ev, FileDone)) == 12

        events = collect(svc, settled, 20, events)
    finally:
        svc.stop(5)
    assert of(events, FileFailed) == []
    assert sorted(done_names(events)) == names
    assert len(of(events, FileStarted)) == 12
    assert peak_after == 1
    assert peak_handed <= 6  # three busy workers, at most one file queued behind each


def test_capture_settings_reloaded_while_a_series_waits(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    cap = tmp_path / "cap"
    names = [f"r-{i:04d}.pcap" for i in range(6)]
    for k, name in enumerate(names):
        (cap / name).write_bytes(b"SLOW 0.2")
        os.utime(cap / name, ns=(10**18 + k * 10**9,) * 2)
    svc = service(cfg)
    svc.start()
    try:
        events = collect(svc, lambda ev: len(of(ev, FileDone)) == 2, 15)
        (cap / "late-1.cap").write_bytes(b"ok")
        svc.apply_config(
            dataclasses.replace(
                cfg,
                capture=dataclasses.replace(
                    cfg.capture, patterns=("*.pcap", "*.cap"), min_age_seconds=0.5
                ),
            )
        )
        events = collect(svc, lambda ev: len(of(ev, FileDone)) == 7, 20, events)
        time.sleep(0.5)
        events.extend(svc.poll_events(0))
    finally:
        svc.stop(5)
    order = done_names(events)
    assert [n for n in order if n.startswith("r-")] == names  # still in order, each once
    assert sorted(order) == sorted([*names, "late-1.cap"])
    assert len(of(events, FileStarted)) == 7


def test_parallel_false_processes_one_file_at_a_time(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, processing={"workers": 4, "parallel": False})
    write_files(tmp_path / "cap", [f"p{i}x.pcap" for i in range(4)], b"SLOW 0.2")
    svc = service(cfg)
    svc.start()
    peak = handed = 0
    try:
        events: list[Any] = []
        while len(of(events, FileDone)) < 4:
            events.extend(svc.poll_events(0.05))
            st = svc.status()
            peak = max(peak, st.workers_busy)
            # one file at a time; the next may wait queued behind it on the worker
            handed = max(handed, st.in_progress)
            assert len(events) < 100
    finally:
        svc.stop(5)
    assert peak == 1 and handed <= 2


def test_results_not_taken_by_the_daemon_are_bounded(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, processing={"workers": 2, "batch_size": 100})
    write_files(tmp_path / "cap", [f"b{i:03d}x.pcap" for i in range(40)])
    svc = service(cfg, max_pending_results=4)
    svc.start()
    try:
        time.sleep(2.0)  # nobody polls
        first = svc.poll_events(0)
        assert 1 <= len(of(first, FileDone)) <= 4
        assert svc.status().backlog >= 30
        events = collect(svc, lambda ev: len(of(ev, FileDone)) == 40, 30, first)
    finally:
        svc.stop(5)
    assert len(set(done_names(events))) == 40


@pytest.mark.parametrize("action", ["move", "delete"])
def test_after_processing_move_and_delete(tmp_path: Path, action: str) -> None:
    cfg = make_config(tmp_path, capture={"after_processing": action})
    write_files(tmp_path / "cap", ["m-1.pcap", "m-2.pcap"])
    svc = service(cfg)
    drive(svc, lambda ev: len(of(ev, FileDone)) == 2, 15)
    assert list((tmp_path / "cap").iterdir()) == []
    moved = sorted(p.name for p in (tmp_path / "done").iterdir()) if action == "move" else []
    assert moved == (["m-1.pcap", "m-2.pcap"] if action == "move" else [])


def test_crash_before_the_move_completes_it_without_processing_again(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, capture={"after_processing": "move"})
    cap = tmp_path / "cap"
    write_files(cap, ["late-1.pcap"])
    st = (cap / "late-1.pcap").stat()
    led = Ledger(cfg.state.directory)  # as if we died right after the done mark
    e = led.record_ready([(str(cap / "late-1.pcap"), Identity.of(st), "late", "pcap")], 1.0)[0]
    led.mark_done(e.id, 2.0)
    led.close()
    svc = service(cfg)
    events = drive(svc, lambda ev: bool(of(ev, FileSkipped)), 10)
    assert of(events, FileStarted) == [] and of(events, FileDone) == []
    assert (of(events, FileSkipped)[0].state, (tmp_path / "done" / "late-1.pcap").exists()) == (
        "done",
        True,
    )


def test_kept_file_is_not_redone_but_a_replaced_one_is(tmp_path: Path) -> None:
    clock = FastClock(10)
    cfg = make_config(tmp_path)  # keep
    cap = tmp_path / "cap"
    write_files(cap, ["k-1.pcap"])
    svc = service(cfg, clock)
    svc.start()
    try:
        events = collect(svc, lambda ev: len(of(ev, FileDone)) == 1, 10)
        time.sleep(1.5)  # > one rescan interval (10 s at 10x)
        events.extend(svc.poll_events(0))
        assert len(of(events, FileStarted)) == 1
        (cap / "k-1.pcap").rename(cap / "k-renamed-1.pcap")
        (cap / "k-2.pcap").write_bytes(b"ok")
        os.replace(cap / "k-2.pcap", cap / "k-1.pcap")  # replaced under the same name
        events = collect(svc, lambda ev: len(of(ev, FileDone)) == 3, 10, events)
    finally:
        svc.stop(5)
    assert sorted(done_names(events)) == ["k-1.pcap", "k-1.pcap", "k-renamed-1.pcap"]


def test_unusable_ledger_and_directory_are_reported(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    (tmp_path / "state").write_text("not a directory")
    write_files(tmp_path / "cap", ["x-1.pcap"])
    svc = service(cfg, FastClock(5))  # the ledger is retried every 5 s
    svc.start()
    try:
        events = collect(svc, lambda ev: bool(of(ev, IngestError)), 10)
        time.sleep(0.5)
        events.extend(svc.poll_events(0))
        assert eventually(lambda: svc.status().ledger_error is not None)
        assert "cannot create the ledger" in (svc.status().ledger_error or "")
        assert of(events, FileStarted) == []  # no ledger, no processing
        os.unlink(tmp_path / "state")  # repaired: processing resumes
        events = collect(svc, lambda ev: bool(of(ev, FileDone)), 15, events)
        assert eventually(lambda: svc.status().ledger_error is None)
    finally:
        svc.stop(5)
    assert of(events, IngestError)[0].category == "ledger"
    (tmp_path / "other").mkdir()
    missing = make_config(tmp_path / "other")
    (tmp_path / "other" / "cap").rmdir()
    svc = service(missing)
    events = drive(svc, lambda ev: bool(of(ev, IngestError)), 10)
    assert of(events, IngestError)[0].category == "io"
    assert "cannot list capture directory" in of(events, IngestError)[0].message


def test_stop_hands_back_in_flight_files(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    write_files(tmp_path / "cap", ["long-1.pcap"], b"SLOW 30")
    svc = service(cfg)
    svc.start()
    collect(svc, lambda ev: bool(of(ev, FileStarted)), 10)
    t0 = time.monotonic()
    svc.stop(0.5)
    assert time.monotonic() - t0 < 5
    db = sqlite3.connect(tmp_path / "state" / LEDGER_FILE)
    assert db.execute("SELECT state, attempts FROM files").fetchall() == [("seen", 0)]
    db.close()


# --------------------------------------------------------------------------- kill -9

_RUNNER = textwrap.dedent("""
    import signal, sys, time, threading
    from pathlib import Path
    sys.path.insert(0, sys.argv[1])
    from tests.test_ingest_service import make_config, service
    from netmon_exporter.ingest import FileDone
    tmp = Path(sys.argv[2])
    log = open(sys.argv[3], "a", buffering=1)
    cfg = make_config(tmp, processing={"workers": 2, "batch_size": 16})
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    svc = service(cfg)
    svc.start()
    while not stop.is_set():
        for e in svc.poll_events(0.1):
            if isinstance(e, FileDone):
                log.write(Path(e.result.path).name + "\\n")
    svc.stop(5)
    for e in svc.poll_events(0):
        if isinstance(e, FileDone):
            log.write(Path(e.result.path).name + "\\n")
""")


def _lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


@pytest.mark.slow
def test_300_files_and_two_kill_9s_each_processed_exactly_once(tmp_path: Path) -> None:
    cap = tmp_path / "cap"
    cap.mkdir()
    names = [f"{'abc'[i % 3]}-{i:03d}.pcap" for i in range(300)]
    for i, name in enumerate(names):  # three series of 100 and explicit time order
        (cap / name).write_bytes(b"SLOW 0.01")
        os.utime(cap / name, ns=(10**18 + i * 10**6,) * 2)
    done_log = tmp_path / "done.log"
    calls_log = tmp_path / "calls.log"
    env = {**os.environ, "FAKE_INVOCATION_LOG": str(calls_log)}
    worker_pids: set[int] = set()

    def run(until_done: int | None) -> None:
        proc = subprocess.Popen(
            [sys.executable, "-c", _RUNNER, str(REPO), str(tmp_path), str(done_log)], env=env
        )
        deadline = time.monotonic() + 60
        try:
            while time.monotonic() < deadline:
                n = len(_lines(done_log))
                if until_done is not None and n >= until_done:
                    os.kill(proc.pid, signal.SIGKILL)
                    break
                if until_done is None and n >= 300 - len(lost()):
                    proc.send_signal(signal.SIGTERM)
                    break
                time.sleep(0.02)
            else:
                raise AssertionError(f"stuck at {len(_lines(done_log))} files")
        finally:
            assert proc.wait(30) is not None

    def lost() -> set[str]:
        # files committed in the ledger whose event died with the process
        db = sqlite3.connect(tmp_path / "state" / LEDGER_FILE)
        try:
            committed = {
                Path(os.fsdecode(p)).name
                for (p,) in db.execute("SELECT path FROM files WHERE state='done'")
            }
        finally:
            db.close()
        return committed - set(_lines(done_log))

    run(until_done=60)
    run(until_done=160)
    run(until_done=None)
    for line in calls_log.read_text().splitlines():
        worker_pids.add(int(line.split()[0]))

    delivered = _lines(done_log)
    assert len(delivered) == len(set(delivered)), "a file was reported done twice"
    db = sqlite3.connect(tmp_path / "state" / LEDGER_FILE)
    rows = db.execute("SELECT path, state FROM files").fetchall()
    db.close()
    assert sorted(Path(os.fsdecode(p)).name for p, _ in rows) == sorted(names)  # one per file
    assert {s for _, s in rows} == {"done"}
    assert set(delivered) | lost() == set(names)
    assert len(lost()) <= 4  # only a commit racing the kill can miss its event
    outputs = sorted(p.name for p in (tmp_path / "out" / "flows").iterdir())
    assert outputs == sorted(f"{n}.out" for n in names)  # no duplicates, no temp leftovers
    for series in "abc":  # carried state crossed both kills exactly once, in order
        files = [n for n in names if n.startswith(series)]
        for k, n in enumerate(files):
            expected = "".join(f"{f};" for f in files[:k]).encode()
            assert (tmp_path / "out" / "flows" / f"{n}.out").read_bytes() == expected, n
    calls = [line.split()[1] for line in calls_log.read_text().splitlines()]
    assert set(calls) == set(names) and len(calls) <= 300 + 2 * 2 * 16
    time.sleep(0.5)
    alive = [pid for pid in worker_pids if _alive(pid)]
    assert alive == [], f"worker processes outlived their daemon: {alive}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return False


def test_real_pipeline_quarantines_truncated_and_random_files_with_readable_reasons(
    tmp_path: Path,
) -> None:
    cfg = make_config(tmp_path, processing={"max_retries": 1})
    cap = tmp_path / "cap"
    good = ["synscan.pcap", "icmp.pcap", "dns-edns-ecs.pcap"]
    for name in good:
        (cap / name).write_bytes((REPO / "samples" / name).read_bytes())
    (cap / "cut.pcap").write_bytes((REPO / "samples" / "icmp.pcap").read_bytes()[:34])
    (cap / "noise.pcap").write_bytes(bytes(range(256)) * 20)
    svc = IngestService(
        cfg,
        clock=FastClock(20),
        settle_seconds=0.2,  # the real pipeline
        unwatched_quiet_seconds=0.0,
    )
    svc.start()
    try:
        events = collect(
            svc, lambda ev: len(of(ev, FileQuarantined)) == 2 and len(of(ev, FileDone)) == 3, 60
        )
    finally:
        svc.stop(5)
    assert sorted(done_names(events)) == sorted(good)
    assert all(e.result.packets_by_protocol and e.result.csv_rows > 0 for e in of(events, FileDone))
    reasons = {Path(q.path).name: q.reason for q in of(events, FileQuarantined)}
    assert reasons == {"cut.pcap": "truncated", "noise.pcap": "format"}
    qdir = tmp_path / "out" / "quarantine"
    assert "capture ends inside its first record" in (qdir / "cut.pcap.reason").read_text()
    noise = (qdir / "noise.pcap.reason").read_text()
    assert "not a pcap, pcapng or flow CSV" in noise and "attempts: 2" in noise
    csvs = sorted(p.name for p in (tmp_path / "out" / "flows").iterdir())
    assert len(csvs) == 3 and all(n.endswith(".csv") for n in csvs)
    totals = svc.committed_totals()
    assert totals is not None and totals.done_by_kind == {"pcap": 3}
    assert totals.quarantined_by_kind_reason == {("pcap", "truncated"): 1, ("pcap", "format"): 1}
    assert totals.flows == sum(e.result.flow_count for e in of(events, FileDone))
    assert sum(totals.flows_by_protocol.values()) == totals.flows
    assert totals.csv_rows == sum(e.result.csv_rows for e in of(events, FileDone))


def test_flow_csv_names_are_deterministic_and_unique_per_identity(tmp_path: Path) -> None:
    from netmon_exporter.ingest.disposal import flow_csv_name

    cap = tmp_path / "cap"
    t = 1_790_000_000 * 10**9 + 123
    assert flow_csv_name(cap / "ring0.pcap", cap, t) == "ring0.pcap_20260921T141320Z_Flow.csv"
    assert flow_csv_name(cap / "ring0.pcap", cap, t + 10**9) != flow_csv_name(
        cap / "ring0.pcap", cap, t
    )
    assert (
        flow_csv_name(cap / "east" / "a.pcap.gz", cap, t)
        == "east__a.pcap_20260921T141320Z_Flow.csv"
    )


def test_flow_csv_names_of_distinct_paths_never_meet(tmp_path: Path) -> None:
    """Joining folders with ``__`` must not give two captures one CSV (the later would
    overwrite the earlier's flows): names a hostile or careless writer can choose."""
    from netmon_exporter.ingest.disposal import flow_csv_name

    cap = tmp_path / "cap"
    t = 1_790_000_000 * 10**9
    rels = [
        "a/b.pcap", "a__b.pcap", "a_/b.pcap", "a/_b.pcap", "a___b.pcap", "a/b.pcap~x",
        "a__b.pcap~1f2e3d4c5b6a", "_/a/b.pcap", "a/b__.pcap", "a/b/c.pcap", "a__b__c.pcap",
        "a/b__c.pcap", "a__b/c.pcap", "x" * 240 + "/b.pcap", "x" * 240 + "__b.pcap",
        "east/eth0.pcap", "east__eth0.pcap", "~/a.pcap", "a~/b.pcap",
    ]  # fmt: skip
    names = {r: flow_csv_name(cap / r, cap, t) for r in rels}
    assert len(set(names.values())) == len(rels), names
    for r in rels:  # and with the series-end part
        assert flow_csv_name(cap / r, cap, t, "_end") not in names.values()
    # ordinary names are as documented (docs/ingestion.md), no hash
    assert names["a/b.pcap"] == "a__b.pcap_20260921T141320Z_Flow.csv"
    assert names["east/eth0.pcap"] == "east__eth0.pcap_20260921T141320Z_Flow.csv"
    # deterministic: a redo after a crash rewrites the same CSV
    assert flow_csv_name(cap / "a__b.pcap", cap, t) == names["a__b.pcap"]
    # x.pcap.gz is x.pcap compressed in place (gzip keeps the mtime): one CSV
    assert flow_csv_name(cap / "a__b.pcap.gz", cap, t) == names["a__b.pcap"]
    # undecodable bytes in a folder name are hashed as bytes
    odd = cap / os.fsdecode(b"\xff__") / "b.pcap"
    assert flow_csv_name(odd, cap, t) != flow_csv_name(
        cap / os.fsdecode(b"\xfe__") / "b.pcap", cap, t
    )


def test_ring_buffer_name_reused_keeps_both_flow_csvs(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    cap = tmp_path / "cap"
    svc = IngestService(cfg, settle_seconds=0.2, unwatched_quiet_seconds=0.0)
    svc.start()
    try:
        (cap / "ring0.pcap").write_bytes((REPO / "samples" / "icmp.pcap").read_bytes())
        events = collect(svc, lambda ev: len(of(ev, FileDone)) == 1, 30)
        # the ring wraps: same name, new content
        (cap / "ring0.pcap").write_bytes((REPO / "samples" / "dns-edns-ecs.pcap").read_bytes())
        os.utime(cap / "ring0.pcap", (time.time() + 5, time.time() + 5))
        events = collect(svc, lambda ev: len(of(ev, FileDone)) == 2, 30, events)
    finally:
        svc.stop(5)
    written = [Path(e.result.csv_path) for e in of(events, FileDone)]
    assert len(set(written)) == 2 and all(p.exists() and p.stat().st_size > 0 for p in written)
    assert sorted(p.name for p in (tmp_path / "out" / "flows").iterdir()) == sorted(
        p.name for p in written
    )


def test_flow_csv_retention_by_age_and_count(tmp_path: Path) -> None:
    from netmon_exporter.ingest.disposal import prune_flow_csvs

    now = 1_800_000_000.0
    for i, age_h in enumerate([0.5, 1.5, 2.5, 30, 50]):
        p = tmp_path / f"f{i}_Flow.csv"
        p.write_text("x")
        os.utime(p, (now - age_h * 3600,) * 2)
    (tmp_path / ".f9_Flow.csv.123.tmp").write_text("being written")
    (tmp_path / "notes.txt").write_text("not ours")
    os.utime(tmp_path / "notes.txt", (0, 0))
    deleted = prune_flow_csvs(tmp_path, now=now, retention_hours=24, max_files=2)
    assert sorted(p.name for p in deleted) == ["f2_Flow.csv", "f3_Flow.csv", "f4_Flow.csv"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".f9_Flow.csv.123.tmp",
        "f0_Flow.csv",
        "f1_Flow.csv",
        "notes.txt",
    ]
    assert prune_flow_csvs(tmp_path, now=now, retention_hours=0, max_files=0) == []
    assert prune_flow_csvs(tmp_path / "missing", now=now, retention_hours=1, max_files=1) == []


def test_service_prunes_old_flow_csvs_on_its_interval(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    cfg = dataclasses.replace(
        cfg, output=dataclasses.replace(cfg.output, retention_hours=1.0, max_flow_csv_files=0)
    )
    flows = tmp_path / "out" / "flows"
    flows.mkdir(parents=True)
    old, fresh = flows / "old_Flow.csv", flows / "fresh_Flow.csv"
    for p in (old, fresh):
        p.write_text("x")
    os.utime(old, (time.time() - 7200,) * 2)
    svc = service(cfg)
    svc.start()
    try:
        assert eventually(lambda: not old.exists())
    finally:
        svc.stop(5)
    assert fresh.exists()


def test_shards_split_the_directory(tmp_path: Path) -> None:
    import zlib

    cap = tmp_path / "cap"
    names = [f"s{i:02d}x.pcap" for i in range(16)]
    cfg = make_config(tmp_path, capture={"shard_index": 1, "shard_count": 2})
    write_files(cap, names)
    mine = sorted(n for n in names if zlib.crc32(n.encode()) % 2 == 1)
    assert 0 < len(mine) < 16
    svc = service(cfg, FastClock(10))
    svc.start()
    try:
        events = collect(svc, lambda ev: len(of(ev, FileDone)) == len(mine), 15)
        time.sleep(1.2)  # a rescan (10 s at 10x) finds nothing more
        events.extend(svc.poll_events(0))
    finally:
        svc.stop(5)
    assert sorted(done_names(events)) == mine


def test_recursive_watch_with_done_directory_inside(tmp_path: Path) -> None:
    cap = tmp_path / "cap"
    cfg = make_config(
        tmp_path,
        capture={"recursive": True, "after_processing": "move", "done_directory": cap / "done"},
    )
    (cap / "site-a").mkdir(parents=True)
    svc = service(cfg, FastClock(10))
    svc.start()
    try:
        (cap / "top-1.pcap").write_bytes(b"ok")
        (cap / "site-a" / "deep-1.pcap").write_bytes(b"ok")
        events = collect(svc, lambda ev: len(of(ev, FileDone)) == 2, 15)
        (cap / "site-b").mkdir()  # a directory created later is watched too
        (cap / "site-b" / "later-1.pcap").write_bytes(b"ok")
        events = collect(svc, lambda ev: len(of(ev, FileDone)) == 3, 15, events)
        time.sleep(1.2)  # a rescan must not pick up the moved files
        events.extend(svc.poll_events(0))
    finally:
        svc.stop(5)
    assert sorted(done_names(events)) == ["deep-1.pcap", "later-1.pcap", "top-1.pcap"]
    moved = sorted(str(p.relative_to(cap / "done")) for p in (cap / "done").rglob("*.pcap"))
    assert moved == ["site-a/deep-1.pcap", "site-b/later-1.pcap", "top-1.pcap"]


def test_shards_keep_a_rotation_series_on_one_instance() -> None:
    """Files of one named series land on one shard; unnamed files spread by name."""
    import re

    from netmon_exporter.ingest.names import in_shard, owned

    c = Config().capture
    source = re.compile(c.source_pattern)
    owners: dict[str, set[int]] = {}
    for index in range(3):
        for sensor in ("eth0", "eth1", "edge", "dmz", "lab"):
            for n in range(5):
                if owned(f"{sensor}-{n:04d}.pcap", c.patterns, source, index, 3):
                    owners.setdefault(sensor, set()).add(index)
        for n in range(30):
            name = f"{1700000000 + 60 * n}.pcap"
            if owned(name, c.patterns, source, index, 3):
                owners.setdefault(name, set()).add(index)
    assert all(len(v) == 1 for v in owners.values()), owners
    for sensor in ("eth0", "eth1", "edge", "dmz", "lab"):
        assert owners[sensor] == {i for i in range(3) if in_shard(sensor, i, 3)}
    spread = {next(iter(owners[f"{1700000000 + 60 * n}.pcap"])) for n in range(30)}
    assert spread == {0, 1, 2}
