"""Worker processes that run the per-file pipeline and can be killed.

Each worker is its own process with its own pipe, handling one file at a time,
so a hung or runaway parse can be killed (SIGKILL) at its deadline and replaced
without touching the others (``concurrent.futures.ProcessPoolExecutor`` cannot
kill one task). Workers are forked from a forkserver (safe with the daemon's
threads, cheap to replace) and die with it when the daemon dies, even by
``kill -9``.

A worker does not send every column of every flow back: as the file's flows are
finished it keeps what analysis needs (:class:`~..flow_sample.FlowSample`: narrow
columns, at most ``FILE_ROW_CAP`` rows, the exact tally of all flows), and sends those
rows in pieces of about ``_PART_ROWS`` before the result, so neither side ever holds
a pickle of the whole file. The main process joins the pieces into the result.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import inspect
import itertools
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import hash_key
from ..flow_sample import FILE_ROW_CAP, FlowSample, SampledFlows, narrow, progress_tally
from ..flow_schema import FlowBatch
from ..heap import map_large_blocks, release_free_memory
from ..pipeline import CaptureFormatError, FileResult, FlowSettings
from . import carry_store

log = logging.getLogger("netmon_exporter.ingest")

ProcessFn = Callable[..., FileResult]
NOT_RUN = "not_run"  # outcome reason: a task queued behind one that did not succeed
_PART_ROWS = 32768  # flow rows per message from a worker (a few MB pickled)
_TRIM_AFTER_FLOWS = 20_000  # give free memory back after files with this many flows

_CTX = multiprocessing.get_context("forkserver")
_CTX.set_forkserver_preload(
    [
        "netmon_exporter.lean_start",  # workers only parse: no SciPy (before numba)
        "netmon_exporter.pipeline",
        "netmon_exporter.ingest.workers",
        "netmon_exporter.ingest.warm_pipeline",
    ]
)


@dataclass(frozen=True)
class Task:
    """One file to process (plain, picklable values)."""

    key: int  # ledger entry id
    path: str
    settings: FlowSettings
    carry: bytes | None
    csv_dir: str | None
    final: bool
    timeout_seconds: float
    csv_path: str | None = None  # exact flow CSV path, for process functions that take one
    # where carried flows live: ``carry`` may be a carry_store reference, and the
    # file's own carry is written there (None: carries travel inline, as bytes)
    carry_dir: str | None = None
    # queued behind this ledger row's task on the same worker: run only if that task
    # succeeded there, going on with the flows it left open (``carry`` is then unused)
    after: int = 0


@dataclass(frozen=True)
class Outcome:
    """What became of a task: a result, or a failure reason and message."""

    task: Task
    result: FileResult | None = None
    reason: str = ""  # metrics.FAIL_REASONS when failed
    message: str = ""
    seconds: float = 0.0


@dataclass
class _Worker:
    proc: Any
    conn: multiprocessing.connection.Connection
    task: Task | None = None
    started: float = 0.0
    retiring: bool = False
    ident: int = field(default=0)
    parts: list[FlowBatch] = field(default_factory=list)  # rows of the task's result so far
    queued: Task | None = None  # sent behind ``task``; the worker starts it when done
    # carries this worker wrote lately: it may still hold their flow tables (_KeptTables)
    holds: collections.deque[bytes] = field(default_factory=lambda: collections.deque(maxlen=4))


def _die_with_parent() -> None:
    """Ask the kernel to SIGKILL us when our parent (the forkserver) exits."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    parent = os.getppid()

    def watch() -> None:  # fallback where prctl is missing
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _run(process: ProcessFn, task: Task, streams: bool) -> tuple[FileResult, FlowSample | None]:
    """Process ``task``'s file; with ``streams``, keep only what analysis needs of its flows."""
    extra: dict[str, Any] = {"csv_path": Path(task.csv_path)} if task.csv_path else {}
    hash_key.use(task.settings.hash_key)  # the daemon's: rows ranked as the main process ranks them
    sample = FlowSample(FILE_ROW_CAP) if streams else None
    if sample is not None:
        extra.update(collect=False, on_flows=sample.add)
    keeps = task.carry_dir is not None and _takes(process, "save_carry")
    if keeps:
        extra["save_carry"] = lambda table: _KEPT.save(task, table)
    carry, lost = _carried(task)
    result = process(
        Path(task.path),
        task.settings,
        carry=carry,
        csv_dir=Path(task.csv_dir) if task.csv_dir else None,
        final=task.final,
        **extra,
    )
    carry = None
    if sample is not None and task.settings.interim_seconds > 0 and result.last_ts is not None:
        # flows are cut at window boundaries: windows before the newest may close now
        sample.merge(FlowBatch.empty(), progress_tally(result.last_ts))
    if result.carry is not None and task.carry_dir and not carry_store.is_ref(result.carry):
        state = result.carry
        ref = _stored(task, lambda: carry_store.save(task.carry_dir or "", task.key, state))
        result = dataclasses.replace(result, carry=ref)
    if lost:
        result = dataclasses.replace(result, warnings=(*result.warnings, lost))
    return result, sample


