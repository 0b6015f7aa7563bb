"""Tests of opto_cube.jobs.pipeline: one task per session, the responses and maps jobs, their files, and the
``opto-cube responses`` / ``maps`` / ``demo`` commands run in process."""

from __future__ import annotations

import warnings
from pathlib import Path

import dask
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from helpers import assert_png, parse_html, raise_if_dask_computes, with_window_counts
from hypothesis import given, settings
from hypothesis import strategies as st

from opto_cube import cli, schema, synth
from opto_cube.analysis import maps, psth, response
from opto_cube.errors import OptoCubeError, OptoCubeWarning
from opto_cube.jobs import convert, maps_job, pipeline, tasks
from opto_cube.store.catalog import cubes_of, open_catalog, sessions_of

FIGURES = schema.MAPS_FIGURES


# --------------------------------------------------------------------------
# One task per session
# --------------------------------------------------------------------------
def _lazy_table(stores: Path, **kw) -> pd.DataFrame:
    """The table the other way: the lazy responses of each opened cube, computed one by one."""
    return pd.concat(
        [response.to_table(response.responses(cube, **kw), sid) for sid, cube in cubes_of(stores)], ignore_index=True
    )


@pytest.mark.parametrize("mode", schema.RESPONSE_MODES)
def test_session_tasks_equal_the_lazy_responses(tiny_dataset, mode):
    got = pipeline.responses_table(tiny_dataset.out, mode=mode)
    pd.testing.assert_frame_equal(got, _lazy_table(tiny_dataset.out, mode=mode), check_exact=True)
    assert list(got.columns) == list(response.TABLE_COLUMNS)
    assert got[schema.SESSION_ID].nunique() == len(tiny_dataset.folders)


def test_stores_with_window_counts_give_the_same_table(tiny_dataset, tmp_path):
    """The fast path (window_counts and a few coordinates read at once, no cube) equals the cube's."""
    import shutil

    shutil.copytree(tiny_dataset.out, tmp_path / "stores")
    for path in (tmp_path / "stores").glob("*.zarr"):
        with_window_counts(path)
    (_sid, path), *_ = sessions_of(tmp_path / "stores")
    fast = tasks._open(path, None, cube=False)
    assert schema.SPIKE_COUNTS not in fast
    assert schema.WINDOW_COUNTS in fast
    for mode in schema.RESPONSE_MODES:
        pd.testing.assert_frame_equal(
            pipeline.responses_table(tmp_path / "stores", mode=mode),
            pipeline.responses_table(tiny_dataset.out, mode=mode),
            check_exact=True,
        )


def test_a_cube_in_memory_or_dask_backed_gives_the_same_rows(tiny_dataset):
    (sid, cube), *_ = cubes_of(tiny_dataset.out)
    expected = pipeline.responses_table(tiny_dataset.out)
    expected = expected[expected[schema.SESSION_ID] == sid].reset_index(drop=True)
    with raise_if_dask_computes(max_computes=1):  # the one compute of the task graph, nothing before it
        lazy = pipeline.responses_table([cube])
    pd.testing.assert_frame_equal(lazy, expected, check_exact=True)
    pd.testing.assert_frame_equal(pipeline.responses_table({sid: cube.load()}), expected, check_exact=True)


def test_task_count_is_one_per_session(tmp_path):
    """The graph of many sessions: exactly one task each, whatever the chunks (count, not time)."""
    synth.make_dataset(tmp_path / "data", n_sessions=4, size="tiny", seed=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OptoCubeWarning)
        convert.convert(tmp_path / "data", tmp_path / "stores", bin_ms=10)
    pairs = sessions_of(tmp_path / "stores")
    for n in (1, 2, 4):
        delayed = tasks.session_tasks(dict(pairs[:n]), time_course=True)
        graph = dask.base.collections_to_expr(delayed).__dask_graph__()
        assert len(graph) == n, (n, len(graph))


@pytest.mark.slow
@settings(max_examples=6, deadline=None)
@given(scheduler=st.sampled_from(["sync", "threads", "processes"]), by=st.sampled_from([None, ("emitter",)]))
def test_scheduler_does_not_change_the_table(tiny_dataset, scheduler, by):
    expected = pipeline.responses_table(tiny_dataset.out, by=by)
    with dask.config.set(scheduler=scheduler):
        got = pipeline.responses_table(open_catalog(tiny_dataset.out), by=by)
    pd.testing.assert_frame_equal(got, expected, check_exact=True)


