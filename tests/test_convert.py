"""Tests of opto_cube.jobs.convert: exact cubes from quirky sessions, round trips, properties, many sessions.

Every exactness test reads the converted store back with plain ``xr.open_zarr``
and compares per-trial pre, stim and whole-window counts, for every cluster
and trial, with the independent reference of helpers.py (per cluster,
``np.searchsorted`` on the raw spike times: ``onset + a <= t < onset + b``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from helpers import (
    ALL_QUIRKS,
    ALL_QUIRKS_WARNINGS,
    OTHER_SESSION_ID,
    SAMPLES_PER_S,
    SESSION_ID,
    assert_exact,
    condition_courses,
    convert_recording,
    load,
    quirky_spec,
    reference_first_spikes,
    store_listing,
    tiny_spec,
    write_alf_session,
    write_synth,
)
from hypothesis import given, settings
from hypothesis import strategies as st

import opto_cube
from opto_cube import binning, io, schema, synth
from opto_cube.errors import BinningError, OptoCubeError, OptoCubeWarning, StoreError
from opto_cube.jobs import convert

CONVERT_EXAMPLES = min(10, settings.default.max_examples)  # each example converts (a few 0.1 s)


def open_store(result: convert.ConversionResult) -> xr.Dataset:
    assert result.status == "converted", result
    return xr.open_zarr(result.store)


def edge_spike_counts(folder: Path) -> dict[str, int]:
    """Spikes exactly (float64) on each kind of window edge of some trial."""
    times = load(folder, schema.SPIKES_TIMES)
    onsets, durations = load(folder, schema.STIM_TIMES), load(folder, schema.STIM_DURATIONS)
    samples = np.rint(onsets * SAMPLES_PER_S).astype(np.int64)
    grid = np.rint(times * SAMPLES_PER_S).astype(np.int64)
    return {
        "pre start": int(np.isin(times, onsets - 0.5).sum()),
        "onset": int(np.isin(times, onsets).sum()),
        "pulse end": int(np.isin(times, onsets + durations).sum()),
        "sample before pulse end": int(np.isin(grid, samples + np.rint(durations * SAMPLES_PER_S) - 1).sum()),
        "sample before onset": int(np.isin(grid, samples - 1).sum()),
    }


# --------------------------------------------------------------------------
# exactness
# --------------------------------------------------------------------------
@pytest.mark.parametrize("bin_ms", [1.0, 5.0, 10.0])
def test_exact_on_a_session_with_every_quirk(quirky_converted, bin_ms):
    folder = quirky_converted.folder
    assert min(edge_spike_counts(folder).values()) > 0, edge_spike_counts(folder)  # the edges are exercised
    ds = assert_exact(folder, quirky_converted.stores[bin_ms])
    assert ds.attrs[schema.ATTR_BIN_WIDTH] == bin_ms / 1000
    assert ds.sizes[schema.TIME] == round(1500 / bin_ms)


def test_every_quirk_warned_about(quirky_converted):
    for pattern in ALL_QUIRKS_WARNINGS:
        assert any(re.search(pattern, m) for m in quirky_converted.warnings), pattern
    for message in quirky_converted.warnings:
        assert message.startswith(str(quirky_converted.folder))
        assert "\n" not in message


@pytest.mark.parametrize(("bin_ms", "window"), [(10.0, (-0.6, 0.2)), (5.0, (-0.5, 0.05)), (1.0, (-0.75, 0.06))])
def test_exact_with_custom_windows(tmp_path, bin_ms, window):
    """Windows wider than the pre window, and one that ends exactly with the longest pulse."""
    folder = write_synth(tmp_path / SESSION_ID, quirky_spec(omit_waveform_type=False, omit_ks_label=False))
    result, _caught = convert_recording(folder, tmp_path / "stores", bin_ms=bin_ms, window_s=window)
    ds = assert_exact(folder, result.store)
    assert ds.attrs[schema.ATTR_WINDOW] == list(window)
    assert ds[schema.TIME].values[0] == pytest.approx(window[0] + bin_ms / 2000)


@pytest.mark.slow
def test_exact_on_a_larger_session(tmp_path):
    """A "small" synthetic session with every quirk and window-edge spikes in 200 trials, at 1 ms."""
    spec = dataclasses.replace(synth.SIZES["small"], **{**ALL_QUIRKS, "edge_trials": 200})
    folder = write_synth(tmp_path / SESSION_ID, spec)
    result, _ = convert_recording(folder, tmp_path / "stores", bin_ms=1)
    assert_exact(folder, result.store)


# --------------------------------------------------------------------------
# dtypes and refusals
# --------------------------------------------------------------------------
@pytest.mark.parametrize(("n_spikes", "dtype"), [(255, "uint8"), (256, "uint16")])
def test_smallest_dtype_that_holds_the_largest_count(tmp_path, n_spikes, dtype, no_warnings):
    onset_sample = 40 * SAMPLES_PER_S
    times = (onset_sample + np.arange(n_spikes)) / SAMPLES_PER_S  # one 10 ms bin of cluster 1
    folder = write_alf_session(
        tmp_path / SESSION_ID,
        spike_times=times,
        spike_clusters=np.ones(n_spikes),
        n_clusters=3,
        onsets=np.array([onset_sample / SAMPLES_PER_S, 50.0]),
        durations=np.array([0.01, 0.01]),
    )
    result = convert.convert_session(folder, tmp_path / "stores", bin_ms=10)
    assert result.dtype == dtype
    ds = assert_exact(folder, result.store)
    assert ds[schema.SPIKE_COUNTS].dtype == np.dtype(dtype)
    assert int(ds[schema.SPIKE_COUNTS].max()) == n_spikes


@pytest.mark.slow
def test_a_count_past_uint8_after_written_chunks_rebins_the_whole_store(tmp_path, no_warnings):
    """Trial chunks of one trial: the first is written in uint8, the second overflows it; the store is rebuilt."""
    onset_sample = 40 * SAMPLES_PER_S
    times = np.concatenate([[10.0], (onset_sample + np.arange(300)) / SAMPLES_PER_S])
    folder = write_alf_session(
        tmp_path / SESSION_ID,
        spike_times=times,
        spike_clusters=np.ones(times.size),
        n_clusters=2,
        onsets=np.array([10.0, onset_sample / SAMPLES_PER_S]),
        durations=np.array([0.01, 0.01]),
    )
    result = convert.convert_session(folder, tmp_path / "stores", bin_ms=10, chunks=(1, 1))
    assert result.dtype == "uint16"
    assert store_listing(tmp_path / "stores") == [f"{SESSION_ID}.zarr"]
    ds = assert_exact(folder, result.store)
    assert int(ds[schema.SPIKE_COUNTS].max()) == 300
    assert ds[schema.WINDOW_COUNTS].dtype == np.uint16


def test_window_counts_layout(tiny_converted):
    """One chunk (the array is small and read whole), the store's codecs, every chunk written."""
    path = tiny_converted.stores[10.0]
    ds = xr.open_zarr(path)
    windows = ds[schema.WINDOW_COUNTS]
    assert windows.encoding["chunks"] == windows.shape == (ds.sizes[schema.CLUSTER], ds.sizes[schema.TRIAL], 2)
    meta = json.loads((path / schema.WINDOW_COUNTS / "zarr.json").read_text())
    assert [c["name"] for c in meta["codecs"]][1:] == ["zstd", "crc32c"]
    assert meta["dimension_names"] == [schema.CLUSTER, schema.TRIAL, schema.WINDOW]
    assert (path / schema.WINDOW_COUNTS / "c" / "0" / "0" / "0").is_file()


