"""Carried flows on disk (ingest/carry_store.py): written by workers, referenced by the ledger."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from netmon_exporter.ingest import carry_store
from netmon_exporter.ingest.workers import Task, _run
from netmon_exporter.pipeline import FileResult, FlowSettings, process_file


def test_round_trip_and_inline_state_passes_through(tmp_path: Path) -> None:
    ref = carry_store.save(tmp_path, 7, b"open flows" * 1000)
    assert carry_store.is_ref(ref) and len(ref) < 200
    assert carry_store.load(tmp_path, ref) == b"open flows" * 1000
    name = carry_store.parse(ref).name
    assert name.startswith("7-") and (tmp_path / name).stat().st_mode & 0o777 == 0o600
    # a ledger written before carry files holds the state itself
    assert carry_store.load(tmp_path, b"PK\x03\x04 npz state") == b"PK\x03\x04 npz state"
    # every attempt gets its own file: a redo never overwrites a committed carry
    assert carry_store.parse(carry_store.save(tmp_path, 7, b"x")).name != name
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


@pytest.mark.parametrize("damage", ["missing", "truncated", "altered", "bad-ref"])
def test_damaged_carry_is_an_error_not_garbage(tmp_path: Path, damage: str) -> None:
    ref = carry_store.save(tmp_path, 1, b"0123456789" * 100)
    path = tmp_path / carry_store.parse(ref).name
    if damage == "missing":
        path.unlink()
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:-1])
    elif damage == "altered":
        path.write_bytes(b"9" + path.read_bytes()[1:])
    else:
        ref = ref.replace(b'"name": "', b'"name": "../../etc/')
    with pytest.raises(carry_store.CarryError):
        carry_store.load(tmp_path, ref)


def test_sweep_keeps_referenced_and_recent_files(tmp_path: Path) -> None:
    kept = carry_store.parse(carry_store.save(tmp_path, 1, b"a")).name
    stale = carry_store.parse(carry_store.save(tmp_path, 2, b"b")).name
    fresh = carry_store.parse(carry_store.save(tmp_path, 3, b"c")).name
    (tmp_path / ".tmp-4-0123456789abcdef.carry").write_bytes(b"half")
    (tmp_path / "notes.txt").write_text("not ours")
    old = time.time() - 3600
    for name in (kept, stale, ".tmp-4-0123456789abcdef.carry", "notes.txt"):
        os.utime(tmp_path / name, (old, old))
    assert carry_store.sweep(tmp_path, {kept}, older_than=time.time() - 60) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([kept, fresh, "notes.txt"])
    assert carry_store.sweep(tmp_path / "nowhere", set(), time.time()) == 0


def _fake(path: Path, settings: FlowSettings, *, carry: bytes | None, csv_dir, final) -> FileResult:
    seen = (carry or b"") + path.name.encode() + b";"
    return FileResult(str(path), "pcap", 0, 0.0, flows=_empty(), carry=None if final else seen)


def _empty():  # noqa: ANN202
    from netmon_exporter.flow_schema import FlowBatch

    return FlowBatch.empty()


def _task(tmp_path: Path, name: str, carry: bytes | None, final: bool = False) -> Task:
    return Task(
        key=1,
        path=str(tmp_path / name),
        settings=FlowSettings(),
        carry=carry,
        csv_dir=None,
        final=final,
        timeout_seconds=10,
        carry_dir=str(tmp_path / "carry"),
    )


def test_replaced_carries_are_removed_off_the_caller_thread(tmp_path: Path) -> None:
    refs = [carry_store.save(tmp_path, k, b"state %d" % k) for k in range(1, 6)]
    remover = carry_store.Remover()
    for ref in refs[:4]:
        remover.remove(tmp_path, ref)
    remover.remove(tmp_path, b"inline state, not a reference")  # ignored
    remover.remove(None, refs[4])  # no directory: ignored
    remover.close()  # the removals queued so far are done
    assert [p.name for p in tmp_path.iterdir()] == [carry_store.parse(refs[4]).name]
    remover.remove(tmp_path, refs[4])  # usable again after close
    remover.close()
    assert list(tmp_path.iterdir()) == []


def test_worker_writes_and_reads_the_carry_file(tmp_path: Path) -> None:
    first, _ = _run(_fake, _task(tmp_path, "a.pcap", None), streams=False)
    assert first.carry is not None and carry_store.is_ref(first.carry) and not first.warnings
    second, _ = _run(_fake, _task(tmp_path, "b.pcap", first.carry), streams=False)
    assert carry_store.load(tmp_path / "carry", second.carry or b"") == b"a.pcap;b.pcap;"


def test_a_lost_carry_costs_its_flows_not_the_file(tmp_path: Path) -> None:
    first, _ = _run(_fake, _task(tmp_path, "a.pcap", None), streams=False)
    (tmp_path / "carry" / carry_store.parse(first.carry or b"").name).unlink()
    second, _ = _run(_fake, _task(tmp_path, "b.pcap", first.carry), streams=False)
    assert carry_store.load(tmp_path / "carry", second.carry or b"") == b"b.pcap;"
    assert len(second.warnings) == 1 and "lost" in second.warnings[0]


def test_real_flow_state_survives_the_round_trip(tmp_path: Path) -> None:
    """The real pipeline through a carry file equals the pipeline with the state inline."""
    sample_pcap = Path(__file__).parent / "data" / "pcaps" / "dns-edns-ecs.pcap"
    settings = FlowSettings(idle_timeout_seconds=1e6)
    whole = process_file(sample_pcap, settings, final=False)
    assert whole.carry is not None
    task = Task(1, str(sample_pcap), settings, None, None, False, 10, carry_dir=str(tmp_path))
    via_file, _ = _run(process_file, task, streams=False)
    state = carry_store.load(tmp_path, via_file.carry or b"")
    ended_inline = process_file(sample_pcap, settings, carry=whole.carry, final=True)
    ended_file = process_file(sample_pcap, settings, carry=state, final=True)
    assert ended_inline.flow_count == ended_file.flow_count > 0


def test_named_arrays_round_trip_raw(tmp_path: Path) -> None:
    import numpy as np

    arrays = {
        "K": np.arange(24, dtype=np.int64).reshape(3, 8),
        "S": np.linspace(0, 1, 3 * 128).reshape(3, 128),
        "status": np.array([1, 2, 1], dtype=np.int8),
        "pool": np.frombuffer(b"example.org", dtype=np.uint8),
        "dns": np.zeros((0, 28)),
        "st": np.array([3, 11, 0, -1, 0, 0], dtype=np.int64),
    }
    ref = carry_store.save_arrays(tmp_path, 9, arrays)
    back = carry_store.load(tmp_path, ref)
    assert isinstance(back, dict) and list(back) == list(arrays)
    for name, arr in arrays.items():
        assert back[name].dtype == arr.dtype and back[name].shape == arr.shape
        assert (back[name] == arr).all()
    # a header that points outside the file is refused, not read past
    path = tmp_path / carry_store.parse(ref).name
    raw = bytearray(path.read_bytes())
    raw[12:14] = b"{{"  # break the JSON header
    path.write_bytes(bytes(raw))
    with pytest.raises(carry_store.CarryError):
        carry_store.load(tmp_path, ref)  # checksum first
    forged = carry_store.CarryRef(path.name, len(raw), __import__("zlib").crc32(raw), "arrays")
    with pytest.raises(carry_store.CarryError, match="malformed"):
        carry_store.load(tmp_path, forged.encode())


def test_the_worker_goes_on_with_its_live_table(tmp_path: Path, monkeypatch) -> None:
    """The next file of a series given to the same worker continues the table it kept
    (the carry is written all the same); flows equal those of the state read back."""
    from netmon_exporter.capture.pcap_reader import CaptureReader  # noqa: F401  (warm import)
    from netmon_exporter.ingest import workers

    src = Path(__file__).parent / "data" / "pcaps" / "dns-edns-ecs.pcap"
    settings = FlowSettings(idle_timeout_seconds=1e6, interim_seconds=60.0)
    carry_dir = tmp_path / "carry"

    def task(path: Path, carry: bytes | None, final: bool) -> Task:
        return Task(1, str(path), settings, carry, None, final, 10, carry_dir=str(carry_dir))

    first, _ = _run(process_file, task(src, None, False), streams=False)
    assert first.carry is not None and carry_store.parse(first.carry).form == "arrays"
    assert (carry_dir / carry_store.parse(first.carry).name).exists()

    def no_read(*_a, **_k):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("the kept table should have been used")

    monkeypatch.setattr(carry_store, "load", no_read)
    live, _ = _run(process_file, task(src, first.carry, True), streams=False)
    monkeypatch.undo()
    # the same file again, with the carry read back from its file instead
    workers._KEPT.take(first.carry)
    read_back, _ = _run(process_file, task(src, first.carry, True), streams=False)
    assert live.flow_count == read_back.flow_count > 0
    assert live.flows_evicted == read_back.flows_evicted == 0
    keys = ("first_ts", "Tot Fwd Pkts", "fwd_wire_bytes", "flow_record")
    for k in keys:
        assert sorted(live.flows[k].tolist()) == sorted(read_back.flows[k].tolist())


class _Table:
    """Stands for a FlowTable: rows its arrays used, flows open now."""

    def __init__(self, rows: int, open_flows: int) -> None:
        import numpy as np

        self.status = np.zeros(rows, dtype=np.int8)
        self.open_flows = open_flows

    def state_arrays(self) -> dict:
        import numpy as np

        return {"st": np.array([self.open_flows], dtype=np.int64)}


def test_kept_tables_follow_need(tmp_path: Path) -> None:
    """A table that once held a flood is not kept (the next file rebuilds it from the
    carry file at its size), and the kept tables' rows stay within flows.max_open_flows."""
    from netmon_exporter.ingest.workers import _KeptTables

    kept = _KeptTables()
    task = _task(tmp_path, "a.pcap", None)
    busy = kept.save(task, _Table(rows=20_000, open_flows=10_000))
    flooded = kept.save(task, _Table(rows=200_000, open_flows=5_000))
    assert kept.take(flooded) is None and kept.take(busy) is not None
    capped = _task(tmp_path, "b.pcap", None)
    capped = Task(**{**capped.__dict__, "settings": FlowSettings(max_open_flows=100_000)})
    refs = [kept.save(capped, _Table(rows=40_000, open_flows=30_000)) for _ in range(3)]
    # 3 x 40,000 rows > 100,000: the oldest goes
    assert kept.take(refs[0]) is None
    assert all(kept.take(r) is not None for r in refs[1:])
