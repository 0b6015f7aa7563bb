"""Tests of the opto-cube command: convert (summary, exit codes, broken sessions, atomicity), info, usage errors.

Most runs call :func:`opto_cube.cli.main` in-process (fast); a few run the
installed console script in a subprocess, as users do (a traceback, a killed
conversion).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from helpers import OTHER_SESSION_ID, SESSION_ID, assert_exact, store_listing, tiny_spec, write_synth
from test_io import BROKEN_IDS, BROKEN_INPUTS, MARKER, break_session

from opto_cube import cli, schema, synth
from opto_cube.store import chunks
from opto_cube.store.chunks import read_store_attrs
from opto_cube.store.ownership import is_complete

SCRIPT = Path(sys.executable).with_name("opto-cube")


def run(capsys, *args: str) -> tuple[int, str, str]:
    """``opto-cube ARGS`` in-process: exit status, stdout, stderr."""
    try:
        code = cli.main([str(a) for a in args])
    except SystemExit as e:  # argparse usage errors
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def run_script(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    command = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "opto_cube.cli"]
    env = {k: v for k, v in os.environ.items() if k != "OPTO_CUBE_DEBUG"}
    return subprocess.run([*command, *map(str, args)], capture_output=True, text=True, timeout=timeout, env=env)


def summary(out: str) -> str:
    return out.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def clean_session(tmp_path_factory) -> Path:
    """A clean tiny session (no warnings), copied into data roots; read-only."""
    return write_synth(tmp_path_factory.mktemp("clean") / SESSION_ID, tiny_spec(seed=3))


def add_session(root: Path, source: Path, name: str) -> Path:
    """A copy of ``source`` named ``name`` (its session.json saying so) in the data root."""
    folder = Path(shutil.copytree(source, root / schema.SESSIONS_DIR / name))
    info = json.loads((folder / schema.SESSION_JSON).read_text())
    (folder / schema.SESSION_JSON).write_text(json.dumps({**info, "session_id": name}))
    return folder


# --------------------------------------------------------------------------
# convert: broken sessions, through the command line
# --------------------------------------------------------------------------
@pytest.mark.parametrize("broken", BROKEN_INPUTS, ids=BROKEN_IDS)
def test_broken_session_one_line_exit_1_others_convert(capsys, tmp_path, clean_session, broken):
    root, out = tmp_path / "data", tmp_path / "stores"
    good = add_session(root, clean_session, SESSION_ID)
    bad = add_session(root, clean_session, OTHER_SESSION_ID)
    match = break_session(bad, broken)
    code, stdout, stderr = run(capsys, "convert", root, "--out", out, "--bin-ms", "10", "--quiet")
    assert code == 1
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith(f"opto-cube: error: {bad / broken.file}: ")
    assert re.search(match, lines[0])
    assert "Traceback" not in stderr
    assert summary(stdout) == "1 converted, 0 skipped, 1 failed (2 sessions)"
    assert store_listing(out) == [f"{SESSION_ID}.zarr"]  # no store, no temp dir of the broken session
    assert not (bad.parent / MARKER).exists()
    attrs = read_store_attrs(out / f"{SESSION_ID}.zarr")
    assert attrs[schema.ATTR_COMPLETE] is True
    assert (
        attrs[schema.ATTR_SHA256][schema.SESSION_JSON]
        == hashlib.sha256((good / schema.SESSION_JSON).read_bytes()).hexdigest()
    )


@pytest.mark.slow
def test_broken_session_through_the_console_script(tmp_path, clean_session):
    """As users run it: one line, no traceback, exit 1, the good session converted."""
    root, out = tmp_path / "data", tmp_path / "stores"
    add_session(root, clean_session, SESSION_ID)
    bad = add_session(root, clean_session, OTHER_SESSION_ID)
    np.save(bad / schema.STIM_DURATIONS, np.zeros(3), allow_pickle=False)
    proc = run_script("convert", root, "--out", out, "--bin-ms", "10")
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.splitlines() == [
        f"opto-cube: error: {bad / schema.STIM_DURATIONS}: has 3 rows but stim.times.npy has "
        f"{np.load(bad / schema.STIM_TIMES).size}; stim.* arrays must agree"
    ]
    assert re.search(rf"^converted +{SESSION_ID} -> .*{SESSION_ID}\.zarr \(", proc.stdout, re.M)
    assert summary(proc.stdout) == "1 converted, 0 skipped, 1 failed (2 sessions)"
    assert store_listing(out) == [f"{SESSION_ID}.zarr"]


def test_binning_refusal_is_one_line(capsys, tmp_path, clean_session):
    root = tmp_path / "data"
    add_session(root, clean_session, SESSION_ID)
    code, _stdout, stderr = run(capsys, "convert", root, "--out", tmp_path / "stores", "--bin-ms", "3", "--quiet")
    assert code == 1
    assert stderr.splitlines() == [
        "opto-cube: error: --bin-ms 3: bin width 3.0 ms cannot tile the pre window [-0.5, 0) s;"
        " choose one that divides 500 ms"
    ]
    assert not (tmp_path / "stores").exists()  # refused before the output folder is created


# --------------------------------------------------------------------------
# convert: summary, skipping, overwriting, selecting
# --------------------------------------------------------------------------
def test_convert_summary_skip_and_overwrite(capsys, tmp_path, clean_session):
    root, out = tmp_path / "data", tmp_path / "new" / "stores"  # --out need not exist
    add_session(root, clean_session, SESSION_ID)
    add_session(root, clean_session, OTHER_SESSION_ID)
    code, stdout, stderr = run(capsys, "convert", root, "--out", out, "--bin-ms", "10")
    assert code == 0
    assert stderr == ""
    k, m = np.load(clean_session / schema.CLUSTERS_QC_PASS).size, np.load(clean_session / schema.STIM_TIMES).size
    for name in (SESSION_ID, OTHER_SESSION_ID):
        assert re.search(
            rf"^converted +{name} -> {re.escape(str(out / name))}\.zarr \({k}, {m}, 150\) uint8 \(", stdout, re.M
        ), stdout
    assert summary(stdout) == "2 converted, 0 skipped, 0 failed (2 sessions)"
    store = out / f"{SESSION_ID}.zarr"
    stamp = (store / "zarr.json").stat().st_mtime_ns

    code, stdout, _ = run(capsys, "convert", root, "--out", out, "--bin-ms", "10")
    assert code == 0
    assert re.search(rf"^skipped +{SESSION_ID}", stdout, re.M)
    assert summary(stdout) == "0 converted, 2 skipped, 0 failed (2 sessions)"
    assert (store / "zarr.json").stat().st_mtime_ns == stamp

    code, stdout, _ = run(
        capsys, "convert", root, "--out", out, "--bin-ms", "10", "--overwrite", "--session", SESSION_ID
    )
    assert code == 0
    assert summary(stdout) == "1 converted, 0 skipped, 0 failed (1 session)"
    assert (store / "zarr.json").stat().st_mtime_ns != stamp
    assert store_listing(out) == [f"{SESSION_ID}.zarr", f"{OTHER_SESSION_ID}.zarr"]

    code, stdout, stderr = run(capsys, "convert", root, "--out", out, "--bin-ms", "5", "--quiet")  # new parameters
    assert code == 1  # a store at other parameters is never replaced silently (issue 18)
    assert summary(stdout) == "0 converted, 0 skipped, 2 failed (2 sessions)"
    assert stderr.count("pass --overwrite to replace it, or choose another --out") == 2
    code, stdout, _ = run(capsys, "convert", root, "--out", out, "--bin-ms", "5", "--quiet", "--overwrite")
    assert code == 0
    assert summary(stdout) == "2 converted, 0 skipped, 0 failed (2 sessions)"
    assert xr.open_zarr(store).attrs[schema.ATTR_BIN_WIDTH] == 0.005


def test_convert_options_reach_the_store(capsys, tmp_path, clean_session):
    root, out = tmp_path / "data", tmp_path / "stores"
    folder = add_session(root, clean_session, SESSION_ID)
    code, _, stderr = run(
        capsys,
        "convert",
        root,
        "--out",
        out,
        "--bin-ms",
        "5",
        "--window",
        "-0.6,0.3",
        "--tip-offset-um",
        "25",
        "--jobs",
        "1",
        "--quiet",
    )
    assert code == 0, stderr
    ds = assert_exact(folder, out / f"{SESSION_ID}.zarr")
    assert ds.attrs[schema.ATTR_WINDOW] == [-0.6, 0.3]
    assert ds.attrs[schema.ATTR_TIP_OFFSET] == 25.0
    assert ds.attrs[schema.ATTR_BIN_WIDTH] == 0.005
    assert ds.sizes[schema.TIME] == 180


def test_warnings_are_one_line_each_on_stderr(capsys, tmp_path):
    root = tmp_path / "data"
    folder = write_synth(root / schema.SESSIONS_DIR / SESSION_ID, tiny_spec(omit_ks_label=True, shuffle_trials=True))
    code, stdout, stderr = run(capsys, "convert", root, "--out", tmp_path / "stores", "--bin-ms", "10", "--quiet")
    assert code == 0
    assert summary(stdout) == "1 converted, 0 skipped, 0 failed (1 session)"
    lines = stderr.splitlines()
    assert len(lines) == 2
    assert all(line.startswith(f"opto-cube: warning: {folder}/") for line in lines)
    assert any("ks_label left empty" in line for line in lines)
    assert any("onset order" in line for line in lines)


def test_select_sessions(capsys, tmp_path, clean_session):
    root, out = tmp_path / "data", tmp_path / "stores"
    add_session(root, clean_session, SESSION_ID)
    add_session(root, clean_session, OTHER_SESSION_ID)
    code, stdout, _ = run(capsys, "convert", root, "--out", out, "--bin-ms", "10", "--session", OTHER_SESSION_ID)
    assert code == 0
    assert summary(stdout) == "1 converted, 0 skipped, 0 failed (1 session)"
    assert store_listing(out) == [f"{OTHER_SESSION_ID}.zarr"]
    code, stdout, stderr = run(capsys, "convert", root, "--out", out, "--session", "AL0099_nope", "--quiet")
    assert code == 1
    assert stdout == ""
    assert stderr.splitlines() == [f"opto-cube: error: {root}: no session named 'AL0099_nope'"]


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["convert", "{root}/missing", "--out", "{out}"], r"^opto-cube: error: .*missing: no such data folder$"),
        (["convert", "{root}", "--out", "{out}"], r"^opto-cube: error: .*sessions: holds no session folders"),
        (["info", "{root}/missing.zarr"], r"^opto-cube: error: .*missing\.zarr: no such store or folder$"),
        (["info", "{root}"], r"^opto-cube: error: .*data: holds no \.zarr stores$"),
    ],
)
def test_one_line_errors(capsys, tmp_path, args, match):
    root = tmp_path / "data"
    (root / schema.SESSIONS_DIR).mkdir(parents=True)
    code, _, stderr = run(capsys, *(a.format(root=root, out=tmp_path / "stores") for a in args))
    assert code == 1, stderr
    assert len(stderr.splitlines()) == 1, stderr
    assert re.search(match, stderr.strip()), stderr


# --------------------------------------------------------------------------
# usage errors (argparse, exit 2)
# --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--window", "abc"], r"argument --window: expected START,STOP in seconds \(e\.g\. -0\.5,1\.0\), got 'abc'"),
        (["--window", "1.0"], r"argument --window: expected START,STOP"),
        (["--window", "-0.5,1,2"], r"argument --window: expected START,STOP.*got '-0\.5,1,2'"),
        (["--window", "a,b"], r"argument --window: expected START,STOP"),
        (["--window=-0.5;1"], r"argument --window: expected START,STOP"),
        (["--window"], r"argument --window: expected one argument"),
        (["--jobs", "0"], r"argument --jobs: expected a positive whole number, got '0'"),
        (["--jobs", "two"], r"argument --jobs: expected a positive whole number"),
        (["--bin-ms", "fast"], r"argument --bin-ms: invalid float value"),
        ([], r"the following arguments are required: --out"),
    ],
)
def test_usage_errors_exit_2(capsys, tmp_path, args, match):
    full = ["convert", tmp_path, *(["--out", tmp_path / "stores"] if args else []), *args]
    code, _stdout, stderr = run(capsys, *full)
    assert code == 2
    assert "usage: opto-cube convert" in stderr, stderr
    assert re.search(match, stderr), stderr
    assert "Traceback" not in stderr
    assert not (tmp_path / "stores").exists()


@pytest.mark.parametrize("form", [["--window", "-0.6,0.2"], ["--window=-0.6,0.2"]], ids=["space", "equals"])
def test_window_with_a_negative_start(capsys, tmp_path, clean_session, form):
    """``--window -0.6,0.2`` works as well as ``--window=-0.6,0.2`` (argparse alone takes -0.6,0.2 for an option)."""
    root = tmp_path / "data"
    folder = add_session(root, clean_session, SESSION_ID)
    code, _, stderr = run(capsys, "convert", root, "--out", tmp_path / "stores", *form, "--bin-ms", "10", "--quiet")
    assert code == 0, stderr
    ds = assert_exact(folder, tmp_path / "stores" / f"{SESSION_ID}.zarr")
    assert ds.attrs[schema.ATTR_WINDOW] == [-0.6, 0.2]


def test_no_command_and_version(capsys):
    code, _, stderr = run(capsys)
    assert code == 2
    assert "usage: opto-cube" in stderr
    code, stdout, _ = run(capsys, "--version")
    assert code == 0
    assert stdout.startswith("opto_cube ")


# --------------------------------------------------------------------------
# info
# --------------------------------------------------------------------------
def test_info_on_a_store_and_on_a_folder(capsys, tiny_converted):
    store = tiny_converted.stores[10.0]
    code, stdout, stderr = run(capsys, "info", store)
    assert code == 0
    assert stderr == ""
    ds = xr.open_zarr(store)
    k, m = ds.sizes[schema.CLUSTER], ds.sizes[schema.TRIAL]
    assert stdout.splitlines()[0].startswith(f"session   {SESSION_ID}  (subject AL_0034")
    assert f"spike_counts {{'cluster': {k}, 'trial': {m}, 'time': 150}} uint8" in stdout
    assert "bins      10 ms over [-0.5, 1.0] s from onset" in stdout
    assert f"clusters  {k} (" in stdout
    assert f"trials    {m}:" in stdout
    code, folder_out, _ = run(capsys, "info", store.parent)
    assert code == 0
    assert folder_out.strip() == stdout.strip()


# --------------------------------------------------------------------------
# atomicity: a conversion killed mid-write
# --------------------------------------------------------------------------
@pytest.mark.slow
def test_killed_conversion_leaves_no_store_and_the_rerun_finishes(capsys, tmp_path):
    """SIGKILL while the hidden temp store is being written: no store (or a complete one) is left; the
    next run removes the leftover and finishes; an unchanged session is then skipped; --overwrite rebuilds."""
    root, out = tmp_path / "data", tmp_path / "stores"
    folder = root / schema.SESSIONS_DIR / SESSION_ID
    synth.write_session(folder, synth.SIZES["small"])
    command = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "opto_cube.cli"]
    proc = subprocess.Popen(
        [*command, "convert", str(root), "--out", str(out), "--bin-ms", "1", "--quiet"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    tmp_pattern = f".{SESSION_ID}.zarr.tmp-{proc.pid}-*"
    deadline = time.monotonic() + 120
    killed_mid_write = False
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            temps = list(out.glob(tmp_pattern)) if out.exists() else []
            if temps and any((temps[0] / schema.SPIKE_COUNTS / "c").glob("*")):  # chunks being written
                os.kill(proc.pid, signal.SIGKILL)
                killed_mid_write = True
                break
            time.sleep(0.002)
    finally:
        if proc.poll() is None and not killed_mid_write:
            proc.kill()
        proc.wait()
    target = out / f"{SESSION_ID}.zarr"
    if killed_mid_write and proc.returncode == -signal.SIGKILL:
        leftovers = list(out.glob(tmp_pattern))
        if leftovers:  # killed before the rename: no store at all, only the hidden leftover
            assert store_listing(out) == [leftovers[0].name]
            assert not target.exists()
        else:  # the rename won the race: the store is complete
            assert xr.open_zarr(target).attrs[schema.ATTR_COMPLETE] is True
    else:
        pytest.fail("the conversion ended before it could be killed mid-write; use a larger session")
    # the rerun removes the leftover and finishes
    code, stdout, stderr = run(capsys, "convert", root, "--out", out, "--bin-ms", "1", "--quiet")
    assert code == 0, stderr
    assert store_listing(out) == [target.name]
    assert xr.open_zarr(target).attrs[schema.ATTR_COMPLETE] is True
    # unchanged: skipped; --overwrite: rebuilt
    code, stdout, _ = run(capsys, "convert", root, "--out", out, "--bin-ms", "1")
    assert code == 0
    assert re.search(rf"^skipped +{SESSION_ID}", stdout, re.M)
    assert summary(stdout) == "0 converted, 1 skipped, 0 failed (1 session)"
    code, stdout, _ = run(capsys, "convert", root, "--out", out, "--bin-ms", "1", "--overwrite")
    assert code == 0
    assert summary(stdout) == "1 converted, 0 skipped, 0 failed (1 session)"
    assert store_listing(out) == [target.name]
    assert_exact(folder, target)


# --------------------------------------------------------------------------
# hostile inputs (issue "store integrity"): one line each, the folders left exactly as they were
# --------------------------------------------------------------------------
def tree(*roots: Path) -> dict[str, str]:
    """Every entry under ``roots``: a folder, or a file's SHA-256 (what "left exactly as it was" compares)."""
    out = {}
    for root in roots:
        for path in sorted(Path(root).rglob("*")) if Path(root).exists() else []:
            out[str(path)] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def _user_folder(root: Path, out: Path) -> None:
    (out / f"{SESSION_ID}.zarr").mkdir(parents=True)
    (out / f"{SESSION_ID}.zarr" / "notes.txt").write_text("x\n")