@pytest.mark.parametrize(
    ("bin_ms", "durations", "window", "match"),
    [
        (3, None, None, r"cannot tile the pre window"),
        (5, 0.0125, None, r"cannot tile the stim window \[0, 0\.0125\) s"),
        (1, None, (-0.4, 1.0), r"must cover the pre window"),
        (1, None, (-0.5, 0.03), r"longest pulse \[0, 0\.05\) s"),
    ],
)
def test_binning_refused_before_anything_is_written(session_folder, tmp_path, bin_ms, durations, window, match):
    if durations is not None:
        d = load(session_folder, schema.STIM_DURATIONS)
        d[::2] = durations
        np.save(session_folder / schema.STIM_DURATIONS, d)
    out = tmp_path / "stores"
    with pytest.raises(BinningError, match=match):
        convert.convert_session(session_folder, out, bin_ms=bin_ms, window_s=window)
    assert store_listing(out) == []


@pytest.mark.parametrize("chunks", [(0, 5), (-1, 2), (2.5, 1), (1,), (1, 2, 3), (True, 4)])
def test_bad_chunks_refused(session_folder, tmp_path, chunks):
    with pytest.raises(ValueError, match=r"chunks must be \(clusters, trials\), two positive whole numbers; got"):
        convert.convert_session(session_folder, tmp_path / "stores", chunks=chunks)
    assert store_listing(tmp_path / "stores") == []


# --------------------------------------------------------------------------
# recoverable quirks: each converts exactly, with its warning
# --------------------------------------------------------------------------
def _json_edit(**changes):
    def mutate(folder: Path) -> None:
        info = json.loads((folder / schema.SESSION_JSON).read_text())
        info.update(changes)
        (folder / schema.SESSION_JSON).write_text(json.dumps(info))

    return mutate


def _check_empty(name):
    def check(ds: xr.Dataset, folder: Path) -> None:
        assert set(ds[name].values) == {""}

    return check


def _check_counts_from_arrays(ds: xr.Dataset, folder: Path) -> None:
    n_spikes = load(folder, schema.SPIKES_TIMES).size
    qc = load(folder, schema.CLUSTERS_QC_PASS)
    info = json.loads((folder / schema.SESSION_JSON).read_text())
    truth = {
        "n_spikes": n_spikes,
        "n_trials": load(folder, schema.STIM_TIMES).size,
        "n_qc_pass": int(qc.sum()),
        "n_qc_fail": int((~qc).sum()),
    }
    for key, value in truth.items():
        assert info[key] != value  # the quirk is there
        assert ds.attrs[key] == value
        assert ds.attrs[f"{schema.SESSION_JSON_PREFIX}{key}"] == info[key]


def _check_session_id(ds: xr.Dataset, folder: Path) -> None:
    stated = json.loads((folder / schema.SESSION_JSON).read_text())["session_id"]
    assert stated != folder.name
    assert ds.attrs[schema.ATTR_SESSION_ID] == folder.name
    assert ds.attrs[schema.SESSION_JSON_PREFIX + "session_id"] == stated


