"""The jobs: ``opto-cube responses``, ``maps`` and ``report``, from stores to saved tables, maps, figures, a page.

This is the only module that imports both the science (:mod:`opto_cube.analysis.response`,
:mod:`opto_cube.analysis.psth`, :mod:`opto_cube.analysis.maps`) and the drawing
(:mod:`opto_cube.figures.plot`). The work is one task per session
(:func:`opto_cube.jobs.tasks.session_results`: the store opened where the task
runs, small results returned); many sessions are one ``dask.delayed`` task each
(:func:`opto_cube.jobs.tasks.session_tasks`) and one ``dask.compute``: the default
threads, processes and a ``distributed.Client`` all run them. Here, what is
done with the results: the table, the maps, the figures, the page.

Where later jobs go: a time-resolved column of the table (latency, light
artifact) is computed from :attr:`opto_cube.jobs.tasks.SessionResults.time_course` in
:func:`opto_cube.jobs.tasks.session_results`; a new job is a function beside :func:`run_maps` that
takes the same :class:`~opto_cube.jobs.tasks.SessionResults`, as :func:`run_report` (the HTML page) does.

Examples
--------
>>> import tempfile, warnings
>>> from opto_cube import synth
>>> from opto_cube.jobs import convert
>>> root = tempfile.mkdtemp()
>>> with warnings.catch_warnings():
...     warnings.simplefilter("ignore")
...     for folder in synth.make_dataset(root, n_sessions=2, size="tiny"):
...         _ = convert.convert_session(folder, root + "/stores", bin_ms=10)
>>> table = responses_table(root + "/stores")
>>> len(table), table["session_id"].nunique()
(192, 2)
>>> written = run_maps(root + "/stores", root + "/maps", table=table)
>>> sorted(written)
['depth_vs_emitter.png', 'effect_map.png', 'latency_vs_distance.png', 'maps.nc', 'modulation_index.png', 'psth.png']
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from opto_cube import schema
from opto_cube.analysis import maps, psth
from opto_cube.analysis.conditions import check_by, select_conditions
from opto_cube.errors import OptoCubeError, OptoCubeWarning, TimingWarning
from opto_cube.figures import plot
from opto_cube.jobs.tasks import AnalysisPass, SessionResults, analysis_pass
from opto_cube.store.catalog import Catalog, sessions_of
from opto_cube.store.paths import atomic_file

__all__ = [
    "demo_pass",
    "maps_dataset",
    "report_content",
    "responses_table",
    "run_maps",
    "run_report",
    "save_netcdf",
    "summary_figures",
    "warn_timing",
    "write_table",
]

TABLE_SUFFIXES = (".csv", ".parquet")


# --------------------------------------------------------------------------
# opto-cube responses
# --------------------------------------------------------------------------
def warn_timing(results: Sequence[SessionResults]) -> None:
    """One :class:`opto_cube.errors.TimingWarning` for every session whose timing columns are NaN."""
    notes = [r.timing_note for r in results if r.timing_note]
    if notes:
        more = f" (and {len(notes) - 1} more session(s) alike)" if len(notes) > 1 else ""
        warnings.warn(notes[0] + more, TimingWarning, stacklevel=3)


def responses_table(
    source: Any,
    *,
    by: Any = None,
    mode: str = schema.MODE_PER_CONDITION,
    significant_by: str = "p",
    timing: bool = True,
) -> pd.DataFrame:
    """The long responses table of many sessions: one row per session x cluster x condition.

    Parameters
    ----------
    source
        A :class:`opto_cube.store.catalog.Catalog` (or any mapping of cubes), one cube,
        an iterable of cubes or store paths, a store, or a folder of stores.
    by, mode, significant_by, timing
        As in :func:`opto_cube.analysis.response.responses` (``timing=False``: the
        seed's statistics alone, read from ``window_counts`` only; the timing
        columns NaN).

    Returns
    -------
    pandas.DataFrame
        Columns ``session_id, cluster, emitter, power_mw, duration_s, n_trials,
        pre_rate_hz, stim_rate_hz, pct_change, p_value, activated, inactivated,
        significant, distance_um, depth_from_surface_um, waveform_type, qc_pass``
        (``docs/contract.md``), then ``emitter_depth_um`` and the timing columns
        ``q_value, latency_ms, first_spike_ms, jitter_ms, reliability,
        light_artifact``. One task per session, one ``dask.compute``: an active
        ``distributed.Client`` runs them on its workers. One
        :class:`opto_cube.errors.TimingWarning` when some session's timing
        columns are NaN (coarse bins, or a store written before the timing arrays).
    """
    check_by(by, mode)
    if significant_by not in schema.SIGNIFICANT_BY:
        raise ValueError(f"significant_by must be one of {schema.SIGNIFICANT_BY}, got {significant_by!r}")
    options = {"by": by, "mode": mode, "significant_by": significant_by, "timing": timing}
    if isinstance(source, AnalysisPass):
        if not source.serves(table=True, **options):
            raise ValueError(f"the analysis pass computed {source.options}, not the responses asked for ({options})")
        done = source
    else:
        done = analysis_pass(source, **options)
    warn_timing(done.sessions)
    return done.table


def write_table(table: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write the table to ``path`` (``.csv`` or ``.parquet``) atomically; OptoCubeError for another suffix."""
    path = Path(path)
    if path.suffix not in TABLE_SUFFIXES:
        raise OptoCubeError(f"{path}: unknown table format {path.suffix!r}; use .csv or .parquet")
    with atomic_file(path) as tmp:
        if path.suffix == ".csv":
            table.to_csv(tmp, index=False)
        else:
            table.to_parquet(tmp, index=False)
    return path


