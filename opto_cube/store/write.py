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
(:func:`opto_cube.store.chunks.seal`); :func:`open_cube` refuses a store with a
missing chunk or one not in its place and reads the cube through the chunk
checks of :mod:`opto_cube.store.chunks`. Only a folder recognised as an opto_cube
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
from typing import TYPE_CHECKING, Any

import numpy as np
import zarr
import zarr.codecs

from opto_cube import schema
from opto_cube.errors import StoreError, warn
from opto_cube.store import chunks
from opto_cube.store.chunks import StorePath, is_url, read_store_attrs, zarr_store
from opto_cube.store.layout import CubeLayout, Var, zarr_encoding
from opto_cube.store.read import read_checked

if TYPE_CHECKING:
    import dask
    import xarray as xr
else:  # imported on first use: writing a store needs neither (opto_cube.lazy)
    from opto_cube.lazy import LazyModule

    dask, xr = LazyModule("dask"), LazyModule("xarray")

STORE_SUFFIX = ".zarr"
_TMP_TAG = ".tmp-"
_OLD_TAG = ".old-"
# Every stored array's bytes-to-bytes codecs: zstd level 1, then a CRC32C of the compressed chunk (Zarr v3 core
# codec; zarr-python, tensorstore, zarrs and zarrita.js check it on read), so a damaged chunk is an error, never zeros.
COMPRESSORS = (zarr.codecs.ZstdCodec(level=1), zarr.codecs.Crc32cCodec())


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
    a missing one is always damage. Writes inside :func:`atomic_store` keep
    zarr's default, as a new array has no chunks yet.
    """
    key = missing_chunk_option()
    if key is not None:
        zarr.config.set({key: False})
    return key


refuse_missing_chunks()


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
    key = missing_chunk_option()
    if key is not None:  # a new array has no chunks yet: zarr's default while writing
        with zarr.config.set({key: True}):
            with _atomic_store(target, overwrite, storage_options) as path:
                yield path
        return
    with _atomic_store(target, overwrite, storage_options) as path:
        yield path


@contextlib.contextmanager
def _atomic_store(
    target: StorePath, overwrite: bool = False, storage_options: dict[str, Any] | None = None
) -> Iterator[StorePath]:
    if is_url(target):
        with _remote_store(str(target), overwrite, storage_options or {}) as path:
            yield path
        return
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(target)
    if target.exists() or target.is_symlink():
        why = "a symbolic link" if target.is_symlink() else not_ours(target)
        if why is not None:
            raise refusal(target, why)
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
        why = not_ours(target, storage_options)
        if why is not None:
            raise refusal(target, why)
        if is_complete(target, storage_options) and not overwrite:
            raise StoreError(f"{target}: store exists; pass overwrite=True (--overwrite) to rebuild it")
        fs.rm(root, recursive=True)
        # zarr's own (asynchronous) filesystem may have listed the old store while it was checked: forget that
        zarr_store(target, storage_options).fs.invalidate_cache()
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


def _window_sums(template: CubeLayout, trials: slice, block: np.ndarray) -> np.ndarray:
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


class _WindowCounts:
    """``window_counts`` gathered block by block, each block kept compressed (:class:`~opto_cube.binning.TrialParts`).

    Memory held while the cube is written is the blocks' compressed size; the
    whole (cluster, trial, window) array exists only at the end, when the
    count buffers are gone, in the smallest unsigned dtype of its largest count.
    """

    def __init__(self, n_clusters: int, n_trials: int) -> None:
        from opto_cube.binning import TrialParts

        self.parts = TrialParts((n_clusters, n_trials, len(schema.WINDOWS)), 0, np.uint8)
        self.largest = 0

    def add(self, trials: slice, part: np.ndarray) -> None:
        if part.dtype != np.uint8:  # the binner's blocks come in their smallest dtype: a uint8 one needs no scan
            self.largest = max(self.largest, int(part.max(initial=0)))
        self.parts.add(trials, part)

    @property
    def values(self) -> np.ndarray:
        from opto_cube.binning import smallest_uint

        return self.parts.assemble(smallest_uint(self.largest))


def _write_window_counts(group: zarr.Group, layout: CubeLayout, windows: _WindowCounts) -> None:
    """Create ``window_counts`` in the smallest unsigned dtype of its counts and write every chunk of it."""
    values = windows.values
    chunk_shape = window_counts_chunks(values.shape[0], values.shape[1], values.dtype.itemsize)
    _write_whole(group, layout, schema.WINDOW_COUNTS, values, chunk_shape, 0)


def _write_whole(
    group: zarr.Group, layout: CubeLayout, name: str, values: np.ndarray, chunk_shape: tuple[int, ...], fill: int
) -> None:
    """Create array ``name`` with the metadata xarray gives it and write ``values`` chunk by chunk from views."""
    array = group.create_array(
        name, shape=values.shape, dtype=values.dtype, chunks=chunk_shape, compressors=COMPRESSORS, fill_value=fill,
        dimension_names=layout[name].dims, attributes=zarr_encoding(layout, name)["attributes"],
        config={"write_empty_chunks": True},
    )  # fmt: skip
    for index in np.ndindex(*array.cdata_shape):
        block = tuple(slice(i * c, (i + 1) * c) for i, c in zip(index, chunk_shape, strict=True))
        array[block] = values[block]


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

    def __init__(self, template: CubeLayout) -> None:
        self.codes = np.asarray(template[schema.TRIAL_CONDITION].values, np.int64)
        centres = np.asarray(template[schema.TIME].values, np.float64)
        durations = np.asarray(template[schema.DURATION].values, np.float64)
        self.start = int(np.searchsorted(centres, 0.0))
        self.stop = np.searchsorted(centres, durations)  # bins with centre < duration: the stim window's end
        sizes = template.sizes
        n_clusters, n_bins = sizes[schema.CLUSTER], sizes[schema.TIME]
        self.time_course = np.zeros((n_clusters, sizes[schema.CONDITION], n_bins), np.uint64)
        self.first_spike = np.full((n_clusters, self.codes.size), -1, np.int32)

    def add(self, trials: slice, block: np.ndarray) -> None:
        from opto_cube.analysis.latency import first_spike_bins

        code = self.codes[trials]
        order = np.argsort(code, kind="stable")
        starts = np.flatnonzero(np.r_[True, code[order][1:] != code[order][:-1]])
        if block.shape[0] and code.size:
            self.time_course[:, code[order][starts]] += np.add.reduceat(
                block[:, order], starts, axis=1, dtype=np.uint64
            )
        self.first_spike[:, trials] = first_spike_bins(block, self.start, self.stop[trials])


def _write_timing(group: zarr.Group, layout: CubeLayout, timing: Any) -> None:
    """``condition_counts`` (smallest unsigned dtype of its sums) and ``first_spike_bin``, every chunk written."""
    from opto_cube.binning import smallest_uint

    course = timing.time_course
    first = timing.first_spike
    stim_bins = int(first.max(initial=-1))
    course = course.astype(smallest_uint(int(course.max(initial=0))), order="C")
    first = first.astype(np.int16 if stim_bins <= np.iinfo(np.int16).max else np.int32, copy=False)
    for name, values, fill in ((schema.CONDITION_COUNTS, course, 0), (schema.FIRST_SPIKE_BIN, first, -1)):
        _write_whole(group, layout, name, values, _timing_chunks(values.shape, values.dtype.itemsize), fill)
        del values
    del course, first


def _with_windows(layout: CubeLayout) -> CubeLayout:
    """The layout with a ``window_counts`` placeholder and the ``window`` coordinate, if it lacks them."""
    if schema.WINDOW_COUNTS in layout.data_vars and schema.WINDOW in layout.coords:
        return layout
    counts = layout[schema.SPIKE_COUNTS]
    spec = schema.VARIABLES[schema.WINDOW_COUNTS]
    data_vars = dict(layout.data_vars)
    data_vars.setdefault(
        schema.WINDOW_COUNTS,
        Var(spec.dims, np.broadcast_to(np.uint8(0), (*counts.shape[:2], len(schema.WINDOWS))), dict(spec.attrs)),
    )
    coords = dict(layout.coords)
    coords.setdefault(
        schema.WINDOW,
        Var((schema.WINDOW,), np.array(schema.WINDOWS, dtype=object), dict(schema.VARIABLES[schema.WINDOW].attrs)),
    )
    return CubeLayout(coords, data_vars, layout.attrs, layout.chunks)


def write_coordinates(group: zarr.Group, layout: CubeLayout) -> None:
    """Every coordinate of ``layout`` as its own array, with the metadata and chunks ``xarray.to_zarr`` gives it.

    Zarr's automatic chunks (xarray's choice for in-memory arrays), the
    store's codecs, every chunk written (no fill-value elision).
    """
    for name, var in layout.coords.items():
        enc = zarr_encoding(layout, name)
        array = group.create_array(
            name, shape=var.shape, dtype=enc["dtype"], chunks="auto", compressors=COMPRESSORS,
            fill_value=enc["fill_value"], dimension_names=enc["dimension_names"], attributes=enc["attributes"],
            config={"write_empty_chunks": True},
        )  # fmt: skip
        array[...] = var.data


def write_cube(
    template: CubeLayout | xr.Dataset,
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
        The cube's :class:`~opto_cube.store.layout.CubeLayout` (``chunks``: the
        store's chunks of ``spike_counts``), or the cube as an
        ``xarray.Dataset`` with a ``spike_counts`` whose ``encoding["chunks"]``
        (or, when it is a dask array, whose chunks) are the store's chunks;
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
        :func:`opto_cube.jobs.convert.with_stored_conditions`) and no ``timing`` is
        given, the timing arrays are summed from the blocks.

    Notes
    -----
    Written by zarr alone (no xarray): every array's ``zarr.json`` is the one
    ``xarray.Dataset.to_zarr`` writes (:mod:`opto_cube.store.layout`).
    ``window_counts`` is written with the smallest unsigned dtype that holds
    its largest count, in chunks of :func:`window_counts_chunks`, in the same
    atomic store: a store has both arrays or is not there.
    """
    target = target if is_url(target) else Path(target)
    layout = template if isinstance(template, CubeLayout) else CubeLayout.from_dataset(template)
    layout = _with_windows(layout)
    counts = layout[schema.SPIKE_COUNTS]
    if layout.chunks is None:
        raise ValueError(f"the template gives no chunks of {schema.SPIKE_COUNTS}")
    count_shape = tuple(max(1, min(int(c), n)) for c, n in zip(layout.chunks, counts.shape, strict=True))
    timed = schema.TRIAL_CONDITION in layout.coords
    from_blocks = _BlockTiming(layout) if timed and timing is None else None
    sizes = layout.sizes
    with atomic_store(target, overwrite=overwrite, storage_options=storage_options) as tmp:
        zstore = zarr_store(tmp, storage_options)
        group = zarr.open_group(zstore, mode="w-", zarr_format=3, attributes=dict(layout.attrs))
        write_coordinates(group, layout)
        # One call per chunk, from a view of the block: zarr then compresses the block's memory as it is
        # (a call that spans chunks first copies each into a fresh buffer), and write_empty_chunks skips
        # zarr's scan of every chunk for all-fill values. Those two were 2/3 of the write time
        # (benchmarks/README.md, "Writing the cube"). The chunks of a block are written concurrently.
        array = group.create_array(
            schema.SPIKE_COUNTS, shape=counts.shape, chunks=count_shape, dtype=counts.dtype,
            compressors=COMPRESSORS, fill_value=0, dimension_names=counts.dims,
            attributes=zarr_encoding(layout, schema.SPIKE_COUNTS)["attributes"], config={"write_empty_chunks": True},
        )  # fmt: skip
        step = array.chunks[0]
        from concurrent.futures import ThreadPoolExecutor

        # Pipelined: a block's chunks are handed to the threads, then the next block is asked for (binned
        # by the nogil kernel while zstd runs), and only then are the first block's writes awaited. So a
        # block must stay valid until the next-but-one is asked for (iter_count_chunks(..., buffers=2)).
        # Each block's window counts go into one (cluster, trial, window) array as they come: no list of parts.
        windows = _WindowCounts(sizes[schema.CLUSTER], sizes[schema.TRIAL])
        pending: list[Any] = []
        with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
            try:
                for trials, block, *window in count_chunks:
                    for future in pending:
                        future.result()
                    pending = [
                        pool.submit(array.__setitem__, (slice(c, c + step), trials, slice(None)), block[c : c + step])
                        for c in range(0, block.shape[0], step)
                    ]
                    windows.add(trials, window[0] if window else _window_sums(layout, trials, block))
                    del window
                    if from_blocks is not None:
                        from_blocks.add(trials, block)
                for future in pending:
                    future.result()
            finally:
                for future in pending:
                    future.cancel()
        _write_window_counts(group, layout, windows)
        del windows
        if timed:
            _write_timing(group, layout, timing if timing is not None else from_blocks)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
            chunks.seal(zstore, tmp, storage_options)  # the chunks' checksums, then the completion mark, last
    return target


