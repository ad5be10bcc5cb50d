"""The ingest service: finds captures, gates them, runs workers, records outcomes durably.

One scheduler thread owns the ledger, the worker pool and all bookkeeping; the
daemon talks to it through :meth:`IngestService.poll_events`,
:meth:`IngestService.status`, :meth:`IngestService.apply_config` and
:meth:`IngestService.stop`. Nothing here touches metrics.

Exactly once: a file is recorded ``done`` in the ledger (together with the
open flows carried to the next file of its series) *before* its
:class:`FileDone` event is emitted, and a ``done`` file is never processed
again. Work interrupted by a crash is redone from the start; the per-file flow
CSV is rewritten under the same name, so nothing is duplicated.
"""

from __future__ import annotations

import contextlib
import dataclasses
import heapq
import logging
import os
import queue
import random
import re
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import pipeline
from ..config import Config
from ..flows.flow_csv import FlowCsvWriter
from ..metrics import FAIL_REASONS, FILE_KINDS
from ..pipeline import FileResult, FlowSettings
from .age_gate import (
    DEFAULT_SETTLE_SECONDS,
    DEFAULT_UNWATCHED_QUIET_SECONDS,
    AgeGate,
    Identity,
)
from .disposal import (
    FLOWS_DIR,
    QuarantineNote,
    after_processing,
    flow_csv_name,
    prune_flow_csvs,
    quarantine,
)
from .events import (
    CarryFlushed,
    ClockSkew,
    Event,
    FileDone,
    FileFailed,
    FileIgnored,
    FileQuarantined,
    FileSkipped,
    FileStarted,
    IngestError,
    IngestStatus,
    OutputBlocked,
)
from .ledger import DONE, FAILED, QUARANTINED, Entry, Ledger, LedgerError, Totals, read_totals
from .watcher import Watcher, file_kind, in_shard, look, matches, scan, series_of
from .workers import Outcome, ProcessFn, Task, WorkerPool, takes_csv_path

log = logging.getLogger("netmon_exporter.ingest")

RECENT_SECONDS = 300.0  # window of the recent success/failure counts
LEDGER_KEEP_SECONDS = 7 * 86400  # finished files that no longer exist are forgotten after this
MAX_BACKOFF_SECONDS = 3600.0
RELOOK_SECONDS = 0.5  # how often files not yet ready are looked at again
LOOP_SECONDS = 0.2  # longest sleep of the scheduler loop (real time)
MAX_CHANGED_PATHS = 10000  # beyond this many pending watch events, rescan instead
MAX_OUTPUT_BACKOFF_SECONDS = 300.0  # output unwritable: retry at least this often

_FAIL_CATEGORY = {"io": "io", "internal": "internal"}  # everything else is "parse"
_DIGITS = re.compile(r"(\d+)")


def flow_settings(cfg: Config) -> FlowSettings:
    """Return the flow-engine subset of the config."""
    f = cfg.flows
    return FlowSettings(
        idle_timeout_seconds=f.idle_timeout_seconds,
        active_timeout_seconds=f.active_timeout_seconds,
        activity_timeout_seconds=f.activity_timeout_seconds,
        carry_across_files=f.carry_across_files,
    )


_PROTO_NAMES = {6: "tcp", 17: "udp", 1: "icmp", 58: "icmpv6"}


def _summary(result: FileResult) -> dict[str, Any]:
    """What the ledger keeps of a result, so counters can be restored after a restart."""
    flows_by_protocol: dict[str, int] = {}
    if len(result.flows) and "protocol" in result.flows:
        nums, counts = np.unique(result.flows["protocol"], return_counts=True)
        for n, c in zip(nums.tolist(), counts.tolist(), strict=True):
            name = _PROTO_NAMES.get(int(n), "other")
            flows_by_protocol[name] = flows_by_protocol.get(name, 0) + int(c)
    return {
        "packets": dict(result.packets_by_protocol or {}),
        "bytes": dict(result.bytes_by_protocol or {}),
        "flows": int(getattr(result, "flow_count", 0) or len(result.flows)),
        "flows_by_protocol": flows_by_protocol,
        "csv_rows": int(result.csv_rows),
    }


def _natural(name: str) -> tuple[Any, ...]:
    return tuple(int(p) if p.isdigit() else p for p in _DIGITS.split(name))


@dataclass
class _Tracked:
    """A file we know about and have not finished with (scheduler thread only)."""

    path: str
    series: str | None
    kind: str
    identity: Identity
    state: str = "unripe"  # unripe | ready | retry | running
    entry_id: int = 0
    ready_at: float = 0.0
    attempts: int = 0  # failed attempts so far
    next_retry: float = 0.0
    use_carry: bool = False
    skew_told: bool = False
    output_failures: int = 0  # consecutive attempts whose output could not be written
    sort_key: tuple[Any, ...] = ()  # time order within a series: mtime, then natural name

    def set_identity(self, ident: Identity) -> None:
        if ident != self.identity or not self.sort_key:
            self.identity = ident
            self.sort_key = (ident.mtime_ns, _natural(os.path.basename(self.path)))


