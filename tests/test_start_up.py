"""Fast start (issue 12 item 4): processes that only parse start without SciPy.

See netmon_exporter/lean_start.py: numba's BLAS probe imports scipy.linalg; the flows
command and the worker fork server skip it, and so does the daemon's main process when
no model has loaded SciPy, which is only sound while no compiled kernel uses linear
algebra and a model loaded later still finds SciPy whole.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "netmon_exporter"
PCAP = Path(__file__).parent / "data" / "pcaps" / "icmp.pcap"

# numpy calls that numba implements through BLAS/LAPACK, and the @ operator
_LINALG = re.compile(
    r"np\.(dot|vdot|inner|outer|matmul|kron|trace|cov|corrcoef|linalg|polyfit|einsum)\b"
    r"|[\w\)\]]\s*@\s*[\w\(\[]"
)


def test_no_compiled_kernel_uses_linear_algebra() -> None:
    compiled = [p for p in PKG.rglob("*.py") if "njit" in p.read_text()]
    assert compiled, "no numba kernels found"
    for path in compiled:
        for n, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            assert not _LINALG.search(code), f"{path.relative_to(ROOT)}:{n}: {line.strip()}"


def _python(
    tmp_path: Path,
    *args: str,
    timeout: float = 300,
    jit: bool = False,
    root: Path = ROOT,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """``python ARGS`` in ``tmp_path`` on the package of checkout ``root`` (this one's
    tests importable) and nothing else; it must succeed. ``jit``: with numba's JIT only
    (``NETMON_KERNELS=jit``), not the kernels built ahead of time; ``env``: more
    variables."""
    path = os.pathsep.join(dict.fromkeys([str(root), str(ROOT)]))
    environ = {"PYTHONPATH": path, "PATH": "/usr/bin:/bin", **(env or {})}
    if jit:
        environ["NETMON_KERNELS"] = "jit"
    run = subprocess.run(
        [sys.executable, *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=environ,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    return run


def _run(code: str, tmp_path: Path, jit: bool = False) -> None:
    _python(tmp_path, "-c", code, jit=jit)


def _flows_command_modules(tmp_path: Path, jit: bool) -> set[str]:
    """What `python -m netmon_exporter flows` loads, listed when the process ends."""
    _run(
        "import atexit, json, sys\n"
        "atexit.register(lambda: json.dump(sorted(k for k, v in sys.modules.items() if v), open('modules.json', 'w')))\n"
        "from netmon_exporter.cli import main\n"
        f"raise SystemExit(main(['flows', {str(PCAP)!r}, '-o', 'out.csv']))\n",
        tmp_path,
        jit=jit,
    )
    assert (tmp_path / "out.csv").stat().st_size > 0
    return set(json.loads((tmp_path / "modules.json").read_text()))


def test_the_flows_command_starts_without_numba(tmp_path: Path) -> None:
    """Its kernels built ahead of time (the install step builds them): no numba, llvmlite
    or SciPy."""
    loaded = _flows_command_modules(tmp_path, jit=False)
    assert {"netmon_exporter.lean_start", "netmon_exporter.pipeline"} <= loaded
    assert not {m for m in loaded if m.startswith(("numba", "llvmlite", "scipy", "sklearn"))}


def test_the_flows_command_starts_without_scipy_under_the_jit(tmp_path: Path) -> None:
    loaded = _flows_command_modules(tmp_path, jit=True)
    assert {"netmon_exporter.lean_start", "numba", "netmon_exporter.pipeline"} <= loaded
    assert not {m for m in loaded if m.startswith(("scipy.linalg.", "sklearn"))}


def test_the_daemon_keeps_scipy_for_its_models(tmp_path: Path) -> None:
    code = (
        "import sys, netmon_exporter.daemon, netmon_exporter.models, sklearn.ensemble; "
        "assert 'netmon_exporter.lean_start' not in sys.modules; "
        "assert sys.modules.get('scipy.linalg.cython_blas') is not None"
    )
    _run(code, tmp_path)


def test_the_daemon_skips_numbas_blas_probe_and_loads_models_later(tmp_path: Path) -> None:
    """As the daemon's main process does before it builds its components: numba's BLAS
    probe runs with SciPy's wrappers missing and nothing is left behind, so numba (the
    row-pack kernels of a large window) never loads SciPy's linear algebra or numpy.f2py,
    and scikit-learn, imported directly or by a model trained, saved and loaded
    afterwards (at start, or on a reload), finds SciPy whole."""
    code = """
