"""opto_cube: Neuropixels Opto recordings as labeled, chunked Zarr spike-count cubes.

Convert ALF session folders once (:func:`convert`), open the cubes lazily
(:func:`open_cube`, :func:`open_catalog`), and ask the science questions of
them (:func:`responses`, :func:`maps`).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("opto_cube")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0+unknown"

from .errors import BinningError, OptoCubeError, OptoCubeWarning, SessionFormatError, StoreError

__all__ = [
    "BinningError",
    "OptoCubeError",
    "OptoCubeWarning",
    "SessionFormatError",
    "StoreError",
    "__version__",
]
