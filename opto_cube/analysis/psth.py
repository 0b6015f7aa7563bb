"""Time-resolved analysis from cubes: PSTHs, and the per-condition time course they come from.

- :func:`psth`: the trial-averaged rate of some clusters around onset, lazily
  from one cube (for exploring in Jupyter);
- :func:`condition_time_course`: the exact integer sums of every cluster's
  spikes over the trials of each condition, ``(cluster, condition, time)``,
  with each condition's trial count, in one pass over the cube (numpy, a
  block of trials at a time): the one read of a cube that the maps' PSTHs
  and any other time-resolved column (latency, light artifacts) share;
- :func:`population_psth`: units near an emitter, every power level, pooled
  across sessions, from those time courses.

Conditions and unit filters are those of :mod:`opto_cube.analysis.conditions`; the
cube's layout is described in ``docs/contract.md``.

Examples
--------
>>> import numpy as np, xarray as xr
>>> counts = np.zeros((2, 4, 150), dtype=np.uint8)
>>> counts[:, :, 50] = 1  # one spike per trial in the bin just after onset
>>> cube = xr.Dataset(
...     {"spike_counts": (("cluster", "trial", "time"), counts)},
...     coords={"cluster": [0, 1], "time": np.arange(150) * 0.01 - 0.495,
...             "emitter": ("trial", [1, 1, 2, 2]), "power_mw": ("trial", [1.0, 4.0, 1.0, 4.0]),
...             "duration_s": ("trial", [0.01] * 4), "emitter_depth_um": ("trial", [900.0, 900.0, 800.0, 800.0])},
...     attrs={"bin_width_s": 0.01, "pre_window_s": [-0.5, 0.0]})
>>> course = condition_time_course(cube)
>>> course.time_course.sizes, course.n_trials.values.tolist()
(Frozen({'cluster': 2, 'condition': 4, 'time': 150}), [1, 1, 1, 1])
>>> int(course.time_course.sum())
8
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import xarray as xr

from opto_cube import schema
from opto_cube.analysis.conditions import check_unknown_policy, match, trial_conditions, trial_mask, unit_mask

MAP_FIRING_RATE = "firing_rate"
PSTH_TARGET_BIN_MS = 5.0  # ... in bins of at least this width (a multiple of the cube's that tiles the pre window)

__all__ = ["combine_psths", "condition_time_course", "population_psth", "psth", "psth_bin_ms", "session_psth"]


# --------------------------------------------------------------------------
# Bins
# --------------------------------------------------------------------------
def _bin_width(cube: xr.Dataset) -> float:
    width = float(cube.attrs.get(schema.ATTR_BIN_WIDTH, np.nan))
    if not math.isfinite(width):
        t = cube[schema.TIME].values
        width = float(np.median(np.diff(t))) if t.size > 1 else math.nan
    return width


def _coarsen_factor(cube: xr.Dataset, width: float, bin_ms: float) -> int:
    """Bins of the cube per bin of ``bin_ms``; ValueError unless a whole multiple keeping onset a bin edge."""
    factor = float(bin_ms) / 1000.0 / width
    pre = cube.attrs.get(schema.ATTR_PRE_WINDOW, list(schema.PRE_WINDOW_S))
    start = float(cube[schema.TIME].values[0]) - width / 2
    onset_bins = (0.0 - start) / (float(bin_ms) / 1000.0)
    if not (factor >= 1 and abs(factor - round(factor)) < 1e-6 and abs(onset_bins - round(onset_bins)) < 1e-6):
        raise ValueError(
            f"bin_ms={bin_ms!r} must be a whole multiple of the cube's {width * 1000:g} ms bins that tiles the "
            f"window from {start:g} s to onset (pre window {pre!r} s)"
        )
    return round(factor)


def psth_bin_ms(bin_widths_s: Any, target_ms: float = PSTH_TARGET_BIN_MS) -> float | None:
    """The smallest multiple of the cubes' (common) bin width of at least ``target_ms`` that tiles the pre window.

    None when the cubes' bin widths differ or no such multiple exists.

    Examples
    --------
    >>> psth_bin_ms([0.001, 0.001]), psth_bin_ms([0.01]), psth_bin_ms([0.001, 0.01])
    (5.0, 10.0, None)
    """
    widths = {round(float(w) * 1e6) for w in np.atleast_1d(bin_widths_s)}
    if len(widths) != 1 or 0 in widths:
        return None
    width_us = widths.pop()
    pre_us = round(-schema.PRE_WINDOW_S[0] * 1e6)
    for k in range(max(1, math.ceil(target_ms * 1000 / width_us)), pre_us // width_us + 1):
        if pre_us % (k * width_us) == 0:
            return k * width_us / 1000.0
    return None


# --------------------------------------------------------------------------
# One cube, lazily
# --------------------------------------------------------------------------
def psth(
    cube: xr.Dataset,
    *,
    clusters: Any = None,
    emitter: Any = None,
    power_mw: Any = None,
    duration_s: Any = None,
    bin_ms: float | None = None,
) -> xr.DataArray:
    """Trial-averaged firing rate around stimulus onset, lazily from a cube.

    Parameters
    ----------
    cube
        An opened cube (:func:`opto_cube.store.open.open_cube`); nothing is read.
    clusters
        Cluster ids (one or a list); default all.
    emitter
        Emitter id(s) whose trials to average; ``"nearest"`` averages, for
        each cluster, the trials of the emitter nearest to it in depth (the
        distance is then a cluster coordinate ``distance_um``); default all.
    power_mw
        Power level(s), mW, matched within a relative 1e-6; ``"max"`` or
        ``"min"`` the highest or lowest level; default all.
    duration_s
        Pulse duration(s), s, or ``"max"`` / ``"min"``; default all.
    bin_ms
        Re-bin to this width, ms: a whole multiple of the cube's bin width
        that tiles the pre window, so onset stays a bin edge (``coarsen``;
        a ragged last bin is dropped).

    Returns
    -------
    xarray.DataArray
        ``firing_rate`` (Hz), dims (cluster, time), dask-backed; time is the
        bin centre in s from onset. Attributes: ``bin_width_s``,
        ``n_trials`` and ``stim_durations_s`` (the pulses averaged over).

    Examples
    --------
    >>> import dask.array as da, numpy as np, xarray as xr
    >>> counts = np.zeros((2, 4, 150), dtype=np.uint8)
    >>> counts[:, :, 50] = 1  # one spike per trial in the bin just after onset
    >>> cube = xr.Dataset(
    ...     {"spike_counts": (("cluster", "trial", "time"), da.from_array(counts, chunks=(1, 2, 150)))},
    ...     coords={"cluster": [0, 1], "time": np.arange(150) * 0.01 - 0.495,
    ...             "emitter": ("trial", [1, 1, 2, 2]), "power_mw": ("trial", [1.0, 4.0, 1.0, 4.0]),
    ...             "duration_s": ("trial", [0.01] * 4)},
    ...     attrs={"bin_width_s": 0.01, "pre_window_s": [-0.5, 0.0]})
    >>> rate = psth(cube, emitter=1, bin_ms=50)
    >>> rate.dims, rate.sizes["time"], rate.attrs["n_trials"]
    (('cluster', 'time'), 30, 2)
    >>> rate.sel(cluster=0).values[9:12]  # 1 spike in 50 ms
    array([ 0., 20.,  0.])
    """
    if not isinstance(cube, xr.Dataset) or schema.SPIKE_COUNTS not in cube:
        raise TypeError(f"psth expects an opened cube (a Dataset with {schema.SPIKE_COUNTS!r})")
    counts = cube[schema.SPIKE_COUNTS]
    width = _bin_width(cube)
    if clusters is not None:
        ids = np.atleast_1d(np.asarray(clusters))
        unknown = np.setdiff1d(ids, cube[schema.CLUSTER].values)
        if unknown.size:
            raise ValueError(f"no cluster(s) {unknown.tolist()!r} in the cube ({cube.sizes[schema.CLUSTER]} clusters)")
        counts = counts.sel({schema.CLUSTER: ids})
    nearest = isinstance(emitter, str) and emitter == "nearest"
    mask = trial_mask(cube, emitter=None if nearest else emitter, power_mw=power_mw, duration_s=duration_s)
    selected = counts.isel({schema.TRIAL: np.flatnonzero(mask)})
    if nearest:
        # in memory, (cluster, trial): which of the selected trials are those of the cluster's nearest emitter
        distance = selected[schema.DEPTH_FROM_SURFACE] - selected[schema.EMITTER_DEPTH]
        use = abs(distance) == abs(distance).min(schema.TRIAL)
        rate = selected.astype(np.float64).where(use).mean(schema.TRIAL)
        rate = rate.assign_coords(
            {
                schema.DISTANCE: distance.where(use).max(schema.TRIAL).assign_attrs(_DISTANCE_ATTRS),
                schema.N_TRIALS: use.sum(schema.TRIAL).assign_attrs(_N_TRIALS_ATTRS),
            }
        )
    else:
        rate = selected.mean(schema.TRIAL)
    rate = rate / width
    attrs: dict[str, Any] = {
        **_RATE_ATTRS,
        schema.ATTR_BIN_WIDTH: width,
        "stim_durations_s": np.unique(cube[schema.DURATION].values[mask]),
        schema.ATTR_SESSION_ID: str(cube.attrs.get(schema.ATTR_SESSION_ID, "")),
    }
    if not nearest:
        attrs[schema.N_TRIALS] = int(mask.sum())
    if bin_ms is not None:
        rate = rate.coarsen({schema.TIME: _coarsen_factor(cube, width, bin_ms)}, boundary="trim").mean()
        attrs[schema.ATTR_BIN_WIDTH] = float(bin_ms) / 1000.0
    rate.attrs = attrs
    rate[schema.TIME].attrs = dict(_TIME_ATTRS)
    return rate.rename(MAP_FIRING_RATE)


_RATE_ATTRS = {"units": "Hz", "long_name": "firing rate, mean over trials"}
_TIME_ATTRS = {"units": "s", "long_name": "bin centre relative to stimulus onset"}
_DISTANCE_ATTRS = {"units": "um", "long_name": "distance from the nearest emitter (+ deeper)"}
_N_TRIALS_ATTRS = {"units": "1", "long_name": "trials averaged"}


# --------------------------------------------------------------------------
# One pass over a cube: exact sums per condition
# --------------------------------------------------------------------------
def _trial_block(counts: xr.DataArray) -> int:
    """Trials per read: the stored chunk (or dask chunk) along trials."""
    if counts.chunks is not None:
        return int(max(counts.chunksizes[schema.TRIAL]))
    stored = counts.encoding.get("preferred_chunks", {}).get(schema.TRIAL) or counts.encoding.get("chunks")
    if isinstance(stored, (tuple, list)):
        stored = stored[counts.dims.index(schema.TRIAL)]
    return int(stored or schema.CHUNK_TRIALS)


def _one_pass(cube: xr.Dataset, conditions: Any) -> np.ndarray:
    """``spike_counts`` summed per condition, a stored block of trials at a time (int64)."""
    counts = cube[schema.SPIKE_COUNTS].transpose(schema.CLUSTER, schema.TRIAL, schema.TIME)
    n_clusters, n_trials, n_bins = counts.shape
    out = np.zeros((n_clusters, conditions.n_conditions, n_bins), dtype=np.int64)
    step = _trial_block(counts)
    for start in range(0, n_trials, step):
        block = np.asarray(counts[:, start : start + step].values)
        code = conditions.code[start : start + step]
        order = np.argsort(code, kind="stable")
        sorted_code = code[order]
        starts = np.flatnonzero(np.r_[True, sorted_code[1:] != sorted_code[:-1]])
        if n_clusters:
            out[:, sorted_code[starts]] += np.add.reduceat(block[:, order], starts, axis=1, dtype=np.int64)
    return out


def condition_time_course(cube: xr.Dataset, by: tuple[str, ...] = schema.CONDITION_KEYS) -> xr.Dataset:
    """Every cluster's spikes summed over the trials of each condition, bin by bin: exact integers.

    For the default ``by``, from the store's ``condition_counts`` (written by
    the conversion's one pass, ``docs/contract.md``): no read of
    ``spike_counts``. Otherwise (other ``by``, or a store without it), one
    pass over ``spike_counts``, a stored block of trials at a time (memory
    bounded by a block and the result); a dask-backed cube computes each
    block as it goes. Both give the same result.

    Parameters
    ----------
    cube
        An opened cube.
    by
        The condition keys (:func:`opto_cube.analysis.conditions.check_by`); default
        emitter, power level and duration.

    Returns
    -------
    xarray.Dataset
        ``time_course`` (cluster, condition, time), int64 spike sums; the
        per-condition coordinates of :func:`opto_cube.analysis.conditions.trial_conditions`
        (``emitter``, ``power_mw``, ``duration_s``, ``n_trials``,
        ``emitter_depth_um``), the cube's per-cluster coordinates, ``time``,
        and the attributes ``session_id`` and ``bin_width_s``. A rate is
        ``time_course / n_trials / bin_width_s``.
    """
    if not isinstance(cube, xr.Dataset) or not ({schema.SPIKE_COUNTS, schema.CONDITION_COUNTS} & set(cube.data_vars)):
        raise TypeError(f"condition_time_course expects an opened cube (a Dataset with {schema.SPIKE_COUNTS!r})")
    conditions = trial_conditions(cube, by)
    stored = (
        tuple(by) == schema.CONDITION_KEYS
        and schema.CONDITION_COUNTS in cube.data_vars
        and schema.TRIAL_CONDITION in cube.coords
        and np.array_equal(cube[schema.TRIAL_CONDITION].values, conditions.code)
    )
    if stored:
        dims = (schema.CLUSTER, schema.CONDITION, schema.TIME)
        out = np.asarray(cube[schema.CONDITION_COUNTS].transpose(*dims).values, np.int64)
    elif schema.SPIKE_COUNTS in cube.data_vars:
        out = _one_pass(cube, conditions)
    else:
        raise TypeError(f"condition_time_course by {by!r} needs {schema.SPIKE_COUNTS!r} in the cube")
    cluster_coords = {str(name): c.variable for name, c in cube.coords.items() if c.dims == (schema.CLUSTER,)}
    coords: dict[str, Any] = {
        **cluster_coords,
        schema.CONDITION: np.arange(conditions.n_conditions, dtype=np.int64),
        **{name: (schema.CONDITION, values) for name, values in conditions.coords.items()},
        schema.TIME: cube[schema.TIME].variable,
    }
    dims = (schema.CLUSTER, schema.CONDITION, schema.TIME)
    return xr.Dataset(
        {schema.TIME_COURSE: (dims, out, {"units": "1", "long_name": "spikes summed over the condition's trials"})},
        coords=coords,
        attrs={
            schema.ATTR_SESSION_ID: str(cube.attrs.get(schema.ATTR_SESSION_ID, "")),
            schema.ATTR_BIN_WIDTH: _bin_width(cube),
            schema.ATTR_PRE_WINDOW: list(cube.attrs.get(schema.ATTR_PRE_WINDOW, schema.PRE_WINDOW_S)),
        },
    )


# --------------------------------------------------------------------------
# Units near an emitter, pooled across sessions
# --------------------------------------------------------------------------
def _near_rate(course: xr.Dataset, conditions: np.ndarray, keep: np.ndarray) -> tuple[np.ndarray, ...]:
    """Rate (cluster, time) of each kept cluster over the trials of its nearest emitter among ``conditions``."""
    depth = np.asarray(course[schema.DEPTH_FROM_SURFACE].values, np.float64)[keep]
    distance = depth[:, None] - np.asarray(course[schema.EMITTER_DEPTH].values, np.float64)[None, conditions]
    nearest = np.abs(distance) == np.abs(distance).min(axis=1, keepdims=True)
    n = nearest @ np.asarray(course[schema.N_TRIALS].values)[conditions]
    sums = np.einsum(
        "kc,kct->kt", nearest.astype(np.int64), np.asarray(course[schema.TIME_COURSE].values)[np.ix_(keep, conditions)]
    )
    width = float(course.attrs[schema.ATTR_BIN_WIDTH])
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = sums / n[:, None] / width
    return rate, np.where(nearest, distance, -np.inf).max(axis=1), n


def _session_psth(course: xr.Dataset, levels: np.ndarray, duration_s: Any, keep: np.ndarray) -> xr.DataArray | None:
    """One session's rates (power_mw, cluster, time) at the given global levels, nearest emitter per cluster."""
    cond_power = np.asarray(course[schema.POWER].values, np.float64)
    chosen = np.ones(cond_power.size, bool)
    if duration_s is not None:
        chosen = match(course[schema.DURATION].values, duration_s, schema.MATCH_RTOL[schema.DURATION], schema.DURATION)
    per_level, first = [], None  # the distance and trial count of the first level are the unit's coordinates
    for level in levels:
        conditions = np.flatnonzero(chosen & np.isclose(cond_power, level, rtol=schema.POWER_RTOL, atol=1e-12))
        if conditions.size == 0:
            per_level.append(np.full((int(keep.sum()), course.sizes[schema.TIME]), np.nan))
            continue
        rate, distance, n = _near_rate(course, conditions, keep)
        per_level.append(rate)
        first = first or (distance, n)
    if first is None:
        return None
    distance, n = first
    cluster_coords = {
        name: (schema.CLUSTER, np.asarray(c.values)[keep])
        for name, c in course.coords.items()
        if c.dims == (schema.CLUSTER,)
    }
    return xr.DataArray(
        np.stack(per_level),
        dims=(schema.POWER, schema.CLUSTER, schema.TIME),
        coords={
            **cluster_coords,
            schema.TIME: course[schema.TIME].values,
            schema.DISTANCE: (schema.CLUSTER, distance, _DISTANCE_ATTRS),
            schema.N_TRIALS: (schema.CLUSTER, n, _N_TRIALS_ATTRS),
        },
        attrs={"stim_durations_s": np.unique(course[schema.DURATION].values[chosen])},
    )