def _check_power_range(ds: xr.Dataset, folder: Path) -> None:
    power = load(folder, schema.STIM_POWER)
    assert "power_range_mW" not in json.loads((folder / schema.SESSION_JSON).read_text())
    assert ds.attrs[schema.ATTR_POWER_RANGE] == [power.min(), power.max()]


def _check_power_range_kept(ds: xr.Dataset, folder: Path) -> None:
    assert ds.attrs[schema.ATTR_POWER_RANGE] == [0.25, 8.0]


def _check_top_of_shank(ds: xr.Dataset, folder: Path) -> None:
    assert ds.attrs["top_of_shank_um"] == 12345.0  # kept as given; the geometry uses the cluster depths
    assert ds.attrs[schema.ATTR_SURFACE] != 12345.0


def _check_spikeless(ds: xr.Dataset, folder: Path) -> None:
    spikeless = np.bincount(load(folder, schema.SPIKES_CLUSTERS), minlength=ds.sizes[schema.CLUSTER]) == 0
    assert spikeless.sum() >= 2
    assert ds.sizes[schema.CLUSTER] == load(folder, schema.CLUSTERS_QC_PASS).size
    assert not ds[schema.SPIKE_COUNTS].values[spikeless].any()


QUIRKS = [
    # id, spec changes, mutation of the written folder, warning regex (None: converts silently), extra check
    ("unsorted-spikes", dict(unsorted_spikes=True), None, r"spikes are not sorted in time", None),
    ("unsorted-trials", dict(shuffle_trials=True), None, r"trials are not in onset order", None),
    (
        "no-waveform-type",
        dict(omit_waveform_type=True),
        None,
        r"waveformType\.txt: missing \(optional\)",
        _check_empty(schema.WAVEFORM_TYPE),
    ),
    (
        "no-ks-label",
        dict(omit_ks_label=True),
        None,
        r"KSLabel\.csv: missing \(optional\)",
        _check_empty(schema.KS_LABEL),
    ),
    (
        "session-json-counts",
        dict(session_json_disagrees=True),
        None,
        r"session\.json: n_\w+ = \d+ but the arrays hold",
        _check_counts_from_arrays,
    ),
    (
        "session-id",
        dict(session_id_disagrees=True),
        None,
        r"session\.json: session_id .* differs from the folder name",
        _check_session_id,
    ),
    (
        "top-of-shank",
        {},
        _json_edit(top_of_shank_um=12345.0),
        r"session\.json: top_of_shank_um = 12345\.0",
        _check_top_of_shank,
    ),
    ("no-power-range", dict(omit_power_range=True), None, None, _check_power_range),
    ("power-range-given", {}, _json_edit(power_range_mW=[0.25, 8.0]), None, _check_power_range_kept),
    ("spikeless-rows", dict(spikeless_clusters=3), None, None, _check_spikeless),
    ("no-edge-spikes-no-jitter", dict(edge_spikes=False, jitter_powers=False), None, None, None),
]


@pytest.mark.parametrize(("changes", "mutate", "match", "check"), [q[1:] for q in QUIRKS], ids=[q[0] for q in QUIRKS])
def test_recoverable_quirks_convert_exactly(tmp_path, changes, mutate, match, check):
    folder = write_synth(tmp_path / "data" / SESSION_ID, tiny_spec(**changes))
    if mutate:
        mutate(folder)
    if match is None:
        with warnings.catch_warnings():
            warnings.simplefilter("error", OptoCubeWarning)
            result = convert.convert_session(folder, tmp_path / "stores", bin_ms=10)
    else:
        with pytest.warns(OptoCubeWarning, match=match):
            result = convert.convert_session(folder, tmp_path / "stores", bin_ms=10)
    ds = assert_exact(folder, result.store)
    assert ds.attrs[schema.ATTR_SESSION_ID] == folder.name
    assert Path(result.store).name == f"{folder.name}.zarr"
    if check:
        check(ds, folder)


def test_big_endian_and_narrow_dtypes_convert_exactly(session_folder, tmp_path):
    """Arrays written big-endian, float32 spike times, uint16 cluster ids and int64 emitters are read as such
    (float32 spike times with one warning naming the precision lost)."""
    folder = session_folder
    for name in (schema.STIM_TIMES, schema.STIM_DURATIONS, schema.STIM_POWER, schema.CLUSTERS_TEMPLATE_DEPTHS):
        a = load(folder, name)
        np.save(folder / name, a.astype(a.dtype.newbyteorder(">")))
    np.save(folder / schema.SPIKES_TIMES, load(folder, schema.SPIKES_TIMES).astype(">f4"))
    np.save(folder / schema.SPIKES_CLUSTERS, load(folder, schema.SPIKES_CLUSTERS).astype(">u2"))
    np.save(folder / schema.STIM_EMISSION_SITES, load(folder, schema.STIM_EMISSION_SITES).astype(np.int64))
    with pytest.warns(OptoCubeWarning, match=r"spikes\.times\.npy: spike times are float32 \(not float64\)"):
        result = convert.convert_session(folder, tmp_path / "stores", bin_ms=5)
    ds = assert_exact(folder, result.store)
    assert ds[schema.ONSET].dtype == np.float64
    assert ds[schema.EMITTER].dtype == np.int8


