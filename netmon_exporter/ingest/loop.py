"""The scheduler thread: feeds the core what it sees, carries out what it decides.

Each round: take watch events and config changes, look at files (events,
rescans every interval, unripe files every half second), pass the age gate,
record ready files in the ledger, start what the core says is due, collect the
workers' outcomes, end idle carries, publish a status snapshot. The decisions
themselves are :class:`~.scheduler.Scheduler`'s; see ``docs/ingestion.md``.

Containment: an unexpected error while handling one file sets that file aside
(until it changes or the daemon restarts), is logged with its traceback,
counted, and degrades health; other files keep flowing.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..config import Config
from ..metrics import FAIL_REASONS
from ..pipeline import CarryState, FlowSettings
from . import carry_store
from .age_gate import AgeGate
from .decisions import (
    Failed,
    FileInfo,
    Interrupted,
    NotRun,
    OutputFailed,
    Result,
    StartFile,
    Succeeded,
    Vanished,
)
from .disposal import FLOWS_DIR, flow_csv_name, prune_flow_csvs
from .events import ClockSkew, FileStarted, IngestError, IngestStatus
from .executor import Executor, flow_settings
from .finder import Finder
from .health_notes import Growth
from .ledger import Entry, Ledger
from .ledger_link import LedgerLink
from .mailbox import Inbox, Outbox
from .records import Identity
from .scheduler import Rules, Scheduler, Uniform
from .workers import NOT_RUN, Outcome, ProcessFn, Task, WorkerPool

log = logging.getLogger("netmon_exporter.ingest")

LEDGER_KEEP_SECONDS = 7 * 86400  # finished files that no longer exist are forgotten after this
RELOOK_SECONDS = 0.5  # how often files not yet ready are looked at again
LOOP_SECONDS = 0.2  # longest sleep of the scheduler loop (real time)
TICK_SECONDS = 0.5  # how often carries are looked at for ending
OUTPUT_REASON = "output"  # a failure of the outputs, not of the capture (pipeline)


def concurrency(cfg: Config) -> int:
    p = cfg.processing
    return p.workers if p.parallel else 1


class SchedulerLoop:
    """Everything the scheduler thread owns (see the module docstring)."""

    def __init__(
        self,
        cfg: Config,
        inbox: Inbox,
        outbox: Outbox,
        *,
        clock: Callable[[], float],
        process: ProcessFn,
        finish: Callable[[CarryState, FlowSettings], Any],
        gate: AgeGate,
        rng: Uniform,
        max_pending_results: int | None,
    ) -> None:
        self.cfg = cfg
        self._inbox = inbox
        self._outbox = outbox
        self._clock = clock
        self._max_pending = max_pending_results
        self._gate = gate
        self._core = Scheduler(Rules.of(cfg), rng)
        self._ledger = LedgerLink(cfg.state.directory, outbox.emit)
        self.finder = Finder(cfg, gate, inbox.on_path, outbox.emit)
        self._growth = Growth()
        self._exec = Executor(cfg, self._core, gate, self._ledger, outbox.emit, finish, clock)
        self._problems = self._exec.problems
        self._pool = WorkerPool(process, concurrency(cfg))
        self._next_housekeeping = 0.0
        self._next_relook = 0.0
        self._next_tick = 0.0
        # files queued behind another (ledger row -> the row before it), and rows before
        # them whose done mark is committed: a queued file's result counts only then
        self._behind: dict[int, int] = {}
        self._recorded: set[int] = set()

    # ------------------------------------------------------------------ the thread
    def run(self) -> None:
        try:
            self._pool.idle()  # start the workers now, not when the first file is ready
            self._open_ledger(self._clock())
            self._publish()
            last_error = ""
            while not self._inbox.stopping.is_set():
                try:
                    self._round()
                    last_error = ""
                except Exception as exc:  # the scheduler reports and carries on
                    msg = f"ingest scheduler error: {exc!r}"
                    if msg != last_error:
                        log.exception("ingest scheduler error")
                        self._outbox.emit(IngestError("internal", msg))
                    last_error = msg
                    self._problems.note("scheduler", msg, self._clock())
                    with contextlib.suppress(Exception):
                        self._publish()
                    self._inbox.stopping.wait(1.0)
        finally:
            self._shutdown()

    def _round(self) -> None:
        self._apply_pending_config()
        now = self._clock()
        changed, full = self._inbox.take_changes()
        if self._ledger.due(now) and not self._core.in_progress:
            self._open_ledger(now)
        if now >= self._next_housekeeping:
            full = True
            self._housekeeping(now)
        ours: list[str] = []
        if changed:
            in_scope = self.finder.scope()  # resolves the directories once for all of them
            ours = [p for p in changed if in_scope(p)]
        for path in ours:
            if (note := changed[path]) is not None:
                self._gate.note(path, note, now)
        if full:
            self._full_scan(now)
        elif changed:
            self._look_at(ours, now)
        if now >= self._next_relook:
            self._next_relook = now + RELOOK_SECONDS
            self._look_at([f.path for f in self._core.unripe()], now)
        self._dispatch(now)
        outcomes = self._pool.wait(LOOP_SECONDS, (self._inbox.wake_fd,))
        for outcome in outcomes:
            info = self._core.running_file(outcome.task.key)  # task.path may be a link's target
            path = info.path if info is not None else outcome.task.path
            self._guarded(path, "recording the outcome of", self._take, outcome)
        if outcomes:  # a series' next file goes out now, not after another round of looks
            self._dispatch(self._clock())
        self._inbox.drain()
        now = self._clock()
        # carries are ended through the ledger; twice a second is often enough for an
        # idle timeout of minutes, and each look costs every carried series
        if self._ledger.ledger is not None and now >= self._next_tick:
            self._next_tick = now + TICK_SECONDS
            self._exec.apply(self._core.tick(now))
        self._publish()

    def _shutdown(self) -> None:
        self.finder.stop()
        stopping = self._inbox.stopping.is_set()
        left = self._inbox.stop_deadline - time.monotonic() if stopping else 0.0
        self._pool.shutdown(left, self._take)
        for key in self._core.running():  # not finished in time: redone after the restart
            self._exec.apply(self._core.outcome(key, Interrupted(), self._clock()))
        self._exec.remover.close()
        self._ledger.close()
        self._publish()
        self._inbox.close()

    def _publish(self) -> None:
        now = self._clock()
        b = self._core.backlog(now)
        self._outbox.status = IngestStatus(
            backlog=b.backlog,
            in_progress=b.in_progress,
            workers_busy=self._pool.working(),
            not_ready=b.not_ready,
            oldest_ready_age_seconds=b.oldest_ready_age_seconds,
            backlog_growth_streak=self._growth.streak,
            ledger_error=self._ledger.error,
            ledger_open=self._ledger.ledger is not None,
            problems=self._problems.current(now, self.finder.watch_error),
        )

    # ------------------------------------------------------------------ upkeep
    def _open_ledger(self, now: float) -> None:
        carries = self._ledger.open(now)
        if carries is None:
            return
        self._core.resync(carries)  # forget ledger-less decisions: look everything up again
        self._inbox.request_scan()

    def _housekeeping(self, now: float) -> None:
        cfg = self.cfg
        self._next_housekeeping = now + cfg.processing.interval_seconds
        self._growth.note(self._core.backlog(now).backlog)
        if cfg.output.flows_csv or cfg.output.retention_hours or cfg.output.max_flow_csv_files:
            try:
                deleted = prune_flow_csvs(
                    cfg.output.directory / FLOWS_DIR,
                    now=now,
                    retention_hours=cfg.output.retention_hours,
                    max_files=cfg.output.max_flow_csv_files,
                )
            except OSError as exc:
                self._outbox.emit(IngestError("io", f"cannot prune flow CSVs: {exc}"))
                deleted = []
            if deleted:
                log.info("pruned flow CSVs", extra={"files": len(deleted)})
        self._gate.prune_writing(now, os.path.exists)
        self._ledger.run(lambda led: led.prune(now - LEDGER_KEEP_SECONDS, os.path.exists), now)

    def _apply_pending_config(self) -> None:
        cfg = self._inbox.take_config()
        if cfg is None:
            return
        old, self.cfg = self.cfg, cfg
        self._exec.cfg = cfg
        self._gate.min_age_seconds = cfg.capture.min_age_seconds
        self._core.configure(Rules.of(cfg))
        self._pool.resize(concurrency(cfg))
        self.finder.configure(cfg)
        if old.capture != cfg.capture:
            self._core.rejudge()  # waiting files are judged anew; what the gate learnt stays
        if old.state.directory != cfg.state.directory:
            log.warning(
                "state.directory changes only after a restart",
                extra={"active": str(self._ledger.directory)},
            )
        self._inbox.request_scan()
        log.info(
            "ingest configuration applied",
            extra={"workers": concurrency(cfg), "in_flight": self._core.in_progress},
        )

    # ------------------------------------------------------------------ looking
    def _full_scan(self, now: float) -> None:
        found = self.finder.scan()
        if found is None:
            return
        self._exec.apply(self._core.scanned(found.keys()))
        for path, identity in found.items():
            self._guarded(path, "looking at", self._observe, path, identity, now)
        self._gate.prune_looks(self._core.paths())
        self._promote(now)

    def _look_at(self, paths: list[str], now: float) -> None:
        for path in paths:
            self._guarded(path, "looking at", self._observe, path, self.finder.look(path), now)
        if paths:
            self._promote(now)

    def _observe(self, path: str, identity: Identity | None, now: float) -> None:
        self._exec.apply(self._core.observe(path, identity))
        if identity is None or not self._core.is_unripe(path):
            return
        self._gate.look(path, identity, now)
        ahead = self._gate.new_skew(path, now)
        if ahead:
            log.warning(
                "file modified in the future: the writer's clock is ahead; "
                "aging it from when it was first seen",
                extra={"file": path, "ahead_seconds": round(ahead, 1)},
            )
            self._outbox.emit(ClockSkew(path, ahead))

    def _promote(self, now: float) -> None:
        """Move files through the age gate into the ledger."""
        if self._ledger.ledger is None:
            return
        gate = self._gate
        candidates = {
            f.path: f
            for f in self._core.unripe()
            if gate.identity(f.path) == f.identity and gate.settled(f.path, now)
        }
        ok = gate.confirm(candidates, now) if candidates else set()
        batch = [f for p, f in candidates.items() if p in ok]
        if not batch:
            return
        try:
            done, entries = self._record_ready(batch, now)
        except Exception:  # noqa: BLE001 - find the one file at fault, admit the rest
            for f in batch:
                self._guarded(f.path, "recording", self._admit_one, f, now)
            return
        if done:
            for f, entry in zip(batch, entries, strict=True):
                self._exec.apply(self._core.admitted(f, entry, now))

    def _record_ready(self, batch: list[FileInfo], now: float) -> tuple[bool, list[Entry]]:
        rows = [(f.path, f.identity, f.series, f.kind) for f in batch]
        ok, entries = self._ledger.run(lambda led: led.record_ready(rows, now), now)
        return ok, entries or []

    def _admit_one(self, f: FileInfo, now: float) -> None:
        ok, entries = self._record_ready([f], now)
        if ok:
            self._exec.apply(self._core.admitted(f, entries[0], now))

    # ------------------------------------------------------------------ dispatching
    def _dispatch(self, now: float) -> None:
        if self._ledger.ledger is None or self._inbox.stopping.is_set():
            return
        workers = concurrency(self.cfg)
        running = self._core.in_progress
        # Results not yet taken by the daemon hold their flows in memory: when it
        # falls behind, stop dispatching rather than pile them up.
        limit = self._max_pending or 2 * workers + 2
        slots = min(
            workers - running,
            self._pool.idle(),
            self.cfg.processing.batch_size,
            limit - self._outbox.undelivered - running,
        )
        for start in self._core.due(now, slots):
            self._guarded(start.file.path, "starting", self._start, start, now)
        running = self._core.in_progress
        for start in self._core.follow_ups(now, limit - self._outbox.undelivered - running):
            self._guarded(start.file.path, "queueing", self._start, start, now)
        # Every worker busy (more series than workers): the file that would start next
        # is queued on a busy worker now, which starts it the moment its file is done
        # instead of waiting for this thread to record that one and hand out the next.
        running = self._core.in_progress
        room = min(self._pool.queue_slots(), limit - self._outbox.undelivered - running)
        if room > 0 and self._pool.idle() == 0:
            for start in self._core.due(now, room):
                self._guarded(start.file.path, "queueing", self._start, start, now, True)

    def _start(self, start: StartFile, now: float, queued: bool = False) -> None:
        """Hand ``start`` to an idle worker, or (``queued``, or a file going on from the
        one before it) queue it on a busy one."""
        f = start.file
        identity = self.finder.look(f.path)
        if identity != f.identity:  # gone or changed since it was found ready
            self._observe(f.path, identity, now)
            return
        if start.after and not self._pool.queueable(start.after):
            return
        if queued and start.use_carry and f.series is not None:
            series = f.series
            ok, held = self._ledger.run(lambda led: led.get_carry(series), now)
            if not ok or (held is not None and not carry_store.is_ref(held)):
                return  # flows held inline are not queued (WorkerPool.submit_queued)
        ok, carry = self._ledger.run(lambda led: self._claim(led, start, now), now)
        if not ok:
            return
        task = self._task(start, carry)
        if start.after:
            if not self._pool.submit_after(task):  # its worker died meanwhile
                self._ledger.run(lambda led: led.mark_seen(start.key, now), now)
                return
            self._behind[start.key] = start.after
        elif queued:
            if not self._pool.submit_queued(task):  # every worker has a file queued already
                self._ledger.run(lambda led: led.mark_seen(start.key, now), now)
                return
        else:
            self._pool.submit(task)
        self._core.started(start)
        self._outbox.emit(FileStarted(f.path, f.kind, start.attempt))

    @staticmethod
    def _claim(led: Ledger, start: StartFile, now: float) -> bytes | None:
        """Read the series' carry and mark the file in progress (a file queued behind
        another goes on from that one's flows, which its worker holds)."""
        series = start.file.series
        use = start.use_carry and series is not None and not start.after
        carry = led.get_carry(series) if use and series is not None else None
        led.mark_in_progress(start.key, now)
        return carry

    def _task(self, start: StartFile, carry: bytes | None) -> Task:
        c, f = self.cfg, start.file
        csv_dir = str(c.output.directory / FLOWS_DIR) if c.output.flows_csv else None
        csv_path = None
        if csv_dir:
            with contextlib.suppress(OSError):
                os.makedirs(csv_dir, exist_ok=True)
            name = flow_csv_name(Path(f.path), c.capture.directory, f.identity.mtime_ns)
            csv_path = os.path.join(csv_dir, name)
        return Task(
            key=start.key,
            # a followed link is read through its target: readers never follow links
            path=os.path.realpath(f.path) if c.capture.follow_symlinks else f.path,
            settings=flow_settings(c),
            carry=carry,
            csv_dir=csv_dir,
            final=not start.use_carry,
            timeout_seconds=c.processing.file_timeout_seconds,
            csv_path=csv_path,
            carry_dir=str(carry_store.directory(self._ledger.directory)),
            after=start.after,
        )

    # ------------------------------------------------------------------ outcomes
    def _take(self, outcome: Outcome) -> None:
        key = outcome.task.key
        result = self._result(key, outcome)
        if result is None:
            return
        recorded = self._exec.apply(self._core.outcome(key, result, self._clock()), outcome.result)
        if recorded and isinstance(result, Succeeded) and key in self._behind.values():
            self._recorded.add(key)  # the file queued behind it may count
        self._recorded &= set(self._behind.values())

    def _result(self, key: int, outcome: Outcome) -> Result | None:
        """What a worker's outcome means for the core (None: no file of ours)."""
        before = self._behind.pop(key, 0)
        info = self._core.running_file(key)
        if info is None:
            return None
        if outcome.reason == NOT_RUN or (before and before not in self._recorded):
            # not run, or run on the open flows of a file that failed or whose done mark
            # could not be written: it waits again, to go on from what the ledger holds
            return NotRun()
        if outcome.result is not None:
            return Succeeded(carry=outcome.result.carry is not None)
        if self._inbox.stopping.is_set() and outcome.reason == "worker_crash":
            return Interrupted()  # killed by the same signal that stops us
        if outcome.reason == OUTPUT_REASON:
            return OutputFailed(outcome.message)
        if not os.path.exists(info.path):
            return Vanished()
        reason = outcome.reason if outcome.reason in FAIL_REASONS else "internal"
        return Failed(reason, outcome.message)

    # ------------------------------------------------------------------ containment
    def _guarded(self, path: str, stage: str, fn: Callable[..., None], *args: Any) -> None:
        try:
            fn(*args)
        except Exception as exc:  # noqa: BLE001 - one file's error stops that file only
            self._contain(path, stage, exc)

    def _contain(self, path: str, stage: str, exc: BaseException) -> None:
        """Set one file aside after an unexpected error: that file stops, ingestion does not."""
        msg = f"error {stage} {path}: {type(exc).__name__}: {exc}"
        log.error(
            "file set aside after an unexpected error",
            exc_info=exc,
            extra={"file": path, "stage": stage},
        )
        self._outbox.emit(IngestError("internal", msg))
        self._problems.note("internal", msg, self._clock())
        self._exec.apply(self._core.set_aside(path))