def _plain_file(root: Path, out: Path) -> None:
    out.mkdir()
    (out / f"{SESSION_ID}.zarr").write_text("not a store\n")


def _foreign_zarr(root: Path, out: Path) -> None:  # another tool's Zarr store of that name
    xr.Dataset({"x": ("i", np.arange(3))}).to_zarr(out / f"{SESSION_ID}.zarr", zarr_format=3)


def _negative_header(root: Path, out: Path) -> None:
    for name in (schema.SPIKES_TIMES, schema.SPIKES_CLUSTERS):
        path = root / schema.SESSIONS_DIR / SESSION_ID / name
        dtype = "<f8" if name == schema.SPIKES_TIMES else "<i4"
        header = f"{{'descr': '{dtype}', 'fortran_order': False, 'shape': (-5,), }}"
        header += " " * (118 - 10 - len(header) - 1) + "\n"
        path.write_bytes(b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode("latin1"))


def _long_pulse(root: Path, out: Path) -> None:
    path = root / schema.SESSIONS_DIR / SESSION_ID / schema.STIM_DURATIONS
    durations = np.load(path)
    durations[0] = 1e5
    np.save(path, durations)


def _no_clusters(root: Path, out: Path) -> None:
    folder = root / schema.SESSIONS_DIR / SESSION_ID
    shutil.rmtree(folder)
    from helpers import write_alf_session

    write_alf_session(
        folder, spike_times=np.zeros(0), spike_clusters=np.zeros(0, np.int32), n_clusters=0,
        onsets=np.array([10.0, 20.0]), durations=np.array([0.05, 0.05]),
    )  # fmt: skip