class IngestService:
    """Watch the capture directory and process every file exactly once.

    ``clock`` (wall-clock seconds) drives ages, retries, carries and intervals;
    worker timeouts use real monotonic time. ``process`` and ``finish`` default
    to the real pipeline; tests inject fakes (``process`` must be picklable:
    a module-level function).
    """

    def __init__(
        self,
        config: Config,
        *,
        clock: Callable[[], float] = time.time,
        process: ProcessFn | None = None,
        finish: Callable[[bytes, FlowSettings], Any] | None = None,
        settle_seconds: float = DEFAULT_SETTLE_SECONDS,
        unwatched_quiet_seconds: float = DEFAULT_UNWATCHED_QUIET_SECONDS,
        open_for_writing: Callable[..., set[str]] | None = None,
        rng: random.Random | None = None,
        max_pending_results: int | None = None,
    ) -> None:
        self._cfg = config
        self._clock = clock
        self._process: ProcessFn = process if process is not None else pipeline.process_file
        self._finish = finish if finish is not None else pipeline.finish_carry
        self._takes_csv_path = takes_csv_path(self._process)
        self._rng = rng or random.Random()
        self._max_pending_results = max_pending_results
        self._undelivered_results = 0  # FileDone events not yet polled (they hold flows)
        self._gate = AgeGate(
            config.capture.min_age_seconds,
            settle_seconds=settle_seconds,
            open_for_writing=open_for_writing,
            unwatched_quiet_seconds=unwatched_quiet_seconds,
        )
        self._events: queue.Queue[Event] = queue.Queue()
        self._lock = threading.Lock()
        self._pending_cfg: Config | None = None
        self._changed: dict[str, bool | None] = {}  # path -> writer state from events
        self._wake_pending = False
        self._scan_requested = True
        self._stopping = threading.Event()
        self._stop_deadline = 0.0
        self._thread: threading.Thread | None = None
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._status = IngestStatus()
        # scheduler-thread state
        self._ledger: Ledger | None = None
        self._ledger_error: str | None = None
        self._next_ledger_retry = 0.0
        self._pool: WorkerPool | None = None
        self._watcher: Watcher | None = None
        self._tracked: dict[str, _Tracked] = {}
        self._running: dict[int, _Tracked] = {}
        self._finished: dict[str, Identity] = {}  # kept files the ledger has as final
        self._carries: dict[str, float] = {}
        self._recent: deque[tuple[float, str]] = deque()
        self._recent_counts: Counter[str] = Counter()
        self._dir_error: str | None = None
        self._ignored: dict[str, str] = {}  # path -> why it is never opened (told once)
        self._blocked: dict[str, Identity] = {}  # set aside after an unexpected error
        self._unmoved: set[str] = set()  # quarantined in the ledger, move still to do
        self._problems: dict[str, tuple[float, str]] = {}  # key -> (when, what) for health
        self._last_activity: float | None = None
        self._last_success: float | None = None
        self._next_housekeeping = 0.0
        self._next_relook = 0.0
        self._last_backlog = 0
        self._growth_streak = 0
        self._source_re = re.compile(config.capture.source_pattern)

    # ------------------------------------------------------------------ public API
    def start(self) -> None:
        """Start watching and the scheduler thread (problems arrive as events and in status)."""
        if self._thread is not None:
            raise RuntimeError("IngestService already started")
        # Watch before returning: files created from now on are seen being written.
        self._start_watcher()
        self._thread = threading.Thread(target=self._run, name="ingest", daemon=True)
        self._thread.start()

    def stop(self, timeout: float) -> None:
        """Stop taking work; let in-flight files finish within ``timeout``, hand back the rest.

        Files handed back are processed again after the next start. Events
        emitted while stopping stay available to :meth:`poll_events`.
        """
        self._stop_deadline = time.monotonic() + max(0.0, timeout)
        self._stopping.set()
        self._wake()
        if self._thread is not None:
            self._thread.join(timeout=max(0.0, timeout) + 30)

    def apply_config(self, cfg: Config) -> None:
        """Take a new config at the next scheduling round; in-flight files are not disturbed."""
        with self._lock:
            self._pending_cfg = cfg
        self._wake()

    def poll_events(self, timeout: float = 0.0, max_events: int = 1000) -> list[Event]:
        """Return the events emitted so far, waiting up to ``timeout`` for the first one."""
        out: list[Event] = []
        try:
            out.append(
                self._events.get(timeout=timeout) if timeout > 0 else self._events.get_nowait()
            )
        except queue.Empty:
            return out
        while len(out) < max_events:
            try:
                out.append(self._events.get_nowait())
            except queue.Empty:
                break
        done = sum(1 for e in out if isinstance(e, FileDone))
        if done:
            with self._lock:
                self._undelivered_results -= done
            self._wake()  # dispatching may have waited for results to be taken
        return out

    def status(self) -> IngestStatus:
        with self._lock:
            return self._status

    def committed_totals(self) -> Totals | None:
        """What the ledger has committed (files by kind, packets, bytes, flows, CSV rows).

        Lets the daemon seed its counters after a restart so totals survive a
        crash without double counting. Safe from any thread.
        """
        return read_totals(self._cfg.state.directory)

    # ------------------------------------------------------------------ plumbing
    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._wake_w, b"\0")

    def _drain_wake(self) -> None:
        with self._lock:
            self._wake_pending = False
        with contextlib.suppress(BlockingIOError, OSError):
            while os.read(self._wake_r, 4096):
                pass

    def _emit(self, event: Event) -> None:
        if isinstance(event, FileDone):
            with self._lock:
                self._undelivered_results += 1
        self._events.put(event)

    def _on_path(self, path: str | None, writing: bool | None = None) -> None:
        """Take a watch event (observer thread): remember it, wake the scheduler once."""
        with self._lock:
            if path is None or len(self._changed) >= MAX_CHANGED_PATHS:
                self._scan_requested = True
                self._changed.clear()
            elif writing is not None or path not in self._changed:
                self._changed[path] = writing
            if self._wake_pending:
                return
            self._wake_pending = True
        self._wake()

    def _concurrency(self) -> int:
        p = self._cfg.processing
        return p.workers if p.parallel else 1

    # ------------------------------------------------------------------ main loop
    def _run(self) -> None:
        try:
            self._startup()
            last_error = ""
            while not self._stopping.is_set():
                try:
                    self._iterate()
                    last_error = ""
                except Exception as exc:  # the scheduler reports and carries on
                    msg = f"ingest scheduler error: {exc!r}"
                    if msg != last_error:
                        log.exception("ingest scheduler error")
                        self._emit(IngestError("internal", msg))
                    last_error = msg
                    self._problem("scheduler", msg)
                    with contextlib.suppress(Exception):
                        self._update_status()
                    self._stopping.wait(1.0)
        finally:
            self._shutdown()

    def _startup(self) -> None:
        self._pool = WorkerPool(self._process, self._concurrency())
        self._pool.idle()  # start the workers now, not when the first file is ready
        self._open_ledger()
        self._update_status()

    def _iterate(self) -> None:
        assert self._pool is not None
        self._apply_pending_config()
        now = self._clock()
        with self._lock:
            changed, self._changed = self._changed, {}
            full, self._scan_requested = self._scan_requested, False
        if self._ledger is None and now >= self._next_ledger_retry and not self._running:
            self._open_ledger()
        if now >= self._next_housekeeping:
            full = True
            self._housekeeping(now)
        for path, writing in changed.items():
            if writing is not None and self._in_scope(path):
                self._gate.note_writing(path, writing, now)
        if full:
            self._full_scan(now)
        elif changed:
            self._look_at(set(changed), now)
        if now >= self._next_relook:
            self._next_relook = now + RELOOK_SECONDS
            self._relook(now)
        self._dispatch(now)
        for outcome in self._pool.wait(LOOP_SECONDS, (self._wake_r,)):
            try:
                self._handle_outcome(outcome)
            except Exception as exc:  # noqa: BLE001 - one file's error stops that file only
                self._contain(outcome.task.path, "recording the outcome of", exc)
        self._drain_wake()
        self._flush_carries(self._clock())
        self._update_status()

    def _shutdown(self) -> None:
        if self._watcher is not None:
            self._watcher.stop()
        if self._pool is not None:
            left = self._stop_deadline - time.monotonic() if self._stopping.is_set() else 0.0
            unfinished = self._pool.shutdown(left, self._handle_outcome)
            for task in unfinished:
                t = self._running.pop(task.key, None)
                self._hand_back(task.key, t)
            for key, t in list(self._running.items()):
                self._running.pop(key)
                self._hand_back(key, t)
        if self._ledger is not None:
            self._ledger.close()
            self._ledger = None
        self._update_status(running=False)
        os.close(self._wake_w)
        os.close(self._wake_r)

    def _hand_back(self, key: int, t: _Tracked | None) -> None:
        if self._ledger is None:
            return
        try:
            self._ledger.mark_seen(key, self._clock())
        except LedgerError as exc:  # the next start re-queues in_progress anyway
            log.warning("could not hand a file back to the ledger", extra={"err": str(exc)})
        if t is not None:
            log.info("file handed back for the next start", extra={"file": t.path})

    # ------------------------------------------------------------------ containment
    def _problem(self, key: str, message: str | None) -> None:
        """Remember (or clear, with None) a problem that degrades health until it ages out."""
        if message is None:
            self._problems.pop(key, None)
        else:
            self._problems[key] = (self._clock(), message)

    def _contain(self, path: str, stage: str, exc: BaseException) -> None:
        """Set one file aside after an unexpected error: that file stops, ingestion does not.

        It stays aside until it changes (new identity) or the daemon restarts;
        the error is counted, logged with its traceback, and degrades health.
        """
        msg = f"error {stage} {path}: {type(exc).__name__}: {exc}"
        log.error(
            "file set aside after an unexpected error",
            exc_info=exc,
            extra={"file": path, "stage": stage},
        )
        self._emit(IngestError("internal", msg))
        self._problem("internal", msg)
        t = self._tracked.pop(path, None)
        self._gate.forget(path)
        if t is not None:
            self._blocked[path] = t.identity
            for key, running in list(self._running.items()):
                if running is t:
                    self._running.pop(key)

    def _ignore(self, path: str, reason: str) -> None:
        if self._ignored.get(path) == reason:
            return
        self._ignored[path] = reason
        log.info("file ignored", extra={"file": path, "reason": reason})
        self._emit(FileIgnored(path, reason))

    # ------------------------------------------------------------------ config
    def _apply_pending_config(self) -> None:
        with self._lock:
            cfg, self._pending_cfg = self._pending_cfg, None
        if cfg is None:
            return
        old, self._cfg = self._cfg, cfg
        self._gate.min_age_seconds = cfg.capture.min_age_seconds
        self._source_re = re.compile(cfg.capture.source_pattern)
        assert self._pool is not None
        self._pool.resize(self._concurrency())
        oc, nc = old.capture, cfg.capture
        if (oc.directory, oc.recursive) != (nc.directory, nc.recursive):
            self._start_watcher()
        if oc != nc:
            # Re-judge waiting files under the new rules; what the age gate learnt stays.
            for path, t in list(self._tracked.items()):
                if t.state != "running":
                    self._tracked.pop(path)
            self._finished.clear()
        if old.state.directory != cfg.state.directory:
            log.warning(
                "state.directory changes only after a restart",
                extra={"active": str(old.state.directory)},
            )
        with self._lock:
            self._scan_requested = True
        log.info(
            "ingest configuration applied",
            extra={"workers": self._concurrency(), "in_flight": len(self._running)},
        )

    def _start_watcher(self) -> None:
        if self._watcher is not None:
            self._watcher.stop()
            self._gate.watch_since = None
        c = self._cfg.capture
        self._watcher = Watcher(c.directory, c.recursive, self._on_path)
        self._restart_watcher()

    def _restart_watcher(self) -> None:
        assert self._watcher is not None
        since = time.time()  # wall clock, compared with mtimes
        self._gate.watch_since = since if self._watcher.start() else None

    # ------------------------------------------------------------------ ledger
    def _open_ledger(self) -> None:
        try:
            ledger = Ledger(self._cfg.state.directory)
            requeued = ledger.requeue_in_progress()
            self._carries = ledger.carries()
        except LedgerError as exc:
            self._ledger_failed(exc)
            return
        self._ledger = ledger
        if self._ledger_error:
            log.info("ledger usable again", extra={"dir": str(self._cfg.state.directory)})
        self._ledger_error = None
        if requeued:
            log.info(
                "re-queued files interrupted by the last shutdown or crash",
                extra={"files": requeued},
            )
        # forget ledger-less in-memory decisions: everything is looked up again
        for path, t in list(self._tracked.items()):
            if t.state != "running":
                self._tracked.pop(path)
        with self._lock:
            self._scan_requested = True

    def _ledger_failed(self, exc: Exception) -> None:
        msg = str(exc)
        if self._ledger_error != msg:
            log.error(
                "ledger unusable; not processing files until it works again", extra={"err": msg}
            )
            self._emit(IngestError("ledger", msg))
        self._ledger_error = msg
        self._next_ledger_retry = self._clock() + 5.0
        if self._ledger is not None:
            self._ledger.close()
            self._ledger = None

    # ------------------------------------------------------------------ finding files
    def _excluded(self) -> list[Path]:
        c = self._cfg
        return [c.capture.done_directory, c.output.directory, c.state.directory]

    def _owned(self, path: str) -> bool:
        c = self._cfg.capture
        name = os.path.basename(path)
        if not matches(name, c.patterns):
            return False
        # Shard by rotation series so a series stays on one instance and its flows are
        # carried across files; files outside a named series shard by their own name.
        key = series_of(name, self._source_re) or name
        return in_shard(key, c.shard_index, c.shard_count)

    def _full_scan(self, now: float) -> None:
        c = self._cfg.capture
        ignored: dict[str, str] = {}
        try:
            found = {
                p: st
                for p, st in scan(
                    c.directory,
                    recursive=c.recursive,
                    patterns=c.patterns,
                    excluded=self._excluded(),
                    follow_symlinks=c.follow_symlinks,
                    ignored=ignored.__setitem__,
                )
                if self._owned(p)
            }
        except OSError as exc:
            msg = f"cannot list capture directory {c.directory}: {exc.strerror or exc}"
            if self._dir_error != msg:
                log.error("capture directory unusable", extra={"err": msg})
                self._emit(IngestError("io", msg))
            self._dir_error = msg
            return
        if self._dir_error:
            log.info("capture directory usable again", extra={"dir": str(c.directory)})
        self._dir_error = None
        if self._watcher is not None and (not self._watcher.running or self._watcher.stale):
            self._restart_watcher()
        for path in list(self._tracked):
            if path not in found:
                self._observe(path, None, now)
        for path in list(self._finished):
            if path not in found:
                del self._finished[path]
        for table in (self._blocked, self._ignored):
            for path in [p for p in table if p not in found and p not in ignored]:
                del table[path]
        for path, reason in ignored.items():
            if self._owned(path):
                self._ignore(path, reason)
        for path, st in found.items():
            self._observe_safely(path, st, now)
        self._gate.prune_looks(set(self._tracked))
        self._promote(now)

    def _in_scope(self, path: str) -> bool:
        """Whether a path from an event is one of ours (directory, exclusions, patterns)."""
        c = self._cfg.capture
        root = os.path.realpath(c.directory)
        real = os.path.realpath(os.path.dirname(path))
        if not (real == root or (c.recursive and real.startswith(root + os.sep))):
            return False
        if any((real + os.sep).startswith(os.path.realpath(p) + os.sep) for p in self._excluded()):
            return False
        return self._owned(path)

    def _look_at(self, paths: set[str], now: float) -> None:
        for path in paths:
            if not self._in_scope(path):
                continue
            self._observe_safely(path, self._look(path), now)
        self._promote(now)

    def _relook(self, now: float) -> None:
        unripe = [p for p, t in self._tracked.items() if t.state == "unripe"]
        for path in unripe:
            self._observe_safely(path, self._look(path), now)
        if unripe:
            self._promote(now)

    def _look(self, path: str) -> os.stat_result | None:
        """Stat a path as it would be read: None when gone, or when it is never opened."""
        st, reason = look(path, self._cfg.capture.follow_symlinks)
        if reason is not None:
            self._ignore(path, reason)
            return None
        return st

    def _observe_safely(self, path: str, st: os.stat_result | None, now: float) -> None:
        try:
            self._observe(path, st, now)
        except Exception as exc:  # noqa: BLE001 - one file's error stops that file only
            self._contain(path, "looking at", exc)

    def _observe(self, path: str, st: os.stat_result | None, now: float) -> None:
        """Take one look at a path: track it, notice changes, feed the age gate."""
        t = self._tracked.get(path)
        if st is None:
            if t is not None and t.state != "running":
                self._forget(path, gone=True)
            return
        ident = Identity.of(st)
        if t is None:
            if self._finished.get(path) == ident or self._blocked.get(path) == ident:
                return
            self._blocked.pop(path, None)
            name = os.path.basename(path)
            t = _Tracked(
                path=path,
                series=series_of(name, self._source_re),
                kind=file_kind(name),
                identity=ident,
            )
            t.set_identity(ident)
            self._tracked[path] = t
        if t.state == "running":
            return
        if t.identity != ident and t.state in ("ready", "retry"):
            log.info(
                "file changed after it was found ready; treating it as new", extra={"file": path}
            )
            self._forget(path, gone=True)
            self._observe(path, st, now)
            return
        t.set_identity(ident)
        if t.state == "unripe":
            self._gate.look(path, st, now)
            ahead = self._gate.skew(path, now)
            if ahead and not t.skew_told:
                t.skew_told = True
                log.warning(
                    "file modified in the future: the writer's clock is ahead; "
                    "aging it from when it was first seen",
                    extra={"file": path, "ahead_seconds": round(ahead, 1)},
                )
                self._emit(ClockSkew(path, ahead))

    def _promote(self, now: float) -> None:
        """Move files through the age gate into the ledger and the ready queue."""
        candidates = [
            t for t in self._tracked.values() if t.state == "unripe" and self._gate_passes(t, now)
        ]
        if not candidates or self._ledger is None:
            return
        ok = self._gate.confirm([t.path for t in candidates], now)
        batch = [t for t in candidates if t.path in ok]
        if not batch:
            return
        try:
            entries = self._ledger.record_ready(
                [(t.path, t.identity, t.series, t.kind) for t in batch], now
            )
        except LedgerError as exc:
            self._ledger_failed(exc)
            return
        except Exception:  # noqa: BLE001 - find the one file at fault, admit the rest
            self._promote_one_by_one(batch, now)
            return
        for t, entry in zip(batch, entries, strict=True):
            self._admit(t, entry, now)

    def _promote_one_by_one(self, batch: list[_Tracked], now: float) -> None:
        for t in batch:
            if self._ledger is None:
                return
            try:
                (entry,) = self._ledger.record_ready([(t.path, t.identity, t.series, t.kind)], now)
                self._admit(t, entry, now)
            except LedgerError as exc:
                self._ledger_failed(exc)
                return
            except Exception as exc:  # noqa: BLE001
                self._contain(t.path, "recording", exc)

    def _gate_passes(self, t: _Tracked, now: float) -> bool:
        return self._gate.identity(t.path) == t.identity and self._gate.settled(t.path, now)

    def _admit(self, t: _Tracked, entry: Entry, now: float) -> None:
        t.entry_id = entry.id
        t.ready_at = entry.ready_at
        t.attempts = entry.attempts
        if entry.state in (DONE, QUARANTINED):
            self._recover_finished(t, entry)
            return
        if entry.state == FAILED:
            t.state = "retry"
            t.next_retry = entry.next_retry or now
        else:
            t.state = "ready"

    def _recover_finished(self, t: _Tracked, entry: Entry) -> None:
        """A file the ledger has finished is still here: finish its disposal, count nothing."""
        self._forget(t.path)
        c = self._cfg
        if entry.state == QUARANTINED:
            note = QuarantineNote(
                t.path,
                t.kind,
                entry.reason or "internal",
                entry.message or "",
                entry.attempts,
                self._clock(),
            )
            # a move that failed earlier in this run was never reported: report it now
            self._move_to_quarantine(t, entry.id, note, told=t.path not in self._unmoved)
            return
        try:
            where = after_processing(
                Path(t.path),
                c.capture.after_processing,
                c.capture.done_directory,
                c.capture.directory,
            )
        except OSError as exc:
            self._emit(IngestError("io", f"cannot dispose of {t.path}: {exc}"))
            where = Path(t.path)
        if where is not None and str(where) == t.path:
            self._finished[t.path] = t.identity
        if c.capture.after_processing != "keep":
            self._emit(FileSkipped(t.path, t.kind, entry.state))

    def _forget(self, path: str, gone: bool = False) -> None:
        t = self._tracked.pop(path, None)
        self._gate.forget(path)
        if gone and t is not None and t.entry_id and self._ledger is not None:
            try:
                self._ledger.mark_gone(t.entry_id, self._clock())
            except LedgerError as exc:
                self._ledger_failed(exc)

    # ------------------------------------------------------------------ dispatching
    def _dispatch(self, now: float) -> None:
        assert self._pool is not None
        if self._ledger is None or self._stopping.is_set():
            return
        limit = self._max_pending_results or 2 * self._concurrency() + 2
        with self._lock:
            undelivered = self._undelivered_results
        # Results not yet taken by the daemon hold their flows in memory: when it
        # falls behind, stop dispatching rather than pile them up.
        free = min(
            self._concurrency() - len(self._running),
            self._pool.idle(),
            self._cfg.processing.batch_size,
            limit - undelivered - len(self._running),
        )
        if free <= 0:
            return
        heads: dict[str, _Tracked] = {}
        for t in self._tracked.values():
            if t.series is not None:
                h = heads.get(t.series)
                if h is None or t.sort_key < h.sort_key:
                    heads[t.series] = t
        due = [
            t
            for t in self._tracked.values()
            if (t.state == "ready" or (t.state == "retry" and t.next_retry <= now))
            and (t.series is None or heads[t.series] is t)
        ]
        for t in heapq.nsmallest(free, due, key=lambda t: (t.ready_at, t.sort_key)):
            try:
                self._start_file(t, now)
            except Exception as exc:  # noqa: BLE001 - one file's error stops that file only
                self._contain(t.path, "starting", exc)

    def _start_file(self, t: _Tracked, now: float) -> None:
        assert self._pool is not None and self._ledger is not None
        st = self._look(t.path)
        if st is None:
            self._forget(t.path, gone=True)
            return
        if Identity.of(st) != t.identity:
            self._observe(t.path, st, now)
            return
        c = self._cfg
        use_carry = c.flows.carry_across_files and t.series is not None and t.kind != "csv"
        try:
            carry = self._ledger.get_carry(t.series) if use_carry and t.series else None
            self._ledger.mark_in_progress(t.entry_id, now)
        except LedgerError as exc:
            self._ledger_failed(exc)
            return
        csv_dir = str(c.output.directory / FLOWS_DIR) if c.output.flows_csv else None
        if csv_dir:
            with contextlib.suppress(OSError):
                os.makedirs(csv_dir, exist_ok=True)
        csv_path = None
        if csv_dir and self._takes_csv_path:
            csv_path = os.path.join(
                csv_dir, flow_csv_name(Path(t.path), c.capture.directory, t.identity.mtime_ns)
            )
        task = Task(
            key=t.entry_id,
            # a followed link is read through its target: readers never follow links
            path=os.path.realpath(t.path) if c.capture.follow_symlinks else t.path,
            settings=flow_settings(c),
            carry=carry,
            csv_dir=csv_dir,
            final=not use_carry,
            timeout_seconds=c.processing.file_timeout_seconds,
            csv_path=csv_path,
        )
        self._pool.submit(task)
        t.state = "running"
        t.use_carry = use_carry
        self._running[t.entry_id] = t
        self._last_activity = now
        self._emit(FileStarted(t.path, t.kind, t.attempts + 1))

    # ------------------------------------------------------------------ outcomes
    def _handle_outcome(self, outcome: Outcome) -> None:
        t = self._running.pop(outcome.task.key, None)
        if t is None:
            return
        if outcome.result is not None:
            self._succeed(t, outcome.result)
        elif self._stopping.is_set() and outcome.reason == "worker_crash":
            self._hand_back(t.entry_id, t)  # killed by the same signal that stops us
            self._forget(t.path)
        else:
            self._fail(t, outcome.reason, outcome.message)

    def _succeed(self, t: _Tracked, result: FileResult) -> None:
        now = self._clock()
        if self._ledger is None:
            t.state = "ready"  # cannot record it: redo once the ledger works again
            return
        summary = _summary(result)
        try:
            self._ledger.mark_done(
                t.entry_id,
                now,
                series=t.series,
                carry=result.carry,
                update_carry=t.use_carry,
                summary=summary,
            )
        except LedgerError as exc:
            self._ledger_failed(exc)
            t.state = "ready"
            return
        if t.use_carry and t.series is not None:
            if result.carry is not None:
                self._carries[t.series] = now
            else:
                self._carries.pop(t.series, None)
        kind = result.kind if result.kind in FILE_KINDS else t.kind
        self._emit(
            FileDone(
                dataclasses.replace(result, carry=None),
                kind,
                max(0.0, now - t.ready_at),
                t.attempts + 1,
            )
        )
        self._note(now, "done")
        self._last_success = now
        self._problem("output", None)
        self._forget(t.path)
        c = self._cfg.capture
        try:
            where = after_processing(
                Path(t.path), c.after_processing, c.done_directory, c.directory
            )
        except OSError as exc:
            self._emit(
                IngestError("io", f"processed {t.path} but cannot {c.after_processing} it: {exc}")
            )
            where = Path(t.path)
        if where is not None and str(where) == t.path:
            self._finished[t.path] = t.identity

    def _output_blocked(self, t: _Tracked, message: str) -> None:
        """The capture is fine but its outputs could not be written: retry, never quarantine."""
        now = self._clock()
        t.output_failures += 1
        delay = min(
            self._cfg.processing.retry_delay_seconds * 2 ** (t.output_failures - 1),
            MAX_OUTPUT_BACKOFF_SECONDS,
        ) * self._rng.uniform(1.0, 1.25)
        if self._ledger is not None:
            try:
                self._ledger.mark_seen(t.entry_id, now)  # no attempt used up
            except LedgerError as exc:
                self._ledger_failed(exc)
        t.state, t.next_retry = "retry", now + delay
        self._problem("output", f"cannot write outputs ({message}); retrying")
        log.warning(
            "cannot write outputs; the capture will be retried",
            extra={"file": t.path, "retry_in": round(delay, 1), "err": message},
        )
        self._emit(OutputBlocked(t.path, message, delay))

    def _fail(self, t: _Tracked, reason: str, message: str) -> None:
        if reason == "output":
            self._output_blocked(t, message)
            return
        now = self._clock()
        reason = reason if reason in FAIL_REASONS else "internal"
        category = _FAIL_CATEGORY.get(reason, "parse")
        self._note(now, "failed")
        if self._ledger is None:
            t.state = "ready"
            return
        if not os.path.exists(t.path):
            self._forget(t.path, gone=True)
            self._emit(IngestError("io", f"{t.path} disappeared while being processed"))
            return
        attempt = t.attempts + 1
        will_retry = attempt <= self._cfg.processing.max_retries
        try:
            if will_retry:
                delay = self._backoff(attempt)
                self._ledger.mark_failed(t.entry_id, now, reason, message, now + delay)
            else:
                self._ledger.mark_quarantined(t.entry_id, now, reason, message)
        except LedgerError as exc:
            self._ledger_failed(exc)
            t.state = "ready"
            return
        log.warning(
            "file failed",
            extra={
                "file": t.path,
                "reason": reason,
                "attempt": attempt,
                "will_retry": will_retry,
                "err": message,
            },
        )
        if will_retry:
            t.state, t.attempts, t.next_retry = "retry", attempt, now + delay
            self._emit(FileFailed(t.path, t.kind, reason, message, attempt, True, category, delay))
            return
        self._emit(FileFailed(t.path, t.kind, reason, message, attempt, False, category))
        self._forget(t.path)
        if t.use_carry and t.series in self._carries:
            # The series is broken at this file: end the flows carried into it (as if
            # no next file had come), so the next file neither continues them across
            # the gap nor inherits a carry that may be what made this one fail.
            self._end_carry(t.series)
        self._note(now, "quarantined")
        note = QuarantineNote(t.path, t.kind, reason, message, attempt, now)
        self._move_to_quarantine(t, t.entry_id, note, told=False)

    def _move_to_quarantine(
        self, t: _Tracked, entry_id: int, note: QuarantineNote, told: bool
    ) -> None:
        """Move a file the ledger has quarantined; report it once it has moved.

        A move that fails (output unwritable) is reported as such and retried at
        the next scan, which finds the file still here.
        """
        try:
            where = quarantine(Path(t.path), self._cfg.output.directory, note)
        except OSError as exc:
            msg = f"cannot move {t.path} into quarantine: {exc}; it stays and is retried"
            if t.path not in self._unmoved:
                self._emit(IngestError("io", msg))
            self._unmoved.add(t.path)
            self._problem("output", msg)
            return
        self._unmoved.discard(t.path)
        if self._ledger is not None:
            try:
                # the identity follows the file: moved back by an operator, it is new
                self._ledger.relocate(entry_id, str(where), self._clock())
            except LedgerError as exc:
                self._ledger_failed(exc)
        if told:
            self._emit(FileSkipped(t.path, t.kind, QUARANTINED))
        else:
            self._emit(FileQuarantined(t.path, t.kind, note.reason, note.message, str(where)))

    def _note(self, now: float, outcome: str) -> None:
        self._recent.append((now, outcome))
        self._recent_counts[outcome] += 1

    def _backoff(self, attempt: int) -> float:
        base = self._cfg.processing.retry_delay_seconds * 2 ** (attempt - 1)
        return min(base, MAX_BACKOFF_SECONDS) * self._rng.uniform(1.0, 1.5)

    # ------------------------------------------------------------------ carried flows
    def _flush_carries(self, now: float) -> None:
        if not self._carries or self._ledger is None:
            return
        cfg = self._cfg
        pending = {t.series for t in self._tracked.values()}
        for series, stored in list(self._carries.items()):
            if series in pending:
                continue
            if cfg.flows.carry_across_files and now - stored < cfg.flows.idle_timeout_seconds:
                continue
            if not self._end_carry(series):
                return

    def _end_carry(self, series: str) -> bool:
        """End the flows carried for ``series`` and report them; False to stop for this round.

        Order: end the flows, write their CSV (rewritten under the same name if
        a crash repeats this), drop the carry, hand the flows out. A crash after
        the drop loses a few open flows from windows and metrics rather than
        counting them twice; their CSV is already written.
        """
        assert self._ledger is not None
        try:
            blob = self._ledger.get_carry(series)
            origin = self._ledger.carry_origin(series)
        except LedgerError as exc:
            self._ledger_failed(exc)
            return False
        flows = None
        if blob is not None:
            try:
                flows = self._finish(blob, flow_settings(self._cfg))
            except Exception as exc:  # noqa: BLE001 - a bad carry must not stop ingestion
                msg = f"cannot end the flows carried for series {series!r}: {exc}"
                self._emit(IngestError("internal", msg))
                self._problem("internal", msg)
        csv_path, rows = None, 0
        if flows is not None and len(flows) and origin is not None and self._cfg.output.flows_csv:
            try:
                csv_path, rows = self._write_end_csv(origin, flows)
            except OSError as exc:
                msg = f"cannot write the flow CSV of series {series!r} ({exc}); retrying"
                self._problem("output", msg)
                log.warning("cannot write outputs", extra={"series": series, "err": str(exc)})
                self._carries[series] = self._clock()  # try again after another idle period
                return True
        try:
            self._ledger.drop_carry(series)
        except LedgerError as exc:
            self._ledger_failed(exc)
            return False
        self._carries.pop(series, None)
        if flows is not None:
            self._emit(CarryFlushed(flows, series, csv_path, rows))
        return True

    def _write_end_csv(self, origin: Entry, flows: Any) -> tuple[str, int]:
        """Write flows left open at the end of a series beside its last file's CSV."""
        c = self._cfg
        directory = c.output.directory / FLOWS_DIR
        directory.mkdir(parents=True, exist_ok=True)
        name = flow_csv_name(
            Path(origin.path), c.capture.directory, origin.identity.mtime_ns, part="_end"
        )
        writer = FlowCsvWriter(directory / name)
        try:
            writer.write(flows)
            writer.close()
        except BaseException:
            writer.abort()
            raise
        return str(writer.path), writer.rows

    # ------------------------------------------------------------------ housekeeping
    def _housekeeping(self, now: float) -> None:
        cfg = self._cfg
        self._next_housekeeping = now + cfg.processing.interval_seconds
        backlog = sum(1 for t in self._tracked.values() if t.state in ("ready", "retry"))
        self._growth_streak = self._growth_streak + 1 if backlog > self._last_backlog else 0
        self._last_backlog = backlog
        if cfg.output.flows_csv or cfg.output.retention_hours or cfg.output.max_flow_csv_files:
            try:
                deleted = prune_flow_csvs(
                    cfg.output.directory / FLOWS_DIR,
                    now=now,
                    retention_hours=cfg.output.retention_hours,
                    max_files=cfg.output.max_flow_csv_files,
                )
            except OSError as exc:
                self._emit(IngestError("io", f"cannot prune flow CSVs: {exc}"))
                deleted = []
            if deleted:
                log.info("pruned flow CSVs", extra={"files": len(deleted)})
        self._gate.prune_writing(now, os.path.exists)
        if self._ledger is not None:
            try:
                self._ledger.prune(now - LEDGER_KEEP_SECONDS, os.path.exists)
            except LedgerError as exc:
                self._ledger_failed(exc)

    def _current_problems(self, now: float, watch_error: str | None) -> tuple[str, ...]:
        for key, (when, _) in list(self._problems.items()):
            if now - when > RECENT_SECONDS:
                del self._problems[key]
        out = [msg for _, msg in self._problems.values()]
        if watch_error:
            out.append(f"filesystem events unavailable, rescans only: {watch_error}")
        return tuple(out)

    def _update_status(self, running: bool = True) -> None:
        now = self._clock()
        while self._recent and (
            self._recent[0][0] < now - RECENT_SECONDS or len(self._recent) > 100000
        ):
            self._recent_counts[self._recent.popleft()[1]] -= 1
        ready = [t for t in self._tracked.values() if t.state == "ready"]
        retry = sum(1 for t in self._tracked.values() if t.state == "retry")
        oldest = max((now - t.ready_at for t in ready), default=0.0)
        recent = self._recent_counts
        w = self._watcher
        st = IngestStatus(
            backlog=len(ready) + retry,
            in_progress=len(self._running),
            not_ready=sum(1 for t in self._tracked.values() if t.state == "unripe"),
            workers=self._pool.alive() if self._pool is not None and running else 0,
            oldest_ready_age_seconds=max(0.0, oldest),
            backlog_growth_streak=self._growth_streak,
            directory_ok=self._dir_error is None,
            directory_error=self._dir_error,
            ledger_ok=self._ledger_error is None,
            ledger_error=self._ledger_error,
            watching=bool(w is not None and w.running),
            watch_error=w.error if w is not None else None,
            recent_done=recent["done"],
            recent_quarantined=recent["quarantined"],
            recent_failed_attempts=recent["failed"],
            last_activity_timestamp=self._last_activity,
            last_success_timestamp=self._last_success,
            carried_series=len(self._carries),
            running=running,
            problems=self._current_problems(now, w.error if w is not None else None),
        )
        with self._lock:
            self._status = st
