"""The responses' array kernels: one session's statistics and timing columns, numpy in and numpy out.

The numpy half of :mod:`opto_cube.analysis.response` (as flox keeps ``core.py``
apart from ``xarray.py``): no labels, no xarray, no dask. It owns

- the windows in whole bins of the cube (:func:`windows`) and their sums over
  ``spike_counts`` for a store without ``window_counts`` (:func:`sum_windows`);
- the per-condition count sums, mean rates, percent change and the paired
  t-test (:func:`statistics`), the flags and the q-values (:func:`classify`);
- the timing columns from the stored timing arrays (:func:`timing_columns`,
  over :mod:`opto_cube.analysis.timing_core`), and why they are NaN (:func:`timing_note`);
- one session's table columns from the arrays a task read (:func:`session_columns`):
  plain arrays in, a dict of column arrays out, the same values as
  :func:`opto_cube.analysis.response.to_table` of :func:`opto_cube.analysis.response.responses`.

:mod:`opto_cube.analysis.response` wraps the same kernels lazily (one dask
task per block of clusters) and labels them; the statistics and their two
modes are described there.

Examples
--------
>>> counts = np.array([[[1, 4], [0, 6], [2, 2]]])  # one cluster, three trials, (pre, stim)
>>> conditions = conditions_of(
...     {"emitter": np.array([1, 1, 1]), "power_mw": np.array([1.0, 1.0, 1.0]),
...      "duration_s": np.array([0.5, 0.5, 0.5]), "emitter_depth_um": np.array([100.0, 100.0, 100.0])},
...     ("emitter", "power", "duration"))
>>> statistics(counts, conditions, 0.5, published=False)[0, 0, :3].round(3).tolist()
[2.0, 8.0, 300.0]
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.special

from opto_cube import schema
from opto_cube.analysis import latency, timing_core
from opto_cube.analysis.conditions import TrialConditions, conditions_of

__all__ = [
    "TIMING",
    "Windows",
    "classify",
    "direction_of",
    "latency_where_responding",
    "pooling_of",
    "session_columns",
    "statistics",
    "stored_conditions",
    "sum_windows",
    "timing_columns",
    "timing_note",
    "windows",
]

_US_PER_S = 1_000_000


# --------------------------------------------------------------------------
# The windows, in whole bins of the cube
# --------------------------------------------------------------------------
def _us(seconds: float) -> int:
    return round(float(seconds) * _US_PER_S)


@dataclass(frozen=True)
class Windows:
    """The pre window and the stim windows as bin indices of the cube's time axis."""

    pre_s: float  # length of the pre window, s
    pre: tuple[int, int]  # its bins [start, stop)
    stim_start: int
    stops: np.ndarray  # the stim window's end bin, per distinct duration


def _bin_index(attrs: Mapping[str, Any], n_time: int, seconds: float, what: str) -> int:
    """Index of the bin edge at ``seconds`` from onset; refuses an edge that is not one."""
    session = attrs.get(schema.ATTR_SESSION_ID, "?")
    try:
        bin_us = _us(attrs[schema.ATTR_BIN_WIDTH])
        start_us = _us(attrs[schema.ATTR_WINDOW][0])
    except (KeyError, TypeError, IndexError) as e:
        raise ValueError(
            f"cube {session!r} lacks the {schema.ATTR_BIN_WIDTH!r} and {schema.ATTR_WINDOW!r} attributes of an "
            "opto_cube store"
        ) from e
    index, rest = divmod(_us(seconds) - start_us, bin_us)
    if rest or not 0 <= index <= n_time:
        raise ValueError(
            f"cube {session!r}: {what} edge {seconds!r} s is not a bin edge of its window "
            f"{attrs[schema.ATTR_WINDOW]!r} s in {bin_us} us bins; reconvert with a bin width that tiles it"
        )
    return index


