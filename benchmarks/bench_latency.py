"""Issue 11, part 1: the cost of latency, first-spike and light-artifact columns against ``responses_table``.

    python benchmarks/bench_latency.py --size realistic

On one session converted at 1 ms, in one process, methods interleaved:

- ``responses_table``: the current table of the opened store (lazy, dask), the baseline;
- ``functions``: :func:`opto_cube.analysis.latency.onset_latency`,
  :func:`~opto_cube.analysis.latency.light_artifact` and
  :func:`~opto_cube.analysis.latency.first_spike_stats` on inputs already computed (what the per-session
  pass hands them): the cost the new columns add once the pass exists;
- ``first_spike_bins``: :func:`~opto_cube.analysis.latency.first_spike_bins` over every block of the cube,
  in memory (the per-block work the pass adds);
- ``pass``: reading the cube chunk by chunk with zarr and summing it per condition, plus the
  first-spike bins: the whole per-session pass these columns need, if nothing else read the cube.

Ratios are to ``responses_table`` of the same run (medians of the repeats).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import common
import numpy as np


def _inputs(store: Path) -> dict[str, Any]:
    """Coordinates of the store and each trial's condition (emitter, power level, duration)."""
    import xarray as xr

    from opto_cube import schema

    with xr.open_zarr(store) as ds:
        coords = {
            name: ds[name].values
            for name in (schema.EMITTER, schema.POWER, schema.DURATION, schema.EMITTER_DEPTH, schema.DEPTH_FROM_SURFACE)
        }
        time_s, width = ds[schema.TIME].values, float(ds.attrs[schema.ATTR_BIN_WIDTH])
    level, _ = schema.power_levels(coords[schema.POWER])
    keys = np.stack([coords[schema.EMITTER].astype(np.int64), level, np.rint(coords[schema.DURATION] * 1e6)], axis=1)
    unique, code = np.unique(keys, axis=0, return_inverse=True)
    code = code.reshape(-1)
    first = np.array([np.flatnonzero(code == c)[0] for c in range(unique.shape[0])])
    start = int(np.argmax(time_s > 0))
    return {
        "code": code,
        "n_conditions": unique.shape[0],
        "n_trials": np.bincount(code),
        "emitter": unique[:, 0],
        "durations": coords[schema.DURATION][first],
        "distance": coords[schema.DEPTH_FROM_SURFACE][:, None] - coords[schema.EMITTER_DEPTH][first][None, :],
        "time_s": time_s,
        "width": width,
        "start": start,
        "stop": start + np.rint(coords[schema.DURATION] / width).astype(np.int64),
    }


def one_pass(store: Path, inputs: dict[str, Any], keep_blocks: bool = False) -> dict[str, Any]:
    """Read the cube chunk by chunk: the per-condition time course and the per-trial first-spike bins."""
    import zarr

    from opto_cube import schema
    from opto_cube.analysis import latency

    array = zarr.open_array(Path(store) / schema.SPIKE_COUNTS, mode="r")
    k, m, t = array.shape
    ck, cm = array.chunks[0], array.chunks[1]
    course = np.zeros((k, inputs["n_conditions"], t), dtype=np.int64)
    first = np.empty((k, m), dtype=np.int32)
    blocks = []
    for i in range(0, k, ck):
        for j in range(0, m, cm):
            block = array[i : i + ck, j : j + cm]
            code = inputs["code"][j : j + cm]
            for c in np.unique(code):
                course[i : i + ck, c] += block[:, code == c].sum(axis=1, dtype=np.int64)
            first[i : i + ck, j : j + cm] = latency.first_spike_bins(block, inputs["start"], inputs["stop"][j : j + cm])
            if keep_blocks:
                blocks.append((i, j, block))
    return {"course": course, "first": first, "blocks": blocks}


def functions(inputs: dict[str, Any], course: np.ndarray, first: np.ndarray) -> dict[str, Any]:
    from opto_cube.analysis import latency

    w = inputs["width"]
    lat = latency.onset_latency(course, inputs["n_trials"], inputs["time_s"], inputs["durations"], w)
    art = latency.light_artifact(
        course, inputs["n_trials"], inputs["time_s"], inputs["durations"], inputs["emitter"], inputs["distance"], w
    )
    stats = latency.first_spike_stats(first, inputs["code"], inputs["n_conditions"], w)
    return {"latency": lat, "artifact": art, "stats": stats}


def first_spike_only(inputs: dict[str, Any], blocks: list, shape: tuple[int, int]) -> np.ndarray:
    from opto_cube.analysis import latency

    first = np.empty(shape, dtype=np.int32)
    for i, j, block in blocks:
        first[i : i + block.shape[0], j : j + block.shape[1]] = latency.first_spike_bins(
            block, inputs["start"], inputs["stop"][j : j + block.shape[1]]
        )
    return first


def _timed(fn) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def _measure(size: str, width: float, repeats: int) -> list[dict]:
    """Every method on the session of ``size`` at ``width`` ms, interleaved ``repeats`` times."""
    from opto_cube.jobs.pipeline import responses_table
    from opto_cube.store.open import open_cube

    store = common.store_paths(common.stores(common.dataset(size), width))[0]
    inputs = _inputs(store)
    prepared = one_pass(store, inputs, keep_blocks=True)
    shape = prepared["first"].shape
    methods = {
        "responses_table": lambda: responses_table([open_cube(store)]),
        "functions": lambda: functions(inputs, prepared["course"], prepared["first"]),
        "first_spike_bins": lambda: first_spike_only(inputs, prepared["blocks"], shape),
        "pass": lambda: one_pass(store, inputs),
    }
    times: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(repeats):
        for name, fn in methods.items():
            times[name].append(_timed(fn)[0])
    base = common.median(times["responses_table"])
    rows = [
        {
            "size": size,
            "bin_ms": width,
            "method": name,
            "time_s": common.median(values),
            "ratio_to_responses_table": common.median(values) / base,
            "runs_s": values,
        }
        for name, values in times.items()
    ]
    # the functions and the first-spike bins: what the columns add to a per-session pass that exists
    added = common.median(times["functions"]) + common.median(times["first_spike_bins"])
    rows.append(
        {
            "size": size,
            "bin_ms": width,
            "method": "added (functions + first_spike_bins)",
            "time_s": added,
            "ratio_to_responses_table": added / base,
        }
    )
    return rows


def run(size: str, bin_ms: tuple[float, ...] = (1.0,), repeats: int = 3, *, record: bool = True) -> list[dict]:
    rows = [row for width in bin_ms for row in _measure(size, width, repeats)]
    common.table(
        rows,
        ("size", "bin_ms", "method", "time_s", "ratio_to_responses_table"),
        title="latency, first spikes and artifacts vs responses_table",
    )
    if record:
        common.record("latency", rows, {"size": size, "bin_ms": list(bin_ms), "repeats": repeats})
    return rows


if __name__ == "__main__":
    common.main(__doc__, run, bin_ms=(1.0,))