# --------------------------------------------------------------------------
# opto-cube maps
# --------------------------------------------------------------------------
def save_netcdf(ds: xr.Dataset, path: str | os.PathLike) -> Path:
    """Write ``ds`` to a netCDF4 (HDF5) file atomically, with h5netcdf: every dtype kept; booleans in attrs as 0/1.

    Examples
    --------
    >>> import tempfile
    >>> path = save_netcdf(xr.Dataset({"n": ("x", np.array([2**40], np.int64))}, attrs={"ok": True}),
    ...                    tempfile.mkdtemp() + "/m.nc")
    >>> back = xr.open_dataset(path, engine="h5netcdf")
    >>> back.n.dtype, int(back.attrs["ok"])
    (dtype('int64'), 1)
    """
    out = ds.copy()
    out.attrs = {k: (int(v) if isinstance(v, bool) else v) for k, v in ds.attrs.items()}
    with atomic_file(path) as tmp:
        out.to_netcdf(tmp, engine="h5netcdf")
    return Path(path)


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


def _bin_widths(source: Any) -> list[float]:
    """Every session's bin width, from its store's attributes (one small read each) or its cube."""
    from opto_cube.store.chunks import read_store_attrs

    widths = []
    for sid, item in sessions_of(source):
        known = source.store_attrs(sid) if isinstance(source, Catalog) else None  # read when the catalog was made
        attrs = known if known is not None else item.attrs if isinstance(item, xr.Dataset) else read_store_attrs(item)
        widths.append(float((attrs or {}).get(schema.ATTR_BIN_WIDTH, 0.0)))
    return widths


def demo_pass(source: Any) -> AnalysisPass:
    """The one pass of a catalog that the responses table, :func:`run_maps` and :func:`run_report` (their
    defaults: every duration, the longest pulse's PSTH) all read: the demo's."""
    options = {"duration_s": "max", "bin_ms": psth.psth_bin_ms(_bin_widths(source))}
    return analysis_pass(source, psth_options=options)


_DEFAULTS = {"by": None, "mode": schema.MODE_PER_CONDITION, "significant_by": "p", "timing": True}


def _pass_for(
    source: Any, analysis: AnalysisPass | None, table: bool, psth_options: dict[str, Any] | None
) -> AnalysisPass:
    """``analysis`` when it holds what a job needs (the default responses, these PSTH parts), else a new pass."""
    if analysis is not None and analysis.serves(table=table, psth_options=psth_options, **_DEFAULTS):
        return analysis
    return analysis_pass(source, table=table, psth_options=psth_options)


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
            widths = analysis.bin_widths if analysis is not None else _bin_widths(source)
            bin_ms = psth.psth_bin_ms(widths)
            psth_options = {"duration_s": "max" if duration_s is None else duration_s, "bin_ms": bin_ms}
        done = _pass_for(source, analysis, table is None, psth_options)
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