# --------------------------------------------------------------------------
# round trip: what the store holds
# --------------------------------------------------------------------------
def test_round_trip_against_the_template(tiny_converted, no_warnings):
    folder, path = tiny_converted.folder, tiny_converted.stores[10.0]
    opened = xr.open_zarr(path)
    session = io.read_session(folder)
    bins = binning.plan_time_bins(session.stim[schema.DURATION], bin_ms=10)
    template = convert.cube_template(session, bins, opened[schema.SPIKE_COUNTS].dtype)
    arrays = [schema.SPIKE_COUNTS, schema.WINDOW_COUNTS, *schema.TIMING_ARRAYS]  # the template's are placeholders
    actual = opened.drop_vars(arrays).compute()
    assert actual.attrs.pop(schema.ATTR_COMPLETE) is True
    assert isinstance(actual.attrs.pop(schema.ATTR_CHUNK_CRC32C), dict)  # the chunks' checksums (test_store.py)
    xr.testing.assert_identical(actual, template.drop_vars(arrays))
    for name in arrays:
        assert opened[name].attrs == template[name].attrs, name
        assert opened[name].dims == template[name].dims, name
    again = xr.open_zarr(path)
    xr.testing.assert_identical(opened, again)
    assert opened[schema.SPIKE_COUNTS].dims == (schema.CLUSTER, schema.TRIAL, schema.TIME)
    assert opened[schema.SPIKE_COUNTS].dtype.kind == "u"


def test_every_variable_has_units_and_long_name(tiny_converted):
    ds = xr.open_zarr(tiny_converted.stores[10.0])
    names = [*ds.data_vars, *ds.coords]
    assert set(names) == set(schema.VARIABLES)
    for name in names:
        spec = schema.VARIABLES[name]
        assert ds[name].attrs.get("units") == spec.units, name
        assert ds[name].attrs.get("long_name") == spec.long_name, name
        assert ds[name].dims == spec.dims, name


def test_coordinates(tiny_converted):
    folder = tiny_converted.folder
    ds = xr.open_zarr(tiny_converted.stores[10.0])
    k, m = load(folder, schema.CLUSTERS_QC_PASS).size, load(folder, schema.STIM_TIMES).size
    np.testing.assert_array_equal(ds[schema.CLUSTER].values, np.arange(k))
    np.testing.assert_array_equal(ds[schema.TRIAL].values, np.arange(m))
    for name, coord in schema.CLUSTER_FILES.items():
        np.testing.assert_array_equal(ds[coord].values, load(folder, name), err_msg=coord)
    order = ds[schema.STIM_INDEX].values
    for name, coord in schema.STIM_FILES.items():
        np.testing.assert_array_equal(ds[coord].values, load(folder, name)[order], err_msg=coord)
    assert list(ds[schema.WAVEFORM_TYPE].values) == (folder / schema.CLUSTERS_WAVEFORM_TYPE).read_text().split()
    np.testing.assert_allclose(ds[schema.TIME].values, np.arange(-0.495, 1.0, 0.01), rtol=0, atol=1e-12)
    assert ds[schema.EMITTER].dtype == np.int8
    assert ds[schema.QC_PASS].dtype == bool


def test_zarr_metadata(tiny_converted):
    path = tiny_converted.stores[10.0]
    assert json.loads((path / "zarr.json").read_text())["zarr_format"] == 3
    for name in (schema.WAVEFORM_TYPE, schema.KS_LABEL):
        meta = json.loads((path / name / "zarr.json").read_text())
        assert meta["zarr_format"] == 3, name
        assert meta["data_type"] == "string", name  # variable-length UTF-8
        assert "vlen-utf8" in [c["name"] for c in meta["codecs"]]
    for meta_path in path.glob("*/zarr.json"):
        assert json.loads(meta_path.read_text())["zarr_format"] == 3


def test_attributes(tiny_converted):
    folder = tiny_converted.folder
    attrs = xr.open_zarr(tiny_converted.stores[10.0]).attrs
    for key, value in json.loads((folder / schema.SESSION_JSON).read_text()).items():
        assert attrs[key] == value, key  # a clean session: every session.json field, as given
    assert attrs[schema.ATTR_SESSION_ID] == folder.name
    assert attrs[schema.ATTR_BIN_WIDTH] == 0.01
    assert attrs[schema.ATTR_WINDOW] == [-0.5, 1.0]
    assert attrs[schema.ATTR_PRE_WINDOW] == [-0.5, 0.0]
    assert attrs[schema.ATTR_EMITTER_POSITIONS] == [70.0 + 100.0 * i for i in range(14)]
    assert attrs[schema.ATTR_TIP_OFFSET] == 0.0
    assert attrs[schema.ATTR_VERSION] == opto_cube.__version__
    assert attrs[schema.ATTR_POWER_RANGE] == [
        load(folder, schema.STIM_POWER).min(),
        load(folder, schema.STIM_POWER).max(),
    ]


