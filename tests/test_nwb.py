"""NWB in and out (opto_cube.jobs.to_nwb, opto_cube.io.nwb): ALF -> NWB -> cube equals ALF -> cube, the file is
valid and readable by plain pynwb, incomplete NWB files are refused in one line, and the ``to-nwb`` command."""

from __future__ import annotations

import json
import os
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from helpers import (
    ALL_QUIRKS_WARNINGS,
    SAMPLES_PER_S,
    SESSION_ID,
    assert_exact,
    assert_same_cube,
    convert_recording,
    load,
    quirky_spec,
    reference_counts,
    tiny_spec,
    write_alf_session,
    write_foreign_nwb,
    write_synth,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from opto_cube import cli, io, schema, synth
from opto_cube.errors import OptoCubeError, OptoCubeWarning, SessionFormatError
from opto_cube.io import alf, nwb
from opto_cube.io.npy import sha256_file
from opto_cube.jobs import convert
from opto_cube.jobs import to_nwb as nwb_writer

pynwb = pytest.importorskip("pynwb")


def quiet_to_nwb(folder: Path, out: Path, **params) -> Path:
    """write_nwb of a session folder whose quirks warn (the warnings are tested in test_io.py)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OptoCubeWarning)
        return nwb_writer.write_nwb(folder, out / f"{folder.name}.nwb", **params)


def convert_quiet(source: Path, out: Path, **params) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OptoCubeWarning)
        return Path(convert.convert_session(source, out, **params).store)


@pytest.fixture(scope="module")
def quirky_nwb(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny session with every quirk of the generator (spikeless rows, NaN depth and metrics, peak channel
    -1, missing waveformType/KSLabel, unsorted spikes and trials, window-edge spikes, jittered powers, a
    disagreeing session.json) in a data root with a laser calibration, and its NWB file. Read-only."""
    base = tmp_path_factory.mktemp("quirky_nwb")
    folder = write_synth(base / "data" / schema.SESSIONS_DIR / SESSION_ID, quirky_spec())
    (base / "data" / schema.LASER_CALIBRATION_JSON).write_text(json.dumps({"laser_1": {"slope_mW": 0.00123}}))
    return folder, quiet_to_nwb(folder, base / "nwb")


# --------------------------------------------------------------------------
# The round trip
# --------------------------------------------------------------------------
@pytest.mark.parametrize("bin_ms", [1.0, 10.0])
def test_round_trip_every_quirk(quirky_nwb, tmp_path, bin_ms):
    folder, path = quirky_nwb
    alf = convert_quiet(folder, tmp_path / "alf", bin_ms=bin_ms)
    through = convert_quiet(path, tmp_path / "nwb", bin_ms=bin_ms)
    assert through.name == f"{SESSION_ID}.zarr"
    assert_same_cube(alf, through, path)
    ds = assert_exact(folder, through)  # and exact against the raw files
    assert ds.attrs[schema.ATTR_LASER_CALIBRATION] == {"laser_1": {"slope_mW": 0.00123}}
    assert (ds[schema.WAVEFORM_TYPE].values == "").all()
    assert (ds[schema.PEAK_CHANNEL].values == -1).any()
    assert np.isnan(ds[schema.PRESENCE_RATIO].values).any()
    assert np.isnan(ds[schema.DEPTH_FROM_SURFACE].values).any()


@pytest.mark.slow
def test_round_trip_dataset_with_tip_offset(tmp_path):
    """synth.make_dataset's sessions (its default quirks, optional .mat), through ``to_nwb`` and ``convert``."""
    folders = synth.make_dataset(tmp_path / "data", n_sessions=2, size="tiny", seed=4)
    results = nwb_writer.to_nwb(tmp_path / "data", tmp_path / "nwb", tip_offset_um=25.0)
    assert [r.status for r in results] == ["written", "written"]
    assert sorted(p.name for p in (tmp_path / "nwb").iterdir()) == sorted(f"{f.name}.nwb" for f in folders)
    converted = convert.convert(tmp_path / "nwb", tmp_path / "through", bin_ms=10, tip_offset_um=25.0)
    assert [r.status for r in converted] == ["converted", "converted"]
    for folder in folders:
        alf = convert_quiet(folder, tmp_path / "alf", bin_ms=10, tip_offset_um=25.0)
        assert_same_cube(alf, tmp_path / "through" / f"{folder.name}.zarr", tmp_path / "nwb" / f"{folder.name}.nwb")


@pytest.mark.slow
@settings(max_examples=8)
@given(
    n_clusters=st.integers(1, 5),
    spikes=st.lists(st.tuples(st.integers(0, 4), st.integers(0, 40 * SAMPLES_PER_S)), max_size=200),
    trials=st.lists(
        st.tuples(
            st.integers(SAMPLES_PER_S, 38 * SAMPLES_PER_S),
            st.sampled_from([0.01, 0.05, 0.2]),
            st.integers(1, 14),
            st.sampled_from([0.5, 1.0, 3.25]),
        ),
        min_size=1,
        max_size=12,
    ),
)
def test_round_trip_random_sessions(tmp_path_factory, n_clusters, spikes, trials):
    """Random sessions on the 30 kHz grid (spikeless clusters, unsorted trials, shared spike times)."""
    base = tmp_path_factory.mktemp("random")
    spikes = [(c % n_clusters, t) for c, t in spikes]
    folder = write_alf_session(
        base / SESSION_ID,
        spike_times=np.array([t for _, t in spikes], dtype=np.float64) / SAMPLES_PER_S,
        spike_clusters=np.array([c for c, _ in spikes], dtype=np.int32),
        n_clusters=n_clusters,
        onsets=np.array([t for t, *_ in trials], dtype=np.float64) / SAMPLES_PER_S,
        durations=np.array([d for _, d, *_ in trials]),
        emitters=np.array([e for *_, e, _ in trials], dtype=np.int32),
        powers=np.array([p for *_, p in trials]),
    )
    path = quiet_to_nwb(folder, base / "nwb")
    assert_same_cube(convert_quiet(folder, base / "alf", bin_ms=5), convert_quiet(path, base / "b", bin_ms=5), path)


@pytest.mark.parametrize("block_len", [1, 7, 1 << 21])
@pytest.mark.parametrize("which", ["sorted", "unsorted"])
def test_spike_times_grouped_by_unit_in_blocks(quirky_nwb, session_folder, tmp_path, block_len, which):
    """The streamed scatter gives each unit's spikes in time order, whatever the block length."""
    folder = session_folder if which == "sorted" else quirky_nwb[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OptoCubeWarning)
        session = io.read_session(folder)
    assert session.spikes.in_memory == (which == "unsorted")
    times, ends = nwb_writer._spike_times_by_unit(session, tmp_path / "scratch", block_len=block_len)
    raw_t, raw_c = load(folder, schema.SPIKES_TIMES), load(folder, schema.SPIKES_CLUSTERS)
    grouped = times[0 : len(times)]
    starts = np.r_[0, ends[:-1]]
    for cid, (a, b) in enumerate(zip(starts, ends, strict=True)):
        np.testing.assert_array_equal(grouped[a:b], np.sort(raw_t[raw_c == cid]))
    assert (tmp_path / "scratch").stat().st_size == raw_t.size * 8


# --------------------------------------------------------------------------
# The file itself: valid, and readable with plain pynwb
# --------------------------------------------------------------------------
def test_valid_for_pynwb(quirky_nwb):
    assert pynwb.validate(path=str(quirky_nwb[1])) == []


@pytest.mark.slow
def test_nwbinspector_no_critical_finding(quirky_nwb):
    inspector = pytest.importorskip("nwbinspector")
    messages = list(inspector.inspect_nwbfile(nwbfile_path=str(quirky_nwb[1])))
    critical = [m for m in messages if m.importance.name in ("CRITICAL", "PYNWB_VALIDATION", "ERROR")]
    assert critical == [], [f"{m.check_function_name}: {m.message}" for m in critical]
    assert messages, "the inspector ran (it always has suggestions)"


def test_readable_with_plain_pynwb(quirky_nwb):
    folder, path = quirky_nwb
    times, ids = load(folder, schema.SPIKES_TIMES), load(folder, schema.SPIKES_CLUSTERS)
    k = load(folder, schema.CLUSTERS_TEMPLATE_DEPTHS).size
    with pynwb.NWBHDF5IO(path, mode="r") as reader:
        f = reader.read()
        assert f.session_id == SESSION_ID
        assert f.subject.subject_id
        units = f.units.to_dataframe()
        assert len(units) == k
        assert (units.index.values == np.arange(k)).all()
        for cid in range(k):  # every cluster's spikes, sorted; spikeless rows kept
            np.testing.assert_array_equal(units["spike_times"].iloc[cid], np.sort(times[ids == cid]))
        assert (units["spike_times"].map(len) == 0).any()
        for file_name, column in schema.CLUSTER_FILES.items():
            np.testing.assert_array_equal(
                units[column].values.astype(load(folder, file_name).dtype), load(folder, file_name)
            )
        templates = np.stack(units["waveform_mean"].values)
        np.testing.assert_array_equal(templates, load(folder, schema.CLUSTERS_TEMPLATES))
        electrodes = f.electrodes.to_dataframe()
        np.testing.assert_array_equal(
            electrodes[["rel_x", "rel_y"]].values, load(folder, schema.CLUSTERS_CHANNEL_POSITIONS)
        )
        pulses = f.intervals[schema.NWB_PULSES]
        assert type(pulses).__name__ == "OptogeneticPulsesTable"
        np.testing.assert_array_equal(pulses["start_time"].data[:], load(folder, schema.STIM_TIMES))
        np.testing.assert_array_equal(pulses[schema.DURATION].data[:], load(folder, schema.STIM_DURATIONS))
        np.testing.assert_array_equal(pulses["power_in_mW"].data[:], load(folder, schema.STIM_POWER))
        np.testing.assert_array_equal(pulses[schema.EMITTER].data[:], load(folder, schema.STIM_EMISSION_SITES))
        sites = pulses["optogenetic_sites"].target.table
        site_rows = pulses["optogenetic_sites"].target.data[:]
        np.testing.assert_array_equal(
            sites[schema.EMITTER].data[:][site_rows], load(folder, schema.STIM_EMISSION_SITES)
        )
        np.testing.assert_array_equal(sites[schema.NWB_POSITION_FROM_TIP].data[:], schema.EMITTER_POSITIONS_FROM_TIP_UM)
        meta = f.processing[schema.NWB_MODULE][schema.NWB_METADATA].to_dataframe()
        meta = {key: json.loads(value) for key, value in zip(meta["key"], meta["value"], strict=True)}
        session_json = json.loads((folder / schema.SESSION_JSON).read_text())
        assert {
            k: v for k, v in session_json.items() if k not in schema.SESSION_JSON_COUNTS and k != "session_id"
        }.items() <= meta["session_json"].items()
        assert meta[schema.ATTR_TIP_OFFSET] == 0.0
        assert meta[schema.ATTR_VERSION]
        assert meta[schema.ATTR_SHA256][schema.SPIKES_TIMES] == sha256_file(folder / schema.SPIKES_TIMES)
        assert meta["laser_calibration"] == {"laser_1": {"slope_mW": 0.00123}}


def test_with_cube_binned_aligned_spikes(quirky_nwb, tmp_path):
    folder, _ = quirky_nwb
    store = convert_quiet(folder, tmp_path / "stores", bin_ms=10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OptoCubeWarning)
        path = nwb_writer.write_nwb(folder, tmp_path / f"{SESSION_ID}.nwb", cube=store)
    assert pynwb.validate(path=str(path)) == []
    ds = xr.open_zarr(store)
    with pynwb.NWBHDF5IO(path, mode="r") as reader:
        binned = reader.read().processing[schema.NWB_MODULE][schema.NWB_BINNED]
        data, onsets = binned.data[:], binned.event_timestamps[:]
        indices, labels = binned.condition_indices[:], list(binned.condition_labels[:])
        assert binned.bin_width_in_ms == 10.0
        assert binned.event_to_bin_offset_in_ms == -500.0
    np.testing.assert_array_equal(onsets, ds[schema.ONSET].values)  # pulses in onset order, as the cube's trials
    np.testing.assert_array_equal(data, ds[schema.SPIKE_COUNTS].values)
    level_of, levels = schema.power_levels(ds[schema.POWER].values)
    for trial in range(onsets.size):  # each pulse's label names its emitter, power level and duration
        label = labels[indices[trial]]
        assert f"emitter={int(ds[schema.EMITTER][trial])} " in label
        assert f"power_mw={levels[level_of[trial]]:.6g} " in label
        assert label.endswith(f"duration_s={float(ds[schema.DURATION][trial]):g}")
    triples = set(zip(ds[schema.EMITTER].values, level_of, ds[schema.DURATION].values, strict=True))
    assert len(set(labels)) == len(labels) == len(triples) == len(set(indices.tolist()))


def test_with_cube_of_another_session_refused(quirky_nwb, tmp_path, tiny_converted):
    folder, _ = quirky_nwb
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OptoCubeWarning)
        with pytest.raises(OptoCubeError, match="not the cube of this session"):
            nwb_writer.write_nwb(folder, tmp_path / "out" / "other.nwb", cube=tiny_converted.stores[10.0])
    assert not list((tmp_path / "out").iterdir()), "nothing half-written"


