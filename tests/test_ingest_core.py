"""The scheduler core, table-driven: events in, decisions out; no threads, clocks or files.

Each case is a list of steps ``(time, input, expected decisions)``. Decisions are
shown as short strings (see ``show``) so a table reads as a story.
"""

from __future__ import annotations

import os
import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from netmon_exporter.ingest import decisions as dn
from netmon_exporter.ingest.records import DONE, FAILED, QUARANTINED, SEEN, Entry, Identity
from netmon_exporter.ingest.scheduler import Backlog, Rules, Scheduler

SOURCE = re.compile(r"^(?P<source>[a-z]+)-\d+\.[a-z]+$")  # a-0001.pcap is series a
RULES = Rules(max_retries=2, retry_delay_seconds=10.0, carry_idle_seconds=60.0, source=SOURCE)


class Low:
    """No jitter: every delay is its base value."""

    def uniform(self, a: float, b: float) -> float:
        return a


class High:
    """Most jitter: every delay is its base value times the top of the range."""

    def uniform(self, a: float, b: float) -> float:
        return b


def name(path: str) -> str:
    return path.rsplit("/", 1)[-1]


def _carry(d: dn.StartFile) -> str:
    return (
        (" carry" if d.use_carry else "")
        + (f" #{d.attempt}" if d.attempt > 1 else "")
        + (f" behind row {d.after}" if d.after else "")
    )


def _why(d: dn.Forget) -> str:
    return ("" if d.why is dn.Why.FINISHED else f" {d.why.value}") + (" mark-gone" if d.key else "")


def _recovered(d: dn.Quarantine | dn.Dispose) -> str:
    return " recovered" if d.recovered else ""


SHOW: dict[type, Callable[[Any], str]] = {
    dn.StartFile: lambda d: f"start {name(d.file.path)}{_carry(d)}",
    dn.Forget: lambda d: f"forget {name(d.path)}{_why(d)}",
    dn.RecordDone: lambda d: f"done {name(d.file.path)} after {d.attempts}",
    dn.RecordRetry: lambda d: (
        f"retry {name(d.file.path)} #{d.attempt} {d.reason} in {d.retry_in:g}"
    ),
    dn.RecordQuarantine: lambda d: f"give-up {name(d.file.path)} #{d.attempt} {d.reason}",
    dn.RetryOutput: lambda d: f"output-blocked {name(d.file.path)} in {d.retry_in:g}",
    dn.HandBack: lambda d: f"hand-back {name(d.file.path)}" + (" again" if d.again else ""),
    dn.EndCarry: lambda d: f"end-carry {d.series}",
    dn.Quarantine: lambda d: f"quarantine {name(d.file.path)}{_recovered(d)}",
    dn.Dispose: lambda d: f"dispose {name(d.file.path)}{_recovered(d)}",
}


def show(d: dn.Decision) -> str:
    """One decision as a short string."""
    return SHOW[type(d)](d)


@dataclass
class Harness:
    """A scheduler plus what the shell would remember: ledger keys and identities."""

    core: Scheduler
    now: float = 0.0
    keys: dict[str, int] = field(default_factory=dict)
    idents: dict[str, Identity] = field(default_factory=dict)

    def info(self, path: str) -> dn.FileInfo:
        (info,) = [i for i in self.core.unripe() if i.path == path]
        return info


Step = Callable[[Harness], list[dn.Decision]]


def ident(path: str, mtime: float, size: int = 100) -> Identity:
    return Identity(1, zlib.crc32(os.fsencode(path)), size, int(mtime * 1e9))


def seen_row(key: int, info: dn.FileInfo, ready_at: float) -> Entry:
    """The ledger's row for a file seen for the first time."""
    return Entry(
        key, info.path, info.identity, info.series, info.kind, SEEN, 0, None, None, None, ready_at
    )


def see(path: str, mtime: float = 1.0, size: int = 100) -> Step:
    """A look found the file with this mtime and size."""

    def step(h: Harness) -> list[dn.Decision]:
        h.idents[path] = ident(path, mtime, size)
        return h.core.observe(path, h.idents[path])

    return step


def gone(path: str) -> Step:
    return lambda h: h.core.observe(path, None)


def scanned(*paths: str) -> Step:
    return lambda h: h.core.scanned(set(paths))


def admit(
    path: str,
    state: str = SEEN,
    attempts: int = 0,
    next_retry: float | None = None,
    ready_at: float | None = None,
    reason: str | None = None,
) -> Step:
    """The age gate passed the file; the ledger answers with this row."""

    def step(h: Harness) -> list[dn.Decision]:
        info = h.info(path)
        key = h.keys.setdefault(path, len(h.keys) + 1)
        row = Entry(
            key,
            path,
            info.identity,
            info.series,
            info.kind,
            state,
            attempts,
            next_retry,
            reason,
            "it failed" if reason else None,
            h.now if ready_at is None else ready_at,
        )
        return h.core.admitted(info, row, h.now)

    return step


def _hand_out(pick: Callable[[Harness], list[dn.StartFile]]) -> Step:
    """The shell hands out what ``pick`` chose and tells the core it did."""

    def step(h: Harness) -> list[dn.Decision]:
        chosen = pick(h)
        for s in chosen:
            h.core.started(s)
        return list(chosen)

    return step


