"""What every reader builds: :class:`Session` (one session in memory) and :class:`SpikeSource` (its spikes).

Also the session-level checks and pieces the ALF, NWB and Kilosort readers
share: the stimulus arrays (:func:`check_stim`), the session attributes
reconciled with the arrays (:func:`session_attrs`), the surface position from
the cluster depths (:func:`surface_position`) and the data root's laser
calibration (:func:`laser_calibration`).

The spike arrays are not loaded whole: :class:`SpikeSource` streams them in
blocks, so memory does not grow with the length of a session (unless the
spikes are unsorted, which needs one sort in memory).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from opto_cube import schema
from opto_cube.errors import SessionFormatError, warn
from opto_cube.io.npy import NpyFile, as_int, check_finite, read_json, sha256_file, warn_precision

BLOCK_LEN = 1 << 21  # spikes per streamed block (24 MB of times + ids)


# --------------------------------------------------------------------------
# The spikes, streamed
# --------------------------------------------------------------------------
class SpikeSource:
    """Time-sorted spikes, read in blocks of ``(times_s float64, cluster int64)``.

    Built by the readers, either over the two ``.npy`` files (sorted
    exports: nothing is held in memory) or over arrays sorted in memory.
    """

    def __init__(
        self,
        n_spikes: int,
        files: tuple[NpyFile, NpyFile] | None = None,
        arrays: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> None:
        self.n_spikes = n_spikes
        self._files = files
        self._arrays = arrays

    @classmethod
    def from_arrays(cls, times_s: np.ndarray, clusters: np.ndarray) -> SpikeSource:
        """Spikes from in-memory arrays (sorted here, stably, if they are not)."""
        times_s = np.asarray(times_s, dtype=np.float64)
        clusters = np.asarray(clusters, dtype=np.int64)
        if times_s.size and np.any(times_s[1:] < times_s[:-1]):
            order = np.argsort(times_s, kind="stable")
            times_s, clusters = times_s[order], clusters[order]
        return cls(times_s.size, arrays=(times_s, clusters))

    @property
    def in_memory(self) -> bool:
        return self._arrays is not None

    def blocks(self, block_len: int = BLOCK_LEN) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for start in range(0, self.n_spikes, block_len):
            stop = min(start + block_len, self.n_spikes)
            if self._arrays is not None:
                yield self._arrays[0][start:stop], self._arrays[1][start:stop]
            else:
                assert self._files is not None
                t_file, c_file = self._files
                yield (
                    t_file.read(start, stop).astype(np.float64, copy=False),
                    c_file.read(start, stop).astype(np.int64, copy=False),
                )

    def __repr__(self) -> str:
        where = "in memory" if self.in_memory else f"streamed from {self._files[0].path.parent}"  # type: ignore[index]
        return f"<SpikeSource {self.n_spikes} spikes, {where}>"


# --------------------------------------------------------------------------
# A session
# --------------------------------------------------------------------------
@dataclass
class Session:
    """One session folder, read and checked.

    ``clusters`` and ``stim`` map the cube's coordinate names
    (:mod:`opto_cube.schema`) to arrays in file order; ``attrs`` holds the
    session.json fields reconciled with the arrays (the arrays win).
    """

    session_id: str
    folder: Path
    attrs: dict[str, Any]
    clusters: dict[str, np.ndarray]
    stim: dict[str, np.ndarray]
    spikes: SpikeSource
    sha256: dict[str, str]
    laser_calibration: Any = None
    n_channels: int = 0
    surface_position_um: float = float("nan")
    spikes_per_cluster: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    session_json: dict[str, Any] = field(default_factory=dict)  # session.json as read
    # the cube's cluster coordinate (sorted ids; the spikes carry row indices into it); None: 0..K-1 (ALF, NWB)
    cluster_ids: np.ndarray | None = None

    @property
    def n_clusters(self) -> int:
        return int(self.clusters[schema.QC_PASS].size)

    @property
    def n_trials(self) -> int:
        return int(self.stim[schema.ONSET].size)

    @property
    def n_spikes(self) -> int:
        return self.spikes.n_spikes

    def __repr__(self) -> str:
        return (
            f"<Session {self.session_id}: {self.n_clusters} clusters, {self.n_trials} trials, {self.n_spikes} spikes>"
        )


def laser_calibration(folder: Path, sha: dict[str, str]) -> Any:
    """The data root's laser_calibration.json (optional), looked for above the session folder."""
    candidates = [folder.parent / schema.LASER_CALIBRATION_JSON, folder.parent.parent / schema.LASER_CALIBRATION_JSON]
    for path in candidates:
        if path.is_file():
            value, sha[schema.LASER_CALIBRATION_JSON] = read_json(path)
            mat = path.with_name(schema.LASER_CALIBRATION_MAT)
            if mat.is_file():  # optional; only its checksum is kept (the json says the same)
                sha[schema.LASER_CALIBRATION_MAT] = sha256_file(mat)
            return value
    return None


