"""Tests of opto_cube.analysis.response (responses).

Every row equals an independent computation from the raw spike files.

The reference here reads the session's ``spikes.*`` and ``stim.*`` files with
numpy, counts each window with ``np.searchsorted`` (``onset + a <= t < onset + b``),
groups trials in plain pandas and runs ``scipy.stats.ttest_rel`` per group.
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.stats
import xarray as xr
from helpers import (
    SAMPLES_PER_S,
    condition_courses,
    folder_reference,
    load,
    raise_if_dask_computes,
    reference_first_spikes,
    write_alf_session,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from opto_cube import cli, schema, synth
from opto_cube.analysis.response import compute_all, responses, window_counts
from opto_cube.errors import TimingWarning
from opto_cube.jobs import convert
from opto_cube.jobs.pipeline import responses_table
from opto_cube.store.catalog import open_catalog
from opto_cube.store.open import open_cube

FLOAT_COLUMNS = (schema.PRE_RATE, schema.STIM_RATE, schema.PCT_CHANGE)
BOOL_COLUMNS = (schema.ACTIVATED, schema.INACTIVATED, schema.SIGNIFICANT)
KEY = [schema.CLUSTER, schema.EMITTER, "power_key", schema.DURATION]


# --------------------------------------------------------------------------
# Sessions: synthetic ones with mixed durations and jittered powers, and a hand-made one of edge cases
# --------------------------------------------------------------------------
def _synth_spec(**changes):
    base = dict(
        n_clusters=12,
        n_trials=60,
        powers_mw=(0.5, 1.0, 4.0),
        durations_s=(0.01, 0.02, 0.05),
        emitters=(2, 7, 12),
        rs_rate_median_hz=1.0,
        spikeless_clusters=2,
        lead_in_s=5.0,
        tail_s=5.0,
        jitter_powers=True,
        shuffle_trials=True,
        edge_spikes=True,
        edge_trials=60,
        seed=11,
    )
    return synth.SessionSpec(**{**base, **changes})


def _edge_case_session(folder: Path) -> Path:
    """Hand-made trials and spikes for the corner cases of the rates, percent change and t-test.

    8 conditions (2 emitters x 2 jittered powers x 2 durations), some of a single trial. Clusters:
    0: one stim spike per trial (pre 0: pct inf; equal differences: zero variance, p 0; n = 1: p NaN);
    1: one pre and one stim spike per trial (equal differences); 2: no spikes (pct NaN, p NaN);
    3: one pre spike per trial (pre exactly 2 Hz: not inactivated; pct -100); 4: two pre spikes (pre 4 Hz,
    inactivated); 5: spikes exactly on every window edge; 6: random spikes; 7: pre and stim rates equal in
    every trial (20 Hz in 50 ms pulses, 100 Hz in 10 ms ones): every difference 0, p NaN.
    """
    rng = np.random.default_rng(3)
    design = [(e, p, d) for e in (2, 9) for p in (1.0, 2.0) for d in (0.01, 0.05)]
    repeats = [1, 3, 2, 1, 4, 2, 1, 5]  # trials per condition
    trials = [c for c, r in zip(design, repeats, strict=True) for _ in range(r)]
    order = rng.permutation(len(trials))
    emitters = np.array([trials[i][0] for i in order], np.int32)
    powers = np.array([trials[i][1] for i in order]) * (1 + rng.uniform(-1e-8, 1e-8, len(trials)))
    durations = np.array([trials[i][2] for i in order])
    onset_samples = 10 * SAMPLES_PER_S + 2 * SAMPLES_PER_S * np.arange(len(trials))
    onsets = onset_samples / SAMPLES_PER_S
    times, clusters = [], []

    def add(cluster, t):
        t = np.atleast_1d(np.asarray(t, np.float64))
        times.append(t)
        clusters.append(np.full(t.size, cluster))

    add(0, (onset_samples + 30) / SAMPLES_PER_S)
    add(1, np.concatenate([(onset_samples - 7500) / SAMPLES_PER_S, (onset_samples + 60) / SAMPLES_PER_S]))
    add(3, (onset_samples - 3000) / SAMPLES_PER_S)
    add(4, np.concatenate([(onset_samples - 9000) / SAMPLES_PER_S, (onset_samples - 6000) / SAMPLES_PER_S]))
    # exactly on the edges, as the analysis's float64 onset + a: in, in, out; and a sample before each
    add(
        5,
        np.concatenate(
            [
                onsets - 0.5,
                onsets,
                onsets + durations,
                (onset_samples - 15001) / SAMPLES_PER_S,
                (onset_samples - 1) / SAMPLES_PER_S,
            ]
        ),
    )
    pre_train = onset_samples[:, None] - 15000 + np.where(durations == 0.05, 1500, 300)[:, None] * np.arange(50)
    pre_train = np.where(np.arange(50) < np.where(durations == 0.05, 10, 50)[:, None], pre_train, -1)
    add(7, np.concatenate([pre_train[pre_train >= 0], onset_samples + 90]) / SAMPLES_PER_S)
    n_random = 400
    add(6, np.sort(rng.integers(9 * SAMPLES_PER_S, int(onset_samples[-1]) + SAMPLES_PER_S, n_random)) / SAMPLES_PER_S)
    t, c = np.concatenate(times), np.concatenate(clusters)
    order = np.argsort(t, kind="stable")
    return write_alf_session(
        folder,
        spike_times=t[order],
        spike_clusters=c[order],
        n_clusters=8,
        onsets=onsets,
        durations=durations,
        emitters=emitters,
        powers=powers,
    )


@dataclasses.dataclass(frozen=True)
class Session:
    folder: Path
    store: Path


def _convert(folder: Path, out: Path, bin_ms: float) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the quirks (shuffled rows, ...) warn; converting them is tested elsewhere
        return Path(convert.convert_session(folder, out, bin_ms=bin_ms).store)


@pytest.fixture(scope="module")
def sessions(tmp_path_factory) -> dict[str, Session]:
    """Three sessions, converted: mixed durations at 10 ms, many trials per condition at 5 ms, edge cases at 5 ms."""
    root = tmp_path_factory.mktemp("responses")
    stores = root / "stores"
    made = {}
    specs = {
        "AL0040_2024-11-01_en1_p0": (_synth_spec(), 10.0),
        "AL0041_2024-11-02_en2_p1": (
            _synth_spec(
                n_trials=150, durations_s=(0.02,), emitters=(4, 11), seed=5, rs_rate_median_hz=3.0, n_clusters=10
            ),
            5.0,
        ),
    }
    for name, (spec, bin_ms) in specs.items():
        folder = root / "data" / name
        synth.write_session(folder, spec)
        made[name] = Session(folder, _convert(folder, stores, bin_ms))
    name = "AL0042_2024-11-03_en1_p0"
    folder = _edge_case_session(root / "data" / name)
    made[name] = Session(folder, _convert(folder, stores, 5.0))
    return made


# --------------------------------------------------------------------------
# The independent reference, from the raw files
# --------------------------------------------------------------------------
def _load(folder: Path, name: str) -> np.ndarray:
    return np.load(folder / name, allow_pickle=False)


def reference_trials(folder: Path) -> pd.DataFrame:
    """One row per cluster x trial: pre and stim rates counted from the spike times with np.searchsorted."""
    times, clusters = _load(folder, schema.SPIKES_TIMES), _load(folder, schema.SPIKES_CLUSTERS)
    onset, duration = _load(folder, schema.STIM_TIMES), _load(folder, schema.STIM_DURATIONS)
    emitter, power = _load(folder, schema.STIM_EMISSION_SITES), _load(folder, schema.STIM_POWER)
    n_clusters = _load(folder, schema.CLUSTERS_DEPTHS_FROM_SURFACE).size
    frames = []
    for k in range(n_clusters):
        t = np.sort(times[clusters == k])
        pre = np.searchsorted(t, onset + 0.0, "left") - np.searchsorted(t, onset + -0.5, "left")
        stim = np.searchsorted(t, onset + duration, "left") - np.searchsorted(t, onset + 0.0, "left")
        frames.append(
            pd.DataFrame(
                {
                    schema.CLUSTER: k,
                    schema.EMITTER: emitter.astype(int),
                    "power": power,
                    schema.DURATION: duration,
                    "pre": pre / 0.5,
                    "stim": stim / duration,
                }
            )
        )
    df = pd.concat(frames, ignore_index=True)
    # power levels: the calibrated jitter is far below 1e-5 mW, the nominal levels far apart
    df["power_key"] = df["power"].round(5)
    level_power = pd.Series(power).groupby(np.round(power, 5)).mean()
    df[schema.POWER] = df["power_key"].map(level_power)
    return df


def _ttest(stim: np.ndarray, pre: np.ndarray) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with np.errstate(all="ignore"):
            return float(scipy.stats.ttest_rel(stim, pre).pvalue)


def _classify(df: pd.DataFrame) -> pd.DataFrame:
    df[schema.ACTIVATED] = df[schema.PCT_CHANGE] > 200
    df[schema.INACTIVATED] = (df[schema.PCT_CHANGE] < -50) & (df[schema.PRE_RATE] > 2)
    df[schema.SIGNIFICANT] = df[schema.P_VALUE] < 0.005
    return df


def _distances(folder: Path, df: pd.DataFrame) -> pd.DataFrame:
    depth = _load(folder, schema.CLUSTERS_DEPTHS_FROM_SURFACE)
    axis = _load(folder, schema.CLUSTERS_TEMPLATE_DEPTHS) + depth
    surface = np.median(axis[np.isfinite(axis)])
    emitter_depth = surface - (70.0 + 100.0 * (df[schema.EMITTER] - 1))
    df[schema.DEPTH_FROM_SURFACE] = depth[df[schema.CLUSTER]]
    df[schema.DISTANCE] = df[schema.DEPTH_FROM_SURFACE] - emitter_depth
    return df


def reference_per_condition(folder: Path) -> pd.DataFrame:
    rows = []
    for (k, e, key, d), g in reference_trials(folder).groupby(KEY):
        stim, pre = g["stim"].to_numpy(), g["pre"].to_numpy()
        diff = stim - pre
        with np.errstate(all="ignore"):
            pct = 100 * (stim.mean() - pre.mean()) / pre.mean()
        rows.append(
            {
                schema.CLUSTER: k,
                schema.EMITTER: e,
                "power_key": key,
                schema.DURATION: d,
                schema.POWER: g[schema.POWER].iloc[0],
                schema.N_TRIALS: len(g),
                schema.PRE_RATE: pre.mean(),
                schema.STIM_RATE: stim.mean(),
                schema.PCT_CHANGE: pct,
                schema.P_VALUE: _ttest(stim, pre),
                "equal_nonzero_differences": len(g) > 1 and np.all(diff == diff[0]) and diff[0] != 0,
            }
        )
    return _distances(folder, _classify(pd.DataFrame(rows)))


def reference_published(folder: Path) -> pd.DataFrame:
    """The published rules, plainly: QC-passing clusters, every trial of an emitter pooled, eps in the division,
    (cluster, emitter) pairs with a zero mean pre or stim rate dropped."""
    qc = _load(folder, schema.CLUSTERS_QC_PASS)
    trials = reference_trials(folder)
    rows = []
    for (k, e), g in trials[qc[trials[schema.CLUSTER]]].groupby([schema.CLUSTER, schema.EMITTER]):
        pre_rate, stim_rate = g["pre"].mean(), g["stim"].mean()
        if pre_rate == 0 or stim_rate == 0:
            continue
        rows.append(
            {
                schema.CLUSTER: k,
                schema.EMITTER: e,
                schema.N_TRIALS: len(g),
                schema.PRE_RATE: pre_rate,
                schema.STIM_RATE: stim_rate,
                schema.PCT_CHANGE: (stim_rate - pre_rate) / (pre_rate + 1e-8) * 100,
                schema.P_VALUE: _ttest(g["stim"].to_numpy(), g["pre"].to_numpy()),
            }
        )
    return _distances(folder, _classify(pd.DataFrame(rows)))


def _assert_matches(mine: pd.DataFrame, ref: pd.DataFrame, key: list[str]) -> pd.DataFrame:
    merged = mine.merge(ref, on=key, how="outer", suffixes=("", "_ref"), indicator=True, validate="1:1")
    assert (merged["_merge"] == "both").all(), merged[merged["_merge"] != "both"][key]
    for col in (*FLOAT_COLUMNS, schema.DISTANCE, schema.DEPTH_FROM_SURFACE):
        np.testing.assert_allclose(merged[col], merged[f"{col}_ref"], rtol=1e-12, atol=0, equal_nan=True, err_msg=col)
    np.testing.assert_array_equal(merged[schema.N_TRIALS], merged[f"{schema.N_TRIALS}_ref"])
    for col in BOOL_COLUMNS:
        np.testing.assert_array_equal(merged[col], merged[f"{col}_ref"], err_msg=col)
    return merged


def _assert_p_values(merged: pd.DataFrame) -> None:
    degenerate = merged.get("equal_nonzero_differences", pd.Series(False, index=merged.index)).astype(bool)
    p, ref = merged[schema.P_VALUE].to_numpy(), merged[f"{schema.P_VALUE}_ref"].to_numpy()
    np.testing.assert_allclose(p[~degenerate], ref[~degenerate], rtol=1e-9, atol=0, equal_nan=True)
    # every difference the same non-zero value: t is infinite, p exactly 0 (scipy: 0, or a rounding residue)
    assert np.all(p[degenerate] == 0)
    assert np.all(ref[degenerate] <= 1e-12)


def _mine(store_path: Path, **kw) -> pd.DataFrame:
    table = responses_table([open_cube(store_path)], **kw)
    table["power_key"] = table[schema.POWER].round(5)
    return table


# --------------------------------------------------------------------------
# Every row equals the reference
# --------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["AL0040_2024-11-01_en1_p0", "AL0041_2024-11-02_en2_p1", "AL0042_2024-11-03_en1_p0"])
def test_per_condition_equals_raw_spike_reference(sessions, name):
    session = sessions[name]
    mine = _mine(session.store)
    ref = reference_per_condition(session.folder)
    merged = _assert_matches(mine, ref, KEY)
    _assert_p_values(merged)
    np.testing.assert_allclose(merged[schema.POWER], merged[f"{schema.POWER}_ref"], rtol=1e-12)
    cube = open_cube(session.store)
    n_conditions = mine.groupby([schema.EMITTER, "power_key", schema.DURATION]).ngroups
    assert len(mine) == cube.sizes[schema.CLUSTER] * n_conditions
    assert list(mine.columns[: len(schema.RESPONSE_COLUMNS)]) == list(schema.RESPONSE_COLUMNS)


def test_edge_cases_are_present_and_right(sessions):
    """The edge-case session really exercises what it claims, with the IEEE / scipy answers."""
    table = _mine(sessions["AL0042_2024-11-03_en1_p0"].store)
    by_cluster = dict(tuple(table.groupby(schema.CLUSTER)))
    single = by_cluster[0][schema.N_TRIALS] == 1
    assert single.any()
    assert (~single).any()
    assert np.isposinf(by_cluster[0][schema.PCT_CHANGE]).all()
    assert by_cluster[0][schema.ACTIVATED].all()
    assert by_cluster[0][schema.P_VALUE][single].isna().all()
    assert (by_cluster[0][schema.P_VALUE][~single] == 0).all()
    assert by_cluster[2][schema.PCT_CHANGE].isna().all()
    assert by_cluster[2][schema.P_VALUE].isna().all()
    assert not by_cluster[2][[schema.ACTIVATED, schema.INACTIVATED, schema.SIGNIFICANT]].any().any()
    assert (by_cluster[3][schema.PRE_RATE] == 2).all()
    assert (by_cluster[3][schema.PCT_CHANGE] == -100).all()
    assert not by_cluster[3][schema.INACTIVATED].any()  # pre rate must exceed 2 Hz
    assert by_cluster[4][schema.INACTIVATED].all()
    edge = by_cluster[5]  # one spike at onset - 0.5 (in), one at onset (in), one at onset + duration (out)
    np.testing.assert_array_equal(edge[schema.PRE_RATE], 2 * 2.0)  # and one a sample before onset
    np.testing.assert_allclose(edge[schema.STIM_RATE], 1 / edge[schema.DURATION], rtol=1e-15)
    equal = by_cluster[7]
    np.testing.assert_allclose(equal[schema.PRE_RATE], 1 / equal[schema.DURATION], rtol=1e-15)
    np.testing.assert_allclose(equal[schema.STIM_RATE], 1 / equal[schema.DURATION], rtol=1e-15)
    assert equal[schema.P_VALUE].isna().all()
    assert sorted(table[schema.EMITTER].unique()) == [2, 9]
    assert table[schema.POWER].nunique() == 2


def test_published_mode_equals_published_rules(sessions):
    for name, session in sessions.items():
        mine = responses_table([open_cube(session.store)], mode="published")
        ref = reference_published(session.folder)
        merged = _assert_matches(mine, ref, [schema.CLUSTER, schema.EMITTER])
        _assert_p_values(merged)
        assert mine[schema.QC_PASS].all(), name
        assert mine[schema.POWER].isna().all()
        assert mine[schema.DURATION].isna().all()


def test_pooling_by_emitter_matches_reference(sessions):
    session = sessions["AL0040_2024-11-01_en1_p0"]
    mine = responses_table([open_cube(session.store)], by=("emitter",))
    trials = reference_trials(session.folder)
    grouped = trials.groupby([schema.CLUSTER, schema.EMITTER])
    ref = pd.DataFrame(
        {
            schema.PRE_RATE: grouped["pre"].mean(),
            schema.STIM_RATE: grouped["stim"].mean(),
            schema.N_TRIALS: grouped.size(),
        }
    ).reset_index()
    merged = mine.merge(ref, on=[schema.CLUSTER, schema.EMITTER], suffixes=("", "_ref"), validate="1:1")
    assert len(merged) == len(mine) == len(ref)
    for col in (schema.PRE_RATE, schema.STIM_RATE, schema.N_TRIALS):
        np.testing.assert_allclose(merged[col], merged[f"{col}_ref"], rtol=1e-12)
    # pooling everything: one condition, every trial
    everything = responses(open_cube(session.store), by=()).compute()
    assert everything.sizes[schema.CONDITION] == 1
    assert everything[schema.N_TRIALS].item() == trials[schema.CLUSTER].eq(0).sum()
    assert everything[schema.EMITTER].item() == schema.ALL_EMITTERS
    assert everything[schema.DISTANCE].isnull().all()


def test_numpy_cube_equals_dask_cube(sessions):
    cube = open_cube(sessions["AL0040_2024-11-01_en1_p0"].store)
    lazy = responses(cube).compute()
    eager = responses(cube.load())
    xr.testing.assert_identical(lazy, eager)


# --------------------------------------------------------------------------
# Window counts: the store's (format 2) or summed from the cube (format 1), equal to the raw spikes
# --------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["AL0040_2024-11-01_en1_p0", "AL0041_2024-11-02_en2_p1", "AL0042_2024-11-03_en1_p0"])
def test_window_counts_equal_raw_spikes_and_both_paths_agree(sessions, name):
    session = sessions[name]
    cube = open_cube(session.store)
    format1 = cube.drop_vars(schema.WINDOW_COUNTS, errors="ignore")  # a store written before window_counts
    from_cube = window_counts(format1).compute()
    durations = load(session.folder, schema.STIM_DURATIONS)
    expected = np.stack(
        [folder_reference(session.folder, -0.5, 0.0), folder_reference(session.folder, 0.0, durations)], axis=-1
    )
    rows = cube[schema.STIM_INDEX].values  # the cube's trials in onset order, mapped back to file rows
    np.testing.assert_array_equal(from_cube.values, expected[:, rows])
    with_counts = format1.assign({schema.WINDOW_COUNTS: from_cube.assign_coords({schema.WINDOW: list(schema.WINDOWS)})})
    if schema.WINDOW_COUNTS in cube:  # the store's own, as converted
        np.testing.assert_array_equal(window_counts(cube).values, expected[:, rows])
        with_counts = cube
    for mode in schema.RESPONSE_MODES:
        xr.testing.assert_identical(
            responses(with_counts, mode=mode).compute(), responses(format1, mode=mode).compute()
        )


def test_the_fast_path_reads_no_cube(sessions):
    """With window_counts, the responses never touch spike_counts: a cube whose counts raise still works."""
    cube = open_cube(sessions["AL0040_2024-11-01_en1_p0"].store)
    counts = window_counts(cube.drop_vars(schema.WINDOW_COUNTS, errors="ignore")).compute()
    fast = cube.drop_vars([schema.SPIKE_COUNTS, schema.WINDOW_COUNTS], errors="ignore").assign(
        {schema.WINDOW_COUNTS: counts}
    )
    fast.attrs = cube.attrs
    xr.testing.assert_identical(responses(fast).compute(), responses(cube).compute())


# --------------------------------------------------------------------------
# Laziness, chunking, schedulers
# --------------------------------------------------------------------------
def test_responses_computes_nothing_until_asked(sessions):
    cube = open_cube(sessions["AL0040_2024-11-01_en1_p0"].store)
    with raise_if_dask_computes():
        results = [responses(cube), responses(cube, mode="published"), responses(cube, by=("emitter", "power"))]
        for r in results:
            for name in (schema.PRE_RATE, schema.P_VALUE, schema.ACTIVATED, schema.SIGNIFICANT):
                assert r[name].chunks is not None, name
            _ = r.sizes, r[schema.DISTANCE].values, r[schema.N_TRIALS].values  # coordinates are in memory
    with raise_if_dask_computes(max_computes=1):
        compute_all(results)


def test_one_compute_for_many_sessions(sessions):
    cubes = [open_cube(s.store) for s in sessions.values()]
    with raise_if_dask_computes(max_computes=1):
        table = responses_table(cubes)
    assert table[schema.SESSION_ID].nunique() == len(sessions)


@pytest.mark.slow
@settings(max_examples=10)
@given(data=st.data())
def test_chunking_does_not_change_responses(sessions, data):
    cube = open_cube(sessions["AL0042_2024-11-03_en1_p0"].store)
    expected = responses(cube).compute()
    # any cluster and trial chunks; time chunks of at least a quarter of the bins (responses joins them anyway)
    smallest = {schema.CLUSTER: 1, schema.TRIAL: 1, schema.TIME: cube.sizes[schema.TIME] // 4}
    chunks = {dim: data.draw(st.integers(smallest.get(dim, 1), size), label=dim) for dim, size in cube.sizes.items()}
    got = responses(cube.chunk(chunks)).compute(scheduler="synchronous")  # many tiny tasks: no thread overhead
    for name in (schema.PRE_RATE, schema.STIM_RATE, schema.PCT_CHANGE, *BOOL_COLUMNS):
        xr.testing.assert_identical(got[name], expected[name])  # exact: integer sums
    np.testing.assert_allclose(got[schema.P_VALUE], expected[schema.P_VALUE], rtol=1e-12, equal_nan=True)


@pytest.mark.slow
def test_distributed_equals_threaded(sessions, tmp_path):
    distributed = pytest.importorskip("distributed")
    cubes = [open_cube(s.store) for s in sessions.values()]
    import dask

    with dask.config.set(scheduler="threads"):
        threaded = responses_table(cubes)
    with distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=":0") as lc:
        with distributed.Client(lc):
            on_cluster = responses_table(cubes)
        # the command line on the same cluster, by its address
        out = tmp_path / "table.parquet"
        stores = next(iter(sessions.values())).store.parent
        assert cli.main(["responses", str(stores), "--out", str(out), "--scheduler", lc.scheduler_address]) == 0
    pd.testing.assert_frame_equal(on_cluster, threaded, check_exact=False, rtol=1e-13)
    from_cli = pd.read_parquet(out)
    pd.testing.assert_frame_equal(from_cli, threaded, check_exact=False, rtol=1e-13, check_dtype=False)


# --------------------------------------------------------------------------
# Bad arguments
# --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"mode": "pooled"}, ValueError, r"mode must be one of .*'pooled'"),
        ({"by": ("emitter", "laser")}, ValueError, r"by must name distinct keys .*'laser'"),
        ({"by": ("power", "power")}, ValueError, r"by must name distinct keys"),
        ({"mode": "published", "by": ("emitter", "power")}, ValueError, r"pools every power .* pass by=None"),
    ],
)
def test_bad_arguments(sessions, kwargs, error, match):
    cube = open_cube(sessions["AL0040_2024-11-01_en1_p0"].store)
    with pytest.raises(error, match=match):
        responses(cube, **kwargs)


def test_not_a_cube():
    with pytest.raises(TypeError, match="responses needs a cube"):
        responses(xr.Dataset())
    with pytest.raises(TypeError, match="expected a cube"):
        responses_table([42])


def test_window_that_is_not_whole_bins_is_refused(sessions):
    cube = open_cube(sessions["AL0040_2024-11-01_en1_p0"].store)
    shifted = cube.assign_attrs({schema.ATTR_WINDOW: [-0.505, 0.995]})
    with pytest.raises(ValueError, match=r"pre window start edge -0\.5 s is not a bin edge"):
        responses(shifted)


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_cli_writes_the_table(sessions, tmp_path, capsys, suffix):
    stores = next(iter(sessions.values())).store.parent
    out = tmp_path / "out" / f"responses{suffix}"
    assert cli.main(["responses", str(stores), "--out", str(out)]) == 0
    table = pd.read_csv(out) if suffix == ".csv" else pd.read_parquet(out)
    assert list(table.columns[: len(schema.RESPONSE_COLUMNS)]) == list(schema.RESPONSE_COLUMNS)
    assert table[schema.SESSION_ID].nunique() == len(sessions)
    expected = responses_table(open_catalog(stores))
    assert len(table) == len(expected)
    np.testing.assert_allclose(table[schema.PCT_CHANGE], expected[schema.PCT_CHANGE], rtol=1e-12, equal_nan=True)
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name]  # no temporary file left
    assert str(out) in capsys.readouterr().out


def test_cli_published_mode_and_by(sessions, tmp_path):
    stores = next(iter(sessions.values())).store.parent
    out = tmp_path / "published.csv"
    assert cli.main(["responses", str(stores), "--out", str(out), "--mode", "published"]) == 0
    assert pd.read_csv(out)[schema.QC_PASS].all()
    out = tmp_path / "by.csv"
    assert cli.main(["responses", str(stores), "--out", str(out), "--by", "emitter,duration"]) == 0
    assert pd.read_csv(out)[schema.POWER].isna().all()


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--out", "{tmp}/table.xlsx"], r"table\.xlsx: unknown table format '\.xlsx'; use \.csv or \.parquet"),
        (["--out", "{tmp}/t.csv", "--by", "emitter,laser"], r"by must name distinct keys"),
    ],
)
def test_cli_errors_are_one_line(sessions, tmp_path, capsys, args, match):
    stores = next(iter(sessions.values())).store.parent
    code = cli.main(["responses", str(stores), *[a.format(tmp=tmp_path) for a in args]])
    err = capsys.readouterr().err
    assert code == 1, err
    assert len(err.strip().splitlines()) == 1, err
    assert pytest.importorskip("re").search(match, err), err
    assert list(tmp_path.iterdir()) == []


def test_cli_session_given_twice(sessions, tmp_path, capsys):
    session = next(iter(sessions.values()))
    code = cli.main(["responses", str(session.store.parent), str(session.store), "--out", str(tmp_path / "t.csv")])
    err = capsys.readouterr().err
    assert code == 1
    assert "given twice" in err
    assert len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_cli_no_stores(tmp_path, capsys):
    code = cli.main(["responses", str(tmp_path), "--out", str(tmp_path / "t.csv")])
    err = capsys.readouterr().err
    assert code == 1
    assert "holds no .zarr stores" in err
    assert len(err.strip().splitlines()) == 1


def test_no_cluster_and_single_trial(sessions):
    cube = open_cube(sessions["AL0040_2024-11-01_en1_p0"].store)
    none_pass = cube.assign_coords({schema.QC_PASS: cube[schema.QC_PASS] & False})
    table = responses_table([none_pass], mode="published")
    assert table.empty
    assert list(table.columns[: len(schema.RESPONSE_COLUMNS)]) == list(schema.RESPONSE_COLUMNS)
    one = responses(cube.isel({schema.TRIAL: [0]})).compute()
    assert one.sizes[schema.CONDITION] == 1
    assert one[schema.P_VALUE].isnull().all()


# --------------------------------------------------------------------------
# Timing columns (issue 11): q_value, latency, first spikes, light artifacts, from the stored timing arrays
# --------------------------------------------------------------------------
def _direction(table: pd.DataFrame) -> np.ndarray:
    responding = table[schema.ACTIVATED] | table[schema.INACTIVATED] | table[schema.SIGNIFICANT]
    return np.where(responding, np.sign(table[schema.STIM_RATE] - table[schema.PRE_RATE]), 0.0)


def _stored_to_reference(store_path: Path, reference) -> np.ndarray:
    """For each stored condition, the reference's condition index (the same trials)."""
    with xr.open_zarr(store_path) as ds:
        stored = ds[schema.TRIAL_CONDITION].values
    mapping = np.full(stored.max() + 1, -1)
    mapping[stored] = reference.trial_condition
    assert len(set(zip(stored.tolist(), reference.trial_condition.tolist(), strict=True))) == mapping.size
    return mapping