S = re.escape(SESSION_ID)
HOSTILE = {
    "user folder in the way": (_user_folder, [], rf"{S}\.zarr: exists and is not an opto_cube store \(.*\); refusing"),
    "plain file in the way": (_plain_file, [], rf"{S}\.zarr: exists and is not an opto_cube store \(.*\); refusing"),
    "another Zarr store": (_foreign_zarr, ["--overwrite"], rf"{S}\.zarr: exists and is not an opto_cube store"),
    "negative npy shape": (_negative_header, [], rf"{S}/spikes\.\w+\.npy: corrupt header: negative shape \(-5,\)$"),
    "1e5 s pulse": (_long_pulse, [], rf"{S}: the trial-chunk buffer would take \d+\.\d GiB .*"
                    r"raise --max-buffer-gib$"),
    "1e7 s window": (None, ["--window", "-0.5,1e7"], rf"{S}: the trial-chunk buffer would take \d+\.\d GiB"),
    "huge cube": (None, ["--window", "-0.5,2000", "--max-cube-gib", "0.1"], rf"{S}: the cube would take"),
    "zero clusters": (_no_clusters, [], rf"{S}/clusters\.templateDepths\.npy: no clusters \(0 rows\)"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(HOSTILE), ids=list(HOSTILE))
def test_hostile_case_is_one_line_and_touches_nothing(capsys, tmp_path, clean_session, case):
    prepare, extra, match = HOSTILE[case]
    root, out = tmp_path / "data", tmp_path / "stores"
    add_session(root, clean_session, SESSION_ID)
    if prepare is not None:
        prepare(root, out)
    before, out_existed = tree(root, out), out.exists()
    code, _, stderr = run(capsys, "convert", root, "--out", out, "--quiet", *extra)
    errors = [line for line in stderr.splitlines() if not line.startswith("opto-cube: warning: ")]
    assert code == 1, stderr
    assert len(errors) == 1, stderr
    assert (
        errors[0].startswith(f"opto-cube: error: {root / schema.SESSIONS_DIR / SESSION_ID}")
        or case.endswith("in the way")
        or case == "another Zarr store"
    ), errors
    assert re.search(match, errors[0]), errors[0]
    after = tree(root, out)
    assert out.exists() == out_existed  # an --out the run created is not left behind, empty
    assert after == before


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["--bin-ms", "0"], "--bin-ms 0: bin width must be positive, got 0.0 ms"),
        (["--bin-ms", "nan"], "--bin-ms nan: expected a finite bin width in ms"),
        (["--window", "-0.4,1"], "--bin-ms 1 --window -0.4,1.0: window [-0.4, 1.0) s must cover the pre window"),
        (["--max-buffer-gib", "0"], None),  # argparse: exit 2
    ],
)
def test_parameters_refused_once_before_anything(capsys, tmp_path, clean_session, args, line):
    root, out = tmp_path / "data", tmp_path / "stores"
    for name in (SESSION_ID, OTHER_SESSION_ID):
        add_session(root, clean_session, name)
    code, stdout, stderr = run(capsys, "convert", root, "--out", out, "--quiet", *args)
    if line is None:
        assert code == 2
        assert "--max-buffer-gib: expected a positive number" in stderr
    else:
        assert code == 1
        assert len(stderr.splitlines()) == 1
        assert stdout == ""
        assert stderr.startswith(f"opto-cube: error: {line}"), stderr
    assert not out.exists()