# --------------------------------------------------------------------------
# NWB files from elsewhere
# --------------------------------------------------------------------------
def test_foreign_file_converts_exactly(session_folder, tmp_path):
    """A plain-pynwb file with units (spike times, depths) and a plain pulses table becomes a cube whose
    window counts are the raw spikes'; the cluster columns it lacks are filled, with a warning."""
    path = write_foreign_nwb(tmp_path / "foreign_session.nwb", session_folder, extra_unit_columns=(schema.QC_PASS,))
    with pytest.warns(OptoCubeWarning, match="units lack .*peak_channel.*docs/nwb.md"):
        result = convert.convert_session(path, tmp_path / "stores", bin_ms=10)
    ds = xr.open_zarr(result.store)
    assert ds.attrs[schema.ATTR_SESSION_ID] == "foreign_session"
    assert (ds[schema.PEAK_CHANNEL].values == -1).all()
    assert (ds[schema.KS_LABEL].values == "").all()
    np.testing.assert_array_equal(ds[schema.QC_PASS].values, load(session_folder, schema.CLUSTERS_QC_PASS))
    durations = ds[schema.DURATION].values  # stop - start: within a rounding of the stored durations
    np.testing.assert_allclose(
        durations, load(session_folder, schema.STIM_DURATIONS)[ds[schema.STIM_INDEX].values], rtol=0, atol=1e-9
    )
    window = ds[schema.SPIKE_COUNTS].where(ds[schema.TIME] < 0, 0).sum(schema.TIME).values
    reference = reference_counts(
        load(session_folder, schema.SPIKES_TIMES),
        load(session_folder, schema.SPIKES_CLUSTERS),
        ds.sizes[schema.CLUSTER],
        ds[schema.ONSET].values,
        *schema.PRE_WINDOW_S,
    )
    np.testing.assert_array_equal(window, reference)


