"""Issue 12: spatial_extent (1,000 bootstrap resamples) and power_response over 80 sessions' responses table.

    python benchmarks/bench_spatial.py            # 80 small sessions, 3 repeats

The table is the real pipeline's: 80 "small" synthetic sessions (60 clusters,
600 trials, 3 emitters x 3 powers x 2 pulse durations) converted at 10 ms and
``responses_table`` of their stores (cached under ``benchmarks/_work``), about
86,000 rows. Each method runs in a fresh process, timed from the loaded table
to the result, imports excluded:

- ``spatial_extent``: the package's way, every (type, effect, power) group's
  1,000 resamples refitted by one compiled, vectorised Newton iteration; the
  first call in the process (loading the compiled kernel from numba's cache)
  and a second call are both reported, with the process's CPU time;
- ``looped scipy fits``: the baseline the issue names, one
  ``scipy.optimize.minimize`` (L-BFGS-B, analytic gradient) per resample and
  group, looped in Python, on the same rows and weights; timed on
  ``LOOP_RESAMPLES`` resamples and extrapolated to 1,000;
- ``power_response``: the per-unit saturating fits.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any

import common
import numpy as np

N_SESSIONS = 80
N_BOOT = 1000
LOOP_RESAMPLES = 20


def table_path(size: str = "small", n_sessions: int = N_SESSIONS, work: Path | None = None) -> Path:
    """The responses table of ``n_sessions`` synthetic sessions converted at 10 ms, as parquet; cached."""
    from opto_cube.jobs import pipeline
    from opto_cube.store.catalog import open_catalog

    root = common.dataset(size, n_sessions=n_sessions, seed=0, work=work)
    out = common.stores(root, 10.0, work=work)
    path = out / "responses.parquet"
    if not path.exists():
        table = pipeline.responses_table(open_catalog(out))
        tmp = path.with_name(".responses.parquet.tmp")
        table.to_parquet(tmp)
        tmp.replace(path)
    return path


def time_extent(path: str, n_boot: int = N_BOOT) -> dict[str, Any]:
    """spatial_extent twice in this process: the first call loads the compiled kernel."""
    import pandas as pd

    from opto_cube.analysis.spatial import spatial_extent
    from opto_cube.errors import OptoCubeWarning

    table = pd.read_parquet(path)
    out: dict[str, Any] = {"rows": len(table), "sessions": int(table["session_id"].nunique())}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OptoCubeWarning)
        for call in ("first", "second"):
            wall, cpu = time.perf_counter(), time.process_time()
            ext = spatial_extent(table, n_boot=n_boot)
            out[f"{call}_s"] = time.perf_counter() - wall
            out[f"{call}_cpu_s"] = time.process_time() - cpu
    fs = ext.radius_um.sel(waveform_type="FS", effect="activated")
    out["fs_radius_um"] = [round(float(v), 1) for v in fs.values]
    out["fs_interval_um"] = [
        [round(float(lo), 1), round(float(hi), 1)]
        for lo, hi in zip(
            ext.radius_low_um.sel(waveform_type="FS", effect="activated").values,
            ext.radius_high_um.sel(waveform_type="FS", effect="activated").values,
            strict=True,
        )
    ]
    out["seconds"] = out["second_s"]
    return out


def time_loop(path: str, n_resamples: int = LOOP_RESAMPLES, n_boot: int = N_BOOT) -> dict[str, Any]:
    """The baseline: one scipy.optimize fit per resample and group in a Python loop, extrapolated to n_boot."""
    import pandas as pd
    from scipy.optimize import minimize
    from scipy.special import expit

    from opto_cube import schema
    from opto_cube.analysis.extent_fit import bootstrap_weights
    from opto_cube.analysis.spatial import extent_rows

    table = pd.read_parquet(path)
    rows, levels, _ = extent_rows(table)
    rng = np.random.default_rng(0)
    fits = 0
    started = time.perf_counter()
    for wtype in schema.WAVEFORM_TYPES:
        sub = rows[rows[schema.WAVEFORM_TYPE] == wtype]
        key = sub[schema.SESSION_ID].astype(str) + ":" + sub[schema.CLUSTER].astype(str)
        unit, uniques = pd.factorize(key)
        session = pd.factorize(pd.Series(uniques).str.split(":").str[0])[0]
        weights = bootstrap_weights(session, n_resamples, rng)
        for k in range(levels.size):
            here = (sub["power_level"] == k).to_numpy()
            x = sub[schema.EXTENT_DISTANCE].to_numpy()[here] / 100.0
            for effect in schema.EFFECTS:
                y = (sub[effect] & sub[schema.SIGNIFICANT]).to_numpy()[here].astype(float)
                if y.sum() in (0, y.size):
                    continue
                for b in range(n_resamples):
                    w = weights[b, unit[here]]

                    def nll(c: np.ndarray, w: np.ndarray = w, y: np.ndarray = y, x: np.ndarray = x) -> Any:
                        eta = c[0] + c[1] * x
                        r = w * (y - expit(eta))
                        return float(np.sum(w * (np.logaddexp(0.0, eta) - y * eta))), -np.array([r.sum(), r @ x])

                    minimize(nll, np.zeros(2), jac=True, method="L-BFGS-B")
                    fits += 1
    seconds = time.perf_counter() - started
    return {"fits": fits, "measured_s": seconds, "seconds": seconds * n_boot / n_resamples}


def time_power_response(path: str) -> dict[str, Any]:
    import pandas as pd

    from opto_cube.analysis.power_response import power_response

    table = pd.read_parquet(path)
    started = time.perf_counter()
    fits = power_response(table)
    return {"seconds": time.perf_counter() - started, "units": len(fits), "good_fits": int(fits["fit_ok"].sum())}


def run(
    size: str = "small",
    n_sessions: int = N_SESSIONS,
    repeats: int = 3,
    *,
    n_boot: int = N_BOOT,
    loop_resamples: int = LOOP_RESAMPLES,
    record: bool = True,
    fresh: bool = True,
) -> list[dict[str, Any]]:
    """The rows of the table: median seconds of each method, and the ratio of the loop to spatial_extent."""
    path = str(table_path(size, n_sessions))
    methods = {
        "spatial_extent": ("time_extent", {"path": path, "n_boot": n_boot}),
        "looped scipy fits": ("time_loop", {"path": path, "n_resamples": loop_resamples, "n_boot": n_boot}),
        "power_response": ("time_power_response", {"path": path}),
    }
    calls = {
        name: (lambda f=f, kw=kw: common.fresh(f"benchmarks.bench_spatial:{f}", **kw))
        if fresh
        else (lambda f=f, kw=kw: globals()[f](**kw))
        for name, (f, kw) in methods.items()
    }
    runs = common.interleave(calls, repeats)
    rows = []
    for name, results in runs.items():
        row = {"method": name, "sessions": n_sessions, "n_boot": n_boot if name != "power_response" else None}
        for key in ("seconds", "first_s", "second_s", "first_cpu_s", "second_cpu_s", "measured_s"):
            if key in results[0]:
                row[key] = common.median(r[key] for r in results)
        row["runs_s"] = [round(r["seconds"], 3) for r in results]
        for key in ("fs_radius_um", "fs_interval_um", "units", "good_fits", "fits", "rows"):
            if key in results[0]:
                row[key] = results[0][key]
        rows.append(row)
    extent = rows[0]["seconds"]
    for row in rows:
        row["x spatial_extent"] = row["seconds"] / extent
    common.table(
        rows,
        ["method", "seconds", "x spatial_extent", "first_s", "second_cpu_s", "runs_s"],
        title=f"{n_sessions} {size} sessions, {n_boot} resamples",
    )
    if record:
        common.record(
            "spatial",
            rows,
            {
                "size": size,
                "n_sessions": n_sessions,
                "repeats": repeats,
                "n_boot": n_boot,
                "loop_resamples": loop_resamples,
            },
        )
    return rows


def main() -> None:
    p = common.parser(__doc__.splitlines()[0], sizes=("small",))
    p.add_argument("--sessions", type=int, default=N_SESSIONS)
    a = p.parse_args()
    run(a.size, a.sessions, a.repeats, record=not a.no_record)


if __name__ == "__main__":
    main()
