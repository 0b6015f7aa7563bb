"""Kilosort's per-cluster features and QC metrics: pure numpy (and numba) kernels on arrays, no files.

What :func:`opto_cube.io.kilosort.read_kilosort` derives for each cluster of a
Kilosort / phy folder, with the definitions of docs/format.md ("Kilosort / phy"):

- ``template_depth_um``: the template's amplitude-weighted channel y, as
  Kilosort's ``templatePositionsAmplitudes.m`` (cortex-lab/spikes) computes it:
  each channel's peak-to-peak amplitude, channels under 30 % of the largest
  set to zero, weights of the channels' y.
- ``peak_channel``: the channel of the largest peak-to-peak amplitude.
- ``trough_to_peak_ms``: on the peak channel, from the trough (minimum) to the
  largest value after it; ``waveform_type`` is FS below
  :data:`FS_MAX_TROUGH_TO_PEAK_MS` (0.4 ms, Siegle et al. 2021, Nature 592:86),
  RS at or above it.
- ``presence_ratio``, ``isi_violations_ratio``, ``amplitude_cutoff``: as
  SpikeInterface's ``qualitymetrics`` computes them (:func:`presence_ratio`,
  :func:`isi_violations_ratio`, :func:`amplitude_cutoff`), after Hill, Mehta &
  Kleinfeld (2011, J Neurosci 31:8699) and the Allen Institute's
  ``ecephys_spike_sorting``; ``qc_pass`` with the dataset's thresholds.

:class:`QcAccumulator` computes the three metrics over blocks of time-sorted
spikes (memory bounded by a block); :func:`qc_metrics` is the same over whole arrays.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from opto_cube import schema

# derived values (docs/format.md, "Kilosort / phy sessions", cites each)
FS_MAX_TROUGH_TO_PEAK_MS = 0.4  # FS below, RS at or above (Siegle et al. 2021)
DEPTH_CHANNEL_FRACTION = 0.3  # templatePositionsAmplitudes.m: channels under 30 % of the peak amplitude weigh 0
PRESENCE_BIN_S = 60.0  # SpikeInterface's compute_presence_ratios default
ISI_THRESHOLD_S = 0.0015  # SpikeInterface's compute_isi_violations default (1.5 ms)
MIN_ISI_S = 0.0
AMPLITUDE_BINS = 500  # SpikeInterface's amplitude_cutoff defaults
AMPLITUDE_SMOOTHING = 3
AMPLITUDE_MIN_SPIKES_PER_BIN = 5


# --------------------------------------------------------------------------
# Templates
# --------------------------------------------------------------------------
def template_features(
    templates: np.ndarray, channel_y: np.ndarray, sample_rate: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Depth (amplitude-weighted channel y), peak channel and trough-to-peak width (ms) of each template.

    A template with no amplitude (all zeros) has NaN depth and width and peak channel -1.

    Examples
    --------
    >>> t = np.zeros((1, 10, 3))
    >>> t[0, 2, 1], t[0, 5, 1], t[0, 2, 2] = -10.0, 4.0, -5.0  # trough at 2, peak at 5 on channel 1
    >>> depth, peak, width = template_features(t, np.array([0.0, 20.0, 40.0]), 30000.0)
    >>> float(depth[0]), int(peak[0]), float(width[0])  # (14 * 20 + 5 * 40) / 19; 3 samples = 0.1 ms
    (25.263157894736842, 1, 0.1)
    """
    templates = np.asarray(templates, dtype=np.float64)
    k = templates.shape[0]
    depth = np.full(k, np.nan)
    peak = np.full(k, -1, dtype=np.int32)
    width = np.full(k, np.nan)
    if k == 0 or templates.shape[1] == 0 or templates.shape[2] == 0:
        return depth, peak, width
    ptp = templates.max(axis=1) - templates.min(axis=1)  # (k, channels)
    largest = ptp.max(axis=1)
    has = largest > 0
    weights = np.where(ptp >= DEPTH_CHANNEL_FRACTION * largest[:, None], ptp, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        depth = np.where(has, (weights * channel_y[None, :]).sum(axis=1) / weights.sum(axis=1), np.nan)
    best = np.argmax(ptp, axis=1)
    peak = np.where(has, best, -1).astype(np.int32)
    waveform = templates[np.arange(k), :, best]  # (k, samples)
    trough = np.argmin(waveform, axis=1)
    after = np.where(np.arange(waveform.shape[1])[None, :] >= trough[:, None], waveform, -np.inf)
    peak_sample = np.argmax(after, axis=1)
    width = np.where(has, (peak_sample - trough) / sample_rate * 1000.0, np.nan)
    return depth, peak, width


def waveform_types(trough_to_peak_ms: np.ndarray) -> np.ndarray:
    """``FS`` below :data:`FS_MAX_TROUGH_TO_PEAK_MS`, ``RS`` at or above, empty where the width is NaN.

    Examples
    --------
    >>> waveform_types(np.array([0.3, 0.4, np.nan])).tolist()
    ['FS', 'RS', '']
    """
    width = np.asarray(trough_to_peak_ms, dtype=np.float64)
    out = np.full(width.shape, schema.UNKNOWN_LABEL, dtype=object)
    out[width < FS_MAX_TROUGH_TO_PEAK_MS] = "FS"
    out[width >= FS_MAX_TROUGH_TO_PEAK_MS] = "RS"
    return out


# --------------------------------------------------------------------------
# QC metrics (SpikeInterface's qualitymetrics definitions)
# --------------------------------------------------------------------------
def presence_ratio(spike_samples: np.ndarray, total_samples: int, sample_rate: float) -> float:
    """Fraction of the recording's 60-s bins holding a spike (SpikeInterface's ``presence_ratio``).

    Bin edges are whole multiples of ``int(60 s * sample_rate)`` samples from 0
    up to ``total_samples``; NaN when the recording is shorter than one bin.

    Examples
    --------
    >>> presence_ratio(np.array([10, 2_000_000]), 3_600_000, 30000.0)  # 2 of 2 bins
    1.0
    """
    bin_samples = int(PRESENCE_BIN_S * sample_rate)
    if total_samples < bin_samples:
        return math.nan
    edges = np.arange(total_samples // bin_samples + 1) * bin_samples
    counts, _ = np.histogram(spike_samples, bins=edges)
    return float(np.sum(counts > 0) / (edges.size - 1))


def isi_violations_ratio(spike_times_s: np.ndarray, total_duration_s: float) -> float:
    """Hill et al. (2011)'s ISI violations ratio, as SpikeInterface's ``isi_violations`` computes it.

    ``violations / (2 n (threshold - min_isi)) / (n / duration)`` with the
    1.5 ms threshold; NaN without spikes.

    Examples
    --------
    >>> isi_violations_ratio(np.array([0.0, 0.001, 1.0, 2.0]), 10.0)  # 1 violation, 4 spikes
    208.33333333333331
    """
    n = spike_times_s.size
    if n == 0:
        return math.nan
    violations = int(np.sum(np.diff(spike_times_s) < ISI_THRESHOLD_S))
    violation_time = 2 * n * (ISI_THRESHOLD_S - MIN_ISI_S)
    return float((violations / violation_time) / (n / total_duration_s))


def gaussian_filter1d(x: np.ndarray, sigma: int) -> np.ndarray:
    """``scipy.ndimage.gaussian_filter1d(x, sigma)`` (mode ``reflect``, truncate 4), operation for operation.

    The same kernel, and the same sums in the same order as scipy's
    ``NI_Correlate1D`` for a symmetric kernel, so the result is scipy's to the
    bit; without importing scipy.ndimage (a second of a fresh process).

    Examples
    --------
    >>> gaussian_filter1d(np.array([0.0, 0.0, 1.0, 0.0, 0.0]), 1).round(4)
    array([0.0584, 0.2421, 0.3989, 0.2421, 0.0584])
    """
    x = np.asarray(x, dtype=np.float64)
    radius = int(4.0 * float(sigma) + 0.5)
    offsets = np.arange(-radius, radius + 1)
    phi = np.exp(-0.5 / (sigma * sigma) * offsets**2)
    weights = (phi / phi.sum())[::-1]
    padded = np.pad(x, radius, mode="symmetric")  # scipy's "reflect": d c b a | a b c d | d c b a
    n = x.size
    out = padded[radius : radius + n] * weights[radius]
    for d in range(radius, 0, -1):
        out = out + (padded[radius - d : radius - d + n] + padded[radius + d : radius + d + n]) * weights[radius - d]
    return out


def amplitude_cutoff(amplitudes: np.ndarray) -> float:
    """Hill et al. (2011)'s amplitude cutoff, as SpikeInterface's ``amplitude_cutoff`` computes it.

    A 500-bin density histogram smoothed by a Gaussian of sigma 3 bins; the
    fraction of the distribution above the bin past the peak whose density is
    nearest to the lowest bin's, at most 0.5. NaN with fewer than 5 spikes a bin.

    Examples
    --------
    >>> amplitude_cutoff(np.ones(10))
    nan
    """
    amplitudes = np.asarray(amplitudes, dtype=np.float64)
    if amplitudes.size / AMPLITUDE_BINS < AMPLITUDE_MIN_SPIKES_PER_BIN:
        return math.nan
    h, b = np.histogram(amplitudes, AMPLITUDE_BINS, density=True)
    pdf = gaussian_filter1d(h, AMPLITUDE_SMOOTHING)
    bin_size = np.mean(np.diff(b[:-1]))
    peak = int(np.argmax(pdf))
    cut = int(np.argmin(np.abs(pdf[peak:] - pdf[0]))) + peak
    return float(min(np.sum(pdf[cut:]) * bin_size, 0.5))


@numba.njit(cache=True, nogil=True)
def _spike_pass(
    samples, rows, amplitudes, sample_rate, isi_threshold_s, bin_samples, n_bins,
    per_cluster, violations, hits, last, lo, hi,
):  # pragma: no cover  # fmt: skip
    """Time-sorted spikes, one block: counts, ISI violations, presence bins, amplitude range, per cluster (in place)."""
    with_amplitudes = amplitudes.size > 0
    for i in range(samples.size):
        s, c = samples[i], rows[i]
        per_cluster[c] += 1
        if last[c] >= 0 and (s / sample_rate) - (last[c] / sample_rate) < isi_threshold_s:
            violations[c] += 1
        last[c] = s
        if n_bins > 0:
            b = s // bin_samples
            if b == n_bins and s == n_bins * bin_samples:
                b = n_bins - 1  # np.histogram's last bin holds its right edge
            if b < n_bins:
                hits[c, b] += 1
        if with_amplitudes:
            a = amplitudes[i]
            lo[c] = min(lo[c], a)
            hi[c] = max(hi[c], a)


@numba.njit(cache=True, nogil=True)
def _histogram_pass(amplitudes, rows, enough, n_bins, edges, span, counts):  # pragma: no cover
    """One block into every cluster's amplitude histogram, bin for bin as np.histogram(a, n_bins) assigns them."""
    for i in range(amplitudes.size):
        c = rows[i]
        if not enough[c]:
            continue
        a = amplitudes[i]
        index = int(((a - edges[c, 0]) / span[c]) * n_bins)  # np.histogram's guess, then its corrections
        if index == n_bins:
            index -= 1
        if a < edges[c, index]:
            index -= 1
        elif a >= edges[c, index + 1] and index != n_bins - 1:
            index += 1
        counts[c, index] += 1


def _cutoff_from_histogram(counts: np.ndarray, edges: np.ndarray) -> float:
    """amplitude_cutoff() from one cluster's histogram counts and edges."""
    h = counts / np.array(np.diff(edges), float) / counts.sum()  # np.histogram(density=True)
    pdf = gaussian_filter1d(h, AMPLITUDE_SMOOTHING)
    bin_size = np.mean(np.diff(edges[:-1]))
    peak = int(np.argmax(pdf))
    cut = int(np.argmin(np.abs(pdf[peak:] - pdf[0]))) + peak
    return float(min(np.sum(pdf[cut:]) * bin_size, 0.5))


class QcAccumulator:
    """The QC metrics of every cluster row, accumulated over blocks of time-sorted spikes.

    :meth:`add` every block (samples, rows, amplitudes); then, when
    :attr:`needs_histograms`, :meth:`add_histogram` every block again (the
    histograms' edges need each cluster's amplitude range first); then :meth:`result`.
    """

    def __init__(self, n_clusters: int, sample_rate: float, total_samples: int, with_amplitudes: bool) -> None:
        self.k, self.rate, self.total = n_clusters, float(sample_rate), total_samples
        self.bin_samples = int(PRESENCE_BIN_S * sample_rate)
        self.n_bins = total_samples // self.bin_samples if total_samples >= self.bin_samples else 0
        self.with_amplitudes = with_amplitudes
        self.per_cluster = np.zeros(n_clusters, np.int64)
        self.violations = np.zeros(n_clusters, np.int64)
        self.hits = np.zeros((n_clusters, max(self.n_bins, 1)), np.int64)
        self.last = np.full(n_clusters, -1, np.int64)
        self.lo = np.full(n_clusters, np.inf)
        self.hi = np.full(n_clusters, -np.inf)
        self.counts: np.ndarray | None = None
        self.edges: np.ndarray | None = None
        self.enough = np.zeros(n_clusters, dtype=bool)

    def add(self, samples: np.ndarray, rows: np.ndarray, amplitudes: np.ndarray | None) -> None:
        _spike_pass(
            np.ascontiguousarray(samples, dtype=np.int64), np.ascontiguousarray(rows, dtype=np.int64),
            np.ascontiguousarray(amplitudes, dtype=np.float64) if amplitudes is not None else np.zeros(0),
            self.rate, ISI_THRESHOLD_S, self.bin_samples, self.n_bins,
            self.per_cluster, self.violations, self.hits, self.last, self.lo, self.hi,
        )  # fmt: skip

    @property
    def needs_histograms(self) -> bool:
        """Whether a cluster has enough spikes for an amplitude cutoff (and there are amplitudes)."""
        self.enough = self.per_cluster >= AMPLITUDE_BINS * AMPLITUDE_MIN_SPIKES_PER_BIN
        return self.with_amplitudes and bool(self.enough.any())

    def add_histogram(self, rows: np.ndarray, amplitudes: np.ndarray) -> None:
        if self.edges is None:
            self.edges = np.zeros((self.k, AMPLITUDE_BINS + 1))
            for c in np.flatnonzero(self.enough):
                first, last = self.lo[c], self.hi[c]
                if first == last:  # np.histogram widens an empty range by 0.5 either side
                    first, last = first - 0.5, last + 0.5
                self.edges[c] = np.linspace(first, last, AMPLITUDE_BINS + 1, endpoint=True)
            self.counts = np.zeros((self.k, AMPLITUDE_BINS), np.int64)
        _histogram_pass(
            np.ascontiguousarray(amplitudes, dtype=np.float64), np.ascontiguousarray(rows, dtype=np.int64),
            self.enough, AMPLITUDE_BINS, self.edges, self.edges[:, -1] - self.edges[:, 0], self.counts,
        )  # fmt: skip

    def result(self) -> dict[str, np.ndarray]:
        per_cluster, duration = self.per_cluster, self.total / self.rate
        # presence_ratio(): the bins with a spike, of n_bins (NaN when the recording is shorter than one bin)
        presence = (self.hits > 0).sum(axis=1) / self.n_bins if self.n_bins else np.full(self.k, np.nan)
        # isi_violations_ratio(), the same operations in the same order
        with np.errstate(invalid="ignore", divide="ignore"):
            isi = (self.violations / (2 * per_cluster * (ISI_THRESHOLD_S - MIN_ISI_S))) / (per_cluster / duration)
        isi[per_cluster == 0] = np.nan
        cutoff = np.full(self.k, np.nan)
        if self.counts is not None and self.edges is not None:
            for c in np.flatnonzero(self.enough):
                cutoff[c] = _cutoff_from_histogram(self.counts[c], self.edges[c])
        with np.errstate(invalid="ignore"):
            qc_pass = (
                (presence > schema.QC_PRESENCE_RATIO_MIN)
                & (isi < schema.QC_ISI_VIOLATIONS_MAX)
                & (cutoff < schema.QC_AMPLITUDE_CUTOFF_MAX)
            )
        return {
            schema.PRESENCE_RATIO: presence,
            schema.ISI_VIOLATIONS: isi,
            schema.AMPLITUDE_CUTOFF: cutoff,
            schema.QC_PASS: qc_pass,
        }


def qc_metrics(
    samples: np.ndarray,
    rows: np.ndarray,
    amplitudes: np.ndarray | None,
    n_clusters: int,
    sample_rate: float,
    total_samples: int,
) -> dict[str, np.ndarray]:
    """``presence_ratio``, ``isi_violations_ratio``, ``amplitude_cutoff`` and ``qc_pass`` of every cluster row.

    ``samples`` are time-sorted spike samples, ``rows`` each spike's cluster row;
    the recording is ``total_samples`` long. Spikeless rows get presence 0 and
    NaN ratios; ``amplitude_cutoff`` is NaN everywhere without ``amplitudes``.
    (:func:`read_kilosort` computes the same over blocks of the files.)

    Examples
    --------
    >>> qc = qc_metrics(np.array([0, 30, 3_000_000]), np.array([0, 0, 1]), None, 2, 30000.0, 3_600_000)
    >>> qc["presence_ratio"].tolist(), bool(qc["isi_violations_ratio"][0] > 0)
    ([0.5, 0.5], True)
    """
    qc = QcAccumulator(n_clusters, sample_rate, total_samples, amplitudes is not None)
    qc.add(samples, rows, amplitudes)
    if amplitudes is not None and qc.needs_histograms:
        qc.add_histogram(rows, amplitudes)
    return qc.result()
