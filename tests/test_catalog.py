"""Tests of opto_cube.store.catalog: a folder of stores as one lazily opened mapping, its summary and DataTree."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from opto_cube import schema, synth
from opto_cube.analysis.latency import light_artifacts
from opto_cube.errors import OptoCubeWarning, StoreError
from opto_cube.jobs import convert
from opto_cube.jobs.pipeline import responses_table
from opto_cube.jobs.tasks import analysis_pass
from opto_cube.store.catalog import SUMMARY_COLUMNS, Catalog, open_catalog


@pytest.fixture(scope="module")
def stores(tmp_path_factory) -> Path:
    """Two tiny sessions converted at 10 ms, beside a hidden store, a conversion's temp folder and a text file."""
    root = tmp_path_factory.mktemp("catalog")
    folders = synth.make_dataset(root / "data", n_sessions=2, size="tiny", seed=3)
    out = root / "stores"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tiny sessions' quirks (shuffled rows) warn
        for folder in folders:
            convert.convert_session(folder, out, bin_ms=10)
    first = sorted(out.iterdir())[0]
    shutil.copytree(first, out / ".hidden.zarr")
    shutil.copytree(first, out / f".{first.name}.tmp-999999-abcdef12")
    (out / "notes.txt").write_text("not a store\n")
    return out


def _copy(stores: Path, tmp_path: Path) -> tuple[Path, Path]:
    """The real stores only, copied into a fresh folder (for tests that add to it); and the first one."""
    out = tmp_path / "stores"
    out.mkdir()
    for p in stores.iterdir():
        if p.name.endswith(".zarr") and not p.name.startswith("."):
            shutil.copytree(p, out / p.name)
    return out, sorted(out.iterdir())[0]


def test_open_catalog_is_a_lazy_mapping(stores):
    catalog = open_catalog(stores)
    assert len(catalog) == 2
    assert isinstance(catalog, Catalog)
    names = sorted(p.name.removesuffix(".zarr") for p in stores.glob("[!.]*.zarr"))
    assert list(catalog) == names
    assert catalog.sessions == tuple(names)
    for session_id, cube in catalog.items():
        assert cube.attrs[schema.ATTR_SESSION_ID] == session_id
        assert cube[schema.SPIKE_COUNTS].chunks is not None  # not loaded
        xr.testing.assert_identical(
            cube,
            xr.open_zarr(stores / f"{session_id}.zarr").pipe(
                lambda ds: ds.assign_coords({n: c.load() for n, c in ds.coords.items() if n not in ds.indexes})
            ),
        )
    with pytest.raises(KeyError, match=r"no session 'nope' in the catalog of .*; sessions: AL"):
        catalog["nope"]


def test_summary_repr_and_html(stores):
    catalog = open_catalog(stores)
    summary = catalog.summary()
    assert tuple(summary.columns) == SUMMARY_COLUMNS
    assert summary["session"].tolist() == list(catalog.sessions)
    for row, cube in zip(summary.itertuples(), catalog.values(), strict=True):
        assert row.subject == cube.attrs["subject"]
        assert row.date == cube.attrs["date"]
        assert row.clusters == cube.sizes[schema.CLUSTER] == 8
        assert row.trials == cube.sizes[schema.TRIAL] == 40
        assert row.qc_pass == int(cube[schema.QC_PASS].values.sum())
        assert row.emitters == 3
        assert row.powers == (1.0, 4.0)
    text = repr(catalog)
    assert text.startswith(f"<opto_cube.Catalog: 2 sessions from {stores}>")
    assert all(sid in text for sid in catalog.sessions)
    html = catalog._repr_html_()
    assert "<table" in html
    assert all(sid in html for sid in catalog.sessions)


def test_to_datatree(stores):
    catalog = open_catalog(stores)
    tree = catalog.to_datatree()
    assert isinstance(tree, xr.DataTree)
    assert tuple(tree.children) == catalog.sessions
    for session_id, cube in catalog.items():
        xr.testing.assert_identical(tree[session_id].to_dataset(), cube)