def test_checksums_of_every_source_file(tmp_path):
    """SHA-256 of every file read, laser calibration of the data root (json and mat) included."""
    folders = synth.make_dataset(tmp_path / "data", n_sessions=1, size=tiny_spec(), seed=0, write_mat=True)
    result, _ = convert_recording(folders[0], tmp_path / "stores", bin_ms=10)
    attrs = xr.open_zarr(result.store).attrs
    files = [*folders[0].iterdir(), *(tmp_path / "data").glob("laser_calibration.*")]
    assert {p.name for p in files} >= set(schema.REQUIRED_FILES) | {schema.LASER_CALIBRATION_MAT}
    assert attrs[schema.ATTR_SHA256] == {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in files}
    assert attrs[schema.ATTR_LASER_CALIBRATION] == json.loads(
        (tmp_path / "data" / "laser_calibration.json").read_text()
    )


@pytest.mark.parametrize("tip_offset_um", [float("nan"), float("inf")])
def test_tip_offset_must_be_finite(tmp_path, tip_offset_um):
    with pytest.raises(OptoCubeError, match="tip_offset_um must be a finite distance"):
        convert.convert_session(tmp_path, tmp_path / "stores", tip_offset_um=tip_offset_um)
    assert not (tmp_path / "stores").exists()


@pytest.mark.parametrize("tip_offset_um", [0.0, 25.0, -40.0])
def test_emitter_depth_geometry(tmp_path, tip_offset_um):
    """surface = median(templateDepths + depthsFromSurface); emitter e at 70 + 100 (e - 1) um from the tip."""
    folder = tmp_path / SESSION_ID
    truth = synth.write_session(folder, tiny_spec(emitters=(1, 2, 13, 14)))
    result, _ = convert_recording(folder, tmp_path / "stores", bin_ms=10, tip_offset_um=tip_offset_um)
    ds = xr.open_zarr(result.store)
    both = load(folder, schema.CLUSTERS_TEMPLATE_DEPTHS) + load(folder, schema.CLUSTERS_DEPTHS_FROM_SURFACE)
    surface = float(np.median(both[np.isfinite(both)]))
    assert ds.attrs[schema.ATTR_SURFACE] == surface
    assert ds.attrs[schema.ATTR_TIP_OFFSET] == tip_offset_um
    emitter = ds[schema.EMITTER].values.astype(int)
    expected = surface - (70.0 + 100.0 * (emitter - 1) - tip_offset_um)
    np.testing.assert_allclose(ds[schema.EMITTER_DEPTH].values, expected, rtol=0, atol=1e-9)
    assert set(emitter) == {1, 2, 13, 14}
    deepest = ds[schema.EMITTER_DEPTH].values[emitter == 14]
    np.testing.assert_allclose(deepest, surface - 1370.0 + tip_offset_um)  # not the notebook's off-by-one
    np.testing.assert_allclose(
        ds[schema.EMITTER_DEPTH].values,
        truth.emitter_depth_um(emitter) + tip_offset_um - truth.tip_offset_um,
        atol=1e-9,
    )


def test_unknown_surface(tmp_path):
    folder = write_synth(tmp_path / SESSION_ID)
    np.save(folder / schema.CLUSTERS_DEPTHS_FROM_SURFACE, np.full(load(folder, schema.CLUSTERS_QC_PASS).size, np.nan))
    with pytest.warns(OptoCubeWarning, match="no finite depths"):
        result = convert.convert_session(folder, tmp_path / "stores", bin_ms=10)
    ds = assert_exact(folder, result.store)
    assert np.isnan(ds[schema.EMITTER_DEPTH].values).all()
    assert ds.attrs[schema.ATTR_SURFACE] is None


def test_template_takes_no_memory(session_folder):
    session = io.read_session(session_folder)
    bins = binning.plan_time_bins(session.stim[schema.DURATION], bin_ms=1)
    ds = convert.cube_template(session, bins, np.dtype(np.uint8), chunks=(2, 7, bins.n_bins))
    assert ds[schema.SPIKE_COUNTS].encoding["chunks"] == (2, 7, bins.n_bins)
    for name in (schema.SPIKE_COUNTS, schema.WINDOW_COUNTS):  # broadcast zeros: no byte per element
        data = ds[name].data
        assert isinstance(data, np.ndarray), name
        assert data.strides == (0,) * data.ndim, name
        assert not data.any(), name


# --------------------------------------------------------------------------
# up to date, skipped, overwritten
# --------------------------------------------------------------------------
def test_skip_rebuild_and_overwrite(session_folder, tmp_path, no_warnings):
    out = tmp_path / "stores"
    first = convert.convert_session(session_folder, out, bin_ms=10)
    assert first.status == "converted"
    assert first.shape[0] == load(session_folder, schema.CLUSTERS_QC_PASS).size
    assert convert.convert_session(session_folder, out, bin_ms=10).status == "skipped"
    with pytest.raises(StoreError, match=r"holds this session converted with bin_width_s 0\.01 \(this run: 0\.005\)"):
        convert.convert_session(session_folder, out, bin_ms=5)  # other parameters: never replaced silently
    assert convert.convert_session(session_folder, out, bin_ms=5, overwrite=True).status == "converted"
    with pytest.raises(StoreError, match=r"holds this session converted with tip_offset_um 0\.0 \(this run: 10\.0\)"):
        convert.convert_session(session_folder, out, bin_ms=5, tip_offset_um=10)
    assert (
        convert.convert_session(session_folder, out, bin_ms=5, tip_offset_um=10, overwrite=True).status == "converted"
    )
    assert convert.convert_session(session_folder, out, bin_ms=5, tip_offset_um=10).status == "skipped"
    assert (
        convert.convert_session(session_folder, out, bin_ms=5, tip_offset_um=10, overwrite=True).status == "converted"
    )
    powers = load(session_folder, schema.STIM_POWER)
    np.save(session_folder / schema.STIM_POWER, powers * 2)  # a source changed: rebuilt
    assert convert.convert_session(session_folder, out, bin_ms=5, tip_offset_um=10).status == "converted"
    ds = assert_exact(session_folder, out / f"{SESSION_ID}.zarr")
    np.testing.assert_array_equal(ds[schema.POWER].values, (powers * 2)[ds[schema.STIM_INDEX].values])
    assert store_listing(out) == [f"{SESSION_ID}.zarr"]


