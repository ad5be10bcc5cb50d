"""The ledger: identities, states, carried flows stored with the done mark, crash safety."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from netmon_exporter.ingest.ledger import Ledger, LedgerError, read_totals
from netmon_exporter.ingest.records import (
    DONE,
    FAILED,
    GONE,
    IN_PROGRESS,
    QUARANTINED,
    SEEN,
    Entry,
    Identity,
)

A = Identity(1, 100, 10, 1_000)


@pytest.fixture
def ledger(tmp_path: Path):
    led = Ledger(tmp_path / "state")
    yield led
    led.close()


def _get(led: Ledger, entry_id: int) -> Entry:
    entry = led.get(entry_id)
    assert entry is not None
    return entry


def _lookup(led: Ledger, path: str, ident: Identity) -> Entry:
    entry = led.lookup(path, ident)
    assert entry is not None
    return entry


def _ready(led: Ledger, path: str = "/c/a.pcap", ident: Identity = A, series: str | None = "a"):
    return led.record_ready([(path, ident, series, "pcap")], 5.0)[0]


def test_record_ready_is_idempotent_and_keeps_state(ledger: Ledger) -> None:
    e = _ready(ledger)
    assert (e.state, e.attempts, e.ready_at) == (SEEN, 0, 5.0)
    ledger.mark_in_progress(e.id, 6.0)
    ledger.mark_done(e.id, 7.0)
    again = ledger.record_ready([("/c/a.pcap", A, "a", "pcap")], 9.0)[0]
    assert (again.id, again.state, again.ready_at) == (e.id, DONE, 5.0)
    assert _lookup(ledger, "/c/a.pcap", A).state == DONE


def test_renamed_or_replaced_file_is_new(ledger: Ledger) -> None:
    e = _ready(ledger)
    ledger.mark_done(e.id, 7.0)
    renamed = _ready(ledger, path="/c/b.pcap")
    replaced = _ready(ledger, ident=A._replace(ino=101, mtime_ns=2_000))
    rewritten = _ready(ledger, ident=A._replace(size=11))
    assert len({e.id, renamed.id, replaced.id, rewritten.id}) == 4
    assert {renamed.state, replaced.state, rewritten.state} == {SEEN}


def test_carry_is_stored_with_the_done_mark(ledger: Ledger) -> None:
    e1 = _ready(ledger)
    e2 = _ready(ledger, path="/c/a-2.pcap")
    ledger.mark_done(e1.id, 7.0, series="a", carry=b"open flows", update_carry=True)
    assert ledger.get_carry("a") == b"open flows"
    assert ledger.carries() == {"a": 7.0}
    # a failing done mark (already done) must not replace the carry
    with pytest.raises(LedgerError):
        ledger.mark_done(e1.id, 8.0, series="a", carry=b"WRONG", update_carry=True)
    assert ledger.get_carry("a") == b"open flows"
    ledger.mark_done(e2.id, 9.0, series="a", carry=None, update_carry=True)
    assert ledger.get_carry("a") is None
    ledger.mark_done(_ready(ledger, path="/c/a-3.pcap").id, 10.0, series="a", carry=b"x")
    assert ledger.get_carry("a") is None  # update_carry=False leaves the carry alone


def test_failures_quarantine_and_gone(ledger: Ledger) -> None:
    e = _ready(ledger)
    assert ledger.mark_failed(e.id, 6.0, "timeout", "slow", next_retry=16.0) == 1
    got = _get(ledger, e.id)
    assert (got.state, got.attempts, got.next_retry, got.reason) == (FAILED, 1, 16.0, "timeout")
    assert ledger.mark_quarantined(e.id, 20.0, "timeout", "slow again") == 2
    assert _get(ledger, e.id).state == QUARANTINED
    g = _ready(ledger, path="/c/gone.pcap")
    ledger.mark_gone(g.id, 21.0)
    assert _get(ledger, g.id).state == GONE
    assert _ready(ledger, path="/c/gone.pcap").state == SEEN  # it came back unchanged


def test_in_progress_is_requeued_after_restart(tmp_path: Path) -> None:
    led = Ledger(tmp_path)
    e = _ready(led)
    led.mark_in_progress(e.id, 6.0)
    done = _ready(led, path="/c/done.pcap")
    led.mark_done(done.id, 6.0)
    led.close()
    led = Ledger(tmp_path)
    try:
        assert led.requeue_in_progress() == 1
        assert _get(led, e.id).state == SEEN
        assert _get(led, done.id).state == DONE
        assert led.counts() == {SEEN: 1, DONE: 1}
        assert [x.id for x in led.entries([SEEN, IN_PROGRESS])] == [e.id]
    finally:
        led.close()


def test_second_instance_on_the_same_state_directory_is_refused(ledger: Ledger) -> None:
    with pytest.raises(LedgerError, match="in use by another netmon-exporter instance"):
        Ledger(ledger.directory)


def test_unusable_state_directory_is_reported(tmp_path: Path) -> None:
    blocker = tmp_path / "state"
    blocker.write_text("not a directory")
    with pytest.raises(LedgerError, match="cannot create the ledger"):
        Ledger(blocker)


def test_totals_and_prune(ledger: Ledger) -> None:
    for i in range(3):
        e = _ready(ledger, path=f"/c/a-{i}.pcap")
        ledger.mark_done(
            e.id,
            7.0,
            summary={
                "packets": {"tcp": 10},
                "bytes": {"tcp": 1000},
                "flows": 2,
                "flows_by_protocol": {"udp": 2},
                "csv_rows": 2,
            },
        )
    q = _ready(ledger, path="/c/bad.pcap")
    ledger.mark_quarantined(q.id, 7.0, "format", "bad magic")
    t = read_totals(ledger.directory)
    assert t is not None
    assert t.done_by_kind == {"pcap": 3}
    assert t.quarantined_by_kind_reason == {("pcap", "format"): 1}
    assert (t.packets_by_protocol, t.bytes_by_protocol, t.flows, t.csv_rows) == (
        {"tcp": 30},
        {"tcp": 3000},
        6,
        6,
    )
    assert t.flows_by_protocol == {"udp": 6}
    assert read_totals(ledger.directory.parent / "nowhere") is None
    # prune forgets finished files that are gone, keeps those still present
    removed = ledger.prune(100.0, exists=lambda p: p == "/c/a-0.pcap")
    assert removed == 3
    assert ledger.counts() == {DONE: 1}


def test_every_restored_count_survives_and_prune_keeps_totals(ledger: Ledger) -> None:
    """What the daemon's restored counters read: failures, carry drops, pruned rows included."""
    summary = {
        "packets": {"tcp": 10},
        "bytes": {"tcp": 1000},
        "skipped": {"non_ip": 3},
        "ip_fragments": 2,
        "flows": 4,
        "flows_by_protocol": {"tcp": 4},
        "flows_evicted": 1,
        "csv_rows": 4,
        "decapsulated": {"vxlan": 5, "gre": 1},
    }
    for i in range(2):
        e = _ready(ledger, path=f"/c/a-{i}.pcap")
        ledger.mark_done(e.id, 7.0 + i, summary=summary)
    bad = _ready(ledger, path="/c/bad.pcap")
    ledger.mark_failed(bad.id, 7.0, "io", "read error", 8.0)
    ledger.mark_quarantined(bad.id, 9.0, "format", "bad magic")
    ledger.drop_carry("a", {"flows": 3, "flows_by_protocol": {"udp": 3}, "csv_rows": 3})
    before = read_totals(ledger.directory)
    assert before is not None
    assert before.done_by_kind == {"pcap": 2}
    assert before.failed_by_kind_reason == {("pcap", "io"): 1, ("pcap", "format"): 1}
    assert before.quarantined_by_kind_reason == {("pcap", "format"): 1}
    assert before.skipped_by_reason == {"non_ip": 6}
    assert (before.ip_fragments, before.flows_evicted, before.flows, before.csv_rows) == (
        4,
        2,
        11,
        11,
    )
    assert before.flows_by_protocol == {"tcp": 8, "udp": 3}
    assert before.decapsulated_by_tunnel == {"vxlan": 10, "gre": 2}
    assert before.last_done_at == 8.0
    # every finished file is gone from disk: its row is forgotten, not what it counted
    assert ledger.prune(100.0, exists=lambda p: False) == 3
    assert ledger.counts() == {}
    assert read_totals(ledger.directory) == before


