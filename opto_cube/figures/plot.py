"""Figures of computed results: effect maps, depth against emitter depth, modulation index, PSTHs.

Drawing only: every function takes a result already computed (by
:mod:`opto_cube.analysis.maps` or :mod:`opto_cube.analysis.psth`) and imports no analysis module.

matplotlib is imported inside the functions, so ``import opto_cube`` does not
import it; without a display the Agg backend is used. Every function takes
``ax=None`` (or ``axes=None`` when it draws several panels), draws into it
or into a new figure, and returns it.

Examples
--------
>>> import pandas as pd
>>> from opto_cube.analysis import maps
>>> table = pd.DataFrame({"distance_um": [0.0, 150.0, -100.0], "power_mw": [1.0, 4.0, 4.0],
...                       "waveform_type": ["FS", "FS", "RS"], "qc_pass": True,
...                       "activated": [True, False, False], "inactivated": [False, False, True],
...                       "significant": True})
>>> axes = plot_effect_map(maps.effect_map(table))
>>> axes.shape, axes[0, 0].get_xlabel()
((2, 2), 'distance from emitter (µm; + deeper)')
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from opto_cube import schema
from opto_cube.store.paths import atomic_file

__all__ = [
    "WAVEFORM_COLORS",
    "plot_depth_vs_emitter",
    "plot_effect_map",
    "plot_modulation_index",
    "plot_population_psth",
    "plot_psth",
    "save_figure",
]

WAVEFORM_COLORS = {"RS": "#1f5fa8", "FS": "#c9302c", schema.UNKNOWN_LABEL: "0.45"}
EFFECT_CMAPS = {schema.ACTIVATED: "Reds", schema.INACTIVATED: "Blues"}
LIGHT_COLOR = "#ff6f3c"  # ChrimsonR is driven by red light
ANNOTATE_MAX_CELLS = 120
DISTANCE_LABEL = "distance from emitter (µm; + deeper)"


def pyplot() -> Any:
    """matplotlib.pyplot, with the Agg backend when there is no display."""
    if "matplotlib.pyplot" not in sys.modules:
        import matplotlib

        if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY") and sys.platform != "darwin":
            matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _label(waveform_type: str) -> str:
    return waveform_type or "unknown type"


def _axes_grid(axes: Any, nrows: int, ncols: int, figsize: tuple[float, float]) -> np.ndarray:
    if axes is None:
        plt = pyplot()
        _, axes = plt.subplots(nrows, ncols, figsize=figsize, squeeze=False, layout="constrained")
        return axes
    axes = np.asarray(axes, dtype=object)
    if axes.size != nrows * ncols:
        raise ValueError(f"expected {nrows} x {ncols} axes, got {axes.size}")
    return axes.reshape(nrows, ncols)


# --------------------------------------------------------------------------
# Effect map
# --------------------------------------------------------------------------
def plot_effect_map(
    effect: xr.Dataset,
    *,
    axes: Any = None,
    effects: tuple[str, ...] = schema.EFFECTS,
    annotate: bool = False,
    vmax: float = 1.0,
    trim: bool = True,
) -> np.ndarray:
    """Heatmaps of the fraction of units activated / inactivated, distance x power, one row per waveform type.

    A strip above each heatmap gives the number of unit-conditions in each
    distance bin; empty bins are grey.

    Parameters
    ----------
    effect
        An effect map (:func:`opto_cube.analysis.maps.effect_map`) with dims
        ``distance_um`` and optionally ``power_mw`` and ``waveform_type``.
    axes
        ``n_types x len(effects)`` axes to draw into; default a new figure.
    effects
        Columns of panels: ``"activated"`` and / or ``"inactivated"``.
    annotate
        Also write the count in every cell.
    vmax
        Top of the colour scale (fractions, 0..1).
    trim
        Limit the distance axis to the bins that hold units.

    Returns
    -------
    numpy.ndarray of matplotlib Axes, shape (n_types, len(effects)).
    """
    plt = pyplot()
    extra = [d for d in effect.dims if d not in (schema.DISTANCE, schema.POWER, schema.WAVEFORM_TYPE)]
    if schema.DISTANCE not in effect.dims or extra:
        raise ValueError(
            f"plot_effect_map needs dims {schema.DISTANCE!r} (+ power_mw, waveform_type); select or sum {extra!r} first"
        )
    for e in effects:
        if e not in schema.EFFECTS:
            raise ValueError(f"effects must be among {schema.EFFECTS!r}, got {e!r}")
    types = list(effect[schema.WAVEFORM_TYPE].values) if schema.WAVEFORM_TYPE in effect.dims else [None]
    axes = _axes_grid(axes, len(types), len(effects), (6.4 * len(effects), 3.1 * len(types) + 0.7))
    edges = np.asarray(effect.attrs.get(schema.MAP_DISTANCE_EDGES, _edges_from_centres(effect[schema.DISTANCE].values)))
    centres = (edges[:-1] + edges[1:]) / 2
    has_power = schema.POWER in effect.dims
    powers = effect[schema.POWER].values if has_power else np.array([np.nan])
    n_rows = powers.size
    y_edges = np.arange(n_rows + 1) - 0.5
    order = (schema.POWER, schema.DISTANCE) if has_power else (schema.DISTANCE,)
    occupied = np.flatnonzero(
        effect[schema.MAP_N_UNITS].sum([d for d in effect[schema.MAP_N_UNITS].dims if d != schema.DISTANCE]).values > 0
    )
    x_lo, x_hi = (edges[occupied[0]], edges[occupied[-1] + 1]) if trim and occupied.size else (edges[0], edges[-1])
    shown = (centres > x_lo) & (centres < x_hi)
    for i, w in enumerate(types):
        sub = effect if w is None else effect.sel({schema.WAVEFORM_TYPE: w})
        n_units = np.atleast_2d(sub[schema.MAP_N_UNITS].transpose(*order).values)
        same = bool(np.all(n_units == n_units[:1]))
        strip = n_units[0] if same else n_units.sum(axis=0)
        for j, e in enumerate(effects):
            ax = axes[i, j]
            name = schema.MAP_FRACTION_ACTIVATED if e == schema.ACTIVATED else schema.MAP_FRACTION_INACTIVATED
            frac = np.atleast_2d(sub[name].transpose(*order).values)
            cmap = plt.get_cmap(EFFECT_CMAPS[e]).with_extremes(bad="0.88")
            mesh = ax.pcolormesh(edges, y_edges, np.ma.masked_invalid(frac), cmap=cmap, vmin=0.0, vmax=vmax)
            bar = ax.figure.colorbar(mesh, ax=ax, pad=0.01, fraction=0.05)
            bar.set_label(f"fraction {e}")
            ax.axvline(0.0, color="0.3", lw=0.8, ls="--")
            # the count strip: one more row above the powers
            ax.axhline(n_rows - 0.5, color="0.2", lw=0.8)
            rotate = shown.sum() > 24
            for c in np.flatnonzero(shown):
                ax.text(
                    centres[c],
                    n_rows - 0.05,
                    str(int(strip[c])),
                    ha="center",
                    va="center",
                    fontsize=6.5,
                    rotation=90 if rotate else 0,
                    color="0.15" if strip[c] else "0.6",
                )
            if annotate:
                for (r, c), n in np.ndenumerate(n_units):
                    if n and shown[c]:
                        dark = np.isfinite(frac[r, c]) and frac[r, c] > 0.55 * vmax
                        ax.text(
                            centres[c],
                            r,
                            str(n),
                            ha="center",
                            va="center",
                            fontsize=6,
                            color="white" if dark else "0.25",
                        )
            ax.set_ylim(-0.5, n_rows + 0.45)
            ax.set_yticks([*range(n_rows), n_rows - 0.05])
            ax.set_yticklabels(
                [*(f"{p:.3g}" for p in powers), "n / power" if same else "n, all"] if has_power else ["all powers", "n"]
            )
            ax.set_xlim(x_lo, x_hi)
            ax.set_xlabel(DISTANCE_LABEL)
            ax.set_ylabel("power (mW)")
            who = "all units" if w is None else f"{_label(w)} units"
            ax.set_title(f"{who}: {e}", fontsize=10)
    how = "significantly " if effect.attrs.get("significant_only") else ""
    qc = "QC-passing " if effect.attrs.get("qc_only") else ""
    axes[0, 0].figure.suptitle(
        f"Fraction of {qc}units {how}activated / inactivated, by distance from the emitter and power "
        f"({effect.attrs.get('n_sessions', '?')} sessions; grey: no units)",
        fontsize=11,
    )
    return axes


def _edges_from_centres(centres: np.ndarray) -> np.ndarray:
    c = np.asarray(centres, dtype=np.float64)
    step = np.median(np.diff(c)) if c.size > 1 else 1.0
    return np.concatenate([c - step / 2, [c[-1] + step / 2]])


# --------------------------------------------------------------------------
# Depth vs emitter depth
# --------------------------------------------------------------------------
def plot_depth_vs_emitter(result: Any, *, axes: Any = None, effects: tuple[str, ...] = schema.EFFECTS) -> np.ndarray:
    """Depth of responding units against the emitter's depth, identity line, Pearson r per cell type in the legend.

    Parameters
    ----------
    result
        A :class:`opto_cube.analysis.maps.DepthVsEmitter` (from :func:`opto_cube.analysis.maps.depth_vs_emitter`).
    axes
        One axes per effect; default a new figure.
    effects
        Panels: ``"activated"`` and / or ``"inactivated"``.

    Returns
    -------
    numpy.ndarray of matplotlib Axes, one per effect.

    Examples
    --------
    >>> import pandas as pd
    >>> from opto_cube.analysis import maps
    >>> table = pd.DataFrame({"depth_from_surface_um": [100.0, 300.0, 500.0], "distance_um": [10.0, -20.0, 0.0],
    ...                       "waveform_type": ["FS", "FS", "RS"], "qc_pass": True,
    ...                       "activated": [True, True, False], "inactivated": [False, False, True],
    ...                       "significant": True})
    >>> axes = plot_depth_vs_emitter(maps.depth_vs_emitter(table))
    >>> axes[0].get_legend().get_texts()[0].get_text()
    'FS (r = 1.00, n = 2)'
    """
    points, stats = result.points, result.stats
    axes = _axes_grid(axes, 1, len(effects), (5.0 * len(effects), 5.0)).ravel()
    depths = np.concatenate(
        [points[schema.MAP_UNIT_DEPTH].to_numpy(float), points[schema.EMITTER_DEPTH].to_numpy(float)]
    )
    depths = depths[np.isfinite(depths)]
    lo, hi = (float(depths.min()), float(depths.max())) if depths.size else (0.0, 1000.0)
    pad = 0.05 * (hi - lo or 100.0)
    lo, hi = lo - pad, hi + pad
    for ax, e in zip(axes, effects, strict=True):
        ax.plot([lo, hi], [lo, hi], color="0.4", lw=1, ls="--", label="identity", zorder=1)
        for w in stats[schema.WAVEFORM_TYPE].values:
            s = stats.sel({schema.WAVEFORM_TYPE: w, schema.MAP_EFFECT: e})
            n = int(s[schema.MAP_N_RESPONSES])
            if n == 0:
                continue
            sel = points[(points[schema.WAVEFORM_TYPE] == w) & (points[schema.MAP_EFFECT] == e)]
            r = float(s[schema.MAP_PEARSON_R])
            r_text = "n/a" if math.isnan(r) else f"{r:.2f}"
            ax.scatter(
                sel[schema.EMITTER_DEPTH],
                sel[schema.MAP_UNIT_DEPTH],
                s=14,
                alpha=0.45,
                lw=0,
                color=WAVEFORM_COLORS.get(w, "0.45"),
                label=f"{_label(w)} (r = {r_text}, n = {n})",
                zorder=2,
            )
        ax.set_xlim(lo, hi)
        ax.set_ylim(hi, lo)  # depth grows downward
        ax.set_aspect("equal")
        ax.set_xlabel("emitter depth below surface (µm)")
        ax.set_ylabel("unit depth below surface (µm)")
        ax.set_title(f"{e} units")
        handles, labels = ax.get_legend_handles_labels()
        order = sorted(range(len(labels)), key=lambda k: labels[k] == "identity")
        ax.legend([handles[k] for k in order], [labels[k] for k in order], loc="lower left", fontsize=8, framealpha=0.9)
    how = "significantly responding" if stats.attrs.get("significant_only") else "responding"
    axes[0].figure.suptitle(
        f"Depth of {how} units vs emitter depth (a point per unit x condition)",
        fontsize=11,
    )
    return axes


# --------------------------------------------------------------------------
# Modulation index vs spike width
# --------------------------------------------------------------------------
def plot_modulation_index(mi: pd.DataFrame, *, ax: Any = None) -> Any:
    """Modulation index against spike width, RS and FS coloured.

    Parameters
    ----------
    mi
        The output of :func:`opto_cube.analysis.maps.modulation_index` (columns
        ``modulation_index``, ``trough_to_peak_ms``, ``waveform_type``).
    ax
        Axes to draw into; default a new figure.

    Returns
    -------
    matplotlib Axes

    Examples
    --------
    >>> import pandas as pd
    >>> mi = pd.DataFrame({"modulation_index": [0.8, -0.5], "trough_to_peak_ms": [0.3, 0.8],
    ...                    "waveform_type": ["FS", "RS"]})
    >>> plot_modulation_index(mi).get_ylabel()
    'modulation index (stim - pre) / (stim + pre)'
    """
    if ax is None:
        _, ax = pyplot().subplots(figsize=(6.0, 4.5), layout="constrained")
    labels = [w for w in (*schema.WAVEFORM_TYPES, schema.UNKNOWN_LABEL) if (mi[schema.WAVEFORM_TYPE] == w).any()]
    labels += sorted(set(mi[schema.WAVEFORM_TYPE]) - set(labels))
    for w in labels:
        sel = mi[mi[schema.WAVEFORM_TYPE] == w]
        ok = np.isfinite(sel[schema.MAP_MODULATION_INDEX].to_numpy(float)) & np.isfinite(
            sel[schema.TROUGH_TO_PEAK].to_numpy(float)
        )
        median = float(np.median(sel[schema.MAP_MODULATION_INDEX][ok])) if ok.any() else math.nan
        ax.scatter(
            sel[schema.TROUGH_TO_PEAK][ok],
            sel[schema.MAP_MODULATION_INDEX][ok],
            s=18,
            alpha=0.6,
            lw=0,
            color=WAVEFORM_COLORS.get(w, "0.45"),
            label=f"{_label(w)} (n = {int(ok.sum())}, median {median:+.2f})",
        )
    ax.axhline(0.0, color="0.4", lw=0.8, ls="--")
    ax.set_ylim(-1.05, 1.05)
    ax.set_xlabel("spike width, trough to peak (ms)")
    ax.set_ylabel("modulation index (stim - pre) / (stim + pre)")
    ax.set_title("Light drives narrow-spiking cells and silences broad-spiking ones", fontsize=10)
    ax.legend(loc="best", fontsize=8)
    return ax


# --------------------------------------------------------------------------
# PSTH
# --------------------------------------------------------------------------
def plot_psth(
    rate: xr.DataArray,
    *,
    ax: Any = None,
    sem_over: str | None = None,
    color: Any = None,
    label: str | None = None,
    shade: bool = True,
) -> Any:
    """Mean +- sem firing rate around onset, the light pulse shaded.

    Parameters
    ----------
    rate
        A firing rate from :func:`opto_cube.analysis.psth.psth` (dims cluster, time),
        or any DataArray with a ``time`` dim in s; computed here if lazy.
    ax
        Axes to draw into; default a new figure.
    sem_over
        The dim the mean and sem run over: default ``trial`` when present,
        else the other dim (clusters, units); further dims are averaged first.
    color, label
        Of the line.
    shade
        Shade the light pulse(s) ``[0, duration)`` (``attrs["stim_durations_s"]``).

    Returns
    -------
    matplotlib Axes

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> rate = xr.DataArray(np.ones((3, 10)), dims=("cluster", "time"),
    ...                     coords={"time": np.arange(10) * 0.01 - 0.045}, attrs={"stim_durations_s": [0.01]})
    >>> plot_psth(rate).get_xlabel()
    'time from light onset (ms)'
    """
    if schema.TIME not in rate.dims:
        raise ValueError(f"plot_psth needs a {schema.TIME!r} dim, got dims {rate.dims!r}")
    if ax is None:
        _, ax = pyplot().subplots(figsize=(6.0, 4.0), layout="constrained")
    rate = rate.compute()
    others = [d for d in rate.dims if d != schema.TIME]
    if sem_over is None:
        sem_over = schema.TRIAL if schema.TRIAL in others else (str(others[0]) if others else None)
    rest = [d for d in others if d != sem_over]
    if rest:
        rate = rate.mean(rest)
    t_ms = rate[schema.TIME].values * 1000.0
    if sem_over is None:
        mean, sem = rate.values, np.zeros(rate.shape)
    else:
        n = rate.notnull().sum(sem_over)
        mean = rate.mean(sem_over).values
        sem = (rate.std(sem_over, ddof=1) / np.sqrt(n)).where(n > 1, 0.0).values
    line = ax.plot(t_ms, mean, color=color, label=label, lw=1.5, drawstyle="steps-mid")[0]
    ax.fill_between(t_ms, mean - sem, mean + sem, color=line.get_color(), alpha=0.25, lw=0, step="mid")
    if shade:
        durations = np.atleast_1d(rate.attrs.get("stim_durations_s", []))
        for d in np.unique(np.asarray(durations, dtype=np.float64)):
            ax.axvspan(0.0, d * 1000.0, color=LIGHT_COLOR, alpha=0.12, lw=0)
    ax.set_xlabel("time from light onset (ms)")
    ax.set_ylabel("firing rate (Hz)")
    ax.set_xlim(t_ms[0] - (t_ms[1] - t_ms[0]) / 2 if t_ms.size > 1 else t_ms[0], t_ms[-1])
    if not ax.get_title():
        what = f", mean ± sem over {rate.sizes[sem_over]} {sem_over}s" if sem_over else ""
        ax.set_title(f"PSTH{what}", fontsize=10)
    return ax


# --------------------------------------------------------------------------
# Saving, and the figures of `opto-cube maps`
# --------------------------------------------------------------------------
def save_figure(fig: Any, path: str | os.PathLike, dpi: int = 150) -> Path:
    """Save ``fig`` as a PNG atomically (:func:`opto_cube.store.paths.atomic_file`) and close it."""
    try:
        with atomic_file(path) as tmp:
            fig.savefig(tmp, format="png", dpi=dpi)
    finally:
        pyplot().close(fig)
    return Path(path)


def plot_population_psth(
    rate: xr.DataArray, *, axes: Any = None, window_ms: tuple[float, float] | None = (-150, 250)
) -> np.ndarray:
    """One panel per waveform type, one line per power level: population PSTHs (mean +- sem over units).

    Parameters
    ----------
    rate
        From :func:`opto_cube.analysis.psth.population_psth`: dims (power_mw, unit, time),
        ``waveform_type`` a coordinate of ``unit``.
    axes
        One axes per waveform type present; default a new figure.
    window_ms
        Time shown around onset, ms; None for all.

    Returns
    -------
    numpy.ndarray of matplotlib Axes, one per waveform type present.
    """
    plt = pyplot()
    labels = rate[schema.WAVEFORM_TYPE].values
    types = [w for w in (*schema.WAVEFORM_TYPES, schema.UNKNOWN_LABEL) if (labels == w).any()]
    axes = _axes_grid(axes, 1, max(1, len(types)), (5.4 * max(1, len(types)), 4.0)).ravel()
    powers = rate[schema.POWER].values if schema.POWER in rate.dims else [None]
    if window_ms is not None:
        rate = rate.sel({schema.TIME: slice(window_ms[0] / 1000.0, window_ms[1] / 1000.0)})
    for ax, w in zip(axes, types, strict=False):
        units = rate.isel(unit=np.flatnonzero(labels == w))
        base = np.asarray(plt.matplotlib.colors.to_rgb(WAVEFORM_COLORS.get(w, "0.45")))
        for k, p in enumerate(powers):
            sub = units if p is None else units.sel({schema.POWER: p})
            strength = 0.3 + 0.7 * (k + 1) / len(powers)  # light (low power) to full colour (high power)
            plot_psth(
                sub,
                ax=ax,
                sem_over="unit",
                color=tuple(1 - strength * (1 - base)),
                shade=(k == 0),
                label=None if p is None else f"{p:.3g} mW",
            )
        ax.set_title(
            f"{_label(w)} units within {rate.attrs.get('max_distance_um', math.nan):g} µm of the emitter "
            f"(n = {units.sizes['unit']})",
            fontsize=10,
        )
        ax.set_ylim(bottom=0)
        ax.legend(title="power", fontsize=8, title_fontsize=8, loc="upper right")
    axes[0].figure.suptitle(
        f"Population PSTH around the light pulse (shaded), mean ± sem over units, "
        f"{rate.attrs.get('n_sessions', '?')} session(s)",
        fontsize=11,
    )
    return axes
