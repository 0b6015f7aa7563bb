"""A store reads correctly in Zarr implementations other than zarr-python.

- tensorstore (Google's C++ Zarr v3 implementation, ``zarr3`` driver) reads
  ``spike_counts`` and every numeric coordinate; the values and dtypes equal
  what xarray reads.
- Strings (``waveform_type``, ``ks_label``) are Zarr v3's ``string`` data type
  with the ``vlen-utf8`` codec. tensorstore has no string type, so their
  metadata is checked, and their chunks are decoded twice: with zarr-python and
  by hand from the codec's specification (little-endian u32 item count, then
  u32 length + UTF-8 bytes per item, zstd-compressed).
- Every array's codecs are standard ones, and nothing else (no storage
  transformers, no custom filters, regular chunk grid, default chunk keys).
"""

from __future__ import annotations

import base64
import json
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr
from helpers import SESSION_ID, convert_recording, damage, quirky_spec, write_synth

from opto_cube import schema
from opto_cube.store import chunks

ts = pytest.importorskip("tensorstore", reason="tensorstore is not installed (pip install tensorstore)")

NUMERIC = (
    schema.SPIKE_COUNTS,
    schema.WINDOW_COUNTS,
    schema.CLUSTER,
    schema.TRIAL,
    schema.TIME,
    schema.ONSET,
    schema.EMITTER,
    schema.POWER,
    schema.DURATION,
    schema.DEPTH_FROM_SURFACE,
    schema.EMITTER_DEPTH,
    schema.QC_PASS,
)
STRINGS = (schema.WAVEFORM_TYPE, schema.KS_LABEL)
LABELS = (schema.WINDOW,)  # a fixed string coordinate (window_counts' pre / stim), vlen-utf8 like STRINGS
STANDARD_CODECS = {"bytes", "zstd", "blosc", "vlen-utf8", "transpose", "crc32c"}
CF_ATTRIBUTES = {"long_name", "units", "coordinates", "_FillValue"}  # what an array's attributes may hold


@pytest.fixture(scope="module")
def cube_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A quirky tiny session (NaN metrics, unknown labels, jittered powers) at 1 ms, in several chunks per axis."""
    root = tmp_path_factory.mktemp("readers") / "data"
    folder = write_synth(
        root / schema.SESSIONS_DIR / SESSION_ID, quirky_spec(omit_waveform_type=False, omit_ks_label=False)
    )
    result, _ = convert_recording(folder, root.parent / "stores", bin_ms=1.0, chunks=(3, 16))
    return Path(result.store)


@pytest.fixture(scope="module")
def ds(cube_store: Path) -> xr.Dataset:
    return xr.open_zarr(cube_store).load()


def _metadata(store: Path) -> dict[str, dict]:
    """Every array's zarr.json, by array name."""
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(store.glob("*/zarr.json"))}


def _tensorstore(store: Path, name: str):
    spec = {"driver": "zarr3", "kvstore": {"driver": "file", "path": str(store / name)}}
    return ts.open(spec, read=True).result()


def test_fixture_has_several_chunks_and_quirks(cube_store: Path, ds: xr.Dataset) -> None:
    meta = _metadata(cube_store)[schema.SPIKE_COUNTS]
    assert meta["chunk_grid"]["configuration"]["chunk_shape"][:2] == [3, 16]
    assert ds.sizes[schema.CLUSTER] > 3
    assert ds.sizes[schema.TRIAL] > 16
    assert np.isnan(ds[schema.PRESENCE_RATIO].values).any() or (ds[schema.PEAK_CHANNEL].values == -1).any()


@pytest.mark.parametrize("name", NUMERIC)
def test_tensorstore_reads_what_xarray_reads(cube_store: Path, ds: xr.Dataset, name: str) -> None:
    array = _tensorstore(cube_store, name)
    assert tuple(array.domain.labels) == ds[name].dims  # dimension_names
    values = array.read().result()
    expected = ds[name].values
    assert values.dtype == expected.dtype
    np.testing.assert_array_equal(values, expected)