def test_timing_columns_equal_independent_computations(quirky_converted):
    """Each column against numpy on the raw cube and raw spikes: per-condition sums, searchsorted first spikes,
    scipy's BH; latency by latency.onset_latency on the independently summed time course."""
    from opto_cube.analysis import latency

    path = quirky_converted.stores[1.0]
    table = responses_table(path)
    reference = condition_courses(path)
    to_ref = _stored_to_reference(path, reference)
    k, c = reference.time_course.shape[:2]
    rows = table  # one session: by cluster, then condition (the stored conditions, per_condition mode)
    assert len(rows) == k * c
    ref_condition = np.tile(to_ref, k)
    # q_value: scipy over the session's finite p-values, NaN where p is NaN
    p = rows[schema.P_VALUE].to_numpy(float)
    finite = np.isfinite(p)
    np.testing.assert_allclose(
        rows[schema.Q_VALUE].to_numpy(float)[finite], scipy.stats.false_discovery_control(p[finite])
    )
    assert rows[schema.Q_VALUE][~finite].isna().all()
    # latency: onset_latency of the independently summed course, in the table's direction
    direction = np.zeros((k, c))
    direction[rows[schema.CLUSTER].to_numpy(), ref_condition] = _direction(rows)
    expected = latency.onset_latency(
        reference.time_course, reference.n_trials, reference.time_s, reference.duration_s, reference.bin_width_s,
        direction=direction,
    )  # fmt: skip
    np.testing.assert_array_equal(rows[schema.LATENCY].to_numpy(float), expected[rows[schema.CLUSTER], ref_condition])
    # first spikes: median / IQR / fraction over each condition's trials, from raw-spike searchsorted bins
    first = reference_first_spikes(quirky_converted.folder, path)
    width_ms = reference.bin_width_s * 1000.0
    for row, condition in zip(rows.itertuples(), ref_condition, strict=True):
        bins = first[row.cluster, reference.trial_condition == condition]
        assert row.reliability == pytest.approx(np.mean(bins >= 0))
        hit = (bins[bins >= 0] + 0.5) * width_ms
        if hit.size:
            assert row.first_spike_ms == pytest.approx(np.median(hit))
            assert row.jitter_ms == pytest.approx(np.percentile(hit, 75) - np.percentile(hit, 25))
        else:
            assert np.isnan(row.first_spike_ms)
            assert np.isnan(row.jitter_ms)
    # light_artifact: the flag of the independently summed course, repeated on the cluster's rows
    flags = latency.light_artifact(
        reference.time_course, reference.n_trials, reference.time_s, reference.duration_s, reference.emitter,
        reference.distance_um, reference.bin_width_s,
    )  # fmt: skip
    np.testing.assert_array_equal(rows[schema.LIGHT_ARTIFACT].to_numpy(bool), flags[rows[schema.CLUSTER]])


