"""Importing this module starts numba without SciPy's linear algebra (a faster start).

numba probes for BLAS when it is imported: ``numba.np.arraymath`` imports
``scipy.linalg`` (about 90 ms here, and more while cached kernels load: ~0.15 s in all),
although our compiled code uses no linear algebra (``tests/test_start_up.py`` checks
that no kernel calls ``np.dot``, ``np.linalg`` or the like). Processes that only parse,
the one-shot ``flows`` command and the worker fork server, import this module before
numba: SciPy's BLAS wrappers then count as missing and the probe returns at once.

Never import it in the daemon's main process or anywhere models are loaded:
scikit-learn needs ``scipy.linalg``. It does nothing when numba or SciPy's linear
algebra is already loaded.
"""

from __future__ import annotations

import sys

_BLAS = "scipy.linalg.cython_blas"

if "numba" not in sys.modules and "scipy.linalg" not in sys.modules:
    sys.modules.setdefault(_BLAS, None)  # type: ignore[arg-type]  # "import" raises ImportError