def test_tensorstore_reads_every_other_numeric_coordinate(cube_store: Path, ds: xr.Dataset) -> None:
    others = [n for n in ds.variables if n not in NUMERIC and n not in STRINGS and n not in LABELS]
    assert others, "expected per-cluster metrics and stim_index"
    for name in others:
        np.testing.assert_array_equal(_tensorstore(cube_store, name).read().result(), ds[name].values, err_msg=name)


def test_tensorstore_partial_read_across_chunks(cube_store: Path, ds: xr.Dataset) -> None:
    """A slice straddling chunk boundaries, read by index, equals xarray's."""
    array = _tensorstore(cube_store, schema.SPIKE_COUNTS)
    window = array[2:7, 10:40, 490:620].read().result()
    np.testing.assert_array_equal(window, ds[schema.SPIKE_COUNTS].values[2:7, 10:40, 490:620])
    assert int(array.read().result().sum(dtype=np.int64)) == int(ds[schema.SPIKE_COUNTS].values.sum(dtype=np.int64))


@pytest.mark.parametrize("name", STRINGS)
def test_strings_are_vlen_utf8(cube_store: Path, ds: xr.Dataset, name: str) -> None:
    meta = _metadata(cube_store)[name]
    assert meta["data_type"] == "string"
    assert meta["codecs"][0]["name"] == "vlen-utf8"  # the array -> bytes codec
    assert meta["fill_value"] == ""
    decoded = zarr.open_array(cube_store / name, mode="r")[:]
    assert list(decoded) == list(ds[name].values)
    assert {str(v) for v in decoded} <= {*schema.WAVEFORM_TYPES, schema.UNKNOWN_LABEL, "good", "mua", "noise"}


def _decode_vlen_utf8_chunk(raw: bytes, codecs: list[dict]) -> list[str]:
    """Decode one chunk by the Zarr v3 specs: the bytes -> bytes codecs undone in reverse, then vlen-utf8."""
    import google_crc32c
    import numcodecs

    for codec in reversed(codecs[1:]):
        assert codec["name"] in {"zstd", "crc32c"}, codec
        if codec["name"] == "crc32c":  # the last 4 bytes: CRC32C (little-endian) of the bytes before them
            assert int.from_bytes(raw[-4:], "little") == google_crc32c.value(raw[:-4])
            raw = raw[:-4]
        else:
            raw = numcodecs.Zstd().decode(raw)
    (n,) = struct.unpack_from("<I", raw, 0)
    out, offset = [], 4
    for _ in range(n):
        (length,) = struct.unpack_from("<I", raw, offset)
        out.append(raw[offset + 4 : offset + 4 + length].decode("utf-8"))
        offset += 4 + length
    assert offset == len(raw)
    return out


@pytest.mark.parametrize("name", STRINGS)
def test_strings_decode_by_the_spec(cube_store: Path, ds: xr.Dataset, name: str) -> None:
    meta = _metadata(cube_store)[name]
    (chunk,) = meta["chunk_grid"]["configuration"]["chunk_shape"]
    assert chunk >= ds.sizes[schema.CLUSTER]  # one chunk
    assert meta["chunk_key_encoding"] == {"name": "default", "configuration": {"separator": "/"}}
    path = cube_store / name / "c" / "0"  # every chunk is written, fill values only or not
    assert _decode_vlen_utf8_chunk(path.read_bytes(), meta["codecs"]) == list(ds[name].values)
    assert set(ds[name].values) - {schema.UNKNOWN_LABEL}, "expected some non-empty labels"


