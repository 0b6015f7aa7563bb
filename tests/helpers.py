"""Helpers of the opto_cube tests (the fixtures are in conftest.py; import these with ``from helpers import ...``).

- Synthetic sessions (:mod:`opto_cube.synth`) written under tmp dirs; the
  converted ones that several tests only read are built once per session.
- :func:`write_alf_session`: a minimal, valid ALF session written directly
  with numpy from spikes and trials given on the 30 kHz sample grid (the
  hypothesis tests build random sessions with it).
- :func:`reference_counts`: the independent, obviously-correct window count
  of docs/contract.md (``onset + a <= t < onset + b`` in float64, per cluster,
  with ``np.searchsorted``), what every exactness test compares against.
- :func:`raise_if_dask_computes`: a context manager that fails when dask
  computes (modelled on flox's ``tests/__init__.py``), for laziness tests.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import dask
import numpy as np
import pandas as pd
import xarray as xr

from opto_cube import schema, synth
from opto_cube.errors import OptoCubeWarning
from opto_cube.jobs import convert

SAMPLES_PER_S = schema.SAMPLING_RATE_HZ
SESSION_ID = "AL0034_2024-12-05_en1_p0"
OTHER_SESSION_ID = "AL0035_2024-12-06_en2_p1"


# --------------------------------------------------------------------------
# Laziness
# --------------------------------------------------------------------------
class CountingScheduler:
    """A dask scheduler that counts computes and raises past ``max_computes``."""

    def __init__(self, max_computes: int = 0) -> None:
        self.total_computes = 0
        self.max_computes = max_computes

    def __call__(self, dsk: Any, keys: Any, **kwargs: Any) -> Any:
        self.total_computes += 1
        if self.total_computes > self.max_computes:
            raise RuntimeError(
                f"Too many dask computations were scheduled: {self.total_computes} > max_computes={self.max_computes}"
            )
        return dask.get(dsk, keys, **kwargs)


def raise_if_dask_computes(max_computes: int = 0) -> Any:
    """Context manager: fail if dask computes more than ``max_computes`` times inside it.

    Examples
    --------
    >>> import dask.array as da
    >>> with raise_if_dask_computes():
    ...     lazy = da.ones(3).sum()  # building a graph is fine
    >>> with raise_if_dask_computes():  # doctest: +IGNORE_EXCEPTION_DETAIL
    ...     lazy.compute()
    Traceback (most recent call last):
    RuntimeError: Too many dask computations were scheduled: 1 > max_computes=0
    """
    return dask.config.set(scheduler=CountingScheduler(max_computes))


# --------------------------------------------------------------------------
# Synthetic sessions
# --------------------------------------------------------------------------
def tiny_spec(**changes: Any) -> synth.SessionSpec:
    """The synth "tiny" session with no quirk that warns (trials in onset order), plus ``changes``."""
    return dataclasses.replace(synth.SIZES["tiny"], **{"shuffle_trials": False, **changes})


# every quirk the generator knows, on (the exactness tests run on this)
ALL_QUIRKS = dict(
    shuffle_trials=True,
    unsorted_spikes=True,
    edge_spikes=True,
    edge_trials=10_000,  # every trial gets spikes exactly on its window edges (clipped to n_trials)
    omit_waveform_type=True,
    omit_ks_label=True,
    session_json_disagrees=True,
    session_id_disagrees=True,
    omit_power_range=True,
    jitter_powers=True,
)
# the warning each of them raises (regexes)
ALL_QUIRKS_WARNINGS = (
    r"not in onset order",
    r"not sorted in time",
    r"waveform_type left empty",
    r"ks_label left empty",
    r"n_spikes = .* but the arrays hold",
    r"session_id .* differs from the folder name",
)


def quirky_spec(n_trials: int | None = None, **changes: Any) -> synth.SessionSpec:
    spec = synth.SIZES["tiny"]
    quirks = {**ALL_QUIRKS, "edge_trials": n_trials or spec.n_trials, **changes}
    if n_trials:
        quirks["n_trials"] = n_trials
    return dataclasses.replace(spec, **quirks)


def write_synth(folder: Path, spec: synth.SessionSpec | None = None, **changes: Any) -> Path:
    """Write a synthetic session in ``folder`` (tiny, no warning quirks, unless told)."""
    synth.write_session(folder, dataclasses.replace(spec, **changes) if spec else tiny_spec(**changes))
    return folder


def convert_recording(folder: Path, out: Path, **params: Any) -> tuple[convert.ConversionResult, list[str]]:
    """convert_session with its OptoCubeWarnings recorded (returned) rather than raised."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", OptoCubeWarning)
        result = convert.convert_session(folder, out, **params)
    return result, [str(w.message) for w in caught if issubclass(w.category, OptoCubeWarning)]


@dataclasses.dataclass(frozen=True)
class Converted:
    """A session converted once and shared read-only: its folder, data root, stores and warnings."""

    folder: Path
    root: Path
    stores: dict[float, Path]  # bin_ms -> store
    warnings: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class ConvertedDataset:
    """A data root of several sessions converted into one folder of stores, shared read-only."""

    root: Path
    folders: tuple[Path, ...]
    out: Path  # the folder of stores
    results: tuple[convert.ConversionResult, ...]


