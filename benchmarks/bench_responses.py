"""The responses table from the cubes vs from raw spikes (vectorised) vs the published loops.

    python benchmarks/bench_responses.py --size realistic

Per (emitter, power, duration) condition and cluster: mean pre and stim
rates, percent change, paired t-test, the three flags (docs/contract.md). Each
method runs in a fresh process, timed from the files (opening the stores or
loading the raw arrays) to the table, imports excluded:

- cube: ``responses_table`` of the opened stores (lazy, dask), the package's way;
- raw, vectorised: spike counts of every (cluster, trial) window by one
  ``searchsorted`` per cluster, condition sums by ``np.add.reduceat``, the
  t-test by ``scipy.stats.ttest_rel`` over all clusters at once;
- cube, published columns: the same with ``timing=False``: the published statistics alone, from
  ``window_counts`` (no timing array read);
- published loops: Python loops over cluster x condition x trial with boolean
  masks, the notebook's style, on a subset of clusters, extrapolated per cluster.

One session, and a 9-session catalog (the loops extrapolated from the single
session's rate per cluster). The raw and loop tables are checked against the cube's.

At scale (``--scale --size small --sessions 10 80 --bin-ms 1``): ``responses_table``
of N small sessions with dask's default threads, and on a ``LocalCluster`` of 1
and 2 single-threaded workers; the task count of the graph alongside.
"""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path
from typing import Any

import common
import numpy as np

VALUES = ("pre_rate_hz", "stim_rate_hz", "pct_change", "p_value")
FLAGS = ("activated", "inactivated", "significant")
KEYS = ("session_id", "cluster", "emitter", "power_mw", "duration_s")
LOOP_CLUSTERS = {"tiny": 3, "small": 5, "realistic": 8}


def _conditions(trials: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each trial's condition code (sorted by emitter, power level, duration), and per condition its columns."""
    from opto_cube import schema

    level, level_power = schema.power_levels(trials["powers"])
    durations, dur_index = np.unique(trials["durations"], return_inverse=True)
    keys = np.stack([trials["emitters"].astype(np.int64), level, dur_index.reshape(-1)], axis=1)
    unique, code = np.unique(keys, axis=0, return_inverse=True)
    columns = np.stack([unique[:, 0], level_power[unique[:, 1]], durations[unique[:, 2]]], axis=1)
    return code.reshape(-1), columns, np.bincount(code.reshape(-1))


def _table(
    session_id: str,
    columns: np.ndarray,
    n: np.ndarray,
    pre: np.ndarray,
    stim: np.ndarray,
    p: np.ndarray,
    clusters: np.ndarray,
) -> Any:
    import pandas as pd

    from opto_cube import schema

    with np.errstate(divide="ignore", invalid="ignore"):
        pct = 100 * (stim - pre) / pre
    k, c = np.meshgrid(clusters, np.arange(columns.shape[0]), indexing="ij")
    return pd.DataFrame(
        {
            "session_id": session_id,
            "cluster": k.ravel(),
            "emitter": columns[c.ravel(), 0].astype(np.int64),
            "power_mw": columns[c.ravel(), 1],
            "duration_s": columns[c.ravel(), 2],
            "n_trials": n[c.ravel()],
            "pre_rate_hz": pre.ravel(),
            "stim_rate_hz": stim.ravel(),
            "pct_change": pct.ravel(),
            "p_value": p.ravel(),
            "activated": (pct > schema.ACTIVATED_MIN_PCT).ravel(),
            "inactivated": ((pct < schema.INACTIVATED_MAX_PCT) & (pre > schema.INACTIVATED_MIN_PRE_HZ)).ravel(),
            "significant": (p < schema.SIGNIFICANCE_P).ravel(),
        }
    )


def responses_raw(folder: Path) -> Any:
    """The responses table of one session from its raw spike arrays, vectorised."""
    import scipy.stats

    raw = common.load_raw(folder)
    trials = common.trials_in_onset_order(raw)
    onset, dur = trials["onsets"], trials["durations"]
    k_all = raw["n_clusters"]
    order = np.argsort(raw["clusters"], kind="stable")  # times stay sorted within a cluster
    t = raw["times"][order]
    starts = np.searchsorted(raw["clusters"][order], np.arange(k_all + 1))
    edges = np.concatenate([onset - 0.5, onset, onset + dur])  # onset + a <= t < onset + b, a, b as given
    pre = np.empty((k_all, onset.size), np.int64)
    stim = np.empty((k_all, onset.size), np.int64)
    for k in range(k_all):
        i = np.searchsorted(t[starts[k] : starts[k + 1]], edges, "left").reshape(3, -1)
        pre[k], stim[k] = i[1] - i[0], i[2] - i[1]
    code, columns, n = _conditions(trials)
    by_code = np.argsort(code, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(n)[:-1]])
    pre_rate = np.add.reduceat(pre[:, by_code], bounds, axis=1) / 0.5 / n
    stim_rate = np.add.reduceat(stim[:, by_code], bounds, axis=1) / columns[:, 2] / n
    per_trial_pre, per_trial_stim = pre / 0.5, stim / dur
    p = np.empty_like(pre_rate)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        for c in range(n.size):
            idx = np.flatnonzero(code == c)
            p[:, c] = scipy.stats.ttest_rel(per_trial_stim[:, idx], per_trial_pre[:, idx], axis=1).pvalue
    return _table(folder.name, columns, n, pre_rate, stim_rate, p, np.arange(k_all))


