"""The durable record of every file: SQLite in WAL mode, one row per file identity.

A file is identified by its path plus device, inode, size and mtime, so a file
renamed, or replaced under the same name, is a new file. States:

- ``seen``: ready (age gate passed), waiting for a worker;
- ``in_progress``: handed to a worker (back to ``seen`` at the next start-up,
  so work interrupted by a crash or ``kill -9`` is redone);
- ``failed``: an attempt failed, ``next_retry`` says when to try again;
- ``done``: processed; never processed again;
- ``quarantined``: retries exhausted, moved aside;
- ``gone``: disappeared before it was processed.

The open flows carried from one file of a rotation series to the next are
stored in the same transaction as that file's ``done`` mark, so a crash can
neither lose them nor count them twice.

What was counted is committed with the work it counts, so the daemon's counters
can be restored after any restart (:meth:`Ledger.totals`): a ``done`` row keeps a
summary of its file (packets, bytes, skipped packets, fragments, flows, CSV rows);
the ``tallies`` table accumulates what belongs to no single row, each in the
transaction of the event it counts: failed attempts, the flows ended when a carry
is dropped, and the rows forgotten by :meth:`Ledger.prune`.

File names are bytes, not text: any name the OS can hold (``bad-\xff.pcap``)
must be recordable. Paths and series names are stored as BLOBs of their
``os.fsencode`` bytes and read back with ``os.fsdecode``; messages are stored
as valid UTF-8 with undecodable bytes escaped. Schema version 1 stored them as
TEXT and is migrated in place.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .records import DONE, FAILED, GONE, IN_PROGRESS, QUARANTINED, SEEN, Entry, Identity

LEDGER_FILE = "ledger.sqlite3"
LOCK_FILE = "ledger.lock"
SCHEMA_VERSION = 2


_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    id          INTEGER PRIMARY KEY,
    path        TEXT    NOT NULL,
    dev         INTEGER NOT NULL,
    ino         INTEGER NOT NULL,
    size        INTEGER NOT NULL,
    mtime_ns    INTEGER NOT NULL,
    series      TEXT,
    kind        TEXT    NOT NULL,
    state       TEXT    NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    next_retry  REAL,
    reason      TEXT,
    message     TEXT,
    ready_at    REAL    NOT NULL,
    updated_at  REAL    NOT NULL,
    summary     TEXT,
    UNIQUE (path, dev, ino, size, mtime_ns)
);
CREATE INDEX IF NOT EXISTS files_state ON files (state);
CREATE TABLE IF NOT EXISTS carry (
    series      TEXT PRIMARY KEY,
    blob        BLOB    NOT NULL,
    file_id     INTEGER NOT NULL,
    updated_at  REAL    NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tallies (
    name        TEXT    NOT NULL,
    labels      TEXT    NOT NULL,
    value       INTEGER NOT NULL,
    PRIMARY KEY (name, labels)
);
"""

# A sum of counted things: (name, label values) -> count. Names: ``done`` (kind),
# ``quarantined`` and ``failed`` (kind, reason), and the summary keys below.
Tally = dict[tuple[str, tuple[str, ...]], int]
# Summary keys holding {label: count} and plain counts (what executor.summary() writes).
_LABELLED = ("packets", "bytes", "skipped", "flows_by_protocol", "decapsulated")
_PLAIN = ("flows", "csv_rows", "ip_fragments", "flows_evicted")


class LedgerError(Exception):
    """The ledger cannot be opened or written (reason is user-facing)."""


@dataclass(frozen=True)
class Totals:
    """What the ledger says has been committed, for seeding counters after a restart."""

    done_by_kind: dict[str, int]
    quarantined_by_kind_reason: dict[tuple[str, str], int]
    packets_by_protocol: dict[str, int]
    bytes_by_protocol: dict[str, int]
    flows: int
    csv_rows: int
    flows_by_protocol: dict[str, int] = field(default_factory=dict)
    failed_by_kind_reason: dict[tuple[str, str], int] = field(default_factory=dict)
    skipped_by_reason: dict[str, int] = field(default_factory=dict)
    ip_fragments: int = 0
    flows_evicted: int = 0
    last_done_at: float | None = None  # when the latest file was marked done
    decapsulated_by_tunnel: dict[str, int] = field(default_factory=dict)

    @staticmethod
    def of(tally: Tally, last_done_at: float | None = None) -> Totals:
        def by(name: str) -> dict[str, int]:
            return {k[0]: v for (n, k), v in tally.items() if n == name and len(k) == 1}

        def by2(name: str) -> dict[tuple[str, str], int]:
            return {(k[0], k[1]): v for (n, k), v in tally.items() if n == name and len(k) == 2}

        def plain(name: str) -> int:
            return tally.get((name, ()), 0)

        return Totals(
            done_by_kind=by("done"),
            quarantined_by_kind_reason=by2("quarantined"),
            packets_by_protocol=by("packets"),
            bytes_by_protocol=by("bytes"),
            flows=plain("flows"),
            csv_rows=plain("csv_rows"),
            flows_by_protocol=by("flows_by_protocol"),
            failed_by_kind_reason=by2("failed"),
            skipped_by_reason=by("skipped"),
            ip_fragments=plain("ip_fragments"),
            flows_evicted=plain("flows_evicted"),
            last_done_at=last_done_at,
            decapsulated_by_tunnel=by("decapsulated"),
        )


