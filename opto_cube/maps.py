"""How the optogenetic effect spreads in depth, grows with power and differs between RS and FS cells.

Every function here reads the long responses table of ``interface.md`` (one
row per session x cluster x condition, as :func:`opto_cube.responses_table`
writes it), so maps pool any number of sessions:

- :func:`effect_map`: fraction of units activated / inactivated against signed
  distance from the emitter, power and waveform type (a labelled
  :class:`xarray.Dataset`, bin centres as coordinates and bin edges in attrs,
  in the manner of pynapple's tuning curves);
- :func:`depth_vs_emitter`: depth of responding units against the depth of the
  emitter that drove them, with Pearson's r (the published figure);
- :func:`modulation_index`: ``(stim - pre) / (stim + pre)`` against spike width;
- :func:`psth`: the trial-averaged rate around onset, lazily from a cube;
- :func:`maps` / :func:`run_maps`: the effect map of stores, a catalog or a
  table, and the whole ``opto-cube maps`` job (netCDF plus figures).

Examples
--------
>>> import pandas as pd
>>> table = pd.DataFrame({
...     "distance_um": [-20.0, 30.0, 40.0, 400.0], "power_mw": [4.0, 4.0, 4.0000001, 4.0],
...     "waveform_type": ["FS", "FS", "RS", "FS"], "qc_pass": True,
...     "activated": [True, True, False, False], "inactivated": [False, False, True, False],
...     "significant": True})
>>> m = effect_map(table, distance_bin_um=100.0)
>>> m.fraction_activated.sel(waveform_type="FS", distance_um=0.0).values
array([1.])
>>> m.attrs["distance_edges_um"].tolist()
[-450.0, -350.0, -250.0, -150.0, -50.0, 50.0, 150.0, 250.0, 350.0, 450.0]
"""

from __future__ import annotations

import math
import os
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from . import schema
from .catalog import cubes_of

__all__ = [
    "DepthVsEmitter",
    "depth_vs_emitter",
    "distance_edges",
    "effect_map",
    "maps",
    "modulation_index",
    "population_psth",
    "psth",
    "run_maps",
    "save_netcdf",
    "select_conditions",
]

UNKNOWN_WAVEFORM_POLICIES = ("drop", "keep")
MAPS_NETCDF = "maps.nc"
FIGURES = ("effect_map.png", "depth_vs_emitter.png", "modulation_index.png", "psth.png")

_EFFECT_MAP_COLUMNS = (
    schema.DISTANCE,
    schema.QC_PASS,
    schema.WAVEFORM_TYPE,
    schema.ACTIVATED,
    schema.INACTIVATED,
    schema.SIGNIFICANT,
)
_BOOL_COLUMNS = (schema.QC_PASS, schema.ACTIVATED, schema.INACTIVATED, schema.SIGNIFICANT)


# --------------------------------------------------------------------------
# Checking and normalising the table
# --------------------------------------------------------------------------
def _table(table: Any, required: Iterable[str], what: str) -> pd.DataFrame:
    """A copy of ``table`` with the columns a map needs, their types normalised.

    Waveform types become strings with ``""`` for unknown (a CSV reader turns
    empty strings into NaN); boolean columns read with missing values count
    missing as False.
    """
    if not isinstance(table, pd.DataFrame):
        raise TypeError(f"{what} expects the responses table as a pandas DataFrame, got {type(table).__name__!r}")
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise ValueError(
            f"{what}: the table lacks the column(s) {', '.join(map(repr, missing))}; expected the responses "
            f"table of opto_cube.responses_table (columns {', '.join(table.columns.map(str))})"
        )
    df = table.copy()
    if schema.WAVEFORM_TYPE in df:
        df[schema.WAVEFORM_TYPE] = df[schema.WAVEFORM_TYPE].fillna(schema.UNKNOWN_LABEL).astype(str).str.strip()
    for c in _BOOL_COLUMNS:
        if c in df and df[c].dtype != bool:
            df[c] = df[c].astype("boolean").fillna(False).astype(bool)
    return df


def _check_unknown_policy(unknown_waveform: str) -> None:
    if unknown_waveform not in UNKNOWN_WAVEFORM_POLICIES:
        raise ValueError(f"unknown_waveform must be one of {UNKNOWN_WAVEFORM_POLICIES}, got {unknown_waveform!r}")


def _waveform_labels(values: pd.Series, unknown_waveform: str) -> list[str]:
    """RS, FS always (in that order); then other labels present, sorted; unknown ``""`` last when kept."""
    present = set(values.unique())
    others = sorted(present - set(schema.WAVEFORM_TYPES) - {schema.UNKNOWN_LABEL})
    labels = [*schema.WAVEFORM_TYPES, *others]
    if unknown_waveform == "keep":
        labels.append(schema.UNKNOWN_LABEL)
    return labels


# --------------------------------------------------------------------------
# Selecting conditions (rows of the table, trials of a cube)
# --------------------------------------------------------------------------
def _match(values: np.ndarray, wanted: Any, rtol: float, what: str) -> np.ndarray:
    """Which ``values`` equal one of ``wanted`` (within ``rtol``); ``"max"``/``"min"``: the extreme value.

    Raises ValueError naming what is available when a wanted value matches nothing.
    """
    values = np.asarray(values, dtype=np.float64)
    if isinstance(wanted, str):
        if wanted not in ("max", "min") or not np.isfinite(values).any():
            raise ValueError(f"{what} must be a value, a list of values, 'max' or 'min', got {wanted!r}")
        wanted = np.nanmax(values) if wanted == "max" else np.nanmin(values)
    try:
        w = np.atleast_1d(np.asarray(wanted, dtype=np.float64))
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a value, a list of values, 'max' or 'min', got {wanted!r}") from None
    close = np.isclose(values[:, None], w[None, :], rtol=rtol, atol=1e-12)
    missing = w[~close.any(axis=0)]
    if missing.size:
        finite = values[np.isfinite(values)]
        available = schema.power_levels(finite)[1] if what == schema.POWER else np.unique(finite)
        raise ValueError(f"no {what} {missing.tolist()!r}; there are {np.round(available, 6).tolist()!r}")
    return close.any(axis=1)