# --------------------------------------------------------------------------
# Ownership and freshness of a store
# --------------------------------------------------------------------------
# What operating systems leave in folders they show (Finder, Explorer): never a reason to call a store foreign.
OS_LITTER = frozenset({".DS_Store", "Thumbs.db", "desktop.ini", "Icon\r"})


def is_litter(name: str) -> bool:
    """Whether a file named ``name`` is one an operating system leaves behind (``.DS_Store``, ``._*``, ``Thumbs.db``).

    Examples
    --------
    >>> [is_litter(n) for n in (".DS_Store", "._zarr.json", "Thumbs.db", "zarr.json", "notes.txt")]
    [True, True, True, False, False]
    """
    return name in OS_LITTER or name.startswith("._")


def _read_key(path: StorePath, key: str, storage_options: dict[str, Any] | None = None) -> bytes | None:
    """The bytes of one key (file) of a store, or None when it is not there."""
    try:
        if is_url(path):
            import fsspec

            with fsspec.open(f"{str(path).rstrip('/')}/{key}", "rb", **(storage_options or {})) as f:
                return bytes(f.read())
        return (Path(path) / key).read_bytes()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None


def _own_group(path: StorePath, storage_options: dict[str, Any] | None = None) -> Any:
    """The store's root group from each node's own ``zarr.json`` (never the consolidated copy)."""
    return zarr.open_group(zarr_store(path, storage_options, read_only=True), mode="r", use_consolidated=False)