def start(slots: int = 8) -> Step:
    """A scheduling round with ``slots`` free workers; the shell starts what is due."""
    return _hand_out(lambda h: h.core.due(h.now, slots))


def queue(limit: int = 8) -> Step:
    """The shell queues what may wait behind a running file of its series."""
    return _hand_out(lambda h: h.core.follow_ups(h.now, limit))


def not_run(path: str) -> Step:
    return end(path, dn.NotRun())


def end(path: str, result: dn.Result) -> Step:
    return lambda h: h.core.outcome(h.keys[path], result, h.now)


def ok(path: str, carry: bool = True) -> Step:
    return end(path, dn.Succeeded(carry))


def fail(path: str, reason: str = "format") -> Step:
    return end(path, dn.Failed(reason, "it failed"))


def blocked(path: str) -> Step:
    return end(path, dn.OutputFailed("disk full"))


def tick() -> Step:
    return lambda h: h.core.tick(h.now)


def set_aside(path: str) -> Step:
    return lambda h: h.core.set_aside(path)


def stays(path: str) -> Step:
    def step(h: Harness) -> list[dn.Decision]:
        h.core.stays(dn.FileInfo(path, h.idents[path], None, "pcap"))
        return []

    return step


def resync(**carries: float) -> Step:
    def step(h: Harness) -> list[dn.Decision]:
        h.core.resync(carries)
        return []

    return step


def rules(**changes: object) -> Step:
    def step(h: Harness) -> list[dn.Decision]:
        h.core.configure(Rules(**{**RULES.__dict__, **changes}))  # type: ignore[arg-type]
        return []

    return step


def ready(path: str, mtime: float = 1.0) -> list[tuple[float, Step, list[str]]]:
    """Steps at time 0: found, then admitted as a new ledger row."""
    return [(0, see(path, mtime), []), (0, admit(path), [])]


DONE_A1 = ["done a-0001.pcap after 1", "forget a-0001.pcap", "dispose a-0001.pcap"]

