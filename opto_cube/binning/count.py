"""The one pass over the spikes: counts ``[cluster, trial, time]`` and window counts, chunk by chunk of trials.

:func:`iter_count_chunks` streams time-sorted spike blocks through the
kernels (:mod:`opto_cube.binning.kernels`) one trial chunk at a time, reusing
its count buffers; :class:`Timing` and :class:`TrialParts` accumulate the
stored timing arrays in the same pass. :func:`spike_counts` and
:func:`window_counts` are the in-memory counterparts, :func:`max_bin_count`
the count dtype's planner, :func:`warm_kernels` numba's start-up in a thread.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from opto_cube import schema
from opto_cube.binning.kernels import count_chunk, max_count_chunk
from opto_cube.binning.plan import US_PER_S, TimeBins, plan_time_bins, smallest_uint
from opto_cube.errors import BinningError


class _SpikeWindows:
    """Spikes with ``start <= t < stop`` from a stream of time-sorted blocks; ``start`` never decreases."""

    def __init__(self, blocks: Iterable[tuple[np.ndarray, np.ndarray]]) -> None:
        self._blocks = iter(blocks)
        self._times = np.empty(0, np.float64)
        self._clusters = np.empty(0, np.int64)
        self._exhausted = False

    def take(self, start: float, stop: float) -> tuple[np.ndarray, np.ndarray]:
        while not self._exhausted and (self._times.size == 0 or self._times[-1] < stop):
            block = next(self._blocks, None)
            if block is None:
                self._exhausted = True
                break
            keep = np.searchsorted(self._times, start, side="left")
            self._times = np.concatenate([self._times[keep:], block[0]])
            self._clusters = np.concatenate([self._clusters[keep:], block[1]])
        keep = np.searchsorted(self._times, start, side="left")
        self._times, self._clusters = self._times[keep:], self._clusters[keep:]
        n = np.searchsorted(self._times, stop, side="left")
        return self._times[:n], self._clusters[:n]


@dataclass(frozen=True)
class _Trials:
    """Trials in onset order with their window edges, ready for the kernels."""

    onsets: np.ndarray
    stim_edge: np.ndarray
    stim_end: np.ndarray
    window_start: np.ndarray
    window_stop: np.ndarray

    @staticmethod
    def window_edges(bins: TimeBins) -> tuple[int, int]:
        """Edge indices of -0.5 and 0 s: the pre window is bins ``[pre, zero)``; the stim window starts at ``zero``."""
        pre_us, zero_us = round(schema.PRE_WINDOW_S[0] * US_PER_S), round(schema.PRE_WINDOW_S[1] * US_PER_S)
        if bins.start_us > pre_us or (pre_us - bins.start_us) % bins.bin_us or (zero_us - bins.start_us) % bins.bin_us:
            raise BinningError(f"{bins!r} does not tile the pre window [-0.5, 0) s; plan with plan_time_bins")
        return (pre_us - bins.start_us) // bins.bin_us, (zero_us - bins.start_us) // bins.bin_us

    @classmethod
    def build(cls, onsets_s: np.ndarray, durations_s: np.ndarray, bins: TimeBins) -> _Trials:
        onsets = np.ascontiguousarray(onsets_s, dtype=np.float64)
        durations = np.ascontiguousarray(durations_s, dtype=np.float64)
        if np.any(np.diff(onsets) < 0):
            raise ValueError("onsets must be sorted; sort the trials first")
        stim_edge = bins.edge_index(durations)
        relative_us = bins.start_us + stim_edge * bins.bin_us
        if np.any(np.abs(durations * US_PER_S - relative_us) >= 0.5) or np.any(stim_edge > bins.n_bins):
            raise BinningError(f"{bins!r} does not tile the stim windows of these durations; plan with plan_time_bins")
        rel = bins.edges_s
        window_stop = np.where(stim_edge == bins.n_bins, onsets + durations, onsets + rel[-1])
        return cls(onsets, stim_edge.astype(np.int64), durations, onsets + rel[0], window_stop)

    def chunk(self, sl: slice) -> _Trials:
        return _Trials(*(getattr(self, f)[sl] for f in self.__dataclass_fields__))


def _iter_windows(
    spike_blocks: Iterable[tuple[np.ndarray, np.ndarray]], trials: _Trials, trial_chunk: int
) -> Iterator[tuple[slice, _Trials, np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    windows = _SpikeWindows(spike_blocks)
    n_trials = trials.onsets.size
    for t0 in range(0, n_trials, trial_chunk):
        sl = slice(t0, min(t0 + trial_chunk, n_trials))
        part = trials.chunk(sl)
        times, clusters = windows.take(part.window_start[0], part.window_stop.max())
        lo = np.searchsorted(times, part.window_start, side="left")
        hi = np.searchsorted(times, part.window_stop, side="left")
        yield sl, part, times, clusters, lo, hi


def max_bin_count(
    spike_blocks: Iterable[tuple[np.ndarray, np.ndarray]],
    onsets_s: np.ndarray,
    durations_s: np.ndarray,
    bins: TimeBins,
    n_clusters: int,
    trial_chunk: int = schema.CHUNK_TRIALS,
) -> int:
    """The largest count any (cluster, trial, bin) will hold, without building the cube.

    ``spike_blocks`` yields time-sorted ``(times_s, cluster)`` blocks; trials are in onset order.
    """
    trials = _Trials.build(onsets_s, durations_s, bins)
    scratch = np.zeros((n_clusters, bins.n_bins), dtype=np.int64)
    rel, inv = bins.edges_s, 1.0 / bins.bin_width_s
    best = 0
    for _, part, times, clusters, lo, hi in _iter_windows(spike_blocks, trials, trial_chunk):
        best = max(
            best,
            int(
                max_count_chunk(times, clusters, lo, hi, part.onsets, rel, inv, part.stim_edge, part.stim_end, scratch)
            ),
        )
    return best


class CountOverflow(BinningError):
    """A count reached past what the chunks' dtype holds: bin again with a wider one (see :func:`max_bin_count`)."""

    def __init__(self, count: int, dtype: np.dtype) -> None:
        super().__init__(f"a bin reached {count} spikes, more than {np.dtype(dtype).name} holds")
        self.count, self.dtype = count, np.dtype(dtype)


