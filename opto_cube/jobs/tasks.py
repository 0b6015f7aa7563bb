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
>>> from opto_cube.jobs.demo import example_stores
>>> (sid, store), = sessions_of(example_stores() / "stores")
>>> result = session_results(store, sid, time_course=True)
>>> set(result.table["session_id"]) == {sid}, result.time_course is not None, result.psth is None
(True, True, True)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import dask
import numpy as np
import pandas as pd
import xarray as xr

from opto_cube import schema
from opto_cube.analysis import psth, response
from opto_cube.analysis import response_core as core
from opto_cube.analysis.conditions import check_by
from opto_cube.analysis.latency import light_artifacts
from opto_cube.errors import StoreError
from opto_cube.store.access import StorePath
from opto_cube.store.catalog import Catalog, sessions_of, summary_row

if TYPE_CHECKING:
    from opto_cube.store.read import CheckedRead

__all__ = ["AnalysisPass", "SessionResults", "analysis_pass", "session_results", "session_tasks"]


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
    summary
        The session's row of :meth:`opto_cube.store.catalog.Catalog.summary` (its ``light_artifacts`` from
        the responses' ``light_artifact`` when they were computed: never a second artifact test).
    """

    session_id: str
    table: pd.DataFrame | None
    clusters: pd.DataFrame
    time_course: xr.Dataset | None
    psth: xr.DataArray | None
    bin_width_s: float
    timing_note: str | None = None
    summary: dict[str, Any] | None = None


PASS_COUNT = [0]  # session passes run in this process (tests count them: one per session per job)


class _InMemory:
    """A cube handed to a task as it is (dask must not compute a Dataset argument before the call)."""

    def __init__(self, cube: xr.Dataset) -> None:
        self.cube = cube


_TABLE_COORDS = (  # the coordinates the responses table and the summary row read
    schema.CLUSTER,
    schema.TRIAL,
    schema.TIME,
    schema.WINDOW,
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


_TIMING_DIMS = {  # the stored timing arrays, in the order the kernels read them
    schema.CONDITION_COUNTS: (schema.CLUSTER, schema.CONDITION, schema.TIME),
    schema.FIRST_SPIKE_BIN: (schema.CLUSTER, schema.TRIAL),
}


def _read(path: StorePath, storage_options: dict[str, Any] | None, cube: bool, timing: bool = True) -> CheckedRead:
    """What one task reads of a store, through the one checked reader (:func:`opto_cube.store.read.read_checked`).

    ``window_counts``, the stored timing arrays (with ``timing``) and, with
    ``cube``, ``condition_counts`` (the per-condition time course) and every
    coordinate, else the coordinates the table reads, eagerly and together:
    every byte of what is read matches its CRC32C, every other chunk of the
    store (``spike_counts``) is present and in place (its last 4 bytes; on
    S3 nothing more is downloaded of it), or one :class:`StoreError` names
    store and chunk. Its bytes are checked by what reads it.
    A store without those arrays (written before them) is opened with
    :func:`opto_cube.store.open.open_cube` (checked as each chunk is read).
    """
    from opto_cube.store.read import read_checked

    names = [schema.WINDOW_COUNTS, *(schema.TIMING_ARRAYS if timing else ())]
    if cube and schema.CONDITION_COUNTS not in names:
        names.append(schema.CONDITION_COUNTS)
    # the table needs a few coordinates; the time course keeps them all
    read = read_checked(path, storage_options, names if cube else [*names, *_TABLE_COORDS], small=cube, deep=False)
    if schema.SPIKE_COUNTS not in read.shapes:
        raise StoreError(f"{path}: not an opto_cube store (no {schema.SPIKE_COUNTS!r} variable)")
    return read


def _open(path: StorePath, storage_options: dict[str, Any] | None, cube: bool, timing: bool = True) -> xr.Dataset:
    """A store opened for one task: what :func:`_read` read as a Dataset; a store without those arrays
    (written before them) opened with :func:`opto_cube.store.open.open_cube` (checked as each chunk is read)."""
    return _dataset(_read(path, storage_options, cube, timing), path, storage_options, cube)


def _dataset(read: CheckedRead, path: StorePath, storage_options: dict[str, Any] | None, cube: bool) -> xr.Dataset:
    from opto_cube.store.open import open_cube

    if schema.WINDOW_COUNTS in read.arrays and (not cube or schema.CONDITION_COUNTS in read.arrays):
        return read.dataset()
    options = {"storage_options": storage_options} if storage_options else {}
    return open_cube(path, **options)  # a store written before window_counts / condition_counts


class _Arrays:
    """What a task read, as much of a Dataset as the summary row reads (``attrs``, ``sizes``, ``variables``,
    ``[name].values`` and ``.transpose``), without building one."""

    def __init__(self, read: CheckedRead) -> None:
        self.attrs, self.variables, self._dims = read.attrs, read.arrays, read.dims
        self.sizes = {d: n for name, a in read.arrays.items() for d, n in zip(read.dims[name], a.shape, strict=True)}

    def __getitem__(self, name: str) -> _Values:
        return _Values(self.variables[name], self._dims[name])


class _Values:
    def __init__(self, values: np.ndarray, dims: tuple[str, ...]) -> None:
        self.values, self.dims = values, dims

    def transpose(self, *dims: str) -> _Values:
        return _Values(np.transpose(self.values, [self.dims.index(d) for d in dims]), dims)


def _ordered(arrays: _Arrays, name: str, *dims: str) -> np.ndarray:
    return arrays[name].transpose(*dims).values


def _table_from_read(
    read: CheckedRead, sid: str, *, by: Any, mode: str, significant_by: str, timing: bool
) -> tuple[pd.DataFrame, np.ndarray | None, str | None]:
    """The session's rows straight from the arrays read (:func:`opto_cube.analysis.response_core.session_columns`,
    one DataFrame): the same table as ``to_table(responses(read.dataset()))``, no xarray object built.
    Also the per-cluster ``light_artifact`` flags (None when the timing columns are NaN) and the timing note."""
    by_keys = check_by(by, mode)
    if significant_by not in schema.SIGNIFICANT_BY:
        raise ValueError(f"significant_by must be one of {schema.SIGNIFICANT_BY}, got {significant_by!r}")
    arrays = _Arrays(read)
    counts = _ordered(arrays, schema.WINDOW_COUNTS, schema.CLUSTER, schema.TRIAL, schema.WINDOW)
    if schema.WINDOW in read.arrays and list(read.arrays[schema.WINDOW]) != list(schema.WINDOWS):
        counts = counts[..., [list(read.arrays[schema.WINDOW]).index(w) for w in schema.WINDOWS]]
    stored = {name: _ordered(arrays, name, *dims) for name, dims in _TIMING_DIMS.items() if name in read.arrays}
    has_arrays = len(stored) == len(_TIMING_DIMS) and schema.TRIAL_CONDITION in read.arrays
    note = core.timing_note(
        read.attrs.get(schema.ATTR_SESSION_ID, "?"), has_arrays, read.attrs.get(schema.ATTR_BIN_WIDTH, np.nan)
    )
    columns = core.session_columns(
        counts, read.arrays, read.attrs, arrays.sizes[schema.TIME],
        course=stored.get(schema.CONDITION_COUNTS), first=stored.get(schema.FIRST_SPIKE_BIN), session_id=sid,
        by=by_keys, mode=mode, significant_by=significant_by, timing=timing,
    )  # fmt: skip
    flags = None
    if timing and note is None:  # rows by cluster, then condition: every n_conditions-th row starts a cluster
        qc = np.asarray(read.arrays[schema.QC_PASS], bool)
        n_clusters = int(qc.sum()) if mode == schema.MODE_PUBLISHED else qc.size
        n_rows = columns[schema.LIGHT_ARTIFACT].size
        flags = columns[schema.LIGHT_ARTIFACT][:: n_rows // n_clusters] if n_clusters else np.zeros(0, bool)
    return response.table_frame(columns, mode == schema.MODE_PUBLISHED), flags, note if timing else None


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
    wants_cube = time_course or psth_options is not None
    if isinstance(store_or_cube, xr.Dataset):
        cube = store_or_cube
    else:
        read = _read(store_or_cube, storage_options, cube=wants_cube, timing=timing)
        if table and not wants_cube and schema.WINDOW_COUNTS in read.arrays:  # the table alone: no Dataset
            PASS_COUNT[0] += 1
            sid = str(read.attrs.get(schema.ATTR_SESSION_ID, "")) if session_id is None else session_id
            rows, artifacts, note = _table_from_read(
                read, sid, by=by, mode=mode, significant_by=significant_by, timing=timing
            )
            arrays = _Arrays(read)
            clusters = pd.DataFrame(
                {
                    schema.SESSION_ID: sid,
                    schema.CLUSTER: np.asarray(read.arrays[schema.CLUSTER]),
                    schema.TROUGH_TO_PEAK: np.asarray(read.arrays[schema.TROUGH_TO_PEAK]),
                }
            )
            found = artifacts if artifacts is not None and by is None else light_artifacts(arrays)  # type: ignore[arg-type]
            summary = summary_row(sid, arrays, found)  # type: ignore[arg-type]
            width = float(read.attrs.get(schema.ATTR_BIN_WIDTH, np.nan))
            return SessionResults(sid, rows, clusters, None, None, width, note, summary)
        cube = _dataset(read, store_or_cube, storage_options, wants_cube)
    PASS_COUNT[0] += 1
    sid = str(cube.attrs.get(schema.ATTR_SESSION_ID, "")) if session_id is None else session_id
    # a cube passed in may be dask-backed: compute it here, in this task, not on a cluster from inside a task
    with dask.config.set(scheduler="sync"):
        result = response.responses(cube, by=by, mode=mode, significant_by=significant_by, timing=timing, warn=False)
        result = result.load() if table else result
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
        note = response.timing_status(cube) if timing else None
        flags: np.ndarray | None
        if table and timing and note is None and by is None:  # the stored conditions: the summary's own test
            flags = np.asarray(result[schema.LIGHT_ARTIFACT].values, bool)
        else:
            flags = light_artifacts(cube)
        summary = summary_row(sid, cube, flags)
    width = float(cube.attrs.get(schema.ATTR_BIN_WIDTH, np.nan))
    return SessionResults(
        sid, rows, clusters, course if time_course else None, piece, width, note if table else None, summary
    )


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


@dataclass(frozen=True)
class AnalysisPass:
    """The computed results of one pass over a catalog: made once per job, read by every part of it.

    One task per session (:func:`session_results`, the store opened once,
    where the task runs); the responses table, the maps, the report and the
    demo read their parts from here and compute none of them again (as a
    SpikeInterface extension is computed once and read by its dependents).

    Attributes
    ----------
    sessions
        Each session's :class:`SessionResults`, in the catalog's order.
    options
        What the pass computed: ``by``, ``mode``, ``significant_by``, ``timing``, ``table``, ``psth_options``.
    """

    sessions: tuple[SessionResults, ...]
    options: dict[str, Any]

    @property
    def table(self) -> pd.DataFrame:
        """The responses table (every session's rows; :func:`opto_cube.jobs.pipeline.responses_table`)."""
        tables = [r.table for r in self.sessions if r.table is not None]
        return pd.concat(tables, ignore_index=True) if tables else response.empty_table()

    @property
    def clusters(self) -> pd.DataFrame:
        """``session_id, cluster, trough_to_peak_ms`` of every cluster of every session."""
        return pd.concat([r.clusters for r in self.sessions], ignore_index=True)

    @property
    def psths(self) -> list[xr.DataArray | None]:
        """Each session's part of the population PSTH (None where not computed)."""
        return [r.psth for r in self.sessions]

    @property
    def bin_widths(self) -> list[float]:
        """Each session's bin width, s."""
        return [r.bin_width_s for r in self.sessions]

    @property
    def summary(self) -> pd.DataFrame:
        """The catalog summary (:meth:`Catalog.summary`), from the pass: no store opened again."""
        from opto_cube.store.catalog import SUMMARY_COLUMNS

        return pd.DataFrame([r.summary for r in self.sessions], columns=list(SUMMARY_COLUMNS))

    def serves(self, **options: Any) -> bool:
        """Whether this pass computed what ``options`` ask for (else a job makes its own)."""
        mine = self.options
        for key, value in options.items():
            if key == "table":
                if value and not mine.get("table"):
                    return False
            elif key == "psth_options":
                if value is not None and mine.get("psth_options") != value:
                    return False
            elif mine.get(key) != value:
                return False
        return True


def analysis_pass(
    source: Any,
    *,
    by: Any = None,
    mode: str = schema.MODE_PER_CONDITION,
    significant_by: str = "p",
    timing: bool = True,
    table: bool = True,
    psth_options: dict[str, Any] | None = None,
) -> AnalysisPass:
    """One pass over ``source``: one task per session, one ``dask.compute``; see :class:`AnalysisPass`.

    Parameters
    ----------
    source
        Anything :func:`opto_cube.store.catalog.sessions_of` accepts (a catalog, a folder of stores, cubes).
    by, mode, significant_by, timing
        As in :func:`opto_cube.analysis.response.responses`.
    table
        Compute the responses table.
    psth_options
        Keyword arguments of :func:`psth.session_psth`: also each session's part of the population PSTH.

    Returns
    -------
    AnalysisPass

    Examples
    --------
    >>> import warnings
    >>> from opto_cube.jobs.demo import example_stores
    >>> stores = example_stores(2) / "stores"
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("ignore")  # 10 ms bins: the timing columns are NaN, and say so
    ...     done = analysis_pass(stores)
    >>> len(done.sessions), done.table["session_id"].nunique(), len(done.summary)
    (2, 2, 2)
    """
    options = {
        "by": by,
        "mode": mode,
        "significant_by": significant_by,
        "timing": timing,
        "table": table,
        "psth_options": psth_options,
    }
    tasks = session_tasks(
        source, by=by, mode=mode, significant_by=significant_by, timing=timing, table=table, psth_options=psth_options
    )
    return AnalysisPass(tuple(_compute(tasks)), options)
