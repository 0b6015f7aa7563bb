"""The statistics: per-condition responses of every cluster, computed lazily from a cube.

Also available as ``opto_cube.responses(cube)`` and ``opto_cube.responses_table(...)``.

The analysis the data was published for (``docs/format.md``) compares, per cluster,
the spike rate in the stimulation window ``[0, duration)`` with the rate in
the pre window ``[-0.5, 0)`` of the same trials. :func:`responses` does it on
a cube without reading raw spikes, as a lazy (dask) :class:`xarray.Dataset`
with dims ``(cluster, condition)`` (eager when the cube is in memory);
:func:`to_table` turns it into rows of the long table of ``docs/contract.md``.
The table of many sessions, one task per session, is
:func:`opto_cube.jobs.pipeline.responses_table`.

Two modes, side by side
-----------------------

================  ======================================  ======================================
aspect            ``mode="per_condition"`` (default)      ``mode="published"`` (parity)
================  ======================================  ======================================
condition         (emitter, power level, duration);       (emitter): every power and duration
                  ``by`` pools any of the three           of the emitter pooled
clusters          all (``qc_pass`` kept as a coordinate)  QC-passing only
pct_change        ``100 * (stim - pre) / pre``            ``(stim - pre) / (pre + 1e-8) * 100``
                  (inf or NaN when pre is 0, as IEEE)     (``schema.PARITY_EPSILON``)
zero rates        kept                                    pairs with a zero mean pre or stim
                                                          rate dropped (NaN; not in the table)
================  ======================================  ======================================

In both: per-trial rate = count / window length (0.5 s, the trial's
``duration_s``); a condition's rates are the means over its trials;
``activated`` is pct_change > 200, ``inactivated`` is pct_change < -50 and a
pre rate above 2 Hz (no p-value in either); ``significant`` is the separate
post-filter p_value < 0.005, the p-value of a paired t-test of per-trial stim
against pre rates (:func:`scipy.stats.ttest_rel` semantics).

What the per-power analysis adds. Pooling every power of an emitter mixes
pulses that barely drive a unit with pulses that saturate it, so the pooled
percent change depends on the session's mix of powers and durations and
cannot show how the effect grows with power; per condition it can, and the
t-test compares trials of one stimulus. It also keeps the units the published
analysis drops: silent baselines (pre rate 0, where a percent change is
undefined rather than ``stim / 1e-8``) and QC failures, which stay
selectable through ``qc_pass``.

How it is reduced
-----------------
* Window counts. Each trial's spikes in its pre and stim window are the
  store's ``window_counts`` (cluster, trial, window): two numbers per cluster
  and trial, all the statistics need, so the cube itself is never read.
  Stores of format 1 (written before ``window_counts``) still work: the same
  two numbers are summed from ``spike_counts``, one pass over the cube (the
  windows are unions of whole bins, bin edges found in integer microseconds),
  so the results are the same either way.
* Groups. Trials get integer codes from their (emitter, power level,
  duration) (:func:`opto_cube.analysis.conditions.trial_conditions`); counts are summed
  per *cell* (condition x duration) as integers, so the sums are exact. A
  condition's mean stim rate is ``sum over its durations of (count sum /
  duration)`` divided by its trial count.
* t-test. Two passes, as scipy: the mean difference ``stim - pre`` per
  condition, then the sum of squared deviations of the per-trial differences
  from it; ``t = mean / sqrt(var / n)``, ``p = 2 * stdtr(n - 1, -|t|)``. NaN
  when n < 2 or every difference is 0; when every difference equals the same
  non-zero value the variance is exactly 0, t infinite and p = 0.

All of it is one numpy function of a block of clusters x every trial
(:func:`opto_cube.analysis.response_core.statistics`); lazily it is one task
per block of clusters over the window counts, a graph of a handful of tasks
per session. The array kernels live in :mod:`opto_cube.analysis.response_core`
(numpy only); this module labels them (the lazy :func:`responses` Dataset,
:func:`to_table`) and sums the windows from the cube for a store of format 1.
A job's task builds its rows from the kernels directly
(:func:`opto_cube.analysis.response_core.session_columns`, :func:`table_frame`):
the same table, no xarray object.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Sequence
from typing import Any

import dask
import dask.array as da
import numpy as np
import pandas as pd
import xarray as xr

from opto_cube import schema
from opto_cube.analysis import latency
from opto_cube.analysis import response_core as core
from opto_cube.analysis.conditions import TrialConditions, check_by, trial_conditions
from opto_cube.errors import TimingWarning

ATTR_MODE = "responses_mode"
ATTR_BY = "responses_by"

__all__ = [
    "TABLE_COLUMNS",
    "compute_all",
    "empty_table",
    "responses",
    "table_frame",
    "timing_status",
    "to_table",
    "window_counts",
]

# the long table: the contract's leading columns, emitter depth, then the timing columns (issue 11)
TABLE_COLUMNS = (*schema.RESPONSE_COLUMNS, schema.EMITTER_DEPTH, *schema.TIMING_COLUMNS)
_STATISTIC = "_statistic"  # pre, stim, pct_change, p_value, stacked last by core.statistics()
_STORED_COORDS = (  # what core.stored_conditions reads
    schema.TRIAL_CONDITION,
    schema.EMITTER_DEPTH,
    schema.CONDITION_EMITTER,
    schema.CONDITION_DURATION,
    schema.CONDITION_N_TRIALS,
)

_ATTRS = {
    schema.CONDITION: ("condition index within the session", "1"),
    schema.N_TRIALS: ("trials of the condition", "1"),
    schema.PRE_RATE: ("mean rate in the pre window [-0.5, 0) s", "Hz"),
    schema.STIM_RATE: ("mean rate in the stimulation window [0, duration) s", "Hz"),
    schema.PCT_CHANGE: ("percent change of the mean rate, stim against pre", "%"),
    schema.P_VALUE: ("p-value of a paired t-test of per-trial stim against pre rates", "1"),
    schema.ACTIVATED: (f"pct_change > {schema.ACTIVATED_MIN_PCT:g}", "1"),
    schema.INACTIVATED: (
        f"pct_change < {schema.INACTIVATED_MAX_PCT:g} and pre rate > {schema.INACTIVATED_MIN_PRE_HZ:g} Hz",
        "1",
    ),
    schema.SIGNIFICANT: (f"p_value < {schema.SIGNIFICANCE_P:g}", "1"),
    schema.DISTANCE: ("unit depth minus emitter depth (positive: the unit lies deeper)", "um"),
    schema.Q_VALUE: ("Benjamini-Hochberg adjusted p_value over the session's finite p-values", "1"),
    schema.LATENCY: ("response onset after light onset, in the direction of the change (Poisson CUSUM)", "ms"),
    schema.FIRST_SPIKE: ("median over trials of the first spike in the stim window", "ms"),
    schema.JITTER: ("interquartile range over trials of the first spike in the stim window", "ms"),
    schema.RELIABILITY: ("fraction of trials with a spike in the stim window", "1"),
    schema.LIGHT_ARTIFACT: ("spikes locked to light onset / offset at every emitter, no fall-off with distance", "1"),
}


def _attrs(name: str) -> dict[str, str]:
    if name in _ATTRS:
        long_name, units = _ATTRS[name]
        return {"long_name": long_name, "units": units}
    return dict(schema.VARIABLES[name].attrs)


def timing_status(cube: xr.Dataset) -> str | None:
    """Why a cube's timing columns are NaN (one line naming the session), or None when they can be computed."""
    has_arrays = set(schema.TIMING_ARRAYS) <= set(cube.data_vars) and schema.TRIAL_CONDITION in cube.coords
    return core.timing_note(
        cube.attrs.get(schema.ATTR_SESSION_ID, "?"), has_arrays, cube.attrs.get(schema.ATTR_BIN_WIDTH, np.nan)
    )


