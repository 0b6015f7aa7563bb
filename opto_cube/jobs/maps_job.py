"""The ``opto-cube maps`` job: the maps of a catalog computed, saved to ``maps.nc`` and drawn.

From the one analysis pass (:func:`opto_cube.jobs.pipeline.pass_for`): the effect map, depth against
emitter depth (:mod:`opto_cube.analysis.maps`) merged into one Dataset (:func:`maps_dataset`),
saved with :func:`opto_cube.jobs.pipeline.save_netcdf`; then the figures (:func:`summary_figures`).

Examples
--------
>>> import tempfile, warnings
>>> from opto_cube.jobs.demo import example_stores
>>> from opto_cube.jobs.pipeline import responses_table
>>> root = example_stores(2)
>>> table = responses_table(root / "stores")
>>> written = run_maps(root / "stores", root / "maps", table=table)
>>> sorted(written)
['depth_vs_emitter.png', 'effect_map.png', 'latency_vs_distance.png', 'maps.nc', 'modulation_index.png', 'psth.png']
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd
import xarray as xr

from opto_cube import schema
from opto_cube.analysis import maps, psth
from opto_cube.analysis.conditions import select_conditions
from opto_cube.errors import OptoCubeError
from opto_cube.figures import plot
from opto_cube.jobs.pipeline import bin_widths, pass_for, save_netcdf
from opto_cube.jobs.tasks import AnalysisPass
from opto_cube.store.catalog import Catalog, sessions_of

__all__ = ["maps_dataset", "run_maps", "summary_figures"]


def maps_dataset(
    table: pd.DataFrame,
    *,
    distance_bin_um: float = schema.MAP_DEFAULT_DISTANCE_BIN_UM,
    duration_s: Any = None,
    keep_artifacts: bool = False,
) -> tuple[xr.Dataset, maps.DepthVsEmitter, xr.Dataset]:
    """The content of ``maps.nc``, and the two maps it is made of.

    Returns the effect map (:func:`opto_cube.analysis.maps.effect_map`, default
    options: light-artifact units left out unless ``keep_artifacts``), the
    depth-vs-emitter result, and their merge: the effect map plus, over
    ``waveform_type`` x ``effect``, ``depth_pearson_r``, ``depth_pearson_p``
    and ``depth_n_responses``.
    """
    try:
        effect = maps.effect_map(table, distance_bin_um=distance_bin_um, keep_artifacts=keep_artifacts)
    except ValueError as e:
        raise OptoCubeError(f"nothing to map ({e})") from e
    depth = maps.depth_vs_emitter(table, keep_artifacts=keep_artifacts)
    stats = depth.stats.rename(
        {
            schema.MAP_PEARSON_R: "depth_pearson_r",
            schema.P_VALUE: "depth_pearson_p",
            schema.MAP_N_RESPONSES: "depth_n_responses",
        }
    )
    stats[schema.MAP_EFFECT].attrs = {"units": "1", "long_name": "effect (activated / inactivated)"}
    summary = xr.merge([effect, stats], join="outer", combine_attrs="drop_conflicts", compat="override")
    summary.attrs = {**effect.attrs}
    if duration_s is not None:
        summary.attrs["duration_s"] = str(duration_s)
    return effect, depth, summary


def summary_figures(
    effect: xr.Dataset,
    depth: maps.DepthVsEmitter,
    modulation: pd.DataFrame,
    rate: xr.DataArray,
    out_dir: str | os.PathLike,
    table: pd.DataFrame | None = None,
    *,
    keep_artifacts: bool = False,
) -> dict[str, Path]:
    """Draw and save the figures of ``opto-cube maps`` (``schema.MAPS_FIGURES``); file name -> path.

    The latency figure (:func:`opto_cube.figures.plot_latency.plot_latency_vs_distance`, light-artifact
    units left out unless ``keep_artifacts``) is drawn when the responses ``table`` is given.
    """
    from opto_cube.figures.plot_latency import plot_latency_vs_distance

    out = Path(out_dir)
    effect_png, depth_png, modulation_png, psth_png, latency_png = schema.MAPS_FIGURES
    written = {
        effect_png: plot.save_figure(plot.plot_effect_map(effect)[0, 0].figure, out / effect_png),
        depth_png: plot.save_figure(plot.plot_depth_vs_emitter(depth)[0].figure, out / depth_png),
        modulation_png: plot.save_figure(plot.plot_modulation_index(modulation).figure, out / modulation_png),
        psth_png: plot.save_figure(plot.plot_population_psth(rate)[0].figure, out / psth_png),
    }
    if table is not None and schema.LATENCY in table.columns:
        ax = plot_latency_vs_distance(table, include_artifacts=keep_artifacts)
        written[latency_png] = plot.save_figure(ax.figure, out / latency_png)
    return written


def run_maps(
    source: Any,
    out_dir: str | os.PathLike,
    *,
    distance_bin_um: float = schema.MAP_DEFAULT_DISTANCE_BIN_UM,
    duration_s: Any = None,
    table: pd.DataFrame | None = None,
    figures: bool = True,
    keep_artifacts: bool = False,
    analysis: AnalysisPass | None = None,
) -> dict[str, Path]:
    """The ``opto-cube maps`` job: the maps to ``out_dir/maps.nc`` and the figures as PNGs.

    ``maps.nc`` is netCDF4 (:func:`save_netcdf`) holding :func:`maps_dataset`.
    The figures: the effect map, depth against emitter depth, the modulation
    index of each unit at its strongest stimulation (unknown waveform types
    left out), and the population PSTH of units within 100 um of an emitter
    (every power; the longest pulse, or ``duration_s``; 5 ms bins when the
    cubes' bins allow), and the response latency against distance (FS and RS
    apart, per power; empty of points for stores binned over 2 ms).

    Parameters
    ----------
    source
        A folder of stores, or a catalog (or anything :func:`opto_cube.store.catalog.sessions_of` accepts).
    out_dir
        Output folder (created if needed); each file is written atomically.
    distance_bin_um
        Width of the distance bins, um.
    duration_s
        Only pulses of this duration, s (or ``"max"``, the longest); default all.
    table
        The responses table of ``source`` if already computed (else computed here).
    figures
        Also draw the figures (this is what reads each cube once, for the PSTHs).
    keep_artifacts
        Keep the units flagged ``light_artifact`` in the maps and depth plots (default: left out).
    analysis
        The catalog's :class:`~opto_cube.jobs.tasks.AnalysisPass` if already made (the demo's): read, not recomputed.

    Returns
    -------
    dict
        File name -> path of every file written.

    Raises
    ------
    OptoCubeError
        ``source`` holds no session, or no unit to map.
    """
    n_sessions = len(sessions_of(source)) if not isinstance(source, Catalog) else len(source)
    if n_sessions == 0:
        raise OptoCubeError(f"{source}: no sessions to map (no .zarr stores)")
    done = analysis
    if table is None or figures:
        psth_options = None
        if figures:
            widths = analysis.bin_widths if analysis is not None else bin_widths(source)
            bin_ms = psth.psth_bin_ms(widths)
            psth_options = {"duration_s": "max" if duration_s is None else duration_s, "bin_ms": bin_ms}
        done = pass_for(source, analysis, table is None, psth_options)
    if table is None:
        assert done is not None
        table = done.table
    if duration_s is not None:
        table = select_conditions(table, duration_s=duration_s)
    try:
        effect, depth, summary = maps_dataset(
            table, distance_bin_um=distance_bin_um, duration_s=duration_s, keep_artifacts=keep_artifacts
        )
    except OptoCubeError as e:
        raise OptoCubeError(f"{source}: {e}") from e
    out = Path(out_dir)
    written = {schema.MAPS_NETCDF: save_netcdf(summary, out / schema.MAPS_NETCDF)}
    if figures:
        assert done is not None
        modulation = maps.modulation_index(table, done.clusters, per_unit=True, unknown_waveform="drop")
        rate = psth.combine_psths(done.psths, max_distance_um=schema.PSTH_NEAR_EMITTER_UM)
        written.update(summary_figures(effect, depth, modulation, rate, out, table, keep_artifacts=keep_artifacts))
    return written