_RTOL = {schema.EMITTER: 0.0, schema.POWER: schema.POWER_RTOL, schema.DURATION: 1e-9}


def select_conditions(
    table: pd.DataFrame, *, emitter: Any = None, power_mw: Any = None, duration_s: Any = None
) -> pd.DataFrame:
    """The rows of the responses table of some conditions.

    Each selector is a value, a list of values, ``"max"`` or ``"min"`` (the
    largest / smallest in the table), or None (all). Powers match within a
    relative 1e-6 (one power level), durations within 1e-9.

    Examples
    --------
    >>> import pandas as pd
    >>> table = pd.DataFrame({"emitter": [1, 1, 2], "power_mw": [1.0, 4.0000001, 4.0],
    ...                       "duration_s": [0.01, 0.05, 0.05]})
    >>> select_conditions(table, power_mw=4.0, duration_s="max").index.tolist()
    [1, 2]
    >>> select_conditions(table, emitter=[2]).index.tolist()
    [2]
    """
    selectors = {schema.EMITTER: emitter, schema.POWER: power_mw, schema.DURATION: duration_s}
    needed = [name for name, wanted in selectors.items() if wanted is not None]
    _table(table, needed, "select_conditions")
    keep = np.ones(len(table), dtype=bool)
    for name in needed:
        keep &= _match(table[name].to_numpy(dtype=np.float64), selectors[name], _RTOL[name], name)
    return table[keep]


# --------------------------------------------------------------------------
# Effect map
# --------------------------------------------------------------------------
def distance_edges(
    distance_um: Any, bin_um: float = schema.MAP_DEFAULT_DISTANCE_BIN_UM, range_um: Sequence[float] | None = None
) -> np.ndarray:
    """Edges of the signed-distance bins of a map, um.

    By default the bins are centred on 0 (a bin straddles the emitter, from
    ``-bin_um / 2`` to ``bin_um / 2``) and extend symmetrically to cover
    every finite distance. With ``range_um=(lo, hi)`` the edges run from
    ``lo`` in steps of ``bin_um``, the last edge rounded up to a whole bin.

    Examples
    --------
    >>> distance_edges([-120.0, 10.0, 260.0], bin_um=100.0).tolist()
    [-350.0, -250.0, -150.0, -50.0, 50.0, 150.0, 250.0, 350.0]
    >>> distance_edges([], bin_um=50.0, range_um=(-100, 80)).tolist()
    [-100.0, -50.0, 0.0, 50.0, 100.0]
    """
    if not (isinstance(bin_um, (int, float, np.number)) and math.isfinite(bin_um) and bin_um > 0):
        raise ValueError(f"distance_bin_um must be a positive number of um, got {bin_um!r}")
    if range_um is not None:
        try:
            lo, hi = (float(v) for v in range_um)
        except (TypeError, ValueError):
            raise ValueError(f"distance_range_um must be a (low, high) pair of um, got {range_um!r}") from None
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise ValueError(f"distance_range_um must be finite with low < high, got {range_um!r}")
        n = max(1, math.ceil((hi - lo) / bin_um - 1e-9))
        return lo + bin_um * np.arange(n + 1, dtype=np.float64)
    d = np.asarray(distance_um, dtype=np.float64)
    d = d[np.isfinite(d)]
    if d.size == 0:
        raise ValueError("no finite distance_um to map; pass distance_range_um to map an empty table")
    k = max(0, math.floor(float(np.abs(d).max()) / bin_um - 0.5) + 1)  # (k + 1/2) bins > the largest |d|
    return bin_um * (np.arange(-k, k + 2, dtype=np.float64) - 0.5)