def test_only_standard_codecs(cube_store: Path) -> None:
    metas = _metadata(cube_store)
    assert set(metas) >= {*NUMERIC, *STRINGS}
    for name, meta in metas.items():
        assert meta["zarr_format"] == 3, name
        assert meta["node_type"] == "array", name
        names = [c["name"] for c in meta["codecs"]]
        assert set(names) <= STANDARD_CODECS, (name, names)
        assert sum(n in {"bytes", "vlen-utf8"} for n in names) == 1, (name, names)  # one array -> bytes codec
        assert any(n in {"zstd", "blosc"} for n in names), (name, names)  # compressed
        for codec in meta["codecs"]:
            if codec["name"] == "bytes":
                assert codec.get("configuration", {}).get("endian", "little") == "little", name
        assert meta.get("storage_transformers", []) == [], name
        assert meta["chunk_grid"]["name"] == "regular", name
        assert meta["chunk_key_encoding"]["name"] == "default", name
        assert "filters" not in meta, name
        assert "compressor" not in meta, name  # no Zarr v2 leftovers
        assert set(meta.get("attributes", {})) <= CF_ATTRIBUTES, (name, meta["attributes"])


@pytest.mark.parametrize("name", NUMERIC)
def test_no_masking_other_readers_would_miss(cube_store: Path, ds: xr.Dataset, name: str) -> None:
    """xarray's ``_FillValue`` attribute, where present, is NaN: no stored value turns into a missing one."""
    meta = _metadata(cube_store)[name]
    fill = meta.get("attributes", {}).get("_FillValue")
    if fill is not None:
        assert ds[name].dtype.kind == "f", name
        value = np.frombuffer(base64.b64decode(fill), dtype=ds[name].dtype)[0] if isinstance(fill, str) else fill
        assert np.isnan(value), (name, fill)
    raw = zarr.open_array(cube_store / name, mode="r")[:]
    np.testing.assert_array_equal(raw, ds[name].values)


def test_group_metadata_is_plain_json(cube_store: Path) -> None:
    """The group's attributes (provenance, parameters, completion mark) are plain JSON, no NaN."""
    text = (cube_store / "zarr.json").read_text()
    assert "NaN" not in text.split('"consolidated_metadata"')[0]
    meta = json.loads(text)
    assert meta["zarr_format"] == 3
    assert meta["node_type"] == "group"
    assert meta["attributes"][schema.ATTR_COMPLETE] is True
    consolidated = meta["consolidated_metadata"]["metadata"]
    assert set(consolidated) == set(_metadata(cube_store))


# --------------------------------------------------------------------------
# integrity: a CRC32C after every chunk of every array, every chunk written; other readers check it
# --------------------------------------------------------------------------
def test_every_array_is_checksummed_and_every_chunk_written(cube_store: Path) -> None:
    for name, meta in _metadata(cube_store).items():
        assert [c["name"] for c in meta["codecs"]][-2:] == ["zstd", "crc32c"], name
    expected = chunks.expected_chunks(zarr.open_group(cube_store, mode="r"))
    assert set(expected) <= chunks.listed_keys(cube_store)


def test_tensorstore_refuses_a_flipped_chunk(tmp_path: Path, cube_store: Path) -> None:
    damaged = Path(shutil.copytree(cube_store, tmp_path / cube_store.name))
    damage(damaged, f"{schema.SPIKE_COUNTS}/c/1/1/0", "flip_end")  # the CRC32C itself: zstd decodes the rest
    with pytest.raises(ValueError, match="Digest mismatch"):  # tensorstore checks the CRC32C
        _tensorstore(damaged, schema.SPIKE_COUNTS)[3:6, 16:32].read().result()


JS = Path(__file__).parent / "js"


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
@pytest.mark.skipif(not (JS / "node_modules" / "zarrita").is_dir(), reason="npm install --prefix tests/js (zarrita.js)")
def test_zarrita_reads_what_xarray_reads(cube_store: Path, ds: xr.Dataset) -> None:
    names = [*NUMERIC, *(n for n in ds.variables if n not in NUMERIC and n not in STRINGS and n not in LABELS)]
    done = subprocess.run(
        ["node", str(JS / "read_zarrita.mjs"), str(cube_store), *names],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    read = json.loads(done.stdout)
    for name in names:
        assert "error" not in read[name], (name, read[name])
        values = np.array([np.nan if v is None else v for v in read[name]["data"]]).reshape(read[name]["shape"])
        np.testing.assert_array_equal(values, ds[name].values.astype(values.dtype), err_msg=name)
