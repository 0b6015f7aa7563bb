"""Maps over a 9-session catalog on a dask LocalCluster, 1 vs 2 worker processes.

    python benchmarks/bench_maps.py --size realistic

Each run is a fresh process that starts a LocalCluster of N single-threaded
worker processes (start-up and a warm-up task excluded from the time), opens
the catalog and computes ``maps.effect_map(pipeline.responses_table(catalog))``
(one task per session, then the effect map), under distributed's
task stream. Scheduler overhead per task: from a graph of no-op tasks, and
from the task stream (wall x workers - compute time) / tasks.

With ``--cli --size small --sessions 80``: the whole ``opto-cube maps`` command
(responses, PSTHs, files, figures) with the default scheduler vs ``--workers 2``.
"""

from __future__ import annotations

import time
import warnings
from typing import Any

import common

NOOP_TASKS = 2000


def _noop(x: int) -> int:
    return x


def child(stores: str, n_workers: int, noop_tasks: int = NOOP_TASKS) -> dict[str, Any]:
    import dask
    from distributed import Client, LocalCluster, get_task_stream

    from opto_cube.analysis import maps
    from opto_cube.analysis.response import responses
    from opto_cube.jobs import pipeline
    from opto_cube.store.catalog import open_catalog

    warnings.simplefilter("ignore")
    with (
        LocalCluster(
            n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=None, memory_limit=0
        ) as cluster,
        Client(cluster) as client,
    ):
        client.run(lambda: __import__("opto_cube.analysis.maps") and None)  # imports on the workers: not timed
        client.submit(_noop, 0).result()
        started = time.perf_counter()
        catalog = open_catalog(stores)
        open_s = time.perf_counter() - started
        started = time.perf_counter()
        lazy = [responses(cube) for cube in catalog.values()]  # the client-side graph building, serial
        build_s = time.perf_counter() - started
        del lazy
        with get_task_stream(client) as stream:
            started = time.perf_counter()
            result = maps.effect_map(pipeline.responses_table(open_catalog(stores)))
            maps_s = time.perf_counter() - started
        tasks = stream.data
        compute_s = sum(ss["stop"] - ss["start"] for t in tasks for ss in t["startstops"] if ss["action"] == "compute")
        started = time.perf_counter()
        dask.compute(*[dask.delayed(_noop, pure=False)(i) for i in range(noop_tasks)])
        noop_s = time.perf_counter() - started
    return {
        "workers": n_workers,
        "maps_s": maps_s,
        "open_s": open_s,
        "graph_build_s": build_s,
        "tasks": len(tasks),
        "task_compute_s": compute_s,
        "overhead_ms_per_task_stream": 1000 * max(0.0, maps_s * n_workers - compute_s) / max(1, len(tasks)),
        "noop_ms_per_task": 1000 * noop_s / noop_tasks,
        "units_mapped": int(result["n_units"].sum()),
    }


def run(
    size: str = "realistic",
    n_sessions: int = 9,
    bin_ms: tuple[float, ...] = (1.0,),
    repeats: int = 3,
    record: bool = True,
    workers: tuple[int, ...] = (1, 2),
    noop_tasks: int = NOOP_TASKS,
) -> list[dict[str, Any]]:
    root = common.dataset(size, n_sessions=n_sessions)
    rows = []
    for width in bin_ms:
        out = common.stores(root, width)
        runs = common.interleave(
            {
                w: (
                    lambda w=w, out=out: common.fresh(
                        "bench_maps:child", stores=str(out), n_workers=w, noop_tasks=noop_tasks
                    )
                )
                for w in workers
            },
            repeats,
        )
        summary = {
            w: common.summarise(
                r,
                (
                    "maps_s",
                    "open_s",
                    "graph_build_s",
                    "task_compute_s",
                    "overhead_ms_per_task_stream",
                    "noop_ms_per_task",
                ),
            )
            for w, r in runs.items()
        }
        one = summary[workers[0]]["maps_s"]
        for w, s in summary.items():
            row = {"sessions": n_sessions, "bin_ms": width, **s, "speedup_vs_1": one / s["maps_s"]}
            if w != workers[0]:
                row["goal"] = ">= 1.7x one worker"
                row["met"] = row["speedup_vs_1"] >= 1.7
            rows.append(row)
    common.table(
        rows,
        [
            "sessions",
            "bin_ms",
            "workers",
            "maps_s",
            "speedup_vs_1",
            "graph_build_s",
            "tasks",
            "task_compute_s",
            "overhead_ms_per_task_stream",
            "noop_ms_per_task",
            "goal",
            "met",
        ],
        title=f"Maps over a {n_sessions}-session catalog on a LocalCluster",
    )
    if record:
        common.record("maps", rows, {"size": size, "n_sessions": n_sessions, "repeats": repeats})
    return rows


def run_cli(
    size: str = "small", n_sessions: int = 80, bin_ms: float = 1.0, repeats: int = 3, record: bool = True
) -> list[dict[str, Any]]:
    """``opto-cube maps STORES --out DIR`` vs the same with ``--workers 2``: whole processes, interleaved."""
    import sys
    import tempfile

    root = common.dataset(size, n_sessions=n_sessions)
    stores = common.stores(root, bin_ms)
    variants = {"default": [], "--workers 2": ["--workers", "2"]}
    with tempfile.TemporaryDirectory() as tmp:
        runs = common.interleave(
            {
                name: (
                    lambda extra=extra, name=name: common.run_measured(
                        [
                            sys.executable,
                            "-m",
                            "opto_cube.cli",
                            "maps",
                            str(stores),
                            "--out",
                            f"{tmp}/{name.strip('-').replace(' ', '_')}",
                            *extra,
                        ],
                        env={"PYTHONPATH": str(common.HERE.parent), "MPLBACKEND": "Agg"},
                    )
                )
                for name, extra in variants.items()
            },
            repeats,
        )
    summary = {name: common.summarise(r, ("process_s", "peak_rss_mb")) for name, r in runs.items()}
    rows = []
    for name, row in summary.items():
        row = {"sessions": n_sessions, "bin_ms": bin_ms, "command": f"opto-cube maps {name}".strip(), **row}
        if name != "default":
            row["x_of_default"] = row["process_s"] / summary["default"]["process_s"]
            row["goal"], row["met"] = "no slower than the default", row["x_of_default"] <= 1.0
        rows.append(row)
    common.table(
        rows,
        ["sessions", "bin_ms", "command", "process_s", "peak_rss_mb", "x_of_default", "goal", "met"],
        title=f"opto-cube maps of {n_sessions} {size} sessions, {bin_ms:g} ms",
    )
    if record:
        common.record("maps_cli", rows, {"size": size, "n_sessions": n_sessions, "repeats": repeats})
    return rows


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--bin-ms", type=float, nargs="+", default=[1.0])
    p.add_argument("--sessions", type=int, default=9)
    p.add_argument("--cli", action="store_true", help="the whole opto-cube maps command, default vs --workers 2")
    a = p.parse_args()
    if a.cli:
        run_cli(a.size, a.sessions, a.bin_ms[-1], a.repeats, record=not a.no_record)
    else:
        run(a.size, a.sessions, tuple(a.bin_ms), a.repeats, record=not a.no_record)


if __name__ == "__main__":
    main()
