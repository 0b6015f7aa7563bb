"""Tests of opto_cube.io (the ALF reader, npy, discover): finding sessions, reading and checking them,
and the table of broken inputs.

``BROKEN_INPUTS`` is the one table of broken session folders (mutation, file at
fault, expected message); test_cli.py runs the same table through the command line.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pickle
import re
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from helpers import OTHER_SESSION_ID, SESSION_ID, load, tiny_spec, write_synth

from opto_cube import io, schema
from opto_cube.errors import OptoCubeWarning, SessionFormatError
from opto_cube.io import alf
from opto_cube.io.npy import NpyFile

# --------------------------------------------------------------------------
# the table of broken inputs
# --------------------------------------------------------------------------
MARKER = "UNPICKLED"  # created (beside the session folder) if anything ever unpickles our object array


def _unpickle_hook(marker: str) -> None:
    Path(marker).touch()
    raise RuntimeError("opto_cube unpickled an object array")


class Booby:
    """Unpickling this creates the marker file (and raises): proof that nothing was unpickled."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return _unpickle_hook, (self.marker,)


def _marker(folder: Path) -> Path:
    return folder.parent / MARKER


def remove(name: str) -> Callable[[Path], None]:
    def mutate(folder: Path) -> None:
        (folder / name).unlink()

    return mutate


def save(name: str, make: Callable[[np.ndarray], np.ndarray]) -> Callable[[Path], None]:
    """Replace the array of ``name`` by ``make(current array)``."""

    def mutate(folder: Path) -> None:
        np.save(folder / name, make(load(folder, name)), allow_pickle=False)

    return mutate


def set_at(name: str, index: int, value: object) -> Callable[[Path], None]:
    def make(a: np.ndarray) -> np.ndarray:
        a = a.copy()
        a[index] = value
        return a

    return save(name, make)


def write_bytes(name: str, data: bytes) -> Callable[[Path], None]:
    def mutate(folder: Path) -> None:
        (folder / name).write_bytes(data)

    return mutate


def truncate(name: str, keep: int) -> Callable[[Path], None]:
    """Keep the first ``keep`` bytes (negative: drop the last ``-keep``)."""

    def mutate(folder: Path) -> None:
        data = (folder / name).read_bytes()
        (folder / name).write_bytes(data[:keep])

    return mutate


def pickled(name: str) -> Callable[[Path], None]:
    def mutate(folder: Path) -> None:
        n = len(load(folder, name))
        arr = np.empty(n, dtype=object)
        arr[:] = [Booby(str(_marker(folder)))] * n
        np.save(folder / name, arr, allow_pickle=True)

    return mutate


def text(name: str, make: Callable[[str], str]) -> Callable[[Path], None]:
    def mutate(folder: Path) -> None:
        (folder / name).write_text(make((folder / name).read_text()))

    return mutate


def no_trials(folder: Path) -> None:
    for name in schema.STIM_FILES:
        np.save(folder / name, load(folder, name)[:0], allow_pickle=False)


def fractional_cluster(a: np.ndarray) -> np.ndarray:
    a = a.astype(np.float64)
    a[3] = 1.5
    return a