def population_psth(
    courses: Any,
    *,
    max_distance_um: float = schema.PSTH_NEAR_EMITTER_UM,
    duration_s: Any = "max",
    bin_ms: float | None = None,
    qc_only: bool = True,
    unknown_waveform: str = "drop",
) -> xr.DataArray:
    """PSTHs of every unit near an emitter, at every power level, pooled across sessions.

    Each unit's trials are those of the emitter nearest to it in depth (as
    :func:`psth` with ``emitter="nearest"``); units farther than
    ``max_distance_um`` from every emitter are left out. Power levels of the
    sessions are matched within a relative 1e-6.

    Parameters
    ----------
    courses
        ``session_id -> time course`` (:func:`condition_time_course`), or
        what :func:`opto_cube.store.catalog.cubes_of` accepts (a catalog, cubes, a
        folder of stores): then each cube is read once here.
    max_distance_um
        Largest |distance| between a unit and its nearest emitter, um.
    duration_s
        Pulse duration(s) to average, s, ``"max"`` (default, per session) or None for all.
    bin_ms
        Re-bin, ms (as in :func:`psth`).
    qc_only, unknown_waveform
        Which units count (:func:`opto_cube.analysis.conditions.unit_mask`).

    Returns
    -------
    xarray.DataArray
        ``firing_rate`` (Hz), dims (power_mw, unit, time); ``unit`` carries
        ``session_id``, ``cluster``, ``waveform_type``, ``distance_um`` and
        the cube's other per-cluster coordinates.
    """
    check_unknown_policy(unknown_waveform)
    if not (isinstance(courses, Mapping) and all(schema.TIME_COURSE in c for c in courses.values())):
        from opto_cube.store.catalog import cubes_of

        courses = {sid: condition_time_course(cube) for sid, cube in cubes_of(courses)}
    if not courses:
        raise ValueError("population_psth: no cubes")
    options = dict(
        max_distance_um=max_distance_um,
        duration_s=duration_s,
        bin_ms=bin_ms,
        qc_only=qc_only,
        unknown_waveform=unknown_waveform,
    )
    return combine_psths(
        [session_psth(course, sid, **options) for sid, course in courses.items()], max_distance_um=max_distance_um
    )


