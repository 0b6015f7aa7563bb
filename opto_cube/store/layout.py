"""A cube's variables and attributes as plain numpy arrays: what a conversion writes, without xarray.

:class:`CubeLayout` holds what an ``xarray.Dataset`` template held for the
writer (coordinates, data-variable placeholders, attributes, the chunks of
``spike_counts``), and :func:`zarr_encoding` gives each variable the Zarr
metadata that ``xarray.Dataset.to_zarr`` (format 3) would: its
``dimension_names``, its ``fill_value`` (NaN for floats, zarr's default
otherwise), the ``_FillValue`` attribute xarray adds to float variables
(base64 of the little-endian double), the ``coordinates`` attribute of each
data variable (the non-dimension coordinates whose dimensions it has, sorted),
and variable-length UTF-8 for object arrays of strings. ``tests/test_layout.py``
checks every ``zarr.json`` against the one xarray writes.

Examples
--------
>>> import numpy as np
>>> layout = CubeLayout(
...     coords={"trial": Var(("trial",), np.arange(3)), "onset_s": Var(("trial",), np.array([1.0, 2.0, 3.0]))},
...     data_vars={"n": Var(("trial",), np.zeros(3, np.uint8))},
... )
>>> layout.sizes, layout.non_dim_coords()
({'trial': 3}, ['onset_s'])
>>> enc = zarr_encoding(layout, "onset_s")
>>> enc["fill_value"], enc["attributes"]
(nan, {'_FillValue': 'AAAAAAAA+H8='})
>>> zarr_encoding(layout, "n")["attributes"]
{'coordinates': 'onset_s'}
"""

from __future__ import annotations

import base64
import math
import struct
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import xarray as xr

_NAN_FILL = base64.standard_b64encode(struct.pack("<d", math.nan)).decode()  # xarray's FillValueCoder of NaN


@dataclass
class Var:
    """One variable: dimension names, values (numpy; placeholders may be read-only broadcasts) and attributes."""

    dims: tuple[str, ...]
    data: np.ndarray
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def values(self) -> np.ndarray:
        return self.data

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype


@dataclass
class CubeLayout:
    """A cube's coordinates, data variables and attributes, and ``chunks`` of ``spike_counts``.

    Indexing by name gives the :class:`Var` (``layout["onset_s"].values``),
    as a Dataset's would, so the helpers that read a template's coordinates
    take either.
    """

    coords: dict[str, Var]
    data_vars: dict[str, Var]
    attrs: dict[str, Any] = field(default_factory=dict)
    chunks: tuple[int, ...] | None = None

    def __getitem__(self, name: str) -> Var:
        return self.coords[name] if name in self.coords else self.data_vars[name]

    def __contains__(self, name: object) -> bool:
        return name in self.data_vars

    @property
    def variables(self) -> dict[str, Var]:
        return {**self.coords, **self.data_vars}

    @property
    def sizes(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for var in self.variables.values():
            for dim, n in zip(var.dims, var.shape, strict=True):
                out.setdefault(dim, int(n))
        return out

    def non_dim_coords(self) -> list[str]:
        """Coordinates not named like a dimension, in order."""
        dims = set(self.sizes)
        return [name for name in self.coords if name not in dims]

    @classmethod
    def from_dataset(cls, ds: xr.Dataset) -> CubeLayout:
        """The layout of a Dataset template (``spike_counts``' chunks from its encoding, or its dask chunks).

        Data variables become placeholders (zeros of their dtype and shape): only coordinates are read.
        """
        from opto_cube.schema import SPIKE_COUNTS

        def var(v: Any) -> Var:
            return Var(tuple(map(str, v.dims)), v.values, dict(v.attrs))

        chunks = None
        if SPIKE_COUNTS in ds:
            counts = ds[SPIKE_COUNTS]
            stored = counts.encoding.get("chunks")
            chunks = tuple(stored) if stored is not None else tuple(c[0] for c in counts.chunks or ()) or None

        def placeholder(v: Any) -> Var:  # a data variable's values are never read (it may be lazy): zeros
            return Var(tuple(map(str, v.dims)), np.broadcast_to(np.zeros((), v.dtype), v.shape), dict(v.attrs))

        return cls(
            coords={str(k): var(v) for k, v in ds.coords.items()},
            data_vars={str(k): placeholder(v) for k, v in ds.data_vars.items()},
            attrs=dict(ds.attrs),
            chunks=chunks,
        )

    def to_dataset(self) -> xr.Dataset:
        """The layout as an xarray Dataset (``spike_counts``' chunks in its encoding)."""
        import xarray as xr

        from opto_cube.schema import SPIKE_COUNTS

        ds = xr.Dataset(
            {k: xr.Variable(v.dims, v.data, attrs=dict(v.attrs)) for k, v in self.data_vars.items()},
            coords={k: xr.Variable(v.dims, v.data, attrs=dict(v.attrs)) for k, v in self.coords.items()},
            attrs=dict(self.attrs),
        )
        if self.chunks is not None and SPIKE_COUNTS in ds:
            ds[SPIKE_COUNTS].encoding["chunks"] = tuple(self.chunks)
        return ds


def coordinates_attr(layout: CubeLayout, name: str) -> str | None:
    """The ``coordinates`` attribute xarray gives data variable ``name``: the coordinates it carries, sorted."""
    dims = set(layout.data_vars[name].dims)
    claimed = sorted(c for c in layout.non_dim_coords() if set(layout.coords[c].dims) <= dims)
    return " ".join(claimed) or None


def zarr_dtype(data: np.ndarray) -> Any:
    """The dtype xarray hands zarr: ``str`` (variable-length UTF-8) for object arrays of strings.

    Raises TypeError for other object arrays (xarray would guess; the cube has none).
    """
    if data.dtype.kind == "O":
        if not all(isinstance(v, str) for v in data.ravel().tolist()):
            raise TypeError("object arrays must hold strings only")
        return str
    if data.dtype.kind == "T":  # numpy's StringDType, as xarray reads strings back
        return str
    return data.dtype


def zarr_encoding(layout: CubeLayout, name: str) -> dict[str, Any]:
    """``dtype``, ``fill_value``, ``dimension_names`` and ``attributes`` of variable ``name`` as xarray writes them."""
    var = layout[name]
    attrs = {k: v for k, v in var.attrs.items() if k not in ("coordinates", "_FillValue")}
    if name in layout.data_vars:
        coords = var.attrs.get("coordinates") or coordinates_attr(layout, name)
        if coords:
            attrs["coordinates"] = coords
    fill_value: Any = None
    if var.dtype.kind == "f":  # xarray: NaN, unlike zarr's 0, and the _FillValue attribute
        fill_value = math.nan
        attrs["_FillValue"] = _NAN_FILL
    return {
        "dtype": zarr_dtype(var.data),
        "fill_value": fill_value,
        "dimension_names": var.dims,
        "attributes": attrs,
    }
