"""The timing columns' array kernels: every row of a session in one numpy pass, no per-row Python.

numpy in, numpy out, no labels (the labelled wrappers are
:mod:`opto_cube.analysis.latency` and :func:`opto_cube.analysis.response_core.timing_columns`, as
flox keeps ``core.py`` apart from ``xarray.py``). Each kernel computes the
same arithmetic, in the same order, as the row-by-row definition it replaces,
so the values are equal bit for bit (``tests/test_timing_core.py`` compares
them on every generator quirk and on the planted truth):

- :func:`onset_latency_rows`: the Poisson CUSUM onset latency of every
  responding (cluster, condition) row at once (rows of different pulse
  lengths padded; the padding never reaches a sum, a prefix or an alarm);
- :func:`first_spike_rows`: the median, interquartile range and fraction of
  trials of each (cluster, condition)'s first spikes from one sort of every
  cluster's trials keyed by condition.

Examples
--------
>>> import numpy as np
>>> bins = np.array([[2, 3, -1, 4, 0, 0]])
>>> median, spread, reliability = first_spike_rows(bins, np.array([0, 0, 0, 0, 1, 1]), 2)
>>> median, spread, reliability
(array([[3., 0.]]), array([[1., 0.]]), array([[0.75, 1.  ]]))
"""

from __future__ import annotations

import numpy as np

__all__ = ["first_spike_rows", "onset_latency_rows"]


def onset_latency_rows(
    course: np.ndarray,
    n_trials: np.ndarray,
    mu0: np.ndarray,
    n_pre: int,
    n_stim: np.ndarray,
    first: int,
    start_ms: np.ndarray,
    sign: np.ndarray,
    *,
    threshold: float,
    floor_counts: float,
) -> np.ndarray:
    """Onset latency, ms, of every (cluster, condition) with a non-zero ``sign``; NaN elsewhere.

    Parameters
    ----------
    course
        (cluster, condition, time) integer spike counts.
    n_trials
        (condition,) trials of each condition.
    mu0
        (cluster, condition) mean count per bin of the pre window (before its floor).
    n_pre
        Bins of the pre window.
    n_stim
        (condition,) bins of each condition's stim window, from bin ``first`` (light onset).
    first
        Index of the first bin starting at light onset.
    start_ms
        (time,) start of each bin, ms (only ``start_ms[first:]`` is used).
    sign
        (cluster, condition): +1, -1, or 0 (not computed: NaN).
    threshold, floor_counts
        The CUSUM's alarm (a natural log-likelihood ratio) and the rates' floor, in counts per window.

    Returns
    -------
    numpy.ndarray
        float64 (cluster, condition).
    """
    k, c = sign.shape
    out = np.full((k, c), np.nan)
    rows, cols = np.nonzero(sign != 0)
    stim = n_stim[cols]
    keep = stim > 0
    rows, cols, stim = rows[keep], cols[keep], stim[keep]
    if rows.size == 0:
        return out
    span = int(stim.max())
    counts = course[rows, cols, first : first + span].astype(np.float64)  # (row, span), zero-padded below
    inside = np.arange(span)[None, :] < stim[:, None]
    mu1 = np.where(inside, counts, 0.0).sum(axis=1) / stim  # integer-valued: exact whatever the padding
    floor0 = floor_counts / n_pre
    floor1 = floor_counts / stim
    m0, m1 = np.maximum(mu0[rows, cols], floor0), np.maximum(mu1, floor1)
    s = np.sign(sign[rows, cols])
    valid = (np.sign(m1 - m0) == s) & (n_trials[cols] > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        step = counts * np.log(m1 / m0)[:, None] - (m1 - m0)[:, None]
    cusum = np.concatenate([np.zeros((rows.size, 1)), np.cumsum(step, axis=1)], axis=1)  # prefixes: exact per row
    lowest = np.minimum.accumulate(cusum, axis=1)
    alarm = (cusum - lowest > threshold) & np.concatenate([np.zeros((rows.size, 1), bool), inside], axis=1)
    fired = alarm.any(axis=1) & valid
    at = np.argmax(alarm, axis=1)
    positions = np.arange(span + 1)
    last_low = np.maximum.accumulate(np.where(cusum <= lowest, positions, 0), axis=1)
    change = np.take_along_axis(last_low, at[:, None], axis=1)[:, 0]
    starts = start_ms[first : first + span + 1]
    out[rows[fired], cols[fired]] = starts[np.minimum(change[fired], stim[fired])]
    return out


def first_spike_rows(
    first_spike_bin: np.ndarray, trial_condition: np.ndarray, n_conditions: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Median and interquartile range (bins) and fraction of trials with a spike, per (cluster, condition).

    One sort of each cluster's trials by (condition, first-spike bin), the trials
    without a spike last in their condition; numpy's "linear" percentiles of each
    condition's first ``hits`` values. NaN without trials; median and range NaN without a spike.

    Parameters
    ----------
    first_spike_bin
        (cluster, trial): bin of the first spike in the stim window, -1 for none.
    trial_condition
        (trial,) condition of each trial in ``[0, n_conditions)``; negative: left out.
    n_conditions
        Number of conditions.

    Returns
    -------
    tuple of numpy.ndarray
        ``median, spread, reliability``, float64 (cluster, condition).
    """
    bins = np.asarray(first_spike_bin)
    condition = np.asarray(trial_condition, np.int64)
    k = bins.shape[0]
    shape = (k, n_conditions)
    median, spread, reliability = np.full(shape, np.nan), np.full(shape, np.nan), np.full(shape, np.nan)
    order = np.argsort(condition, kind="stable")
    order = order[condition[order] >= 0]
    kept = condition[order]
    bounds = np.searchsorted(kept, np.arange(n_conditions + 1))
    sizes = np.diff(bounds)
    if k == 0 or order.size == 0:
        return median, spread, reliability
    sub = bins[:, order].astype(np.int64)  # (cluster, kept trials), grouped by condition
    spiking = sub >= 0
    top = int(sub.max()) + 2 if sub.size else 1
    key = kept[None, :] * top + np.where(spiking, sub, top - 1)  # no spike: last in its condition
    ranked = np.sort(key, axis=1) - kept[None, :] * top  # each condition's values, sorted, in its own segment
    running = np.concatenate([np.zeros((k, 1), np.int64), np.cumsum(spiking, axis=1, dtype=np.int64)], axis=1)
    hits = running[:, bounds[1:]] - running[:, bounds[:-1]]  # trials with a spike, per condition
    present = sizes > 0
    reliability[:, present] = hits[:, present] / sizes[present]
    q = [_segment_percentile(ranked, bounds[:-1], hits, f) for f in (0.25, 0.5, 0.75)]
    median[:, present], spread[:, present] = q[1][:, present], (q[2] - q[0])[:, present]
    return median, spread, reliability


def _segment_percentile(ranked: np.ndarray, start: np.ndarray, n: np.ndarray, fraction: float) -> np.ndarray:
    """numpy's "linear" percentile of the first ``n[i, c]`` values of row ``i``'s segment from ``start[c]``."""
    position = fraction * (np.maximum(n, 1) - 1)
    lo = np.floor(position).astype(np.int64)
    hi = np.minimum(lo + 1, np.maximum(n, 1) - 1)
    last = ranked.shape[1] - 1
    below = np.take_along_axis(ranked, np.minimum(start[None, :] + lo, last), axis=1).astype(np.float64)
    above = np.take_along_axis(ranked, np.minimum(start[None, :] + hi, last), axis=1).astype(np.float64)
    return np.where(n > 0, below + (position - lo) * (above - below), np.nan)