def summary_tally(summary: dict[str, Any] | None) -> Tally:
    """Return what a summary (a done file's, or a dropped carry's) adds to the totals."""
    facts = summary or {}
    out: Tally = {}
    for name in _LABELLED:
        for label, n in (facts.get(name) or {}).items():
            if int(n):
                _merge(out, {(name, (str(label),)): int(n)})
    for name in _PLAIN:
        if int(facts.get(name) or 0):
            out[(name, ())] = int(facts[name])
    return out


def _merge(into: Tally, more: Tally) -> Tally:
    for key, n in more.items():
        into[key] = into.get(key, 0) + n
    return into


def _add_tally(db: sqlite3.Connection, tally: Tally) -> None:
    """Add ``tally`` to the ``tallies`` table (inside the caller's transaction)."""
    db.executemany(
        "INSERT INTO tallies (name, labels, value) VALUES (?,?,?) "
        "ON CONFLICT (name, labels) DO UPDATE SET value = value + excluded.value",
        [(name, json.dumps(list(labels)), n) for (name, labels), n in tally.items() if n],
    )


def _count_failure(db: sqlite3.Connection, entry_id: int, reason: str) -> None:
    row = db.execute("SELECT kind FROM files WHERE id=?", (entry_id,)).fetchone()
    if row is not None:
        _add_tally(db, {("failed", (row[0], reason)): 1})


_COLUMNS = (
    "id, path, dev, ino, size, mtime_ns, series, kind, state, attempts, next_retry, "
    "reason, message, ready_at"
)


def _key(name: str) -> bytes:
    """Return how a path or series name is stored: its bytes (any name the OS can hold)."""
    return os.fsencode(name)


def _opt_key(name: str | None) -> bytes | None:
    return None if name is None else _key(name)


def _name(value: bytes | str | None) -> str | None:
    if value is None:
        return None
    return os.fsdecode(bytes(value)) if isinstance(value, bytes | memoryview) else str(value)


def _text(message: str, limit: int = 4000) -> str:
    """Return ``message`` as storable UTF-8 (lone surrogates of undecodable names escaped)."""
    return message[:limit].encode("utf-8", "backslashreplace").decode("utf-8")


def _entry(row: tuple[Any, ...]) -> Entry:
    return Entry(
        id=row[0],
        path=_name(row[1]) or "",
        identity=Identity(row[2], row[3], row[4], row[5]),
        series=_name(row[6]),
        kind=row[7],
        state=row[8],
        attempts=row[9],
        next_retry=row[10],
        reason=row[11],
        message=row[12],
        ready_at=row[13],
    )


