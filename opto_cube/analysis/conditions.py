"""Conditions and unit filters, written once for the responses, the maps and the PSTHs.

A *condition* is a stimulus: (emitter, power level, pulse duration), any of
which may be pooled (``by``). Powers equal within a relative 1e-6 are one
power level (:func:`opto_cube.schema.power_levels`). This module turns a
cube's per-trial coordinates into condition codes (:func:`trial_conditions`),
selects trials or table rows by value (:func:`match`, :func:`trial_mask`,
:func:`select_conditions`), and keeps the units an analysis looks at
(:func:`unit_mask`: QC, waveform type). It reads no store and computes no
statistic; see ``docs/contract.md`` for the names.

Examples
--------
>>> import numpy as np
>>> unit_mask([True, False, True], ["FS", "RS", ""], qc_only=True, unknown_waveform="drop").tolist()
[True, False, False]
>>> match(np.array([1.0, 4.0000001, 4.0]), "max", schema.POWER_RTOL, "power_mw").tolist()
[False, True, True]
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from opto_cube import schema

UNKNOWN_WAVEFORM_POLICIES = ("drop", "keep")  # what unit filters do with units of unknown waveform type

if TYPE_CHECKING:  # imported on first use: a conversion imports neither (opto_cube.lazy)
    import pandas as pd
    import xarray as xr
else:
    from opto_cube.lazy import LazyModule

    pd, xr = LazyModule("pandas"), LazyModule("xarray")

__all__ = [
    "TrialConditions",
    "check_by",
    "check_table",
    "check_unknown_policy",
    "conditions_of",
    "match",
    "select_conditions",
    "trial_conditions",
    "trial_mask",
    "unit_mask",
    "waveform_labels",
]

_BOOL_COLUMNS = (schema.QC_PASS, schema.ACTIVATED, schema.INACTIVATED, schema.SIGNIFICANT, schema.LIGHT_ARTIFACT)


# --------------------------------------------------------------------------
# Conditions of a cube's trials
# --------------------------------------------------------------------------
def check_by(by: Any, mode: str) -> tuple[str, ...]:
    """The condition keys of ``by`` for ``mode``, in canonical order; ValueError when they are not valid.

    Examples
    --------
    >>> check_by(None, "per_condition"), check_by("emitter", "published")
    (('emitter', 'power', 'duration'), ('emitter',))
    >>> check_by(["duration", "emitter"], "per_condition")
    ('emitter', 'duration')
    """
    if mode not in schema.RESPONSE_MODES:
        raise ValueError(f"mode must be one of {schema.RESPONSE_MODES!r}, got {mode!r}")
    default = schema.CONDITION_KEYS if mode == schema.MODE_PER_CONDITION else (schema.BY_EMITTER,)
    if by is None:
        return default
    keys = (by,) if isinstance(by, str) else tuple(by)
    unknown = [k for k in keys if k not in schema.CONDITION_KEYS]
    if unknown or len(set(keys)) != len(keys):
        raise ValueError(f"by must name distinct keys among {schema.CONDITION_KEYS!r}, got {by!r}")
    if mode == schema.MODE_PUBLISHED and set(keys) != set(default):
        raise ValueError(f"mode={mode!r} pools every power and duration of an emitter: pass by=None, got {by!r}")
    return tuple(k for k in schema.CONDITION_KEYS if k in keys)


@dataclass(frozen=True)
class TrialConditions:
    """The conditions of a session's trials.

    Attributes
    ----------
    coords
        Per condition: ``emitter`` (``schema.ALL_EMITTERS`` when pooled),
        ``power_mw`` (the level's mean power; NaN when pooled), ``duration_s``
        (NaN when pooled), ``n_trials`` and ``emitter_depth_um`` (NaN when
        emitters are pooled). Conditions are sorted by emitter, power, duration.
    code
        Each trial's condition index.
    duration_code
        Each trial's index into ``durations``.
    durations
        The distinct pulse durations, s, sorted.
    """

    coords: dict[str, np.ndarray]
    code: np.ndarray
    duration_code: np.ndarray
    durations: np.ndarray

    @property
    def n_conditions(self) -> int:
        """How many conditions."""
        return int(self.coords[schema.N_TRIALS].size)


def trial_conditions(cube: xr.Dataset, by: tuple[str, ...]) -> TrialConditions:
    """Condition codes of a cube's trials from its (in-memory) per-trial coordinates.

    Raises ValueError when trials of one emitter disagree on the emitter's depth.

    Examples
    --------
    >>> cube = xr.Dataset(coords={"emitter": ("trial", [2, 1, 2]), "power_mw": ("trial", [1.0, 1.0, 1.0000001]),
    ...                           "duration_s": ("trial", [0.01, 0.05, 0.01]),
    ...                           "emitter_depth_um": ("trial", [500.0, 600.0, 500.0])})
    >>> c = trial_conditions(cube, ("emitter", "power", "duration"))
    >>> c.code.tolist(), c.coords["emitter"].tolist(), c.coords["n_trials"].tolist()
    ([1, 0, 1], [1, 2], [1, 2])
    """
    trials = {name: cube[name].values for name in (schema.EMITTER, schema.POWER, schema.DURATION, schema.EMITTER_DEPTH)}
    return conditions_of(trials, by, str(cube.attrs.get(schema.ATTR_SESSION_ID, "?")))


def conditions_of(trials: Mapping[str, np.ndarray], by: tuple[str, ...], session: str = "?") -> TrialConditions:
    """:func:`trial_conditions` of plain arrays: ``trials`` maps ``emitter``, ``power_mw``, ``duration_s`` and
    ``emitter_depth_um`` to the trials' values; ``session`` names the session in an error."""
    emitter = np.asarray(trials[schema.EMITTER])
    power_index, power_level = schema.power_levels(trials[schema.POWER])
    durations, duration_index = np.unique(np.asarray(trials[schema.DURATION], np.float64), return_inverse=True)
    emitter_depth = np.asarray(trials[schema.EMITTER_DEPTH], np.float64)
    n_trials = emitter.size
    columns = {
        schema.BY_EMITTER: emitter.astype(np.int64),
        schema.BY_POWER: power_index,
        schema.BY_DURATION: duration_index.astype(np.int64),
    }
    if by:
        unique, code = np.unique(np.stack([columns[k] for k in by], axis=1), axis=0, return_inverse=True)
        code = code.reshape(-1)
    else:
        unique, code = np.zeros((1, 0), np.int64), np.zeros(n_trials, np.int64)
    n_conditions = unique.shape[0]
    first = np.zeros(n_conditions, np.int64)
    first[code[::-1]] = np.arange(n_trials)[::-1]  # a trial of each condition
    pooled = {k: k not in by for k in schema.CONDITION_KEYS}
    depth_of_emitter = _emitter_depths(session, emitter, emitter_depth)
    cond_emitter = emitter[first].astype(np.int64)
    nan = np.full(n_conditions, np.nan)
    coords = {
        schema.EMITTER: np.full(n_conditions, schema.ALL_EMITTERS, np.int64)
        if pooled[schema.BY_EMITTER]
        else cond_emitter,
        schema.POWER: nan if pooled[schema.BY_POWER] else power_level[power_index[first]],
        schema.DURATION: nan.copy() if pooled[schema.BY_DURATION] else durations[duration_index[first]],
        schema.N_TRIALS: np.bincount(code, minlength=n_conditions).astype(np.int64),
        schema.EMITTER_DEPTH: nan.copy()
        if pooled[schema.BY_EMITTER]
        else np.array([depth_of_emitter[int(e)] for e in cond_emitter], np.float64),
    }
    return TrialConditions(coords, code.astype(np.int64), duration_index.astype(np.int64), durations)


def _emitter_depths(session: str, emitter: np.ndarray, emitter_depth: np.ndarray) -> dict[int, float]:
    """One depth per emitter; refuses a cube where trials of an emitter disagree."""
    out = {}
    for e in np.unique(emitter):
        depths = np.unique(emitter_depth[emitter == e])
        if depths.size > 1 and not np.all(np.isnan(depths)):
            raise ValueError(f"cube {session!r}: emitter {e} has trials at several depths {depths.tolist()!r} um")
        out[int(e)] = float(depths[0])
    return out


# --------------------------------------------------------------------------
# Selecting by value (trials of a cube, rows of a table)
# --------------------------------------------------------------------------
def match(values: Any, wanted: Any, rtol: float, what: str) -> np.ndarray:
    """Which ``values`` equal one of ``wanted`` (within ``rtol``); ``"max"``/``"min"``: the extreme value.

    Raises ValueError naming what is available when a wanted value matches nothing.

    Examples
    --------
    >>> match([1, 2, 2, 3], [2, 3], 0.0, "emitter").tolist()
    [False, True, True, True]
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


def trial_mask(cube: xr.Dataset, *, emitter: Any = None, power_mw: Any = None, duration_s: Any = None) -> np.ndarray:
    """The trials of a cube with these values (each a value, a list, ``"max"``, ``"min"`` or None for all).

    Raises ValueError when no trial matches them all.
    """
    mask = np.ones(cube.sizes[schema.TRIAL], dtype=bool)
    for name, wanted in ((schema.EMITTER, emitter), (schema.POWER, power_mw), (schema.DURATION, duration_s)):
        if wanted is not None:
            mask &= match(cube[name].values, wanted, schema.MATCH_RTOL[name], name)
    if not mask.any():
        raise ValueError("no trial matches the selection (emitter, power_mw and duration_s together)")
    return mask


def select_conditions(
    table: pd.DataFrame, *, emitter: Any = None, power_mw: Any = None, duration_s: Any = None
) -> pd.DataFrame:
    """The rows of the responses table of some conditions.

    Each selector is a value, a list of values, ``"max"`` or ``"min"`` (the
    largest / smallest in the table), or None (all). Powers match within a
    relative 1e-6 (one power level), durations within 1e-9.

    Examples
    --------
    >>> table = pd.DataFrame({"emitter": [1, 1, 2], "power_mw": [1.0, 4.0000001, 4.0],
    ...                       "duration_s": [0.01, 0.05, 0.05]})
    >>> select_conditions(table, power_mw=4.0, duration_s="max").index.tolist()
    [1, 2]
    >>> select_conditions(table, emitter=[2]).index.tolist()
    [2]
    """
    selectors = {schema.EMITTER: emitter, schema.POWER: power_mw, schema.DURATION: duration_s}
    needed = [name for name, wanted in selectors.items() if wanted is not None]
    check_table(table, needed, "select_conditions")
    keep = np.ones(len(table), dtype=bool)
    for name in needed:
        keep &= match(table[name].to_numpy(dtype=np.float64), selectors[name], schema.MATCH_RTOL[name], name)
    return table[keep]


# --------------------------------------------------------------------------
# Units: the responses table, and who counts
# --------------------------------------------------------------------------
def check_table(table: Any, required: Iterable[str], what: str) -> pd.DataFrame:
    """A copy of the responses table with the columns ``what`` needs, their types normalised.

    Waveform types become strings with ``""`` for unknown (a CSV reader turns
    empty strings into NaN); boolean columns read with missing values count
    missing as False. TypeError / ValueError name what is missing.

    Examples
    --------
    >>> check_table(pd.DataFrame({"waveform_type": ["FS", None]}), ["waveform_type"], "x")["waveform_type"].tolist()
    ['FS', '']
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


def check_unknown_policy(unknown_waveform: str) -> None:
    """ValueError unless ``unknown_waveform`` is ``"drop"`` or ``"keep"``."""
    if unknown_waveform not in UNKNOWN_WAVEFORM_POLICIES:
        raise ValueError(f"unknown_waveform must be one of {UNKNOWN_WAVEFORM_POLICIES}, got {unknown_waveform!r}")


def unit_mask(
    qc_pass: Any,
    waveform_type: Any,
    *,
    qc_only: bool,
    unknown_waveform: str,
    light_artifact: Any = None,
    keep_artifacts: bool = True,
) -> np.ndarray:
    """The units (rows of the table, or clusters of a cube) an analysis keeps.

    ``qc_only`` keeps QC-passing units; ``unknown_waveform="drop"`` leaves out
    units of unknown waveform type (``""``), ``"keep"`` keeps them;
    ``keep_artifacts=False`` leaves out the units whose ``light_artifact`` is
    True (ignored when ``light_artifact`` is None).

    Examples
    --------
    >>> unit_mask([True, True], ["FS", "RS"], qc_only=True, unknown_waveform="drop",
    ...           light_artifact=[True, False], keep_artifacts=False).tolist()
    [False, True]
    """
    check_unknown_policy(unknown_waveform)
    waveform = np.asarray(waveform_type, dtype=object)
    keep = np.ones(waveform.shape, dtype=bool)
    if qc_only:
        keep &= np.asarray(qc_pass, dtype=bool)
    if unknown_waveform == "drop":
        keep &= waveform != schema.UNKNOWN_LABEL
    if not keep_artifacts and light_artifact is not None:
        keep &= ~_as_bool(light_artifact)
    return keep


def _as_bool(values: Any) -> np.ndarray:
    """Booleans of a column that may have come back from a csv as text or with missing values (False)."""
    series = pd.Series(np.asarray(values, dtype=object))
    text = series.astype(str).str.strip().str.lower()
    return (text.isin(["true", "1", "1.0"])).to_numpy(bool)


def filter_units(
    df: pd.DataFrame, *, qc_only: bool, unknown_waveform: str, keep_artifacts: bool = True
) -> pd.DataFrame:
    """The rows of a checked table (:func:`check_table`) that :func:`unit_mask` keeps.

    ``keep_artifacts=False`` also leaves out the rows flagged ``light_artifact``
    (when the table has that column: tables written before it keep every row).
    """
    artifact = df[schema.LIGHT_ARTIFACT] if schema.LIGHT_ARTIFACT in df.columns else None
    return df[
        unit_mask(
            df[schema.QC_PASS], df[schema.WAVEFORM_TYPE], qc_only=qc_only, unknown_waveform=unknown_waveform,
            light_artifact=artifact, keep_artifacts=keep_artifacts,
        )
    ]  # fmt: skip


def waveform_labels(values: pd.Series, unknown_waveform: str) -> list[str]:
    """RS, FS always (in that order); then other labels present, sorted; unknown ``""`` last when kept.

    Examples
    --------
    >>> waveform_labels(pd.Series(["FS", "", "XX"]), "keep")
    ['RS', 'FS', 'XX', '']
    """
    present = set(values.unique())
    others = sorted(present - set(schema.WAVEFORM_TYPES) - {schema.UNKNOWN_LABEL})
    labels = [*schema.WAVEFORM_TYPES, *others]
    if unknown_waveform == "keep":
        labels.append(schema.UNKNOWN_LABEL)
    return labels
