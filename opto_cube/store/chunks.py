"""Every chunk present, in place and whole: the sealed CRC32C manifest and the checks.

Integrity (format 2, ``docs/contract.md``): every array's chunks end with a
CRC32C (Zarr v3's ``crc32c`` codec, after zstd), every chunk is written (no
fill-value elision, so a missing chunk is damage), and the writer records the
CRC32C of every chunk by key (attribute ``opto_cube_chunk_crc32c``) before
setting the completion mark, last (:func:`seal`). :func:`check_chunks` finds a
missing chunk or one not in its place from one listing of the store's keys and
the last 4 bytes of each chunk; :func:`opto_cube.store.open.open_cube` refuses such
a store, and reading a chunk of ``spike_counts`` / ``window_counts`` that is
missing, moved, truncated or corrupt (through :func:`checked`) raises a
:class:`~opto_cube.errors.StoreError` naming store and chunk; it never reads
as zeros. The wording of a damaged store (:func:`damaged`, :func:`chunk_problem`,
:func:`metadata_problem`) is here too: :mod:`opto_cube.store.read`, the one checked
reader, says it the same way.

A store is reached through :mod:`opto_cube.store.access`.
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
from opto_cube.errors import StoreError, one_line, problem
from opto_cube.store.access import StorePath, format_version, is_url, open_group, read_store_attrs, zarr_store

if TYPE_CHECKING:
    import xarray as xr


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
            raise damaged(self.path, f"chunk {chunk} cannot be read ({one_line(e)})") from e
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
            raise damaged(self.path, f"chunk {chunk} is corrupt ({one_line(e)})") from e


def corrupt_chunk(path: StorePath, storage_options: dict[str, Any] | None, error: BaseException) -> str:
    """``"<store>: chunk <key> is corrupt (<why>)"`` for the first small (1-D) array chunk that does not decode."""
    why = one_line(error)
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
                    return f"{path}: chunk {key} is corrupt ({one_line(e)})"
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


METADATA_FIELDS = ("shape", "data_type", "chunk_grid", "chunk_key_encoding", "codecs", "dimension_names")


def damaged(path: StorePath, what: str) -> StoreError:
    """The one error of a damaged store: where, what, and what to do."""
    return StoreError(
        problem(
            path,
            f"{what}: the store is damaged",
            remedy=f"run `opto-cube verify {path}`, then convert the session again with --overwrite",
        )
    )


def metadata_problem(name: str, own_bytes: bytes | None, copy: dict[str, Any]) -> str | None:
    """Why array ``name``'s own zarr.json (its bytes, None when missing) disagrees with the consolidated copy."""
    if own_bytes is None:
        return f"array {name} has no zarr.json"
    try:
        own = json.loads(own_bytes)
    except ValueError:
        return f"array {name}'s zarr.json is not JSON"
    differ = [f for f in METADATA_FIELDS if not isinstance(own, dict) or own.get(f) != copy.get(f)]
    if differ:
        return f"array {name}'s zarr.json disagrees with the consolidated metadata ({', '.join(differ)})"
    return None


def chunk_problem(key: str, data: bytes | None, manifest: Any, full: bool) -> str | None:
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
        differ = [f for f in METADATA_FIELDS if own.get(f) != copy.get(f)]
        if differ:
            problems.append(
                f"{path}: array {name}'s zarr.json disagrees with the consolidated metadata ({', '.join(differ)})"
            )
    return problems
