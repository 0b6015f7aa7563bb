"""Synthetic Neuropixels Opto sessions, written in the exact on-disk format of docs/format.md.

A session is drawn from a small generative model with a known answer: Poisson
units (regular-spiking RS and fast-spiking FS) with a refractory period, spread
in depth under the brain surface, and 14 emitters along the shank whose pulses
multiply FS rates (activation) and divide RS rates (inactivation) with a
strength that saturates with power and decays exponentially with the distance
between unit and emitter. Each unit's rate change starts its own latency after
light onset (2-4 ms by default, 2-10 ms in the "latency" and "realistic" sizes,
on the sample grid) and lasts to the end of the pulse. A few light-artifact
units (the probe's switching artifacts) fire within 0.5 ms after light onset and
after light offset on most trials, at every emitter and power, with no opto
effect of their own. All times sit on the 30 kHz sample grid. The
generator also plants the quirks real exports have (spikeless rows, NaN QC
metrics, unknown peak channels, jittered calibrated powers, stim rows out of
onset order, spikes exactly on window edges, missing optional files, a
session.json that disagrees with its arrays), each behind a knob of
:class:`SessionSpec`.

Examples
--------
>>> import tempfile, pathlib
>>> with tempfile.TemporaryDirectory() as tmp:
...     folders = make_dataset(tmp, n_sessions=2, size="tiny", seed=1)
...     truth = load_ground_truth(tmp, folders[0].name)
...     print(len(folders), truth.session_id == folders[0].name, len(truth.waveform_type))
2 True 8
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import os
import pathlib
import re
from dataclasses import dataclass

import numpy as np

from opto_cube import schema

__all__ = [
    "SIZES",
    "GroundTruth",
    "KilosortQuirks",
    "SessionSpec",
    "load_ground_truth",
    "make_dataset",
    "write_alf_twin",
    "write_kilosort_session",
    "write_session",
]

SAMPLES_PER_S = schema.SAMPLING_RATE_HZ
TEMPLATE_SAMPLES = 82
TEMPLATE_TROUGH_SAMPLE = 30
CHANNEL_ROW_PITCH_UM = 20.0  # Neuropixels 1.0-like: two channels per 20 um row, four staggered columns
CHANNEL_COLUMNS_X_UM = (43.0, 11.0, 59.0, 27.0)
TEMPLATE_SPREAD_UM = 30.0
GROUND_TRUTH_DIR = "ground_truth"
LASERS = {  # laser id -> (slope_mW, intercept_mW); "levels" in the calibration file are the nominal mW levels
    "quantifi": (0.001234, 0.000123),
    "obis_640": (0.000987, 0.000211),
}
_SESSION_ID = re.compile(r"^([A-Za-z]+)(\d+)_(\d{4}-\d{2}-\d{2})_en(\d+)_p(\d+)$")


@dataclass(frozen=True)
class SessionSpec:
    """Every knob of one synthetic session; the defaults make a "small" session.

    Trial design, biology (rates, opto effect) and quirks. Counts of quirk rows
    given as fractions are rounded up, so any fraction > 0 gives at least one row.

    Examples
    --------
    >>> spec = SessionSpec(n_clusters=10, unsorted_spikes=True)
    >>> spec.n_trials, spec.unsorted_spikes
    (300, True)
    """

    n_clusters: int = 40
    n_trials: int = 300
    n_channels: int = 384
    powers_mw: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0)  # nominal power levels
    durations_s: tuple[float, ...] = (0.01, 0.05)  # whole milliseconds
    emitters: tuple[int, ...] = tuple(range(1, 15))
    iti_s: tuple[float, float] = (0.6, 1.0)  # onset-to-onset interval range
    fs_fraction: float = 0.25
    seed: int = 0
    lead_in_s: float = 20.0  # recording before the first onset
    tail_s: float = 20.0  # recording after the last pulse
    # biology: baseline rates (lognormal, clipped), opto effect, geometry
    rs_rate_median_hz: float = 3.0
    fs_rate_median_hz: float = 12.0
    rate_log_sd: float = 0.5
    activation_gain_median: float = 12.0  # A of FS units: 1 + A p(P) exp(-|d|/lambda)
    inactivation_gain_range: tuple[float, float] = (0.85, 1.0)  # B of RS units: 1 - B p(P) exp(-|d|/lambda)
    length_constant_um_range: tuple[float, float] = (180.0, 260.0)  # lambda, one per session
    half_power_mw: float = 0.5  # p(P) = P / (P + half_power)
    refractory_s: float = 0.0015
    surface_range_um: tuple[float, float] = (1400.0, 1800.0)  # surface position on the probe axis
    max_depth_from_surface_um: float = 1550.0
    qc_fail_fraction: float = 0.12  # units with one QC metric out of range (besides NaN and spikeless rows)
    tip_offset_um: float = schema.TIP_OFFSET_UM
    # quirks
    spikeless_clusters: int = 2
    nan_depth_clusters: int = 1  # NaN depthsFromSurface (spikeless rows first)
    nan_qc_fraction: float = 0.05
    unknown_peak_channel_fraction: float = 0.05
    jitter_powers: bool = True
    shuffle_trials: bool = True  # stim.* rows not in onset order
    unsorted_spikes: bool = False
    edge_spikes: bool = True  # spikes exactly on window edges
    edge_trials: int = 4  # trials that get window-edge spikes
    omit_waveform_type: bool = False
    omit_ks_label: bool = False
    session_json_disagrees: bool = False  # n_spikes etc. in session.json off from the arrays
    session_id_disagrees: bool = False  # session.json's session_id differs from the folder name
    omit_power_range: bool = True  # session.json without power_range_mW (the common case)
    # latency and artifacts: the rate change of a unit starts its latency after onset (uniform on the sample
    # grid in the range, ms); artifact units (not spikeless) fire within artifact_window_ms after onset and
    # after offset, each with probability artifact_probability per trial, whatever the emitter and power
    # short by default (keeps the stim-window effect of 10-ms pulses); "latency" and "realistic" use 2-10 ms
    activation_latency_ms: tuple[float, float] = (2.0, 4.0)  # FS units
    suppression_latency_ms: tuple[float, float] = (2.0, 4.0)  # RS units
    artifact_clusters: int = 1
    artifact_probability: float = 0.9
    artifact_window_ms: float = 0.5

    def __post_init__(self) -> None:
        ms = np.asarray(self.durations_s, dtype=np.float64) * 1000.0
        if not np.allclose(ms, np.rint(ms), rtol=0, atol=1e-9) or np.any(ms < 1):
            raise ValueError(f"durations_s must be whole milliseconds, got {self.durations_s}")
        if not set(self.emitters) <= set(range(1, schema.N_EMITTERS + 1)):
            raise ValueError(f"emitters must lie in 1..{schema.N_EMITTERS}, got {self.emitters}")
        if self.iti_s[0] <= max(self.durations_s) or self.iti_s[0] > self.iti_s[1]:
            raise ValueError(f"iti_s {self.iti_s} must be ordered and exceed the longest pulse")
        if self.lead_in_s < 1.0 or self.n_clusters < 1 or self.n_trials < 1:
            raise ValueError("need lead_in_s >= 1 s, n_clusters >= 1 and n_trials >= 1")
        for name in ("activation_latency_ms", "suppression_latency_ms"):
            lo, hi = getattr(self, name)
            if not 0.0 <= lo <= hi:
                raise ValueError(f"{name} must be an ordered pair of latencies >= 0 ms, got {(lo, hi)}")
        if self.artifact_clusters < 0 or not 0.0 <= self.artifact_probability <= 1.0:
            raise ValueError(
                f"need artifact_clusters >= 0 and artifact_probability in [0, 1], got "
                f"{self.artifact_clusters} and {self.artifact_probability}"
            )
        if not 0.0 < self.artifact_window_ms <= 1.0:
            raise ValueError(f"artifact_window_ms must lie in (0, 1] ms, got {self.artifact_window_ms}")


SIZES: dict[str, SessionSpec] = {
    "tiny": SessionSpec(
        n_clusters=8,
        n_trials=40,
        powers_mw=(1.0, 4.0),
        emitters=(3, 8, 13),
        lead_in_s=15.0,
        tail_s=15.0,
        artifact_clusters=0,
    ),
    # 3 emitters x 3 powers x 2 durations = 18 conditions, ~33 trials each: enough for the science to show
    "small": SessionSpec(n_clusters=60, n_trials=600, powers_mw=(0.5, 2.0, 4.0), emitters=(3, 7, 11)),
    "realistic": SessionSpec(
        n_clusters=300,
        n_trials=4200,
        powers_mw=(1.0, 2.0, 4.0),
        lead_in_s=100.0,
        tail_s=100.0,
        artifact_clusters=3,
        activation_latency_ms=(2.0, 10.0),
        suppression_latency_ms=(2.0, 10.0),
    ),
    # the latency target's case: 200 ms pulses, top power (4 mW) and a lower one, 150 trials a condition,
    # more FS units than usual (more strongly driven ones near the emitters)
    "latency": SessionSpec(
        n_clusters=150,
        n_trials=900,
        fs_fraction=0.35,
        powers_mw=(1.0, 4.0),
        durations_s=(0.2,),
        emitters=(3, 7, 11),
        iti_s=(0.7, 1.0),
        artifact_clusters=3,
        activation_latency_ms=(2.0, 10.0),
        suppression_latency_ms=(2.0, 10.0),
    ),
}


@dataclass(frozen=True, eq=False)
class GroundTruth:
    """What the generator put into one session, per cluster (row k = cluster k).

    ``baseline_rate_hz`` is the rate of the Poisson process before the refractory
    period removes violating spikes (0 for spikeless rows); ``depth_from_surface_um``
    is the true depth, finite even where the file has NaN. ``gain`` is A
    (activation) for FS units and B (inactivation) for RS units; it is 0 for
    artifact units, whose only light-locked spikes are the artifact's.
    ``latency_s`` is when the unit's rate change starts after light onset (its
    activation latency if FS, suppression latency if RS; on the 30 kHz grid;
    NaN for spikeless and artifact units). ``artifact`` marks the light-artifact
    units. Both default to "none" for truths written before they existed.

    Examples
    --------
    >>> truth = GroundTruth("s", np.array(["FS", "RS"]), np.array([10.0, 4.0]), np.array([500.0, 500.0]),
    ...                     1600.0, np.array([12.0, 0.9]), 200.0, 0.5, 0.0, 0.0015, np.array([False, False]))
    >>> truth.emitter_depth_um(12)  # 1600 - (70 + 100 * 11)
    430.0
    >>> truth.rate_multiplier([0, 1], 12, 4.0).round(2)  # 70 um above both units, top power
    array([8.52, 0.44])
    """

    session_id: str
    waveform_type: np.ndarray
    baseline_rate_hz: np.ndarray
    depth_from_surface_um: np.ndarray
    surface_position_um: float
    gain: np.ndarray
    length_constant_um: float
    half_power_mw: float
    tip_offset_um: float
    refractory_s: float
    spikeless: np.ndarray
    # None (older ground-truth files) becomes no latency / no artifact unit in __post_init__
    latency_s: np.ndarray = None  # type: ignore[assignment]
    artifact: np.ndarray = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        k = self.waveform_type.size
        if self.latency_s is None:
            object.__setattr__(self, "latency_s", np.zeros(k))
        if self.artifact is None:
            object.__setattr__(self, "artifact", np.zeros(k, dtype=bool))

    def emitter_depth_um(self, emitter) -> np.ndarray | float:
        """Depth of emitter ``e`` below the brain surface: surface - (70 + 100 (e - 1) - tip_offset)."""
        return self.surface_position_um - (schema.emitter_position_from_tip_um(emitter) - self.tip_offset_um)

    def rate_multiplier(self, cluster, emitter, power_mw, *, with_refractory: bool = False) -> np.ndarray:
        """Stim-window rate / baseline rate of ``cluster`` for a pulse of ``emitter`` at ``power_mw``.

        Arguments broadcast against each other. This is the rate during the response,
        from ``latency_s`` after onset to the pulse's end; :meth:`window_multiplier`
        averages it over the whole stim window. ``with_refractory=True`` gives the
        ratio of observed rates, lowered by the refractory period's dead time
        (rate r becomes about r exp(-r tau)), which matters for strongly driven FS units.
        """
        cluster = np.asarray(cluster)
        power = np.asarray(power_mw, dtype=np.float64)
        distance = self.depth_from_surface_um[cluster] - self.emitter_depth_um(emitter)
        strength = power / (power + self.half_power_mw) * np.exp(-np.abs(distance) / self.length_constant_um)
        fs = self.waveform_type[cluster] == "FS"
        multiplier = np.where(
            fs, 1.0 + self.gain[cluster] * strength, np.clip(1.0 - self.gain[cluster] * strength, 0.0, None)
        )
        if with_refractory:
            multiplier = multiplier * np.exp(-(multiplier - 1.0) * self.baseline_rate_hz[cluster] * self.refractory_s)
        return multiplier

    def window_multiplier(self, cluster, emitter, power_mw, duration_s, *, with_refractory: bool = False):
        """Stim-window [0, duration) mean rate / baseline rate: the response covers (duration - latency).

        Examples
        --------
        >>> truth = GroundTruth("s", np.array(["FS"]), np.array([10.0]), np.array([500.0]), 1600.0,
        ...                     np.array([12.0]), 200.0, 0.5, 0.0, 0.0015, np.array([False]), np.array([0.005]))
        >>> float(truth.window_multiplier(0, 12, 4.0, 0.01).round(2))  # half of the 10-ms pulse responds
        4.76
        """
        multiplier = self.rate_multiplier(cluster, emitter, power_mw, with_refractory=with_refractory)
        duration = np.asarray(duration_s, dtype=np.float64)
        latency = np.nan_to_num(self.latency_s[np.asarray(cluster)], nan=0.0)
        covered = np.clip((duration - latency) / duration, 0.0, 1.0)
        return 1.0 + (multiplier - 1.0) * covered

    def to_json(self) -> dict:
        """A JSON-ready dict (arrays as lists); :func:`GroundTruth.from_json` inverts it."""
        return {
            f.name: (v.tolist() if isinstance(v := getattr(self, f.name), np.ndarray) else v)
            for f in dataclasses.fields(self)
        }

    @classmethod
    def from_json(cls, data: dict) -> GroundTruth:
        """Rebuild from :meth:`to_json` output."""
        arrays = {
            "waveform_type": str,
            "baseline_rate_hz": np.float64,
            "depth_from_surface_um": np.float64,
            "gain": np.float64,
            "spikeless": bool,
            "latency_s": np.float64,
            "artifact": bool,
        }
        return cls(**{k: (np.asarray(v, dtype=arrays[k]) if k in arrays else v) for k, v in data.items()})


@dataclass(frozen=True)
class _Trials:
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


def _draw_trials(spec: SessionSpec, rng: np.random.Generator) -> _Trials:
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
    return _Trials(onset, emitter.astype(np.int32), power, duration_ms / 1000.0, duration_samples, total)


def _channel_positions(n_channels: int) -> np.ndarray:
    """Neuropixels 1.0-like (C, 2) channel x, y in um: staggered columns, 20 um rows, y = 0 at channel 0."""
    channel = np.arange(n_channels)
    x = np.asarray(CHANNEL_COLUMNS_X_UM)[channel % 4]
    return np.column_stack([x, CHANNEL_ROW_PITCH_UM * (channel // 2)]).astype(np.float64)


def _n_rows(fraction: float, n: int) -> int:
    return 0 if fraction <= 0 else min(n, math.ceil(fraction * n))


def _draw_clusters(spec: SessionSpec, rng: np.random.Generator, session_id: str) -> tuple[GroundTruth, dict]:
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


def _side_rng(spec: SessionSpec, stream: int) -> np.random.Generator:
    """A generator of its own for the latency / artifact draws, so the older draws stay as they were."""
    return np.random.default_rng([spec.seed, stream])


def _draw_latencies_and_artifacts(spec: SessionSpec, is_fs: np.ndarray, spikeless: np.ndarray):
    """Per-cluster latency (s, on the sample grid; NaN without a response) and the artifact units."""
    rng = _side_rng(spec, 1)
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


def _artifact_spikes(spec: SessionSpec, truth: GroundTruth, trials: _Trials) -> tuple[np.ndarray, np.ndarray]:
    """Clusters and samples of the artifact spikes: after onset and after offset, within the artifact window."""
    rng = _side_rng(spec, 2)
    units = np.flatnonzero(truth.artifact)
    window = max(1, math.floor(spec.artifact_window_ms * SAMPLES_PER_S / 1000.0 + 1e-9))  # samples [0, window)
    edges = np.concatenate([trials.onset_sample, trials.onset_sample + trials.duration_samples])  # (2 M,)
    fire = rng.random((units.size, edges.size)) < spec.artifact_probability
    cluster, edge = np.nonzero(fire)
    return units[cluster], edges[edge] + rng.integers(0, window, cluster.size)


def _spikes(spec: SessionSpec, rng: np.random.Generator, truth: GroundTruth, trials: _Trials):
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


def _edge_spikes(spec: SessionSpec, rng: np.random.Generator, truth: GroundTruth, trials: _Trials, stride: int):
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


def _write_text(path: pathlib.Path, text: str) -> None:
    path.write_text(text, encoding="utf-8", newline="\n")


def write_session(
    session_dir: str | os.PathLike, spec: SessionSpec = SessionSpec(), *, session_id: str | None = None
) -> GroundTruth:
    """Write one synthetic session folder in the exact format of docs/format.md.

    Parameters
    ----------
    session_dir
        The folder to write (created if needed); its name is the session id, and
        subject, date, ``en`` and probe are read from it when it has the form
        ``{subject}_{date}_en{en}_p{probe}`` (e.g. ``AL0034_2024-12-05_en1_p0``).
    spec
        Every knob of the session, including its seed and quirks.
    session_id
        The id in the ground truth and session.json; the folder name by default.

    Returns
    -------
    GroundTruth
        The per-cluster truth the session was drawn from.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     folder = pathlib.Path(tmp) / "AL0034_2024-12-05_en1_p0"
    ...     truth = write_session(folder, SIZES["tiny"])
    ...     meta = json.loads((folder / schema.SESSION_JSON).read_text())
    ...     times = np.load(folder / schema.SPIKES_TIMES)
    >>> meta["subject"], meta["n_spikes"] == times.size, truth.session_id
    ('AL_0034', True, 'AL0034_2024-12-05_en1_p0')
    """
    folder = pathlib.Path(session_dir)
    folder.mkdir(parents=True, exist_ok=True)
    session_id = folder.name if session_id is None else session_id
    rng = np.random.default_rng(spec.seed)
    trials = _draw_trials(spec, rng)
    truth, clusters = _draw_clusters(spec, rng, session_id)
    spike_times, spike_clusters = _spikes(spec, rng, truth, trials)

    rows = rng.permutation(trials.onset_sample.size) if spec.shuffle_trials else np.arange(trials.onset_sample.size)
    files = {
        schema.SPIKES_TIMES: spike_times,
        schema.SPIKES_CLUSTERS: spike_clusters,
        **clusters["arrays"],
        schema.STIM_TIMES: trials.onset_s[rows],
        schema.STIM_EMISSION_SITES: trials.emitter[rows],
        schema.STIM_POWER: trials.power_mw[rows],
        schema.STIM_DURATIONS: trials.duration_s[rows],
    }
    for name, array in files.items():
        np.save(folder / name, array, allow_pickle=False)
    optional = {
        schema.CLUSTERS_WAVEFORM_TYPE: (spec.omit_waveform_type, "".join(f"{w}\n" for w in truth.waveform_type)),
        schema.CLUSTERS_KS_LABEL: (
            spec.omit_ks_label,
            "cluster_id,KSLabel\n" + "".join(f"{i},{label}\n" for i, label in enumerate(clusters["ks_label"])),
        ),
    }
    for name, (omitted, text) in optional.items():
        if omitted:
            (folder / name).unlink(missing_ok=True)  # also when rewriting a folder that had it
        else:
            _write_text(folder / name, text)

    meta = _session_meta(folder, session_id, spec, truth, trials, clusters, spike_times)
    _write_text(folder / schema.SESSION_JSON, json.dumps(meta, indent=2) + "\n")
    return truth


def _session_meta(
    folder: pathlib.Path,
    session_id: str,
    spec: SessionSpec,
    truth: GroundTruth,
    trials: _Trials,
    clusters: dict,
    spike_times: np.ndarray,
) -> dict:
    """The session.json of a synthetic session."""
    match = _SESSION_ID.match(folder.name)
    letters, number, date, en, probe = match.groups() if match else ("AL", "0", "2024-01-01", "1", "0")
    laser = sorted(LASERS)[spec.seed % len(LASERS)]
    qc_pass = clusters["arrays"][schema.CLUSTERS_QC_PASS]
    meta = {
        "session_id": session_id + ("_as_exported" if spec.session_id_disagrees else ""),
        "subject": f"{letters}_{int(number):04d}",
        "date": date,
        "en": int(en),
        "probe_index": int(probe),
        "top_chan": clusters["top_chan"],
        "calibration": laser,
        "power_level_scaling": 1.0,
        "sampling_rate": SAMPLES_PER_S,
        "n_spikes": int(spike_times.size),
        "n_clusters": spec.n_clusters,
        "n_channels": spec.n_channels,
        "n_trials": int(trials.onset_sample.size),
        "top_of_shank_um": truth.surface_position_um,
        "calibration_slope_mW": LASERS[laser][0],
        "calibration_intercept_mW": LASERS[laser][1],
        "spike_time_range_s": [float(spike_times.min()), float(spike_times.max())] if spike_times.size else [0.0, 0.0],
        "stim_time_range_s": [float(trials.onset_s[0]), float(trials.onset_s[-1])],
        "n_qc_pass": int(qc_pass.sum()),
        "n_qc_fail": int((~qc_pass).sum()),
        "qc_thresholds": {
            "presence_ratio_min": schema.QC_PRESENCE_RATIO_MIN,
            "isi_violations_ratio_max": schema.QC_ISI_VIOLATIONS_MAX,
            "amplitude_cutoff_max": schema.QC_AMPLITUDE_CUTOFF_MAX,
        },
    }
    if not spec.omit_power_range:
        meta["power_range_mW"] = [float(trials.power_mw.min()), float(trials.power_mw.max())]
    if spec.session_json_disagrees:
        for key in ("n_spikes", "n_trials", "n_qc_pass", "n_qc_fail"):
            meta[key] += 1 + meta[key] // 100
    return meta


# --------------------------------------------------------------------------
# The same sessions in Kilosort / phy's layout (opto_cube.io.kilosort)
# --------------------------------------------------------------------------
LAYOUT_ALF, LAYOUT_KILOSORT = "alf", "kilosort"
LAYOUTS = (LAYOUT_ALF, LAYOUT_KILOSORT)


@dataclass(frozen=True)
class KilosortQuirks:
    """What a Kilosort / phy folder of :func:`write_kilosort_session` holds besides the session itself.

    ``renumber_ids``: cluster ids with gaps (phy's curation leaves them);
    ``merges``: that many clusters merged in phy (a new id past every template,
    spikes from two templates); ``spike_clusters``: False writes only
    ``spike_templates.npy`` (no curation, clusters are templates);
    ``onset_samples``: pulses.csv gives ``onset_sample`` rather than ``onset_s``;
    ``times_2d``: ``spike_times.npy`` shaped ``(N, 1)`` as older Kilosort wrote it;
    ``amplitudes``: write ``amplitudes.npy``; ``top_chan``: session.json with
    ``top_chan`` (else no session.json: the surface needs ``--surface-um``);
    ``noise_clusters``: clusters phy labelled ``noise`` (kept).

    Examples
    --------
    >>> KilosortQuirks().merges
    1
    """

    renumber_ids: bool = True
    merges: int = 1
    spike_clusters: bool = True
    onset_samples: bool = False
    times_2d: bool = True
    amplitudes: bool = True
    top_chan: bool = True
    noise_clusters: int = 1


def _kilosort_ids(k: int, quirks: KilosortQuirks, spikeless: np.ndarray, rng: np.random.Generator):
    """Each row's cluster id (increasing with the row), the merged rows, and the templates' count."""
    merged = np.zeros(k, dtype=bool)
    if quirks.spike_clusters and quirks.merges > 0:
        tail = np.arange(max(0, k - quirks.merges), k)  # merges get new ids past every template: the last rows
        merged[tail[~spikeless[tail]]] = True
    n_plain = k - int(np.count_nonzero(merged)) if quirks.spike_clusters else k
    if quirks.renumber_ids:
        plain = np.sort(rng.choice(k + max(2, k // 4), n_plain, replace=False)) if n_plain else np.zeros(0, np.int64)
    else:
        plain = np.arange(n_plain)
    n_templates = int(plain.max()) + 1 if plain.size else 0
    n_sources = 2 * int(np.count_nonzero(merged))  # the two templates a merged cluster's spikes come from
    ids = np.empty(k, dtype=np.int64)
    not_tail = np.arange(k) < n_plain
    ids[not_tail] = plain
    ids[~not_tail] = n_templates + n_sources + np.arange(k - n_plain)  # new ids, past every template
    return ids, merged, n_templates, n_sources


def write_kilosort_session(
    session_dir: str | os.PathLike,
    spec: SessionSpec = SessionSpec(),
    *,
    session_id: str | None = None,
    quirks: KilosortQuirks = KilosortQuirks(),
    alf_twin: str | os.PathLike | None = None,
) -> GroundTruth:
    """Write one synthetic session as a Kilosort / phy output folder plus ``pulses.csv``.

    The same draws as :func:`write_session` (the same ground truth, spikes and
    pulses), on the sample grid: ``spike_times.npy`` in samples at
    ``sample_rate = 30000.0``; clusters renumbered, merged, labelled as
    ``quirks`` says (row k of the ground truth is the k-th smallest cluster id).

    Parameters
    ----------
    session_dir
        The folder to write (created if needed); its name is the session id.
    spec
        The session's knobs, as for :func:`write_session`.
    session_id
        The id in the ground truth and session.json; the folder name by default.
    quirks
        The Kilosort / phy quirks (:class:`KilosortQuirks`).
    alf_twin
        Also write this ALF session folder holding the same recording as the
        Kilosort reader sees it (spike times ``samples / 30000.0``, its cluster
        values), so that both convert to the same cube.

    Returns
    -------
    GroundTruth
        The per-cluster truth the session was drawn from.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     folder = pathlib.Path(tmp) / "AL0034_2024-12-05_en1_p0"
    ...     truth = write_kilosort_session(folder, SIZES["tiny"])
    ...     names = sorted(p.name for p in folder.iterdir())
    >>> "params.py" in names and "pulses.csv" in names and "spike_times.npy" in names
    True
    """
    folder = pathlib.Path(session_dir)
    folder.mkdir(parents=True, exist_ok=True)
    session_id = folder.name if session_id is None else session_id
    rng = np.random.default_rng(spec.seed)
    trials = _draw_trials(spec, rng)
    truth, clusters = _draw_clusters(spec, rng, session_id)
    spike_times, spike_rows = _spikes(spec, rng, truth, trials)
    rows = rng.permutation(trials.onset_sample.size) if spec.shuffle_trials else np.arange(trials.onset_sample.size)
    side = _side_rng(spec, 3)  # the Kilosort-only draws, apart from the truth's
    k = spec.n_clusters
    samples = np.rint(spike_times * SAMPLES_PER_S).astype(np.int64)
    ids, merged, n_templates, n_sources = _kilosort_ids(k, quirks, truth.spikeless, side)

    # templates: row k's waveform under its id; a merged cluster's under its two source templates (one scaled)
    arrays = clusters["arrays"]
    row_templates = arrays[schema.CLUSTERS_TEMPLATES]
    templates = np.zeros((n_templates + n_sources, *row_templates.shape[1:]), dtype=np.float32)
    plain_rows = np.flatnonzero(~merged) if quirks.spike_clusters else np.arange(k)
    templates[ids[plain_rows]] = row_templates[plain_rows]
    spike_templates = ids[spike_rows]
    for j, r in enumerate(np.flatnonzero(merged)):
        a, b = n_templates + 2 * j, n_templates + 2 * j + 1
        templates[a], templates[b] = row_templates[r], 0.8 * row_templates[r]  # scaling keeps depth, channel, width
        mine = np.flatnonzero(spike_rows == r)
        spike_templates[mine] = np.where(side.random(mine.size) < 0.7, a, b)
    spike_clusters = ids[spike_rows]

    n_spikes = samples.size
    shape = (n_spikes, 1) if quirks.times_2d else (n_spikes,)
    files: dict[str, np.ndarray] = {
        "spike_times.npy": samples.reshape(shape),
        "spike_templates.npy": spike_templates.astype(np.uint32),
        "templates.npy": templates,
        "channel_positions.npy": arrays[schema.CLUSTERS_CHANNEL_POSITIONS],
        "channel_map.npy": np.arange(spec.n_channels, dtype=np.int32),
    }
    if quirks.spike_clusters:
        files["spike_clusters.npy"] = spike_clusters.astype(np.int32)
    if quirks.amplitudes:  # template scalings: a Gaussian per cluster, cut at a detection threshold
        mean = side.uniform(12.0, 30.0, k)[spike_rows]
        files["amplitudes.npy"] = np.maximum(side.normal(mean, 0.25 * mean), 8.0).astype(np.float32)
    for name in ("spike_clusters.npy", "amplitudes.npy"):
        (folder / name).unlink(missing_ok=True)
    for name, array in files.items():
        np.save(folder / name, array, allow_pickle=False)
    _write_text(
        folder / "params.py",
        "dat_path = 'continuous.dat'\nn_channels_dat = 385\ndtype = 'int16'\noffset = 0\n"
        f"sample_rate = {float(SAMPLES_PER_S)!r}\nhp_filtered = True\n",
    )

    # cluster tables: Kilosort's labels for its own clusters; phy's groups (noise included) for every cluster
    ks_label = clusters["ks_label"]
    group = ks_label.astype(object).copy()
    noise = side.choice(k, min(quirks.noise_clusters, k), replace=False)
    group[noise] = "noise"
    ks_rows = plain_rows
    _write_text(
        folder / "cluster_KSLabel.tsv",
        "cluster_id\tKSLabel\n" + "".join(f"{ids[r]}\t{ks_label[r]}\n" for r in ks_rows),
    )
    if quirks.spike_clusters:
        _write_text(
            folder / "cluster_group.tsv", "cluster_id\tgroup\n" + "".join(f"{ids[r]}\t{group[r]}\n" for r in range(k))
        )
        per_row = np.bincount(spike_rows, minlength=k)
        _write_text(
            folder / "cluster_info.tsv",
            "cluster_id\tKSLabel\tgroup\tn_spikes\n"
            + "".join(
                f"{ids[r]}\t{ks_label[r] if not merged[r] else ''}\t{group[r]}\t{per_row[r]}\n" for r in range(k)
            ),
        )
    else:
        for name in ("cluster_group.tsv", "cluster_info.tsv"):
            (folder / name).unlink(missing_ok=True)

    # the pulses, in the stim files' row order
    onset_sample = trials.onset_sample[rows]
    header = ("onset_sample" if quirks.onset_samples else "onset_s") + ",duration_s,emitter,power_mw,wavelength_nm\n"
    lines = []
    for i in range(rows.size):
        r = rows[i]
        onset = str(int(onset_sample[i])) if quirks.onset_samples else repr(float(trials.onset_s[r]))
        lines.append(
            f"{onset},{float(trials.duration_s[r])!r},{int(trials.emitter[r])},{float(trials.power_mw[r])!r},638\n"
        )
    _write_text(folder / "pulses.csv", header + "".join(lines))

    meta = _session_meta(folder, session_id, spec, truth, trials, clusters, samples / float(SAMPLES_PER_S))
    for key in ("n_qc_pass", "n_qc_fail", "top_of_shank_um"):  # computed by the reader, not known here
        meta.pop(key)
    if quirks.top_chan:
        _write_text(folder / schema.SESSION_JSON, json.dumps(meta, indent=2) + "\n")
    else:
        (folder / schema.SESSION_JSON).unlink(missing_ok=True)
    if alf_twin is not None:
        write_alf_twin(folder, alf_twin, templates_by_row=row_templates)
    return truth


def write_alf_twin(
    kilosort_dir: str | os.PathLike, alf_dir: str | os.PathLike, *, templates_by_row: np.ndarray | None = None
) -> pathlib.Path:
    """Write the ALF session folder holding what :func:`opto_cube.io.kilosort.read_kilosort` reads from a folder.

    Spike times ``samples / sample_rate``, spike clusters the rows of the
    sorted cluster ids, every cluster array as the reader derives it, the
    pulses in their row order, and session.json: both folders convert to the
    same cube (the cluster coordinate aside: ALF ids are rows).

    Examples
    --------
    >>> import tempfile, warnings
    >>> with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
    ...     warnings.simplefilter("ignore")
    ...     _ = write_kilosort_session(pathlib.Path(tmp) / "ks" / "s1", SIZES["tiny"])
    ...     twin = write_alf_twin(pathlib.Path(tmp) / "ks" / "s1", pathlib.Path(tmp) / "alf" / "s1")
    ...     (twin / schema.SPIKES_TIMES).is_file()
    True
    """
    from opto_cube.io import kilosort

    session = kilosort.read_kilosort(kilosort_dir)
    folder = pathlib.Path(alf_dir)
    folder.mkdir(parents=True, exist_ok=True)
    times, ids = (
        (np.concatenate(part) for part in zip(*session.spikes.blocks(), strict=True))
        if session.n_spikes
        else (
            np.zeros(0),
            np.zeros(0, np.int64),
        )
    )
    c = session.clusters
    k = session.n_clusters
    n_channels = session.n_channels
    channels = np.load(pathlib.Path(kilosort_dir) / "channel_positions.npy", allow_pickle=False)
    if templates_by_row is None:
        templates_by_row = np.zeros((k, 1, n_channels))
    files = {
        schema.SPIKES_TIMES: times.astype(np.float64),
        schema.SPIKES_CLUSTERS: ids.astype(np.int32),
        schema.CLUSTERS_TEMPLATES: np.asarray(templates_by_row, dtype=np.float64),
        schema.CLUSTERS_CHANNEL_POSITIONS: channels.astype(np.float64),
        **{name: c[coord] for name, coord in schema.CLUSTER_FILES.items()},
        schema.STIM_TIMES: session.stim[schema.ONSET],
        schema.STIM_EMISSION_SITES: session.stim[schema.EMITTER].astype(np.int32),
        schema.STIM_POWER: session.stim[schema.POWER],
        schema.STIM_DURATIONS: session.stim[schema.DURATION],
    }
    for name, array in files.items():
        np.save(folder / name, array, allow_pickle=False)
    _write_text(folder / schema.CLUSTERS_WAVEFORM_TYPE, "".join(f"{w}\n" for w in c[schema.WAVEFORM_TYPE]))
    _write_text(
        folder / schema.CLUSTERS_KS_LABEL,
        "cluster_id,KSLabel\n" + "".join(f"{i},{label}\n" for i, label in enumerate(c[schema.KS_LABEL])),
    )
    meta = {key: value for key, value in session.session_json.items()}
    for key in ("n_spikes", "n_clusters", "n_trials", "n_channels", "n_qc_pass", "n_qc_fail"):
        meta[key] = session.attrs[key]
    _write_text(folder / schema.SESSION_JSON, json.dumps(meta, indent=2) + "\n")
    return folder


def _size(size: str | SessionSpec) -> SessionSpec:
    if isinstance(size, SessionSpec):
        return size
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; choose one of {sorted(SIZES)} or pass a SessionSpec")
    return SIZES[size]


def make_dataset(
    root: str | os.PathLike,
    n_sessions: int = 3,
    size: str | SessionSpec = "small",
    seed: int = 0,
    *,
    write_mat: bool | None = None,
    layout: str = LAYOUT_ALF,
    quirks: KilosortQuirks = KilosortQuirks(),
) -> list[pathlib.Path]:
    """Write a synthetic data root: laser calibration, session folders and their ground truth.

    Parameters
    ----------
    root
        The data root (created if needed). Gets ``laser_calibration.json``, for
        some roots ``laser_calibration.mat``, ``sessions/<id>/`` and
        ``ground_truth/<id>.json`` (outside the session folders).
    n_sessions
        How many sessions, with varied subjects, dates, ``en`` and probes.
    size
        A key of :data:`SIZES` or a :class:`SessionSpec`; each session gets its own seed.
    seed
        Seed of the whole dataset.
    write_mat
        Write ``laser_calibration.mat``; by default only for even seeds.
    layout
        ``"alf"`` (docs/format.md) or ``"kilosort"``: the same sessions as Kilosort / phy folders plus
        ``pulses.csv`` (:func:`write_kilosort_session`, with ``quirks``).
    quirks
        The Kilosort layout's quirks (:class:`KilosortQuirks`).

    Returns
    -------
    list of pathlib.Path
        The session folders, in writing order.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     folders = make_dataset(tmp, n_sessions=2, size="tiny", seed=0)
    ...     names = sorted(p.name for p in pathlib.Path(tmp).iterdir())
    >>> names
    ['ground_truth', 'laser_calibration.json', 'laser_calibration.mat', 'sessions']
    >>> all(_SESSION_ID.match(f.name) for f in folders)
    True
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; choose one of {LAYOUTS}")
    root = pathlib.Path(root)
    base = _size(size)
    rng = np.random.default_rng(seed)
    (root / schema.SESSIONS_DIR).mkdir(parents=True, exist_ok=True)
    (root / GROUND_TRUTH_DIR).mkdir(parents=True, exist_ok=True)
    powers = sorted(set(base.powers_mw))
    calibration = {
        laser: {"slope_mW": slope, "intercept_mW": intercept, "levels": powers}
        for laser, (slope, intercept) in LASERS.items()
    }
    _write_text(root / schema.LASER_CALIBRATION_JSON, json.dumps(calibration, indent=2) + "\n")
    if write_mat if write_mat is not None else seed % 2 == 0:
        from scipy.io import savemat

        savemat(
            root / schema.LASER_CALIBRATION_MAT,
            {
                laser: {k: np.asarray(v, dtype=np.float64) for k, v in entry.items()}
                for laser, entry in calibration.items()
            },
        )
    n_subjects = max(1, (n_sessions + 1) // 2)  # two sessions a mouse; ids AL0030.. (a wider pool past 30 mice)
    subjects = rng.choice(np.arange(30, 30 + max(30, n_subjects)), size=n_subjects, replace=False)
    first_day = datetime.date(2024, 10, 1) + datetime.timedelta(days=int(rng.integers(0, 60)))
    folders = []
    for index in range(n_sessions):
        date = first_day + datetime.timedelta(days=3 * index + int(rng.integers(0, 3)))
        subject, probe = subjects[index % subjects.size], int(rng.integers(0, 2))
        name = f"AL{subject:04d}_{date.isoformat()}_en{1 + index % 3}_p{probe}"
        spec = dataclasses.replace(base, seed=int(rng.integers(0, 2**31)))
        folder = root / schema.SESSIONS_DIR / name
        if layout == LAYOUT_KILOSORT:
            truth = write_kilosort_session(folder, spec, quirks=quirks)
        else:
            truth = write_session(folder, spec)
        _write_text(root / GROUND_TRUTH_DIR / f"{name}.json", json.dumps(truth.to_json()) + "\n")
        folders.append(folder)
    return folders


def load_ground_truth(root: str | os.PathLike, session_id: str) -> GroundTruth:
    """Read ``root/ground_truth/<session_id>.json`` written by :func:`make_dataset`.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     folder = make_dataset(tmp, n_sessions=1, size="tiny")[0]
    ...     truth = load_ground_truth(tmp, folder.name)
    >>> truth.surface_position_um > 0, truth.baseline_rate_hz.shape
    (True, (8,))
    """
    path = pathlib.Path(root) / GROUND_TRUTH_DIR / f"{session_id}.json"
    return GroundTruth.from_json(json.loads(path.read_text(encoding="utf-8")))
