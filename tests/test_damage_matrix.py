"""The damage matrix: every stored array x (delete, flip, truncate) x every entry point refuses the store.

Each case copies a sealed 1-ms store, damages one chunk, and runs one entry
point: the ``responses``, ``maps`` and ``report`` commands (non-zero exit, one
line naming the store and the chunk, nothing left at ``--out``), and
``responses_table``, the lazy ``responses`` and the PSTHs of the Python API
(one :class:`~opto_cube.errors.StoreError` naming store and chunk). The same
on S3 (moto's server; marked slow).

``open_cube`` and the jobs check every chunk's presence and place, and every
byte of the arrays they read (the jobs: ``window_counts``, the stored timing
arrays, the coordinates); a flipped byte inside a ``spike_counts`` chunk (its
last 4 bytes intact) is found by what reads ``spike_counts`` (its values, the
PSTH of a store without ``condition_counts``), not by a job or a lazy
computation that never reads it (the responses, the maps, the report, the
stored time course), whose results do not depend on it and equal the clean
store's. On S3 such a job fetches only the last 4 bytes of a ``spike_counts`` chunk.
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import pandas as pd
import pytest
from helpers import SESSION_ID, chunk_files, damage, tiny_spec, write_synth
from test_s3 import s3  # noqa: F401 - the moto server fixture

from opto_cube import cli, schema
from opto_cube.analysis import psth, response
from opto_cube.errors import StoreError
from opto_cube.jobs import convert, pipeline
from opto_cube.store.open import open_cube

ARRAYS = (
    schema.SPIKE_COUNTS,
    schema.WINDOW_COUNTS,
    schema.CONDITION_COUNTS,
    schema.FIRST_SPIKE_BIN,
    schema.DEPTH_FROM_SURFACE,  # a coordinate
)
DAMAGES = ("delete", "flip_middle", "truncate")
COMMANDS = ("responses", "maps", "report")
API = ("responses_table", "lazy_responses", "psth")


@pytest.fixture(scope="module")
def sealed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One clean tiny session converted at 1 ms (timing arrays stored). Read-only: cases copy it."""
    root = tmp_path_factory.mktemp("matrix")
    folder = write_synth(root / "data" / schema.SESSIONS_DIR / SESSION_ID, tiny_spec(seed=7))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = convert.convert_session(folder, root / "stores", bin_ms=1)
    return Path(result.store)


def _damaged_copy(sealed: Path, tmp_path: Path, name: str, how: str) -> tuple[Path, str]:
    stores = tmp_path / "stores"
    stores.mkdir()
    store = stores / sealed.name
    shutil.copytree(sealed, store)
    key = chunk_files(store, name)[0]
    damage(store, key, how)
    return store, key


def _assert_names(message: str, store: object, key: str) -> None:
    assert "\n" not in message.strip(), message
    assert str(store) in message, message
    assert f"chunk {key}" in message, message
    assert "opto-cube verify" in message, message
    assert "--overwrite" in message, message


def _reads_spike_counts_only(name: str, how: str) -> bool:
    """The one cell the jobs and the lazy computations do not see: bytes flipped inside a chunk none reads."""
    return name == schema.SPIKE_COUNTS and how.startswith("flip")


def _assert_what_reads_spike_counts_refuses(store: object, key: str, **options: object) -> None:
    """Reading ``spike_counts``, and the PSTH of a store without ``condition_counts`` (the maps' pass over the
    cube), refuse the flipped chunk."""
    with pytest.raises(StoreError) as caught:
        open_cube(store, **options)[schema.SPIKE_COUNTS].values  # noqa: B018 - reading it is refused
    _assert_names(str(caught.value), store, key)
    without_course = open_cube(store, **options).drop_vars([schema.CONDITION_COUNTS])  # as a format-1 store
    with pytest.raises(StoreError) as caught:
        psth.condition_time_course(without_course)
    _assert_names(str(caught.value), store, key)


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("how", DAMAGES)
@pytest.mark.parametrize("name", ARRAYS)
def test_commands_refuse_a_damaged_store(sealed, tmp_path, capsys, command, how, name):
    store, key = _damaged_copy(sealed, tmp_path, name, how)
    out = tmp_path / {"responses": "r.csv", "maps": "maps", "report": "report.html"}[command]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code = cli.main([command, str(store.parent), "--out", str(out)])
    err = capsys.readouterr().err.strip()
    if _reads_spike_counts_only(name, how):  # the jobs never read spike_counts: done, as from the clean store
        assert code == 0, err
        assert out.exists()
        if command == "responses":
            clean = tmp_path / "clean.csv"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                assert cli.main([command, str(sealed.parent), "--out", str(clean)]) == 0
            assert out.read_bytes() == clean.read_bytes()
        _assert_what_reads_spike_counts_refuses(store, key)
        return
    assert code != 0
    _assert_names(err, store, key)
    assert not out.exists() or (out.is_dir() and not any(out.iterdir()))