def _foreign_entry(root: Path) -> str | None:
    """Why a local folder is not laid out as a store opto_cube writes (zarr.json and array folders); None if it is."""
    if not root.is_dir():
        return "not a folder"
    for entry in root.iterdir():
        if entry.name == "zarr.json" or is_litter(entry.name):
            continue
        if not (entry.is_dir() and not entry.is_symlink() and (entry / "zarr.json").is_file()):
            return f"it holds {entry.name!r}, which a conversion does not write"
    return None


def _unsealed_or_other_chunks(
    path: StorePath, attrs: dict[str, Any], storage_options: dict[str, Any] | None
) -> str | None:
    """Why a store of format 2 carrying opto_cube's attributes is not a sealed conversion; None when it is one."""
    if not attrs.get(schema.ATTR_COMPLETE):
        return None if is_url(path) else "no completion mark (a conversion seals every store it writes)"
    manifest = attrs.get(schema.ATTR_CHUNK_CRC32C)
    if not isinstance(manifest, dict):
        return f"no chunk manifest ({schema.ATTR_CHUNK_CRC32C!r})"
    try:
        group = _own_group(path, storage_options)
        expected = chunks.expected_chunks(group)
        shape = group[schema.SPIKE_COUNTS].shape if schema.SPIKE_COUNTS in group else None
    except Exception as e:
        return f"its array metadata cannot be read ({' '.join(str(e).split())})"
    if shape is None:
        return f"no {schema.SPIKE_COUNTS!r} array"
    if set(expected) != set(manifest):
        return "its chunks are not those its manifest records (a copy or subset of a cube, not a conversion)"
    counted = (attrs.get("n_clusters"), attrs.get("n_trials"))
    if all(isinstance(n, int) for n in counted) and tuple(shape[:2]) != counted:
        return f"its cube is {tuple(shape)} but its attributes count {counted[0]} clusters and {counted[1]} trials"
    return None


