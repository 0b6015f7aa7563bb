"""Opening a store: :func:`open_cube`, the one checked reader of a cube, and zarr set to refuse missing chunks.

:func:`open_cube` refuses a store with a missing chunk or one not in its
place and reads the cube through the chunk checks of
:mod:`opto_cube.store.chunks`; a store of an older format opens with a
warning. On import, zarr is set to raise on a missing chunk, never to read it
as zeros, where the installed zarr can (:func:`refuse_missing_chunks`).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import zarr

from opto_cube import schema
from opto_cube.errors import StoreError, one_line, warn
from opto_cube.store import chunks
from opto_cube.store.access import StorePath
from opto_cube.store.read import read_checked

if TYPE_CHECKING:
    import dask
    import xarray as xr
else:  # imported on first use (opto_cube.lazy)
    from opto_cube.lazy import LazyModule

    dask, xr = LazyModule("dask"), LazyModule("xarray")


# zarr-python's option to raise on a missing chunk instead of reading it as the fill value (PR #3748), under the
# names its releases gave it; absent from zarr 3.1 (then open_cube's own checks are what refuses a missing chunk)
_MISSING_CHUNK_OPTIONS = ("array.fill_missing_chunks", "codec_pipeline.fill_missing_chunks")
_UNSET = object()


def missing_chunk_option() -> str | None:
    """The installed zarr's configuration key that makes a missing chunk an error, or None when it has none."""
    for key in _MISSING_CHUNK_OPTIONS:
        if zarr.config.get(key, _UNSET) is not _UNSET:
            return key
    return None


def refuse_missing_chunks() -> str | None:
    """Make zarr raise on a missing chunk (never read it as zeros) when the installed zarr can; the key set, or None.

    Feature-detected (:func:`missing_chunk_option`): a no-op with zarr 3.1.
    Every chunk of an opto_cube store is written (no fill-value elision), so
    a missing one is always damage. Writes inside
    :func:`opto_cube.store.write.atomic_store` keep
    zarr's default, as a new array has no chunks yet.
    """
    key = missing_chunk_option()
    if key is not None:
        zarr.config.set({key: False})
    return key


refuse_missing_chunks()


def open_cube(path: StorePath, **kwargs: Any) -> xr.Dataset:
    """Open a cube lazily: ``spike_counts`` dask-backed in the store's chunks, coordinates in memory.

    Parameters
    ----------
    path
        A store written by ``opto-cube convert`` (local path or URL).
    **kwargs
        Passed to :func:`xarray.open_zarr` (``storage_options`` for object storage).

    Examples
    --------
    >>> from opto_cube.jobs.demo import example_stores
    >>> (store,) = (example_stores() / "stores").iterdir()
    >>> cube = open_cube(store)
    >>> dict(cube.spike_counts.sizes), cube.spike_counts.chunks is not None  # lazy: nothing read yet
    ({'cluster': 8, 'trial': 40, 'time': 150}, True)
    >>> int(cube.spike_counts.sum())  # read now, each chunk checked against its CRC32C
    1687
    """
    storage_options = kwargs.get("storage_options")
    if not isinstance(path, (str, os.PathLike)):  # a zarr Store object (a wrapper counting reads): as xarray reads it
        return _open_plain(path, **kwargs)
    try:
        group = chunks.open_group(path, storage_options)  # the metadata, read once (consolidated)
    except Exception as e:
        raise StoreError(f"{path}: not an opto_cube store (no readable Zarr group: {one_line(e)})") from e
    attrs = dict(group.attrs)
    version = chunks.format_version(attrs)
    ours = schema.ATTR_FORMAT_VERSION in attrs or schema.ATTR_VERSION in attrs
    if not ours:  # a Zarr store opto_cube did not write: read as it is (and refused below if it holds no cube)
        version = 0
    elif version < schema.FORMAT_VERSION:
        warn(
            path, f"store format {version} (no window_counts, no chunk checksums): reconvert it with opto-cube convert"
        )
    else:  # the one checked reader: every chunk present and in place, every byte whole but the cube's
        read_checked(path, storage_options, (), small=False, shallow=(schema.SPIKE_COUNTS,))
    try:
        ds = xr.open_zarr(path, chunks={}, consolidated=True, **kwargs)
    except (FileNotFoundError, KeyError) as e:
        raise StoreError(f"{path}: not an opto_cube store ({one_line(e)})") from e
    except Exception as e:  # a coordinate that does not decode
        raise chunks.damaged(path, chunks.corrupt_chunk(path, storage_options, e).removeprefix(f"{path}: ")) from e
    if schema.SPIKE_COUNTS not in ds:
        raise StoreError(f"{path}: not an opto_cube store (no {schema.SPIKE_COUNTS!r} variable)")
    small = [name for name, c in ds.coords.items() if name not in ds.indexes and c.ndim == 1]
    # the small per-cluster and per-trial coordinates, read here in one go: never a round trip to a cluster
    try:
        values = dask.compute(*(ds[name].variable for name in small), scheduler="synchronous")
    except Exception as e:
        raise chunks.damaged(path, chunks.corrupt_chunk(path, storage_options, e).removeprefix(f"{path}: ")) from e
    ds = ds.assign_coords(dict(zip(small, values, strict=True)))
    return chunks.checked(ds, path, storage_options, attrs, group) if version >= schema.FORMAT_VERSION else ds


def _open_plain(zstore: Any, **kwargs: Any) -> xr.Dataset:
    """open_cube of a zarr Store object: no chunk checks (they need the store's path or URL)."""
    try:
        ds = xr.open_zarr(zstore, chunks={}, consolidated=True, **kwargs)
    except (FileNotFoundError, KeyError, ValueError) as e:
        raise StoreError(f"{zstore}: not an opto_cube store ({one_line(e)})") from e
    if schema.SPIKE_COUNTS not in ds:
        raise StoreError(f"{zstore}: not an opto_cube store (no {schema.SPIKE_COUNTS!r} variable)")
    small = [name for name, c in ds.coords.items() if name not in ds.indexes and c.ndim == 1]
    values = dask.compute(*(ds[name].variable for name in small), scheduler="synchronous")
    return ds.assign_coords(dict(zip(small, values, strict=True)))
