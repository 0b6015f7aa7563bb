"""``cube.opto``: the front door to a cube in Jupyter, an xarray Dataset accessor.

``import opto_cube`` registers the accessor (as cf_xarray's ``ds.cf`` and
rioxarray's ``ds.rio``), so every opened cube, :func:`opto_cube.open_cube`'s
or plain ``xarray.open_zarr``'s, has it:

- ``cube.opto`` prints what the cube holds (session, shape, bin width,
  emitters, powers, durations, RS/FS/QC counts), as text and as HTML;
- :meth:`OptoAccessor.select` keeps units by waveform type and QC, and trials
  by emitter, power level and pulse duration (lazy stays lazy);
- :meth:`OptoAccessor.distance_um` each unit's depth relative to an emitter;
- :meth:`OptoAccessor.psth` and :meth:`OptoAccessor.responses`: the package's
  :func:`opto_cube.analysis.psth.psth` and :func:`opto_cube.analysis.response.responses` of the
  cube, labelled, with units and edges in the attributes.

The accessor holds no state and reads nothing but the small in-memory
coordinates; the cube stays a plain :class:`xarray.Dataset`. This module
imports xarray, numpy and :mod:`opto_cube.schema` only: the analysis modules
are imported when a method needs them.

Examples
--------
>>> import opto_cube
>>> from opto_cube.jobs.demo import example_stores
>>> (store,) = (example_stores() / "stores").iterdir()
>>> cube = opto_cube.open_cube(store)
>>> cube.opto
<opto_cube cube> session AL0055_2024-11-09_en1_p0
  spike_counts  8 clusters x 40 trials x 150 bins of 10 ms, window [-0.5, 1) s, uint8, lazy (1 chunk)
  emitters      3, 8, 13 at 1410, 910, 410 um below the surface
  powers        1, 4 mW
  durations     0.01, 0.05 s
  units         8: 6 RS, 2 FS; 5 pass QC (3 RS, 2 FS)
>>> fs = cube.opto.select(waveform_type="FS", qc=True, emitter=8, power_mw="max")
>>> dict(fs.sizes)["cluster"], dict(fs.sizes)["trial"]
(2, 8)
>>> cube.opto.distance_um(8).round(1).values.tolist()
[nan, 40.8, 100.3, -736.7, 44.0, -129.0, 354.0, -20.0]
"""

from __future__ import annotations

import html
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import xarray as xr

from opto_cube import schema
from opto_cube.errors import TimingWarning

__all__ = ["OptoAccessor"]

_TRIAL_SELECTORS = (schema.EMITTER, schema.POWER, schema.DURATION)


