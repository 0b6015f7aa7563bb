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

Every chunk is written and its CRC32C recorded before the completion mark
(:func:`opto_cube.chunks.seal`); :func:`open_cube` refuses a store with a
missing chunk or one not in its place and reads the cube through the chunk
checks of :mod:`opto_cube.chunks`. Only a folder recognised as an opto_cube
store by its own metadata is ever replaced (:func:`is_ours`); anything else in
the way is refused untouched.

The session's ``session.json`` is kept whole under the ``session_json``
attribute; its fields are also copied to the top level except those named
like opto_cube's own attributes (``schema.OWN_ATTRS``, or starting with
``opto_cube``), which only opto_cube writes.
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

from . import chunks, schema
from .chunks import StorePath, is_url, read_store_attrs, zarr_store
from .errors import StoreError, warn

STORE_SUFFIX = ".zarr"
_TMP_TAG = ".tmp-"
_OLD_TAG = ".old-"
# Every stored array's bytes-to-bytes codecs: zstd level 1, then a CRC32C of the compressed chunk (Zarr v3 core
# codec; zarr-python, tensorstore, zarrs and zarrita.js check it on read), so a damaged chunk is an error, never zeros.
COMPRESSORS = (zarr.codecs.ZstdCodec(level=1), zarr.codecs.Crc32cCodec())


def join(base: str | os.PathLike, name: str) -> StorePath:
    """``base/name`` for a local folder (a Path) or a URL (a string)."""
    return f"{os.fspath(base).rstrip('/')}/{name}" if is_url(base) else Path(base) / name


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
    if target.exists() or target.is_symlink():
        if target.is_symlink() or not is_ours(target):
            raise StoreError(f"{target}: exists and is not an opto_cube store; refusing to replace it (left untouched)")
        if not overwrite:
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
        if not is_ours(target, storage_options):
            raise StoreError(f"{target}: exists and is not an opto_cube store; refusing to replace it (left untouched)")
        if is_complete(target, storage_options) and not overwrite:
            raise StoreError(f"{target}: store exists; pass overwrite=True (--overwrite) to rebuild it")
        fs.rm(root, recursive=True)
    try:
        yield target
    except BaseException:
        with contextlib.suppress(Exception):
            fs.rm(root, recursive=True)
        raise