class Ledger:
    """One process's handle on the ledger (use from a single thread).

    An exclusive lock file keeps two instances from sharing a state directory.
    """

    _lock_fd: int | None

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        try:
            directory.mkdir(parents=True, exist_ok=True)
            self._lock_fd = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise LedgerError(f"cannot create the ledger in {directory}: {exc}") from exc
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(self._lock_fd)
            raise LedgerError(
                f"{directory} is in use by another netmon-exporter instance "
                "(give each instance its own state.directory)"
            ) from exc
        try:
            self._db = sqlite3.connect(directory / LEDGER_FILE, timeout=10, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._durable = True
            self._db.executescript(_SCHEMA)
            self._db.execute(
                "INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
            )
            row = self._db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            if int(row[0]) == 1:
                self._migrate_v1()
                row = (str(SCHEMA_VERSION),)
            if int(row[0]) != SCHEMA_VERSION:
                raise LedgerError(
                    f"{directory / LEDGER_FILE} has schema version {row[0]}, "
                    f"this version understands {SCHEMA_VERSION}"
                )
        except sqlite3.Error as exc:
            self.close()
            raise LedgerError(f"cannot open {directory / LEDGER_FILE}: {exc}") from exc
        except LedgerError:
            self.close()
            raise

    def _migrate_v1(self) -> None:
        """Version 1 kept paths and series as TEXT: store their UTF-8 bytes instead."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        db.execute("UPDATE files SET path=CAST(path AS BLOB) WHERE typeof(path)='text'")
        db.execute("UPDATE files SET series=CAST(series AS BLOB) WHERE typeof(series)='text'")
        db.execute("UPDATE carry SET series=CAST(series AS BLOB) WHERE typeof(series)='text'")
        db.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(SCHEMA_VERSION),))
        db.execute("COMMIT")

    def close(self) -> None:
        db = getattr(self, "_db", None)
        if db is not None:
            with contextlib.suppress(sqlite3.Error):
                db.close()
            self._db = None  # type: ignore[assignment]
        fd = getattr(self, "_lock_fd", None)
        if fd is not None:
            os.close(fd)
            self._lock_fd = None

    # -- transactions
    def _tx(self, fn: Callable[[sqlite3.Connection], Any], durable: bool = True) -> Any:
        """Run ``fn`` in one transaction.

        ``durable=False`` (marks that only say "look at this again") skips the
        fsync: such a commit survives a crash of the process but maybe not of
        the machine, and losing it only means the file is looked at again.
        """
        db = self._db
        try:
            if durable != self._durable:
                db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
                self._durable = durable
            db.execute("BEGIN IMMEDIATE")
            try:
                out = fn(db)
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
            return out
        except sqlite3.Error as exc:
            raise LedgerError(f"ledger write failed: {exc}") from exc

    def _query(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        try:
            return self._db.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise LedgerError(f"ledger read failed: {exc}") from exc

    # -- start-up
    def requeue_in_progress(self) -> int:
        """Hand back work interrupted by a crash; return how many files."""
        return int(
            self._tx(
                lambda db: (
                    db.execute(
                        "UPDATE files SET state=? WHERE state=?", (SEEN, IN_PROGRESS)
                    ).rowcount
                )
            )
        )

    # -- lookups
    def lookup(self, path: str, ident: Identity) -> Entry | None:
        rows = self._query(
            f"SELECT {_COLUMNS} FROM files WHERE path=? AND dev=? AND ino=? AND "
            "size=? AND mtime_ns=?",
            (_key(path), *ident),
        )
        return _entry(rows[0]) if rows else None

    def get(self, entry_id: int) -> Entry | None:
        rows = self._query(f"SELECT {_COLUMNS} FROM files WHERE id=?", (entry_id,))
        return _entry(rows[0]) if rows else None

    def entries(self, states: Iterable[str] | None = None) -> list[Entry]:
        if states is None:
            return [_entry(r) for r in self._query(f"SELECT {_COLUMNS} FROM files ORDER BY id")]
        st = tuple(states)
        marks = ",".join("?" * len(st))
        return [
            _entry(r)
            for r in self._query(
                f"SELECT {_COLUMNS} FROM files WHERE state IN ({marks}) ORDER BY id", st
            )
        ]

    def counts(self) -> dict[str, int]:
        return {s: n for s, n in self._query("SELECT state, COUNT(*) FROM files GROUP BY state")}

    # -- transitions
    def record_ready(
        self, items: Iterable[tuple[str, Identity, str | None, str]], now: float
    ) -> list[Entry]:
        """Insert ``seen`` rows for new ready files (path, identity, series, kind).

        Known identities are returned as they are; one transaction for the batch.
        """

        def fn(db: sqlite3.Connection) -> list[Entry]:
            out = []
            for name, ident, series_name, kind in items:
                path, series = _key(name), _opt_key(series_name)
                db.execute(
                    "INSERT OR IGNORE INTO files (path, dev, ino, size, mtime_ns, series, "
                    "kind, state, ready_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
                    (path, *ident, series, kind, SEEN, now, now),
                )
                db.execute(
                    "UPDATE files SET state=?, updated_at=? WHERE path=? AND dev=? AND "
                    "ino=? AND size=? AND mtime_ns=? AND state IN (?,?)",
                    (SEEN, now, path, *ident, GONE, IN_PROGRESS),
                )
                row = db.execute(
                    f"SELECT {_COLUMNS} FROM files WHERE path=? AND dev=? AND "
                    "ino=? AND size=? AND mtime_ns=?",
                    (path, *ident),
                ).fetchone()
                out.append(_entry(row))
            return out

        return list(self._tx(fn, durable=False))

    def mark_in_progress(self, entry_id: int, now: float) -> None:
        self._tx(
            lambda db: db.execute(
                "UPDATE files SET state=?, updated_at=? WHERE id=?", (IN_PROGRESS, now, entry_id)
            ),
            durable=False,
        )

    def mark_seen(self, entry_id: int, now: float) -> None:
        """Hand a file back (shutdown before it finished)."""
        self._tx(
            lambda db: db.execute(
                "UPDATE files SET state=?, updated_at=? WHERE id=? AND state=?",
                (SEEN, now, entry_id, IN_PROGRESS),
            ),
            durable=False,
        )

    def mark_done(
        self,
        entry_id: int,
        now: float,
        *,
        series: str | None = None,
        carry: bytes | None = None,
        update_carry: bool = False,
        summary: dict[str, Any] | None = None,
    ) -> None:
        """Record success and, in the same transaction, the series' new carry.

        ``update_carry``: replace the series' carry with ``carry`` (None deletes it).
        """

        def fn(db: sqlite3.Connection) -> None:
            cur = db.execute(
                "UPDATE files SET state=?, updated_at=?, next_retry=NULL, "
                "summary=? WHERE id=? AND state != ?",
                (DONE, now, json.dumps(summary) if summary else None, entry_id, DONE),
            )
            if cur.rowcount != 1:
                raise LedgerError(f"file {entry_id} is not in the ledger or already done")
            db.execute("INSERT OR REPLACE INTO meta VALUES ('last_done_at', ?)", (str(now),))
            if update_carry and series is not None:
                if carry is None:
                    db.execute("DELETE FROM carry WHERE series=?", (_key(series),))
                else:
                    db.execute(
                        "INSERT OR REPLACE INTO carry VALUES (?,?,?,?)",
                        (_key(series), carry, entry_id, now),
                    )

        self._tx(fn)

    def mark_failed(
        self, entry_id: int, now: float, reason: str, message: str, next_retry: float
    ) -> int:
        """Count a failed attempt; return the attempts so far."""

        def fn(db: sqlite3.Connection) -> int:
            db.execute(
                "UPDATE files SET state=?, attempts=attempts+1, next_retry=?, reason=?, "
                "message=?, updated_at=? WHERE id=?",
                (FAILED, next_retry, reason, _text(message), now, entry_id),
            )
            _count_failure(db, entry_id, reason)
            row = db.execute("SELECT attempts FROM files WHERE id=?", (entry_id,)).fetchone()
            return int(row[0]) if row else 0

        return int(self._tx(fn))

    def mark_quarantined(
        self, entry_id: int, now: float, reason: str, message: str, count_attempt: bool = True
    ) -> int:
        def fn(db: sqlite3.Connection) -> int:
            db.execute(
                "UPDATE files SET state=?, attempts=attempts+?, next_retry=NULL, reason=?, "
                "message=?, updated_at=? WHERE id=?",
                (QUARANTINED, 1 if count_attempt else 0, reason, _text(message), now, entry_id),
            )
            if count_attempt:  # the attempt that failed for good is a failed attempt too
                _count_failure(db, entry_id, reason)
            row = db.execute("SELECT attempts FROM files WHERE id=?", (entry_id,)).fetchone()
            return int(row[0]) if row else 0

        return int(self._tx(fn))

    def relocate(self, entry_id: int, path: str, now: float) -> None:
        """Record that a finished file now lives at ``path`` (moved into quarantine).

        Its identity follows it, so the same bytes moved back into the capture
        directory by an operator are a new file: a new attempt, not a repeat.
        """
        self._tx(
            lambda db: db.execute(
                "UPDATE OR IGNORE files SET path=?, updated_at=? WHERE id=?",
                (_key(path), now, entry_id),
            )
        )

    def mark_gone(self, entry_id: int, now: float) -> None:
        """Record that a file not yet processed disappeared (or changed) before its end."""
        self._tx(
            lambda db: db.execute(
                "UPDATE files SET state=?, updated_at=? WHERE id=? AND state IN (?,?,?)",
                (GONE, now, entry_id, SEEN, FAILED, IN_PROGRESS),
            ),
            durable=False,
        )

    # -- carried flows
    def carries(self) -> dict[str, float]:
        """Series holding carried flows -> when they were stored."""
        return {_name(s) or "": t for s, t in self._query("SELECT series, updated_at FROM carry")}

    def get_carry(self, series: str) -> bytes | None:
        rows = self._query("SELECT blob FROM carry WHERE series=?", (_key(series),))
        return bytes(rows[0][0]) if rows else None

    def carry_blobs(self) -> list[bytes]:
        """Every stored carry (for start-up housekeeping of carry files)."""
        return [bytes(b) for (b,) in self._query("SELECT blob FROM carry")]

    def carry_origin(self, series: str) -> Entry | None:
        """Return the file whose end left the series' carried flows open (for naming)."""
        rows = self._query(
            f"SELECT {', '.join('f.' + c.strip() for c in _COLUMNS.split(','))} "
            "FROM carry c JOIN files f ON f.id = c.file_id WHERE c.series=?",
            (_key(series),),
        )
        return _entry(rows[0]) if rows else None

    def drop_carry(self, series: str, summary: dict[str, Any] | None = None) -> None:
        """Forget the series' carry; count ``summary`` (the flows it ended) in the same step."""

        def fn(db: sqlite3.Connection) -> None:
            db.execute("DELETE FROM carry WHERE series=?", (_key(series),))
            _add_tally(db, summary_tally(summary))

        self._tx(fn)

    # -- housekeeping
    def prune(self, older_than: float, exists: Callable[[str], bool], limit: int = 1000) -> int:
        """Forget finished files last touched before ``older_than`` that no longer exist.

        What they counted moves into the tallies in the same transaction, so the
        totals (and the counters restored from them) do not drop.
        """
        rows = self._query(
            "SELECT id, path, state, kind, reason, summary FROM files WHERE state IN (?,?,?) "
            "AND updated_at < ? ORDER BY updated_at LIMIT ?",
            (DONE, QUARANTINED, GONE, older_than, limit),
        )
        gone = [r for r in rows if not exists(_name(r[1]) or "")]
        if not gone:
            return 0
        tally: Tally = {}
        for _, _, state, kind, reason, text in gone:
            _merge(tally, _row_tally(state, kind, reason, text))
        ids = [(r[0],) for r in gone]

        def fn(db: sqlite3.Connection) -> None:
            db.executemany("DELETE FROM files WHERE id=?", ids)
            _add_tally(db, tally)

        self._tx(fn)
        return len(ids)

    def totals(self) -> Totals:
        """Sum what was committed (see :func:`read_totals` for other threads)."""
        tally: Tally = {}
        for state, kind, reason, text in self._query(
            "SELECT state, kind, reason, summary FROM files WHERE state IN (?,?)",
            (DONE, QUARANTINED),
        ):
            _merge(tally, _row_tally(state, kind, reason, text))
        has_tallies = self._query(  # read before start-up creates it in an older ledger
            "SELECT 1 FROM sqlite_master WHERE type='table' AND name='tallies'"
        )
        rows = self._query("SELECT name, labels, value FROM tallies") if has_tallies else []
        for name, labels, n in rows:
            try:
                key = (str(name), tuple(str(x) for x in json.loads(labels)))
            except (ValueError, TypeError):
                continue
            _merge(tally, {key: int(n)})
        last = self._query("SELECT value FROM meta WHERE key='last_done_at'")
        if not last:  # a ledger written before last_done_at was kept
            last = self._query("SELECT MAX(updated_at) FROM files WHERE state=?", (DONE,))
        last_done_at = float(last[0][0]) if last and last[0][0] is not None else None
        return Totals.of(tally, last_done_at)


def _row_tally(state: str, kind: str, reason: str | None, summary: str | None) -> Tally:
    """What one finished row counts: a done file and its summary, or a quarantined file."""
    if state == QUARANTINED:
        return {("quarantined", (kind, reason or "internal")): 1}
    if state != DONE:
        return {}
    out: Tally = {("done", (kind,)): 1}
    if summary:
        try:
            facts = json.loads(summary)
        except ValueError:
            return out
        if isinstance(facts, dict):
            _merge(out, summary_tally(facts))
    return out


def read_totals(directory: Path) -> Totals | None:
    """Read committed totals from any thread (a separate read-only connection); None if absent."""
    path = directory / LEDGER_FILE
    if not path.exists():
        return None
    reader = Ledger.__new__(Ledger)
    try:
        reader._db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
        reader._lock_fd = None
        return reader.totals()
    except (sqlite3.Error, LedgerError):
        return None
    finally:
        reader.close()
