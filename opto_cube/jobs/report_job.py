"""The ``opto-cube report`` job: one self-contained HTML page of a catalog's results.

Compute first, from the one analysis pass (:func:`opto_cube.jobs.pipeline.pass_for`): the catalog
summary with ``responding_units``, the maps (:func:`opto_cube.jobs.maps_job.maps_dataset`), the
spatial extent, the power response, the population PSTH, each part guarded (a part with too little
data: its warnings or error kept as the text of its section); then draw
(:mod:`opto_cube.figures.plot`, :mod:`opto_cube.figures.plot_extent`) and write the page
(:func:`opto_cube.figures.report.write_report`). :func:`report_content` gives the page's content
without writing it.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from opto_cube import schema
from opto_cube.analysis import maps, psth
from opto_cube.analysis.conditions import select_conditions
from opto_cube.analysis.latency import light_artifacts
from opto_cube.errors import OptoCubeError, OptoCubeWarning, one_line
from opto_cube.figures import plot
from opto_cube.jobs.maps_job import maps_dataset
from opto_cube.jobs.pipeline import bin_widths, pass_for
from opto_cube.jobs.tasks import AnalysisPass
from opto_cube.store.catalog import Catalog, sessions_of

PR_FLAGS = ("ok", "undefined", "poor_fit", "p50_out_of_range")

__all__ = ["report_content", "run_report"]

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
            result, failed = None, f"{what} not computed: {one_line(e)}"
    notes = []
    for w in caught:
        if issubclass(w.category, OptoCubeWarning):
            notes.append(one_line(w.message))
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
        summary = catalog.summary(artifacts=light_artifacts)
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

    widths = analysis.bin_widths if analysis is not None else bin_widths(source)
    bin_ms = psth.psth_bin_ms(widths)
    psth_duration = "max" if duration_s is None else duration_s
    psth_options = {"duration_s": psth_duration, "bin_ms": bin_ms}
    done = pass_for(source, analysis, table is None, psth_options)
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
        columns=list(PR_FLAGS), fill_value=0
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
    >>> import warnings
    >>> from opto_cube.jobs.demo import example_stores
    >>> root = example_stores(2)
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("ignore")
    ...     page = run_report(root / "stores", root / "report.html", n_boot=50)
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