def window_counts_chunks(n_clusters: int, n_trials: int, itemsize: int) -> tuple[int, int, int]:
    """Chunk shape of ``window_counts``: every cluster and window, every trial unless that exceeds ~64 MiB.

    The array is small (``K x M x 2`` counts) and read whole, so one chunk serves best.

    Examples
    --------
    >>> window_counts_chunks(300, 4200, 1)
    (300, 4200, 2)
    >>> window_counts_chunks(3000, 1_000_000, 4)
    (3000, 2796, 2)
    """
    per_trial = max(1, n_clusters) * len(schema.WINDOWS) * itemsize
    trials = max(1, min(n_trials, schema.WINDOW_COUNTS_CHUNK_BYTES // per_trial))
    return (max(1, n_clusters), trials, len(schema.WINDOWS))


def _window_sums(template: xr.Dataset, trials: slice, block: np.ndarray) -> np.ndarray:
    """Pre and stim window counts of a block of the cube: the sums of the bins inside each window.

    For blocks handed to :func:`write_cube` without their window counts (the
    binner gives them from its one pass). The windows are unions of whole bins.
    """
    centres = template[schema.TIME].values
    durations = template[schema.DURATION].values[trials]
    pre = (centres > schema.PRE_WINDOW_S[0]) & (centres < schema.PRE_WINDOW_S[1])
    stim = (centres[None, :] > 0) & (centres[None, :] < durations[:, None])
    out = np.empty((*block.shape[:2], len(schema.WINDOWS)), dtype=np.uint64)
    out[..., 0] = block[:, :, pre].sum(axis=-1, dtype=np.uint64)
    out[..., 1] = np.einsum("ktj,tj->kt", block, stim, dtype=np.uint64)
    return out


def _write_window_counts(
    group: zarr.Group, template: xr.Dataset, attrs: dict[str, Any], parts: list[tuple[slice, np.ndarray]]
) -> None:
    """Create ``window_counts`` in the smallest unsigned dtype of its counts and write every chunk of it."""
    from .binning import smallest_uint

    n_clusters, n_trials = template.sizes[schema.CLUSTER], template.sizes[schema.TRIAL]
    largest = max((int(w.max(initial=0)) for _, w in parts), default=0)
    windows = np.zeros((n_clusters, n_trials, len(schema.WINDOWS)), dtype=smallest_uint(largest))
    for trials, part in parts:
        windows[:, trials] = part
    array = group.create_array(
        schema.WINDOW_COUNTS, shape=windows.shape, dtype=windows.dtype,
        chunks=window_counts_chunks(n_clusters, n_trials, windows.dtype.itemsize), compressors=COMPRESSORS,
        fill_value=0, dimension_names=schema.VARIABLES[schema.WINDOW_COUNTS].dims, attributes=attrs,
        config={"write_empty_chunks": True},
    )  # fmt: skip
    array[...] = windows


def _timing_chunks(shape: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
    """Chunks of a timing array: whole unless larger than ``schema.TIMING_CHUNK_BYTES``, then split by clusters.

    Examples
    --------
    >>> _timing_chunks((300, 84, 1500), 2), _timing_chunks((300, 4200), 2)
    ((266, 84, 1500), (300, 4200))
    """
    per_cluster = max(1, int(np.prod(shape[1:], dtype=np.int64)) * itemsize)
    clusters = max(1, min(shape[0], schema.TIMING_CHUNK_BYTES // per_cluster))
    return (clusters, *(max(1, n) for n in shape[1:]))


class _BlockTiming:
    """The timing arrays summed from blocks of the cube, for blocks handed to :func:`write_cube` without them."""

    def __init__(self, template: xr.Dataset) -> None:
        self.codes = np.asarray(template[schema.TRIAL_CONDITION].values, np.int64)
        centres = np.asarray(template[schema.TIME].values, np.float64)
        durations = np.asarray(template[schema.DURATION].values, np.float64)
        self.start = int(np.searchsorted(centres, 0.0))
        self.stop = np.searchsorted(centres, durations)  # bins with centre < duration: the stim window's end
        n_clusters, n_bins = template.sizes[schema.CLUSTER], template.sizes[schema.TIME]
        self.time_course = np.zeros((n_clusters, template.sizes[schema.CONDITION], n_bins), np.uint64)
        self.first_spike = np.full((n_clusters, self.codes.size), -1, np.int32)

    def add(self, trials: slice, block: np.ndarray) -> None:
        from .latency import first_spike_bins

        code = self.codes[trials]
        order = np.argsort(code, kind="stable")
        starts = np.flatnonzero(np.r_[True, code[order][1:] != code[order][:-1]])
        if block.shape[0] and code.size:
            self.time_course[:, code[order][starts]] += np.add.reduceat(
                block[:, order], starts, axis=1, dtype=np.uint64
            )
        self.first_spike[:, trials] = first_spike_bins(block, self.start, self.stop[trials])


def _write_timing(group: zarr.Group, variables: dict[str, Any], timing: Any) -> None:
    """``condition_counts`` (smallest unsigned dtype of its sums) and ``first_spike_bin``, every chunk written."""
    from .binning import smallest_uint

    course = timing.time_course
    first = timing.first_spike
    stim_bins = int(first.max(initial=-1))
    course = course.astype(smallest_uint(int(course.max(initial=0))), order="C")
    first = first.astype(np.int16 if stim_bins <= np.iinfo(np.int16).max else np.int32, copy=False)
    for name, values, fill in ((schema.CONDITION_COUNTS, course, 0), (schema.FIRST_SPIKE_BIN, first, -1)):
        array = group.create_array(
            name, shape=values.shape, dtype=values.dtype, chunks=_timing_chunks(values.shape, values.dtype.itemsize),
            compressors=COMPRESSORS, fill_value=fill, dimension_names=schema.VARIABLES[name].dims,
            attributes=dict(variables[name].attrs), config={"write_empty_chunks": True},
        )  # fmt: skip
        array[...] = values


def write_cube(
    template: xr.Dataset,
    count_chunks: Iterable[tuple[slice, np.ndarray] | tuple[slice, np.ndarray, np.ndarray]],
    target: StorePath,
    overwrite: bool = False,
    storage_options: dict[str, Any] | None = None,
    timing: Any = None,
) -> StorePath:
    """Write a cube atomically: coordinates and attributes, ``spike_counts`` chunk by chunk, then ``window_counts``.

    Parameters
    ----------
    template
        The cube with a ``spike_counts`` whose ``encoding["chunks"]`` (or,
        when it is a dask array, whose chunks) are the store's chunks;
        only its shape, dtype, dims and attributes are read. A
        ``window_counts`` in it is a placeholder (its dtype is not read).
    count_chunks
        ``(trial slice, counts[cluster, trials, time])`` or ``(trial slice,
        counts, windows[cluster, trials, window])`` blocks (as
        :func:`opto_cube.binning.iter_count_chunks` yields them) that cover
        every trial once, each a whole number of trial chunks. A block
        without its window counts has them summed from its bins. A block is
        compressed while the next one is made: it must stay valid until the
        next-but-one is asked for.
    target
        The store's path (``<session_id>.zarr``).
    overwrite
        Replace an existing store (atomically) instead of refusing.
    storage_options
        fsspec options for a URL target (endpoint, credentials).
    timing
        The :class:`opto_cube.binning.Timing` that ``count_chunks`` fills as it
        is consumed (:func:`opto_cube.binning.iter_count_chunks`). When the
        template has the stored conditions (``trial_condition``:
        :func:`opto_cube.convert.with_stored_conditions`) and no ``timing`` is
        given, the timing arrays are summed from the blocks.

    Notes
    -----
    ``window_counts`` is written with the smallest unsigned dtype that holds
    its largest count, in chunks of :func:`window_counts_chunks`, in the same
    atomic store: a store has both arrays or is not there.
    """
    target = target if is_url(target) else Path(target)
    counts = template[schema.SPIKE_COUNTS]
    stored = counts.encoding.get("chunks")
    count_shape = tuple(stored) if stored is not None else tuple(c[0] for c in counts.chunks or ())
    if schema.WINDOW_COUNTS not in template:
        template = template.assign(
            {
                schema.WINDOW_COUNTS: xr.Variable(
                    schema.VARIABLES[schema.WINDOW_COUNTS].dims,
                    np.broadcast_to(np.uint8(0), (*counts.shape[:2], len(schema.WINDOWS))),
                    attrs=schema.VARIABLES[schema.WINDOW_COUNTS].attrs,
                )
            }
        )
    if schema.WINDOW not in template.coords:
        template = template.assign_coords(
            {schema.WINDOW: xr.Variable(schema.WINDOW, np.array(schema.WINDOWS, dtype=object),
                                        attrs=schema.VARIABLES[schema.WINDOW].attrs)}
        )  # fmt: skip
    timed = schema.TRIAL_CONDITION in template.coords
    arrays = (schema.SPIKE_COUNTS, schema.WINDOW_COUNTS) + (schema.TIMING_ARRAYS if timed else ())
    from_blocks = _BlockTiming(template) if timed and timing is None else None
    with atomic_store(target, overwrite=overwrite, storage_options=storage_options) as tmp:
        zstore = zarr_store(tmp, storage_options)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
            # The coordinates and attributes by xarray, the two arrays created by zarr with the metadata
            # xarray would give them (the same zarr.json): xarray's lazy path (a dask array, compute=False) builds
            # a dask graph and imports distributed for arrays written below anyway.
            variables, _ = xr.conventions.encode_dataset_coordinates(template)
            coords = template.drop_vars(arrays)
            coords.to_zarr(zstore, mode="w-", zarr_format=3, consolidated=False, encoding=checksummed(coords),
                           write_empty_chunks=True)  # fmt: skip
            group = zarr.open_group(zstore, mode="r+")
            if "coordinates" in group.attrs:  # xarray lists coordinates no variable claims: the arrays do
                del group.attrs["coordinates"]
            # One call per chunk, from a view of the block: zarr then compresses the block's memory as it is
            # (a call that spans chunks first copies each into a fresh buffer), and write_empty_chunks skips
            # zarr's scan of every chunk for all-fill values. Those two were 2/3 of the write time
            # (benchmarks/README.md, "Writing the cube"). The chunks of a block are written concurrently.
            array = group.create_array(
                schema.SPIKE_COUNTS, shape=counts.shape, chunks=count_shape, dtype=counts.dtype,
                compressors=COMPRESSORS, fill_value=0, dimension_names=tuple(map(str, counts.dims)),
                attributes=dict(variables[schema.SPIKE_COUNTS].attrs), config={"write_empty_chunks": True},
            )  # fmt: skip
            step = array.chunks[0]
            from concurrent.futures import ThreadPoolExecutor

            # Pipelined: a block's chunks are handed to the threads, then the next block is asked for (binned
            # by the nogil kernel while zstd runs), and only then are the first block's writes awaited. So a
            # block must stay valid until the next-but-one is asked for (iter_count_chunks(..., buffers=2)).
            windows: list[tuple[slice, np.ndarray]] = []
            pending: list[Any] = []
            with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
                try:
                    for trials, block, *window in count_chunks:
                        for future in pending:
                            future.result()
                        pending = [
                            pool.submit(
                                array.__setitem__, (slice(c, c + step), trials, slice(None)), block[c : c + step]
                            )
                            for c in range(0, block.shape[0], step)
                        ]
                        windows.append((trials, window[0] if window else _window_sums(template, trials, block)))
                        if from_blocks is not None:
                            from_blocks.add(trials, block)
                    for future in pending:
                        future.result()
                finally:
                    for future in pending:
                        future.cancel()
            _write_window_counts(group, template, dict(variables[schema.WINDOW_COUNTS].attrs), windows)
            if timed:
                _write_timing(group, variables, timing if timing is not None else from_blocks)
            chunks.seal(zstore, tmp, storage_options)  # the chunks' checksums, then the completion mark, last
    return target


# --------------------------------------------------------------------------
# Ownership and freshness of a store
# --------------------------------------------------------------------------
def is_ours(path: StorePath, storage_options: dict[str, Any] | None = None) -> bool:
    """Whether ``path`` holds an opto_cube store, recognised by its own metadata, and nothing else.

    A Zarr group whose attributes carry opto_cube's format version (or version),
    and, locally, whose entries are only Zarr metadata and array folders. Anything
    else (a user's folder, a plain file, another Zarr store) is never replaced.
    """
    attrs = read_store_attrs(path, storage_options)
    if not attrs or not (schema.ATTR_FORMAT_VERSION in attrs or schema.ATTR_VERSION in attrs):
        return False
    if is_url(path):
        return True
    root = Path(path)
    return root.is_dir() and all(
        entry.name == "zarr.json" or (entry.is_dir() and (entry / "zarr.json").is_file()) for entry in root.iterdir()
    )


def is_up_to_date(target: StorePath, expected: dict[str, Any], storage_options: dict[str, Any] | None = None) -> bool:
    """Whether the complete store at ``target`` was built from the same sources with the same parameters."""
    attrs = read_store_attrs(target, storage_options)
    if not attrs or not attrs.get(schema.ATTR_COMPLETE) or chunks.format_version(attrs) < schema.FORMAT_VERSION:
        return False
    if not all(_json_equal(attrs.get(k), v) for k, v in expected.items()):
        return False
    try:
        return not chunks.check_chunks(target, storage_options)  # cheap: a listing and 4 bytes a chunk
    except Exception:  # unreadable metadata: not up to date (convert rebuilds it, if it is ours)
        return False


def checksummed(ds: xr.Dataset) -> dict[str, dict[str, Any]]:
    """xarray ``encoding`` giving every variable of ``ds`` the store's codecs (:data:`COMPRESSORS`)."""
    return {str(name): {"compressors": COMPRESSORS} for name in ds.variables}


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
    storage_options = kwargs.get("storage_options")
    if not isinstance(path, (str, os.PathLike)):  # a zarr Store object (a wrapper counting reads): as xarray reads it
        return _open_plain(path, **kwargs)
    try:
        group = chunks.open_group(path, storage_options)  # the metadata, read once (consolidated)
    except Exception as e:
        raise StoreError(f"{path}: not an opto_cube store (no readable Zarr group: {' '.join(str(e).split())})") from e
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
        chunks.read_checked(path, storage_options, (), small=False, shallow=(schema.SPIKE_COUNTS,))
    try:
        ds = xr.open_zarr(path, chunks={}, consolidated=True, **kwargs)
    except (FileNotFoundError, KeyError) as e:
        raise StoreError(f"{path}: not an opto_cube store ({' '.join(str(e).split())})") from e
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
        raise StoreError(f"{zstore}: not an opto_cube store ({' '.join(str(e).split())})") from e
    if schema.SPIKE_COUNTS not in ds:
        raise StoreError(f"{zstore}: not an opto_cube store (no {schema.SPIKE_COUNTS!r} variable)")
    small = [name for name, c in ds.coords.items() if name not in ds.indexes and c.ndim == 1]
    values = dask.compute(*(ds[name].variable for name in small), scheduler="synchronous")
    return ds.assign_coords(dict(zip(small, values, strict=True)))


@contextlib.contextmanager
def atomic_file(target: str | os.PathLike) -> Iterator[Path]:
    """Write one file atomically: yield a temporary path beside ``target``, renamed onto it at the end.

    The parent folder is created if needed. On any error the temporary file
    is removed and ``target`` is left as it was (absent, or the old file).

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> target = Path(tempfile.mkdtemp()) / "out" / "table.csv"
    >>> with atomic_file(target) as tmp:
    ...     _ = tmp.write_text("a,b\\n1,2\\n")
    >>> target.read_text(), sorted(p.name for p in target.parent.iterdir())
    ('a,b\\n1,2\\n', ['table.csv'])
    """
    path = Path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}{_TMP_TAG}{os.getpid()}-{uuid.uuid4().hex[:8]}{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
