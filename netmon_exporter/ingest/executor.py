"""Carry out the scheduler's decisions: ledger writes, disposal, quarantine, events.

Each decision is done in the order given. One whose ledger write fails stops the
rest of its list (the ledger link then reports it and is reopened; the core is
resynced from the ledger). Nothing here decides *whether* to do something: that
is :mod:`.scheduler`'s job.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .. import hash_key
from ..config import Config
from ..flow_schema import protocol_counts
from ..metrics import FILE_KINDS
from ..pipeline import CarryState, FileResult, FlowSettings
from . import carry_store
from . import events as ev
from .age_gate import AgeGate
from .decisions import (
    Decision,
    Dispose,
    EndCarry,
    Forget,
    HandBack,
    Quarantine,
    RecordDone,
    RecordQuarantine,
    RecordRetry,
    RetryOutput,
    Why,
)
from .disposal import QuarantineNote, after_processing, quarantine, write_end_csv
from .health_notes import Problems
from .ledger import Ledger
from .ledger_link import LedgerLink
from .records import DONE, QUARANTINED
from .scheduler import Scheduler

log = logging.getLogger("netmon_exporter.ingest")

_FAIL_CATEGORY = {"io": "io", "internal": "internal"}  # everything else is "parse"


def flow_settings(cfg: Config) -> FlowSettings:
    """Return the flow-engine subset of the config."""
    f = cfg.flows
    return FlowSettings(
        idle_timeout_seconds=f.idle_timeout_seconds,
        active_timeout_seconds=f.active_timeout_seconds,
        activity_timeout_seconds=f.activity_timeout_seconds,
        carry_across_files=f.carry_across_files,
        max_open_flows=f.max_open_flows,
        tunnel_depth=f.tunnel_depth,
        interim_seconds=cfg.windows.length_seconds,  # flows cut where windows are
        csv_interim=cfg.output.flows_csv_interim,
        hash_key=hash_key.current(),  # the daemon's secret (drawn at start)
    )


def summary(result: FileResult) -> dict[str, Any]:
    """What the ledger keeps of a result, so counters can be restored after a restart.

    Everything :func:`~netmon_exporter.recording.record_file_done` counts for the file
    (see ``metrics.RESTORED_COUNTERS``), in the ledger's summary keys.
    """
    return {
        "packets": dict(result.packets_by_protocol),
        "bytes": dict(result.bytes_by_protocol),
        "skipped": {k: int(v) for k, v in result.skipped_by_reason.items() if v},
        "ip_fragments": int(result.ip_fragments),
        "decapsulated": {k: int(v) for k, v in result.decapsulated_by_tunnel.items() if v},
        "flows": int(result.flow_count),
        "flows_by_protocol": result.flow_counts(),  # exact: ``flows`` may be a sample
        "flows_evicted": int(result.flows_evicted),
        "csv_rows": int(result.csv_rows),
    }


def carry_summary(flows_by_protocol: dict[str, int], csv_rows: int) -> dict[str, Any]:
    """What the ledger counts when a carry is dropped: the flows it ended, their CSV rows."""
    return {
        "flows": sum(flows_by_protocol.values()),
        "flows_by_protocol": dict(flows_by_protocol),
        "csv_rows": int(csv_rows),
    }


class Executor:
    """Do what the scheduler decided (scheduler thread only)."""

    def __init__(
        self,
        cfg: Config,
        core: Scheduler,
        gate: AgeGate,
        ledger: LedgerLink,
        emit: Callable[[ev.Event], None],
        finish: Callable[[CarryState, FlowSettings], Any],
        clock: Callable[[], float],
    ) -> None:
        self.cfg = cfg
        self._core, self._gate, self._ledger = core, gate, ledger
        self._emit, self._finish, self._clock = emit, finish, clock
        self.problems = Problems()  # what degrades the health check ``ingestion``
        self._unmoved: set[str] = set()  # quarantined in the ledger, move still to do
        self.remover = carry_store.Remover()  # replaced carry files, off this thread

    def apply(self, decisions: Sequence[Decision], result: FileResult | None = None) -> bool:
        """Carry out ``decisions`` in order; False when a ledger write failed and stopped them."""
        for d in decisions:
            match d:
                case Forget():
                    ok = self._forget(d)
                case RecordDone():
                    assert result is not None, "a file's success needs its result"
                    ok = self._record_done(d, result)
                case RecordRetry() | RecordQuarantine():
                    ok = self._record_failure(d)
                case RetryOutput():
                    ok = self._retry_output(d)
                case HandBack():
                    ok = self._hand_back(d)
                case EndCarry():
                    ok = self._end_carry(d.series)
                case Quarantine():
                    ok = self._quarantine(d)
                case Dispose():
                    ok = self._dispose(d)
                case _:
                    raise TypeError(f"the executor does not carry out {d!r}")
            if not ok:
                return False
        return True

    # ------------------------------------------------------------------ per decision
    def _forget(self, d: Forget) -> bool:
        self._gate.forget(d.path)
        if d.key:
            self._ledger.run(lambda led: led.mark_gone(d.key, self._clock()), self._clock())
        if d.why is Why.CHANGED:
            log.info(
                "file changed after it was found ready; treating it as new", extra={"file": d.path}
            )
        elif d.why is Why.VANISHED:
            self._emit(ev.IngestError("io", f"{d.path} disappeared while being processed"))
        return True

    def _record_done(self, d: RecordDone, result: FileResult) -> bool:
        now = self._clock()
        facts = summary(result)
        series = d.file.series
        replaces = d.update_carry and series is not None

        def done(led: Ledger) -> bytes | None:
            old = led.get_carry(series) if replaces and series is not None else None
            led.mark_done(
                d.key,
                now,
                series=series,
                carry=result.carry,
                update_carry=d.update_carry,
                summary=facts,
            )
            return old

        ok, old = self._ledger.run(done, now)
        if not ok:
            return False
        if old is not None and old != result.carry:
            self.remover.remove(self._carry_dir, old)  # no longer referenced
        for warning in result.warnings:
            self._emit(ev.IngestError("ledger", warning))
            self.problems.note("carry", warning, now)
        kind = result.kind if result.kind in FILE_KINDS else d.file.kind
        self._emit(
            ev.FileDone(dataclasses.replace(result, carry=None), kind, d.lag_seconds, d.attempts)
        )
        self.problems.clear("output")
        return True

    def _record_failure(self, d: RecordRetry | RecordQuarantine) -> bool:
        now = self._clock()
        ok, _ = self._ledger.run(lambda led: self._write_failure(led, d, now), now)
        if not ok:
            return False
        retry_in = d.retry_in if isinstance(d, RecordRetry) else None
        category = _FAIL_CATEGORY.get(d.reason, "parse")
        f = d.file
        self._emit(
            ev.FileFailed(
                f.path,
                f.kind,
                d.reason,
                d.message,
                d.attempt,
                retry_in is not None,
                category,
                retry_in,
            )
        )
        return True

    @staticmethod
    def _write_failure(led: Ledger, d: RecordRetry | RecordQuarantine, now: float) -> None:
        if isinstance(d, RecordRetry):
            led.mark_failed(d.key, now, d.reason, d.message, now + d.retry_in)
        else:
            led.mark_quarantined(d.key, now, d.reason, d.message)

    def _retry_output(self, d: RetryOutput) -> bool:
        now = self._clock()
        self._ledger.run(lambda led: led.mark_seen(d.key, now), now)  # no attempt used up
        self.problems.note("output", f"cannot write outputs ({d.message}); retrying", now)
        log.warning(
            "cannot write outputs; the capture will be retried",
            extra={"file": d.file.path, "retry_in": round(d.retry_in, 1), "err": d.message},
        )
        self._emit(ev.OutputBlocked(d.file.path, d.message, d.retry_in))
        return True

    def _hand_back(self, d: HandBack) -> bool:
        now = self._clock()
        ok, _ = self._ledger.run(lambda led: led.mark_seen(d.key, now), now)
        if ok and not d.again:  # if not ok, the next start re-queues in_progress rows anyway
            log.info("file handed back for the next start", extra={"file": d.file.path})
        return True

    def _dispose(self, d: Dispose) -> bool:
        path, c = d.file.path, self.cfg.capture
        try:
            where = after_processing(Path(path), c.after_processing, c.done_directory, c.directory)
        except OSError as exc:
            what = "dispose of" if d.recovered else f"{c.after_processing}"
            self._emit(ev.IngestError("io", f"processed {path} but cannot {what} it: {exc}"))
            where = Path(path)
        if where is not None and str(where) == path:
            self._core.stays(d.file)
        if d.recovered and c.after_processing != "keep":
            self._emit(ev.FileSkipped(path, d.file.kind, DONE))
        return True

    def _quarantine(self, d: Quarantine) -> bool:
        """Move a file the ledger has quarantined; report it once it has moved.

        A move that fails (output unwritable) is reported as such and retried at the
        next scan, which finds the file still here.
        """
        f = d.file
        # a file found again after a restart was reported then; one whose move failed
        # earlier in this run was never reported: report it now
        told = d.recovered and f.path not in self._unmoved
        note = QuarantineNote(f.path, f.kind, d.reason, d.message, d.attempts, d.when)
        try:
            where = quarantine(Path(f.path), self.cfg.output.directory, note)
        except OSError as exc:
            msg = f"cannot move {f.path} into quarantine: {exc}; it stays and is retried"
            if f.path not in self._unmoved:
                self._emit(ev.IngestError("io", msg))
            self._unmoved.add(f.path)
            self.problems.note("output", msg, self._clock())
            return True
        self._unmoved.discard(f.path)
        now = self._clock()
        # the identity follows the file: moved back by an operator, it is new
        self._ledger.run(lambda led: led.relocate(d.key, str(where), now), now)
        if told:
            self._emit(ev.FileSkipped(f.path, f.kind, QUARANTINED))
        else:
            self._emit(ev.FileQuarantined(f.path, f.kind, d.reason, d.message, str(where)))
        return True

    def _end_carry(self, series: str) -> bool:
        """End the flows carried for ``series`` and report them.

        Order: end the flows, write their CSV (rewritten under the same name if a
        crash repeats this), drop the carry and count the flows in one ledger step,
        hand the flows out. A crash after the drop loses a few flows from windows
        rather than counting them twice; their CSV is written and the restarted
        counters include them.
        """
        now = self._clock()
        ok, got = self._ledger.run(
            lambda led: (led.get_carry(series), led.carry_origin(series)), now
        )
        if not ok or got is None:
            return False
        blob, origin = got
        flows = self._finished_flows(series, blob)
        csv_path, rows = None, 0
        if flows is not None and len(flows) and origin is not None and self.cfg.output.flows_csv:
            c = self.cfg
            try:
                csv_path, rows = write_end_csv(
                    flows,
                    Path(origin.path),
                    origin.identity.mtime_ns,
                    c.capture.directory,
                    c.output.directory,
                    interim=c.output.flows_csv_interim,
                )
            except OSError as exc:
                msg = f"cannot write the flow CSV of series {series!r} ({exc}); retrying"
                self.problems.note("output", msg, now)
                log.warning("cannot write outputs", extra={"series": series, "err": str(exc)})
                self._core.carry_kept(series, now)  # try again after another idle period
                return True
        counts = protocol_counts(flows) if flows is not None else {}
        facts = carry_summary(counts, rows)
        ok, _ = self._ledger.run(lambda led: led.drop_carry(series, facts), now)
        if not ok:
            return False
        self.remover.remove(self._carry_dir, blob)
        if flows is not None:
            self._emit(ev.CarryFlushed(flows, series, csv_path, rows, counts))
        return True

    @property
    def _carry_dir(self) -> Path:
        return carry_store.directory(self._ledger.directory)

    def _finished_flows(self, series: str, blob: bytes | None) -> Any:
        if blob is None:
            return None
        try:
            state = carry_store.load(self._carry_dir, blob)
            return self._finish(state, flow_settings(self.cfg))
        except Exception as exc:  # noqa: BLE001 - a bad carry must not stop ingestion
            msg = f"cannot end the flows carried for series {series!r}: {exc}"
            self._emit(ev.IngestError("internal", msg))
            self.problems.note("internal", msg, self._clock())
            return None
