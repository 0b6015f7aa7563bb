"""Tests of opto_cube.synth: the synthetic sessions match docs/format.md and their ground truth."""

from __future__ import annotations

import dataclasses
import json
import time

import numpy as np
import pytest

from opto_cube import schema, synth

SESSION_NAME = "AL0034_2024-12-05_en1_p0"
SESSION_JSON_FIELDS = (
    "session_id",
    "subject",
    "date",
    "en",
    "probe_index",
    "top_chan",
    "calibration",
    "power_level_scaling",
    "sampling_rate",
    "n_spikes",
    "n_clusters",
    "n_channels",
    "n_trials",
    "top_of_shank_um",
    "calibration_slope_mW",
    "calibration_intercept_mW",
    "spike_time_range_s",
    "stim_time_range_s",
    "n_qc_pass",
    "n_qc_fail",
    "qc_thresholds",
)
FLOAT64_PER_CLUSTER = (
    schema.CLUSTERS_TEMPLATE_DEPTHS,
    schema.CLUSTERS_DEPTHS_FROM_SURFACE,
    schema.CLUSTERS_PRESENCE_RATIO,
    schema.CLUSTERS_ISI_VIOLATIONS,
    schema.CLUSTERS_AMPLITUDE_CUTOFF,
    schema.CLUSTERS_TROUGH_TO_PEAK,
)


def load(folder, name):
    return np.load(folder / name, allow_pickle=False)


def session_json(folder) -> dict:
    return json.loads((folder / schema.SESSION_JSON).read_text())


def qc_rule(folder) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        return (
            (load(folder, schema.CLUSTERS_PRESENCE_RATIO) > schema.QC_PRESENCE_RATIO_MIN)
            & (load(folder, schema.CLUSTERS_ISI_VIOLATIONS) < schema.QC_ISI_VIOLATIONS_MAX)
            & (load(folder, schema.CLUSTERS_AMPLITUDE_CUTOFF) < schema.QC_AMPLITUDE_CUTOFF_MAX)
        )


def edge_hits(folder) -> int:
    """Spikes exactly (float64) on onset - 0.5, onset or onset + duration of some trial."""
    times = load(folder, schema.SPIKES_TIMES)
    onset, duration = load(folder, schema.STIM_TIMES), load(folder, schema.STIM_DURATIONS)
    edges = np.concatenate([onset + schema.PRE_WINDOW_S[0], onset, onset + duration])
    return int(np.isin(times, edges).sum())


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    folder = tmp_path_factory.mktemp("small") / SESSION_NAME
    return folder, synth.write_session(folder, synth.SIZES["small"])


def tiny_session(tmp_path, **changes):
    folder = tmp_path / SESSION_NAME
    return folder, synth.write_session(folder, dataclasses.replace(synth.SIZES["tiny"], **changes))


def check_format(folder) -> None:
    """Every file of docs/format.md with its dtype and shape, consistent across files."""
    for name in (*schema.REQUIRED_FILES, *schema.OPTIONAL_FILES):
        assert (folder / name).is_file(), name
    times, clusters = load(folder, schema.SPIKES_TIMES), load(folder, schema.SPIKES_CLUSTERS)
    templates, channels = load(folder, schema.CLUSTERS_TEMPLATES), load(folder, schema.CLUSTERS_CHANNEL_POSITIONS)
    n_clusters, n_samples, n_channels = templates.shape
    assert times.dtype == np.float64
    assert clusters.dtype == np.int32
    assert times.shape == clusters.shape
    assert templates.dtype == np.float64
    assert n_samples == synth.TEMPLATE_SAMPLES
    assert channels.dtype == np.float64
    assert channels.shape == (n_channels, 2)
    assert clusters.min() >= 0
    assert clusters.max() < n_clusters
    for name in FLOAT64_PER_CLUSTER:
        assert load(folder, name).dtype == np.float64, name
        assert load(folder, name).shape == (n_clusters,), name
    assert load(folder, schema.CLUSTERS_QC_PASS).dtype == np.bool_
    assert load(folder, schema.CLUSTERS_PEAK_CHANNEL).dtype == np.int32
    assert load(folder, schema.CLUSTERS_PEAK_CHANNEL).shape == (n_clusters,)
    onset = load(folder, schema.STIM_TIMES)
    for name, dtype in (
        (schema.STIM_TIMES, np.float64),
        (schema.STIM_EMISSION_SITES, np.int32),
        (schema.STIM_POWER, np.float64),
        (schema.STIM_DURATIONS, np.float64),
    ):
        assert load(folder, name).dtype == dtype, name
        assert load(folder, name).shape == onset.shape, name
    emitters = load(folder, schema.STIM_EMISSION_SITES)
    assert emitters.min() >= 1
    assert emitters.max() <= schema.N_EMITTERS
    lines = (folder / schema.CLUSTERS_WAVEFORM_TYPE).read_text().split("\n")
    assert lines[-1] == ""
    assert len(lines) == n_clusters + 1
    assert set(lines[:-1]) <= set(schema.WAVEFORM_TYPES)
    rows = (folder / schema.CLUSTERS_KS_LABEL).read_text().splitlines()
    assert rows[0] == "cluster_id,KSLabel"
    assert len(rows) == n_clusters + 1
    assert [int(r.split(",")[0]) for r in rows[1:]] == list(range(n_clusters))
    assert {r.split(",")[1] for r in rows[1:]} <= {"good", "mua"}
    meta = session_json(folder)
    assert meta["n_spikes"] == times.size
    assert meta["n_clusters"] == n_clusters
    assert meta["n_trials"] == onset.size
    assert meta["n_channels"] == n_channels
    assert meta["n_qc_pass"] + meta["n_qc_fail"] == n_clusters