# --------------------------------------------------------------------------
# opto-cube report
# --------------------------------------------------------------------------
_EXTENT_TABLE = (  # the spatial extent's variables shown in the report's table, over waveform type x effect x power
    schema.EXTENT_RADIUS,
    schema.EXTENT_RADIUS_LOW,
    schema.EXTENT_RADIUS_HIGH,
    schema.EXTENT_AT_EMITTER,
    schema.EXTENT_N_UNITS,
    schema.EXTENT_N_RESPONDING,
    schema.EXTENT_N_SESSIONS,
)


@dataclass
class _ReportResults:
    """What the report shows, computed (nothing drawn yet); a part that could not be computed is None."""

    summary: pd.DataFrame
    table: pd.DataFrame
    effect: xr.Dataset
    depth: maps.DepthVsEmitter
    modulation: pd.DataFrame
    extent: xr.Dataset | None
    extent_notes: list[str]
    fits: pd.DataFrame | None
    fits_notes: list[str]
    rate: xr.DataArray | None
    rate_notes: list[str]
    parameters: dict[str, Any]


def _one_line(text: Any) -> str:
    return " ".join(str(text).split())


def _guarded(what: str, compute: Any) -> tuple[Any, list[str]]:
    """``compute()`` and the notes to show instead of a traceback: its opto_cube warnings, or why it failed.

    A part of the report with too little data (one session, one power, no
    responding unit) warns or raises ValueError; the page is built all the same
    and the section says why. Other warnings are passed on.
    """
    failed: str | None = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = compute()
        except (ValueError, OptoCubeError) as e:
            result, failed = None, f"{what} not computed: {_one_line(e)}"
    notes = []
    for w in caught:
        if issubclass(w.category, OptoCubeWarning):
            notes.append(_one_line(w.message))
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return result, notes + ([failed] if failed else [])


def _catalog_summary(source: Any, table: pd.DataFrame, analysis: AnalysisPass | None = None) -> pd.DataFrame:
    """:meth:`opto_cube.store.catalog.Catalog.summary` plus ``responding_units``: QC-passing units significantly
    activated or inactivated under at least one condition of the table. The summary rows of ``analysis``
    when given (no store opened again)."""
    if analysis is not None and all(r.summary is not None for r in analysis.sessions):
        summary = analysis.summary
    else:
        catalog = source if isinstance(source, Catalog) else Catalog(dict(sessions_of(source)))
        summary = catalog.summary()
    hit = (
        table[schema.SIGNIFICANT].astype(bool)
        & (table[schema.ACTIVATED].astype(bool) | table[schema.INACTIVATED].astype(bool))
        & table[schema.QC_PASS].astype(bool)
    )
    counts = table.loc[hit].groupby(schema.SESSION_ID)[schema.CLUSTER].nunique()
    summary[schema.REPORT_SUMMARY_RESPONDING] = summary["session"].map(counts).fillna(0).astype(np.int64)
    summary.attrs["units"] = {"powers": "mW"}
    return summary


