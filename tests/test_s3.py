"""Object storage: convert to ``s3://``, open, list and analyse from it, against a real S3 API.

The S3 API is moto's server bound to 127.0.0.1 on a free port, started once
for the module; credentials and the endpoint come from the usual environment
variables (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_DEFAULT_REGION``, ``AWS_ENDPOINT_URL``), exactly as a user sets them.
Every cube read from S3 is compared with the same session converted locally.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import uuid
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import xarray as xr
from helpers import OTHER_SESSION_ID, SESSION_ID, tiny_spec, write_synth

from opto_cube import cli, schema
from opto_cube.errors import OptoCubeWarning, StoreError
from opto_cube.jobs import convert, maps_job, pipeline
from opto_cube.jobs.verify import verify
from opto_cube.store import catalog, chunks
from opto_cube.store import write as store

moto_server = pytest.importorskip(
    "moto.server",
    reason="moto[server] is not installed: the S3 round trip needs a local S3 API (pip install 'moto[server]')",
)
boto3 = pytest.importorskip("boto3", reason="boto3 is not installed (it comes with moto)")
pytest.importorskip("s3fs", reason="s3fs is not installed: opto_cube reaches s3:// through fsspec's s3fs")

BUCKET = "opto-cube-test"
BIN_MS = 10.0


@dataclasses.dataclass(frozen=True)
class S3:
    """The running server: its endpoint, and a boto3 client on it."""

    endpoint: str
    client: object

    def url(self, *parts: str) -> str:
        return "/".join([f"s3://{BUCKET}", *parts])

    def prefix(self) -> str:
        """A fresh, empty prefix of the bucket (each test writes under its own)."""
        return self.url(f"t-{uuid.uuid4().hex[:8]}")

    def keys(self, url: str) -> list[str]:
        prefix = url.removeprefix(f"s3://{BUCKET}/").rstrip("/") + "/"
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
        return sorted(obj["Key"][len(prefix) :] for page in pages for obj in page.get("Contents", []))

    def get_json(self, url: str) -> dict:
        return json.loads(self.client.get_object(Bucket=BUCKET, Key=url.removeprefix(f"s3://{BUCKET}/"))["Body"].read())

    def put_json(self, url: str, value: dict) -> None:
        self.client.put_object(Bucket=BUCKET, Key=url.removeprefix(f"s3://{BUCKET}/"), Body=json.dumps(value).encode())


def _clear_fsspec_caches() -> None:
    """Forget cached filesystems (and their directory listings) so nothing leaks between servers or tests.

    zarr opens s3fs asynchronously, and s3fs leaves such sessions to their
    owner: close them on zarr's event loop, else aiohttp reports them unclosed.
    """
    import s3fs
    import zarr.core.sync

    for fs in list(s3fs.S3FileSystem._cache.values()):
        client = getattr(fs, "_s3", None)
        if fs.asynchronous and client is not None:
            with contextlib.suppress(Exception):
                zarr.core.sync.sync(client.__aexit__(None, None, None))
    s3fs.S3FileSystem.clear_instance_cache()


@pytest.fixture(scope="module")
def s3() -> Iterator[S3]:
    """moto's S3 server on 127.0.0.1 (free port), the AWS_* environment pointing at it, one bucket."""
    for name in ("werkzeug", "moto", "botocore", "s3fs"):  # moto's request log is noise here
        logging.getLogger(name).setLevel(logging.ERROR)
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AWS_ACCESS_KEY_ID", "testing")
        mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
        mp.setenv("AWS_ENDPOINT_URL", endpoint)
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
            mp.delenv(name, raising=False)
        _clear_fsspec_caches()
        client = boto3.client("s3", endpoint_url=endpoint)
        client.create_bucket(Bucket=BUCKET)
        try:
            yield S3(endpoint, client)
        finally:
            _clear_fsspec_caches()
            server.stop()


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two clean tiny sessions (no warning quirks)."""
    root = tmp_path_factory.mktemp("s3data") / "data"
    write_synth(root / schema.SESSIONS_DIR / SESSION_ID, tiny_spec(seed=3))
    write_synth(root / schema.SESSIONS_DIR / OTHER_SESSION_ID, tiny_spec(seed=4))
    return root


@pytest.fixture(scope="module")
def local(data: Path) -> Path:
    """The sessions converted to a local folder: the reference for everything read from S3."""
    out = data.parent / "stores"
    results = convert.convert(data, out, bin_ms=BIN_MS)
    assert [r.status for r in results] == ["converted", "converted"], [str(r) for r in results]
    return out


@pytest.fixture(scope="module")
def remote(s3: S3, data: Path) -> str:
    """The sessions converted to ``s3://bucket/<prefix>`` with the Python API. Read-only."""
    url = s3.prefix()
    results = convert.convert(data, url, bin_ms=BIN_MS)
    assert [r.status for r in results] == ["converted", "converted"], [str(r) for r in results]
    return url