# --------------------------------------------------------------------------
# Minimal ALF sessions written directly with numpy
# --------------------------------------------------------------------------
def write_alf_session(
    folder: Path,
    *,
    spike_times: np.ndarray,
    spike_clusters: np.ndarray,
    n_clusters: int,
    onsets: np.ndarray,
    durations: np.ndarray,
    emitters: np.ndarray | None = None,
    powers: np.ndarray | None = None,
    session_json: dict[str, Any] | None = None,
) -> Path:
    """Write a minimal valid session (every file of docs/format.md) from the given spikes and trials.

    Cluster metadata are plain: all clusters pass QC (consistent with their
    metrics), RS, ``good``, template depths 0, 20, 40, ... um and a surface at 2000 um.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    k, m, n_channels = n_clusters, len(onsets), 4
    if emitters is None:
        emitters = (np.arange(m) % schema.N_EMITTERS + 1).astype(np.int32)
    if powers is None:
        powers = np.full(m, 1.0)
    template_depth = 20.0 * np.arange(k, dtype=np.float64)
    arrays = {
        schema.SPIKES_TIMES: np.asarray(spike_times, dtype=np.float64),
        schema.SPIKES_CLUSTERS: np.asarray(spike_clusters, dtype=np.int32),
        schema.CLUSTERS_TEMPLATES: np.zeros((k, 3, n_channels)),
        schema.CLUSTERS_CHANNEL_POSITIONS: np.column_stack([np.zeros(n_channels), 20.0 * np.arange(n_channels)]),
        schema.CLUSTERS_TEMPLATE_DEPTHS: template_depth,
        schema.CLUSTERS_DEPTHS_FROM_SURFACE: 2000.0 - template_depth,
        schema.CLUSTERS_QC_PASS: np.ones(k, dtype=bool),
        schema.CLUSTERS_PRESENCE_RATIO: np.full(k, 0.95),
        schema.CLUSTERS_ISI_VIOLATIONS: np.full(k, 0.1),
        schema.CLUSTERS_AMPLITUDE_CUTOFF: np.full(k, 0.01),
        schema.CLUSTERS_TROUGH_TO_PEAK: np.full(k, 0.6),
        schema.CLUSTERS_PEAK_CHANNEL: np.zeros(k, dtype=np.int32),
        schema.STIM_TIMES: np.asarray(onsets, dtype=np.float64),
        schema.STIM_EMISSION_SITES: np.asarray(emitters, dtype=np.int32),
        schema.STIM_POWER: np.asarray(powers, dtype=np.float64),
        schema.STIM_DURATIONS: np.asarray(durations, dtype=np.float64),
    }
    for name, array in arrays.items():
        np.save(folder / name, array, allow_pickle=False)
    (folder / schema.CLUSTERS_WAVEFORM_TYPE).write_text("RS\n" * k)
    (folder / schema.CLUSTERS_KS_LABEL).write_text("cluster_id,KSLabel\n" + "".join(f"{i},good\n" for i in range(k)))
    meta = {
        "session_id": folder.name,
        "subject": "AL_0034",
        "date": "2024-12-05",
        "sampling_rate": SAMPLES_PER_S,
        **(session_json or {}),
    }
    (folder / schema.SESSION_JSON).write_text(json.dumps(meta))
    return folder


# --------------------------------------------------------------------------
# The independent reference
# --------------------------------------------------------------------------
def load(folder: Path, name: str) -> np.ndarray:
    return np.load(Path(folder) / name, allow_pickle=False)


def reference_counts(
    times: np.ndarray, clusters: np.ndarray, n_clusters: int, onsets: np.ndarray, a: Any, b: Any
) -> np.ndarray:
    """``counts[k, i]`` = spikes of cluster ``k`` with ``onsets[i] + a <= t < onsets[i] + b`` (float64).

    ``a`` and ``b`` are scalars or one value per trial. Nothing of opto_cube is
    used: per cluster, the spike times sorted and ``np.searchsorted``.
    """
    onsets = np.asarray(onsets, dtype=np.float64)
    lo = onsets + np.broadcast_to(np.asarray(a, dtype=np.float64), onsets.shape)
    hi = onsets + np.broadcast_to(np.asarray(b, dtype=np.float64), onsets.shape)
    times, clusters = np.asarray(times, dtype=np.float64), np.asarray(clusters)
    out = np.zeros((n_clusters, onsets.size), dtype=np.int64)
    for k in range(n_clusters):
        t = np.sort(times[clusters == k])
        out[k] = np.searchsorted(t, hi, side="left") - np.searchsorted(t, lo, side="left")
    return out


def reference_bins(
    times: np.ndarray,
    clusters: np.ndarray,
    n_clusters: int,
    onsets: np.ndarray,
    durations: np.ndarray,
    edges_s: np.ndarray,
) -> np.ndarray:
    """``counts[k, i, j]``: spikes in ``[onset + e_j, onset + e_{j+1})``; the edge at a trial's duration is
    ``onset + duration`` as stored (docs/contract.md). ``edges_s`` relative to onset."""
    onsets = np.asarray(onsets, dtype=np.float64)
    durations = np.asarray(durations, dtype=np.float64)
    edges = onsets[:, None] + np.asarray(edges_s)[None, :]
    stim_edge = np.isclose(np.asarray(edges_s)[None, :], durations[:, None], rtol=0, atol=1e-9)
    edges = np.where(stim_edge, (onsets + durations)[:, None], edges)
    times, clusters = np.asarray(times, dtype=np.float64), np.asarray(clusters)
    out = np.zeros((n_clusters, onsets.size, edges.shape[1] - 1), dtype=np.int64)
    for k in range(n_clusters):
        t = np.sort(times[clusters == k])
        out[k] = np.diff(np.searchsorted(t, edges, side="left"), axis=1)
    return out


def folder_reference(folder: Path, a: Any, b: Any) -> np.ndarray:
    """:func:`reference_counts` straight from a session folder's files (trials in file-row order)."""
    return reference_counts(
        load(folder, schema.SPIKES_TIMES),
        load(folder, schema.SPIKES_CLUSTERS),
        load(folder, schema.CLUSTERS_TEMPLATE_DEPTHS).size,
        load(folder, schema.STIM_TIMES),
        a,
        b,
    )