# --------------------------------------------------------------------------
# properties on random sessions written with numpy
# --------------------------------------------------------------------------
DURATION_SAMPLES = (300, 600, 1500)  # 10, 20, 50 ms: tiled by 1, 5 and 10 ms bins


@st.composite
def random_session(draw, unique_onsets: bool = False):
    """Spikes and trials on the 30 kHz grid, spikes crowding the window edges, files in any order."""
    n_clusters = draw(st.integers(1, 5))
    n_trials = draw(st.integers(1, 8))
    base = draw(st.integers(SAMPLES_PER_S, 3000 * SAMPLES_PER_S))
    offsets = st.lists(st.integers(0, 4 * SAMPLES_PER_S), min_size=n_trials, max_size=n_trials, unique=unique_onsets)
    onset_samples = base + np.array(draw(offsets), dtype=np.int64)
    duration_samples = np.array(draw(st.lists(st.sampled_from(DURATION_SAMPLES), min_size=n_trials, max_size=n_trials)))
    n_spikes = draw(st.integers(0, 60))
    times, clusters = [], []
    for _ in range(n_spikes):
        i = draw(st.integers(0, n_trials - 1))
        edge = draw(st.sampled_from([-15000, 0, int(duration_samples[i]), 30000, None]))
        if edge is None:
            sample = onset_samples[i] + draw(st.integers(-20000, 35000))
            times.append(sample / SAMPLES_PER_S)
        elif draw(st.booleans()):  # exactly the float64 edge the analysis computes
            times.append(onset_samples[i] / SAMPLES_PER_S + edge / SAMPLES_PER_S)
        else:
            times.append((onset_samples[i] + edge + draw(st.sampled_from([-1, 0, 1]))) / SAMPLES_PER_S)
        clusters.append(draw(st.integers(0, n_clusters - 1)))
    times, clusters = np.array(times, dtype=np.float64), np.array(clusters, dtype=np.int32)
    if draw(st.booleans()):
        order = np.argsort(times, kind="stable")
        times, clusters = times[order], clusters[order]
    bin_ms = draw(st.sampled_from([1.0, 5.0, 10.0]))
    return dict(
        spike_times=times,
        spike_clusters=clusters,
        n_clusters=n_clusters,
        onsets=onset_samples / SAMPLES_PER_S,
        durations=duration_samples / SAMPLES_PER_S,
    ), bin_ms


def _fresh(tmp_path_factory, name="h") -> Path:
    return tmp_path_factory.mktemp(name)


@settings(max_examples=CONVERT_EXAMPLES)
@given(random_session())
def test_property_counts_conserved(tmp_path_factory, case):
    """Sum over time = spikes in the window, pre and stim windows exact, for every cluster and trial."""
    arrays, bin_ms = case
    tmp = _fresh(tmp_path_factory)
    folder = write_alf_session(tmp / SESSION_ID, **arrays)
    result, _ = convert_recording(folder, tmp / "stores", bin_ms=bin_ms)
    ds = assert_exact(folder, result.store)
    assert ds[schema.SPIKE_COUNTS].dtype == binning.smallest_uint(int(ds[schema.SPIKE_COUNTS].max()))


@pytest.mark.slow
@settings(max_examples=CONVERT_EXAMPLES)
@given(random_session(), st.integers(1, 6), st.integers(1, 9))
def test_property_chunking_does_not_change_the_cube(tmp_path_factory, case, cluster_chunk, trial_chunk):
    arrays, bin_ms = case
    tmp = _fresh(tmp_path_factory)
    folder = write_alf_session(tmp / SESSION_ID, **arrays)
    default, _ = convert_recording(folder, tmp / "default", bin_ms=bin_ms)
    chunked, _ = convert_recording(folder, tmp / "chunked", bin_ms=bin_ms, chunks=(cluster_chunk, trial_chunk))
    a, b = xr.open_zarr(default.store), xr.open_zarr(chunked.store)
    for ds in (a, b):  # the chunks' checksums differ with the chunks
        del ds.attrs[schema.ATTR_CHUNK_CRC32C]
    xr.testing.assert_identical(a.compute(), b.compute())
    expected = (
        min(cluster_chunk, a.sizes[schema.CLUSTER]),
        min(trial_chunk, a.sizes[schema.TRIAL]),
        a.sizes[schema.TIME],
    )
    assert b[schema.SPIKE_COUNTS].encoding["chunks"] == expected