REFUSALS = [  # (id, what write_foreign_nwb leaves out, the message)
    ("no-units", dict(units=False), r"no units table \(the spike times of the clusters\)"),
    ("no-depth", dict(depth=False), r"the units table has no depth column depth_from_surface_um, template_depth_um"),
    ("no-pulses", dict(pulses=False), r"no pulses table \(intervals/optogenetic_pulses"),
    ("no-emitter", dict(emitter=False), r"the pulses table has no emitter column"),
    ("no-power", dict(power=False), r"the pulses table has no power_in_mW column"),
]


@pytest.mark.parametrize(("missing", "message"), [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS])
def test_incomplete_file_refused(session_folder, tmp_path, capsys, missing, message):
    path = write_foreign_nwb(tmp_path / "lab.nwb", session_folder, **missing)
    with pytest.raises(SessionFormatError, match=rf"^{tmp_path / 'lab.nwb'}: {message}.*documented in docs/nwb.md"):
        nwb.read_nwb(path)
    code = cli.main(["convert", str(path), "--out", str(tmp_path / "stores"), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == cli.EXIT_FAILED
    assert len(err) == 1
    assert "docs/nwb.md" in err[0]
    assert "Traceback" not in err[0]
    assert not (tmp_path / "stores" / "lab.zarr").exists()


def test_not_an_nwb_file_refused(tmp_path):
    path = tmp_path / "broken.nwb"
    path.write_bytes(b"not hdf5 at all")
    with pytest.raises(SessionFormatError, match=r"broken.nwb: not a readable NWB file"):
        io.read_session(path)  # what convert reads a session with: ALF folder or NWB file
    with pytest.raises(SessionFormatError, match=r"broken.nwb: an NWB file, not an ALF session folder"):
        alf.read_alf(path)  # the ALF reader names what it was given


def test_find_sessions_lists_nwb_files(tmp_path):
    for name in ("b.nwb", "a.nwb"):
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in io.find_sessions(tmp_path)] == ["a.nwb", "b.nwb"]
    assert io.find_sessions(tmp_path / "a.nwb") == [tmp_path / "a.nwb"]


# --------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------
def test_cli_to_nwb_then_convert(tmp_path, capsys):
    root = tmp_path / "data"
    write_synth(root / schema.SESSIONS_DIR / SESSION_ID, tiny_spec(seed=5))
    write_synth(root / schema.SESSIONS_DIR / "AL0035_2024-12-06_en2_p1", tiny_spec(seed=6))
    code = cli.main(["to-nwb", str(root), "--out", str(tmp_path / "nwb"), "--session", SESSION_ID])
    out = capsys.readouterr().out
    assert code == 0, out
    assert f"{SESSION_ID}.nwb" in out
    assert " MB, " in out
    assert "1 written, 0 failed" in out
    assert [p.name for p in (tmp_path / "nwb").iterdir()] == [f"{SESSION_ID}.nwb"]  # no temp file left
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "nwb" / f"{SESSION_ID}.nwb").stat().st_mode & 0o777 == 0o666 & ~umask
    code = cli.main(
        [
            "convert",
            str(tmp_path / "nwb" / f"{SESSION_ID}.nwb"),
            "--out",
            str(tmp_path / "s"),
            "--bin-ms",
            "10",
            "--quiet",
        ]
    )
    assert code == 0
    assert_exact(root / schema.SESSIONS_DIR / SESSION_ID, tmp_path / "s" / f"{SESSION_ID}.zarr")


