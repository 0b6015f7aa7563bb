"""Issue 11, integration: the cost of the timing columns and of the stored timing arrays.

    python benchmarks/bench_latency_columns.py --size realistic

On one session converted at 1 ms, in one process, methods interleaved, medians of the repeats:

- ``table``: :func:`opto_cube.jobs.pipeline.responses_table` of the store, with the timing columns
  (q_value, latency, first spikes, light artifacts from ``condition_counts`` and ``first_spike_bin``);
- ``table_seed``: the same without them (the timing arrays not read, the timing kernel skipped;
  q_value still computed): the baseline of the issue's budget, "at most 30 % more";
- ``binning``: the conversion's one binning pass (:func:`opto_cube.binning.iter_count_chunks`
  consumed, nothing written) with the timing accumulation, and ``binning_seed`` without it;
- ``convert``: the whole :func:`opto_cube.jobs.convert.convert_session` (with the timing arrays), to put
  the accumulation's cost in proportion to a conversion.

Ratios are within the run: ``table / table_seed`` and ``(binning - binning_seed) / convert``.
"""

from __future__ import annotations

import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import common
import numpy as np


def _binning_pass(folder: Path, bin_ms: float, timing: bool) -> float:
    from opto_cube import binning, io, schema
    from opto_cube.analysis.conditions import trial_conditions
    from opto_cube.jobs.convert import cube_template

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the synthetic sessions' planted quirks
        session = io.read_session(folder)
    bins = binning.plan_time_bins(session.stim[schema.DURATION], bin_ms=bin_ms)
    order = np.argsort(session.stim[schema.ONSET], kind="stable")
    onsets, durations = session.stim[schema.ONSET][order], session.stim[schema.DURATION][order]
    acc = None
    if timing:
        template = cube_template(session, bins, np.dtype(np.uint8))
        conditions = trial_conditions(template, schema.CONDITION_KEYS)
        acc = binning.Timing(conditions.code, conditions.n_conditions, bins, session.n_clusters)
    start = time.perf_counter()
    for _ in binning.iter_count_chunks(
        session.spikes.blocks(), onsets, durations, bins, session.n_clusters, np.uint8, buffers=2, timing=acc
    ):
        pass
    return time.perf_counter() - start


def _table(store: Path, timing: bool) -> float:
    from opto_cube.jobs import pipeline

    start = time.perf_counter()
    if timing:
        pipeline.responses_table(store)
    else:
        with warnings.catch_warnings():  # the published columns alone: no timing array read, no timing computed
            warnings.simplefilter("ignore")
            pipeline.responses_table(store, timing=False)
    return time.perf_counter() - start


def _convert(folder: Path, bin_ms: float) -> float:
    from opto_cube.jobs import convert

    with tempfile.TemporaryDirectory(dir=common.WORK) as out, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        start = time.perf_counter()
        convert.convert_session(folder, out, bin_ms=bin_ms)
        return time.perf_counter() - start


def _measure(size: str, width: float, repeats: int) -> list[dict[str, Any]]:
    root = common.dataset(size)
    folder = common.sessions(root)[0]
    store = common.store_paths(common.stores(root, width))[0]
    methods = {
        "table": lambda: _table(store, True),
        "table_seed": lambda: _table(store, False),
        "binning": lambda: _binning_pass(folder, width, True),
        "binning_seed": lambda: _binning_pass(folder, width, False),
        "convert": lambda: _convert(folder, width),
    }
    _table(store, True), _binning_pass(folder, width, True)  # warm-up: numba compiles, caches filled
    times: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(repeats):
        for name, fn in methods.items():
            times[name].append(fn())
    med = {name: common.median(values) for name, values in times.items()}
    rows = [{"size": size, "bin_ms": width, "method": n, "time_s": med[n], "runs_s": v} for n, v in times.items()]
    rows.append(
        {"size": size, "bin_ms": width, "method": "table / table_seed", "time_s": None,
         "ratio": med["table"] / med["table_seed"]}
    )  # fmt: skip
    rows.append(
        {"size": size, "bin_ms": width, "method": "binning / binning_seed", "time_s": None,
         "ratio": med["binning"] / med["binning_seed"]}
    )  # fmt: skip
    rows.append(
        {"size": size, "bin_ms": width, "method": "(binning - binning_seed) / convert", "time_s": None,
         "ratio": (med["binning"] - med["binning_seed"]) / med["convert"]}
    )  # fmt: skip
    return rows


def run(size: str, bin_ms: tuple[float, ...] = (1.0,), repeats: int = 3, *, record: bool = True) -> list[dict]:
    rows = [row for width in bin_ms for row in _measure(size, width, repeats)]
    common.table(rows, ("size", "bin_ms", "method", "time_s", "ratio"), title="timing columns and stored timing")
    if record:
        common.record("latency_columns", rows, {"size": size, "bin_ms": list(bin_ms), "repeats": repeats})
    return rows


if __name__ == "__main__":
    common.main(__doc__, run, bin_ms=(1.0,))