def _windows(cube: xr.Dataset, durations: np.ndarray) -> core.Windows:
    return core.windows(cube.attrs, cube.sizes[schema.TIME], durations)


# --------------------------------------------------------------------------
# The window counts, stored or summed from the cube (format 1)
# --------------------------------------------------------------------------
def window_counts(cube: xr.Dataset) -> xr.DataArray:
    """Each cluster's spikes in each trial's pre and stim window: ``(cluster, trial, window)``, lazy if the cube is.

    The store's ``window_counts`` when it has them (format 2); for a store
    written before them (format 1), the same numbers summed from
    ``spike_counts`` (a pass over the cube). Refuses windows that are not
    whole bins of the cube either way.

    Examples
    --------
    >>> from opto_cube.jobs.demo import example_stores
    >>> from opto_cube.store.open import open_cube
    >>> (store,) = (example_stores() / "stores").iterdir()
    >>> cube = open_cube(store)
    >>> counts = window_counts(cube)
    >>> counts.dims, counts.sizes["window"]
    (('cluster', 'trial', 'window'), 2)
    """
    durations, duration_code = np.unique(np.asarray(cube[schema.DURATION].values, np.float64), return_inverse=True)
    w = _windows(cube, durations)
    if schema.WINDOW_COUNTS in cube:
        stored = cube[schema.WINDOW_COUNTS].reset_coords(drop=True)
        if schema.WINDOW in cube.coords and list(cube[schema.WINDOW].values) != list(schema.WINDOWS):
            stored = stored.sel({schema.WINDOW: list(schema.WINDOWS)})
        return stored.drop_vars(schema.WINDOW, errors="ignore")
    counts = cube[schema.SPIKE_COUNTS].reset_coords(drop=True)
    stop = xr.DataArray(w.stops[duration_code.reshape(-1)], dims=schema.TRIAL)
    if counts.chunks is not None:
        if len(counts.chunksizes[schema.TIME]) > 1:
            counts = counts.chunk({schema.TIME: -1})  # a window sum needs every bin of a trial in one block
        stop = stop.chunk({schema.TRIAL: counts.chunksizes[schema.TRIAL]})
    return xr.apply_ufunc(
        functools.partial(core.sum_windows, pre=w.pre, stim_start=w.stim_start),
        counts,
        stop,
        input_core_dims=[[schema.TIME], []],
        output_core_dims=[[schema.WINDOW]],
        dask="parallelized",
        output_dtypes=[np.int64],
        dask_gufunc_kwargs={"output_sizes": {schema.WINDOW: 2}},
    )