@xr.register_dataset_accessor("opto")
class OptoAccessor:
    """The ``opto`` accessor of a cube: ``cube.opto.select(...)``, ``.distance_um(...)``, ``.psth()``, ``.responses()``.

    Registered on ``import opto_cube``; never built by hand.

    Parameters
    ----------
    ds
        The cube (a Dataset as :func:`opto_cube.open_cube` returns it, or a
        selection of one). Each method checks that it has what the method
        needs, and says what is missing.
    """

    def __init__(self, ds: xr.Dataset) -> None:
        self._ds = ds

    # ------------------------------------------------------------------
    # What the cube holds
    # ------------------------------------------------------------------
    @property
    def session_id(self) -> str:
        """The session id (the store's name), ``""`` when the Dataset has none."""
        return str(self._ds.attrs.get(schema.ATTR_SESSION_ID, ""))

    @property
    def bin_width_s(self) -> float:
        """The width of a time bin, s (NaN when the Dataset does not say)."""
        return float(self._ds.attrs.get(schema.ATTR_BIN_WIDTH, np.nan))

    @property
    def emitters(self) -> np.ndarray:
        """The emitter ids of the cube's trials, sorted."""
        self._require((schema.EMITTER,), "emitters")
        return np.unique(np.asarray(self._ds[schema.EMITTER].values)).astype(np.int64)

    @property
    def power_levels_mw(self) -> np.ndarray:
        """The power levels of the cube's trials (powers equal within a relative 1e-6 are one), mW, sorted."""
        self._require((schema.POWER,), "power_levels_mw")
        return schema.power_levels(self._ds[schema.POWER].values)[1]

    @property
    def durations_s(self) -> np.ndarray:
        """The distinct pulse durations of the cube's trials, s, sorted."""
        self._require((schema.DURATION,), "durations_s")
        return np.unique(np.asarray(self._ds[schema.DURATION].values, np.float64))

    # ------------------------------------------------------------------
    # Selection
    # ------------------------------------------------------------------
    def select(
        self,
        *,
        waveform_type: str | Sequence[str] | None = None,
        qc: bool | None = None,
        emitter: Any = None,
        power_mw: Any = None,
        duration_s: Any = None,
    ) -> xr.Dataset:
        """The sub-cube of some units and some trials; lazy stays lazy (nothing is read).

        Parameters
        ----------
        waveform_type
            ``"RS"``, ``"FS"``, ``""`` (unknown), or a list of them; default all.
        qc
            True: the units passing QC (``qc_pass``); False: those failing it; None (default): all.
        emitter
            Emitter id(s), or ``"max"`` / ``"min"``; default all.
        power_mw
            Power level(s), mW: a trial matches a value within a relative 1e-6
            (one power level, as everywhere in opto_cube); ``"max"`` / ``"min"``
            the highest / lowest level; default all.
        duration_s
            Pulse duration(s), s, or ``"max"`` / ``"min"``; default all.

        Returns
        -------
        xarray.Dataset
            The cube's clusters and trials that match every argument, in the
            cube's order (``isel``). When trials are selected, the stored
            per-condition arrays (``condition_counts`` and its coordinates) keep
            the conditions of the selected trials, so :meth:`psth`,
            :meth:`responses` and the package's functions work on the sub-cube
            as on a cube.

        Raises
        ------
        ValueError
            A value the cube does not hold (the message quotes it and what
            there is), or a selection that matches no trial.

        Examples
        --------
        >>> import xarray as xr
        >>> import opto_cube  # registers cube.opto
        >>> cube = xr.Dataset(coords={
        ...     "cluster": [0, 1, 2], "trial": [0, 1, 2, 3], "qc_pass": ("cluster", [True, False, True]),
        ...     "waveform_type": ("cluster", ["FS", "RS", ""]),
        ...     "emitter": ("trial", [1, 2, 1, 2]), "power_mw": ("trial", [1.0, 1.0, 4.0, 4.0000001]),
        ...     "duration_s": ("trial", [0.01, 0.01, 0.01, 0.05])})
        >>> sub = cube.opto.select(waveform_type=["FS", ""], qc=True, power_mw=4.0)
        >>> sub.cluster.values.tolist(), sub.trial.values.tolist()
        ([0, 2], [2, 3])
        >>> cube.opto.select(waveform_type="fs")
        Traceback (most recent call last):
        ...
        ValueError: no waveform_type 'fs' in the cube; the types are ['', 'FS', 'RS']
        """
        ds = self._ds
        indexers: dict[str, np.ndarray] = {}
        if waveform_type is not None or qc is not None:
            indexers[schema.CLUSTER] = np.flatnonzero(self._unit_mask(waveform_type, qc))
        if any(v is not None for v in (emitter, power_mw, duration_s)):
            self._require(_TRIAL_SELECTORS, "select")
            from opto_cube.analysis.conditions import trial_mask

            mask = trial_mask(ds, emitter=emitter, power_mw=power_mw, duration_s=duration_s)
            indexers[schema.TRIAL] = np.flatnonzero(mask)
        out = ds.isel(indexers) if indexers else ds
        if schema.TRIAL in indexers:
            out = _keep_conditions_of_trials(out)
        return out

    def _unit_mask(self, waveform_type: Any, qc: Any) -> np.ndarray:
        ds = self._ds
        keep = np.ones(ds.sizes[schema.CLUSTER], dtype=bool)
        if waveform_type is not None:
            self._require((schema.WAVEFORM_TYPE,), "select")
            present = _labels(ds[schema.WAVEFORM_TYPE].values)
            try:
                wanted = [waveform_type] if isinstance(waveform_type, str) else list(waveform_type)
            except TypeError:  # one value that is not a label
                wanted = [waveform_type]
            choices = sorted({*schema.WAVEFORM_TYPES, *present.tolist()})
            unknown = [w for w in wanted if not isinstance(w, str) or w not in choices]
            if unknown or not wanted:
                shown = unknown[0] if len(unknown) == 1 and isinstance(waveform_type, str) else waveform_type
                raise ValueError(f"no waveform_type {shown!r} in the cube; the types are {choices!r}")
            keep &= np.isin(present, wanted)
        if qc is not None:
            if not isinstance(qc, (bool, np.bool_)):
                raise ValueError(f"qc must be True (passing units), False (failing units) or None (all), got {qc!r}")
            self._require((schema.QC_PASS,), "select")
            keep &= np.asarray(ds[schema.QC_PASS].values, dtype=bool) == bool(qc)
        return keep

    # ------------------------------------------------------------------
    # Geometry
    # ------------------------------------------------------------------
    def distance_um(self, emitter: int) -> xr.DataArray:
        """Each unit's depth below the surface minus the emitter's depth, um (positive: the unit lies deeper).

        The sign is the responses table's ``distance_um`` (``docs/contract.md``).

        Parameters
        ----------
        emitter
            One emitter id among the cube's trials.

        Returns
        -------
        xarray.DataArray
            ``distance_um`` over ``cluster`` (with the cube's per-cluster
            coordinates); NaN where a unit's depth is unknown. Attributes:
            ``units``, ``long_name``, ``emitter`` and ``emitter_depth_um``.

        Raises
        ------
        ValueError
            An emitter the cube's trials do not use (the message lists those
            they do), or trials of the emitter at several depths.

        Examples
        --------
        >>> import xarray as xr
        >>> import opto_cube  # registers cube.opto
        >>> cube = xr.Dataset(coords={
        ...     "cluster": [0, 1], "depth_from_surface_um": ("cluster", [150.0, 900.0]),
        ...     "emitter": ("trial", [1, 2]), "emitter_depth_um": ("trial", [1200.0, 500.0]),
        ...     "power_mw": ("trial", [1.0, 1.0]), "duration_s": ("trial", [0.01, 0.01])})
        >>> d = cube.opto.distance_um(2)
        >>> d.values.tolist(), d.attrs["units"], d.attrs["emitter_depth_um"]
        ([-350.0, 400.0], 'um', 500.0)
        >>> cube.opto.distance_um(7)
        Traceback (most recent call last):
        ...
        ValueError: no emitter 7 in session ''; its trials use the emitters [1, 2]
        """
        self._require((schema.DEPTH_FROM_SURFACE, schema.EMITTER_DEPTH, *_TRIAL_SELECTORS), "distance_um")
        emitters = self.emitters
        if (
            isinstance(emitter, (bool, np.bool_))
            or not isinstance(emitter, (int, np.integer))
            or int(emitter) not in emitters
        ):
            raise ValueError(
                f"no emitter {emitter!r} in session {self.session_id!r}; "
                f"its trials use the emitters {emitters.tolist()!r}"
            )
        from opto_cube.analysis.conditions import trial_conditions

        per_emitter = trial_conditions(self._ds, (schema.BY_EMITTER,)).coords  # one depth per emitter, checked
        depth = float(per_emitter[schema.EMITTER_DEPTH][per_emitter[schema.EMITTER] == int(emitter)][0])
        out = (self._ds[schema.DEPTH_FROM_SURFACE] - depth).rename(schema.DISTANCE)
        out.attrs = {
            "units": "um",
            "long_name": f"depth below the surface minus emitter {int(emitter)}'s (+: the unit lies deeper)",
            schema.EMITTER: int(emitter),
            schema.EMITTER_DEPTH: depth,
        }
        return out

    # ------------------------------------------------------------------
    # The package's analyses of this cube
    # ------------------------------------------------------------------
    def psth(
        self,
        *,
        clusters: Any = None,
        emitter: Any = None,
        power_mw: Any = None,
        duration_s: Any = None,
        bin_ms: float | None = None,
    ) -> xr.DataArray:
        """Trial-averaged firing rate around onset: :func:`opto_cube.analysis.psth.psth` of the cube, lazily.

        Parameters
        ----------
        clusters, emitter, power_mw, duration_s, bin_ms
            As :func:`opto_cube.analysis.psth.psth` (``emitter="nearest"``: each unit's nearest emitter).

        Returns
        -------
        xarray.DataArray
            ``firing_rate`` (Hz) over (cluster, time), dask-backed when the
            cube is; attributes as :func:`opto_cube.analysis.psth.psth` gives them
            (``units``, ``bin_width_s``, ``n_trials``, ``stim_durations_s``) and
            ``time_bin_edges_s``, the T + 1 bin edges relative to onset.

        Examples
        --------
        >>> import opto_cube
        >>> from opto_cube.jobs.demo import example_stores
        >>> (store,) = (example_stores() / "stores").iterdir()
        >>> cube = opto_cube.open_cube(store)
        >>> rate = cube.opto.select(waveform_type="FS").opto.psth(emitter=8, power_mw="max", bin_ms=50)
        >>> rate.dims, rate.attrs["units"], rate.attrs["n_trials"], rate.attrs["time_bin_edges_s"][:3].tolist()
        (('cluster', 'time'), 'Hz', 8, [-0.5, -0.45, -0.4])
        >>> rate.chunks is not None  # lazy until computed
        True
        """
        from opto_cube.analysis.psth import psth

        rate = psth(
            self._ds, clusters=clusters, emitter=emitter, power_mw=power_mw, duration_s=duration_s, bin_ms=bin_ms
        )
        rate.attrs["time_bin_edges_s"] = _edges(rate[schema.TIME].values, float(rate.attrs[schema.ATTR_BIN_WIDTH]))
        return rate

    def responses(
        self,
        *,
        by: str | Sequence[str] | None = None,
        mode: str = schema.MODE_PER_CONDITION,
        significant_by: str = "p",
        timing: bool = True,
        warn: bool = True,
    ) -> xr.Dataset:
        """Per-condition responses of every unit: :func:`opto_cube.analysis.response.responses` of the cube, lazily.

        Parameters
        ----------
        by, mode, significant_by, timing, warn
            As :func:`opto_cube.analysis.response.responses`.

        Returns
        -------
        xarray.Dataset
            Dims (cluster, condition), dask-backed until computed when the
            cube is; every variable has ``units`` and ``long_name``. Attributes
            as :func:`opto_cube.analysis.response.responses` gives them, and the windows
            the rates are taken over: ``pre_window_s`` (``[-0.5, 0)``) and
            ``stim_window_s`` (``[0, duration_s)`` of each condition, the
            ``duration_s`` coordinate; NaN when durations are pooled, where each
            trial's own duration counts).

        Examples
        --------
        >>> import opto_cube
        >>> from opto_cube.jobs.demo import example_stores
        >>> (store,) = (example_stores() / "stores").iterdir()
        >>> cube = opto_cube.open_cube(store)
        >>> r = cube.opto.select(qc=True).opto.responses(timing=False)
        >>> dict(r.sizes), r["stim_rate_hz"].attrs["units"], r.attrs["pre_window_s"]
        ({'cluster': 5, 'condition': 12}, 'Hz', [-0.5, 0.0])
        """
        from opto_cube.analysis.response import responses

        with warnings.catch_warnings(record=True) as caught:  # the TimingWarning, said at the caller's line
            warnings.simplefilter("always", TimingWarning)
            out = responses(self._ds, by=by, mode=mode, significant_by=significant_by, timing=timing, warn=warn)
        for w in caught:
            warnings.warn(w.message, w.category, stacklevel=2)
        out.attrs[schema.ATTR_PRE_WINDOW] = [
            float(x) for x in self._ds.attrs.get(schema.ATTR_PRE_WINDOW, schema.PRE_WINDOW_S)
        ]
        out.attrs["stim_window_s"] = "[0, duration_s)"
        return out

    # ------------------------------------------------------------------
    # What Jupyter shows
    # ------------------------------------------------------------------
    def summary(self) -> dict[str, str]:
        """What the repr shows, as ``{row label: text}``: session, shape, emitters, powers, durations, units."""
        ds = self._ds
        rows = {"session": self.session_id or "(no session_id)"}
        sizes = {d: ds.sizes.get(d, 0) for d in (schema.CLUSTER, schema.TRIAL, schema.TIME)}
        shape = f"{sizes[schema.CLUSTER]} clusters x {sizes[schema.TRIAL]} trials x {sizes[schema.TIME]} bins"
        if np.isfinite(self.bin_width_s):
            shape += f" of {self.bin_width_s * 1000:g} ms"
        window = ds.attrs.get(schema.ATTR_WINDOW)
        if window is not None and len(window) == 2:
            shape += f", window [{float(window[0]):g}, {float(window[1]):g}) s"
        if schema.SPIKE_COUNTS in ds.data_vars:
            counts = ds[schema.SPIKE_COUNTS]
            shape += f", {counts.dtype}"
            if counts.chunks is not None:
                n = int(np.prod([len(c) for c in counts.chunks]))
                shape += f", lazy ({n} chunk{'s' if n != 1 else ''})"
            else:
                shape += ", in memory"
        rows[schema.SPIKE_COUNTS] = shape
        if all(name in ds.coords for name in (schema.EMITTER, schema.EMITTER_DEPTH)):
            emitter = np.asarray(ds[schema.EMITTER].values)
            depth = np.asarray(ds[schema.EMITTER_DEPTH].values, np.float64)
            ids = np.unique(emitter)
            depths = [float(np.nanmedian(depth[emitter == e])) if np.isfinite(depth[emitter == e]).any() else np.nan
                      for e in ids]  # fmt: skip
            rows["emitters"] = f"{_join(ids)} at {_join(np.round(depths))} um below the surface" if ids.size else "none"
        if schema.POWER in ds.coords:
            rows["powers"] = f"{_join(self.power_levels_mw)} mW"
        if schema.DURATION in ds.coords:
            rows["durations"] = f"{_join(self.durations_s)} s"
        if schema.WAVEFORM_TYPE in ds.coords:
            rows["units"] = _unit_counts(
                _labels(ds[schema.WAVEFORM_TYPE].values),
                np.asarray(ds[schema.QC_PASS].values, bool) if schema.QC_PASS in ds.coords else None,
            )
        return rows

    def __repr__(self) -> str:
        rows = self.summary()
        lines = [f"<opto_cube cube> session {rows.pop('session')}"]
        lines += [f"  {label:<13} {text}" for label, text in rows.items()]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        rows = self.summary()
        body = "".join(
            f"<tr><th style='text-align:left'>{html.escape(label)}</th><td style='text-align:left'>"
            f"{html.escape(text)}</td></tr>"
            for label, text in rows.items()
        )
        return f"<div><b>opto_cube cube</b><table>{body}</table></div>"

    # ------------------------------------------------------------------
    def _require(self, names: Sequence[str], what: str) -> None:
        missing = [n for n in names if n not in self._ds.variables]
        if missing:
            raise ValueError(
                f"cube.opto.{what} needs {', '.join(map(repr, missing))}, which this Dataset lacks "
                f"(session {self.session_id!r}): use a cube as opto_cube.open_cube opens it, or a selection of one"
            )


