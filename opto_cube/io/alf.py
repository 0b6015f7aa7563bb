"""The ALF reader: one Neuropixels Opto session folder of docs/format.md as a :class:`~opto_cube.io.session.Session`.

Everything read is checked (shapes, dtypes, ranges) and hashed (SHA-256) in
the same pass. A broken file raises :class:`~opto_cube.errors.SessionFormatError`
naming the file and the problem; a recoverable quirk warns and is repaired.
Pickles are never loaded: ``.npy`` headers are parsed first (:mod:`opto_cube.io.npy`)
and object dtypes are refused before any data is read. Finding sessions and
reading one of any kind is :mod:`opto_cube.io.discover`.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from opto_cube import schema
from opto_cube.errors import OptoCubeError, SessionFormatError, one_line, warn
from opto_cube.io.npy import (
    HASH_BLOCK,
    NpyFile,
    as_bool,
    as_float,
    as_int,
    not_other_than_a_file,
    open_npy,
    read_json,
    require_file,
    warn_precision,
)
from opto_cube.io.session import (
    BLOCK_LEN,
    Session,
    SpikeSource,
    check_stim,
    laser_calibration,
    session_attrs,
    surface_position,
)

TOP_OF_SHANK_TOLERANCE_UM = 10.0


def _read_text_lines(path: Path, n_rows: int) -> tuple[list[str], str]:
    data = path.read_bytes()
    try:
        lines = data.decode("utf-8-sig").splitlines()
    except UnicodeDecodeError as e:
        raise SessionFormatError(path, "not UTF-8 text") from e
    while len(lines) > n_rows and not lines[-1].strip():
        lines.pop()
    if len(lines) != n_rows:
        raise SessionFormatError(path, f"has {len(lines)} lines but there are {n_rows} clusters (one line per cluster)")
    return [line.strip() for line in lines], hashlib.sha256(data).hexdigest()


def _waveform_types(folder: Path, n_clusters: int, sha: dict[str, str]) -> np.ndarray:
    path = folder / schema.CLUSTERS_WAVEFORM_TYPE
    not_other_than_a_file(path)
    if not path.is_file():
        warn(path, "missing (optional): waveform_type left empty")
        return np.full(n_clusters, schema.UNKNOWN_LABEL, dtype=object)
    lines, sha[path.name] = _read_text_lines(path, n_clusters)
    known = {w.upper(): w for w in schema.WAVEFORM_TYPES}
    out = np.array([known.get(v.upper(), schema.UNKNOWN_LABEL) for v in lines], dtype=object)
    odd = sorted({v for v in lines if v and v.upper() not in known})
    if odd:
        warn(path, f"unknown waveform types {odd} left empty (expected RS or FS)")
    return out


def _ks_labels(folder: Path, n_clusters: int, sha: dict[str, str]) -> np.ndarray:
    path = folder / schema.CLUSTERS_KS_LABEL
    out = np.full(n_clusters, schema.UNKNOWN_LABEL, dtype=object)
    not_other_than_a_file(path)
    if not path.is_file():
        warn(path, "missing (optional): ks_label left empty")
        return out
    data = path.read_bytes()
    sha[path.name] = hashlib.sha256(data).hexdigest()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise SessionFormatError(path, "not UTF-8 text") from e
    delimiter = "\t" if "\t" in text.split("\n", 1)[0] else ","
    rows = [r for r in csv.reader(io.StringIO(text), delimiter=delimiter) if any(c.strip() for c in r)]
    if rows and not rows[0][0].strip().lstrip("-").isdigit():
        rows = rows[1:]  # header
    seen: set[int] = set()
    twice: set[int] = set()
    for i, row in enumerate(rows):
        if len(row) < 2 or not row[0].strip().lstrip("-").isdigit():
            raise SessionFormatError(path, f"row {i + 2} is not 'cluster_id,KSLabel': {','.join(row)!r}")
        cid = int(row[0])
        if not 0 <= cid < n_clusters:
            raise SessionFormatError(path, f"cluster_id {cid} outside 0..{n_clusters - 1}")
        out[cid] = row[1].strip()
        (twice if cid in seen else seen).add(cid)
    if twice:
        warn(path, f"cluster ids listed more than once: {sorted(twice)[:5]} (the last label kept)")
    if len(seen) != n_clusters:
        warn(path, f"labels {len(seen)} of {n_clusters} clusters; the others left empty")
    return out


def _checked_ids(ids: np.ndarray, path: Path, n_clusters: int) -> np.ndarray:
    """A block of cluster ids as int64, each in ``0..n_clusters-1`` (checked before any cast: 2**64-1 as it is)."""
    if ids.dtype.kind == "f":
        ids = as_int(ids, path, "cluster ids")
    lo, hi = (int(ids.min()), int(ids.max())) if ids.size else (0, 0)
    if lo < 0 or hi >= n_clusters:
        bad = lo if lo < 0 else hi
        raise SessionFormatError(
            path, f"cluster id {bad} outside 0..{n_clusters - 1} (K = rows of the clusters.* arrays)"
        )
    return ids.astype(np.int64, copy=False)


def _stream_spikes(
    t_file: NpyFile, c_file: NpyFile, n_clusters: int, sha: dict[str, str]
) -> tuple[bool, np.ndarray, tuple[float, float]]:
    """Check and hash both spike files in one streamed pass.

    Returns whether the times are sorted, the spike count of each cluster and
    the time range.
    """
    if t_file.dtype.kind != "f":
        raise SessionFormatError(t_file.path, f"spike times must be floating-point seconds, found dtype {t_file.dtype}")
    if c_file.dtype.kind not in "iuf":
        raise SessionFormatError(c_file.path, f"cluster ids must be integers, found dtype {c_file.dtype}")
    hashes = []
    handles = []
    for f in (t_file, c_file):
        h = hashlib.sha256()
        fh = open(f.path, "rb")
        h.update(fh.read(f.offset))
        hashes.append(h)
        handles.append(fh)
    n = t_file.shape[0]
    per_cluster = np.zeros(n_clusters, dtype=np.int64)
    is_sorted = True
    last = -np.inf
    t_min, t_max = np.inf, -np.inf
    try:
        for start in range(0, n, BLOCK_LEN):
            count = min(BLOCK_LEN, n - start)
            raw = [fh.read(count * f.dtype.itemsize) for fh, f in zip(handles, (t_file, c_file), strict=False)]
            for h, r in zip(hashes, raw, strict=False):
                h.update(r)
            times = np.frombuffer(raw[0], dtype=t_file.dtype)
            ids = np.frombuffer(raw[1], dtype=c_file.dtype)
            if not np.all(np.isfinite(times)):
                bad = int(np.flatnonzero(~np.isfinite(times))[0]) + start
                value = times[bad - start].item()
                raise SessionFormatError(t_file.path, f"spike {bad} has a non-finite time {value!r}")
            if is_sorted and (times[0] < last or np.any(times[1:] < times[:-1])):
                is_sorted = False
            last = times[-1]
            t_min, t_max = min(t_min, float(times.min())), max(t_max, float(times.max()))
            per_cluster += np.bincount(_checked_ids(ids, c_file.path, n_clusters), minlength=n_clusters)
        for fh, h, f in zip(handles, hashes, (t_file, c_file), strict=False):
            while rest := fh.read(HASH_BLOCK):  # trailing bytes, if any, are part of the file
                h.update(rest)
            sha[f.path.name] = h.hexdigest()
    finally:
        for fh in handles:
            fh.close()
    return is_sorted, per_cluster, (t_min, t_max) if n else (math.nan, math.nan)


def read_alf(folder: str | os.PathLike) -> Session:
    """Read and check one session folder.

    Parameters
    ----------
    folder
        A session folder holding session.json and the ALF files of docs/format.md.

    Returns
    -------
    Session
        Cluster and trial arrays in file order, the session attributes, the
        spikes as a stream, and the SHA-256 of every file read.

    Raises
    ------
    SessionFormatError
        Naming the file and the problem, when the folder cannot be converted.

    Examples
    --------
    >>> import tempfile, warnings
    >>> from opto_cube import synth
    >>> folder = synth.make_dataset(tempfile.mkdtemp(), n_sessions=1, size="tiny")[0]
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("ignore")  # the generator plants quirks the reader warns about
    ...     session = read_alf(folder)
    >>> session.session_id == folder.name, session.n_clusters, session.n_trials
    (True, 8, 40)
    """
    folder = Path(folder)
    if folder.suffix == schema.NWB_SUFFIX and not folder.is_dir():
        raise SessionFormatError(
            folder, "an NWB file, not an ALF session folder: read it with opto_cube.io.read_session"
        )
    if not folder.is_dir():
        raise SessionFormatError(folder, "no such session folder")
    if not os.access(folder, os.R_OK | os.X_OK):
        raise SessionFormatError(folder, "the session folder cannot be read (permission denied)")
    sha: dict[str, str] = {}
    try:
        return _read_session(folder, sha)
    except FileNotFoundError as e:
        raise SessionFormatError(e.filename or folder, "required file is missing") from e
    except PermissionError as e:
        raise SessionFormatError(e.filename or folder, "permission denied") from e
    except OptoCubeError:
        raise
    except (OSError, ValueError, EOFError) as e:
        raise SessionFormatError(folder, one_line(e)) from e


def _read_session(folder: Path, sha: dict[str, str]) -> Session:
    session_id = folder.name
    json_path, info = _read_session_json(folder, sha)
    clusters, n_clusters, n_channels = _read_clusters(folder, sha)
    stim, n_trials = _read_stim(folder, sha)
    spikes, per_cluster, n_spikes = _read_spikes(folder, n_clusters, sha)
    qc = clusters[schema.QC_PASS]
    attrs = session_attrs(
        json_path,
        info,
        session_id,
        {
            "n_spikes": n_spikes,
            "n_clusters": n_clusters,
            "n_trials": n_trials,
            "n_channels": n_channels,
            "n_qc_pass": int(qc.sum()),
            "n_qc_fail": int((~qc).sum()),
        },
        stim[schema.POWER],
    )
    surface = _check_surface(folder, json_path, info, clusters)
    return Session(
        session_id=session_id,
        folder=folder,
        attrs=attrs,
        clusters=clusters,
        stim=stim,
        spikes=spikes,
        sha256=sha,
        laser_calibration=laser_calibration(folder, sha),
        n_channels=n_channels,
        surface_position_um=surface,
        spikes_per_cluster=per_cluster,
        session_json=info,
    )


def _read_session_json(folder: Path, sha: dict[str, str]) -> tuple[Path, dict[str, Any]]:
    """session.json, which must hold a JSON object."""
    json_path = require_file(folder, schema.SESSION_JSON)
    info, sha[schema.SESSION_JSON] = read_json(json_path)
    if not isinstance(info, dict):
        raise SessionFormatError(json_path, f"must hold a JSON object, found {type(info).__name__}")
    return json_path, info


def _cluster_headers(folder: Path) -> tuple[dict[str, NpyFile], NpyFile, NpyFile, int, int]:
    """The clusters.* headers, checked to have one row per cluster; also the templates and channel positions."""
    cluster_headers = {name: open_npy(folder, name, 1) for name in schema.CLUSTER_FILES}
    templates = open_npy(folder, schema.CLUSTERS_TEMPLATES, 3)
    channels = open_npy(folder, schema.CLUSTERS_CHANNEL_POSITIONS, 2)
    reference = cluster_headers[schema.CLUSTERS_TEMPLATE_DEPTHS]
    n_clusters = reference.shape[0]
    if n_clusters == 0:
        raise SessionFormatError(reference.path, "no clusters (0 rows): nothing to convert")
    for header in [*cluster_headers.values(), templates]:
        if header.shape[0] != n_clusters:
            raise SessionFormatError(
                header.path,
                f"has {header.shape[0]} rows but {reference.path.name} has {n_clusters}; "
                "every clusters.* array has one row per cluster",
            )
    if channels.shape[1] != 2:
        raise SessionFormatError(channels.path, f"expected (channels, 2) positions, found shape {channels.shape}")
    n_channels = channels.shape[0]
    if templates.shape[2] != n_channels:
        warn(templates.path, f"has {templates.shape[2]} channels but channelPositions has {n_channels}")
    return cluster_headers, templates, channels, n_clusters, n_channels


def _read_clusters(folder: Path, sha: dict[str, str]) -> tuple[dict[str, np.ndarray], int, int]:
    """The cluster arrays (one row per cluster), with the number of clusters and of channels."""
    cluster_headers, templates, channels, n_clusters, n_channels = _cluster_headers(folder)
    sha[templates.path.name] = templates.sha256()
    channel_positions, sha[channels.path.name] = channels.load()
    as_float(channel_positions, channels.path)

    clusters: dict[str, np.ndarray] = {}
    for name, header in cluster_headers.items():
        arr, sha[name] = header.load()
        coord = schema.CLUSTER_FILES[name]
        if coord == schema.QC_PASS:
            clusters[coord] = as_bool(arr, header.path)
        elif coord == schema.PEAK_CHANNEL:
            clusters[coord] = as_int(arr, header.path, "peak channels").astype(np.int32)
            if np.any(clusters[coord] < -1) or np.any(clusters[coord] >= n_channels):
                warn(header.path, f"peak channels outside -1..{n_channels - 1}")
        else:
            clusters[coord] = as_float(arr, header.path)
    clusters[schema.WAVEFORM_TYPE] = _waveform_types(folder, n_clusters, sha)
    clusters[schema.KS_LABEL] = _ks_labels(folder, n_clusters, sha)
    _check_qc(folder / schema.CLUSTERS_QC_PASS, clusters)
    return clusters, n_clusters, n_channels


def _read_stim(folder: Path, sha: dict[str, str]) -> tuple[dict[str, np.ndarray], int]:
    """The stim.* arrays (one row per trial), checked, with the number of trials."""
    stim_headers = {name: open_npy(folder, name, 1) for name in schema.STIM_FILES}
    n_trials = stim_headers[schema.STIM_TIMES].shape[0]
    for header in stim_headers.values():
        if header.shape[0] != n_trials:
            raise SessionFormatError(
                header.path, f"has {header.shape[0]} rows but stim.times.npy has {n_trials}; stim.* arrays must agree"
            )
    if n_trials == 0:
        raise SessionFormatError(stim_headers[schema.STIM_TIMES].path, "no trials")
    stim: dict[str, np.ndarray] = {}
    for name, header in stim_headers.items():
        arr, sha[name] = header.load()
        stim[schema.STIM_FILES[name]] = arr
    check_stim(stim, {name: header.path for name, header in stim_headers.items()})
    return stim, n_trials


def _read_spikes(folder: Path, n_clusters: int, sha: dict[str, str]) -> tuple[SpikeSource, np.ndarray, int]:
    """The spikes as a stream (sorted in memory when out of time order), spikes per cluster and their number."""
    t_file = open_npy(folder, schema.SPIKES_TIMES, 1)
    c_file = open_npy(folder, schema.SPIKES_CLUSTERS, 1)
    if t_file.shape[0] != c_file.shape[0]:
        raise SessionFormatError(
            c_file.path, f"has {c_file.shape[0]} spikes but spikes.times.npy has {t_file.shape[0]}; they must agree"
        )
    is_sorted, per_cluster, time_range = _stream_spikes(t_file, c_file, n_clusters, sha)
    warn_precision(t_file.path, t_file.dtype, time_range[1], "spike times")
    if is_sorted:
        spikes = SpikeSource(t_file.shape[0], files=(t_file, c_file))
    else:
        warn(t_file.path, "spikes are not sorted in time; sorted in memory")
        times, ids = (np.load(f.path, allow_pickle=False) for f in (t_file, c_file))
        spikes = SpikeSource.from_arrays(times, ids)
    return spikes, per_cluster, t_file.shape[0]


def _check_surface(folder: Path, json_path: Path, info: dict[str, Any], clusters: dict[str, np.ndarray]) -> float:
    """The surface position from the cluster depths, warned about when unknown or far from top_of_shank_um."""
    surface = surface_position(clusters[schema.TEMPLATE_DEPTH], clusters[schema.DEPTH_FROM_SURFACE])
    if math.isnan(surface):
        warn(
            folder / schema.CLUSTERS_DEPTHS_FROM_SURFACE, "no finite depths: the surface, hence emitter depths, unknown"
        )
    top = info.get("top_of_shank_um")
    far = isinstance(top, (int, float)) and abs(top - surface) > TOP_OF_SHANK_TOLERANCE_UM
    if far and not math.isnan(surface):
        warn(json_path, f"top_of_shank_um = {top} but the cluster depths put the surface at {surface:.1f} um")
    return surface


def _check_qc(path: Path, clusters: dict[str, np.ndarray]) -> None:
    """Warn when qcPass disagrees with the QC rule applied to the metrics (qcPass is kept)."""
    with np.errstate(invalid="ignore"):
        rule = (
            (clusters[schema.PRESENCE_RATIO] > schema.QC_PRESENCE_RATIO_MIN)
            & (clusters[schema.ISI_VIOLATIONS] < schema.QC_ISI_VIOLATIONS_MAX)
            & (clusters[schema.AMPLITUDE_CUTOFF] < schema.QC_AMPLITUDE_CUTOFF_MAX)
        )
    disagree = int(np.sum(rule != clusters[schema.QC_PASS]))
    if disagree:
        warn(path, f"{disagree} clusters' qcPass disagrees with the QC rule on their metrics; qcPass kept as stored")