def test_significant_by_q(quirky_converted):
    cube = open_cube(quirky_converted.stores[1.0])
    by_q = responses(cube, significant_by="q").compute()
    np.testing.assert_array_equal(by_q[schema.SIGNIFICANT].values, by_q[schema.Q_VALUE].values < schema.SIGNIFICANCE_P)
    by_p = responses(cube).compute()
    np.testing.assert_array_equal(by_p[schema.SIGNIFICANT].values, by_p[schema.P_VALUE].values < schema.SIGNIFICANCE_P)
    with pytest.raises(ValueError, match="significant_by"):
        responses(cube, significant_by="fdr")


def test_timing_columns_are_lazy(quirky_converted):
    cube = open_cube(quirky_converted.stores[1.0])
    with raise_if_dask_computes():
        result = responses(cube)
        pooled = responses(cube, by="emitter", mode="published")
    for name in (*schema.TIMING_COLUMNS,):
        assert result[name].chunks is not None, name
        assert pooled[name].chunks is not None, name
    assert np.isfinite(result[schema.FIRST_SPIKE].values).any()


def test_published_timing_from_pooled_conditions(quirky_converted):
    """Published mode: the timing of the emitter's pooled trials (QC clusters), the shortest pulse's window."""
    from opto_cube.analysis import latency

    path = quirky_converted.stores[1.0]
    reference = condition_courses(path)
    cube = open_cube(path)
    result = responses(cube, mode="published").compute()
    qc = np.asarray(cube[schema.QC_PASS].values, bool)
    emitters = result[schema.EMITTER].values
    pooled = np.stack([reference.time_course[qc][:, reference.emitter == e].sum(axis=1) for e in emitters], axis=1)
    n = np.array([reference.n_trials[reference.emitter == e].sum() for e in emitters])
    shortest = np.array([reference.duration_s[reference.emitter == e].min() for e in emitters])
    sign = np.sign(result[schema.STIM_RATE].values - result[schema.PRE_RATE].values)
    responding = (result[schema.ACTIVATED] | result[schema.INACTIVATED] | result[schema.SIGNIFICANT]).values
    expected = latency.onset_latency(
        pooled,
        n,
        reference.time_s,
        shortest,
        reference.bin_width_s,
        direction=np.where(responding, np.nan_to_num(sign), 0),
    )
    np.testing.assert_array_equal(result[schema.LATENCY].values, expected)
    first = reference_first_spikes(quirky_converted.folder, path)[qc]
    emitter_of_trial = reference.emitter[reference.trial_condition]
    for j, e in enumerate(emitters):
        np.testing.assert_allclose(
            result[schema.RELIABILITY].values[:, j], (first[:, emitter_of_trial == e] >= 0).mean(1)
        )