def windows(attrs: Mapping[str, Any], n_time: int, durations: np.ndarray) -> Windows:
    """The windows of a cube with attributes ``attrs`` and ``n_time`` bins, for the distinct ``durations``.

    Raises ValueError naming the session when an edge is not a bin edge of the cube's window.
    """
    pre_window = attrs.get(schema.ATTR_PRE_WINDOW, schema.PRE_WINDOW_S)
    pre = (
        _bin_index(attrs, n_time, pre_window[0], "pre window start"),
        _bin_index(attrs, n_time, pre_window[1], "pre window end"),
    )
    stim_start = _bin_index(attrs, n_time, 0.0, "stim window start")
    stops = np.array([_bin_index(attrs, n_time, d, f"stim window [0, {d!r}) s end") for d in durations], np.int64)
    return Windows((_us(pre_window[1]) - _us(pre_window[0])) / _US_PER_S, pre, stim_start, stops)


def sum_windows(counts: np.ndarray, stop: np.ndarray, *, pre: tuple[int, int], stim_start: int) -> np.ndarray:
    """Each trial's spikes in the pre window and in its stim window ``[stim_start, stop)``, stacked last.

    A block function of ``spike_counts``: one slice sum for the pre window, one per distinct stop for the
    stim window.
    """
    stop = np.broadcast_to(stop, counts.shape[:-1])
    out = np.zeros((*counts.shape[:-1], 2), dtype=np.int64)
    out[..., 0] = counts[..., pre[0] : pre[1]].sum(axis=-1, dtype=np.int64)
    for s in np.unique(stop):
        out[..., 1] += np.where(stop == s, counts[..., stim_start:s].sum(axis=-1, dtype=np.int64), 0)
    return out


# --------------------------------------------------------------------------
# The statistics of a block of clusters (numpy)
# --------------------------------------------------------------------------
def _group(x: np.ndarray, groups: np.ndarray, n_groups: int, ufunc: np.ufunc, fill: Any) -> np.ndarray:
    """``ufunc``-reduce the columns of ``x`` (cluster, trial) by the trials' group: (cluster, group)."""
    order = np.argsort(groups, kind="stable")
    g = groups[order]
    starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]]) if g.size else np.zeros(0, np.int64)
    out = np.full((x.shape[0], n_groups), fill, dtype=x.dtype)
    if x.shape[0] and g.size:
        out[:, g[starts]] = ufunc.reduceat(x[:, order], starts, axis=1)
    return out


def _sequential_sum(x: np.ndarray, groups: np.ndarray, n_groups: int) -> np.ndarray:
    """Float sums of the columns of ``x`` (cluster, trial) by group, each accumulated in trial order."""
    flat = (np.arange(x.shape[0])[:, None] * n_groups + groups[None, :]).reshape(-1)
    return np.bincount(flat, weights=x.reshape(-1), minlength=x.shape[0] * n_groups).reshape(x.shape[0], n_groups)


