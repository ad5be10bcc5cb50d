"""Build the package's kernels ahead of time (see ``netmon_exporter/compiled.py``).

The install step (``python -m netmon_exporter.ingest.warm_pipeline``) warms every
kernel through numba's JIT, then hands the signatures it met to
:func:`build_in_subprocess`. Fresh interpreters, one per CPU, each run
:func:`compile_groups` (``python -m netmon_exporter.aot_build SIGNATURES OUT PREFIX``):
numba's ``pycc`` compiles the signatures into extension modules under
``netmon_exporter/_aot/``, one per source module and GIL rule (a group numba cannot build
together is built one kernel a module; a kernel that does not build at all is left to
the JIT and named). Kernels marked ``nogil`` release the GIL as under the JIT. The code
is built for this machine's CPU (``NETMON_AOT_CPU=host``, the default), and is then used
only on a machine with the same CPU features; ``NETMON_AOT_CPU=generic`` builds for the
architecture's generic CPU (the container image: built on one machine, run on others),
about half as fast on simple loops here (unpacking a column of 2 M values: 1.23 against
0.56 ms built for this CPU; numba's JIT 0.38 ms).

The new build replaces the old one only once it is complete (manifest written last,
then the directory renamed), so a process starting meanwhile sees the one or the other.
"""

from __future__ import annotations

import ast
import json
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

from . import compiled

Signatures = list[tuple[str, str, bool, list[Any]]]  # (module, qualname, nogil, sigs)


CPU_ENV = "NETMON_AOT_CPU"  # "host" (default) or "generic"


def target_cpu() -> str:
    """What the build is for: this machine's CPU ("host", the default: used only on a
    machine whose CPU features are the same), or the architecture's generic CPU
    ("generic": runs anywhere, ~2x slower on simple loops here, e.g. unpacking a column:
    1.23 against 0.56 ms for 2 M values)."""
    value = os.environ.get(CPU_ENV, "host").strip().lower() or "host"
    if value not in ("host", "generic"):
        raise ValueError(f"{CPU_ENV}={value!r}: expected host or generic")
    return value


def collect() -> Signatures:
    """Every signature numba's JIT has for the package's kernels in this process (kernels
    called only by kernels are built too: the warm-up cannot tell them apart)."""
    found: Signatures = []
    for kernel in compiled.kernels():
        if not kernel.signatures or kernel.options.get("inline") == "always":
            continue  # not run, or a helper compiled into its callers
        found.append(
            (
                kernel.py_func.__module__,
                kernel.py_func.__qualname__,
                bool(kernel.options.get("nogil")),
                list(kernel.signatures),
            )
        )
    return found


def missing(signatures: Signatures) -> int:
    """How many of these signatures the current build lacks (all when it is not current)."""
    manifest, _ = compiled.read_build()
    wanted = {
        (f"{module}.{qualname}", json.dumps([compiled.type_key(t) for t in sig]))
        for module, qualname, _, sigs in signatures
        for sig in sigs
    }
    if manifest is None or manifest.get("cpu", {}).get("target") != target_cpu():
        return len(wanted)
    have = {
        (name, json.dumps(export["args"]))
        for name, exports in manifest["kernels"].items()
        for export in exports
    }
    return len(wanted - have)


