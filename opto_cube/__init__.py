"""opto_cube: Neuropixels Opto recordings as labeled, chunked Zarr spike-count cubes.

Convert ALF session folders once (:func:`convert_session`, or the
``opto-cube convert`` command), open the cubes lazily (:func:`open_cube`,
:func:`open_catalog`), and ask the science questions of them
(:func:`responses`, :func:`responses_table`, :func:`effect_map`, :func:`population_psth`, ...).
``docs/architecture.md`` gives a line per module.

Examples
--------
>>> import opto_cube
>>> sorted(opto_cube.__all__)[:4]
['BinningError', 'Catalog', 'OptoCubeError', 'OptoCubeWarning']
"""

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("opto_cube")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0+unknown"

from .errors import BinningError, OptoCubeError, OptoCubeWarning, SessionFormatError, StoreError

# public name -> module; imported on first use so that `import opto_cube` stays light
_LAZY = {
    "convert_session": "convert",
    "read_session": "io",
    "find_sessions": "io",
    "open_cube": "store",
    "open_catalog": "catalog",
    "Catalog": "catalog",
    "responses": "response",  # the function; the module is opto_cube.response (no clash on attribute access)
    "responses_table": "pipeline",
    "select_conditions": "conditions",
    "effect_map": "maps",
    "depth_vs_emitter": "maps",
    "modulation_index": "maps",
    "spatial_extent": "spatial",
    "population_psth": "psth",
    "condition_time_course": "psth",
    "run_maps": "pipeline",
    "run_report": "pipeline",
}

__all__ = [
    "BinningError",
    "OptoCubeError",
    "OptoCubeWarning",
    "SessionFormatError",
    "StoreError",
    "__version__",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'opto_cube' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
