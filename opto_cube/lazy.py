"""A module imported on first use: keeps ``opto-cube convert`` free of xarray, pandas and dask.

A conversion needs numpy, numba and zarr only; xarray (1.4 s with the
``dask.array`` it imports whenever dask is installed) and pandas are for
reading and analysing stores. Modules that the conversion imports but that
also serve the readers (:mod:`opto_cube.store.open`, :mod:`opto_cube.store.chunks`,
:mod:`opto_cube.analysis.conditions`) bind those names to a :class:`LazyModule`:
the real import happens at the first attribute access, so code written
``xr.open_zarr(...)`` works unchanged, and ``sys.modules`` holds no xarray
until then.

Examples
--------
>>> import sys
>>> json = LazyModule("json")
>>> json.dumps([1])
'[1]'
>>> "json" in sys.modules
True
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any


class LazyModule:
    """Stands for the module ``name``, imported at the first attribute access."""

    def __init__(self, name: str) -> None:
        self.__name = name
        self.__module: ModuleType | None = None

    def __getattr__(self, attr: str) -> Any:
        if self.__module is None:
            self.__module = importlib.import_module(self.__name)
        return getattr(self.__module, attr)

    def __repr__(self) -> str:
        return f"<LazyModule {self.__name!r} ({'imported' if self.__module is not None else 'not imported yet'})>"