def test_session_json_cannot_set_the_store_attributes(capsys, tmp_path, clean_session):
    root, out = tmp_path / "data", tmp_path / "stores"
    folder = add_session(root, clean_session, SESSION_ID)
    info = json.loads((folder / schema.SESSION_JSON).read_text())
    hostile = {**info, "opto_cube_complete": True, "opto_cube_format_version": 99, "bin_width_s": 7, "x": 1}
    (folder / schema.SESSION_JSON).write_text(json.dumps(hostile))
    assert run(capsys, "convert", root, "--out", out, "--quiet", "--bin-ms", "10")[0] == 0
    attrs = xr.open_zarr(out / f"{SESSION_ID}.zarr").attrs
    assert attrs[schema.ATTR_SESSION_JSON] == hostile  # the whole session.json, as read, nested
    assert attrs[schema.ATTR_FORMAT_VERSION] == schema.FORMAT_VERSION
    assert attrs[schema.ATTR_BIN_WIDTH] == 0.01
    assert attrs["x"] == 1
    assert attrs["subject"] == info["subject"]
    assert attrs[schema.ATTR_COMPLETE] is True  # set by the writer, last


def test_a_killed_in_place_write_is_never_complete(tmp_path, clean_session, monkeypatch):
    """A session.json carrying the completion mark: a write interrupted before the seal leaves no complete store."""
    root = tmp_path / "data"
    folder = add_session(root, clean_session, SESSION_ID)
    info = json.loads((folder / schema.SESSION_JSON).read_text())
    (folder / schema.SESSION_JSON).write_text(json.dumps({**info, "opto_cube_complete": True}))
    seen = {}

    def interrupted(zstore, path, storage_options=None):
        seen["complete"] = is_complete(path)
        raise KeyboardInterrupt

    monkeypatch.setattr(chunks, "seal", interrupted)
    from opto_cube.jobs import convert

    with pytest.raises(KeyboardInterrupt):
        convert.convert_session(folder, tmp_path / "stores", bin_ms=10)
    assert seen == {"complete": False}  # everything written but the seal: not complete
    assert store_listing(tmp_path / "stores") == []