# --------------------------------------------------------------------------
# The timing columns, lazily
# --------------------------------------------------------------------------
def _timing(
    cube: xr.Dataset, conditions: TrialConditions, direction: xr.DataArray
) -> tuple[xr.DataArray, xr.DataArray] | None:
    """Lazy (cluster, condition, 5) timing values and the (cluster,) light_artifact flag, or None (NaN columns)."""
    if timing_status(cube) is not None:
        return None
    n_stored = cube.sizes[schema.CONDITION]
    kernel = functools.partial(
        core.timing_columns,
        pooling=core.pooling_of(cube[schema.TRIAL_CONDITION].values, n_stored, conditions),
        stored=core.stored_conditions({name: cube[name].values for name in _STORED_COORDS}, n_stored),
        trial_code=conditions.code,
        time_s=np.asarray(cube[schema.TIME].values, np.float64),
        bin_width_s=float(cube.attrs[schema.ATTR_BIN_WIDTH]),
        depth_um=np.asarray(cube[schema.DEPTH_FROM_SURFACE].values, np.float64),
    )
    course = cube[schema.CONDITION_COUNTS].transpose(schema.CLUSTER, schema.CONDITION, schema.TIME).data
    first = cube[schema.FIRST_SPIKE_BIN].transpose(schema.CLUSTER, schema.TRIAL).data
    sign = direction.data
    k, c = direction.shape
    if any(isinstance(x, da.Array) for x in (course, first, sign)):  # one task a session: the arrays are small
        values = da.from_delayed(
            dask.delayed(kernel, pure=True)(course, first, sign), shape=(k, c, len(core.TIMING)), dtype=np.float64
        )
    else:
        values = kernel(np.asarray(course), np.asarray(first), np.asarray(sign))
    stats = xr.DataArray(values, dims=(schema.CLUSTER, schema.CONDITION, _STATISTIC))
    return stats, stats.isel({_STATISTIC: len(core.TIMING) - 1, schema.CONDITION: 0}, drop=True) > 0


