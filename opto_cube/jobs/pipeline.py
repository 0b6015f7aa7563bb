"""The jobs' common ground, and ``opto-cube responses``: the responses table, written; the pass a job reads.

The work of every job is one task per session (:func:`opto_cube.jobs.tasks.session_results`:
the store opened where the task runs, small results returned); many sessions are one
``dask.delayed`` task each (:func:`opto_cube.jobs.tasks.session_tasks`) and one
``dask.compute``: the default threads, processes and a ``distributed.Client`` all run them.
Here: the responses table (:func:`responses_table`, :func:`write_table`), saving a netCDF file
(:func:`save_netcdf`), and what the jobs share to make or reuse that pass (:func:`pass_for`,
:func:`bin_widths`). The jobs themselves are :mod:`opto_cube.jobs.maps_job`
(``opto-cube maps``) and :mod:`opto_cube.jobs.report_job` (``opto-cube report``).

Where later jobs go: a time-resolved column of the table (latency, light
artifact) is computed from :attr:`opto_cube.jobs.tasks.SessionResults.time_course` in
:func:`opto_cube.jobs.tasks.session_results`; a new job is a module beside
:mod:`~opto_cube.jobs.maps_job` whose function takes the same
:class:`~opto_cube.jobs.tasks.AnalysisPass`, as :func:`opto_cube.jobs.report_job.run_report` does.

Examples
--------
>>> from opto_cube.jobs.demo import example_stores
>>> root = example_stores(2)
>>> table = responses_table(root / "stores")
>>> len(table), table["session_id"].nunique()
(192, 2)
>>> write_table(table, root / "responses.csv").name
'responses.csv'
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import xarray as xr

from opto_cube import schema
from opto_cube.analysis.conditions import check_by
from opto_cube.errors import OptoCubeError, TimingWarning
from opto_cube.jobs.tasks import AnalysisPass, SessionResults, analysis_pass
from opto_cube.store.catalog import Catalog, sessions_of
from opto_cube.store.write import atomic_file

__all__ = [
    "bin_widths",
    "pass_for",
    "responses_table",
    "save_netcdf",
    "warn_timing",
    "write_table",
]

TABLE_SUFFIXES = (".csv", ".parquet")


# --------------------------------------------------------------------------
# opto-cube responses
# --------------------------------------------------------------------------
def warn_timing(results: Sequence[SessionResults]) -> None:
    """One :class:`opto_cube.errors.TimingWarning` for every session whose timing columns are NaN."""
    notes = [r.timing_note for r in results if r.timing_note]
    if notes:
        more = f" (and {len(notes) - 1} more session(s) alike)" if len(notes) > 1 else ""
        warnings.warn(notes[0] + more, TimingWarning, stacklevel=3)


def responses_table(
    source: Any,
    *,
    by: Any = None,
    mode: str = schema.MODE_PER_CONDITION,
    significant_by: str = "p",
    timing: bool = True,
) -> pd.DataFrame:
    """The long responses table of many sessions: one row per session x cluster x condition.

    Parameters
    ----------
    source
        A :class:`opto_cube.store.catalog.Catalog` (or any mapping of cubes), one cube,
        an iterable of cubes or store paths, a store, or a folder of stores.
    by, mode, significant_by, timing
        As in :func:`opto_cube.analysis.response.responses` (``timing=False``: the
        seed's statistics alone, read from ``window_counts`` only; the timing
        columns NaN).

    Returns
    -------
    pandas.DataFrame
        Columns ``session_id, cluster, emitter, power_mw, duration_s, n_trials,
        pre_rate_hz, stim_rate_hz, pct_change, p_value, activated, inactivated,
        significant, distance_um, depth_from_surface_um, waveform_type, qc_pass``
        (``docs/contract.md``), then ``emitter_depth_um`` and the timing columns
        ``q_value, latency_ms, first_spike_ms, jitter_ms, reliability,
        light_artifact``. One task per session, one ``dask.compute``: an active
        ``distributed.Client`` runs them on its workers. One
        :class:`opto_cube.errors.TimingWarning` when some session's timing
        columns are NaN (coarse bins, or a store written before the timing arrays).
    """
    check_by(by, mode)
    if significant_by not in schema.SIGNIFICANT_BY:
        raise ValueError(f"significant_by must be one of {schema.SIGNIFICANT_BY}, got {significant_by!r}")
    options = {"by": by, "mode": mode, "significant_by": significant_by, "timing": timing}
    if isinstance(source, AnalysisPass):
        if not source.serves(table=True, **options):
            raise ValueError(f"the analysis pass computed {source.options}, not the responses asked for ({options})")
        done = source
    else:
        done = analysis_pass(source, **options)
    warn_timing(done.sessions)
    return done.table


def write_table(table: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write the table to ``path`` (``.csv`` or ``.parquet``) atomically; OptoCubeError for another suffix."""
    path = Path(path)
    if path.suffix not in TABLE_SUFFIXES:
        raise OptoCubeError(f"{path}: unknown table format {path.suffix!r}; use .csv or .parquet")
    with atomic_file(path) as tmp:
        if path.suffix == ".csv":
            table.to_csv(tmp, index=False)
        else:
            table.to_parquet(tmp, index=False)
    return path


def save_netcdf(ds: xr.Dataset, path: str | os.PathLike) -> Path:
    """Write ``ds`` to a netCDF4 (HDF5) file atomically, with h5netcdf: every dtype kept; booleans in attrs as 0/1.

    Examples
    --------
    >>> import tempfile
    >>> import numpy as np
    >>> path = save_netcdf(xr.Dataset({"n": ("x", np.array([2**40], np.int64))}, attrs={"ok": True}),
    ...                    tempfile.mkdtemp() + "/m.nc")
    >>> back = xr.open_dataset(path, engine="h5netcdf")
    >>> back.n.dtype, int(back.attrs["ok"])
    (dtype('int64'), 1)
    """
    out = ds.copy()
    out.attrs = {k: (int(v) if isinstance(v, bool) else v) for k, v in ds.attrs.items()}
    with atomic_file(path) as tmp:
        out.to_netcdf(tmp, engine="h5netcdf")
    return Path(path)


def bin_widths(source: Any) -> list[float]:
    """Every session's bin width, from its store's attributes (one small read each) or its cube."""
    from opto_cube.store.write import read_store_attrs

    widths = []
    for sid, item in sessions_of(source):
        known = source.store_attrs(sid) if isinstance(source, Catalog) else None  # read when the catalog was made
        attrs = known if known is not None else item.attrs if isinstance(item, xr.Dataset) else read_store_attrs(item)
        widths.append(float((attrs or {}).get(schema.ATTR_BIN_WIDTH, 0.0)))
    return widths


DEFAULTS = {"by": None, "mode": schema.MODE_PER_CONDITION, "significant_by": "p", "timing": True}


def pass_for(
    source: Any, analysis: AnalysisPass | None, table: bool, psth_options: dict[str, Any] | None
) -> AnalysisPass:
    """``analysis`` when it holds what a job needs (the default responses, these PSTH parts), else a new pass."""
    if analysis is not None and analysis.serves(table=table, psth_options=psth_options, **DEFAULTS):
        return analysis
    return analysis_pass(source, table=table, psth_options=psth_options)
