"""Tests of opto_cube.binning: exact bins on the 30 kHz grid, refusals, dtypes, streaming = in memory."""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import SAMPLES_PER_S, reference_bins, reference_counts
from hypothesis import given
from hypothesis import strategies as st

from opto_cube import binning, schema
from opto_cube.errors import BinningError

PRE_SAMPLES = round(schema.PRE_WINDOW_S[0] * SAMPLES_PER_S)  # -15000
# an onset (sample 55202739, about 1840 s) where floor((t - onset) / width) puts the spike at onset + 0.01
# in the last bin of a 10 ms pulse although the float64 test of docs/contract.md says it lies after the pulse
TRICKY_ONSET_SAMPLE = 55202739


# --------------------------------------------------------------------------
# planning
# --------------------------------------------------------------------------
def test_plan_default_window_and_edges():
    bins = binning.plan_time_bins([0.01, 0.05])
    assert bins.bin_width_s == 0.001
    assert bins.window_s == (-0.5, 1.0)
    assert bins.n_bins == 1500
    edges = bins.edges_s
    assert edges.size == 1501
    assert edges[0] == -0.5
    assert edges[-1] == 1.0
    # the analysis's edges are exactly the doubles the analysis adds to the onset
    for edge in (-0.5, 0.0, 0.01, 0.05):
        assert edge in edges
    np.testing.assert_allclose(bins.centres_s, (edges[:-1] + edges[1:]) / 2, rtol=0, atol=1e-15)
    assert np.all(np.diff(bins.centres_s) > 0)
    assert "n_bins=1500" in repr(bins)


@pytest.mark.parametrize(
    ("durations", "bin_ms", "window", "expected"),
    [
        ([0.01], 1, None, (-0.5, 1.0)),
        ([0.01, 0.05], 10, None, (-0.5, 1.0)),
        ([0.6], 1, None, (-0.5, 1.1)),  # longest pulse + 0.5 s beyond 1 s
        ([0.0125], 2.5, None, (-0.5, 1.0)),
        ([0.01], 5, (-1.0, 0.25), (-1.0, 0.25)),
        ([0.01, 0.05], 1, (-0.5, 0.05), (-0.5, 0.05)),  # window ends with the longest pulse
    ],
)
def test_plan_windows(durations, bin_ms, window, expected):
    bins = binning.plan_time_bins(durations, bin_ms=bin_ms, window_s=window)
    assert bins.window_s == expected
    assert bins.n_bins * bins.bin_width_s == pytest.approx(expected[1] - expected[0])


@pytest.mark.parametrize(
    ("durations", "bin_ms", "window", "match"),
    [
        ([0.01], 3, None, r"bin width 3\.0 ms cannot tile the pre window \[-0\.5, 0\) s.*divides 500 ms"),
        ([0.01], 7.5, None, r"cannot tile the pre window"),
        ([0.0125], 5, None, r"cannot tile the stim window \[0, 0\.0125\) s.*not a whole number of bins.*2\.5 ms"),
        ([0.01, 0.0125], 1, None, r"cannot tile the stim window \[0, 0\.0125\) s"),
        ([0.01], 1, (-0.4, 1.0), r"window \[-0\.4, 1\.0\) s must cover the pre window \[-0\.5, 0\) s"),
        ([0.01, 0.05], 1, (-0.5, 0.04), r"must cover .* the longest pulse \[0, 0\.05\) s"),
        ([0.01], 1, (-0.5005, 1.0), r"not a whole number of 1\.0 ms bins aligned to onset"),
        ([0.01], 1, (-0.5, 1.0005), r"not a whole number of 1\.0 ms bins"),
        ([0.01], 1, (-0.5000004, 1.0), r"window start -0\.5000004 s is not a whole number of microseconds"),
        ([0.01], 1, (-0.5, 1.0000004), r"window stop 1\.0000004 s is not a whole number of microseconds"),
        ([0.01], 1, (math.nan, 1.0), r"window start nan s is not a whole number"),
        ([0.01], 1, (-0.5, math.inf), r"window stop inf s is not a whole number"),
        ([0.01], math.inf, None, r"bin width inf s is not a whole number"),
        ([0.01], 1, (-0.5,), r"window must be \(start, stop\)"),
        ([0.01], 0, None, r"bin width must be positive, got 0\.0 ms"),
        ([0.01], -1, None, r"bin width must be positive"),
        ([0.01], math.nan, None, r"bin width must be positive"),
        ([0.01], 0.0005, None, r"bin width 5e-07 s is not a whole number of microseconds"),
        ([0.01], 1.0000004, None, r"bin width 0\.0010000004 s is not a whole number of microseconds"),
        ([], 1, None, r"no trials"),
    ],
)
def test_plan_refusals(durations, bin_ms, window, match):
    with pytest.raises(BinningError, match=match) as info:
        binning.plan_time_bins(durations, bin_ms=bin_ms, window_s=window)
    assert "\n" not in str(info.value)
    assert isinstance(info.value, ValueError)  # a BinningError is also a ValueError


