"""Every chunk present, in place and whole: the sealed CRC32C manifest and the checks.

Integrity (format 2, ``docs/contract.md``): every array's chunks end with a
CRC32C (Zarr v3's ``crc32c`` codec, after zstd), every chunk is written (no
fill-value elision, so a missing chunk is damage), and the writer records the
CRC32C of every chunk by key (attribute ``opto_cube_chunk_crc32c``) before
setting the completion mark, last (:func:`seal`). :func:`check_chunks` finds a
missing chunk or one not in its place from one listing of the store's keys and
the last 4 bytes of each chunk; :func:`opto_cube.store.write.open_cube` refuses such
a store, and reading a chunk of ``spike_counts`` / ``window_counts`` that is
missing, moved, truncated or corrupt (through :func:`checked`) raises a
:class:`~opto_cube.errors.StoreError` naming store and chunk; it never reads
as zeros.

The few ways of reaching a store that the checks need (:func:`is_url`,
:func:`zarr_store`, :func:`read_store_attrs`, :func:`format_version`) live
here too, so that this module imports none of :mod:`opto_cube.store.write`; the
store module imports them and keeps them as its own names.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import zarr

from opto_cube import schema
from opto_cube.errors import StoreError

if TYPE_CHECKING:  # imported on first use: a conversion imports no xarray (opto_cube.lazy)
    import xarray as xr
else:
    from opto_cube.lazy import LazyModule

    xr = LazyModule("xarray")

StorePath = Path | str  # a local path, or a URL such as s3://bucket/prefix/<id>.zarr


def is_url(path: str | os.PathLike) -> bool:
    """Whether ``path`` names object storage (``s3://...``) rather than a local folder."""
    return "://" in os.fspath(path) and not os.fspath(path).startswith("file://")


def zarr_store(path: StorePath, storage_options: dict[str, Any] | None = None, read_only: bool = False) -> Any:
    """The zarr Store object of a local path or an fsspec URL."""
    if is_url(path):
        return zarr.storage.FsspecStore.from_url(str(path), storage_options=storage_options or {}, read_only=read_only)
    return zarr.storage.LocalStore(Path(path), read_only=read_only)


def read_store_attrs(path: StorePath, storage_options: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The group attributes of a store, or None when there is no readable store there."""
    try:
        if is_url(path):
            import fsspec

            with fsspec.open(f"{str(path).rstrip('/')}/zarr.json", "rb", **(storage_options or {})) as f:
                meta = json.loads(f.read())
        else:
            meta = json.loads((Path(path) / "zarr.json").read_text())
    except (OSError, ValueError):
        return None
    return meta.get("attributes", {}) if isinstance(meta, dict) else None


def format_version(attrs: dict[str, Any]) -> int:
    """The store format of a store's attributes (1 for stores older than the attribute)."""
    value = attrs.get(schema.ATTR_FORMAT_VERSION, 1)
    return value if isinstance(value, int) else 1


# --------------------------------------------------------------------------
# The manifest and the checks
# --------------------------------------------------------------------------
def open_group(path: StorePath, storage_options: dict[str, Any] | None) -> Any:
    """The store's root Zarr group, read-only: from its consolidated metadata, else from the plain metadata."""
    zstore = zarr_store(path, storage_options, read_only=True)
    try:
        return zarr.open_group(zstore, mode="r", use_consolidated=True)
    except Exception:  # consolidated metadata missing or unreadable: the plain metadata
        return zarr.open_group(zstore, mode="r", use_consolidated=False)


def expected_chunks(group: Any) -> dict[str, tuple[str, tuple[int, ...]]]:
    """``{"<array>/<chunk key>": (array name, chunk coordinates)}`` of every chunk every array of ``group`` has."""
    out = {}
    for name, array in group.arrays():
        encoding = array.metadata.chunk_key_encoding
        for coords in np.ndindex(*array.cdata_shape):
            out[f"{name}/{encoding.encode_chunk_key(coords)}"] = (name, tuple(int(c) for c in coords))
    return out


def listed_keys(path: StorePath, storage_options: dict[str, Any] | None = None) -> set[str]:
    """Every key (file) of a store: one walk locally, one recursive LIST on object storage."""
    if is_url(path):
        import fsspec

        fs, root = fsspec.core.url_to_fs(str(path), **(storage_options or {}))
        fs.invalidate_cache(root)
        root = root.rstrip("/")
        return {name[len(root) + 1 :] for name in fs.find(root)}
    root = Path(path)
    keys: set[str] = set()
    for folder, _, files in os.walk(root):
        rel = Path(folder).relative_to(root).as_posix()
        keys.update(f if rel == "." else f"{rel}/{f}" for f in files)
    return keys


def _suffixes(path: StorePath, keys: list[str], storage_options: dict[str, Any] | None) -> dict[str, str | None]:
    """The last 4 bytes (a chunk's CRC32C), hex, of each key; None when the key is missing."""
    import asyncio

    from zarr.abc.store import SuffixByteRequest
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync

    zstore = zarr_store(path, storage_options, read_only=True)
    prototype = default_buffer_prototype()

    async def one(key: str) -> str | None:
        buf = await zstore.get(key, prototype, byte_range=SuffixByteRequest(4))
        return None if buf is None else buf.to_bytes().hex()

    async def every() -> list[str | None]:
        return list(await asyncio.gather(*(one(k) for k in keys)))

    return dict(zip(keys, sync(every()), strict=True)) if keys else {}


def chunk_manifest(path: StorePath, storage_options: dict[str, Any] | None = None) -> dict[str, str]:
    """``{"<array>/<chunk key>": crc32c hex}`` of every chunk of the store as it is now (see ``ATTR_CHUNK_CRC32C``)."""
    keys = sorted(expected_chunks(open_group(path, storage_options)))
    found = _suffixes(path, keys, storage_options)
    missing = [k for k, v in found.items() if v is None]
    if missing:
        raise StoreError(f"{path}: chunk {missing[0]} was not written ({len(missing)} missing)")
    return {k: v for k, v in found.items() if v is not None}


def seal(zstore: Any, path: StorePath, storage_options: dict[str, Any] | None = None) -> None:
    """Finish a store: the checksum of every chunk, then the completion mark, then consolidated metadata.

    Called last by the writer, once every chunk is written: the mark is
    opto_cube's own (never copied from an input), so a store without it is
    unfinished.
    """
    manifest = chunk_manifest(path, storage_options)
    group = zarr.open_group(zstore, mode="r+")
    group.attrs.update({schema.ATTR_CHUNK_CRC32C: manifest})
    group.attrs[schema.ATTR_COMPLETE] = True  # last: the store is whole
    zarr.consolidate_metadata(zstore)


def check_chunks(
    path: StorePath,
    storage_options: dict[str, Any] | None = None,
    *,
    arrays: Iterable[str] | None = None,
    suffixes: bool | Iterable[str] = True,
    group: Any = None,
    attrs: dict[str, Any] | None = None,
) -> list[str]:
    """Problems with the chunks of a store, one line each (empty when every chunk is present and in place).

    Cheap: one listing of the store's keys, and with ``suffixes`` the last 4
    bytes of each chunk compared with the CRC32C recorded when it was written
    (a chunk deleted, emptied, truncated, moved, swapped or re-encoded is
    found; bytes flipped inside one are found by reading it, which checks its
    CRC32C). ``arrays`` limits the check to some arrays, and ``suffixes`` the
    4-byte reads when it names arrays; ``group`` and ``attrs``, when the
    caller has them open, spare reading the metadata again.
    """
    attrs = attrs if attrs is not None else read_store_attrs(path, storage_options) or {}
    if format_version(attrs) < 2:
        return [f"{path}: store format {format_version(attrs)} has no chunk checksums; reconvert it"]
    manifest = attrs.get(schema.ATTR_CHUNK_CRC32C)
    if not isinstance(manifest, dict):
        return [f"{path}: no chunk checksums ({schema.ATTR_CHUNK_CRC32C!r} missing): unfinished or damaged"]
    expected = expected_chunks(group if group is not None else open_group(path, storage_options))
    wanted = set(arrays) if arrays is not None else None
    keys = sorted(k for k, (name, _) in expected.items() if wanted is None or name in wanted)
    problems = []
    present = listed_keys(path, storage_options)
    for key in keys:
        if key not in present:
            problems.append(f"{path}: chunk {key} is missing (deleted or never written)")
        elif key not in manifest:
            problems.append(f"{path}: chunk {key} has no recorded checksum")
    if suffixes:
        named = None if suffixes is True else set(suffixes)  # type: ignore[arg-type]
        checkable = [k for k in keys if k in present and k in manifest and (named is None or expected[k][0] in named)]
        for key, found in _suffixes(path, checkable, storage_options).items():
            if found != manifest[key]:
                problems.append(
                    f"{path}: chunk {key} is not the chunk written there (checksum {found} recorded {manifest[key]}:"
                    " truncated, moved, swapped or re-encoded)"
                )
    return problems


class _CheckedChunks:
    """An array that reads one stored chunk at a time and raises a StoreError naming store and chunk.

    Before decoding, the chunk must exist and end with the CRC32C recorded when
    it was written at that place; decoding checks the CRC32C against the bytes.
    """

    def __init__(
        self, path: StorePath, name: str, storage_options: dict[str, Any] | None, manifest: dict[str, str], array: Any
    ) -> None:
        self.path, self.name, self.storage_options, self.manifest = path, name, storage_options, manifest
        self.shape, self.dtype, self.ndim = array.shape, array.dtype, array.ndim
        self.chunks = array.chunks
        self._encoding = array.metadata.chunk_key_encoding
        self._array: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_array": None}

    def __getitem__(self, key: tuple[slice, ...]) -> np.ndarray:
        coords = tuple((s.start or 0) // c for s, c in zip(key, self.chunks, strict=True))
        chunk = f"{self.name}/{self._encoding.encode_chunk_key(coords)}"
        try:
            found = _suffixes(self.path, [chunk], self.storage_options)[chunk]
        except Exception as e:
            raise damaged(self.path, f"chunk {chunk} cannot be read ({' '.join(str(e).split())})") from e
        if found is None:
            raise damaged(self.path, f"chunk {chunk} is missing (deleted or never written)")
        if found != self.manifest.get(chunk):
            raise damaged(
                self.path, f"chunk {chunk} is not the chunk written there (truncated, moved, swapped or re-encoded)"
            )
        try:
            if self._array is None:
                self._array = zarr.open_array(
                    zarr_store(self.path, self.storage_options, read_only=True), path=self.name, mode="r"
                )
            return np.asarray(self._array[key])
        except Exception as e:
            raise damaged(self.path, f"chunk {chunk} is corrupt ({' '.join(str(e).split())})") from e


def corrupt_chunk(path: StorePath, storage_options: dict[str, Any] | None, error: BaseException) -> str:
    """``"<store>: chunk <key> is corrupt (<why>)"`` for the first small (1-D) array chunk that does not decode."""
    why = " ".join(str(error).split()) or type(error).__name__
    try:
        group = open_group(path, storage_options)
        for name, array in group.arrays():
            if array.ndim >= 2:
                continue
            for coords in np.ndindex(*array.cdata_shape):
                block = tuple(slice(c * n, (c + 1) * n) for c, n in zip(coords, array.chunks, strict=True))
                try:
                    array[block]
                except Exception as e:
                    key = f"{name}/{array.metadata.chunk_key_encoding.encode_chunk_key(coords)}"
                    return f"{path}: chunk {key} is corrupt ({' '.join(str(e).split())})"
    except Exception:  # the metadata itself: say what the first error said
        pass
    return f"{path}: cannot be opened ({why})"


def checked(
    ds: xr.Dataset, path: StorePath, storage_options: dict[str, Any] | None, attrs: dict[str, Any], group: Any
) -> xr.Dataset:
    """``ds`` with each data variable read through :class:`_CheckedChunks` (same chunks, same attributes)."""
    import dask.array as da
    from dask.base import tokenize

    manifest = attrs.get(schema.ATTR_CHUNK_CRC32C) or {}
    for name in list(ds.data_vars):
        array = group[name]
        source = _CheckedChunks(path, str(name), storage_options, manifest, array)
        token = tokenize(str(path), name, array.shape, str(array.dtype), manifest.get(f"{name}/c/0/0/0"))
        meta = np.empty((0,) * array.ndim, dtype=array.dtype)  # else dask reads a slice to learn it
        data = da.from_array(
            source, chunks=array.chunks, name=f"opto-cube-{name}-{token}", asarray=False, fancy=False, lock=False,
            meta=meta,
        )  # fmt: skip
        ds[name] = ds[name].copy(data=data)
    return ds


# --------------------------------------------------------------------------
# The one checked reader: small arrays read eagerly and together, every chunk checked
# --------------------------------------------------------------------------
_METADATA_FIELDS = ("shape", "data_type", "chunk_grid", "chunk_key_encoding", "codecs", "dimension_names")
_IN_FLIGHT = 64  # chunk reads at once (memory: at most this many stored chunks held)


def damaged(path: StorePath, what: str) -> StoreError:
    """The one error of a damaged store: where, what, and what to do."""
    return StoreError(
        f"{path}: {what}: the store is damaged (run `opto-cube verify {path}`; reconvert the session with"
        " `opto-cube convert ... --overwrite`)"
    )


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
        and place are checked (:func:`opto_cube.store.write.open_cube`: the cube, checked chunk by chunk as read).

    Returns
    -------
    CheckedRead

    Raises
    ------
    StoreError
        Not a store, not finished, or damaged.

    Examples
    --------
    >>> import tempfile, warnings
    >>> from opto_cube import synth, schema
    >>> from opto_cube.jobs import convert
    >>> root = tempfile.mkdtemp()
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("ignore")
    ...     folder = synth.make_dataset(root, n_sessions=1, size="tiny")[0]
    ...     store = convert.convert_session(folder, root + "/stores", bin_ms=10).store
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
        raise StoreError(f"{path}: not an opto_cube store (no readable Zarr group: {' '.join(str(e).split())})") from e


def _metadata_problem(name: str, own_bytes: bytes | None, copy: dict[str, Any]) -> str | None:
    """Why array ``name``'s own zarr.json (its bytes, None when missing) disagrees with the consolidated copy."""
    if own_bytes is None:
        return f"array {name} has no zarr.json"
    try:
        own = json.loads(own_bytes)
    except ValueError:
        return f"array {name}'s zarr.json is not JSON"
    differ = [f for f in _METADATA_FIELDS if not isinstance(own, dict) or own.get(f) != copy.get(f)]
    if differ:
        return f"array {name}'s zarr.json disagrees with the consolidated metadata ({', '.join(differ)})"
    return None


def _chunk_problem(key: str, data: bytes | None, manifest: Any, full: bool) -> str | None:
    """Why chunk ``key`` (its stored bytes, or only its last 4 without ``full``; None when missing) is damaged."""
    if data is None:
        return f"chunk {key} is missing (deleted or never written)"
    recorded = manifest.get(key) if isinstance(manifest, dict) else None
    if recorded is None:
        return f"chunk {key} has no recorded checksum"
    if len(data) < 4 or data[-4:].hex() != recorded:
        return f"chunk {key} is not the chunk written there (truncated, moved, swapped or re-encoded)"
    if full:
        import google_crc32c

        if google_crc32c.value(data[:-4]) != int.from_bytes(data[-4:], "little"):
            return f"chunk {key} is corrupt (its bytes do not match its CRC32C)"
    return None


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
        return _metadata_problem(name, None if buf is None else buf.to_bytes(), consolidated.get(name, {}))

    async def chunk(key: str, name: str) -> str | None:
        full = (deep and name not in shallow) or name in wanted
        async with limit:
            buf = await zstore.get(key, prototype, byte_range=None if full else SuffixByteRequest(4))
        return _chunk_problem(key, None if buf is None else buf.to_bytes(), manifest, full)

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
            raise damaged(path, f"array {name} does not decode ({' '.join(str(e).split())})") from e

    values = await asyncio.gather(*(read(n) for n in wanted))
    return CheckedRead(
        path,
        attrs,
        dict(zip(wanted, values, strict=True)),
        {n: tuple(str(d) for d in (a.metadata.dimension_names or ())) for n, a in arrays.items()},
        {n: dict(a.attrs) for n, a in arrays.items()},
        {n: tuple(a.shape) for n, a in arrays.items()},
    )


def metadata_problems(path: StorePath, storage_options: dict[str, Any] | None = None) -> list[str]:
    """Arrays whose own ``zarr.json`` disagrees with the consolidated copy (shape, chunks, dtype, codecs).

    Examples
    --------
    >>> import tempfile
    >>> metadata_problems(tempfile.mkdtemp())
    []
    """
    if is_url(path):
        import fsspec

        def read(key: str) -> bytes | None:
            try:
                with fsspec.open(f"{str(path).rstrip('/')}/{key}", "rb", **(storage_options or {})) as f:
                    return bytes(f.read())
            except OSError:
                return None
    else:

        def read(key: str) -> bytes | None:
            try:
                return (Path(path) / key).read_bytes()
            except OSError:
                return None

    root = read("zarr.json")
    try:
        meta = json.loads(root) if root else {}
    except ValueError:
        return []
    consolidated = ((meta.get("consolidated_metadata") or {}).get("metadata")) or {}
    problems = []
    for name, copy in sorted(consolidated.items()):
        if copy.get("node_type") != "array":
            continue
        own_bytes = read(f"{name}/zarr.json")
        try:
            own = json.loads(own_bytes) if own_bytes else None
        except ValueError:
            own = None
        if own is None:
            problems.append(f"{path}: array {name} has no readable zarr.json")
            continue
        differ = [f for f in _METADATA_FIELDS if own.get(f) != copy.get(f)]
        if differ:
            problems.append(
                f"{path}: array {name}'s zarr.json disagrees with the consolidated metadata ({', '.join(differ)})"
            )
    return problems


_KNOWN_CODECS = {("bytes", "zstd", "crc32c"), ("vlen-utf8", "zstd", "crc32c")}


def _read_local(path: Path, names: list[str] | None, small: bool, deep: bool, shallow: set[str]) -> CheckedRead | None:
    """:func:`read_checked` of a local store with plain file reads (no event loop, no thread hops); None when
    the store is not one this reader decodes itself (other codecs, no consolidated metadata: the general path)."""
    try:
        meta = json.loads((path / "zarr.json").read_bytes())
    except FileNotFoundError as e:
        raise StoreError(f"{path}: not an opto_cube store (no zarr.json: no Zarr group there)") from e
    except (OSError, ValueError) as e:
        raise StoreError(f"{path}: not an opto_cube store (unreadable zarr.json: {' '.join(str(e).split())})") from e
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
        problem = _metadata_problem(name, _local_bytes(path / name / "zarr.json"), m)
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
            raise damaged(path, f"chunk {key} cannot be read ({' '.join(str(e).split())})") from e
        problem = _chunk_problem(key, data, manifest, full or read)
        if problem:
            raise damaged(path, problem)
        if out is None or data is None:
            continue
        try:
            block = _decode(meta, data[:-4], chunk_shape)
        except Exception as e:
            raise damaged(path, f"chunk {key} does not decode ({' '.join(str(e).split())})") from e
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
