"""The age gate: never hand out a file that is still being written."""

from __future__ import annotations

import os
from pathlib import Path

from netmon_exporter.ingest.age_gate import AgeGate, Identity, Note, files_open_for_writing


def _never_open(paths: object) -> set[str]:
    return set()


def _gate(min_age: float, **kw: object) -> AgeGate:
    """A gate whose files count as watched (the quiet period has its own test)."""
    gate = AgeGate(min_age, **kw)  # type: ignore[arg-type]
    gate.watch_since = 0.0
    return gate


def test_needs_two_looks_settle_time_and_min_age(tmp_path: Path) -> None:
    p = tmp_path / "a.pcap"
    p.write_bytes(b"x" * 10)
    mtime = p.stat().st_mtime_ns / 1e9  # as the gate computes it
    gate = _gate(5.0, settle_seconds=1.0, open_for_writing=_never_open)
    assert not gate.look(str(p), Identity.of(p.stat()), mtime + 10)  # first look
    assert not gate.look(str(p), Identity.of(p.stat()), mtime + 10.5)  # settled for only 0.5 s
    assert gate.look(str(p), Identity.of(p.stat()), mtime + 11)
    young = _gate(5.0, settle_seconds=1.0, open_for_writing=_never_open)
    young.look(str(p), Identity.of(p.stat()), mtime + 1)
    assert not young.look(str(p), Identity.of(p.stat()), mtime + 3)  # settled but only 3 s old
    assert young.look(str(p), Identity.of(p.stat()), mtime + 5)


def test_growth_restarts_the_settle_clock_even_with_min_age_zero(tmp_path: Path) -> None:
    p = tmp_path / "a.pcap"
    p.write_bytes(b"x")
    gate = _gate(0.0, settle_seconds=1.0, open_for_writing=_never_open)
    now = p.stat().st_mtime_ns / 1e9 + 100
    gate.look(str(p), Identity.of(p.stat()), now)
    with p.open("ab") as f:
        f.write(b"more")
    assert not gate.look(str(p), Identity.of(p.stat()), now + 5)  # changed: first look again
    assert not gate.settled(str(p), now + 5.5)
    assert gate.look(str(p), Identity.of(p.stat()), now + 6)
    assert gate.identity(str(p)) == Identity.of(p.stat())
    gate.forget(str(p))
    assert gate.identity(str(p)) is None and len(gate) == 0


def test_open_writer_detected_and_reader_ignored(tmp_path: Path) -> None:
    w = tmp_path / "writing.pcap"
    r = tmp_path / "reading.pcap"
    r.write_bytes(b"r")
    closed = tmp_path / "closed.pcap"
    closed.write_bytes(b"c")
    with w.open("ab") as fw, r.open("rb"):
        fw.write(b"w")
        busy = files_open_for_writing([str(w), str(r), str(closed)])
    assert busy == {str(w)}
    assert files_open_for_writing([str(w)]) == set()
    assert files_open_for_writing([str(w)], proc=str(tmp_path / "no-proc")) == set()


def test_confirm_holds_back_files_open_for_writing(tmp_path: Path) -> None:
    p = tmp_path / "a.pcap"
    q = tmp_path / "b.pcap"
    p.write_bytes(b"x")
    q.write_bytes(b"y")
    gate = _gate(0.0, settle_seconds=1.0)
    now = p.stat().st_mtime_ns / 1e9 + 100
    for f in (p, q):
        gate.look(str(f), Identity.of(f.stat()), now)
    fd = os.open(p, os.O_WRONLY | os.O_APPEND)
    try:
        assert gate.confirm([str(p), str(q)], now + 2) == {str(q)}
        assert not gate.settled(str(p), now + 2.5)  # its clock restarted
    finally:
        os.close(fd)
    assert gate.settled(str(p), now + 3)
    assert gate.confirm([str(p)], now + 3) == {str(p)}