def _q_values(p: xr.DataArray) -> xr.DataArray:
    data = p.data
    if isinstance(data, da.Array):
        data = data.rechunk(-1)
        return p.copy(data=da.map_blocks(latency.q_values, data, dtype=np.float64))
    return p.copy(data=latency.q_values(np.asarray(data)))


# --------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------
def responses(
    cube: xr.Dataset,
    *,
    by: str | Sequence[str] | None = None,
    mode: str = schema.MODE_PER_CONDITION,
    significant_by: str = "p",
    timing: bool = True,
    warn: bool = True,
) -> xr.Dataset:
    """Rates, percent change, t-test and classification of every cluster in every condition, lazily.

    Parameters
    ----------
    cube
        An opened cube (:func:`opto_cube.store.open.open_cube` or ``xarray.open_zarr``).
    by
        What splits the trials into conditions, among ``"emitter"``, ``"power"``
        (power levels: equal within a relative 1e-6, :func:`opto_cube.schema.power_levels`)
        and ``"duration"``; the others are pooled. Default ``("emitter", "power",
        "duration")``; ``mode="published"`` accepts only the default (its conditions are emitters).
    mode
        ``"per_condition"`` or ``"published"`` (parity with the dataset's published
        analysis); see the module docstring for the two side by side.
    significant_by
        ``"p"`` (default, the seed's rule): ``significant`` is p_value < 0.005;
        ``"q"``: q_value < 0.005 (Benjamini-Hochberg over the session).
    timing
        Compute the timing columns (False: they are NaN, ``light_artifact``
        False, without a warning, and the stored timing arrays are not read:
        the seed's statistics alone, from ``window_counts``).
    warn
        Emit one :class:`opto_cube.errors.TimingWarning` when the timing
        columns are NaN (bins coarser than ``schema.LATENCY_MAX_BIN_MS``, or a
        store without the timing arrays). :func:`opto_cube.jobs.pipeline.responses_table`
        passes False and warns once for all its sessions.

    Returns
    -------
    xarray.Dataset
        Dims ``(cluster, condition)``, dask-backed until computed when the cube
        is (in memory when it is): ``pre_rate_hz``, ``stim_rate_hz``,
        ``pct_change``, ``p_value``, ``activated``, ``inactivated``,
        ``significant``, and the timing columns (module docstring, "Timing
        columns"): ``q_value``, ``latency_ms``, ``first_spike_ms``,
        ``jitter_ms``, ``reliability`` (cluster, condition) and
        ``light_artifact`` (cluster); coordinates ``distance_um`` (cluster, condition), the
        cube's per-cluster coordinates and, per condition, ``emitter``,
        ``power_mw`` (the level's mean power), ``duration_s``, ``n_trials`` and
        ``emitter_depth_um``. A pooled key's coordinate is NaN (emitter: 0,
        ``schema.ALL_EMITTERS``). Conditions are sorted by emitter, power, duration.
        In published mode only QC-passing clusters are kept, and pairs with a
        zero mean pre or stim rate are NaN (booleans False).

    Raises
    ------
    ValueError
        An unknown ``mode`` or ``by`` key, or a cube whose windows are not whole bins.

    Examples
    --------
    >>> from opto_cube.jobs.demo import example_stores
    >>> from opto_cube.store.open import open_cube
    >>> (store,) = (example_stores() / "stores").iterdir()
    >>> cube = open_cube(store)
    >>> r = responses(cube)
    >>> dict(r.sizes), r[schema.PCT_CHANGE].chunks is not None
    ({'cluster': 8, 'condition': 12}, True)
    >>> r = r.compute()
    >>> int(r[schema.N_TRIALS].sum()) == cube.sizes["trial"]
    True
    >>> pooled = responses(cube, by="emitter")
    >>> pooled[schema.EMITTER].values.tolist(), bool(np.isnan(pooled[schema.POWER]).all())
    ([3, 8, 13], True)
    """
    by_keys = check_by(by, mode)
    if significant_by not in schema.SIGNIFICANT_BY:
        raise ValueError(f"significant_by must be one of {schema.SIGNIFICANT_BY}, got {significant_by!r}")
    if not isinstance(cube, xr.Dataset) or not ({schema.SPIKE_COUNTS, schema.WINDOW_COUNTS} & set(cube.data_vars)):
        raise TypeError(f"responses needs a cube (an xarray.Dataset with {schema.SPIKE_COUNTS!r}), got {type(cube)!r}")
    published = mode == schema.MODE_PUBLISHED
    if cube.sizes[schema.TRIAL] == 0:
        raise ValueError(f"cube {cube.attrs.get(schema.ATTR_SESSION_ID, '')!r} has no trials")
    if published:
        cube = cube.isel({schema.CLUSTER: np.asarray(cube[schema.QC_PASS].values, dtype=bool)})
    conditions = trial_conditions(cube, by_keys)
    pre_s = _windows(cube, conditions.durations).pre_s
    counts = window_counts(cube).transpose(schema.CLUSTER, schema.TRIAL, schema.WINDOW).data
    kernel = functools.partial(core.statistics, conditions=conditions, pre_s=pre_s, published=published)
    if isinstance(counts, da.Array) and counts.shape[0]:
        counts = counts.rechunk({1: -1, 2: -1})  # a block of clusters x every trial: a few tasks a session
        values = da.map_blocks(
            kernel, counts, chunks=(counts.chunks[0], (conditions.n_conditions,), (4,)), dtype=np.float64
        )
    else:
        values = kernel(np.asarray(counts))
    stats = xr.DataArray(values, dims=(schema.CLUSTER, schema.CONDITION, _STATISTIC))
    pre, stim, pct, p = (stats.isel({_STATISTIC: i}, drop=True) for i in range(4))
    q = _q_values(p)
    activated, inactivated, significant = core.classify(pre, stim, pct, p, q, significant_by)
    data = {
        schema.PRE_RATE: pre,
        schema.STIM_RATE: stim,
        schema.PCT_CHANGE: pct,
        schema.P_VALUE: p,
        schema.ACTIVATED: activated,
        schema.INACTIVATED: inactivated,
        schema.SIGNIFICANT: significant,
        schema.Q_VALUE: q,
    }
    # latency in the direction of the change, for the rows that respond by the seed's rules or are significant
    direction = xr.where(activated | inactivated | significant, np.sign(stim - pre), 0.0).fillna(0.0)
    stored = _timing(cube, conditions, direction) if timing else None
    if stored is None:
        if warn and timing:
            warnings.warn(str(timing_status(cube)), TimingWarning, stacklevel=2)
        nan = xr.full_like(pct, np.nan)
        data.update({name: nan for name in core.TIMING[:-1]})
        data[schema.LIGHT_ARTIFACT] = xr.DataArray(
            np.zeros(cube.sizes[schema.CLUSTER], dtype=bool), dims=(schema.CLUSTER,)
        )
    else:
        values, artifact = stored
        data.update({name: values.isel({_STATISTIC: i}, drop=True) for i, name in enumerate(core.TIMING[:-1])})
        data[schema.LIGHT_ARTIFACT] = artifact
    return _dataset(cube, data, conditions.coords, mode, by_keys)