def test_empty_folder(tmp_path):
    catalog = open_catalog(tmp_path)
    assert len(catalog) == 0
    assert list(catalog) == []
    assert catalog.summary().empty
    assert repr(catalog) == f"<opto_cube.Catalog: 0 sessions from {tmp_path}>"
    assert responses_table(catalog).columns[0] == schema.SESSION_ID


def test_file_and_memory_urls(stores):
    fsspec = pytest.importorskip("fsspec")
    assert open_catalog(f"file://{stores}").sessions == open_catalog(stores).sessions
    fs = fsspec.filesystem("memory")
    for p in stores.glob("[!.]*.zarr"):
        fs.put(str(p), f"/catalog-test/{p.name}", recursive=True)
    try:
        catalog = open_catalog("memory://catalog-test")
        assert catalog.sessions == open_catalog(stores).sessions
        cube = next(iter(catalog.values()))
        local = open_catalog(stores)[cube.attrs[schema.ATTR_SESSION_ID]]
        np.testing.assert_array_equal(cube[schema.SPIKE_COUNTS].values, local[schema.SPIKE_COUNTS].values)
    finally:
        fs.rm("/catalog-test", recursive=True)


def test_incomplete_store_is_skipped_with_a_warning(stores, tmp_path):
    out, first = _copy(stores, tmp_path)
    meta = json.loads((first / "zarr.json").read_text())
    del meta["attributes"][schema.ATTR_COMPLETE]
    (first / "zarr.json").write_text(json.dumps(meta))
    with pytest.warns(OptoCubeWarning, match=r"incomplete store .*skipped"):
        catalog = open_catalog(out)
    assert len(catalog) == 1
    assert first.name.removesuffix(".zarr") not in catalog


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda out, first: out / "missing", r"missing: no such folder of stores"),
        (lambda out, first: shutil.copytree(first, out / "copy.zarr") and out, r"copy\.zarr: session '.*' is already"),
        (lambda out, first: (out / "broken.zarr").mkdir() or out, r"broken\.zarr: incomplete store"),
    ],
    ids=["missing folder", "duplicate session id", "not a store"],
)
def test_bad_folders(stores, tmp_path, make, match):
    out, first = _copy(stores, tmp_path)
    target = make(out, first)
    with warnings.catch_warnings():
        warnings.simplefilter("error", OptoCubeWarning)
        with pytest.raises((StoreError, OptoCubeWarning), match=match):
            open_catalog(target)


def test_responses_table_of_a_catalog_and_a_folder(stores):
    catalog = open_catalog(stores)
    from_catalog = responses_table(catalog)
    from_folder = responses_table(stores)
    assert from_catalog.equals(from_folder)
    assert from_catalog[schema.SESSION_ID].unique().tolist() == list(catalog.sessions)
    assert len(from_catalog) == sum(cube.sizes[schema.CLUSTER] * 12 for cube in catalog.values())


def test_summary_and_info_count_light_artifacts(latency_converted, tiny_converted, capsys):
    """The count of flagged units, from the stored condition_counts: the planted artifact units; None at 10 ms."""
    from opto_cube import cli

    catalog = open_catalog(latency_converted.out)
    assert catalog.summary()["light_artifacts"].isna().all()  # the store layer runs no analysis
    summary = catalog.summary(artifacts=light_artifacts)
    pd.testing.assert_frame_equal(summary, analysis_pass(catalog).summary)
    for row in summary.itertuples():
        assert row.light_artifacts == int(latency_converted.truths[row.session].artifact.sum()) == 3
    table = responses_table(catalog)
    flagged = table[table[schema.LIGHT_ARTIFACT]].groupby(schema.SESSION_ID)[schema.CLUSTER].nunique()
    assert flagged.to_dict() == dict(zip(summary["session"], summary["light_artifacts"], strict=True))
    assert open_catalog(tiny_converted.stores[10.0].parent).summary(light_artifacts)["light_artifacts"].isna().all()
    store_path = sorted(latency_converted.out.glob("*.zarr"))[0]
    assert cli.main(["info", str(store_path)]) == 0
    assert "artifacts 3 light-artifact units" in capsys.readouterr().out
    assert cli.main(["info", str(tiny_converted.stores[10.0])]) == 0
    assert "artifacts unknown" in capsys.readouterr().out
