"""Kilosort / phy sessions (opto_cube.io.kilosort, kilosort_tables, kilosort_metrics): the same cube as the ALF
route, refused bad input, QC metrics.

The equality tests write one recording twice with :mod:`opto_cube.synth`: as a
Kilosort folder (``write_kilosort_session``) and as the ALF folder holding what
the Kilosort reader sees (``alf_twin``), convert both, and compare the cubes.
The counts are also checked against :func:`helpers.reference_counts`, the
independent float64 window test on the raw spike samples.
"""

from __future__ import annotations

import dataclasses
import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from helpers import reference_counts
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from opto_cube import cli, io, schema, synth
from opto_cube.errors import SessionFormatError
from opto_cube.io import kilosort, kilosort_metrics, kilosort_tables
from opto_cube.jobs import convert
from opto_cube.store import write as store

SESSION = "AL0034_2024-12-05_en1_p0"
RATE = 30000.0
TINY = dataclasses.replace(synth.SIZES["tiny"], edge_trials=8)

QUIRKS = {
    "default (renumbered ids, a merge, (N, 1) times, onset_s)": synth.KilosortQuirks(),
    "onsets as samples": synth.KilosortQuirks(onset_samples=True),
    "no spike_clusters (templates only)": synth.KilosortQuirks(spike_clusters=False),
    "contiguous ids, no merge, (N,) times": synth.KilosortQuirks(renumber_ids=False, merges=0, times_2d=False),
    "two merges, two noise clusters": synth.KilosortQuirks(merges=2, noise_clusters=2),
    "no amplitudes, no session.json": synth.KilosortQuirks(amplitudes=False, top_chan=False),
}
SPECS = {
    "tiny": TINY,
    "tiny, unsorted spikes, 3 spikeless": dataclasses.replace(TINY, unsorted_spikes=True, spikeless_clusters=3),
    "tiny, one duration, trials in order": dataclasses.replace(TINY, durations_s=(0.02,), shuffle_trials=False),
}
TRIAL_COORDS = (
    schema.TRIAL,
    schema.STIM_INDEX,
    schema.ONSET,
    schema.EMITTER,
    schema.POWER,
    schema.DURATION,
    schema.EMITTER_DEPTH,
)


def _quiet_convert(folder: Path, out: Path, **params) -> xr.Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = convert.convert_session(folder, out, bin_ms=params.pop("bin_ms", 1.0), **params)
    assert result.status == "converted", result
    return store.open_cube(result.store).load()


def _pair(tmp_path: Path, spec: synth.SessionSpec, quirks: synth.KilosortQuirks) -> tuple[Path, Path]:
    ks, alf = tmp_path / "ks" / SESSION, tmp_path / "alf" / SESSION
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        synth.write_kilosort_session(ks, spec, quirks=quirks, alf_twin=alf)
    return ks, alf


