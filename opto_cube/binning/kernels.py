"""The numba kernels of the binning pass: plain arrays in, counts out (no Python objects, no I/O).

Every spike's bin is found by comparing its time with ``onset + edge`` in
float64 (:func:`bin_of`); :func:`count_chunk` fills the counts, window counts
and timing accumulators of a chunk of trials in one pass, and
:func:`max_count_chunk` finds the largest count without building the cube.
Driven by :mod:`opto_cube.binning.count`.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from opto_cube.binning import numba_setup  # noqa: F401  # numba's cache folder, before the cached kernels


@numba.njit(cache=True, nogil=True, inline="always")
def edge(onset, j, rel_edges, stim_edge, stim_end):
    # absolute time of edge j of a trial; the edge that ends the pulse is onset + duration as stored
    if j == stim_edge:
        return onset + stim_end
    return onset + rel_edges[j]


@numba.njit(cache=True, nogil=True, inline="always")
def bin_of(t, onset, rel_edges, inv_width, stim_edge, stim_end):
    n_bins = rel_edges.size - 1
    j = math.floor((t - onset - rel_edges[0]) * inv_width)
    if j < 0:
        j = 0
    elif j > n_bins - 1:
        j = n_bins - 1
    while j > 0 and t < edge(onset, j, rel_edges, stim_edge, stim_end):
        j -= 1
    while j < n_bins - 1 and t >= edge(onset, j + 1, rel_edges, stim_edge, stim_end):
        j += 1
    return j


@numba.njit(cache=True, nogil=True)
def count_chunk(
    times, clusters, lo, hi, onsets, rel_edges, inv_width, stim_edge, stim_end, pre_edge, zero_edge, out, windows,
    codes, course, first, timing,
):  # fmt: skip
    # One pass: each spike's bin j, counted in out[cluster, trial, j] and, when j lies in the trial's pre window
    # (edges pre_edge..zero_edge, i.e. onset - 0.5 <= t < onset) or stim window (zero_edge..stim_edge, i.e.
    # onset <= t < onset + duration), in windows[cluster, trial, 0 or 1]. With timing, the same incidence also
    # counts in course[cluster, codes[trial], j] (the session's time course per condition, accumulated over
    # chunks; laid out (condition, cluster, time): a trial's increments stay within one condition's slab) and,
    # in the stim window, sets first[cluster, trial] = j - zero_edge if unset (-1): a trial's spikes
    # come in time order, so the first one set is the first spike. Returns the largest count reached (computed
    # in int64, so a dtype too small for it is detected even though out[...] wrapped).
    best = 0
    for i in range(onsets.size):
        stim_stop = stim_edge[i]
        for s in range(lo[i], hi[i]):
            j = bin_of(times[s], onsets[i], rel_edges, inv_width, stim_stop, stim_end[i])
            k = clusters[s]
            c = np.int64(out[k, i, j]) + 1
            out[k, i, j] = c
            if c > best:
                best = c
            if timing:
                course[codes[i], k, j] += 1
            if j >= zero_edge:
                if j < stim_stop:
                    windows[k, i, 1] += 1
                    if timing and first[k, i] < 0:
                        first[k, i] = j - zero_edge
            elif j >= pre_edge:
                windows[k, i, 0] += 1
    return best


@numba.njit(cache=True, nogil=True)
def max_count_chunk(times, clusters, lo, hi, onsets, rel_edges, inv_width, stim_edge, stim_end, scratch):
    best = 0
    for i in range(onsets.size):
        for s in range(lo[i], hi[i]):
            j = bin_of(times[s], onsets[i], rel_edges, inv_width, stim_edge[i], stim_end[i])
            c = scratch[clusters[s], j] + 1
            scratch[clusters[s], j] = c
            if c > best:
                best = c
        for s in range(lo[i], hi[i]):
            j = bin_of(times[s], onsets[i], rel_edges, inv_width, stim_edge[i], stim_end[i])
            scratch[clusters[s], j] = 0
    return best