class CountChunk(NamedTuple):
    """The counts of one chunk of trials (in onset order), as :func:`iter_count_chunks` yields them."""

    trials: slice
    counts: np.ndarray  # [cluster, trial, time]: a view of a reused buffer, valid until the next chunk
    windows: np.ndarray  # [cluster, trial, window]: pre and stim window counts (schema.WINDOWS), owned by the caller


class Timing:
    """The stored timing arrays of a session, filled by :func:`iter_count_chunks` in its one pass.

    ``time_course[cluster, condition, time]``: the spikes of each bin summed
    over the condition's trials (``trial_condition``), exact integers;
    ``first_spike[cluster, trial]``: the bin of the trial's first spike in its
    stim window ``[0, duration)``, counted from the window's first bin, -1
    for none. Both complete once every chunk has been yielded.

    Examples
    --------
    >>> bins = plan_time_bins([0.01], bin_ms=5, window_s=(-0.5, 0.5))
    >>> timing = Timing(np.array([0, 1]), 2, bins, 1)
    >>> chunks = list(iter_count_chunks([(np.array([1.004, 1.007, 2.2]), np.array([0, 0, 0]))],
    ...                                 np.array([1.0, 2.0]), np.array([0.01, 0.01]), bins, 1, timing=timing))
    >>> timing.first_spike.tolist(), int(timing.time_course[0, 0, 100]), int(timing.time_course[0, 1, 140])
    ([[0, -1]], 1, 1)
    """

    @property
    def time_course(self) -> np.ndarray:
        """(cluster, condition, time), a view."""
        return self.by_condition.transpose(1, 0, 2)

    def __init__(
        self,
        trial_condition: np.ndarray,
        n_conditions: int,
        bins: TimeBins,
        n_clusters: int,
        count_dtype: np.dtype | type = np.uint8,
    ) -> None:
        self.trial_condition = np.ascontiguousarray(trial_condition, dtype=np.int64)
        if self.trial_condition.size and (self.trial_condition.min() < 0 or self.trial_condition.max() >= n_conditions):
            raise ValueError(f"trial_condition must lie in [0, {n_conditions})")
        self.n_conditions = int(n_conditions)
        # (condition, cluster, time) in memory: a trial's increments stay within one condition's slab. Its dtype
        # is bounded, not sized for the session: it starts one step wider than the counts (uint16 for uint8) and
        # is widened, before a chunk is binned, only if a sum could then pass it (reserve): memory does not grow
        # with the trials of a condition, and no sum ever wraps.
        self.count_dtype = np.dtype(count_dtype)
        self.by_condition = np.zeros(
            (self.n_conditions, n_clusters, bins.n_bins), dtype=smallest_uint(int(np.iinfo(self.count_dtype).max) + 1)
        )
        self._seen = [0] * self.n_conditions  # trials of each condition binned so far
        self._largest = 0  # the largest count binned so far (the kernel's)
        stim_bins = bins.n_bins - _Trials.window_edges(bins)[1]
        # first spikes: one trial chunk at a time, each kept compressed (TrialParts), whole only when asked for
        self.first_spike_parts = TrialParts(
            (n_clusters, self.trial_condition.size), -1, np.int16 if stim_bins <= np.iinfo(np.int16).max else np.int32
        )

    @property
    def first_spike(self) -> np.ndarray:
        """(cluster, trial), assembled from the trial chunks filled so far (-1 elsewhere)."""
        return self.first_spike_parts.assemble()

    def reserve(self, codes: np.ndarray, limit: int) -> None:
        """Before binning trials of conditions ``codes`` whose counts reach at most ``limit``: widen if needed.

        Every sum is at most (its condition's trials so far) x (the largest
        count so far) + (its trials in this chunk) x ``limit``; the time
        course is widened (a copy, rare) when that bound passes its dtype.

        Examples
        --------
        >>> timing = Timing(np.zeros(300, np.int64), 1, plan_time_bins([0.01], bin_ms=5), 1)
        >>> timing.by_condition.dtype.name
        'uint16'
        >>> timing.reserve(np.zeros(300, np.int64), 255)
        >>> timing.by_condition.dtype.name
        'uint32'
        """
        in_chunk = np.bincount(codes, minlength=self.n_conditions).tolist()
        bound = max((s * self._largest + n * limit for s, n in zip(self._seen, in_chunk, strict=True)), default=0)
        if bound > np.iinfo(self.by_condition.dtype).max:
            self.by_condition = self.by_condition.astype(smallest_uint(bound))

    def binned(self, codes: np.ndarray, largest: int) -> None:
        """Trials of conditions ``codes`` were binned, their largest count ``largest``."""
        for c, n in enumerate(np.bincount(codes, minlength=self.n_conditions).tolist()):
            self._seen[c] += n
        self._largest = max(self._largest, int(largest))