def cube_window_counts(ds: xr.Dataset, a: Any, b: Any) -> np.ndarray:
    """Sum of the cube's bins lying in ``[a, b)`` relative to onset (``a``, ``b`` scalars or one value per
    trial of the cube) as ``counts[cluster, file row]``: the cube's trials mapped back with ``stim_index``.

    Computed with xarray (chunk by chunk when the cube is dask-backed)."""
    n_trials = ds.sizes[schema.TRIAL]
    a = xr.DataArray(np.broadcast_to(np.asarray(a, dtype=np.float64), (n_trials,)), dims=schema.TRIAL)
    b = xr.DataArray(np.broadcast_to(np.asarray(b, dtype=np.float64), (n_trials,)), dims=schema.TRIAL)
    centres = ds[schema.TIME].variable
    inside = (centres > a.variable) & (centres < b.variable)  # (trial, time): the whole bins inside [a, b)
    summed = ds[schema.SPIKE_COUNTS].where(xr.DataArray(inside), 0).sum(schema.TIME, dtype=np.int64).values
    out = np.empty_like(summed)
    out[:, ds[schema.STIM_INDEX].values] = summed
    return out


def assert_exact(folder: Path, store: Path) -> xr.Dataset:
    """Per-trial pre, stim and whole-window counts of the store (read with plain ``xr.open_zarr``) equal the
    reference from the raw files, for every cluster and trial; trials in onset order, mapped by stim_index."""
    ds = xr.open_zarr(store)
    onsets_file, durations_file = load(folder, schema.STIM_TIMES), load(folder, schema.STIM_DURATIONS)
    stim_index = ds[schema.STIM_INDEX].values
    np.testing.assert_array_equal(np.sort(stim_index), np.arange(onsets_file.size))
    np.testing.assert_array_equal(ds[schema.ONSET].values, onsets_file[stim_index])
    np.testing.assert_array_equal(ds[schema.DURATION].values, durations_file[stim_index])
    assert np.all(np.diff(ds[schema.ONSET].values) >= 0), "trials are not in onset order"
    start, stop = ds.attrs[schema.ATTR_WINDOW]
    checks = {
        "pre window": (schema.PRE_WINDOW_S, schema.PRE_WINDOW_S),
        "stim window": ((0.0, durations_file), (0.0, ds[schema.DURATION].values)),
        "whole window": ((start, stop), (start, stop)),
    }
    for what, (raw_bounds, cube_bounds) in checks.items():
        np.testing.assert_array_equal(
            cube_window_counts(ds, *cube_bounds), folder_reference(folder, *raw_bounds), err_msg=what
        )
    # window_counts: the raw-spike reference and the cube's window sums, in the smallest unsigned dtype
    assert list(ds[schema.WINDOW].values) == list(schema.WINDOWS)
    windows = ds[schema.WINDOW_COUNTS]
    assert windows.dims == (schema.CLUSTER, schema.TRIAL, schema.WINDOW)
    stored = np.empty(windows.shape, dtype=np.int64)
    stored[:, stim_index] = windows.values
    for index, (name, (raw_bounds, cube_bounds)) in enumerate(
        zip(schema.WINDOWS, list(checks.values())[:2], strict=True)
    ):
        reference = folder_reference(folder, *raw_bounds)
        np.testing.assert_array_equal(stored[..., index], reference, err_msg=f"window_counts {name}")
        np.testing.assert_array_equal(
            stored[..., index], cube_window_counts(ds, *cube_bounds), err_msg=f"window_counts {name} vs cube sums"
        )
    assert windows.dtype.kind == "u", windows.dtype
    assert windows.dtype == np.result_type(np.uint8, np.min_scalar_type(int(stored.max(initial=0)))), windows.dtype
    return ds


def store_listing(out: Path) -> list[str]:
    """Every entry of a folder of stores, hidden ones included (temp dirs of a conversion start with '.')."""
    return sorted(p.name for p in Path(out).iterdir()) if Path(out).exists() else []


# --------------------------------------------------------------------------
# Latency and artifacts: per-condition time courses built with numpy from a store
# --------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ConditionCourses:
    """A store's cube grouped by condition with plain numpy (independent of opto_cube's grouping).

    ``time_course[cluster, condition, time]`` sums the cube over the condition's trials;
    conditions are the distinct (emitter, power rounded to 1e-4 mW, duration) of the trials.
    """

    cube: np.ndarray  # (cluster, trial, time), trials in the store's (onset) order
    time_course: np.ndarray  # (cluster, condition, time) int64
    n_trials: np.ndarray  # (condition,)
    trial_condition: np.ndarray  # (trial,)
    emitter: np.ndarray  # (condition,)
    power_mw: np.ndarray  # (condition,)
    duration_s: np.ndarray  # (condition,)
    distance_um: np.ndarray  # (cluster, condition): unit depth - emitter depth
    time_s: np.ndarray  # (time,) bin centres
    bin_width_s: float


