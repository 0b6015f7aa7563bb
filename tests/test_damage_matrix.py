"""The damage matrix: every stored array x (delete, flip, truncate) x every entry point refuses the store.

Each case copies a sealed 1-ms store, damages one chunk, and runs one entry
point: the ``responses``, ``maps`` and ``report`` commands (non-zero exit, one
line naming the store and the chunk, nothing left at ``--out``), and
``responses_table``, the lazy ``responses`` and the PSTHs of the Python API
(one :class:`~opto_cube.errors.StoreError` naming store and chunk). The same
on S3 (moto's server; marked slow).

``open_cube`` checks every chunk's presence and place, and every byte but
the cube's (the small arrays); a flipped byte inside a ``spike_counts`` chunk
(its last 4 bytes intact) is found when ``spike_counts`` is read, not by a
lazy computation that never reads it (the responses, the stored time course),
whose values do not depend on it. The jobs (commands, ``responses_table``)
check every chunk's bytes and refuse it.
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

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
    """The one cell a lazy computation does not see: bytes flipped inside a chunk it never reads."""
    return name == schema.SPIKE_COUNTS and how.startswith("flip")


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("how", DAMAGES)
@pytest.mark.parametrize("name", ARRAYS)
def test_commands_refuse_a_damaged_store(sealed, tmp_path, capsys, command, how, name):
    store, key = _damaged_copy(sealed, tmp_path, name, how)
    out = tmp_path / {"responses": "r.csv", "maps": "maps", "report": "report.html"}[command]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code = cli.main([command, str(store.parent), "--out", str(out)])
    assert code != 0
    err = capsys.readouterr().err.strip()
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
    if entry != "responses_table" and _reads_spike_counts_only(name, how):
        _run_api(entry, store)  # computed without the damaged chunk: equal to the clean store's
        with pytest.raises(StoreError) as caught:
            open_cube(store)[schema.SPIKE_COUNTS].values  # noqa: B018 - reading it is refused
    else:
        with pytest.raises(StoreError) as caught:
            _run_api(entry, store)
    _assert_names(str(caught.value), store, key)


def test_lazy_results_without_the_damaged_chunk_equal_the_clean_store(sealed, tmp_path):
    store, _ = _damaged_copy(sealed, tmp_path, schema.SPIKE_COUNTS, "flip_middle")
    clean = response.to_table(response.responses(open_cube(sealed)).compute(), "s")
    damaged = response.to_table(response.responses(open_cube(store)).compute(), "s")
    assert clean.equals(damaged)


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
    if entry == "responses_table":
        with pytest.raises(StoreError) as caught:
            pipeline.responses_table([url])
    elif _reads_spike_counts_only(name, how):
        _run_api(entry, url, storage_options={})
        with pytest.raises(StoreError) as caught:
            open_cube(url)[schema.SPIKE_COUNTS].values  # noqa: B018
    else:
        with pytest.raises(StoreError) as caught:
            _run_api(entry, url, storage_options={})
    _assert_names(str(caught.value), url, key)
