"""Importing this module makes numba, when a process needs it, start lean.

Most processes never import numba: the kernels they run are built ahead of time
(``compiled.py``). This module is about the others, which need numba's JIT (a kernel
met with argument types the build lacks, a build missing or stale, or
``NETMON_KERNELS=jit``): :func:`before_numba` runs right before ``compiled.py``
imports numba.

numba probes for BLAS when it is imported: ``numba.np.arraymath`` imports
``scipy.linalg`` (about 90 ms here, and more while cached kernels load: ~0.15 s in all;
in a process without scikit-learn it also pulls in ``numpy.f2py`` and ~12 MB), although
our compiled code uses no linear algebra (``tests/test_start_up.py`` checks that no
kernel calls ``np.dot``, ``np.linalg`` or the like). Processes that only parse, the
one-shot ``flows`` command and the worker fork server, import this module first:
SciPy's BLAS wrappers then count as missing and the probe returns at once.

The daemon's main process needs ``scipy.linalg`` for scikit-learn (its models, loaded at
start or on a reload), so it cannot keep SciPy's wrappers missing; it calls
:func:`skip_blas_probe` before it builds its components instead: should numba be
imported, the probe runs with the wrappers missing, and they are found again at once,
so numba never loads SciPy's linear algebra for its own sake and scikit-learn finds it
whole. Nothing here does anything when numba's probe has run or SciPy's linear algebra
is loaded already.

numba is also made to load compiled code from its cache without first *refreshing* its
compiler (:func:`lean_cache_loads`): numba imports and registers every typing and
lowering implementation it has (~250 registries: its random generators, typed
containers, unicode, polynomial, linear algebra...) before it even looks in its cache,
~55 ms of every start of a process that only runs cached kernels, and ~0.1 s of imports
under the GIL when the daemon's main process loads its first kernel under load. A cached
kernel needs none of that to run, only numba's runtime (NRT) and the symbols that
modules install when imported (``numba.cpython.hashing``'s, imported here). A kernel
that is not in the cache is compiled as before, and compiling refreshes the compiler
itself.
"""

from __future__ import annotations

import sys

_BLAS = "scipy.linalg.cython_blas"


def install() -> bool:
    """Make SciPy's BLAS wrappers count as missing for numba's probe, unless numba or
    SciPy's linear algebra is loaded already; return whether they now do."""
    if "numba" not in sys.modules and "scipy.linalg" not in sys.modules:
        sys.modules.setdefault(_BLAS, None)  # type: ignore[arg-type]  # "import" raises ImportError
    return _BLAS in sys.modules and sys.modules[_BLAS] is None


def release() -> None:
    """Let SciPy's linear algebra be imported again (scikit-learn needs it)."""
    if _BLAS in sys.modules and sys.modules[_BLAS] is None:
        del sys.modules[_BLAS]


_main_process = False  # skip_blas_probe() called: SciPy is only hidden from numba's probe


def skip_blas_probe() -> None:
    """For a process that may import scikit-learn later: SciPy's wrappers are found again
    now, and hidden from numba's BLAS probe only, if and when numba is imported (see
    :func:`before_numba`; SciPy's linear algebra costs ~0.1 s and ~12 MB)."""
    global _main_process
    _main_process = True
    release()


def before_numba() -> None:
    """Import numba lean (``compiled.py`` calls this right before it imports numba)."""
    if _main_process:
        if install():
            try:
                import numba.np.arraymath  # noqa: F401  # the probe runs when it is imported
            finally:
                release()
    else:
        install()
    lean_cache_loads()


def lean_cache_loads() -> bool:
    """Let numba load cached compiled code without refreshing its compiler first (see
    above); return whether it does. Imports numba. Leaves numba as it is when its cache
    does not look as this was written for (numba >= 0.60)."""
    from numba.core import caching
    from numba.core.runtime import nrt

    cache = caching.Cache
    if getattr(cache.load_overload, "lean", False):
        return True
    if not (
        hasattr(cache, "_load_overload")
        and hasattr(cache, "_guard_against_spurious_io_errors")
        and hasattr(nrt, "rtsys")
    ):
        return False
    full = cache.load_overload

    def load_overload(self, sig, target_context):
        # numba's own: target_context.refresh(), then the same
        import numba.cpython.hashing  # noqa: F401, PLC0415  # symbols it installs

        nrt.rtsys.initialize(target_context)
        try:
            with self._guard_against_spurious_io_errors():
                return self._load_overload(sig, target_context)
        except Exception:  # a numba whose cached code needs more: load it numba's way
            return full(self, sig, target_context)

    load_overload.lean = True  # type: ignore[attr-defined]
    cache.load_overload = load_overload  # type: ignore[method-assign]
    return True


install()  # first: numba must not be loaded yet
