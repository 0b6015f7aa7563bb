"""One analysis pass per job: each session's pass runs once, each store is opened once; the table does not
depend on the scheduler or the chunking."""

from __future__ import annotations

import warnings
from collections import Counter

import dask
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from opto_cube import cli, schema
from opto_cube.jobs import demo, maps_job, pipeline, report_job, tasks
from opto_cube.store import catalog as catalog_module
from opto_cube.store import open as store_open
from opto_cube.store import read as store_read
from opto_cube.store.catalog import open_catalog


@pytest.fixture
def counted(monkeypatch):
    """Counts of session passes (per session id), checked reads and open_cube calls (per store)."""
    counts: dict[str, Counter] = {"passes": Counter(), "reads": Counter(), "open_cube": Counter()}
    real_results, real_read, real_open = tasks.session_results, store_read.read_checked, store_open.open_cube

    def results(*args, **kwargs):
        out = real_results(*args, **kwargs)
        counts["passes"][out.session_id] += 1
        return out

    def read(path, *args, **kwargs):
        counts["reads"][str(path)] += 1
        return real_read(path, *args, **kwargs)

    def open_cube(path, *args, **kwargs):
        counts["open_cube"][str(path)] += 1
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(tasks, "session_results", results)
    monkeypatch.setattr(store_read, "read_checked", read)
    monkeypatch.setattr(store_open, "open_cube", open_cube)
    monkeypatch.setattr(catalog_module, "open_cube", open_cube)
    return counts


def _once_each(counter: Counter, n: int) -> None:
    assert len(counter) == n, counter
    assert set(counter.values()) == {1}, counter


@pytest.mark.parametrize("job", ["responses_table", "maps", "report"])
def test_each_job_runs_each_session_once_and_opens_each_store_once(tiny_dataset, tmp_path, counted, job):
    catalog = open_catalog(tiny_dataset.out)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if job == "responses_table":
            pipeline.responses_table(catalog)
        elif job == "maps":
            maps_job.run_maps(catalog, tmp_path / "maps")
        else:
            report_job.run_report(catalog, tmp_path / "report.html", n_boot=20)
    n = len(catalog)
    _once_each(counted["passes"], n)
    _once_each(counted["reads"], n)
    assert not counted["open_cube"], counted["open_cube"]  # nothing opened on the client


def test_the_demo_sequence_makes_one_pass(tiny_dataset, tmp_path, counted):
    catalog = open_catalog(tiny_dataset.out)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        done = demo.demo_pass(catalog)
        table = pipeline.responses_table(done)
        maps_job.run_maps(catalog, tmp_path / "maps", analysis=done)
        report_job.run_report(catalog, tmp_path / "report.html", analysis=done, n_boot=20)
    n = len(catalog)
    _once_each(counted["passes"], n)
    _once_each(counted["reads"], n)
    assert not counted["open_cube"], counted["open_cube"]
    assert table[schema.SESSION_ID].nunique() == n
    pd.testing.assert_frame_equal(table, pipeline.responses_table(catalog), check_exact=True)


@pytest.mark.slow
def test_cli_demo_runs_each_sessions_pass_once(tmp_path, counted):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert cli.main(["demo", "--out", str(tmp_path / "demo"), "--sessions", "3", "--size", "tiny"]) == 0
    _once_each(counted["passes"], 3)
    assert sum(counted["reads"].values()) == 3 + sum(counted["open_cube"].values()), counted


def test_an_analysis_pass_refuses_to_serve_other_responses(tiny_dataset):
    done = tasks.analysis_pass(tiny_dataset.out, table=True)
    with pytest.raises(ValueError, match="analysis pass computed"):
        pipeline.responses_table(done, mode=schema.MODE_PUBLISHED)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    scheduler=st.sampled_from(["sync", "threads"]),
    cluster_chunk=st.integers(1, 8),
    trial_chunk=st.integers(1, 64),
)
def test_scheduler_and_chunking_do_not_change_the_table(tiny_dataset, scheduler, cluster_chunk, trial_chunk):
    expected = pipeline.responses_table(tiny_dataset.out)
    cubes = {
        sid: store_open.open_cube(path).chunk({schema.CLUSTER: cluster_chunk, schema.TRIAL: trial_chunk})
        for sid, path in open_catalog(tiny_dataset.out).entries()
    }
    with dask.config.set(scheduler=scheduler):
        from_stores = pipeline.responses_table(tiny_dataset.out)
        from_cubes = pipeline.responses_table(cubes)
    pd.testing.assert_frame_equal(from_stores, expected, check_exact=True)
    pd.testing.assert_frame_equal(from_cubes, expected, check_exact=True)


# --------------------------------------------------------------------------
# The task's table path (numpy columns, one DataFrame) against the labelled one
# --------------------------------------------------------------------------
OPTIONS = [
    {},
    {"mode": schema.MODE_PUBLISHED},
    {"by": "emitter"},
    {"by": ("emitter", "duration"), "significant_by": "q"},
    {"timing": False},
    {"mode": schema.MODE_PUBLISHED, "timing": False, "significant_by": "q"},
]


@pytest.mark.parametrize("bin_ms", [1.0, 10.0])
@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "default")
def test_the_tasks_table_path_equals_the_labelled_one(quirky_converted, monkeypatch, bin_ms, options):
    """Same columns, dtypes, order and values (and clusters, summary row, note) as ``to_table(responses(...))``
    on the Dataset of what the task read, on every generator quirk."""
    from opto_cube.analysis import response

    path = quirky_converted.stores[bin_ms]
    sid = "quirky"
    timing = options.get("timing", True)
    with warnings.catch_warnings(), monkeypatch.context() as m:
        warnings.simplefilter("ignore")

        def no_dataset(self):
            raise AssertionError("the task's table path built a Dataset")

        m.setattr(store_read.CheckedRead, "dataset", no_dataset)
        fast = tasks.session_results(path, sid, **options)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cube = tasks._open(path, None, cube=False, timing=timing)
        labelled = tasks.session_results(tasks._InMemory(cube), sid, **options)
        lazy = response.to_table(response.responses(cube, warn=False, **options).load(), sid)
    assert fast.table is not None
    assert labelled.table is not None
    assert list(fast.table.columns) == list(response.TABLE_COLUMNS)
    assert fast.table.dtypes.equals(lazy.dtypes), (fast.table.dtypes, lazy.dtypes)
    pd.testing.assert_frame_equal(fast.table, lazy, check_exact=True)
    pd.testing.assert_frame_equal(fast.table, labelled.table, check_exact=True)
    pd.testing.assert_frame_equal(fast.clusters, labelled.clusters, check_exact=True)
    assert fast.summary == labelled.summary
    assert (fast.timing_note, fast.bin_width_s) == (labelled.timing_note, labelled.bin_width_s)
    assert len(fast.table) > 0
    if bin_ms == 1.0 and timing:
        assert fast.summary is not None
        assert fast.summary[schema.SUMMARY_ARTIFACTS] is not None
        assert fast.table[schema.LATENCY].notna().any()
