"""How far the light reaches: the spatial extent of activation and inactivation, with bootstrap intervals.

:func:`spatial_extent` turns the long responses table (one row per session x
cluster x condition, see ``docs/contract.md``) into the number a paper states:
the distance from the emitter at which the fraction of units significantly
activated (or inactivated) falls to half its value at the emitter, per
waveform type and power, with a 95 % bootstrap interval.

The model
---------
For each waveform type, effect and power level, every unit tested at an
emitter gives one 0/1 outcome (``activated & significant``, or
``inactivated & significant``) at its distance ``|d|`` from that emitter. The
probability of the outcome is modelled as a logistic function of ``|d|``::

    f(d) = expit(a + b |d|)          (b < 0: a monotone fall-off)

fitted by maximum likelihood to the per-unit outcomes (not to binned
fractions, so no bin width enters the estimate). The radius is where the
profile falls to half its value at the emitter, ``f(r) = f(0) / 2``::

    r = (logit(f(0) / 2) - a) / b

Why logistic: the outcome is binary, and the logistic model is its canonical
GLM: the log-likelihood is concave, so Newton's method converges in a few
steps from any start and can be run for all bootstrap samples at once; it
stays within (0, 1); and it has the shape the data have. Near the emitter
nearly every unit clears the thresholds (the fraction plateaus), further away
the fraction falls off over a width set by the spread of units' gains, and an
exponential ``c exp(-d / L)`` (which has no plateau and must be kept below 1)
fits that shape worse. With ``b >= 0`` there is no fall-off and the radius is
infinite (a point estimate of NaN, with a warning).

The interval
------------
A percentile bootstrap over units: each resample draws, within every session
and waveform type, as many units as there are with replacement (every drawn
unit brings all its emitters and powers, so the radii of one resample are
consistent across powers and effects), and refits the model. The refits are
one vectorised Newton iteration over all resamples (a compiled kernel), started
from the full-data estimate. Resamples without a responding unit (or with only
responding units) have no fall-off to fit; they are left out and counted.

Examples
--------
>>> import numpy as np, pandas as pd
>>> rng = np.random.default_rng(0)
>>> d = rng.uniform(-800, 800, 600)
>>> responding = rng.random(600) < 1 / (1 + np.exp((np.abs(d) - 300) / 60))
>>> table = pd.DataFrame({"session_id": np.repeat(["s1", "s2", "s3"], 200), "cluster": np.arange(600),
...     "emitter": 3, "power_mw": 2.0, "duration_s": 0.05, "distance_um": d, "waveform_type": "FS",
...     "qc_pass": True, "activated": responding, "inactivated": False, "significant": True})
>>> ext = spatial_extent(table, n_boot=200, waveform_types=("FS",), effects=("activated",))
>>> r = ext.radius_um.sel(waveform_type="FS", effect="activated").item()
>>> 250 < r < 350, ext.radius_low_um.item() < r < ext.radius_high_um.item()
(True, True)
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
from scipy.special import expit

from opto_cube import schema
from opto_cube.analysis.extent_fit import bootstrap_weights, fit_profile, half_radius, percentile_interval
from opto_cube.errors import OptoCubeWarning

EXTENT_DISTANCE_BIN_EDGES = "abs_distance_bin_edges_um"  # attribute
EXTENT_PARAMETER = "parameter"  # dimension of the fitted coefficients: intercept, slope
EXTENT_COEFFICIENTS = "coefficients"
EXTENT_N_OBSERVATIONS = "n_observations"
EXTENT_FAILED_RESAMPLES = "failed_resamples"
EXTENT_GRID_STEP_UM = 10.0
EXTENT_BIN_UM = 100.0

__all__ = ["extent_rows", "fit_profile", "spatial_extent"]

REQUIRED_COLUMNS = (  # of the responses table, for every fit of this module and of power_response
    schema.SESSION_ID,
    schema.CLUSTER,
    schema.EMITTER,
    schema.POWER,
    schema.DISTANCE,
    schema.WAVEFORM_TYPE,
    schema.QC_PASS,
    schema.ACTIVATED,
    schema.INACTIVATED,
    schema.SIGNIFICANT,
)
_BOOL_COLUMNS = (schema.QC_PASS, schema.ACTIVATED, schema.INACTIVATED, schema.SIGNIFICANT, schema.LIGHT_ARTIFACT)
LEVEL = "power_level"  # column of extent_rows: index of the pooled power level
ABS_DISTANCE = schema.EXTENT_DISTANCE
PARAMETERS = ("intercept", "slope_per_um")


def _warn(message: str) -> None:
    warnings.warn(message, OptoCubeWarning, stacklevel=3)


# --------------------------------------------------------------------------
# The rows: one per unit x emitter x power level
# --------------------------------------------------------------------------
def extent_rows(
    table: Any,
    *,
    duration_s: Any = "max",
    exclude_artifacts: bool = True,
    what: str = "spatial_extent",
    required: Sequence[str] = REQUIRED_COLUMNS,
) -> tuple[pd.DataFrame, np.ndarray, dict[str, Any]]:
    """The rows of the responses table the spatial analyses use, one per unit x emitter x power level.

    Units are QC-passing with a known waveform type (RS or FS), a finite
    distance and a single emitter; light-artifact units are dropped when the
    table has a ``light_artifact`` column. One pulse duration is used per
    session: the longest (``duration_s="max"``, the convention of
    ``maps.select_conditions``, applied per session so that sessions with
    other pulse sets still count), the shortest (``"min"``), or a given
    duration in s. Powers are pooled across sessions into levels by the
    relative-tolerance rule of a session (``schema.power_levels``).

    Parameters
    ----------
    table
        The responses table (``opto_cube.responses_table``).
    duration_s
        ``"max"`` (default), ``"min"`` (per session) or a duration, s.
    exclude_artifacts
        Drop rows flagged ``light_artifact`` (when the column exists).
    what
        The caller's name, for messages.
    required
        The columns the caller needs.

    Returns
    -------
    rows : pandas.DataFrame
        The kept rows, with ``power_level`` (index into ``levels``), the level's
        ``power_mw`` and ``abs_distance_um`` added.
    levels : ndarray
        The pooled power levels, mW, ascending.
    info : dict
        What was dropped and why (counts), for the result's attributes.

    Raises
    ------
    TypeError, ValueError
        Not a DataFrame; missing columns; no usable row; several rows of one
        unit, emitter and power after the duration is chosen.

    Examples
    --------
    >>> import pandas as pd
    >>> table = pd.DataFrame({"session_id": "s", "cluster": [0, 0, 1], "emitter": 2,
    ...     "power_mw": [1.0, 1.0000001, 1.0], "duration_s": [0.01, 0.05, 0.05], "distance_um": [-50.0, -50.0, 20.0],
    ...     "waveform_type": "FS", "qc_pass": True, "activated": True, "inactivated": False, "significant": True})
    >>> rows, levels, info = extent_rows(table)
    >>> rows["duration_s"].tolist(), levels.round(3).tolist(), rows["abs_distance_um"].tolist()
    ([0.05, 0.05], [1.0], [50.0, 20.0])
    """
    if not isinstance(table, pd.DataFrame):
        raise TypeError(f"{what} expects the responses table as a pandas DataFrame, got {type(table).__name__!r}")
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise ValueError(
            f"{what}: the responses table lacks the column(s) {', '.join(map(repr, missing))} "
            f"(it has {', '.join(map(str, table.columns)) or 'no columns'})"
        )
    df = table.copy()
    df[schema.WAVEFORM_TYPE] = df[schema.WAVEFORM_TYPE].fillna(schema.UNKNOWN_LABEL).astype(str).str.strip()
    for c in _BOOL_COLUMNS:
        if c in df and df[c].dtype != bool:
            df[c] = df[c].astype("boolean").fillna(False).astype(bool)
    info: dict[str, Any] = {"rows_in": len(df)}
    distance = pd.to_numeric(df[schema.DISTANCE], errors="coerce").to_numpy(dtype=np.float64)
    power = pd.to_numeric(df[schema.POWER], errors="coerce").to_numpy(dtype=np.float64)
    emitter = pd.to_numeric(df[schema.EMITTER], errors="coerce").to_numpy(dtype=np.float64)
    keep = (
        df[schema.QC_PASS].to_numpy()
        & df[schema.WAVEFORM_TYPE].isin(schema.WAVEFORM_TYPES).to_numpy()
        & np.isfinite(distance)
        & np.isfinite(power)
        & (power > 0)
        & (emitter != schema.ALL_EMITTERS)
    )
    info["rows_not_qc_type_or_distance"] = int((~keep).sum())
    if exclude_artifacts and schema.LIGHT_ARTIFACT in df:
        artifact = df[schema.LIGHT_ARTIFACT].to_numpy() & keep
        info["rows_light_artifact"] = int(artifact.sum())
        keep &= ~artifact
    if schema.DURATION in df and duration_s is not None:
        duration = pd.to_numeric(df[schema.DURATION], errors="coerce").to_numpy(dtype=np.float64)
        if isinstance(duration_s, str):
            if duration_s not in ("max", "min"):
                raise ValueError(
                    f"{what}: duration_s must be 'max', 'min', a duration in s or None, got {duration_s!r}"
                )
            d = pd.Series(np.where(keep, duration, np.nan), index=df.index)
            chosen = d.groupby(df[schema.SESSION_ID].to_numpy()).transform(duration_s).to_numpy()
        else:
            try:
                chosen = np.full(len(df), float(duration_s))
            except (TypeError, ValueError):
                raise ValueError(
                    f"{what}: duration_s must be 'max', 'min', a duration in s or None, got {duration_s!r}"
                ) from None
        same = np.isclose(duration, chosen, rtol=schema.DURATION_RTOL, atol=0.0)
        info["rows_other_duration"] = int((keep & ~same).sum())
        keep &= same
    df = df[keep].copy()
    if df.empty:
        raise ValueError(
            f"{what}: no usable row in the responses table ({info['rows_in']} rows; need QC-passing RS/FS units "
            f"with a finite distance_um, a positive power and the chosen duration_s={duration_s!r})"
        )
    index, levels = schema.power_levels(df[schema.POWER].to_numpy(dtype=np.float64))
    df[LEVEL] = index
    df[schema.POWER] = levels[index]
    df[ABS_DISTANCE] = np.abs(df[schema.DISTANCE].to_numpy(dtype=np.float64))
    key = [schema.SESSION_ID, schema.CLUSTER, schema.EMITTER, LEVEL]
    dup = df.duplicated(key, keep=False)
    if dup.any():
        first = df[dup].iloc[0]
        raise ValueError(
            f"{what}: session {first[schema.SESSION_ID]!r}: cluster {first[schema.CLUSTER]} has several rows for "
            f"emitter {first[schema.EMITTER]} at {first[schema.POWER]:.6g} mW; pass duration_s to pick one pulse "
            "duration (or a table of one row per condition)"
        )
    info["rows_used"] = len(df)
    return df, levels, info


def _check_extent_args(
    n_boot: Any,
    confidence: Any,
    grid_step_um: Any,
    bin_um: Any,
    waveform_types: Sequence[str],
    effects: Sequence[str],
) -> tuple[list[str], list[str]]:
    """Check spatial_extent's parameters (ValueError naming the bad one); the groups to fit, as lists."""
    if not isinstance(n_boot, (int, np.integer)) or isinstance(n_boot, bool) or n_boot < 0:
        raise ValueError(f"spatial_extent: n_boot must be a whole number >= 0, got {n_boot!r}")
    if not (isinstance(confidence, (int, float)) and 0 < confidence < 1):
        raise ValueError(f"spatial_extent: confidence must lie in (0, 1), got {confidence!r}")
    for name, value in (("grid_step_um", grid_step_um), ("bin_um", bin_um)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise ValueError(f"spatial_extent: {name} must be a positive number of um, got {value!r}")
    waveform_types, effects = list(waveform_types), list(effects)
    bad = [w for w in waveform_types if w not in schema.WAVEFORM_TYPES] + [
        e for e in effects if e not in schema.EFFECTS
    ]
    if bad or not waveform_types or not effects:
        raise ValueError(
            f"spatial_extent: waveform_types must be among {schema.WAVEFORM_TYPES} and effects among "
            f"{schema.EFFECTS}, got {waveform_types!r} and {effects!r}"
        )
    return waveform_types, effects


def _empty_results(n_w: int, n_e: int, n_p: int, n_grid: int, n_bins: int) -> dict[str, np.ndarray]:
    """The result arrays, NaN (or 0 for counts) until a group is fitted."""
    shape = (n_w, n_e, n_p)
    return {
        schema.EXTENT_RADIUS: np.full(shape, np.nan),
        schema.EXTENT_RADIUS_LOW: np.full(shape, np.nan),
        schema.EXTENT_RADIUS_HIGH: np.full(shape, np.nan),
        schema.EXTENT_AT_EMITTER: np.full(shape, np.nan),
        schema.EXTENT_N_RESPONDING: np.zeros(shape, np.int64),
        EXTENT_FAILED_RESAMPLES: np.zeros(shape, np.int64),
        EXTENT_COEFFICIENTS: np.full((*shape, 2), np.nan),
        schema.EXTENT_PROFILE: np.full((*shape, n_grid), np.nan),
        schema.EXTENT_PROFILE_LOW: np.full((*shape, n_grid), np.nan),
        schema.EXTENT_PROFILE_HIGH: np.full((*shape, n_grid), np.nan),
        schema.EXTENT_OBSERVED: np.full((*shape, n_bins), np.nan),
        schema.EXTENT_N_UNITS: np.zeros((n_w, n_p), np.int64),
        EXTENT_N_OBSERVATIONS: np.zeros((n_w, n_p), np.int64),
        schema.EXTENT_N_SESSIONS: np.zeros((n_w, n_p), np.int64),
        schema.EXTENT_N_IN_BIN: np.zeros((n_w, n_p, n_bins), np.int64),
    }


@dataclass(frozen=True)
class _FitSettings:
    """What every group's fit shares: the effects, power levels, profile grid, bins and bootstrap settings."""

    effects: list[str]
    levels: np.ndarray
    grid: np.ndarray
    bin_um: float
    n_bins: int
    n_boot: int
    confidence: float


def _fit_waveform_type(
    data: dict[str, np.ndarray], i: int, wtype: str, sub: pd.DataFrame, fit: _FitSettings, rng: np.random.Generator
) -> list[str]:
    """Fit every effect at every power level for one waveform type (row ``i`` of ``data``); the NaN reasons."""
    session_code = pd.factorize(sub[schema.SESSION_ID])[0]
    cluster = sub[schema.CLUSTER].to_numpy(dtype=np.int64)
    unit_code, uniques = pd.factorize(session_code * (int(cluster.max()) + 1) + cluster - int(cluster.min()))
    unit_session = uniques // (int(cluster.max()) + 1)
    weights = bootstrap_weights(unit_session, fit.n_boot, rng) if fit.n_boot else np.zeros((0, uniques.size))
    problems: list[str] = []
    for k in range(fit.levels.size):
        here = (sub[LEVEL] == k).to_numpy()
        if not here.any():
            continue
        d = sub[ABS_DISTANCE].to_numpy()[here]
        u = unit_code[here]
        data[schema.EXTENT_N_UNITS][i, k] = np.unique(u).size
        data[EXTENT_N_OBSERVATIONS][i, k] = d.size
        data[schema.EXTENT_N_SESSIONS][i, k] = sub[schema.SESSION_ID][here].nunique()
        bins = np.minimum((d // fit.bin_um).astype(np.int64), fit.n_bins - 1)
        data[schema.EXTENT_N_IN_BIN][i, k] = np.bincount(bins, minlength=fit.n_bins)
        compact, u_local = np.unique(u, return_inverse=True)  # the units tested at this power
        w = np.ascontiguousarray(weights[:, compact])
        unit_rows = np.bincount(u_local, minlength=compact.size).astype(np.float64)
        for j, effect in enumerate(fit.effects):
            y = (sub[effect].to_numpy() & sub[schema.SIGNIFICANT].to_numpy())[here].astype(np.float64)
            data[schema.EXTENT_N_RESPONDING][i, j, k] = int(y.sum())
            with np.errstate(invalid="ignore", divide="ignore"):
                data[schema.EXTENT_OBSERVED][i, j, k] = (
                    np.bincount(bins, weights=y, minlength=fit.n_bins) / data[schema.EXTENT_N_IN_BIN][i, k]
                )
            label = f"{wtype} {effect} at {fit.levels[k]:.6g} mW"
            if y.sum() == 0 or y.sum() == y.size:
                problems.append(f"{label}: {'no' if y.sum() == 0 else 'every'} unit responding of {y.size}")
                continue
            problems += _fit_group(data, (i, j, k), d, y, u_local, w, unit_rows, fit, label)
    return problems


def _fit_group(
    data: dict[str, np.ndarray],
    at: tuple[int, int, int],
    d: np.ndarray,
    y: np.ndarray,
    u_local: np.ndarray,
    w: np.ndarray,
    unit_rows: np.ndarray,
    fit: _FitSettings,
    label: str,
) -> list[str]:
    """Fit one group's profile (and its bootstrap interval) into ``data`` at ``at``; the NaN reason, if any."""
    problems = []
    coef, _ = fit_profile(d, y)
    data[EXTENT_COEFFICIENTS][at] = coef[0]
    data[schema.EXTENT_RADIUS][at] = half_radius(coef[0])
    data[schema.EXTENT_AT_EMITTER][at] = expit(coef[0, 0])
    data[schema.EXTENT_PROFILE][at] = expit(coef[0, 0] + coef[0, 1] * fit.grid)
    if not np.isfinite(data[schema.EXTENT_RADIUS][at]):
        problems.append(f"{label}: the fitted fraction does not fall with distance")
        data[schema.EXTENT_RADIUS][at] = np.nan
    if not fit.n_boot:
        return problems
    boot, _ = fit_profile(d, y, unit=u_local, weights=w, start=coef[0])
    responders = w @ np.bincount(u_local, weights=y, minlength=w.shape[1])
    total = w @ unit_rows
    ok = (responders > 0) & (responders < total)
    data[EXTENT_FAILED_RESAMPLES][at] = int((~ok).sum())
    boot = boot[ok]
    data[schema.EXTENT_RADIUS_LOW][at], data[schema.EXTENT_RADIUS_HIGH][at] = percentile_interval(
        half_radius(boot), fit.confidence
    )
    curves = expit(boot[:, :1] + boot[:, 1:] * fit.grid[None, :])
    data[schema.EXTENT_PROFILE_LOW][at], data[schema.EXTENT_PROFILE_HIGH][at] = percentile_interval(
        curves, fit.confidence
    )
    return problems


# --------------------------------------------------------------------------
# The public function
# --------------------------------------------------------------------------
def spatial_extent(
    table: pd.DataFrame,
    *,
    n_boot: int = schema.EXTENT_N_BOOT,
    confidence: float = schema.EXTENT_CONFIDENCE,
    duration_s: Any = "max",
    exclude_artifacts: bool = True,
    waveform_types: Sequence[str] = schema.WAVEFORM_TYPES,
    effects: Sequence[str] = schema.EFFECTS,
    grid_step_um: float = EXTENT_GRID_STEP_UM,
    max_distance_um: float | None = None,
    bin_um: float = EXTENT_BIN_UM,
    seed: int = 0,
) -> xr.Dataset:
    """Radius of activation / inactivation per waveform type and power, with a bootstrap interval over units.

    The radius is the distance from the emitter at which the fraction of units
    significantly showing the effect falls to half its value at the emitter,
    from a logistic fall-off in ``|distance|`` fitted by maximum likelihood to
    the per-unit 0/1 outcomes (see the module docstring for the model and why).

    Parameters
    ----------
    table
        The responses table (``opto_cube.responses_table``), any number of sessions.
    n_boot
        Bootstrap resamples (units with replacement within session and waveform type); 0 for no interval.
    confidence
        Coverage of the percentile interval.
    duration_s
        The pulse duration used: ``"max"`` (default, the longest of each session), ``"min"`` or seconds.
    exclude_artifacts
        Leave out units flagged ``light_artifact`` (when the table has that column).
    waveform_types, effects
        The groups to fit (default RS, FS and activated, inactivated).
    grid_step_um, max_distance_um
        The ``|distance|`` grid of the fitted profile: 0 to ``max_distance_um``
        (default the largest ``|distance|``, rounded up) in steps of ``grid_step_um``.
    bin_um
        Width of the ``|distance|`` bins of the observed fractions (for plotting only; the fit uses no bins).
    seed
        Seed of the bootstrap.

    Returns
    -------
    xarray.Dataset
        Dims ``waveform_type``, ``effect``, ``power_mw`` (pooled levels),
        ``abs_distance_um`` (profile grid), ``abs_distance_bin_um`` (bin centres)
        and ``parameter``. Variables ``radius_um``, ``radius_low_um``,
        ``radius_high_um``, ``fraction_at_emitter``, ``profile`` (with
        ``profile_low`` / ``profile_high``), ``coefficients``, ``n_units``,
        ``n_observations``, ``n_responding``, ``n_sessions``,
        ``failed_resamples``, ``observed_fraction`` and ``n_in_bin``; every
        variable has ``units`` and ``long_name``; the method and its parameters
        are in ``attrs``. Groups without a responding unit (or without a
        fall-off) are NaN, with an :class:`~opto_cube.OptoCubeWarning`.

    Raises
    ------
    TypeError, ValueError
        A table that is not a DataFrame, lacks a column or has no usable row; bad parameters.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> table = pd.DataFrame({"session_id": ["a"] * 4 + ["b"] * 4, "cluster": [0, 1, 2, 3] * 2,
    ...     "emitter": 1, "power_mw": 1.0, "duration_s": 0.01,
    ...     "distance_um": [10.0, -120.0, 300.0, 420.0, -30.0, 90.0, -260.0, 500.0],
    ...     "waveform_type": "FS", "qc_pass": True, "activated": [1, 1, 0, 0, 1, 0, 1, 0],
    ...     "inactivated": False, "significant": True})
    >>> ext = spatial_extent(table, n_boot=100, waveform_types=["FS"], effects=["activated"])
    >>> ext.radius_um.dims, ext.radius_um.attrs["units"]
    (('waveform_type', 'effect', 'power_mw'), 'um')
    >>> bool(ext.radius_um.item() > 0), int(ext.n_units.item())
    (True, 8)
    """
    waveform_types, effects = _check_extent_args(n_boot, confidence, grid_step_um, bin_um, waveform_types, effects)
    rows, levels, info = extent_rows(table, duration_s=duration_s, exclude_artifacts=exclude_artifacts)
    if rows[schema.SESSION_ID].nunique() < 2:
        _warn(
            f"spatial_extent: one session ({rows[schema.SESSION_ID].iloc[0]!r}): the interval reflects the "
            "sampling of its units only, not the variation between sessions"
        )

    dmax = float(rows[ABS_DISTANCE].max()) if max_distance_um is None else float(max_distance_um)
    grid = grid_step_um * np.arange(math.ceil(dmax / grid_step_um - 1e-9) + 1, dtype=np.float64)
    n_bins = max(1, math.ceil(float(rows[ABS_DISTANCE].max()) / bin_um + 1e-12))
    bin_edges = bin_um * np.arange(n_bins + 1, dtype=np.float64)
    data = _empty_results(len(waveform_types), len(effects), levels.size, grid.size, n_bins)
    rng = np.random.default_rng(seed)
    problems: list[str] = []
    fit = _FitSettings(effects, levels, grid, bin_um, n_bins, n_boot, confidence)
    for i, wtype in enumerate(waveform_types):
        sub = rows[rows[schema.WAVEFORM_TYPE] == wtype]
        if not sub.empty:
            problems += _fit_waveform_type(data, i, wtype, sub, fit, rng)
    if problems:
        _warn("spatial_extent: NaN radius where " + "; ".join(problems))

    return _dataset(
        waveform_types,
        effects,
        levels,
        grid,
        bin_edges,
        data,
        {
            "n_boot": n_boot,
            "confidence": confidence,
            "seed": seed,
            "duration_s": str(duration_s),
            "exclude_light_artifacts": int(bool(exclude_artifacts)),
            "bin_um": bin_um,
            "grid_step_um": grid_step_um,
            **{f"table_{k}": v for k, v in info.items()},
        },
    )


_VARS: dict[str, tuple[str, str, str]] = {  # name -> (dims kind, long_name, units)
    schema.EXTENT_RADIUS: (
        "wep",
        "distance at which the fraction responding falls to half its value at the emitter",
        "um",
    ),
    schema.EXTENT_RADIUS_LOW: ("wep", "lower bound of the radius's bootstrap interval", "um"),
    schema.EXTENT_RADIUS_HIGH: ("wep", "upper bound of the radius's bootstrap interval", "um"),
    schema.EXTENT_AT_EMITTER: ("wep", "fitted fraction of units responding at the emitter", "1"),
    schema.EXTENT_N_RESPONDING: ("wep", "observations (unit x emitter) significantly showing the effect", "count"),
    EXTENT_FAILED_RESAMPLES: (
        "wep",
        "bootstrap resamples without a fall-off to fit (none or all responding)",
        "count",
    ),
    EXTENT_COEFFICIENTS: ("wepc", "logistic coefficients: intercept (1) and slope (per um) of |distance|", "1"),
    schema.EXTENT_PROFILE: ("wepg", "fitted fraction of units responding", "1"),
    schema.EXTENT_PROFILE_LOW: ("wepg", "lower bound of the fitted fraction's pointwise bootstrap interval", "1"),
    schema.EXTENT_PROFILE_HIGH: ("wepg", "upper bound of the fitted fraction's pointwise bootstrap interval", "1"),
    schema.EXTENT_OBSERVED: ("wepb", "observed fraction of units responding in the |distance| bin", "1"),
    schema.EXTENT_N_UNITS: ("wp", "units (session x cluster) tested", "count"),
    EXTENT_N_OBSERVATIONS: ("wp", "observations (unit x emitter) fitted", "count"),
    schema.EXTENT_N_SESSIONS: ("wp", "sessions contributing", "count"),
    schema.EXTENT_N_IN_BIN: ("wpb", "observations (unit x emitter) in the |distance| bin", "count"),
}


def _dataset(
    waveform_types: list[str],
    effects: list[str],
    levels: np.ndarray,
    grid: np.ndarray,
    bin_edges: np.ndarray,
    data: dict[str, np.ndarray],
    params: dict[str, Any],
) -> xr.Dataset:
    letters = {
        "w": schema.WAVEFORM_TYPE,
        "e": schema.EXTENT_EFFECT,
        "p": schema.POWER,
        "g": schema.EXTENT_DISTANCE,
        "b": schema.EXTENT_DISTANCE_BIN,
        "c": EXTENT_PARAMETER,
    }
    variables = {
        name: xr.Variable(tuple(letters[c] for c in kind), data[name], {"long_name": long_name, "units": units})
        for name, (kind, long_name, units) in _VARS.items()
    }
    coords = {
        schema.WAVEFORM_TYPE: (
            schema.WAVEFORM_TYPE,
            np.asarray(waveform_types, dtype=str),
            {"long_name": "waveform type", "units": "1"},
        ),
        schema.EXTENT_EFFECT: (
            schema.EXTENT_EFFECT,
            np.asarray(effects, dtype=str),
            {"long_name": "effect (significant, p < 0.005)", "units": "1"},
        ),
        schema.POWER: (schema.POWER, levels, {"long_name": "power level (pooled across sessions)", "units": "mW"}),
        schema.EXTENT_DISTANCE: (
            schema.EXTENT_DISTANCE,
            grid,
            {"long_name": "distance from the emitter (absolute)", "units": "um"},
        ),
        schema.EXTENT_DISTANCE_BIN: (
            schema.EXTENT_DISTANCE_BIN,
            (bin_edges[:-1] + bin_edges[1:]) / 2,
            {"long_name": "centre of the |distance| bin", "units": "um"},
        ),
        EXTENT_PARAMETER: (
            EXTENT_PARAMETER,
            np.asarray(PARAMETERS),
            {"long_name": "logistic coefficient", "units": "1"},
        ),
    }
    attrs = {
        "method": "logistic regression of the per-unit 0/1 outcome (effect & significant) on |distance|, maximum "
        "likelihood (Newton); radius r solves f(r) = f(0) / 2; interval: percentile bootstrap over units "
        "resampled with replacement within session and waveform type",
        "model": "f(d) = expit(intercept + slope_per_um * |d|)",
        "outcome": "activated & significant, inactivated & significant (per unit x emitter x power level)",
        "units_included": "qc_pass, waveform_type RS or FS, finite distance_um, one emitter",
        "power_grouping": f"levels pooled across sessions (powers equal within a relative {schema.POWER_RTOL:g})",
        EXTENT_DISTANCE_BIN_EDGES: bin_edges,
        **params,
    }
    return xr.Dataset(variables, coords=coords, attrs=attrs)
