"""numba's start-up for the binning kernels: a writable cache folder, and its CPU target loaded without scipy.

Imported (for its effects) before any ``cache=True`` kernel is defined
(:mod:`opto_cube.binning.kernels`, :mod:`opto_cube.analysis.extent_fit`):
:func:`numba_targets_without_scipy` spares every conversion the import of
``scipy.linalg``, and :func:`use_writable_numba_cache` gives numba's cache a
folder it can write when the install and ``$HOME`` are read-only.
"""

from __future__ import annotations

import numba


def numba_targets_without_scipy() -> None:
    """Load numba's array implementations without importing scipy.linalg (0.4-0.7 s of every conversion).

    numba imports ``scipy.linalg.cython_blas`` when it first sets up its CPU
    target (``numba.np.arraymath``, even to load cached kernels) only to
    decide whether ``np.correlate`` / ``np.convolve`` may call BLAS. These
    kernels use neither. So, when nothing has imported scipy.linalg yet, it is
    made unimportable for that one import, and importable again right after:
    numba's ``np.dot`` and ``np.linalg`` still import it when a kernel needs them.
    """
    import sys

    if "numba.np.arraymath" in sys.modules or "scipy.linalg" in sys.modules:
        return
    sys.modules["scipy.linalg"] = None  # type: ignore[assignment]  # an ImportError for this one import
    try:
        import numba.np.arraymath  # noqa: F401
    finally:
        if sys.modules.get("scipy.linalg", 0) is None:
            del sys.modules["scipy.linalg"]


numba_targets_without_scipy()


def use_writable_numba_cache() -> str | None:
    """Give numba's cache a writable folder when neither the package's nor the user's is writable.

    numba looks for a cache folder when a cached kernel is defined (at import);
    with none (a read-only install and an unwritable ``$HOME``), it raises
    ``cannot cache function``. Then the cache goes to a private folder of the
    temporary directory (``NUMBA_CACHE_DIR``, inherited by worker processes).
    A ``NUMBA_CACHE_DIR`` the user set is left alone. Returns the folder
    chosen, or None when numba's own choice stands.
    """
    if numba.config.CACHE_DIR:  # type: ignore[attr-defined]
        return None
    try:
        from numba.core.caching import FunctionCache

        FunctionCache(use_writable_numba_cache)  # the folders numba tries for this module's kernels
        return None
    except Exception:  # no writable folder among numba's (or numba changed its internals): the temporary one
        pass
    import os
    import tempfile

    folder = os.path.join(tempfile.gettempdir(), f"opto_cube-numba-cache-{os.getuid() if hasattr(os, 'getuid') else 0}")
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
        if not os.access(folder, os.W_OK):
            folder = tempfile.mkdtemp(prefix="opto_cube-numba-cache-")
    except OSError:
        return None
    numba.config.CACHE_DIR = folder  # type: ignore[attr-defined]
    os.environ["NUMBA_CACHE_DIR"] = folder
    return folder


use_writable_numba_cache()  # before any cached kernel is defined (this module is imported first)
