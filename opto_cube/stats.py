"""The statistics: per-condition responses of every cluster, computed lazily from a cube.

Also available as ``opto_cube.responses(cube)`` and ``opto_cube.responses_table(...)``.

The analysis the data was published for (dataset.md) compares, per cluster,
the spike rate in the stimulation window ``[0, duration)`` with the rate in
the pre window ``[-0.5, 0)`` of the same trials. :func:`responses` does it on
the cube without reading raw spikes, as a lazy (dask) :class:`xarray.Dataset`
with dims ``(cluster, condition)``; :func:`responses_table` computes the
interface's long table of many sessions in one ``dask.compute``.

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
* Window counts. The pre window and every stim window are unions of whole
  bins (bin edges are whole microseconds, the indices found in integer
  microseconds). The pre count is a sum over a fixed slice of bins; the stim
  count is, per block of the cube, one slice sum per distinct duration,
  each kept for the trials of that duration.
* Groups. Trials get integer codes from their (emitter, power level,
  duration) in memory (the coordinates are small); counts are summed per
  *cell* (condition x duration) with :func:`flox.xarray.xarray_reduce`, as
  integers, so the sums are exact and independent of chunking. A condition's
  mean stim rate is ``sum over its durations of (count sum / duration)``
  divided by its trial count.
* t-test. Two passes, as scipy: the mean difference ``stim - pre`` per
  condition, then the sum of squared deviations of the per-trial differences
  from it (the mean broadcast back to trials block by block);
  ``t = mean / sqrt(var / n)``, ``p = 2 * stdtr(n - 1, -|t|)``. NaN when
  n < 2 or every difference is 0; when every difference equals the same
  non-zero value the variance is exactly 0, t infinite and p = 0.

No Python loop runs over clusters or trials, and nothing is computed until
asked: only the per-trial and per-cluster coordinates are read.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import dask
import numpy as np
import pandas as pd
import scipy.special
import xarray as xr
from flox.xarray import xarray_reduce

from . import schema

__all__ = ["check_by", "compute_all", "responses", "responses_table", "to_table"]

_US_PER_S = 1_000_000
_MERGED_BLOCK_BYTES = 32 * 2**20
_CELL = "_cell"
_WINDOW = "_window"  # pre, stim  # condition x duration: the groups the exact integer sums run over
_BOOLEANS = (schema.ACTIVATED, schema.INACTIVATED, schema.SIGNIFICANT)

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
}


def _attrs(name: str) -> dict[str, str]:
    if name in _ATTRS:
        long_name, units = _ATTRS[name]
        return {"long_name": long_name, "units": units}
    return dict(schema.VARIABLES[name].attrs)


# --------------------------------------------------------------------------
# Window bins
# --------------------------------------------------------------------------
def _us(seconds: float) -> int:
    return round(float(seconds) * _US_PER_S)


def _bin_index(cube: xr.Dataset, seconds: float, what: str) -> int:
    """Index of the bin edge at ``seconds`` from onset; refuses an edge that is not one."""
    try:
        bin_us = _us(cube.attrs[schema.ATTR_BIN_WIDTH])
        start_us = _us(cube.attrs[schema.ATTR_WINDOW][0])
    except (KeyError, TypeError, IndexError) as e:
        raise ValueError(
            f"cube {cube.attrs.get(schema.ATTR_SESSION_ID, '?')!r} lacks the {schema.ATTR_BIN_WIDTH!r} and "
            f"{schema.ATTR_WINDOW!r} attributes of an opto_cube store"
        ) from e
    offset = _us(seconds) - start_us
    index, rest = divmod(offset, bin_us)
    if rest or not 0 <= index <= cube.sizes[schema.TIME]:
        raise ValueError(
            f"cube {cube.attrs.get(schema.ATTR_SESSION_ID, '?')!r}: {what} edge {seconds!r} s is not a bin edge of "
            f"its window {cube.attrs[schema.ATTR_WINDOW]!r} s in {bin_us} us bins; reconvert with a bin width "
            "that tiles it"
        )
    return index


def _window_counts(counts: np.ndarray, stop: np.ndarray, *, pre: tuple[int, int], stim_start: int) -> np.ndarray:
    """Each trial's spikes in the pre window and in its stim window ``[stim_start, stop)``, stacked last.

    A block function: one pass over a block of the cube reads only the bins of the windows (one slice
    sum for the pre window, one per distinct stop for the stim window).
    """
    stop = np.broadcast_to(stop, counts.shape[:-1])
    out = np.zeros((*counts.shape[:-1], 2), dtype=np.int64)
    out[..., 0] = counts[..., pre[0]:pre[1]].sum(axis=-1, dtype=np.int64)
    for s in np.unique(stop):
        out[..., 1] += np.where(stop == s, counts[..., stim_start:s].sum(axis=-1, dtype=np.int64), 0)
    return out


def _merged_trial_chunk(stored: tuple[int, ...], n_clusters: int) -> int:
    """Trials per block of the (cluster, trial) intermediates: whole stored chunks, ~32 MB of int64 at most."""
    per_block = max(1, _MERGED_BLOCK_BYTES // (8 * max(n_clusters, 1)))
    return max(stored[0], per_block // stored[0] * stored[0])


def _take_conditions(per_condition: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Each trial's value of its condition: ``per_condition[..., codes]`` (block function)."""
    return np.take(per_condition, codes, axis=-1).reshape(np.broadcast_shapes(per_condition.shape[:-1], codes.shape))


