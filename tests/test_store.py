"""Tests of opto_cube.store.write: atomic writes, leftovers of killed runs, the Zarr layout, lazy opening."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import dask.array
import numpy as np
import pytest
import xarray as xr
import zarr
from helpers import SESSION_ID, raise_if_dask_computes, write_synth

from opto_cube import binning, io, schema
from opto_cube.errors import StoreError
from opto_cube.jobs import convert
from opto_cube.store import chunks
from opto_cube.store import write as store


@pytest.fixture
def template(tmp_path):
    """The cube template of a tiny session at 10 ms bins, 3 clusters x 16 trials per chunk, and its counts."""
    folder = write_synth(tmp_path / "data" / SESSION_ID)
    session = io.read_session(folder)
    bins = binning.plan_time_bins(session.stim[schema.DURATION], bin_ms=10)
    ds = convert.cube_template(session, bins, np.dtype(np.uint16), chunks=(3, 16, bins.n_bins))
    rng = np.random.default_rng(0)
    counts = rng.integers(0, 300, (session.n_clusters, session.n_trials, bins.n_bins)).astype(np.uint16)
    return ds, counts


def blocks_of(counts: np.ndarray, trial_chunk: int):
    for start in range(0, counts.shape[1], trial_chunk):
        sl = slice(start, min(start + trial_chunk, counts.shape[1]))
        yield sl, counts[:, sl]


def dead_pid() -> int:
    """The id of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# --------------------------------------------------------------------------
# names and chunks
# --------------------------------------------------------------------------
def test_store_path(tmp_path):
    assert store.store_path(tmp_path, SESSION_ID) == tmp_path / f"{SESSION_ID}.zarr"


@pytest.mark.parametrize("bad", ["", ".", "..", "a/b", f"..{os.sep}x"])
def test_store_path_refuses_names_that_escape(tmp_path, bad):
    with pytest.raises(StoreError, match="cannot name a store"):
        store.store_path(tmp_path, bad)


@pytest.mark.parametrize(
    ("shape", "chunks"),
    [((300, 4200, 1500), (64, 256, 1500)), ((8, 40, 150), (8, 40, 150)), ((0, 0, 0), (1, 1, 1))],
)
def test_spike_counts_chunks(shape, chunks):
    assert store.spike_counts_chunks(*shape) == chunks


# --------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------
def test_write_cube_round_trip(tmp_path, template):
    ds, counts = template
    target = tmp_path / "stores" / f"{SESSION_ID}.zarr"  # parent does not exist yet
    with raise_if_dask_computes():  # the template's lazy zeros are never computed: chunks come from the blocks
        written = store.write_cube(ds, blocks_of(counts, 16), target)
    assert Path(written) == target
    assert sorted(p.name for p in target.parent.iterdir()) == [target.name]
    opened = xr.open_zarr(target)
    np.testing.assert_array_equal(opened[schema.SPIKE_COUNTS].values, counts)
    assert opened[schema.SPIKE_COUNTS].dtype == np.uint16
    assert opened[schema.SPIKE_COUNTS].encoding["chunks"] == (3, 16, ds.sizes[schema.TIME])
    attrs = dict(opened.attrs)
    assert attrs.pop(schema.ATTR_COMPLETE) is True
    manifest = attrs.pop(schema.ATTR_CHUNK_CRC32C)  # one CRC32C per chunk of every array
    assert sorted(manifest) == sorted(chunks.expected_chunks(zarr.open_group(target, mode="r")))
    # blocks without their window counts: write_cube sums them from the bins, in the smallest dtype
    in_pre = (ds[schema.TIME].values > -0.5) & (ds[schema.TIME].values < 0)
    in_stim = (ds[schema.TIME].values[None] > 0) & (ds[schema.TIME].values[None] < ds[schema.DURATION].values[:, None])
    windows = opened[schema.WINDOW_COUNTS]
    np.testing.assert_array_equal(windows.sel({schema.WINDOW: schema.WINDOW_PRE}), counts[:, :, in_pre].sum(-1))
    np.testing.assert_array_equal(windows.sel({schema.WINDOW: schema.WINDOW_STIM}), (counts * in_stim).sum(-1))
    assert windows.dtype == np.uint16
    assert windows.dims == (schema.CLUSTER, schema.TRIAL, schema.WINDOW)
    # ... and the timing arrays: sums per stored condition, first stim-window bins (numpy, bin by bin)
    code = ds[schema.TRIAL_CONDITION].values
    expected_course = np.stack([counts[:, code == c].sum(axis=1) for c in range(ds.sizes[schema.CONDITION])], axis=1)
    np.testing.assert_array_equal(opened[schema.CONDITION_COUNTS].values, expected_course)
    spiking = (counts > 0) & in_stim[None]
    expected_first = np.where(spiking.any(-1), spiking.argmax(-1) - int(np.argmax(ds[schema.TIME].values > 0)), -1)
    np.testing.assert_array_equal(opened[schema.FIRST_SPIKE_BIN].values, expected_first)
    arrays = [schema.SPIKE_COUNTS, schema.WINDOW_COUNTS, *schema.TIMING_ARRAYS]
    expected = ds.drop_vars(arrays)
    actual = opened.drop_vars(arrays).compute()
    actual.attrs = attrs
    xr.testing.assert_identical(actual, expected)


