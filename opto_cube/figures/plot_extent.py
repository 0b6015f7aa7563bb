"""Figures of the spatial extent and the power response: drawing only, from computed results.

Every function takes what :func:`opto_cube.analysis.spatial.spatial_extent` (an
:class:`xarray.Dataset`) or :func:`opto_cube.analysis.power_response.power_response`
(a table) returned, draws into ``ax`` / ``axes`` (a new figure when None) and
returns them. matplotlib is imported inside the functions. RS and FS keep the
colours of the other figures (``opto_cube.figures.plot.WAVEFORM_COLORS``); powers are
shades of the type's colour, light to dark.

Examples
--------
>>> import numpy as np, pandas as pd
>>> from opto_cube.analysis.spatial import spatial_extent
>>> rng = np.random.default_rng(1)
>>> d = rng.uniform(-700, 700, 400)
>>> table = pd.DataFrame({"session_id": np.repeat(["a", "b"], 200), "cluster": np.arange(400), "emitter": 1,
...     "power_mw": np.tile([1.0, 4.0], 200), "duration_s": 0.05, "distance_um": d, "waveform_type": "FS",
...     "qc_pass": True, "activated": rng.random(400) < np.exp(-np.abs(d) / 250), "inactivated": False,
...     "significant": True})
>>> ext = spatial_extent(table, n_boot=50, waveform_types=["FS"], effects=["activated"])
>>> axes = plot_extent_profiles(ext, pairs=[("FS", "activated")])
>>> axes[0].get_xlabel()
'distance from emitter, |d| (µm)'
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from opto_cube import schema
from opto_cube.figures.plot import WAVEFORM_COLORS, pyplot  # one source of colours and of the backend choice

__all__ = [
    "PAIRS",
    "plot_extent_profiles",
    "plot_p50_vs_distance",
    "plot_power_curves",
    "plot_radius_vs_power",
]

PAIRS = (("FS", schema.ACTIVATED), ("RS", schema.INACTIVATED))  # the effects each type shows in the model
ABS_DISTANCE_LABEL = "distance from emitter, |d| (µm)"
SIGNED_DISTANCE_LABEL = "distance from emitter (µm; + deeper)"
POWER_LABEL = "power (mW)"
OTHER_COLOR = WAVEFORM_COLORS[schema.UNKNOWN_LABEL]
EFFECT_MARKERS = {schema.ACTIVATED: "o", schema.INACTIVATED: "s"}


def _axes(axes: Any, n: int, size: tuple[float, float]) -> np.ndarray:
    if axes is None:
        _, axes = pyplot().subplots(1, n, figsize=(size[0] * n, size[1]), squeeze=False, layout="constrained")
        return axes.ravel()
    axes = np.atleast_1d(np.asarray(axes, dtype=object)).ravel()
    if axes.size != n:
        raise ValueError(f"expected {n} axes, got {axes.size}")
    return axes


def _one_ax(ax: Any, size: tuple[float, float] = (4.5, 3.5)) -> Any:
    if ax is None:
        _, ax = pyplot().subplots(figsize=size, layout="constrained")
    return ax


def _shades(waveform_type: str, n: int) -> list[Any]:
    """``n`` shades of the type's colour, light (low power) to the full colour (high power)."""
    from matplotlib.colors import to_rgb

    base = np.asarray(to_rgb(WAVEFORM_COLORS.get(waveform_type, OTHER_COLOR)))
    mix = np.linspace(0.55, 0.0, n) if n > 1 else np.zeros(1)
    return [tuple(base + (1.0 - base) * m) for m in mix]


def _span(n: np.ndarray) -> str:
    """``"12"`` or ``"12-15"``: the range of counts over powers."""
    if n.size == 0:
        return "0"
    lo, hi = int(n.min()), int(n.max())
    return f"{lo}" if lo == hi else f"{lo}-{hi}"


def _check_extent(extent: Any, what: str) -> None:
    if not isinstance(extent, xr.Dataset) or schema.EXTENT_RADIUS not in extent:
        raise TypeError(f"{what} expects the Dataset of opto_cube.spatial_extent, got {type(extent).__name__!r}")


