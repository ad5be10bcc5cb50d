"""Windows hold their rows packed column by column (issue 12 item 3): every bit comes back.

`row_pack.PackedRows` must give back each column with its name, order, dtype and bits
(NaN payloads, -0.0, infinities, integer limits, addresses, query names), choose the
narrow forms where they apply, and a packed `FlowSample` (what a window holds) must hand
out exactly the rows, weights and tally an unpacked one does, thinning included.
"""

from __future__ import annotations

import importlib.util
import os
import pickle
import threading
from pathlib import Path

import numpy as np
import pytest

from netmon_exporter import row_pack
from netmon_exporter.analysis import Analyzer
from netmon_exporter.config import DetectorsConfig, ModelsConfig, WindowsConfig
from netmon_exporter.flow_sample import PACK_ROWS, FlowSample, Unpacking, narrow
from netmon_exporter.flow_schema import (
    FLOWS,
    RECORD_FLOW,
    RECORD_SLICE,
    RECORD_TAIL,
    RECORD_WHOLE,
    SLICES,
    FlowBatch,
    Taken,
    is_flow,
    is_slice,
    str_to_addrs,
    view,
)
from netmon_exporter.pipeline import FlowSettings, process_file
from netmon_exporter.row_pack import CONST, RAW, U8, U16, U32, PackedRows
from netmon_exporter.window import WindowAggregator

from .test_memory_rows import T0, _chunks, mixed_traffic

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).parent / "data" / "pcaps"

# numba's JIT only: what the install step compiled into its cache (the fallback of the
# kernels built ahead of time, tests/test_compiled.py)
_JIT = {**os.environ, "NETMON_KERNELS": "jit"}


def _same(a: FlowBatch, b: FlowBatch) -> None:
    assert list(a.columns) == list(b.columns)
    assert len(a) == len(b)
    for name in a.columns:
        x, y = np.asarray(a[name]), np.asarray(b[name])
        assert x.dtype == y.dtype and x.shape == y.shape, name
        if x.dtype.kind == "O":
            assert x.tolist() == y.tolist(), name
        else:
            assert x.tobytes() == y.tobytes(), name


def _round_trip(batch: FlowBatch) -> PackedRows:
    packed = PackedRows(batch)
    assert len(packed) == len(batch)
    _same(batch, packed.unpack())
    # and into the middle of larger columns, as a window joins its parts
    _same(FlowBatch.concat([batch, batch]), row_pack.join([batch, packed]))
    return packed


def _kind(packed: PackedRows, name: str) -> int:
    (col,) = [c for n, _, c in packed._cols if n == name]
    return int(col.kind)


def _with_bits(
    values: np.ndarray, dtype: type, where: np.ndarray, bits_there: int, bits_else: int
) -> np.ndarray:
    """``values`` as ``dtype``, the rows ``where`` set to the float of ``bits_there`` and
    the rest left as they are if ``bits_there == bits_else``, else set to ``bits_else``."""
    out = np.asarray(values, dtype).copy()
    raw = out.view({4: np.uint32, 8: np.uint64}[np.dtype(dtype).itemsize])
    raw[where] = bits_there
    if bits_there != bits_else:
        raw[~where] = bits_else
    return out


