"""opto_cube: Neuropixels Opto recordings as labeled, chunked Zarr spike-count cubes.

Convert session folders once (:func:`convert_session`, or the ``opto-cube
convert`` command), open the cubes lazily (:func:`open_cube`,
:func:`open_catalog`), and ask the science questions of them: of one cube
(:func:`responses`, the ``cube.opto`` accessor), of many sessions
(:func:`responses_table`, :func:`effect_map`, :func:`spatial_extent`, ...).
``docs/api.md`` tables every public name; ``docs/architecture.md`` gives a
line per module.

``import opto_cube`` is light: each public name imports its module on first
use, and the ``cube.opto`` accessor (:class:`OptoAccessor`) is registered
with xarray when xarray is imported (at once, if it already is).

Examples
--------
>>> import opto_cube
>>> sorted(opto_cube.__all__)[:4]
['BinningError', 'Catalog', 'OptoAccessor', 'OptoCubeError']
"""

import importlib.util
import sys
from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("opto_cube")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0+unknown"

from opto_cube.errors import (
    BinningError,
    OptoCubeError,
    OptoCubeWarning,
    ParameterError,
    SessionFormatError,
    StoreError,
    TimingWarning,
)

# public name -> module; imported on first use so that `import opto_cube` stays light (docs/api.md groups them)
_LAZY = {
    # one cube: open it, ask it (lazy, nothing written)
    "open_cube": "store.write",
    "OptoAccessor": "accessor",  # cube.opto
    "responses": "analysis.response",  # the function, from opto_cube.analysis.response
    "condition_time_course": "analysis.psth",
    # many sessions: a catalog of stores, the long table and what is computed from it
    "open_catalog": "store.catalog",
    "Catalog": "store.catalog",
    "responses_table": "jobs.pipeline",
    "select_conditions": "analysis.conditions",
    "effect_map": "analysis.maps",
    "depth_vs_emitter": "analysis.maps",
    "modulation_index": "analysis.maps",
    "spatial_extent": "analysis.spatial",
    "power_response": "analysis.power_response",
    "population_psth": "analysis.psth",
    # jobs that write files
    "convert": "jobs.convert",
    "verify": "jobs.verify",
    "convert_session": "jobs.convert",
    "to_nwb": "jobs.to_nwb",
    "run_maps": "jobs.maps_job",
    "run_report": "jobs.report_job",
    # reading input sessions
    "read_session": "io.discover",
    "find_sessions": "io.discover",
}

__all__ = [
    "BinningError",
    "OptoCubeError",
    "OptoCubeWarning",
    "ParameterError",
    "SessionFormatError",
    "StoreError",
    "TimingWarning",
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


# --------------------------------------------------------------------------
# cube.opto: registered with xarray without importing it here (~0.7 s)
# --------------------------------------------------------------------------
class _RegisterAccessorWithXarray:
    """A ``sys.meta_path`` finder that finds nothing itself: registers ``cube.opto`` right after xarray loads."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname != "xarray":
            return None
        sys.meta_path.remove(self)  # once; and the finders below find xarray
        spec = importlib.util.find_spec(fullname)
        loader = getattr(spec, "loader", None)
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        exec_module = loader.exec_module

        def exec_then_register(module: Any) -> None:
            exec_module(module)
            import_module(".accessor", __name__)  # imports xarray (now loaded), numpy and opto_cube.schema

        loader.exec_module = exec_then_register  # this spec's own loader instance
        return spec


if "xarray" in sys.modules:
    import_module(".accessor", __name__)
elif not any(isinstance(f, _RegisterAccessorWithXarray) for f in sys.meta_path):
    sys.meta_path.insert(0, _RegisterAccessorWithXarray())