def _drop_completion_mark(s3: S3, store_url: str) -> None:
    """What a conversion killed before its last step leaves: every object, but no completion mark."""
    meta = s3.get_json(f"{store_url}/zarr.json")
    meta["attributes"].pop(schema.ATTR_COMPLETE)  # consolidated metadata holds the arrays', not the group's
    s3.put_json(f"{store_url}/zarr.json", meta)


# --------------------------------------------------------------------------
# Round trip
# --------------------------------------------------------------------------
def test_convert_writes_one_store_per_session_on_s3(s3: S3, remote: str) -> None:
    keys = s3.keys(remote)
    assert {k.split("/", 1)[0] for k in keys} == {f"{SESSION_ID}.zarr", f"{OTHER_SESSION_ID}.zarr"}
    assert f"{SESSION_ID}.zarr/zarr.json" in keys
    assert any(k.startswith(f"{SESSION_ID}.zarr/{schema.SPIKE_COUNTS}/c/") for k in keys)  # chunks were written
    assert store.is_complete(f"{remote}/{SESSION_ID}.zarr")


@pytest.mark.parametrize("session_id", [SESSION_ID, OTHER_SESSION_ID])
def test_open_cube_on_s3_equals_local(remote: str, local: Path, session_id: str) -> None:
    from_s3 = store.open_cube(f"{remote}/{session_id}.zarr")
    assert from_s3[schema.SPIKE_COUNTS].chunks is not None  # lazy, like a local store
    expected = store.open_cube(local / f"{session_id}.zarr").load()
    xr.testing.assert_identical(from_s3.load(), expected)


def test_plain_xarray_reads_the_s3_store(remote: str, local: Path) -> None:
    url = f"{remote}/{SESSION_ID}.zarr"
    ds = xr.open_zarr(url)  # no opto_cube: fsspec and the AWS_* variables only
    expected = xr.open_zarr(local / f"{SESSION_ID}.zarr")
    xr.testing.assert_identical(ds.load(), expected.load())


