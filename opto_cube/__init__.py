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

from opto_cube.errors import BinningError, OptoCubeError, OptoCubeWarning, SessionFormatError, StoreError

# public name -> module; imported on first use so that `import opto_cube` stays light
_LAZY = {
    "convert_session": "jobs.convert",
    "read_session": "io.alf",
    "find_sessions": "io.alf",
    "open_cube": "store.write",
    "open_catalog": "store.catalog",
    "Catalog": "store.catalog",
    "responses": "analysis.response",  # the function, from the module opto_cube.analysis.response
    "responses_table": "jobs.pipeline",
    "select_conditions": "analysis.conditions",
    "effect_map": "analysis.maps",
    "depth_vs_emitter": "analysis.maps",
    "modulation_index": "analysis.maps",
    "spatial_extent": "analysis.spatial",
    "population_psth": "analysis.psth",
    "condition_time_course": "analysis.psth",
    "run_maps": "jobs.pipeline",
    "run_report": "jobs.pipeline",
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