@pytest.mark.slow
def test_a_two_worker_cluster_does_not_change_the_table_or_the_maps(tiny_dataset, tmp_path):
    distributed = pytest.importorskip("distributed")
    expected = pipeline.responses_table(tiny_dataset.out)
    here = maps_job.run_maps(tiny_dataset.out, tmp_path / "here", figures=False)
    with distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=":0") as lc:
        with distributed.Client(lc):
            got = pipeline.responses_table(tiny_dataset.out)
            there = maps_job.run_maps(tiny_dataset.out, tmp_path / "there", figures=False)
    pd.testing.assert_frame_equal(got, expected, check_exact=True)
    xr.testing.assert_identical(xr.load_dataset(there["maps.nc"]), xr.load_dataset(here["maps.nc"]))


def test_session_results_time_course_is_the_psth_pass(tiny_dataset):
    (sid, path), *_ = sessions_of(tiny_dataset.out)
    result = tasks.session_results(path, sid, time_course=True)
    cube = dict(cubes_of(tiny_dataset.out))[sid]
    xr.testing.assert_identical(result.time_course, psth.condition_time_course(cube.load()))
    assert result.session_id == sid
    assert set(result.table[schema.SESSION_ID]) == {sid}
    assert result.clusters[schema.TROUGH_TO_PEAK].size == cube.sizes[schema.CLUSTER]


# --------------------------------------------------------------------------
# Files: maps.nc (netCDF4), tables, atomic
# --------------------------------------------------------------------------
def test_run_maps_writes_the_maps_of_the_table(tiny_dataset, tmp_path):
    table = pipeline.responses_table(tiny_dataset.out)
    written = maps_job.run_maps(tiny_dataset.out, tmp_path / "out", table=table, figures=False)
    back = xr.open_dataset(written["maps.nc"], engine="h5netcdf").load()
    expected = maps.effect_map(table)
    for name in expected.data_vars:
        np.testing.assert_array_equal(back[name].values, expected[name].values)
        assert back[name].dtype == expected[name].dtype  # netCDF4: int64 stays int64
    np.testing.assert_array_equal(back.attrs[schema.MAP_DISTANCE_EDGES], expected.attrs[schema.MAP_DISTANCE_EDGES])
    assert back["depth_pearson_r"].dims == (schema.WAVEFORM_TYPE, schema.MAP_EFFECT)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["maps.nc"]  # no temporary file left
    with pytest.raises(OptoCubeError, match="no sessions to map"):
        maps_job.run_maps(tmp_path / "out", tmp_path / "out2")


@pytest.mark.slow
def test_run_maps_computes_the_table_it_is_not_given(tiny_dataset, tmp_path):
    given_table = maps_job.run_maps(tiny_dataset.out, tmp_path / "a", table=pipeline.responses_table(tiny_dataset.out))
    computed = maps_job.run_maps(tiny_dataset.out, tmp_path / "b")
    xr.testing.assert_identical(xr.load_dataset(computed["maps.nc"]), xr.load_dataset(given_table["maps.nc"]))
    for name in FIGURES:
        assert_png(computed[name])


def test_write_table_round_trips_and_refuses_other_formats(tiny_dataset, tmp_path):
    table = pipeline.responses_table(tiny_dataset.out)
    for suffix in (".csv", ".parquet"):
        path = pipeline.write_table(table, tmp_path / f"t{suffix}")
        back = pd.read_csv(path, keep_default_na=False, na_values=[""]) if suffix == ".csv" else pd.read_parquet(path)
        assert len(back) == len(table)
        assert list(back.columns) == list(table.columns)
    with pytest.raises(OptoCubeError, match="unknown table format"):
        pipeline.write_table(table, tmp_path / "t.xlsx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.csv", "t.parquet"]


def test_modulation_index_refuses_widths_of_other_sessions(tiny_dataset):
    table = pipeline.responses_table(tiny_dataset.out).drop(columns=[])
    renamed = {sid: cube for sid, cube in cubes_of(tiny_dataset.out)}
    other = {f"x{sid}": cube for sid, cube in renamed.items()}
    with pytest.raises(ValueError, match="no spike widths for session"):
        maps.modulation_index(table, other)
    assert maps.modulation_index(table, renamed)[schema.TROUGH_TO_PEAK].notna().any()


