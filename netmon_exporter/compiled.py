"""Compiled kernels: built ahead of time where they can be, numba's JIT otherwise.

Every compiled function of the package is declared with :func:`njit` from this module
(same options as numba's). What the decorator returns is a :class:`Kernel`: calling it
runs, in this order,

1. the **ahead-of-time build** of the kernel for exactly the argument types given, when
   one exists: extension modules that ``python -m netmon_exporter.ingest.warm_pipeline``
   builds at install time (``make``, the container image) with numba's ``pycc``, for
   every signature the install step's warm-up meets (:mod:`.aot_build`). They
   import without numba: a process that only runs them never loads numba, llvmlite and
   LLVM (~0.2-0.3 s and ~120 MB of RSS a process here);
2. otherwise **numba's JIT dispatcher**, created on first need (numba imported then, its
   on-disk cache used as before): other argument types, a build that is missing or
   stale, or ``NETMON_KERNELS=jit`` in the environment.

Both run the same source compiled by the same numba, so they compute the same; the tests
compare them on real and generated captures (``tests/test_compiled.py``).

An ahead-of-time function does not check its arguments (a wrong dtype reads the wrong
memory), so a call is matched first: each argument's type is computed as numba's
``typeof`` would (:func:`arg_type`: an array's dtype, dimensions, layout, whether it is
writable and aligned; a scalar's numba type), and only an exact match to a built
signature runs the build. A build is used only when it was made from the package's
current source (a hash of every file compiled into it), by this numba and numpy, for
this Python and, unless built for the generic CPU, for a CPU with these features:
anything else falls back to the JIT, and :func:`aot_status` says why.

When the JIT is needed, every kernel gets its dispatcher at once, and each module's
globals that name kernels are pointed at the dispatchers: numba compiles a kernel's
calls to other kernels (and inlines those marked ``inline="always"``) only when they
are dispatchers.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import sys
import sysconfig
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

PACKAGE = Path(__file__).resolve().parent
AOT_DIR = PACKAGE / "_aot"  # the build: extension modules and manifest.json
MANIFEST = "manifest.json"
FORMAT = 1
ENV = "NETMON_KERNELS"  # "jit": never use the ahead-of-time build; "auto" (default): use it

_KERNELS: list[Kernel] = []
_LOCK = threading.RLock()
_aot: dict[str, dict[tuple[Any, ...], Callable[..., Any]]] | None = None
_status = "not loaded yet"


def njit(*args: Any, **options: Any) -> Any:
    """numba's ``njit`` with the same options, returning a :class:`Kernel`."""
    if args and callable(args[0]):
        return Kernel(args[0], options)
    return lambda func: Kernel(func, options)


class Kernel:
    """A compiled function: its ahead-of-time build or numba's dispatcher (see above)."""

    def __init__(self, func: Callable[..., Any], options: dict[str, Any]) -> None:
        self.py_func = func
        self.options = options
        self.name = f"{func.__module__}.{func.__qualname__}"
        self.__doc__ = func.__doc__
        self.__name__ = func.__name__
        self.__qualname__ = func.__qualname__
        self.__module__ = func.__module__
        self.__wrapped__ = func
        self._dispatcher: Any = None
        self._built: dict[tuple[Any, ...], Callable[..., Any]] | None = None
        self.aot_calls = 0  # calls that ran the ahead-of-time build
        self.jit_calls = 0  # calls that ran the dispatcher
        with _LOCK:
            _KERNELS.append(self)

    def _table(self) -> dict[tuple[Any, ...], Callable[..., Any]]:
        """The build's functions of this kernel by argument types (looked up once)."""
        if self._built is None:
            self._built = _aot_table().get(self.name, {})
        return self._built

    def __call__(self, *args: Any) -> Any:
        built = self._table()
        if built:
            try:
                fn = built.get(tuple(map(arg_type, args)))
            except TypeError:  # an argument numba's typeof would not take either
                fn = None
            if fn is not None:
                self.aot_calls += 1
                return fn(*args)
        self.jit_calls += 1
        return self.dispatcher(*args)

    @property
    def dispatcher(self) -> Any:
        """numba's dispatcher for this function (numba imported on first use)."""
        if self._dispatcher is None:
            jit_all()
        return self._dispatcher

    @property
    def signatures(self) -> list[Any]:
        """The signatures numba's dispatcher has compiled or loaded (not the build's)."""
        return list(self.dispatcher.signatures) if self._dispatcher is not None else []

    @property
    def stats(self) -> Any:
        return self.dispatcher.stats

    @property
    def built_signatures(self) -> int:
        """How many signatures of this kernel the ahead-of-time build holds (in use)."""
        return len(self._table())

    def __repr__(self) -> str:
        return f"<Kernel {self.name}>"


def arg_type(value: Any) -> Any:
    """What numba's ``typeof`` makes of ``value``, as a key (see :func:`type_key`)."""
    if isinstance(value, np.ndarray):
        flags = value.flags
        layout = "C" if flags.c_contiguous else "F" if flags.f_contiguous else "A"
        return ("array", value.dtype.str, value.ndim, layout, not flags.writeable, flags.aligned)
    if isinstance(value, bool | np.bool_):
        return "bool"
    if isinstance(value, int):
        if -(2**63) <= value < 2**63:
            return "int64"
        return "uint64" if 0 <= value < 2**64 else None
    if isinstance(value, float):
        return "float64"
    if isinstance(value, np.number):
        return value.dtype.name
    raise TypeError(type(value).__name__)


