"""The ``to-nwb`` job: sessions (and optionally their stores) written as NWB files.

The mapping, field by field, is ``docs/nwb.md``. In short:

- ``units``: one row per cluster (row k = cluster k, spikeless rows kept),
  ``spike_times`` and every cluster column of the cube under the cube's own
  names, the templates as ``waveform_mean``.
- the probe: a ``Device``, an ``ElectrodeGroup`` and the ``electrodes`` table
  (``rel_x``, ``rel_y`` = the ALF channel positions); the 14 emitters as the
  rows of ``ndx-optogenetics``' ``OptogeneticSitesTable`` (columns ``emitter``
  and ``position_from_tip_um``).
- the pulses: ``ndx-optogenetics``' ``OptogeneticPulsesTable``
  ``intervals/optogenetic_pulses`` in the stim files' row order, with the
  documented extra columns ``emitter`` and ``duration_s`` (exact; ``stop_time
  - start_time`` is not, in floating point).
- everything else (every session.json field, the laser calibration, the
  geometry, opto_cube's version, the sources' SHA-256) as JSON in the table
  ``processing/opto_cube/opto_cube_metadata`` (columns ``key``, ``value``).
- with a store: the cube as ``ndx-binned-spikes`` ``BinnedAlignedSpikes``.

Owns :func:`to_nwb` (every session of a data root), :func:`write_nwb` (one,
atomically), :func:`build_nwbfile` (the in-memory ``NWBFile``) and
:func:`is_our_nwb`. A job: it reads sessions (:func:`opto_cube.io.read_session`)
and stores (:func:`opto_cube.store.open.open_cube`). The reader of such files
is :func:`opto_cube.io.nwb.read_nwb`, which makes the identical cube.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from opto_cube import __version__, schema
from opto_cube.errors import OptoCubeError
from opto_cube.io.discover import find_sessions, read_session
from opto_cube.io.npy import NpyFile
from opto_cube.io.nwb import import_pynwb
from opto_cube.io.session import BLOCK_LEN, Session

NWB_DEVICE = "NeuropixelsOpto"  # the probe's Device
NWB_ELECTRODE_GROUP = "shank"
NWB_UNKNOWN_AGE = "P0D/"  # ISO 8601 open range: the ALF files give no age (session.json "age" wins)
NWB_LOCATION = "Isocortex"  # Allen CCF term: the recordings are in mouse cortex

_SOURCE_SCRIPT = "opto_cube to-nwb"  # an NWB file's general/source_script: written by opto_cube (replaceable)


@dataclass
class NwbResult:
    """What happened to one session: ``written`` or ``failed``."""

    session_id: str
    status: str
    path: str | None = None
    seconds: float = 0.0
    size_bytes: int = 0
    error: str | None = None
    warnings: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        if self.status == "failed":
            return f"failed     {self.session_id}: {self.error}"
        return (
            f"{self.status:<10} {self.session_id} -> {self.path} ({self.size_bytes / 1e6:.1f} MB, {self.seconds:.1f} s)"
        )


def _session_start(attrs: dict[str, Any]) -> dt.datetime:
    date = attrs.get("date")
    try:
        day = dt.date.fromisoformat(str(date))
    except ValueError:
        day = dt.date(1970, 1, 1)
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=False, allow_nan=True, default=_json_default)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


class _ArrayChunks:
    """A GenericDataChunkIterator over an array-like (memmap, dask array): HDF5 is written a block at a time.

    ``rows_per_chunk`` rows of the first axis are read per buffer; ``chunk_shape`` is the HDF5 chunk
    (default: a whole buffer).
    """

    def __new__(cls, data: Any, rows_per_chunk: int, chunk_shape: tuple[int, ...] | None = None) -> Any:
        from hdmf.data_utils import GenericDataChunkIterator

        class ArrayChunks(GenericDataChunkIterator):
            def __init__(self, data: Any, rows: int) -> None:
                self._data = data
                shape = tuple(int(n) for n in data.shape)
                rows = max(1, min(rows, shape[0] or 1))
                buffer = (rows, *shape[1:])
                chunk = tuple(min(c, b) for c, b in zip(chunk_shape, buffer, strict=True)) if chunk_shape else buffer
                super().__init__(chunk_shape=chunk, buffer_shape=buffer)

            @property
            def shape(self) -> tuple[int, ...]:
                return tuple(int(n) for n in self._data.shape)

            def __len__(self) -> int:  # DynamicTable checks its columns' lengths
                return int(self._data.shape[0])

            def _get_data(self, selection: tuple[slice, ...]) -> np.ndarray:
                return np.asarray(self._data[selection])

            def _get_maxshape(self) -> tuple[int, ...]:
                return self.shape

            def _get_dtype(self) -> np.dtype:
                return np.dtype(self._data.dtype)

        return ArrayChunks(data, rows_per_chunk)


class _FileArray:
    """A C-ordered array in a file at ``offset``, read by slices of its first axis with plain reads.

    Unlike a memory map, what is read is not kept mapped: the process's resident
    memory holds one slice at a time, whatever the file's size.
    """

    def __init__(self, path: Path, dtype: np.dtype, shape: tuple[int, ...], offset: int = 0) -> None:
        self.path, self.dtype, self.shape, self.offset = Path(path), np.dtype(dtype), tuple(shape), offset
        self._row = int(np.prod(shape[1:], dtype=np.int64)) if len(shape) > 1 else 1

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, selection: Any) -> np.ndarray:
        selection = selection if isinstance(selection, tuple) else (selection,)
        start, stop, _ = selection[0].indices(self.shape[0])
        with open(self.path, "rb") as f:
            f.seek(self.offset + start * self._row * self.dtype.itemsize)
            rows = np.fromfile(f, dtype=self.dtype, count=max(0, stop - start) * self._row)
        return rows.reshape((max(0, stop - start), *self.shape[1:]))[(slice(None), *selection[1:])]


def _spike_times_by_unit(session: Session, scratch: Path, block_len: int = BLOCK_LEN) -> tuple[_FileArray, np.ndarray]:
    """Every spike time grouped by cluster (time order within each), in a scratch file.

    One streamed pass: each block is sorted by cluster (stably) and each
    cluster's run is written at its place in the file (``os.pwrite``), so memory
    holds one block at a time. Returns the file as an array and the ragged index
    (the end of each cluster's spikes).
    """
    per_cluster = np.asarray(session.spikes_per_cluster, dtype=np.int64)
    ends = np.cumsum(per_cluster)
    n = int(ends[-1]) if ends.size else 0
    filled = ends - per_cluster  # next free slot of each cluster
    key_dtype = np.uint16 if per_cluster.size <= 1 << 16 else np.int64  # a radix sort for up to 65,536 clusters
    fd = os.open(scratch, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.ftruncate(fd, n * 8)
        for times, ids in session.spikes.blocks(block_len):
            order = np.argsort(ids.astype(key_dtype, copy=False), kind="stable")
            run = np.ascontiguousarray(times[order], dtype=np.float64)
            in_block = np.bincount(ids, minlength=per_cluster.size)
            stops = np.cumsum(in_block)
            for c in np.flatnonzero(in_block):
                os.pwrite(fd, run[stops[c] - in_block[c] : stops[c]].tobytes(), int(filled[c]) * 8)
            filled += in_block
    finally:
        os.close(fd)
    return _FileArray(scratch, np.dtype(np.float64), (n,)), ends


def _metadata(session: Session, tip_offset_um: float) -> dict[str, Any]:
    return {
        "session_json": session.attrs,  # the fields as reconciled with the arrays (the store's top level)
        "session_json_as_read": session.session_json,  # session.json as read (the store's session_json attribute)
        "laser_calibration": session.laser_calibration,
        schema.ATTR_TIP_OFFSET: float(tip_offset_um),
        schema.ATTR_EMITTER_POSITIONS: list(schema.EMITTER_POSITIONS_FROM_TIP_UM),
        schema.ATTR_SURFACE: session.surface_position_um,
        "n_channels": session.n_channels,
        schema.ATTR_VERSION: __version__,
        schema.ATTR_SHA256: dict(sorted(session.sha256.items())),
    }


def build_nwbfile(session: Session, spike_times: Any, spike_index: np.ndarray, tip_offset_um: float) -> Any:
    """The in-memory ``NWBFile`` of a session (spike times given, possibly as a chunk iterator)."""
    pynwb, ndx_optogenetics = import_pynwb()
    from hdmf.common import DynamicTable, DynamicTableRegion, VectorData, VectorIndex
    from ndx_ophys_devices import Effector
    from pynwb.file import Subject
    from pynwb.misc import Units

    attrs = session.attrs
    start = _session_start(attrs)
    nwb = pynwb.NWBFile(
        session_description=f"Neuropixels Opto session {session.session_id}, converted by opto_cube {__version__}",
        identifier=f"opto_cube:{session.session_id}:{session.sha256.get(schema.SPIKES_TIMES, '')[:16]}",
        session_start_time=start,
        timestamps_reference_time=start,
        session_id=session.session_id,
        source_script=_SOURCE_SCRIPT,
        source_script_file_name="opto_cube/jobs/to_nwb.py",
        experiment_description="optogenetic pulses from the 14 emitters of a Neuropixels Opto probe at several "
        "powers and durations, with the units sorted from the same probe",
        keywords=["Neuropixels Opto", "optogenetics", "ChrimsonR", "spike sorting"],
    )
    subject = attrs.get("subject")
    nwb.subject = Subject(
        subject_id=str(subject) if subject is not None else "unknown",
        species="Mus musculus",
        sex=str(attrs.get("sex", "U")),  # U: unknown (not in the ALF files)
        age=str(attrs.get("age", NWB_UNKNOWN_AGE)),
        description="DLX2.0-ChrimsonR-tdTomato mouse",
    )

    # the probe
    device = nwb.create_device(
        name=NWB_DEVICE, description="Neuropixels Opto probe (IMEC; 14 emitters along the shank)"
    )
    group = nwb.create_electrode_group(
        name=NWB_ELECTRODE_GROUP, description="the probe's shank", location=NWB_LOCATION, device=device
    )
    folder = session.folder
    positions = None
    if folder.is_dir() and (folder / schema.CLUSTERS_CHANNEL_POSITIONS).is_file():
        positions, _ = NpyFile.open(folder / schema.CLUSTERS_CHANNEL_POSITIONS).load()
    if positions is None:
        positions = np.full((session.n_channels, 2), np.nan)
    for x, y in np.asarray(positions, dtype=np.float64):
        nwb.add_electrode(group=group, location=NWB_LOCATION, rel_x=float(x), rel_y=float(y))

    # the emitters: ndx-optogenetics sites
    effector = Effector(name="ChrimsonR", label="ChrimsonR", description="DLX2.0-ChrimsonR-tdTomato")
    sites = ndx_optogenetics.OptogeneticSitesTable(description="the 14 emitters of the Neuropixels Opto shank")
    sites.add_column(name=schema.EMITTER, description="emitter id, 1..14")
    sites.add_column(name=schema.NWB_POSITION_FROM_TIP, description="emitter distance from the probe tip, um")
    for e, position in enumerate(schema.EMITTER_POSITIONS_FROM_TIP_UM, start=1):
        sites.add_row(effector=effector, **{schema.EMITTER: e, schema.NWB_POSITION_FROM_TIP: position})
    nwb.add_lab_meta_data(
        ndx_optogenetics.OptogeneticExperimentMetadata(
            stimulation_software="unknown",
            optogenetic_sites_table=sites,
            optogenetic_effectors=ndx_optogenetics.OptogeneticEffectors(effectors=[effector]),
        )
    )

    # the pulses, in the stim files' row order (columns built whole: add_row is slow for thousands of pulses)
    stim = session.stim
    onset, emitter = stim[schema.ONSET], stim[schema.EMITTER]
    n_pulses = onset.size
    sites_region = DynamicTableRegion(
        name="optogenetic_sites",
        description="the emitter's row of the optogenetic sites table",
        data=emitter.astype(np.int64) - 1,
        table=sites,
    )
    pulse_columns = [
        VectorData(name="start_time", description="pulse onset, s", data=onset),
        VectorData(
            name="stop_time", description="pulse offset, s (onset + duration)", data=onset + stim[schema.DURATION]
        ),
        VectorData(name="power_in_mW", description="calibrated power at the probe tip, mW", data=stim[schema.POWER]),
        VectorData(
            name="wavelength_in_nm", description="not in the source files (NaN)", data=np.full(n_pulses, math.nan)
        ),
        VectorIndex(
            name="optogenetic_sites_index", data=np.arange(1, n_pulses + 1, dtype=np.int64), target=sites_region
        ),
        sites_region,
        VectorData(
            name=schema.EMITTER,
            description="emitter id, 1..14 (also the row of optogenetic_sites)",
            data=emitter.astype(np.int8),
        ),
        VectorData(
            name=schema.DURATION,
            description="pulse duration, s, as stored (stop_time - start_time is not exact in floating point)",
            data=stim[schema.DURATION],
        ),
    ]
    pulses = ndx_optogenetics.OptogeneticPulsesTable(
        name=schema.NWB_PULSES,
        description="every light pulse, in the stim.* files' row order",
        id=np.arange(n_pulses, dtype=np.int64),
        columns=pulse_columns,
    )
    nwb.add_time_intervals(pulses)

    # units: spike times plus every cluster column
    clusters = session.clusters
    k = session.n_clusters
    times_col = VectorData(
        name="spike_times", description="spike times of each unit, s, session clock", data=spike_times
    )
    columns: list[Any] = [  # the index first: hdmf sets iterator-backed columns aside before seeing it
        VectorIndex(name="spike_times_index", data=np.asarray(spike_index, dtype=np.int64), target=times_col),
        times_col,
    ]
    for name in schema.CLUSTER_COORDS:
        values = clusters[name]
        spec = schema.VARIABLES[name]
        if values.dtype == object:
            values = np.asarray([str(v) for v in values], dtype=object)
        columns.append(VectorData(name=name, description=f"{spec.long_name} ({spec.units})", data=values))
    templates_path = folder / schema.CLUSTERS_TEMPLATES
    if folder.is_dir() and templates_path.is_file():
        header = NpyFile.open(templates_path)
        if header.shape[0] == k and header.shape[0] > 0:
            mm = (
                np.load(templates_path, mmap_mode="r", allow_pickle=False)
                if header.fortran_order
                else _FileArray(templates_path, header.dtype, header.shape, header.offset)
            )
            rows = max(1, (8 << 20) // max(1, int(np.prod(header.shape[1:])) * header.dtype.itemsize))
            columns.append(
                VectorData(
                    name="waveform_mean",
                    description="the cluster's template (samples x channels)",
                    data=_ArrayChunks(mm, rows),
                )
            )
    rate = attrs.get("sampling_rate")
    nwb.units = Units(
        name="units",
        description="every Kilosort cluster (row k = cluster k); spikeless rows kept",
        id=np.arange(k, dtype=np.int64) if session.cluster_ids is None else session.cluster_ids,  # Kilosort: its ids
        columns=columns,
        resolution=1.0 / rate if isinstance(rate, (int, float)) and rate > 0 else None,
    )

    # everything else, as JSON
    meta = DynamicTable(name=schema.NWB_METADATA, description="opto_cube's metadata: key and JSON value")
    meta.add_column(name="key", description="name")
    meta.add_column(name="value", description="JSON value")
    for key, value in _metadata(session, tip_offset_um).items():
        meta.add_row(key=key, value=_json(value))
    module = nwb.create_processing_module(name=schema.NWB_MODULE, description="opto_cube's metadata of the session")
    module.add(meta)
    return nwb


def write_nwb(
    session: Session | str | os.PathLike,
    path: str | os.PathLike,
    *,
    tip_offset_um: float = schema.TIP_OFFSET_UM,
    cube: str | os.PathLike | None = None,
    overwrite: bool = False,
) -> Path:
    """Write one session as an NWB file at ``path`` (atomically: a temp file renamed).

    Parameters
    ----------
    session
        A read :class:`opto_cube.io.session.Session` or a session folder or file (:func:`opto_cube.io.read_session`).
    path
        The ``.nwb`` file to write. One that exists is replaced only with
        ``overwrite`` and only when opto_cube wrote it (:func:`is_our_nwb`);
        anything else is refused, untouched.
    tip_offset_um
        Where the channel axis's zero lies above the probe tip, um (recorded).
    cube
        Optionally, the session's ``.zarr`` store, added as ``ndx-binned-spikes``
        ``BinnedAlignedSpikes`` (processing module ``opto_cube``).
    overwrite
        Replace an NWB file opto_cube wrote at ``path`` (never another file).

    Returns
    -------
    Path
        The file written.

    Examples
    --------
    >>> import tempfile, warnings
    >>> from opto_cube import synth
    >>> root = Path(tempfile.mkdtemp())
    >>> folder = synth.make_dataset(root, n_sessions=1, size="tiny")[0]
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("ignore")
    ...     out = write_nwb(folder, root / "out" / f"{folder.name}.nwb")
    >>> out.name == f"{folder.name}.nwb"
    True
    """
    pynwb, _ = import_pynwb()
    path = Path(path)
    _may_replace(path, overwrite)
    if not isinstance(session, Session):
        session = read_session(session)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{schema.NWB_SUFFIX}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    scratch = tmp.with_suffix(".spikes")  # .<stem>.<random>.tmp.spikes: float64 spike times, unit by unit
    try:
        times, index = _spike_times_by_unit(session, scratch)
        rows = 1 << 20
        data = _ArrayChunks(times, rows) if times.size else np.zeros(0, np.float64)
        nwb = build_nwbfile(session, data, index, tip_offset_um)
        if cube is not None:
            _add_cube(nwb, session, cube)
        with pynwb.NWBHDF5IO(tmp, mode="w") as writer:
            writer.write(nwb)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp made it private; the file is as any other the user writes
        os.replace(tmp, path)
    finally:
        for leftover in (tmp, scratch):
            leftover.unlink(missing_ok=True)
    return path


def is_our_nwb(path: str | os.PathLike) -> bool:
    """Whether ``path`` is an NWB file opto_cube wrote (an HDF5 file whose ``source_script`` is ``to-nwb``'s)."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            script = f.get("general/source_script")
            value = script[()] if isinstance(script, h5py.Dataset) else None
    except Exception:  # not HDF5, unreadable, a folder: not ours
        return False
    value = value.decode() if isinstance(value, bytes) else value
    return value == _SOURCE_SCRIPT


def _may_replace(path: Path, overwrite: bool) -> None:
    """Refuse to write over ``path`` unless it is absent, or an NWB file of opto_cube's and ``overwrite``."""
    if not os.path.lexists(path):
        return
    if path.is_symlink() or not path.is_file() or not is_our_nwb(path):
        what = "a folder" if path.is_dir() else "not an NWB file opto_cube wrote"
        raise OptoCubeError(
            f"{path}: exists and is {what}; refusing to replace it (left untouched):"
            " move it away or choose another --out"
        )
    if not overwrite:
        raise OptoCubeError(f"{path}: exists; pass --overwrite to replace it, or choose another --out")


def _add_cube(nwb: Any, session: Session, cube_path: str | os.PathLike) -> None:
    """The cube as ``BinnedAlignedSpikes``: (emitter, power, duration) conditions flattened to indices."""
    from ndx_binned_spikes import BinnedAlignedSpikes
    from pynwb import H5DataIO

    from opto_cube.store.open import open_cube

    try:
        ds = open_cube(os.fspath(cube_path))
    except Exception as e:
        raise OptoCubeError(f"{cube_path}: cannot open the cube ({e})") from e
    if ds.attrs.get(schema.ATTR_SESSION_ID) != session.session_id:
        raise OptoCubeError(
            f"{cube_path}: holds session {ds.attrs.get(schema.ATTR_SESSION_ID)!r}, not {session.session_id!r}"
        )
    same = ds.sizes[schema.CLUSTER] == session.n_clusters and np.array_equal(
        ds[schema.ONSET].values, np.sort(session.stim[schema.ONSET], kind="stable")
    )
    if not same:
        raise OptoCubeError(
            f"{cube_path}: not the cube of this session {session.session_id!r} (its clusters or "
            "trials differ: convert the session again)"
        )
    emitter = ds[schema.EMITTER].values.astype(np.int64)
    power_index, power_levels = schema.power_levels(ds[schema.POWER].values)
    duration = ds[schema.DURATION].values
    triples = list(zip(emitter.tolist(), power_index.tolist(), duration.tolist(), strict=True))
    keys = sorted(set(triples))
    lookup = {key: i for i, key in enumerate(keys)}
    condition = np.array([lookup[t] for t in triples], dtype=np.uint64)  # the spec says uint64
    labels = [f"emitter={e} power_mw={power_levels[p]:.6g} duration_s={d:g}" for e, p, d in keys]
    counts = ds[schema.SPIKE_COUNTS].data  # trials already in onset order, as BinnedAlignedSpikes wants
    _n_clusters, n_trials, n_bins = counts.shape
    rows = max(1, (64 << 20) // max(1, n_trials * n_bins * counts.dtype.itemsize))
    data = _ArrayChunks(counts, rows, (1, min(n_trials, 512), n_bins))
    bin_width = float(ds.attrs[schema.ATTR_BIN_WIDTH])
    window_start = float(ds.attrs[schema.ATTR_WINDOW][0])
    region = nwb.units.create_region(
        name="units_region", region=list(range(len(nwb.units))), description="every unit, in cube order"
    )
    binned = BinnedAlignedSpikes(
        name=schema.NWB_BINNED,
        description="opto_cube's cube: spikes per unit x pulse x bin, pulses in onset order; condition = "
        "(emitter, power level, duration)",
        bin_width_in_ms=bin_width * 1000.0,
        event_to_bin_offset_in_ms=window_start * 1000.0,
        data=data,
        event_timestamps=ds[schema.ONSET].values,
        condition_indices=condition,
        condition_labels=labels,
        units_region=region,
    )
    # compressed on write (the extension's constructor does not accept a DataIO wrapper): a 1 ms cube is mostly 0
    binned.fields["data"] = H5DataIO(data, compression="gzip", compression_opts=4)
    nwb.processing[schema.NWB_MODULE].add(binned)


def to_nwb(
    data_root: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    sessions: Sequence[str] | None = None,
    tip_offset_um: float = schema.TIP_OFFSET_UM,
    with_cube: str | os.PathLike | None = None,
    overwrite: bool = False,
) -> list[NwbResult]:
    """Write ``out_dir/<session_id>.nwb`` for every ALF session under ``data_root``.

    A broken session is reported in its result (``failed``) and leaves no file.
    ``with_cube``: a folder of stores whose ``<session_id>.zarr`` is added to each file.
    An existing ``<session_id>.nwb`` is replaced only with ``overwrite`` and
    only when opto_cube wrote it; anything else there is refused, untouched.

    Examples
    --------
    >>> import tempfile
    >>> from opto_cube import synth
    >>> root = Path(tempfile.mkdtemp())
    >>> _ = synth.make_dataset(root / "data", n_sessions=2, size="tiny")
    >>> results = to_nwb(root / "data", root / "nwb")
    >>> [r.status for r in results]
    ['written', 'written']
    """
    import warnings

    from opto_cube.errors import OptoCubeWarning

    folders = [f for f in find_sessions(data_root) if f.is_dir()]
    if sessions:
        by_name = {f.name: f for f in folders}
        unknown = [s for s in sessions if s not in by_name]
        if unknown:
            raise OptoCubeError(f"{data_root}: no session named {', '.join(map(repr, unknown))}")
        folders = [by_name[s] for s in sessions]
    out = Path(out_dir)
    results = []
    for folder in folders:
        started = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", OptoCubeWarning)
            try:
                session = read_session(folder)
                cube = None
                if with_cube is not None:
                    cube = Path(with_cube) / f"{session.session_id}.zarr"
                    if not cube.is_dir():
                        raise OptoCubeError(f"{cube}: no such store (convert the session first)")
                path = write_nwb(
                    session, out / f"{session.session_id}{schema.NWB_SUFFIX}", tip_offset_um=tip_offset_um, cube=cube,
                    overwrite=overwrite,
                )  # fmt: skip
                result = NwbResult(session.session_id, "written", str(path), size_bytes=path.stat().st_size)
            except OptoCubeError as e:
                result = NwbResult(folder.name, "failed", error=str(e))
            except Exception as e:  # a bug or an unforeseen input: one line, and the others go on
                result = NwbResult(folder.name, "failed", error=f"{folder}: {type(e).__name__}: {e}")
        result.seconds = time.perf_counter() - started
        result.warnings = [str(w.message) for w in caught if issubclass(w.category, OptoCubeWarning)]
        results.append(result)
    return results