@pytest.mark.parametrize("size", ["tiny", "small"])
def test_files_dtypes_and_shapes(tmp_path, size):
    folder = tmp_path / SESSION_NAME
    synth.write_session(folder, synth.SIZES[size])
    check_format(folder)
    spec = synth.SIZES[size]
    assert load(folder, schema.CLUSTERS_TEMPLATES).shape == (spec.n_clusters, synth.TEMPLATE_SAMPLES, spec.n_channels)
    assert load(folder, schema.STIM_TIMES).size == spec.n_trials


def test_tiny_is_tiny(tmp_path):
    folder, _ = tiny_session(tmp_path)
    assert 1_000 <= load(folder, schema.SPIKES_TIMES).size <= 10_000


@pytest.mark.slow
def test_realistic_size(tmp_path):
    folder = tmp_path / SESSION_NAME
    start = time.perf_counter()
    synth.write_session(folder, synth.SIZES["realistic"])
    assert time.perf_counter() - start < 20.0
    check_format(folder)
    meta = session_json(folder)
    assert meta["n_clusters"] == 300
    assert meta["n_trials"] == 4200
    assert 5_500_000 <= meta["n_spikes"] <= 7_500_000
    assert 3000.0 <= meta["spike_time_range_s"][1] <= 4000.0


def test_times_on_sample_grid(small):
    folder, _ = small
    for name in (schema.SPIKES_TIMES, schema.STIM_TIMES):
        samples = load(folder, name) * schema.SAMPLING_RATE_HZ
        np.testing.assert_allclose(samples, np.rint(samples), rtol=0, atol=1e-6)


def test_powers_and_durations(small):
    folder, _ = small
    spec = synth.SIZES["small"]
    power = load(folder, schema.STIM_POWER)
    nominal = np.asarray(spec.powers_mw)[np.argmin(np.abs(power[:, None] - np.asarray(spec.powers_mw)), axis=1)]
    assert np.all(np.abs(power / nominal - 1) < 1e-7)
    assert np.any(power != nominal)
    assert set(load(folder, schema.STIM_DURATIONS).tolist()) == set(spec.durations_s)  # exact float64 values
    sites = load(folder, schema.STIM_EMISSION_SITES)
    assert set(sites.tolist()) == set(spec.emitters)


def test_trials_cover_conditions_and_spacing(small):
    folder, _ = small
    onset = np.sort(load(folder, schema.STIM_TIMES))
    gaps = np.diff(onset)
    assert gaps.min() >= 0.6 - 1e-9
    assert gaps.max() <= 1.0 + 1e-9
    conditions = set(
        zip(
            load(folder, schema.STIM_EMISSION_SITES).tolist(),
            np.round(load(folder, schema.STIM_POWER), 3).tolist(),
            load(folder, schema.STIM_DURATIONS).tolist(),
            strict=True,
        )
    )
    spec = synth.SIZES["small"]
    assert len(conditions) == min(spec.n_trials, len(spec.emitters) * len(spec.powers_mw) * len(spec.durations_s))


