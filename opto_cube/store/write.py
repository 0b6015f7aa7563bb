"""Writing a store of a cube: atomic, sealed, by zarr alone.

A local store is written in a hidden temporary folder beside its target and
renamed into place at the end (:func:`atomic_store`), so a killed conversion
leaves no store or a complete one; the next run removes what a killed run
left. Object storage (``s3://...`` and other fsspec URLs) has no rename: there
the store is written in place and marked complete (attribute
``opto_cube_complete``) last, and a store without the mark is invisible to
:func:`~opto_cube.store.catalog.open_catalog` and rebuilt by the next
conversion. Stores are Zarr format 3 with consolidated metadata, standard
codecs and variable-length UTF-8 strings, so plain ``xarray.open_zarr`` and
other Zarr implementations read them without opto_cube.

Every chunk is written and its CRC32C recorded before the completion mark
(:func:`opto_cube.store.chunks.seal`). Only a folder recognised as an opto_cube
store by its own metadata is ever replaced
(:func:`opto_cube.store.ownership.is_ours`); anything else in the way is
refused untouched.

The session's ``session.json`` is kept whole under the ``session_json``
attribute; its fields are also copied to the top level except those named
like opto_cube's own attributes (``schema.OWN_ATTRS``, or starting with
``opto_cube``), which only opto_cube writes.
"""

from __future__ import annotations

import contextlib
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
from opto_cube.errors import StoreError
from opto_cube.store import chunks
from opto_cube.store.access import StorePath, is_url, zarr_store
from opto_cube.store.layout import CubeLayout, Var, zarr_encoding
from opto_cube.store.open import missing_chunk_option
from opto_cube.store.ownership import is_complete, not_ours, refusal
from opto_cube.store.paths import OLD_TAG, TMP_TAG, remove_leftovers

WINDOW_COUNTS_CHUNK_BYTES = 64 * 2**20  # window_counts: one chunk along trials unless it would exceed this
TIMING_CHUNK_BYTES = 64 * 2**20  # condition_counts / first_spike_bin: one chunk unless it would exceed this

if TYPE_CHECKING:
    import xarray as xr

__all__ = [
    "COMPRESSORS",
    "atomic_store",
    "checksummed",
    "spike_counts_chunks",
    "window_counts_chunks",
    "write_coordinates",
    "write_cube",
]

# Every stored array's bytes-to-bytes codecs: zstd level 1, then a CRC32C of the compressed chunk (Zarr v3 core
# codec; zarr-python, tensorstore, zarrs and zarrita.js check it on read), so a damaged chunk is an error, never zeros.
COMPRESSORS = (zarr.codecs.ZstdCodec(level=1), zarr.codecs.Crc32cCodec())


def spike_counts_chunks(n_clusters: int, n_trials: int, n_bins: int) -> tuple[int, int, int]:
    """Chunk shape of ``spike_counts``: a block of clusters x a block of trials x every bin.

    Every bin of a trial in one chunk serves both PSTHs and per-trial window
    sums; blocks of clusters and trials keep a slice of a few units and
    trials to one or a few chunks. See benchmarks/README.md for the measurements.
    """
    return (max(1, min(schema.CHUNK_CLUSTERS, n_clusters)), max(1, min(schema.CHUNK_TRIALS, n_trials)), max(1, n_bins))


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
    tmp = target.with_name(f".{target.name}{TMP_TAG}{tag}")
    try:
        yield tmp
        if target.exists():
            old = target.with_name(f".{target.name}{OLD_TAG}{tag}")
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        _remove_unfinished(tmp)
        raise


def _remove_unfinished(tmp: Path) -> None:
    """Remove an unfinished store's folder, and again until it stays gone.

    When one of zarr's concurrent chunk writes fails (a full disk), the others
    under way in zarr's event loop are not cancelled and may still land for a
    few milliseconds after the error reaches us: one removal can leave their files.
    """
    import time

    for delay_s in (0.0, 0.01, 0.05, 0.2):
        time.sleep(delay_s)
        shutil.rmtree(tmp, ignore_errors=True)


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
    trials = max(1, min(n_trials, WINDOW_COUNTS_CHUNK_BYTES // per_trial))
    return (max(1, n_clusters), trials, len(schema.WINDOWS))


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
    """Chunks of a timing array: whole unless larger than ``TIMING_CHUNK_BYTES``, then split by clusters.

    Examples
    --------
    >>> _timing_chunks((300, 84, 1500), 2), _timing_chunks((300, 4200), 2)
    ((266, 84, 1500), (300, 4200))
    """
    per_cluster = max(1, int(np.prod(shape[1:], dtype=np.int64)) * itemsize)
    clusters = max(1, min(shape[0], TIMING_CHUNK_BYTES // per_cluster))
    return (clusters, *(max(1, n) for n in shape[1:]))


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
    count_chunks: Iterable[tuple[slice, np.ndarray, np.ndarray]],
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
        ``(trial slice, counts[cluster, trials, time], windows[cluster, trials,
        window])`` blocks (as :func:`opto_cube.binning.iter_count_chunks`
        yields them) that cover every trial once, each a whole number of
        trial chunks. A block is compressed while the next one is made: it
        must stay valid until the next-but-one is asked for.
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
        :func:`opto_cube.jobs.convert.with_stored_conditions`), it is required:
        its arrays are written once every block has been.

    Raises
    ------
    ValueError
        A block without its window counts, or a template with stored
        conditions and no ``timing``.

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
    if timed and timing is None:
        raise ValueError(
            f"the template has stored conditions ({schema.TRIAL_CONDITION}): give the Timing that count_chunks fills"
        )
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
                    if not window:
                        raise ValueError(f"the block of trials {trials} has no window counts (trials, counts, windows)")
                    for future in pending:
                        future.result()
                    pending = [
                        pool.submit(array.__setitem__, (slice(c, c + step), trials, slice(None)), block[c : c + step])
                        for c in range(0, block.shape[0], step)
                    ]
                    windows.add(trials, window[0])
                    del window
                for future in pending:
                    future.result()
            finally:
                for future in pending:
                    future.cancel()
        _write_window_counts(group, layout, windows)
        del windows
        if timed:
            _write_timing(group, layout, timing)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
            chunks.seal(zstore, tmp, storage_options)  # the chunks' checksums, then the completion mark, last
    return target


def checksummed(ds: xr.Dataset) -> dict[str, dict[str, Any]]:
    """xarray ``encoding`` giving every variable of ``ds`` the store's codecs (:data:`COMPRESSORS`)."""
    return {str(name): {"compressors": COMPRESSORS} for name in ds.variables}