# --------------------------------------------------------------------------
# Helpers (this module's own)
# --------------------------------------------------------------------------
def _keep_conditions_of_trials(ds: xr.Dataset) -> xr.Dataset:
    """A trial selection's stored per-condition arrays: the selected trials' conditions, renumbered.

    Selecting by emitter, power level and duration keeps whole conditions, so
    ``condition_counts`` of those conditions stay exact; if some condition
    lost part of its trials (it cannot, short of odd power jitter), the
    per-condition arrays are dropped rather than left wrong (the responses'
    timing columns are then NaN, with the usual warning).
    """
    if schema.TRIAL_CONDITION not in ds.coords or schema.CONDITION not in ds.dims:
        return ds
    code = np.asarray(ds[schema.TRIAL_CONDITION].values, np.int64)
    kept, new_code, n_kept = np.unique(code, return_inverse=True, return_counts=True)
    per_condition = [name for name, v in ds.variables.items() if schema.CONDITION in v.dims]
    whole = schema.CONDITION_N_TRIALS in ds.coords and np.array_equal(
        np.asarray(ds[schema.CONDITION_N_TRIALS].values, np.int64)[kept], n_kept
    )
    if not whole:
        return ds.drop_vars([*per_condition, schema.TRIAL_CONDITION])
    out = ds.isel({schema.CONDITION: kept})
    trial_condition = ds[schema.TRIAL_CONDITION].copy(data=new_code.reshape(-1).astype(np.int64))
    return out.assign_coords({schema.TRIAL_CONDITION: trial_condition})