def test_stim_edge_uses_the_duration_as_stored():
    """A duration off a whole microsecond by float noise still tiles; its edge is onset + duration as stored."""
    duration = float(np.nextafter(0.01, 1.0))  # the double just above 0.01
    assert duration != 0.01
    bins = binning.plan_time_bins([duration], bin_ms=1)
    onset = TRICKY_ONSET_SAMPLE / SAMPLES_PER_S
    times = np.array([onset + 0.01, onset + duration, np.nextafter(onset + duration, -np.inf)])
    counts = binning.spike_counts(times, np.zeros(3, np.int64), np.array([onset]), np.array([duration]), bins, 1)
    ref = reference_bins(times, np.zeros(3), 1, [onset], [duration], bins.edges_s)
    np.testing.assert_array_equal(counts, ref)
    assert counts.sum() == 3


# --------------------------------------------------------------------------
# exactness on window edges
# --------------------------------------------------------------------------
def test_spikes_exactly_on_window_edges():
    """Spikes at onset - 0.5, onset, onset + duration (the float64 sums) and one sample either side."""
    onset_sample, duration_samples = TRICKY_ONSET_SAMPLE, 300
    onset, duration = onset_sample / SAMPLES_PER_S, 0.01
    bins = binning.plan_time_bins([duration], bin_ms=10)
    times, clusters = [], []
    for cluster, (offset_s, offset_samples) in enumerate(((-0.5, PRE_SAMPLES), (0.0, 0), (duration, duration_samples))):
        for t in (
            onset + offset_s,
            (onset_sample + offset_samples - 1) / SAMPLES_PER_S,
            (onset_sample + offset_samples) / SAMPLES_PER_S,
            (onset_sample + offset_samples + 1) / SAMPLES_PER_S,
        ):
            times.append(t)
            clusters.append(cluster)
    times, clusters = np.array(times), np.array(clusters)
    counts = binning.spike_counts(times, clusters, np.array([onset]), np.array([duration]), bins, 3)
    np.testing.assert_array_equal(counts, reference_bins(times, clusters, 3, [onset], [duration], bins.edges_s))
    first_stim = round(-bins.window_s[0] / bins.bin_width_s)  # bin [0, 10 ms)
    for a, b in ((-0.5, 0.0), (0.0, duration), (-0.5, bins.window_s[1])):
        lo, hi = bins.edge_index(a), bins.edge_index(b)
        np.testing.assert_array_equal(
            counts[:, :, lo:hi].sum(axis=-1), reference_counts(times, clusters, 3, [onset], a, b)
        )
    # the spike at onset + duration (the float64 sum) lies after the pulse, though the naive
    # floor((t - onset) / width) puts it in the pulse's last bin
    alone = binning.spike_counts(
        np.array([onset + duration]), np.zeros(1, np.int64), np.array([onset]), np.array([duration]), bins, 1
    )
    assert alone[0, 0, first_stim + 1] == 1
    assert alone.sum() == 1
    naive = math.floor((onset + duration - onset) / bins.bin_width_s)
    assert naive == 0, "the tricky onset no longer fools the naive binner; the test lost its teeth"