class TrialParts:
    """A ``(cluster, trial, ...)`` array kept as zstd-compressed trial chunks: memory bounded by one chunk.

    The conversion fills the cluster x trial arrays one trial chunk at a
    time; each chunk is compressed as it is added (a few hundred kB,
    compressing ~10x), so what grows with the session is their compressed
    size. :meth:`assemble` gives the whole array (trials not added hold
    ``fill``) in ``dtype``, or in the widest dtype of the chunks added.

    Examples
    --------
    >>> parts = TrialParts((2, 5), -1, np.int16)
    >>> parts.add(slice(1, 3), np.array([[0, 4], [2, -1]], np.int16))
    >>> parts.assemble().tolist()
    [[-1, 0, 4, -1, -1], [-1, 2, -1, -1, -1]]
    """

    def __init__(self, shape: tuple[int, ...], fill: int, dtype: np.dtype | type) -> None:
        self.shape, self.fill, self.dtype = tuple(shape), fill, np.dtype(dtype)
        self._parts: list[tuple[slice, np.dtype, tuple[int, ...], bytes]] = []
        self.nbytes = 0  # compressed bytes held

    def buffer(self, n_trials: int) -> np.ndarray:
        """A fresh ``fill``-filled chunk of ``n_trials`` trials in ``dtype``, to fill and :meth:`add`."""
        return np.full((self.shape[0], n_trials, *self.shape[2:]), self.fill, self.dtype)

    def add(self, trials: slice, part: np.ndarray) -> None:
        from numcodecs import Zstd

        part = np.ascontiguousarray(part)
        data = bytes(Zstd(level=1).encode(part))
        self._parts.append((trials, part.dtype, part.shape, data))
        self.nbytes += len(data)

    def largest_dtype(self) -> np.dtype:
        return np.result_type(self.dtype, *(dtype for _, dtype, _, _ in self._parts))

    def assemble(self, dtype: np.dtype | type | None = None) -> np.ndarray:
        from numcodecs import Zstd

        out = np.full(self.shape, self.fill, np.dtype(dtype) if dtype is not None else self.largest_dtype())
        for trials, part_dtype, shape, data in self._parts:
            out[:, trials] = np.frombuffer(Zstd().decode(data), part_dtype).reshape(shape)
        return out


