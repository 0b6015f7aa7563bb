"""One session, one dask task: open the store where the task runs, return small results.

:func:`session_results` is the work of one session: it opens the store itself
(on a worker, when a ``distributed.Client`` is active), reads the small
coordinates and ``window_counts`` (and the stored timing arrays) with plain
numpy, computes that session's rows of the responses table and, when asked, its
per-condition time course (the stored ``condition_counts``; one pass over the
cube only for a store without them) or its part of the population PSTH, and
returns those small results (:class:`SessionResults`). :func:`session_tasks`
makes one ``dask.delayed`` task of it per session; :mod:`opto_cube.jobs.pipeline`
computes them at once (the default threads, processes and a
``distributed.Client`` all run them) and builds its jobs on the results.

Examples
--------
>>> import tempfile, warnings
>>> from opto_cube import synth
>>> from opto_cube.jobs import convert
>>> root = tempfile.mkdtemp()
>>> with warnings.catch_warnings():
...     warnings.simplefilter("ignore")
...     for folder in synth.make_dataset(root, n_sessions=1, size="tiny"):
...         _ = convert.convert_session(folder, root + "/stores", bin_ms=10)
>>> (sid, store), = sessions_of(root + "/stores")
>>> result = session_results(store, sid, time_course=True)
>>> set(result.table["session_id"]) == {sid}, result.time_course is not None, result.psth is None
(True, True, True)
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import dask
import numpy as np
import pandas as pd
import xarray as xr

from opto_cube import schema
from opto_cube.analysis import psth, response
from opto_cube.errors import StoreError
from opto_cube.store.catalog import Catalog, sessions_of
from opto_cube.store.write import StorePath

__all__ = ["SessionResults", "session_results", "session_tasks"]


@dataclass(frozen=True)
class SessionResults:
    """What one session's task returns: small, whatever the size of the cube.

    Attributes
    ----------
    session_id
        The session, as the caller named it (the catalog's key).
    table
        The session's rows of the responses table (None when not asked for).
    clusters
        ``session_id, cluster, trough_to_peak_ms`` of every cluster.
    time_course
        :func:`opto_cube.analysis.psth.condition_time_course` of the cube (None unless kept: it is large at 1 ms).
    psth
        The session's part of the maps' population PSTH (:func:`opto_cube.analysis.psth.session_psth`), when asked for.
    bin_width_s
        The cube's bin width.
    timing_note
        Why the table's timing columns are NaN (:func:`opto_cube.analysis.response.timing_status`), or None.
    """

    session_id: str
    table: pd.DataFrame | None
    clusters: pd.DataFrame
    time_course: xr.Dataset | None
    psth: xr.DataArray | None
    bin_width_s: float
    timing_note: str | None = None


class _InMemory:
    """A cube handed to a task as it is (dask must not compute a Dataset argument before the call)."""

    def __init__(self, cube: xr.Dataset) -> None:
        self.cube = cube


_SMALL = (  # what a task reads besides window_counts: the coordinates of the table and the conditions
    schema.EMITTER,
    schema.POWER,
    schema.DURATION,
    schema.EMITTER_DEPTH,
    schema.DEPTH_FROM_SURFACE,
    schema.WAVEFORM_TYPE,
    schema.QC_PASS,
    schema.TROUGH_TO_PEAK,
    schema.TRIAL_CONDITION,  # the stored timing's conditions (schema "Stored timing")
    *schema.STORED_CONDITION_COORDS,
)
_INDEXES = (schema.CLUSTER, schema.TRIAL, schema.TIME, schema.WINDOW)
_ARRAYS = (schema.WINDOW_COUNTS, *schema.TIMING_ARRAYS)  # the small arrays a task reads (never spike_counts)


def _open(path: StorePath, storage_options: dict[str, Any] | None, cube: bool, timing: bool = True) -> xr.Dataset:
    """A store opened for one task, numpy-backed (no dask graph).

    For the responses alone (``cube=False``) of a store with ``window_counts``:
    the consolidated metadata in one read, then ``window_counts`` and the small
    coordinates the table needs read concurrently (one round trip's latency,
    not one per array), nothing else. Otherwise the whole store through
    :func:`xarray.open_zarr`, every array read when asked for.
    """
    if not cube:
        fast = _read_small(path, storage_options, timing)
        if fast is not None:
            return fast
    options: dict[str, Any] = {"storage_options": storage_options} if storage_options else {}
    try:
        ds = xr.open_zarr(path, chunks=None, consolidated=True, **options)
    except (FileNotFoundError, KeyError, ValueError) as e:
        raise StoreError(f"{path}: not an opto_cube store ({' '.join(str(e).split())})") from e
    if schema.SPIKE_COUNTS not in ds:
        raise StoreError(f"{path}: not an opto_cube store (no {schema.SPIKE_COUNTS!r} variable)")
    return ds


def _read_small(path: StorePath, storage_options: dict[str, Any] | None, timing: bool = True) -> xr.Dataset | None:
    """``window_counts`` and the small coordinates of a format-2 store, read at once; None for a format-1 store."""
    import asyncio

    import zarr
    from zarr.core.metadata import ArrayV3Metadata
    from zarr.core.sync import sync

    from opto_cube.store.write import zarr_store

    try:
        group = zarr.open_group(zarr_store(path, storage_options, read_only=True), mode="r", use_consolidated=True)
        members = dict(group.members())
    except (FileNotFoundError, KeyError, ValueError, zarr.errors.GroupNotFoundError) as e:
        raise StoreError(f"{path}: not an opto_cube store ({' '.join(str(e).split())})") from e
    wanted = _ARRAYS if timing else (schema.WINDOW_COUNTS,)
    names = [n for n in (*wanted, *_INDEXES, *_SMALL) if n in members]
    if schema.WINDOW_COUNTS not in names or schema.SPIKE_COUNTS not in members:
        return None
    arrays: dict[str, zarr.Array] = {}
    dims: dict[str, tuple[str, ...]] = {}
    for n in names:
        member = members[n]
        if not isinstance(member, zarr.Array) or not isinstance(member.metadata, ArrayV3Metadata):
            return None  # not a store this reader knows: the general path below decides
        arrays[n] = member
        dims[n] = tuple(str(d) for d in member.metadata.dimension_names or ())

    async def read_all() -> list[Any]:
        return await asyncio.gather(*(arrays[n]._async_array.getitem(...) for n in names))

    values = dict(zip(names, sync(read_all()), strict=True))
    variables = {
        n: xr.Variable(
            dims[n],
            np.asarray(values[n]),
            {k: v for k, v in arrays[n].attrs.items() if not k.startswith("_")},
        )
        for n in names
    }
    data = {n: variables.pop(n) for n in _ARRAYS if n in variables}
    return xr.Dataset(data, coords=variables, attrs=dict(group.attrs))


def session_results(
    store_or_cube: Any,
    session_id: str | None = None,
    *,
    by: Any = None,
    mode: str = schema.MODE_PER_CONDITION,
    significant_by: str = "p",
    timing: bool = True,
    table: bool = True,
    time_course: bool = False,
    psth_options: dict[str, Any] | None = None,
    storage_options: dict[str, Any] | None = None,
) -> SessionResults:
    """One session's results: its responses table and, if asked, its per-condition time course.

    Parameters
    ----------
    store_or_cube
        A store path or URL (opened here, without dask), or an opened cube.
    session_id
        The session's id in the results; default the cube's ``session_id`` attribute.
    by, mode, significant_by, timing
        As in :func:`opto_cube.analysis.response.responses`.
    table
        Compute the responses (from ``window_counts`` and the stored timing arrays; no read of the cube).
    time_course
        Also return the per-condition time course (:func:`opto_cube.analysis.psth.condition_time_course`:
        the stored ``condition_counts``, or one pass over ``spike_counts`` for a store without them).
    psth_options
        Keyword arguments of :func:`opto_cube.analysis.psth.session_psth`: compute the session's
        part of the population PSTH from that pass (and return it, not the time course).
    storage_options
        For a URL on object storage.

    Returns
    -------
    SessionResults
    """
    if isinstance(store_or_cube, _InMemory):
        store_or_cube = store_or_cube.cube
    if isinstance(store_or_cube, xr.Dataset):
        cube, in_memory = store_or_cube, True
    else:
        wants_cube = time_course or psth_options is not None
        cube, in_memory = _open(store_or_cube, storage_options, cube=wants_cube, timing=timing), False
    sid = str(cube.attrs.get(schema.ATTR_SESSION_ID, "")) if session_id is None else session_id
    # a cube passed in may be dask-backed: compute it here, in this task, not on a cluster from inside a task
    with dask.config.set(scheduler="sync") if in_memory else contextlib.nullcontext():
        result = response.responses(cube, by=by, mode=mode, significant_by=significant_by, timing=timing, warn=False)
        rows = response.to_table(result, sid) if table else None
        course = psth.condition_time_course(cube) if time_course or psth_options is not None else None
        piece = (
            psth.session_psth(course, sid, **psth_options) if psth_options is not None and course is not None else None
        )
        clusters = pd.DataFrame(
            {
                schema.SESSION_ID: sid,
                schema.CLUSTER: np.asarray(cube[schema.CLUSTER].values),
                schema.TROUGH_TO_PEAK: np.asarray(cube[schema.TROUGH_TO_PEAK].values),
            }
        )
    width = float(cube.attrs.get(schema.ATTR_BIN_WIDTH, np.nan))
    note = response.timing_status(cube) if table and timing else None
    return SessionResults(sid, rows, clusters, course if time_course else None, piece, width, note)


def session_tasks(source: Any, **kwargs: Any) -> list[Any]:
    """One ``dask.delayed`` :func:`session_results` per session of ``source`` (anything
    :func:`opto_cube.store.catalog.sessions_of` accepts); keyword arguments are passed on."""
    if isinstance(source, Catalog) and source.storage_options:
        kwargs.setdefault("storage_options", source.storage_options)
    task = dask.delayed(session_results, pure=True)
    return [
        task(_InMemory(item) if isinstance(item, xr.Dataset) else item, sid, **kwargs)
        for sid, item in sessions_of(source)
    ]


def _compute(tasks: Sequence[Any]) -> list[SessionResults]:
    return list(dask.compute(*tasks)) if tasks else []
