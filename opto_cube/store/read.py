"""The one checked reader: chosen arrays of a store read eagerly and together, every chunk checked.

:func:`read_checked` reads the consolidated metadata once, then checks each array's own
``zarr.json`` against it and every chunk of the store (present, in place, and with ``deep`` whole:
the CRC32C recorded by :func:`opto_cube.store.chunks.seal`), and decodes the arrays asked for; a
damaged store gives one :class:`~opto_cube.errors.StoreError` worded by
:mod:`opto_cube.store.chunks`. A local store of the codecs opto_cube writes is read with plain file
reads and its chunks decoded here (zstd, then bytes or vlen-utf8); any other store through zarr's
public async API. :class:`CheckedRead` holds what was read.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from opto_cube import schema
from opto_cube.errors import StoreError, one_line
from opto_cube.store.access import StorePath, format_version, is_url, zarr_store
from opto_cube.store.chunks import chunk_problem, damaged, metadata_problem

if TYPE_CHECKING:  # imported on first use: a conversion imports no xarray (opto_cube.lazy)
    import xarray as xr
else:
    from opto_cube.lazy import LazyModule

    xr = LazyModule("xarray")

_IN_FLIGHT = 64  # chunk reads at once (memory: at most this many stored chunks held)


class CheckedRead:
    """What :func:`read_checked` read: the store's attributes, its arrays' metadata, the arrays asked for.

    Attributes
    ----------
    path
        The store.
    attrs
        The group's attributes (the manifest of chunk checksums among them).
    arrays
        ``{name: numpy array}`` of every array read (every chunk checked).
    dims, array_attrs
        ``{name: dimension names}`` and ``{name: attributes}`` of every array of the store.
    shapes
        ``{name: shape}`` of every array of the store.
    """

    def __init__(
        self,
        path: StorePath,
        attrs: dict[str, Any],
        arrays: dict[str, np.ndarray],
        dims: dict[str, tuple[str, ...]],
        array_attrs: dict[str, dict[str, Any]],
        shapes: dict[str, tuple[int, ...]],
    ) -> None:
        self.path, self.attrs, self.arrays = path, attrs, arrays
        self.dims, self.array_attrs, self.shapes = dims, array_attrs, shapes

    def dataset(self) -> xr.Dataset:
        """The arrays read as an :class:`xarray.Dataset`: arrays of 2 or more dimensions as data
        variables, the others as coordinates (as :func:`xarray.open_zarr` reads an opto_cube store)."""
        variables = {
            name: xr.Variable(
                self.dims[name], value, {k: v for k, v in self.array_attrs[name].items() if not k.startswith("_")}
            )
            for name, value in self.arrays.items()
        }
        data = {name: v for name, v in variables.items() if v.ndim >= 2}
        coords = {name: v for name, v in variables.items() if v.ndim < 2}
        return xr.Dataset(data, coords=coords, attrs=dict(self.attrs))


def read_checked(
    path: StorePath,
    storage_options: dict[str, Any] | None = None,
    names: Iterable[str] | None = None,
    *,
    small: bool = True,
    deep: bool = True,
    shallow: Iterable[str] = (),
) -> CheckedRead:
    """Read chosen arrays of a store eagerly and together, every chunk checked; else one :class:`StoreError`.

    One read of the consolidated metadata, then, concurrently: each array's own
    ``zarr.json`` (it must agree with the consolidated copy: shape, chunks, data
    type, codecs), every chunk of the store (present, ending with the CRC32C
    recorded when it was written at that place, and, with ``deep``, its bytes
    matching that CRC32C: a flipped byte in an array not read is found too),
    and the arrays asked for, decoded through zarr's public async API (which
    checks each chunk's CRC32C again). Nothing is returned from a store with
    any damage; the error names the store and the first damaged chunk and
    says what to do.

    Parameters
    ----------
    path
        A store (local path or URL).
    storage_options
        For a URL on object storage.
    names
        The arrays to read (those the store lacks are left out); default none beyond ``small``.
    small
        Also read every array of fewer than 2 dimensions (the coordinates).
    deep
        Check every chunk's bytes against its CRC32C (reading them all); else only the chunks read,
        and the others' presence and place from their last 4 bytes.
    shallow
        Arrays whose chunks' bytes are not read unless asked for (with ``deep``): only their presence
        and place are checked (:func:`opto_cube.store.open.open_cube`: the cube, checked chunk by chunk as read).

    Returns
    -------
    CheckedRead

    Raises
    ------
    StoreError
        Not a store, not finished, or damaged.

    Examples
    --------
    >>> from opto_cube import schema
    >>> from opto_cube.jobs.demo import example_stores
    >>> (store,) = (example_stores() / "stores").iterdir()
    >>> read = read_checked(store, names=[schema.WINDOW_COUNTS])
    >>> read.arrays[schema.WINDOW_COUNTS].shape == read.shapes[schema.WINDOW_COUNTS]
    True
    """
    from zarr.core.sync import sync

    light = set(shallow)
    if not is_url(path):
        fast = _read_local(Path(path), None if names is None else list(names), small, deep, light)
        if fast is not None:
            return fast
    try:
        return sync(_read_checked(path, storage_options, None if names is None else list(names), small, deep, light))
    except StoreError:
        raise
    except Exception as e:  # the store's root metadata: not a store
        raise StoreError(f"{path}: not an opto_cube store (no readable Zarr group: {one_line(e)})") from e


async def _read_checked(
    path: StorePath,
    storage_options: dict[str, Any] | None,
    names: list[str] | None,
    small: bool,
    deep: bool,
    shallow: set[str],
) -> CheckedRead:
    import asyncio

    from zarr import AsyncArray
    from zarr.abc.store import SuffixByteRequest
    from zarr.api.asynchronous import open_group as open_async_group
    from zarr.core.buffer import default_buffer_prototype

    zstore = zarr_store(path, storage_options, read_only=True)
    prototype = default_buffer_prototype()
    root = await zstore.get("zarr.json", prototype)
    if root is None:
        raise StoreError(f"{path}: not an opto_cube store (no zarr.json: no Zarr group there)")
    meta = json.loads(root.to_bytes())
    consolidated = ((meta.get("consolidated_metadata") or {}).get("metadata")) or {}
    group = await open_async_group(store=zstore, mode="r", use_consolidated=bool(consolidated))
    attrs = dict(group.attrs)
    members = {name: m async for name, m in group.members()}
    arrays: dict[str, Any] = {name: m for name, m in members.items() if isinstance(m, AsyncArray)}
    manifest = attrs.get(schema.ATTR_CHUNK_CRC32C)
    checked_store = format_version(attrs) >= 2 and (schema.ATTR_FORMAT_VERSION in attrs)
    if checked_store and (not isinstance(manifest, dict) or attrs.get(schema.ATTR_COMPLETE) is not True):
        raise damaged(path, f"no chunk checksums ({schema.ATTR_CHUNK_CRC32C!r} missing): unfinished or damaged")
    wanted = [n for n in (names or []) if n in arrays]
    if small:
        wanted += [n for n, a in arrays.items() if a.ndim < 2 and n not in wanted]
    limit = asyncio.Semaphore(_IN_FLIGHT)

    async def own_metadata(name: str) -> str | None:
        buf = await zstore.get(f"{name}/zarr.json", prototype)
        return metadata_problem(name, None if buf is None else buf.to_bytes(), consolidated.get(name, {}))

    async def chunk(key: str, name: str) -> str | None:
        full = (deep and name not in shallow) or name in wanted
        async with limit:
            buf = await zstore.get(key, prototype, byte_range=None if full else SuffixByteRequest(4))
        return chunk_problem(key, None if buf is None else buf.to_bytes(), manifest, full)

    checks: list[Any] = []
    if consolidated and checked_store:
        checks += [own_metadata(name) for name in arrays]
    if checked_store:
        for name, array in arrays.items():
            encoding = array.metadata.chunk_key_encoding
            checks += [chunk(f"{name}/{encoding.encode_chunk_key(c)}", name) for c in np.ndindex(*array.cdata_shape)]
    results = await asyncio.gather(*checks)
    problem = next((r for r in results if r is not None), None)
    if problem is not None:
        raise damaged(path, problem)

    async def read(name: str) -> np.ndarray:
        try:
            return np.asarray(await arrays[name].getitem(...))
        except Exception as e:
            raise damaged(path, f"array {name} does not decode ({one_line(e)})") from e

    values = await asyncio.gather(*(read(n) for n in wanted))
    return CheckedRead(
        path,
        attrs,
        dict(zip(wanted, values, strict=True)),
        {n: tuple(str(d) for d in (a.metadata.dimension_names or ())) for n, a in arrays.items()},
        {n: dict(a.attrs) for n, a in arrays.items()},
        {n: tuple(a.shape) for n, a in arrays.items()},
    )


_KNOWN_CODECS = {("bytes", "zstd", "crc32c"), ("vlen-utf8", "zstd", "crc32c")}


def _read_local(path: Path, names: list[str] | None, small: bool, deep: bool, shallow: set[str]) -> CheckedRead | None:
    """:func:`read_checked` of a local store with plain file reads (no event loop, no thread hops); None when
    the store is not one this reader decodes itself (other codecs, no consolidated metadata: the general path)."""
    try:
        meta = json.loads((path / "zarr.json").read_bytes())
    except FileNotFoundError as e:
        raise StoreError(f"{path}: not an opto_cube store (no zarr.json: no Zarr group there)") from e
    except (OSError, ValueError) as e:
        raise StoreError(f"{path}: not an opto_cube store (unreadable zarr.json: {one_line(e)})") from e
    if not isinstance(meta, dict):
        return None
    consolidated = ((meta.get("consolidated_metadata") or {}).get("metadata")) or {}
    attrs = meta.get("attributes") or {}
    if not consolidated or schema.ATTR_FORMAT_VERSION not in attrs or format_version(attrs) < 2:
        return None
    arrays = {n: m for n, m in consolidated.items() if isinstance(m, dict) and m.get("node_type") == "array"}
    if not all(_decodable(m) for m in arrays.values()):
        return None
    manifest = attrs.get(schema.ATTR_CHUNK_CRC32C)
    if not isinstance(manifest, dict) or attrs.get(schema.ATTR_COMPLETE) is not True:
        raise damaged(path, f"no chunk checksums ({schema.ATTR_CHUNK_CRC32C!r} missing): unfinished or damaged")
    wanted = [n for n in (names or []) if n in arrays]
    if small:
        wanted += [n for n, m in arrays.items() if len(m["shape"]) < 2 and n not in wanted]
    values: dict[str, np.ndarray] = {}
    for name in sorted(arrays):
        m = arrays[name]
        problem = metadata_problem(name, _local_bytes(path / name / "zarr.json"), m)
        if problem:
            raise damaged(path, problem)
        value = _read_local_array(path, name, m, manifest, name in wanted, deep and name not in shallow)
        if value is not None:
            values[name] = value
    return CheckedRead(
        path,
        dict(attrs),
        {n: values[n] for n in wanted},
        {n: tuple(str(d) for d in (m.get("dimension_names") or ())) for n, m in arrays.items()},
        {n: dict(m.get("attributes") or {}) for n, m in arrays.items()},
        {n: tuple(m["shape"]) for n, m in arrays.items()},
    )


def _decodable(meta: dict[str, Any]) -> bool:
    """Whether :func:`_decode` reads this array's chunks (the codecs and chunk layout opto_cube writes)."""
    codecs = tuple(c.get("name") for c in meta.get("codecs", []))
    return (
        codecs in _KNOWN_CODECS
        and meta.get("chunk_key_encoding", {}).get("name") == "default"
        and meta.get("chunk_grid", {}).get("name") == "regular"
        and "/" not in str(meta.get("data_type"))
    )