def not_ours(path: StorePath, storage_options: dict[str, Any] | None = None) -> str | None:
    """Why ``path`` is not an opto_cube store that opto_cube may replace; None when it is one.

    Ours is what a conversion sealed: a Zarr group carrying opto_cube's format
    version, its completion mark and its chunk manifest, whose manifest names
    exactly the chunks its arrays' own metadata make and whose cube has the
    clusters and trials its attributes count. A copy or subset of a cube saved
    by xarray (``cube.isel(...).to_zarr(...)``) carries the attributes but not
    those chunks, so it is not ours. A store on object storage may be unsealed
    (a conversion there writes in place): it is ours when the rest holds. Files
    that operating systems leave behind (:func:`is_litter`) are tolerated.
    """
    attrs = read_store_attrs(path, storage_options)
    if attrs is None:
        return "no readable Zarr group metadata"
    if not (schema.ATTR_FORMAT_VERSION in attrs or schema.ATTR_VERSION in attrs):
        return "no opto_cube metadata"
    why = None if is_url(path) else _foreign_entry(Path(path))
    if why is not None:
        return why
    if chunks.format_version(attrs) < schema.FORMAT_VERSION:
        return None  # a store of an older format, recognised by its attributes alone (it has no manifest)
    return _unsealed_or_other_chunks(path, attrs, storage_options)


