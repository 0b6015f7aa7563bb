"""Issue 12: the HTML report of a 9-session catalog (``opto-cube report``): build time and page weight.

    python benchmarks/bench_report.py --size realistic

Each run is a fresh process that calls :func:`opto_cube.pipeline.run_report`
on the catalog of 9 sessions, exactly what ``opto-cube report STORES --out
report.html`` does: one pass of per-session tasks (the responses table and
each session's part of the population PSTH: each cube read once), the
catalog summary with responding units, the maps, the spatial extent (1,000
bootstrap resamples), the power response, the figures (:mod:`opto_cube.plot`,
:mod:`opto_cube.plot_extent`), and the page written atomically. ``total_s``
is the wall time of that call (imports and data generation excluded);
``page_mb`` the page's size; ``figure_kinds`` how each figure is embedded.
Baseline: the numbers of the hand-built page before the one pass (the
previous section of ``benchmarks/README.md``: 45 s at 10 ms, 305 s at 1 ms).
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


def child(stores: str, out: str) -> dict[str, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from opto_cube import pipeline
    from opto_cube.catalog import open_catalog

    warnings.simplefilter("ignore")
    started = time.perf_counter()
    catalog = open_catalog(stores)
    page = pipeline.run_report(catalog, out)
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
) -> list[dict[str, Any]]:
    root = common.dataset(size, n_sessions=n_sessions)
    rows = []
    for width in bin_ms:
        stores = common.stores(root, width)
        out = Path(common.WORK) / f"report_{size}_{width:g}ms.html"
        runs = [common.fresh("benchmarks.bench_report:child", stores=str(stores), out=str(out)) for _ in range(repeats)]
        row = {
            "size": size,
            "bin_ms": width,
            **common.summarise(
                runs,
                ["total_s", "page_mb", "figures", "svg_figures", "png_figures", "largest_figure_kb", "sessions"]
                + ["open_figures", "peak_rss_mb"],
            ),
        }
        rows.append(row)
    columns = ["size", "bin_ms", "sessions", "total_s", "page_mb", "figures", "svg_figures", "png_figures"]
    columns += ["figure_kinds", "largest_figure_kb", "open_figures", "peak_rss_mb"]
    print(common.table(rows, columns, title=f"report of {n_sessions} sessions (medians of {repeats})"))
    if record:
        common.record("report", rows, {"size": size, "bin_ms": list(bin_ms), "repeats": repeats})
    return rows


def main() -> None:
    common.main(__doc__, run, (10.0, 1.0))


if __name__ == "__main__":
    main()
