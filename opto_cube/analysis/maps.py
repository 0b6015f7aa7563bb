"""How the optogenetic effect spreads in depth, grows with power and differs between RS and FS cells.

Every function here reads the long responses table of ``docs/contract.md``
(one row per session x cluster x condition, as :func:`opto_cube.responses_table`
writes it), so maps pool any number of sessions. Nothing here reads a store or
writes a file (that is :mod:`opto_cube.jobs.pipeline`); rows are chosen with
:mod:`opto_cube.analysis.conditions`.

- :func:`effect_map`: fraction of units activated / inactivated against signed
  distance from the emitter, power and waveform type (a labelled
  :class:`xarray.Dataset`, bin centres as coordinates and bin edges in attrs,
  in the manner of pynapple's tuning curves);
- :func:`depth_vs_emitter`: depth of responding units against the depth of the
  emitter that drove them, with Pearson's r (the published figure);
- :func:`modulation_index`: ``(stim - pre) / (stim + pre)`` against spike width.

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
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from opto_cube import schema
from opto_cube.analysis.conditions import check_table, check_unknown_policy, filter_units, waveform_labels

__all__ = ["DepthVsEmitter", "depth_vs_emitter", "distance_edges", "effect_map", "modulation_index"]

_EFFECT_MAP_COLUMNS = (
    schema.DISTANCE,
    schema.QC_PASS,
    schema.WAVEFORM_TYPE,
    schema.ACTIVATED,
    schema.INACTIVATED,
    schema.SIGNIFICANT,
)


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
    keep_artifacts: bool = False,
) -> xr.Dataset:
    """Fraction of units activated and inactivated against signed distance from the emitter, power and cell type.

    Each row of the responses table is one unit under one condition; a map
    bin counts the rows whose ``distance_um`` (unit depth minus emitter depth,
    positive when the unit lies deeper) falls in it, and the fractions of
    them classified activated / inactivated.

    Parameters
    ----------
    table
        The responses table (``docs/contract.md``), any number of sessions.
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
    keep_artifacts
        False (default): rows of units flagged ``light_artifact`` (switching
        artifacts, not neurons) are left out; True keeps them. A table
        without that column keeps every row.

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
    check_unknown_policy(unknown_waveform)
    by = (by,) if isinstance(by, str) else tuple(by)
    if len(set(by)) != len(by) or schema.DISTANCE in by:
        raise ValueError(f"by must name distinct columns other than {schema.DISTANCE!r}, got {by!r}")
    df = filter_units(
        check_table(table, (*_EFFECT_MAP_COLUMNS, *by), "effect_map"),
        qc_only=qc_only,
        unknown_waveform=unknown_waveform,
        keep_artifacts=keep_artifacts,
    )

    edges = distance_edges(df[schema.DISTANCE].to_numpy(dtype=np.float64), distance_bin_um, distance_range_um)
    codes, coords, extra_attrs = _map_codes(df, edges, by, power_bins_mw, unknown_waveform)
    keep = np.logical_and.reduce([c >= 0 for c in codes.values()])
    activated = df[schema.ACTIVATED].to_numpy(dtype=bool)
    inactivated = df[schema.INACTIVATED].to_numpy(dtype=bool)
    if significant_only:
        significant = df[schema.SIGNIFICANT].to_numpy(dtype=bool)
        activated, inactivated = activated & significant, inactivated & significant
    counts = _bin_counts({name: c[keep] for name, c in codes.items()}, coords, activated[keep], inactivated[keep])
    ds = _effect_dataset(
        counts, coords, significant_only=significant_only, qc_only=qc_only, binned_power=power_bins_mw is not None
    )
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


def _map_codes(
    df: pd.DataFrame, edges: np.ndarray, by: tuple[str, ...], power_bins_mw: Any, unknown_waveform: str
) -> tuple[dict[str, np.ndarray], dict[str, Any], dict[str, Any]]:
    """Each row's bin along every dimension of the map (-1: outside), the coordinates, and attrs of the grouping."""
    codes = {schema.DISTANCE: _bin_codes(df[schema.DISTANCE].to_numpy(dtype=np.float64), edges)}
    coords: dict[str, Any] = {schema.DISTANCE: _centres(edges)}
    extra_attrs: dict[str, Any] = {}
    for name in by:
        if name == schema.POWER:
            codes[name], coords[name], power_attrs = _group_power(df, power_bins_mw)
            extra_attrs.update(power_attrs)
        elif name == schema.WAVEFORM_TYPE:
            labels = waveform_labels(df[name], unknown_waveform)
            codes[name] = pd.Categorical(df[name], categories=labels).codes.astype(np.int64)
            coords[name] = np.asarray(labels, dtype=object)
        else:
            code, uniques = pd.factorize(df[name], sort=True, use_na_sentinel=True)
            codes[name], coords[name] = code.astype(np.int64), np.asarray(uniques)
    return codes, coords, extra_attrs


def _bin_counts(
    codes: dict[str, np.ndarray], coords: dict[str, Any], activated: np.ndarray, inactivated: np.ndarray
) -> dict[str, np.ndarray]:
    """Rows, activated and inactivated rows per bin of the map (every bin, zeros included)."""
    dims = list(codes)
    shape = tuple(len(coords[d]) for d in dims)
    flat = np.ravel_multi_index(tuple(codes[d] for d in dims), shape) if codes[dims[0]].size else np.zeros(0, int)
    size = int(np.prod(shape))
    return {
        schema.MAP_N_UNITS: np.bincount(flat, minlength=size).astype(np.int64).reshape(shape),
        schema.MAP_N_ACTIVATED: np.bincount(flat, weights=activated, minlength=size).astype(np.int64).reshape(shape),
        schema.MAP_N_INACTIVATED: np.bincount(flat, weights=inactivated, minlength=size)
        .astype(np.int64)
        .reshape(shape),
    }


