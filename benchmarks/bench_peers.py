"""Building the count tensor [cluster, trial, time] with opto_cube vs its peers.

    python benchmarks/bench_peers.py --size realistic

Methods, each in a fresh process, timed from the raw arrays in memory to the
counts (imports, loading and compile warm-up excluded; peak RSS of the
process): opto_cube streamed (the trial-chunk pass `opto-cube convert` runs,
one reused buffer), opto_cube whole cube in memory (`binning.spike_counts`),
plain numpy vectorised (searchsorted + bincount), a per-cluster-per-trial
`np.histogram` loop (a subset of clusters, extrapolated), and pynapple
`build_tensor` (trials split into interleaved non-overlapping subsets). Every
method's counts are compared with the converted store's cube, element by element.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any

import common
import numpy as np

METHODS = ("opto_cube streamed", "opto_cube in memory", "numpy vectorised", "np.histogram loop", "pynapple")
HIST_CLUSTERS = {"tiny": 4, "small": 10, "realistic": 20, "x10": 20}


def edge_spikes(times: np.ndarray, onsets: np.ndarray, durations: np.ndarray, bins: Any, tol: float = 1e-9) -> int:
    """Spike-in-window incidences within ``tol`` s of an interior bin edge (where binning conventions disagree)."""
    t = np.sort(times)
    edges = common.trial_edges(onsets, durations, bins)[:, 1:-1]
    near = 0
    for i in range(onsets.size):
        lo, hi = np.searchsorted(t, edges[i] - tol), np.searchsorted(t, edges[i] + tol, "right")
        near += int((hi - lo).sum())
    return near


def stop_spikes(times: np.ndarray, clusters: np.ndarray, onsets: np.ndarray, bins: Any, n_clusters: int) -> np.ndarray:
    """Spikes exactly at each trial's window stop ``onset + stop`` (outside ``[start, stop)``), per cluster x trial."""
    order = np.argsort(times, kind="stable")
    t, c = times[order], clusters[order]
    stop = onsets + bins.edges_s[-1]
    lo, hi = np.searchsorted(t, stop, "left"), np.searchsorted(t, stop, "right")
    out = np.zeros((n_clusters, onsets.size), np.int64)
    trial = np.repeat(np.arange(onsets.size), hi - lo)
    spike = (
        np.concatenate([np.arange(a, b) for a, b in zip(lo, hi, strict=True)]) if trial.size else np.zeros(0, np.int64)
    )
    np.add.at(out, (c[spike], trial), 1)
    return out