def surface_position(template_depth: np.ndarray, depth_from_surface: np.ndarray) -> float:
    both = template_depth + depth_from_surface
    both = both[np.isfinite(both)]
    return float(np.median(both)) if both.size else math.nan


def _reconcile_counts(path: Path, info: dict[str, Any], actual: dict[str, int], attrs: dict[str, Any]) -> None:
    for key, value in actual.items():
        stated = info.get(key)
        if stated is not None and stated != value:
            warn(path, f"{key} = {stated!r} but the arrays hold {value}; using {value}")
            attrs[schema.SESSION_JSON_PREFIX + key] = stated
        attrs[key] = value


def check_stim(stim: dict[str, np.ndarray], paths: dict[str, Path]) -> None:
    """Check (and convert in place) onsets, emitter ids, powers and durations; warn on trials out of onset order."""
    onset_dtype = np.asarray(stim[schema.ONSET]).dtype
    stim[schema.ONSET] = check_finite(stim[schema.ONSET], paths[schema.STIM_TIMES], "onset", floating=True)
    largest = float(np.max(np.abs(stim[schema.ONSET]), initial=0.0))
    warn_precision(paths[schema.STIM_TIMES], onset_dtype, largest, "pulse onsets")
    emitter = as_int(stim[schema.EMITTER], paths[schema.STIM_EMISSION_SITES], "emitter ids")
    if np.any((emitter < 1) | (emitter > schema.N_EMITTERS)):
        bad = emitter[(emitter < 1) | (emitter > schema.N_EMITTERS)][0]
        raise SessionFormatError(paths[schema.STIM_EMISSION_SITES], f"emitter id {bad} outside 1..{schema.N_EMITTERS}")
    stim[schema.EMITTER] = emitter.astype(np.int8)
    power = check_finite(stim[schema.POWER], paths[schema.STIM_POWER], "power")
    if np.any(power < 0):
        bad_power = power[power < 0][0].item()
        raise SessionFormatError(paths[schema.STIM_POWER], f"negative power {bad_power!r} mW")
    stim[schema.POWER] = power
    duration = check_finite(stim[schema.DURATION], paths[schema.STIM_DURATIONS], "duration")
    if np.any(duration <= 0):
        bad_duration = duration[duration <= 0][0].item()
        raise SessionFormatError(paths[schema.STIM_DURATIONS], f"non-positive pulse duration {bad_duration!r} s")
    stim[schema.DURATION] = duration
    if np.any(np.diff(stim[schema.ONSET]) < 0):
        warn(paths[schema.STIM_TIMES], "trials are not in onset order; sorted by onset")


def session_attrs(
    json_path: Path, info: dict[str, Any], session_id: str, actual: dict[str, int], power: np.ndarray
) -> dict[str, Any]:
    """The session attributes: the session.json fields, reconciled with the folder name and the arrays."""
    attrs: dict[str, Any] = dict(info)
    stated_id = info.get("session_id")
    if stated_id is not None and stated_id != session_id:
        warn(
            json_path, f"session_id {stated_id!r} differs from the folder name {session_id!r}; the folder name is used"
        )
        attrs[schema.SESSION_JSON_PREFIX + "session_id"] = stated_id
    attrs[schema.ATTR_SESSION_ID] = session_id
    _reconcile_counts(json_path, info, actual, attrs)
    if schema.ATTR_POWER_RANGE not in attrs:
        attrs[schema.ATTR_POWER_RANGE] = [float(power.min()), float(power.max())]
    return attrs