# --------------------------------------------------------------------------
# Conditions (in memory: the per-trial coordinates are small)
# --------------------------------------------------------------------------
def check_by(by: Any, mode: str) -> tuple[str, ...]:
    """The condition keys of ``by`` for ``mode``, in canonical order; ValueError when they are not valid.

    Examples
    --------
    >>> check_by(None, "per_condition"), check_by("emitter", "published")
    (('emitter', 'power', 'duration'), ('emitter',))
    >>> check_by(["duration", "emitter"], "per_condition")
    ('emitter', 'duration')
    """
    if mode not in schema.RESPONSE_MODES:
        raise ValueError(f"mode must be one of {schema.RESPONSE_MODES!r}, got {mode!r}")
    default = schema.CONDITION_KEYS if mode == schema.MODE_PER_CONDITION else (schema.BY_EMITTER,)
    if by is None:
        return default
    keys = (by,) if isinstance(by, str) else tuple(by)
    unknown = [k for k in keys if k not in schema.CONDITION_KEYS]
    if unknown or len(set(keys)) != len(keys):
        raise ValueError(f"by must name distinct keys among {schema.CONDITION_KEYS!r}, got {by!r}")
    if mode == schema.MODE_PUBLISHED and set(keys) != set(default):
        raise ValueError(f"mode={mode!r} pools every power and duration of an emitter: pass by=None, got {by!r}")
    return tuple(k for k in schema.CONDITION_KEYS if k in keys)


def _conditions(
    cube: xr.Dataset, by: tuple[str, ...]
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray]:
    """Condition coordinates, each trial's condition code, duration code, and the distinct durations."""
    emitter = np.asarray(cube[schema.EMITTER].values)
    power_index, power_level = schema.power_levels(cube[schema.POWER].values)
    durations, duration_index = np.unique(np.asarray(cube[schema.DURATION].values, np.float64), return_inverse=True)
    emitter_depth = np.asarray(cube[schema.EMITTER_DEPTH].values, np.float64)
    n_trials = emitter.size
    columns = {
        schema.BY_EMITTER: emitter.astype(np.int64),
        schema.BY_POWER: power_index,
        schema.BY_DURATION: duration_index.astype(np.int64),
    }
    keys = np.stack([columns[k] for k in by], axis=1) if by else np.zeros((n_trials, 0), np.int64)
    if by:
        unique, code = np.unique(keys, axis=0, return_inverse=True)
        code = code.reshape(-1)
    else:
        unique, code = np.zeros((1, 0), np.int64), np.zeros(n_trials, np.int64)
    n_conditions = unique.shape[0]
    first = np.zeros(n_conditions, np.int64)
    first[code[::-1]] = np.arange(n_trials)[::-1]  # a trial of each condition
    pooled = {k: k not in by for k in schema.CONDITION_KEYS}

    # the emitter's depth: one per emitter (refuse a cube where trials of an emitter disagree)
    depth_of_emitter = {}
    for e in np.unique(emitter):
        depths = np.unique(emitter_depth[emitter == e])
        if depths.size > 1 and not np.all(np.isnan(depths)):
            raise ValueError(f"cube {cube.attrs.get(schema.ATTR_SESSION_ID, '?')!r}: emitter {e} has trials at "
                             f"several depths {depths.tolist()!r} um")
        depth_of_emitter[int(e)] = float(depths[0])
    cond_emitter = emitter[first].astype(np.int64)
    nan = np.full(n_conditions, np.nan)
    coords = {
        schema.EMITTER: np.full(n_conditions, schema.ALL_EMITTERS, np.int64) if pooled[schema.BY_EMITTER]
        else cond_emitter,
        schema.POWER: nan if pooled[schema.BY_POWER] else power_level[power_index[first]],
        schema.DURATION: nan.copy() if pooled[schema.BY_DURATION] else durations[duration_index[first]],
        schema.N_TRIALS: np.bincount(code, minlength=n_conditions).astype(np.int64),
        schema.EMITTER_DEPTH: nan.copy() if pooled[schema.BY_EMITTER]
        else np.array([depth_of_emitter[int(e)] for e in cond_emitter], np.float64),
    }
    return coords, code.astype(np.int64), duration_index.astype(np.int64), durations