def test_surface_constant_and_depth_range(small):
    folder, truth = small
    total = load(folder, schema.CLUSTERS_TEMPLATE_DEPTHS) + load(folder, schema.CLUSTERS_DEPTHS_FROM_SURFACE)
    finite = total[np.isfinite(total)]
    np.testing.assert_allclose(finite, truth.surface_position_um, rtol=0, atol=1e-9)
    assert session_json(folder)["top_of_shank_um"] == truth.surface_position_um
    assert np.all(np.isfinite(load(folder, schema.CLUSTERS_TEMPLATE_DEPTHS)))
    depth = truth.depth_from_surface_um
    assert depth.min() >= 0
    assert depth.max() <= 1600
    emitter_depth = truth.emitter_depth_um(np.arange(1, 15))
    assert np.sum((emitter_depth > depth.min()) & (emitter_depth < depth.max())) >= 10


def test_qc_pass_follows_rule(small):
    folder, _ = small
    qc_pass = load(folder, schema.CLUSTERS_QC_PASS)
    np.testing.assert_array_equal(qc_pass, qc_rule(folder))
    assert 0.5 < qc_pass.mean() < 0.95


def test_realistic_qc_fail_fraction_in_range(tmp_path):
    spec = dataclasses.replace(synth.SIZES["realistic"], n_trials=50, lead_in_s=5.0, tail_s=5.0, n_channels=32)
    folder = tmp_path / SESSION_NAME
    synth.write_session(folder, spec)
    assert 0.12 <= 1 - load(folder, schema.CLUSTERS_QC_PASS).mean() <= 0.3


def test_refractory_period(small):
    folder, truth = small
    times, clusters = load(folder, schema.SPIKES_TIMES), load(folder, schema.SPIKES_CLUSTERS)
    order = np.lexsort((times, clusters))
    same = np.diff(clusters[order]) == 0
    assert np.diff(times[order])[same].min() >= truth.refractory_s - 1e-9


def test_templates_and_widths(small):
    folder, truth = small
    width = load(folder, schema.CLUSTERS_TROUGH_TO_PEAK)
    fs = truth.waveform_type == "FS"
    assert np.nanmax(width[fs]) <= 0.45
    assert np.nanmin(width[~fs]) >= 0.5
    peak = load(folder, schema.CLUSTERS_PEAK_CHANNEL)
    channels = load(folder, schema.CLUSTERS_CHANNEL_POSITIONS)
    known = peak >= 0
    assert np.all(np.abs(channels[peak[known], 1] - load(folder, schema.CLUSTERS_TEMPLATE_DEPTHS)[known]) < 40)
    assert set(np.unique(channels[:, 0])) <= {11.0, 27.0, 43.0, 59.0}


def test_window_edge_spikes_exist(small):
    folder, _ = small
    times = load(folder, schema.SPIKES_TIMES)
    onset, duration = load(folder, schema.STIM_TIMES), load(folder, schema.STIM_DURATIONS)
    assert np.isin(onset - 0.5, times).any()
    assert np.isin(onset + duration, times).any()
    assert np.isin(onset, times).any()
    grid = np.rint(times * schema.SAMPLING_RATE_HZ)
    onset_grid = np.rint(onset * schema.SAMPLING_RATE_HZ)
    assert np.isin(onset_grid - 15000 - 1, grid).any()
    assert np.isin(onset_grid + 1, grid).any()


def test_session_json_fields(small):
    folder, truth = small
    meta = session_json(folder)
    assert set(SESSION_JSON_FIELDS) <= set(meta)
    assert meta["session_id"] == folder.name == truth.session_id
    assert meta["subject"] == "AL_0034"
    assert meta["date"] == "2024-12-05"
    assert meta["en"] == 1
    assert meta["probe_index"] == 0
    assert meta["sampling_rate"] == schema.SAMPLING_RATE_HZ
    assert meta["qc_thresholds"] == {
        "presence_ratio_min": schema.QC_PRESENCE_RATIO_MIN,
        "isi_violations_ratio_max": schema.QC_ISI_VIOLATIONS_MAX,
        "amplitude_cutoff_max": schema.QC_AMPLITUDE_CUTOFF_MAX,
    }
    times, onset = load(folder, schema.SPIKES_TIMES), load(folder, schema.STIM_TIMES)
    assert meta["spike_time_range_s"] == [times.min(), times.max()]
    assert meta["stim_time_range_s"] == [onset.min(), onset.max()]
    qc_pass = load(folder, schema.CLUSTERS_QC_PASS)
    assert meta["n_qc_pass"] == qc_pass.sum()
    assert meta["n_qc_fail"] == (~qc_pass).sum()
    channels = load(folder, schema.CLUSTERS_CHANNEL_POSITIONS)
    assert channels[meta["top_chan"], 1] == meta["top_of_shank_um"]