CASES: dict[str, list[tuple[float, Step, list[str]]]] = {
    "a series runs one file at a time, in time order, carrying flows along": [
        (0, see("a-0002.pcap", 2), []),
        (0, see("a-0001.pcap", 1), []),
        (0, admit("a-0002.pcap"), []),
        (1, start(), []),  # a-0001 is older and not ready yet: a-0002 waits for it
        (1, admit("a-0001.pcap"), []),
        (1, start(), ["start a-0001.pcap carry"]),
        (2, start(), []),  # one file per series at a time
        (3, ok("a-0001.pcap"), DONE_A1),
        (3, start(), ["start a-0002.pcap carry"]),
    ],
    "equal mtimes go by the number in the name": [
        *ready("a-0010.pcap"),
        *ready("a-0009.pcap"),
        (0, start(), ["start a-0009.pcap carry"]),
    ],
    "an older file turning up while a later one runs waits for it": [
        *ready("a-0002.pcap", 2),
        (0, start(), ["start a-0002.pcap carry"]),
        *ready("a-0001.pcap", 1),
        (1, start(), []),
        (
            2,
            ok("a-0002.pcap"),
            ["done a-0002.pcap after 1", "forget a-0002.pcap", "dispose a-0002.pcap"],
        ),
        (2, start(), ["start a-0001.pcap carry"]),
    ],
    "series heads go in capture time order, whichever became ready first": [
        (0, see("b-0001.pcap", 200), []),
        (0, see("a-0001.pcap", 100), []),
        (0, see("lone.pcap", 50), []),
        (5, admit("b-0001.pcap"), []),
        (6, admit("a-0001.pcap"), []),
        (7, admit("lone.pcap"), []),
        # the heads share the earliest ready time (5): a (captured earlier), then b; the
        # lone file, ready last, comes after them
        (7, start(1), ["start a-0001.pcap carry"]),
        # b-0001 was captured 100 s after the running a-0001: more than half a window
        # ahead, it waits for a to go on
        (7, start(2), ["start lone.pcap"]),
        (
            8,
            ok("a-0001.pcap"),
            ["done a-0001.pcap after 1", "forget a-0001.pcap", "dispose a-0001.pcap"],
        ),
        (8, start(2), ["start b-0001.pcap carry"]),
    ],
    "a head ready much later waits its turn, whatever its mtime": [
        (0, see("b-0001.pcap", 200), []),
        (0, admit("b-0001.pcap"), []),
        (100, see("old-0001.pcap", 1), []),  # captured long ago, ready 100 s later
        (100, admit("old-0001.pcap"), []),
        (100, start(1), ["start b-0001.pcap carry"]),
        (100, start(1), ["start old-0001.pcap carry"]),
    ],
    "files of no series run side by side, oldest ready first, as slots allow": [
        (0, see("x.pcap"), []),
        (0, see("y.pcap"), []),
        (0, see("z.pcap"), []),
        (5, admit("z.pcap"), []),
        (6, admit("y.pcap"), []),
        (7, admit("x.pcap"), []),
        (7, start(2), ["start z.pcap", "start y.pcap"]),
        (7, start(0), []),
        (7, start(2), ["start x.pcap"]),
    ],
    "flow CSVs stand alone: no carry": [
        *ready("a-0001.csv"),
        (0, start(), ["start a-0001.csv"]),
    ],
    "retries back off, doubling, then quarantine after max_retries": [
        *ready("x.pcap"),
        (0, start(), ["start x.pcap"]),
        (1, fail("x.pcap"), ["retry x.pcap #1 format in 10"]),
        (10.9, start(), []),
        (11, start(), ["start x.pcap #2"]),
        (12, fail("x.pcap", "timeout"), ["retry x.pcap #2 timeout in 20"]),
        (31.9, start(), []),
        (32, start(), ["start x.pcap #3"]),
        (
            33,
            fail("x.pcap"),
            ["give-up x.pcap #3 format", "forget x.pcap", "quarantine x.pcap"],
        ),
        (99, start(), []),
    ],
    "the next file of a series waits behind the running one, on the same worker": [
        *ready("a-0001.pcap", 1),
        *ready("a-0002.pcap", 2),
        *ready("a-0003.pcap", 3),
        *ready("b-0001.pcap", 1),
        (0, start(), ["start a-0001.pcap carry", "start b-0001.pcap carry"]),
        (0, queue(), ["start a-0002.pcap carry behind row 1"]),
        (0, queue(), []),  # one file waits behind another, no more
        (1, ok("a-0001.pcap"), DONE_A1),
        (1, queue(0), []),  # no room for more results
        (1, queue(), ["start a-0003.pcap carry behind row 2"]),
        (
            2,
            ok("a-0002.pcap"),
            ["done a-0002.pcap after 1", "forget a-0002.pcap", "dispose a-0002.pcap"],
        ),
        (
            3,
            ok("a-0003.pcap"),
            ["done a-0003.pcap after 1", "forget a-0003.pcap", "dispose a-0003.pcap"],
        ),
    ],
    "a file behind one that failed was not run: it waits its turn again, no attempt used": [
        *ready("a-0001.pcap", 1),
        *ready("a-0002.pcap", 2),
        (0, start(), ["start a-0001.pcap carry"]),
        (0, queue(), ["start a-0002.pcap carry behind row 1"]),
        (1, fail("a-0001.pcap"), ["retry a-0001.pcap #1 format in 10"]),
        (1, queue(), []),  # nothing waits behind a file that is not running
        (1, not_run("a-0002.pcap"), ["hand-back a-0002.pcap again"]),
        (5, start(), []),  # still behind its failing predecessor
        (11, start(), ["start a-0001.pcap carry #2"]),
        (11, queue(), ["start a-0002.pcap carry behind row 1"]),
        (12, ok("a-0001.pcap"), ["done a-0001.pcap after 2", *DONE_A1[1:]]),
        (
            13,
            ok("a-0002.pcap"),
            ["done a-0002.pcap after 1", "forget a-0002.pcap", "dispose a-0002.pcap"],
        ),
    ],
    "no file waits behind another while another series waits for a worker": [
        *ready("a-0001.pcap", 1),
        *ready("a-0002.pcap", 3),
        *ready("b-0001.pcap", 2),
        *ready("b-0002.pcap", 4),
        (0, start(1), ["start a-0001.pcap carry"]),  # one worker
        (0, queue(), []),  # b-0001 is waiting: a-0002 must not take its turn
        (1, ok("a-0001.pcap"), DONE_A1),
        (1, start(1), ["start b-0001.pcap carry"]),  # capture-time order: b before a-0002
        (1, queue(), []),
        (
            2,
            ok("b-0001.pcap"),
            ["done b-0001.pcap after 1", "forget b-0001.pcap", "dispose b-0001.pcap"],
        ),
        (2, start(1), ["start a-0002.pcap carry"]),
        (2, queue(), []),  # b-0002 waits
        (3, start(1), ["start b-0002.pcap carry"]),  # a second worker
        (3, queue(), []),  # nothing further to queue in either series
    ],
    "a series runs at most half a window (capture time) ahead of another": [
        *ready("a-0001.pcap", 0),
        *ready("a-0002.pcap", 30),
        *ready("a-0003.pcap", 40),
        *ready("b-0001.pcap", 5),
        *ready("b-0002.pcap", 45),
        (0, start(), ["start a-0001.pcap carry", "start b-0001.pcap carry"]),
        # b-0002 would be 45 s ahead of a's 0-s file, a-0002 only 25 s ahead of b's
        (0, queue(), ["start a-0002.pcap carry behind row 1"]),
        (1, ok("a-0001.pcap"), DONE_A1),
        (1, queue(), ["start b-0002.pcap carry behind row 4"]),  # a-0003: 35 s ahead of b
        (
            2,
            ok("b-0001.pcap"),
            ["done b-0001.pcap after 1", "forget b-0001.pcap", "dispose b-0001.pcap"],
        ),
        (2, queue(), ["start a-0003.pcap carry behind row 2"]),
    ],
    "the series furthest behind is never held; a failing one holds nobody back": [
        *ready("a-0001.pcap", 100),
        *ready("a-0002.pcap", 200),
        *ready("b-0001.pcap", 160),
        (0, start(1), ["start a-0001.pcap carry"]),  # one worker: capture-time order
        (0, queue(), []),  # b-0001 waits for a worker
        (1, ok("a-0001.pcap"), DONE_A1),
        (1, start(1), ["start b-0001.pcap carry"]),
        (2, start(1), []),  # a-0002 is 40 s ahead of the running b-0001
        (2, fail("b-0001.pcap"), ["retry b-0001.pcap #1 format in 10"]),
        (2, start(1), ["start a-0002.pcap carry"]),  # b waits for a retry: a goes on
    ],
    "a series more than the backfill horizon behind holds nobody back": [
        *ready("a-0001.pcap", 4000),
        *ready("a-0002.pcap", 4005),
        *ready("b-0001.pcap", 0),
        *ready("b-0002.pcap", 5),
        (0, start(), ["start b-0001.pcap carry", "start a-0001.pcap carry"]),
        (
            0,
            queue(),
            ["start b-0002.pcap carry behind row 3", "start a-0002.pcap carry behind row 1"],
        ),
    ],
    "only files that carry flows and have not failed wait behind another": [
        *ready("a-0001.csv", 1),
        *ready("a-0002.csv", 2),
        *ready("b-0001.pcap", 1),
        *ready("b-0002.pcap", 2),
        (0, start(), ["start a-0001.csv", "start b-0001.pcap carry"]),
        (0, queue(), ["start b-0002.pcap carry behind row 3"]),  # flow CSVs carry nothing
        (1, not_run("b-0002.pcap"), ["hand-back b-0002.pcap again"]),
        (1, blocked("b-0001.pcap"), ["output-blocked b-0001.pcap in 10"]),
        (1, queue(), []),
    ],
    "a failing file holds back the later files of its series until quarantined": [
        *ready("a-0001.pcap", 1),
        *ready("a-0002.pcap", 2),
        (0, start(), ["start a-0001.pcap carry"]),
        (1, fail("a-0001.pcap"), ["retry a-0001.pcap #1 format in 10"]),
        (5, start(), []),  # a-0002 must not overtake its failing predecessor
        (11, start(), ["start a-0001.pcap carry #2"]),
    ],
    "outputs that cannot be written never use up attempts nor quarantine": [
        *ready("x.pcap"),
        (0, start(), ["start x.pcap"]),
        (0, blocked("x.pcap"), ["output-blocked x.pcap in 10"]),
        (10, start(), ["start x.pcap"]),  # still attempt 1
        (10, blocked("x.pcap"), ["output-blocked x.pcap in 20"]),
        (30, start(), ["start x.pcap"]),
        (30, blocked("x.pcap"), ["output-blocked x.pcap in 40"]),
        (70, start(), ["start x.pcap"]),
        (70, blocked("x.pcap"), ["output-blocked x.pcap in 80"]),
        (150, start(), ["start x.pcap"]),
        (150, blocked("x.pcap"), ["output-blocked x.pcap in 160"]),
        (310, start(), ["start x.pcap"]),
        (310, blocked("x.pcap"), ["output-blocked x.pcap in 300"]),  # capped at 5 minutes
        (610, start(), ["start x.pcap"]),
        (610, fail("x.pcap"), ["retry x.pcap #1 format in 10"]),  # a real failure: attempt 1
    ],
    "carried flows end after the idle timeout, not while a next file is pending": [
        *ready("a-0001.pcap"),
        (0, start(), ["start a-0001.pcap carry"]),
        (0, ok("a-0001.pcap"), DONE_A1),
        (59, tick(), []),
        (59, see("a-0002.pcap", 2), []),  # being written: the series is not over
        (200, tick(), []),
        (200, gone("a-0002.pcap"), ["forget a-0002.pcap gone"]),  # deleted unfinished
        (201, tick(), ["end-carry a"]),
        (500, tick(), []),
    ],
    "a carry is ended once its idle timeout passes": [
        *ready("a-0001.pcap"),
        (0, start(), ["start a-0001.pcap carry"]),
        (0, ok("a-0001.pcap"), DONE_A1),
        (59.9, tick(), []),
        (60, tick(), ["end-carry a"]),
    ],
    "a file leaving no open flows drops its series' carry": [
        *ready("a-0001.pcap"),
        (0, start(), ["start a-0001.pcap carry"]),
        (0, ok("a-0001.pcap", carry=False), DONE_A1),
        (999, tick(), []),
    ],
    "a carry whose CSV could not be written is tried again after another idle period": [
        (0, resync(a=0.0), []),
        (60, tick(), ["end-carry a"]),
        (60, lambda h: h.core.carry_kept("a", h.now) or [], []),
        (119, tick(), []),
        (120, tick(), ["end-carry a"]),
    ],
    "carrying switched off: carries end at once": [
        (0, resync(a=0.0), []),
        (1, tick(), []),
        (1, rules(carry_across_files=False), []),
        (1, tick(), ["end-carry a"]),
    ],
    "a quarantined file ends the carry of its series; the next file starts fresh": [
        *ready("a-0001.pcap", 1),
        *ready("a-0002.pcap", 2),
        *ready("a-0003.pcap", 3),
        (0, start(), ["start a-0001.pcap carry"]),
        (0, ok("a-0001.pcap"), DONE_A1),
        (0, rules(max_retries=0), []),
        (0, start(), ["start a-0002.pcap carry"]),
        (
            1,
            fail("a-0002.pcap"),
            [
                "give-up a-0002.pcap #1 format",
                "end-carry a",
                "forget a-0002.pcap",
                "quarantine a-0002.pcap",
            ],
        ),
        (1, start(), ["start a-0003.pcap carry"]),
        (1, tick(), []),  # nothing carried any more
    ],
    "crash recovery: a done row is disposed of, not redone": [
        (0, see("x.pcap"), []),
        (0, admit("x.pcap", DONE), ["forget x.pcap", "dispose x.pcap recovered"]),
        (0, start(), []),
        (0, stays("x.pcap"), []),
        (5, see("x.pcap"), []),  # kept in place: never looked at again
        (5, lambda h: [dn.StartFile(0, i, False, 0) for i in h.core.unripe()], []),
    ],
    "crash recovery: a quarantined row is moved aside, not redone": [
        (0, see("x.pcap"), []),
        (
            0,
            admit("x.pcap", QUARANTINED, 3, reason="format"),
            ["forget x.pcap", "quarantine x.pcap recovered"],
        ),
        (0, start(), []),
    ],
    "crash recovery: a failed row waits for its retry and keeps its attempts": [
        (0, see("x.pcap"), []),
        (0, admit("x.pcap", FAILED, attempts=2, next_retry=50.0), []),
        (49, start(), []),
        (50, start(), ["start x.pcap #3"]),
        (51, fail("x.pcap"), ["give-up x.pcap #3 format", "forget x.pcap", "quarantine x.pcap"]),
    ],
    "crash recovery: an interrupted row (in progress, requeued as seen) is redone": [
        (0, see("x.pcap"), []),
        (0, admit("x.pcap", SEEN, attempts=1), []),
        (0, start(), ["start x.pcap #2"]),
    ],
    "a file changing while ready is a new file, gated again": [
        *ready("x.pcap"),
        (1, see("x.pcap", 1, size=200), ["forget x.pcap changed mark-gone"]),
        (1, start(), []),  # back behind the age gate
        (2, admit("x.pcap"), []),
        (2, start(), ["start x.pcap"]),
        (3, see("x.pcap", 1, size=300), []),  # running: the worker's outcome decides
    ],
    "a file growing before it is ready just restarts its gate": [
        (0, see("x.pcap", 1, size=100), []),
        (1, see("x.pcap", 1, size=200), []),
        (2, admit("x.pcap"), []),
        (2, start(), ["start x.pcap"]),
    ],
    "files disappearing: unripe, ready, missing from a scan, during processing": [
        (0, see("u.pcap"), []),
        (0, gone("u.pcap"), ["forget u.pcap gone"]),
        *ready("r.pcap"),
        (0, gone("r.pcap"), ["forget r.pcap gone mark-gone"]),
        *ready("s.pcap"),
        (0, see("t.pcap"), []),
        (1, scanned("t.pcap"), ["forget s.pcap gone mark-gone"]),
        *ready("v.pcap"),
        (2, start(), ["start v.pcap"]),
        (2, scanned("t.pcap"), []),  # running files are the worker's business
        (3, end("v.pcap", dn.Vanished()), ["forget v.pcap vanished mark-gone"]),
    ],
    "shutting down hands interrupted files back": [
        *ready("x.pcap"),
        (0, start(), ["start x.pcap"]),
        (1, end("x.pcap", dn.Interrupted()), ["hand-back x.pcap", "forget x.pcap"]),
    ],
    "a file set aside after an error stays aside until it changes": [
        *ready("x.pcap"),
        (0, start(), ["start x.pcap"]),
        (1, set_aside("x.pcap"), ["forget x.pcap set_aside"]),
        (2, ok("x.pcap"), []),  # its late outcome is ignored
        (3, see("x.pcap"), []),
        (3, start(), []),
        (4, see("x.pcap", 2), []),  # changed: a new file
        (4, admit("x.pcap"), []),
        (4, start(), ["start x.pcap"]),
    ],
    "a reopened ledger drops waiting files and takes its carries": [
        *ready("x.pcap"),
        *ready("y.pcap"),
        (0, start(1), ["start x.pcap"]),
        (1, resync(b=0.0), []),
        (1, start(), []),  # y is looked up again first
        (1, ok("x.pcap", carry=False), ["done x.pcap after 1", "forget x.pcap", "dispose x.pcap"]),
        (60, tick(), ["end-carry b"]),
    ],
}


