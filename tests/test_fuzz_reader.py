"""Hostile bytes never crash the reader or the pipeline: they succeed or fail cleanly.

The compiled decoder does not check array bounds at run time (that would cost ~30 %),
so :func:`test_mutated_captures_under_numba_boundscheck` re-runs the mutation fuzz in
a subprocess compiled with ``NUMBA_BOUNDSCHECK=1``, where an out-of-bounds access
raises ``IndexError`` instead of reading stray memory. That subprocess must compile the
kernels itself (``NETMON_KERNELS=jit``): the kernels built ahead of time were built
without the checks, and loaded they would check nothing.
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
# real captures, and generated ones of what they lack: tunnels, IPv4 fragments cutting a
# TCP header (data/fuzz-seeds/generate.py)
FUZZ_SEEDS = Path(__file__).parent / "data" / "fuzz-seeds"
SEEDS = sorted(p for d in (DATA, FUZZ_SEEDS) for p in d.glob("*.pcap*"))
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
from netmon_exporter import compiled
assert compiled.aot_status().startswith("not used"), compiled.aot_status()  # checked kernels
print("ok")
"""


_TIGHT_SCRIPT = r"""
import random, struct, sys
from pathlib import Path
import numpy as np
from netmon_exporter import compiled
from netmon_exporter.capture import decode as D
from tests.test_fuzz_reader import SEEDS
pool = []
for seed in SEEDS:
    data = seed.read_bytes()
    if data[:4] != b"\xd4\xc3\xb2\xa1":  # little-endian microsecond pcap
        continue
    link, pos = struct.unpack_from("<I", data, 20)[0] & 0xFFFF, 24
    while pos + 16 <= len(data):
        sec, frac, incl, orig = struct.unpack_from("<IIII", data, pos)
        pool.append((link, data[pos + 16 : pos + 16 + incl], orig, sec * 1000000 + frac))
        pos += 16 + incl
rng = random.Random(int(sys.argv[1]))
P, PE, hist = np.zeros((1, D.N_FIELDS), np.int64), np.zeros(1), np.zeros(256, np.int64)
frag = D.fragment_cache(1)
for _ in range(int(sys.argv[2])):
    link, pkt, orig, ts = rng.choice(pool)
    b = bytearray(pkt)
    for _ in range(rng.randrange(6)):
        if b:
            b[rng.randrange(len(b))] = rng.randrange(256)
    if b and rng.random() < 0.4:
        b = b[: rng.randrange(len(b) + 1)]
    arr = np.frombuffer(bytes(b), dtype=np.uint8).copy()  # exactly the packet: no slack
    D.decode_packet(arr, 0, len(arr), max(orig, len(arr)), link, ts, P, PE, 0, frag, hist)
assert compiled.aot_status().startswith("not used"), compiled.aot_status()
print("ok", len(pool))
"""


def _run_checked(script: str, *args: str) -> str:
    """Run ``script`` with every kernel compiled with bounds checks (see the docstring)."""
    cache = Path(tempfile.gettempdir()) / "netmon-numba-boundscheck-cache"
    env = dict(os.environ, NUMBA_BOUNDSCHECK="1", NUMBA_CACHE_DIR=str(cache), NETMON_KERNELS="jit")
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, "-c", script, *args],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout.strip()


@pytest.mark.slow
def test_each_packet_alone_in_a_buffer_of_its_size_under_numba_boundscheck() -> None:
    """A packet's bytes decoded from an array that ends where the packet ends: reading
    one byte past it (a header length trusted, a tunnel's inner header assumed) raises.
    In a file the next record's bytes follow, so such a read would go unnoticed."""
    out = _run_checked(_TIGHT_SCRIPT, "11", "100000")
    assert out.startswith("ok") and int(out.split()[1]) > 300  # packets mutated from


@pytest.mark.slow
def test_mutated_captures_under_numba_boundscheck() -> None:
    assert _run_checked(_BOUNDSCHECK_SCRIPT, "7", "1500") == "ok"