def _local_bytes(file: Path) -> bytes | None:
    try:
        return file.read_bytes()
    except FileNotFoundError:
        return None


def _read_local_array(
    path: Path, name: str, meta: dict[str, Any], manifest: dict[str, str], read: bool, full: bool
) -> np.ndarray | None:
    """Every chunk of one array of a local store checked (its bytes too, with ``full`` or ``read``); the
    array decoded when ``read``."""
    shape = tuple(meta["shape"])
    chunk_shape = tuple(meta["chunk_grid"]["configuration"]["chunk_shape"])
    separator = meta["chunk_key_encoding"].get("configuration", {}).get("separator", "/")
    out = _empty(meta["data_type"], shape) if read else None
    grid = tuple(-(-s // c) for s, c in zip(shape, chunk_shape, strict=True))
    for coords in np.ndindex(*grid):
        key = f"{name}/" + separator.join(("c", *(str(c) for c in coords)))
        try:
            data = _local_bytes(path / key)
        except OSError as e:
            raise damaged(path, f"chunk {key} cannot be read ({one_line(e)})") from e
        problem = chunk_problem(key, data, manifest, full or read)
        if problem:
            raise damaged(path, problem)
        if out is None or data is None:
            continue
        try:
            block = _decode(meta, data[:-4], chunk_shape)
        except Exception as e:
            raise damaged(path, f"chunk {key} does not decode ({one_line(e)})") from e
        where = tuple(slice(c * n, min((c + 1) * n, s)) for c, n, s in zip(coords, chunk_shape, shape, strict=True))
        out[where] = block[tuple(slice(0, w.stop - w.start) for w in where)]
    return out


def _empty(data_type: str, shape: tuple[int, ...]) -> np.ndarray:
    if data_type == "string":
        return np.empty(shape, dtype=np.dtypes.StringDType())
    return np.empty(shape, dtype=np.dtype(data_type))


class _Zstd:
    """One zstd decoder, made when first used."""

    def __init__(self) -> None:
        self._codec: Any = None

    def decode(self, raw: bytes) -> Any:
        if self._codec is None:
            import numcodecs

            self._codec = numcodecs.Zstd()
        return self._codec.decode(raw)


_ZSTD = _Zstd()


def _decode(meta: dict[str, Any], raw: bytes, chunk_shape: tuple[int, ...]) -> np.ndarray:
    """One chunk's bytes (its CRC32C taken off) decoded: zstd, then the array's bytes or vlen-utf8 codec."""
    import numcodecs

    decompressed = _ZSTD.decode(raw)
    first = meta["codecs"][0]
    if first["name"] == "vlen-utf8":
        strings = numcodecs.VLenUTF8().decode(decompressed)
        return np.asarray(strings, dtype=np.dtypes.StringDType()).reshape(chunk_shape)
    dtype = np.dtype(meta["data_type"])
    if dtype.itemsize > 1:
        endian = (first.get("configuration") or {}).get("endian", "little")
        dtype = dtype.newbyteorder("<" if endian == "little" else ">")
    size = int(np.prod(chunk_shape))
    return (
        np.frombuffer(decompressed, dtype=dtype, count=size)
        .reshape(chunk_shape)
        .astype(dtype.newbyteorder("="), copy=False)
    )