def test_overlapping_windows_count_a_spike_in_every_trial():
    bins = binning.plan_time_bins([0.01], bin_ms=10)
    onsets = np.array([10.0, 10.3])
    counts = binning.spike_counts(np.array([10.305]), np.array([0]), onsets, np.array([0.01, 0.01]), bins, 1)
    assert counts[0, 0].sum() == 1
    assert counts[0, 1].sum() == 1
    assert counts[0, 0, bins.edge_index(0.3)] == 1
    assert counts[0, 1, bins.edge_index(0.0)] == 1


def test_window_ending_with_the_longest_pulse():
    onset_sample = TRICKY_ONSET_SAMPLE
    onset = onset_sample / SAMPLES_PER_S
    durations = np.array([0.01, 0.05])
    bins = binning.plan_time_bins(durations, bin_ms=10, window_s=(-0.5, 0.05))
    onsets = np.array([onset, onset + 2.0])
    times = np.array([onsets[1] + 0.05, (onset_sample + 60000 + 1499) / SAMPLES_PER_S, onsets[0] + 0.01])
    counts = binning.spike_counts(times, np.zeros(3, np.int64), onsets, durations, bins, 1)
    np.testing.assert_array_equal(counts, reference_bins(times, np.zeros(3), 1, onsets, durations, bins.edges_s))
    assert counts[0, 1].sum() == 1  # onset + 0.05 is outside [-0.5, 0.05); the sample before it inside
    assert counts[0, 0, bins.edge_index(0.01)] == 1


def test_trials_in_the_order_given_and_unsorted_spikes():
    bins = binning.plan_time_bins([0.01, 0.05], bin_ms=5)
    onsets = np.array([20.0, 10.0, 15.0])
    durations = np.array([0.05, 0.01, 0.01])
    rng = np.random.default_rng(1)
    samples = rng.integers(9 * SAMPLES_PER_S, 21 * SAMPLES_PER_S, 500)
    times, clusters = samples / SAMPLES_PER_S, rng.integers(0, 3, 500)
    counts = binning.spike_counts(times, clusters, onsets, durations, bins, 4)  # cluster 3 has no spikes
    np.testing.assert_array_equal(counts, reference_bins(times, clusters, 4, onsets, durations, bins.edges_s))
    assert not counts[3].any()
    shuffled = rng.permutation(500)
    np.testing.assert_array_equal(
        binning.spike_counts(times[shuffled], clusters[shuffled], onsets, durations, bins, 4), counts
    )


def test_no_spikes():
    bins = binning.plan_time_bins([0.01], bin_ms=10)
    counts = binning.spike_counts(np.zeros(0), np.zeros(0, np.int64), np.array([1.0]), np.array([0.01]), bins, 2)
    assert counts.shape == (2, 1, bins.n_bins)
    assert counts.dtype == np.uint8
    assert not counts.any()


# --------------------------------------------------------------------------
# dtypes
# --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("max_count", "dtype"),
    [
        (0, np.uint8),
        (255, np.uint8),
        (256, np.uint16),
        (65535, np.uint16),
        (65536, np.uint32),
        (2**32 - 1, np.uint32),
        (2**32, np.uint64),
        (2**64 - 1, np.uint64),
    ],
)
def test_smallest_uint(max_count, dtype):
    assert binning.smallest_uint(max_count) == np.dtype(dtype)


def test_smallest_uint_overflow():
    with pytest.raises(OverflowError, match="does not fit"):
        binning.smallest_uint(2**64)


@pytest.mark.parametrize(("n_spikes", "dtype"), [(255, np.uint8), (256, np.uint16)])
def test_counts_never_wrap(n_spikes, dtype):
    """One bin holding 255 spikes fits uint8; 256 need uint16 (a uint8 cube would wrap to 0)."""
    onset_sample = TRICKY_ONSET_SAMPLE
    bins = binning.plan_time_bins([0.01], bin_ms=10)
    times = (onset_sample + np.arange(n_spikes)) / SAMPLES_PER_S  # distinct samples, all in [0, 10 ms)
    counts = binning.spike_counts(
        times, np.zeros(n_spikes, np.int64), np.array([onset_sample / SAMPLES_PER_S]), np.array([0.01]), bins, 1
    )
    assert counts.dtype == np.dtype(dtype)
    assert int(counts.max()) == n_spikes == int(counts.sum())
    blocks = [(np.sort(times), np.zeros(n_spikes, np.int64))]
    assert (
        binning.max_bin_count(blocks, np.array([onset_sample / SAMPLES_PER_S]), np.array([0.01]), bins, 1) == n_spikes
    )