def _pairs(extent: xr.Dataset, pairs: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    wt = set(extent[schema.WAVEFORM_TYPE].values.tolist())
    ef = set(extent[schema.EXTENT_EFFECT].values.tolist())
    missing = [p for p in pairs if p[0] not in wt or p[1] not in ef]
    if missing:
        raise ValueError(f"the extent has no {missing!r}; it has waveform types {sorted(wt)} and effects {sorted(ef)}")
    return [(str(p[0]), str(p[1])) for p in pairs]


def plot_extent_profiles(
    extent: xr.Dataset, *, pairs: Sequence[tuple[str, str]] = PAIRS, axes: Any = None
) -> np.ndarray:
    """Fraction of units responding against |distance|: observed bins, fitted profile and its interval, per power.

    One panel per (waveform type, effect) pair. Dots are the observed
    fractions in the ``|distance|`` bins (size grows with the number of
    observations), lines the fitted logistic profile with its pointwise
    bootstrap band, and a tick on each line marks the radius (half the
    fraction at the emitter). The legend gives each power's radius and n.

    Parameters
    ----------
    extent
        From :func:`opto_cube.spatial_extent`.
    pairs
        ``(waveform_type, effect)`` per panel; default FS activated, RS inactivated.
    axes
        ``len(pairs)`` axes; default a new figure.

    Returns
    -------
    ndarray of Axes

    Examples
    --------
    >>> import xarray as xr
    >>> plot_extent_profiles(xr.Dataset())
    Traceback (most recent call last):
    ...
    TypeError: plot_extent_profiles expects the Dataset of opto_cube.spatial_extent, got 'Dataset'
    """
    _check_extent(extent, "plot_extent_profiles")
    pairs = _pairs(extent, pairs)
    axes = _axes(axes, len(pairs), (4.6, 3.6))
    grid = extent[schema.EXTENT_DISTANCE].values
    centres = extent[schema.EXTENT_DISTANCE_BIN].values
    powers = extent[schema.POWER].values
    for ax, (wtype, effect) in zip(axes, pairs, strict=True):
        colours = _shades(wtype, powers.size)
        for k, power in enumerate(powers):
            sel = extent.sel({schema.WAVEFORM_TYPE: wtype, schema.EXTENT_EFFECT: effect}).isel({schema.POWER: k})
            n_units = int(sel[schema.EXTENT_N_UNITS])
            if n_units == 0:
                continue
            r, lo, hi = (
                float(sel[v]) for v in (schema.EXTENT_RADIUS, schema.EXTENT_RADIUS_LOW, schema.EXTENT_RADIUS_HIGH)
            )
            label = (
                f"{power:.3g} mW: r = {r:.0f} µm [{lo:.0f}, {hi:.0f}], n = {n_units}"
                if np.isfinite(r)
                else (f"{power:.3g} mW: no fit, n = {n_units}")
            )
            n_bin = sel[schema.EXTENT_N_IN_BIN].values
            has = n_bin > 0
            ax.scatter(
                centres[has],
                sel[schema.EXTENT_OBSERVED].values[has],
                s=6 + 40 * n_bin[has] / max(n_bin.max(), 1),
                color=colours[k],
                alpha=0.8,
                edgecolor="none",
                zorder=3,
            )
            profile = sel[schema.EXTENT_PROFILE].values
            ax.fill_between(
                grid,
                sel[schema.EXTENT_PROFILE_LOW].values,
                sel[schema.EXTENT_PROFILE_HIGH].values,
                color=colours[k],
                alpha=0.18,
                lw=0,
            )
            ax.plot(grid, profile, color=colours[k], lw=1.8, label=label)
            if np.isfinite(r):
                ax.plot([r], [float(sel[schema.EXTENT_AT_EMITTER]) / 2], marker="|", ms=12, mew=2, color=colours[k])
        ax.set_xlabel(ABS_DISTANCE_LABEL)
        ax.set_ylabel(f"fraction significantly {effect}")
        ax.set_title(f"{wtype} {effect}")
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlim(0, grid.max() if grid.size else 1)
        ax.legend(fontsize=7, frameon=False, title="power: radius [95 % CI], units", title_fontsize=7)
    return axes


def plot_radius_vs_power(
    extent: xr.Dataset, *, pairs: Sequence[tuple[str, str]] = PAIRS, ax: Any = None, log_power: bool = True
) -> Any:
    """Radius against power with its bootstrap interval, one line per (waveform type, effect) pair.

    Parameters
    ----------
    extent
        From :func:`opto_cube.spatial_extent`.
    pairs
        ``(waveform_type, effect)`` lines; default FS activated, RS inactivated.
    ax
        Axes to draw into; default a new figure.
    log_power
        Power on a log axis (levels usually double).

    Returns
    -------
    matplotlib Axes

    Examples
    --------
    >>> import xarray as xr
    >>> plot_radius_vs_power(xr.Dataset({"x": 1}))
    Traceback (most recent call last):
    ...
    TypeError: plot_radius_vs_power expects the Dataset of opto_cube.spatial_extent, got 'Dataset'
    """
    _check_extent(extent, "plot_radius_vs_power")
    pairs = _pairs(extent, pairs)
    ax = _one_ax(ax)
    powers = extent[schema.POWER].values
    for wtype, effect in pairs:
        sel = extent.sel({schema.WAVEFORM_TYPE: wtype, schema.EXTENT_EFFECT: effect})
        r = sel[schema.EXTENT_RADIUS].values
        lo, hi = sel[schema.EXTENT_RADIUS_LOW].values, sel[schema.EXTENT_RADIUS_HIGH].values
        finite_hi = np.where(np.isfinite(hi), hi, r)
        yerr = np.vstack([r - lo, finite_hi - r])
        n = sel[schema.EXTENT_N_UNITS].values
        ax.errorbar(
            powers,
            r,
            yerr=np.where(np.isfinite(yerr), yerr, 0),
            color=WAVEFORM_COLORS.get(wtype, OTHER_COLOR),
            marker=EFFECT_MARKERS.get(effect, "o"),
            capsize=3,
            lw=1.5,
            label=f"{wtype} {effect} (n = {_span(n)} units)",
        )
    if log_power and np.all(powers > 0) and powers.size > 1:
        ax.set_xscale("log")
        ax.set_xticks(powers, [f"{p:.3g}" for p in powers])
        ax.minorticks_off()
    ax.set_xlabel(POWER_LABEL)
    ax.set_ylabel("radius: half the fraction at the emitter (µm)")
    ax.set_title(f"spatial extent ({extent.attrs.get('confidence', 0.95):.0%} bootstrap CI)")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=7, frameon=False)
    return ax


