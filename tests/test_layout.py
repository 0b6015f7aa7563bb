"""The store written by zarr alone (opto_cube.store.layout) is the store xarray writes, and convert imports no xarray.

- ``opto-cube convert`` (no ``--jobs``, no ``--scheduler``) imports neither
  xarray, dask nor pandas, checked in a fresh process.
- A converted store equals, file by file, the store ``xarray.Dataset.to_zarr``
  writes from the same cube in memory: every ``zarr.json`` (dimension names,
  ``coordinates``, ``_FillValue``, fill values, dtypes, chunks, attributes)
  and every chunk's bytes; and the two open identically
  (``xr.testing.assert_identical``, encodings' dtypes included).
- The coordinates' encoding rules on every dtype a cube can hold (NaN floats,
  float32, bool, ints, object and fixed-width strings), at a length where
  zarr's automatic chunking splits them.
"""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr
from helpers import SESSION_ID, quirky_spec, write_synth

from opto_cube import binning, io, schema
from opto_cube.jobs import convert
from opto_cube.store import layout
from opto_cube.store import write as store


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _assert_same_files(ours: Path, theirs: Path, skip_attrs: tuple[str, ...] = ()) -> None:
    """Every file of both stores equal: chunks byte for byte, zarr.json as JSON (consolidated metadata included)."""
    a, b = _files(ours), _files(theirs)
    assert sorted(a) == sorted(b)
    for key in a:
        if key.endswith("zarr.json"):
            ja, jb = json.loads(a[key]), json.loads(b[key])
            for attrs in (ja.get("attributes", {}), jb.get("attributes", {})):
                for name in skip_attrs:
                    attrs.pop(name, None)
            assert ja == jb, key
        else:
            assert a[key] == b[key], key


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("layout") / "data"
    return write_synth(
        root / schema.SESSIONS_DIR / SESSION_ID, quirky_spec(omit_waveform_type=False, omit_ks_label=False)
    )