# --------------------------------------------------------------------------
# the streaming kernels' preconditions
# --------------------------------------------------------------------------
def test_streaming_refuses_unsorted_trials_and_foreign_bins():
    bins = binning.plan_time_bins([0.01], bin_ms=10)
    blocks = [(np.array([1.0]), np.array([0]))]
    with pytest.raises(ValueError, match="sorted"):
        list(binning.iter_count_chunks(blocks, np.array([2.0, 1.0]), np.array([0.01, 0.01]), bins, 1, np.uint8))
    with pytest.raises(BinningError, match="does not tile"):
        list(binning.iter_count_chunks(blocks, np.array([1.0]), np.array([0.0125]), bins, 1, np.uint8))


# --------------------------------------------------------------------------
# properties
# --------------------------------------------------------------------------
# (bin width ms, pulse durations in samples that it divides)
BIN_CHOICES = {1.0: (300, 600, 1500, 3000), 2.5: (375, 300, 1500), 5.0: (300, 1500, 3000), 10.0: (300, 1500, 3000)}
EDGE_KINDS = ("pre", "onset", "end", "window_end")


@st.composite
def random_binning_case(draw):
    """Trials (possibly overlapping, in any order) and spikes near their window edges, on the 30 kHz grid."""
    bin_ms = draw(st.sampled_from(sorted(BIN_CHOICES)))
    n_clusters = draw(st.integers(1, 4))
    n_trials = draw(st.integers(1, 6))
    base = draw(st.integers(0, 3600 * SAMPLES_PER_S))
    onset_samples = np.array(draw(st.lists(st.integers(0, 5 * SAMPLES_PER_S), min_size=n_trials, max_size=n_trials)))
    onset_samples = onset_samples + base
    duration_samples = np.array(
        draw(st.lists(st.sampled_from(BIN_CHOICES[bin_ms]), min_size=n_trials, max_size=n_trials))
    )
    onsets, durations = onset_samples / SAMPLES_PER_S, duration_samples / SAMPLES_PER_S
    longest = float(durations.max())
    bin_samples = round(bin_ms * SAMPLES_PER_S / 1000)
    custom = draw(st.booleans())
    if custom:
        start = -0.5 - draw(st.integers(0, 20)) * bin_ms / 1000
        stop_samples = round(longest * SAMPLES_PER_S) + draw(st.integers(0, 20)) * bin_samples
        window = (round(start, 6), stop_samples / SAMPLES_PER_S)
    else:
        window = None
    bins = binning.plan_time_bins(durations, bin_ms=bin_ms, window_s=window)
    stop_samples = round(bins.window_s[1] * SAMPLES_PER_S)
    n_spikes = draw(st.integers(0, 40))
    times, clusters = [], []
    for _ in range(n_spikes):
        i = draw(st.integers(0, n_trials - 1))
        cluster = draw(st.integers(0, n_clusters - 1))
        kind = draw(st.sampled_from((*EDGE_KINDS, "random")))
        if kind == "random":
            times.append((onset_samples[i] + draw(st.integers(-20000, 40000))) / SAMPLES_PER_S)
        else:
            edge_samples = {"pre": PRE_SAMPLES, "onset": 0, "end": duration_samples[i], "window_end": stop_samples}[
                kind
            ]
            edge_s = {"pre": -0.5, "onset": 0.0, "end": durations[i], "window_end": bins.window_s[1]}[kind]
            step = draw(st.sampled_from([-1, 0, 1, None]))
            times.append(
                onsets[i] + edge_s if step is None else (onset_samples[i] + edge_samples + step) / SAMPLES_PER_S
            )
        clusters.append(cluster)
    return (np.array(times, dtype=np.float64), np.array(clusters, dtype=np.int64), n_clusters, onsets, durations, bins)