_NO_TIMING = (np.zeros(0, np.int64), np.zeros((0, 0, 0), np.uint32), np.zeros((0, 0), np.int16))


def iter_count_chunks(
    spike_blocks: Iterable[tuple[np.ndarray, np.ndarray]],
    onsets_s: np.ndarray,
    durations_s: np.ndarray,
    bins: TimeBins,
    n_clusters: int,
    dtype: np.dtype | type = np.uint8,
    trial_chunk: int = schema.CHUNK_TRIALS,
    buffers: int = 1,
    timing: Timing | None = None,
) -> Iterator[CountChunk]:
    """Counts ``[cluster, trial, time]`` and ``[cluster, trial, window]``, chunk by chunk of trials, in onset order.

    One pass over the spikes fills both: the bins, and each trial's pre
    ``[-0.5, 0)`` and stim ``[0, duration)`` window (``schema.WINDOWS``, in
    that order) by the same float64 edges. Yields :class:`CountChunk`
    ``(trials, counts, windows)``: ``counts`` is a view of one of ``buffers``
    reused buffers of ``dtype``, taken in turn, so it stays valid until
    ``buffers`` more chunks are asked for (with 2, a writer can compress one
    chunk while the next is binned; copy it to keep it); ``windows`` is a new
    array of the smallest unsigned dtype that holds its largest count.

    With ``timing`` (a :class:`Timing` of the same trials, in onset order),
    the same pass also fills its per-condition time course and first-spike
    bins.

    Raises
    ------
    CountOverflow
        When a bin count exceeds what ``dtype`` holds (the chunk is not
        yielded): bin again with ``smallest_uint(max_bin_count(...))``. The
        default, ``uint8``, holds every count of realistic sessions.
    """
    dtype = np.dtype(dtype)
    limit = int(np.iinfo(dtype).max)
    trials = _Trials.build(onsets_s, durations_s, bins)
    pre_edge, zero_edge = _Trials.window_edges(bins)
    size = min(trial_chunk, trials.onsets.size)
    if buffers < 1:
        raise ValueError(f"buffers must be at least 1, got {buffers!r}")
    pool = [
        np.zeros((n_clusters, size, bins.n_bins), dtype=dtype)
        for _ in range(min(buffers, -(-trials.onsets.size // max(size, 1))))
    ]
    scratch = np.zeros((n_clusters, size, len(schema.WINDOWS)), dtype=np.int64)
    rel, inv = bins.edges_s, 1.0 / bins.bin_width_s
    if timing is not None and timing.first_spike_parts.shape != (n_clusters, trials.onsets.size):
        raise ValueError("timing was made for other trials or clusters")
    if timing is not None and np.iinfo(dtype).max > np.iinfo(timing.count_dtype).max:
        raise ValueError(f"timing was made for {timing.count_dtype} counts, not {dtype}")
    for index, (sl, part, times, clusters, lo, hi) in enumerate(_iter_windows(spike_blocks, trials, trial_chunk)):
        n = sl.stop - sl.start
        out, windows = pool[index % len(pool)][:, :n], scratch[:, :n]
        if index >= len(pool):  # a buffer's first use finds it zero (np.zeros): not touched before the kernel
            out.fill(0)
        windows.fill(0)
        codes, course, first = _NO_TIMING
        if timing is not None:
            timing.reserve(timing.trial_condition[sl], limit)
            codes, course, first = timing.trial_condition[sl], timing.by_condition, timing.first_spike_parts.buffer(n)
        best = count_chunk(
            times, clusters, lo, hi, part.onsets, rel, inv, part.stim_edge, part.stim_end, pre_edge, zero_edge,
            out, windows, codes, course, first, timing is not None,
        )  # fmt: skip
        if best > limit:
            raise CountOverflow(int(best), dtype)
        if timing is not None:
            timing.binned(codes, best)
            timing.first_spike_parts.add(sl, first)
        yield CountChunk(sl, out, windows.astype(smallest_uint(int(windows.max(initial=0)))))


_WARMING: list[threading.Thread] = []


def warm_kernels() -> None:
    """Load the binning kernels (from numba's cache, or compile them) in a background thread, once a process.

    Called before a session is read, numba's start-up (~0.5 s) overlaps the
    reading and hashing of the session's files, which release the GIL; the
    first real call then finds the kernels loaded (numba's compiler lock
    makes it wait if they are not yet). Best effort: an error here is left
    for the real call to raise.
    """
    if _WARMING:
        return
    thread = threading.Thread(target=_warm, name="opto-cube-kernels", daemon=True)
    _WARMING.append(thread)
    thread.start()


def _warm() -> None:
    # the same specialisations as a conversion's (uint8 counts, uint16 time course, int16 first spikes)
    with contextlib.suppress(Exception):
        bins = plan_time_bins([0.01], bin_ms=5.0, window_s=(-0.5, 0.5))
        timing = Timing(np.array([0, 0]), 1, bins, 1)  # 2 trials of a condition: a uint16 time course
        blocks = [(np.array([1.004, 1.007, 2.2]), np.array([0, 0, 0]))]
        for _ in iter_count_chunks(blocks, np.array([1.0, 2.0]), np.array([0.01, 0.01]), bins, 1, timing=timing):
            pass


def _in_memory(
    times_s: np.ndarray,
    clusters: np.ndarray,
    onsets_s: np.ndarray,
    durations_s: np.ndarray,
    bins: TimeBins,
    n_clusters: int,
) -> tuple[np.ndarray, np.ndarray]:
    times_s = np.asarray(times_s, dtype=np.float64)
    clusters = np.asarray(clusters, dtype=np.int64)
    order = np.argsort(times_s, kind="stable")
    blocks = [(times_s[order], clusters[order])]
    trial_order = np.argsort(onsets_s, kind="stable")
    onsets = np.asarray(onsets_s, dtype=np.float64)[trial_order]
    durations = np.asarray(durations_s, dtype=np.float64)[trial_order]
    dtype = np.dtype(np.uint8)
    while True:
        try:
            cube = np.zeros((n_clusters, onsets.size, bins.n_bins), dtype=dtype)
            parts = []
            for sl, counts, windows in iter_count_chunks(blocks, onsets, durations, bins, n_clusters, dtype):
                cube[:, trial_order[sl]] = counts
                parts.append((trial_order[sl], windows))
            break
        except CountOverflow:
            dtype = smallest_uint(max_bin_count(blocks, onsets, durations, bins, n_clusters))
    wdtype = np.result_type(np.uint8, *(w.dtype for _, w in parts))
    windows_all = np.zeros((n_clusters, onsets.size, len(schema.WINDOWS)), dtype=wdtype)
    for rows, windows in parts:
        windows_all[:, rows] = windows
    return cube, windows_all


def spike_counts(
    times_s: np.ndarray,
    clusters: np.ndarray,
    onsets_s: np.ndarray,
    durations_s: np.ndarray,
    bins: TimeBins,
    n_clusters: int,
) -> np.ndarray:
    """The whole cube ``[cluster, trial, time]`` in memory, trials in the order given.

    The in-memory counterpart of :func:`iter_count_chunks`, for small data and
    tests: spikes need not be sorted, trials need not be in onset order.

    Examples
    --------
    >>> bins = plan_time_bins([0.01], bin_ms=10, window_s=(-0.5, 0.5))
    >>> spike_counts(np.array([0.0, 5.0]), np.array([0, 0]), np.array([5.0, 0.0]),
    ...              np.array([0.01, 0.01]), bins, 1)[0, :, 50]
    array([1, 1], dtype=uint8)
    """
    return _in_memory(times_s, clusters, onsets_s, durations_s, bins, n_clusters)[0]


def window_counts(
    times_s: np.ndarray,
    clusters: np.ndarray,
    onsets_s: np.ndarray,
    durations_s: np.ndarray,
    bins: TimeBins,
    n_clusters: int,
) -> np.ndarray:
    """Spikes in each trial's pre ``[-0.5, 0)`` and stim ``[0, duration)`` window, ``[cluster, trial, window]``.

    The in-memory counterpart of the ``windows`` of :func:`iter_count_chunks`
    (the same pass as :func:`spike_counts`; trials in the order given,
    windows in the order of ``schema.WINDOWS``).

    Examples
    --------
    >>> bins = plan_time_bins([0.01], bin_ms=10, window_s=(-0.5, 0.5))
    >>> window_counts(np.array([4.5, 4.99, 5.0, 5.0099, 5.01]), np.zeros(5, int), np.array([5.0]),
    ...               np.array([0.01]), bins, 1)[0]
    array([[2, 2]], dtype=uint8)
    """
    return _in_memory(times_s, clusters, onsets_s, durations_s, bins, n_clusters)[1]