def type_key(numba_type: Any) -> Any:
    """The key :func:`arg_type` gives a value of this numba type, or None when the build
    does not take such arguments (records, tuples, anything but plain arrays and
    numbers)."""
    from numba.core import types
    from numba.np import numpy_support

    if isinstance(numba_type, types.Array):
        if not isinstance(numba_type.dtype, types.Boolean | types.Integer | types.Float):
            return None
        dtype = numpy_support.as_dtype(numba_type.dtype).str
        return (
            "array",
            dtype,
            numba_type.ndim,
            numba_type.layout,
            not numba_type.mutable,
            numba_type.aligned,
        )
    if isinstance(numba_type, types.Boolean | types.Integer | types.Float):
        return str(numba_type)
    return None


# -- the JIT -------------------------------------------------------------------------


def jit_all() -> None:
    """Give every kernel numba's dispatcher, and point module globals at them."""
    with _LOCK:
        lean = sys.modules.get(f"{__package__}.lean_start")
        if lean is not None:
            lean.before_numba()  # (does each thing once)
        import numba

        for kernel in _KERNELS:
            if kernel._dispatcher is None:
                kernel._dispatcher = numba.njit(**kernel.options)(kernel.py_func)
        modules = {kernel.py_func.__module__ for kernel in _KERNELS}
        for name in modules:
            space = vars(sys.modules[name])
            for key, value in list(space.items()):
                if isinstance(value, Kernel):
                    space[key] = value._dispatcher


def kernels() -> list[Kernel]:
    """Every kernel declared so far (modules imported)."""
    with _LOCK:
        return list(_KERNELS)


# -- the ahead-of-time build -----------------------------------------------------------


def source_digest(files: Iterable[str]) -> str:
    """A hash of these package files (paths relative to the package's parent)."""
    h = hashlib.sha256()
    for rel in sorted(files):
        h.update(rel.encode())
        h.update(b"\0")
        h.update((PACKAGE.parent / rel).read_bytes())
        h.update(b"\0")
    return h.hexdigest()


def platform_tag() -> dict[str, str]:
    """What a build must have been made for: Python's extension suffix, numpy."""
    return {
        "ext_suffix": str(sysconfig.get_config_var("EXT_SUFFIX")),
        "numpy": np.__version__,
    }


def cpu_flags() -> str:
    """A hash of this machine's CPU features (Linux's ``/proc/cpuinfo`` flags; "" where
    there is none): code built for this CPU runs only where it is the same."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    words = sorted(set(line.split(":", 1)[1].split()))
                    return hashlib.sha256(" ".join(words).encode()).hexdigest()[:16]
    except OSError:
        pass
    return ""


def aot_status() -> str:
    """Whether the ahead-of-time build is in use, and if not why (loads it if not yet)."""
    _aot_table()
    return _status


def _aot_table() -> dict[str, dict[tuple[Any, ...], Callable[..., Any]]]:
    global _aot, _status
    if _aot is not None:
        return _aot
    with _LOCK:
        if _aot is None:
            table: dict[str, dict[tuple[Any, ...], Callable[..., Any]]] = {}
            try:
                _status = _load(table)
            except Exception as exc:  # a damaged build: the JIT does the work
                table.clear()
                _status = f"not used: the build in {AOT_DIR} cannot be loaded ({exc!r})"
            _aot = table
    return _aot


def read_build() -> tuple[dict[str, Any] | None, str]:
    """The build's manifest if the build is current (see above), and why not if not."""
    path = AOT_DIR / MANIFEST
    if not path.is_file():
        return None, (
            f"not built ({path} missing): run `python -m netmon_exporter.ingest.warm_pipeline`"
        )
    manifest = json.loads(path.read_text())
    if manifest.get("format") != FORMAT:
        return None, "not used: a build of another format"
    if manifest.get("platform") != platform_tag():
        return None, f"not used: built for {manifest.get('platform')}, this is {platform_tag()}"
    cpu = manifest.get("cpu", {})
    if cpu.get("target") != "generic" and cpu.get("flags") != cpu_flags():
        return None, "not used: built for another CPU (run the install step on this machine)"
    if manifest.get("numba") != _numba_version():
        return None, (
            f"not used: built with numba {manifest.get('numba')}, installed {_numba_version()}"
        )
    if manifest.get("digest") != source_digest(manifest.get("sources", [])):
        return None, (
            "not used: the package's source changed since it was built; "
            "run `python -m netmon_exporter.ingest.warm_pipeline`"
        )
    return manifest, "current"


def _load(table: dict[str, dict[tuple[Any, ...], Callable[..., Any]]]) -> str:
    mode = os.environ.get(ENV, "").strip().lower()
    if mode == "jit":
        return f"not used: {ENV}=jit"
    if mode not in ("", "auto"):  # a typo: numba's JIT, which works everywhere, and say so
        return f"not used: {ENV}={mode!r} is neither jit nor auto"
    manifest, why = read_build()
    if manifest is None:
        return why
    loaded = {}
    for kernel_name, exports in manifest["kernels"].items():
        for export in exports:
            module = export["module"]
            if module not in loaded:
                loaded[module] = importlib.import_module(f"{__package__}._aot.{module}")
            fn = getattr(loaded[module], export["symbol"])
            key = tuple(_tuple(k) for k in export["args"])
            table.setdefault(kernel_name, {})[key] = fn
    return f"in use: {sum(map(len, table.values()))} signatures of {len(table)} kernels"


def _tuple(key: Any) -> Any:
    return tuple(key) if isinstance(key, list) else key


def _numba_version() -> str:
    """numba's installed version, read without importing numba."""
    from importlib.metadata import version

    return version("numba")
