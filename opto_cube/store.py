"""Zarr stores of cubes: write one atomically, open one lazily.

A local store is written in a hidden temporary folder beside its target and
renamed into place at the end, so a killed conversion leaves no store or a
complete one; the next run removes what a killed run left. Object storage
(``s3://...`` and other fsspec URLs) has no rename: there the store is written
in place and marked complete (attribute ``opto_cube_complete``) last, and a
store without the mark is invisible to :func:`open_catalog` and rebuilt by the
next conversion. Stores are Zarr format 3 with consolidated metadata,
standard codecs and variable-length UTF-8 strings, so plain
``xarray.open_zarr`` and other Zarr implementations read them without opto_cube.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import uuid
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import dask
import numpy as np
import xarray as xr
import zarr
import zarr.codecs

from . import schema
from .errors import StoreError

STORE_SUFFIX = ".zarr"
_TMP_TAG = ".tmp-"
_OLD_TAG = ".old-"
# Every stored array's bytes-to-bytes codecs: zstd level 1, then a CRC32C of the compressed chunk (Zarr v3 core
# codec; zarr-python, tensorstore, zarrs and zarrita.js check it on read), so a damaged chunk is an error, never zeros.
COMPRESSORS = (zarr.codecs.ZstdCodec(level=1), zarr.codecs.Crc32cCodec())


StorePath = Path | str  # a local path, or a URL such as s3://bucket/prefix/<id>.zarr


def is_url(path: str | os.PathLike) -> bool:
    """Whether ``path`` names object storage (``s3://...``) rather than a local folder."""
    return "://" in os.fspath(path) and not os.fspath(path).startswith("file://")


def join(base: str | os.PathLike, name: str) -> StorePath:
    """``base/name`` for a local folder (a Path) or a URL (a string)."""
    return f"{os.fspath(base).rstrip('/')}/{name}" if is_url(base) else Path(base) / name


def zarr_store(path: StorePath, storage_options: dict[str, Any] | None = None, read_only: bool = False) -> Any:
    """The zarr Store object of a local path or an fsspec URL."""
    if is_url(path):
        return zarr.storage.FsspecStore.from_url(str(path), storage_options=storage_options or {}, read_only=read_only)
    return zarr.storage.LocalStore(Path(path), read_only=read_only)


def store_path(out_dir: str | os.PathLike, session_id: str) -> StorePath:
    """Where the store of ``session_id`` lives under ``out_dir`` (a folder or a URL).

    Examples
    --------
    >>> store_path("stores", "AL0034_2024-12-05_en1_p0").as_posix()
    'stores/AL0034_2024-12-05_en1_p0.zarr'
    """
    if not session_id or session_id in {".", ".."} or "/" in session_id or os.sep in session_id:
        raise StoreError(f"session id {session_id!r} cannot name a store")
    return join(out_dir, f"{session_id}{STORE_SUFFIX}")


def spike_counts_chunks(n_clusters: int, n_trials: int, n_bins: int) -> tuple[int, int, int]:
    """Chunk shape of ``spike_counts``: a block of clusters x a block of trials x every bin.

    Every bin of a trial in one chunk serves both PSTHs and per-trial window
    sums; blocks of clusters and trials keep a slice of a few units and
    trials to one or a few chunks. See benchmarks/README.md for the measurements.
    """
    return (max(1, min(schema.CHUNK_CLUSTERS, n_clusters)), max(1, min(schema.CHUNK_TRIALS, n_trials)), max(1, n_bins))


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


def is_complete(path: StorePath, storage_options: dict[str, Any] | None = None) -> bool:
    """Whether a finished conversion wrote the store at ``path`` (its completion mark is set)."""
    attrs = read_store_attrs(path, storage_options)
    return bool(attrs and attrs.get(schema.ATTR_COMPLETE))


def list_stores(folder_or_url: str | os.PathLike, storage_options: dict[str, Any] | None = None) -> list[str]:
    """Paths (or URLs) of the ``*.zarr`` entries of a folder; hidden and temporary entries skipped."""
    text = os.fspath(folder_or_url)
    if is_url(text):
        import fsspec

        fs, root = fsspec.core.url_to_fs(text, **(storage_options or {}))
        fs.invalidate_cache(root)  # a listing cached earlier in this process would miss stores written since
        if not fs.isdir(root):
            raise StoreError(f"{text}: no such folder of stores")
        names = [entry.rstrip("/") for entry in fs.ls(root, detail=False)]
        return sorted(
            fs.unstrip_protocol(name)
            for name in names
            if name.rsplit("/", 1)[-1].endswith(STORE_SUFFIX) and not name.rsplit("/", 1)[-1].startswith(".")
        )
    folder = Path(text.removeprefix("file://"))
    if not folder.is_dir():
        raise StoreError(f"{folder}: no such folder of stores")
    return [
        str(p)
        for p in sorted(folder.iterdir())
        if p.name.endswith(STORE_SUFFIX) and not p.name.startswith(".") and p.is_dir()
    ]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_leftovers(target: Path) -> list[Path]:
    """Remove what killed conversions of ``target`` left beside it (their process is gone)."""
    removed = []
    for tag in (_TMP_TAG, _OLD_TAG):
        for path in target.parent.glob(f".{glob.escape(target.name)}{tag}*"):
            pid = path.name.rsplit("-", 2)[-2] if path.name.count("-") >= 2 else ""
            if pid.isdigit() and _pid_alive(int(pid)) and int(pid) != os.getpid():
                continue
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


@contextlib.contextmanager
def atomic_store(
    target: StorePath, overwrite: bool = False, storage_options: dict[str, Any] | None = None
) -> Iterator[StorePath]:
    """Yield where to write a store; it becomes ``target`` only when the block ends cleanly.

    Locally: a temporary folder beside ``target``, renamed into place at the
    end; on any error (or interruption) it is removed and ``target`` is
    untouched. On object storage: ``target`` itself, emptied first if it holds
    an incomplete store, and removed again on error; the writer marks it
    complete last.
    """
    if is_url(target):
        with _remote_store(str(target), overwrite, storage_options or {}) as path:
            yield path
        return
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(target)
    if target.exists() and not overwrite:
        raise StoreError(f"{target}: store exists; pass overwrite=True (--overwrite) to rebuild it")
    tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp = target.with_name(f".{target.name}{_TMP_TAG}{tag}")
    try:
        yield tmp
        if target.exists():
            old = target.with_name(f".{target.name}{_OLD_TAG}{tag}")
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def _remote_store(target: str, overwrite: bool, storage_options: dict[str, Any]) -> Iterator[str]:
    import fsspec

    fs, root = fsspec.core.url_to_fs(target, **storage_options)
    if fs.exists(root):
        if is_complete(target, storage_options) and not overwrite:
            raise StoreError(f"{target}: store exists; pass overwrite=True (--overwrite) to rebuild it")
        fs.rm(root, recursive=True)
    try:
        yield target
    except BaseException:
        with contextlib.suppress(Exception):
            fs.rm(root, recursive=True)
        raise


def write_cube(
    template: xr.Dataset,
    count_chunks: Iterable[tuple[slice, np.ndarray]],
    target: StorePath,
    overwrite: bool = False,
    storage_options: dict[str, Any] | None = None,
) -> StorePath:
    """Write a cube atomically: the template's coordinates and attributes, then ``spike_counts`` chunk by chunk.

    Parameters
    ----------
    template
        The cube with a lazy (dask) ``spike_counts`` whose chunks are the
        store's chunks (or any ``spike_counts`` with ``encoding["chunks"]``);
        only its shape, dtype, dims and attributes are read.
    count_chunks
        ``(trial slice, counts[cluster, trials, time])`` blocks that cover
        every trial once, each a whole number of trial chunks.
    target
        The store's path (``<session_id>.zarr``).
    overwrite
        Replace an existing store (atomically) instead of refusing.
    storage_options
        fsspec options for a URL target (endpoint, credentials).
    """
    target = target if is_url(target) else Path(target)
    counts = template[schema.SPIKE_COUNTS]
    chunks = tuple(c[0] for c in counts.chunks) if counts.chunks else tuple(counts.encoding["chunks"])
    with atomic_store(target, overwrite=overwrite, storage_options=storage_options) as tmp:
        zstore = zarr_store(tmp, storage_options)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
            # The coordinates and attributes by xarray, spike_counts created empty by zarr with the metadata
            # xarray would give it (the same zarr.json): xarray's lazy path (a dask array, compute=False) builds
            # a dask graph and imports distributed for an array written below anyway.
            variables, _ = xr.conventions.encode_dataset_coordinates(template)
            template.drop_vars(schema.SPIKE_COUNTS).to_zarr(zstore, mode="w-", zarr_format=3, consolidated=False)
            group = zarr.open_group(zstore, mode="r+")
            if "coordinates" in group.attrs:  # xarray lists coordinates no variable claims: spike_counts does
                del group.attrs["coordinates"]
            # One call per chunk, from a view of the block: zarr then compresses the block's memory as it is
            # (a call that spans chunks first copies each into a fresh buffer), and write_empty_chunks skips
            # zarr's scan of every chunk for all-fill values. Those two were 2/3 of the write time
            # (benchmarks/README.md, "Writing the cube"). The chunks of a block are written concurrently.
            array = group.create_array(
                schema.SPIKE_COUNTS, shape=counts.shape, chunks=chunks, dtype=counts.dtype,
                compressors=COMPRESSORS, fill_value=0, dimension_names=counts.dims,
                attributes=dict(variables[schema.SPIKE_COUNTS].attrs), config={"write_empty_chunks": True},
            )
            step = array.chunks[0]
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
                for trials, block in count_chunks:
                    parts = [(slice(c, c + step), trials, slice(None)) for c in range(0, block.shape[0], step)]
                    list(pool.map(array.__setitem__, parts, [block[part[0]] for part in parts]))
            group = zarr.open_group(zstore, mode="r+")
            group.attrs[schema.ATTR_COMPLETE] = True  # last: the store is whole
            zarr.consolidate_metadata(zstore)
    return target


def is_up_to_date(target: StorePath, expected: dict[str, Any], storage_options: dict[str, Any] | None = None) -> bool:
    """Whether the complete store at ``target`` was built from the same sources with the same parameters."""
    attrs = read_store_attrs(target, storage_options)
    if not attrs or not attrs.get(schema.ATTR_COMPLETE):
        return False
    return all(_json_equal(attrs.get(k), v) for k, v in expected.items())


def _json_equal(a: Any, b: Any) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


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
    >>> import tempfile
    >>> from opto_cube import synth, convert
    >>> root = tempfile.mkdtemp()
    >>> folder = synth.make_dataset(root, n_sessions=1, size="tiny")[0]
    >>> result = convert.convert_session(folder, root + "/stores", bin_ms=10)  # doctest: +SKIP
    """
    try:
        ds = xr.open_zarr(path, chunks={}, consolidated=True, **kwargs)
    except (FileNotFoundError, KeyError, ValueError) as e:
        raise StoreError(f"{path}: not an opto_cube store ({' '.join(str(e).split())})") from e
    if schema.SPIKE_COUNTS not in ds:
        raise StoreError(f"{path}: not an opto_cube store (no {schema.SPIKE_COUNTS!r} variable)")
    small = [name for name, c in ds.coords.items() if name not in ds.indexes and c.ndim == 1]
    # the small per-cluster and per-trial coordinates, read here in one go: never a round trip to a cluster
    values = dask.compute(*(ds[name].variable for name in small), scheduler="synchronous")
    return ds.assign_coords(dict(zip(small, values, strict=False)))