def _dataset(
    cube: xr.Dataset, data: dict[str, xr.DataArray], coords: dict[str, np.ndarray], mode: str, by_keys: tuple[str, ...]
) -> xr.Dataset:
    """The responses Dataset: the variables, the cube's per-cluster coordinates, the conditions' and distances."""
    n_conditions = coords[schema.N_TRIALS].size
    depth = np.asarray(cube[schema.DEPTH_FROM_SURFACE].values, np.float64)
    cluster_coords = {name: c.variable for name, c in cube.coords.items() if c.dims == (schema.CLUSTER,)}
    out = xr.Dataset(
        {name: x.variable for name, x in data.items()},
        coords={
            **cluster_coords,
            schema.CONDITION: (schema.CONDITION, np.arange(n_conditions, dtype=np.int64)),
            **{name: (schema.CONDITION, values) for name, values in coords.items()},
            schema.DISTANCE: (
                (schema.CLUSTER, schema.CONDITION),
                depth[:, None] - coords[schema.EMITTER_DEPTH][None, :],
            ),
        },
    )
    for name in out.variables:
        if name not in cluster_coords:
            out[name].attrs = _attrs(str(name))
    out.attrs = {
        schema.ATTR_SESSION_ID: cube.attrs.get(schema.ATTR_SESSION_ID, ""),
        ATTR_MODE: mode,
        ATTR_BY: list(by_keys),
        schema.ATTR_BIN_WIDTH: cube.attrs.get(schema.ATTR_BIN_WIDTH),
    }
    return out


