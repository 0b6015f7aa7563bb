"""Response timing and light artifacts: latency, first spikes, jitter, reliability, FDR.

Pure numpy functions (no I/O, no dask) over what one per-session pass over a
cube provides: the exact integer time course ``time_course[cluster, condition,
time]`` (the sum of the cube over the condition's trials) with
``n_trials[condition]``, the bin centres relative to light onset, and the
per-trial first-spike bins of :func:`first_spike_bins` computed block by block.
The column names and thresholds are in :mod:`opto_cube.schema` (block "latency
and artifacts"); the windows are those of the published analysis (see
``docs/format.md``): pre ``[-0.5, 0)`` s, stim ``[0, duration)`` s.

Response onset latency: a Poisson CUSUM change point
----------------------------------------------------
:func:`onset_latency` finds where the condition's PSTH departs from its
baseline with Page's cumulative-sum (CUSUM) test (E. S. Page, "Continuous
inspection schemes", Biometrika 41, 1954), in its Poisson log-likelihood form,
applied to peri-stimulus time histograms as by P. H. Ellaway ("Cumulative sum
technique and its application to the analysis of peristimulus time histograms",
Electroencephalography and Clinical Neurophysiology 45, 1978). From light onset
on, each bin with ``c`` spikes (summed over trials) adds the log-likelihood
ratio of the response rate ``mu1`` (the stim window's mean count per bin)
against the baseline ``mu0`` (the pre window's)::

    x = c * ln(mu1 / mu0) - (mu1 - mu0)

The CUSUM ``S_t = max(0, S_{t-1} + x_t)`` raises an alarm the first time it
exceeds ``ln(1000)`` inside the stim window (the data are then 1000 times more
likely under the response rate over that stretch); the change point is the bin
after the CUSUM's last zero before the alarm, and the latency is that bin's
start: the onset lies in ``[latency, latency + bin width)``. No alarm: no
response, NaN. The same formula serves an increase (``mu1 > mu0``) and a
decrease (``mu1 < mu0``).

Why this method rather than the common "first of m consecutive bins beyond
the baseline mean + k SD": at 1 ms a regular-spiking unit at 3 Hz has a few
hundredths of a spike per bin and trial, so a bin-by-bin threshold cannot see
a decrease at all (mean - k SD is below zero) and sees an increase only late,
when the counts are large enough. The CUSUM pools the evidence of consecutive
bins, so it sees decreases, weighs each bin by the Poisson likelihood of the
rates actually measured (no k or m to tune), and its change point is not
delayed by the run of bins a threshold needs; it has one parameter, the
alarm's likelihood ratio.

First spikes
------------
:func:`first_spike_bins` gives, per cluster and trial, the bin of the first
spike in the stim window; :func:`first_spike_stats` takes per condition the
median over trials with a spike (``first_spike_ms``, bin centres), its
interquartile range (``jitter_ms``: robust to the spontaneous spikes that land
anywhere in the window, where a standard deviation would be dominated by them)
and the fraction of trials with a spike (``reliability``).

Light artifacts
---------------
:func:`light_artifact` flags units locked to light transitions: an excess of
spikes within ~1 ms after light onset or after light offset, at (nearly) every
emitter, with no fall-off with distance. A neuron driven by the light responds
near its emitter only and, through the opsin, after a latency of milliseconds;
the probe's switching artifacts are immediate and the same at every emitter.
:func:`light_artifacts` is that test of one opened store, from its stored
``condition_counts`` (what ``Catalog.summary`` and ``opto-cube info`` count).

Examples
--------
>>> import numpy as np
>>> time_s = (np.arange(-500, 100) + 0.5) / 1000.0  # 1 ms bins over [-0.5, 0.1) s
>>> course = np.full((1, 1, 600), 2)
>>> course[0, 0, 505:550] = 20  # a jump from 2 to 20 spikes a bin, 5 ms after onset
>>> onset_latency(course, np.array([100]), time_s, np.array([0.05]), 0.001)
array([[5.]])
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
from numpy.typing import ArrayLike

from opto_cube import schema
from opto_cube.analysis.timing_core import first_spike_rows

ARTIFACT_LOCK_MS = 1.0  # the lock window after light onset and after light offset
ARTIFACT_MIN_EXCESS = 0.25  # spikes per trial in the lock window above the baseline expectation
ARTIFACT_MIN_Z = 5.0  # and that excess this many Poisson SDs above the expectation
ARTIFACT_MIN_EMITTER_FRACTION = 0.8  # locked at (at least) this fraction of the emitters ("every emitter")
ARTIFACT_MIN_EMITTERS = 2  # fewer emitters cannot show "whatever the emitter": never flagged
ARTIFACT_FAR_NEAR_RATIO = 0.5  # no fall-off: lock at the farther half of emitters >= this x the nearer half's

if TYPE_CHECKING:
    import xarray as xr

__all__ = [
    "FirstSpikeStats",
    "first_spike_bins",
    "first_spike_stats",
    "light_artifact",
    "light_artifacts",
    "onset_latency",
    "q_values",
]


def _check_bin_width(bin_width_s: float, what: str) -> float:
    width = float(bin_width_s)
    if not np.isfinite(width) or width <= 0:
        raise ValueError(f"bin_width_s must be a positive number of seconds, got {bin_width_s!r}")
    if width * 1000.0 > schema.LATENCY_MAX_BIN_MS * (1 + 1e-9):
        raise ValueError(
            f"bins of {width * 1000.0:g} ms are too coarse for {what} (at most {schema.LATENCY_MAX_BIN_MS:g} ms); "
            f"convert the sessions with 1-ms bins (opto-cube convert --bin-ms 1)"
        )
    return width


def _check_course(time_course: ArrayLike, n_trials: ArrayLike, time_s: ArrayLike, durations_s: ArrayLike):
    course = np.asarray(time_course)
    if course.ndim != 3 or not (np.issubdtype(course.dtype, np.integer) or course.dtype == np.bool_):
        raise ValueError(
            f"time_course must be an integer array (cluster, condition, time), got {course.dtype} {course.shape}"
        )
    trials = np.asarray(n_trials)
    time = np.asarray(time_s, dtype=np.float64)
    durations = np.asarray(durations_s, dtype=np.float64)
    _k, c, t = course.shape
    for name, array, shape in (("n_trials", trials, (c,)), ("time_s", time, (t,)), ("durations_s", durations, (c,))):
        if array.shape != shape:
            raise ValueError(f"{name} must have shape {shape} to match time_course {course.shape}, got {array.shape}")
    if np.any(np.diff(time) <= 0):
        raise ValueError("time_s must be increasing bin centres")
    return course, trials.astype(np.int64), time, durations


def _window_range(time: np.ndarray, width: float, a: float, b: float) -> slice:
    """The bins wholly inside ``[a, b)`` as a slice (bins are consecutive)."""
    inside = np.flatnonzero(_window_bins(time, width, a, b))
    return slice(int(inside[0]), int(inside[-1]) + 1) if inside.size else slice(0, 0)


def _pre_mean(
    course: np.ndarray, time: np.ndarray, width: float, pre_window_s: tuple[float, float]
) -> tuple[np.ndarray, int]:
    """Mean count per bin of the pre window, (cluster, condition); ValueError when no bin lies in it."""
    pre = _window_range(time, width, *pre_window_s)
    n_pre = pre.stop - pre.start
    if n_pre == 0:
        raise ValueError(f"no whole bin lies in the pre window {pre_window_s} s: cannot take a baseline")
    return course[:, :, pre].sum(axis=2, dtype=np.int64) / n_pre, n_pre


def _window_bins(time: np.ndarray, width: float, a: ArrayLike, b: ArrayLike) -> np.ndarray:
    """Bins wholly inside ``[a, b)`` (``a``, ``b`` broadcast against each other; bins along the last axis)."""
    start = time - width / 2
    eps = width * 1e-6
    a = np.asarray(a, dtype=np.float64)[..., None]
    b = np.asarray(b, dtype=np.float64)[..., None]
    return (start >= a - eps) & (start + width <= b + eps)


def onset_latency(
    time_course: ArrayLike,
    n_trials: ArrayLike,
    time_s: ArrayLike,
    durations_s: ArrayLike,
    bin_width_s: float,
    *,
    direction: ArrayLike | None = None,
    threshold: float = schema.LATENCY_LOG_LR_THRESHOLD,
    pre_window_s: tuple[float, float] = schema.PRE_WINDOW_S,
) -> np.ndarray:
    """Response onset latency, ms after light onset, per cluster and condition (a Poisson CUSUM change point).

    Parameters
    ----------
    time_course
        Integer array (cluster, condition, time): spikes per bin summed over the condition's trials.
    n_trials
        (condition,) trials of each condition; conditions without trials give NaN.
    time_s
        (time,) bin centres relative to light onset, s.
    durations_s
        (condition,) pulse duration of each condition, s: the stim window is ``[0, duration)``.
    bin_width_s
        Bin width, s; bins coarser than ``schema.LATENCY_MAX_BIN_MS`` are refused.
    direction
        +1 (increase), -1 (decrease) or 0 (no response: NaN), broadcast to (cluster, condition),
        e.g. from the activated / inactivated classification. By default the sign of the stim
        window's mean rate minus the pre window's. A latency is found only in the given direction.
    threshold
        The CUSUM's alarm, a natural log-likelihood ratio (default ln 1000).
    pre_window_s
        The baseline window relative to onset, s.

    Returns
    -------
    numpy.ndarray
        float64 (cluster, condition): start of the first bin of the change, ms (a multiple of the
        bin width); NaN where the CUSUM raises no alarm inside the stim window.

    Raises
    ------
    ValueError
        Bins too coarse, shapes that disagree, or no whole bin in the pre window.

    Examples
    --------
    >>> time_s = (np.arange(-500, 60) + 0.5) / 1000.0
    >>> course = np.full((2, 1, 560), 3)
    >>> course[0, 0, 503:550] = 30  # an increase 3 ms after onset
    >>> course[1, 0, 508:550] = 0  # a silence from 8 ms
    >>> onset_latency(course, np.array([50]), time_s, np.array([0.05]), 0.001)
    array([[3.],
           [8.]])
    >>> onset_latency(course, np.array([50]), time_s, np.array([0.05]), 0.001, direction=[[1], [1]])
    array([[ 3.],
           [nan]])
    """
    width = _check_bin_width(bin_width_s, "response latencies")
    course, trials, time, durations = _check_course(time_course, n_trials, time_s, durations_s)
    k, c, _ = course.shape
    mu0, n_pre = _pre_mean(course, time, width, pre_window_s)
    stim = _window_bins(time, width, np.zeros(c), durations)  # (condition, time)
    first = int(np.argmax(_window_bins(time, width, 0.0, np.inf)))  # the first bin starting at onset
    n_stim = stim.sum(axis=1)  # (condition,)
    span = int(n_stim.max()) if c else 0
    out = np.full((k, c), np.nan)
    if span == 0 or k == 0:
        return out
    counts = course[:, :, first : first + span].astype(np.float64)  # (cluster, condition, span)
    inside = np.arange(span)[None, :] < n_stim[:, None]  # (condition, span)
    mu1 = np.where(inside, counts, 0.0).sum(axis=2) / np.maximum(n_stim, 1)
    floor0 = schema.LATENCY_FLOOR_COUNTS / n_pre
    floor1 = schema.LATENCY_FLOOR_COUNTS / np.maximum(n_stim, 1)
    mu0, mu1 = np.maximum(mu0, floor0), np.maximum(mu1, floor1)
    sign = np.sign(mu1 - mu0) if direction is None else np.broadcast_to(np.sign(np.asarray(direction)), (k, c))
    valid = (sign != 0) & (np.sign(mu1 - mu0) == sign) & (trials > 0)[None, :] & (n_stim > 0)[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        step = counts * np.log(mu1 / mu0)[:, :, None] - (mu1 - mu0)[:, :, None]
    cusum = np.concatenate([np.zeros((k, c, 1)), np.cumsum(step, axis=2)], axis=2)  # X_0 = 0, X_j = sum of j bins
    lowest = np.minimum.accumulate(cusum, axis=2)
    alarm = (cusum - lowest > threshold) & np.concatenate([np.zeros((c, 1), bool), inside], axis=1)[None]
    fired = alarm.any(axis=2) & valid
    at = np.argmax(alarm, axis=2)  # first alarm, index into X
    positions = np.arange(span + 1)
    last_low = np.maximum.accumulate(np.where(cusum <= lowest, positions, 0), axis=2)  # last minimum so far
    change = np.take_along_axis(last_low, at[:, :, None], axis=2)[:, :, 0]  # the change starts at this bin
    start_ms = (time[first : first + span + 1] - width / 2) * 1000.0
    out[fired] = start_ms[np.minimum(change[fired], span)]
    return out


def first_spike_bins(counts_block: ArrayLike, stim_start: ArrayLike, stim_stop: ArrayLike) -> np.ndarray:
    """Bin of the first spike in each trial's stim window, counted from the window's first bin.

    Parameters
    ----------
    counts_block
        A block of the cube, (cluster, trial, time), any integer dtype.
    stim_start, stim_stop
        Index (into the block's time axis) of the stim window's first bin and one past its last,
        scalars or one per trial.

    Returns
    -------
    numpy.ndarray
        int32 (cluster, trial): 0 for a spike in the window's first bin, ...; -1 for no spike.

    Examples
    --------
    >>> block = np.zeros((1, 3, 6), dtype=np.uint8)
    >>> block[0, 0, [1, 3]] = 1  # bin 1 lies before the window, bin 3 is its second bin
    >>> block[0, 1, 5] = 2  # past the window of trial 1
    >>> first_spike_bins(block, 2, np.array([5, 5, 6]))
    array([[ 1, -1, -1]], dtype=int32)
    """
    block = np.asarray(counts_block)
    if block.ndim != 3:
        raise ValueError(f"counts_block must be (cluster, trial, time), got shape {block.shape}")
    _, m, t = block.shape
    start = np.broadcast_to(np.asarray(stim_start, dtype=np.int64), (m,))
    stop = np.broadcast_to(np.asarray(stim_stop, dtype=np.int64), (m,))
    if np.any(start < 0) or np.any(stop > t) or np.any(stop < start):
        raise ValueError(f"stim windows must satisfy 0 <= start <= stop <= {t} (the block's time bins)")
    lo, hi = (int(start.min()), int(stop.max())) if m else (0, 0)
    position = np.arange(lo, hi)  # only the bins some trial's window holds
    window = (position[None, :] >= start[:, None]) & (position[None, :] < stop[:, None])  # (trial, time)
    spiking = (block[:, :, lo:hi] > 0) & window[None]
    first = np.argmax(spiking, axis=2) + lo
    return np.where(spiking.any(axis=2), first - start[None, :], -1).astype(np.int32)


class FirstSpikeStats(NamedTuple):
    """Per (cluster, condition): median first spike (ms), its interquartile range (ms), fraction of trials."""

    first_spike_ms: np.ndarray
    jitter_ms: np.ndarray
    reliability: np.ndarray


def first_spike_stats(
    first_spike_bin: ArrayLike, trial_condition: ArrayLike, n_conditions: int, bin_width_s: float
) -> FirstSpikeStats:
    """First-spike time, jitter and reliability per cluster and condition from per-trial first-spike bins.

    Parameters
    ----------
    first_spike_bin
        (cluster, trial) from :func:`first_spike_bins`: bin of the first spike in the stim
        window, -1 for none.
    trial_condition
        (trial,) condition index of each trial, in ``[0, n_conditions)``; negative: left out.
    n_conditions
        Number of conditions.
    bin_width_s
        Bin width, s; a spike in bin ``j`` is taken at the bin's centre, ``(j + 0.5)`` bins after onset.

    Returns
    -------
    FirstSpikeStats
        ``first_spike_ms`` (median over the trials with a spike), ``jitter_ms`` (their
        interquartile range, 75th - 25th percentile, linear interpolation) and ``reliability``
        (trials with a spike / trials), each float64 (cluster, condition); NaN without trials,
        and the first two NaN where no trial has a spike.

    Examples
    --------
    >>> bins = np.array([[2, 3, -1, 4, 0, 0]])
    >>> stats = first_spike_stats(bins, np.array([0, 0, 0, 0, 1, 1]), 2, 0.001)
    >>> stats.first_spike_ms, stats.jitter_ms, stats.reliability
    (array([[3.5, 0.5]]), array([[1., 0.]]), array([[0.75, 1.  ]]))
    """
    width = float(bin_width_s)
    if not np.isfinite(width) or width <= 0:
        raise ValueError(f"bin_width_s must be a positive number of seconds, got {bin_width_s!r}")
    bins = np.asarray(first_spike_bin)
    condition = np.asarray(trial_condition, dtype=np.int64)
    if bins.ndim != 2 or condition.shape != (bins.shape[1],):
        raise ValueError(
            f"first_spike_bin must be (cluster, trial) and trial_condition (trial,), got {bins.shape} "
            f"and {condition.shape}"
        )
    if np.any(condition >= n_conditions):
        raise ValueError(f"trial_condition holds values >= n_conditions = {n_conditions}")
    median, spread, reliability = first_spike_rows(bins, condition, n_conditions)  # every row at once
    scale = width * 1000.0
    return FirstSpikeStats((median + 0.5) * scale, spread * scale, reliability)


def _lock_counts(course: np.ndarray, time: np.ndarray, width: float, durations: np.ndarray, lock_s: float):
    """Spikes summed over the onset and offset lock windows, and the baseline expectation there."""
    lock = max(lock_s, width)  # at least one bin
    mu, _ = _pre_mean(course, time, width, schema.PRE_WINDOW_S)  # (cluster, condition), per bin
    on = _window_range(time, width, 0.0, lock)
    n_lock = on.stop - on.start
    on_count = course[:, :, on].sum(axis=2, dtype=np.int64)
    # offset: the n_lock bins from each condition's pulse end (when they lie in the cube)
    off_first = np.argmax(_window_bins(time, width, durations, np.inf), axis=1)  # (condition,)
    off_ok = _window_bins(time, width, durations, durations + lock).sum(axis=1) == n_lock
    index = np.minimum(off_first[:, None] + np.arange(n_lock)[None, :], time.size - 1)  # (condition, n_lock)
    off_count = course[:, np.arange(durations.size)[:, None], index].sum(axis=2, dtype=np.int64)
    expected = mu * n_lock
    return on_count, expected, np.where(off_ok[None, :], off_count, 0), np.where(off_ok[None, :], expected, 0.0)


def light_artifact(
    time_course: ArrayLike,
    n_trials: ArrayLike,
    time_s: ArrayLike,
    durations_s: ArrayLike,
    emitter: ArrayLike,
    distance_um: ArrayLike,
    bin_width_s: float,
    *,
    lock_ms: float = ARTIFACT_LOCK_MS,
    min_excess: float = ARTIFACT_MIN_EXCESS,
    min_z: float = ARTIFACT_MIN_Z,
    min_emitter_fraction: float = ARTIFACT_MIN_EMITTER_FRACTION,
    far_near_ratio: float = ARTIFACT_FAR_NEAR_RATIO,
) -> np.ndarray:
    """Flag light-artifact units: spikes locked to light onset and/or offset at every emitter, no fall-off.

    Per emitter (its conditions pooled), the lock is the excess of spikes per trial over the
    baseline expectation in the ``lock_ms`` after light onset, or after light offset, whichever
    is larger. An emitter counts as locked when that excess is at least ``min_excess`` spikes a
    trial and ``min_z`` Poisson SDs. A unit is flagged when it is locked at no less than
    ``min_emitter_fraction`` of the (at least ``ARTIFACT_MIN_EMITTERS``) emitters with
    trials, and its mean lock at the farther half of the emitters (by ``|distance_um|``) is at
    least ``far_near_ratio`` times the nearer half's (no fall-off with distance).

    Parameters
    ----------
    time_course, n_trials, time_s, durations_s, bin_width_s
        As in :func:`onset_latency`; the window must reach ``lock_ms`` past the longest pulse for
        the offset lock (otherwise only the onset lock is used).
    emitter
        (condition,) emitter id of each condition.
    distance_um
        (cluster, condition) unit depth minus emitter depth, um (NaN when unknown: the
        fall-off check then uses the emitters with a finite distance, or is skipped).
    lock_ms, min_excess, min_z, min_emitter_fraction, far_near_ratio
        The thresholds (defaults in :mod:`opto_cube.schema`).

    Returns
    -------
    numpy.ndarray
        bool (cluster,).

    Examples
    --------
    >>> time_s = (np.arange(-500, 100) + 0.5) / 1000.0
    >>> course = np.ones((2, 3, 600), dtype=np.int64)  # two units, three emitters
    >>> course[0, :, 500] = 40  # unit 0: 40 spikes over 50 trials in the first ms after onset, everywhere
    >>> course[1, 0, 505:550] = 30  # unit 1: a response at one emitter, after 5 ms
    >>> distance = np.array([[0.0, 400.0, 800.0], [0.0, 400.0, 800.0]])
    >>> light_artifact(course, np.full(3, 50), time_s, np.full(3, 0.05), np.array([3, 7, 11]), distance, 0.001)
    array([ True, False])
    """
    width = _check_bin_width(bin_width_s, "a light-artifact lock of about a millisecond")
    course, trials, time, durations = _check_course(time_course, n_trials, time_s, durations_s)
    k, c, _ = course.shape
    emitters = np.asarray(emitter)
    distance = np.broadcast_to(np.asarray(distance_um, dtype=np.float64), (k, c))
    if emitters.shape != (c,):
        raise ValueError(f"emitter must have shape ({c},), one per condition, got {emitters.shape}")
    on, expected_on, off, expected_off = _lock_counts(course, time, width, durations, lock_ms / 1000.0)
    ids = np.unique(emitters[trials > 0])
    if ids.size < ARTIFACT_MIN_EMITTERS or k == 0:
        return np.zeros(k, dtype=bool)
    member = (emitters[None, :] == ids[:, None]) & (trials > 0)[None, :]  # (emitter, condition)
    m = member.astype(np.float64)
    n = m @ trials.astype(np.float64)  # trials per emitter
    lock = np.empty((k, ids.size))
    locked = np.empty((k, ids.size), dtype=bool)
    excess = []
    for count, expected in ((on, expected_on), (off, expected_off)):
        observed, mean = count @ m.T, expected @ m.T  # (cluster, emitter)
        per_trial = (observed - mean) / n
        z = (observed - mean) / np.sqrt(mean + 1.0)
        excess.append((per_trial, (per_trial >= min_excess) & (z >= min_z)))
    lock[:] = np.maximum(excess[0][0], excess[1][0])
    locked[:] = excess[0][1] | excess[1][1]
    everywhere = locked.mean(axis=1) >= min_emitter_fraction
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN distances of a unit: mean of nothing
        far_from = np.abs(np.where(member[None], distance[:, None, :], np.nan))
        emitter_distance = np.nanmean(far_from, axis=2)  # (cluster, emitter)
    no_falloff = np.ones(k, dtype=bool)
    for unit in np.flatnonzero(everywhere):
        finite = np.isfinite(emitter_distance[unit])
        if finite.sum() < 2:
            continue
        order = np.argsort(emitter_distance[unit, finite], kind="stable")
        values = lock[unit, finite][order]
        half = values.size // 2
        near, far = values[:half].mean(), values[values.size - half :].mean()
        no_falloff[unit] = far >= far_near_ratio * near
    return everywhere & no_falloff


def q_values(p_value: ArrayLike) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values over a session's finite p-values; NaN stays NaN.

    The arithmetic of :func:`scipy.stats.false_discovery_control` (``method="bh"``), equal to it
    bit for bit, on the finite entries, all of them one family (the session's rows: clusters x
    conditions); in numpy, so a task does not import ``scipy.stats`` (a second, once per process).

    Parameters
    ----------
    p_value
        Any shape; values in [0, 1] or NaN.

    Returns
    -------
    numpy.ndarray
        float64, the same shape.

    Examples
    --------
    >>> q_values(np.array([0.01, np.nan, 0.04, 0.03]))
    array([0.03,  nan, 0.04, 0.04])
    """
    p = np.asarray(p_value, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    finite = np.isfinite(p)
    if np.any((p[finite] < 0) | (p[finite] > 1)):
        raise ValueError("p-values must lie in [0, 1] (or be NaN)")
    if finite.any():
        out[finite] = _benjamini_hochberg(p[finite])
    return out


def _benjamini_hochberg(ps: np.ndarray) -> np.ndarray:
    """:func:`scipy.stats.false_discovery_control` of 1-d p-values in [0, 1], ``method="bh"``, step by step."""
    m = ps.size
    if m <= 1:
        return ps
    order = np.argsort(ps, kind="stable")
    adjusted = ps[order] * (m / np.arange(1, m + 1, dtype=np.float64))
    np.minimum.accumulate(adjusted[::-1], out=adjusted[::-1])
    out = np.empty_like(adjusted)
    out[order] = adjusted
    return np.clip(out, 0.0, 1.0)


def light_artifacts(ds: xr.Dataset) -> np.ndarray | None:
    """Each cluster's light-artifact flag from a store's stored timing arrays (the responses' ``light_artifact``).

    :func:`light_artifact` of ``condition_counts`` over the
    stored conditions: reads that array (small) and the coordinates, never
    ``spike_counts``. None when the store cannot tell: bins coarser than
    ``schema.LATENCY_MAX_BIN_MS``, or a store written before the timing arrays.

    Examples
    --------
    >>> import xarray as xr
    >>> light_artifacts(xr.Dataset(attrs={"bin_width_s": 0.01})) is None
    True
    """
    width = float(ds.attrs.get(schema.ATTR_BIN_WIDTH, np.nan))
    if schema.CONDITION_COUNTS not in ds.variables or not width * 1000.0 <= schema.LATENCY_MAX_BIN_MS:
        return None
    code = np.asarray(ds[schema.TRIAL_CONDITION].values, np.int64)
    emitter_depth = np.full(ds.sizes[schema.CONDITION], np.nan)
    emitter_depth[code] = np.asarray(ds[schema.EMITTER_DEPTH].values, np.float64)
    depth = np.asarray(ds[schema.DEPTH_FROM_SURFACE].values, np.float64)
    course = ds[schema.CONDITION_COUNTS].transpose(schema.CLUSTER, schema.CONDITION, schema.TIME).values
    return light_artifact(
        course, ds[schema.CONDITION_N_TRIALS].values, ds[schema.TIME].values, ds[schema.CONDITION_DURATION].values,
        ds[schema.CONDITION_EMITTER].values, depth[:, None] - emitter_depth[None, :], width,
    )  # fmt: skip