def test_each_form_is_chosen_where_it_applies_and_gives_the_bits_back() -> None:
    n = 300
    ramp = np.arange(n, dtype=np.float64)
    cols: dict[str, np.ndarray] = {}
    expect: dict[str, int] = {}
    for dt in (np.float32, np.float64):
        t = np.dtype(dt).name

        def add(name: str, values: np.ndarray, kind: int, dt: type = dt, t: str = t) -> None:
            cols[f"{t} {name}"] = np.asarray(values, dt)
            expect[f"{t} {name}"] = kind

        add("const", np.full(n, 3.25), CONST)
        add("const nan", np.full(n, np.nan), CONST)
        add("zeros", np.zeros(n), CONST)
        add("minus zero", np.full(n, -0.0), CONST)
        add("0 and -0", np.where(ramp % 2 == 0, 0.0, -0.0), RAW)
        add("span 255", ramp % 256 - 7, U8)
        add("span 255 + nan", np.where(ramp == 5, np.nan, ramp % 256 - 7), U16)  # 256 codes
        add("span 254 + nan", np.where(ramp == 5, np.nan, ramp % 255), U8)
        add("span 65535 + nan", np.where(ramp == 5, np.nan, ramp * 219.0 + 3), U16)
        add("span 65536", np.where(ramp == 0, 65537.0, ramp), U32)
        add("whole with inf", np.where(ramp == 9, np.inf, ramp), RAW)
        add("fractions", ramp / 4, RAW)
        add("whole with -0", np.where(ramp == 9, -0.0, ramp + 1), RAW)
        # NaNs of other bits than numpy's: each comes back as it was
        quiet, odd = (
            (0x7FC00000, 0xFFC00123) if t == "float32" else (0x7FF8 << 48, 0xFFF8 << 48 | 0x123)
        )
        add("two nans", _with_bits(ramp, dt, ramp % 3 == 0, quiet, odd), RAW)
        add("one odd nan", _with_bits(ramp, dt, ramp == 4, odd, odd), U16)
    big = float(2**53)
    cols["float64 beyond 2**53"] = np.array([big + 2 * i for i in range(n)], np.float64)
    expect["float64 beyond 2**53"] = RAW
    cols["float32 large whole"] = (np.float32(2**40) + ramp.astype(np.float32) * 2**17).astype(
        np.float32
    )
    expect["float32 large whole"] = U32
    cols["float64 negative whole"] = -1e12 - ramp
    expect["float64 negative whole"] = U16
    cols["uint16 ports"] = (ramp * 211 % 65536).astype(np.uint16)
    expect["uint16 ports"] = RAW  # span > 255: 16-bit codes would save nothing
    cols["uint16 small"] = (1000 + ramp % 200).astype(np.uint16)
    expect["uint16 small"] = U8
    cols["uint8"] = (ramp % 7).astype(np.uint8)
    expect["uint8"] = RAW
    cols["int64 limits"] = np.where(ramp % 2 == 0, -(2**63), 2**63 - 1).astype(np.int64)
    expect["int64 limits"] = RAW
    cols["int64 near max"] = (2**63 - 1 - ramp.astype(np.int64)).astype(np.int64)
    expect["int64 near max"] = U16
    cols["uint64 high"] = (np.uint64(2**64 - 1) - ramp.astype(np.uint64)).astype(np.uint64)
    expect["uint64 high"] = RAW
    batch = FlowBatch(cols)
    packed = _round_trip(batch)
    for name, kind in expect.items():
        assert _kind(packed, name) == kind, name


def test_addresses_names_and_other_columns_come_back() -> None:
    n = 500
    rng = np.random.default_rng(5)
    v4 = [f"10.0.{i % 251}.{i % 13}" for i in range(n)]  # one /16
    mixed = [a if i % 5 else f"2001:db8::{i:x}" for i, a in enumerate(v4)]
    names = np.full(n, "", dtype=object)
    names[::17] = [f"q{i}.example.com" for i in range(len(names[::17]))]
    names[3] = None  # not a string: kept as it is
    names[4] = "\udcff\x00 odd"
    batch = FlowBatch(
        {
            "src_ip": str_to_addrs(v4),
            "dst_ip": str_to_addrs(mixed),
            "same_ip": str_to_addrs(["192.0.2.1"] * n),
            "dns_qname": names,
            "flags": rng.integers(0, 2, n).astype(bool),
            "text": np.array([f"t{i % 9}" for i in range(n)]),
            "half": rng.random(n).astype(np.float16),
            "matrix_like": np.arange(n, dtype=np.int32),
        }
    )
    packed = _round_trip(batch)
    # IPv4 in an IPv6 field: three constant words, one narrow one
    src = next(c for name, _, c in packed._cols if name == "src_ip")
    assert [w.kind for w in src] == [CONST, CONST, CONST, U16]
    assert sum(w.nbytes for w in src) == 2 * n
    # numbers in the other byte order come back equal, in the machine's (as concat does)
    other = FlowBatch(
        {"f": (np.arange(n) / 3).astype(">f8"), "u": (np.arange(n) * 3).astype(">u4")}
    )
    assert not other["f"].dtype.isnative and not other["u"].dtype.isnative
    back = PackedRows(other).unpack()
    native = {k: v.astype(v.dtype.newbyteorder("=")) for k, v in other.columns.items()}
    _same(FlowBatch(native), back)
    # joined with unpacked rows of the other byte order: as np.concatenate joins them
    _same(FlowBatch.concat([other, other]), row_pack.join([other, PackedRows(other)]))
    (qnames,) = [c for name, _, c in packed._cols if name == "dns_qname"]
    assert len(qnames[0]) == len(names[::17]) + 2  # only the rows with a name (or None)