def _stored(task: Task, write: Callable[[], bytes]) -> bytes:
    try:
        return write()
    except OSError as exc:
        msg = f"cannot write the flows carried to the next file to {task.carry_dir}: {exc}"
        raise CaptureFormatError(msg, "output") from exc


class NotRun(Exception):
    """A task queued behind another whose file did not succeed in this worker."""


# What this worker's last task left: its ledger row, and the carry of its file (None:
# no flows left open) or _FAILED. A task queued behind it goes on from there.
_FAILED = b""
_last: tuple[int, bytes | None] = (0, _FAILED)


def _behind(task: Task) -> Task:
    """The task as run: one queued behind another takes that one's carry, or is not run."""
    if not task.after:
        return task
    key, carry = _last
    if key != task.after or carry == _FAILED:
        raise NotRun(f"not run: the file before it (ledger row {task.after}) did not succeed")
    return dataclasses.replace(task, carry=carry)


def _carried(task: Task) -> tuple[Any, str]:
    """The flows carried into ``task``'s file, and why they were lost (or "")."""
    if task.carry is None:
        return None, ""
    kept = _KEPT.take(task.carry)
    if kept is not None:
        return kept, ""
    try:
        return carry_store.load(task.carry_dir, task.carry), ""
    except carry_store.CarryError as exc:
        # the previous file's open flows are gone; this file and the series go on
        return None, f"flows carried into {task.path} lost: {exc}"


class _KeptTables:
    """Flow tables this worker left open at the end of its last files, by carry reference.

    The carry is always written (the ledger commits its reference with the file's done
    mark); when the next file of the series comes to the same worker (the pool prefers
    it), the live table goes on without being read back and rebuilt. A table is taken
    out while a file uses it, so a file that fails leaves nothing half-updated here.

    Memory follows need: a table's arrays keep every row it ever used, so one that once
    held far more flows than it holds now (a flood passed) is not kept (the next file
    rebuilds it, at its size, from the carry file), and the kept tables' rows stay within
    ``flows.max_open_flows`` in all (what one table may use anyway), at most ``_MAX_KEPT``.
    """

    def __init__(self) -> None:
        self._tables: collections.OrderedDict[bytes, Any] = collections.OrderedDict()

    def save(self, task: Task, table: Any) -> bytes:
        arrays = table.state_arrays()
        ref = _stored(task, lambda: carry_store.save_arrays(task.carry_dir or "", task.key, arrays))
        rows = _rows(table)
        budget = max(task.settings.max_open_flows or _UNCAPPED_ROWS, _SMALL_ROWS)
        if rows <= max(4 * table.open_flows, _SMALL_ROWS) and rows <= budget:
            self._tables[ref] = table
        while len(self._tables) > _MAX_KEPT or (
            sum(_rows(t) for t in self._tables.values()) > budget
        ):
            self._tables.popitem(last=False)
        return ref

    def take(self, ref: bytes) -> Any:
        return self._tables.pop(ref, None)


def _rows(table: Any) -> int:
    """Rows the table's arrays have used (they never shrink): what it costs to keep."""
    return len(table.status)


_MAX_KEPT = 4
_SMALL_ROWS = 65_536  # ~75 MB of accumulators at most for a table kept whatever its use
_UNCAPPED_ROWS = 200_000  # the budget when flows.max_open_flows is 0 (no cap)
_KEPT = _KeptTables()  # per worker process


def _send_rows(conn: multiprocessing.connection.Connection, sample: FlowSample) -> SampledFlows:
    """Send the sample's rows in parts; return what is left to send with the result."""
    parts = sample.parts(_PART_ROWS)
    while parts:
        conn.send(("part", parts.pop(0)))
    empty = narrow(FlowBatch.empty())
    return SampledFlows(empty.columns, sample.tally())