@pytest.mark.parametrize("case", list(CASES))
def test_scheduler(case: str) -> None:
    h = Harness(Scheduler(RULES, Low()))
    for i, (now, step, expected) in enumerate(CASES[case]):
        h.now = now
        got = [show(d) for d in step(h)]
        assert got == expected, f"step {i} at t={now}"


def test_jitter_comes_from_the_rng_and_backoff_is_capped() -> None:
    core = Scheduler(Rules(max_retries=10, retry_delay_seconds=60.0), High())
    path = "/c/x.pcap"
    core.observe(path, ident(path, 1))
    (info,) = core.unripe()
    core.admitted(
        info, Entry(1, path, info.identity, None, "pcap", SEEN, 0, None, None, None, 0), 0
    )
    delays = []
    for n in range(8):
        (s,) = core.due(1e9, 1)
        core.started(s)
        (d,) = core.outcome(1, dn.Failed("io", "boom"), 0)
        assert isinstance(d, dn.RecordRetry) and d.attempt == n + 1
        delays.append(d.retry_in)
    assert delays == [90, 180, 360, 720, 1440, 2880, 5400, 5400]  # × 1.5, capped at an hour


def test_backlog_counts_what_waits_and_what_runs() -> None:
    h = Harness(Scheduler(RULES, Low()))
    steps = [*ready("x.pcap"), *ready("y.pcap"), (0, see("u.pcap"), [])]
    for now, step, _ in steps:
        h.now = now
        step(h)
    h.core.started(h.core.due(0, 1)[0])
    assert h.core.backlog(30.0) == Backlog(1, 1, 1, 30.0)