def session_psth(
    course: xr.Dataset,
    session_id: str,
    *,
    max_distance_um: float = schema.PSTH_NEAR_EMITTER_UM,
    duration_s: Any = "max",
    bin_ms: float | None = None,
    qc_only: bool = True,
    unknown_waveform: str = "drop",
) -> xr.DataArray | None:
    """One session's part of :func:`population_psth` (small: units near an emitter x levels x bins), or None.

    The power coordinate is the session's own levels; :func:`combine_psths`
    matches levels across sessions.
    """
    check_unknown_policy(unknown_waveform)
    keep = np.isfinite(np.asarray(course[schema.DEPTH_FROM_SURFACE].values, np.float64)) & unit_mask(
        course[schema.QC_PASS].values,
        course[schema.WAVEFORM_TYPE].values,
        qc_only=qc_only,
        unknown_waveform=unknown_waveform,
    )
    if not keep.any():
        return None
    levels = np.unique(np.asarray(course[schema.POWER].values, np.float64))
    rate = _session_psth(course, levels, duration_s, keep)
    if rate is None:
        return None
    rate = rate.assign_coords({schema.POWER: levels})
    rate = rate.isel({schema.CLUSTER: np.flatnonzero(np.abs(rate[schema.DISTANCE].values) <= max_distance_um)})
    if bin_ms is not None:
        factor = _coarsen_factor(course, float(course.attrs[schema.ATTR_BIN_WIDTH]), bin_ms)
        rate = rate.coarsen({schema.TIME: factor}, boundary="trim").mean()
    rate = rate.assign_coords(unit=(schema.CLUSTER, np.arange(rate.sizes[schema.CLUSTER])))
    rate = rate.swap_dims({schema.CLUSTER: "unit"})
    rate.attrs[schema.ATTR_BIN_WIDTH] = (
        float(bin_ms) / 1000.0 if bin_ms is not None else float(course.attrs[schema.ATTR_BIN_WIDTH])
    )
    return rate.assign_coords({schema.SESSION_ID: ("unit", [session_id] * rate.sizes["unit"])})