def worker_main(conn: multiprocessing.connection.Connection, process: ProcessFn) -> None:
    """Run tasks from ``conn`` until it closes; report each outcome back."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C goes to the daemon, which decides
    _die_with_parent()
    map_large_blocks()
    streams = takes_flow_stream(process)
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        t0 = time.perf_counter()
        sample: FlowSample | None = None
        result: FileResult | None = None
        global _last
        try:
            ran, _last = _behind(task), (task.key, _FAILED)
            result, sample = _run(process, ran, streams)
            msg: tuple[Any, ...] = ("ok", result)
            _last = (task.key, result.carry)
        except NotRun as exc:
            msg = ("fail", NOT_RUN, str(exc))
        except CaptureFormatError as exc:
            msg = ("fail", exc.reason, str(exc))
        except MemoryError:
            msg = ("fail", "too_large", "ran out of memory while processing the file")
        except OSError as exc:
            msg = ("fail", "io", f"{type(exc).__name__}: {exc}")
        except Exception as exc:  # noqa: BLE001 - a bug on one file must not kill the worker
            tb = traceback.extract_tb(exc.__traceback__)
            where = f" at {tb[-1].filename}:{tb[-1].lineno}" if tb else ""
            msg = ("fail", "internal", f"{type(exc).__name__}: {exc}{where}")
        msg = (*msg, time.perf_counter() - t0)
        # big files leave free pages behind (a failure may be a runaway file)
        trim = msg[0] != "ok" or getattr(msg[1], "flow_count", 0) >= _TRIM_AFTER_FLOWS
        try:
            if sample is not None and msg[0] == "ok":
                msg = ("ok", dataclasses.replace(msg[1], flows=_send_rows(conn, sample)), msg[-1])
            sample = None
            conn.send(msg)
        except (BrokenPipeError, EOFError):
            return
        except Exception as exc:  # noqa: BLE001 - e.g. an unpicklable result
            conn.send(
                ("fail", "internal", f"cannot return the result: {exc}", time.perf_counter() - t0)
            )
        result = sample = None
        msg = ()
        if trim:
            release_free_memory()  # an idle worker should not sit on a flood's worth of pages


def takes_csv_path(process: ProcessFn) -> bool:
    """Return whether ``process`` accepts ``csv_path`` (the real pipeline does)."""
    return _takes(process, "csv_path")


def takes_flow_stream(process: ProcessFn) -> bool:
    """Return whether ``process`` can hand out flows as it goes (``collect``, ``on_flows``)."""
    return _takes(process, "collect") and _takes(process, "on_flows")


def _takes(process: ProcessFn, name: str) -> bool:
    try:
        params = inspect.signature(process).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def _joined(result: FileResult, parts: list[FlowBatch]) -> FileResult:
    """Put the rows a worker sent in parts back into its result."""
    if not parts:
        return result
    flows = result.flows
    tally = flows.tally if isinstance(flows, SampledFlows) else None
    rows = FlowBatch.concat([*parts, flows])
    parts.clear()
    if tally is None:
        return dataclasses.replace(result, flows=rows)
    return dataclasses.replace(result, flows=SampledFlows(rows.columns, tally))


class WorkerPool:
    """A resizable set of worker processes, each running at most one task."""

    def __init__(self, process: ProcessFn, size: int) -> None:
        self._process = process
        self._target = max(1, size)
        self._workers: list[_Worker] = []
        self._ids = itertools.count(1)
        self._spawn_blocked_until = 0.0
        self.spawn_error: str | None = None

    # -- size
    @property
    def target(self) -> int:
        return self._target

    def resize(self, size: int) -> None:
        """Change the number of workers; busy ones retire only after their file (and
        the one queued behind it, if any)."""
        self._target = max(1, size)
        self._reconcile()

    def alive(self) -> int:
        return sum(1 for w in self._workers if not w.retiring)

    def working(self) -> int:
        """Worker processes busy with a file (what is queued behind it not counted)."""
        return sum(1 for w in self._workers if w.task is not None)

    def busy(self) -> list[Task]:
        return [t for w in self._workers for t in (w.task, w.queued) if t is not None]

    def idle(self) -> int:
        self._reconcile()
        return sum(1 for w in self._workers if w.task is None and not w.retiring)

    def _reconcile(self) -> None:
        active = [w for w in self._workers if not w.retiring]
        excess = len(active) - self._target
        if excess > 0:
            for w in sorted(active, key=lambda w: w.task is not None):
                if excess == 0:
                    break
                w.retiring = True
                excess -= 1
                if w.task is None:
                    self._retire(w)
        while sum(1 for w in self._workers if not w.retiring) < self._target:
            if time.monotonic() < self._spawn_blocked_until:
                return
            try:
                self._workers.append(self._spawn())
            except Exception as exc:  # noqa: BLE001 - e.g. out of processes or memory
                self.spawn_error = f"cannot start a worker process: {exc!r}"
                log.error("cannot start a worker process", extra={"err": str(exc)})
                self._spawn_blocked_until = time.monotonic() + 5.0
                return
            self.spawn_error = None

    def _spawn(self) -> _Worker:
        parent, child = _CTX.Pipe(duplex=True)
        proc = _CTX.Process(
            target=worker_main, args=(child, self._process), name="netmon-worker", daemon=True
        )
        proc.start()
        child.close()
        return _Worker(proc=proc, conn=parent, ident=next(self._ids))

    def _retire(self, w: _Worker, kill: bool = False) -> None:
        with contextlib.suppress(OSError, ValueError):
            if not kill:
                w.conn.send(None)
        with contextlib.suppress(OSError):
            w.conn.close()
        if kill and w.proc.is_alive():
            w.proc.kill()
        w.proc.join(timeout=2 if not kill else 5)
        if w.proc.is_alive():
            w.proc.kill()
            w.proc.join(timeout=5)
        if w in self._workers:
            self._workers.remove(w)

    # -- work
    def submit(self, task: Task) -> None:
        """Give ``task`` to an idle worker (the caller checked :meth:`idle`).

        The worker that wrote the task's carry is preferred: it may still hold the flow
        table, which then goes on without being read back.
        """
        idle = [w for w in self._workers if w.task is None and not w.retiring]
        idle.sort(key=lambda w: task.carry is None or task.carry not in w.holds)
        self._hand_over_table(task)
        if not idle:
            raise RuntimeError("no idle worker")
        w = idle[0]
        try:
            w.conn.send(task)
        except (OSError, ValueError):
            self._retire(w, kill=True)
            self._reconcile()
            return self.submit(task)
        w.task = task
        w.parts = []
        w.started = time.monotonic()

    def queueable(self, key: int) -> bool:
        """Whether a task may be queued behind the running task of ledger row ``key``."""
        return any(
            w.task is not None and w.task.key == key and w.queued is None and not w.retiring
            for w in self._workers
        )

    def submit_after(self, task: Task) -> bool:
        """Queue ``task`` behind the running task of ledger row ``task.after``, on its
        worker (which starts it as soon as that one is done); False when that cannot be
        done (no such task running, something queued there already, worker retiring)."""
        for w in self._workers:
            if w.task is not None and w.task.key == task.after:
                if w.queued is not None or w.retiring:
                    return False
                try:
                    w.conn.send(task)
                except (OSError, ValueError):
                    return False  # the worker is dying: its sentinel tells the rest
                w.queued = task
                return True
        return False

    def queue_slots(self) -> int:
        """Busy workers with nothing queued behind their file (see :meth:`submit_queued`)."""
        return len(self._with_queue_room())

    def _with_queue_room(self) -> list[_Worker]:
        return [
            w for w in self._workers if w.task is not None and w.queued is None and not w.retiring
        ]

    def submit_queued(self, task: Task) -> bool:
        """Queue ``task``, a file that starts from its own carry (not one going on from
        the running file, see :meth:`submit_after`), behind the running file of a busy
        worker: the one that holds its flow table if any, else the one busy longest.
        False when no worker has room (each has something queued, or is retiring), or
        when the task holds its carried flows inline (a ledger written before carry
        files): a worker reads its next task only once its file is done, so a task
        larger than the pipe's buffer would block this send until then, while the
        worker may be blocked sending its result rows here; neither would go on."""
        if task.carry is not None and not carry_store.is_ref(task.carry):
            return False
        free = self._with_queue_room()
        if not free:
            return False
        w = min(free, key=lambda w: (task.carry is None or task.carry not in w.holds, w.started))
        try:
            w.conn.send(task)
        except (OSError, ValueError):
            return False  # the worker is dying: its sentinel tells the rest
        w.queued = task
        self._hand_over_table(task)
        return True

    def _hand_over_table(self, task: Task) -> None:
        """The flow table a worker kept for ``task``'s carry goes with the task (it is
        taken out of that worker's table store when the task starts there)."""
        if task.carry is not None:
            for w in self._workers:
                if task.carry in w.holds:
                    w.holds.remove(task.carry)

    @staticmethod
    def _not_run(task: Task | None, why: str) -> list[Outcome]:
        if task is None:
            return []
        return [Outcome(task, reason=NOT_RUN, message=f"not run: {why}")]

    def wait(self, timeout: float, wake: Sequence[Any] = ()) -> list[Outcome]:
        """Wait up to ``timeout`` for results, crashes or a ``wake`` fd; return outcomes."""
        conns = {w.conn: w for w in self._workers if w.task is not None}
        sentinels = {w.proc.sentinel: w for w in self._workers}
        ready = multiprocessing.connection.wait([*conns, *sentinels, *wake], timeout)
        outcomes: list[Outcome] = []
        for obj in ready:
            w = conns.get(obj)  # type: ignore[call-overload]
            if w is not None and w in self._workers:
                outcomes.extend(self._receive(w))
        for obj in ready:
            w = sentinels.get(obj)
            if w is not None and w in self._workers:
                outcomes.extend(self._reap(w))
        outcomes.extend(self.check_timeouts())
        self._reconcile()
        return outcomes

    def _receive(self, w: _Worker) -> list[Outcome]:
        task = w.task
        try:
            msg = w.conn.recv()
            while msg[0] == "part":  # rows of the result, before the result itself
                w.parts.append(msg[1])
                if not w.conn.poll():
                    return []
                msg = w.conn.recv()
        except (EOFError, OSError):
            return []  # the sentinel tells us it died
        except Exception as exc:  # noqa: BLE001 - e.g. a result that cannot be unpickled here
            msg = (
                "fail",
                "internal",
                f"cannot read the worker's result: {exc}",
                time.monotonic() - w.started,
            )
        w.task, w.queued = w.queued, None  # the worker has started what was queued
        w.started = time.monotonic()
        parts, w.parts = w.parts, []
        if task is None:
            return []
        if w.retiring and w.task is None:
            self._retire(w)
        if msg[0] == "ok":
            if msg[1].carry is not None:
                w.holds.append(msg[1].carry)
            return [Outcome(task, result=_joined(msg[1], parts), seconds=msg[2])]
        return [Outcome(task, reason=msg[1], message=msg[2], seconds=msg[3])]

    def _reap(self, w: _Worker) -> list[Outcome]:
        """A worker process ended: fail its task (if any) and forget it."""
        if w.task is not None and w.conn.poll():
            got = self._receive(w)  # it answered before dying
            if got:
                started, w.task = w.task, None  # what it had started behind that answer
                self._retire(w, kill=True)
                return [*got, *self._not_run(started, "its worker process ended")]
        task, queued = w.task, w.queued
        w.proc.join(timeout=1)
        code = w.proc.exitcode
        self._retire(w, kill=True)
        if task is None:
            return []
        how = (
            f"killed by signal {-code}"
            if code is not None and code < 0
            else f"exited with status {code}"
        )
        return [
            Outcome(
                task,
                reason="worker_crash",
                message=f"worker process {how} while processing the file",
                seconds=time.monotonic() - w.started,
            ),
            *self._not_run(queued, "the file before it crashed its worker"),
        ]

    def check_timeouts(self) -> list[Outcome]:
        now = time.monotonic()
        out = []
        for w in list(self._workers):
            if w.task is None or now - w.started < w.task.timeout_seconds:
                continue
            task, queued = w.task, w.queued
            self._retire(w, kill=True)
            out.append(
                Outcome(
                    task,
                    reason="timeout",
                    message=f"killed after {task.timeout_seconds:g}s (processing."
                    "file_timeout_seconds); the worker was replaced",
                    seconds=now - w.started,
                )
            )
            out += self._not_run(queued, "the file before it timed out")
        return out

    def shutdown(self, timeout: float, on_outcome: Callable[[Outcome], None]) -> list[Task]:
        """Let busy workers finish within ``timeout``, then kill them; return unfinished tasks."""
        deadline = time.monotonic() + max(0.0, timeout)
        self._target = 0
        while any(w.task is not None for w in self._workers):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            for outcome in self.wait(min(left, 0.2)):
                on_outcome(outcome)
        unfinished = self.busy()
        for w in list(self._workers):
            self._retire(w, kill=w.task is not None)
        return unfinished