def _effect_dataset(
    counts: dict[str, np.ndarray], coords: dict[str, Any], *, significant_only: bool, qc_only: bool, binned_power: bool
) -> xr.Dataset:
    """The effect map's Dataset: counts, fractions (NaN where a bin is empty) and their attributes."""
    dims = list(coords)
    n_units = counts[schema.MAP_N_UNITS]
    with np.errstate(invalid="ignore", divide="ignore"):
        frac_act = np.where(n_units > 0, counts[schema.MAP_N_ACTIVATED] / n_units, np.nan)
        frac_inact = np.where(n_units > 0, counts[schema.MAP_N_INACTIVATED] / n_units, np.nan)
    post = " and p < 0.005" if significant_only else ""
    who = "QC-passing units" if qc_only else "units"
    long_names = {
        schema.MAP_FRACTION_ACTIVATED: f"fraction of {who} activated (rate change > +200 %{post})",
        schema.MAP_FRACTION_INACTIVATED: f"fraction of {who} inactivated (rate change < -50 %, baseline > 2 Hz{post})",
        schema.MAP_N_UNITS: f"{who} x conditions in the bin",
        schema.MAP_N_ACTIVATED: "of which activated",
        schema.MAP_N_INACTIVATED: "of which inactivated",
    }
    values = {schema.MAP_FRACTION_ACTIVATED: frac_act, schema.MAP_FRACTION_INACTIVATED: frac_inact, **counts}
    ds = xr.Dataset(
        {name: (dims, values[name], {"units": "1", "long_name": long}) for name, long in long_names.items()},
        coords={d: coords[d] for d in dims},
    )
    ds[schema.DISTANCE].attrs = {
        "units": "um",
        "long_name": "distance from the emitter (unit depth - emitter depth; + deeper), bin centre",
    }
    if schema.POWER in ds.coords:
        ds[schema.POWER].attrs = {
            "units": "mW",
            "long_name": "power, bin centre" if binned_power else "power level (mean)",
        }
    if schema.WAVEFORM_TYPE in ds.coords:
        ds[schema.WAVEFORM_TYPE].attrs = {"units": "1", "long_name": "waveform type (RS, FS; '' unknown)"}
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
    keep_artifacts: bool = False,
) -> DepthVsEmitter:
    """Depth of each responding unit against the depth of the emitter, with Pearson's r per cell type and effect.

    A response is a row of the table classified activated or inactivated
    (and significant, with ``significant_only``). The emitter's depth below
    the surface is ``depth_from_surface_um - distance_um``. A local effect
    puts the points on the identity line, and r near 1.

    Parameters
    ----------
    table
        The responses table (``docs/contract.md``).
    significant_only, qc_only, unknown_waveform, keep_artifacts
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
    check_unknown_policy(unknown_waveform)
    df = check_table(table, (*_EFFECT_MAP_COLUMNS, schema.DEPTH_FROM_SURFACE), "depth_vs_emitter")
    df = filter_units(df, qc_only=qc_only, unknown_waveform=unknown_waveform, keep_artifacts=keep_artifacts)
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

    labels = waveform_labels(df[schema.WAVEFORM_TYPE], unknown_waveform)
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
def _join_widths(df: pd.DataFrame, widths: Any) -> pd.DataFrame:
    """The table with each unit's spike width joined on session_id and cluster; every session must be found."""
    if widths is None:
        raise ValueError(
            f"modulation_index: the table has no {schema.TROUGH_TO_PEAK!r} column; pass catalog= (the cubes, "
            "their catalog, or a table of session_id, cluster, trough_to_peak_ms) to join it on session_id and cluster"
        )
    check_table(df, [schema.SESSION_ID, schema.CLUSTER], "modulation_index")
    if not isinstance(widths, pd.DataFrame):
        from opto_cube.store.catalog import cluster_table  # opened cubes: only their per-cluster coordinates are read

        widths = cluster_table(widths, (schema.TROUGH_TO_PEAK,))
    missing = sorted(set(df[schema.SESSION_ID].astype(str)) - set(widths[schema.SESSION_ID].astype(str)))
    if missing:
        raise ValueError(
            f"modulation_index: no spike widths for session(s) {', '.join(map(repr, missing))}; the cubes given "
            f"hold {', '.join(map(repr, sorted(set(widths[schema.SESSION_ID].astype(str))))) or 'none'}"
        )
    widths = widths[[schema.SESSION_ID, schema.CLUSTER, schema.TROUGH_TO_PEAK]]
    return df.merge(widths, on=[schema.SESSION_ID, schema.CLUSTER], how="left", validate="many_to_one")


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
        The responses table (``docs/contract.md``).
    catalog
        Where to find each unit's spike width (``trough_to_peak_ms``) when the
        table has no such column: a table of ``session_id, cluster,
        trough_to_peak_ms``, or a mapping session_id -> cube (a catalog) or
        cubes; joined on ``session_id`` and ``cluster``. A session of the
        table missing there is an error.
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
    check_unknown_policy(unknown_waveform)
    required = [schema.PRE_RATE, schema.STIM_RATE, schema.QC_PASS, schema.WAVEFORM_TYPE]
    df = check_table(table, required, "modulation_index")
    if schema.TROUGH_TO_PEAK not in df:
        df = _join_widths(df, catalog)
    df = filter_units(df, qc_only=qc_only, unknown_waveform=unknown_waveform)
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
