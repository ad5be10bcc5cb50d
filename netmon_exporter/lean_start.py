"""Importing this module starts numba without SciPy's linear algebra (a faster start).

numba probes for BLAS when it is imported: ``numba.np.arraymath`` imports
``scipy.linalg`` (about 90 ms here, and more while cached kernels load: ~0.15 s in all;
in a process without scikit-learn it also pulls in ``numpy.f2py`` and ~12 MB), although
our compiled code uses no linear algebra (``tests/test_start_up.py`` checks that no
kernel calls ``np.dot``, ``np.linalg`` or the like). Processes that only parse, the
one-shot ``flows`` command and the worker fork server, import this module before numba:
SciPy's BLAS wrappers then count as missing and the probe returns at once.

The daemon's main process imports it too, before it builds its components (the ingest
service imports numba). scikit-learn needs ``scipy.linalg``: :mod:`.models` calls
:func:`release` before it imports scikit-learn or skops, so models load as before (at
start or on a reload) and find SciPy whole; anything else in that process that imports
scikit-learn must do the same. It does nothing when numba or SciPy's linear algebra is
already loaded.
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
    """Let SciPy's linear algebra be imported (scikit-learn needs it)."""
    if _BLAS in sys.modules and sys.modules[_BLAS] is None:
        del sys.modules[_BLAS]


install()