def cluster_id(value: int) -> Callable[[np.ndarray], np.ndarray]:
    def make(a: np.ndarray) -> np.ndarray:
        a = a.copy()
        a[len(a) // 2] = value
        return a

    return make


SPIKES_T, SPIKES_C = schema.SPIKES_TIMES, schema.SPIKES_CLUSTERS
STIM_T, STIM_E, STIM_P, STIM_D = schema.STIM_TIMES, schema.STIM_EMISSION_SITES, schema.STIM_POWER, schema.STIM_DURATIONS
QC, DEPTHS, TEMPLATES = schema.CLUSTERS_QC_PASS, schema.CLUSTERS_TEMPLATE_DEPTHS, schema.CLUSTERS_TEMPLATES
CHANNELS, WAVEFORM, KSLABEL = schema.CLUSTERS_CHANNEL_POSITIONS, schema.CLUSTERS_WAVEFORM_TYPE, schema.CLUSTERS_KS_LABEL
JSON = schema.SESSION_JSON


@dataclasses.dataclass(frozen=True)
class Broken:
    """A broken session: ``mutate`` breaks a good one; the error names ``file`` and matches ``match``.

    ``match`` may use ``{K}`` (clusters), ``{M}`` (trials) and ``{N}`` (spikes) of the unbroken session.
    """

    id: str
    mutate: Callable[[Path], None]
    file: str
    match: str


BROKEN_INPUTS = [
    *[Broken(f"missing-{name}", remove(name), name, r"required file is missing") for name in schema.REQUIRED_FILES],
    Broken("truncated-data", truncate(SPIKES_T, -8), SPIKES_T, r"truncated: header says \({N},\) float64"),
    Broken("truncated-stim", truncate(STIM_P, -1), STIM_P, r"truncated"),
    Broken("truncated-header", truncate(QC, 20), QC, r"not a readable \.npy file"),
    Broken("empty-npy", write_bytes(DEPTHS, b""), DEPTHS, r"not a readable \.npy file"),
    Broken("garbage-npy", write_bytes(SPIKES_C, os.urandom(64) + b"garbage"), SPIKES_C, r"not a readable \.npy file"),
    Broken(
        "garbage-after-magic",
        write_bytes(STIM_T, b"\x93NUMPY\x01\x00" + b"\xff" * 40),
        STIM_T,
        r"not a readable \.npy file",
    ),
    Broken("object-spike-times", pickled(SPIKES_T), SPIKES_T, r"holds Python objects \(a pickle\).*never loads"),
    Broken("object-qc-pass", pickled(QC), QC, r"holds Python objects \(a pickle\)"),
    Broken("object-power", pickled(STIM_P), STIM_P, r"holds Python objects \(a pickle\)"),
    Broken(
        "ndim-spike-times",
        save(SPIKES_T, lambda a: a[:, None]),
        SPIKES_T,
        r"expected 1 dimension\(s\), found shape \({N}, 1\)",
    ),
    Broken("ndim-depths", save(DEPTHS, lambda a: np.stack([a, a])), DEPTHS, r"expected 1 dimension\(s\)"),
    Broken("ndim-templates", save(TEMPLATES, lambda a: a[:, :, 0]), TEMPLATES, r"expected 3 dimension\(s\)"),
    Broken("ndim-channels", save(CHANNELS, lambda a: a[:, 0]), CHANNELS, r"expected 2 dimension\(s\)"),
    Broken(
        "channels-not-xy",
        save(CHANNELS, lambda a: np.column_stack([a, a[:, :1]])),
        CHANNELS,
        r"expected \(channels, 2\) positions",
    ),
    Broken("ndim-stim", save(STIM_D, lambda a: a[:, None]), STIM_D, r"expected 1 dimension\(s\)"),
    Broken(
        "spikes-length-mismatch",
        save(SPIKES_C, lambda a: a[:-1]),
        SPIKES_C,
        r"has \d+ spikes but spikes\.times\.npy has {N}; they must agree",
    ),
    Broken("spike-time-nan", set_at(SPIKES_T, 5, np.nan), SPIKES_T, r"spike 5 has a non-finite time nan"),
    Broken("spike-time-inf", set_at(SPIKES_T, -1, np.inf), SPIKES_T, r"non-finite time inf"),
    Broken(
        "spike-times-int",
        save(SPIKES_T, lambda a: (a * 30000).astype(np.int64)),
        SPIKES_T,
        r"floating-point seconds, found dtype int64",
    ),
    Broken(
        "cluster-id-negative",
        save(SPIKES_C, cluster_id(-1)),
        SPIKES_C,
        r"cluster id -1 outside 0\.\.\d+ \(K = rows of the clusters\.\* arrays\)",
    ),
    Broken(
        "cluster-id-fractional",
        save(SPIKES_C, fractional_cluster),
        SPIKES_C,
        r"cluster ids must be whole numbers, found 1\.5",
    ),
    Broken("cluster-id-K", save(SPIKES_C, cluster_id(10**6)), SPIKES_C, r"cluster id 1000000 outside 0\.\.\d+"),
    Broken("cluster-id-text", save(SPIKES_C, lambda a: a.astype("U3")), SPIKES_C, r"cluster ids must be integers"),
    Broken(
        "clusters-rows-fewer",
        save(QC, lambda a: a[:-1]),
        QC,
        r"has \d+ rows but clusters\.templateDepths\.npy has {K}; every clusters\.\* array has one row per cluster",
    ),
    Broken(
        "clusters-rows-more",
        save(schema.CLUSTERS_PEAK_CHANNEL, lambda a: np.append(a, 0).astype(a.dtype)),
        schema.CLUSTERS_PEAK_CHANNEL,
        r"has \d+ rows but clusters\.templateDepths\.npy has {K}",
    ),
    Broken("templates-rows", save(TEMPLATES, lambda a: a[:-1]), TEMPLATES, r"has \d+ rows but .* has {K}"),
    Broken("qc-not-bool", save(QC, lambda a: np.full(a.size, 2.0)), QC, r"expected booleans \(0 or 1\), found 2\.0"),
    Broken("depths-text", save(DEPTHS, lambda a: a.astype("U8")), DEPTHS, r"expected numbers, found dtype <U8"),
    Broken(
        "stim-rows-fewer",
        save(STIM_E, lambda a: a[:-1]),
        STIM_E,
        r"has \d+ rows but stim\.times\.npy has {M}; stim\.\* arrays must agree",
    ),
    Broken("stim-rows-more", save(STIM_D, lambda a: np.append(a, 0.01)), STIM_D, r"stim\.\* arrays must agree"),
    Broken("no-trials", no_trials, STIM_T, r"no trials"),
    Broken("onset-nan", set_at(STIM_T, 1, np.nan), STIM_T, r"trial 1 has a non-finite onset nan"),
    Broken("onset-int", save(STIM_T, lambda a: a.astype(np.int64)), STIM_T, r"onset times must be floating-point"),
    Broken("emitter-0", set_at(STIM_E, 0, 0), STIM_E, r"emitter id 0 outside 1\.\.14"),
    Broken("emitter-15", set_at(STIM_E, 2, 15), STIM_E, r"emitter id 15 outside 1\.\.14"),
    Broken(
        "emitter-fractional",
        save(STIM_E, lambda a: a.astype(np.float64) + 0.5),
        STIM_E,
        r"emitter ids must be whole numbers",
    ),
    Broken("power-negative", set_at(STIM_P, 3, -0.5), STIM_P, r"negative power -0\.5 mW"),
    Broken("power-nan", set_at(STIM_P, 3, np.nan), STIM_P, r"trial 3 has a non-finite power nan"),
    Broken("duration-zero", set_at(STIM_D, 0, 0.0), STIM_D, r"non-positive pulse duration 0\.0 s"),
    Broken("duration-negative", set_at(STIM_D, 4, -0.01), STIM_D, r"non-positive pulse duration -0\.01 s"),
    Broken("duration-inf", set_at(STIM_D, 4, np.inf), STIM_D, r"non-finite duration inf"),
    Broken(
        "waveform-lines-fewer",
        text(WAVEFORM, lambda s: "".join(s.splitlines(keepends=True)[:-1])),
        WAVEFORM,
        r"has \d+ lines but there are {K} clusters",
    ),
    Broken(
        "waveform-lines-more",
        text(WAVEFORM, lambda s: s + "RS\n"),
        WAVEFORM,
        r"has \d+ lines but there are {K} clusters",
    ),
    Broken("waveform-not-utf8", write_bytes(WAVEFORM, b"\xff\xfe\x00R\x00S" * 8), WAVEFORM, r"not UTF-8"),
    Broken("kslabel-bad-row", text(KSLABEL, lambda s: s + "x;good\n"), KSLABEL, r"is not 'cluster_id,KSLabel'"),
    Broken(
        "kslabel-cluster-out-of-range",
        text(KSLABEL, lambda s: s + "999,good\n"),
        KSLABEL,
        r"cluster_id 999 outside 0\.\.\d+",
    ),
    Broken("json-invalid", text(JSON, lambda s: s[: len(s) // 2]), JSON, r"invalid JSON"),
    Broken("json-empty", write_bytes(JSON, b""), JSON, r"invalid JSON"),
    Broken("json-not-utf8", write_bytes(JSON, b'{"a": "\xff"}'), JSON, r"invalid JSON"),
    Broken("json-list", write_bytes(JSON, b"[1, 2]"), JSON, r"must hold a JSON object, found list"),
    Broken("json-string", write_bytes(JSON, b'"AL0034"'), JSON, r"must hold a JSON object, found str"),
]
BROKEN_IDS = [b.id for b in BROKEN_INPUTS]


def break_session(folder: Path, broken: Broken) -> str:
    """Apply ``broken`` to a good session folder; returns the expected message regex, placeholders filled."""
    sizes = {"K": load(folder, DEPTHS).size, "M": load(folder, STIM_T).size, "N": load(folder, SPIKES_T).size}
    broken.mutate(folder)
    return broken.match.format(**sizes)


def check_error(error: SessionFormatError, folder: Path, broken: Broken, match: str) -> None:
    assert Path(error.path) == folder / broken.file, error.path
    assert broken.file in str(error)
    assert "\n" not in str(error)
    assert str(error).startswith(str(folder / broken.file))
    assert re.search(match, error.problem), f"{match!r} not in {error.problem!r}"
    assert not _marker(folder).exists(), "an object array was unpickled"


@pytest.mark.parametrize("broken", BROKEN_INPUTS, ids=BROKEN_IDS)
def test_broken_inputs(session_folder, broken):
    match = break_session(session_folder, broken)
    with warnings.catch_warnings():
        warnings.simplefilter("error", OptoCubeWarning)  # refused, not warned about
        with pytest.raises(SessionFormatError) as info:
            alf.read_alf(session_folder)
    check_error(info.value, session_folder, broken, match)
    assert isinstance(info.value, ValueError)


def test_the_pickle_marker_works(session_folder):
    """The trap of the object-array cases is armed: numpy with allow_pickle=True does unpickle it."""
    pickled(STIM_P)(session_folder)
    with pytest.raises(SessionFormatError, match="pickle"):
        NpyFile.open(session_folder / STIM_P)
    assert not _marker(session_folder).exists()
    with pytest.raises(Exception, match="unpickled"):
        np.load(session_folder / STIM_P, allow_pickle=True)
    assert _marker(session_folder).exists()


def test_missing_folder(tmp_path):
    with pytest.raises(SessionFormatError, match="no such session folder"):
        alf.read_alf(tmp_path / "nope")


# --------------------------------------------------------------------------
# finding sessions
# --------------------------------------------------------------------------
def test_find_sessions_layouts(data_root):
    sessions = data_root / schema.SESSIONS_DIR
    for name in (OTHER_SESSION_ID, SESSION_ID):
        (sessions / name).mkdir()
    (sessions / ".AL0034_2024-12-05_en1_p0.tmp").mkdir()  # hidden: ignored
    (sessions / "notes.txt").write_text("not a session")
    assert [p.name for p in io.find_sessions(data_root)] == [SESSION_ID, OTHER_SESSION_ID]  # sorted
    assert [p.name for p in io.find_sessions(sessions)] == [SESSION_ID, OTHER_SESSION_ID]  # folder of sessions
    (sessions / SESSION_ID / schema.SESSION_JSON).write_text("{}")
    assert io.find_sessions(sessions / SESSION_ID) == [sessions / SESSION_ID]  # one session folder


def test_find_sessions_errors(tmp_path):
    with pytest.raises(SessionFormatError, match="no such data folder"):
        io.find_sessions(tmp_path / "missing")
    (tmp_path / schema.SESSIONS_DIR).mkdir()
    with pytest.raises(SessionFormatError, match="holds no session folders"):
        io.find_sessions(tmp_path)


# --------------------------------------------------------------------------
# reading a good session
# --------------------------------------------------------------------------
def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_read_session(session_folder, no_warnings):
    folder = session_folder
    root = folder.parent.parent
    calibration = {"quantifi": {"slope_mW": 0.001, "intercept_mW": 0.0001, "levels": [1.0, 4.0]}}
    (root / schema.LASER_CALIBRATION_JSON).write_text(json.dumps(calibration))
    (root / schema.LASER_CALIBRATION_MAT).write_bytes(b"MATLAB 5.0 (only its checksum is kept)")
    session = alf.read_alf(folder)
    k, m = load(folder, DEPTHS).size, load(folder, STIM_T).size
    times, clusters = load(folder, SPIKES_T), load(folder, SPIKES_C)
    assert (session.session_id, session.folder) == (SESSION_ID, folder)
    assert (session.n_clusters, session.n_trials, session.n_spikes) == (k, m, times.size)
    assert repr(session).startswith(f"<Session {SESSION_ID}: {k} clusters, {m} trials")
    # clusters and stim in file order, with the cube's dtypes
    for name, coord in schema.CLUSTER_FILES.items():
        np.testing.assert_array_equal(session.clusters[coord], load(folder, name))
    assert session.clusters[schema.QC_PASS].dtype == bool
    assert session.clusters[schema.PEAK_CHANNEL].dtype == np.int32
    assert list(session.clusters[schema.WAVEFORM_TYPE]) == (folder / WAVEFORM).read_text().split()
    assert set(session.clusters[schema.KS_LABEL]) <= {"good", "mua"}
    for name, coord in schema.STIM_FILES.items():
        np.testing.assert_array_equal(session.stim[coord], load(folder, name))
    assert session.stim[schema.EMITTER].dtype == np.int8
    np.testing.assert_array_equal(session.spikes_per_cluster, np.bincount(clusters, minlength=k))
    # surface: the median over clusters of template depth + depth from surface (finite values)
    both = load(folder, DEPTHS) + load(folder, schema.CLUSTERS_DEPTHS_FROM_SURFACE)
    assert session.surface_position_um == np.median(both[np.isfinite(both)])
    assert session.n_channels == load(folder, CHANNELS).shape[0]
    # every file read is hashed, the data root's laser calibration too
    expected = {p.name: sha256(p) for p in folder.iterdir()}
    expected.update({p.name: sha256(p) for p in root.glob("laser_calibration.*")})
    assert session.sha256 == expected
    assert session.laser_calibration == calibration
    # session.json fields, the arrays' counts
    info = json.loads((folder / JSON).read_text())
    for key, value in info.items():
        assert session.attrs[key] == value, key
    assert session.attrs[schema.ATTR_POWER_RANGE] == [load(folder, STIM_P).min(), load(folder, STIM_P).max()]


def test_spikes_streamed_in_blocks(session_folder, no_warnings):
    session = alf.read_alf(session_folder)
    assert not session.spikes.in_memory
    assert "streamed" in repr(session.spikes)
    times, clusters = load(session_folder, SPIKES_T), load(session_folder, SPIKES_C)
    for block_len in (1, 7, times.size, 10 * times.size):
        blocks = list(session.spikes.blocks(block_len))
        assert all(t.size <= block_len for t, _ in blocks)
        np.testing.assert_array_equal(np.concatenate([t for t, _ in blocks]), times)
        np.testing.assert_array_equal(np.concatenate([c for _, c in blocks]), clusters)
        assert blocks[0][0].dtype == np.float64
        assert blocks[0][1].dtype == np.int64


@pytest.mark.parametrize("block_len", [1, 5, 64])
def test_validation_across_blocks(session_folder, monkeypatch, block_len, no_warnings):
    """The streamed checks and hashes give the same answer whatever the block length."""
    monkeypatch.setattr(alf, "BLOCK_LEN", block_len)  # the ALF reader's streamed pass
    whole = {p.name: sha256(p) for p in session_folder.iterdir()}
    session = alf.read_alf(session_folder)
    assert {k: v for k, v in session.sha256.items() if k in whole} == whole
    # disorder exactly at a block boundary is still found
    times = load(session_folder, SPIKES_T)
    times[block_len], times[block_len - 1] = times[block_len - 1], times[block_len] + 1e-3
    np.save(session_folder / SPIKES_T, times)
    with pytest.warns(OptoCubeWarning, match="not sorted in time"):
        session = alf.read_alf(session_folder)
    assert session.spikes.in_memory
    t = np.concatenate([b[0] for b in session.spikes.blocks()])
    assert np.all(np.diff(t) >= 0)
    # a bad value in a late block is reported with its index in the file
    times = np.sort(times)
    times[3 * block_len + 1] = np.nan
    np.save(session_folder / SPIKES_T, times)
    with pytest.raises(SessionFormatError, match=rf"spike {3 * block_len + 1} has a non-finite time"):
        alf.read_alf(session_folder)


# --------------------------------------------------------------------------
# accepted variants and recoverable quirks, at read level
# --------------------------------------------------------------------------
def test_accepted_variants(session_folder, no_warnings):
    """Whole-number float cluster ids, 0/1 qcPass, float32 times, int64 emitters, a BOM, trailing blank lines."""
    folder = session_folder
    np.save(folder / SPIKES_C, load(folder, SPIKES_C).astype(np.float64))
    np.save(folder / QC, load(folder, QC).astype(np.int8))
    np.save(folder / STIM_E, load(folder, STIM_E).astype(np.int64))
    np.save(folder / schema.CLUSTERS_PEAK_CHANNEL, load(folder, schema.CLUSTERS_PEAK_CHANNEL).astype(np.float64))
    (folder / JSON).write_bytes(b"\xef\xbb\xbf" + (folder / JSON).read_bytes())
    (folder / WAVEFORM).write_text((folder / WAVEFORM).read_text().lower() + "\n\n")
    session = alf.read_alf(folder)
    assert session.clusters[schema.QC_PASS].dtype == bool
    assert set(session.clusters[schema.WAVEFORM_TYPE]) <= {"RS", "FS"}  # case folded
    assert session.attrs["subject"]


def test_kslabel_without_header_and_tab_separated(session_folder, no_warnings):
    k = load(session_folder, DEPTHS).size
    (session_folder / KSLABEL).write_text("".join(f"{i}\t{'good' if i % 2 else 'mua'}\n" for i in range(k)))
    session = alf.read_alf(session_folder)
    assert list(session.clusters[schema.KS_LABEL]) == ["mua", "good"] * (k // 2) + ["mua"] * (k % 2)


def _swap_pass_and_fail(qc: np.ndarray) -> np.ndarray:
    """One passing and one failing cluster swap their qcPass (the counts in session.json still hold)."""
    qc = qc.copy()
    i, j = np.flatnonzero(qc)[0], np.flatnonzero(~qc)[0]
    qc[i], qc[j] = False, True
    return qc


def _reverse_stim(folder: Path) -> None:
    for name in schema.STIM_FILES:
        np.save(folder / name, load(folder, name)[::-1].copy())


QUIRKS_AT_READ = [
    ("unknown-waveform", text(WAVEFORM, lambda s: s.replace("RS", "XX", 1)), r"unknown waveform types \['XX'\]"),
    (
        "partial-kslabel",
        text(KSLABEL, lambda s: "".join(s.splitlines(keepends=True)[:-2])),
        r"labels \d+ of \d+ clusters",
    ),
    ("qc-disagrees", save(QC, _swap_pass_and_fail), r"2 clusters' qcPass disagrees with the QC rule"),
    ("template-channels", save(TEMPLATES, lambda a: a[:, :, :-1]), r"has \d+ channels but channelPositions has"),
    ("peak-channel-range", set_at(schema.CLUSTERS_PEAK_CHANNEL, 0, 100000), r"peak channels outside -1\.\.\d+"),
    (
        "no-finite-depths",
        save(schema.CLUSTERS_DEPTHS_FROM_SURFACE, lambda a: np.full(a.size, np.nan)),
        r"no finite depths",
    ),
    (
        "top-of-shank",
        text(JSON, lambda s: json.dumps({**json.loads(s), "top_of_shank_um": 99999.0})),
        r"top_of_shank_um = 99999\.0 but the cluster depths put the surface at",
    ),
    ("unsorted-trials", _reverse_stim, r"trials are not in onset order; sorted by onset"),
]


@pytest.mark.parametrize(("mutate", "match"), [q[1:] for q in QUIRKS_AT_READ], ids=[q[0] for q in QUIRKS_AT_READ])
def test_quirks_warn_naming_the_file(session_folder, mutate, match):
    mutate(session_folder)
    with pytest.warns(OptoCubeWarning, match=match) as record:
        session = alf.read_alf(session_folder)
    for w in record:
        assert str(w.message).startswith(str(session_folder))
        assert "\n" not in str(w.message)
    assert session.n_clusters == load(session_folder, DEPTHS).size


def test_surface_ignores_nan_depths(session_folder, no_warnings):
    depths = load(session_folder, schema.CLUSTERS_DEPTHS_FROM_SURFACE)
    depths[:3] = np.nan
    np.save(session_folder / schema.CLUSTERS_DEPTHS_FROM_SURFACE, depths)
    session = alf.read_alf(session_folder)
    both = load(session_folder, DEPTHS) + depths
    assert session.surface_position_um == np.median(both[3:])


def test_session_json_nan_and_extra_fields(session_folder, no_warnings):
    info = json.loads((session_folder / JSON).read_text())
    info.update(extra_field={"nested": [1, 2]}, broken_value=float("nan"))
    (session_folder / JSON).write_text(json.dumps(info))
    session = alf.read_alf(session_folder)
    assert session.attrs["extra_field"] == {"nested": [1, 2]}
    assert np.isnan(session.attrs["broken_value"])


def test_unsorted_spikes_sorted_stably(tmp_path):
    folder = write_synth(tmp_path / SESSION_ID, tiny_spec(unsorted_spikes=True))
    with pytest.warns(OptoCubeWarning, match="spikes are not sorted in time; sorted in memory"):
        session = alf.read_alf(folder)
    times, clusters = load(folder, SPIKES_T), load(folder, SPIKES_C)
    order = np.argsort(times, kind="stable")
    ((t, c),) = list(session.spikes.blocks(10 * times.size))
    np.testing.assert_array_equal(t, times[order])
    np.testing.assert_array_equal(c, clusters[order])


def test_pickle_never_loaded_even_through_np_load_paths(session_folder):
    """Every .npy the reader touches is refused as an object array before its data are read."""
    for name in (*schema.CLUSTER_FILES, *schema.STIM_FILES, SPIKES_T, SPIKES_C, TEMPLATES, CHANNELS):
        folder = session_folder.parent / f"copy_{name}" / SESSION_ID
        folder.mkdir(parents=True)
        for p in session_folder.iterdir():
            (folder / p.name).write_bytes(p.read_bytes())
        if load(folder, name).ndim == 1:
            pickled(name)(folder)
        else:
            arr = np.empty(load(folder, name).shape, dtype=object)
            arr[...] = Booby(str(_marker(folder)))
            np.save(folder / name, arr, allow_pickle=True)
        with pytest.raises(SessionFormatError, match="pickle") as info:
            alf.read_alf(folder)
        assert Path(info.value.path).name == name
        assert not _marker(folder).exists()
    assert pickle.dumps(Booby("x"))  # the trap itself pickles