def _check_fits(fits: Any, what: str) -> None:
    needed = (schema.PR_P50, schema.PR_MAX_EFFECT, schema.PR_FIT_OK, schema.DISTANCE, schema.WAVEFORM_TYPE)
    if not isinstance(fits, pd.DataFrame) or any(c not in fits for c in needed):
        raise TypeError(
            f"{what} expects the table of opto_cube.analysis.power_response.power_response "
            f"(columns {', '.join(needed)}), got {type(fits).__name__!r}"
        )


def plot_p50_vs_distance(
    fits: pd.DataFrame, *, ax: Any = None, only_ok: bool = True, only_responding: bool = True
) -> Any:
    """Half-maximal power of each unit against its signed distance from the emitter, RS and FS.

    Parameters
    ----------
    fits
        From :func:`opto_cube.analysis.power_response.power_response`.
    ax
        Axes to draw into; default a new figure.
    only_ok, only_responding
        Draw only good fits (``fit_ok``) of units responding at some power.

    Returns
    -------
    matplotlib Axes

    Examples
    --------
    >>> import pandas as pd
    >>> fits = pd.DataFrame({"p50_mw": [0.5, 0.7], "max_effect_pct": [500.0, -80.0], "fit_ok": True,
    ...                      "responding": True, "distance_um": [-40.0, 120.0], "waveform_type": ["FS", "RS"]})
    >>> plot_p50_vs_distance(fits).get_ylabel()
    'half-maximal power, p50 (mW)'
    """
    _check_fits(fits, "plot_p50_vs_distance")
    ax = _one_ax(ax)
    keep = np.ones(len(fits), dtype=bool)
    if only_ok:
        keep &= fits[schema.PR_FIT_OK].to_numpy(dtype=bool)
    if only_responding and "responding" in fits:
        keep &= fits["responding"].to_numpy(dtype=bool)
    shown = fits[keep]
    for wtype in schema.WAVEFORM_TYPES:
        sub = shown[shown[schema.WAVEFORM_TYPE] == wtype]
        ax.scatter(
            sub[schema.DISTANCE],
            sub[schema.PR_P50],
            s=10,
            alpha=0.6,
            edgecolor="none",
            color=WAVEFORM_COLORS[wtype],
            label=f"{wtype} (n = {len(sub)})",
        )
    if len(shown) and (shown[schema.PR_P50] > 0).all():
        from matplotlib.ticker import FuncFormatter

        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        # minor ticks labelled only at 2 and 5 x 10^k: every minor label crowds the axis over a decade
        ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if f"{v:.0e}"[0] in "25" else ""))
    ax.axvline(0.0, color="0.3", lw=0.8, ls="--")
    ax.set_xlabel(SIGNED_DISTANCE_LABEL)
    ax.set_ylabel("half-maximal power, p50 (mW)")
    ax.set_title("power response" + (" (good fits)" if only_ok else ""))
    ax.legend(fontsize=7, frameon=False)
    return ax


