"""Per-unit power response: half-maximal power and maximal effect of each unit at each emitter.

For every unit tested at three or more power levels at one emitter,
:func:`power_response` fits the saturating curve of the synthetic model
(``docs/format.md`` describes the data; the generator's strength is
``P / (P + half_power)``)::

    pct_change(P) = max_effect * P / (P + p50)

by least squares over the unit's power levels. ``max_effect`` (percent) is the
effect the unit would reach at infinite power (negative for inactivation) and
``p50`` the power that gives half of it. Given ``p50`` the best ``max_effect``
is linear least squares, so only ``p50`` is searched: on a log grid spanning
the tested powers x/÷ 100, then by golden-section search between the grid
neighbours of the best point, for all units at once.

A separate module from :mod:`opto_cube.analysis.spatial` because it is a different
question (one curve per unit against power, not one profile per population
against distance) with its own model, fit and table; both share the row
selection of :func:`opto_cube.analysis.spatial.extent_rows`.

Examples
--------
>>> import pandas as pd
>>> powers = [0.5, 1.0, 2.0, 4.0]
>>> table = pd.DataFrame({"session_id": "s", "cluster": 3, "emitter": 5, "power_mw": powers,
...     "duration_s": 0.05, "distance_um": -80.0, "waveform_type": "FS", "qc_pass": True,
...     "pct_change": [600.0 * p / (p + 0.8) for p in powers], "activated": True, "inactivated": False,
...     "significant": True})
>>> fits = power_response(table)
>>> round(float(fits.p50_mw.iloc[0]), 4), round(float(fits.max_effect_pct.iloc[0]), 2), fits.fit_flag.iloc[0]
(0.8, 600.0, 'ok')
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from opto_cube import schema
from opto_cube.analysis.spatial import LEVEL, REQUIRED_COLUMNS, extent_rows

PR_N_LEVELS = "n_power_levels"
PR_R_SQUARED = "r_squared"
PR_P50_RANGE_FACTOR = 2.0  # p50 trusted within [lowest power / f, highest power * f]

__all__ = ["power_response", "saturating_response"]

_REQUIRED = (*REQUIRED_COLUMNS, schema.PCT_CHANGE)
_GRID_POINTS = 161  # log grid of p50 over the tested range x/÷ 100 (about 12 % steps)
_GRID_DECADES = 2.0
_GOLDEN_STEPS = 60
RESPONDING = "responding"


def saturating_response(power_mw: Any, max_effect_pct: Any, p50_mw: Any) -> Any:
    """The fitted curve: ``max_effect * P / (P + p50)``, percent change at power ``P``.

    Examples
    --------
    >>> saturating_response([1.0, 3.0], 400.0, 1.0).tolist()
    [200.0, 300.0]
    """
    p = np.asarray(power_mw, dtype=np.float64)
    return np.asarray(max_effect_pct, dtype=np.float64) * p / (p + np.asarray(p50_mw, dtype=np.float64))


def _sse(y: np.ndarray, p: np.ndarray, mask: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Residual sum of squares and best max_effect of each unit (rows) at half-maximal powers ``c``.

    ``y``, ``p``, ``mask``: (G, L); ``c``: (G, C). Returns (G, C) arrays.
    """
    g = p[:, :, None] / (p[:, :, None] + c[:, None, :]) * mask[:, :, None]
    sy = np.einsum("gl,glc->gc", y, g)
    sg = np.einsum("glc,glc->gc", g, g)
    effect = sy / sg
    sse = (y**2).sum(axis=1)[:, None] - sy * effect
    return sse, effect