def responses_loops(folder: Path, clusters: list[int]) -> Any:
    """The style of the analysis notebook published with the dataset: loops over cluster x condition x trial."""
    import scipy.stats

    raw = common.load_raw(folder)
    trials = common.trials_in_onset_order(raw)
    code, columns, n = _conditions(trials)
    pre_m = np.empty((len(clusters), n.size))
    stim_m, p = np.empty_like(pre_m), np.empty_like(pre_m)
    for row, k in enumerate(clusters):
        spikes = raw["times"][raw["clusters"] == k]
        for c in range(n.size):
            pre_rates, stim_rates = [], []
            for i in np.flatnonzero(code == c):
                onset, duration = trials["onsets"][i], trials["durations"][i]
                pre_rates.append(np.sum((spikes >= onset - 0.5) & (spikes < onset)) / 0.5)
                stim_rates.append(np.sum((spikes >= onset) & (spikes < onset + duration)) / duration)
            pre_m[row, c], stim_m[row, c] = np.mean(pre_rates), np.mean(stim_rates)
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore")
                p[row, c] = scipy.stats.ttest_rel(stim_rates, pre_rates).pvalue
    return _table(folder.name, columns, n, pre_m, stim_m, p, np.asarray(clusters))


def responses_cube(stores: list[Path], timing: bool = True) -> Any:
    """The package's way: one task per store, opening included (window_counts, or the cube for format 1);
    ``timing=False``: the published columns alone (no timing array read)."""
    from opto_cube.jobs.pipeline import responses_table

    return responses_table([str(s) for s in stores], timing=timing)


def compare(cube_table: Any, other: Any) -> dict[str, Any]:
    """Whether ``other``'s rows equal the cube's (values to 1e-9 relative, flags exactly)."""
    merged = other.merge(cube_table, on=list(KEYS), how="left", suffixes=("", "_cube"), indicator=True)
    missing = int((merged["_merge"] != "both").sum())
    worst, flags_differ = 0.0, 0
    for v in VALUES:
        a, b = merged[v].to_numpy(float), merged[v + "_cube"].to_numpy(float)
        same = (a == b) | (np.isnan(a) & np.isnan(b)) | np.isclose(a, b, rtol=1e-9, atol=1e-12)
        worst = max(worst, float((~same).sum()))
    for f in FLAGS:
        flags_differ += int((merged[f].to_numpy(bool) != merged[f + "_cube"].to_numpy(bool)).sum())
    return {
        "rows_checked": len(other),
        "rows_missing": missing,
        "values_differing": int(worst),
        "flags_differing": flags_differ,
        "identical": missing == 0 and worst == 0 and flags_differ == 0,
    }