def test_zarr_layout(tmp_path, template):
    """Zarr format 3, consolidated, zstd-compressed counts, variable-length UTF-8 strings, dimension names."""
    ds, counts = template
    labels = ds[schema.KS_LABEL].values.copy()
    labels[0], labels[1] = "gut (überprüft)", "µ-unit ✓"
    ds = ds.assign_coords({schema.KS_LABEL: ds[schema.KS_LABEL].copy(data=labels)})
    target = store.write_cube(ds, blocks_of(counts, 16), tmp_path / "x.zarr")
    root = json.loads((target / "zarr.json").read_text())
    assert root["zarr_format"] == 3
    assert root["node_type"] == "group"
    assert schema.SPIKE_COUNTS in root["consolidated_metadata"]["metadata"]
    counts_meta = json.loads((target / schema.SPIKE_COUNTS / "zarr.json").read_text())
    assert counts_meta["data_type"] == "uint16"
    assert counts_meta["dimension_names"] == [schema.CLUSTER, schema.TRIAL, schema.TIME]
    assert "zstd" in [c["name"] for c in counts_meta["codecs"]]
    for name in (schema.WAVEFORM_TYPE, schema.KS_LABEL):
        meta = json.loads((target / name / "zarr.json").read_text())
        assert meta["data_type"] == "string", name
        assert "vlen-utf8" in [c["name"] for c in meta["codecs"]], name
    z = zarr.open_group(target, mode="r")
    assert list(z[schema.KS_LABEL][:2]) == ["gut (überprüft)", "µ-unit ✓"]
    assert list(xr.open_zarr(target)[schema.KS_LABEL].values[:2]) == ["gut (überprüft)", "µ-unit ✓"]


def test_failed_write_leaves_nothing(tmp_path, template):
    ds, counts = template

    def failing_blocks():
        yield from list(blocks_of(counts, 16))[:1]
        raise RuntimeError("disk on fire")

    out = tmp_path / "stores"
    with pytest.raises(RuntimeError, match="disk on fire"):
        store.write_cube(ds, failing_blocks(), out / "x.zarr")
    assert list(out.iterdir()) == []


def test_failed_overwrite_keeps_the_old_store(tmp_path, template):
    ds, counts = template
    target = store.write_cube(ds, blocks_of(counts, 16), tmp_path / "x.zarr")
    before = {p.relative_to(target): p.read_bytes() for p in target.rglob("*") if p.is_file()}

    def interrupted():
        yield next(blocks_of(counts + 1, 16))
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        store.write_cube(ds, interrupted(), target, overwrite=True)
    after = {p.relative_to(target): p.read_bytes() for p in target.rglob("*") if p.is_file()}
    assert after == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "x.zarr"]