@given(random_binning_case())
def test_spike_counts_equal_the_reference(case):
    times, clusters, n_clusters, onsets, durations, bins = case
    counts = binning.spike_counts(times, clusters, onsets, durations, bins, n_clusters)
    expected = reference_bins(times, clusters, n_clusters, onsets, durations, bins.edges_s)
    np.testing.assert_array_equal(counts, expected)
    assert counts.dtype == binning.smallest_uint(int(expected.max(initial=0)))
    # windows, from the cube's whole bins, against the float64 test of docs/contract.md
    pre = slice(bins.edge_index(-0.5), bins.edge_index(0.0))
    np.testing.assert_array_equal(
        counts[:, :, pre].sum(axis=-1, dtype=np.int64), reference_counts(times, clusters, n_clusters, onsets, -0.5, 0.0)
    )
    stim = np.arange(bins.n_bins)[None, :] < bins.edge_index(durations)[:, None]
    stim &= np.arange(bins.n_bins)[None, :] >= bins.edge_index(0.0)
    np.testing.assert_array_equal(
        (counts * stim[None]).sum(axis=-1, dtype=np.int64),
        reference_counts(times, clusters, n_clusters, onsets, 0.0, durations),
    )
    np.testing.assert_array_equal(
        counts.sum(axis=-1, dtype=np.int64), reference_counts(times, clusters, n_clusters, onsets, *bins.window_s)
    )


@given(random_binning_case(), st.integers(1, 7), st.integers(1, 7))
def test_streamed_chunks_equal_the_whole_cube(case, block_len, trial_chunk):
    """Spike blocks of any length and trial chunks of any size give the in-memory cube (trials in onset order)."""
    times, clusters, n_clusters, onsets, durations, bins = case
    order = np.argsort(times, kind="stable")
    trial_order = np.argsort(onsets, kind="stable")
    onsets, durations = onsets[trial_order], durations[trial_order]
    whole = binning.spike_counts(times, clusters, onsets, durations, bins, n_clusters)

    def blocks():
        t, c = times[order], clusters[order]
        for start in range(0, t.size, block_len):
            yield t[start : start + block_len], c[start : start + block_len]

    assert binning.max_bin_count(blocks(), onsets, durations, bins, n_clusters, trial_chunk) == int(
        whole.max(initial=0)
    )
    whole_windows = binning.window_counts(times, clusters, onsets, durations, bins, n_clusters)
    streamed = np.zeros_like(whole)
    streamed_windows = np.zeros_like(whole_windows)
    seen = []
    for sl, counts, windows in binning.iter_count_chunks(
        blocks(), onsets, durations, bins, n_clusters, whole.dtype, trial_chunk
    ):
        assert counts.shape[1] == windows.shape[1] == sl.stop - sl.start <= trial_chunk
        assert windows.dtype == binning.smallest_uint(int(windows.max(initial=0)))
        streamed[:, sl] = counts
        streamed_windows[:, sl] = windows
        seen.extend(range(sl.start, sl.stop))
    assert seen == list(range(onsets.size))
    np.testing.assert_array_equal(streamed, whole)
    np.testing.assert_array_equal(streamed_windows, whole_windows)
    # two buffers in turn: a chunk is still intact after the next one is made (a writer compresses it meanwhile)
    previous = None
    for sl, counts, _ in binning.iter_count_chunks(
        blocks(), onsets, durations, bins, n_clusters, whole.dtype, trial_chunk, buffers=2
    ):
        if previous is not None:
            np.testing.assert_array_equal(previous[1], whole[:, previous[0]])
        np.testing.assert_array_equal(counts, whole[:, sl])
        previous = (sl, counts)