import sys
import numpy as np
import netmon_exporter.daemon
from netmon_exporter.flow_schema import make_batch
assert "scipy.linalg" not in sys.modules and "numba" not in sys.modules
from netmon_exporter import lean_start
lean_start.skip_blas_probe()
assert "scipy.linalg.cython_blas" not in sys.modules  # no stub left behind
assert "numba" not in sys.modules  # not until a kernel needs numba's JIT
from netmon_exporter import row_pack
row_pack.exercise()  # numba imported here (NETMON_KERNELS=jit), its probe run lean
import numba.np.arraymath
assert not numba.np.arraymath._HAVE_BLAS
assert "scipy.linalg.cython_blas" not in sys.modules  # no stub left behind
assert not [m for m, v in sys.modules.items() if v and m.startswith(("scipy.linalg", "numpy.f2py"))]
import sklearn.ensemble
from netmon_exporter.models import load_model, save_model, train_anomaly
rng = np.random.default_rng(1)
flows = make_batch(200, **{"Flow Duration": rng.uniform(1, 1e6, 200), "Tot Fwd Pkts": rng.integers(1, 20, 200)})
path = save_model(train_anomaly(flows, data_digest="test"), "model.skops")
model = load_model(path)
assert len(model.score(flows)) == 200
assert sys.modules.get("scipy.linalg.cython_blas") is not None
print("ok")
"""
    assert _python(tmp_path, "-c", code, jit=True).stdout.strip() == "ok"


def test_workers_are_forked_from_a_lean_fork_server() -> None:
    import multiprocessing.forkserver as fs

    from netmon_exporter.ingest import workers

    assert workers._CTX.get_start_method() == "forkserver"
    assert fs._forkserver._preload_modules[0] == "netmon_exporter.lean_start"  # type: ignore[attr-defined]


def test_the_flow_engine_compiles_ahead_of_time(tmp_path: Path) -> None:
    """`make` and the image build run this once, so no process pays a first compile; it
    covers the CSV writer and reader too (workers compiled those on their first file), and
    the scan detectors' contact merge (the daemon's first window compiled it)."""
    run = _python(tmp_path, "-m", "netmon_exporter.ingest.warm_pipeline", timeout=900)
    assert "flow engine and detector kernels compiled and cached" in run.stdout
    assert "kernels built ahead of time" in run.stdout, run.stdout  # built, or up to date
    makefile = (ROOT / "Makefile").read_text()
    assert "-m netmon_exporter.ingest.warm_pipeline" in makefile
    assert "python -m netmon_exporter.ingest.warm_pipeline" in (ROOT / "Dockerfile").read_text()


_LEAN_RUN = """
import hashlib, json, sys
import numpy as np
lean = sys.argv[1] == "1"
if lean:
    import netmon_exporter.lean_start
from pathlib import Path
from netmon_exporter.flows import flow_table
from netmon_exporter.pipeline import FlowSettings, process_file
out = []
for path in sys.argv[2:]:
    flows = process_file(Path(path), FlowSettings(interim_seconds=60.0)).flows
    digest = lambda v: hashlib.sha256(
        np.ascontiguousarray(v).view(np.uint8) if v.dtype.kind in "fiub" else repr(list(v)).encode()
    ).hexdigest()
    out.append({k: [len(v), digest(v)] for k, v in flows.columns.items()})  # every bit