def test_write_events_hold_a_file_until_its_writer_closes_it(tmp_path: Path) -> None:
    p = tmp_path / "a.pcap"
    p.write_bytes(b"x")
    gate = _gate(0.0, settle_seconds=1.0, open_for_writing=_never_open)  # /proc hidden
    now = p.stat().st_mtime_ns / 1e9 + 100
    gate.look(str(p), Identity.of(p.stat()), now)
    gate.note(str(p), Note.WRITING, now)
    assert gate.look(str(p), Identity.of(p.stat()), now + 5)  # size and mtime settled...
    assert gate.confirm([str(p)], now + 5) == set()  # ...but a writer has it open
    assert gate.writing(str(p), now + 5)
    gate.note(str(p), Note.CLOSED, now + 6)  # close-after-write event
    assert gate.confirm([str(p)], now + 8) == {str(p)}


def test_a_file_renamed_in_needs_no_second_look(tmp_path: Path) -> None:
    """A rotation script's ``mv``: the rename says the writer is done, so with
    ``min_age: 0`` the file is ready at its first look instead of a second later."""
    p = tmp_path / "a.pcap"
    p.write_bytes(b"x")
    ident = Identity.of(p.stat())
    now = p.stat().st_mtime_ns / 1e9 + 0.01
    gate = _gate(0.0, settle_seconds=1.0, open_for_writing=_never_open)
    gate.note(str(p), Note.RENAMED_IN, now)
    gate.look(str(p), ident, now)  # the first look (the loop asks `settled` next)
    assert gate.settled(str(p), now)
    assert gate.confirm([str(p)], now) == {str(p)}
    # min_age still holds: renamed in does not mean old enough
    aged = _gate(5.0, settle_seconds=1.0, open_for_writing=_never_open)
    aged.note(str(p), Note.RENAMED_IN, now)
    aged.look(str(p), ident, now)
    assert not aged.settled(str(p), now + 4.9)
    assert aged.settled(str(p), now + 5)


def test_a_write_after_the_rename_takes_the_waiver_back(tmp_path: Path) -> None:
    p = tmp_path / "a.pcap"
    p.write_bytes(b"x")
    ident = Identity.of(p.stat())
    now = p.stat().st_mtime_ns / 1e9 + 0.01
    for later in (Note.WRITING, Note.CLOSED):  # a writer appended (and closed) after the rename
        gate = _gate(0.0, settle_seconds=1.0, open_for_writing=_never_open)
        gate.note(str(p), Note.RENAMED_IN, now)
        gate.note(str(p), later, now + 0.1)
        gate.look(str(p), ident, now + 0.2)
        assert not gate.settled(str(p), now + 0.2)
        if later is Note.CLOSED:
            assert not gate.settled(str(p), now + 1.1)  # a reopening writer may append again
            assert gate.settled(str(p), now + 1.2)
        else:
            assert gate.confirm([str(p)], now + 1.2) == set()  # and it is still open
    # changed without an event (a writer we cannot see): settled as usual
    gate = _gate(0.0, settle_seconds=1.0, open_for_writing=_never_open)
    gate.note(str(p), Note.RENAMED_IN, now)
    gate.look(str(p), ident, now)
    assert gate.settled(str(p), now)
    p.write_bytes(b"xy")
    grown = Identity.of(p.stat())
    assert not gate.look(str(p), grown, now + 0.1)
    assert not gate.settled(str(p), now + 0.5)
    assert gate.settled(str(p), now + 1.1)
    # forgotten (the file went away and came back): no waiver left over
    gate.forget(str(p))
    gate.look(str(p), grown, now + 2)
    assert not gate.settled(str(p), now + 2)


def test_a_lost_close_event_expires(tmp_path: Path) -> None:
    from netmon_exporter.ingest.age_gate import WRITER_STALE_SECONDS

    p = tmp_path / "a.pcap"
    p.write_bytes(b"x")
    gate = _gate(0.0, settle_seconds=1.0, open_for_writing=_never_open)
    gate.note(str(p), Note.WRITING, 1000.0)
    assert gate.confirm([str(p)], 1000.0 + WRITER_STALE_SECONDS - 1) == set()
    assert gate.confirm([str(p)], 1000.0 + WRITER_STALE_SECONDS) == {str(p)}
    gate.note(str(p), Note.WRITING, 1000.0)
    gate.prune_writing(1001.0, exists=lambda path: False)  # deleted: forgotten
    assert not gate.writing(str(p), 1001.0)