def test_outcome_of_an_unknown_key_decides_nothing() -> None:
    assert Scheduler(RULES, Low()).outcome(7, dn.Succeeded(), 0) == []


def _ahead_by_scanning(core: Scheduler, heads: dict[str, Any]) -> Callable[[Any], bool]:
    """A series more than half a window ahead of another's head (ready or running, ready
    not much later, not a backfill) waits: every pair looked at."""
    from netmon_exporter.ingest.scheduler import TOGETHER_SECONDS, FileState

    active = [h for h in heads.values() if h.state in (FileState.READY, FileState.RUNNING)]

    def ahead(f: Any) -> bool:
        behind = [
            h.info.identity.mtime_ns
            for h in active
            if h.info.series != f.info.series and h.ready_at <= f.ready_at + TOGETHER_SECONDS
        ]
        gap = f.info.identity.mtime_ns - min(behind) if behind else 0
        return f.info.series is not None and 30e9 < gap <= 3600e9

    return ahead


def _heads_by_scanning(core: Scheduler) -> tuple[dict[str, Any], set[str]]:
    from netmon_exporter.ingest.scheduler import FileState

    heads: dict[str, Any] = {}
    busy: set[str] = set()
    for f in core._files.values():
        series = f.info.series
        if series is None:
            continue
        if f.state is FileState.RUNNING:
            busy.add(series)
        # equal times and numbers (a-01, a-1): the path decides, as in the index
        if series not in heads or (f.order, f.info.path) < (
            heads[series].order,
            heads[series].info.path,
        ):
            heads[series] = f
    return heads, busy