@pytest.mark.slow
def test_explicit_storage_options(s3: S3, remote: str, local: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Endpoint and credentials may be passed as storage_options instead of the environment."""
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    _clear_fsspec_caches()
    options = {"endpoint_url": s3.endpoint, "key": "testing", "secret": "testing"}
    ds = store.open_cube(f"{remote}/{SESSION_ID}.zarr", storage_options=options)
    xr.testing.assert_identical(ds.load(), store.open_cube(local / f"{SESSION_ID}.zarr").load())
    assert store.is_complete(f"{remote}/{SESSION_ID}.zarr", options)


@pytest.mark.slow
def test_rerun_skips_and_overwrite_rebuilds_api_and_cli(
    s3: S3, data: Path, local: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = s3.prefix()
    argv = ["convert", str(data), "--out", url, "--session", SESSION_ID, "--bin-ms", f"{BIN_MS:g}", "--quiet"]
    assert cli.main(argv) == 0
    assert "1 converted, 0 skipped, 0 failed" in capsys.readouterr().out
    target = f"{url}/{SESSION_ID}.zarr"
    xr.testing.assert_identical(store.open_cube(target).load(), store.open_cube(local / f"{SESSION_ID}.zarr").load())
    chunk_keys = [k for k in s3.keys(url) if f"/{schema.SPIKE_COUNTS}/c/" in k]

    assert [r.status for r in convert.convert(data, url, bin_ms=BIN_MS, sessions=[SESSION_ID])] == ["skipped"]
    assert cli.main(argv) == 0
    assert "0 converted, 1 skipped, 0 failed" in capsys.readouterr().out

    assert cli.main([*argv, "--overwrite"]) == 0
    assert "1 converted, 0 skipped, 0 failed" in capsys.readouterr().out
    assert [k for k in s3.keys(url) if f"/{schema.SPIKE_COUNTS}/c/" in k] == chunk_keys
    xr.testing.assert_identical(store.open_cube(target).load(), store.open_cube(local / f"{SESSION_ID}.zarr").load())


@pytest.mark.slow
def test_cli_info_on_s3(remote: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["info", f"{remote}/{SESSION_ID}.zarr"]) == 0
    out = capsys.readouterr().out
    assert f"session   {SESSION_ID}" in out
    assert cli.main(["info", remote]) == 0
    out = capsys.readouterr().out
    assert f"session   {SESSION_ID}" in out
    assert f"session   {OTHER_SESSION_ID}" in out


def test_cli_info_on_a_missing_url(s3: S3, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["info", s3.prefix()]) == cli.EXIT_FAILED
    err = capsys.readouterr().err
    assert err.startswith("opto-cube: error: s3://")
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1


# --------------------------------------------------------------------------
# Atomicity: no rename on object storage, so a completion mark written last
# --------------------------------------------------------------------------
def test_completion_mark_is_in_the_group_attributes(s3: S3, remote: str) -> None:
    meta = s3.get_json(f"{remote}/{SESSION_ID}.zarr/zarr.json")
    assert meta["attributes"][schema.ATTR_COMPLETE] is True


@pytest.mark.slow
def test_a_store_without_its_mark_is_invisible_and_rebuilt(
    s3: S3, data: Path, local: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A conversion killed before its last step leaves every object but the mark: unlisted, then rebuilt."""
    url = s3.prefix()
    assert [r.status for r in convert.convert(data, url, bin_ms=BIN_MS, sessions=[SESSION_ID])] == ["converted"]
    broken = f"{url}/{SESSION_ID}.zarr"
    _drop_completion_mark(s3, broken)
    assert not store.is_complete(broken)

    assert cli.main(["info", url]) == 0
    assert f"{broken}: incomplete" in capsys.readouterr().out
    with pytest.warns(OptoCubeWarning, match="incomplete store"):
        assert list(catalog.open_catalog(url)) == []

    assert [r.status for r in convert.convert(data, url, bin_ms=BIN_MS, sessions=[SESSION_ID])] == ["converted"]
    assert store.is_complete(broken)
    xr.testing.assert_identical(store.open_cube(broken).load(), store.open_cube(local / f"{SESSION_ID}.zarr").load())
    assert list(catalog.open_catalog(url)) == [SESSION_ID]


@pytest.mark.slow
def test_a_failed_conversion_leaves_nothing_on_s3(s3: S3, data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from opto_cube import binning

    def broken_blocks(*args, **kwargs):
        yield from ()
        raise OSError("disk on fire")

    monkeypatch.setattr(binning, "iter_count_chunks", broken_blocks)
    url = s3.prefix()
    results = convert.convert(data, url, bin_ms=BIN_MS, sessions=[SESSION_ID])
    assert [r.status for r in results] == ["failed"]
    assert "disk on fire" in results[0].error
    assert s3.keys(url) == []


# --------------------------------------------------------------------------
# Analysis straight from S3
# --------------------------------------------------------------------------
@pytest.mark.slow
def test_catalog_on_s3_equals_local(remote: str, local: Path) -> None:
    on_s3, here = catalog.open_catalog(remote), catalog.open_catalog(local)
    assert list(on_s3) == list(here) == sorted([SESSION_ID, OTHER_SESSION_ID])
    pd.testing.assert_frame_equal(on_s3.summary(), here.summary())
    for session_id in here:
        xr.testing.assert_identical(on_s3[session_id].load(), here[session_id].load())


def test_responses_and_maps_on_s3_equal_local(remote: str, local: Path) -> None:
    on_s3, here = catalog.open_catalog(remote), catalog.open_catalog(local)
    table_s3, table_local = pipeline.responses_table(on_s3), pipeline.responses_table(here)
    assert len(table_local) > 0
    pd.testing.assert_frame_equal(table_s3, table_local)
    xr.testing.assert_identical(maps_job.maps_dataset(table_s3)[2], maps_job.maps_dataset(table_local)[2])


@pytest.fixture(scope="module")
def listings(s3: S3, data: Path) -> dict[str, list]:
    """What ``opto-cube info`` and ``open_catalog`` list in a prefix before and after a second conversion into it.

    A long-lived process (a notebook) lists a prefix, converts more sessions
    into it, and lists it again: the second listing must see the new store.
    """
    import io

    def info(url: str) -> list[str]:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            assert cli.main(["info", url]) == 0
        return [line.split()[1] for line in out.getvalue().splitlines() if line.startswith("session   ")]

    url = s3.prefix()
    seen: dict[str, list] = {"info": [], "catalog": []}
    for session_id in (SESSION_ID, OTHER_SESSION_ID):
        convert.convert(data, url, bin_ms=BIN_MS, sessions=[session_id])
        seen["catalog"].append(list(catalog.open_catalog(url)))  # first: info refreshes the cache they share
        seen["info"].append(info(url))
    return seen


@pytest.mark.slow
def test_info_lists_stores_written_since(listings: dict[str, list]) -> None:
    assert listings["info"] == [[SESSION_ID], sorted([SESSION_ID, OTHER_SESSION_ID])]


@pytest.mark.slow
def test_open_catalog_lists_stores_written_since(listings: dict[str, list]) -> None:
    assert listings["catalog"] == [[SESSION_ID], sorted([SESSION_ID, OTHER_SESSION_ID])]


# --------------------------------------------------------------------------
# Integrity on S3: the same checksums, damage found, an interrupted in-place write never listed nor skipped
# --------------------------------------------------------------------------
@pytest.mark.slow
def test_s3_store_has_the_local_checksums(s3: S3, remote: str, local: Path) -> None:
    on_s3 = s3.get_json(f"{remote}/{SESSION_ID}.zarr/zarr.json")["attributes"][schema.ATTR_CHUNK_CRC32C]
    here = store.read_store_attrs(local / f"{SESSION_ID}.zarr")[schema.ATTR_CHUNK_CRC32C]
    assert on_s3 == here
    assert set(on_s3) <= set(s3.keys(f"{remote}/{SESSION_ID}.zarr"))
    assert [r.ok for r in verify(remote)] == [True, True]


@pytest.mark.slow
def test_damage_on_s3_is_found_and_rebuilt(s3: S3, data: Path, local: Path, capsys: pytest.CaptureFixture) -> None:
    url = s3.prefix()
    assert [r.status for r in convert.convert(data, url, bin_ms=BIN_MS, sessions=[SESSION_ID])] == ["converted"]
    target = f"{url}/{SESSION_ID}.zarr"
    key = f"{schema.SPIKE_COUNTS}/c/0/0/0"
    s3.client.delete_object(Bucket=BUCKET, Key=f"{target.removeprefix(f's3://{BUCKET}/')}/{key}")
    _clear_fsspec_caches()
    with pytest.raises(StoreError, match=rf"^{target}: chunk {key} is missing"):
        store.open_cube(target)
    (report,) = verify(target)
    assert report.problems == [f"{target}: chunk {key} is missing (deleted or never written)"]
    assert [r.status for r in convert.convert(data, url, bin_ms=BIN_MS, sessions=[SESSION_ID])] == ["converted"]
    xr.testing.assert_identical(store.open_cube(target).load(), store.open_cube(local / f"{SESSION_ID}.zarr").load())


@pytest.mark.slow
def test_interrupted_in_place_write_is_never_listed_nor_skipped(
    s3: S3, data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A session.json carrying the completion mark, and a write stopped just before the seal (its last step)."""
    import shutil

    root = tmp_path / "data"
    shutil.copytree(data, root)
    folder = root / schema.SESSIONS_DIR / SESSION_ID
    info = json.loads((folder / schema.SESSION_JSON).read_text())
    (folder / schema.SESSION_JSON).write_text(json.dumps({**info, schema.ATTR_COMPLETE: True}))
    url = s3.prefix()
    target = f"{url}/{SESSION_ID}.zarr"
    seen = {}

    def killed(zstore, path, storage_options=None):
        seen["complete"] = store.is_complete(path)
        raise KeyboardInterrupt

    with monkeypatch.context() as patched:
        patched.setattr(chunks, "seal", killed)
        with pytest.raises(KeyboardInterrupt):
            convert.convert_session(folder, url, bin_ms=BIN_MS)
    assert seen == {"complete": False}
    assert [r.status for r in convert.convert(root, url, bin_ms=BIN_MS, sessions=[SESSION_ID])] == ["converted"]
    assert store.is_complete(target)
    assert [r.ok for r in verify(target)] == [True]
