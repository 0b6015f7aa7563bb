"""NWB in and out: a session as one NWB file, and an NWB file as a session.

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

:func:`read_session` turns such a file (or one from another lab holding what
the cube needs) into an :class:`opto_cube.io.alf.Session`, so the usual binning
and store path makes the identical cube. pynwb and the two extensions are
imported only here (the ``nwb`` extra).
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
from opto_cube.errors import OptoCubeError, SessionFormatError, warn
from opto_cube.io import alf as io

DOCS = "docs/nwb.md"
_SOURCE_SCRIPT = "opto_cube to-nwb"  # an NWB file's general/source_script: written by opto_cube (replaceable)


def _imports() -> Any:
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


# --------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------
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


def _spike_times_by_unit(
    session: io.Session, scratch: Path, block_len: int = io.BLOCK_LEN
) -> tuple[_FileArray, np.ndarray]:
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


def _metadata(session: io.Session, tip_offset_um: float) -> dict[str, Any]:
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


def build_nwbfile(session: io.Session, spike_times: Any, spike_index: np.ndarray, tip_offset_um: float) -> Any:
    """The in-memory ``NWBFile`` of a session (spike times given, possibly as a chunk iterator)."""
    pynwb, ndx_optogenetics = _imports()
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
        source_script_file_name="opto_cube/io/nwb.py",
        experiment_description="optogenetic pulses from the 14 emitters of a Neuropixels Opto probe at several "
        "powers and durations, with the units sorted from the same probe",
        keywords=["Neuropixels Opto", "optogenetics", "ChrimsonR", "spike sorting"],
    )
    subject = attrs.get("subject")
    nwb.subject = Subject(
        subject_id=str(subject) if subject is not None else "unknown",
        species="Mus musculus",
        sex=str(attrs.get("sex", "U")),  # U: unknown (not in the ALF files)
        age=str(attrs.get("age", schema.NWB_UNKNOWN_AGE)),
        description="DLX2.0-ChrimsonR-tdTomato mouse",
    )

    # the probe
    device = nwb.create_device(
        name=schema.NWB_DEVICE, description="Neuropixels Opto probe (IMEC; 14 emitters along the shank)"
    )
    group = nwb.create_electrode_group(
        name=schema.NWB_ELECTRODE_GROUP, description="the probe's shank", location=schema.NWB_LOCATION, device=device
    )
    folder = session.folder
    positions = None
    if folder.is_dir() and (folder / schema.CLUSTERS_CHANNEL_POSITIONS).is_file():
        positions, _ = io.NpyFile.open(folder / schema.CLUSTERS_CHANNEL_POSITIONS).load()
    if positions is None:
        positions = np.full((session.n_channels, 2), np.nan)
    for x, y in np.asarray(positions, dtype=np.float64):
        nwb.add_electrode(group=group, location=schema.NWB_LOCATION, rel_x=float(x), rel_y=float(y))

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
        header = io.NpyFile.open(templates_path)
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
    session: io.Session | str | os.PathLike,
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
        A read :class:`opto_cube.io.alf.Session` or a session folder.
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
    pynwb, _ = _imports()
    path = Path(path)
    _may_replace(path, overwrite)
    if not isinstance(session, io.Session):
        session = io.read_session(session)
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


def _add_cube(nwb: Any, session: io.Session, cube_path: str | os.PathLike) -> None:
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

    folders = [f for f in io.find_sessions(data_root) if f.is_dir()]
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
                from opto_cube.jobs.convert import read_session  # ALF or Kilosort / phy folders (opto_cube.io.kilosort)

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


# --------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------
def _refuse(path: Path, what: str) -> SessionFormatError:
    return SessionFormatError(path, f"{what}; the NWB mapping opto_cube reads is documented in {DOCS}")


def _column(table: Any, name: str) -> np.ndarray | None:
    if table is None or name not in table.colnames:
        return None
    return np.asarray(table[name].data[:])


def read_session(path: str | os.PathLike) -> io.Session:
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
    >>> results = to_nwb(root, root / "nwb")
    >>> session = read_session(results[0].path)
    >>> session.session_id == folder.name
    True
    """
    pynwb, _ = _imports()
    path = Path(path)
    problem = io.not_a_file(path)
    if problem is not None:
        raise SessionFormatError(path, "no such NWB file" if problem == "required file is missing" else problem)
    sha = {path.name: io.sha256_file(path)}
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
    text = io._one_line(e)
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
            raise ValueError(f"{where}: the value of {key!r} is not JSON ({io._one_line(e)})") from None
    return out


def _pulses_table(nwb: Any) -> Any:
    intervals = nwb.intervals or {}
    if schema.NWB_PULSES in intervals:
        return intervals[schema.NWB_PULSES]
    for table in intervals.values():
        if type(table).__name__ == "OptogeneticPulsesTable":
            return table
    return None


def _read(path: Path, nwb: Any, sha: dict[str, str]) -> io.Session:
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
    surface = io._surface_position(clusters[schema.TEMPLATE_DEPTH], clusters[schema.DEPTH_FROM_SURFACE])
    return io.Session(
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
        return io._as_bool(values, path)
    if kind == "int32":
        what = "peak channels" if name == schema.PEAK_CHANNEL else f"{name} values"
        ints = io._as_int(values, path, what)
        if np.any((ints < np.iinfo(np.int32).min) | (ints > np.iinfo(np.int32).max)):
            raise SessionFormatError(path, f"{what} outside the int32 range")
        return ints.astype(np.int32)
    return io._as_float(values, path)


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
    # the ALF checks, words and all (io._check_stim), naming the NWB file: finite float onsets, whole emitter ids
    # 1..14, finite non-negative powers, finite positive durations. Pulses out of onset order are not warned about:
    # the file keeps the source's row order on purpose (the cube sorts them; its stim_index gives each trial's row)
    import warnings

    from opto_cube.errors import OptoCubeWarning

    paths = {name: path for name in schema.STIM_FILES}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*not in onset order", category=OptoCubeWarning)
        io._check_stim(stim, paths)
    return stim


def _spikes_of(path: Path, units: Any) -> tuple[io.SpikeSource, np.ndarray, int]:
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
    io.warn_precision(path, raw.dtype, float(np.max(np.abs(raw), initial=0.0)), "spike times")
    times = raw.astype(np.float64)
    ids = np.repeat(np.arange(len(units), dtype=np.int64), per_cluster)
    return io.SpikeSource.from_arrays(times, ids), per_cluster, int(times.size)


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
