"""The random draws of a synthetic session: trials, units and spikes (pure numpy).

From a :class:`~opto_cube.synth.model.SessionSpec` and one generator seeded with
``spec.seed``, in a fixed order: :func:`draw_trials` (onsets on the 30 kHz grid,
conditions shuffled per block), :func:`draw_clusters` (the
:class:`~opto_cube.synth.model.GroundTruth` and the per-cluster arrays and
templates to write), :func:`draw_spikes` (baseline Poisson spikes, thinned or
superposed inside each unit's response, light-artifact spikes, the refractory
period and spikes exactly on window edges). Later additions draw from side
streams of their own (:func:`side_rng`), so the older draws, and every byte the
writers derive from them, stay as they were. No files here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from opto_cube import schema
from opto_cube.synth.model import (
    CHANNEL_COLUMNS_X_UM,
    CHANNEL_ROW_PITCH_UM,
    SAMPLES_PER_S,
    TEMPLATE_SAMPLES,
    TEMPLATE_SPREAD_UM,
    TEMPLATE_TROUGH_SAMPLE,
    GroundTruth,
    SessionSpec,
)

__all__ = ["DrawnSession", "Trials", "draw_clusters", "draw_session", "draw_spikes", "draw_trials", "side_rng"]


@dataclass(frozen=True)
class Trials:
    """Trials in onset order (the file rows are a permutation of these)."""

    onset_sample: np.ndarray
    emitter: np.ndarray
    power_mw: np.ndarray
    duration_s: np.ndarray
    duration_samples: np.ndarray
    total_samples: int

    @property
    def onset_s(self) -> np.ndarray:
        return self.onset_sample / float(SAMPLES_PER_S)


def draw_trials(spec: SessionSpec, rng: np.random.Generator) -> Trials:
    """Onsets on the sample grid and every (emitter, power, duration) condition, shuffled per block."""
    grid = np.stack(
        np.meshgrid(
            np.asarray(spec.emitters), np.arange(len(spec.powers_mw)), np.arange(len(spec.durations_s)), indexing="ij"
        ),
        axis=-1,
    ).reshape(-1, 3)
    n_blocks = -(-spec.n_trials // len(grid))
    order = np.argsort(rng.random((n_blocks, len(grid))), axis=1).ravel()[: spec.n_trials]
    emitter, power_index, duration_index = grid[order].T
    power = np.asarray(spec.powers_mw, dtype=np.float64)[power_index]
    if spec.jitter_powers:
        power = power * (1.0 + rng.uniform(-5e-8, 5e-8, spec.n_trials))
    duration_ms = np.rint(np.asarray(spec.durations_s, dtype=np.float64) * 1000.0).astype(np.int64)[duration_index]
    iti_lo, iti_hi = (round(x * SAMPLES_PER_S) for x in spec.iti_s)
    gaps = rng.integers(iti_lo, iti_hi + 1, spec.n_trials - 1)
    onset = round(spec.lead_in_s * SAMPLES_PER_S) + np.concatenate([[0], np.cumsum(gaps)]).astype(np.int64)
    duration_samples = duration_ms * (SAMPLES_PER_S // 1000)
    total = int(onset[-1] + duration_samples.max() + round(spec.tail_s * SAMPLES_PER_S))
    return Trials(onset, emitter.astype(np.int32), power, duration_ms / 1000.0, duration_samples, total)


def _channel_positions(n_channels: int) -> np.ndarray:
    """Neuropixels 1.0-like (C, 2) channel x, y in um: staggered columns, 20 um rows, y = 0 at channel 0."""
    channel = np.arange(n_channels)
    x = np.asarray(CHANNEL_COLUMNS_X_UM)[channel % 4]
    return np.column_stack([x, CHANNEL_ROW_PITCH_UM * (channel // 2)]).astype(np.float64)


def _n_rows(fraction: float, n: int) -> int:
    return 0 if fraction <= 0 else min(n, math.ceil(fraction * n))


def draw_clusters(spec: SessionSpec, rng: np.random.Generator, session_id: str) -> tuple[GroundTruth, dict]:
    """Per-cluster truth and the per-cluster arrays and templates to write."""
    k = spec.n_clusters
    is_fs = np.zeros(k, dtype=bool)
    is_fs[rng.choice(k, round(k * spec.fs_fraction), replace=False)] = True
    channels = _channel_positions(spec.n_channels)
    surface = rng.uniform(*spec.surface_range_um)
    top_chan = int(np.argmin(np.abs(channels[:, 1] - surface)))
    if abs(channels[top_chan, 1] - surface) <= CHANNEL_ROW_PITCH_UM:
        surface = float(channels[top_chan, 1])  # the surface is found from top_chan, as in the exporter
    template_depth = surface - rng.uniform(10.0, min(spec.max_depth_from_surface_um, surface - 30.0), k)
    depth = surface - template_depth  # one surface per session: template depth + depth is constant
    median = np.where(is_fs, spec.fs_rate_median_hz, spec.rs_rate_median_hz)
    rate = np.where(
        is_fs,
        np.clip(median * rng.lognormal(0.0, spec.rate_log_sd, k), 4.0, 45.0),
        np.clip(median * rng.lognormal(0.0, spec.rate_log_sd, k), 1.0, 12.0),
    )
    activation = np.clip(
        spec.activation_gain_median * rng.lognormal(0.0, 0.3, k),
        spec.activation_gain_median / 2,
        spec.activation_gain_median * 1.5,
    )
    gain = np.where(is_fs, activation, rng.uniform(*spec.inactivation_gain_range, k))

    # quirk rows, disjoint: spikeless rows preferably RS (keeps FS units in tiny sessions)
    shuffled = rng.permutation(k)
    shuffled = shuffled[np.argsort(is_fs[shuffled], kind="stable")]
    n_spikeless = min(spec.spikeless_clusters, k)
    spikeless_rows, rest = shuffled[:n_spikeless], rng.permutation(shuffled[n_spikeless:])
    n_nan_qc = _n_rows(spec.nan_qc_fraction, rest.size)
    nan_qc_rows = rest[:n_nan_qc]
    unknown_rows = rest[n_nan_qc : n_nan_qc + _n_rows(spec.unknown_peak_channel_fraction, rest.size)]
    nan_depth_rows = np.concatenate([spikeless_rows, rest[::-1]])[: spec.nan_depth_clusters]
    spikeless = np.zeros(k, dtype=bool)
    spikeless[spikeless_rows] = True
    rate[spikeless] = 0.0

    # QC metrics: most pass; failing units get one metric out of range, sometimes exactly at the threshold
    presence = rng.uniform(0.85, 1.0, k)
    isi = np.minimum(rng.exponential(0.05, k), 0.45)
    amplitude_cutoff = rng.uniform(0.0, 0.09, k)
    failing_metric = np.where(rng.random(k) < spec.qc_fail_fraction, rng.integers(0, 3, k), -1)
    at_threshold = rng.random(k) < 0.25
    presence = np.where(
        failing_metric == 0,
        np.where(at_threshold, schema.QC_PRESENCE_RATIO_MIN, rng.uniform(0.4, schema.QC_PRESENCE_RATIO_MIN, k)),
        presence,
    )
    isi = np.where(
        failing_metric == 1,
        np.where(at_threshold, schema.QC_ISI_VIOLATIONS_MAX, rng.uniform(schema.QC_ISI_VIOLATIONS_MAX, 3.0, k)),
        isi,
    )
    amplitude_cutoff = np.where(
        failing_metric == 2,
        np.where(at_threshold, schema.QC_AMPLITUDE_CUTOFF_MAX, rng.uniform(schema.QC_AMPLITUDE_CUTOFF_MAX, 0.5, k)),
        amplitude_cutoff,
    )
    presence[spikeless] = 0.0
    presence[nan_qc_rows] = isi[nan_qc_rows] = amplitude_cutoff[nan_qc_rows] = np.nan
    qc_pass = (
        (presence > schema.QC_PRESENCE_RATIO_MIN)
        & (isi < schema.QC_ISI_VIOLATIONS_MAX)
        & (amplitude_cutoff < schema.QC_AMPLITUDE_CUTOFF_MAX)
    )

    # templates: trough then a later peak (FS narrower), Gaussian spatial footprint around (x, template depth)
    trough_to_peak_ms = np.where(is_fs, rng.uniform(0.2, 0.45, k), rng.uniform(0.5, 1.0, k))
    ttp_samples = trough_to_peak_ms * SAMPLES_PER_S / 1000.0
    t = np.arange(TEMPLATE_SAMPLES)[None, :] - TEMPLATE_TROUGH_SAMPLE
    waveform = -np.exp(-0.5 * (t / (0.3 * ttp_samples[:, None] + 1.0)) ** 2) + 0.4 * np.exp(
        -0.5 * ((t - ttp_samples[:, None]) / (0.6 * ttp_samples[:, None] + 1.5)) ** 2
    )
    unit_x = rng.uniform(0.0, 70.0, k)
    dx, dy = channels[None, :, 0] - unit_x[:, None], channels[None, :, 1] - template_depth[:, None]
    squared_distance = dx**2 + dy**2
    footprint = np.exp(-squared_distance / (2 * TEMPLATE_SPREAD_UM**2))
    templates = rng.uniform(40.0, 250.0, k)[:, None, None] * waveform[:, :, None] * footprint[:, None, :]
    peak_channel = np.argmax(footprint, axis=1).astype(np.int32)
    peak_channel[unknown_rows] = -1
    trough_to_peak_ms[unknown_rows] = np.nan
    templates[unknown_rows] = 0.0  # no waveform

    written_depth = depth.copy()
    written_depth[nan_depth_rows] = np.nan
    latency, artifact = _draw_latencies_and_artifacts(spec, is_fs, spikeless)
    gain = np.where(artifact, 0.0, gain)
    truth = GroundTruth(
        session_id,
        np.where(is_fs, "FS", "RS"),
        rate,
        depth,
        surface,
        gain,
        float(rng.uniform(*spec.length_constant_um_range)),
        spec.half_power_mw,
        spec.tip_offset_um,
        spec.refractory_s,
        spikeless,
        latency,
        artifact,
    )
    ks_label = np.where(rng.random(k) < np.where(qc_pass, 0.8, 0.4), "good", "mua")
    arrays = {
        schema.CLUSTERS_TEMPLATES: templates.astype(np.float64),
        schema.CLUSTERS_CHANNEL_POSITIONS: channels,
        schema.CLUSTERS_TEMPLATE_DEPTHS: template_depth,
        schema.CLUSTERS_DEPTHS_FROM_SURFACE: written_depth,
        schema.CLUSTERS_QC_PASS: qc_pass,
        schema.CLUSTERS_PRESENCE_RATIO: presence,
        schema.CLUSTERS_ISI_VIOLATIONS: isi,
        schema.CLUSTERS_AMPLITUDE_CUTOFF: amplitude_cutoff,
        schema.CLUSTERS_TROUGH_TO_PEAK: trough_to_peak_ms,
        schema.CLUSTERS_PEAK_CHANNEL: peak_channel,
    }
    return truth, {"arrays": arrays, "ks_label": ks_label, "top_chan": top_chan}


def side_rng(spec: SessionSpec, stream: int) -> np.random.Generator:
    """A generator of its own for the latency / artifact draws, so the older draws stay as they were."""
    return np.random.default_rng([spec.seed, stream])


def _draw_latencies_and_artifacts(spec: SessionSpec, is_fs: np.ndarray, spikeless: np.ndarray):
    """Per-cluster latency (s, on the sample grid; NaN without a response) and the artifact units."""
    rng = side_rng(spec, 1)
    k = is_fs.size
    ranges = np.array([spec.suppression_latency_ms, spec.activation_latency_ms])[is_fs.astype(int)]  # (k, 2)
    lo = np.ceil(ranges[:, 0] * SAMPLES_PER_S / 1000.0 - 1e-9).astype(np.int64)
    hi = np.floor(ranges[:, 1] * SAMPLES_PER_S / 1000.0 + 1e-9).astype(np.int64)
    latency = rng.integers(lo, np.maximum(hi, lo) + 1) / float(SAMPLES_PER_S)
    candidates = np.flatnonzero(~spikeless)
    artifact = np.zeros(k, dtype=bool)
    artifact[rng.choice(candidates, min(spec.artifact_clusters, candidates.size), replace=False)] = True
    latency[spikeless | artifact] = np.nan
    return latency, artifact


def _artifact_spikes(spec: SessionSpec, truth: GroundTruth, trials: Trials) -> tuple[np.ndarray, np.ndarray]:
    """Clusters and samples of the artifact spikes: after onset and after offset, within the artifact window."""
    rng = side_rng(spec, 2)
    units = np.flatnonzero(truth.artifact)
    window = max(1, math.floor(spec.artifact_window_ms * SAMPLES_PER_S / 1000.0 + 1e-9))  # samples [0, window)
    edges = np.concatenate([trials.onset_sample, trials.onset_sample + trials.duration_samples])  # (2 M,)
    fire = rng.random((units.size, edges.size)) < spec.artifact_probability
    cluster, edge = np.nonzero(fire)
    return units[cluster], edges[edge] + rng.integers(0, window, cluster.size)


def draw_spikes(spec: SessionSpec, rng: np.random.Generator, truth: GroundTruth, trials: Trials):
    """Spike times (float64, s) and clusters (int32), all vectorised over spikes and trials."""
    k, n_trials, total = spec.n_clusters, trials.onset_sample.size, trials.total_samples
    refractory = math.ceil(spec.refractory_s * SAMPLES_PER_S)
    # baseline: homogeneous Poisson over the whole session, on the sample grid
    cluster = np.repeat(np.arange(k, dtype=np.int64), rng.poisson(truth.baseline_rate_hz * total / SAMPLES_PER_S))
    sample = rng.integers(0, total, cluster.size, dtype=np.int64)
    multiplier = truth.rate_multiplier(np.arange(k)[:, None], trials.emitter[None, :], trials.power_mw[None, :])
    # the response runs from onset + latency to the pulse's end (none where the latency is past the pulse)
    latency = np.rint(np.nan_to_num(truth.latency_s, nan=0.0) * SAMPLES_PER_S).astype(np.int64)
    start = np.minimum(latency[:, None], trials.duration_samples[None, :])  # (cluster, trial), samples
    # inactivation: thin the spikes inside [onset + latency, onset + duration) with keep probability = multiplier
    trial = np.searchsorted(trials.onset_sample, sample, side="right") - 1
    in_pulse = np.flatnonzero((trial >= 0) & (sample < trials.onset_sample[trial] + trials.duration_samples[trial]))
    in_pulse = in_pulse[
        sample[in_pulse] >= trials.onset_sample[trial[in_pulse]] + start[cluster[in_pulse], trial[in_pulse]]
    ]
    keep = np.ones(cluster.size, dtype=bool)
    keep[in_pulse] = rng.random(in_pulse.size) < np.minimum(multiplier[cluster[in_pulse], trial[in_pulse]], 1.0)
    # activation: superpose extra Poisson spikes at rate baseline * (multiplier - 1) inside the response
    response_s = (trials.duration_samples[None, :] - start) / float(SAMPLES_PER_S)
    excess = np.clip(multiplier - 1.0, 0.0, None) * truth.baseline_rate_hz[:, None] * response_s
    extra_cluster, extra_trial = np.divmod(np.repeat(np.arange(k * n_trials), rng.poisson(excess).ravel()), n_trials)
    extra_start = start[extra_cluster, extra_trial]
    extra_sample = (
        trials.onset_sample[extra_trial]
        + extra_start
        + rng.integers(0, trials.duration_samples[extra_trial] - extra_start)
    )
    artifact_cluster, artifact_sample = _artifact_spikes(spec, truth, trials)
    extra_cluster = np.concatenate([extra_cluster, artifact_cluster])
    extra_sample = np.concatenate([extra_sample, artifact_sample])
    # refractory period: drop every spike closer than it to the previous spike of its cluster
    stride = total + 2 * refractory  # key = cluster * stride + sample sorts by cluster then time
    key = np.sort(
        np.concatenate([cluster[keep], extra_cluster]) * stride + np.concatenate([sample[keep], extra_sample])
    )
    key = key[np.diff(key, prepend=-stride) >= refractory]
    times, is_edge = key % stride / float(SAMPLES_PER_S), np.zeros(key.size, dtype=bool)
    if spec.edge_spikes:
        edge_key, edge_times = _edge_spikes(spec, rng, truth, trials, stride)
        order = np.argsort(np.concatenate([key, edge_key]), kind="stable")
        key, times = np.concatenate([key, edge_key])[order], np.concatenate([times, edge_times])[order]
        is_edge = np.concatenate([is_edge, np.ones(edge_key.size, dtype=bool)])[order]
        close = np.diff(key) < refractory  # make room for the edge spikes: drop regular neighbours too close
        drop = np.zeros(key.size, dtype=bool)
        drop[:-1] |= close & ~is_edge[:-1]
        drop[1:] |= close & ~is_edge[1:]
        key, times = key[~drop], times[~drop]
    clusters = (key // stride).astype(np.int32)
    order = np.argsort(times, kind="stable")
    times, clusters = times[order], clusters[order]
    if spec.unsorted_spikes and times.size >= 2:
        moved = np.sort(rng.choice(times.size, max(2, times.size // 100), replace=False))
        if np.all(np.diff(times[moved]) == 0):
            moved = np.array([0, times.size - 1])
        times[moved], clusters[moved] = times[moved[::-1]], clusters[moved[::-1]]  # reversing breaks order
    return times, clusters


def _edge_spikes(spec: SessionSpec, rng: np.random.Generator, truth: GroundTruth, trials: Trials, stride: int):
    """Spikes exactly at onset - 0.5, onset and onset + duration (float64 ``onset + a``) and one sample either side.

    Returns sort keys (cluster * stride + sample) and times. The values of one edge
    go to different clusters, so no cluster gets two spikes a sample apart.
    """
    spiking = rng.permutation(np.flatnonzero(~truth.spikeless))
    chosen = rng.choice(trials.onset_sample.size, min(spec.edge_trials, trials.onset_sample.size), replace=False)
    if spiking.size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    pre_start = round(schema.PRE_WINDOW_S[0] * SAMPLES_PER_S)
    offset_s = np.column_stack(
        [np.full(chosen.size, schema.PRE_WINDOW_S[0]), np.zeros(chosen.size), trials.duration_s[chosen]]
    )  # (trials, 3 edges)
    offset_samples = np.column_stack(
        [np.full(chosen.size, pre_start), np.zeros(chosen.size, dtype=np.int64), trials.duration_samples[chosen]]
    )
    edge_sample = (trials.onset_sample[chosen][:, None] + offset_samples).ravel()
    edge_value = (trials.onset_s[chosen][:, None] + offset_s).ravel()  # exactly the analysis's window edge
    sample = np.column_stack([edge_sample - 1, edge_sample, edge_sample + 1, edge_sample])
    time = np.column_stack(
        [(edge_sample - 1) / SAMPLES_PER_S, edge_sample / SAMPLES_PER_S, (edge_sample + 1) / SAMPLES_PER_S, edge_value]
    )
    wanted = np.ones(sample.shape, dtype=bool)
    wanted[1::3, 3] = False  # onset + 0.0 is the grid sample itself
    sample, time = sample[wanted], time[wanted]
    cluster = spiking[np.arange(sample.size) % spiking.size]
    return cluster * stride + sample, time


@dataclass(frozen=True)
class DrawnSession:
    """Everything one synthetic session draws, whatever layout writes it (:func:`draw_session`)."""

    rng: np.random.Generator  # the session's stream, after the draws below (the writers go on drawing from it)
    trials: Trials
    truth: GroundTruth
    clusters: dict
    spike_times: np.ndarray
    spike_rows: np.ndarray
    trial_rows: np.ndarray  # the order the trials are written in (shuffled when the spec says so)


def draw_session(spec: SessionSpec, session_id: str) -> DrawnSession:
    """Trials, units and spikes of one session, in the one order every layout draws them (the same bytes)."""
    rng = np.random.default_rng(spec.seed)
    trials = draw_trials(spec, rng)
    truth, clusters = draw_clusters(spec, rng, session_id)
    spike_times, spike_rows = draw_spikes(spec, rng, truth, trials)
    n = trials.onset_sample.size
    trial_rows = rng.permutation(n) if spec.shuffle_trials else np.arange(n)
    return DrawnSession(rng, trials, truth, clusters, spike_times, spike_rows, trial_rows)
