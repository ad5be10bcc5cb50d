"""The carry's column encoding (ingest/carry_codec.py): narrower on disk, the same bits back."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from netmon_exporter.flows import flow_table as T
from netmon_exporter.ingest import carry_codec as C
from netmon_exporter.ingest import carry_store
from netmon_exporter.pipeline import FlowSettings, process_file

DATA = Path(__file__).parent / "data" / "pcaps"


def _round_trip(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    parts = C.pack(a)
    buf = np.concatenate([p.reshape(-1).view(np.uint8) for p in parts])
    assert len(buf) == C.packed_size(a.shape, parts[0])
    back = C.unpack(buf, a.dtype, a.shape)
    assert back.dtype == a.dtype and back.shape == a.shape
    return back, parts[0][0]


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.array_equal(a.view(np.int64), b.view(np.int64)))


def test_each_column_takes_the_narrowest_form_that_keeps_its_bits() -> None:
    ts = 1.7e15 + np.array([0.0, 5e6, 3.9e9, 12.0])  # microsecond timestamps
    cols = {
        "zero": ([0.0, 0.0, 0.0, 0.0], C.CONST),
        "nan everywhere": ([np.nan] * 4, C.CONST),
        "counts": ([0.0, 3.0, 255.0, 7.0], C.U8),
        "negative whole": ([-300.0, -44.0, 0.0, 1.0], C.U16),
        "timestamps": (ts.tolist(), C.U32),
        "halves": ([0.5, 1.5, -2.25, 2.0**100], C.F32),
        "means": ([0.1, 1 / 3, 2.0, 5.0], C.RAW),
        "minus zero": ([0.0, -0.0, 1.0, 2.0], C.F32),  # not whole: -0.0 must come back
        "a nan": ([1.0, np.nan, 2.0, 3.0], C.RAW),
        "infinity": ([1.0, np.inf, 2.0, 3.0], C.F32),
        "beyond 2**53": ([2.0**53 + 2, 0.0, 1.0, 2.0], C.RAW),
        "wide range": ([0.0, 2.0**32, 1.0, 2.0], C.F32),
        "whole, range 2**32 - 1": ([0.0, 2.0**32 - 1, 5.0, 9.0], C.U32),
    }
    a = np.array([v for v, _ in cols.values()]).T.copy()
    back, kinds = _round_trip(a)
    assert _same_bits(a, back)
    assert dict(zip(cols, kinds.tolist(), strict=True)) == {
        k: kind for k, (_, kind) in cols.items()
    }
    assert np.signbit(back[1, list(cols).index("minus zero")])


def test_int_columns_even_at_the_limits() -> None:
    lo, hi = np.iinfo(np.int64).min, np.iinfo(np.int64).max
    a = np.array(
        [
            [7, lo, hi - 255, -5, lo, 1 << 40],
            [7, hi, hi, 60000, lo + 70000, (1 << 40) + (1 << 31)],
            [7, 0, hi - 3, 12, lo + 1, 1 << 40],
        ],
        dtype=np.int64,
    )
    back, kinds = _round_trip(a)
    assert (back == a).all()
    assert kinds.tolist() == [C.CONST, C.RAW, C.U8, C.U16, C.U32, C.U32]


@pytest.mark.parametrize("seed", range(6))
def test_random_matrices_come_back_bit_for_bit(seed: int) -> None:
    rng = np.random.default_rng(seed)
    makers = [
        lambda n: np.zeros(n),
        lambda n: rng.integers(0, 256, n).astype(np.float64),
        lambda n: rng.integers(-(2**20), 2**20, n).astype(np.float64),
        lambda n: 1.7e15 + rng.integers(0, 3_600_000_000, n),
        lambda n: rng.random(n),
        lambda n: rng.random(n).astype(np.float32).astype(np.float64),
        lambda n: np.where(rng.random(n) < 0.1, -0.0, rng.integers(0, 9, n).astype(float)),
        lambda n: np.where(rng.random(n) < 0.05, np.nan, 1.0),
        lambda n: np.where(rng.random(n) < 0.05, -np.inf, 3.0),
        lambda n: rng.standard_normal(n) * 1e300,
        lambda n: rng.integers(2**52, 2**54, n).astype(np.float64),
    ]
    for _ in range(30):
        n, m = int(rng.integers(1, 300)), int(rng.integers(1, 40))
        a = np.stack([makers[int(rng.integers(len(makers)))](n) for _ in range(m)], axis=1)
        back, _ = _round_trip(a)
        assert _same_bits(a, back)
        ints = rng.integers(-(2**63), 2**63 - 1, (n, m), dtype=np.int64, endpoint=True)
        ints[:, ::2] >>= rng.integers(0, 63)
        back, _ = _round_trip(ints)
        assert (back == ints).all()


@pytest.mark.parametrize("capture", ["dns-edns-ecs.pcap", "synthetic"])
def test_real_open_flows_shrink_and_come_back_the_same(tmp_path: Path, capture: str) -> None:
    """Open flows of a real capture (DNS) and of bench/synth.py's mix: every array comes
    back with the same bits, the flows finished from the file equal those finished from
    the state in memory, and (on the mix's thousand open flows, most of them seeds, DNS
    exchanges among them) the file is well under the raw arrays and ~120 B a flow (at
    468d4fc, before DNS exchanges were seeds: 289 B a flow, a third of the raw arrays)."""
    pcap = DATA / capture
    if capture == "synthetic":
        pcap = tmp_path / "synth.pcap"
        _synth().write_pcap(pcap, 20_000, seed=3)
    settings = FlowSettings(idle_timeout_seconds=1e6)
    table = process_file(pcap, settings, final=False, save_carry=lambda t: t).carry
    assert isinstance(table, T.FlowTable) and table.open_flows > 0
    arrays = table.state_arrays()
    ref = carry_store.save_arrays(tmp_path, 1, arrays)
    back = carry_store.load(tmp_path, ref)
    assert isinstance(back, dict)
    for name, arr in arrays.items():
        assert back[name].dtype == arr.dtype and back[name].shape == arr.shape
        assert np.array_equal(np.asarray(arr).view(np.uint8), back[name].view(np.uint8)), name
    if capture == "synthetic":
        assert table.open_flows > 1000
        raw = sum(np.asarray(a).nbytes for a in arrays.values())
        size = carry_store.parse(ref).size
        assert size < raw * 0.6 and size / table.open_flows < 150
    from_file = process_file(pcap, settings, carry=back, final=True)
    from_memory = process_file(pcap, settings, carry=table.to_bytes(), final=True)
    assert from_file.flow_count == from_memory.flow_count > 0
    a, b = from_file.flows.columns, from_memory.flows.columns
    assert list(a) == list(b) and len(from_file.flows) == from_file.flow_count
    for name in a:  # every feature of every flow, NaN where NaN
        assert np.array_equal(a[name], b[name], equal_nan=a[name].dtype.kind == "f"), name


def _synth():  # bench/synth.py: the benchmark's traffic mix (numpy, deterministic)
    import importlib.util

    path = Path(__file__).parent.parent / "bench" / "synth.py"
    spec = importlib.util.spec_from_file_location("bench_synth", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _forged(tmp_path: Path, entries: list, body: bytes) -> bytes:
    """A carry file with this header and body, and a reference whose checksum fits."""
    header = json.dumps(entries).encode()
    head = b"NMCARRY1" + struct.pack("<I", len(header)) + header
    head += b"\0" * (-len(head) % 64)
    data = head + body
    (tmp_path / "1-0123456789abcdef.carry").write_bytes(data)
    return carry_store.CarryRef(
        "1-0123456789abcdef.carry", len(data), zlib.crc32(data), "arrays"
    ).encode()


def _packed_body(a: np.ndarray) -> bytes:
    return b"".join(p.tobytes() for p in C.pack(a))


@pytest.mark.parametrize(
    "case",
    ["kind out of range", "float32 in an int array", "short", "long", "3-D", "no rows", "form"],
)
def test_a_malformed_packed_entry_is_refused(tmp_path: Path, case: str) -> None:
    a = np.arange(12, dtype=np.float64).reshape(4, 3) * 0.1
    body = bytearray(_packed_body(a))
    shape, dtype, form = [4, 3], "<f8", "packed"
    if case == "kind out of range":
        body[0:8] = struct.pack("<q", 9)
    elif case == "float32 in an int array":
        dtype = "<i8"
        body[0:8] = struct.pack("<q", C.F32)
    elif case == "short":
        body = body[:-8]
    elif case == "long":
        body += b"\0" * 8
    elif case == "3-D":
        shape = [4, 3, 1]
    elif case == "no rows":
        shape = [0, 3]
    else:
        form = "zstd"
    ref = _forged(tmp_path, [["S", dtype, shape, 0, len(body), form]], bytes(body))
    with pytest.raises(carry_store.CarryError, match="malformed"):
        carry_store.load(tmp_path, ref)


def test_a_forged_but_well_formed_entry_reads_back(tmp_path: Path) -> None:
    """The forging helper itself writes what the loader accepts (the cases above fail
    for the damage they make, not for the helper)."""
    a = np.arange(12, dtype=np.float64).reshape(4, 3) * 0.1
    body = _packed_body(a)
    ref = _forged(tmp_path, [["S", "<f8", [4, 3], 0, len(body), "packed"]], body)
    back = carry_store.load(tmp_path, ref)
    assert isinstance(back, dict) and _same_bits(back["S"], a)