def _edges(centres: np.ndarray, width: float) -> np.ndarray:
    """Bin edges (T + 1) from bin centres and the bin width, rounded to the microsecond they are built on."""
    centres = np.asarray(centres, np.float64)
    if centres.size == 0:
        return np.zeros(0)
    return np.round(np.append(centres - width / 2, centres[-1] + width / 2), 6)


def _labels(values: Any) -> np.ndarray:
    """Labels as an object array of Python str (the store's StringDType does not cast to fixed-width str)."""
    return np.array([str(v) for v in np.asarray(values).ravel()], dtype=object)


def _join(values: Any) -> str:
    return ", ".join(f"{float(v):g}" for v in np.asarray(values).ravel())


def _unit_counts(waveform: np.ndarray, qc: np.ndarray | None) -> str:
    """``8: 3 RS, 3 FS, 2 unknown; 5 pass QC (2 RS, 2 FS, 1 unknown)``."""

    def by_type(labels: np.ndarray) -> str:
        kinds = [*schema.WAVEFORM_TYPES, *sorted(set(labels.tolist()) - {*schema.WAVEFORM_TYPES, schema.UNKNOWN_LABEL})]
        parts = [f"{int((labels == k).sum())} {k}" for k in kinds]
        unknown = int((labels == schema.UNKNOWN_LABEL).sum())
        if unknown:
            parts.append(f"{unknown} unknown")
        return ", ".join(parts)

    text = f"{waveform.size}: {by_type(waveform)}"
    if qc is not None:
        text += f"; {int(qc.sum())} pass QC ({by_type(waveform[qc])})"
    return text