# quirk -> (spec changes turning it on, the same turning it off, does the session folder show it?)
QUIRKS = {
    "spikeless_clusters": (
        {"spikeless_clusters": 2},
        {"spikeless_clusters": 0},
        lambda f: np.any(
            np.bincount(load(f, schema.SPIKES_CLUSTERS), minlength=load(f, schema.CLUSTERS_QC_PASS).size) == 0
        ),
    ),
    "nan_depth_clusters": (
        {"nan_depth_clusters": 1},
        {"nan_depth_clusters": 0},
        lambda f: np.isnan(load(f, schema.CLUSTERS_DEPTHS_FROM_SURFACE)).any(),
    ),
    "nan_qc_fraction": (
        {"nan_qc_fraction": 0.05},
        {"nan_qc_fraction": 0.0},
        lambda f: all(
            np.isnan(load(f, n)).any()
            for n in (schema.CLUSTERS_PRESENCE_RATIO, schema.CLUSTERS_ISI_VIOLATIONS, schema.CLUSTERS_AMPLITUDE_CUTOFF)
        ),
    ),
    "unknown_peak_channel_fraction": (
        {"unknown_peak_channel_fraction": 0.05},
        {"unknown_peak_channel_fraction": 0.0},
        lambda f: (load(f, schema.CLUSTERS_PEAK_CHANNEL) == -1).any(),
    ),
    "jitter_powers": (
        {"jitter_powers": True},
        {"jitter_powers": False},
        lambda f: not np.isin(load(f, schema.STIM_POWER), synth.SIZES["tiny"].powers_mw).all(),
    ),
    "shuffle_trials": (
        {"shuffle_trials": True},
        {"shuffle_trials": False},
        lambda f: np.any(np.diff(load(f, schema.STIM_TIMES)) < 0),
    ),
    "unsorted_spikes": (
        {"unsorted_spikes": True},
        {"unsorted_spikes": False},
        lambda f: np.any(np.diff(load(f, schema.SPIKES_TIMES)) < 0),
    ),
    "edge_spikes": ({"edge_spikes": True}, {"edge_spikes": False}, lambda f: edge_hits(f) >= 3),
    "omit_waveform_type": (
        {"omit_waveform_type": True},
        {"omit_waveform_type": False},
        lambda f: not (f / schema.CLUSTERS_WAVEFORM_TYPE).exists(),
    ),
    "omit_ks_label": (
        {"omit_ks_label": True},
        {"omit_ks_label": False},
        lambda f: not (f / schema.CLUSTERS_KS_LABEL).exists(),
    ),
    "session_json_disagrees": (
        {"session_json_disagrees": True},
        {"session_json_disagrees": False},
        lambda f: session_json(f)["n_spikes"] != load(f, schema.SPIKES_TIMES).size,
    ),
    "session_id_disagrees": (
        {"session_id_disagrees": True},
        {"session_id_disagrees": False},
        lambda f: session_json(f)["session_id"] != f.name,
    ),
    "omit_power_range": (
        {"omit_power_range": True},
        {"omit_power_range": False},
        lambda f: "power_range_mW" not in session_json(f),
    ),
}


@pytest.mark.parametrize("on", [True, False], ids=["on", "off"])
@pytest.mark.parametrize("quirk", sorted(QUIRKS))
def test_quirk_appears_only_when_asked(tmp_path, quirk, on):
    turn_on, turn_off, shows = QUIRKS[quirk]
    folder, _ = tiny_session(tmp_path, **(turn_on if on else turn_off))
    assert bool(shows(folder)) is on
    np.testing.assert_array_equal(load(folder, schema.CLUSTERS_QC_PASS), qc_rule(folder))