def test_control_characters_in_names_are_escaped(capsys, tmp_path, clean_session):
    root, out = tmp_path / "data", tmp_path / "stores"
    folder = add_session(root, clean_session, "AL0034_2024-12-05\nen1_p0")
    (folder / schema.STIM_TIMES).unlink()
    code, _, stderr = run(capsys, "convert", root, "--out", out, "--quiet")
    assert code == 1
    assert len(stderr.splitlines()) == 1
    assert "AL0034_2024-12-05\\nen1_p0/stim.times.npy: required file is missing" in stderr


def test_duplicate_ks_label_ids_are_counted_once(capsys, tmp_path, clean_session):
    root, out = tmp_path / "data", tmp_path / "stores"
    folder = add_session(root, clean_session, SESSION_ID)
    labels = folder / schema.CLUSTERS_KS_LABEL
    rows = labels.read_text().splitlines()
    labels.write_text("\n".join([*rows[:2], rows[1], *rows[3:]]) + "\n")  # cluster 0 twice, cluster 1 missing
    code, _, stderr = run(capsys, "convert", root, "--out", out, "--quiet", "--bin-ms", "10")
    assert code == 0
    assert f"{labels}: cluster ids listed more than once: [0] (the last label kept)" in stderr
    n = len(rows) - 1
    assert f"{labels}: labels {n - 1} of {n} clusters; the others left empty" in stderr