def test_files_last_written_before_watching_began_need_a_quiet_period(tmp_path: Path) -> None:
    p = tmp_path / "a.pcap"
    p.write_bytes(b"x")
    mtime = p.stat().st_mtime_ns / 1e9  # as the gate computes it
    gate = AgeGate(
        0.0, settle_seconds=1.0, open_for_writing=_never_open, unwatched_quiet_seconds=60.0
    )
    gate.look(str(p), Identity.of(p.stat()), mtime + 1)
    assert not gate.settled(str(p), mtime + 5)  # no watcher: a writer may be pausing
    assert gate.settled(str(p), mtime + 60)
    gate.watch_since = mtime + 0.5  # watching began after its last write
    assert not gate.settled(str(p), mtime + 30)
    gate.watch_since = mtime - 0.5  # its writes happened while watched
    assert gate.settled(str(p), mtime + 5)
    gate.watch_since = mtime + 0.5
    gate.note(str(p), Note.CLOSED, mtime + 2)  # closed after writing (or renamed in): complete
    assert gate.settled(str(p), mtime + 5)
    gate.forget(str(p))
    gate.look(str(p), Identity.of(p.stat()), mtime + 6)
    assert not gate.settled(str(p), mtime + 8)  # forgotten: unwatched again


def test_future_mtime_is_clock_skew_aged_from_the_first_look(tmp_path: Path) -> None:
    """A sensor whose clock runs an hour ahead: its files are processed, not stranded."""
    p = tmp_path / "ahead.pcap"
    p.write_bytes(b"x" * 10)
    mtime = p.stat().st_mtime_ns / 1e9
    now = mtime - 3600.0  # our clock is an hour behind the writer's
    gate = _gate(5.0, settle_seconds=1.0, open_for_writing=_never_open)
    assert not gate.look(str(p), Identity.of(p.stat()), now)
    assert gate.skew(str(p), now) > 3500
    assert gate.new_skew(str(p), now) > 3500 and gate.new_skew(str(p), now) == 0.0  # told once
    assert not gate.look(str(p), Identity.of(p.stat()), now + 4)  # unchanged for 4 s < min_age
    assert gate.look(str(p), Identity.of(p.stat()), now + 5)
    p.write_bytes(b"x" * 20)  # it grew: the clock restarts
    p_st = Identity.of(p.stat())
    assert not gate.look(str(p), p_st, now + 6)
    assert not gate.look(str(p), p_st, now + 10)
    assert gate.look(str(p), p_st, now + 11)


def test_small_skew_is_not_reported(tmp_path: Path) -> None:
    p = tmp_path / "a.pcap"
    p.write_bytes(b"x")
    mtime = p.stat().st_mtime_ns / 1e9
    gate = _gate(0.0, open_for_writing=_never_open)
    gate.look(str(p), Identity.of(p.stat()), mtime - 1.0)
    assert gate.skew(str(p), mtime - 1.0) == 0.0


def test_clock_skew_is_told_once_per_file_even_after_the_path_is_forgotten(tmp_path: Path) -> None:
    """A reload re-judges waiting files (forget, look again): the soak counted them twice."""
    p = tmp_path / "ahead.pcap"
    p.write_bytes(b"x")
    mtime = p.stat().st_mtime_ns / 1e9
    now = mtime - 3600.0
    gate = _gate(0.0, open_for_writing=_never_open)
    gate.look(str(p), Identity.of(p.stat()), now)
    assert gate.new_skew(str(p), now) > 0
    gate.forget(str(p))
    gate.look(str(p), Identity.of(p.stat()), now + 1)
    assert gate.new_skew(str(p), now + 1) == 0.0
    p.write_bytes(b"xx")  # a new file under the same name is told again
    gate.look(str(p), Identity.of(p.stat()), now + 2)
    assert gate.new_skew(str(p), now + 2) > 0
