"""Spikes to counts ``[cluster, trial, time]``: pure binning, no disk I/O.

The modules: :mod:`~opto_cube.binning.plan` (the time bins),
:mod:`~opto_cube.binning.kernels` (the numba kernels),
:mod:`~opto_cube.binning.count` (the one pass over the spikes, the timing
accumulators), :mod:`~opto_cube.binning.numba_setup` (numba's cache and
start-up). Their public names are re-exported here.

Exactness. The published analysis counts a spike at ``t`` in the window
``[a, b)`` of a trial with onset ``o`` when ``o + a <= t < o + b`` in float64.
Spike times and onsets sit on the 30 kHz sample grid, so spikes land exactly
on such edges and ``floor((t - o) / width)`` miscounts them. Here bin edges
are whole microseconds, ``k / 1e6`` relative to onset (so ``-0.5`` and ``0``
are exactly the doubles the analysis adds), every spike's bin is found by
comparing ``t`` with ``o + edge`` in float64, and the edge that ends a
trial's pulse is ``o + duration`` with the duration as stored. A window and
bin width that cannot make the pre window ``[-0.5, 0)`` and every stim window
``[0, duration)`` unions of whole bins are refused.

Speed and memory. Trials are binned in chunks, in onset order, by one pass
over the time-sorted spikes that fall in the chunk's windows (a spike counts
in every trial whose window holds it; neighbouring windows overlap). One
buffer of ``(clusters, trials per chunk, bins)`` is reused, so memory is
bounded by the chunk, not by the session.

Examples
--------
>>> import numpy as np
>>> bins = plan_time_bins(durations_s=[0.01], bin_ms=5.0, window_s=(-0.5, 0.1))
>>> bins
TimeBins(bin_width_s=0.005, window_s=(-0.5, 0.1), n_bins=120)
>>> counts = spike_counts(np.array([10.0, 10.004, 10.005]), np.array([0, 0, 1]),
...                       onsets_s=np.array([10.0]), durations_s=np.array([0.01]),
...                       bins=bins, n_clusters=2)
>>> counts.shape, counts.dtype
((2, 1, 120), dtype('uint8'))
>>> int(counts[0, 0, 100]), int(counts[1, 0, 101])
(2, 1)
"""

from opto_cube.binning.count import (
    CountChunk,
    CountOverflow,
    Timing,
    TrialParts,
    iter_count_chunks,
    max_bin_count,
    spike_counts,
    warm_kernels,
    window_counts,
)
from opto_cube.binning.numba_setup import numba_targets_without_scipy, use_writable_numba_cache
from opto_cube.binning.plan import TimeBins, plan_time_bins, smallest_uint

__all__ = [
    "CountChunk",
    "CountOverflow",
    "TimeBins",
    "Timing",
    "TrialParts",
    "iter_count_chunks",
    "max_bin_count",
    "numba_targets_without_scipy",
    "plan_time_bins",
    "smallest_uint",
    "spike_counts",
    "use_writable_numba_cache",
    "warm_kernels",
    "window_counts",
]
