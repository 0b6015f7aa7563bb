"""The generative model of a synthetic session: its knobs and the answer it plants.

:class:`SessionSpec` holds every knob of one session (trial design, biology,
quirks), :data:`SIZES` the named presets, and :class:`GroundTruth` what the
generator put into a session, per cluster, with the model's closed-form rate
multipliers (:meth:`GroundTruth.rate_multiplier`, :meth:`GroundTruth.window_multiplier`)
that tests compare the analyses against. No draws and no files here: the
random draws are :mod:`opto_cube.synth.simulate`'s, the files
:mod:`opto_cube.synth.alf`'s and :mod:`opto_cube.synth.kilosort`'s.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from opto_cube import schema

__all__ = [
    "CHANNEL_COLUMNS_X_UM",
    "CHANNEL_ROW_PITCH_UM",
    "SAMPLES_PER_S",
    "SIZES",
    "TEMPLATE_SAMPLES",
    "TEMPLATE_SPREAD_UM",
    "TEMPLATE_TROUGH_SAMPLE",
    "GroundTruth",
    "SessionSpec",
]

SAMPLES_PER_S = schema.SAMPLING_RATE_HZ
TEMPLATE_SAMPLES = 82
TEMPLATE_TROUGH_SAMPLE = 30
CHANNEL_ROW_PITCH_UM = 20.0  # Neuropixels 1.0-like: two channels per 20 um row, four staggered columns
CHANNEL_COLUMNS_X_UM = (43.0, 11.0, 59.0, 27.0)
TEMPLATE_SPREAD_UM = 30.0


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