def plot_power_curves(
    fits: pd.DataFrame, points: pd.DataFrame | None = None, *, n_examples: int = 6, ax: Any = None
) -> Any:
    """Fitted power-response curves of example units (good fits of responding units, spread over distance).

    Parameters
    ----------
    fits
        From :func:`opto_cube.analysis.power_response.power_response`.
    points
        The responses table the fits came from: its ``pct_change`` at each
        power of the example units (same session, cluster, emitter and pulse
        duration) are drawn as dots. Optional.
    n_examples
        How many units; chosen evenly along ``|distance|`` among the good fits.
    ax
        Axes to draw into; default a new figure.

    Returns
    -------
    matplotlib Axes

    Examples
    --------
    >>> import pandas as pd
    >>> fits = pd.DataFrame({"session_id": "s", "cluster": [1, 2], "emitter": 3, "duration_s": 0.05,
    ...     "p50_mw": [0.5, 0.7], "max_effect_pct": [500.0, -80.0], "fit_ok": True, "responding": True,
    ...     "distance_um": [-40.0, 120.0], "waveform_type": ["FS", "RS"], "max_power_mw": 4.0})
    >>> len(plot_power_curves(fits).get_legend().get_texts())  # one curve per unit
    2
    """
    _check_fits(fits, "plot_power_curves")
    ax = _one_ax(ax)
    good = fits[fits[schema.PR_FIT_OK].to_numpy(dtype=bool)]
    if "responding" in good:
        good = good[good["responding"].to_numpy(dtype=bool)]
    good = good.iloc[np.argsort(np.abs(good[schema.DISTANCE].to_numpy()), kind="stable")]
    if len(good) > n_examples:
        good = good.iloc[np.unique(np.linspace(0, len(good) - 1, n_examples).round().astype(int))]
    top = float(good["max_power_mw"].max()) if "max_power_mw" in good and len(good) else 1.0
    power = np.linspace(0.0, top * 1.05, 200)
    for _, row in good.iterrows():
        distance = float(np.round(row[schema.DISTANCE])) + 0.0  # + 0.0: no "-0 um" in the legend
        colour = WAVEFORM_COLORS.get(row[schema.WAVEFORM_TYPE], OTHER_COLOR)
        curve = row[schema.PR_MAX_EFFECT] * power / (power + row[schema.PR_P50])  # the fitted saturating curve
        ax.plot(
            power,
            curve,
            color=colour,
            lw=1.4,
            alpha=0.85,
            label=f"{row[schema.WAVEFORM_TYPE]}, d = {distance:.0f} µm, p50 = {row[schema.PR_P50]:.2g} mW",
        )
        if points is not None:
            match = np.ones(len(points), dtype=bool)
            for c in (schema.SESSION_ID, schema.CLUSTER, schema.EMITTER):
                match &= (points[c] == row[c]).to_numpy()
            if schema.DURATION in points and schema.DURATION in row and np.isfinite(row[schema.DURATION]):
                match &= np.isclose(points[schema.DURATION].to_numpy(dtype=float), row[schema.DURATION])
            ax.scatter(points[schema.POWER][match], points[schema.PCT_CHANGE][match], color=colour, s=14, zorder=3)
    ax.axhline(0.0, color="0.3", lw=0.8)
    ax.set_xlabel(POWER_LABEL)
    ax.set_ylabel("change in rate (%)")
    ax.set_title(f"example units (n = {len(good)} of {int(fits[schema.PR_FIT_OK].sum())} good fits)")
    ax.legend(fontsize=6, frameon=False)
    return ax