def power_response(
    table: pd.DataFrame,
    *,
    duration_s: Any = "max",
    min_levels: int = schema.PR_MIN_LEVELS,
    min_r_squared: float = schema.PR_MIN_R_SQUARED,
    p50_range_factor: float = PR_P50_RANGE_FACTOR,
    exclude_artifacts: bool = True,
) -> pd.DataFrame:
    """Half-maximal power and maximal effect of every unit tested at ``min_levels`` or more powers at one emitter.

    Parameters
    ----------
    table
        The responses table (``opto_cube.responses_table``), any number of sessions.
    duration_s
        The pulse duration used: ``"max"`` (default, the longest of each session), ``"min"`` or seconds.
    min_levels
        Fewest power levels for a fit (3: two parameters and one degree of freedom).
    min_r_squared
        A fit explaining less of the variance of ``pct_change`` across powers is flagged ``poor_fit``.
    p50_range_factor
        A ``p50`` outside ``[lowest power / f, highest power * f]`` is flagged ``p50_out_of_range``
        (the data cannot pin it down).
    exclude_artifacts
        Leave out units flagged ``light_artifact`` (when the table has that column).

    Returns
    -------
    pandas.DataFrame
        One row per unit x emitter: ``session_id, cluster, emitter, waveform_type,
        distance_um, duration_s, n_power_levels, min_power_mw, max_power_mw,
        p50_mw, max_effect_pct, r_squared, fit_flag, fit_ok, responding``.
        ``fit_flag`` is one of ``ok``, ``undefined`` (a non-finite
        ``pct_change``, e.g. no spike before the pulse), ``poor_fit``,
        ``p50_out_of_range``; ``fit_ok`` is ``fit_flag == "ok"``;
        ``responding``: significantly activated or inactivated at some power.

    Raises
    ------
    TypeError, ValueError
        A table that is not a DataFrame, lacks a column or has no usable row; bad parameters.

    Examples
    --------
    >>> import pandas as pd
    >>> table = pd.DataFrame({"session_id": "s", "cluster": [1] * 3 + [2] * 2, "emitter": 2,
    ...     "power_mw": [1.0, 2.0, 4.0, 1.0, 4.0], "duration_s": 0.05, "distance_um": 40.0,
    ...     "waveform_type": "RS", "qc_pass": True, "pct_change": [-30.0, -45.0, -54.0, -10.0, -20.0],
    ...     "activated": False, "inactivated": [False, False, True, False, False], "significant": True})
    >>> fits = power_response(table)
    >>> fits[["cluster", "n_power_levels", "fit_flag"]].values.tolist()
    [[1, 3, 'ok']]
    >>> bool(fits.max_effect_pct.iloc[0] < -54)
    True
    """
    if not isinstance(min_levels, (int, np.integer)) or min_levels < 3:
        raise ValueError(f"power_response: min_levels must be a whole number >= 3, got {min_levels!r}")
    if not (isinstance(p50_range_factor, (int, float)) and math.isfinite(p50_range_factor) and p50_range_factor >= 1):
        raise ValueError(f"power_response: p50_range_factor must be a number >= 1, got {p50_range_factor!r}")
    rows, _, _ = extent_rows(
        table, duration_s=duration_s, exclude_artifacts=exclude_artifacts, what="power_response", required=_REQUIRED
    )
    key = [schema.SESSION_ID, schema.CLUSTER, schema.EMITTER]
    rows = rows.sort_values([*key, LEVEL], kind="stable")
    group = rows.groupby(key, sort=False).ngroup().to_numpy()
    n_levels = np.bincount(group)
    keep = n_levels[group] >= min_levels
    rows, group = rows[keep], group[keep]
    columns = [
        *key,
        schema.WAVEFORM_TYPE,
        schema.DISTANCE,
        schema.DURATION,
        PR_N_LEVELS,
        "min_power_mw",
        "max_power_mw",
        schema.PR_P50,
        schema.PR_MAX_EFFECT,
        PR_R_SQUARED,
        schema.PR_FIT_FLAG,
        schema.PR_FIT_OK,
        RESPONDING,
    ]
    if rows.empty:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
    group = pd.factorize(group)[0]
    n = np.bincount(group)
    position = np.arange(group.size) - np.concatenate([[0], np.cumsum(n)[:-1]])[group]
    shape = (n.size, int(n.max()))
    y, p = np.zeros(shape), np.ones(shape)
    mask = np.zeros(shape, dtype=bool)
    pct = rows[schema.PCT_CHANGE].to_numpy(dtype=np.float64)
    y[group, position] = np.where(np.isfinite(pct), pct, 0.0)
    p[group, position] = rows[schema.POWER].to_numpy(dtype=np.float64)
    mask[group, position] = True
    undefined = np.bincount(group, weights=~np.isfinite(pct)) > 0
    p_lo = np.where(mask, p, np.inf).min(axis=1)
    p_hi = np.where(mask, p, -np.inf).max(axis=1)

    # log grid of p50, then golden-section search between the best point's neighbours
    span = np.linspace(-_GRID_DECADES, _GRID_DECADES, _GRID_POINTS)
    log_lo, log_hi = np.log10(p_lo), np.log10(p_hi)
    grid = np.concatenate(
        [
            log_lo[:, None] + span[None, span < 0],
            np.linspace(log_lo, log_hi, 21).T,
            log_hi[:, None] + span[None, span > 0],
        ],
        axis=1,
    )
    sse, _ = _sse(y, p, mask, 10.0**grid)
    best = np.argmin(np.where(np.isfinite(sse), sse, np.inf), axis=1)
    rows_idx = np.arange(n.size)
    a = grid[rows_idx, np.maximum(best - 1, 0)]
    b = grid[rows_idx, np.minimum(best + 1, grid.shape[1] - 1)]
    ratio = (math.sqrt(5) - 1) / 2
    for _ in range(_GOLDEN_STEPS):
        c1, c2 = b - ratio * (b - a), a + ratio * (b - a)
        s, _ = _sse(y, p, mask, 10.0 ** np.column_stack([c1, c2]))
        left = s[:, 0] <= s[:, 1]
        b = np.where(left, c2, b)
        a = np.where(left, a, c1)
    log_p50 = (a + b) / 2
    sse, effect = _sse(y, p, mask, 10.0 ** log_p50[:, None])
    sse, effect = sse[:, 0], effect[:, 0]
    mean = (y * mask).sum(axis=1) / n
    sst = (((y - mean[:, None]) * mask) ** 2).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        r2 = np.where(sst > 0, 1 - sse / sst, np.nan)
    p50 = 10.0**log_p50
    flag = np.where(
        undefined,
        "undefined",
        np.where(
            ~(r2 >= min_r_squared),
            "poor_fit",
            np.where((p50 < p_lo / p50_range_factor) | (p50 > p_hi * p50_range_factor), "p50_out_of_range", "ok"),
        ),
    )
    p50 = np.where(undefined, np.nan, p50)
    effect = np.where(undefined, np.nan, effect)
    r2 = np.where(undefined, np.nan, r2)
    first = rows.groupby(group, sort=True).head(1)
    responding = (
        ((rows[schema.ACTIVATED] | rows[schema.INACTIVATED]) & rows[schema.SIGNIFICANT]).groupby(group).any().to_numpy()
    )
    out = pd.DataFrame(
        {
            schema.SESSION_ID: first[schema.SESSION_ID].to_numpy(),
            schema.CLUSTER: first[schema.CLUSTER].to_numpy(),
            schema.EMITTER: first[schema.EMITTER].to_numpy(),
            schema.WAVEFORM_TYPE: first[schema.WAVEFORM_TYPE].to_numpy(),
            schema.DISTANCE: first[schema.DISTANCE].to_numpy(dtype=np.float64),
            schema.DURATION: first[schema.DURATION].to_numpy(dtype=np.float64) if schema.DURATION in first else np.nan,
            PR_N_LEVELS: n,
            "min_power_mw": p_lo,
            "max_power_mw": p_hi,
            schema.PR_P50: p50,
            schema.PR_MAX_EFFECT: effect,
            PR_R_SQUARED: r2,
            schema.PR_FIT_FLAG: flag,
            schema.PR_FIT_OK: flag == "ok",
            RESPONDING: responding,
        }
    )
    return out[columns]
