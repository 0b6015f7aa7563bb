"""Smoke tests of benchmarks/: every benchmark function at a tiny size, correctness of every method.

No timing assertions (the machines are shared and noisy): the benchmarks'
numbers live in benchmarks/README.md. Data and stores go to a temporary
folder; nothing is appended to benchmarks/results/.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import common  # noqa: E402

PYNAPPLE_MISSING = common.pynapple_available()


@pytest.fixture(scope="module", autouse=True)
def work(tmp_path_factory: pytest.TempPathFactory):
    """Benchmark data and stores in a temporary folder, shared by the tests of this module."""
    old = common.WORK
    common.WORK = tmp_path_factory.mktemp("bench_work")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield common.WORK
    common.WORK = old


@pytest.fixture(scope="module")
def tiny(work: Path) -> dict:
    root = common.dataset("tiny")
    return {
        "root": root,
        "folder": common.sessions(root)[0],
        "stores": {w: common.store_paths(common.stores(root, w))[0] for w in (1.0, 10.0)},
    }


@pytest.mark.parametrize(
    "method", ["opto_cube streamed", "opto_cube in memory", "numpy vectorised", "np.histogram loop"]
)
@pytest.mark.parametrize("bin_ms", [1.0, 10.0])
def test_peer_methods_give_the_cube(tiny: dict, method: str, bin_ms: float) -> None:
    import bench_peers

    out = bench_peers.child(
        method, str(tiny["folder"]), str(tiny["stores"][bin_ms]), bin_ms, check=True, hist_clusters=3
    )
    assert out["identical"], out
    assert out["elements_differing"] == 0


@pytest.mark.skipif(PYNAPPLE_MISSING is not None, reason=PYNAPPLE_MISSING or "")
def test_pynapple_counts_are_compared_and_differences_explained(tiny: dict) -> None:
    import bench_peers

    out = bench_peers.child("pynapple", str(tiny["folder"]), str(tiny["stores"][1.0]), 1.0, check=True, hist_clusters=3)
    assert out["subsets"] >= 2  # windows of neighbouring trials overlap: interleaved subsets
    if not out["identical"]:  # what it gets wrong: spikes on bin edges moved, spikes at the window stop added
        assert out["spikes_lost"] == 0
        assert out["spikes_added"] == out["spikes_added_at_window_stop"] <= out["spikes_exactly_at_window_stop"]
        assert out["spikes_moved"] - out["spikes_added"] <= out["edge_incidences"]


def test_peer_helpers_agree_with_binning_on_unsorted_input(tiny: dict) -> None:
    from opto_cube import binning

    raw = common.load_raw(tiny["folder"])
    trials = common.trials_in_onset_order(raw)
    bins = common.time_bins(raw, 5.0)
    rng = np.random.default_rng(0)
    shuffle = rng.permutation(raw["times"].size)
    args = (
        raw["times"][shuffle],
        raw["clusters"][shuffle],
        trials["onsets"],
        trials["durations"],
        bins,
        raw["n_clusters"],
    )
    reference = binning.spike_counts(*args)
    assert common.compare_counts(reference, common.counts_numpy(*args))["identical"]
    assert common.compare_counts(reference, common.counts_histogram_loop(*args))["identical"]


def test_floor_writers_copy_the_cube(tiny: dict, tmp_path: Path) -> None:
    import bench_convert
    import xarray as xr

    source = tiny["stores"][1.0]
    for writer in bench_convert.FLOOR_WRITERS:
        for codec in bench_convert.FLOOR_CODECS:
            out = tmp_path / f"{writer}-{codec}.zarr".replace(" ", "_")
            result = bench_convert.floor_child(str(tiny["folder"]), str(source), str(out), writer, codec)
            assert sorted(result) == ["imports_s", "load_s", "untimed_s", "write_s"]
            assert all(np.isfinite(v) for v in result.values()), result
            copy, original = xr.open_zarr(out), xr.open_zarr(source)
            assert set(copy.coords) == set(original.coords)
            np.testing.assert_array_equal(copy["spike_counts"].values, original["spike_counts"].values)
            assert copy["spike_counts"].encoding["chunks"] == original["spike_counts"].encoding["chunks"]


@pytest.mark.slow
def test_convert_memory_benchmark_runs(work: Path) -> None:
    import bench_memory

    rows = bench_memory.run("tiny", bin_ms=(10.0,), repeats=1, record=False)
    assert [r["session"].split()[0] for r in rows] == ["1x", "10x"]
    assert all(50 < r["peak_rss_mb"] < 100_000 for r in rows), rows  # a python with numpy and zarr, in MB (not kB)
    assert rows[0]["rss_vs_1x"] == rows[0]["time_vs_1x"] == 1.0  # the baseline is the 1x session
    assert rows[1]["rss_vs_1x"] == pytest.approx(rows[1]["peak_rss_mb"] / rows[0]["peak_rss_mb"])


def test_layout_candidates_round_trip(tiny: dict, tmp_path: Path) -> None:
    import bench_layout

    for codec, chunks in [("blosc lz4 shuffle", (4, 16)), ("zstd 1", (64, 256))]:
        out = bench_layout.child(
            str(tiny["stores"][10.0]), str(tmp_path / f"{codec}.zarr"), codec, list(chunks), full_read=True
        )
        assert out["spikes"] == int(common.read_cube(tiny["stores"][10.0]).sum(dtype=np.int64))
        assert out["store_mb"] > 0
        assert out["slice_mb"] > 0


def test_write_variants_write_the_cube(tiny: dict, tmp_path: Path) -> None:
    import bench_write
    import zarr

    source = tiny["stores"][10.0]
    for variant in ("block per call (before)", "chunk per call, write_empty_chunks, 2 threads (now)"):
        out = tmp_path / f"{len(variant)}.zarr"
        result = bench_write.child(str(source), str(out), variant)
        assert result["variant"] == variant
        assert np.isfinite(result["write_s"])
        assert np.isfinite(result["extra_rss_mb"])
        np.testing.assert_array_equal(zarr.open_array(out, mode="r")[...], common.read_cube(source))


def test_slicing_counts_bytes(tiny: dict) -> None:
    import bench_slicing

    rows = bench_slicing.run("tiny", bin_ms=(10.0,), repeats=1, record=False, fresh=False)
    for row in rows:
        assert row["chunks_read"] == row["chunks_intersected"] >= 1
        assert row["select_bytes"] == row["intersected_bytes"]  # chunks only: nothing read twice
        cube = common.read_cube(tiny["stores"][10.0])
        clusters, trials = common.selections(tiny["stores"][10.0])[row["selection"]]
        assert row["spikes"] == int(cube[np.ix_(clusters, trials)].sum(dtype=np.int64))


def test_responses_methods_agree(work: Path) -> None:
    import bench_responses

    rows = bench_responses.run("tiny", bin_ms=(10.0,), repeats=1, record=False, n_sessions=(1, 2), fresh=False)
    checked = [r for r in rows if r.get("identical") is not None]
    assert {r["method"] for r in checked} == {"raw vectorised", "published loops"}
    assert all(r["identical"] for r in checked), checked


@pytest.mark.slow
def test_maps_benchmark_runs_on_a_local_cluster(work: Path) -> None:
    import bench_maps

    root = common.dataset("tiny", n_sessions=2)
    out = bench_maps.child(str(common.stores(root, 10.0)), n_workers=1, noop_tasks=50)
    assert out["tasks"] > 0
    assert out["units_mapped"] > 0
    assert np.isfinite(out["noop_ms_per_task"])


def test_tables_and_records(tmp_path: Path) -> None:
    rows = [{"a": 1.23456, "b": None, "c": True}]
    text = common.table(rows, ["a", "b", "c"], title="t")
    assert "| 1.23 | None | True |" in text
    path = common.record("smoke", rows, {"size": "tiny"}, results_dir=tmp_path)
    assert path.read_text().count("\n") == 1


def test_spatial_benchmark_runs(work: Path) -> None:
    import bench_spatial

    rows = bench_spatial.run("tiny", n_sessions=3, repeats=1, n_boot=20, loop_resamples=2, record=False, fresh=False)
    assert [r["method"] for r in rows] == ["spatial_extent", "looped scipy fits", "power_response"]
    assert rows[0]["rows"] > 0
    assert rows[0]["x spatial_extent"] == 1.0  # the baseline
    for row in rows[1:]:
        assert row["x spatial_extent"] == pytest.approx(row["seconds"] / rows[0]["seconds"])
    loop = rows[1]
    assert loop["fits"] > 0
    assert loop["fits"] % 2 == 0  # loop_resamples fits of each group
    assert loop["seconds"] == pytest.approx(loop["measured_s"] * 20 / 2)  # extrapolated from 2 resamples to 20
    assert 0 <= rows[2]["good_fits"] <= rows[2]["units"]


@pytest.mark.slow
def test_report_benchmark_builds_the_page(work: Path) -> None:
    import bench_report

    root = common.dataset("tiny", n_sessions=2)
    out = bench_report.child(str(common.stores(root, 10.0)), str(work / "report.html"))
    assert out["sessions"] == 2
    assert np.isfinite(out["total_s"])
    assert out["svg_figures"] == out["figures"] >= 6
    assert out["png_figures"] == 0
    assert out["open_figures"] == 0
    rows = bench_report.run("tiny", (10.0,), repeats=1, n_sessions=2, record=False)
    assert [r["method"] for r in rows] == ["run_report (1 pass)", "table, then report (2 passes)"]
    assert rows[1]["vs_one_pass"] == pytest.approx(rows[1]["total_s"] / rows[0]["total_s"])
    assert rows[0]["page_mb"] > 0
    assert 0 < out["page_mb"] == (work / "report.html").stat().st_size / 1e6


@pytest.mark.slow
def test_bench_nwb_runs(work: Path) -> None:
    """benchmarks/bench_nwb.py at the tiny size: three commands, ratios against convert, the file size."""
    pytest.importorskip("pynwb")
    import bench_nwb

    rows = bench_nwb.run("tiny", (10.0,), repeats=1, record=False)
    assert [r["command"] for r in rows] == ["convert ALF 10 ms", "to-nwb", "convert NWB 10 ms"]
    assert rows[1]["file_mb"] > 0
    assert rows[0]["time_vs_convert"] == 1.0


def test_latency_columns_benchmark_runs(tiny: dict) -> None:
    """Every method of bench_latency_columns at the tiny size, and the two ways of the table agree where they must."""
    import bench_latency_columns

    from opto_cube.jobs import pipeline

    rows = bench_latency_columns.run("tiny", bin_ms=(1.0,), repeats=1, record=False)
    times = {r["method"]: r["time_s"] for r in rows if r["time_s"] is not None}
    assert set(times) == {"table", "table_seed", "binning", "binning_seed", "convert"}
    assert all(np.isfinite(t) for t in times.values())
    ratios = {r["method"]: r["ratio"] for r in rows if r["time_s"] is None}
    assert ratios["table / table_seed"] == pytest.approx(times["table"] / times["table_seed"])
    assert ratios["binning / binning_seed"] == pytest.approx(times["binning"] / times["binning_seed"])
    store = tiny["stores"][1.0]
    with_timing = pipeline.responses_table(store)
    assert np.isfinite(with_timing["first_spike_ms"]).any()