def _follow_ups_by_scanning(core: Scheduler, now: float, limit: int) -> list[int]:
    """`Scheduler.follow_ups` with every file looked at: the second file of each running
    head's series, when nothing else is due."""
    from netmon_exporter.ingest.scheduler import FileState

    if limit <= 0 or _due_by_scanning(core, now, 1):
        return []
    heads, _ = _heads_by_scanning(core)
    ahead = _ahead_by_scanning(core, heads)
    out: list[int] = []
    for head in list(core._running.values()):
        series = head.info.series
        if series is None or heads.get(series) is not head:
            continue
        later = sorted(
            (f for f in core._files.values() if f.info.series == series and f is not head),
            key=lambda f: (f.order, f.info.path),
        )
        if not later:
            continue
        second = later[0]
        if (
            head.use_carry
            and second.state is FileState.READY
            and second.attempts == 0
            and second.info.kind != "csv"
            and not ahead(second)
        ):
            out.append(second.key)
            if len(out) == limit:
                break
    return out


def _due_by_scanning(core: Scheduler, now: float, slots: int) -> list[int]:
    """`Scheduler.due` as first written: every followed file looked at (the reference)."""
    from netmon_exporter.ingest.scheduler import TOGETHER_SECONDS, FileState

    heads, busy = _heads_by_scanning(core)
    ready = [
        f
        for f in core._files.values()
        if (f.state is FileState.READY or (f.state is FileState.RETRY and f.next_retry <= now))
        and (f.info.series is None or (heads[f.info.series] is f and f.info.series not in busy))
    ]
    ahead = _ahead_by_scanning(core, heads)
    ready = [f for f in ready if not ahead(f)]
    heads_ready = [f.ready_at for f in ready if f.info.series is not None]
    together = min(heads_ready) if heads_ready else 0.0

    def key(f: Any) -> tuple[Any, ...]:
        if f.info.series is not None and f.ready_at - together <= TOGETHER_SECONDS:
            return (together, f.order)
        return (f.ready_at, f.order)

    import heapq

    return [f.key for f in heapq.nsmallest(slots, ready, key=key)]


def _backlog_by_scanning(core: Scheduler, now: float) -> Backlog:
    """`Scheduler.backlog` as first written: every followed file looked at."""
    from netmon_exporter.ingest.scheduler import FileState

    files = list(core._files.values())
    ready = [f.ready_at for f in files if f.state is FileState.READY]
    return Backlog(
        sum(f.state in (FileState.READY, FileState.RETRY) for f in files),
        sum(f.state is FileState.RUNNING for f in files),
        sum(f.state is FileState.UNRIPE for f in files),
        max(0.0, now - min(ready, default=now)),
    )