def child(method: str, folder: str, store: str, bin_ms: float, check: bool, hist_clusters: int) -> dict[str, Any]:
    """One method in this (fresh) process: time it, then (``check``) compare its counts with the store's cube."""
    import resource

    from opto_cube import binning
    from opto_cube.io.session import SpikeSource

    raw = common.load_raw(Path(folder))
    trials = common.trials_in_onset_order(raw)
    bins = common.time_bins(raw, bin_ms)
    args = (raw["times"], raw["clusters"], trials["onsets"], trials["durations"], bins, raw["n_clusters"])
    tiny = common.load_raw(common.sessions(common.dataset("tiny"))[0])  # compile / warm up on a tiny session
    tiny_trials = common.trials_in_onset_order(tiny)
    tiny_args = (
        tiny["times"],
        tiny["clusters"],
        tiny_trials["onsets"],
        tiny_trials["durations"],
        common.time_bins(tiny, bin_ms),
        tiny["n_clusters"],
    )
    info: dict[str, Any] = {}
    subset = list(range(min(hist_clusters, raw["n_clusters"])))

    def streamed(times, clusters, onsets, durations, bins, n_clusters, reference=None):
        source = SpikeSource.from_arrays(times, clusters)  # what convert streams (sorted already: no copy)
        dtype = binning.smallest_uint(binning.max_bin_count(source.blocks(), onsets, durations, bins, n_clusters))
        differing = 0
        for sl, counts, _ in binning.iter_count_chunks(source.blocks(), onsets, durations, bins, n_clusters, dtype):
            if reference is not None:
                differing += int(np.count_nonzero(counts != reference[:, sl]))
        return differing

    run = {
        "opto_cube streamed": streamed,
        "opto_cube in memory": binning.spike_counts,
        "numpy vectorised": common.counts_numpy,
        "np.histogram loop": lambda *a: common.counts_histogram_loop(
            *a, cluster_subset=[k for k in subset if k < a[-1]]
        ),
        "pynapple": lambda *a: common.counts_pynapple(*a),
    }[method]
    run(*tiny_args)
    started = time.perf_counter()
    result = run(*args)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if isinstance(result, tuple):
        result, info = result
    out: dict[str, Any] = {"method": method, "seconds": seconds, "peak_rss_mb": peak, **info}
    if method == "np.histogram loop":
        out["clusters_run"] = len(subset)
        out["seconds_measured"] = seconds
        out["seconds"] = seconds * raw["n_clusters"] / len(subset)  # extrapolated per cluster
    if check:
        reference = common.read_cube(Path(store))
        if method == "opto_cube streamed":  # compared chunk by chunk, as it streams
            differing = streamed(*args, reference=reference)
            out.update({"identical": differing == 0, "elements_differing": differing})
        else:
            out.update(common.compare_counts(reference, result, subset if method == "np.histogram loop" else None))
        if not out["identical"] and method != "opto_cube streamed":
            out["edge_incidences"] = edge_spikes(raw["times"], trials["onsets"], trials["durations"], bins)
            net = result.sum(axis=2, dtype=np.int64) - reference.sum(axis=2, dtype=np.int64)  # per cluster x trial
            at_stop = stop_spikes(raw["times"], raw["clusters"], trials["onsets"], bins, raw["n_clusters"])
            out["spikes_added"] = int(net[net > 0].sum())
            out["spikes_added_at_window_stop"] = int(net[(net > 0) & (at_stop > 0)].sum())
            out["spikes_lost"] = int(-net[net < 0].sum())
            out["spikes_exactly_at_window_stop"] = int(at_stop.sum())
    return out


def run(
    size: str = "realistic",
    bin_ms: tuple[float, ...] = (10.0, 1.0),
    repeats: int = 3,
    methods: tuple[str, ...] = METHODS,
    record: bool = True,
) -> list[dict[str, Any]]:
    skip = common.pynapple_available()
    if skip:
        warnings.warn(skip, stacklevel=1)
        methods = tuple(m for m in methods if m != "pynapple")
    root = common.dataset(size)
    folder = common.sessions(root)[0]
    rows = []
    for width in bin_ms:
        store = common.store_paths(common.stores(root, width))[0]
        runs = common.interleave(
            {
                m: (lambda m=m, r=[0], store=store, width=width: _once(m, folder, store, width, r, size))
                for m in methods
            },
            repeats,
        )
        summary = {m: common.summarise(runs[m], ("seconds", "peak_rss_mb", "seconds_measured")) for m in methods}
        base = summary.get("pynapple", {}).get("seconds")
        for m in methods:
            row = {"bin_ms": width, **summary[m]}
            row["x_faster_than_pynapple"] = base / row["seconds"] if base else None
            row["goal"] = ">= 20x faster than pynapple" if m.startswith("opto_cube") else ""
            row["met"] = (row["x_faster_than_pynapple"] >= 20) if (base and m.startswith("opto_cube")) else None
            rows.append(row)
    common.table(
        rows,
        [
            "bin_ms",
            "method",
            "seconds",
            "peak_rss_mb",
            "identical",
            "elements_differing",
            "spikes_moved",
            "spikes_added_at_window_stop",
            "x_faster_than_pynapple",
            "goal",
            "met",
        ],
        title=f"Peers, {size} session",
    )
    if record:
        common.record("peers", rows, {"size": size, "repeats": repeats})
    return rows


def _once(method: str, folder: Path, store: Path, bin_ms: float, counter: list[int], size: str) -> dict[str, Any]:
    check = counter[0] == 0  # compare with the cube on the first run of each method only
    counter[0] += 1
    return common.fresh(
        "bench_peers:child",
        method=method,
        folder=str(folder),
        store=str(store),
        bin_ms=bin_ms,
        check=check,
        hist_clusters=HIST_CLUSTERS.get(size, 20),
    )


def main() -> None:
    common.main(__doc__, run, bin_ms=[10.0, 1.0])


if __name__ == "__main__":
    main()