def _run_api(entry: str, source: object, storage_options: dict | None = None) -> None:
    options = {"storage_options": storage_options} if storage_options else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if entry == "responses_table":
            pipeline.responses_table([source] if storage_options is None else source)
        elif entry == "lazy_responses":
            response.responses(open_cube(source, **options)).compute()
        else:
            psth.condition_time_course(open_cube(source, **options))


@pytest.mark.parametrize("entry", API)
@pytest.mark.parametrize("how", DAMAGES)
@pytest.mark.parametrize("name", ARRAYS)
def test_api_refuses_a_damaged_store(sealed, tmp_path, entry, how, name):
    store, key = _damaged_copy(sealed, tmp_path, name, how)
    if _reads_spike_counts_only(name, how):
        _run_api(entry, store)  # computed without the damaged chunk: equal to the clean store's
        _assert_what_reads_spike_counts_refuses(store, key)
        return
    with pytest.raises(StoreError) as caught:
        _run_api(entry, store)
    _assert_names(str(caught.value), store, key)


def test_lazy_results_without_the_damaged_chunk_equal_the_clean_store(sealed, tmp_path):
    store, _ = _damaged_copy(sealed, tmp_path, schema.SPIKE_COUNTS, "flip_middle")
    clean = response.to_table(response.responses(open_cube(sealed)).compute(), "s")
    damaged = response.to_table(response.responses(open_cube(store)).compute(), "s")
    assert clean.equals(damaged)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        job_clean = pipeline.responses_table([sealed])
        job_damaged = pipeline.responses_table([store])
    pd.testing.assert_frame_equal(job_clean, job_damaged, check_exact=True)


def test_an_arrays_own_metadata_disagreeing_with_the_consolidated_copy_is_damage(sealed, tmp_path):
    import json

    from opto_cube.jobs import verify

    stores = tmp_path / "stores"
    store = stores / sealed.name
    shutil.copytree(sealed, store)
    meta_path = store / schema.WINDOW_COUNTS / "zarr.json"
    meta = json.loads(meta_path.read_text())
    meta["data_type"] = "uint16"
    meta_path.write_text(json.dumps(meta))
    for run in (lambda: pipeline.responses_table([store]), lambda: open_cube(store)):
        with pytest.raises(StoreError, match=r"window_counts's zarr.json disagrees .*data_type.*opto-cube verify"):
            run()
    (report,) = verify.verify(store)
    assert any("window_counts's zarr.json disagrees" in p for p in report.problems), report.problems


# --------------------------------------------------------------------------
# S3 (test_s3's moto server)
# --------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("entry", ["responses_table", "lazy_responses"])
@pytest.mark.parametrize("how", DAMAGES)
@pytest.mark.parametrize("name", ARRAYS)
def test_s3_refuses_a_damaged_store(s3, sealed, tmp_path, entry, how, name):  # noqa: F811
    import fsspec

    store, key = _damaged_copy(sealed, tmp_path, name, how)
    url = f"{s3.prefix()}/{store.name}"
    fs = fsspec.filesystem("s3")
    fs.put(str(store), url.removeprefix("s3://"), recursive=True)
    fs.invalidate_cache()
    if _reads_spike_counts_only(name, how):
        _run_api(entry, url, storage_options={})
        _assert_what_reads_spike_counts_refuses(url, key)
        return
    if entry == "responses_table":
        with pytest.raises(StoreError) as caught:
            pipeline.responses_table([url])
    else:
        with pytest.raises(StoreError) as caught:
            _run_api(entry, url, storage_options={})
    _assert_names(str(caught.value), url, key)


@pytest.mark.slow
def test_s3_jobs_fetch_only_the_last_bytes_of_the_cube(s3, sealed, monkeypatch):  # noqa: F811
    """A job that never reads ``spike_counts`` checks its chunks' presence and place from their last 4 bytes:
    it does not download the cube; the arrays it reads are fetched whole (every byte checked)."""
    import fsspec
    from zarr.abc.store import SuffixByteRequest
    from zarr.storage import FsspecStore

    url = f"{s3.prefix()}/{sealed.name}"
    fs = fsspec.filesystem("s3")
    fs.put(str(sealed), url.removeprefix("s3://"), recursive=True)
    fs.invalidate_cache()
    fetched: list[tuple[str, object]] = []
    real_get = FsspecStore.get

    async def get(self, key, prototype, byte_range=None):
        fetched.append((key, byte_range))
        return await real_get(self, key, prototype, byte_range)

    monkeypatch.setattr(FsspecStore, "get", get)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = pipeline.responses_table([url])
    assert len(table) > 0
    cube = [(k, r) for k, r in fetched if k.startswith(f"{schema.SPIKE_COUNTS}/c/")]
    assert cube, fetched
    assert all(isinstance(r, SuffixByteRequest) and r.suffix == 4 for _, r in cube), cube
    read = [(k, r) for k, r in fetched if k.startswith(f"{schema.WINDOW_COUNTS}/c/")]
    assert read, fetched
    assert any(r is None for _, r in read), read