def compute_all(results: Sequence[xr.Dataset]) -> list[xr.Dataset]:
    """Compute several lazy :func:`responses` Datasets in one ``dask.compute`` (shared reads)."""
    lazy = [
        (i, name, ds[name].data)
        for i, ds in enumerate(results)
        for name in ds.data_vars
        if dask.is_dask_collection(ds[name].data)
    ]
    values = dask.compute(*(arr for _, _, arr in lazy))
    out = [ds.copy() for ds in results]
    for (i, name, _), value in zip(lazy, values, strict=True):
        out[i][name] = out[i][name].copy(data=value)
    return out


def empty_table() -> pd.DataFrame:
    """The long table with no rows (its columns, in order)."""
    return pd.DataFrame(columns=list(TABLE_COLUMNS))


def to_table(result: xr.Dataset, session_id: str | None = None) -> pd.DataFrame:
    """The long table of one :func:`responses` Dataset: one row per cluster x condition.

    The columns of ``docs/contract.md`` first (``schema.RESPONSE_COLUMNS``),
    then ``emitter_depth_um``; rows by cluster, then condition. In published
    mode the dropped pairs are left out. ``session_id`` defaults to the
    Dataset's ``session_id`` attribute.
    """
    unused = [name for name in result.coords if name not in TABLE_COLUMNS and name != schema.CONDITION]
    result = result.drop_vars(unused).compute()  # only what the table shows is read
    n_clusters, n_conditions = result.sizes[schema.CLUSTER], result.sizes[schema.CONDITION]
    sid = result.attrs.get(schema.ATTR_SESSION_ID, "") if session_id is None else session_id
    columns: dict[str, Any] = {schema.SESSION_ID: np.full(n_clusters * n_conditions, str(sid), dtype=object)}
    for name in TABLE_COLUMNS[1:]:
        var = result[name]
        values = np.asarray(var.values)
        if var.dims == (schema.CLUSTER,):
            values = np.repeat(values, n_conditions)
        elif var.dims == (schema.CONDITION,):
            values = np.tile(values, n_clusters)
        else:
            values = values.reshape(-1)
        columns[name] = values
    return table_frame(columns, result.attrs.get(ATTR_MODE) == schema.MODE_PUBLISHED)


def table_frame(columns: dict[str, Any], published: bool) -> pd.DataFrame:
    """The long table from its column arrays (:func:`to_table`, or
    :func:`opto_cube.analysis.response_core.session_columns`): one DataFrame, the published mode's dropped
    pairs left out."""
    df = pd.DataFrame({name: columns[name] for name in TABLE_COLUMNS})
    df[schema.WAVEFORM_TYPE] = df[schema.WAVEFORM_TYPE].astype(object).astype(str)
    if published:
        df = df[df[schema.PRE_RATE].notna()].reset_index(drop=True)
    return df
