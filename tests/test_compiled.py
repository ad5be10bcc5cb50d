"""Kernels built ahead of time (netmon_exporter/compiled.py and aot_build.py).

What the install step builds must compute exactly what numba's JIT computes, serve
everything a worker, the flows command and the main process's detectors meet (so that
they never import numba), refuse arguments it was not built for (a wrong dtype would read
the wrong memory) and never be used once the source it was built from has changed.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from netmon_exporter import compiled

from .test_start_up import _python as run_python

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).parent / "data" / "pcaps"


def _python(cwd: Path, code: str, *args: str, jit: bool = False, root: Path = ROOT) -> str:
    return run_python(cwd, "-c", code, *args, timeout=600, jit=jit, root=root).stdout


def test_the_install_step_built_the_kernels() -> None:
    """`make` (and so `make test`) runs the install step: the build is there and current."""
    assert compiled.aot_status().startswith("in use"), compiled.aot_status()


# Everything the kernels do for a worker, the flows command and the main process, on real
# and generated traffic; one digest per output, printed as JSON.
_WORKLOAD = """
import hashlib, json, struct, sys
from pathlib import Path
import numpy as np
import netmon_exporter.lean_start
from netmon_exporter import compiled
from netmon_exporter.flows.flow_csv import read_flow_csv
from netmon_exporter.flows.flow_table import FlowTable
from netmon_exporter.ingest import carry_store
from netmon_exporter.pipeline import FlowSettings, finish_carry, process_file
from tests import dns_capture
from tests.flood_capture import handshake_records, syn_flood_records

out = {}
def digest(name, data):
    out[name] = hashlib.sha256(data).hexdigest()

header = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
Path("flood.pcap").write_bytes(header + syn_flood_records(20000))
Path("idle.pcap").write_bytes(header + handshake_records(5000))
resolver = dns_capture.write_pcap(Path("resolver.pcap"), dns_capture.exchanges(3000, 30.0))
paths = [Path(p) for p in sys.argv[1:]] + [Path("flood.pcap"), Path("idle.pcap"), resolver]
settings = {
    "whole": FlowSettings(),
    "slices": FlowSettings(interim_seconds=5.0, csv_interim=True),
    "cap": FlowSettings(max_open_flows=50),
}
for path in paths:
    for label, s in settings.items():
        csv = Path(f"{path.name}.{label}.csv")
        r = process_file(path, s, final=False, csv_path=csv)
        digest(f"{path.name} {label} csv", csv.read_bytes())
        for i, batch in enumerate(read_flow_csv(csv)):
            for k in sorted(batch.columns):
                v = batch.columns[k]
                data = v.tobytes() if v.dtype.kind in "fiub" else repr(v.tolist()).encode()
                digest(f"{path.name} {label} read back {i} {k}", data)
        if r.carry:
            digest(f"{path.name} {label} carry", bytes(r.carry))
            done = finish_carry(r.carry, s)
            digest(f"{path.name} {label} finished", repr(done).encode())
            t = FlowTable.from_bytes(r.carry, *s.table_args())
            back = carry_store.load(".", carry_store.save_arrays(".", 1, t.state_arrays()))
            digest(f"{path.name} {label} carry file", repr(back).encode())

# the main process: row packing, names described in bulk, key hashes, contact merges
from netmon_exporter.flow_schema import FlowBatch, str_to_addrs
from netmon_exporter.row_pack import PackedRows
rng = np.random.default_rng(5)
cols = {}
for dtype in (np.float32, np.float64):
    for span in (2, 300, 70_000):
        x = rng.integers(0, span, 5000).astype(dtype)
        cols[f"{np.dtype(dtype).name}-{span}"] = x
        y = x.copy(); y[::7] = np.nan
        cols[f"{np.dtype(dtype).name}-{span}-nan"] = y
    cols[f"{np.dtype(dtype).name}-raw"] = rng.normal(size=5000).astype(dtype)
back = PackedRows(FlowBatch(cols)).unpack()
for k in sorted(cols):
    digest(f"row pack {k}", np.ascontiguousarray(back.columns[k]).tobytes())
from netmon_exporter.detectors.catalog import DnsTunnelConfig
from netmon_exporter.detectors.dns_tunnel import DnsTunnelDetector
names = ["a%d.%s.example.co.uk" % (i, "x" * (i % 40)) for i in range(6000)] + ["\\u00e9t\\u00e9.b.", "q" * 250]
described = DnsTunnelDetector(DnsTunnelConfig())._describer.describe(names)
for k in sorted(described):
    digest(f"names {k}", np.ascontiguousarray(described[k]).tobytes())
