"""Which capture to process next and what becomes of it: the pure core of ingestion.

No threads, clocks or OS calls. The shell (``service.py``) tells the
:class:`Scheduler` what it saw — looks at files, ledger rows, worker outcomes,
the time — and carries out the decisions that come back (``decisions.py``).
The rules that make ingestion correct live here:

- files of one rotation series run one at a time, in time order (mtime, then
  the number in the name): a file waits for every earlier file of its series; the
  next one may be queued behind the running one, to the same worker, which goes on
  with its open flows only if that file succeeded (:meth:`Scheduler.follow_ups`);
- a failed attempt is retried after ``retry_delay × 2^(attempt−1)`` seconds
  (capped at an hour, plus up to 50 % jitter from the injected rng), up to
  ``max_retries`` retries, then quarantined;
- outputs that cannot be written never use up an attempt nor quarantine a file;
  they are retried with a doubling delay of at most five minutes;
- flows carried across a rotation are ended when no file of the series is pending
  within the flow idle timeout, or when a file of the series is quarantined;
- a file that changes after it was found ready is a new file; one set aside
  after an unexpected error stays aside until it changes.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import os
import re
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol

from ..config import Config
from .decisions import (
    Decision,
    Dispose,
    EndCarry,
    Failed,
    FileInfo,
    Forget,
    HandBack,
    Interrupted,
    NotRun,
    OutputFailed,
    Quarantine,
    RecordDone,
    RecordQuarantine,
    RecordRetry,
    Result,
    RetryOutput,
    StartFile,
    Succeeded,
    Vanished,
    Why,
)
from .names import file_kind, series_of
from .records import DONE, FAILED, QUARANTINED, Entry, Identity

MAX_BACKOFF_SECONDS = 3600.0
MAX_OUTPUT_BACKOFF_SECONDS = 300.0  # outputs unwritable: retry at least this often
_DIGITS = re.compile(r"(\d+)")


class Uniform(Protocol):
    """Where jitter comes from (``random.Random`` in production, a stub in tests)."""

    def uniform(self, a: float, b: float) -> float: ...


class FileState(Enum):
    UNRIPE = "unripe"  # found; the age gate has not passed it yet
    READY = "ready"  # in the ledger, waiting for a worker
    RETRY = "retry"  # waiting until ``next_retry``
    RUNNING = "running"  # handed to a worker


@dataclass(frozen=True)
class Rules:
    """The settings the scheduler decides by."""

    max_retries: int = 3
    retry_delay_seconds: float = 5.0
    carry_across_files: bool = True
    carry_idle_seconds: float = 120.0  # flows.idle_timeout_seconds
    source: re.Pattern[str] | None = None  # capture.source_pattern
    # How far (capture time, by the files' mtimes) a series may run ahead of another
    # series whose earliest file is ready or running: half a window, so that no window
    # closes (the watermark is one window behind the latest packet) before the slower
    # series' flows for it came. A series further behind than ``backfill_seconds`` is a
    # backfill (its flows get windows of their own) and holds nobody back.
    series_lead_seconds: float = 30.0
    backfill_seconds: float = 3600.0

    @staticmethod
    def of(cfg: Config) -> Rules:
        from ..window import BACKFILL_SECONDS

        return Rules(
            max_retries=cfg.processing.max_retries,
            retry_delay_seconds=cfg.processing.retry_delay_seconds,
            carry_across_files=cfg.flows.carry_across_files,
            carry_idle_seconds=cfg.flows.idle_timeout_seconds,
            source=re.compile(cfg.capture.source_pattern),
            series_lead_seconds=cfg.windows.length_seconds / 2,
            backfill_seconds=BACKFILL_SECONDS,
        )


def _natural(name: str) -> tuple[Any, ...]:
    return tuple(int(p) if p.isdigit() else p for p in _DIGITS.split(name))


# Entries a lazy heap may hold beyond twice the followed files before it is compacted.
HEAP_SLACK = 1024
# Heap entries a scheduling question may look at before it looks at every series instead
# (their heads' ready times and capture times in no helpful order; the answer is the same).
LOOK_BUDGET = 256


class _OverBudget(Exception):
    """A question of the heaps looked at more than ``LOOK_BUDGET`` entries."""


# Series heads ready within this many seconds of each other run in capture-time order.
TOGETHER_SECONDS = 60.0


def _order(info: FileInfo) -> tuple[Any, ...]:
    """Time order within a series: mtime, then the natural order of the name."""
    return (info.identity.mtime_ns, _natural(os.path.basename(info.path)))


@dataclass
class TrackedFile:
    """A file the scheduler follows until it is done, quarantined or gone."""

    info: FileInfo
    state: FileState = FileState.UNRIPE
    key: int = 0  # ledger row, once admitted
    ready_at: float = 0.0
    attempts: int = 0  # failed attempts so far (output failures do not count)
    next_retry: float = 0.0
    output_failures: int = 0  # consecutive attempts whose outputs could not be written
    use_carry: bool = False
    order: tuple[Any, ...] = field(default=())

    def __post_init__(self) -> None:
        self.order = _order(self.info)

    @property
    def waiting(self) -> bool:
        return self.state in (FileState.READY, FileState.RETRY)


@dataclass(frozen=True)
class Backlog:
    """How much work there is, for gauges and health."""

    backlog: int  # ready or waiting for a retry
    in_progress: int
    not_ready: int
    oldest_ready_age_seconds: float


class Scheduler:
    """Follow files from first look to done or quarantine (see the module docstring)."""

    def __init__(self, rules: Rules, rng: Uniform) -> None:
        self.rules = rules
        self._rng = rng
        self._files: dict[str, TrackedFile] = {}
        # the followed files of each series in time order, (order, path), and those of no
        # series (their order is the heap below): what `due` and `follow_ups` look at
        self._series: dict[str, list[tuple[tuple[Any, ...], str]]] = {}
        self._loose: set[str] = set()
        # the followed files by state, and three heaps read lazily (an entry stands only
        # while its file is still followed, in that state, with those times): the loose
        # files waiting for a worker by (ready_at, order), the loose files waiting for a
        # retry by next_retry, every ready file by ready_at. What each round asks (what is
        # due, how much waits, since when) then costs the series and the files it takes,
        # not every file followed: a backlog of files of no series (hosts' captures
        # copied in, an outage) would otherwise cost each round all of them, and the
        # backlog the square of its length.
        self._by_state: dict[FileState, dict[str, TrackedFile]] = {s: {} for s in FileState}
        self._loose_waiting: list[tuple[float, tuple[Any, ...], int, TrackedFile]] = []
        self._loose_retrying: list[tuple[float, int, TrackedFile]] = []
        self._ready_since: list[tuple[float, int, TrackedFile]] = []
        # the series' heads (earliest followed file) likewise: waiting for a worker by
        # (ready_at, order) and by order alone, and ready or running by (mtime, series)
        self._heads_waiting: list[tuple[float, tuple[Any, ...], int, TrackedFile]] = []
        self._heads_by_order: list[tuple[tuple[Any, ...], int, TrackedFile]] = []
        self._heads_active: list[tuple[int, str, int, TrackedFile]] = []
        self._pushes = itertools.count()
        self._looks = -1  # heap entries a question may still look at (-1: no limit)
        self.full_scans = 0  # questions answered by looking at every series instead
        self._running: dict[int, TrackedFile] = {}
        self._finished: dict[str, Identity] = {}  # done files still in place: not looked at
        self._set_aside: dict[str, Identity] = {}  # contained after an error, until changed
        self._carries: dict[str, float] = {}  # series holding carried flows -> when stored

    # ------------------------------------------------------------------ settings
    def configure(self, rules: Rules) -> None:
        self.rules = rules

    def rejudge(self) -> None:
        """Capture settings changed: forget waiting files so they are judged anew."""
        self._drop_waiting()
        self._finished.clear()  # a changed after_processing applies to kept files too

    def resync(self, carries: dict[str, float]) -> None:
        """The ledger was (re)opened: take its carries, and look everything up again."""
        self._carries = dict(carries)
        self._drop_waiting()

    def _drop_waiting(self) -> None:
        for path in [p for p, f in self._files.items() if f.state is not FileState.RUNNING]:
            self._untrack(path)

    def _track(self, f: TrackedFile) -> None:
        """Follow ``f`` (replacing what was followed under its path)."""
        path = f.info.path
        self._untrack(path)
        self._files[path] = f
        self._by_state[f.state][path] = f
        series = f.info.series
        if series is None:
            self._loose.add(path)
        else:
            # a new file is unripe: it enters the heads' heaps when it is ready (or when
            # it becomes the head, if later); the head it displaces leaves them
            bisect.insort(self._series.setdefault(series, []), (f.order, path))

    def _untrack(self, path: str) -> TrackedFile | None:
        f = self._files.pop(path, None)
        if f is None:
            return None
        del self._by_state[f.state][path]
        series = f.info.series
        if series is None:
            self._loose.discard(path)
            return f
        files = self._series[series]
        at = bisect.bisect_left(files, (f.order, path))
        del files[at]
        if not files:
            del self._series[series]
        elif at == 0:
            self._heads(self._files[files[0][1]])
        return f

    # ------------------------------------------------------------------ looking
    def observe(self, path: str, identity: Identity | None) -> list[Decision]:
        """Take one look at a path (``None``: it is gone, or is not to be opened)."""
        f = self._files.get(path)
        if f is not None and f.state is FileState.RUNNING:
            return []
        if identity is None:
            return self._drop(path, Why.GONE) if f is not None else []
        if f is None:
            if identity in (self._finished.get(path), self._set_aside.get(path)):
                return []
            self._set_aside.pop(path, None)
            self._track(self._new_file(path, identity))
            return []
        if f.info.identity == identity:
            return []
        if f.waiting:  # changed after it was found ready: a new file
            out = self._drop(path, Why.CHANGED)
            return out + self.observe(path, identity)
        self._track(self._new_file(path, identity))  # still unripe: it grew
        return []

    def _new_file(self, path: str, identity: Identity) -> TrackedFile:
        name = os.path.basename(path)
        return TrackedFile(
            FileInfo(path, identity, series_of(name, self.rules.source), file_kind(name))
        )

    def scanned(self, found: Collection[str]) -> list[Decision]:
        """A full scan found exactly ``found``: what is missing is gone."""
        out: list[Decision] = []
        for path in [p for p in self._files if p not in found]:
            out += self.observe(path, None)
        for table in (self._finished, self._set_aside):
            for path in [p for p in table if p not in found]:
                del table[path]
        return out

    def unripe(self) -> list[FileInfo]:
        """Files waiting for the age gate."""
        return [f.info for f in self._by_state[FileState.UNRIPE].values()]

    def paths(self) -> set[str]:
        return set(self._files)

    def is_unripe(self, path: str) -> bool:
        f = self._files.get(path)
        return f is not None and f.state is FileState.UNRIPE

    # ------------------------------------------------------------------ admission
    def admitted(self, info: FileInfo, entry: Entry, now: float) -> list[Decision]:
        """The age gate passed the file and the ledger has this row for it."""
        f = self._files.get(info.path)
        if f is None or f.state is not FileState.UNRIPE or f.info != info:
            return []
        f.key, f.ready_at, f.attempts = entry.id, entry.ready_at, entry.attempts
        if entry.state == DONE:  # a crash came between the done mark and the disposal
            return [*self._drop(info.path), Dispose(info, recovered=True)]
        if entry.state == QUARANTINED:  # likewise, before (or instead of) the move
            reason, message = entry.reason or "internal", entry.message or ""
            q = Quarantine(f.key, info, reason, message, entry.attempts, now, recovered=True)
            return [*self._drop(info.path), q]
        if entry.state == FAILED:
            f.next_retry = entry.next_retry or now
            self._set_state(f, FileState.RETRY)
        else:
            self._set_state(f, FileState.READY)
        return []

    # ------------------------------------------------------------------ dispatching
    def due(self, now: float, slots: int) -> list[StartFile]:
        """Up to ``slots`` files to start now.

        Files of no series: first come (ready), first served. Series heads that became
        ready within ``TOGETHER_SECONDS`` of the earliest ready head: in capture time
        order (mtime, then name) among themselves, placed as that earliest one. After a
        backlog (a restart, an outage) the series advance together, so one interface's
        files do not run minutes of capture time ahead of another's and close the windows
        the other still has flows for; a file that turns up later with an old mtime (a
        careless copy, or someone flooding the directory) still waits its turn.
        """
        if slots <= 0:
            return []
        busy = {f.info.series for f in self._running.values()}
        ready = self._loose_due(now, slots)
        self._looks = LOOK_BUDGET + 8 * slots
        try:
            heads, together = self._heads_due(now, slots, busy)
        except _OverBudget:  # the heaps' order says little here: look at every series
            self.full_scans += 1
            heads, together = self._heads_due_by_scan(now, busy)
        finally:
            self._looks = -1
        ready += heads

        def key(f: TrackedFile) -> tuple[Any, ...]:
            if f.info.series is not None and f.ready_at - together <= TOGETHER_SECONDS:
                return (together, f.order)
            return (f.ready_at, f.order)

        chosen = heapq.nsmallest(slots, ready, key=key)
        return [StartFile(f.key, f.info, self._uses_carry(f.info), f.attempts + 1) for f in chosen]

    def _heads_due(
        self, now: float, slots: int, busy: set[str | None]
    ) -> tuple[list[TrackedFile], float]:
        """The series heads that may start, earliest first (see :meth:`due`), from the
        heaps: the first sets ``together``; those ready by ``together`` +
        ``TOGETHER_SECONDS`` in capture-time order, then (too few of them) the later
        ones by ready time."""

        def startable(f: TrackedFile) -> bool:
            return (
                f.info.series not in busy
                and (f.state is FileState.READY or f.next_retry <= now)
                and not self._ahead_of(f)
            )

        first = self._take(self._heads_waiting, 1, startable)
        if not first:
            return [], 0.0
        together = first[0].ready_at
        group = self._take(
            self._heads_by_order,
            slots,
            lambda f: f.ready_at - together <= TOGETHER_SECONDS and startable(f),
        )
        if len(group) < slots:
            group += self._take(
                self._heads_waiting,
                slots - len(group),
                lambda f: f.ready_at - together > TOGETHER_SECONDS and startable(f),
            )
        return group, together

    def _heads_due_by_scan(
        self, now: float, busy: set[str | None]
    ) -> tuple[list[TrackedFile], float]:
        """:meth:`_heads_due` by looking at every series' head (every one that may start)."""
        ahead = self._ahead_by_scan()
        ready = [
            f
            for f in (
                self._files[files[0][1]] for s, files in self._series.items() if s not in busy
            )
            if (f.state is FileState.READY or (f.state is FileState.RETRY and f.next_retry <= now))
            and not ahead(f)
        ]
        return ready, min((f.ready_at for f in ready), default=0.0)

    # ------------------------------------------------------------------ the lazy heaps
    def _set_state(self, f: TrackedFile, state: FileState) -> None:
        path = f.info.path
        if self._files.get(path) is f:
            del self._by_state[f.state][path]
            self._by_state[state][path] = f
        f.state = state
        if state is FileState.READY:
            self._push(self._ready_since, (f.ready_at, next(self._pushes), f))
        if f.info.series is not None:
            if self._is_head(f):
                self._heads(f)
            return
        if state is FileState.READY:
            self._push(self._loose_waiting, (f.ready_at, f.order, next(self._pushes), f))
        elif state is FileState.RETRY:
            self._push(self._loose_retrying, (f.next_retry, next(self._pushes), f))

    def _followed(self, f: TrackedFile) -> bool:
        return self._files.get(f.info.path) is f

    def _is_head(self, f: TrackedFile) -> bool:
        series = f.info.series
        files = self._series.get(series) if series is not None else None
        return files is not None and files[0][1] == f.info.path and self._followed(f)

    def _heads(self, f: TrackedFile) -> None:
        """``f`` is its series' head now, or changed state as its head: enter it."""
        n = next(self._pushes)
        if f.state in (FileState.READY, FileState.RETRY):
            self._push(self._heads_waiting, (f.ready_at, f.order, n, f))
            self._push(self._heads_by_order, (f.order, n, f))
        if f.state in (FileState.READY, FileState.RUNNING):
            series = f.info.series
            assert series is not None
            self._push(self._heads_active, (f.info.identity.mtime_ns, series, n, f))

    def _take(
        self, heap: list[Any], k: int, wanted: Callable[[TrackedFile], bool]
    ) -> list[TrackedFile]:
        """Up to ``k`` files of ``heap``'s standing entries, in its order, that are
        ``wanted``; what stands is put back, what no longer does is dropped."""
        popped: list[Any] = []
        out: list[TrackedFile] = []
        seen: set[int] = set()
        try:
            while heap and len(out) < k:
                if self._looks == 0:
                    raise _OverBudget
                self._looks -= 1
                entry = heapq.heappop(heap)
                f = entry[-1]
                if id(f) in seen or not self._stands(heap, entry):
                    continue
                seen.add(id(f))
                popped.append(entry)
                if wanted(f):
                    out.append(f)
        finally:
            for entry in popped:
                heapq.heappush(heap, entry)
        return out

    def _stands(self, heap: list[Any], entry: tuple[Any, ...]) -> bool:
        """Whether ``entry`` of ``heap`` still speaks for its file (``now`` aside)."""
        f, when = entry[-1], entry[0]
        if not self._followed(f):
            return False
        if heap is self._loose_retrying:
            return f.state is FileState.RETRY and f.next_retry == when
        if heap is self._loose_waiting:
            return f.ready_at == when and f.state in (FileState.READY, FileState.RETRY)
        if heap is self._ready_since:
            return f.state is FileState.READY and f.ready_at == when
        if not self._is_head(f):
            return False
        if heap is self._heads_active:
            return f.state in (FileState.READY, FileState.RUNNING)
        return f.state in (FileState.READY, FileState.RETRY)  # waiting, by_order

    def _push(self, heap: list[Any], entry: tuple[Any, ...]) -> None:
        heapq.heappush(heap, entry)
        if len(heap) > 2 * len(self._files) + HEAP_SLACK:  # left behind: keep those standing
            seen: set[int] = set()
            kept = []
            for e in heap:
                if id(e[-1]) not in seen and self._stands(heap, e):
                    seen.add(id(e[-1]))
                    kept.append(e)
            heap[:] = kept
            heapq.heapify(heap)

    def _loose_due(self, now: float, k: int) -> list[TrackedFile]:
        """The ``k`` earliest loose files that may start now, by (ready_at, order)."""
        retrying, waiting = self._loose_retrying, self._loose_waiting
        while retrying and retrying[0][0] <= now:
            retry = heapq.heappop(retrying)
            if self._stands(retrying, retry):
                f = retry[2]
                self._push(waiting, (f.ready_at, f.order, next(self._pushes), f))
        return self._take(waiting, k, lambda f: f.state is FileState.READY or f.next_retry <= now)

    def _oldest_ready(self, now: float) -> float:
        """When the file ready longest became ready (``now`` if none is)."""
        heap = self._ready_since
        while heap:
            if self._stands(heap, heap[0]):
                return float(heap[0][0])
            heapq.heappop(heap)
        return now

    def follow_ups(self, now: float, limit: int) -> list[StartFile]:
        """Up to ``limit`` files to queue behind the running file of their series.

        A series whose earliest file runs and carries its flows on may have its next
        ready file queued to the same worker, so that worker goes on without waiting
        for the main process to record one file and hand out the next (a backlog after
        an outage, a burst of files). Only one file waits behind another, and only one
        that has not failed before: the worker runs it only if the file before it
        succeeded (else it comes back :class:`NotRun`, not an attempt). Only while no
        other file waits for a worker: with fewer workers than series, the series
        still take turns in capture-time order (:meth:`due`), none runs ahead.
        """
        if limit <= 0 or self.due(now, 1):
            return []
        out: list[StartFile] = []
        for head in list(self._running.values()):
            series = head.info.series
            files = self._series.get(series) if series is not None else None
            if not files or len(files) < 2 or files[0][1] != head.info.path:
                continue  # no next file, or a file came in before the running one
            second = self._files[files[1][1]]
            if (
                head.use_carry
                and second.state is FileState.READY
                and second.attempts == 0
                and self._uses_carry(second.info)
                and not self._ahead_of_budgeted(second)
            ):
                out.append(StartFile(second.key, second.info, True, 1, after=head.key))
                if len(out) == limit:
                    break
        return out

    def _ahead_of_budgeted(self, f: TrackedFile) -> bool:
        self._looks = LOOK_BUDGET
        try:
            return self._ahead_of(f)
        except _OverBudget:
            self.full_scans += 1
            return self._ahead_by_scan()(f)
        finally:
            self._looks = -1

    def _ahead_of(self, f: TrackedFile) -> bool:
        """Whether starting a file would take its series more than the allowed lead
        (``Rules.series_lead_seconds``) ahead of another series whose earliest file is
        ready or running and became ready no later than ``TOGETHER_SECONDS`` after it.

        Series run side by side on their own workers after a backlog or a burst, and
        one of them (a busier interface, the worker sharing a core with the main
        process) would otherwise pull ahead and close windows the other still has
        flows for. The series furthest behind is never held, so all go on. Nobody is
        held back by a series whose file fails (it waits for a retry), is not yet
        written, turned up much later with an old mtime (a careless copy, or someone
        flooding the directory: it waits its turn, see :meth:`due`), or is more than
        ``Rules.backfill_seconds`` behind (a backfill gets windows of its own).
        """
        series = f.info.series
        if series is None:
            return False
        limit = f.ready_at + TOGETHER_SECONDS
        # the earliest capture among the other series' heads ready (or running) by then
        behind = self._take(
            self._heads_active, 1, lambda h: h.info.series != series and h.ready_at <= limit
        )
        if not behind:
            return False
        gap = f.info.identity.mtime_ns - behind[0].info.identity.mtime_ns
        lead = int(self.rules.series_lead_seconds * 1e9)
        return lead < gap <= int(self.rules.backfill_seconds * 1e9)

    def _ahead_by_scan(self) -> Callable[[TrackedFile], bool]:
        """:meth:`_ahead_of` for any file, from every series' head (sorted once)."""
        heads: list[tuple[float, int, str]] = []
        for series, files in self._series.items():
            f = self._files[files[0][1]]
            if f.state is FileState.READY or f.state is FileState.RUNNING:
                heads.append((f.ready_at, f.info.identity.mtime_ns, series))
        if len(heads) < 2:
            return lambda f: False
        heads.sort()
        ready_times = [h[0] for h in heads]
        # the two earliest captures among the heads ready up to each one (prefixes)
        firsts: list[tuple[tuple[int, str], tuple[int, str] | None]] = []
        best: tuple[int, str] | None = None
        runner_up: tuple[int, str] | None = None
        for _, mtime_ns, series in heads:
            here = (mtime_ns, series)
            if best is None or here < best:
                best, runner_up = here, best
            elif runner_up is None or here < runner_up:
                runner_up = here
            firsts.append((best, runner_up))
        lead = int(self.rules.series_lead_seconds * 1e9)
        backfill = int(self.rules.backfill_seconds * 1e9)

        def ahead(f: TrackedFile) -> bool:
            if f.info.series is None:
                return False
            i = bisect.bisect_right(ready_times, f.ready_at + TOGETHER_SECONDS) - 1
            if i < 0:
                return False
            first, second = firsts[i]
            behind = second if first[1] == f.info.series else first
            if behind is None:
                return False
            return lead < f.info.identity.mtime_ns - behind[0] <= backfill

        return ahead

    def _uses_carry(self, info: FileInfo) -> bool:
        return self.rules.carry_across_files and info.series is not None and info.kind != "csv"

    def started(self, start: StartFile) -> None:
        """The shell handed ``start`` to a worker."""
        f = self._files.get(start.file.path)
        if f is None or f.key != start.key:
            return
        f.use_carry = start.use_carry
        self._set_state(f, FileState.RUNNING)
        self._running[f.key] = f

    @property
    def in_progress(self) -> int:
        return len(self._running)

    def running(self) -> list[int]:
        return list(self._running)

    def running_file(self, key: int) -> FileInfo | None:
        f = self._running.get(key)
        return f.info if f is not None else None

    # ------------------------------------------------------------------ outcomes
    def outcome(self, key: int, result: Result, now: float) -> list[Decision]:
        """What to do now that the attempt on row ``key`` ended."""
        f = self._running.pop(key, None)
        if f is None:
            return []  # set aside meanwhile
        if isinstance(result, Succeeded):
            return self._succeeded(f, result.carry, now)
        if isinstance(result, OutputFailed):
            return self._output_failed(f, result.message, now)
        if isinstance(result, Failed):
            return self._failed(f, result, now)
        if isinstance(result, Interrupted):
            return [HandBack(key, f.info), *self._drop(f.info.path)]
        if isinstance(result, NotRun):
            self._set_state(f, FileState.READY)  # waits for its turn again, as it was
            return [HandBack(key, f.info, again=True)]
        assert isinstance(result, Vanished)
        return self._drop(f.info.path, Why.VANISHED)

    def _succeeded(self, f: TrackedFile, carry: bool, now: float) -> list[Decision]:
        series = f.info.series
        if f.use_carry and series is not None:
            if carry:
                self._carries[series] = now
            else:
                self._carries.pop(series, None)
        lag = max(0.0, now - f.ready_at)
        done = RecordDone(f.key, f.info, f.use_carry, lag, f.attempts + 1)
        return [done, *self._drop(f.info.path), Dispose(f.info)]

    def _output_failed(self, f: TrackedFile, message: str, now: float) -> list[Decision]:
        f.output_failures += 1
        base = self.rules.retry_delay_seconds * 2 ** (f.output_failures - 1)
        delay = min(base, MAX_OUTPUT_BACKOFF_SECONDS) * self._rng.uniform(1.0, 1.25)
        f.next_retry = now + delay
        self._set_state(f, FileState.RETRY)
        return [RetryOutput(f.key, f.info, message, delay)]

    def _failed(self, f: TrackedFile, failure: Failed, now: float) -> list[Decision]:
        attempt = f.attempts + 1
        reason, message = failure.reason, failure.message
        if attempt <= self.rules.max_retries:
            base = self.rules.retry_delay_seconds * 2 ** (attempt - 1)
            delay = min(base, MAX_BACKOFF_SECONDS) * self._rng.uniform(1.0, 1.5)
            f.attempts, f.next_retry = attempt, now + delay
            self._set_state(f, FileState.RETRY)
            return [RecordRetry(f.key, f.info, reason, message, attempt, delay)]
        out: list[Decision] = [RecordQuarantine(f.key, f.info, reason, message, attempt)]
        series = f.info.series
        if f.use_carry and series is not None and self._carries.pop(series, None) is not None:
            # The series is broken at this file: end the flows carried into it, so the
            # next file neither continues them across the gap nor inherits a carry
            # that may be what made this one fail.
            out.append(EndCarry(series))
        out += self._drop(f.info.path)
        out.append(Quarantine(f.key, f.info, reason, message, attempt, now, recovered=False))
        return out

    def set_aside(self, path: str) -> list[Decision]:
        """An unexpected error while handling ``path``: stop following it until it changes."""
        f = self._files.get(path)
        if f is not None:
            self._set_aside[path] = f.info.identity
            self._running.pop(f.key, None)
        return self._drop(path, Why.SET_ASIDE)

    def stays(self, info: FileInfo) -> None:
        """A finished file stayed where it was (kept, or its move failed): do not redo it."""
        self._finished[info.path] = info.identity

    def _drop(self, path: str, why: Why = Why.FINISHED) -> list[Decision]:
        f = self._untrack(path)
        marks_gone = why in (Why.GONE, Why.CHANGED, Why.VANISHED)
        return [Forget(path, why, f.key if f is not None and marks_gone else 0)]

    # ------------------------------------------------------------------ carried flows
    def tick(self, now: float) -> list[Decision]:
        """End the carries whose series has no pending file and has been idle long enough."""
        out: list[Decision] = []
        for series, stored in list(self._carries.items()):
            if series in self._series:  # a file of the series is followed
                continue
            if self.rules.carry_across_files and now - stored < self.rules.carry_idle_seconds:
                continue
            del self._carries[series]
            out.append(EndCarry(series))
        return out

    def carry_kept(self, series: str, now: float) -> None:
        """Ending a carry failed (its CSV could not be written): try after another idle period."""
        self._carries[series] = now

    # ------------------------------------------------------------------ status
    def backlog(self, now: float) -> Backlog:
        n = {state: len(files) for state, files in self._by_state.items()}
        waiting = n[FileState.READY] + n[FileState.RETRY]
        oldest = max(0.0, now - self._oldest_ready(now))
        return Backlog(waiting, len(self._running), n[FileState.UNRIPE], oldest)