@pytest.mark.slow
@settings(max_examples=CONVERT_EXAMPLES)
@given(random_session(unique_onsets=True), st.randoms(use_true_random=False))
def test_property_trial_order_in_the_files_does_not_matter(tmp_path_factory, case, random):
    arrays, bin_ms = case
    tmp = _fresh(tmp_path_factory)
    rows = list(range(len(arrays["onsets"])))
    random.shuffle(rows)
    shuffled = {
        **arrays,
        "onsets": arrays["onsets"][rows],
        "durations": arrays["durations"][rows],
        "emitters": (np.arange(len(rows)) % 14 + 1)[rows],
        "powers": np.arange(len(rows), dtype=float)[rows],
    }
    arrays = {**arrays, "emitters": np.arange(len(rows)) % 14 + 1, "powers": np.arange(len(rows), dtype=float)}
    a, _ = convert_recording(write_alf_session(tmp / "a" / SESSION_ID, **arrays), tmp / "sa", bin_ms=bin_ms)
    b, caught = convert_recording(write_alf_session(tmp / "b" / SESSION_ID, **shuffled), tmp / "sb", bin_ms=bin_ms)
    in_order = np.all(np.diff(shuffled["onsets"]) >= 0)
    assert in_order or any("not in onset order" in m for m in caught)
    ds_a, ds_b = xr.open_zarr(a.store).compute(), xr.open_zarr(b.store).compute()
    np.testing.assert_array_equal(ds_b[schema.STIM_INDEX].values, np.argsort(rows)[ds_a[schema.STIM_INDEX].values])
    ignore = [schema.STIM_INDEX]
    xr.testing.assert_equal(ds_a.drop_vars(ignore), ds_b.drop_vars(ignore))
    assert_exact(tmp / "b" / SESSION_ID, b.store)


# --------------------------------------------------------------------------
# many sessions
# --------------------------------------------------------------------------
@pytest.fixture
def three_sessions(data_root):
    for i, name in enumerate((SESSION_ID, OTHER_SESSION_ID, "AL0036_2024-12-07_en3_p0")):
        write_synth(data_root / schema.SESSIONS_DIR / name, tiny_spec(seed=10 + i, n_trials=30))
    return data_root


def _cubes(out: Path) -> dict[str, xr.Dataset]:
    return {p.name: xr.open_zarr(p).compute() for p in sorted(out.glob("*.zarr"))}


@pytest.mark.slow
def test_jobs_do_not_change_the_cubes(three_sessions, tmp_path, no_warnings, monkeypatch):
    """Two local processes give the same cubes and the same failure as one, session for session."""
    monkeypatch.setattr(convert, "JOBS_MIN_CUBE_BYTES_PER_WORKER", 0)  # processes even for tiny cubes
    assert convert._local_workers(io.find_sessions(three_sessions), 2, 10) == 2
    broken = three_sessions / schema.SESSIONS_DIR / OTHER_SESSION_ID
    (broken / schema.STIM_POWER).write_bytes(b"garbage")
    serial = convert.convert(three_sessions, tmp_path / "serial", jobs=1, bin_ms=10)
    parallel = convert.convert(three_sessions, tmp_path / "parallel", jobs=2, bin_ms=10)
    names = sorted(p.name for p in (three_sessions / schema.SESSIONS_DIR).iterdir())
    assert [r.session_id for r in serial] == [r.session_id for r in parallel] == names
    assert [r.status for r in serial] == [r.status for r in parallel] == ["converted", "failed", "converted"]
    assert serial[1].error == parallel[1].error
    a, b = _cubes(tmp_path / "serial"), _cubes(tmp_path / "parallel")
    assert list(a) == list(b) == [f"{names[0]}.zarr", f"{names[2]}.zarr"]
    for name in a:
        xr.testing.assert_identical(a[name], b[name])
    assert store_listing(tmp_path / "parallel") == list(b)