def build_in_subprocess(signatures: Signatures, jobs: int = 0, timeout: float = 1800) -> str:
    """Build these signatures into a new ``_aot`` directory and put it in place; return
    what was done, raise on failure. The groups (a source module's kernels that release
    the GIL alike) are compiled by ``jobs`` fresh interpreters at once (numba's compiler
    state as a new process has it; default: one per CPU), each by :func:`compile_groups`."""
    srcs = sources({m for m, _, _, _ in signatures} | {compiled.__name__})
    digest = compiled.source_digest(srcs)  # the source the processes below compile
    groups: dict[tuple[str, bool], Signatures] = {}
    for entry in signatures:
        groups.setdefault((entry[0], entry[2]), []).append(entry)
    jobs = max(1, min(jobs or os.cpu_count() or 1, len(groups)))
    bins: list[Signatures] = [[] for _ in range(jobs)]
    for members in sorted(groups.values(), key=lambda g: -sum(len(e[3]) for e in g)):
        min(bins, key=lambda b: sum(len(e[3]) for e in b)).extend(members)  # balanced
    parent = compiled.AOT_DIR.parent
    out = Path(tempfile.mkdtemp(prefix="_aot.new-", dir=parent))
    log: list[str] = []
    kernels: dict[str, list[dict[str, Any]]] = {}
    runs: list[subprocess.Popen[str]] = []
    try:
        (out / "__init__.py").write_text('"""Kernels built ahead of time (generated)."""\n')
        env = dict(os.environ, **{compiled.ENV: "jit"})
        for i, part in enumerate(bins):
            path = out / f"signatures-{i}.pickle"
            path.write_bytes(pickle.dumps(part))
            cmd = [sys.executable, "-m", "netmon_exporter.aot_build", str(path), str(out), f"j{i}"]
            runs.append(
                subprocess.Popen(
                    cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=out
                )
            )
        for run in runs:
            stdout, stderr = run.communicate(timeout=timeout)
            if run.returncode != 0:
                raise RuntimeError(f"ahead-of-time build failed:\n{stderr[-4000:]}")
            result = json.loads(stdout)
            log += result["log"]
            for name, exports in result["kernels"].items():
                kernels.setdefault(name, []).extend(exports)
        for leftover in [*out.glob("*.o"), *out.glob("signatures-*.pickle")]:
            leftover.unlink()
        manifest = {
            "format": compiled.FORMAT,
            "numba": compiled._numba_version(),
            "platform": compiled.platform_tag(),
            "sources": srcs,
            "digest": digest,
            "cpu": {
                "target": target_cpu(),
                "flags": "" if target_cpu() == "generic" else compiled.cpu_flags(),
            },
            "kernels": kernels,
        }
        (out / compiled.MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        old = parent / f"_aot.old-{os.getpid()}"
        if compiled.AOT_DIR.exists():
            compiled.AOT_DIR.rename(old)
        out.rename(compiled.AOT_DIR)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        for run in runs:
            run.kill()
        shutil.rmtree(out, ignore_errors=True)
        raise
    done = sum(len(v) for v in kernels.values())
    log.append(
        f"{done} signatures of {len(kernels)} kernels built ahead of time ({jobs} processes)"
    )
    return "\n".join(log)


def sources(modules: set[str]) -> list[str]:
    """The package's files these modules are compiled from: the modules themselves and
    the package modules they import, transitively (paths relative to its parent)."""
    root = compiled.PACKAGE.parent
    seen: set[str] = set()
    todo = list(modules)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = _module_path(name)
        if path is None:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = _absolute(name, path, node.module, node.level)
                if base is None:
                    continue
                todo.append(base)
                todo.extend(f"{base}.{alias.name}" for alias in node.names)
            elif isinstance(node, ast.Import):
                todo.extend(a.name for a in node.names if a.name.startswith("netmon_exporter"))
    files = {str(p.relative_to(root)) for n in seen if (p := _module_path(n)) is not None}
    return sorted(files)


def _module_path(name: str) -> Path | None:
    if not name.startswith(compiled.PACKAGE.name):
        return None
    base = compiled.PACKAGE.parent.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _absolute(name: str, path: Path, module: str | None, level: int) -> str | None:
    if level == 0:
        return module if module and module.startswith(compiled.PACKAGE.name) else None
    parts = name.split(".")
    package = parts if path.name == "__init__.py" else parts[:-1]
    base = package[: len(package) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def compile_groups(
    signatures: Signatures, out: Path, prefix: str
) -> tuple[list[str], dict[str, list[dict[str, Any]]]]:
    """Compile these signatures into extension modules ``{prefix}_k<n>_<module>`` in
    ``out``, one per source module and GIL rule (a group numba cannot build together is
    built a kernel a module; a kernel that does not build is left to the JIT and named);
    return what happened and the manifest entries of what was built."""
    warnings.simplefilter("ignore")  # pycc's pending deprecation, numba's own notes
    import importlib

    from numba.core.compiler import Flags
    from numba.pycc import CC
    from numba.pycc import compiler as pycc_compiler

    for module in {m for m, _, _, _ in signatures}:
        importlib.import_module(module)
    compiled.jit_all()  # kernels' calls to kernels compile (and inline) as under the JIT
    by_name = {k.name: k for k in compiled.kernels()}

    groups: dict[tuple[str, bool], list[tuple[Any, list[Any]]]] = {}
    for module, qualname, nogil, sigs in signatures:
        kernel = by_name[f"{module}.{qualname}"]
        groups.setdefault((module, nogil), []).append((kernel, sigs))

    log: list[str] = []
    manifest_kernels: dict[str, list[dict[str, Any]]] = {}
    count = 0

    def compile_group(members: list[tuple[Any, list[Any]]], nogil: bool) -> bool:
        nonlocal count
        name = f"{prefix}_k{count}_" + members[0][0].py_func.__module__.rsplit(".", 1)[-1]
        count += 1
        cc = CC(name)
        cc.output_dir = str(out)
        cc.target_cpu = "" if target_cpu() == "generic" else "host"
        entries: list[tuple[str, str, list[Any]]] = []
        for kernel, sigs in members:
            for i, sig in enumerate(sigs):
                keys = [compiled.type_key(t) for t in sig]
                if any(k is None for k in keys):
                    log.append(f"left to the JIT: {kernel.name}{sig} (argument types)")
                    continue
                symbol = f"{kernel.py_func.__name__}__{i}"
                cc.export(symbol, sig)(kernel.dispatcher.py_func)
                entries.append((kernel.name, symbol, keys))
        if not entries:
            return True

        class KernelFlags(Flags):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, **kwargs)
                self.release_gil = nogil  # type: ignore[assignment]  # numba's Option

        saved = pycc_compiler.Flags
        pycc_compiler.Flags = KernelFlags  # type: ignore[misc]  # what pycc compiles with
        try:
            cc.compile()
        except Exception as exc:
            log.append(f"{name}: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
            return False
        finally:
            pycc_compiler.Flags = saved  # type: ignore[misc]
        for kernel_name, symbol, keys in entries:
            manifest_kernels.setdefault(kernel_name, []).append(
                {"module": name, "symbol": symbol, "args": keys, "nogil": nogil}
            )
        return True

    for (module, nogil), members in sorted(groups.items(), key=lambda g: (g[0][0], g[0][1])):
        t0 = time.perf_counter()
        if not compile_group(members, nogil):
            for member in members:  # one kernel a module
                if not compile_group([member], nogil):
                    log.append(f"left to the JIT: {member[0].name}")
        log.append(f"{module}: {len(members)} kernels in {time.perf_counter() - t0:.1f} s")
    return log, manifest_kernels


if __name__ == "__main__":
    _log, _kernels = compile_groups(
        pickle.loads(Path(sys.argv[1]).read_bytes()), Path(sys.argv[2]), sys.argv[3]
    )
    print(json.dumps({"log": _log, "kernels": _kernels}))
