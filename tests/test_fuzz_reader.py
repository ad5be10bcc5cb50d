"""Hostile bytes never crash the reader or the pipeline: they succeed or fail cleanly.

The compiled decoder does not check array bounds at run time (that would cost ~30 %),
so :func:`test_mutated_captures_under_numba_boundscheck` re-runs the mutation fuzz in
a subprocess compiled with ``NUMBA_BOUNDSCHECK=1``, where an out-of-bounds access
raises ``IndexError`` instead of reading stray memory.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netmon_exporter.metrics import FAIL_REASONS, SKIP_REASONS
from netmon_exporter.pipeline import CaptureFormatError, FlowSettings, process_file

DATA = Path(__file__).parent / "data" / "pcaps"
SEEDS = sorted(p for p in DATA.glob("*.pcap*"))
PCAP_HEADER = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
PCAPNG_HEAD = struct.pack("<IIIHHq", 0x0A0D0D0A, 28, 0x1A2B3C4D, 1, 0, -1) + struct.pack("<I", 28)

_FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _check(path: Path, tmp: Path) -> None:
    try:
        res = process_file(path, FlowSettings(), csv_dir=tmp)
    except CaptureFormatError as exc:
        assert exc.reason in FAIL_REASONS
        return
    assert set(res.skipped_by_reason) <= set(SKIP_REASONS)
    n = len(res.flows)
    if n:
        assert int((res.flows["Tot Fwd Pkts"] + res.flows["Tot Bwd Pkts"]).sum()) == sum(
            res.packets_by_protocol.values()
        )


@_FUZZ
@given(body=st.binary(max_size=600), prefix=st.sampled_from([b"", PCAP_HEADER, PCAPNG_HEAD]))
def test_random_bytes(tmp_path: Path, body: bytes, prefix: bytes) -> None:
    f = tmp_path / "fuzz.pcap"
    f.write_bytes(prefix + body)
    _check(f, tmp_path)


def mutate(data: bytes, edits: list[tuple[int, int]], cut: int | None) -> bytes:
    b = bytearray(data)
    for pos, val in edits:
        if b:
            b[pos % len(b)] = val
    if cut is not None and b:
        b = b[: cut % (len(b) + 1)]
    return bytes(b)


@_FUZZ
@given(
    seed=st.sampled_from(SEEDS),
    edits=st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(0, 255)), max_size=12),
    cut=st.none() | st.integers(0, 1 << 20),
)
def test_mutated_real_captures(
    tmp_path: Path, seed: Path, edits: list[tuple[int, int]], cut: int | None
) -> None:
    f = tmp_path / seed.name
    f.write_bytes(mutate(seed.read_bytes(), edits, cut))
    _check(f, tmp_path)


_BOUNDSCHECK_SCRIPT = r"""
import random, sys, tempfile
from pathlib import Path
from netmon_exporter.pipeline import CaptureFormatError, FlowSettings, process_file
from tests.test_fuzz_reader import SEEDS, mutate
rng = random.Random(int(sys.argv[1]))
tmp = Path(tempfile.mkdtemp())
for i in range(int(sys.argv[2])):
    seed = rng.choice(SEEDS)
    data = seed.read_bytes()
    edits = [(rng.randrange(1 << 20), rng.randrange(256)) for _ in range(rng.randrange(1, 16))]
    cut = rng.randrange(1 << 20) if rng.random() < 0.3 else None
    f = tmp / ("m" + seed.name)
    f.write_bytes(mutate(data, edits, cut))
    try:
        process_file(f, FlowSettings())
    except CaptureFormatError:
        pass
print("ok")
"""


@pytest.mark.slow
def test_mutated_captures_under_numba_boundscheck() -> None:
    cache = Path(tempfile.gettempdir()) / "netmon-numba-boundscheck-cache"
    env = dict(os.environ, NUMBA_BOUNDSCHECK="1", NUMBA_CACHE_DIR=str(cache))
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, "-c", _BOUNDSCHECK_SCRIPT, "7", "1500"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == "ok"
