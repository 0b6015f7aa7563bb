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
from typing import Any

import dask
import numpy as np
import pandas as pd
import xarray as xr

from opto_cube import schema
from opto_cube.analysis import psth, response
from opto_cube.analysis.latency import light_artifacts
from opto_cube.errors import StoreError
from opto_cube.store.access import StorePath
from opto_cube.store.catalog import Catalog, sessions_of, summary_row

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


def _open(path: StorePath, storage_options: dict[str, Any] | None, cube: bool, timing: bool = True) -> xr.Dataset:
    """A store opened for one task through the one checked reader (:func:`opto_cube.store.read.read_checked`).

    ``window_counts``, the stored timing arrays (with ``timing``) and, with
    ``cube``, ``condition_counts`` (the per-condition time course) and every
    coordinate, read eagerly and together; every chunk of the store present,
    in place and matching its CRC32C, or one :class:`StoreError` naming store
    and chunk. A store without those arrays (written before them) is opened
    with :func:`opto_cube.store.open.open_cube` (checked as each chunk is read).
    """
    from opto_cube.store.open import open_cube
    from opto_cube.store.read import read_checked

    names = [schema.WINDOW_COUNTS, *(schema.TIMING_ARRAYS if timing else ())]
    if cube and schema.CONDITION_COUNTS not in names:
        names.append(schema.CONDITION_COUNTS)
    # the table needs a few coordinates (every chunk is checked all the same); the time course keeps them all
    read = read_checked(path, storage_options, names if cube else [*names, *_TABLE_COORDS], small=cube)
    if schema.SPIKE_COUNTS not in read.shapes:
        raise StoreError(f"{path}: not an opto_cube store (no {schema.SPIKE_COUNTS!r} variable)")
    if schema.WINDOW_COUNTS in read.arrays and (not cube or schema.CONDITION_COUNTS in read.arrays):
        return read.dataset()
    options = {"storage_options": storage_options} if storage_options else {}
    return open_cube(path, **options)  # a store written before window_counts / condition_counts


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
        cube = store_or_cube
    else:
        wants_cube = time_course or psth_options is not None
        cube = _open(store_or_cube, storage_options, cube=wants_cube, timing=timing)
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
