"""The names and constants that several modules share, in one place.

The cube's dimensions, variables, coordinates and attributes; the ALF file
names of the input; the published analysis's windows and thresholds; the
Neuropixels Opto emitter geometry; the columns of the responses table. A
name that several modules use is defined here and imported everywhere else,
so it changes in one place only; a constant that one module alone uses (a
fit's tolerance, a figure's resolution) lives in that module.

Examples
--------
>>> from opto_cube import schema
>>> schema.emitter_position_from_tip_um(14)
1370.0
>>> schema.PRE_WINDOW_S
(-0.5, 0.0)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

# --------------------------------------------------------------------------
# Dimensions
# --------------------------------------------------------------------------
CLUSTER = "cluster"
TRIAL = "trial"
TIME = "time"
CONDITION = "condition"
WINDOW = "window"  # window_counts: the analysis windows, "pre" and "stim"

# --------------------------------------------------------------------------
# The cube's variables (docs/contract.md is the contract for these names)
# --------------------------------------------------------------------------
SPIKE_COUNTS = "spike_counts"
WINDOW_COUNTS = "window_counts"  # (cluster, trial, window): spikes in each trial's pre and stim window
WINDOW_PRE, WINDOW_STIM = "pre", "stim"
WINDOWS = (WINDOW_PRE, WINDOW_STIM)  # the window coordinate, in this order

# per cluster
DEPTH_FROM_SURFACE = "depth_from_surface_um"
TEMPLATE_DEPTH = "template_depth_um"
QC_PASS = "qc_pass"
WAVEFORM_TYPE = "waveform_type"
KS_LABEL = "ks_label"
PEAK_CHANNEL = "peak_channel"
TROUGH_TO_PEAK = "trough_to_peak_ms"
PRESENCE_RATIO = "presence_ratio"
ISI_VIOLATIONS = "isi_violations_ratio"
AMPLITUDE_CUTOFF = "amplitude_cutoff"

# per trial
ONSET = "onset_s"
EMITTER = "emitter"
POWER = "power_mw"
DURATION = "duration_s"
EMITTER_DEPTH = "emitter_depth_um"
STIM_INDEX = "stim_index"

# derived (responses and maps)
SESSION_ID = "session_id"
DISTANCE = "distance_um"

# --- responses (opto_cube/store/catalog.py) -------------
N_TRIALS = "n_trials"
PRE_RATE = "pre_rate_hz"
STIM_RATE = "stim_rate_hz"
PCT_CHANGE = "pct_change"
P_VALUE = "p_value"
ACTIVATED = "activated"
INACTIVATED = "inactivated"
SIGNIFICANT = "significant"
BY_EMITTER, BY_POWER, BY_DURATION = "emitter", "power", "duration"  # what a condition may be split by
CONDITION_KEYS = (BY_EMITTER, BY_POWER, BY_DURATION)
MODE_PER_CONDITION, MODE_PUBLISHED = "per_condition", "published"
RESPONSE_MODES = (MODE_PER_CONDITION, MODE_PUBLISHED)
ALL_EMITTERS = 0  # the emitter id of a condition that pools every emitter (ids are 1..14)
# the long table's leading columns, in order (docs/contract.md, Responses)
RESPONSE_COLUMNS = (
    SESSION_ID,
    CLUSTER,
    EMITTER,
    POWER,
    DURATION,
    N_TRIALS,
    PRE_RATE,
    STIM_RATE,
    PCT_CHANGE,
    P_VALUE,
    ACTIVATED,
    INACTIVATED,
    SIGNIFICANT,
    DISTANCE,
    DEPTH_FROM_SURFACE,
    WAVEFORM_TYPE,
    QC_PASS,
)
# --- end responses ----------------------------------------------------------

WAVEFORM_TYPES = ("RS", "FS")
UNKNOWN_LABEL = ""


@dataclass(frozen=True)
class VariableSpec:
    """How one variable of the cube is named, shaped and described."""

    name: str
    dims: tuple[str, ...]
    long_name: str
    units: str
    dtype: str  # numpy kind the cube stores ("uint", "float64", "int32", "bool", "str", ...)

    @property
    def attrs(self) -> dict[str, str]:
        return {"long_name": self.long_name, "units": self.units}


_VARIABLES = [
    VariableSpec(SPIKE_COUNTS, (CLUSTER, TRIAL, TIME), "spikes of the cluster in the time bin", "count", "uint"),
    VariableSpec(
        WINDOW_COUNTS,
        (CLUSTER, TRIAL, WINDOW),
        "spikes of the cluster in the trial's pre / stim window",
        "count",
        "uint",
    ),
    VariableSpec(WINDOW, (WINDOW,), "analysis window: pre [-0.5, 0) s or stim [0, duration) s", "1", "str"),
    VariableSpec(CLUSTER, (CLUSTER,), "cluster id (ALF row index)", "1", "int64"),
    VariableSpec(DEPTH_FROM_SURFACE, (CLUSTER,), "depth below the brain surface", "um", "float64"),
    VariableSpec(TEMPLATE_DEPTH, (CLUSTER,), "template depth, raw probe coordinates", "um", "float64"),
    VariableSpec(QC_PASS, (CLUSTER,), "passes quality control", "1", "bool"),
    VariableSpec(WAVEFORM_TYPE, (CLUSTER,), "waveform type (RS, FS, or empty when unknown)", "1", "str"),
    VariableSpec(KS_LABEL, (CLUSTER,), "Kilosort label (empty when unknown)", "1", "str"),
    VariableSpec(PEAK_CHANNEL, (CLUSTER,), "peak channel index (-1 when unknown)", "1", "int32"),
    VariableSpec(TROUGH_TO_PEAK, (CLUSTER,), "spike width, trough to peak", "ms", "float64"),
    VariableSpec(PRESENCE_RATIO, (CLUSTER,), "presence ratio", "1", "float64"),
    VariableSpec(ISI_VIOLATIONS, (CLUSTER,), "ISI violations ratio", "1", "float64"),
    VariableSpec(AMPLITUDE_CUTOFF, (CLUSTER,), "amplitude cutoff", "1", "float64"),
    VariableSpec(TRIAL, (TRIAL,), "trial index, in onset order", "1", "int64"),
    VariableSpec(STIM_INDEX, (TRIAL,), "row of the trial in the stim.* files", "1", "int64"),
    VariableSpec(ONSET, (TRIAL,), "stimulus onset, session clock", "s", "float64"),
    VariableSpec(EMITTER, (TRIAL,), "emitter id", "1", "int8"),
    VariableSpec(POWER, (TRIAL,), "calibrated power at the probe tip", "mW", "float64"),
    VariableSpec(DURATION, (TRIAL,), "pulse duration", "s", "float64"),
    VariableSpec(EMITTER_DEPTH, (TRIAL,), "depth of the emitter below the brain surface", "um", "float64"),
    VariableSpec(TIME, (TIME,), "bin centre relative to stimulus onset", "s", "float64"),
]
VARIABLES: dict[str, VariableSpec] = {v.name: v for v in _VARIABLES}
CLUSTER_COORDS = tuple(v.name for v in _VARIABLES if v.dims == (CLUSTER,) and v.name != CLUSTER)
TRIAL_COORDS = tuple(v.name for v in _VARIABLES if v.dims == (TRIAL,) and v.name != TRIAL)

# --------------------------------------------------------------------------
# Attributes of a store
# --------------------------------------------------------------------------
ATTR_SESSION_ID = "session_id"
ATTR_BIN_WIDTH = "bin_width_s"
ATTR_WINDOW = "window_s"
ATTR_PRE_WINDOW = "pre_window_s"
ATTR_TIP_OFFSET = "tip_offset_um"
ATTR_EMITTER_POSITIONS = "emitter_positions_from_tip_um"
ATTR_SURFACE = "surface_position_um"
ATTR_VERSION = "opto_cube_version"
ATTR_FORMAT_VERSION = "opto_cube_format_version"
ATTR_SHA256 = "source_sha256"
ATTR_POWER_RANGE = "power_range_mW"
ATTR_LASER_CALIBRATION = "laser_calibration"
ATTR_COMPLETE = "opto_cube_complete"
ATTR_SESSION_JSON = "session_json"  # every session.json field, as read, nested (cannot clobber the store's own)
SESSION_JSON_PREFIX = "session_json_"  # a session.json value the arrays overrule is kept as session_json_<key>

# 2: window_counts in every store, a CRC32C checksum on every chunk, every chunk written, session.json nested
FORMAT_VERSION = 2

# --------------------------------------------------------------------------
# The published analysis (docs/format.md, "The analysis the data was published for")
# --------------------------------------------------------------------------
PRE_WINDOW_S: tuple[float, float] = (-0.5, 0.0)
ACTIVATED_MIN_PCT = 200.0
INACTIVATED_MAX_PCT = -50.0
INACTIVATED_MIN_PRE_HZ = 2.0
SIGNIFICANCE_P = 0.005
POWER_RTOL = 1e-6
PARITY_EPSILON = 1e-8  # the published analysis notebook's (stim - pre) / (pre + 1e-8)

QC_PRESENCE_RATIO_MIN = 0.8
QC_ISI_VIOLATIONS_MAX = 0.5
QC_AMPLITUDE_CUTOFF_MAX = 0.1

# --------------------------------------------------------------------------
# Geometry of the Neuropixels Opto shank
# --------------------------------------------------------------------------
N_EMITTERS = 14
EMITTER_FIRST_FROM_TIP_UM = 70.0
EMITTER_SPACING_UM = 100.0
TIP_OFFSET_UM = 0.0  # where the channel axis's zero lies above the tip (not in the files)
SAMPLING_RATE_HZ = 30_000


def emitter_position_from_tip_um(emitter: Any) -> Any:
    """Distance of emitter ``e`` (1..14) from the probe tip, in um: ``70 + 100 (e - 1)``.

    Examples
    --------
    >>> emitter_position_from_tip_um(1)
    70.0
    >>> emitter_position_from_tip_um(np.array([1, 2, 14]))
    array([  70.,  170., 1370.])
    """
    e = np.asarray(emitter, dtype=np.float64)
    out = EMITTER_FIRST_FROM_TIP_UM + EMITTER_SPACING_UM * (e - 1)
    return float(out) if out.ndim == 0 else out


EMITTER_POSITIONS_FROM_TIP_UM: tuple[float, ...] = tuple(
    emitter_position_from_tip_um(e) for e in range(1, N_EMITTERS + 1)
)

# --------------------------------------------------------------------------
# Binning and storage defaults
# --------------------------------------------------------------------------
DEFAULT_BIN_MS = 1.0
DEFAULT_WINDOW_END_S = 1.0  # the default window is [-0.5, max(1.0, longest pulse + 0.5))
CHUNK_CLUSTERS = 64
CHUNK_TRIALS = 256
TIME_RESOLUTION_US = 1  # bin widths and window bounds are whole microseconds

# --- conversion (binning.py, store.write_cube, convert.py) ------------------
# --- end conversion ---------------------------------------------------------

# --------------------------------------------------------------------------
# The ALF input (docs/format.md)
# --------------------------------------------------------------------------
SESSION_JSON = "session.json"
SPIKES_TIMES = "spikes.times.npy"
SPIKES_CLUSTERS = "spikes.clusters.npy"
CLUSTERS_TEMPLATES = "clusters.templates.npy"
CLUSTERS_CHANNEL_POSITIONS = "clusters.channelPositions.npy"
CLUSTERS_TEMPLATE_DEPTHS = "clusters.templateDepths.npy"
CLUSTERS_DEPTHS_FROM_SURFACE = "clusters.depthsFromSurface.npy"
CLUSTERS_QC_PASS = "clusters.qcPass.npy"
CLUSTERS_PRESENCE_RATIO = "clusters.presenceRatio.npy"
CLUSTERS_ISI_VIOLATIONS = "clusters.isiViolationsRatio.npy"
CLUSTERS_AMPLITUDE_CUTOFF = "clusters.amplitudeCutoff.npy"
CLUSTERS_TROUGH_TO_PEAK = "clusters.troughToPeak.npy"
CLUSTERS_PEAK_CHANNEL = "clusters.peakChannel.npy"
CLUSTERS_WAVEFORM_TYPE = "clusters.waveformType.txt"
CLUSTERS_KS_LABEL = "clusters.KSLabel.csv"
STIM_TIMES = "stim.times.npy"
STIM_EMISSION_SITES = "stim.emissionSites.npy"
STIM_POWER = "stim.powerMW.npy"
STIM_DURATIONS = "stim.durations.npy"
LASER_CALIBRATION_JSON = "laser_calibration.json"
LASER_CALIBRATION_MAT = "laser_calibration.mat"
SESSIONS_DIR = "sessions"

# per-cluster arrays of shape (K,) and the cube coordinate each one becomes
CLUSTER_FILES: dict[str, str] = {
    CLUSTERS_TEMPLATE_DEPTHS: TEMPLATE_DEPTH,
    CLUSTERS_DEPTHS_FROM_SURFACE: DEPTH_FROM_SURFACE,
    CLUSTERS_QC_PASS: QC_PASS,
    CLUSTERS_PRESENCE_RATIO: PRESENCE_RATIO,
    CLUSTERS_ISI_VIOLATIONS: ISI_VIOLATIONS,
    CLUSTERS_AMPLITUDE_CUTOFF: AMPLITUDE_CUTOFF,
    CLUSTERS_TROUGH_TO_PEAK: TROUGH_TO_PEAK,
    CLUSTERS_PEAK_CHANNEL: PEAK_CHANNEL,
}
STIM_FILES: dict[str, str] = {
    STIM_TIMES: ONSET,
    STIM_EMISSION_SITES: EMITTER,
    STIM_POWER: POWER,
    STIM_DURATIONS: DURATION,
}
REQUIRED_FILES = (
    SESSION_JSON,
    SPIKES_TIMES,
    SPIKES_CLUSTERS,
    CLUSTERS_TEMPLATES,
    CLUSTERS_CHANNEL_POSITIONS,
    *CLUSTER_FILES,
    *STIM_FILES,
)
OPTIONAL_FILES = (CLUSTERS_WAVEFORM_TYPE, CLUSTERS_KS_LABEL)

# session.json summary counts and how to count them from the arrays
SESSION_JSON_COUNTS = ("n_spikes", "n_clusters", "n_trials", "n_channels", "n_qc_pass", "n_qc_fail")


def power_levels(power_mw: Any, rtol: float = POWER_RTOL) -> tuple[np.ndarray, np.ndarray]:
    """Group calibrated powers into levels: powers equal within a relative ``rtol`` are one level.

    Sorted powers are split wherever a step exceeds ``rtol`` times the
    larger of the two; a level's power is the mean of its members.

    Returns
    -------
    level_index : ndarray of int64
        The level of each power, 0 for the lowest.
    level_power_mw : ndarray of float64
        Each level's mean power.

    Examples
    --------
    >>> index, levels = power_levels([1.0, 2.0000001, 1.0000000001, 2.0])
    >>> index.tolist(), levels.round(6).tolist()
    ([0, 1, 0, 1], [1.0, 2.0])
    """
    p = np.asarray(power_mw, dtype=np.float64).ravel()
    if p.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float64)
    order = np.argsort(p, kind="stable")
    s = p[order]
    new_level = np.empty(s.size, dtype=bool)
    new_level[0] = True
    new_level[1:] = (s[1:] - s[:-1]) > rtol * np.maximum(np.abs(s[1:]), np.abs(s[:-1]))
    sorted_index = np.cumsum(new_level) - 1
    index = np.empty(p.size, dtype=np.int64)
    index[order] = sorted_index
    counts = np.bincount(sorted_index)
    levels = np.bincount(sorted_index, weights=s) / counts
    return index, levels


# --------------------------------------------------------------------------
# Maps (maps.py, plot.py): the names of what they return
# --------------------------------------------------------------------------
EFFECTS = (ACTIVATED, INACTIVATED)  # the table's columns are named in the responses block above

MAP_EFFECT = "effect"  # dimension: activated / inactivated
MAP_FRACTION_ACTIVATED = "fraction_activated"
MAP_FRACTION_INACTIVATED = "fraction_inactivated"
MAP_N_UNITS = "n_units"
MAP_N_ACTIVATED = "n_activated"
MAP_N_INACTIVATED = "n_inactivated"
MAP_DISTANCE_EDGES = "distance_edges_um"  # attribute: bin edges of the distance_um coordinate
MAP_POWER_EDGES = "power_edges_mw"  # attribute: bin edges of power_mw when powers are binned
MAP_UNIT_DEPTH = "unit_depth_um"
MAP_PEARSON_R = "pearson_r"
MAP_N_RESPONSES = "n_responses"
MAP_MODULATION_INDEX = "modulation_index"
MAP_DEFAULT_DISTANCE_BIN_UM = 100.0

# --------------------------------------------------------------------------
# Stored timing (binning.Timing, store.write_cube, response.py): arrays of every store, from the conversion's pass
# --------------------------------------------------------------------------
CONDITION_COUNTS = "condition_counts"  # (cluster, condition, time): spike_counts summed over the condition's trials
FIRST_SPIKE_BIN = "first_spike_bin"  # (cluster, trial): bin of the first spike in the stim window, -1 for none
TRIAL_CONDITION = "trial_condition"  # (trial,): the trial's index into the stored conditions
CONDITION_EMITTER = "condition_emitter"  # (condition,): the stored conditions' emitter, power level (mean power),
CONDITION_POWER = "condition_power_mw"  # duration and trial count, the conditions of
CONDITION_DURATION = "condition_duration_s"  # conditions.trial_conditions(cube, CONDITION_KEYS)
CONDITION_N_TRIALS = "condition_n_trials"
STORED_CONDITION_COORDS = {  # stored coordinate -> the trial_conditions coordinate it holds
    CONDITION_EMITTER: EMITTER,
    CONDITION_POWER: POWER,
    CONDITION_DURATION: DURATION,
    CONDITION_N_TRIALS: N_TRIALS,
}
TIMING_ARRAYS = (CONDITION_COUNTS, FIRST_SPIKE_BIN)
_VARIABLES += [
    VariableSpec(
        CONDITION_COUNTS, (CLUSTER, CONDITION, TIME), "spikes of the cluster in the time bin summed over the "
        "condition's trials", "count", "uint",
    ),
    VariableSpec(
        FIRST_SPIKE_BIN, (CLUSTER, TRIAL), "bin of the first spike in the stim window [0, duration), from its first "
        "bin (-1: none)", "1", "int16",
    ),
    VariableSpec(TRIAL_CONDITION, (TRIAL,), "index of the trial's condition", "1", "int64"),
    VariableSpec(CONDITION_EMITTER, (CONDITION,), "emitter id of the condition", "1", "int64"),
    VariableSpec(CONDITION_POWER, (CONDITION,), "power level of the condition (its trials' mean power)", "mW",
                 "float64"),
    VariableSpec(CONDITION_DURATION, (CONDITION,), "pulse duration of the condition", "s", "float64"),
    VariableSpec(CONDITION_N_TRIALS, (CONDITION,), "trials of the condition", "1", "int64"),
]  # fmt: skip
VARIABLES.update({v.name: v for v in _VARIABLES})
SUMMARY_ARTIFACTS = "light_artifacts"  # Catalog.summary() / opto-cube info: units flagged light_artifact
SIGNIFICANT_BY = ("p", "q")  # responses(significant_by=...): significant is p_value or q_value < SIGNIFICANCE_P
# --- end stored timing ------------------------------------------------------

# --------------------------------------------------------------------------
# Latency and artifacts (latency.py): columns of the responses table and their thresholds
# --------------------------------------------------------------------------
Q_VALUE = "q_value"  # Benjamini-Hochberg adjusted p-value over the session's finite p-values
LATENCY = "latency_ms"  # response onset after light onset (start of the first bin of the change)
FIRST_SPIKE = "first_spike_ms"  # median over trials of the first spike in the stim window
JITTER = "jitter_ms"  # interquartile range over trials of the first spike in the stim window
RELIABILITY = "reliability"  # fraction of trials with a spike in the stim window
LIGHT_ARTIFACT = "light_artifact"  # per cluster: spikes locked to light onset/offset at every emitter
LATENCY_MAX_BIN_MS = 2.0  # coarser bins cannot resolve a latency (or a ~1 ms artifact lock): refused
LATENCY_LOG_LR_THRESHOLD = 6.907755278982137  # ln(1000): the Poisson CUSUM's alarm, a likelihood ratio of 1000
LATENCY_FLOOR_COUNTS = 0.5  # a rate of zero counts in a window is taken as half a count (continuity)
TIMING_COLUMNS = (Q_VALUE, LATENCY, FIRST_SPIKE, JITTER, RELIABILITY, LIGHT_ARTIFACT)  # after the table's others


# --------------------------------------------------------------------------
# spatial extent (spatial.py, power_response.py, plot_extent.py): how far the light reaches
# --------------------------------------------------------------------------
EXTENT_EFFECT = MAP_EFFECT  # dimension: activated / inactivated
EXTENT_DISTANCE = "abs_distance_um"  # dimension: |distance| from the emitter, the fitted profile's grid
EXTENT_DISTANCE_BIN = "abs_distance_bin_um"  # dimension: |distance| bins of the observed fractions (centres)
EXTENT_RADIUS = "radius_um"
EXTENT_RADIUS_LOW = "radius_low_um"
EXTENT_RADIUS_HIGH = "radius_high_um"
EXTENT_PROFILE = "profile"
EXTENT_PROFILE_LOW = "profile_low"
EXTENT_PROFILE_HIGH = "profile_high"
EXTENT_AT_EMITTER = "fraction_at_emitter"
EXTENT_N_UNITS = "n_units"
EXTENT_N_RESPONDING = "n_responding"
EXTENT_N_SESSIONS = "n_sessions"
EXTENT_OBSERVED = "observed_fraction"
EXTENT_N_IN_BIN = "n_in_bin"
EXTENT_N_BOOT = 1000
EXTENT_CONFIDENCE = 0.95
DURATION_RTOL = 1e-9  # pulse durations equal within this relative tolerance are one duration
# per-unit power response (power_response.py)
PR_P50 = "p50_mw"
PR_MAX_EFFECT = "max_effect_pct"
PR_FIT_OK = "fit_ok"
PR_FIT_FLAG = "fit_flag"
PR_MIN_LEVELS = 3
PR_MIN_R_SQUARED = 0.5
# --- end spatial extent ------------------------------------------------------


# --------------------------------------------------------------------------
# The HTML report (report.py, templates/report.html.j2)
# --------------------------------------------------------------------------
REPORT_TEMPLATE = "report.html.j2"  # in opto_cube/templates/
REPORT_MAX_BYTES = 10_000_000  # heavier pages are warned about: too big to mail
REPORT_VERSION_PACKAGES = (
    "numpy",
    "scipy",
    "pandas",
    "xarray",
    "zarr",
    "numcodecs",
    "dask",
    "numba",
    "matplotlib",
    "jinja2",
    "h5netcdf",
)
REPORT_SUMMARY_RESPONDING = "responding_units"  # summary column: QC-passing units responding under some condition
REPORT_SECTIONS = (  # the analysis sections of `opto-cube report`, in page order (docs/report.md)
    "Effect maps",
    "Spatial extent",
    "Power response",
    "Population PSTHs near the emitter",
)
REPORT_DEFAULT_NAME = "report.html"  # `opto-cube demo` writes it beside its maps
# --- end report -------------------------------------------------------------


# --------------------------------------------------------------------------
# NWB (nwb.py; the mapping is docs/nwb.md)
# --------------------------------------------------------------------------
NWB_SUFFIX = ".nwb"
NWB_PULSES = "optogenetic_pulses"  # intervals/<this>: an OptogeneticPulsesTable, one row per pulse
NWB_POSITION_FROM_TIP = "position_from_tip_um"  # column of the OptogeneticSitesTable (one row per emitter)
NWB_MODULE = "opto_cube"  # processing module holding the metadata table and the binned cube
NWB_METADATA = "opto_cube_metadata"  # DynamicTable of (key, JSON value)
NWB_BINNED = "spike_counts"  # BinnedAlignedSpikes of the cube (--with-cube)


# --------------------------------------------------------------------------
# Analysis layer (conditions.py, psth.py, pipeline.py): options and output files
# --------------------------------------------------------------------------
MATCH_RTOL = {EMITTER: 0.0, POWER: POWER_RTOL, DURATION: DURATION_RTOL}  # selecting trials / rows by value
PSTH_NEAR_EMITTER_UM = 100.0  # the maps' population PSTH: units within this distance of their nearest emitter
TIME_COURSE = "time_course"  # condition_time_course: spikes summed over its trials, (cluster, condition, time)
MAPS_NETCDF = "maps.nc"  # opto-cube maps: the maps, netCDF4 (HDF5, via h5netcdf)
MAPS_FIGURES = (  # the last: latency against distance (issue 11, plot_latency)
    "effect_map.png", "depth_vs_emitter.png", "modulation_index.png", "psth.png", "latency_vs_distance.png",
)  # fmt: skip


# --------------------------------------------------------------------------
# Store integrity (store.py, verify.py; docs/contract.md, "Integrity")
# --------------------------------------------------------------------------
# group attribute: the CRC32C (the chunk's last 4 bytes, hex) of every chunk of every array, keyed
# "<array>/<chunk key>", written before the completion mark; a chunk moved, swapped, truncated or
# re-encoded no longer matches the one written at its place
ATTR_CHUNK_CRC32C = "opto_cube_chunk_crc32c"
OWN_ATTR_PREFIX = "opto_cube"  # a session.json key with this prefix lives only under ATTR_SESSION_JSON
# every attribute opto_cube writes itself: never copied to the top level from session.json
OWN_ATTRS = frozenset(
    {
        ATTR_SESSION_ID,
        ATTR_BIN_WIDTH,
        ATTR_WINDOW,
        ATTR_PRE_WINDOW,
        ATTR_TIP_OFFSET,
        ATTR_EMITTER_POSITIONS,
        ATTR_SURFACE,
        ATTR_VERSION,
        ATTR_FORMAT_VERSION,
        ATTR_SHA256,
        ATTR_LASER_CALIBRATION,
        ATTR_COMPLETE,
        ATTR_SESSION_JSON,
        ATTR_CHUNK_CRC32C,
    }
)
# size budgets checked before anything is allocated (convert --max-buffer-gib / --max-cube-gib raise them)
MAX_BUFFER_GIB = 4.0  # the trial-chunk buffer of counts (clusters x trial chunk x bins) and its scratch
MAX_CUBE_GIB = 64.0  # the cube, uncompressed (clusters x trials x bins, one byte a count at least)


def is_own_attr(key: str) -> bool:
    """Whether ``key`` names one of opto_cube's own store attributes (a session.json field may not take it).

    Examples
    --------
    >>> is_own_attr("opto_cube_complete"), is_own_attr("opto_cube_anything"), is_own_attr("subject")
    (True, True, False)
    """
    return key in OWN_ATTRS or key.startswith(OWN_ATTR_PREFIX)


# --- end store integrity ----------------------------------------------------