def test_empty_and_one_row_batches() -> None:
    empty = narrow(FlowBatch.empty())
    assert len(empty) == 0
    _round_trip(empty)
    one = narrow(mixed_traffic(1))
    _round_trip(one.take(np.array([0])))
    assert len(row_pack.join([])) == 0


def test_random_columns_of_every_kind_round_trip() -> None:
    rng = np.random.default_rng(12)
    for _ in range(40):
        n = int(rng.integers(1, 3000))
        cols: dict[str, np.ndarray] = {}
        for c in range(12):
            dt = rng.choice([np.float32, np.float64, np.int64, np.uint16, np.uint32, np.uint8])
            base = float(rng.choice([0, -5, 1e6, 2**31, 2**52]))
            span = float(rng.choice([0, 1, 200, 255, 256, 60_000, 2**20, 2**33]))
            x = base + np.floor(rng.random(n) * (span + 1))
            if rng.random() < 0.3:
                x = x + rng.random(n)  # fractions
            if np.dtype(dt).kind == "f":
                if rng.random() < 0.4:
                    x[rng.random(n) < 0.2] = np.nan
                if rng.random() < 0.1:
                    x[rng.integers(0, n)] = -np.inf
                arr = x.astype(dt)
            else:
                info = np.iinfo(dt)
                arr = np.clip(x, info.min, info.max).astype(dt)
            cols[f"c{c}"] = arr
        _round_trip(FlowBatch(cols))