@given(random_binning_case(), st.integers(1, 7), st.data())
def test_timing_accumulation_equals_sums_of_the_cube(case, trial_chunk, data):
    """The same pass's per-condition time course = numpy sums of the cube over each condition's trials; the first
    stim-window spike bin = the first non-zero stim bin of the cube (trials overlapping, spikes on edges)."""
    times, clusters, n_clusters, onsets, durations, bins = case
    trial_order = np.argsort(onsets, kind="stable")
    onsets, durations = onsets[trial_order], durations[trial_order]
    whole = binning.spike_counts(times, clusters, onsets, durations, bins, n_clusters)
    n_conditions = data.draw(st.integers(1, 3))
    code = np.array(data.draw(st.lists(st.integers(0, n_conditions - 1), min_size=onsets.size, max_size=onsets.size)))
    timing = binning.Timing(code, n_conditions, bins, n_clusters, whole.dtype)
    order = np.argsort(times, kind="stable")
    blocks = [(times[order], clusters[order])]
    for _ in binning.iter_count_chunks(blocks, onsets, durations, bins, n_clusters, whole.dtype, trial_chunk,
                                       timing=timing):  # fmt: skip
        pass
    expected = np.stack([whole[:, code == c].sum(axis=1, dtype=np.int64) for c in range(n_conditions)], axis=1)
    np.testing.assert_array_equal(timing.time_course, expected)
    zero = bins.edge_index(0.0)
    stim = (np.arange(bins.n_bins)[None, :] >= zero) & (
        np.arange(bins.n_bins)[None, :] < bins.edge_index(durations)[:, None]
    )
    spiking = (whole > 0) & stim[None]
    first = np.where(spiking.any(axis=-1), spiking.argmax(axis=-1) - zero, -1)
    np.testing.assert_array_equal(timing.first_spike, first)


# --------------------------------------------------------------------------
# window counts
# --------------------------------------------------------------------------
@given(random_binning_case())
def test_window_counts_equal_the_reference_and_the_cube_sums(case):
    """Pre and stim window counts equal raw-spike searchsorted counts (edge spikes included) and the cube's sums."""
    times, clusters, n_clusters, onsets, durations, bins = case
    windows = binning.window_counts(times, clusters, onsets, durations, bins, n_clusters)
    assert windows.shape == (n_clusters, onsets.size, len(schema.WINDOWS))
    assert windows.dtype.kind == "u"
    pre = reference_counts(times, clusters, n_clusters, onsets, *schema.PRE_WINDOW_S)
    stim = reference_counts(times, clusters, n_clusters, onsets, 0.0, durations)
    np.testing.assert_array_equal(windows[..., schema.WINDOWS.index(schema.WINDOW_PRE)], pre)
    np.testing.assert_array_equal(windows[..., schema.WINDOWS.index(schema.WINDOW_STIM)], stim)
    assert windows.dtype == binning.smallest_uint(int(max(pre.max(initial=0), stim.max(initial=0))))
    cube = binning.spike_counts(times, clusters, onsets, durations, bins, n_clusters).astype(np.int64)
    bin_index = np.arange(bins.n_bins)
    in_pre = (bin_index >= bins.edge_index(-0.5)) & (bin_index < bins.edge_index(0.0))
    in_stim = (bin_index[None, :] >= bins.edge_index(0.0)) & (bin_index[None, :] < bins.edge_index(durations)[:, None])
    np.testing.assert_array_equal(windows[..., 0], cube[:, :, in_pre].sum(axis=-1))
    np.testing.assert_array_equal(windows[..., 1], (cube * in_stim[None]).sum(axis=-1))


def test_window_counts_on_the_edges():
    """Spikes one sample either side of -0.5 s, 0 and the pulse's end, and exactly on them (float64 sums)."""
    onset_sample = TRICKY_ONSET_SAMPLE
    onset = onset_sample / SAMPLES_PER_S
    bins = binning.plan_time_bins([0.01], bin_ms=10)
    samples = onset_sample + np.array([PRE_SAMPLES - 1, PRE_SAMPLES, -1, 0, 299, 300])
    times = np.concatenate([samples / SAMPLES_PER_S, [onset - 0.5, onset + 0.0, onset + 0.01]])
    windows = binning.window_counts(times, np.zeros(times.size, np.int64), [onset], [0.01], bins, 1)
    expected = [
        reference_counts(times, np.zeros(times.size), 1, [onset], a, b)[0, 0] for a, b in ((-0.5, 0.0), (0.0, 0.01))
    ]
    assert windows[0, 0].tolist() == expected
    assert expected[0] >= 2
    assert expected[1] >= 2