def is_ours(path: StorePath, storage_options: dict[str, Any] | None = None) -> bool:
    """Whether ``path`` holds an opto_cube store, sealed by a conversion, that opto_cube may replace.

    See :func:`not_ours` for the rule. Anything else (a user's folder, a plain
    file, another Zarr store, a subset of a cube saved with xarray) is never
    replaced.
    """
    return not_ours(path, storage_options) is None


def _metadata_disagreement(path: StorePath, storage_options: dict[str, Any] | None, names: list[str]) -> str | None:
    """Where the consolidated metadata in the root zarr.json disagrees with the arrays' own; None when it does not."""
    root = json.loads(_read_key(path, "zarr.json", storage_options) or b"{}")
    consolidated = (root.get("consolidated_metadata") or {}).get("metadata")
    if not isinstance(consolidated, dict):
        return f"{path}: no consolidated metadata in zarr.json"
    if sorted(consolidated) != names:
        return f"{path}: the consolidated metadata lists {sorted(consolidated)} but the store holds arrays {names}"
    for name in names:
        try:
            own = json.loads(_read_key(path, f"{name}/zarr.json", storage_options) or b"null")
        except ValueError:
            own = None
        if not _json_equal(own, consolidated[name]):
            return f"{path}: {name}/zarr.json disagrees with its copy in the consolidated metadata (zarr.json)"
    return None


def _chunk_damage(
    path: StorePath, keys: list[str], manifest: dict[str, Any], storage_options: dict[str, Any] | None
) -> str | None:
    """The first chunk whose stored bytes do not end with their CRC32C and the one recorded for its place."""
    import google_crc32c

    for key in keys:
        data = _read_key(path, key, storage_options)
        if data is None:
            return f"{path}: chunk {key} is missing (deleted or never written)"
        if len(data) < 4 or google_crc32c.value(data[:-4]).to_bytes(4, "little") != data[-4:]:
            return f"{path}: chunk {key} is corrupt (its bytes do not match their CRC32C)"
        if data[-4:].hex() != manifest[key]:
            return f"{path}: chunk {key} is not the chunk written there (moved, swapped or re-encoded)"
    return None