def test_totals_of_a_ledger_from_before_tallies(tmp_path: Path) -> None:
    """A ledger written by an older version (no tallies table) still seeds the counters.

    Totals are read before start-up opens (and upgrades) the ledger.
    """
    import sqlite3

    led = Ledger(tmp_path / "state")
    e = _ready(led)
    led.mark_done(e.id, 7.0, summary={"packets": {"udp": 5}, "flows": 1})
    led.close()
    db = sqlite3.connect(tmp_path / "state" / "ledger.sqlite3")
    db.execute("DROP TABLE tallies")
    db.execute("DELETE FROM meta WHERE key='last_done_at'")
    db.commit()
    db.close()
    t = read_totals(tmp_path / "state")
    assert t is not None and t.packets_by_protocol == {"udp": 5} and t.flows == 1
    assert t.last_done_at == 7.0


_WRITER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from netmon_exporter.ingest.ledger import Ledger
    from netmon_exporter.ingest.records import Identity
    led = Ledger(Path(sys.argv[1]))
    led.requeue_in_progress()
    i = 0
    print("ready", flush=True)
    while True:
        i += 1
        e = led.record_ready([(f"/c/s-{i:06d}.pcap", Identity(1, i, 1, 1), "s", "pcap")], 0.0)[0]
        if e.state == "done":
            continue
        led.mark_in_progress(e.id, 0.0)
        led.mark_done(e.id, 0.0, series="s", carry=str(e.id).encode(), update_carry=True)
