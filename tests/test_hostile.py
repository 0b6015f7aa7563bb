"""The defects a hostile run found (issue 18), as one table: nothing replaced, nothing trusted blindly.

Each case builds a hostile situation under a fresh tmp folder, runs one
``opto-cube`` command in-process and checks four things: the exit status, the
one line (on stdout or stderr) naming the file or store and what is wrong, no
traceback, and the bytes of what the user owns (hashed before and after)
unchanged. Beside the table: random tampering of a store (a chunk rewritten
with its checksum record) found by ``verify --data``; the numba cache with no
writable folder of numba's own; zarr's missing-chunk option when the installed
zarr has it; and the README's snippet, run as written.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from helpers import SESSION_ID, tiny_spec, write_synth
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from opto_cube import cli, schema, synth
from opto_cube.jobs import demo
from opto_cube.jobs import to_nwb as nwb_writer
from opto_cube.store import write as store

README = Path(__file__).resolve().parents[1] / "README.md"
ESC_ID = "AL0034_2024-12-05_en1_p0\x1b[31m"


# --------------------------------------------------------------------------
# A clean session, its store (10 ms) and its NWB file, built once; every case copies what it needs
# --------------------------------------------------------------------------
@dataclass(frozen=True)
class Base:
    session: Path  # a clean ALF session folder named SESSION_ID
    store: Path  # its store at 10 ms
    nwb_file: Path  # its NWB file (to-nwb)
    nwb_store: Path  # the store converted from the NWB file, 10 ms


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Base:
    import warnings

    root = tmp_path_factory.mktemp("hostile-base")
    session = write_synth(root / "data" / schema.SESSIONS_DIR / SESSION_ID, tiny_spec(seed=3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert (
            cli.main(["convert", str(root / "data"), "--out", str(root / "stores"), "--bin-ms", "10", "--quiet"]) == 0
        )
        assert cli.main(["to-nwb", str(root / "data"), "--out", str(root / "nwb")]) == 0
        nwb_file = root / "nwb" / f"{SESSION_ID}.nwb"
        assert cli.main(["convert", str(nwb_file), "--out", str(root / "nwb_stores"), "--bin-ms", "10", "--quiet"]) == 0
    return Base(session, root / "stores" / f"{SESSION_ID}.zarr", nwb_file, root / "nwb_stores" / f"{SESSION_ID}.zarr")


def _data(tmp: Path, base: Base) -> Path:
    """A copy of the clean data root (``data/sessions/<id>/``) under ``tmp``."""
    shutil.copytree(base.session, tmp / "data" / schema.SESSIONS_DIR / SESSION_ID)
    return tmp / "data"


def _stores(tmp: Path, source: Path) -> Path:
    """A folder of stores holding a copy of ``source``."""
    shutil.copytree(source, tmp / "stores" / source.name)
    return tmp / "stores"


def _folder(tmp: Path) -> Path:
    return tmp / "data" / schema.SESSIONS_DIR / SESSION_ID


def _nwb(tmp: Path, base: Base) -> Path:
    path = tmp / "nwb" / base.nwb_file.name
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(base.nwb_file, path)
    return path


def _rewrite_h5(path: Path, name: str, values: np.ndarray) -> None:
    """Replace the dataset ``name`` of an HDF5 file with ``values``, keeping its attributes (pynwb's types)."""
    import h5py

    with h5py.File(path, "r+") as f:
        attrs = dict(f[name].attrs)
        del f[name]
        dataset = f.create_dataset(name, data=values)
        for key, value in attrs.items():
            dataset.attrs[key] = value


def _read_h5(path: Path, name: str) -> np.ndarray:
    import h5py

    with h5py.File(path, "r") as f:
        return np.asarray(f[name][()])


def _set_metadata(path: Path, key: str, text: str) -> None:
    """Set the JSON text of one key of opto_cube's metadata table in an NWB file."""
    import h5py

    keys = [
        k.decode() if isinstance(k, bytes) else k for k in _read_h5(path, "processing/opto_cube/opto_cube_metadata/key")
    ]
    values = [
        v.decode() if isinstance(v, bytes) else v
        for v in _read_h5(path, "processing/opto_cube/opto_cube_metadata/value")
    ]
    values[keys.index(key)] = text
    _rewrite_h5(path, "processing/opto_cube/opto_cube_metadata/value", np.array(values, dtype=h5py.string_dtype()))


def _seal_again(store_dir: Path) -> None:
    """Record the chunks' checksums as they are now (what a tamperer who knows the format does)."""
    meta = json.loads((store_dir / "zarr.json").read_text())
    manifest = meta["attributes"][schema.ATTR_CHUNK_CRC32C]
    for key in manifest:
        manifest[key] = (store_dir / key).read_bytes()[-4:].hex()
    meta["consolidated_metadata"]["metadata"]
    (store_dir / "zarr.json").write_text(json.dumps(meta))


def _rewrite_chunk(store_dir: Path, key: str, change: Callable[[np.ndarray], None]) -> None:
    """Decode one chunk of spike_counts, change it, write it back with valid codecs (and so a valid CRC32C)."""
    import zarr

    array = zarr.open_array(zarr.storage.LocalStore(store_dir), path=schema.SPIKE_COUNTS, mode="r+")
    coords = tuple(int(c) for c in key.split("/c/")[1].split("/"))
    block = tuple(slice(c * n, (c + 1) * n) for c, n in zip(coords, array.chunks, strict=True))
    values = np.array(array[block])
    change(values)
    array[block] = values


# --------------------------------------------------------------------------
# The cases. prepare(tmp, base) -> (argv, the user's paths whose bytes must not change)
# --------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    prepare: Callable[[Path, Base], tuple[list[object], list[Path]]]
    code: int
    line: str  # a regex; exactly one line of stdout + stderr matches it (it names the file or store)
    absent: tuple[str, ...] = field(default=())  # regexes no output line may match
    errors: int = 1  # error lines when the exit is non-zero (verify lists every problem it finds: at least this)


def d1_demo_user_folder(tmp: Path, base: Base):
    (tmp / "proj" / "data").mkdir(parents=True)
    (tmp / "proj" / "data" / "notes.txt").write_text("precious\n")
    return ["demo", "--out", tmp / "proj", "--size", "tiny", "--sessions", "1", "--bin-ms", "10"], [tmp / "proj"]


def d1_demo_user_file_in_earlier_demo(tmp: Path, base: Base):
    proj = tmp / "proj"
    (proj / "data" / "sessions").mkdir(parents=True)
    (proj / demo.DEMO_MARK).write_text(json.dumps({"data": []}))
    (proj / "data" / "sessions" / "notes.txt").write_text("precious\n")
    return ["demo", "--out", proj, "--size", "tiny", "--sessions", "1", "--bin-ms", "10"], [proj]


def d7_other_bin_width(tmp: Path, base: Base):
    data, stores = _data(tmp, base), _stores(tmp, base.store)
    return ["convert", data, "--out", stores, "--bin-ms", "1", "--quiet"], [stores, data]


def _subset(tmp: Path, base: Base, **isel: slice) -> tuple[Path, Path]:
    data, stores = _data(tmp, base), tmp / "stores"
    cube = xr.open_zarr(base.store).isel(**isel)
    for variable in cube.variables.values():
        variable.encoding.pop("chunks", None)
        variable.encoding.pop("preferred_chunks", None)
    cube.to_zarr(stores / f"{SESSION_ID}.zarr", zarr_format=3)
    return data, stores


def d7_user_subset(tmp: Path, base: Base):
    data, stores = _subset(tmp, base, trial=slice(0, 10))
    return ["convert", data, "--out", stores, "--bin-ms", "10", "--quiet"], [stores, data]


def d7_user_subset_overwrite(tmp: Path, base: Base):
    data, stores = _subset(tmp, base, cluster=slice(0, 3))
    return ["convert", data, "--out", stores, "--bin-ms", "10", "--quiet", "--overwrite"], [stores, data]


def d7_user_copy_without_seal(tmp: Path, base: Base):
    data, stores = _data(tmp, base), _stores(tmp, base.store)
    meta = json.loads((stores / f"{SESSION_ID}.zarr" / "zarr.json").read_text())
    del meta["attributes"][schema.ATTR_COMPLETE]
    (stores / f"{SESSION_ID}.zarr" / "zarr.json").write_text(json.dumps(meta))
    return ["convert", data, "--out", stores, "--bin-ms", "10", "--quiet", "--overwrite"], [stores, data]


def d8_user_file(tmp: Path, base: Base):
    data = _data(tmp, base)
    (tmp / "nwb").mkdir()
    (tmp / "nwb" / f"{SESSION_ID}.nwb").write_text("my notes, not NWB\n")
    return ["to-nwb", data, "--out", tmp / "nwb", "--overwrite"], [tmp / "nwb", data]


def d8_ours_without_overwrite(tmp: Path, base: Base):
    data, path = _data(tmp, base), _nwb(tmp, base)
    return ["to-nwb", data, "--out", path.parent], [path.parent, data]


def d8_ours_with_overwrite(tmp: Path, base: Base):
    data, path = _data(tmp, base), _nwb(tmp, base)
    return ["to-nwb", data, "--out", path.parent, "--overwrite"], [data]


def d3_chunk_and_record_rewritten(tmp: Path, base: Base):
    data, stores = _data(tmp, base), _stores(tmp, base.store)
    target = stores / f"{SESSION_ID}.zarr"

    def zero_after_pulse(values: np.ndarray) -> None:
        values[:, :, 50:] = 0  # the bins after the pulse's start (-0.5 s + 50 x 10 ms = 0)

    _rewrite_chunk(target, f"{schema.SPIKE_COUNTS}/c/0/0/0", zero_after_pulse)
    _seal_again(target)
    return ["verify", target, "--data", data, "--quiet"], [stores, data]


def d10_flipped_byte(tmp: Path, base: Base):
    data, stores = _data(tmp, base), _stores(tmp, base.store)
    chunk = stores / f"{SESSION_ID}.zarr" / schema.SPIKE_COUNTS / "c" / "0" / "0" / "0"
    raw = bytearray(chunk.read_bytes())
    raw[len(raw) // 2] ^= 0x10
    chunk.write_bytes(bytes(raw))
    return ["convert", data, "--out", stores, "--bin-ms", "10"], [data]


def d10_consolidated_shape(tmp: Path, base: Base):
    data, stores = _data(tmp, base), _stores(tmp, base.store)
    path = stores / f"{SESSION_ID}.zarr" / "zarr.json"
    meta = json.loads(path.read_text())
    meta["consolidated_metadata"]["metadata"][schema.SPIKE_COUNTS]["shape"][2] -= 1
    path.write_text(json.dumps(meta))
    return ["convert", data, "--out", stores, "--bin-ms", "10"], [data]


def d10_array_shape(tmp: Path, base: Base):  # the array's own metadata edited: damage, rebuilt
    data, stores = _data(tmp, base), _stores(tmp, base.store)
    path = stores / f"{SESSION_ID}.zarr" / schema.SPIKE_COUNTS / "zarr.json"
    meta = json.loads(path.read_text())
    meta["shape"][2] -= 1
    path.write_text(json.dumps(meta))
    return ["convert", data, "--out", stores, "--bin-ms", "10"], [data]


def _nwb_edit(name: str, change: Callable[[np.ndarray], np.ndarray]):
    def prepare(tmp: Path, base: Base):
        path = _nwb(tmp, base)
        _rewrite_h5(path, name, change(_read_h5(path, name)))
        return ["convert", path, "--out", tmp / "stores", "--bin-ms", "10", "--quiet"], [path.parent]

    return prepare


def _nwb_delete(name: str):
    def prepare(tmp: Path, base: Base):
        import h5py

        path = _nwb(tmp, base)
        with h5py.File(path, "r+") as f:
            del f[name]
        return ["convert", path, "--out", tmp / "stores", "--bin-ms", "10", "--quiet"], [path.parent]

    return prepare


def _nwb_attr(name: str, attr: str, value: str):
    def prepare(tmp: Path, base: Base):
        import h5py

        path = _nwb(tmp, base)
        with h5py.File(path, "r+") as f:
            f[name].attrs[attr] = value
        return ["convert", path, "--out", tmp / "stores", "--bin-ms", "10", "--quiet"], [path.parent]

    return prepare


def _nwb_meta(key: str, text: str):
    def prepare(tmp: Path, base: Base):
        path = _nwb(tmp, base)
        _set_metadata(path, key, text)
        return ["convert", path, "--out", tmp / "stores", "--bin-ms", "10", "--quiet"], [path.parent]

    return prepare


def _with(values: np.ndarray, index: int, value: object, dtype: object = None) -> np.ndarray:
    out = values.astype(dtype if dtype is not None else values.dtype)
    out[index] = value
    return out


PULSES, UNITS = "intervals/optogenetic_pulses", "units"


def d13_verify_nwb_source(tmp: Path, base: Base):
    path, stores = _nwb(tmp, base), _stores(tmp, base.nwb_store)
    return ["verify", stores, "--data", path.parent, "--quiet"], [stores, path.parent]


def d17_os_litter(tmp: Path, base: Base):
    data, stores = _data(tmp, base), _stores(tmp, base.store)
    target = stores / f"{SESSION_ID}.zarr"
    for name in (".DS_Store", "._zarr.json", "Thumbs.db"):
        (target / name).write_bytes(b"\x00\x01 left by an operating system")
    (target / schema.SPIKE_COUNTS / ".DS_Store").write_bytes(b"\x00")
    litter = [target / n for n in (".DS_Store", "._zarr.json", "Thumbs.db")] + [
        target / schema.SPIKE_COUNTS / ".DS_Store"
    ]
    return ["convert", data, "--out", stores, "--bin-ms", "10"], [data, *litter]


def d17_verify_litter(tmp: Path, base: Base):
    _argv, paths = d17_os_litter(tmp, base)
    return ["verify", tmp / "stores", "--data", tmp / "data", "--quiet"], [tmp / "stores", *paths]


def d11_npy_version_3(tmp: Path, base: Base):
    data = _data(tmp, base)
    for name in (schema.SPIKES_TIMES, schema.STIM_TIMES):
        path = _folder(tmp) / name
        values = np.load(path)
        with open(path, "wb") as f:
            np.lib.format.write_array(f, values, version=(3, 0))
    return ["convert", data, "--out", tmp / "stores", "--bin-ms", "10", "--quiet"], [data]


def d15_escape_in_session_id(tmp: Path, base: Base):
    root = tmp / "data" / schema.SESSIONS_DIR
    shutil.copytree(base.session, root / ESC_ID)
    info = json.loads((root / ESC_ID / schema.SESSION_JSON).read_text())
    (root / ESC_ID / schema.SESSION_JSON).write_text(json.dumps({**info, "session_id": ESC_ID}))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert cli.main(["convert", str(tmp / "data"), "--out", str(tmp / "stores"), "--bin-ms", "10", "--quiet"]) == 0
    return ["info", tmp / "stores"], [tmp / "data", tmp / "stores"]


def _broken_file(name: str, make: Callable[[Path], None]):
    def prepare(tmp: Path, base: Base):
        data = _data(tmp, base)
        path = _folder(tmp) / name
        path.unlink()
        make(path)
        return ["convert", data, "--out", tmp / "stores", "--bin-ms", "10", "--quiet"], [data]

    return prepare


def _save_spikes(change: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]):
    def prepare(tmp: Path, base: Base):
        data = _data(tmp, base)
        t_path, c_path = _folder(tmp) / schema.SPIKES_TIMES, _folder(tmp) / schema.SPIKES_CLUSTERS
        times, ids = change(np.load(t_path), np.load(c_path))
        np.save(t_path, times)
        np.save(c_path, ids)
        return ["convert", data, "--out", tmp / "stores", "--bin-ms", "10", "--quiet"], [data]

    return prepare


def d16_bin_ms_huge(tmp: Path, base: Base):
    data = _data(tmp, base)
    return ["convert", data, "--out", tmp / "stores", "--bin-ms", "1e308", "--quiet"], [data]


def d18_nwb_float32(tmp: Path, base: Base):
    path = _nwb(tmp, base)
    _rewrite_h5(path, f"{UNITS}/spike_times", _read_h5(path, f"{UNITS}/spike_times").astype(np.float32))
    return ["convert", path, "--out", tmp / "stores", "--bin-ms", "10", "--quiet"], [path.parent]


S = re.escape(SESSION_ID)
NWB = rf"nwb/{S}\.nwb"
STORE = rf"stores/{S}\.zarr"
HOSTILE: dict[str, Case] = {
    "D1 demo --out holding a user's data/": Case(
        d1_demo_user_folder, 1, r"error: \S*/proj: holds files opto-cube demo did not write \('data'\);"
        r" refusing to touch them"),
    "D1 demo --out: a user's file in an earlier demo's data/": Case(
        d1_demo_user_file_in_earlier_demo, 1,
        r"error: \S*/proj/data/sessions/notes\.txt: not written by opto-cube demo"),
    "D7 another --bin-ms": Case(
        d7_other_bin_width, 1, rf"error: .*/{STORE}: holds this session converted with bin_width_s 0\.01"
        r" \(this run: 0\.001\); pass --overwrite to replace it, or choose another --out$"),
    "D7 a user's subset (isel().to_zarr)": Case(
        d7_user_subset, 1, rf"error: .*/{STORE}: exists and is not an opto_cube store \(its cube is \(8, 10, 150\)"
        r" but its attributes count 8 clusters and 40 trials\); refusing to replace it"),
    "D7 a user's subset, --overwrite": Case(
        d7_user_subset_overwrite, 1, rf"error: .*/{STORE}: exists and is not an opto_cube store \(.*\); refusing"),
    "D7 an unsealed copy, --overwrite": Case(
        d7_user_copy_without_seal, 1, rf"error: .*/{STORE}: exists and is not an opto_cube store \(no completion"
        r" mark"),
    "D8 a user's file at OUT/<id>.nwb, --overwrite": Case(
        d8_user_file, 1, rf"error: \S*/{NWB}: exists and is not an NWB file opto_cube wrote; refusing to replace it"),
    "D8 opto_cube's own NWB file, no --overwrite": Case(
        d8_ours_without_overwrite, 1, rf"error: \S*/{NWB}: exists; pass --overwrite to replace it"),
    "D8 opto_cube's own NWB file, --overwrite": Case(
        d8_ours_with_overwrite, 0, rf"^written +{S} -> \S*/{NWB}"),
    "D3 a chunk and its record rewritten": Case(
        d3_chunk_and_record_rewritten, 1, rf"error: .*/{STORE}: chunk {schema.SPIKE_COUNTS}/c/0/0/0 differs from the"
        r" spikes counted again \(at \(\d+, \d+, \d+\): stored 0, counted [1-9]\d*\)$", errors=2),
    "D10 a byte flipped mid-chunk: rebuilt, not skipped": Case(
        d10_flipped_byte, 0, rf"^converted +{S} -> \S*/{STORE}", absent=(r"^skipped",)),
    "D10 an edited consolidated shape: rebuilt": Case(
        d10_consolidated_shape, 0, rf"^converted +{S} -> \S*/{STORE}", absent=(r"^skipped",)),
    "D10 an edited array shape: rebuilt": Case(
        d10_array_shape, 0, rf"^converted +{S} -> \S*/{STORE}", absent=(r"^skipped",)),
    "D4 NWB emitter 2.7": Case(
        _nwb_edit(f"{PULSES}/emitter", lambda v: _with(v, 3, 2.7, np.float64)), 1,
        rf"error: \S*/{NWB}: emitter ids must be whole numbers, found 2\.7$"),
    "D4 NWB power NaN": Case(
        _nwb_edit(f"{PULSES}/power_in_mW", lambda v: _with(v, 2, np.nan)), 1,
        rf"error: \S*/{NWB}: trial 2 has a non-finite power nan$"),
    "D4 NWB power negative": Case(
        _nwb_edit(f"{PULSES}/power_in_mW", lambda v: _with(v, 2, -1.5)), 1,
        rf"error: \S*/{NWB}: negative power -1\.5 mW$"),
    "D4 NWB integer spike times": Case(
        _nwb_edit(f"{UNITS}/spike_times", lambda v: np.round(v * 1000).astype(np.int64)), 1,
        rf"error: \S*/{NWB}: spike times must be floating-point seconds, found dtype int64"),
    "D4 NWB qc_pass 2": Case(
        _nwb_edit(f"{UNITS}/qc_pass", lambda v: _with(v, 1, 2, np.int8)), 1,
        rf"error: \S*/{NWB}: expected booleans \(0 or 1\), found 2$"),
    "D4 NWB peak_channel 3.7": Case(
        _nwb_edit(f"{UNITS}/peak_channel", lambda v: _with(v, 0, 3.7, np.float64)), 1,
        rf"error: \S*/{NWB}: peak channels must be whole numbers, found 3\.7$"),
    "D4 NWB duration_s contradicting stop - start": Case(
        _nwb_edit(f"{PULSES}/duration_s", lambda v: _with(v, 4, v[4] * 2)), 1,
        rf"error: \S*/{NWB}: pulse 4: duration_s .* contradicts stop_time - start_time = "),
    "D13 verify --data NWB_FOLDER": Case(d13_verify_nwb_source, 0, r"^1 ok, 0 damaged \(1 store\)$"),
    "D17 .DS_Store, ._*, Thumbs.db in a store: skipped as up to date": Case(
        d17_os_litter, 0, rf"^skipped +{S} -> \S*/{STORE}"),
    "D17 OS litter: verify --data ok": Case(d17_verify_litter, 0, r"^1 ok, 0 damaged \(1 store\)$"),
    "D11 .npy format 3.0": Case(d11_npy_version_3, 0, r"^1 converted, 0 skipped, 0 failed \(1 session\)$"),
    "D14 NWB metadata not JSON": Case(
        _nwb_meta("session_json_as_read", "{not json"), 1,
        rf"error: \S*/{NWB}: processing/opto_cube/opto_cube_metadata: the value of 'session_json_as_read' is not JSON"),
    "D14 NWB metadata nested 100,000 deep": Case(
        _nwb_meta("session_json_as_read", "[" * 100_000 + "]" * 100_000), 1,
        rf"error: \S*/{NWB}: .*nested too deeply"),
    "D14 NWB n_channels not a number": Case(
        _nwb_meta("n_channels", '"twelve"'), 1,
        rf"error: \S*/{NWB}: opto_cube metadata n_channels must be a whole number, found 'twelve'$"),
    "D14 NWB spike_times_index falling": Case(
        _nwb_edit(f"{UNITS}/spike_times_index", lambda v: _with(v, 2, 0)), 1,
        rf"error: \S*/{NWB}: units spike_times_index is not a ragged index of the \d+ spike times"),
    "D14 NWB spike_times_index past the end": Case(
        _nwb_edit(f"{UNITS}/spike_times_index", lambda v: _with(v, -1, int(v[-1]) + 5)), 1,
        rf"error: \S*/{NWB}: units spike_times_index is not a ragged index"),
    "D14 NWB units column of the wrong shape": Case(
        _nwb_edit(f"{UNITS}/qc_pass", lambda v: np.zeros((len(v), 2), np.int8)), 1,
        rf"error: \S*/{NWB}: units column qc_pass has shape \(8, 2\), not one value per unit \(8\)$"),
    "D14 NWB spike_times removed (pynwb's error, short)": Case(
        _nwb_delete(f"{UNITS}/spike_times"), 1, rf"error: \S*/{NWB}: not a readable NWB file \(.{{1,160}}\)$"),
    "D14 NWB an unknown type (pynwb's error, short)": Case(
        _nwb_attr(UNITS, "neurodata_type", "Nonsense"), 1,
        rf"error: \S*/{NWB}: not a readable NWB file \(.{{1,160}}\)$"),
    "D15 control characters in a session id": Case(
        d15_escape_in_session_id, 0, r"^session   AL0034_2024-12-05_en1_p0\\x1b\[31m  \(subject", absent=("\x1b",)),
    "D16 a FIFO in place of spikes.times.npy": Case(
        _broken_file(schema.SPIKES_TIMES, lambda p: os.mkfifo(p)), 1,
        rf"error: \S*/{S}/spikes\.times\.npy: is a named pipe \(FIFO\), not a file$"),
    "D16 a folder in place of clusters.qcPass.npy": Case(
        _broken_file(schema.CLUSTERS_QC_PASS, lambda p: p.mkdir()), 1,
        rf"error: \S*/{S}/clusters\.qcPass\.npy: is a folder, not a file$"),
    "D16 /dev/zero in place of stim.times.npy": Case(
        _broken_file(schema.STIM_TIMES, lambda p: p.symlink_to("/dev/zero")), 1,
        rf"error: \S*/{S}/stim\.times\.npy: is a device \(such as /dev/zero\), not a file$"),
    "D16 a folder in place of the optional clusters.waveformType.txt": Case(
        _broken_file(schema.CLUSTERS_WAVEFORM_TYPE, lambda p: p.mkdir()), 1,
        rf"error: \S*/{S}/clusters\.waveformType\.txt: is a folder, not a file$"),
    "D16 cluster id 2**64-1": Case(
        _save_spikes(lambda t, c: (t, _with(c, 5, 2**64 - 1, np.uint64))), 1,
        rf"error: \S*/{S}/spikes\.clusters\.npy: cluster id 18446744073709551615 outside 0\.\.7"),
    "D16 --bin-ms 1e308": Case(
        d16_bin_ms_huge, 1, r"error: --bin-ms 1e\+308: a bin wider than the pre window \[-0\.5, 0\) s \(500 ms\)"),
    "D18 float16 spike times (ALF)": Case(
        _save_spikes(lambda t, c: (t.astype(np.float16), c)), 0,
        rf"warning: \S*/{S}/spikes\.times\.npy: spike times are float16 \(not float64\): at [\d.]+ s they are"
        r" resolved to [\d.]+ ms only"),
    "D18 float32 spike times (ALF)": Case(
        _save_spikes(lambda t, c: (t.astype(np.float32), c)), 0,
        rf"warning: \S*/{S}/spikes\.times\.npy: spike times are float32 \(not float64\)"),
    "D18 float32 spike times (NWB)": Case(
        d18_nwb_float32, 0, rf"warning: \S*/{NWB}: spike times are float32 \(not float64\)"),
}  # fmt: skip


def _hashes(paths: list[Path]) -> dict[str, str]:
    """SHA-256 of every file under each path (a file, a folder, a FIFO or link by its kind)."""
    out: dict[str, str] = {}
    for top in paths:
        entries = [top] if not top.is_dir() or top.is_symlink() else [top, *sorted(top.rglob("*"))]
        for path in entries:
            if path.is_symlink():
                out[str(path)] = f"link {os.readlink(path)}"
            elif path.is_file():
                out[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
            elif path.is_dir():
                out[str(path)] = "folder"
            elif path.exists():
                out[str(path)] = "special"
    return out


@pytest.mark.parametrize("case", list(HOSTILE), ids=list(HOSTILE))
def test_hostile(capsys, tmp_path, base, case):
    spec = HOSTILE[case]
    argv, owned = spec.prepare(tmp_path, base)
    capsys.readouterr()
    before = _hashes(owned)
    assert before, "the case protects nothing"
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    lines = (out + err).splitlines()
    assert code == spec.code, out + err
    assert "Traceback" not in err
    matching = [line for line in lines if re.search(spec.line, line)]
    assert len(matching) == 1, f"{spec.line!r} in:\n{out}{err}"
    errors = [line for line in err.splitlines() if line.startswith("opto-cube: error:")]
    assert len(errors) >= spec.errors if spec.code and spec.errors > 1 else len(errors) == (1 if spec.code else 0), err
    assert all(str(tmp_path) in line or "--bin-ms" in line for line in errors), err
    for pattern in spec.absent:
        assert not any(re.search(pattern, line) for line in lines), f"{pattern!r} in:\n{out}{err}"
    assert _hashes(owned) == before


# --------------------------------------------------------------------------
# Rebuilt stores are right; refused ones keep the user's store openable
# --------------------------------------------------------------------------
def test_rebuilt_store_verifies_and_counts(capsys, tmp_path, base):
    d10_flipped_byte(tmp_path, base)
    assert (
        cli.main(["convert", str(tmp_path / "data"), "--out", str(tmp_path / "stores"), "--bin-ms", "10", "--quiet"])
        == 0
    )
    assert cli.main(["verify", str(tmp_path / "stores"), "--data", str(tmp_path / "data"), "--quiet"]) == 0
    assert "1 ok, 0 damaged" in capsys.readouterr().out


def test_other_bin_width_with_overwrite_replaces(capsys, tmp_path, base):
    argv, _ = d7_other_bin_width(tmp_path, base)
    assert cli.main([str(a) for a in argv] + ["--overwrite"]) == 0
    cube = xr.open_zarr(tmp_path / "stores" / f"{SESSION_ID}.zarr")
    assert cube.attrs[schema.ATTR_BIN_WIDTH] == 0.001


def test_demo_reruns_in_its_own_folder(capsys, tmp_path):
    """A demo's --out may be given again: the demo replaces only what it wrote (its mark lists data/)."""
    out = tmp_path / "demo"
    for _ in range(2):
        assert cli.main(["demo", "--out", str(out), "--size", "tiny", "--sessions", "1", "--bin-ms", "10"]) == 0
    written = json.loads((out / demo.DEMO_MARK).read_text())["data"]
    assert written
    assert all((out / "data" / name).is_file() for name in written)


# --------------------------------------------------------------------------
# Hypothesis: random tampering of a store (a chunk rewritten with its checksum record) is found by verify --data
# --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tamper_base(base: Base, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("tamper")
    return _data(root, base), base.store


ARRAYS = (schema.SPIKE_COUNTS, schema.WINDOW_COUNTS, schema.CONDITION_COUNTS, schema.FIRST_SPIKE_BIN)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(array=st.sampled_from(ARRAYS), seed=st.integers(0, 2**32 - 1), n=st.integers(1, 5))
def test_random_tampering_is_found_by_verify_data(tamper_base, tmp_path_factory, array, seed, n):
    import zarr

    data, source = tamper_base
    target = tmp_path_factory.mktemp("tampered") / source.name
    shutil.copytree(source, target)
    z = zarr.open_array(zarr.storage.LocalStore(target), path=array, mode="r+")
    values = np.array(z[...])
    rng = np.random.default_rng(seed)
    flat = values.reshape(-1)
    at = rng.choice(flat.size, size=min(n, flat.size), replace=False)
    info = np.iinfo(values.dtype)
    for i in at:  # a different value that the dtype holds
        old = int(flat[i])
        flat[i] = old + 1 if old < info.max else old - 1
    z[...] = values
    _seal_again(target)
    from opto_cube.jobs.verify import verify_store

    report = verify_store(target, data_root=data)
    assert not report.ok
    assert any("counted again" in p or "window sums" in p for p in report.problems), report.problems
    assert all(p.startswith(str(target)) and "\n" not in p for p in report.problems)


# --------------------------------------------------------------------------
# The numba cache with neither the package folder nor $HOME writable (D12)
# --------------------------------------------------------------------------
def test_numba_cache_falls_back_to_a_writable_folder(tmp_path):
    """numba finds no cache folder of its own (as for a read-only install and an unwritable $HOME): the
    kernels still load, their cache in a private temporary folder, and they count."""
    script = """
import numba.core.caching as caching
for cls in caching.FunctionCache._impl_class._locator_classes:
    if cls is not caching.UserProvidedCacheLocator:
        cls.from_function = classmethod(lambda cls, f, p: None)  # no folder of numba's own is writable
import numba, numpy as np
from opto_cube import binning
from opto_cube.analysis import spatial
bins = binning.plan_time_bins([0.01], bin_ms=10)
counts = binning.spike_counts(np.array([1.005]), np.array([0]), np.array([1.0]), np.array([0.01]), bins, 1)
print(numba.config.CACHE_DIR, int(counts.sum()))
"""
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env["HOME"] = str(tmp_path / "no-home")
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    folder, total = proc.stdout.split()
    assert "opto_cube-numba-cache" in folder
    assert total == "1"


# --------------------------------------------------------------------------
# zarr's missing-chunk option, when the installed zarr has it (D6)
# --------------------------------------------------------------------------
def test_missing_chunk_option_is_enabled_when_zarr_has_it():
    import zarr

    if store.missing_chunk_option() is None:  # zarr 3.1: no such option; pretend a later zarr's
        with zarr.config.set({"array.fill_missing_chunks": True}):
            assert store.refuse_missing_chunks() == "array.fill_missing_chunks"
            assert zarr.config.get("array.fill_missing_chunks") is False
    else:
        assert zarr.config.get(store.missing_chunk_option()) is False


def test_unreadable_session_folder_is_reported_as_such(tmp_path, base, monkeypatch):
    """A session folder one may not enter (as root, permissions do not stop reading: os.access says so)."""
    from opto_cube.errors import SessionFormatError
    from opto_cube.io import alf

    folder = _folder(tmp_path) if _data(tmp_path, base) else None
    real = os.access
    monkeypatch.setattr(alf.os, "access", lambda p, mode: False if Path(p) == folder else real(p, mode))
    with pytest.raises(SessionFormatError, match=r": the session folder cannot be read \(permission denied\)$"):
        alf.read_alf(folder)


# --------------------------------------------------------------------------
# The README's snippet, run as written (D6)
# --------------------------------------------------------------------------
def _readme_cube_snippet() -> str:
    text = README.read_text()
    section = text.split("## The cube", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def test_readme_snippet_runs(tmp_path, monkeypatch):
    snippet = _readme_cube_snippet()
    assert "opto_cube.open_cube(" in snippet
    assert "xr.open_zarr(" not in snippet
    path = re.search(r'open_cube\("([^"]+)"\)', snippet).group(1)
    session_id = Path(path).stem
    folder = tmp_path / "data" / schema.SESSIONS_DIR / session_id
    synth.write_session(folder, synth.SIZES["tiny"])
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert (
            cli.main(["convert", str(folder), "--out", str(tmp_path / Path(path).parent), "--bin-ms", "10", "--quiet"])
            == 0
        )
    monkeypatch.chdir(tmp_path)
    scope: dict[str, object] = {}
    exec(compile(snippet, str(README), "exec"), scope)  # the README's own code, as a user runs it
    cube, psth = scope["cube"], scope["psth"]
    assert isinstance(cube, xr.Dataset)
    assert schema.SPIKE_COUNTS in cube
    assert psth.dims == (schema.CLUSTER, schema.TIME)
    np.testing.assert_array_equal(psth.compute().shape, (int((cube.waveform_type == "FS").sum()), cube.sizes["time"]))


def test_readme_says_why_plain_open_zarr_cannot_refuse():
    text = " ".join(README.read_text().split())
    assert "cannot refuse damage" in text
    assert "missing chunk reads as the fill value" in text


def test_nwb_writer_refuses_a_user_file_by_api(tmp_path, base):
    target = tmp_path / "mine.nwb"
    target.write_text("mine\n")
    with pytest.raises(Exception, match=r"mine\.nwb: exists and is not an NWB file opto_cube wrote"):
        nwb_writer.write_nwb(base.session, target, overwrite=True)
    assert target.read_text() == "mine\n"