def test_convert_imports_neither_xarray_nor_dask(folder: Path, tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from opto_cube.cli import main\n"
        "try:\n"
        f"    main(['convert', {str(folder)!r}, '--out', {str(tmp_path / 'out')!r}, '--bin-ms', '1', '--quiet'])\n"
        "except SystemExit as e:\n"
        "    assert not e.code, e.code\n"
        "print(sorted(m for m in ('xarray', 'dask', 'pandas', 'distributed') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stderr
    assert len(list((tmp_path / "out").glob("*.zarr"))) == 1


def _xarray_written(ours: Path, template: xr.Dataset, out: Path) -> None:
    """The old way: the cube in memory (values read from ``ours``), written whole by ``xarray.to_zarr``."""
    group = zarr.open_group(ours, mode="r")
    ds = template.copy()
    encoding = {str(name): {"compressors": store.COMPRESSORS} for name in ds.variables}
    for name in (schema.SPIKE_COUNTS, schema.WINDOW_COUNTS, *schema.TIMING_ARRAYS):
        array = group[name]
        ds[name] = (ds[name].dims, array[...], dict(ds[name].attrs))
        encoding[name].update(chunks=array.chunks, fill_value=array.fill_value)
    attrs = dict(group.attrs)
    ds.attrs = {k: v for k, v in attrs.items() if k not in (schema.ATTR_CHUNK_CRC32C, schema.ATTR_COMPLETE)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.to_zarr(out, mode="w-", zarr_format=3, consolidated=False, encoding=encoding, write_empty_chunks=True)
    written = zarr.open_group(out, mode="r+")
    written.attrs.pop("coordinates", None)  # coordinates no variable claims (the writer removes it too)
    written.attrs.update({k: attrs[k] for k in (schema.ATTR_CHUNK_CRC32C, schema.ATTR_COMPLETE)})
    zarr.consolidate_metadata(out)


@pytest.mark.parametrize("bin_ms", [1.0, 10.0])
def test_store_equals_the_one_xarray_writes(folder: Path, tmp_path: Path, bin_ms: float) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the quirky session's warnings
        session = io.read_session(folder)
        result = convert.convert_session(folder, tmp_path / "ours", bin_ms=bin_ms, chunks=(5, 16))
    ours = Path(str(result.store))
    bins = binning.plan_time_bins(session.stim[schema.DURATION], bin_ms=bin_ms)
    template = convert.cube_template(session, bins, np.dtype(result.dtype), chunks=(5, 16, bins.n_bins))
    theirs = tmp_path / "theirs.zarr"
    _xarray_written(ours, template, theirs)
    _assert_same_files(ours, theirs)
    a, b = xr.open_zarr(ours, consolidated=True), xr.open_zarr(theirs, consolidated=True)
    xr.testing.assert_identical(a, b)
    for name in a.variables:
        assert a[name].dtype == b[name].dtype
        assert a[name].encoding.get("dtype") == b[name].encoding.get("dtype")
        assert a[name].encoding.get("chunks") == b[name].encoding.get("chunks"), name
    xr.testing.assert_identical(store.open_cube(ours).load(), store.open_cube(theirs).load())


def test_coordinate_encoding_of_every_dtype(tmp_path: Path) -> None:
    n = 200_000  # long enough that zarr's automatic chunks split the 8-byte arrays
    rng = np.random.default_rng(0)
    floats = rng.normal(size=n)
    floats[::7] = np.nan
    coords = {
        "trial": layout.Var(("trial",), np.arange(n, dtype=np.int64), {"units": "1"}),
        "onset_s": layout.Var(("trial",), floats, {"long_name": "x", "units": "s"}),
        "f32": layout.Var(("trial",), floats.astype(np.float32)),
        "flag": layout.Var(("trial",), floats > 0),
        "small": layout.Var(("trial",), (np.arange(n) % 100).astype(np.int8)),
        "unsigned": layout.Var(("trial",), (np.arange(n) % 1000).astype(np.uint16)),
        "label": layout.Var(("trial",), np.array(["RS", "", "FS", "é"] * (n // 4), dtype=object)),
        "fixed": layout.Var(("trial",), np.array(["ab", "c"] * (n // 2))),
        "window": layout.Var(("window",), np.array(schema.WINDOWS, dtype=object), {"units": "1"}),
    }
    data = {"n": layout.Var(("trial", "window"), np.zeros((n, 2), np.uint8), {"units": "count"})}
    cube = layout.CubeLayout(coords, data, {"a": 1, "b": [1.5, None], "c": {"d": "e"}})
    ours, theirs = tmp_path / "ours.zarr", tmp_path / "theirs.zarr"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zarr: fixed-width strings have no Zarr v3 specification yet
        group = zarr.open_group(ours, mode="w-", zarr_format=3, attributes=cube.attrs)
        store.write_coordinates(group, cube)
        group.create_array(
            "n", shape=(n, 2), dtype=np.uint8, chunks=(n, 2), compressors=store.COMPRESSORS, fill_value=0,
            dimension_names=("trial", "window"), attributes=layout.zarr_encoding(cube, "n")["attributes"],
        )[...] = data["n"].data  # fmt: skip
        ds = cube.to_dataset()
        encoding = {str(k): {"compressors": store.COMPRESSORS} for k in ds.variables}
        encoding["n"]["chunks"] = (n, 2)
        ds.to_zarr(theirs, mode="w-", zarr_format=3, consolidated=False, encoding=encoding)
        zarr.open_group(theirs, mode="r+").attrs.pop("coordinates", None)
    assert zarr.open_array(ours, path="onset_s").nchunks > 1  # the automatic chunks were exercised
    _assert_same_files(ours, theirs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        xr.testing.assert_identical(xr.open_zarr(ours, consolidated=False), xr.open_zarr(theirs, consolidated=False))