def condition_courses(store: Path) -> ConditionCourses:
    """Read a store's cube and coordinates with xarray and group its trials by condition with numpy."""
    with xr.open_zarr(store) as ds:
        cube = ds[schema.SPIKE_COUNTS].values
        emitter, power = ds[schema.EMITTER].values, ds[schema.POWER].values
        duration, emitter_depth = ds[schema.DURATION].values, ds[schema.EMITTER_DEPTH].values
        depth, time_s = ds[schema.DEPTH_FROM_SURFACE].values, ds[schema.TIME].values
        width = float(ds.attrs[schema.ATTR_BIN_WIDTH])
    keys = np.column_stack([emitter, np.round(power, 4), duration])
    unique, trial_condition = np.unique(keys, axis=0, return_inverse=True)
    trial_condition = trial_condition.ravel()
    n = unique.shape[0]
    course = np.stack([cube[:, trial_condition == c, :].sum(axis=1, dtype=np.int64) for c in range(n)], axis=1)
    first = np.array([np.flatnonzero(trial_condition == c)[0] for c in range(n)])
    return ConditionCourses(
        cube=cube,
        time_course=course,
        n_trials=np.bincount(trial_condition, minlength=n),
        trial_condition=trial_condition,
        emitter=unique[:, 0].astype(np.int64),
        power_mw=unique[:, 1],
        duration_s=duration[first],
        distance_um=depth[:, None] - emitter_depth[first][None, :],
        time_s=time_s,
        bin_width_s=width,
    )


def reference_first_spikes(folder: Path, store: Path) -> np.ndarray:
    """Bin (1-based from onset: 0 is [onset, onset + w)) of each cluster's first spike in each trial's stim
    window ``onset <= t < onset + duration`` from the raw files by searchsorted; -1 when none.
    (cluster, trial) with the store's trial order (mapped by stim_index). Bin edges are ``onset + j w``."""
    with xr.open_zarr(store) as ds:
        stim_index = ds[schema.STIM_INDEX].values
        width = float(ds.attrs[schema.ATTR_BIN_WIDTH])
    times, clusters = load(folder, schema.SPIKES_TIMES), load(folder, schema.SPIKES_CLUSTERS)
    onsets = load(folder, schema.STIM_TIMES)[stim_index]
    durations = load(folder, schema.STIM_DURATIONS)[stim_index]
    n_clusters = load(folder, schema.CLUSTERS_TEMPLATE_DEPTHS).size
    per_second = round(1.0 / width)
    out = np.full((n_clusters, onsets.size), -1, dtype=np.int64)
    for k in range(n_clusters):
        t = np.sort(times[clusters == k])
        if t.size == 0:
            continue
        index = np.searchsorted(t, onsets, side="left")
        first = t[np.minimum(index, t.size - 1)]
        inside = (index < t.size) & (first < onsets + durations)
        for i in np.flatnonzero(inside):
            edges = onsets[i] + np.arange(round(durations[i] * per_second) + 1) / per_second
            edges[-1] = onsets[i] + durations[i]
            out[k, i] = np.searchsorted(edges, first[i], side="right") - 1
    return out


# Spatial extent and power response (tests/test_spatial.py, test_power_response.py, test_plot_extent.py)
# --------------------------------------------------------------------------
SPATIAL_SESSIONS = 30  # small sessions of the spatial truth tests: enough units for a ~5 % interval


@dataclasses.dataclass(frozen=True)
class SpatialDataset:
    """Synthetic sessions converted at 10 ms and their responses table (read-only)."""

    root: Path
    table: Any  # pandas.DataFrame


def noise_free_fs_radius(rows: Any, root: Path, power_mw: float) -> float:
    """The FS activation radius of the generator's model without noise, at ``power_mw``, over the units of ``rows``.

    Derivation. The generator multiplies an FS unit's rate during the pulse by
    ``m = 1 + A p(P) exp(-|d| / lambda)`` with ``p(P) = P / (P + half_power)``
    (``GroundTruth.rate_multiplier``); the refractory period lowers observed
    rates to about ``r exp(-r tau)``, so the observed stim / pre ratio is
    ``m exp(-(m - 1) r0 tau)`` (``with_refractory=True``). The seed's rule
    "activated" is ``pct_change > 200``, i.e. that ratio > 3. On expected counts
    (no Poisson noise) and with significance granted (an effect of 200 % over
    ~33 trials of 50 ms is far past p < 0.005 for all but the slowest units), a
    unit is activated at distance d iff its ratio at d exceeds 3. The population
    fraction at distance d is the mean of that indicator over the FS units
    actually in the table (their own A, r0 and session lambda): the expected
    outcome of a unit placed at d, since the generator draws depths
    independently of gains. The radius is where this fraction falls to half its
    value at d = 0, found on a 0.5 um grid.
    """
    distance = np.arange(0.0, 3000.0, 0.5)
    units = rows.drop_duplicates([schema.SESSION_ID, schema.CLUSTER])
    indicators = []
    for session_id, group in units.groupby(schema.SESSION_ID):
        truth = synth.load_ground_truth(root, session_id)
        cluster = group[schema.CLUSTER].to_numpy()
        strength = power_mw / (power_mw + truth.half_power_mw) * np.exp(-distance / truth.length_constant_um)
        m = 1.0 + truth.gain[cluster, None] * strength[None, :]
        observed = m * np.exp(-(m - 1.0) * truth.baseline_rate_hz[cluster, None] * truth.refractory_s)
        indicators.append(observed > 1.0 + schema.ACTIVATED_MIN_PCT / 100.0)
    fraction = np.concatenate(indicators).mean(axis=0)
    return float(distance[np.argmax(fraction <= fraction[0] / 2)])