@pytest.mark.parametrize(("n_spikes", "dtype"), [(255, np.uint8), (256, np.uint16)])
def test_window_counts_never_wrap(n_spikes, dtype):
    """Window counts take the smallest dtype that holds them, independently of the cube's bins."""
    onset_sample = TRICKY_ONSET_SAMPLE
    bins = binning.plan_time_bins([0.01], bin_ms=1)
    times = (onset_sample + PRE_SAMPLES + 40 * np.arange(n_spikes)) / SAMPLES_PER_S  # 256 x 40 samples < 0.5 s
    windows = binning.window_counts(
        times, np.zeros(n_spikes, np.int64), [onset_sample / SAMPLES_PER_S], [0.01], bins, 1
    )
    assert windows.dtype == np.dtype(dtype)
    assert windows[0, 0].tolist() == [n_spikes, 0]


def test_a_count_past_the_dtype_raises_count_overflow():
    """Binned optimistically in uint8, a bin of 256 spikes is detected (never silently wrapped)."""
    onset_sample = TRICKY_ONSET_SAMPLE
    bins = binning.plan_time_bins([0.01], bin_ms=10)
    times = (onset_sample + np.arange(256)) / SAMPLES_PER_S
    blocks = [(times, np.zeros(256, np.int64))]
    with pytest.raises(binning.CountOverflow, match="256 spikes, more than uint8 holds"):
        list(binning.iter_count_chunks(blocks, np.array([onset_sample / SAMPLES_PER_S]), [0.01], bins, 1))
    chunks = list(binning.iter_count_chunks(blocks, [onset_sample / SAMPLES_PER_S], [0.01], bins, 1, np.uint16))
    assert int(chunks[0].counts.max()) == 256


def test_trial_parts_assemble_what_was_added_and_hold_less() -> None:
    """TrialParts: the whole array back, exactly, with fill where nothing was added; compressed while held."""
    rng = np.random.default_rng(3)
    whole = np.full((40, 1000), -1, np.int16)
    parts = binning.TrialParts(whole.shape, -1, np.int16)
    for t0 in range(0, 900, 128):  # trials 900.. never added: they stay -1
        sl = slice(t0, min(t0 + 128, 900))
        block = parts.buffer(sl.stop - sl.start)
        assert block.shape == (40, sl.stop - sl.start)
        assert (block == -1).all()
        hit = rng.random(block.shape) < 0.3
        block[hit] = rng.integers(0, 40, hit.sum())
        whole[:, sl] = block
        parts.add(sl, block)
    np.testing.assert_array_equal(parts.assemble(), whole)
    assert parts.assemble().dtype == np.int16
    assert parts.nbytes < whole.nbytes // 2


def test_trial_parts_widen_to_the_widest_part() -> None:
    parts = binning.TrialParts((2, 4, 2), 0, np.uint8)
    parts.add(slice(0, 2), np.full((2, 2, 2), 7, np.uint8))
    parts.add(slice(2, 4), np.full((2, 2, 2), 300, np.uint16))
    out = parts.assemble()
    assert out.dtype == np.uint16
    assert out[:, :2].tolist() == [[[7, 7], [7, 7]]] * 2
    assert out[:, 2:].tolist() == [[[300, 300], [300, 300]]] * 2


def test_time_course_widens_before_a_sum_could_wrap() -> None:
    """300 trials of one condition, 255 spikes in one bin each: the sum 76,500 passes uint16 and stays exact."""
    bins = binning.plan_time_bins([0.01], bin_ms=5, window_s=(-0.5, 0.5))
    onsets = 10.0 * np.arange(1, 301)
    times = (onsets[:, None] + 0.0001 + 1e-5 * np.arange(255)[None, :]).ravel()  # bin 100 of every trial
    timing = binning.Timing(np.zeros(300, np.int64), 1, bins, 1)
    assert timing.by_condition.dtype == np.uint16  # bounded: not sized for 300 trials x 255 up front
    chunks = binning.iter_count_chunks(
        [(times, np.zeros(times.size, np.int64))], onsets, np.full(300, 0.01), bins, 1, trial_chunk=64, timing=timing
    )
    for _ in chunks:
        pass
    assert timing.by_condition.dtype == np.uint32
    assert int(timing.time_course[0, 0, 100]) == 300 * 255
    assert int(timing.time_course.sum()) == 300 * 255
    assert timing.first_spike.tolist() == [[0] * 300]