def test_quirk_details(tmp_path):
    folder, _ = tiny_session(tmp_path, omit_power_range=False, nan_qc_fraction=0.3)
    meta = session_json(folder)
    power = load(folder, schema.STIM_POWER)
    assert meta["power_range_mW"] == [power.min(), power.max()]
    nan_qc = np.isnan(load(folder, schema.CLUSTERS_PRESENCE_RATIO))
    assert not load(folder, schema.CLUSTERS_QC_PASS)[nan_qc].any()
    unknown = load(folder, schema.CLUSTERS_PEAK_CHANNEL) == -1
    assert np.isnan(load(folder, schema.CLUSTERS_TROUGH_TO_PEAK)[unknown]).all()
    assert not load(folder, schema.CLUSTERS_TEMPLATES)[unknown].any()


def test_ground_truth_multipliers(small):
    _, truth = small
    clusters = np.arange(truth.waveform_type.size)[:, None]
    emitters = np.arange(1, schema.N_EMITTERS + 1)[None, :]
    distance = np.abs(truth.depth_from_surface_um[clusters] - truth.emitter_depth_um(emitters))
    multiplier = truth.rate_multiplier(clusters, emitters, 4.0)
    fs = np.broadcast_to(truth.waveform_type[clusters] == "FS", distance.shape)
    neuron = np.broadcast_to(~truth.artifact[clusters], distance.shape)  # artifact units have no opto effect
    near, far = distance <= 50, distance >= 1300
    assert (fs & near).any()
    assert (~fs & near).any()
    assert far.any()
    assert np.all(multiplier[fs & near & neuron] > 3)
    assert np.all(multiplier[~fs & near & neuron] < 0.5)
    assert np.all(multiplier[~neuron] == 1.0)
    np.testing.assert_allclose(multiplier[far], 1.0, atol=0.15)
    weak, strong = truth.rate_multiplier(clusters, emitters, 0.5), multiplier
    assert np.all(np.abs(strong - 1) >= np.abs(weak - 1))  # grows with power
    assert np.all(truth.rate_multiplier(clusters, emitters, 4.0, with_refractory=True)[fs] <= strong[fs] + 1e-12)


def test_spikes_follow_ground_truth(tmp_path):
    """Counted stim / pre rates agree with the truth's multiplier, per cluster and emitter."""
    spec = dataclasses.replace(
        synth.SIZES["small"],
        n_clusters=30,
        n_trials=450,
        emitters=(3, 7, 11),
        powers_mw=(4.0,),
        durations_s=(0.05,),
        iti_s=(0.6, 0.7),
        seed=3,
    )
    folder = tmp_path / SESSION_NAME
    truth = synth.write_session(folder, spec)
    times, clusters = load(folder, schema.SPIKES_TIMES), load(folder, schema.SPIKES_CLUSTERS)
    onset, emitter = load(folder, schema.STIM_TIMES), load(folder, schema.STIM_EMISSION_SITES)
    checked = {"up": 0, "down": 0, "flat": 0}
    for cluster in np.flatnonzero(~truth.spikeless & ~truth.artifact):  # artifacts: see the tests below
        own = np.sort(times[clusters == cluster])
        for e in spec.emitters:
            starts = onset[emitter == e]
            stim = np.searchsorted(own, starts + 0.05) - np.searchsorted(own, starts)
            pre = np.searchsorted(own, starts) - np.searchsorted(own, starts - 0.5)
            if pre.sum() < 100:
                continue
            expected = truth.window_multiplier(cluster, e, 4.0, 0.05, with_refractory=True)
            expected_count = pre.sum() / 0.5 * 0.05 * expected  # from the observed baseline
            slack = 4 * np.sqrt(expected_count + 1) + 0.15 * expected_count  # Poisson noise + refractory model
            assert abs(stim.sum() - expected_count) < slack, (cluster, e, stim.sum(), expected_count)
            ratio = (stim.sum() / 0.05) / (pre.sum() / 0.5)
            if expected > 2.5:
                assert ratio > 2, (cluster, e, ratio, expected)
                checked["up"] += 1
            elif expected < 0.4:
                assert ratio < 0.7, (cluster, e, ratio, expected)
                checked["down"] += 1
            elif 0.9 < expected < 1.1:
                checked["flat"] += 1
    assert min(checked.values()) >= 1, checked


def test_same_seed_same_files(tmp_path):
    first, _ = tiny_session(tmp_path / "a")
    second, _ = tiny_session(tmp_path / "b")
    other, _ = tiny_session(tmp_path / "c", seed=1)
    names = sorted(p.name for p in first.iterdir())
    assert names == sorted(p.name for p in second.iterdir())
    assert all((first / n).read_bytes() == (second / n).read_bytes() for n in names)
    assert (first / schema.SPIKES_TIMES).read_bytes() != (other / schema.SPIKES_TIMES).read_bytes()