def logistic_table(
    rng: np.random.Generator,
    *,
    n_sessions: int = 4,
    units_per_session: int = 50,
    emitters: int = 3,
    powers: tuple[float, ...] = (1.0,),
    intercept: float = 3.0,
    slope_per_um: float = -0.012,
    waveform_type: str = "FS",
) -> Any:
    """A responses table whose activated outcomes are Bernoulli draws from a planted logistic fall-off.

    Every unit is tested at ``emitters`` emitters at every power, at uniform
    distances in [-900, 900] um; ``activated & significant`` has probability
    ``expit(intercept + slope |d|)``. The true radius is
    ``(logit(expit(intercept) / 2) - intercept) / slope``.
    """
    import pandas as pd
    from scipy.special import expit

    n = n_sessions * units_per_session * emitters * len(powers)
    session = np.repeat(np.arange(n_sessions), units_per_session * emitters * len(powers))
    cluster = np.tile(np.repeat(np.arange(units_per_session), emitters * len(powers)), n_sessions)
    emitter = np.tile(np.repeat(np.arange(1, emitters + 1), len(powers)), n_sessions * units_per_session)
    power = np.tile(np.asarray(powers, dtype=np.float64), n // len(powers))
    distance = rng.uniform(-900.0, 900.0, n)
    activated = rng.random(n) < expit(intercept + slope_per_um * np.abs(distance))
    return pd.DataFrame(
        {
            schema.SESSION_ID: np.char.add("S", session.astype(str)),
            schema.CLUSTER: cluster,
            schema.EMITTER: emitter,
            schema.POWER: power,
            schema.DURATION: 0.05,
            schema.DISTANCE: distance,
            schema.WAVEFORM_TYPE: waveform_type,
            schema.QC_PASS: True,
            schema.ACTIVATED: activated,
            schema.INACTIVATED: False,
            schema.SIGNIFICANT: True,
            schema.PCT_CHANGE: np.where(activated, 300.0, 10.0),
            schema.PRE_RATE: 5.0,
        }
    )


def logistic_radius(intercept: float, slope_per_um: float) -> float:
    """Where ``expit(a + b d)`` is half its value at 0, solved independently by bisection."""
    from scipy.optimize import brentq
    from scipy.special import expit

    half = expit(intercept) / 2
    return float(brentq(lambda d: expit(intercept + slope_per_um * d) - half, 0.0, 1e6, xtol=1e-10))


# The HTML report (tests/test_report.py, tests/test_report_job.py)
# --------------------------------------------------------------------------
REPORT_SECTIONS = schema.REPORT_SECTIONS


def page_sections(root: Any) -> dict[str, Any]:
    """The ``<section>`` elements of a parsed report page, by their heading."""
    return {s.find_all("h2")[0].text(): s for s in root.find_all("section")}


def html_table(table: Any) -> tuple[list[str], list[list[str]]]:
    """The column names (without units) and the body rows (cell texts) of a parsed ``<table>``."""
    header = [th.parts[0] for th in table.find_all("thead")[0].find_all("th")]
    rows = [[td.text() for td in tr.find_all("td")] for tr in table.find_all("tbody")[0].find_all("tr")]
    return header, rows


def responding_units(cube: Any, session_id: str) -> int:
    """QC-passing clusters of ``cube`` significantly activated or inactivated in at least one condition,
    counted from the cube's own responses (every condition, no table)."""
    from opto_cube.analysis import response

    rows = response.to_table(response.responses(cube).compute(), session_id)
    hit = rows[schema.SIGNIFICANT] & (rows[schema.ACTIVATED] | rows[schema.INACTIVATED]) & rows[schema.QC_PASS]
    return int(rows.loc[hit, schema.CLUSTER].nunique())


class HtmlNode:
    """An element of a page parsed by :func:`parse_html`: tag, attributes, children and text."""

    def __init__(self, tag: str, attrs: dict[str, str | None], parent: HtmlNode | None = None) -> None:
        self.tag, self.attrs, self.parent = tag, attrs, parent
        self.content: list[str | HtmlNode] = []  # text and elements inside, in document order

    @property
    def children(self) -> list[HtmlNode]:
        """The elements directly inside."""
        return [c for c in self.content if isinstance(c, HtmlNode)]

    @property
    def parts(self) -> list[str]:
        """The pieces of text directly inside."""
        return [c for c in self.content if isinstance(c, str)]

    def iter(self, tag: str | None = None) -> Any:
        """This element and every descendant (of ``tag``), in document order."""
        if tag is None or self.tag == tag:
            yield self
        for child in self.children:
            yield from child.iter(tag)

    def find_all(self, tag: str, **attrs: str) -> list[HtmlNode]:
        """Descendants of ``tag`` whose attributes include ``attrs`` (``class_`` matches one class)."""
        out = []
        for node in self.iter(tag):
            ok = True
            for key, value in attrs.items():
                if key == "class_":
                    ok &= value in (node.attrs.get("class") or "").split()
                else:
                    ok &= node.attrs.get(key) == value
            if ok:
                out.append(node)
        return out

    def text(self) -> str:
        """All the text inside, concatenated."""
        return "".join(c if isinstance(c, str) else c.text() for c in self.content)


class _TreeBuilder(HTMLParser):
    VOID = frozenset(
        {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
    )

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = HtmlNode("#document", {})
        self.current = self.root
        self.errors: list[str] = []
        self.doctype = ""

    def handle_decl(self, decl: str) -> None:
        self.doctype = decl

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = HtmlNode(tag, dict(attrs), self.current)
        self.current.content.append(node)
        if tag not in self.VOID:
            self.current = node

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.current.content.append(HtmlNode(tag, dict(attrs), self.current))

    def handle_endtag(self, tag: str) -> None:
        if tag in self.VOID:
            return
        if self.current.tag != tag:
            self.errors.append(f"</{tag}> closes <{self.current.tag}> at {self.getpos()}")
            node = self.current
            while node.parent is not None and node.tag != tag:
                node = node.parent
            self.current = node
        if self.current.parent is not None:
            self.current = self.current.parent

    def handle_data(self, data: str) -> None:
        self.current.content.append(data)


def parse_html(page: str) -> tuple[HtmlNode, list[str], str]:
    """Parse ``page`` with the standard library's :class:`html.parser.HTMLParser` into a tree.

    Returns the document node, the nesting errors found (a closing tag that
    does not close the open element) and the doctype.
    """
    builder = _TreeBuilder()
    builder.feed(page)
    builder.close()
    return builder.root, builder.errors, builder.doctype


# NWB (test_nwb.py)
# --------------------------------------------------------------------------
def assert_same_cube(alf_store: Path, nwb_store: Path, nwb_file: Path) -> None:
    """The cube made through NWB equals the one made from ALF: every variable, coordinate (values, dtypes,
    attributes) and store attribute; only the source checksums differ (theirs: the .nwb file's)."""
    import hashlib

    a, b = xr.open_zarr(alf_store), xr.open_zarr(nwb_store)
    digest = hashlib.sha256(Path(nwb_file).read_bytes()).hexdigest()
    assert b.attrs[schema.ATTR_SHA256] == {Path(nwb_file).name: digest}
    assert set(a.variables) == set(b.variables)
    for name in a.variables:
        assert a[name].dtype == b[name].dtype, name
    a.attrs[schema.ATTR_SHA256] = b.attrs[schema.ATTR_SHA256]
    xr.testing.assert_identical(a.load(), b.load())


def write_foreign_nwb(
    path: Path,
    folder: Path,
    *,
    units: bool = True,
    depth: bool = True,
    pulses: bool = True,
    emitter: bool = True,
    power: bool = True,
    extra_unit_columns: tuple[str, ...] = (),
) -> Path:
    """An NWB file as another lab might write it with plain pynwb (no extension, no opto_cube metadata) from
    the ALF session ``folder``: units with spike times (and the depth columns), a plain TimeIntervals
    ``optogenetic_pulses`` with ``emitter`` and ``power_in_mW``; each part can be left out."""
    import datetime as dt

    import pynwb
    from pynwb.epoch import TimeIntervals

    nwb = pynwb.NWBFile(
        session_description="another lab's session",
        identifier="foreign",
        session_start_time=dt.datetime(2024, 12, 5, tzinfo=dt.UTC),
    )
    if units:
        times, ids = load(folder, schema.SPIKES_TIMES), load(folder, schema.SPIKES_CLUSTERS)
        k = load(folder, schema.CLUSTERS_TEMPLATE_DEPTHS).size
        columns = (
            {
                schema.TEMPLATE_DEPTH: load(folder, schema.CLUSTERS_TEMPLATE_DEPTHS),
                schema.DEPTH_FROM_SURFACE: load(folder, schema.CLUSTERS_DEPTHS_FROM_SURFACE),
            }
            if depth
            else {}
        )
        files = {v: n for n, v in schema.CLUSTER_FILES.items()}
        columns.update({c: load(folder, files[c]) for c in extra_unit_columns})
        for name in columns:
            nwb.add_unit_column(name=name, description=name)
        for cid in range(k):
            nwb.add_unit(spike_times=np.sort(times[ids == cid]), **{n: v[cid] for n, v in columns.items()})
    if pulses:
        table = TimeIntervals(name=schema.NWB_PULSES, description="pulses")
        if emitter:
            table.add_column(name=schema.EMITTER, description="emitter id")
        if power:
            table.add_column(name="power_in_mW", description="power, mW")
        onsets, durations = load(folder, schema.STIM_TIMES), load(folder, schema.STIM_DURATIONS)
        emitters, powers = load(folder, schema.STIM_EMISSION_SITES), load(folder, schema.STIM_POWER)
        for i in range(onsets.size):
            row = {"start_time": onsets[i], "stop_time": onsets[i] + durations[i]}
            if emitter:
                row[schema.EMITTER] = int(emitters[i])
            if power:
                row["power_in_mW"] = powers[i]
            table.add_row(**row)
        nwb.add_time_intervals(table)
    with pynwb.NWBHDF5IO(path, mode="w") as io:
        io.write(nwb)
    return path


# Responses tables made by hand (maps, plot)
# --------------------------------------------------------------------------
NOMINAL_POWERS = (0.5, 1.0, 4.0)


def random_table(n: int = 600, seed: int = 0) -> pd.DataFrame:
    """A responses table with the quirks maps must handle: jittered powers, unknown (NaN, as from a CSV)
    and empty waveform types, QC failures, NaN distances, distances exactly on bin edges."""
    rng = np.random.default_rng(seed)
    distance = rng.uniform(-900.0, 900.0, n)
    on_edge = rng.random(n) < 0.2
    distance[on_edge] = 25.0 * rng.integers(-36, 37, on_edge.sum())  # edges of 50, 100, 25-um bins
    distance[rng.random(n) < 0.02] = np.nan
    pct = rng.choice([-100.0, -60.0, -10.0, 50.0, 250.0, 900.0], n)
    pre = rng.uniform(0.5, 20.0, n)
    waveform = rng.choice(np.array(["RS", "FS", "", None], dtype=object), n, p=[0.55, 0.3, 0.1, 0.05])
    table = pd.DataFrame(
        {
            schema.SESSION_ID: rng.choice(["s0", "s1", "s2"], n),
            schema.CLUSTER: rng.integers(0, 40, n),
            schema.EMITTER: rng.integers(1, 15, n),
            schema.POWER: rng.choice(NOMINAL_POWERS, n) * (1.0 + rng.uniform(-5e-8, 5e-8, n)),
            schema.DURATION: rng.choice([0.01, 0.05], n),
            schema.PRE_RATE: pre,
            schema.STIM_RATE: pre * (1 + pct / 100.0),
            schema.PCT_CHANGE: pct,
            schema.P_VALUE: rng.uniform(0, 0.02, n),
            schema.DISTANCE: distance,
            schema.DEPTH_FROM_SURFACE: rng.uniform(50.0, 1500.0, n),
            schema.WAVEFORM_TYPE: waveform,
            schema.QC_PASS: rng.random(n) < 0.8,
        }
    )
    table[schema.ACTIVATED] = table[schema.PCT_CHANGE] > schema.ACTIVATED_MIN_PCT
    table[schema.INACTIVATED] = (table[schema.PCT_CHANGE] < schema.INACTIVATED_MAX_PCT) & (
        table[schema.PRE_RATE] > schema.INACTIVATED_MIN_PRE_HZ
    )
    table[schema.SIGNIFICANT] = table[schema.P_VALUE] < schema.SIGNIFICANCE_P
    return table


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_png(path: Path, min_bytes: int = 5_000) -> None:
    """A PNG file of a drawn figure: the signature, some size, more than 200 x 200 pixels, not blank."""
    import matplotlib.image

    data = Path(path).read_bytes()
    assert data[:8] == PNG_SIGNATURE, path
    assert len(data) > min_bytes, path
    image = matplotlib.image.imread(path)
    assert image.ndim == 3
    assert image.shape[0] > 200
    assert image.shape[1] > 200
    assert image[..., :3].std() > 0.01  # not a blank canvas


def with_window_counts(store_path: Path) -> Path:
    """Give a store ``window_counts`` (format 2) when it lacks them, summed from its cube; returns the path.

    Stands for a store converted with window counts, so the fast path of the responses is tested on stores
    of either format.
    """
    from opto_cube.analysis import response
    from opto_cube.store.open import open_cube

    cube = open_cube(store_path)
    if schema.WINDOW_COUNTS not in cube:
        counts = response.window_counts(cube).compute().astype(np.uint32)
        ds = xr.Dataset({schema.WINDOW_COUNTS: counts.assign_coords({schema.WINDOW: list(schema.WINDOWS)})})
        ds = ds.drop_vars([c for c in ds.coords if c != schema.WINDOW])
        ds.attrs = dict(cube.attrs)
        ds.to_zarr(store_path, mode="a", consolidated=True)
    return store_path


# Damaged stores (tests/test_verify.py, tests/test_store.py)
# --------------------------------------------------------------------------
DAMAGES = ("delete", "truncate", "flip_start", "flip_middle", "flip_end", "swap", "zero_length", "wrong_codec")


def chunk_files(store_dir: Path, name: str) -> list[str]:
    """Keys (``<array>/c/...``) of the chunk files of one array of a local store, sorted."""
    root = Path(store_dir)
    return sorted(p.relative_to(root).as_posix() for p in (root / name / "c").rglob("*") if p.is_file())


def damage(store_dir: Path, key: str, how: str, position: float = 0.5, other: str | None = None) -> None:
    """Damage the chunk file ``key`` of a local store ``how`` (one of :data:`DAMAGES`).

    ``position`` (0..1) places the truncation; ``other`` is the chunk to swap with.
    ``wrong_codec`` writes the chunk's decoded bytes zlib-compressed, with a valid
    CRC32C after them: a chunk whose checksum is right but whose codec is not.
    """
    import zlib

    import google_crc32c
    import zarr

    path = Path(store_dir) / key
    data = path.read_bytes()
    if how == "delete":
        path.unlink()
    elif how == "truncate":
        path.write_bytes(data[: min(len(data) - 1, max(1, int(len(data) * position)))])
    elif how.startswith("flip_"):
        at = {"flip_start": 0, "flip_middle": len(data) // 2 - 1, "flip_end": len(data) - 2}[how]
        flipped = bytearray(data)
        flipped[at] ^= 0xFF
        flipped[at + 1] ^= 0x5A
        path.write_bytes(bytes(flipped))
    elif how == "swap":
        assert other is not None
        assert other != key
        other_path = Path(store_dir) / other
        other_data = other_path.read_bytes()
        assert other_data != data, "swapping two identical chunks changes nothing"
        path.write_bytes(other_data)
        other_path.write_bytes(data)
    elif how == "zero_length":
        path.write_bytes(b"")
    elif how == "wrong_codec":
        name = key.split("/c/")[0]
        array = zarr.open_array(Path(store_dir), path=name, mode="r")
        coords = tuple(int(c) for c in key.split("/c/")[1].split("/"))
        block = tuple(slice(c * n, (c + 1) * n) for c, n in zip(coords, array.chunks, strict=True))
        raw = zlib.compress(np.ascontiguousarray(array[block]).tobytes())
        path.write_bytes(raw + google_crc32c.value(raw).to_bytes(4, "little"))
    else:
        raise ValueError(f"unknown damage {how!r}")


def add_window_counts(store_dir: Path) -> None:
    """Give a store its ``window_counts`` (docs/contract.md) when its writer did not, and seal it again.

    Until the writer adds the array itself, the integrity tests add it here,
    written as the contract says: the cube's pre and stim window sums, dims
    ``(cluster, trial, window)``, the store's codecs, every chunk written.
    """
    import zarr

    from opto_cube.store import chunks
    from opto_cube.store.chunks import read_store_attrs, zarr_store
    from opto_cube.store.write import COMPRESSORS

    if schema.WINDOW_COUNTS in zarr.open_group(store_dir, mode="r"):
        return
    ds = xr.open_zarr(store_dir)
    centres = ds[schema.TIME].values
    pre = ds[schema.SPIKE_COUNTS].values[:, :, (centres > schema.PRE_WINDOW_S[0]) & (centres < 0)].sum(-1)
    stim_bins = (centres[None, :] > 0) & (centres[None, :] < ds[schema.DURATION].values[:, None])
    stim = (ds[schema.SPIKE_COUNTS].values * stim_bins[None]).sum(-1)
    counts = np.stack([pre, stim], axis=-1).astype(np.uint32)
    window_chunks = (*ds[schema.SPIKE_COUNTS].encoding["chunks"][:2], 2)
    extra = xr.Dataset(
        {schema.WINDOW_COUNTS: ((schema.CLUSTER, schema.TRIAL, schema.WINDOW), counts)},
        coords={schema.WINDOW: np.array(schema.WINDOWS, dtype=object)},
    )
    attrs = read_store_attrs(store_dir)
    encoding = {name: {"compressors": COMPRESSORS} for name in extra.variables}
    encoding[schema.WINDOW_COUNTS]["chunks"] = window_chunks
    zstore = zarr_store(store_dir)
    extra.to_zarr(zstore, mode="a", zarr_format=3, consolidated=False, encoding=encoding, write_empty_chunks=True)
    zarr.open_group(zstore, mode="r+").attrs.update(attrs)  # xarray's append replaced the group's attributes
    chunks.seal(zstore, store_dir)


# --------------------------------------------------------------------------
# Timing columns (issue 11): the latency fixture's type
# --------------------------------------------------------------------------
LATENCY_WINDOW_S = (-0.5, 0.3)  # the "latency" size's 200-ms pulses and the 1-ms offset lock fit, a small cube


@dataclasses.dataclass(frozen=True)
class LatencyDataset:
    """Sessions converted at 1 ms into one folder of stores, with each session's planted truth (read-only)."""

    out: Path
    truths: dict[str, synth.GroundTruth]


# --------------------------------------------------------------------------
# Writing a cube from blocks of counts alone (the binner gives the windows and timing from its one pass)
# --------------------------------------------------------------------------
def window_sums(template: Any, trials: slice, block: np.ndarray) -> np.ndarray:
    """Pre and stim window counts of a block of the cube: the sums of the bins inside each window.

    For blocks handed to ``write_cube`` without their window counts (the
    binner gives them from its one pass). The windows are unions of whole bins.
    ``template``: the cube's ``CubeLayout`` or Dataset.
    """
    centres = template[schema.TIME].values
    durations = template[schema.DURATION].values[trials]
    pre = (centres > schema.PRE_WINDOW_S[0]) & (centres < schema.PRE_WINDOW_S[1])
    stim = (centres[None, :] > 0) & (centres[None, :] < durations[:, None])
    out = np.empty((*block.shape[:2], len(schema.WINDOWS)), dtype=np.uint64)
    out[..., 0] = block[:, :, pre].sum(axis=-1, dtype=np.uint64)
    out[..., 1] = np.einsum("ktj,tj->kt", block, stim, dtype=np.uint64)
    return out


class BlockTiming:
    """The timing arrays summed from blocks of the cube, for blocks handed to ``write_cube`` without them."""

    def __init__(self, template: Any) -> None:
        self.codes = np.asarray(template[schema.TRIAL_CONDITION].values, np.int64)
        centres = np.asarray(template[schema.TIME].values, np.float64)
        durations = np.asarray(template[schema.DURATION].values, np.float64)
        self.start = int(np.searchsorted(centres, 0.0))
        self.stop = np.searchsorted(centres, durations)  # bins with centre < duration: the stim window's end
        sizes = template.sizes
        n_clusters, n_bins = sizes[schema.CLUSTER], sizes[schema.TIME]
        self.time_course = np.zeros((n_clusters, sizes[schema.CONDITION], n_bins), np.uint64)
        self.first_spike = np.full((n_clusters, self.codes.size), -1, np.int32)

    def add(self, trials: slice, block: np.ndarray) -> None:
        from opto_cube.analysis.latency import first_spike_bins

        code = self.codes[trials]
        order = np.argsort(code, kind="stable")
        starts = np.flatnonzero(np.r_[True, code[order][1:] != code[order][:-1]])
        if block.shape[0] and code.size:
            self.time_course[:, code[order][starts]] += np.add.reduceat(
                block[:, order], starts, axis=1, dtype=np.uint64
            )
        self.first_spike[:, trials] = first_spike_bins(block, self.start, self.stop[trials])


def write_count_blocks(template: Any, blocks: Any, target: Any, **kwargs: Any) -> Any:
    """``write_cube`` of ``(trials, counts)`` blocks: their window counts and timing summed from the bins.

    What ``write_cube`` did itself for such blocks before it required the
    binner's (``iter_count_chunks``); blocks with their window counts pass as they are.
    """
    from opto_cube.store import write

    timing = BlockTiming(template) if schema.TRIAL_CONDITION in template.coords else None

    def with_windows() -> Any:
        for trials, block, *window in blocks:
            if timing is not None:
                timing.add(trials, block)
            yield trials, block, window[0] if window else window_sums(template, trials, block)

    return write.write_cube(template, with_windows(), target, timing=timing, **kwargs)