def _report_results(
    source: Any,
    *,
    distance_bin_um: float,
    duration_s: Any,
    table: pd.DataFrame | None,
    n_boot: int,
    seed: int,
    analysis: AnalysisPass | None = None,
) -> _ReportResults:
    """The one pass over the sessions (responses and PSTH parts), then every result of the page."""
    from opto_cube.analysis import power_response, spatial

    widths = analysis.bin_widths if analysis is not None else _bin_widths(source)
    bin_ms = psth.psth_bin_ms(widths)
    psth_duration = "max" if duration_s is None else duration_s
    psth_options = {"duration_s": psth_duration, "bin_ms": bin_ms}
    done = _pass_for(source, analysis, table is None, psth_options)
    if table is None:
        table = done.table
    summary = _catalog_summary(source, table, done)
    mapped = select_conditions(table, duration_s=duration_s) if duration_s is not None else table
    try:
        effect, depth, _ = maps_dataset(mapped, distance_bin_um=distance_bin_um, duration_s=duration_s)
    except OptoCubeError as e:
        raise OptoCubeError(f"{source}: {e}") from e
    clusters = done.clusters
    modulation = maps.modulation_index(mapped, clusters, per_unit=True, unknown_waveform="drop")
    extent_duration = "max" if duration_s is None else duration_s
    extent, extent_notes = _guarded(
        "spatial extent",
        lambda: spatial.spatial_extent(table, n_boot=n_boot, duration_s=extent_duration, seed=seed),
    )
    fits, fits_notes = _guarded(
        "power response", lambda: power_response.power_response(table, duration_s=extent_duration)
    )
    rate, rate_notes = _guarded(
        "population PSTH",
        lambda: psth.combine_psths(done.psths, max_distance_um=schema.PSTH_NEAR_EMITTER_UM),
    )
    parameters = {
        "stores": str(getattr(source, "source", "") or source),
        "sessions": len(summary),
        "bin_ms": sorted({round(w * 1000, 6) for w in widths}),
        "responses_mode": schema.MODE_PER_CONDITION,
        "significance_p": schema.SIGNIFICANCE_P,
        "maps_duration_s": "every duration" if duration_s is None else duration_s,
        "distance_bin_um": distance_bin_um,
        "extent_duration_s": extent_duration,
        "extent_n_boot": n_boot,
        "extent_confidence": schema.EXTENT_CONFIDENCE,
        "extent_seed": seed,
        "power_response_min_levels": schema.PR_MIN_LEVELS,
        "power_response_min_r_squared": schema.PR_MIN_R_SQUARED,
        "psth_duration_s": psth_duration,
        "psth_bin_ms": bin_ms if bin_ms is not None else "the cubes' bins",
        "psth_max_distance_um": schema.PSTH_NEAR_EMITTER_UM,
    }
    return _ReportResults(
        summary, table, effect, depth, modulation, extent, extent_notes, fits, fits_notes, rate, rate_notes, parameters
    )


def _fit_counts(fits: pd.DataFrame) -> pd.DataFrame:
    """Units x emitters fitted, per waveform type and fit flag (the power-response section's table)."""
    counts = pd.crosstab(fits[schema.WAVEFORM_TYPE], fits[schema.PR_FIT_FLAG]).reindex(
        columns=list(schema.PR_FLAGS), fill_value=0
    )
    counts["fitted"] = counts.sum(axis=1)
    return counts.rename_axis(index=schema.WAVEFORM_TYPE, columns=None).reset_index()