def test_coarse_bins_give_nan_timing_and_one_warning(tiny_converted):
    cube = open_cube(tiny_converted.stores[10.0])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = responses(cube).compute()
    timing = [w for w in caught if issubclass(w.category, TimingWarning)]
    assert len(timing) == 1
    assert "10 ms bins are coarser than 2 ms" in str(timing[0].message)
    for name in schema.TIMING_COLUMNS[1:-1]:
        assert np.isnan(result[name].values).all(), name
    assert not result[schema.LIGHT_ARTIFACT].values.any()
    assert np.isfinite(result[schema.Q_VALUE].values).any()  # q and the seed's columns still work
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        responses_table([tiny_converted.stores[10.0], tiny_converted.stores[10.0]])
    assert len([w for w in caught if issubclass(w.category, TimingWarning)]) == 1


def test_store_without_timing_arrays_warns_and_keeps_the_rest(tiny_converted, tmp_path):
    cube = open_cube(tiny_converted.stores[10.0]).drop_vars(list(schema.TIMING_ARRAYS))
    with pytest.warns(TimingWarning, match="reconvert"):
        result = responses(cube).compute()
    assert np.isnan(result[schema.LATENCY].values).all()
    full = responses(open_cube(tiny_converted.stores[10.0]), warn=False).compute()
    xr.testing.assert_identical(result[schema.P_VALUE], full[schema.P_VALUE])