def _means(
    s_pre: np.ndarray,
    s_stim: np.ndarray,
    d_max: np.ndarray,
    d_min: np.ndarray,
    *,
    n: np.ndarray,
    durations: np.ndarray,
    pre_s: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean pre and stim rates from the exact count sums per cell, and the centre of the differences.

    ``s_pre``, ``s_stim``: (..., condition * duration) count sums; ``d_max``, ``d_min``:
    (..., condition) extremes of the per-trial differences stim - pre.
    """
    shape = (*s_pre.shape[:-1], n.size, durations.size)
    pre = s_pre.reshape(shape).sum(axis=-1) / pre_s / n
    stim = (s_stim.reshape(shape) / durations).sum(axis=-1) / n
    # the mean difference, or exactly the common value when every difference is the same (then the
    # deviations are exactly 0: p is NaN when that value is 0, as scipy's 0 / 0, and 0 otherwise)
    centre = np.where(d_max == d_min, d_max, stim - pre)
    return pre, stim, centre


def _finish(
    pre: np.ndarray, stim: np.ndarray, mean: np.ndarray, ss: np.ndarray, n: np.ndarray, *, published: bool
) -> tuple[np.ndarray, np.ndarray]:
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


def statistics(counts: np.ndarray, conditions: TrialConditions, pre_s: float, published: bool) -> np.ndarray:
    """Mean pre and stim rates, percent change and p-value of every cluster in every condition.

    Parameters
    ----------
    counts
        Window counts (cluster, trial, window), every trial of the session.
    conditions
        The trials' conditions (:func:`opto_cube.analysis.conditions.trial_conditions`).
    pre_s
        Length of the pre window, s.
    published
        The published mode's percent change, and its dropped pairs (NaN).

    Returns
    -------
    numpy.ndarray
        float64 (cluster, condition, 4): pre_rate_hz, stim_rate_hz, pct_change, p_value.
    """
    counts = np.asarray(counts)
    pre_count, stim_count = counts[..., 0].astype(np.int64), counts[..., 1].astype(np.int64)
    code, n, durations = conditions.code, conditions.coords[schema.N_TRIALS], conditions.durations
    n_conditions, n_durations = n.size, durations.size
    cell = code * n_durations + conditions.duration_code  # condition x duration: exact integer sums per cell
    s_pre = _group(pre_count, cell, n_conditions * n_durations, np.add, 0)
    s_stim = _group(stim_count, cell, n_conditions * n_durations, np.add, 0)
    diff = stim_count / durations[conditions.duration_code] - pre_count / pre_s  # per-trial stim - pre rate
    d_max = _group(diff, code, n_conditions, np.maximum, np.nan)
    d_min = _group(diff, code, n_conditions, np.minimum, np.nan)
    pre, stim, centre = _means(s_pre, s_stim, d_max, d_min, n=n, durations=durations, pre_s=pre_s)
    ss = _sequential_sum((diff - centre[:, code]) ** 2, code, n_conditions)
    pct, p = _finish(pre, stim, centre, ss, n, published=published)
    if published:
        kept = (pre != 0) & (stim != 0)
        pre, stim, pct, p = (np.where(kept, x, np.nan) for x in (pre, stim, pct, p))
    return np.stack([pre, stim, pct, p], axis=-1)


# --------------------------------------------------------------------------
# The timing columns, from the stored timing arrays
# --------------------------------------------------------------------------
TIMING = (schema.LATENCY, schema.FIRST_SPIKE, schema.JITTER, schema.RELIABILITY, schema.LIGHT_ARTIFACT)


def timing_note(session: Any, has_arrays: bool, bin_width_s: float) -> str | None:
    """Why a session's timing columns are NaN (one line naming it), or None when they can be computed.

    ``has_arrays``: the store holds ``condition_counts``, ``first_spike_bin`` and ``trial_condition``.
    """
    if not has_arrays:
        return (
            f"session {session!r}: the store has no {schema.CONDITION_COUNTS!r} / {schema.FIRST_SPIKE_BIN!r} "
            "(written before them): latency_ms, first_spike_ms, jitter_ms, reliability are NaN and light_artifact "
            "False; reconvert it (opto-cube convert --overwrite) to get them"
        )
    width_ms = float(bin_width_s) * 1000.0
    if not width_ms <= schema.LATENCY_MAX_BIN_MS:
        return (
            f"session {session!r}: {width_ms:g} ms bins are coarser than {schema.LATENCY_MAX_BIN_MS:g} ms: "
            "latency_ms, first_spike_ms, jitter_ms, reliability are NaN and light_artifact False; convert at 1 ms "
            "for them"
        )
    return None


def pooling_of(trial_condition: np.ndarray, n_stored: int, conditions: TrialConditions) -> np.ndarray:
    """(stored condition, condition) 0/1: which stored conditions each requested condition pools.

    ``trial_condition``: each trial's stored condition; ``n_stored``: the number of stored conditions.
    """
    stored = np.asarray(trial_condition, np.int64)
    out = np.zeros((n_stored, conditions.n_conditions), np.int64)
    out[stored, conditions.code] = 1
    if np.any(out.sum(axis=1) > 1):  # cannot happen: every key of a condition is a key of the stored ones
        raise ValueError("the requested conditions split a stored condition")
    return out


def timing_columns(
    course: np.ndarray,
    first: np.ndarray,
    direction: np.ndarray,
    *,
    pooling: np.ndarray,
    stored: dict[str, np.ndarray],
    trial_code: np.ndarray,
    time_s: np.ndarray,
    bin_width_s: float,
    depth_um: np.ndarray,
) -> np.ndarray:
    """The timing columns of one session's clusters, numpy in and out (the block function of :func:`responses`).

    Parameters
    ----------
    course
        ``condition_counts`` (cluster, stored condition, time).
    first
        ``first_spike_bin`` (cluster, trial), -1 for none.
    direction
        (cluster, condition): +1, -1 or 0 (no response: latency NaN).
    pooling
        (stored condition, condition) from :func:`pooling_of`.
    stored
        The stored conditions' ``emitter``, ``duration_s``, ``n_trials``, ``emitter_depth_um`` (condition,).
    trial_code
        (trial,) each trial's requested condition.
    time_s, bin_width_s, depth_um
        Bin centres, bin width and each cluster's depth below the surface.

    Returns
    -------
    numpy.ndarray
        float64 (cluster, condition, 5): latency_ms, first_spike_ms, jitter_ms, reliability, light_artifact (0/1).
    """
    course = np.asarray(course)
    k, c = course.shape[0], pooling.shape[1]
    pooled = _pool(course, pooling)
    n_trials = stored[schema.N_TRIALS] @ pooling
    durations = np.where(pooling.T > 0, stored[schema.DURATION][None, :], np.inf).min(axis=1)
    durations = np.where(np.isfinite(durations), durations, 0.0)  # the stim window all pooled trials share
    out = np.full((k, c, len(TIMING)), np.nan)
    if k == 0 or c == 0:
        return out
    out[..., 0] = latency_where_responding(pooled, n_trials, time_s, durations, bin_width_s, np.asarray(direction))
    stats = latency.first_spike_stats(first, trial_code, c, bin_width_s)
    out[..., 1], out[..., 2], out[..., 3] = stats.first_spike_ms, stats.jitter_ms, stats.reliability
    distance = depth_um[:, None] - stored[schema.EMITTER_DEPTH][None, :]
    artifact = latency.light_artifact(
        course, stored[schema.N_TRIALS], time_s, stored[schema.DURATION], stored[schema.EMITTER], distance, bin_width_s
    )
    out[..., 4] = artifact[:, None]
    return out


def _pool(course: np.ndarray, pooling: np.ndarray) -> np.ndarray:
    """``course`` (cluster, stored condition, time) summed into the requested conditions, exact integers.

    The stored array itself when each requested condition is one stored condition in order (the default
    ``by``): no copy. Otherwise one slice addition per stored condition (never a dense product: the array
    is clusters x conditions x bins).
    """
    members = pooling.sum(axis=0)
    target = np.argmax(pooling, axis=1)  # each stored condition's requested condition
    if pooling.shape[0] == pooling.shape[1] and np.all(members == 1) and np.array_equal(target, np.arange(target.size)):
        return course
    out = np.zeros((course.shape[0], pooling.shape[1], course.shape[2]), np.int64)
    for s in np.flatnonzero(pooling.any(axis=1)):
        out[:, target[s]] += course[:, s]
    return out


def latency_where_responding(
    course: np.ndarray, n_trials: np.ndarray, time_s: np.ndarray, durations: np.ndarray, width: float, sign: np.ndarray
) -> np.ndarray:
    """:func:`opto_cube.analysis.latency.onset_latency` with ``direction=sign``, computed only for the responding rows.

    The latency of a (cluster, condition) depends on that pair alone and is NaN where ``sign`` is 0: every
    responding row of the session in one pass (:func:`opto_cube.analysis.timing_core.onset_latency_rows`), the same
    values as the function row by row.
    """
    if not np.any(sign != 0):
        return np.full(sign.shape, np.nan)
    width = latency._check_bin_width(width, "response latencies")
    course, trials, time, durations = latency._check_course(course, n_trials, time_s, durations)
    mu0, n_pre = latency._pre_mean(course, time, width, schema.PRE_WINDOW_S)
    n_stim = latency._window_bins(time, width, np.zeros(durations.size), durations).sum(axis=1)
    first = int(np.argmax(latency._window_bins(time, width, 0.0, np.inf)))
    return timing_core.onset_latency_rows(
        course, trials, mu0, n_pre, n_stim, first, (time - width / 2) * 1000.0, np.asarray(sign),
        threshold=schema.LATENCY_LOG_LR_THRESHOLD, floor_counts=schema.LATENCY_FLOOR_COUNTS,
    )  # fmt: skip


def stored_conditions(coords: Mapping[str, Any], n_stored: int) -> dict[str, np.ndarray]:
    """The stored conditions' ``emitter``, ``duration_s``, ``n_trials`` and ``emitter_depth_um`` (condition,).

    ``coords`` maps the store's ``trial_condition``, ``emitter_depth_um`` (trial,) and
    ``condition_emitter``, ``condition_duration_s``, ``condition_n_trials`` (stored condition,) to their values.
    """
    code = np.asarray(coords[schema.TRIAL_CONDITION], np.int64)
    depth = np.full(n_stored, np.nan)
    depth[code] = np.asarray(coords[schema.EMITTER_DEPTH], np.float64)
    return {
        schema.EMITTER: np.asarray(coords[schema.CONDITION_EMITTER], np.int64),
        schema.DURATION: np.asarray(coords[schema.CONDITION_DURATION], np.float64),
        schema.N_TRIALS: np.asarray(coords[schema.CONDITION_N_TRIALS], np.int64),
        schema.EMITTER_DEPTH: depth,
    }


# --------------------------------------------------------------------------
# The flags, and one session's table columns from plain arrays
# --------------------------------------------------------------------------
def classify(pre: Any, stim: Any, pct: Any, p: Any, q: Any, significant_by: str) -> tuple[Any, Any, Any]:
    """``activated``, ``inactivated`` and ``significant`` (by ``p`` or ``q``) of numpy or xarray operands."""
    activated = pct > schema.ACTIVATED_MIN_PCT
    inactivated = (pct < schema.INACTIVATED_MAX_PCT) & (pre > schema.INACTIVATED_MIN_PRE_HZ)
    significant = (p if significant_by == "p" else q) < schema.SIGNIFICANCE_P
    return activated, inactivated, significant


def direction_of(responding: np.ndarray, pre: np.ndarray, stim: np.ndarray) -> np.ndarray:
    """+1, -1 or 0 per (cluster, condition): the sign of the change where ``responding``, else 0 (NaN: 0)."""
    out = np.where(responding, np.sign(stim - pre), 0.0)
    return np.where(np.isnan(out), 0.0, out)


def session_columns(
    counts: np.ndarray,
    coords: Mapping[str, np.ndarray],
    attrs: Mapping[str, Any],
    n_time: int,
    *,
    course: np.ndarray | None = None,
    first: np.ndarray | None = None,
    session_id: str | None = None,
    by: tuple[str, ...] = schema.CONDITION_KEYS,
    mode: str = schema.MODE_PER_CONDITION,
    significant_by: str = "p",
    timing: bool = True,
) -> dict[str, np.ndarray]:
    """One session's columns of the responses table, from the arrays of its store: numpy in, numpy out.

    The same values, in the same order (``TABLE_COLUMNS`` of :mod:`opto_cube.analysis.response`), as
    ``to_table(responses(cube, ...))`` before its published-mode filter; rows by cluster, then condition.

    Parameters
    ----------
    counts
        ``window_counts`` (cluster, trial, window), windows in ``schema.WINDOWS`` order.
    coords
        The store's coordinates by name: the per-trial ``emitter``, ``power_mw``, ``duration_s``,
        ``emitter_depth_um``; the per-cluster ``cluster``, ``depth_from_surface_um``, ``waveform_type``,
        ``qc_pass``; for the timing columns ``trial_condition`` and the stored conditions' coordinates.
    attrs
        The store's attributes (bin width, window, pre window, session id).
    n_time
        The cube's number of time bins.
    course, first
        ``condition_counts`` (cluster, stored condition, time) and ``first_spike_bin`` (cluster, trial),
        or None (a store without them: NaN timing columns).
    session_id
        The rows' ``session_id``; default the ``session_id`` attribute.
    by
        Checked keys (:func:`opto_cube.analysis.conditions.check_by`).
    mode, significant_by, timing
        As in :func:`opto_cube.analysis.response.responses`.

    Returns
    -------
    dict
        Column name -> 1-d array (cluster x condition rows).
    """
    published = mode == schema.MODE_PUBLISHED
    n_trials = np.shape(coords[schema.EMITTER])[0]
    if n_trials == 0:
        raise ValueError(f"cube {attrs.get(schema.ATTR_SESSION_ID, '')!r} has no trials")
    cluster_names = (schema.CLUSTER, schema.DEPTH_FROM_SURFACE, schema.WAVEFORM_TYPE, schema.QC_PASS)
    per_cluster = {name: np.asarray(coords[name]) for name in cluster_names}
    if published:
        kept = np.asarray(per_cluster[schema.QC_PASS], dtype=bool)
        per_cluster = {name: values[kept] for name, values in per_cluster.items()}
        counts = counts[kept]
        course = None if course is None else course[kept]
        first = None if first is None else first[kept]
    session = attrs.get(schema.ATTR_SESSION_ID, "?")
    conditions = conditions_of(coords, by, str(session))
    pre_s = windows(attrs, n_time, conditions.durations).pre_s
    stats = statistics(counts, conditions, pre_s, published)
    pre, stim, pct, p = (stats[..., i] for i in range(4))
    q = latency.q_values(p)
    activated, inactivated, significant = classify(pre, stim, pct, p, q, significant_by)
    k, c = pct.shape
    bin_width = float(attrs.get(schema.ATTR_BIN_WIDTH, np.nan))
    has_arrays = course is not None and first is not None and schema.TRIAL_CONDITION in coords
    if timing and timing_note(session, has_arrays, bin_width) is None:
        assert course is not None
        assert first is not None
        n_stored = course.shape[1]
        values = timing_columns(
            course, first, direction_of(activated | inactivated | significant, pre, stim),
            pooling=pooling_of(coords[schema.TRIAL_CONDITION], n_stored, conditions),
            stored=stored_conditions(coords, n_stored), trial_code=conditions.code,
            time_s=np.asarray(coords[schema.TIME], np.float64), bin_width_s=float(attrs[schema.ATTR_BIN_WIDTH]),
            depth_um=np.asarray(per_cluster[schema.DEPTH_FROM_SURFACE], np.float64),
        )  # fmt: skip
        timing_values = [values[..., i] for i in range(len(TIMING) - 1)]
        artifact = values[:, 0, len(TIMING) - 1] > 0
    else:
        timing_values = [np.full((k, c), np.nan)] * (len(TIMING) - 1)
        artifact = np.zeros(k, dtype=bool)
    depth = np.asarray(per_cluster[schema.DEPTH_FROM_SURFACE], np.float64)
    condition_coords = conditions.coords
    sid = attrs.get(schema.ATTR_SESSION_ID, "") if session_id is None else session_id

    def rows(x: np.ndarray) -> np.ndarray:  # a (cluster, condition) array, rows by cluster then condition
        return np.asarray(x).reshape(-1)

    columns: dict[str, np.ndarray] = {
        schema.SESSION_ID: np.full(k * c, str(sid), dtype=object),
        schema.CLUSTER: np.repeat(per_cluster[schema.CLUSTER], c),
        **{name: np.tile(condition_coords[name], k) for name in (schema.EMITTER, schema.POWER, schema.DURATION)},
        schema.N_TRIALS: np.tile(condition_coords[schema.N_TRIALS], k),
        schema.PRE_RATE: rows(pre),
        schema.STIM_RATE: rows(stim),
        schema.PCT_CHANGE: rows(pct),
        schema.P_VALUE: rows(p),
        schema.ACTIVATED: rows(activated),
        schema.INACTIVATED: rows(inactivated),
        schema.SIGNIFICANT: rows(significant),
        schema.DISTANCE: rows(depth[:, None] - condition_coords[schema.EMITTER_DEPTH][None, :]),
        **{name: np.repeat(per_cluster[name], c) for name in cluster_names[1:]},
        schema.EMITTER_DEPTH: np.tile(condition_coords[schema.EMITTER_DEPTH], k),
        schema.Q_VALUE: rows(q),
        **{name: rows(v) for name, v in zip(TIMING[:-1], timing_values, strict=True)},
        schema.LIGHT_ARTIFACT: np.repeat(artifact, c),
    }
    return columns