def _report_sections(r: _ReportResults) -> list[Any]:
    """Draw the figures of ``r`` and gather the sections of the page (drawing only: nothing computed here)."""
    from opto_cube.figures import plot_extent
    from opto_cube.figures.report import FigureItem, Section, TableItem

    maps_s, extent_s, power_s, psth_s = schema.REPORT_SECTIONS
    maps_figures = [
        FigureItem(plot.plot_effect_map(r.effect)[0, 0].figure, "Effect map"),
        FigureItem(plot.plot_depth_vs_emitter(r.depth)[0].figure, "Depth of responding units"),
        FigureItem(plot.plot_modulation_index(r.modulation).figure, "Modulation index"),
    ]
    if schema.LATENCY in r.table.columns:  # as in opto-cube maps: light-artifact units left out
        from opto_cube.figures.plot_latency import plot_latency_vs_distance

        figure = plot_latency_vs_distance(r.table, include_artifacts=False).figure
        maps_figures.append(FigureItem(figure, "Response latency against distance"))
    sections = [
        Section(
            maps_s,
            "Fraction of QC-passing units significantly activated / inactivated against signed distance from the "
            f"emitter (bins of {r.parameters['distance_bin_um']:g} µm) and power, RS and FS apart; the depth of "
            "responding units against the emitter's depth; the modulation index of each unit at its strongest "
            "stimulation against spike width; the response latency against distance (stores binned at 2 ms or "
            "finer). Units flagged light_artifact are left out of the effect and depth maps.",
            figures=maps_figures,
            tables=[TableItem(r.depth.stats, "Depth of responding units against emitter depth: Pearson's r")],
        )
    ]
    text = (
        "Distance from the emitter at which the fraction of units significantly showing the effect falls to half "
        "its value at the emitter: a logistic fall-off in |distance| fitted by maximum likelihood to the per-unit "
        f"0/1 outcomes, with a {schema.EXTENT_CONFIDENCE:.0%} percentile bootstrap interval over units resampled "
        f"within sessions ({r.parameters['extent_n_boot']} resamples; pulse duration "
        f"{r.parameters['extent_duration_s']})."
    )
    if r.extent is None:
        sections.append(Section(extent_s, "\n\n".join([text, *r.extent_notes])))
    else:
        sections.append(
            Section(
                extent_s,
                "\n\n".join([text, *r.extent_notes]),
                figures=[
                    FigureItem(plot_extent.plot_extent_profiles(r.extent)[0].figure, "Fraction against |distance|"),
                    FigureItem(plot_extent.plot_radius_vs_power(r.extent).figure, "Radius against power"),
                ],
                tables=[TableItem(r.extent[list(_EXTENT_TABLE)], "Radius of the effect per type, effect and power")],
            )
        )
    text = (
        f"Per unit tested at {schema.PR_MIN_LEVELS} or more powers at one emitter: a saturating curve of the percent "
        "change against power, its half-maximal power (p50) and maximal effect, with a fit-quality flag."
    )
    good = r.fits is not None and bool(r.fits[schema.PR_FIT_OK].any())
    if r.fits is None or not good:
        notes = r.fits_notes or ["no unit has a good power-response fit: nothing to draw"]
        tables = [] if r.fits is None or r.fits.empty else [TableItem(_fit_counts(r.fits), "Fits per flag")]
        sections.append(Section(power_s, "\n\n".join([text, *notes]), tables=tables))
    else:
        sections.append(
            Section(
                power_s,
                "\n\n".join([text, *r.fits_notes]),
                figures=[
                    FigureItem(plot_extent.plot_power_curves(r.fits, r.table).figure, "Example units"),
                    FigureItem(plot_extent.plot_p50_vs_distance(r.fits).figure, "p50 against distance"),
                ],
                tables=[TableItem(_fit_counts(r.fits), "Units x emitters fitted, per fit flag")],
            )
        )
    text = (
        f"Mean rate (± sem over units) of QC-passing units within {schema.PSTH_NEAR_EMITTER_UM:g} µm of an emitter "
        f"around the light pulse, per power (pulse duration {r.parameters['psth_duration_s']})."
    )
    if r.rate is None:
        sections.append(Section(psth_s, "\n\n".join([text, *r.rate_notes])))
    else:
        figure = plot.plot_population_psth(r.rate)[0].figure
        sections.append(Section(psth_s, "\n\n".join([text, *r.rate_notes]), figures=[FigureItem(figure, "PSTH")]))
    return sections


def report_content(
    source: Any,
    *,
    distance_bin_um: float = schema.MAP_DEFAULT_DISTANCE_BIN_UM,
    duration_s: Any = None,
    table: pd.DataFrame | None = None,
    n_boot: int = schema.EXTENT_N_BOOT,
    seed: int = 0,
    analysis: AnalysisPass | None = None,
    title: str | None = None,
) -> Any:
    """What :func:`run_report` writes, as a :class:`opto_cube.figures.report.ReportContent` (its figures open).

    Computes everything first (one pass over the sessions, then the tables),
    then draws. Close the figures when done (:func:`run_report` does). The
    parameters are those of :func:`run_report`.

    Returns
    -------
    opto_cube.figures.report.ReportContent
        The summary (one row per session, with ``responding_units``), the
        sections ``schema.REPORT_SECTIONS`` in that order, the parameters.

    Raises
    ------
    OptoCubeError
        ``source`` holds no session, or no unit to map.
    """
    from opto_cube.figures.report import ReportContent

    n_sessions = len(sessions_of(source)) if not isinstance(source, Catalog) else len(source)
    if n_sessions == 0:
        raise OptoCubeError(f"{source}: no sessions to report (no .zarr stores)")
    results = _report_results(
        source,
        distance_bin_um=distance_bin_um,
        duration_s=duration_s,
        table=table,
        n_boot=n_boot,
        seed=seed,
        analysis=analysis,
    )
    plt = plot.pyplot()  # the Agg backend without a display
    before = set(plt.get_fignums())
    try:
        sections = _report_sections(results)
    except BaseException:
        for number in set(plt.get_fignums()) - before:
            plt.close(number)
        raise
    return ReportContent(
        title or f"opto_cube report: {n_sessions} session{'s' * (n_sessions != 1)}",
        results.summary,
        sections,
        parameters=results.parameters,
    )