stats = flow_table.process_packets.stats
print(json.dumps({
    "flows": out,
    "hits": sum(stats.cache_hits.values()),
    "misses": sum(stats.cache_misses.values()),
    "modules": sorted(m for m, v in sys.modules.items() if v and m.startswith("numba")),
}))
"""


def test_cached_kernels_load_without_refreshing_numbas_compiler(tmp_path: Path) -> None:
    """As the flows command and the workers start (lean_start imported first): kernels
    come from numba's cache without numba importing and registering every implementation
    it has first, and give the flows that a process where numba did gets, bit for bit."""
    data = Path(__file__).parent / "data" / "pcaps"
    pcaps = [str(data / n) for n in ("dns-edns-ecs.pcap", "icmp6.pcap", "pppoe.pcap")]

    def run(lean: bool) -> dict:
        out = _python(tmp_path, "-c", _LEAN_RUN, str(int(lean)), *pcaps, jit=True).stdout
        return dict(json.loads(out))

    run(True)  # compiles what the cache lacks (a fresh checkout), as numba does
    lean, full = run(True), run(False)
    assert lean["hits"] > 0 and lean["misses"] == 0
    assert lean["flows"] == full["flows"] and all(lean["flows"])
    # what numba's refresh would have imported, in the lean process only
    refreshed = {"numba.np.arraymath", "numba.np.random.generator_core", "numba.typed.typeddict"}
    assert refreshed <= set(full["modules"]) and not refreshed & set(lean["modules"])
    assert "numba.cpython.hashing" in lean["modules"]  # the symbols it installs


def test_kernels_missing_from_the_cache_still_compile_when_loads_are_lean(tmp_path: Path) -> None:
    """A kernel that is not cached (new code, another signature) compiles as before (the
    compiler refreshes itself), then loads from the cache in the next lean process."""
    (tmp_path / "kern.py").write_text(
        "import numpy as np\n"
        "from netmon_exporter.compiled import njit\n"
        "@njit(cache=True)\n"
        "def f(a):\n"
        "    d = {np.int64(0): 0.0}\n"
        "    for x in a:\n"
        "        k = np.int64(x) % 7\n"
        "        d[k] = (d[k] if k in d else 0.0) + np.log2(x + 1.0)\n"
        "    keys = np.array(sorted(d.keys()))\n"
        "    return keys, np.argsort(a, kind='mergesort')[:3], hash('dns' + str(len(a))) % 1000\n"
    )
    code = (
        "import sys, netmon_exporter.lean_start, numpy as np\n"
        "sys.path.insert(0, '.')\n"
        "import kern\n"
        "k, order, h = kern.f(np.arange(50.0)[::-1].copy())\n"
        "s = kern.f.stats\n"
        "print(k.tolist(), order.tolist(), h, sum(s.cache_hits.values()), sum(s.cache_misses.values()))\n"
    )

    def run() -> list[str]:
        out = subprocess.run(
            [sys.executable, "-c", code],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
            env={
                "PYTHONPATH": str(ROOT),
                "PATH": "/usr/bin:/bin",
                "PYTHONHASHSEED": "7",
                "NETMON_KERNELS": "jit",
            },
        )
        assert out.returncode == 0, out.stderr[-2000:]
        return out.stdout.split()

    first, second = run(), run()
    assert first[-2:] == ["0", "1"] and second[-2:] == ["1", "0"]  # compiled, then loaded
    assert first[:-2] == second[:-2]
    assert "[0, 1, 2, 3, 4, 5, 6]" in " ".join(first) and "[49, 48, 47]" in " ".join(first)


_WORKER_RUN = """
import gc, os, sys
import netmon_exporter.lean_start
from pathlib import Path
from netmon_exporter.flows.flow_table import FlowTable
from netmon_exporter.ingest import carry_store
from netmon_exporter.pipeline import FlowSettings, finish_carry, process_file
import struct
from tests import dns_capture
from tests.flood_capture import syn_flood_records
resolver = dns_capture.write_pcap(Path("resolver.pcap"), dns_capture.exchanges(2000, 30.0))
flood = Path("flood.pcap")
flood.write_bytes(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1) + syn_flood_records(5000))
for path in [resolver, flood, *sys.argv[1:]]:
    for s in (FlowSettings(interim_seconds=5.0, csv_interim=True), FlowSettings(max_open_flows=50)):
        r = process_file(Path(path), s, final=False, csv_path=Path("flows.csv"))
        if r.carry:
            finish_carry(r.carry, s)
            t = FlowTable.from_bytes(r.carry, *s.table_args())
            carry_store.load(".", carry_store.save_arrays(".", 1, t.state_arrays()))