def _synth() -> object:
    spec = importlib.util.spec_from_file_location("bench_synth", ROOT / "bench" / "synth.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _narrow_rows(pcap: Path) -> list[FlowBatch]:
    rows: list[FlowBatch] = []
    settings = FlowSettings(interim_seconds=60.0)
    process_file(pcap, settings, collect=False, on_flows=lambda b: rows.append(narrow(b)))
    return rows


@pytest.mark.parametrize(("scan", "most"), [(False, 150), (True, 64)])
def test_real_rows_come_back_the_same_in_a_fraction_of_the_bytes(
    tmp_path: Path, scan: bool, most: int
) -> None:
    """bench/synth.py's ordinary mix (TCP sessions, DNS with real names, UDP, ICMP) and
    its flow-heavy one (one SYN and one RST per flow), as a window packs them: the
    numeric columns of a row take at most ``most`` bytes (the unpacked row: ~250)."""
    pcap = tmp_path / "synth.pcap"
    _synth().write_pcap(pcap, 60_000, seed=4, scan=scan)  # type: ignore[attr-defined]
    rows = _narrow_rows(pcap)
    whole = FlowBatch.concat(rows)
    assert len(whole) > (20_000 if scan else 4_000)
    packed = _round_trip(whole)
    wide = sum(np.asarray(c).nbytes for c in whole.columns.values())
    assert wide / len(whole) > 240
    assert packed.nbytes / len(whole) <= most, packed.nbytes / len(whole)
    for part in rows:
        _round_trip(part)


def test_rows_of_real_captures_come_back_the_same() -> None:
    for pcap in sorted(DATA.glob("*.pcap*")):
        for part in _narrow_rows(pcap):
            _round_trip(part)


def test_a_packed_sample_hands_out_what_an_unpacked_one_does() -> None:
    """The same flows offered in the same order, with and without thinning: the same
    rows, weights (bit for bit) and tally; the packed one holds them in parts of about
    PACK_ROWS and fewer bytes."""
    traffic = narrow(mixed_traffic(70_000, seed=3))
    for cap, size in ((10**9, 3000), (25_000, 4096), (9_000, 20_000), (5, 7)):
        plain, packed = FlowSample(cap), FlowSample(cap, pack_from=0)
        for part in _chunks(traffic, size)[: 40 if size == 7 else None]:
            plain.add(part)
            packed.add(part)
            assert len(plain) == len(packed)
        got = packed.result()
        assert isinstance(got.columns, Unpacking) and not got.columns.unpacked
        want = plain.result()
        assert len(got) == len(want) and not got.columns.unpacked  # len() does not unpack
        assert set(got.columns) == set(want.columns) and "sample_weight" in got
        assert not got.columns.unpacked
        # a column read is unpacked alone, and is the column of the unpacked sample
        x, y = want["first_ts"], got["first_ts"]
        assert got.columns.made() == ("first_ts",) and not got.columns.unpacked
        assert x.dtype == y.dtype and np.array_equal(x.view(np.uint64), y.view(np.uint64))
        assert got["first_ts"] is y  # unpacked once
        _same(want, got)
        assert got.columns.unpacked
        _same(want, FlowBatch(pickle.loads(pickle.dumps(got.columns))))  # a plain dict
        for k in want.tally:
            assert np.array_equal(want.tally[k], got.tally[k])
        _same(FlowBatch.concat(plain.parts(8192)), FlowBatch.concat(packed.parts(8192)))
    held = FlowSample(10**9, pack_from=0)
    for part in _chunks(traffic, 1000):
        held.add(part)
    kinds = [type(p) for p in held._rows]
    assert kinds.count(PackedRows) == len(traffic) // PACK_ROWS
    loose = sum(len(p) for p in held._rows if not isinstance(p, PackedRows))
    assert loose < PACK_ROWS


def test_one_column_of_joined_parts_is_that_of_the_whole_join() -> None:
    """``join_column`` gives each column of ``join`` bit for bit: parts packed and not,
    of the same columns and of different ones (a column missing, or of another dtype),
    one part or several."""
    traffic = narrow(mixed_traffic(6_000, seed=5))
    a, b, c = _chunks(traffic, 2_000)[:3]
    other = FlowBatch({k: v for k, v in c.columns.items() if k != "dns_qname"})
    wider = FlowBatch({**b.columns, "Flow Duration": np.asarray(b["Flow Duration"], np.float64)})
    # a float64 column only some parts have (np.dtype(None) is float64: not "the same")
    more = FlowBatch({**a.columns, "first_seen": np.arange(len(a), dtype=np.float64) + 0.5})
    cases = [
        [PackedRows(a)],
        [a],
        [PackedRows(a), b, PackedRows(c)],
        [a, PackedRows(b)],
        [PackedRows(a), other],
        [PackedRows(a), wider, PackedRows(other)],
        [FlowBatch.empty().take(slice(0, 0)), PackedRows(a), PackedRows(b)],
        [PackedRows(more), PackedRows(b)],
        [PackedRows(b), more, PackedRows(c)],
    ]
    for parts in cases:
        whole = row_pack.join(parts)
        for name in whole.columns:
            x, y = np.asarray(whole[name]), row_pack.join_column(parts, name)
            assert x.dtype == y.dtype and x.shape == y.shape, name
            if x.dtype.kind == "O":
                assert list(x) == list(y), name
            else:
                assert x.tobytes() == y.tobytes(), name


def test_views_take_only_the_columns_read() -> None:
    """``view`` (a window's whole flows or slices) takes a column when it is first read,
    the same bits as ``take``; its length needs no column; pickled, it is every column."""
    traffic = narrow(_with_slices(mixed_traffic(3_000, seed=7)))
    for which, rows in ((FLOWS, is_flow(traffic)), (SLICES, is_slice(traffic))):
        assert not rows.all()
        got, want = view(traffic, which), traffic.take(rows)
        assert isinstance(got.columns, Taken) and len(got) == len(want) == rows.sum()
        assert got.columns.made() == ()
        assert got["first_ts"] is got["first_ts"] and got.columns.made() == ("first_ts",)
        _same(want, got)
        assert got.columns._columns is None  # every column taken: the source is let go
        _same(want, FlowBatch(pickle.loads(pickle.dumps(got.columns))))
        _same(want, traffic.take_lazily(np.flatnonzero(rows)))


def _with_slices(traffic: FlowBatch) -> FlowBatch:
    """``traffic`` with one flow in ten cut at a window boundary: its whole record and two
    slices, as a worker sends them (``flow_schema.RECORD_*``)."""
    n = len(traffic)
    cut = np.random.default_rng(11).random(n) < 0.1
    kind = np.where(cut, float(RECORD_WHOLE), float(RECORD_FLOW))
    age = np.where(cut, np.nan, 0.0)
    whole = FlowBatch({**traffic.columns, "flow_record": kind, "flow_age": age})
    pieces = [whole]
    for k, a in ((RECORD_SLICE, 0.0), (RECORD_TAIL, 30.0)):
        part = traffic.take(cut)
        m = len(part)
        pieces.append(
            FlowBatch(
                {**part.columns, "flow_record": np.full(m, float(k)), "flow_age": np.full(m, a)}
            )
        )
    return FlowBatch.concat(pieces)


def test_a_packed_window_is_analysed_as_an_unpacked_one_unpacking_only_what_is_read(
    tmp_path: Path,
) -> None:
    """The same flows (a SYN flood, a vertical scan, clients; whole flows and slices) in
    a packed and an unpacked window: the same findings, counts and per-detector work,
    and the packed one unpacks only the columns analysis reads."""
    traffic = narrow(_with_slices(mixed_traffic(30_000, seed=6)))
    plain, packed = FlowSample(10**9), FlowSample(10**9, pack_from=0)
    for part in _chunks(traffic, 4096):
        plain.add(part)
        packed.add(part)
    runs = []
    for sample in (plain, packed):
        rows = sample.result()
        analyzer = Analyzer(DetectorsConfig(), ModelsConfig(), tmp_path)
        got = analyzer.analyse(rows, T0, T0 + 60)
        runs.append((got, rows))
    (a, _), (b, rows) = runs
    found = [(d.detector, d.source, d.target, d.evidence, d.summary) for d in a.detections]
    assert {d[0] for d in found} >= {"syn_flood", "port_scan"}
    assert found == [(d.detector, d.source, d.target, d.evidence, d.summary) for d in b.detections]
    assert (a.flows_analysed, a.class_counts) == (b.flows_analysed, b.class_counts)
    assert isinstance(rows.columns, Unpacking) and not rows.columns.unpacked
    assert 0 < len(rows.columns.made()) < len(rows.columns)


def test_two_threads_reading_a_packed_window_get_the_same_columns() -> None:
    traffic = narrow(mixed_traffic(40_000, seed=2))
    sample = FlowSample(10**9, pack_from=0)
    for part in _chunks(traffic, 5000):
        sample.add(part)
    got = sample.result()
    seen: list[np.ndarray] = []
    start = threading.Barrier(4)

    def read() -> None:
        start.wait()
        seen.append(got["first_ts"])

    threads = [threading.Thread(target=read) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(seen) == 4 and all(s is seen[0] for s in seen)
    assert np.array_equal(seen[0], traffic["first_ts"])


def test_a_window_stays_packed_until_it_is_analysed(tmp_path: Path) -> None:
    """Closed windows waiting for analysis hold packed rows; the rows they hand out are
    those of an unpacked sample of the same flows."""
    traffic = mixed_traffic(50_000, seed=1)
    agg = WindowAggregator(WindowsConfig(length_seconds=60), tmp_path, row_cap=20_000, pack_from=0)
    plain = FlowSample(20_000)
    for part in _chunks(traffic, 8192):
        agg.add(part)
        plain.add(part)
    (window,) = agg.flush()
    assert isinstance(window.flows.columns, Unpacking) and not window.flows.columns.unpacked
    assert len(window.flows) == len(plain) and not window.flows.columns.unpacked
    _same(plain.result(), window.flows)


def test_small_windows_never_load_numba_and_large_ones_find_their_kernels_loaded() -> None:
    """In a fresh process: windows below PACK_FROM rows hold them as they are, and the
    daemon's main process does not load numba for windows below half of it (~0.3 s and
    ~60 MB, more than packing saves there); a window halfway there has the kernels loaded
    on a thread of their own, every specialization packing then uses (none is loaded or
    compiled on the daemon thread)."""
    import subprocess
    import sys

    code = """
import sys
from pathlib import Path
import tempfile
from netmon_exporter.config import WindowsConfig
from netmon_exporter.flow_sample import PACK_FROM, narrow
from netmon_exporter.row_pack import PackedRows
from netmon_exporter.window import WindowAggregator
from netmon_exporter.flow_schema import make_batch
import numpy as np

n = PACK_FROM + 40_000  # one-packet flows from many sources (no numba-using module here)
rng = np.random.default_rng(4)
addrs = np.zeros(n, "V16")
words = addrs.view(">u4").reshape(n, 4)
words[:, 2], words[:, 3] = 0xFFFF, 0x0B000000 + np.arange(n)
traffic = narrow(make_batch(
    n, src_ip=addrs, dst_ip=addrs[::-1].copy(), src_port=rng.integers(1024, 65535, n),
    dst_port=np.full(n, 80), protocol=np.full(n, 6),
    first_ts=1.7e9 + np.sort(rng.uniform(0, 30, n)), last_ts=np.full(n, 1.7e9 + 30.0),
    **{"Tot Fwd Pkts": np.ones(n), "Tot Bwd Pkts": np.zeros(n)},
))
small = traffic.take(slice(0, PACK_FROM // 2 - 1000))

def _chunks(batch, size):
    return [batch.take(slice(i, i + size)) for i in range(0, len(batch), size)]

agg = WindowAggregator(WindowsConfig(length_seconds=600), Path(tempfile.mkdtemp()))
for part in _chunks(small, 8192):
    agg.add(part)
assert "numba" not in sys.modules, "numba loaded for a small window"
(window,) = agg.flush()
assert len(window.flows["first_ts"]) == len(small)
assert "numba" not in sys.modules

# halfway to PACK_FROM: the kernels are loaded on a thread of their own, nothing packed yet
from netmon_exporter import row_pack
agg = WindowAggregator(WindowsConfig(length_seconds=600), Path(tempfile.mkdtemp()))
parts = _chunks(traffic, 8192)
at = 0
while at < PACK_FROM - 16_384:
    agg.add(parts[0])
    at += len(parts.pop(0))
(sample,) = agg._windows.values()
assert not any(isinstance(p, PackedRows) for p in sample._rows)
(loader,) = row_pack._loading
assert loader.name == "row-pack-load"
loader.join()
from netmon_exporter import row_pack_kernels as K
compiled = {f: len(getattr(K, f).signatures) for f in ("plan_float", "pack_float", "unpack_float")}
for part in parts:
    agg.add(part)
assert any(isinstance(p, PackedRows) for p in sample._rows)
(window,) = agg.flush()
assert len(window.flows["first_ts"]) == len(traffic)
now = {f: len(getattr(K, f).signatures) for f in compiled}
assert now == compiled, (compiled, now)  # what the loader ran is what packing uses
"""
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
        env=_JIT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
