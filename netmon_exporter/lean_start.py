"""Importing this module starts numba without SciPy's linear algebra (a faster start).

numba probes for BLAS when it is imported: ``numba.np.arraymath`` imports
``scipy.linalg`` (about 90 ms here, and more while cached kernels load: ~0.15 s in all;
in a process without scikit-learn it also pulls in ``numpy.f2py`` and ~12 MB), although
our compiled code uses no linear algebra (``tests/test_start_up.py`` checks that no
kernel calls ``np.dot``, ``np.linalg`` or the like). Processes that only parse, the
one-shot ``flows`` command and the worker fork server, import this module before numba:
SciPy's BLAS wrappers then count as missing and the probe returns at once.

The daemon's main process needs ``scipy.linalg`` for scikit-learn (its models, loaded at
start or on a reload), so it cannot keep SciPy's wrappers missing; it calls
:func:`skip_blas_probe` before it builds its components instead: the probe runs there and
then, with the wrappers missing, and they are found again at once, so numba never loads
SciPy's linear algebra for its own sake and scikit-learn finds it whole. Nothing here
does anything when numba's probe has run or SciPy's linear algebra is loaded already.
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


def skip_blas_probe() -> None:
    """Run numba's BLAS probe now with SciPy's wrappers missing, then find them again: for
    a process that may import scikit-learn later (~20 ms and ~6 MB, which the first
    compiled kernel would cost anyway; SciPy's linear algebra costs ~0.1 s and ~12 MB)."""
    if install():
        try:
            import numba.np.arraymath  # noqa: F401  # the probe runs when it is imported
        finally:
            release()


install()