def _bin_codes(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin of each value in right-open bins ``[edges[i], edges[i+1])``; -1 outside (and for NaN)."""
    code = np.searchsorted(edges, values, side="right") - 1
    code[~np.isfinite(values) | (code >= edges.size - 1)] = -1
    return code


def _centres(edges: np.ndarray) -> np.ndarray:
    return (edges[:-1] + edges[1:]) / 2.0


def _group_power(
    df: pd.DataFrame, power_bins_mw: Sequence[float] | None
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Codes and coordinate of the power dimension: levels (relative 1e-6) or bins of ``power_bins_mw``."""
    p = df[schema.POWER].to_numpy(dtype=np.float64)
    if power_bins_mw is None:
        code = np.full(p.size, -1, dtype=np.int64)
        finite = np.isfinite(p)
        index, levels = schema.power_levels(p[finite])
        code[finite] = index
        return code, levels, {"power_grouping": f"levels (powers equal within a relative {schema.POWER_RTOL:g})"}
    edges = np.asarray(power_bins_mw, dtype=np.float64)
    if edges.ndim != 1 or edges.size < 2 or not np.all(np.isfinite(edges)) or np.any(np.diff(edges) <= 0):
        raise ValueError(f"power_bins_mw must be at least two increasing finite edges, mW, got {power_bins_mw!r}")
    return _bin_codes(p, edges), _centres(edges), {"power_grouping": "bins", schema.MAP_POWER_EDGES: edges}


def effect_map(
    table: pd.DataFrame,
    *,
    distance_bin_um: float = schema.MAP_DEFAULT_DISTANCE_BIN_UM,
    distance_range_um: Sequence[float] | None = None,
    by: Sequence[str] = (schema.POWER, schema.WAVEFORM_TYPE),
    significant_only: bool = True,
    qc_only: bool = True,
    power_bins_mw: Sequence[float] | None = None,
    unknown_waveform: str = "drop",
) -> xr.Dataset:
    """Fraction of units activated and inactivated against signed distance from the emitter, power and cell type.

    Each row of the responses table is one unit under one condition; a map
    bin counts the rows whose ``distance_um`` (unit depth minus emitter depth,
    positive when the unit lies deeper) falls in it, and the fractions of
    them classified activated / inactivated.

    Parameters
    ----------
    table
        The responses table (interface.md), any number of sessions.
    distance_bin_um
        Width of the distance bins, um. Bins are right-open ``[a, b)``.
    distance_range_um
        ``(low, high)`` of the bins, um; rows outside are left out. Default:
        bins centred on 0 covering every row (see :func:`distance_edges`).
    by
        Further dimensions, each a column of the table. ``power_mw`` is
        grouped into levels (powers equal within a relative 1e-6 are one
        level, its coordinate the mean power of its rows, as in
        :func:`opto_cube.schema.power_levels`) unless ``power_bins_mw`` is
        given; ``waveform_type`` always has the labels RS and FS; any other
        column (``emitter``, ``duration_s``, ``session_id``, ...) gets one
        label per distinct value. ``()`` pools everything.
    significant_only
        Count a row as activated / inactivated only when it is also
        ``significant`` (paired t-test p < 0.005), the published post-filter.
        The denominator is every row in the bin either way.
    qc_only
        Only units that pass quality control (``qc_pass``).
    power_bins_mw
        Edges of power bins, mW, to bin powers instead of grouping them into
        levels: calibrated powers of different sessions (or lasers) differ by
        more than 1e-6, and bins put e.g. 0.98 and 1.02 mW together. The
        coordinate is the bin centre; the edges are in ``attrs["power_edges_mw"]``.
    unknown_waveform
        ``"drop"`` (default): rows of unknown waveform type (``""``) are left
        out of the map, also when ``waveform_type`` is not in ``by`` (so a
        pooled map is the sum of the RS and FS maps). ``"keep"``: they are
        counted, under the label ``""`` when ``waveform_type`` is in ``by``.

    Returns
    -------
    xarray.Dataset
        Dimensions ``distance_um`` (bin centres) and those of ``by``, in
        order. Variables ``fraction_activated`` and ``fraction_inactivated``
        (NaN where a bin has no rows), ``n_units`` (unit-condition rows per
        bin), ``n_activated``, ``n_inactivated``. Attributes: the bin edges
        ``distance_edges_um`` (and ``power_edges_mw``), the options used and
        the number of sessions.

    Examples
    --------
    >>> import pandas as pd
    >>> table = pd.DataFrame({
    ...     "session_id": ["a", "a", "b", "b"], "distance_um": [-60.0, 10.0, 20.0, 250.0],
    ...     "power_mw": [1.0, 1.0, 1.0000000004, 4.0], "waveform_type": ["FS", "FS", "RS", ""],
    ...     "qc_pass": True, "activated": [False, True, False, False],
    ...     "inactivated": [False, False, True, False], "significant": True})
    >>> m = effect_map(table, distance_bin_um=100.0)
    >>> dict(m.sizes)
    {'distance_um': 3, 'power_mw': 1, 'waveform_type': 2}
    >>> m.power_mw.values  # one level: the mean of its jittered powers (select with method="nearest")
    array([1.])
    >>> m.distance_um.values, m.waveform_type.values.tolist()
    (array([-100.,    0.,  100.]), ['RS', 'FS'])
    >>> m.n_units.sel(power_mw=1.0, method="nearest").values.T.tolist()  # the unknown-type row was dropped
    [[0, 1, 0], [1, 1, 0]]
    >>> m.fraction_activated.sel(power_mw=1.0, method="nearest").sel(waveform_type="FS").values
    array([ 0.,  1., nan])
    """
    _check_unknown_policy(unknown_waveform)
    by = (by,) if isinstance(by, str) else tuple(by)
    if len(set(by)) != len(by) or schema.DISTANCE in by:
        raise ValueError(f"by must name distinct columns other than {schema.DISTANCE!r}, got {by!r}")
    df = _table(table, (*_EFFECT_MAP_COLUMNS, *by), "effect_map")
    if qc_only:
        df = df[df[schema.QC_PASS]]
    if unknown_waveform == "drop":
        df = df[df[schema.WAVEFORM_TYPE] != schema.UNKNOWN_LABEL]

    edges = distance_edges(df[schema.DISTANCE].to_numpy(dtype=np.float64), distance_bin_um, distance_range_um)
    codes = {schema.DISTANCE: _bin_codes(df[schema.DISTANCE].to_numpy(dtype=np.float64), edges)}
    coords: dict[str, Any] = {schema.DISTANCE: _centres(edges)}
    extra_attrs: dict[str, Any] = {}
    for name in by:
        if name == schema.POWER:
            codes[name], coords[name], power_attrs = _group_power(df, power_bins_mw)
            extra_attrs.update(power_attrs)
        elif name == schema.WAVEFORM_TYPE:
            labels = _waveform_labels(df[name], unknown_waveform)
            codes[name] = pd.Categorical(df[name], categories=labels).codes.astype(np.int64)
            coords[name] = np.asarray(labels, dtype=object)
        else:
            code, uniques = pd.factorize(df[name], sort=True, use_na_sentinel=True)
            codes[name], coords[name] = code.astype(np.int64), np.asarray(uniques)

    keep = np.logical_and.reduce([c >= 0 for c in codes.values()])
    activated = df[schema.ACTIVATED].to_numpy(dtype=bool)
    inactivated = df[schema.INACTIVATED].to_numpy(dtype=bool)
    if significant_only:
        significant = df[schema.SIGNIFICANT].to_numpy(dtype=bool)
        activated, inactivated = activated & significant, inactivated & significant
    rows = pd.DataFrame(
        {
            **{name: c[keep] for name, c in codes.items()},
            schema.MAP_N_UNITS: np.ones(int(keep.sum()), dtype=np.int64),
            schema.MAP_N_ACTIVATED: activated[keep].astype(np.int64),
            schema.MAP_N_INACTIVATED: inactivated[keep].astype(np.int64),
        }
    )
    dims = list(codes)
    shape = tuple(len(coords[d]) for d in dims)
    full = (
        pd.MultiIndex.from_product([np.arange(n) for n in shape], names=dims)
        if len(dims) > 1
        else pd.Index(np.arange(shape[0]), name=dims[0])
    )
    sums = rows.groupby(dims, sort=True).sum().reindex(full, fill_value=0)

    def counts(name: str) -> np.ndarray:
        return sums[name].to_numpy(dtype=np.int64).reshape(shape)

    n_units, n_act, n_inact = (
        counts(schema.MAP_N_UNITS),
        counts(schema.MAP_N_ACTIVATED),
        counts(schema.MAP_N_INACTIVATED),
    )
    with np.errstate(invalid="ignore", divide="ignore"):
        frac_act = np.where(n_units > 0, n_act / n_units, np.nan)
        frac_inact = np.where(n_units > 0, n_inact / n_units, np.nan)

    post = " and p < 0.005" if significant_only else ""
    who = "QC-passing units" if qc_only else "units"
    data_vars = {
        schema.MAP_FRACTION_ACTIVATED: (
            dims,
            frac_act,
            {"units": "1", "long_name": f"fraction of {who} activated (rate change > +200 %{post})"},
        ),
        schema.MAP_FRACTION_INACTIVATED: (
            dims,
            frac_inact,
            {
                "units": "1",
                "long_name": f"fraction of {who} inactivated (rate change < -50 %, baseline > 2 Hz{post})",
            },
        ),
        schema.MAP_N_UNITS: (dims, n_units, {"units": "1", "long_name": f"{who} x conditions in the bin"}),
        schema.MAP_N_ACTIVATED: (dims, n_act, {"units": "1", "long_name": "of which activated"}),
        schema.MAP_N_INACTIVATED: (dims, n_inact, {"units": "1", "long_name": "of which inactivated"}),
    }
    ds = xr.Dataset(data_vars, coords={d: coords[d] for d in dims})
    ds[schema.DISTANCE].attrs = {
        "units": "um",
        "long_name": "distance from the emitter (unit depth - emitter depth; + deeper), bin centre",
    }
    if schema.POWER in ds.coords:
        ds[schema.POWER].attrs = {
            "units": "mW",
            "long_name": "power level (mean)" if power_bins_mw is None else "power, bin centre",
        }
    if schema.WAVEFORM_TYPE in ds.coords:
        ds[schema.WAVEFORM_TYPE].attrs = {"units": "1", "long_name": "waveform type (RS, FS; '' unknown)"}
    ds.attrs = {
        schema.MAP_DISTANCE_EDGES: edges,
        "distance_bin_um": float(distance_bin_um),
        **extra_attrs,
        "significant_only": int(bool(significant_only)),
        "significance_p": schema.SIGNIFICANCE_P,
        "qc_only": int(bool(qc_only)),
        "unknown_waveform": unknown_waveform,
        "n_rows": int(keep.sum()),
        "n_sessions": int(df.loc[keep, schema.SESSION_ID].nunique()) if schema.SESSION_ID in df else 1,
    }
    return ds


# --------------------------------------------------------------------------
# Depth of responding units against emitter depth
# --------------------------------------------------------------------------
@dataclass(frozen=True)
class DepthVsEmitter:
    """Responding units' depths against the depth of the emitter that drove them.

    Attributes
    ----------
    points
        One row per responding unit-condition: ``session_id``, ``cluster``,
        ``emitter``, ``power_mw``, ``duration_s`` (those the table has),
        ``waveform_type``, ``effect`` (activated / inactivated),
        ``unit_depth_um`` and ``emitter_depth_um`` (below the brain surface).
    stats
        Dataset over ``waveform_type`` x ``effect``: ``pearson_r``,
        ``p_value`` (scipy.stats.pearsonr) and ``n_responses``; NaN r where
        fewer than 2 points or a constant depth.
    """

    points: pd.DataFrame
    stats: xr.Dataset

    def __repr__(self) -> str:
        lines = [f"DepthVsEmitter: {len(self.points)} responses"]
        for w in self.stats[schema.WAVEFORM_TYPE].values:
            for e in self.stats[schema.MAP_EFFECT].values:
                s = self.stats.sel({schema.WAVEFORM_TYPE: w, schema.MAP_EFFECT: e})
                lines.append(
                    f"  {w or 'unknown'} {e}: r = {float(s[schema.MAP_PEARSON_R]):.3f}"
                    f" (p = {float(s[schema.P_VALUE]):.2g}, n = {int(s[schema.MAP_N_RESPONSES])})"
                )
        return "\n".join(lines)


def depth_vs_emitter(
    table: pd.DataFrame,
    *,
    significant_only: bool = True,
    qc_only: bool = True,
    unknown_waveform: str = "drop",
) -> DepthVsEmitter:
    """Depth of each responding unit against the depth of the emitter, with Pearson's r per cell type and effect.

    A response is a row of the table classified activated or inactivated
    (and significant, with ``significant_only``). The emitter's depth below
    the surface is ``depth_from_surface_um - distance_um``. A local effect
    puts the points on the identity line, and r near 1.

    Parameters
    ----------
    table
        The responses table (interface.md).
    significant_only, qc_only, unknown_waveform
        As in :func:`effect_map`. To look at one power or pulse duration,
        select its rows first (:func:`select_conditions`).

    Returns
    -------
    DepthVsEmitter
        ``points`` (a DataFrame) and ``stats`` (a Dataset of r, p and n).

    Examples
    --------
    >>> import pandas as pd
    >>> table = pd.DataFrame({
    ...     "depth_from_surface_um": [100.0, 300.0, 520.0, 700.0, 400.0],
    ...     "distance_um": [10.0, -20.0, 30.0, 0.0, 900.0], "power_mw": 4.0,
    ...     "waveform_type": ["FS", "FS", "FS", "RS", "FS"], "qc_pass": True,
    ...     "activated": [True, True, True, False, False], "inactivated": [False, False, False, True, False],
    ...     "significant": True})
    >>> result = depth_vs_emitter(table)
    >>> result.points[["unit_depth_um", "emitter_depth_um"]].values.tolist()[:2]
    [[100.0, 90.0], [300.0, 320.0]]
    >>> round(float(result.stats.pearson_r.sel(waveform_type="FS", effect="activated")), 3)
    0.994
    """
    _check_unknown_policy(unknown_waveform)
    df = _table(table, (*_EFFECT_MAP_COLUMNS, schema.DEPTH_FROM_SURFACE), "depth_vs_emitter")
    if qc_only:
        df = df[df[schema.QC_PASS]]
    if unknown_waveform == "drop":
        df = df[df[schema.WAVEFORM_TYPE] != schema.UNKNOWN_LABEL]
    df = df[
        np.isfinite(df[schema.DEPTH_FROM_SURFACE].to_numpy(float)) & np.isfinite(df[schema.DISTANCE].to_numpy(float))
    ]

    keep_cols = [
        c for c in (schema.SESSION_ID, schema.CLUSTER, schema.EMITTER, schema.POWER, schema.DURATION) if c in df.columns
    ]
    parts = []
    for effect in schema.EFFECTS:  # two effects, not rows
        hit = df[effect] & df[schema.SIGNIFICANT] if significant_only else df[effect]
        sub = df.loc[hit, [*keep_cols, schema.WAVEFORM_TYPE, schema.DEPTH_FROM_SURFACE, schema.DISTANCE]]
        parts.append(sub.assign(**{schema.MAP_EFFECT: effect}))
    points = pd.concat(parts, ignore_index=True)
    points[schema.MAP_UNIT_DEPTH] = points.pop(schema.DEPTH_FROM_SURFACE)
    points[schema.EMITTER_DEPTH] = points[schema.MAP_UNIT_DEPTH] - points.pop(schema.DISTANCE)

    labels = _waveform_labels(df[schema.WAVEFORM_TYPE], unknown_waveform)
    shape = (len(labels), len(schema.EFFECTS))
    r, p, n = np.full(shape, np.nan), np.full(shape, np.nan), np.zeros(shape, dtype=np.int64)
    for (w, e), group in points.groupby([schema.WAVEFORM_TYPE, schema.MAP_EFFECT], sort=False):
        i, j = labels.index(w), schema.EFFECTS.index(e)
        n[i, j] = len(group)
        r[i, j], p[i, j] = _pearson(group[schema.EMITTER_DEPTH].to_numpy(), group[schema.MAP_UNIT_DEPTH].to_numpy())
    dims = (schema.WAVEFORM_TYPE, schema.MAP_EFFECT)
    stats = xr.Dataset(
        {
            schema.MAP_PEARSON_R: (dims, r, {"units": "1", "long_name": "Pearson r, unit depth vs emitter depth"}),
            schema.P_VALUE: (dims, p, {"units": "1", "long_name": "p-value of Pearson r (two-sided)"}),
            schema.MAP_N_RESPONSES: (dims, n, {"units": "1", "long_name": "responding unit-conditions"}),
        },
        coords={schema.WAVEFORM_TYPE: np.asarray(labels, dtype=object), schema.MAP_EFFECT: list(schema.EFFECTS)},
        attrs={"significant_only": int(bool(significant_only)), "qc_only": int(bool(qc_only))},
    )
    return DepthVsEmitter(points, stats)


def _pearson(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    from scipy import stats

    if x.size < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan, math.nan
    result = stats.pearsonr(x, y)
    return float(result.statistic), float(result.pvalue)


# --------------------------------------------------------------------------
# Modulation index against spike width
# --------------------------------------------------------------------------


def cluster_table(catalog: Any, columns: Sequence[str] = (schema.TROUGH_TO_PEAK,)) -> pd.DataFrame:
    """Per-cluster coordinates of every cube as one table keyed by ``session_id`` and ``cluster``.

    Examples
    --------
    >>> import xarray as xr
    >>> cube = xr.Dataset(coords={"cluster": [0, 1], "trough_to_peak_ms": ("cluster", [0.3, 0.7])})
    >>> cluster_table({"s1": cube})
      session_id  cluster  trough_to_peak_ms
    0         s1        0                0.3
    1         s1        1                0.7
    """
    frames = [
        pd.DataFrame(
            {
                schema.SESSION_ID: session_id,
                schema.CLUSTER: cube[schema.CLUSTER].values,
                **{c: cube[c].values for c in columns},
            }
        )
        for session_id, cube in cubes_of(catalog)
    ]
    if not frames:
        return pd.DataFrame(columns=[schema.SESSION_ID, schema.CLUSTER, *columns])
    return pd.concat(frames, ignore_index=True)


def modulation_index(
    table: pd.DataFrame,
    catalog: Any = None,
    *,
    qc_only: bool = True,
    per_unit: bool = False,
    unknown_waveform: str = "keep",
) -> pd.DataFrame:
    """``(stim - pre) / (stim + pre)`` of every unit-condition, with the unit's spike width.

    The index runs from -1 (silenced) through 0 (unchanged) to +1 (firing
    only during the pulse); NaN when both rates are 0.

    Parameters
    ----------
    table
        The responses table (interface.md).
    catalog
        Where to find each unit's spike width (``trough_to_peak_ms``) when the
        table has no such column: a mapping session_id -> cube (a catalog)
        or cubes; joined on ``session_id`` and ``cluster``.
    qc_only
        Only units that pass quality control.
    per_unit
        One row per unit: its strongest stimulation, i.e. the highest power,
        then the emitter nearest the unit, then the longest pulse.
    unknown_waveform
        ``"keep"`` (default) or ``"drop"`` rows of unknown waveform type.

    Returns
    -------
    pandas.DataFrame
        The table's rows with ``modulation_index`` and ``trough_to_peak_ms``.

    Examples
    --------
    >>> import pandas as pd
    >>> table = pd.DataFrame({"session_id": "s", "cluster": [0, 1], "pre_rate_hz": [10.0, 4.0],
    ...                       "stim_rate_hz": [30.0, 1.0], "trough_to_peak_ms": [0.3, 0.8],
    ...                       "waveform_type": ["FS", "RS"], "qc_pass": True})
    >>> modulation_index(table)["modulation_index"].tolist()
    [0.5, -0.6]
    """
    _check_unknown_policy(unknown_waveform)
    required = [schema.PRE_RATE, schema.STIM_RATE, schema.QC_PASS, schema.WAVEFORM_TYPE]
    df = _table(table, required, "modulation_index")
    if schema.TROUGH_TO_PEAK not in df:
        if catalog is None:
            raise ValueError(
                f"modulation_index: the table has no {schema.TROUGH_TO_PEAK!r} column; pass catalog= (the cubes "
                "or their catalog) to join it on session_id and cluster"
            )
        _table(df, [schema.SESSION_ID, schema.CLUSTER], "modulation_index")
        widths = cluster_table(catalog, (schema.TROUGH_TO_PEAK,))
        df = df.merge(widths, on=[schema.SESSION_ID, schema.CLUSTER], how="left", validate="many_to_one")
    if qc_only:
        df = df[df[schema.QC_PASS]]
    if unknown_waveform == "drop":
        df = df[df[schema.WAVEFORM_TYPE] != schema.UNKNOWN_LABEL]
    pre = df[schema.PRE_RATE].to_numpy(dtype=np.float64)
    stim = df[schema.STIM_RATE].to_numpy(dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        df = df.assign(**{schema.MAP_MODULATION_INDEX: (stim - pre) / (stim + pre)})
    if per_unit:
        unit = [c for c in (schema.SESSION_ID, schema.CLUSTER) if c in df]
        if not unit:
            raise ValueError("modulation_index(per_unit=True) needs the session_id / cluster columns")
        order = pd.DataFrame(
            {
                "p": -df[schema.POWER] if schema.POWER in df else 0.0,
                "d": df[schema.DISTANCE].abs() if schema.DISTANCE in df else 0.0,
                "t": -df[schema.DURATION] if schema.DURATION in df else 0.0,
            },
            index=df.index,
        )
        df = df.loc[order.sort_values(["p", "d", "t"], kind="stable").index].drop_duplicates(unit)
        df = df.sort_values(unit, kind="stable")
    return df.reset_index(drop=True)


# --------------------------------------------------------------------------
# PSTH from a cube (lazy)
# --------------------------------------------------------------------------
def psth(
    cube: xr.Dataset,
    *,
    clusters: Any = None,
    emitter: Any = None,
    power_mw: Any = None,
    duration_s: Any = None,
    bin_ms: float | None = None,
) -> xr.DataArray:
    """Trial-averaged firing rate around stimulus onset, lazily from a cube.

    Parameters
    ----------
    cube
        An opened cube (:func:`opto_cube.store.open_cube`); nothing is read.
    clusters
        Cluster ids (one or a list); default all.
    emitter
        Emitter id(s) whose trials to average; ``"nearest"`` averages, for
        each cluster, the trials of the emitter nearest to it in depth (the
        distance is then a cluster coordinate ``distance_um``); default all.
    power_mw
        Power level(s), mW, matched within a relative 1e-6; ``"max"`` or
        ``"min"`` the highest or lowest level; default all.
    duration_s
        Pulse duration(s), s, or ``"max"`` / ``"min"``; default all.
    bin_ms
        Re-bin to this width, ms: a whole multiple of the cube's bin width
        that tiles the pre window, so onset stays a bin edge (``coarsen``;
        a ragged last bin is dropped).

    Returns
    -------
    xarray.DataArray
        ``firing_rate`` (Hz), dims (cluster, time), dask-backed; time is the
        bin centre in s from onset. Attributes: ``bin_width_s``,
        ``n_trials`` and ``stim_durations_s`` (the pulses averaged over).

    Examples
    --------
    >>> import dask.array as da, numpy as np, xarray as xr
    >>> counts = np.zeros((2, 4, 150), dtype=np.uint8)
    >>> counts[:, :, 50] = 1  # one spike per trial in the bin just after onset
    >>> cube = xr.Dataset(
    ...     {"spike_counts": (("cluster", "trial", "time"), da.from_array(counts, chunks=(1, 2, 150)))},
    ...     coords={"cluster": [0, 1], "time": np.arange(150) * 0.01 - 0.495,
    ...             "emitter": ("trial", [1, 1, 2, 2]), "power_mw": ("trial", [1.0, 4.0, 1.0, 4.0]),
    ...             "duration_s": ("trial", [0.01] * 4)},
    ...     attrs={"bin_width_s": 0.01, "pre_window_s": [-0.5, 0.0]})
    >>> rate = psth(cube, emitter=1, bin_ms=50)
    >>> rate.dims, rate.sizes["time"], rate.attrs["n_trials"]
    (('cluster', 'time'), 30, 2)
    >>> rate.sel(cluster=0).values[9:12]  # 1 spike in 50 ms
    array([ 0., 20.,  0.])
    """
    if not isinstance(cube, xr.Dataset) or schema.SPIKE_COUNTS not in cube:
        raise TypeError(f"psth expects an opened cube (a Dataset with {schema.SPIKE_COUNTS!r})")
    counts = cube[schema.SPIKE_COUNTS]
    width = float(cube.attrs.get(schema.ATTR_BIN_WIDTH, np.nan))
    if not math.isfinite(width):
        t = cube[schema.TIME].values
        width = float(np.median(np.diff(t))) if t.size > 1 else math.nan
    if clusters is not None:
        ids = np.atleast_1d(np.asarray(clusters))
        unknown = np.setdiff1d(ids, cube[schema.CLUSTER].values)
        if unknown.size:
            raise ValueError(f"no cluster(s) {unknown.tolist()!r} in the cube ({cube.sizes[schema.CLUSTER]} clusters)")
        counts = counts.sel({schema.CLUSTER: ids})

    mask = np.ones(cube.sizes[schema.TRIAL], dtype=bool)
    nearest = isinstance(emitter, str) and emitter == "nearest"
    if emitter is not None and not nearest:
        mask &= _match(cube[schema.EMITTER].values, emitter, _RTOL[schema.EMITTER], schema.EMITTER)
    if power_mw is not None:
        mask &= _match(cube[schema.POWER].values, power_mw, _RTOL[schema.POWER], schema.POWER)
    if duration_s is not None:
        mask &= _match(cube[schema.DURATION].values, duration_s, _RTOL[schema.DURATION], schema.DURATION)
    if not mask.any():
        raise ValueError("no trial matches the selection (emitter, power_mw and duration_s together)")
    selected = counts.isel({schema.TRIAL: np.flatnonzero(mask)})
    if nearest:
        # in memory, (cluster, trial): which of the selected trials are those of the cluster's nearest emitter
        distance = selected[schema.DEPTH_FROM_SURFACE] - selected[schema.EMITTER_DEPTH]
        use = np.abs(distance) == np.abs(distance).min(schema.TRIAL)
        rate = selected.astype(np.float64).where(use).mean(schema.TRIAL)
        rate = rate.assign_coords(
            {
                schema.DISTANCE: distance.where(use)
                .max(schema.TRIAL)
                .assign_attrs(units="um", long_name="distance from the nearest emitter (+ deeper)"),
                schema.N_TRIALS: use.sum(schema.TRIAL).assign_attrs(units="1", long_name="trials averaged"),
            }
        )
    else:
        rate = selected.mean(schema.TRIAL)
    rate = rate / width
    attrs: dict[str, Any] = {
        "units": "Hz",
        "long_name": "firing rate, mean over trials",
        schema.ATTR_BIN_WIDTH: width,
        "stim_durations_s": np.unique(cube[schema.DURATION].values[mask]),
        schema.ATTR_SESSION_ID: str(cube.attrs.get(schema.ATTR_SESSION_ID, "")),
    }
    if not nearest:
        attrs[schema.N_TRIALS] = int(mask.sum())
    if bin_ms is not None:
        factor = float(bin_ms) / 1000.0 / width
        pre = cube.attrs.get(schema.ATTR_PRE_WINDOW, list(schema.PRE_WINDOW_S))
        start = float(cube[schema.TIME].values[0]) - width / 2
        onset_bins = (0.0 - start) / (float(bin_ms) / 1000.0)
        if not (factor >= 1 and abs(factor - round(factor)) < 1e-6 and abs(onset_bins - round(onset_bins)) < 1e-6):
            raise ValueError(
                f"bin_ms={bin_ms!r} must be a whole multiple of the cube's {width * 1000:g} ms bins that tiles the "
                f"window from {start:g} s to onset (pre window {pre!r} s)"
            )
        rate = rate.coarsen({schema.TIME: int(round(factor))}, boundary="trim").mean()
        attrs[schema.ATTR_BIN_WIDTH] = float(bin_ms) / 1000.0
    rate.attrs = attrs
    rate[schema.TIME].attrs = {"units": "s", "long_name": "bin centre relative to stimulus onset"}
    return rate.rename(schema.MAP_FIRING_RATE)


def population_psth(
    catalog: Any,
    *,
    max_distance_um: float = 100.0,
    duration_s: Any = "max",
    bin_ms: float | None = None,
    qc_only: bool = True,
    unknown_waveform: str = "drop",
) -> xr.DataArray:
    """PSTHs of every unit near an emitter, at every power level, pooled across sessions (lazy).

    Each unit's trials are those of the emitter nearest to it (see
    :func:`psth`, ``emitter="nearest"``); units farther than
    ``max_distance_um`` from every emitter are left out. Power levels of the
    sessions are matched within a relative 1e-6.

    Parameters
    ----------
    catalog
        A mapping session_id -> cube, cubes, or a folder of stores.
    max_distance_um
        Largest |distance| between a unit and its nearest emitter, um.
    duration_s
        Pulse duration(s) to average, s, ``"max"`` (default, per session) or None for all.
    bin_ms
        Re-bin, ms (as in :func:`psth`).
    qc_only, unknown_waveform
        As in :func:`effect_map`.

    Returns
    -------
    xarray.DataArray
        ``firing_rate`` (Hz), dims (power_mw, unit, time); ``unit`` carries
        ``session_id``, ``cluster``, ``waveform_type`` and ``distance_um``.
    """
    _check_unknown_policy(unknown_waveform)
    cubes = cubes_of(catalog)
    if not cubes:
        raise ValueError("population_psth: no cubes")
    levels = [schema.power_levels(cube[schema.POWER].values)[1] for _, cube in cubes]
    global_index, global_levels = schema.power_levels(np.concatenate(levels))
    offsets = np.cumsum([0, *(lv.size for lv in levels)])
    pieces = []
    for k, (session_id, cube) in enumerate(cubes):  # sessions, not rows
        keep = np.isfinite(cube[schema.DEPTH_FROM_SURFACE].values)
        if qc_only:
            keep &= cube[schema.QC_PASS].values.astype(bool)
        if unknown_waveform == "drop":
            keep &= cube[schema.WAVEFORM_TYPE].values != schema.UNKNOWN_LABEL
        if not keep.any():
            continue
        clusters = cube[schema.CLUSTER].values[keep]
        per_level = []
        for level, g in zip(levels[k], global_index[offsets[k] : offsets[k + 1]], strict=True):
            r = psth(cube, clusters=clusters, emitter="nearest", power_mw=level, duration_s=duration_s, bin_ms=bin_ms)
            per_level.append(r.expand_dims({schema.POWER: [global_levels[g]]}))
        rate = xr.concat(per_level, dim=schema.POWER, join="outer", coords="minimal", compat="override")
        near = np.abs(rate[schema.DISTANCE].values) <= max_distance_um
        rate = rate.isel({schema.CLUSTER: np.flatnonzero(near)})
        rate = rate.assign_coords(unit=(schema.CLUSTER, np.arange(rate.sizes[schema.CLUSTER]))).swap_dims(
            {schema.CLUSTER: "unit"}
        )
        pieces.append(rate.assign_coords({schema.SESSION_ID: ("unit", [session_id] * rate.sizes["unit"])}))
    if not pieces:
        raise ValueError("population_psth: no unit passes the filters")
    out = xr.concat(pieces, dim="unit", join="outer", coords="minimal", compat="override")
    out = out.assign_coords(unit=np.arange(out.sizes["unit"]))
    out.attrs = {
        **pieces[0].attrs,
        "max_distance_um": float(max_distance_um),
        "n_sessions": len(pieces),
        "stim_durations_s": np.unique(np.concatenate([np.atleast_1d(p.attrs["stim_durations_s"]) for p in pieces])),
    }
    out.attrs.pop(schema.ATTR_SESSION_ID, None)
    out[schema.POWER].attrs = {"units": "mW", "long_name": "power level (mean)"}
    return out.rename(schema.MAP_FIRING_RATE)


# --------------------------------------------------------------------------
# The whole job: stores / catalog / table -> maps.nc and figures
# --------------------------------------------------------------------------
def _open(source: Any) -> Any:
    """A catalog (session_id -> cube) of a folder of stores; mappings and iterables of cubes pass through."""
    if isinstance(source, (str, os.PathLike)):
        from .catalog import open_catalog

        return open_catalog(source)
    return source


def responses_of(source: Any, **kwargs: Any) -> pd.DataFrame:
    """The responses table of a table (returned as is), a folder of stores, a catalog, or cubes."""
    if isinstance(source, pd.DataFrame):
        return source
    from .stats import responses_table

    return responses_table(_open(source), **kwargs)


def maps(catalog_or_table: Any, **kwargs: Any) -> xr.Dataset:
    """The effect map of a responses table, a catalog, cubes, or a folder of stores.

    Tables are mapped as they are; anything else goes through
    :func:`opto_cube.responses_table` first. Keyword arguments are
    those of :func:`effect_map`.

    Examples
    --------
    >>> import pandas as pd
    >>> table = pd.DataFrame({"distance_um": [0.0, 150.0], "power_mw": 2.0, "waveform_type": "FS",
    ...                       "qc_pass": True, "activated": [True, False], "inactivated": False,
    ...                       "significant": True})
    >>> m = maps(table, distance_bin_um=100.0).squeeze("power_mw").sel(waveform_type="FS")
    >>> m.distance_um.values, m.fraction_activated.values  # 150 um lies in [150, 250)
    (array([-200., -100.,    0.,  100.,  200.]), array([nan, nan,  1., nan,  0.]))
    """
    return effect_map(responses_of(catalog_or_table), **kwargs)


def save_netcdf(ds: xr.Dataset, path: str | os.PathLike) -> Path:
    """Write ``ds`` to a netCDF file atomically (a temporary file beside it, renamed into place).

    Uses h5netcdf (netCDF4) when installed, else scipy (netCDF3, readable by
    every netCDF tool); boolean attributes are stored as 0/1.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import h5netcdf  # noqa: F401

        engine = "h5netcdf"
    except ImportError:
        engine = "scipy"
    out = ds.copy()
    out.attrs = {k: (int(v) if isinstance(v, bool) else v) for k, v in ds.attrs.items()}
    if engine == "scipy":  # netCDF3 has no 64-bit integers
        for name, var in out.variables.items():
            if var.dtype.kind in "iu" and var.dtype.itemsize > 4:
                out[name] = var.astype(np.int32)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        out.to_netcdf(tmp, engine=engine)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def run_maps(
    source: Any,
    out_dir: str | os.PathLike,
    *,
    distance_bin_um: float = schema.MAP_DEFAULT_DISTANCE_BIN_UM,
    duration_s: Any = None,
    table: pd.DataFrame | None = None,
    figures: bool = True,
) -> dict[str, Path]:
    """The ``opto-cube maps`` job: the maps to ``out_dir/maps.nc``, and the four figures as PNGs.

    ``maps.nc`` (netCDF, :func:`save_netcdf`) holds the effect map
    (:func:`effect_map`, default options) and, over ``waveform_type`` x
    ``effect``, the depth-vs-emitter statistics of :func:`depth_vs_emitter`
    as ``depth_pearson_r``, ``depth_pearson_p`` and ``depth_n_responses``.

    Parameters
    ----------
    source
        A folder of stores, or a catalog (mapping session_id -> cube).
    out_dir
        Output folder (created if needed); each file is written atomically.
    distance_bin_um
        Width of the distance bins, um.
    duration_s
        Only pulses of this duration, s (or ``"max"``, the longest); default all.
    table
        The responses table of ``source`` if already computed (else computed here).
    figures
        Also draw ``effect_map.png``, ``depth_vs_emitter.png``,
        ``modulation_index.png`` and ``psth.png`` (:func:`opto_cube.plot.summary_figures`).

    Returns
    -------
    dict
        File name -> path of every file written.

    Raises
    ------
    OptoCubeError
        ``source`` holds no session, or no unit to map.
    """
    from .errors import OptoCubeError

    catalog = _open(source)
    if table is None:
        if isinstance(catalog, Mapping) and len(catalog) == 0:
            raise OptoCubeError(f"{source}: no sessions to map (no .zarr stores)")
        table = responses_of(catalog)
    if duration_s is not None:
        table = select_conditions(table, duration_s=duration_s)
    try:
        effect = effect_map(table, distance_bin_um=distance_bin_um)
    except ValueError as e:
        raise OptoCubeError(f"{source}: nothing to map ({e})") from e
    depth = depth_vs_emitter(table)
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
    out = Path(out_dir)
    written = {MAPS_NETCDF: save_netcdf(summary, out / MAPS_NETCDF)}
    if figures:
        from . import plot

        written.update(plot.summary_figures(effect, table, catalog, out, depth=depth, duration_s=duration_s))
    return written
