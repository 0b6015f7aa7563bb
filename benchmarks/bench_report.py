"""Issue 12: the HTML report of a 9-session catalog (``opto-cube report``): build time and page weight.

    python benchmarks/bench_report.py --size realistic

Each run is a fresh process that calls :func:`opto_cube.jobs.report_job.run_report`
on the catalog of 9 sessions, exactly what ``opto-cube report STORES --out
report.html`` does: one pass of per-session tasks (the responses table and
each session's part of the population PSTH: each cube read once), the
catalog summary with responding units, the maps, the spatial extent (1,000
bootstrap resamples), the power response, the figures (:mod:`opto_cube.figures.plot`,
:mod:`opto_cube.figures.plot_extent`), and the page written atomically. ``total_s``
is the wall time of that call (imports and data generation excluded);
``page_mb`` the page's size; ``figure_kinds`` how each figure is embedded.
Baseline, in the same run (interleaved fresh processes): the responses
table computed first and handed to ``run_report`` (two passes over the
sessions, as the page was built before); and the numbers of the hand-built
page recorded earlier (``benchmarks/README.md``: 45 s at 10 ms, 305 s at 1 ms).
Targets: total under 60 s, page under 10 MB.
"""

from __future__ import annotations

import re
import time
import warnings
from pathlib import Path
from typing import Any

import common

N_SESSIONS = 9


def child(stores: str, out: str, two_pass: bool = False) -> dict[str, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from opto_cube.jobs import pipeline, report_job
    from opto_cube.store.catalog import open_catalog

    warnings.simplefilter("ignore")
    started = time.perf_counter()
    catalog = open_catalog(stores)
    if two_pass:  # the baseline: the responses table first (as before the one pass), then the report
        page = report_job.run_report(catalog, out, table=pipeline.responses_table(catalog))
    else:
        page = report_job.run_report(catalog, out)
    total_s = time.perf_counter() - started
    html = page.read_text(encoding="utf-8")
    figures = html.split("<figure")[1:]
    return {
        "sessions": len(catalog),
        "total_s": total_s,
        "page_mb": page.stat().st_size / 1e6,
        "figures": len(figures),
        "svg_figures": html.count('<figure class="svg">') + html.count('<figure class="mixed">'),
        "png_figures": html.count('<figure class="png">'),
        "figure_kinds": ",".join(re.findall(r'<figure class="(\w+)">', html)),
        "largest_figure_kb": max((len(f) for f in figures), default=0) / 1e3,
        "open_figures": len(plt.get_fignums()),  # run_report closes what it drew
    }


def run(
    size: str = "realistic",
    bin_ms: tuple[float, ...] = (10.0, 1.0),
    repeats: int = 3,
    *,
    n_sessions: int = N_SESSIONS,
    record: bool = True,
    baseline: bool = True,
) -> list[dict[str, Any]]:
    root = common.dataset(size, n_sessions=n_sessions)
    rows = []
    for width in bin_ms:
        stores = common.stores(root, width)
        out = Path(common.WORK) / f"report_{size}_{width:g}ms.html"
        runs: dict[bool, list[dict[str, Any]]] = {False: [], True: []}
        for _ in range(repeats):  # interleaved: the load of the machine hits both alike
            for two_pass in (False, True) if baseline else (False,):
                runs[two_pass].append(
                    common.fresh("benchmarks.bench_report:child", stores=str(stores), out=str(out), two_pass=two_pass)
                )
        for two_pass, measured in runs.items():
            if not measured:
                continue
            row = {
                "size": size,
                "bin_ms": width,
                "method": "table, then report (2 passes)" if two_pass else "run_report (1 pass)",
                **common.summarise(
                    measured,
                    [
                        "total_s",
                        "page_mb",
                        "figures",
                        "svg_figures",
                        "png_figures",
                        "largest_figure_kb",
                        "sessions",
                        "open_figures",
                        "peak_rss_mb",
                    ],
                ),
            }
            rows.append(row)
        if baseline:
            rows[-1]["vs_one_pass"] = rows[-1]["total_s"] / rows[-2]["total_s"]
    columns = ["size", "bin_ms", "method", "sessions", "total_s", "vs_one_pass", "page_mb", "figures"]
    columns += ["svg_figures", "png_figures", "figure_kinds", "largest_figure_kb", "open_figures", "peak_rss_mb"]
    print(common.table(rows, columns, title=f"report of {n_sessions} sessions (medians of {repeats})"))
    if record:
        common.record("report", rows, {"size": size, "bin_ms": list(bin_ms), "repeats": repeats})
    return rows


def main() -> None:
    common.main(__doc__, run, (10.0, 1.0))


if __name__ == "__main__":
    main()
