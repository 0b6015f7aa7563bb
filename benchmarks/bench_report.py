"""Issue 12, item 4: the HTML report of a 9-session catalog: build time and page weight.

    python benchmarks/bench_report.py --size realistic

Each run is a fresh process that opens the catalog of 9 sessions and does
what ``opto-cube report`` will do: the responses table, the catalog summary
with responding units, the effect map, the depth-vs-emitter and modulation
index statistics, the near-emitter fractions by power, the population PSTH
(computed), their figures (:mod:`opto_cube.plot`), and
:func:`opto_cube.report.write_report`. Timed apart: ``compute_s`` (responses,
maps, PSTH), ``draw_s`` (matplotlib figures), ``render_s`` (figures to inline
SVG, the template, the atomic write); ``total_s`` is their sum (imports and
data generation excluded). Baseline of the rendering: ``png_s``, the same
figures saved as 150 dpi PNGs (what ``opto-cube maps`` writes), timed after
it in the same process (``render_vs_png`` = render_s / png_s). Targets: total
under 60 s, page under 10 MB.
"""

from __future__ import annotations

import io
import re
import time
import warnings
from pathlib import Path
from typing import Any

import common

N_SESSIONS = 9


def near_emitter(table: Any, max_distance_um: float = 100.0) -> Any:
    """Fraction of QC-passing unit-conditions within ``max_distance_um`` of the emitter significantly responding,
    by (waveform_type, effect, power_mw): a stand-in of the spatial extent table until spatial.py lands."""
    import numpy as np
    import xarray as xr

    from opto_cube import schema

    near = table[(table[schema.DISTANCE].abs() <= max_distance_um) & table[schema.QC_PASS]]
    near = near[near[schema.WAVEFORM_TYPE].isin(schema.WAVEFORM_TYPES)]
    level, levels = schema.power_levels(near[schema.POWER].to_numpy())
    out = np.full((len(schema.WAVEFORM_TYPES), len(schema.EFFECTS), levels.size), np.nan)
    for i, wf in enumerate(schema.WAVEFORM_TYPES):
        for j, effect in enumerate(schema.EFFECTS):
            for k in range(levels.size):
                rows = near[(near[schema.WAVEFORM_TYPE] == wf).to_numpy() & (level == k)]
                if len(rows):
                    out[i, j, k] = float((rows[effect] & rows[schema.SIGNIFICANT]).mean())
    dims = (schema.WAVEFORM_TYPE, schema.MAP_EFFECT, schema.POWER)
    return xr.Dataset(
        {"fraction_near_emitter": (dims, out, {"units": "1"})},
        coords={
            schema.WAVEFORM_TYPE: list(schema.WAVEFORM_TYPES),
            schema.MAP_EFFECT: list(schema.EFFECTS),
            schema.POWER: (schema.POWER, levels, {"units": "mW"}),
        },
    )


def child(stores: str, out: str) -> dict[str, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from opto_cube import maps, plot, report, schema, stats
    from opto_cube.catalog import open_catalog

    warnings.simplefilter("ignore")
    started = time.perf_counter()
    catalog = open_catalog(stores)
    table = stats.responses_table(catalog)
    responses_s = time.perf_counter() - started
    summary = catalog.summary()
    hits = table[table[schema.SIGNIFICANT] & (table[schema.ACTIVATED] | table[schema.INACTIVATED])]
    summary["responding_units"] = [
        int(hits.loc[hits[schema.SESSION_ID] == s, schema.CLUSTER].nunique()) for s in summary["session"]
    ]
    effect = maps.effect_map(table)
    depth = maps.depth_vs_emitter(table)
    mi = maps.modulation_index(table, catalog, per_unit=True, unknown_waveform="drop")
    near = near_emitter(table)
    psth_started = time.perf_counter()
    rate = maps.population_psth(catalog, duration_s="max", bin_ms=plot._psth_bin_ms(catalog)).compute()
    compute_s = time.perf_counter() - started
    psth_s = time.perf_counter() - psth_started

    started = time.perf_counter()
    figures = {
        "effect": plot.plot_effect_map(effect)[0, 0].figure,
        "depth": plot.plot_depth_vs_emitter(depth)[0].figure,
        "mi": plot.plot_modulation_index(mi).figure,
        "psth": plot.plot_population_psth(rate)[0].figure,
    }
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for wf in schema.WAVEFORM_TYPES:
        for effect_name, style in zip(schema.EFFECTS, ("-o", "--s"), strict=True):
            values = near["fraction_near_emitter"].sel({schema.WAVEFORM_TYPE: wf, schema.MAP_EFFECT: effect_name})
            ax.plot(near[schema.POWER], values, style, color=plot.WAVEFORM_COLORS[wf], label=f"{wf} {effect_name}")
    ax.set(xlabel="power (mW)", ylabel="fraction within 100 µm", title="Power response")
    ax.legend(fontsize=7)
    figures["power"] = fig
    draw_s = time.perf_counter() - started

    started = time.perf_counter()
    sections = [
        report.Section(
            "Effect maps", figures=[figures["effect"], figures["depth"], figures["mi"]], tables=[depth.stats]
        ),
        report.Section("Spatial extent", tables=[near]),
        report.Section("Power response", figures=[figures["power"]]),
        report.Section("Population PSTHs near the emitter", figures=[figures["psth"]]),
    ]
    content = report.ReportContent(
        f"{len(catalog)} sessions", summary, sections, parameters={"stores": stores, "psth_duration_s": "max"}
    )
    page = report.write_report(content, out)
    render_s = time.perf_counter() - started
    html = page.read_text(encoding="utf-8")
    started = time.perf_counter()  # the baseline: the same figures saved as PNGs, as `opto-cube maps` does
    for figure in figures.values():
        figure.savefig(io.BytesIO(), format="png", dpi=150)
    png_s = time.perf_counter() - started
    plt.close("all")
    return {
        "sessions": len(catalog),
        "rows": len(table),
        "compute_s": compute_s,
        "draw_s": draw_s,
        "render_s": render_s,
        "png_s": png_s,
        "render_vs_png": render_s / png_s,
        "responses_s": responses_s,
        "psth_s": psth_s,
        "figure_kinds": ",".join(re.findall(r'<figure class="(\w+)">', html)),
        "total_s": compute_s + draw_s + render_s,
        "page_mb": page.stat().st_size / 1e6,
        "svg_figures": html.count('<figure class="svg">') + html.count('<figure class="mixed">'),
        "png_figures": html.count('<figure class="png">'),
        "largest_figure_kb": max(len(s) for s in html.split("<figure")[1:]) / 1e3,
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
                ["total_s", "compute_s", "responses_s", "psth_s", "draw_s", "render_s", "png_s", "render_vs_png"]
                + ["page_mb", "svg_figures", "png_figures", "largest_figure_kb", "sessions", "rows"],
            ),
        }
        rows.append(row)
    columns = ["size", "bin_ms", "sessions", "rows", "total_s", "compute_s", "responses_s", "psth_s", "draw_s"]
    columns += ["render_s", "png_s", "render_vs_png", "page_mb", "svg_figures", "png_figures", "figure_kinds"]
    columns += ["largest_figure_kb"]
    print(common.table(rows, columns, title=f"report of {n_sessions} sessions (medians of {repeats})"))
    if record:
        common.record("report", rows, {"size": size, "bin_ms": list(bin_ms), "repeats": repeats})
    return rows


def main() -> None:
    common.main(__doc__, run, (10.0, 1.0))


if __name__ == "__main__":
    main()
