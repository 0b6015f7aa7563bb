"""The NWB reader: an NWB file as a :class:`~opto_cube.io.session.Session`.

:func:`read_nwb` turns a file written by ``opto-cube to-nwb``
(:mod:`opto_cube.jobs.to_nwb`), or one from another lab holding what the cube
needs, into a session, so the usual binning and store path makes the
identical cube. The mapping, field by field, is ``docs/nwb.md``; every column
is checked as the ALF files are, and anything less than the cube needs is
refused in one line naming the file. pynwb and the two extensions are imported
only on use (:func:`import_pynwb`; the ``nwb`` extra).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from opto_cube import schema
from opto_cube.errors import OptoCubeError, SessionFormatError, one_line, warn
from opto_cube.io.npy import as_bool, as_float, as_int, not_a_file, sha256_file, warn_precision
from opto_cube.io.session import Session, SpikeSource, check_stim, surface_position

DOCS = "docs/nwb.md"


def import_pynwb() -> Any:
    """pynwb and the extensions, imported on first use (the ``nwb`` extra)."""
    try:
        import ndx_binned_spikes  # noqa: F401
        import ndx_optogenetics
        import pynwb
    except ImportError as e:  # pragma: no cover - the test extra installs them
        raise OptoCubeError(
            f"NWB support needs pynwb, ndx-optogenetics and ndx-binned-spikes: pip install 'opto_cube[nwb]' ({e})"
        ) from e
    return pynwb, ndx_optogenetics


def _refuse(path: Path, what: str) -> SessionFormatError:
    return SessionFormatError(path, f"{what}; the NWB mapping opto_cube reads is documented in {DOCS}")


def _column(table: Any, name: str) -> np.ndarray | None:
    if table is None or name not in table.colnames:
        return None
    return np.asarray(table[name].data[:])


def read_nwb(path: str | os.PathLike) -> Session:
    """Read an NWB file as a session: the cube it makes is the one its ALF source makes.

    The session id is the file's stem. Needs ``units`` (spike times, depth
    columns) and a pulses table; refuses anything less in one line naming
    what is missing and pointing to ``docs/nwb.md``.

    Raises
    ------
    SessionFormatError
        Naming the file and what is missing.

    Examples
    --------
    >>> import tempfile
    >>> from opto_cube import synth
    >>> root = Path(tempfile.mkdtemp())
    >>> folder = synth.make_dataset(root, n_sessions=1, size="tiny")[0]
    >>> from opto_cube.jobs.to_nwb import to_nwb
    >>> results = to_nwb(root, root / "nwb")
    >>> session = read_nwb(results[0].path)
    >>> session.session_id == folder.name
    True
    """
    pynwb, _ = import_pynwb()
    path = Path(path)
    problem = not_a_file(path)
    if problem is not None:
        raise SessionFormatError(path, "no such NWB file" if problem == "required file is missing" else problem)
    sha = {path.name: sha256_file(path)}
    try:
        reader = pynwb.NWBHDF5IO(path, mode="r")
        nwb = reader.read()
    except Exception as e:
        raise SessionFormatError(path, f"not a readable NWB file ({_short(e)})") from e
    try:
        return _read(path, nwb, sha)
    except OptoCubeError:
        raise
    except RecursionError as e:
        raise SessionFormatError(path, "holds a value nested too deeply to read (a JSON or HDF5 structure)") from e
    except Exception as e:  # anything else the file's structure makes pynwb or numpy raise: one line, the file
        raise SessionFormatError(path, f"not a session opto_cube can read ({_short(e)}); see {DOCS}") from e
    finally:
        reader.close()


def _short(e: BaseException, limit: int = 160) -> str:
    """An exception in one short line (pynwb's errors can dump whole HDF5 builders)."""
    text = one_line(e)
    text = f"{type(e).__name__}: {text}" if type(e).__name__ not in text else text
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _metadata_of(nwb: Any) -> dict[str, Any]:
    module = nwb.processing.get(schema.NWB_MODULE) if nwb.processing else None
    if module is None or schema.NWB_METADATA not in module.data_interfaces:
        return {}
    table = module[schema.NWB_METADATA]
    keys, values = _column(table, "key"), _column(table, "value")
    if keys is None or values is None:
        return {}
    out = {}
    where = f"processing/{schema.NWB_MODULE}/{schema.NWB_METADATA}"
    if len(keys) != len(values):
        raise ValueError(f"{where} has {len(keys)} keys but {len(values)} values")
    for key, value in zip(keys, values, strict=True):
        key = key.decode() if isinstance(key, bytes) else str(key)
        value = value.decode() if isinstance(value, bytes) else str(value)
        try:
            out[key] = json.loads(value)
        except RecursionError:
            raise ValueError(f"{where}: the value of {key!r} is nested too deeply") from None
        except ValueError as e:
            raise ValueError(f"{where}: the value of {key!r} is not JSON ({one_line(e)})") from None
    return out


def _pulses_table(nwb: Any) -> Any:
    intervals = nwb.intervals or {}
    if schema.NWB_PULSES in intervals:
        return intervals[schema.NWB_PULSES]
    for table in intervals.values():
        if type(table).__name__ == "OptogeneticPulsesTable":
            return table
    return None


def _read(path: Path, nwb: Any, sha: dict[str, str]) -> Session:
    units, pulses = _required_tables(path, nwb)
    try:
        meta = _metadata_of(nwb)
    except ValueError as e:
        raise SessionFormatError(path, str(e)) from None
    for key in ("session_json", "session_json_as_read"):
        if key in meta and not isinstance(meta[key], dict):
            raise SessionFormatError(path, f"opto_cube metadata {key!r} must be a JSON object")
    k = len(units)
    clusters, absent = _clusters_of(path, units)
    stim = _stim_of(path, pulses)
    spikes, per_cluster, n_spikes = _spikes_of(path, units)
    session_id = path.stem
    n_channels = meta.get("n_channels", len(nwb.electrodes) if nwb.electrodes is not None else 0)
    if isinstance(n_channels, bool) or not isinstance(n_channels, int) or n_channels < 0:
        raise SessionFormatError(path, f"opto_cube metadata n_channels must be a whole number, found {n_channels!r}")
    qc = clusters[schema.QC_PASS]
    actual = {
        "n_spikes": n_spikes,
        "n_clusters": k,
        "n_trials": int(stim[schema.ONSET].size),
        "n_channels": n_channels,
        "n_qc_pass": int(qc.sum()),
        "n_qc_fail": int((~qc).sum()),
    }
    attrs = _attrs_of(path, nwb, meta, session_id, actual, stim[schema.POWER])
    if absent:  # warned once the file is known to hold what the cube needs
        warn(path, f"units lack {', '.join(absent)}: left empty / NaN / -1 / False (see {DOCS})")
    surface = surface_position(clusters[schema.TEMPLATE_DEPTH], clusters[schema.DEPTH_FROM_SURFACE])
    return Session(
        session_id=session_id,
        folder=path,
        attrs=attrs,
        clusters=clusters,
        stim=stim,
        spikes=spikes,
        sha256=sha,
        laser_calibration=meta.get("laser_calibration"),
        n_channels=n_channels,
        surface_position_um=surface,
        spikes_per_cluster=per_cluster,
        session_json=dict(meta.get("session_json_as_read", {})),
        cluster_ids=_cluster_ids_of(units),
    )


def _cluster_ids_of(units: Any) -> np.ndarray | None:
    """The units' ids as the cube's cluster coordinate when they are not their rows (and increase); else None."""
    ids = np.asarray(units.id[:], dtype=np.int64)
    if np.array_equal(ids, np.arange(ids.size)) or np.any(np.diff(ids) <= 0):
        return None
    return ids


def _required_tables(path: Path, nwb: Any) -> tuple[Any, Any]:
    """The units table (with spike times and depths) and the pulses table, refused when absent."""
    units = nwb.units
    if units is None or len(units) == 0:
        raise _refuse(path, "no units table (the spike times of the clusters)")
    if "spike_times" not in units.colnames:
        raise _refuse(path, "the units table has no spike_times column")
    missing = [c for c in (schema.DEPTH_FROM_SURFACE, schema.TEMPLATE_DEPTH) if c not in units.colnames]
    if missing:
        raise _refuse(path, f"the units table has no depth column {', '.join(missing)} (unit depths, um)")
    pulses = _pulses_table(nwb)
    if pulses is None:
        raise _refuse(path, f"no pulses table (intervals/{schema.NWB_PULSES}, an OptogeneticPulsesTable)")
    return units, pulses


_CLUSTER_DEFAULTS: dict[str, Any] = {
    schema.QC_PASS: False,
    schema.PEAK_CHANNEL: -1,
    schema.WAVEFORM_TYPE: schema.UNKNOWN_LABEL,
    schema.KS_LABEL: schema.UNKNOWN_LABEL,
}


def _clusters_of(path: Path, units: Any) -> tuple[dict[str, np.ndarray], list[str]]:
    """The cluster coordinates from the units columns (checked as the ALF files are), and those absent."""
    k = len(units)
    clusters: dict[str, np.ndarray] = {}
    absent = []
    for name in schema.CLUSTER_COORDS:
        values = _column(units, name)
        kind = schema.VARIABLES[name].dtype
        if values is None:
            absent.append(name)
            fill = _CLUSTER_DEFAULTS.get(name, math.nan)
            values = np.full(k, fill, dtype=object if kind == "str" else None)
        if values.shape != (k,):
            raise SessionFormatError(
                path, f"units column {name} has shape {values.shape}, not one value per unit ({k})"
            )
        clusters[name] = _as_kind(values, kind, path, name)
    return clusters, absent


def _as_kind(values: np.ndarray, kind: str, path: Path, name: str) -> np.ndarray:
    """A column converted to the dtype of its variable (str, bool, int32, otherwise float64), checked as ALF is.

    The same checks and words as :mod:`opto_cube.io` (``qc_pass`` 0 or 1,
    whole peak channels, numbers), naming the file.
    """
    if kind == "str":
        return np.array([v.decode() if isinstance(v, bytes) else str(v) for v in values], dtype=object)
    if kind == "bool":
        return as_bool(values, path)
    if kind == "int32":
        what = "peak channels" if name == schema.PEAK_CHANNEL else f"{name} values"
        ints = as_int(values, path, what)
        if np.any((ints < np.iinfo(np.int32).min) | (ints > np.iinfo(np.int32).max)):
            raise SessionFormatError(path, f"{what} outside the int32 range")
        return ints.astype(np.int32)
    return as_float(values, path)


def _pulse_emitter(pulses: Any) -> np.ndarray | None:
    """Each pulse's emitter id: the pulses table's column, or else that of its single optogenetic site."""
    emitter = _column(pulses, schema.EMITTER)
    if emitter is not None or "optogenetic_sites" not in pulses.colnames:
        return emitter
    sites_col = pulses["optogenetic_sites"]
    site_table = sites_col.target.table
    site_emitter = _column(site_table, schema.EMITTER)
    if site_emitter is None:
        return None
    rows = [
        np.asarray(sites_col.target.data[:])[a:b]
        for a, b in zip(np.r_[0, sites_col.data[:-1]], sites_col.data[:], strict=True)
    ]
    if all(r.size == 1 for r in rows):
        return site_emitter[np.concatenate(rows)]
    return None


def _pulse_columns(path: Path, pulses: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Onset, emitter, power and duration of each pulse, refused when a column is missing or there are no rows."""
    onset = _column(pulses, "start_time")
    if onset is None:
        raise _refuse(path, "the pulses table has no start_time column (onset of each pulse, s)")
    emitter = _pulse_emitter(pulses)
    if emitter is None:
        raise _refuse(path, f"the pulses table has no {schema.EMITTER} column (emitter id 1..14 of each pulse)")
    power = _column(pulses, "power_in_mW")
    if power is None:
        power = _column(pulses, schema.POWER)
    if power is None:
        raise _refuse(path, "the pulses table has no power_in_mW column (power of each pulse, mW)")
    duration = _column(pulses, schema.DURATION)
    stop = _column(pulses, "stop_time")
    if duration is None:
        if stop is None:
            raise _refuse(path, "the pulses table has no stop_time column (end of each pulse, s)")
        duration = stop - onset
    if onset.size == 0:
        raise _refuse(path, "the pulses table has no rows")
    columns = {"start_time": onset, schema.EMITTER: emitter, "power_in_mW": power, schema.DURATION: duration}
    for name, values in columns.items():
        if values.shape != onset.shape or values.ndim != 1:
            raise SessionFormatError(path, f"pulses column {name} has shape {values.shape}, not one value per pulse")
    if stop is not None and stop.shape == onset.shape and stop.dtype.kind in "iuf" and duration.dtype.kind in "iuf":
        _check_stop(path, onset, stop, duration)
    return onset, emitter, power, duration


def _check_stop(path: Path, onset: np.ndarray, stop: np.ndarray, duration: np.ndarray) -> None:
    """Refuse a ``duration_s`` column that contradicts ``stop_time - start_time`` (beyond float64 rounding)."""
    with np.errstate(invalid="ignore", over="ignore"):
        start, end, length = (np.asarray(a, dtype=np.float64) for a in (onset, stop, duration))
        tolerance = 1e-9 + 4 * np.spacing(np.maximum(np.abs(start), np.abs(end)))
        bad = np.abs((end - start) - length) > tolerance
    bad &= np.isfinite(start) & np.isfinite(end) & np.isfinite(length)
    if np.any(bad):
        i = int(np.flatnonzero(bad)[0])
        raise SessionFormatError(
            path,
            f"pulse {i}: {schema.DURATION} {length[i]!r} contradicts stop_time - start_time = {end[i] - start[i]!r}"
            f" ({int(bad.sum())} pulses)",
        )


def _stim_of(path: Path, pulses: Any) -> dict[str, np.ndarray]:
    """The stim arrays from the pulses table, checked (finite onsets and durations, emitter ids, durations > 0)."""
    onset, emitter, power, duration = _pulse_columns(path, pulses)
    stim = {schema.ONSET: onset, schema.EMITTER: emitter, schema.POWER: power, schema.DURATION: duration}
    # the ALF checks, words and all (check_stim), naming the NWB file: finite float onsets, whole emitter ids
    # 1..14, finite non-negative powers, finite positive durations. Pulses out of onset order are not warned about:
    # the file keeps the source's row order on purpose (the cube sorts them; its stim_index gives each trial's row)
    import warnings

    from opto_cube.errors import OptoCubeWarning

    paths = {name: path for name in schema.STIM_FILES}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*not in onset order", category=OptoCubeWarning)
        check_stim(stim, paths)
    return stim


def _spikes_of(path: Path, units: Any) -> tuple[SpikeSource, np.ndarray, int]:
    """Each unit's spike times merged into one time-sorted stream (held in memory), spikes per unit, their number."""
    index_col = units["spike_times"]
    if not hasattr(index_col, "target"):
        raise _refuse(path, "units spike_times is not a ragged column (spike_times with spike_times_index)")
    ends = np.asarray(index_col.data[:])
    raw = np.asarray(index_col.target.data[:])
    if raw.ndim != 1 or raw.dtype.kind != "f":
        raise SessionFormatError(
            path, f"spike times must be floating-point seconds, found dtype {raw.dtype} shape {raw.shape}"
        )
    if ends.dtype.kind not in "iu" or ends.shape != (len(units),):
        raise SessionFormatError(path, f"units spike_times_index must hold {len(units)} whole numbers")
    ends = ends.astype(np.int64)
    per_cluster = np.diff(np.r_[0, ends])
    if ends.size and (np.any(per_cluster < 0) or ends[-1] != raw.size):
        raise SessionFormatError(
            path,
            f"units spike_times_index is not a ragged index of the {raw.size} spike times"
            " (it must rise from 0 to their number)",
        )
    if raw.size and not np.all(np.isfinite(raw)):
        bad = int(np.flatnonzero(~np.isfinite(raw))[0])
        raise SessionFormatError(path, f"spike {bad} has a non-finite time {raw[bad].item()!r}")
    warn_precision(path, raw.dtype, float(np.max(np.abs(raw), initial=0.0)), "spike times")
    times = raw.astype(np.float64)
    ids = np.repeat(np.arange(len(units), dtype=np.int64), per_cluster)
    return SpikeSource.from_arrays(times, ids), per_cluster, int(times.size)


def _attrs_of(
    path: Path, nwb: Any, meta: dict[str, Any], session_id: str, actual: dict[str, int], power: np.ndarray
) -> dict[str, Any]:
    """The session attributes: the stored session.json (else the NWB file's own), reconciled with the arrays."""
    if "session_json" in meta:
        attrs = dict(meta["session_json"])
    else:
        attrs = {
            "subject": nwb.subject.subject_id if nwb.subject is not None else None,
            "date": nwb.session_start_time.date().isoformat(),
            "session_description": nwb.session_description,
        }
    stated = attrs.get(schema.ATTR_SESSION_ID)
    if stated is not None and stated != session_id and schema.SESSION_JSON_PREFIX + "session_id" not in attrs:
        attrs[schema.SESSION_JSON_PREFIX + "session_id"] = stated
    attrs[schema.ATTR_SESSION_ID] = session_id
    for key, value in actual.items():
        if key in attrs and attrs[key] != value:
            warn(path, f"{key} = {attrs[key]!r} but the arrays hold {value}; using {value}")
            attrs[schema.SESSION_JSON_PREFIX + key] = attrs[key]
        attrs[key] = value
    if schema.ATTR_POWER_RANGE not in attrs:
        attrs[schema.ATTR_POWER_RANGE] = [float(power.min()), float(power.max())]
    return attrs