def test_out_inside_a_flat_data_folder(capsys, tmp_path, clean_session):
    root = tmp_path / "flat"
    shutil.copytree(clean_session, root / SESSION_ID)
    for _ in range(2):
        code, stdout, stderr = run(capsys, "convert", root, "--out", root / "stores", "--bin-ms", "10", "--quiet")
        assert code == 0, stderr
    assert summary(stdout) == "0 converted, 1 skipped, 0 failed (1 session)"


def test_damaged_store_is_rebuilt_by_convert(capsys, tmp_path, clean_session):
    from helpers import damage

    root, out = tmp_path / "data", tmp_path / "stores"
    add_session(root, clean_session, SESSION_ID)
    assert run(capsys, "convert", root, "--out", out, "--quiet", "--bin-ms", "10")[0] == 0
    target = out / f"{SESSION_ID}.zarr"
    damage(target, f"{schema.SPIKE_COUNTS}/c/0/0/0", "delete")
    code, stdout, _ = run(capsys, "convert", root, "--out", out, "--quiet", "--bin-ms", "10")
    assert code == 0
    assert summary(stdout) == "1 converted, 0 skipped, 0 failed (1 session)"
    assert run(capsys, "verify", target, "--data", root)[0] == 0


# --------------------------------------------------------------------------
# a full disk: one line naming the session and the output, nothing left behind
# --------------------------------------------------------------------------
@pytest.fixture
def full_disk(tmp_path, monkeypatch):
    """A folder on a 128 kB tmpfs (mounted when the machine allows it), else one whose writers find the disk full."""
    import errno

    folder = tmp_path / "small"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=128k", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode == 0:
        yield folder
        subprocess.run(["umount", str(folder)], check=True)
        return
    import pandas as pd
    import zarr.storage

    async def full(self, key, value, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    def full_csv(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(zarr.storage.LocalStore, "set", full)
    monkeypatch.setattr(pd.DataFrame, "to_csv", full_csv)
    yield folder


def test_convert_on_a_full_disk(capsys, tmp_path, clean_session, full_disk):
    root, out = tmp_path / "data", full_disk / "stores"
    folder = add_session(root, clean_session, SESSION_ID)
    code, _, stderr = run(capsys, "convert", root, "--out", out, "--quiet", "--bin-ms", "10")
    assert code == 1
    assert stderr.splitlines() == [
        f"opto-cube: error: {folder}: {out / f'{SESSION_ID}.zarr'}: No space left on device (nothing written)"
    ]
    assert not out.exists()  # created by this run, left empty: removed


def test_responses_on_a_full_disk(capsys, tmp_path, tiny_converted, full_disk):
    filler = full_disk / "filler"
    if os.path.ismount(full_disk):
        with open(filler, "wb") as f, contextlib.suppress(OSError):
            f.write(b"\0" * 200_000)
    out = full_disk / "table" / "responses.csv"
    code, _, stderr = run(capsys, "responses", tiny_converted.stores[10.0], "--out", out)
    assert code == 1
    assert stderr.splitlines() == [f"opto-cube: error: {out}: No space left on device"]
    assert sorted(p.name for p in full_disk.iterdir()) == (["filler"] if filler.exists() else [])
