"""Figure of response latency against distance from the emitter, FS and RS apart, per power.

Draw only: it takes the responses table (columns of ``docs/contract.md``, with
``latency_ms`` and, when present, ``light_artifact``) and imports no analysis
module; matplotlib is imported inside the function (Agg without a display).

Examples
--------
>>> import pandas as pd
>>> table = pd.DataFrame({"distance_um": [0.0, 150.0, -100.0, 40.0], "power_mw": [4.0, 4.0, 1.0, 4.0],
...                       "waveform_type": ["FS", "FS", "RS", "RS"], "latency_ms": [3.0, 5.0, 8.0, float("nan")]})
>>> ax = plot_latency_vs_distance(table)
>>> ax.get_xlabel(), ax.get_ylabel()
('distance from emitter (µm; + deeper)', 'response onset latency (ms)')
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from opto_cube import schema
from opto_cube.figures.plot import DISTANCE_LABEL, WAVEFORM_COLORS, pyplot

__all__ = ["plot_latency_vs_distance"]

WAVEFORM_MARKERS = {"RS": "o", "FS": "^"}
LATENCY_LABEL = "response onset latency (ms)"


def plot_latency_vs_distance(
    table: pd.DataFrame,
    ax: Any = None,
    *,
    include_artifacts: bool = False,
    distance_bin_um: float = 100.0,
) -> Any:
    """Latency against distance from the emitter: FS and RS apart (colour, marker), one shade per power.

    Each response with a latency is a point; a line joins the medians of ``distance_bin_um``
    bins for each (waveform type, power), darker for higher power. Rows flagged
    ``light_artifact`` are left out unless ``include_artifacts``.

    Parameters
    ----------
    table
        The responses table: ``distance_um``, ``power_mw``, ``waveform_type``, ``latency_ms``
        (and ``light_artifact`` when computed).
    ax
        A matplotlib Axes to draw into; a new figure by default.
    include_artifacts
        Keep the rows of light-artifact units.
    distance_bin_um
        Width of the distance bins of the median lines, um.

    Returns
    -------
    matplotlib.axes.Axes

    Examples
    --------
    >>> table = pd.DataFrame({"distance_um": [0.0, 10.0], "power_mw": [4.0, 4.0], "waveform_type": ["FS", "RS"],
    ...                       "latency_ms": [3.0, 7.0], "light_artifact": [False, True]})
    >>> ax = plot_latency_vs_distance(table)
    >>> [t.get_text() for t in ax.get_legend().get_texts()]
    ['FS, 4 mW']
    """
    needed = (schema.DISTANCE, schema.POWER, schema.WAVEFORM_TYPE, schema.LATENCY)
    missing = [c for c in needed if c not in table.columns]
    if missing:
        raise ValueError(f"the table lacks the column(s) {missing} needed for latency against distance")
    if not distance_bin_um > 0:
        raise ValueError(f"distance_bin_um must be positive, got {distance_bin_um!r}")
    rows = table
    if not include_artifacts and schema.LIGHT_ARTIFACT in table.columns:
        rows = rows[~rows[schema.LIGHT_ARTIFACT].astype(bool)]
    rows = rows[np.isfinite(rows[schema.LATENCY].to_numpy(dtype=np.float64))]
    plt = pyplot()
    if ax is None:
        _, ax = plt.subplots(figsize=(6.4, 4.2), layout="constrained")
    # one line per power as the legend shows it (3 significant digits): calibrated powers of different
    # sessions differ by more than the within-session tolerance, and would repeat a label otherwise
    shown = rows[schema.POWER].map(lambda p: float(f"{p:.3g}"))
    powers = np.sort(table[schema.POWER].dropna().map(lambda p: float(f"{p:.3g}")).unique())
    shades = np.linspace(0.35, 1.0, max(powers.size, 1))
    for waveform in schema.WAVEFORM_TYPES:
        base = np.asarray(plt.matplotlib.colors.to_rgb(WAVEFORM_COLORS.get(waveform, "0.45")))
        for power, strength in zip(powers, shades, strict=False):
            sub = rows[(rows[schema.WAVEFORM_TYPE] == waveform) & (shown == power)]
            if sub.empty:
                continue
            color = tuple(1 - strength * (1 - base))
            distance = sub[schema.DISTANCE].to_numpy(dtype=np.float64)
            value = sub[schema.LATENCY].to_numpy(dtype=np.float64)
            ax.scatter(distance, value, s=10, alpha=0.35, color=color, marker=WAVEFORM_MARKERS.get(waveform, "o"), lw=0)
            centre = np.round(distance / distance_bin_um) * distance_bin_um
            medians = pd.Series(value).groupby(centre).median()
            ax.plot(
                medians.index,
                medians.to_numpy(),
                color=color,
                lw=1.6,
                marker=WAVEFORM_MARKERS.get(waveform),
                ms=4,
                label=f"{waveform}, {power:g} mW",
            )
    ax.axvline(0.0, color="0.4", lw=0.8, ls="--")
    ax.set_xlabel(DISTANCE_LABEL)
    ax.set_ylabel(LATENCY_LABEL)
    ax.set_title("response latency against distance (median per bin)")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small", frameon=False)
    return ax