@pytest.mark.parametrize(("slack", "budget"), [(1024, 256), (0, 256), (1024, 2)])
@pytest.mark.parametrize("series", ["abc", "abcdefghijkl"])
@pytest.mark.parametrize("seed", range(6))
def test_the_series_index_answers_as_a_scan_of_every_file_would(
    seed: int, series: str, slack: int, budget: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Random looks, admissions, starts, outcomes, changes and disappearances over a few
    series (3 or 12) and loose files: `due` and `follow_ups` (which read the per-series
    index and the heaps of series heads and loose files), `backlog` and `unripe` (which
    read the files by state) answer exactly what looking at every followed file answers (``slack`` 0: the heaps compacted all along)."""
    import random

    from netmon_exporter.ingest import scheduler

    monkeypatch.setattr(scheduler, "HEAP_SLACK", slack)
    monkeypatch.setattr(scheduler, "LOOK_BUDGET", budget)
    rng = random.Random(seed)
    core = Scheduler(RULES, Low())
    paths = [f"/c/{s}-{i:04d}.pcap" for s in series for i in range(18 // len(series) + 2)]
    paths += ["/c/x.pcap", "/c/y.pcap", "/c/host-a.pcap", "/c/host-b.pcap", "/c/gw.pcapng"]
    # names that sort alike (a-01 and a-1: the same number) and a name that is not UTF-8
    paths += ["/c/a-01.pcap", "/c/a-1.pcap", os.fsdecode(b"/c/\xff\xfe-7.pcap")]
    keys: dict[str, int] = {}
    for step in range(400):
        now = float(step)
        path = rng.choice(paths)
        op = rng.random()
        if op < 0.35:
            core.observe(
                path, ident(path, rng.choice([1.0, 2.0, 3.0, float(step)]), rng.randint(1, 3))
            )
        elif op < 0.45:
            core.observe(path, None)
        elif op < 0.7:
            for info in core.unripe():
                key = keys.setdefault(info.path, len(keys) + 1)
                row = seen_row(key, info, now)
                core.admitted(info, row, now)
        elif op < 0.85:
            for s in core.due(now, rng.randint(1, 3)):
                core.started(s)
        else:
            running = core.running()
            if running:
                result = rng.choice(
                    [
                        dn.Succeeded(True),
                        dn.Failed("format", "x"),
                        dn.OutputFailed("full"),
                        dn.NotRun(),
                    ]
                )
                core.outcome(rng.choice(running), result, now)
        if rng.random() < 0.02:
            core.resync({})  # the ledger reopened: every waiting file looked up again
        for slots in (1, 2, 5, 20):
            assert [s.key for s in core.due(now, slots)] == _due_by_scanning(core, now, slots), step
            assert [s.key for s in core.follow_ups(now, slots)] == _follow_ups_by_scanning(
                core, now, slots
            ), step
        assert core.backlog(now) == _backlog_by_scanning(core, now), step
        assert core.unripe() == [f.info for f in core._files.values() if f.state.value == "unripe"]
        assert sorted(core._loose | {p for fs in core._series.values() for _, p in fs}) == sorted(
            core._files
        )


def test_a_loose_file_failed_twice_waits_for_its_second_retry() -> None:
    """The loose files' heap keeps the entry that made the first retry due; the second
    failure's later retry time is what counts (retry delay 10 s, then 20 s), and the
    file waiting for it takes no free worker from a file that became ready later."""
    core = Scheduler(RULES, Low())
    for path in ("/c/host-a.pcap", "/c/host-b.pcap"):
        core.observe(path, ident(path, 1.0))
    for key, info in enumerate(core.unripe(), 1):
        row = seen_row(key, info, 0.0)
        core.admitted(info, row, float(key))
    (s,) = core.due(1.0, 1)
    assert s.key == 1
    core.started(s)
    core.outcome(1, dn.Failed("format", "x"), 1.0)
    assert [s.key for s in core.due(10.0, 1)] == [2]
    (s,) = core.due(11.0, 1)
    assert (s.key, s.attempt) == (1, 2)
    core.started(s)
    core.outcome(1, dn.Failed("format", "x"), 12.0)
    assert [s.key for s in core.due(12.0, 1)] == [s.key for s in core.due(31.0, 1)] == [2]
    assert [(s.key, s.attempt) for s in core.due(32.0, 1)] == [(1, 3)]


@pytest.mark.parametrize("slack", [0, 64])
def test_a_backlog_of_loose_files_leaves_no_heap_behind(
    slack: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """3,000 files of no series go through in turns of 8, some retried, some handed back
    unrun: each lazy heap holds at most twice the followed files plus its slack (as
    files end it may lag by a push), and the files start in the order they became ready."""
    from netmon_exporter.ingest import scheduler

    monkeypatch.setattr(scheduler, "HEAP_SLACK", slack)
    core = Scheduler(RULES, Low())
    for i in range(3000):
        path = f"/c/host-{chr(97 + i % 26)}{chr(97 + i // 26 % 26)}{chr(97 + i // 676)}.pcap"
        core.observe(path, ident(path, 1.0))
    for n, info in enumerate(core.unripe()):
        row = seen_row(n + 1, info, n)
        core.admitted(info, row, float(n))
    started: list[int] = []
    starts: list[int] = []
    handed_back: set[int] = set()
    restarted: set[int] = set()
    now = 3000.0
    while core.backlog(now).backlog or core.running():
        limit = 2 * len(core._files) + slack + 1  # compacted at a push beyond it
        due = core.due(now, 8)
        for key in handed_back - restarted:  # handed back last round: on again, before
            keys = [s.key for s in due]  # every file that was not retried
            assert key in keys and all(k % 97 == 0 for k in keys[: keys.index(key)])
            restarted.add(key)
        for s in due:
            starts.append(s.key)
            core.started(s)
        for key in core.running():
            result: dn.Result = dn.Succeeded()
            if key % 97 == 0:
                result = dn.Failed("format", "x")
            elif key % 89 == 0 and key not in handed_back:
                handed_back.add(key)
                result = dn.NotRun()
            else:
                started.append(key)
            core.outcome(key, result, now)
        now += 1.0
        for heap in (core._loose_waiting, core._loose_retrying, core._ready_since):
            assert len(heap) <= limit
    assert sorted(started) == [k for k in range(1, 3001) if k % 97]
    first_starts = list(dict.fromkeys(starts))
    assert first_starts == sorted(first_starts)
    assert restarted == handed_back != set()


def test_files_gone_from_a_backlog_leave_no_heap_entries_behind(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """2,000 loose files wait; all but the five earliest are deleted (no round takes
    their entries off the heaps' tops): the next file to become ready compacts the
    heaps to the files still followed."""
    from netmon_exporter.ingest import scheduler

    monkeypatch.setattr(scheduler, "HEAP_SLACK", 0)
    core = Scheduler(RULES, Low())
    paths = [
        f"/c/host-{chr(97 + i % 26)}{chr(97 + i // 26 % 26)}x{i // 676}.pcap" for i in range(2000)
    ]
    for path in paths:
        core.observe(path, ident(path, 1.0))
    for n, info in enumerate(core.unripe()):
        row = seen_row(n + 1, info, n)
        core.admitted(info, row, float(n))
    for info in [f.info for f in core._files.values()][5:]:
        core.observe(info.path, None)
    late = "/c/late.pcap"
    core.observe(late, ident(late, 1.0))
    (info,) = core.unripe()
    core.admitted(
        info,
        seen_row(9999, info, 5000.0),
        5000.0,
    )
    assert len(core._loose_waiting) == len(core._ready_since) == 6
    assert [s.key for s in core.due(5000.0, 8)] == [1, 2, 3, 4, 5, 9999]


@pytest.mark.parametrize("naming", ["loose", "a series per host", "hosts, ready in turn"])
def test_a_round_over_a_long_backlog_looks_at_the_files_it_takes_not_at_every_file(
    naming: str,
) -> None:
    """20,000 files wait after an outage, of no series (hosts' captures copied in) or each
    of a series of its own (`web0042-1700000000.pcap`, one host each, a day's files):
    `due`, `follow_ups` and `backlog` look at a handful of them per call, not at all of
    them, so working off the backlog costs its length, not its square (they used to look
    at every file, or every series, each round: 12,000 tiny loose files took the daemon
    198 s, 15 ms of main-process CPU a file, now 65 s and 3.7 ms; 4,000 files in 2,000
    series 73.9 s and 17.6 ms, now 37.2 s and 7.7 ms). Where the heads' capture times
    and ready times are in no helpful order (all captured at once, ready one after the
    other over hours), a question stops after ``LOOK_BUDGET`` entries and looks at every
    series instead, as before."""
    from netmon_exporter.ingest.scheduler import LOOK_BUDGET

    core = Scheduler(RULES, Low())
    for i in range(20_000):
        host = "".join(chr(97 + i // 26**d % 26) for d in range(4))  # aaaa, baaa, ...
        path = f"/c/host{host}.pcap" if naming == "loose" else f"/c/{host}-1700000000.pcap"
        core.observe(path, ident(path, 1.0))
    for n, info in enumerate(core.unripe()):
        assert (info.series is None) == (naming == "loose")
        ready_at = n // 1000 if naming == "a series per host" else n  # within seconds, or not
        row = seen_row(n + 1, info, ready_at)
        core.admitted(info, row, float(ready_at))
    looked = 0
    stands = core._stands

    def counting(heap: list[Any], entry: tuple[Any, ...]) -> bool:
        nonlocal looked
        looked += 1
        return stands(heap, entry)

    core._stands = counting  # type: ignore[method-assign]
    rounds = 20 if naming == "hosts, ready in turn" else 100  # a full scan each: slow
    for done in range(1, rounds + 1):
        (s,) = core.due(30_000.0, 1)
        core.started(s)
        assert core.follow_ups(30_000.0, 8) == []
        core.outcome(s.key, dn.Succeeded(), 30_000.0)
        assert core.backlog(30_000.0).backlog == 20_000 - done
    if naming == "hosts, ready in turn":
        assert looked < rounds * 4 * (LOOK_BUDGET + 8) and core.full_scans >= rounds
    else:
        assert looked < rounds * 20 and core.full_scans == 0
