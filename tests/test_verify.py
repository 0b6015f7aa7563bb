"""opto_cube.jobs.verify and reading damaged stores.

Every damage is found, by verify and by reading, naming the chunk.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr
from helpers import DAMAGES, SESSION_ID, add_window_counts, chunk_files, convert_recording, damage
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from opto_cube import cli, schema
from opto_cube.errors import StoreError
from opto_cube.jobs.verify import verify, verify_store
from opto_cube.store import chunks
from opto_cube.store.chunks import zarr_store
from opto_cube.store.open import open_cube

CHUNKINGS = ((4, 16), (3, 7), (8, 40))  # (clusters, trials) per chunk of the tiny session (8 x 40)


@pytest.fixture(scope="module")
def sealed(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[int, int], Path]:
    """A whole store of the tiny session for each chunking (copy before damaging)."""
    from helpers import write_synth

    root = tmp_path_factory.mktemp("sealed")
    folder = write_synth(root / "data" / schema.SESSIONS_DIR / SESSION_ID)
    out = {}
    for chunking in CHUNKINGS:
        result, _ = convert_recording(folder, root / f"stores_{chunking[0]}_{chunking[1]}", bin_ms=10, chunks=chunking)
        add_window_counts(Path(result.store))
        out[chunking] = Path(result.store)
    return out


def _copy(source: Path, tmp: Path) -> Path:
    target = tmp / source.name
    shutil.copytree(source, target)
    return target


def _read_everything(path: Path) -> None:
    ds = open_cube(path)
    for name in ds.data_vars:
        ds[name].values  # noqa: B018  (reading is the test)


def test_whole_store_verifies_and_reads(sealed, tmp_path):
    path = sealed[(4, 16)]
    (report,) = verify(path, data_root=path.parent.parent / "data")
    assert report.ok, report.problems
    assert report.chunks == len(chunks.expected_chunks(zarr.open_group(path, mode="r")))
    assert "window_counts = window sums" in report.checked
    assert any("SHA-256" in c for c in report.checked)
    ds = open_cube(path)
    np.testing.assert_array_equal(ds[schema.SPIKE_COUNTS].values, zarr.open_array(path, path=schema.SPIKE_COUNTS)[:])


@pytest.mark.parametrize("array", [schema.SPIKE_COUNTS, schema.WINDOW_COUNTS])
@pytest.mark.parametrize("how", DAMAGES)
def test_damage_table(sealed, tmp_path, array, how):
    """Each damage of either array: verify names the chunk, and reading raises naming store and chunk."""
    path = _copy(sealed[(4, 16)], tmp_path)
    keys = chunk_files(path, array)
    assert len(keys) == (6 if array == schema.SPIKE_COUNTS else 1)  # window_counts: one chunk up to 64 MiB
    key = keys[-1]
    other = next(k for k in chunk_files(path, schema.SPIKE_COUNTS) if k != key)  # swapped with: another chunk
    damage(path, key, how, other=other)
    report = verify_store(path)
    assert not report.ok
    assert any(f"chunk {key} " in p for p in report.problems), report.problems
    assert all(p.startswith(f"{path}: ") for p in report.problems)
    damaged = {key, other} if how == "swap" else {key}
    with pytest.raises(StoreError, match=rf"^{re.escape(str(path))}: chunk ({'|'.join(map(re.escape, damaged))}) "):
        _read_everything(path)


def test_whole_chunks_of_a_damaged_store_still_read(sealed, tmp_path):
    """Only the damaged chunk fails: a slice of whole chunks reads its right values."""
    path = _copy(sealed[(4, 16)], tmp_path)
    expected = zarr.open_array(path, path=schema.SPIKE_COUNTS)[:]
    damage(path, f"{schema.SPIKE_COUNTS}/c/1/2/0", "flip_middle")
    ds = open_cube(path)
    np.testing.assert_array_equal(ds[schema.SPIKE_COUNTS][:4].values, expected[:4])
    with pytest.raises(StoreError, match=r"chunk spike_counts/c/1/2/0 is corrupt"):
        ds[schema.SPIKE_COUNTS][4:].values  # noqa: B018


def test_window_counts_that_disagree_with_the_cube(sealed, tmp_path):
    """A window_counts rewritten with a valid checksum but wrong values: only the window check finds it."""
    path = _copy(sealed[(3, 7)], tmp_path)
    array = zarr.open_array(path, path=schema.WINDOW_COUNTS, mode="r+")
    values = array[:]
    values[2, 5, 1] += 1
    array[:] = values
    chunks.seal(zarr_store(path), path)  # checksums recorded again: every chunk "in place"
    report = verify_store(path)
    assert [p for p in report.problems if "differs from the window sums" in p] == [
        f"{path}: window_counts differs from the window sums of chunk spike_counts/c/0/0/0 at cluster 2, trial 5"
        " (1 cluster x trial)"
    ]


def test_completion_mark_and_format(sealed, tmp_path):
    path = _copy(sealed[(4, 16)], tmp_path)
    meta_path = path / "zarr.json"
    meta = json.loads(meta_path.read_text())
    del meta["attributes"][schema.ATTR_COMPLETE]
    meta_path.write_text(json.dumps(meta))
    assert any("no completion mark" in p for p in verify_store(path).problems)
    meta["attributes"][schema.ATTR_FORMAT_VERSION] = 1
    meta_path.write_text(json.dumps(meta))
    assert verify_store(path).problems == [
        f"{path}: store format 1, without checksums; reconvert it (convert rebuilds it)"
    ]


def test_changed_source_is_named(sealed, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(sealed[(4, 16)].parent.parent / "data", data)
    path = sealed[(4, 16)]
    labels = data / schema.SESSIONS_DIR / SESSION_ID / schema.CLUSTERS_KS_LABEL
    labels.write_text(labels.read_text().replace("good", "mua", 1))
    problems = verify_store(path, data_root=data).problems
    assert problems == [f"{path}: source {labels} changed since the conversion (SHA-256 differs)"]


def test_not_a_store(tmp_path):
    folder = tmp_path / f"{SESSION_ID}.zarr"
    folder.mkdir()
    (folder / "notes.txt").write_text("x")
    assert verify_store(folder).problems == [
        f"{folder}: not an opto_cube store (no opto_cube metadata in its zarr.json)"
    ]
    with pytest.raises(StoreError, match="no such store or folder"):
        verify(tmp_path / "nowhere")


def test_cli_verify(sealed, tmp_path, capsys):
    folder = tmp_path / "stores"
    folder.mkdir()
    whole = _copy(sealed[(4, 16)], folder)
    assert cli.main(["verify", str(folder)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"ok       {whole}: ")
    assert out[-1] == "1 ok, 0 damaged (1 store)"
    damage(whole, f"{schema.SPIKE_COUNTS}/c/1/0/0", "delete")
    assert cli.main(["verify", str(folder)]) == 1
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [
        f"opto-cube: error: {whole}: chunk spike_counts/c/1/0/0 is missing (deleted or never written)"
    ]
    assert captured.out.splitlines() == [f"damaged  {whole}: 1 problem", "0 ok, 1 damaged (1 store)"]


def test_cli_info_on_a_damaged_store_is_one_line(sealed, tmp_path, capsys):
    path = _copy(sealed[(4, 16)], tmp_path)
    damage(path, f"{schema.SPIKE_COUNTS}/c/0/1/0", "delete")
    assert cli.main(["info", str(path)]) == 1
    assert capsys.readouterr().err.splitlines() == [
        f"opto-cube: error: {path}: chunk spike_counts/c/0/1/0 is missing (deleted or never written):"
        f" the store is damaged; run `opto-cube verify {path}`, then convert the session again with --overwrite"
    ]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@pytest.mark.slow
@given(data=st.data())
def test_property_any_damage_of_any_chunk_is_detected(sealed, tmp_path_factory, data):
    """A random chunk of any array (coordinates included) of a random store, damaged in a random way."""
    source = sealed[data.draw(st.sampled_from(CHUNKINGS), label="chunks")]
    path = _copy(source, tmp_path_factory.mktemp("damaged"))
    keys = sorted(chunks.expected_chunks(zarr.open_group(path, mode="r")))
    key = data.draw(st.sampled_from(keys), label="chunk")
    how = data.draw(st.sampled_from(DAMAGES), label="damage")
    other = None
    if how == "swap":
        others = [k for k in keys if k != key and (path / k).read_bytes() != (path / key).read_bytes()]
        other = data.draw(st.sampled_from(others), label="swapped with")
    damage(path, key, how, position=data.draw(st.floats(0.0, 1.0), label="position"), other=other)
    damaged = {key, other} - {None}
    report = verify_store(path)
    assert any(f"chunk {k} " in p for p in report.problems for k in damaged), report.problems
    pattern = rf"^{re.escape(str(path))}: chunk ({'|'.join(map(re.escape, damaged))}) "
    with pytest.raises(StoreError, match=pattern):
        _read_everything(path)