def test_planted_latency_and_artifacts_through_the_table(latency_converted):
    """The issue's targets through responses_table: >= 80 % of strongly driven FS units within 2 ms of the
    planted latency; every planted artifact flagged, <= 2 % of the other units."""
    stores, truths = latency_converted.out, latency_converted.truths
    table = responses_table(stores)
    errors, suppression = [], []
    for sid, rows in table.groupby(schema.SESSION_ID):
        truth = truths[sid]
        cluster = rows[schema.CLUSTER].to_numpy()
        planted = truth.latency_s[cluster] * 1000.0
        unit = ~truth.artifact[cluster] & ~truth.spikeless[cluster]
        near_top = (rows[schema.DISTANCE].abs() <= 100) & (rows[schema.POWER] == rows[schema.POWER].max())
        strong_fs = unit & near_top & (truth.waveform_type[cluster] == "FS") & (rows[schema.STIM_RATE] >= 100)
        errors.append((rows[schema.LATENCY] - planted)[strong_fs].to_numpy())
        rs = unit & near_top & (truth.waveform_type[cluster] == "RS") & rows[schema.INACTIVATED]
        suppression.append((rows[schema.LATENCY] - planted)[rs].to_numpy())
        flags = rows.groupby(schema.CLUSTER)[schema.LIGHT_ARTIFACT].first()
        assert flags[truth.artifact[flags.index]].all(), sid  # every planted artifact flagged
        assert flags[~truth.artifact[flags.index]].mean() <= 0.02, sid
    errors, suppression = np.concatenate(errors), np.concatenate(suppression)
    print("FS error quantiles (ms):", np.nanpercentile(errors, [5, 25, 50, 75, 95]), "n", errors.size)
    print("RS suppression error quantiles (ms):", np.nanpercentile(suppression, [5, 25, 50, 75, 95]), "n",
          suppression.size, "found", np.isfinite(suppression).mean())  # fmt: skip
    assert errors.size >= 8
    assert np.mean(np.abs(errors) <= 2.0) >= 0.8  # NaN (missed) counts as a failure


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_cli_table_has_the_timing_columns(latency_converted, tmp_path, capsys, suffix):
    out = tmp_path / f"responses{suffix}"
    args = ["responses", str(latency_converted.out), "--out", str(out), "--significant-by", "q"]
    assert cli.main(args) == 0
    table = pd.read_csv(out) if suffix == ".csv" else pd.read_parquet(out)
    assert list(table.columns[-len(schema.TIMING_COLUMNS) :]) == list(schema.TIMING_COLUMNS)
    expected = responses_table(latency_converted.out, significant_by="q")
    for name in (schema.Q_VALUE, schema.LATENCY, schema.FIRST_SPIKE, schema.JITTER, schema.RELIABILITY):
        np.testing.assert_allclose(table[name], expected[name], rtol=1e-12, equal_nan=True, err_msg=name)
    np.testing.assert_array_equal(table[schema.LIGHT_ARTIFACT].astype(bool), expected[schema.LIGHT_ARTIFACT])
    np.testing.assert_array_equal(table[schema.SIGNIFICANT], table[schema.Q_VALUE] < schema.SIGNIFICANCE_P)
    flagged = table[table[schema.LIGHT_ARTIFACT].astype(bool)].groupby(schema.SESSION_ID)[schema.CLUSTER].nunique()
    assert flagged.tolist() == [3, 3]  # the 3 planted artifact units of each session