def test_make_dataset(tmp_path):
    folders = synth.make_dataset(tmp_path, n_sessions=4, size="tiny", seed=3)
    assert len({f.name for f in folders}) == 4
    assert all(f.parent == tmp_path / schema.SESSIONS_DIR for f in folders)
    assert len({f.name.split("_")[0] for f in folders}) >= 2
    assert not (tmp_path / schema.LASER_CALIBRATION_MAT).exists()  # odd seed: json only by default
    calibration = json.loads((tmp_path / schema.LASER_CALIBRATION_JSON).read_text())
    for folder in folders:
        meta = session_json(folder)
        assert meta["session_id"] == folder.name
        laser = calibration[meta["calibration"]]
        assert laser["slope_mW"] == meta["calibration_slope_mW"]
        assert laser["intercept_mW"] == meta["calibration_intercept_mW"]
        truth = synth.load_ground_truth(tmp_path, folder.name)
        assert truth.session_id == folder.name
        assert truth.surface_position_um == meta["top_of_shank_um"]
        assert not any(p.name.startswith("ground") for p in folder.iterdir())
    assert {"slope_mW", "intercept_mW", "levels"} <= set(next(iter(calibration.values())))


def test_make_dataset_mat_and_truth_roundtrip(tmp_path):
    from scipy.io import loadmat

    folder = synth.make_dataset(tmp_path, n_sessions=1, size="tiny", seed=5, write_mat=True)[0]
    mat = loadmat(tmp_path / schema.LASER_CALIBRATION_MAT, simplify_cells=True)
    calibration = json.loads((tmp_path / schema.LASER_CALIBRATION_JSON).read_text())
    for laser, entry in calibration.items():
        assert mat[laser]["slope_mW"] == entry["slope_mW"]
    spec = dataclasses.replace(synth.SIZES["tiny"], seed=0)
    direct = synth.write_session(tmp_path / "again" / folder.name, spec)
    loaded = synth.GroundTruth.from_json(json.loads(json.dumps(direct.to_json())))
    np.testing.assert_array_equal(loaded.waveform_type, direct.waveform_type)
    np.testing.assert_array_equal(loaded.baseline_rate_hz, direct.baseline_rate_hz)
    assert loaded.length_constant_um == direct.length_constant_um


def test_waveform_type_truth_survives_omitted_file(tmp_path):
    folder, truth = tiny_session(tmp_path, omit_waveform_type=True)
    assert set(truth.waveform_type.tolist()) == {"RS", "FS"}
    assert not (folder / schema.CLUSTERS_WAVEFORM_TYPE).exists()


def test_bad_specs_refused():
    with pytest.raises(ValueError, match="activation_latency_ms"):
        synth.SessionSpec(activation_latency_ms=(5.0, 2.0))
    with pytest.raises(ValueError, match="artifact_probability"):
        synth.SessionSpec(artifact_probability=1.5)
    with pytest.raises(ValueError, match="artifact_window_ms"):
        synth.SessionSpec(artifact_window_ms=0.0)
    with pytest.raises(ValueError, match="whole milliseconds"):
        synth.SessionSpec(durations_s=(0.0105,))
    with pytest.raises(ValueError, match="emitters"):
        synth.SessionSpec(emitters=(0, 1))
    with pytest.raises(ValueError, match="unknown size"):
        synth.make_dataset("unused", size="huge")


# --------------------------------------------------------------------------
# Latency and light-artifact ground truth
# --------------------------------------------------------------------------
def first_spikes_after(own: np.ndarray, starts: np.ndarray, stops: np.ndarray) -> np.ndarray:
    """Time of the first spike in [start, stop) after ``start`` (NaN when none), by searchsorted."""
    if own.size == 0:
        return np.full(starts.shape, np.nan)
    index = np.searchsorted(own, starts)
    found = index < own.size
    first = np.where(found, own[np.minimum(index, own.size - 1)], np.inf)
    return np.where(first < stops, first - starts, np.nan)