# --------------------------------------------------------------------------
# Reduced arrays to rates, percent change and p-values (block functions)
# --------------------------------------------------------------------------
def _means(s_pre: np.ndarray, s_stim: np.ndarray, d_max: np.ndarray, d_min: np.ndarray, *, n: np.ndarray,
           durations: np.ndarray, pre_s: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean pre and stim rates from the exact count sums per cell, and the centre of the differences.

    ``s_pre``, ``s_stim``: (..., condition * duration) count sums; ``d_max``, ``d_min``:
    (..., condition) extremes of the per-trial differences stim - pre.
    """
    shape = s_pre.shape[:-1] + (n.size, durations.size)
    pre = s_pre.reshape(shape).sum(axis=-1) / pre_s / n
    stim = (s_stim.reshape(shape) / durations).sum(axis=-1) / n
    # the mean difference, or exactly the common value when every difference is the same (then the
    # deviations are exactly 0: p is NaN when that value is 0, as scipy's 0 / 0, and 0 otherwise)
    centre = np.where(d_max == d_min, d_max, stim - pre)
    return pre, stim, centre


def _finish(pre: np.ndarray, stim: np.ndarray, mean: np.ndarray, ss: np.ndarray, n: np.ndarray, *,
            published: bool) -> tuple[np.ndarray, np.ndarray]:
    """Percent change and paired t-test p-value, with numpy's warnings silenced (IEEE results kept).

    ``mean`` is the mean difference (exactly the common value when every difference is the same),
    ``ss`` the sum of squared deviations from it.
    """
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if published:
            pct = (stim - pre) / (pre + schema.PARITY_EPSILON) * 100
        else:
            pct = 100 * (stim - pre) / pre
        var = ss / (n - 1)
        t = mean / np.sqrt(var / n)  # 0 / 0 (every difference 0) is NaN, x / 0 is +-inf: p = 0
        p = 2 * scipy.special.stdtr(np.maximum(n - 1, 1).astype(np.float64), -np.abs(t))
        p = np.where(n < 2, np.nan, p)
    return pct, p


# --------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------
def responses(cube: xr.Dataset, *, by: str | Sequence[str] | None = None,
              mode: str = schema.MODE_PER_CONDITION) -> xr.Dataset:
    """Rates, percent change, t-test and classification of every cluster in every condition, lazily.

    Parameters
    ----------
    cube
        An opened cube (:func:`opto_cube.store.open_cube` or ``xarray.open_zarr``).
    by
        What splits the trials into conditions, among ``"emitter"``, ``"power"``
        (power levels: equal within a relative 1e-6, :func:`opto_cube.schema.power_levels`)
        and ``"duration"``; the others are pooled. Default ``("emitter", "power",
        "duration")``; ``mode="published"`` accepts only the default (its conditions are emitters).
    mode
        ``"per_condition"`` or ``"published"`` (parity with the dataset's published
        analysis); see the module docstring for the two side by side.

    Returns
    -------
    xarray.Dataset
        Dims ``(cluster, condition)``, dask-backed until computed: ``pre_rate_hz``,
        ``stim_rate_hz``, ``pct_change``, ``p_value``, ``activated``, ``inactivated``,
        ``significant``; coordinates ``distance_um`` (cluster, condition), the
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
    >>> import tempfile, warnings
    >>> from opto_cube import synth, convert, store
    >>> root = tempfile.mkdtemp()
    >>> folder = synth.make_dataset(root, n_sessions=1, size="tiny")[0]
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("ignore")
    ...     cube = store.open_cube(convert.convert_session(folder, root + "/stores", bin_ms=10).store)
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
    if not isinstance(cube, xr.Dataset) or schema.SPIKE_COUNTS not in cube:
        raise TypeError(f"responses needs a cube (an xarray.Dataset with {schema.SPIKE_COUNTS!r}), got {type(cube)!r}")
    published = mode == schema.MODE_PUBLISHED
    session_id = cube.attrs.get(schema.ATTR_SESSION_ID, "")
    if cube.sizes[schema.TRIAL] == 0:
        raise ValueError(f"cube {session_id!r} has no trials")
    if published:
        cube = cube.isel({schema.CLUSTER: np.asarray(cube[schema.QC_PASS].values, dtype=bool)})

    # --- windows, in whole bins ---------------------------------------------------------
    pre_window = cube.attrs.get(schema.ATTR_PRE_WINDOW, schema.PRE_WINDOW_S)
    pre_start = _bin_index(cube, pre_window[0], "pre window start")
    pre_stop = _bin_index(cube, pre_window[1], "pre window end")
    pre_s = (_us(pre_window[1]) - _us(pre_window[0])) / _US_PER_S
    coords, code, duration_code, durations = _conditions(cube, by_keys)
    stim_start = _bin_index(cube, 0.0, "stim window start")
    stops = np.array([_bin_index(cube, d, f"stim window [0, {d!r}) s end") for d in durations], np.int64)
    n_conditions, n_durations = coords[schema.N_TRIALS].size, durations.size

    if cube.sizes[schema.CLUSTER] == 0:  # no cluster (none passes QC): flox cannot group an empty array
        empty = {np.float64: np.zeros((0, n_conditions)), bool: np.zeros((0, n_conditions), bool)}
        data = {name: xr.DataArray(empty[bool if name in _BOOLEANS else np.float64], dims=(schema.CLUSTER,
                                                                                          schema.CONDITION))
                for name in (schema.PRE_RATE, schema.STIM_RATE, schema.PCT_CHANGE, schema.P_VALUE, *_BOOLEANS)}
        return _dataset(cube, data, coords, mode, by_keys)

    # --- per-trial counts and rates (lazy) ------------------------------------------------
    counts = cube[schema.SPIKE_COUNTS].reset_coords(drop=True)
    if counts.chunks is not None and len(counts.chunksizes[schema.TIME]) > 1:
        counts = counts.chunk({schema.TIME: -1})  # a window sum needs every bin of a trial in one block
    trial_chunks = {schema.TRIAL: counts.chunksizes[schema.TRIAL]} if counts.chunks is not None else None

    def trial_array(values: np.ndarray) -> xr.DataArray:
        arr = xr.DataArray(values, dims=schema.TRIAL)
        return arr.chunk(trial_chunks) if trial_chunks else arr

    windows = xr.apply_ufunc(
        functools.partial(_window_counts, pre=(pre_start, pre_stop), stim_start=stim_start),
        counts, trial_array(stops[duration_code]), input_core_dims=[[schema.TIME], []],
        output_core_dims=[[_WINDOW]], dask="parallelized", output_dtypes=[np.int64],
        dask_gufunc_kwargs={"output_sizes": {_WINDOW: 2}},
    )
    if counts.chunks is not None:
        # The per-trial counts are small (8 bytes per cluster and trial): merge them into few large blocks,
        # so the grouped reductions and the t-test below run as a handful of tasks rather than a few per
        # chunk of the cube (scheduler overhead, not arithmetic, dominated them).
        trial_chunks = {schema.TRIAL: _merged_trial_chunk(counts.chunksizes[schema.TRIAL], cube.sizes[schema.CLUSTER])}
        windows = windows.chunk({schema.CLUSTER: -1, **trial_chunks})
    pre_count, stim_count = windows.isel({_WINDOW: 0}), windows.isel({_WINDOW: 1})
    duration = xr.DataArray(np.asarray(cube[schema.DURATION].values, np.float64), dims=schema.TRIAL)
    diff = stim_count / duration - pre_count / pre_s  # per-trial stim rate - pre rate

    # --- grouped reductions (flox): exact integer sums per cell, extremes per condition ----
    cell = xr.DataArray(code * n_durations + duration_code, dims=schema.TRIAL, name=_CELL)
    cond = xr.DataArray(code, dims=schema.TRIAL, name=schema.CONDITION)
    sums = xarray_reduce(
        xr.Dataset({"pre": pre_count, "stim": stim_count}), cell, func="sum",
        expected_groups=np.arange(n_conditions * n_durations), fill_value=0, method="map-reduce",
    )
    extremes = {
        func: xarray_reduce(diff, cond, func=func, expected_groups=np.arange(n_conditions), method="map-reduce",
                            skipna=False)
        for func in ("max", "min")
    }
    n = xr.DataArray(coords[schema.N_TRIALS], dims=schema.CONDITION)
    pre, stim, centre = xr.apply_ufunc(
        functools.partial(_means, n=coords[schema.N_TRIALS], durations=durations, pre_s=pre_s),
        sums["pre"], sums["stim"], extremes["max"], extremes["min"],
        input_core_dims=[[_CELL], [_CELL], [schema.CONDITION], [schema.CONDITION]],
        output_core_dims=[[schema.CONDITION]] * 3, dask="parallelized",
        output_dtypes=[np.float64] * 3, dask_gufunc_kwargs={"allow_rechunk": True},
    )

    # --- second pass of the t-test: squared deviations from the condition's mean ----------
    centre_per_trial = xr.apply_ufunc(
        _take_conditions, centre, trial_array(code), input_core_dims=[[schema.CONDITION], []],
        dask="parallelized", output_dtypes=[np.float64], dask_gufunc_kwargs={"allow_rechunk": True},
    )
    ss = xarray_reduce(
        (diff - centre_per_trial) ** 2, cond, func="sum", expected_groups=np.arange(n_conditions),
        method="map-reduce", skipna=False,
    )
    pct, p = xr.apply_ufunc(
        functools.partial(_finish, published=published), pre, stim, centre, ss, n,
        dask="parallelized", output_dtypes=[np.float64, np.float64], output_core_dims=[[], []],
    )

    # --- classification and the dataset ---------------------------------------------------------
    if published:
        kept = (pre != 0) & (stim != 0)
        pre, stim, pct, p = (x.where(kept) for x in (pre, stim, pct, p))
    activated = pct > schema.ACTIVATED_MIN_PCT
    inactivated = (pct < schema.INACTIVATED_MAX_PCT) & (pre > schema.INACTIVATED_MIN_PRE_HZ)
    significant = p < schema.SIGNIFICANCE_P
    data = {
        schema.PRE_RATE: pre, schema.STIM_RATE: stim, schema.PCT_CHANGE: pct, schema.P_VALUE: p,
        schema.ACTIVATED: activated, schema.INACTIVATED: inactivated, schema.SIGNIFICANT: significant,
    }
    return _dataset(cube, data, coords, mode, by_keys)


def _dataset(cube: xr.Dataset, data: dict[str, xr.DataArray], coords: dict[str, np.ndarray], mode: str,
             by_keys: tuple[str, ...]) -> xr.Dataset:
    """The responses Dataset: the variables, the cube's per-cluster coordinates, the conditions' and distances."""
    n_conditions = coords[schema.N_TRIALS].size
    depth = np.asarray(cube[schema.DEPTH_FROM_SURFACE].values, np.float64)
    cluster_coords = {name: c.variable for name, c in cube.coords.items() if c.dims == (schema.CLUSTER,)}
    out = xr.Dataset(
        {name: x.transpose(schema.CLUSTER, schema.CONDITION).variable for name, x in data.items()},
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
            out[name].attrs = _attrs(name)
    out.attrs = {
        schema.ATTR_SESSION_ID: cube.attrs.get(schema.ATTR_SESSION_ID, ""),
        schema.ATTR_MODE: mode,
        schema.ATTR_BY: list(by_keys),
        schema.ATTR_BIN_WIDTH: cube.attrs.get(schema.ATTR_BIN_WIDTH),
    }
    return out


def _cubes(cubes_or_catalog: Any) -> list[xr.Dataset]:
    """Datasets from a Catalog / mapping, one Dataset, an iterable of Datasets or store paths, or a folder."""
    from .catalog import cubes_of

    return [cube for _, cube in cubes_of(cubes_or_catalog)]


def to_table(result: xr.Dataset) -> pd.DataFrame:
    """The long table of one computed (or lazy) :func:`responses` Dataset: one row per cluster x condition.

    The interface's columns first (``schema.RESPONSE_COLUMNS``), then
    ``emitter_depth_um``; in published mode the dropped pairs are left out.
    """
    result = result.compute()
    df = result.reset_coords().drop_vars(schema.CONDITION).to_dataframe().reset_index()
    df.insert(0, schema.SESSION_ID, result.attrs.get(schema.ATTR_SESSION_ID, ""))
    if result.attrs.get(schema.ATTR_MODE) == schema.MODE_PUBLISHED:
        df = df[df[schema.PRE_RATE].notna()]
    for name in (schema.WAVEFORM_TYPE, schema.SESSION_ID):
        df[name] = df[name].astype(object).astype(str)
    extras = [schema.EMITTER_DEPTH]
    return df[[*schema.RESPONSE_COLUMNS, *extras]].reset_index(drop=True)


def compute_all(results: Sequence[xr.Dataset]) -> list[xr.Dataset]:
    """Compute several lazy Datasets in one ``dask.compute`` (shared reads, parallel sessions).

    The dask arrays are handed to ``dask.compute`` one by one rather than
    the Datasets: ``dask.compute(dataset)`` of an ``apply_ufunc(dask="parallelized")``
    result together with a variable derived from it fails with "Missing
    dependency ('transpose-...')" under xarray 2026.9 / dask 2026.8, while
    ``Dataset.compute()`` and ``dask.compute`` of the arrays work.
    """
    lazy = [(i, name, ds[name].data) for i, ds in enumerate(results) for name in ds.data_vars
            if dask.is_dask_collection(ds[name].data)]
    values = dask.compute(*(arr for _, _, arr in lazy))
    out = [ds.copy() for ds in results]
    for (i, name, _), value in zip(lazy, values, strict=True):
        out[i][name] = out[i][name].copy(data=value)
    return out


def responses_table(cubes_or_catalog: Any, **kw: Any) -> pd.DataFrame:
    """The long responses table of many sessions: one row per session x cluster x condition.

    Parameters
    ----------
    cubes_or_catalog
        A :class:`opto_cube.catalog.Catalog` (or any mapping of cubes), one cube,
        an iterable of cubes or store paths, or a folder of stores.
    **kw
        Passed to :func:`responses` (``by``, ``mode``).

    Returns
    -------
    pandas.DataFrame
        Columns ``session_id, cluster, emitter, power_mw, duration_s, n_trials,
        pre_rate_hz, stim_rate_hz, pct_change, p_value, activated, inactivated,
        significant, distance_um, depth_from_surface_um, waveform_type, qc_pass``,
        then ``emitter_depth_um``. Every session is computed in one
        ``dask.compute``, so an active ``distributed.Client`` runs them in parallel.

    Examples
    --------
    >>> import tempfile, warnings
    >>> from opto_cube import synth, convert
    >>> from opto_cube.catalog import open_catalog
    >>> root = tempfile.mkdtemp()
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("ignore")
    ...     for folder in synth.make_dataset(root, n_sessions=2, size="tiny"):
    ...         _ = convert.convert_session(folder, root + "/stores", bin_ms=10)
    >>> table = responses_table(open_catalog(root + "/stores"))
    >>> len(table), table[schema.SESSION_ID].nunique()
    (192, 2)
    >>> list(table.columns[:6])
    ['session_id', 'cluster', 'emitter', 'power_mw', 'duration_s', 'n_trials']
    """
    lazy = [responses(cube, **kw) for cube in _cubes(cubes_or_catalog)]
    tables = [to_table(r) for r in compute_all(lazy)]
    if not tables:
        return pd.DataFrame(columns=[*schema.RESPONSE_COLUMNS, schema.EMITTER_DEPTH])
    return pd.concat(tables, ignore_index=True)