if os.environ.get("NETMON_KERNELS") == "jit":
    from numba.core.registry import CPUDispatcher
    compiled = sorted(
        f"{o.py_func.__module__}.{o.py_func.__name__}"
        for o in gc.get_objects()
        if isinstance(o, CPUDispatcher) and sum(o.stats.cache_misses.values())
    )
    print("compiled:", compiled)
else:
    from netmon_exporter import compiled
    jit = sorted(k.name for k in compiled.kernels() if k.jit_calls)
    aot = sum(k.aot_calls for k in compiled.kernels())
    print("jit:", jit, "numba:", "numba" in sys.modules, "aot calls:", aot > 100)
"""


def test_workers_compile_nothing_that_the_install_step_did_not(tmp_path: Path) -> None:
    """With a cache of numba's that only `python -m netmon_exporter.ingest.warm_pipeline`
    (the install step) has filled, what a worker does (DNS exchanges, seeds and rows, TCP,
    a SYN flood, pcapng, interim slices, the cap, carries, CSVs) compiles nothing: a worker
    that compiled would stall its file for seconds (DNS flows with rows, once every DNS
    query was a seed, and pcapng files were both compiled by the first worker to meet
    them)."""
    data = Path(__file__).parent / "data" / "pcaps"
    cache = {"NUMBA_CACHE_DIR": str(tmp_path / "numba-cache")}

    def run(*args: str, jit: bool = False) -> str:
        return _python(tmp_path, *args, timeout=900, jit=jit, env=cache).stdout

    run("-m", "netmon_exporter.ingest.warm_pipeline")
    pcaps = [str(p) for p in sorted(data.glob("*.pcap*"))]
    assert any(p.endswith(".pcapng") for p in pcaps) and len(pcaps) > 5
    # what the install step built ahead of time covers it all: numba is never imported
    assert "jit: [] numba: False aot calls: True" in run("-c", _WORKER_RUN, *pcaps)
    # and numba's cache, where the build would not serve
    assert "compiled: []" in run("-c", _WORKER_RUN, *pcaps, jit=True)


def test_a_cached_kernel_that_fails_to_load_leanly_loads_numbas_way(tmp_path: Path) -> None:
    code = """
import netmon_exporter.lean_start
from numba.core import caching
real, failed = caching.Cache._load_overload, []
def once(self, sig, ctx):
    if not failed:
        failed.append(1)
        raise RuntimeError("needs a registry")
    return real(self, sig, ctx)
caching.Cache._load_overload = once
import sys
from netmon_exporter.flows import flow_table
from netmon_exporter.pipeline import FlowSettings, process_file
from pathlib import Path
r = process_file(Path(sys.argv[1]), FlowSettings())
s = flow_table.process_packets.stats
print(failed, r.flow_count, sum(s.cache_misses.values()), "numba.np.arraymath" in sys.modules)
"""
    _python(tmp_path, "-m", "netmon_exporter.ingest.warm_pipeline", timeout=600)  # cached
    out = _python(tmp_path, "-c", code, str(PCAP), jit=True).stdout.split()
    assert out == ["[1]", "1", "0", "True"]  # failed once, then loaded (refreshed), not compiled