def test_jobs_start_processes_only_when_they_pay(three_sessions, monkeypatch):
    """At most one worker per session; one (no process) when the cubes are too small for processes to pay."""
    folders = io.find_sessions(three_sessions)
    cube = convert._cube_bytes(folders[0], 10)
    n_clusters, n_trials = load(folders[0], schema.CLUSTERS_QC_PASS).size, load(folders[0], schema.STIM_TIMES).size
    assert cube == n_clusters * n_trials * 150  # (-0.5, 1.0) s in 10 ms bins, uint8
    total = sum(convert._cube_bytes(f, 1) for f in folders)
    monkeypatch.setattr(convert, "JOBS_MIN_CUBE_BYTES_PER_WORKER", total // 2)
    assert convert._local_workers(folders, 2, 1) == 2  # enough bytes for two workers
    assert convert._local_workers(folders, 8, 1) == 1  # not for three (capped at the 3 sessions)
    assert convert._local_workers(folders, 2, 10) == 1  # 10x fewer bytes at 10 ms
    assert convert._local_workers(folders[:1], 4, 1) == 1  # one session: never a process
    monkeypatch.setattr(convert, "JOBS_MIN_CUBE_BYTES_PER_WORKER", 0)
    assert convert._local_workers(folders, 8, 1) == 3


def test_a_broken_session_does_not_stop_the_others(three_sessions, tmp_path):
    broken = three_sessions / schema.SESSIONS_DIR / OTHER_SESSION_ID
    (broken / schema.STIM_POWER).write_bytes(b"garbage")
    out = tmp_path / "stores"
    results = convert.convert(three_sessions, out, bin_ms=10)
    status = {r.session_id: r.status for r in results}
    assert status == {SESSION_ID: "converted", OTHER_SESSION_ID: "failed", "AL0036_2024-12-07_en3_p0": "converted"}
    failed = next(r for r in results if r.status == "failed")
    assert failed.error.startswith(str(broken / schema.STIM_POWER))
    assert "\n" not in failed.error
    assert "failed" in str(failed)
    assert OTHER_SESSION_ID in str(failed)
    assert store_listing(out) == [f"{SESSION_ID}.zarr", "AL0036_2024-12-07_en3_p0.zarr"]
    for name in (SESSION_ID, "AL0036_2024-12-07_en3_p0"):
        assert_exact(three_sessions / schema.SESSIONS_DIR / name, out / f"{name}.zarr")


def test_a_dataset_of_quirky_sessions(tiny_dataset):
    """synth.make_dataset's sessions (shuffled trials, edge spikes, jittered powers): each store exact."""
    assert len(tiny_dataset.results) == len(tiny_dataset.folders) == 3
    by_id = {r.session_id: r for r in tiny_dataset.results}
    for folder in tiny_dataset.folders:
        assert Path(by_id[folder.name].store) == tiny_dataset.out / f"{folder.name}.zarr"
        assert_exact(folder, by_id[folder.name].store)
    assert store_listing(tiny_dataset.out) == sorted(f"{f.name}.zarr" for f in tiny_dataset.folders)


def test_warnings_are_part_of_the_result(data_root, tmp_path):
    write_synth(data_root / schema.SESSIONS_DIR / SESSION_ID, tiny_spec(omit_ks_label=True))
    (result,) = convert.convert(data_root, tmp_path / "stores", bin_ms=10)  # no warning escapes: recorded instead
    assert result.status == "converted"
    assert len(result.warnings) == 1
    assert "ks_label left empty" in result.warnings[0]


def test_select_sessions(three_sessions, tmp_path, no_warnings):
    results = convert.convert(three_sessions, tmp_path / "stores", sessions=[OTHER_SESSION_ID], bin_ms=10)
    assert [r.session_id for r in results] == [OTHER_SESSION_ID]
    assert store_listing(tmp_path / "stores") == [f"{OTHER_SESSION_ID}.zarr"]
    with pytest.raises(OptoCubeError, match=r"no session named 'AL9999_x'"):
        convert.convert(three_sessions, tmp_path / "stores", sessions=["AL9999_x"], bin_ms=10)


def test_one_session_folder_as_data_root(session_folder, tmp_path, no_warnings):
    (result,) = convert.convert(session_folder, tmp_path / "new" / "stores", bin_ms=10)
    assert result.status == "converted"
    assert Path(result.store).parent == tmp_path / "new" / "stores"


# --------------------------------------------------------------------------
# stored timing: condition_counts, first_spike_bin (one pass with the cube)
# --------------------------------------------------------------------------
@pytest.mark.parametrize("bin_ms", [1.0, 5.0, 10.0])
def test_stored_timing_is_exact(quirky_converted, bin_ms):
    """condition_counts = the cube summed per condition (numpy); first_spike_bin = searchsorted on raw spikes."""
    from opto_cube.analysis.conditions import trial_conditions

    path = quirky_converted.stores[bin_ms]
    opened = xr.open_zarr(path)
    cube = opened[schema.SPIKE_COUNTS].values
    code = opened[schema.TRIAL_CONDITION].values
    conditions = trial_conditions(opened, schema.CONDITION_KEYS)  # the contract's conditions, reused
    np.testing.assert_array_equal(code, conditions.code)
    for stored, name in schema.STORED_CONDITION_COORDS.items():
        np.testing.assert_array_equal(opened[stored].values, conditions.coords[name], err_msg=stored)
    course = opened[schema.CONDITION_COUNTS]
    assert course.dims == (schema.CLUSTER, schema.CONDITION, schema.TIME)
    assert course.dtype.kind == "u"
    expected = np.stack([cube[:, code == c].sum(axis=1) for c in range(code.max() + 1)], axis=1)
    np.testing.assert_array_equal(course.values, expected)
    assert course.dtype == binning.smallest_uint(int(expected.max()))
    # the same partition of trials as an independent grouping by (emitter, rounded power, duration)
    reference = condition_courses(path)
    pairs = set(zip(code.tolist(), reference.trial_condition.tolist(), strict=True))
    assert len(pairs) == len(set(code.tolist())) == len(set(reference.trial_condition.tolist()))
    first = opened[schema.FIRST_SPIKE_BIN]
    assert first.dims == (schema.CLUSTER, schema.TRIAL)
    assert first.dtype == np.int16
    np.testing.assert_array_equal(first.values, reference_first_spikes(quirky_converted.folder, path))
    assert (first.values >= 0).any()
    assert (first.values < 0).any()


def test_stored_timing_chunks_written_and_compressed(quirky_converted):
    import zarr

    from opto_cube.store.write import COMPRESSORS

    group = zarr.open_group(quirky_converted.stores[1.0], mode="r")
    for name in schema.TIMING_ARRAYS:
        array = group[name]
        assert [type(c) for c in array.compressors] == [type(c) for c in COMPRESSORS], name
        assert array.nchunks_initialized == array.nchunks, name