from netmon_exporter.detectors.hash_kernels import mix_first, mix_next
w = rng.integers(0, 2**63, 200_000, dtype=np.int64).view(np.uint64)
h = mix_first(w, np.uint64(0x5EC12E7))  # keyed (hash_key.py)
mix_next(h, w[::-1].copy())  # in place
digest("key hashes", h.tobytes())
from netmon_exporter.detectors.scan_probes import COUNT, KINDS, ContactStore
store = ContactStore(60.0, 100_000, sums=("n",), maxes=("content",), ors=("kinds",))
store.merge_kernel_rows = 1
for t in range(4):
    n = 3000
    src = str_to_addrs(["10.0.%d.%d" % (i // 250, i % 250) for i in rng.integers(0, 2000, n)])
    dst = str_to_addrs(["192.168.1.%d" % i for i in rng.integers(0, 200, n)])
    times = np.full(n, float(t))
    store.update({
        "src": src, "dst": dst, "svc": rng.integers(0, 30, n), "first": times, "last": times,
        "n": rng.integers(1, 9, n).astype(COUNT), "content": rng.normal(size=n),
        "kinds": rng.integers(0, 8, n).astype(KINDS),
    }, float(t))
rows = store.rows
for k in sorted(rows):
    digest(f"contacts {k}", np.ascontiguousarray(rows[k]).tobytes())

print(json.dumps({
    "digests": out,
    "status": compiled.aot_status(),
    "numba": sorted(m for m in sys.modules if m.split(".")[0] in ("numba", "llvmlite")),
    "jit": sorted(k.name for k in compiled.kernels() if k.jit_calls),
    "aot": sorted(k.name for k in compiled.kernels() if k.aot_calls),
}))
"""


@pytest.mark.slow
def test_the_build_computes_what_the_jit_computes_and_serves_it_all(tmp_path: Path) -> None:
    pcaps = [str(p) for p in sorted(DATA.glob("*.pcap*"))]
    assert len(pcaps) > 10 and any(p.endswith(".pcapng") for p in pcaps)
    (tmp_path / "aot").mkdir()
    (tmp_path / "jit").mkdir()
    aot = json.loads(_python(tmp_path / "aot", _WORKLOAD, *pcaps))
    jit = json.loads(_python(tmp_path / "jit", _WORKLOAD, *pcaps, jit=True))
    assert aot["status"].startswith("in use"), aot["status"]
    assert jit["status"] == f"not used: {compiled.ENV}=jit"
    assert len(aot["digests"]) > 200
    differ = [k for k in jit["digests"] if aot["digests"].get(k) != jit["digests"][k]]
    assert not differ and aot["digests"].keys() == jit["digests"].keys(), differ
    # everything ran built ahead of time: numba was never imported
    assert aot["jit"] == [] and aot["numba"] == [], (aot["jit"], aot["numba"])
    assert {
        "netmon_exporter.capture.decode.walk_pcap",
        "netmon_exporter.capture.decode.walk_pcapng",
        "netmon_exporter.flows.flow_table.process_packets",
        "netmon_exporter.flows.csv_format._format",
        "netmon_exporter.flows.csv_format.parse_floats",
        "netmon_exporter.ingest.carry_codec._pack",
        "netmon_exporter.row_pack_kernels.pack_float",
        "netmon_exporter.detectors.dns_names._describe",
        "netmon_exporter.detectors.hash_kernels.mix_first",
        "netmon_exporter.detectors.contact_merge.merge_column",
    } <= set(aot["aot"])
    assert jit["aot"] == [] and "numba" in jit["numba"]


_MISMATCH = """
import sys
import numpy as np
from netmon_exporter import compiled
from netmon_exporter.detectors.hash_kernels import mix_first, mix_next
from netmon_exporter.row_pack_kernels import plan_float
w = np.arange(1, 1001, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
want = mix_first(w, np.uint64(0))
assert mix_first.aot_calls == 1 and mix_first.jit_calls == 0
ro = w.copy(); ro.flags.writeable = False
wide = np.zeros(2000, np.uint64); wide[::2] = w
cases = {
    "uint32": w.astype(np.uint32),      # a dtype it was not built for
    "strided": wide[::2],               # not contiguous
    "read-only": ro,                    # a store's columns
    "misaligned": np.frombuffer(np.zeros(8 * 1000 + 1, np.uint8).data, np.uint64, 1000, 1),
}
built = {key[0] for key in compiled._aot_table()["netmon_exporter.detectors.hash_kernels.mix_first"]}
went_jit = []
for name, arg in cases.items():
    before = (mix_first.aot_calls, mix_first.jit_calls)
    got = mix_first(arg, np.uint64(0))
    by_jit = mix_first.jit_calls == before[1] + 1
    assert by_jit != (mix_first.aot_calls == before[0] + 1), name
    assert by_jit == (compiled.arg_type(arg) not in built), name  # run as built, or by the JIT
    went_jit.append(name) if by_jit else None
    if name in ("strided", "read-only"):
        assert np.array_equal(got, want), name
assert not cases["misaligned"].flags.aligned
assert {"uint32", "misaligned"} <= set(went_jit), went_jit
# a byte order, a number of dimensions or a layout of its own is another type
assert len({compiled.arg_type(a) for a in (w, w.astype(">u8"), w.reshape(10, 100), wide[::2])}) == 4
assert "numba" in sys.modules
print("ok")
"""


def test_arguments_the_build_was_not_made_for_go_to_the_jit(tmp_path: Path) -> None:
    """An ahead-of-time function would read an int32 array as int64 (or crash); every
    argument is matched exactly, as numba's typeof sees it, before the build runs."""
    assert _python(tmp_path, _MISMATCH).strip().endswith("ok")


def test_argument_types_are_what_numbas_typeof_says() -> None:
    import numpy as np
    from numba import typeof

    values = [
        np.zeros(3),
        np.zeros((3, 4), np.int32),
        np.zeros((3, 4), np.int32).T,
        np.zeros((3, 4))[:, ::2],
        np.zeros(4, np.uint8)[::2],
        np.zeros((1, 5)),
        np.zeros((5, 1)),
        np.zeros(0, np.int16),
        np.zeros(3, bool),
        True,
        np.True_,
        7,
        -(2**63),
        2**63 - 1,
        2**63,
        0.5,
        np.float32(1.5),
        np.int8(3),
        np.uint64(9),
    ]
    ro = np.zeros(3)
    ro.flags.writeable = False
    values.append(ro)
    for value in values:
        assert compiled.arg_type(value) == compiled.type_key(typeof(value)), value
    with pytest.raises(TypeError):
        compiled.arg_type("text")
    assert compiled.arg_type(2**64) is None  # numba cannot type it either


def _copy_package(tmp_path: Path) -> Path:
    """This checkout's package, build included, without numba's caches."""
    root = tmp_path / "copy"
    shutil.copytree(
        ROOT / "netmon_exporter",
        root / "netmon_exporter",
        ignore=shutil.ignore_patterns("__pycache__", "_aot.*"),
    )
    return root


_STATUS = """
from netmon_exporter import compiled
from netmon_exporter.detectors import hash_kernels
print(compiled.aot_status(), "|", hash_kernels.mix_first.built_signatures)
"""


def test_a_mistyped_kernels_setting_is_reported_not_ignored(tmp_path: Path) -> None:
    code = "from netmon_exporter import compiled; print(compiled.aot_status())"
    env = {compiled.ENV: "aot"}
    out = run_python(tmp_path, "-c", code, env=env).stdout
    assert out.strip() == f"not used: {compiled.ENV}='aot' is neither jit nor auto"
    env = {compiled.ENV: " Auto "}
    assert run_python(tmp_path, "-c", code, env=env).stdout.startswith("in use")


def test_a_build_of_other_source_or_numba_is_not_used(tmp_path: Path) -> None:
    root = _copy_package(tmp_path)
    status, built = _python(tmp_path, _STATUS, root=root).strip().split(" | ")
    assert status.startswith("in use") and int(built) >= 1  # the copy's own build
    kernel_module = root / "netmon_exporter" / "flows" / "flow_table.py"
    kernel_module.write_text(kernel_module.read_text() + "\n# edited\n")
    status, built = _python(tmp_path, _STATUS, root=root).strip().split(" | ")
    assert "source changed" in status and built == "0", status
    kernel_module.write_text(kernel_module.read_text().removesuffix("\n# edited\n"))
    assert _python(tmp_path, _STATUS, root=root).startswith("in use")
    # a module the kernels' module imports (its constants are compiled in)
    decode = root / "netmon_exporter" / "capture" / "decode.py"
    decode.write_text(decode.read_text().replace("W_CORRUPT = 1", "W_CORRUPT = 2"))
    assert "source changed" in _python(tmp_path, _STATUS, root=root)
    decode.write_text(decode.read_text().replace("W_CORRUPT = 2", "W_CORRUPT = 1"))
    manifest_path = root / "netmon_exporter" / "_aot" / compiled.MANIFEST
    manifest = json.loads(manifest_path.read_text())
    for key, value in (
        ("numba", "0.1"),
        ("platform", {"ext_suffix": ".so"}),
        ("format", 0),
        ("cpu", {"target": "host", "flags": "another CPU"}),  # code built for this CPU
    ):
        manifest_path.write_text(json.dumps({**manifest, key: value}))
        assert _python(tmp_path, _STATUS, root=root).startswith("not used"), key
    # code built for the generic CPU runs on any (the image's)
    manifest_path.write_text(json.dumps({**manifest, "cpu": {"target": "generic", "flags": ""}}))
    assert _python(tmp_path, _STATUS, root=root).startswith("in use")
    manifest_path.write_text("{not json")
    assert "cannot be loaded" in _python(tmp_path, _STATUS, root=root)
    manifest_path.unlink()
    assert _python(tmp_path, _STATUS, root=root).startswith("not built")


def test_the_build_covers_every_file_its_kernels_are_compiled_from() -> None:
    manifest, why = compiled.read_build()
    assert manifest is not None, why
    sources = set(manifest["sources"])
    for module in {k.py_func.__module__ for k in compiled.kernels()} | {
        "netmon_exporter.capture.decode",
        "netmon_exporter.flows.flow_table",
        "netmon_exporter.flows.csv_format",
        "netmon_exporter.text_safety",  # csv_format's text cells
        "netmon_exporter.row_pack",  # row_pack_kernels' constants
        "netmon_exporter.compiled",
    }:
        assert module.replace(".", "/") + ".py" in sources, module


def test_kernels_marked_nogil_release_the_gil_when_built() -> None:
    """As declared, and in the built code: a module's wrappers release the GIL (they call
    ``PyEval_SaveThread``) exactly when its kernels are marked ``nogil``."""
    manifest, why = compiled.read_build()
    assert manifest is not None, why
    import netmon_exporter.flows.flow_table  # noqa: F401  # kernels of both kinds

    by_name = {k.name: k for k in compiled.kernels()}
    modules: dict[str, set[bool]] = {}
    for name, exports in manifest["kernels"].items():
        for e in exports:
            modules.setdefault(e["module"], set()).add(e["nogil"])
        if name in by_name:
            want = bool(by_name[name].options.get("nogil"))
            assert {e["nogil"] for e in exports} == {want}, name
    assert {True, False} <= set().union(*modules.values())
    for module, nogil in modules.items():
        assert len(nogil) == 1, module
        (path,) = compiled.AOT_DIR.glob(f"{module}.*")
        assert (b"PyEval_SaveThread" in path.read_bytes()) == nogil.pop(), module


def test_the_daemon_says_at_start_whether_the_build_runs_its_kernels(caplog) -> None:
    import logging
    from types import SimpleNamespace

    from netmon_exporter import daemon

    args = SimpleNamespace(telemetry_path="/metrics")
    server = SimpleNamespace(address="127.0.0.1:1", scheme="http")
    holder = SimpleNamespace(path=Path("config.yaml"))
    with caplog.at_level(logging.INFO, logger=daemon.log.name):
        daemon._log_start(args, server, holder, ("", "/"))  # type: ignore[arg-type]
    (record,) = [r for r in caplog.records if r.getMessage() == "compiled kernels"]
    assert record.ahead_of_time == compiled.aot_status()  # type: ignore[attr-defined]
    assert record.levelno == (
        logging.INFO if compiled.aot_status().startswith("in use") else logging.WARNING
    )


def test_the_build_is_for_this_cpu_unless_asked_for_the_generic_one(monkeypatch) -> None:
    from netmon_exporter import aot_build

    for value, want in (("", "host"), ("host", "host"), (" Generic ", "generic")):
        monkeypatch.setenv(aot_build.CPU_ENV, value)
        assert aot_build.target_cpu() == want
    monkeypatch.setenv(aot_build.CPU_ENV, "skylake")
    with pytest.raises(ValueError, match="NETMON_AOT_CPU='skylake': expected host or generic"):
        aot_build.target_cpu()
    assert len(compiled.cpu_flags()) == 16  # Linux: /proc/cpuinfo's flags, hashed