def damage(path: StorePath, storage_options: dict[str, Any] | None = None) -> str | None:
    """The first damage found in a sealed store, one line naming store and chunk; None when it is whole.

    Every chunk's stored bytes are read whole (not decompressed) and their
    CRC32C computed: the bytes must end with that checksum and with the one
    the manifest recorded for the chunk's place, so a byte flipped anywhere,
    a truncated, missing, moved or swapped chunk is found. Each array's own
    metadata must equal its copy in the consolidated metadata (an edited shape
    or codec in either is damage). About the cost of reading the store once.
    """
    attrs = read_store_attrs(path, storage_options) or {}
    manifest = attrs.get(schema.ATTR_CHUNK_CRC32C)
    if not attrs.get(schema.ATTR_COMPLETE) or not isinstance(manifest, dict):
        return f"{path}: unfinished (no completion mark or no chunk manifest)"
    try:
        group = _own_group(path, storage_options)
        names = sorted(name for name, _ in group.arrays())
        expected = chunks.expected_chunks(group)
    except Exception as e:
        return f"{path}: its array metadata cannot be read ({' '.join(str(e).split())})"
    problem = _metadata_disagreement(path, storage_options, names)
    if problem is None and set(expected) != set(manifest):
        problem = f"{path}: its chunks are not those its manifest records"
    return problem or _chunk_damage(path, sorted(expected), manifest, storage_options)


def is_up_to_date(target: StorePath, expected: dict[str, Any], storage_options: dict[str, Any] | None = None) -> bool:
    """Whether the complete store at ``target`` was built from the same sources with the same parameters, and is whole.

    Whole as :func:`damage` finds it: every chunk's bytes against their CRC32C
    and the manifest, each array's metadata against the consolidated copy.
    """
    attrs = read_store_attrs(target, storage_options)
    if not attrs or not attrs.get(schema.ATTR_COMPLETE) or chunks.format_version(attrs) < schema.FORMAT_VERSION:
        return False
    if not all(_json_equal(attrs.get(k), v) for k, v in expected.items()):
        return False
    try:
        return damage(target, storage_options) is None
    except Exception:  # unreadable metadata: not up to date (convert rebuilds it, if it is ours)
        return False


# parameters that make a store what it is: another value is another product, never replaced without --overwrite
_PARAMETERS = (schema.ATTR_BIN_WIDTH, schema.ATTR_WINDOW, schema.ATTR_TIP_OFFSET)


def refusal(target: StorePath, why: str) -> StoreError:
    """The one-line refusal to replace what is at ``target``, saying how to go on."""
    return StoreError(
        f"{target}: exists and is not an opto_cube store ({why}); refusing to replace it (left untouched):"
        " move it away or choose another --out"
    )


def plan_write(
    target: StorePath, expected: dict[str, Any], overwrite: bool = False, storage_options: dict[str, Any] | None = None
) -> str:
    """What a conversion does about ``target``: ``"write"`` (absent, or ours and to be rebuilt) or ``"skip"``.

    - absent: write;
    - not ours (:func:`not_ours`): refused, even with ``overwrite``;
    - ours, built with other parameters (bin width, window, tip offset):
      refused without ``overwrite`` (it is another product, not a stale one);
    - ours, damaged (:func:`damage`), of an older format, or from sources that
      changed since: rebuilt;
    - ours, whole, same sources and parameters: skipped (rebuilt with ``overwrite``).

    Raises
    ------
    StoreError
        One line naming the store and saying what to do.
    """
    exists = _exists(target, storage_options)
    if not exists:
        return "write"
    why = not_ours(target, storage_options)
    if why is not None:
        raise refusal(target, why)
    if overwrite:
        return "write"
    attrs = read_store_attrs(target, storage_options) or {}
    if chunks.format_version(attrs) < schema.FORMAT_VERSION or not attrs.get(schema.ATTR_COMPLETE):
        return "write"
    differ = [
        f"{key} {json.dumps(attrs.get(key))} (this run: {json.dumps(expected[key])})"
        for key in _PARAMETERS
        if key in expected and not _json_equal(attrs.get(key), expected[key])
    ]
    if differ:
        raise StoreError(
            f"{target}: holds this session converted with {', '.join(differ)}; pass --overwrite to replace it,"
            " or choose another --out"
        )
    return "skip" if is_up_to_date(target, expected, storage_options) else "write"


def _exists(target: StorePath, storage_options: dict[str, Any] | None) -> bool:
    if is_url(target):
        import fsspec

        fs, root = fsspec.core.url_to_fs(str(target), **(storage_options or {}))
        return bool(fs.exists(root))
    return os.path.lexists(target)


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
    >>> from opto_cube import synth
    >>> from opto_cube.jobs import convert
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
        read_checked(path, storage_options, (), small=False, shallow=(schema.SPIKE_COUNTS,))
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