def _raw(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """Spike times (samples / 30000.0) and cluster ids straight from the Kilosort files."""
    samples = np.load(folder / "spike_times.npy").reshape(-1).astype(np.int64)
    name = "spike_clusters.npy" if (folder / "spike_clusters.npy").is_file() else "spike_templates.npy"
    return samples / RATE, np.load(folder / name).reshape(-1).astype(np.int64)


def _assert_same_cube(ks_cube: xr.Dataset, alf_cube: xr.Dataset) -> None:
    np.testing.assert_array_equal(ks_cube[schema.SPIKE_COUNTS].values, alf_cube[schema.SPIKE_COUNTS].values)
    np.testing.assert_array_equal(ks_cube[schema.WINDOW_COUNTS].values, alf_cube[schema.WINDOW_COUNTS].values)
    for name in TRIAL_COORDS:
        np.testing.assert_array_equal(ks_cube[name].values, alf_cube[name].values, err_msg=name)
    for name in schema.CLUSTER_COORDS:  # the reader's cluster values, which the twin holds as ALF files
        np.testing.assert_array_equal(ks_cube[name].values, alf_cube[name].values, err_msg=name)
    assert ks_cube.attrs[schema.ATTR_SURFACE] == alf_cube.attrs[schema.ATTR_SURFACE] or (
        math.isnan(ks_cube.attrs[schema.ATTR_SURFACE] or math.nan)
        and math.isnan(alf_cube.attrs[schema.ATTR_SURFACE] or math.nan)
    )


def _assert_counts_are_raw(ks_cube: xr.Dataset, folder: Path) -> None:
    """window_counts against the independent float64 test on the raw files (clusters by their real ids)."""
    times, ids = _raw(folder)
    cluster_ids = ks_cube[schema.CLUSTER].values
    rows = np.searchsorted(cluster_ids, ids)
    assert np.array_equal(cluster_ids[rows], ids)  # every spike's id is a cluster of the cube
    onsets, durations = ks_cube[schema.ONSET].values, ks_cube[schema.DURATION].values
    k = cluster_ids.size
    pre = reference_counts(times, rows, k, onsets, schema.PRE_WINDOW_S[0], schema.PRE_WINDOW_S[1])
    stim = reference_counts(times, rows, k, onsets, 0.0, durations)
    np.testing.assert_array_equal(ks_cube[schema.WINDOW_COUNTS].values[..., 0], pre)
    np.testing.assert_array_equal(ks_cube[schema.WINDOW_COUNTS].values[..., 1], stim)


# --------------------------------------------------------------------------
# Kilosort -> cube equals ALF -> cube, on every quirk
# --------------------------------------------------------------------------
@pytest.mark.parametrize("quirks", list(QUIRKS.values()), ids=list(QUIRKS))
@pytest.mark.parametrize("spec", list(SPECS.values()), ids=list(SPECS))
def test_kilosort_cube_equals_alf_cube(tmp_path: Path, spec: synth.SessionSpec, quirks: synth.KilosortQuirks) -> None:
    ks, alf = _pair(tmp_path, spec, quirks)
    ks_cube = _quiet_convert(ks, tmp_path / "ks_stores")
    alf_cube = _quiet_convert(alf, tmp_path / "alf_stores")
    _assert_same_cube(ks_cube, alf_cube)
    _assert_counts_are_raw(ks_cube, ks)
    # the cluster coordinate carries the real ids (sorted), the ALF one its rows
    ids = ks_cube[schema.CLUSTER].values
    assert np.all(np.diff(ids) > 0)
    np.testing.assert_array_equal(alf_cube[schema.CLUSTER].values, np.arange(ids.size))
    if quirks.renumber_ids or quirks.merges:
        assert not np.array_equal(ids, np.arange(ids.size))  # non-contiguous ids kept
    spikeless = ks_cube[schema.SPIKE_COUNTS].sum(dim=(schema.TRIAL, schema.TIME)).values == 0
    assert spikeless.sum() >= 1  # spikeless clusters (in the tables only) are rows of the cube


def test_edge_spikes_are_on_window_edges(tmp_path: Path) -> None:
    """The quirk the equality must survive: spikes exactly on the float64 window edges of the pulses."""
    ks, _ = _pair(tmp_path, TINY, synth.KilosortQuirks())
    times, _ = _raw(ks)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        session = kilosort.read_kilosort(ks)
    onsets, durations = session.stim[schema.ONSET], session.stim[schema.DURATION]
    edges = np.concatenate([onsets + schema.PRE_WINDOW_S[0], onsets, onsets + durations])
    assert np.isin(times, edges).sum() >= 3


def test_merged_cluster_takes_its_most_frequent_template(tmp_path: Path) -> None:
    ks, _ = _pair(tmp_path, TINY, synth.KilosortQuirks(merges=1))
    clusters = np.load(ks / "spike_clusters.npy")
    templates = np.load(ks / "spike_templates.npy")
    n_templates = np.load(ks / "templates.npy").shape[0]
    merged = int(clusters.max())
    assert merged >= n_templates  # a new id past every template
    mine = templates[clusters == merged]
    most = int(np.bincount(mine).argmax())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        session = kilosort.read_kilosort(ks)
    depth, peak, width = kilosort_metrics.template_features(
        np.load(ks / "templates.npy")[[most]], np.load(ks / "channel_positions.npy")[:, 1], RATE
    )
    row = int(np.searchsorted(session.cluster_ids, merged))
    assert session.clusters[schema.TEMPLATE_DEPTH][row] == depth[0]
    assert session.clusters[schema.PEAK_CHANNEL][row] == peak[0]
    assert session.clusters[schema.TROUGH_TO_PEAK][row] == width[0]


def test_labels_phy_group_wins_and_noise_is_kept(tmp_path: Path) -> None:
    ks, _ = _pair(tmp_path, TINY, synth.KilosortQuirks(noise_clusters=2))
    (ks / "cluster_info.tsv").unlink()
    ids = [int(line.split("\t")[0]) for line in (ks / "cluster_KSLabel.tsv").read_text().splitlines()[1:]]
    (ks / "cluster_KSLabel.tsv").write_text("cluster_id\tKSLabel\n" + "".join(f"{i}\tgood\n" for i in ids))
    group = (ks / "cluster_group.tsv").read_text().splitlines()
    noise = [int(line.split("\t")[0]) for line in group[1:] if line.endswith("\tnoise")]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        session = kilosort.read_kilosort(ks)
    labels = dict(zip(session.cluster_ids.tolist(), session.clusters[schema.KS_LABEL], strict=True))
    assert len(noise) == 2
    assert all(labels[i] == "noise" for i in noise)
    (ks / "cluster_group.tsv").unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        session = kilosort.read_kilosort(ks)
    labels = dict(zip(session.cluster_ids.tolist(), session.clusters[schema.KS_LABEL], strict=True))
    assert all(labels[i] == "good" for i in ids)


def _write_kilosort(
    folder: Path,
    samples: np.ndarray,
    ids: np.ndarray,
    onset_samples: np.ndarray,
    duration_ms: np.ndarray,
    emitters: np.ndarray,
    powers: np.ndarray,
    as_samples: bool,
) -> None:
    """A minimal Kilosort folder written with numpy: one template per id, every id its own template."""
    folder.mkdir(parents=True)
    n_templates = int(ids.max()) + 1
    channels = np.column_stack([np.zeros(4), 20.0 * np.arange(4)])
    templates = np.zeros((n_templates, 20, 4), dtype=np.float32)
    templates[:, 5, :] = -np.arange(1, 5)[None, :]
    templates[:, 10, :] = 1.0
    np.save(folder / "spike_times.npy", samples.astype(np.uint64)[:, None])
    np.save(folder / "spike_clusters.npy", ids.astype(np.int32))
    np.save(folder / "templates.npy", templates)
    np.save(folder / "channel_positions.npy", channels)
    (folder / "params.py").write_text("sample_rate = 30000.0\n")
    (folder / "session.json").write_text(json.dumps({"top_chan": 3}))
    head = "onset_sample" if as_samples else "onset_s"
    rows = [
        f"{int(o) if as_samples else repr(float(o / RATE))},{float(d / 1000)!r},{int(e)},{float(p)!r}\n"
        for o, d, e, p in zip(onset_samples, duration_ms, emitters, powers, strict=True)
    ]
    (folder / "pulses.csv").write_text(f"{head},duration_s,emitter,power_mw\n" + "".join(rows))


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_equality_hypothesis(tmp_path_factory: pytest.TempPathFactory, data: st.DataObject) -> None:
    """Random sessions with non-contiguous ids and spikes on and beside the window edges: both routes agree."""
    tmp = tmp_path_factory.mktemp("hyp")
    n_trials = data.draw(st.integers(1, 6))
    gaps = data.draw(st.lists(st.integers(40_000, 60_000), min_size=n_trials, max_size=n_trials))
    onset_samples = 20_000 + np.cumsum(gaps)
    duration_ms = np.array(data.draw(st.lists(st.sampled_from([1, 5, 10, 20]), min_size=n_trials, max_size=n_trials)))
    ids_pool = np.array(sorted(data.draw(st.sets(st.integers(0, 500), min_size=1, max_size=6))))
    end = int(onset_samples[-1]) + 40_000
    n_spikes = data.draw(st.integers(1, 300))
    samples = np.array(data.draw(st.lists(st.integers(0, end), min_size=n_spikes, max_size=n_spikes)))
    edges = np.concatenate([onset_samples - 15_000, onset_samples, onset_samples + duration_ms * 30])
    on_edges = np.concatenate([edges, edges - 1, edges + 1])
    samples = np.sort(np.concatenate([samples, on_edges, [end]]))
    ids = ids_pool[np.array(data.draw(st.lists(st.integers(0, ids_pool.size - 1), min_size=samples.size,
                                               max_size=samples.size)))]  # fmt: skip
    emitters = np.array(data.draw(st.lists(st.integers(1, 14), min_size=n_trials, max_size=n_trials)))
    powers = np.array(data.draw(st.lists(st.sampled_from([0.5, 1.0, 2.5]), min_size=n_trials, max_size=n_trials)))
    as_samples = data.draw(st.booleans())
    ks, alf = tmp / "ks" / SESSION, tmp / "alf" / SESSION
    _write_kilosort(ks, samples, ids, onset_samples, duration_ms, emitters, powers, as_samples)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        synth.write_alf_twin(ks, alf, templates_by_row=np.zeros((ids_pool.size, 20, 4)))
    ks_cube = _quiet_convert(ks, tmp / "ks_stores")
    alf_cube = _quiet_convert(alf, tmp / "alf_stores")
    _assert_same_cube(ks_cube, alf_cube)
    _assert_counts_are_raw(ks_cube, ks)
    np.testing.assert_array_equal(ks_cube[schema.CLUSTER].values, np.unique(ids))


def test_responses_equal(tmp_path: Path) -> None:
    """The published response columns from the two stores are equal (the cluster coordinate aside)."""
    from opto_cube.analysis.response import responses

    ks, alf = _pair(tmp_path, synth.SIZES["small"], synth.KilosortQuirks())
    tables = []
    for folder, out in ((ks, "ks_stores"), (alf, "alf_stores")):
        cube = _quiet_convert(folder, tmp_path / out, bin_ms=1.0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tables.append(responses(cube).compute().drop_vars(schema.CLUSTER))
    columns = [c for c in schema.RESPONSE_COLUMNS if c not in (schema.SESSION_ID, schema.CLUSTER)]
    checked = 0
    for name in columns:
        if name in tables[0].variables:
            np.testing.assert_array_equal(tables[0][name].values, tables[1][name].values, err_msg=name)
            checked += 1
    assert checked >= 12
    assert int(tables[0][schema.SIGNIFICANT].sum()) > 0  # the opto effect shows in both


# --------------------------------------------------------------------------
# params.py is data, never code
# --------------------------------------------------------------------------
HOSTILE = {
    "call in the value": "sample_rate = __import__('os').system('touch {canary}')\n",
    "import": "import os\nos.system('touch {canary}')\nsample_rate = 30000.0\n",
    "expression statement": "__import__('os').system('touch {canary}')\nsample_rate = 30000.0\n",
    "name in the value": "rate = 30000.0\nsample_rate = rate\n",
    "augmented assignment": "sample_rate = 30000.0\nsample_rate += 1\n",
    "f-string": "sample_rate = 30000.0\ndat_path = f\"{{__import__('os').system('touch {canary}')}}\"\n",
}


@pytest.mark.parametrize("text", list(HOSTILE.values()), ids=list(HOSTILE))
def test_hostile_params_refused_and_never_run(tmp_path: Path, text: str, capsys: pytest.CaptureFixture[str]) -> None:
    ks, _ = _pair(tmp_path, TINY, synth.KilosortQuirks())
    canary = tmp_path / "CANARY"
    (ks / "params.py").write_text(text.format(canary=canary))
    code = cli.main(["convert", str(ks), "--out", str(tmp_path / "stores"), "--quiet"])
    err = capsys.readouterr().err
    assert code != 0
    assert not canary.exists()  # nothing ran
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1
    assert "params.py" in errors[0]
    assert "Traceback" not in err
    assert not list((tmp_path / "stores").glob("*.zarr"))


def test_read_params_literals() -> None:
    path = Path(__file__).parent / "_params_tmp.py"
    try:
        path.write_text('"""phy params"""\ndat_path = "a.bin"\nn_channels_dat = 385\ndtype = "int16"\n'
                        "offset = 0\nsample_rate = 30000\nhp_filtered = False\n")  # fmt: skip
        params = kilosort_tables.read_params(path)
    finally:
        path.unlink()
    assert params == {
        "dat_path": "a.bin",
        "n_channels_dat": 385,
        "dtype": "int16",
        "offset": 0,
        "sample_rate": 30000.0,
        "hp_filtered": False,
    }


# --------------------------------------------------------------------------
# Bad input: one line naming the file, non-zero exit, nothing written
# --------------------------------------------------------------------------
def _edit_pulses(column: str, value: str, row: int = 0):
    def edit(ks: Path) -> None:
        lines = (ks / "pulses.csv").read_text().splitlines()
        header = lines[0].split(",")
        fields = lines[1 + row].split(",")
        fields[header.index(column)] = value
        lines[1 + row] = ",".join(fields)
        (ks / "pulses.csv").write_text("\n".join(lines) + "\n")

    return edit


def _drop_column(column: str):
    def edit(ks: Path) -> None:
        lines = [line.split(",") for line in (ks / "pulses.csv").read_text().splitlines()]
        i = lines[0].index(column)
        (ks / "pulses.csv").write_text("\n".join(",".join(f[:i] + f[i + 1 :]) for f in lines) + "\n")

    return edit


def _truncate(name: str, keep: int = -1):
    def edit(ks: Path) -> None:
        arr = np.load(ks / name)
        np.save(ks / name, arr[:keep])

    return edit


BAD = {
    "params.py without sample_rate": ("params.py", lambda ks: (ks / "params.py").write_text("dtype = 'int16'\n")),
    "params.py negative sample_rate": ("params.py", lambda ks: (ks / "params.py").write_text("sample_rate = -3\n")),
    "params.py not Python": ("params.py", lambda ks: (ks / "params.py").write_text("sample_rate = = 3\n")),
    "pulses missing": ("pulses.csv", lambda ks: (ks / "pulses.csv").unlink()),
    "pulses without power_mw": ("pulses.csv", _drop_column("power_mw")),
    "pulses without an onset": ("pulses.csv", _drop_column("onset_s")),
    "emitter 15": ("pulses.csv", _edit_pulses("emitter", "15")),
    "emitter 0": ("pulses.csv", _edit_pulses("emitter", "0")),
    "emitter 2.5": ("pulses.csv", _edit_pulses("emitter", "2.5")),
    "power not a number": ("pulses.csv", _edit_pulses("power_mw", "high")),
    "negative power": ("pulses.csv", _edit_pulses("power_mw", "-1.0")),
    "negative duration": ("pulses.csv", _edit_pulses("duration_s", "-0.01")),
    "zero duration": ("pulses.csv", _edit_pulses("duration_s", "0")),
    "negative onset": ("pulses.csv", _edit_pulses("onset_s", "-2.0")),
    "onset after the recording": ("pulses.csv", _edit_pulses("onset_s", "1e6", row=3)),
    "NaN onset": ("pulses.csv", _edit_pulses("onset_s", "nan")),
    "spike_clusters shorter": ("spike_clusters.npy", _truncate("spike_clusters.npy")),
    "amplitudes shorter": ("amplitudes.npy", _truncate("amplitudes.npy")),
    "spike_templates shorter": ("spike_templates.npy", _truncate("spike_templates.npy")),
    "templates with other channels": ("templates.npy", lambda ks: np.save(ks / "templates.npy", np.zeros((3, 4, 5)))),
    "spike_times of objects": (
        "spike_times.npy",
        lambda ks: np.save(ks / "spike_times.npy", np.array([1, "a"], dtype=object), allow_pickle=True),
    ),
    "session.json top_chan outside the probe": (
        "session.json",
        lambda ks: (ks / "session.json").write_text(json.dumps({"top_chan": 5000})),
    ),
}


@pytest.mark.parametrize(("name", "edit"), list(BAD.values()), ids=list(BAD))
def test_bad_input_refused(tmp_path: Path, name: str, edit, capsys: pytest.CaptureFixture[str]) -> None:
    ks, _ = _pair(tmp_path, TINY, synth.KilosortQuirks())
    edit(ks)
    before = sorted((p.name, p.stat().st_mtime_ns) for p in ks.iterdir())
    code = cli.main(["convert", str(ks), "--out", str(tmp_path / "stores"), "--quiet"])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert code != 0
    assert len(errors) == 1, err
    assert str(ks / name) in errors[0], err
    assert "Traceback" not in err
    assert not list((tmp_path / "stores").glob("*.zarr"))
    assert sorted((p.name, p.stat().st_mtime_ns) for p in ks.iterdir()) == before  # nothing of the user's touched


def test_read_session_raises_session_format_error(tmp_path: Path) -> None:
    ks, _ = _pair(tmp_path, TINY, synth.KilosortQuirks())
    (ks / "params.py").write_text("sample_rate = open('x')\n")
    with pytest.raises(SessionFormatError, match=r"params\.py: line 1: only literal assignments"):
        kilosort.read_kilosort(ks)


# --------------------------------------------------------------------------
# QC metrics: against straightforward computations of SpikeInterface's definitions
# --------------------------------------------------------------------------
def _straight_presence(train: np.ndarray, total: int) -> float:
    bin_samples = int(60 * RATE)
    if total < bin_samples:
        return math.nan
    edges = np.arange(total // bin_samples + 1) * bin_samples
    h, _ = np.histogram(train, bins=edges)
    return float(np.sum(h > 0) / (len(edges) - 1))


def _straight_isi(train_s: np.ndarray, duration: float) -> float:
    if train_s.size == 0:
        return math.nan
    violations = np.sum(np.diff(train_s) < 0.0015)
    return float((violations / (2 * train_s.size * 0.0015)) / (train_s.size / duration))


def _straight_cutoff(amps: np.ndarray) -> float:
    from scipy.ndimage import gaussian_filter1d

    if len(amps) / 500 < 5:
        return math.nan
    h, b = np.histogram(amps, 500, density=True)
    pdf = gaussian_filter1d(h, 3)
    bin_size = np.mean(np.diff(b[:-1]))
    peak = np.argmax(pdf)
    g = np.argmin(np.abs(pdf[peak:] - pdf[0])) + peak
    return float(min(np.sum(pdf[g:]) * bin_size, 0.5))


def test_qc_metrics_match_a_straightforward_computation(tmp_path: Path) -> None:
    spec = dataclasses.replace(synth.SIZES["small"], n_trials=900, lead_in_s=90.0, tail_s=90.0)
    ks, _ = _pair(tmp_path, spec, synth.KilosortQuirks())
    samples = np.load(ks / "spike_times.npy").reshape(-1).astype(np.int64)
    ids = np.load(ks / "spike_clusters.npy").astype(np.int64)
    amps = np.load(ks / "amplitudes.npy").astype(np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        session = kilosort.read_kilosort(ks)
    total = int(samples.max()) + 1
    expected = {schema.PRESENCE_RATIO: [], schema.ISI_VIOLATIONS: [], schema.AMPLITUDE_CUTOFF: []}
    for cid in session.cluster_ids:
        mine = ids == cid
        expected[schema.PRESENCE_RATIO].append(_straight_presence(samples[mine], total))
        expected[schema.ISI_VIOLATIONS].append(_straight_isi(samples[mine] / RATE, total / RATE))
        expected[schema.AMPLITUDE_CUTOFF].append(_straight_cutoff(amps[mine]))
    for name, values in expected.items():
        np.testing.assert_array_equal(session.clusters[name], np.array(values), err_msg=name)
    cutoff = session.clusters[schema.AMPLITUDE_CUTOFF]
    assert np.isfinite(cutoff).sum() >= 3
    assert np.isnan(cutoff).sum() >= 1
    assert np.nanmax(session.clusters[schema.ISI_VIOLATIONS]) >= 0
    assert np.nanmax(session.clusters[schema.PRESENCE_RATIO]) == 1.0
    rule = (
        (session.clusters[schema.PRESENCE_RATIO] > schema.QC_PRESENCE_RATIO_MIN)
        & (session.clusters[schema.ISI_VIOLATIONS] < schema.QC_ISI_VIOLATIONS_MAX)
        & (session.clusters[schema.AMPLITUDE_CUTOFF] < schema.QC_AMPLITUDE_CUTOFF_MAX)
    )
    np.testing.assert_array_equal(session.clusters[schema.QC_PASS], rule)


@pytest.mark.parametrize("seed", range(5))
def test_gaussian_filter_is_scipys_to_the_bit(seed: int) -> None:
    from scipy.ndimage import gaussian_filter1d

    x = np.random.default_rng(seed).random(500) * 10.0 ** np.random.default_rng(seed).integers(-6, 3)
    x[: seed * 7] = 0.0
    np.testing.assert_array_equal(kilosort_metrics.gaussian_filter1d(x, 3), gaussian_filter1d(x, 3))
    np.testing.assert_array_equal(kilosort_metrics.gaussian_filter1d(x[:40], 3), gaussian_filter1d(x[:40], 3))


def test_qc_without_amplitudes_is_nan(tmp_path: Path) -> None:
    ks, _ = _pair(tmp_path, TINY, synth.KilosortQuirks(amplitudes=False))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        session = kilosort.read_kilosort(ks)
    assert np.all(np.isnan(session.clusters[schema.AMPLITUDE_CUTOFF]))
    assert not session.clusters[schema.QC_PASS].any()


def test_qc_against_spikeinterface(tmp_path: Path) -> None:
    """Optional: SpikeInterface's own functions, where it is installed."""
    metrics = pytest.importorskip("spikeinterface.qualitymetrics.misc_metrics")
    rng = np.random.default_rng(0)
    amps = rng.normal(20, 5, 4000)
    assert kilosort_metrics.amplitude_cutoff(amps) == metrics.amplitude_cutoff(amps)


def test_template_features_and_waveform_types() -> None:
    t = np.zeros((2, 30, 3))
    t[0, 10, 0], t[0, 13, 0] = -10.0, 3.0  # FS: 3 samples = 0.1 ms
    t[1, 10, 2], t[1, 25, 2] = -8.0, 2.0  # RS: 15 samples = 0.5 ms
    t[1, 10, 1] = -2.0  # under 30 % of the peak: weighs nothing
    depth, peak, width = kilosort_metrics.template_features(t, np.array([0.0, 20.0, 40.0]), RATE)
    assert depth.tolist() == [0.0, 40.0]
    assert peak.tolist() == [0, 2]
    np.testing.assert_allclose(width, [0.1, 0.5])
    assert kilosort_metrics.waveform_types(width).tolist() == ["FS", "RS"]


# --------------------------------------------------------------------------
# Surface, discovery (issue 18 D5), to-nwb and verify --data
# --------------------------------------------------------------------------
def test_surface_from_top_chan_or_option_else_nan(tmp_path: Path) -> None:
    ks, _ = _pair(tmp_path, TINY, synth.KilosortQuirks(top_chan=False))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        session = kilosort.read_kilosort(ks)
    assert sum("no top_chan" in str(w.message) for w in caught) == 1  # one warning
    assert math.isnan(session.surface_position_um)
    assert np.all(np.isnan(session.clusters[schema.DEPTH_FROM_SURFACE]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cube = _quiet_convert(ks, tmp_path / "stores", surface_um=1500.0)
    assert cube.attrs[schema.ATTR_SURFACE] == 1500.0
    np.testing.assert_array_equal(cube[schema.DEPTH_FROM_SURFACE].values, 1500.0 - cube[schema.TEMPLATE_DEPTH].values)
    np.testing.assert_array_equal(
        cube[schema.EMITTER_DEPTH].values, convert.emitter_depth_um(cube[schema.EMITTER].values, 1500.0, 0.0)
    )
    code = cli.main(["convert", str(ks), "--out", str(tmp_path / "cli"), "--surface-um", "1400", "--quiet"])
    assert code == 0
    assert store.open_cube(tmp_path / "cli" / f"{SESSION}.zarr").attrs[schema.ATTR_SURFACE] == 1400.0
    assert cli.main(["convert", str(ks), "--out", str(tmp_path / "nan"), "--surface-um", "nan", "--quiet"]) != 0


def test_find_sessions_every_kind(tmp_path: Path) -> None:
    root = tmp_path / "data"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        alf = synth.make_dataset(root, n_sessions=2, size="tiny", seed=3)
        ks = synth.make_dataset(tmp_path / "ks", n_sessions=1, size="tiny", seed=4, layout="kilosort")[0]
    ks = ks.rename(root / ks.name)  # a Kilosort folder at the root, beside sessions/
    (root / "other.nwb").write_bytes(b"")  # an NWB file at the root hides nothing
    found = io.find_sessions(root)
    assert sorted(found) == sorted([*alf, ks, root / "other.nwb"])
    # a flat folder: ALF and Kilosort folders and NWB files together
    flat = tmp_path / "flat"
    flat.mkdir()
    for folder in [*alf, ks]:
        folder.rename(flat / folder.name)
    (flat / "x.nwb").write_bytes(b"")
    (flat / "notes").mkdir()  # not a session beside NWB files
    assert sorted(p.name for p in io.find_sessions(flat)) == sorted([*(f.name for f in alf), ks.name, "x.nwb"])
    # two sessions with one id are refused, naming both
    (flat / f"{ks.name}.nwb").write_bytes(b"")
    with pytest.raises(SessionFormatError, match="two sessions with the id") as info:
        io.find_sessions(flat)
    assert str(flat / ks.name) in str(info.value)
    assert str(flat / f"{ks.name}.nwb") in str(info.value)


def test_convert_finds_alf_and_kilosort_together(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "data"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        alf = synth.make_dataset(root, n_sessions=1, size="tiny", seed=5)
        synth.make_dataset(tmp_path / "k", n_sessions=1, size="tiny", seed=6, layout="kilosort")[0].rename(
            root / "sessions" / "KS0001_2025-01-01_en1_p0"
        )
    code = cli.main(["convert", str(root), "--out", str(tmp_path / "stores"), "--quiet", "--bin-ms", "5"])
    assert code == 0, capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "stores").glob("*.zarr")) == sorted(
        [f"{alf[0].name}.zarr", "KS0001_2025-01-01_en1_p0.zarr"]
    )


def test_to_nwb_and_verify_data_from_kilosort(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("pynwb")
    root = tmp_path / "data"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        folder = synth.make_dataset(root, n_sessions=1, size="tiny", seed=7, layout="kilosort")[0]
    assert cli.main(["convert", str(root), "--out", str(tmp_path / "stores"), "--quiet", "--bin-ms", "5"]) == 0
    assert cli.main(["verify", str(tmp_path / "stores"), "--data", str(root)]) == 0, capsys.readouterr()
    (folder / "pulses.csv").write_text((folder / "pulses.csv").read_text().replace(",638", ",640", 1))
    assert cli.main(["verify", str(tmp_path / "stores"), "--data", str(root)]) != 0  # a changed source is found
    printed = capsys.readouterr()
    assert "pulses.csv" in printed.out + printed.err
    (folder / "pulses.csv").write_text((folder / "pulses.csv").read_text().replace(",640", ",638", 1))
    assert cli.main(["to-nwb", str(root), "--out", str(tmp_path / "nwb")]) == 0, capsys.readouterr().err
    nwb_file = tmp_path / "nwb" / f"{folder.name}.nwb"
    assert nwb_file.is_file()
    # the NWB file converts to the same counts as the Kilosort folder
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from_nwb = _quiet_convert(nwb_file, tmp_path / "from_nwb", bin_ms=5.0)
    from_ks = store.open_cube(tmp_path / "stores" / f"{folder.name}.zarr").load()
    np.testing.assert_array_equal(from_nwb[schema.SPIKE_COUNTS].values, from_ks[schema.SPIKE_COUNTS].values)
    np.testing.assert_array_equal(from_nwb[schema.ONSET].values, from_ks[schema.ONSET].values)
    np.testing.assert_array_equal(from_nwb[schema.CLUSTER].values, from_ks[schema.CLUSTER].values)  # the real ids