def test_latency_and_artifact_truth(small):
    _, truth = small
    spec = synth.SIZES["small"]
    responding = ~truth.spikeless & ~truth.artifact
    latency_ms = truth.latency_s * 1000.0
    assert np.all(np.isnan(latency_ms[~responding]))
    fs = truth.waveform_type == "FS"
    for mask, (lo, hi) in (
        (fs & responding, spec.activation_latency_ms),
        (~fs & responding, spec.suppression_latency_ms),
    ):
        assert np.all((latency_ms[mask] >= lo - 1e-9) & (latency_ms[mask] <= hi + 1e-9))
    samples = truth.latency_s[responding] * synth.SAMPLES_PER_S
    np.testing.assert_allclose(samples, np.rint(samples), rtol=0, atol=1e-6)  # on the 30 kHz grid
    assert truth.artifact.sum() == spec.artifact_clusters
    assert not np.any(truth.artifact & truth.spikeless)
    assert np.all(truth.gain[truth.artifact] == 0.0)
    assert synth.SIZES["tiny"].artifact_clusters == 0
    assert synth.SIZES["realistic"].artifact_clusters >= 1


def test_artifact_units_fire_after_onset_and_offset(tmp_path):
    spec = dataclasses.replace(synth.SIZES["small"], n_clusters=30, n_trials=300, artifact_clusters=3, seed=4)
    folder = tmp_path / SESSION_NAME
    truth = synth.write_session(folder, spec)
    times, clusters = load(folder, schema.SPIKES_TIMES), load(folder, schema.SPIKES_CLUSTERS)
    onset, duration = load(folder, schema.STIM_TIMES), load(folder, schema.STIM_DURATIONS)
    emitter = load(folder, schema.STIM_EMISSION_SITES)
    window = spec.artifact_window_ms / 1000.0
    for cluster in range(spec.n_clusters):
        own = np.sort(times[clusters == cluster])
        for edge in (onset, onset + duration):
            hit = np.isfinite(first_spikes_after(own, edge, edge + window))
            if truth.artifact[cluster]:
                for e in spec.emitters:  # most trials, at every emitter
                    assert hit[emitter == e].mean() >= 0.75, (cluster, e)
            else:
                assert hit.mean() <= 0.1, cluster


def test_response_starts_at_the_planted_latency(tmp_path):
    """Pooled over strongly driven FS units: no extra spikes before the latency, many right after it."""
    spec = dataclasses.replace(synth.SIZES["latency"], n_clusters=60, n_trials=300, artifact_clusters=0, seed=2)
    folder = tmp_path / SESSION_NAME
    truth = synth.write_session(folder, spec)
    times, clusters = load(folder, schema.SPIKES_TIMES), load(folder, schema.SPIKES_CLUSTERS)
    onset, emitter = load(folder, schema.STIM_TIMES), load(folder, schema.STIM_EMISSION_SITES)
    power = load(folder, schema.STIM_POWER)
    before, after, expected_before, checked = 0, 0, 0.0, 0
    for cluster in np.flatnonzero((truth.waveform_type == "FS") & ~truth.spikeless):
        own = np.sort(times[clusters == cluster])
        for e in spec.emitters:
            if truth.rate_multiplier(cluster, e, 4.0) < 5:
                continue
            starts = onset[(emitter == e) & (power > 3.0)]
            lat = truth.latency_s[cluster]
            before += int((np.searchsorted(own, starts + lat) - np.searchsorted(own, starts)).sum())
            after += int((np.searchsorted(own, starts + lat + 0.002) - np.searchsorted(own, starts + lat)).sum())
            expected_before += truth.baseline_rate_hz[cluster] * lat * starts.size
            checked += 1
    assert checked >= 3
    assert before <= expected_before + 4 * np.sqrt(expected_before + 1)  # baseline only before the latency
    assert after >= 3 * (before / max(expected_before, 1e-9)) * expected_before / 2  # a jump right after it


def test_ground_truth_json_keeps_latency_and_artifacts(tmp_path):
    folder = synth.make_dataset(
        tmp_path, n_sessions=1, size=dataclasses.replace(synth.SIZES["tiny"], artifact_clusters=2)
    )[0]
    truth = synth.load_ground_truth(tmp_path, folder.name)
    assert truth.artifact.sum() == 2
    np.testing.assert_array_equal(np.isnan(truth.latency_s), truth.artifact | truth.spikeless)
    old = {k: v for k, v in truth.to_json().items() if k not in ("latency_s", "artifact")}  # a truth of before
    again = synth.GroundTruth.from_json(old)
    assert not again.artifact.any()
    assert np.all(again.latency_s == 0.0)