def combine_psths(pieces: list[xr.DataArray | None], *, max_distance_um: float) -> xr.DataArray:
    """Sessions' :func:`session_psth` as one population PSTH, power levels matched across sessions (relative 1e-6)."""
    found = [p for p in pieces if p is not None]
    if not found:
        raise ValueError("population_psth: no unit passes the filters")
    levels = [np.asarray(p[schema.POWER].values, np.float64) for p in found]
    global_index, global_levels = schema.power_levels(np.concatenate(levels))
    offsets = np.cumsum([0, *(lv.size for lv in levels)])
    matched = [
        p.assign_coords({schema.POWER: global_levels[global_index[offsets[k] : offsets[k + 1]]]})
        for k, p in enumerate(found)
    ]
    out = xr.concat(matched, dim="unit", join="outer", coords="minimal", compat="override")
    out = out.assign_coords(unit=np.arange(out.sizes["unit"]))
    out.attrs = {
        **_RATE_ATTRS,
        schema.ATTR_BIN_WIDTH: matched[0].attrs[schema.ATTR_BIN_WIDTH],
        "max_distance_um": float(max_distance_um),
        "n_sessions": len(matched),
        "stim_durations_s": np.unique(np.concatenate([np.atleast_1d(p.attrs["stim_durations_s"]) for p in matched])),
    }
    out[schema.TIME].attrs = dict(_TIME_ATTRS)
    out[schema.POWER].attrs = {"units": "mW", "long_name": "power level (mean)"}
    return out.rename(MAP_FIRING_RATE)