def test_cli_convert_nwb_folder_by_session_id(tmp_path, capsys):
    """``convert --session ID`` names an NWB session by its file stem, as the store does."""
    root = tmp_path / "data"
    other = "AL0035_2024-12-06_en2_p1"
    write_synth(root / schema.SESSIONS_DIR / SESSION_ID, tiny_spec(seed=5))
    write_synth(root / schema.SESSIONS_DIR / other, tiny_spec(seed=6))
    assert cli.main(["to-nwb", str(root), "--out", str(tmp_path / "nwb")]) == 0
    args = ["convert", str(tmp_path / "nwb"), "--out", str(tmp_path / "s"), "--bin-ms", "10", "--quiet"]
    assert cli.main([*args, "--session", other]) == 0
    assert [p.name for p in (tmp_path / "s").iterdir()] == [f"{other}.zarr"]
    assert_exact(root / schema.SESSIONS_DIR / other, tmp_path / "s" / f"{other}.zarr")
    assert cli.main([*args, "--session", f"{other}.nwb"]) != 0  # the id, not the file name
    assert "no session named" in capsys.readouterr().err


def test_cli_to_nwb_broken_session_leaves_nothing(tmp_path, capsys):
    root = tmp_path / "data"
    folder = write_synth(root / schema.SESSIONS_DIR / SESSION_ID, tiny_spec(seed=5))
    (folder / schema.STIM_POWER).unlink()
    code = cli.main(["to-nwb", str(root), "--out", str(tmp_path / "nwb")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == cli.EXIT_FAILED
    assert len(err) == 1
    assert schema.STIM_POWER in err[0]
    assert "required file is missing" in err[0]
    assert not (tmp_path / "nwb").exists() or not list((tmp_path / "nwb").iterdir())


def test_cli_to_nwb_unknown_session(tmp_path, capsys):
    root = tmp_path / "data"
    write_synth(root / schema.SESSIONS_DIR / SESSION_ID, tiny_spec(seed=5))
    code = cli.main(["to-nwb", str(root), "--out", str(tmp_path / "nwb"), "--session", "nope"])
    assert code == cli.EXIT_FAILED
    assert "no session named 'nope'" in capsys.readouterr().err


def test_warnings_of_the_source_are_reported(quirky_nwb, tmp_path):
    folder, _ = quirky_nwb
    results = nwb_writer.to_nwb(folder, tmp_path / "nwb")
    assert results[0].status == "written"
    for pattern in ALL_QUIRKS_WARNINGS:
        assert any(re.search(pattern, w) for w in results[0].warnings), pattern
    _, caught = convert_recording(Path(results[0].path), tmp_path / "stores", bin_ms=10)
    assert caught == [], "the NWB file holds the repaired session (trials keep their row order, unwarned)"


def test_cli_to_nwb_with_cube(tmp_path, capsys):
    root = tmp_path / "data"
    folder = write_synth(root / schema.SESSIONS_DIR / SESSION_ID, tiny_spec(seed=5))
    code = cli.main(["to-nwb", str(root), "--out", str(tmp_path / "nwb"), "--with-cube", str(tmp_path / "stores")])
    err = capsys.readouterr().err
    assert code == cli.EXIT_FAILED
    assert "no such store (convert the session first)" in err
    assert cli.main(["convert", str(root), "--out", str(tmp_path / "stores"), "--bin-ms", "10", "--quiet"]) == 0
    code = cli.main(["to-nwb", str(root), "--out", str(tmp_path / "nwb"), "--with-cube", str(tmp_path / "stores")])
    assert code == 0, capsys.readouterr().err
    cube = xr.open_zarr(tmp_path / "stores" / f"{SESSION_ID}.zarr")
    with pynwb.NWBHDF5IO(tmp_path / "nwb" / f"{SESSION_ID}.nwb", mode="r") as reader:
        binned = reader.read().processing[schema.NWB_MODULE][schema.NWB_BINNED]
        np.testing.assert_array_equal(binned.data[:], cube[schema.SPIKE_COUNTS].values)
        np.testing.assert_array_equal(binned.event_timestamps[:], cube[schema.ONSET].values)
    assert_exact(folder, tmp_path / "stores" / f"{SESSION_ID}.zarr")