def run_report(
    source: Any,
    out: str | os.PathLike,
    *,
    distance_bin_um: float = schema.MAP_DEFAULT_DISTANCE_BIN_UM,
    duration_s: Any = None,
    table: pd.DataFrame | None = None,
    n_boot: int = schema.EXTENT_N_BOOT,
    seed: int = 0,
    title: str | None = None,
    analysis: AnalysisPass | None = None,
) -> Path:
    """The ``opto-cube report`` job: one self-contained HTML page of a catalog's results (``docs/report.md``).

    One pass over the sessions (:func:`opto_cube.jobs.tasks.session_tasks`: each task the
    session's responses and its part of the population PSTH; each cube read
    once), then the catalog summary with ``responding_units``, the maps
    (:func:`opto_cube.analysis.maps.effect_map`, :func:`~opto_cube.analysis.maps.depth_vs_emitter`,
    :func:`~opto_cube.analysis.maps.modulation_index`), the spatial extent
    (:func:`opto_cube.analysis.spatial.spatial_extent`) and its table, the power
    response (:func:`opto_cube.analysis.power_response.power_response`), the population
    PSTH near the emitter, the parameters and versions; then the figures are
    drawn and :func:`opto_cube.figures.report.write_report` writes the page atomically.
    The figures are closed. A part with too little data (one session, one
    power, no responding unit) does not stop the page: its section says why.

    Parameters
    ----------
    source
        A folder of stores, or a catalog (or anything :func:`opto_cube.store.catalog.sessions_of` accepts).
    out
        The HTML file to write (its folder created if needed).
    distance_bin_um
        Width of the effect map's distance bins, um.
    duration_s
        Only pulses of this duration, s (or ``"max"``); default: every duration in the maps, the
        longest pulse of each session in the spatial extent, power response and PSTH.
    table
        The responses table of ``source`` if already computed (else computed in the same pass).
    n_boot
        Bootstrap resamples of the spatial extent.
    seed
        Seed of the bootstrap.
    title
        The page's title; default ``"opto_cube report: N sessions"``.
    analysis
        The catalog's :class:`~opto_cube.jobs.tasks.AnalysisPass` if already made: read, not recomputed.

    Returns
    -------
    pathlib.Path
        ``out``.

    Raises
    ------
    OptoCubeError
        ``source`` holds no session or no unit to map; ``out`` cannot be written.

    Examples
    --------
    >>> import tempfile, warnings
    >>> from opto_cube import synth
    >>> from opto_cube.jobs import convert
    >>> root = tempfile.mkdtemp()
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("ignore")
    ...     for folder in synth.make_dataset(root, n_sessions=2, size="tiny"):
    ...         _ = convert.convert_session(folder, root + "/stores", bin_ms=10)
    ...     page = run_report(root + "/stores", root + "/report.html", n_boot=50)
    >>> page.name, page.read_text(encoding="utf-8").count("<svg") >= 6
    ('report.html', True)
    """
    from opto_cube.figures.report import write_report

    plt = plot.pyplot()
    before = set(plt.get_fignums())
    try:
        content = report_content(
            source,
            distance_bin_um=distance_bin_um,
            duration_s=duration_s,
            table=table,
            n_boot=n_boot,
            seed=seed,
            title=title,
            analysis=analysis,
        )
        return write_report(content, out)
    finally:
        for number in set(plt.get_fignums()) - before:
            plt.close(number)