# --------------------------------------------------------------------------
# the command line, in process
# --------------------------------------------------------------------------
@pytest.mark.slow
def test_cli_maps(tiny_dataset, tmp_path, capsys):
    out = tmp_path / "maps"
    assert cli.main(["maps", str(tiny_dataset.out), "--out", str(out), "--distance-bin-um", "200"]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(["maps.nc", *FIGURES])  # nothing temporary left
    for name in FIGURES:
        assert_png(out / name)
    ds = xr.open_dataset(out / "maps.nc")
    assert np.allclose(np.diff(ds.attrs[schema.MAP_DISTANCE_EDGES]), 200.0)
    expected = maps.effect_map(pipeline.responses_table(tiny_dataset.out), distance_bin_um=200.0)
    np.testing.assert_array_equal(ds[schema.MAP_N_UNITS].values, expected[schema.MAP_N_UNITS].values)
    assert "wrote" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["maps", "{tmp}/nowhere", "--out", "{tmp}/o"], "nowhere: no such folder of stores"),
        (["maps", "{tmp}", "--out", "{tmp}/o"], "holds no .zarr stores"),
        (["maps", "{stores}", "--out", "{tmp}/o", "--responses", "{tmp}/missing.csv"], "cannot read the responses"),
        (["maps", "{stores}", "--out", "{tmp}/o", "--duration-s", "0.02"], r"no duration_s \[0.02\]"),
    ],
)
def test_cli_maps_errors_are_one_line(tiny_dataset, tmp_path, capsys, argv, match):
    argv = [a.format(tmp=tmp_path, stores=tiny_dataset.out) for a in argv]
    assert cli.main(argv) == cli.EXIT_FAILED
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "Traceback" not in err
    assert pytest.importorskip("re").search(match, err), err
    assert not (tmp_path / "o").exists()


def test_cli_maps_refuses_a_bad_bin_width(tiny_dataset, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["maps", str(tiny_dataset.out), "--out", str(tmp_path), "--distance-bin-um", "-5"])
    assert exit_info.value.code == cli.EXIT_USAGE
    assert "expected a positive width in um" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_demo(tmp_path, capsys):
    out = tmp_path / "demo"
    assert cli.main(["demo", "--out", str(out), "--sessions", "2", "--size", "tiny"]) == 0
    assert (out / "responses.csv").stat().st_size > 0
    for name in FIGURES:
        assert_png(out / "maps" / name)
    assert (out / "maps" / "maps.nc").stat().st_size > 0
    printed = capsys.readouterr().out
    assert str(out / "maps") in printed
    assert str(out / "responses.csv") in printed
    page = out / schema.REPORT_DEFAULT_NAME  # the demo's report, from the table it computed
    assert str(page) in printed
    headings = [h.text() for h in parse_html(page.read_text(encoding="utf-8"))[0].find_all("h2")]
    assert headings == ["Sessions", *schema.REPORT_SECTIONS, "Parameters and versions"]


@pytest.mark.slow
def test_maps_leave_out_light_artifacts_and_draw_latency(latency_converted, tmp_path):
    """opto-cube maps on 1 ms stores: the latency figure is drawn; --keep-artifacts counts the flagged units."""
    default = tmp_path / "default"
    assert cli.main(["maps", str(latency_converted.out), "--out", str(default)]) == 0
    assert_png(default / schema.MAPS_FIGURES[-1])
    kept = tmp_path / "kept"
    assert cli.main(["maps", str(latency_converted.out), "--out", str(kept), "--keep-artifacts"]) == 0
    n_default = int(xr.load_dataset(default / schema.MAPS_NETCDF)[schema.MAP_N_UNITS].sum())
    n_kept = int(xr.load_dataset(kept / schema.MAPS_NETCDF)[schema.MAP_N_UNITS].sum())
    table = pipeline.responses_table(latency_converted.out)
    flagged = table[table[schema.LIGHT_ARTIFACT] & table[schema.QC_PASS] & (table[schema.WAVEFORM_TYPE] != "")]
    assert n_kept - n_default == len(flagged) > 0


def test_responses_without_timing_read_window_counts_only(latency_converted, no_warnings):
    """``timing=False``: the published columns equal the full table's, the timing columns are NaN (no warning),
    and a task reads no timing array (only ``window_counts`` and the small coordinates)."""
    full = pipeline.responses_table(latency_converted.out)
    seed = pipeline.responses_table(latency_converted.out, timing=False)
    seed_columns = [*schema.RESPONSE_COLUMNS, schema.EMITTER_DEPTH, schema.Q_VALUE]
    pd.testing.assert_frame_equal(seed[seed_columns], full[seed_columns])
    for name in (schema.LATENCY, schema.FIRST_SPIKE, schema.JITTER, schema.RELIABILITY):
        assert seed[name].isna().all(), name
        assert full[name].notna().any(), name
    assert not seed[schema.LIGHT_ARTIFACT].any()
    assert full[schema.LIGHT_ARTIFACT].any()
    store_path = sorted(latency_converted.out.glob("*.zarr"))[0]
    small = tasks._open(store_path, None, cube=False, timing=False)
    assert set(small.data_vars) == {schema.WINDOW_COUNTS}
    assert schema.CONDITION_COUNTS in tasks._open(store_path, None, cube=False).data_vars


def test_cli_responses_no_timing(latency_converted, tmp_path):
    out = tmp_path / "seed.csv"
    assert cli.main(["responses", str(latency_converted.out), "--out", str(out), "--no-timing"]) == 0
    table = pd.read_csv(out)
    assert table[schema.LATENCY].isna().all()
    assert table[schema.PCT_CHANGE].notna().any()