""")


def test_kill_9_never_splits_the_done_mark_from_its_carry(tmp_path: Path) -> None:
    state = tmp_path / "state"
    for _round in range(3):
        proc = subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(state)], stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        time.sleep(0.3 + 0.1 * _round)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        led = Ledger(state)
        try:
            done = [e for e in led.entries([DONE])]
            assert done, "the writer made no progress"
            # the carry always belongs to the newest done file: never ahead, never behind
            assert led.get_carry("s") == str(max(e.id for e in done)).encode()
            assert IN_PROGRESS not in led.counts() or led.requeue_in_progress() <= 1
        finally:
            led.close()


# -- file names are bytes (issue 9: one non-UTF-8 name stopped all ingestion)
BAD = os.fsdecode(b"/c/bad-\xff\xfe.pcap")  # lone surrogates, as os.listdir returns them
BAD_SERIES = os.fsdecode(b"sensor-\xff")


def test_any_name_the_os_can_hold_is_recorded_and_read_back(ledger: Ledger) -> None:
    e = _ready(ledger, path=BAD, series=BAD_SERIES)
    assert (e.path, e.series) == (BAD, BAD_SERIES)
    assert _lookup(ledger, BAD, A).id == e.id
    ledger.mark_failed(e.id, 6.0, "format", f"{BAD}: not a pcap", 7.0)
    assert _get(ledger, e.id).message == "/c/bad-\\udcff\\udcfe.pcap: not a pcap"
    ledger.mark_done(e.id, 8.0, series=BAD_SERIES, carry=b"open", update_carry=True)
    assert ledger.carries().keys() == {BAD_SERIES}
    assert ledger.get_carry(BAD_SERIES) == b"open"
    origin = ledger.carry_origin(BAD_SERIES)
    assert origin is not None and origin.path == BAD
    ledger.drop_carry(BAD_SERIES)
    assert ledger.carries() == {}


def test_relocated_file_moved_back_is_a_new_file(ledger: Ledger) -> None:
    q = _ready(ledger, path="/c/bad.pcap")
    ledger.mark_quarantined(q.id, 6.0, "format", "not a pcap")
    ledger.relocate(q.id, "/out/quarantine/bad.pcap", 7.0)
    back = _ready(ledger, path="/c/bad.pcap")  # same inode, size and mtime: `mv` back
    assert back.id != q.id and back.state == SEEN


def test_schema_1_ledger_is_migrated(tmp_path: Path) -> None:
    import sqlite3

    state = tmp_path / "state"
    led = Ledger(state)
    e = _ready(led, path="/c/old.pcap", series="old")
    led.mark_done(e.id, 7.0, series="old", carry=b"x", update_carry=True)
    led.close()
    db = sqlite3.connect(state / "ledger.sqlite3")  # rewrite as version 1 had it: TEXT
    db.execute("UPDATE files SET path=CAST(path AS TEXT), series=CAST(series AS TEXT)")
    db.execute("UPDATE carry SET series=CAST(series AS TEXT)")
    db.execute("UPDATE meta SET value='1' WHERE key='schema_version'")
    db.commit()
    db.close()
    led = Ledger(state)
    try:
        assert _lookup(led, "/c/old.pcap", A).state == DONE
        assert led.get_carry("old") == b"x"
    finally:
        led.close()