def child(method: str, folders: list[str], stores: list[str], loop_clusters: int, check: bool) -> dict[str, Any]:
    import pandas as pd
    import scipy.stats  # noqa: F401
    import xarray  # noqa: F401

    import opto_cube.jobs.pipeline  # noqa: F401

    warnings.simplefilter("ignore")
    started = time.perf_counter()
    if method == "cube":
        table = responses_cube([Path(s) for s in stores])
    elif method == "cube, published columns":
        table = responses_cube([Path(s) for s in stores], timing=False)
    elif method == "raw vectorised":
        table = pd.concat([responses_raw(Path(f)) for f in folders], ignore_index=True)
    else:
        table = responses_loops(Path(folders[0]), list(range(loop_clusters)))
    seconds = time.perf_counter() - started
    import resource

    out: dict[str, Any] = {
        "method": method,
        "seconds": seconds,
        "rows": len(table),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    if method == "published loops":
        out["clusters_run"] = loop_clusters
        out["clusters_per_s"] = loop_clusters / seconds
    if check and not method.startswith("cube"):
        out.update(compare(responses_cube([Path(s) for s in stores[: len(folders)]]), table))
    return out


def run(
    size: str = "realistic",
    bin_ms: tuple[float, ...] = (10.0, 1.0),
    repeats: int = 3,
    record: bool = True,
    n_sessions: tuple[int, ...] = (1, 9),
    fresh: bool = True,
) -> list[dict[str, Any]]:
    rows = []
    loop_k = LOOP_CLUSTERS.get(size, 8)
    call = common.fresh if fresh else (lambda target, **kw: child(**kw))
    rate: float | None = None
    for n in n_sessions:
        root = common.dataset(size, n_sessions=n)
        folders = [str(f) for f in common.sessions(root)]
        n_clusters = sum(common.load_raw(Path(f))["n_clusters"] for f in folders)
        for width in bin_ms:
            stores = [str(s) for s in common.store_paths(common.stores(root, width))]
            methods = {"cube": None, "cube, published columns": None, "raw vectorised": None}
            if n == 1:
                methods["published loops"] = None
            counter = {m: 0 for m in methods}

            def once(m: str, counter: dict = counter, folders: list = folders, stores: list = stores) -> dict[str, Any]:
                counter[m] += 1
                return call(
                    "bench_responses:child",
                    method=m,
                    folders=folders,
                    stores=stores,
                    loop_clusters=loop_k,
                    check=counter[m] == 1,
                )

            runs = common.interleave({m: (lambda m=m: once(m)) for m in methods}, repeats)
            summary = {m: common.summarise(r, ("seconds", "peak_rss_mb", "clusters_per_s")) for m, r in runs.items()}
            if "published loops" in summary:
                rate = summary["published loops"]["clusters_per_s"]
                summary["published loops"]["seconds"] = n_clusters / rate  # extrapolated to every cluster
            elif rate:
                summary["published loops (extrapolated)"] = {
                    "method": "published loops (extrapolated)",
                    "seconds": n_clusters / rate,
                    "clusters_per_s": rate,
                }
            loops_s = summary.get("published loops", summary.get("published loops (extrapolated)", {})).get("seconds")
            for m, s in summary.items():
                row = {"sessions": n, "bin_ms": width, "clusters": n_clusters, **s}
                if m.startswith("cube"):
                    row["x_vs_loops"] = loops_s / s["seconds"] if loops_s else None
                    row["x_vs_raw"] = summary["raw vectorised"]["seconds"] / s["seconds"]
                    row["goal"] = ">= 300x loops, >= 10x raw vectorised"
                    row["met"] = bool(row["x_vs_raw"] >= 10 and (row["x_vs_loops"] or 0) >= 300)
                rows.append(row)
    common.table(
        rows,
        [
            "sessions",
            "bin_ms",
            "method",
            "seconds",
            "peak_rss_mb",
            "clusters_per_s",
            "identical",
            "x_vs_loops",
            "x_vs_raw",
            "goal",
            "met",
        ],
        title=f"Responses, {size} sessions",
    )
    if record:
        common.record("responses", rows, {"size": size, "repeats": repeats})
    return rows


# --------------------------------------------------------------------------
# At scale: many small sessions, the default scheduler vs local clusters
# --------------------------------------------------------------------------
def scale_child(stores: list[str], scheduler: str) -> dict[str, Any]:
    """``responses_table`` of ``stores`` (opening included, imports and cluster start-up excluded).

    ``scheduler``: ``threads`` (dask's default), ``cluster1`` / ``cluster2``
    (a ``distributed.LocalCluster`` of 1 or 2 single-threaded worker processes).
    """
    import contextlib

    import dask

    from opto_cube.jobs.pipeline import responses_table
    from opto_cube.jobs.tasks import session_tasks
    from opto_cube.store.catalog import catalog_of

    warnings.simplefilter("ignore")
    with contextlib.ExitStack() as stack:
        if scheduler.startswith("cluster"):
            from distributed import Client, LocalCluster

            cluster = stack.enter_context(
                LocalCluster(
                    n_workers=int(scheduler[-1]),
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address=None,
                    memory_limit=0,
                )
            )
            client = stack.enter_context(Client(cluster))
            client.run(lambda: __import__("opto_cube.jobs.pipeline") and None)  # worker imports: not timed
        started = time.perf_counter()
        table = responses_table(catalog_of(stores))
        seconds = time.perf_counter() - started
    tasks = len(dask.base.collections_to_expr(session_tasks(catalog_of(stores))).__dask_graph__())
    return {
        "scheduler": scheduler,
        "sessions": len(stores),
        "seconds": seconds,
        "ms_per_session": 1000 * seconds / len(stores),
        "rows": len(table),
        "tasks": tasks,
    }


def run_scale(
    size: str = "small",
    n_sessions: tuple[int, ...] = (10, 80),
    bin_ms: float = 1.0,
    repeats: int = 3,
    schedulers: tuple[str, ...] = ("threads", "cluster1", "cluster2"),
    record: bool = True,
    baseline: str | None = None,
) -> list[dict[str, Any]]:
    """The responses of N small sessions at 1 ms, per scheduler; fresh processes, interleaved, medians.

    ``baseline``: a folder holding another version's ``opto_cube`` package (e.g. ``git archive <commit>
    opto_cube | tar -x -C DIR``), also run with the default scheduler in the same interleaved run.
    """
    root = common.dataset(size, n_sessions=max(n_sessions))
    paths = [str(p) for p in common.store_paths(common.stores(root, bin_ms))]
    rows = []
    for n in n_sessions:
        methods = {
            sch: (lambda sch=sch, n=n: common.fresh("bench_responses:scale_child", stores=paths[:n], scheduler=sch))
            for sch in schedulers
        }
        if baseline:
            env = {"PYTHONPATH": os.pathsep.join([baseline, str(common.HERE)])}
            methods["baseline threads"] = lambda n=n, env=env: common.fresh(
                "bench_responses:scale_child", env=env, stores=paths[:n], scheduler="threads"
            )
        runs = common.interleave(methods, repeats)
        summary = {sch: common.summarise(r, ("seconds", "ms_per_session", "peak_rss_mb")) for sch, r in runs.items()}
        for sch, row in summary.items():
            row = {"sessions": n, "bin_ms": bin_ms, **row}
            if sch == "threads":
                row["goal"], row["met"] = "<= 15 ms a session", row["ms_per_session"] <= 15
                if "baseline threads" in summary:
                    row["x_vs_baseline"] = summary["baseline threads"]["seconds"] / row["seconds"]
            if sch == "cluster2" and "cluster1" in summary:
                row["x_vs_cluster1"] = summary["cluster1"]["seconds"] / row["seconds"]
                row["x_of_threads"] = row["seconds"] / summary["threads"]["seconds"]
                row["goal"] = ">= 1.6x cluster1, <= 1.5x threads"
                row["met"] = row["x_vs_cluster1"] >= 1.6 and row["x_of_threads"] <= 1.5
            rows.append(row)
    common.table(
        rows,
        [
            "sessions",
            "scheduler",
            "seconds",
            "ms_per_session",
            "tasks",
            "peak_rss_mb",
            "x_vs_cluster1",
            "x_of_threads",
            "x_vs_baseline",
            "goal",
            "met",
        ],
        title=f"responses_table at scale, {size} sessions, {bin_ms:g} ms",
    )
    if record:
        common.record("responses_scale", rows, {"size": size, "repeats": repeats, "bin_ms": bin_ms})
    return rows


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--bin-ms", type=float, nargs="+", default=[10.0, 1.0])
    p.add_argument("--sessions", type=int, nargs="+", default=[1, 9])
    p.add_argument(
        "--scale",
        action="store_true",
        help="many small sessions: the default scheduler vs 1- and 2-worker local clusters",
    )
    p.add_argument("--baseline", help="a folder with another version's opto_cube package, run alongside (--scale)")
    a = p.parse_args()
    if a.scale:
        run_scale(a.size, tuple(a.sessions), a.bin_ms[-1], a.repeats, record=not a.no_record, baseline=a.baseline)
    else:
        run(a.size, tuple(a.bin_ms), a.repeats, record=not a.no_record, n_sessions=tuple(a.sessions))


if __name__ == "__main__":
    main()