def test_existing_store_needs_overwrite(tmp_path, template):
    ds, counts = template
    target = store.write_cube(ds, blocks_of(counts, 16), tmp_path / "x.zarr")
    with pytest.raises(StoreError, match=r"x\.zarr: store exists; pass overwrite=True \(--overwrite\)"):
        store.write_cube(ds, blocks_of(counts, 16), target)
    store.write_cube(ds, blocks_of(counts // 2, 16), target, overwrite=True)
    np.testing.assert_array_equal(xr.open_zarr(target)[schema.SPIKE_COUNTS].values, counts // 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "x.zarr"]  # no .old- or .tmp- left


def test_atomic_store_writes_beside_the_target(tmp_path):
    target = tmp_path / "out" / "s.zarr"
    with store.atomic_store(target) as tmp:
        assert tmp.parent == target.parent
        assert tmp.name.startswith(".s.zarr.tmp-")
        assert f"-{os.getpid()}-" in tmp.name
        tmp.mkdir()
        (tmp / "zarr.json").write_text("{}")
        assert not target.exists()
    assert (target / "zarr.json").exists()
    assert not tmp.exists()


def test_remove_leftovers(tmp_path):
    target = tmp_path / "s.zarr"
    dead, alive = dead_pid(), os.getppid()
    leftovers = {
        f".s.zarr.tmp-{dead}-0123abcd": True,  # a killed run's temp store: removed
        f".s.zarr.old-{dead}-0123abcd": True,  # a killed overwrite's old store: removed
        f".s.zarr.tmp-{os.getpid()}-feedbeef": True,  # this process's own: removed
        f".s.zarr.tmp-{alive}-0123abcd": False,  # a live conversion's: kept
        f".t.zarr.tmp-{dead}-0123abcd": False,  # another store's: not ours to remove
        "s.zarr.tmp-notes": False,
    }
    for name in leftovers:
        (tmp_path / name).mkdir()
        (tmp_path / name / "chunk").write_bytes(b"x")
    removed = store.remove_leftovers(target)
    assert sorted(p.name for p in removed) == sorted(n for n, gone in leftovers.items() if gone)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(n for n, gone in leftovers.items() if not gone)


def test_remove_leftovers_of_a_name_with_glob_characters(tmp_path):
    target = tmp_path / "s[1]*?.zarr"
    leftover = tmp_path / f".s[1]*?.zarr.tmp-{dead_pid()}-0123abcd"
    leftover.mkdir()
    assert store.remove_leftovers(target) == [leftover]
    assert not leftover.exists()


# --------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------
def test_open_cube_is_lazy(tmp_path, template):
    ds, counts = template
    target = store.write_cube(ds, blocks_of(counts, 16), tmp_path / "x.zarr")
    cube = store.open_cube(target)
    data = cube[schema.SPIKE_COUNTS].data
    assert isinstance(data, dask.array.Array)
    assert data.chunksize == (3, 16, ds.sizes[schema.TIME])
    for name in (*schema.CLUSTER_COORDS, *schema.TRIAL_COORDS):  # small coordinates are in memory
        assert isinstance(cube[name].data, np.ndarray), name
    with raise_if_dask_computes():
        per_trial = cube[schema.SPIKE_COUNTS].sel({schema.TIME: slice(-0.5, 0)}).sum(schema.TIME)
        first = cube[schema.SPIKE_COUNTS].isel({schema.CLUSTER: 0})
        emitters = cube[schema.EMITTER].values  # in memory: no compute
    np.testing.assert_array_equal(per_trial.values, counts[:, :, :50].sum(axis=-1))
    np.testing.assert_array_equal(first.values, counts[0])
    np.testing.assert_array_equal(emitters, ds[schema.EMITTER].values)


def test_open_cube_refuses_what_is_not_a_cube(tmp_path):
    with pytest.raises(StoreError, match="not an opto_cube store"):
        store.open_cube(tmp_path / "missing.zarr")
    xr.Dataset({"x": ("a", np.arange(3))}).to_zarr(tmp_path / "other.zarr", zarr_format=3, consolidated=True)
    with pytest.raises(StoreError, match=r"other\.zarr: not an opto_cube store \(no 'spike_counts' variable\)"):
        store.open_cube(tmp_path / "other.zarr")


def test_read_store_attrs_and_up_to_date(tmp_path, template):
    ds, counts = template
    assert store.read_store_attrs(tmp_path / "missing.zarr") is None
    (tmp_path / "garbage.zarr").mkdir()
    (tmp_path / "garbage.zarr" / "zarr.json").write_text("{not json")
    assert store.read_store_attrs(tmp_path / "garbage.zarr") is None
    target = store.write_cube(ds, blocks_of(counts, 16), tmp_path / "x.zarr")
    attrs = store.read_store_attrs(target)
    assert attrs[schema.ATTR_SESSION_ID] == SESSION_ID
    expected = {key: attrs[key] for key in (schema.ATTR_BIN_WIDTH, schema.ATTR_WINDOW, schema.ATTR_SHA256)}
    assert store.is_up_to_date(target, expected)
    assert not store.is_up_to_date(target, {**expected, schema.ATTR_BIN_WIDTH: 0.005})
    changed = {**expected[schema.ATTR_SHA256], schema.SPIKES_TIMES: "0" * 64}
    assert not store.is_up_to_date(target, {**expected, schema.ATTR_SHA256: changed})
    assert not store.is_up_to_date(tmp_path / "missing.zarr", expected)
    # a store without its completion mark is never up to date
    meta = json.loads((target / "zarr.json").read_text())
    del meta["attributes"][schema.ATTR_COMPLETE]
    (target / "zarr.json").write_text(json.dumps(meta))
    assert not store.is_up_to_date(target, expected)


def test_format_1_store_opens_with_one_warning_and_is_reconverted(tmp_path):
    import warnings

    from opto_cube.errors import OptoCubeWarning

    folder = write_synth(tmp_path / "data" / SESSION_ID)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OptoCubeWarning)
        result = convert.convert_session(folder, tmp_path / "stores", bin_ms=10)
    meta_path = Path(result.store) / "zarr.json"
    meta = json.loads(meta_path.read_text())
    meta["attributes"][schema.ATTR_FORMAT_VERSION] = 1  # what stores written before checksums carry
    meta_path.write_text(json.dumps(meta))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        store.open_cube(result.store)
    assert [str(w.message) for w in caught if issubclass(w.category, OptoCubeWarning)] == [
        f"{result.store}: store format 1 (no window_counts, no chunk checksums): reconvert it with opto-cube convert"
    ]
    assert convert.convert_session(folder, tmp_path / "stores", bin_ms=10).status == "converted"  # ours: rebuilt
    assert store.read_store_attrs(result.store)[schema.ATTR_FORMAT_VERSION] == schema.FORMAT_VERSION
