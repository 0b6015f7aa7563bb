"""Read a Kilosort / phy output folder plus a pulses table as a session (docs/format.md, "Kilosort / phy").

A lab that records with a Neuropixels Opto probe but does not export the
dataset's ALF layout brings what Kilosort 4 and phy write (``spike_times.npy``
in samples, ``spike_clusters.npy``, ``templates.npy``, ``channel_positions.npy``,
``amplitudes.npy``, ``params.py``, ``cluster_*.tsv``) and a table of its light
pulses (``pulses.csv``). :func:`read_kilosort` turns such a folder into the
same :class:`opto_cube.io.session.Session` the ALF reader makes, so everything
downstream (binning, the store, responses, NWB) is shared.

Nothing in the folder is executed: ``params.py`` is parsed with :mod:`ast` and
only literal assignments count (the text files are read by
:mod:`opto_cube.io.kilosort_tables`); ``.npy`` files are read by the
header-first reader of :mod:`opto_cube.io.npy`, which refuses pickles.

Derived per cluster (``template_depth_um``, ``peak_channel``,
``trough_to_peak_ms``, ``waveform_type``, ``presence_ratio``,
``isi_violations_ratio``, ``amplitude_cutoff``, ``qc_pass``) by the kernels of
:mod:`opto_cube.io.kilosort_metrics`, with the definitions of docs/format.md.

Examples
--------
>>> import tempfile, warnings
>>> from opto_cube import synth
>>> root = tempfile.mkdtemp()
>>> folder = synth.make_dataset(root, n_sessions=1, size="tiny", layout="kilosort")[0]
>>> is_kilosort_folder(folder)
True
>>> with warnings.catch_warnings():
...     warnings.simplefilter("ignore")
...     session = read_kilosort(folder)
>>> session.n_trials
40
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from opto_cube import schema
from opto_cube.errors import OptoCubeError, SessionFormatError, one_line, warn
from opto_cube.io.kilosort_metrics import QcAccumulator, template_features, waveform_types
from opto_cube.io.kilosort_tables import (
    PULSE_WAVELENGTH,
    cluster_tables,
    find_pulses_file,
    read_params_hashed,
    read_pulses,
)
from opto_cube.io.npy import NpyFile, as_float, open_npy, read_json, require_file
from opto_cube.io.session import BLOCK_LEN, Session, SpikeSource, check_stim, laser_calibration, session_attrs

# --------------------------------------------------------------------------
# The folder's files (Kilosort 4's save_to_phy and phy's curation)
# --------------------------------------------------------------------------
PARAMS_PY = "params.py"
SPIKE_TIMES = "spike_times.npy"
SPIKE_CLUSTERS = "spike_clusters.npy"
SPIKE_TEMPLATES = "spike_templates.npy"
AMPLITUDES = "amplitudes.npy"
TEMPLATES = "templates.npy"
CHANNEL_POSITIONS = "channel_positions.npy"
MARKER_FILES = (PARAMS_PY, SPIKE_TIMES)  # a folder holding both is a Kilosort session

ATTR_SAMPLE_RATE = "sample_rate_hz"
ATTR_WAVELENGTHS = "wavelengths_nm"
ATTR_SOURCE_LAYOUT = "source_layout"
LAYOUT_KILOSORT = "kilosort"


def is_kilosort_folder(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a Kilosort / phy output folder (it holds ``params.py`` and ``spike_times.npy``).

    Examples
    --------
    >>> is_kilosort_folder("/nonexistent")
    False
    """
    path = Path(path)
    return path.is_dir() and all((path / name).is_file() for name in MARKER_FILES)


def size_hint(folder: str | os.PathLike) -> tuple[int, int]:
    """About the clusters (templates) and trials (pulses) of a folder, from a header and a line count.

    Examples
    --------
    >>> size_hint("/nonexistent")
    (0, 0)
    """
    folder = Path(folder)
    try:
        n_clusters = NpyFile.open(folder / TEMPLATES).shape[0]
        n_trials = max(0, sum(1 for line in find_pulses_file(folder).open("rb") if line.strip()) - 1)
    except (OSError, OptoCubeError, IndexError):
        return 0, 0
    return n_clusters, n_trials


# --------------------------------------------------------------------------
# The spikes, in blocks (memory bounded by a block, as the ALF reader's)
# --------------------------------------------------------------------------
TIMES, IDS, TEMPLATE_IDS, AMPS = "times", "ids", "templates", "amplitudes"  # the per-spike arrays


class _SpikeFiles:
    """The per-spike ``.npy`` files of a folder, read in blocks of spikes.

    Kilosort writes the spikes sorted in time; when they are not, the arrays
    are loaded and sorted once, stably, in memory (as the ALF reader does).
    """

    def __init__(self, headers: dict[str, NpyFile]) -> None:
        self.headers = headers
        self.n = headers[TIMES].shape[0]
        self.arrays: dict[str, np.ndarray] | None = None

    def sort_in_memory(self) -> None:
        arrays = {key: _load(h)[0].reshape(-1) for key, h in self.headers.items()}
        order = np.argsort(arrays[TIMES], kind="stable")
        self.arrays = {key: a[order] for key, a in arrays.items()}

    def blocks(self, keys: tuple[str, ...], block_len: int = BLOCK_LEN) -> Iterator[dict[str, np.ndarray]]:
        keys = tuple(k for k in keys if k in self.headers)
        for start in range(0, self.n, block_len):
            stop = min(start + block_len, self.n)
            if self.arrays is not None:
                yield {k: self.arrays[k][start:stop] for k in keys}
            else:
                yield {k: self.headers[k].read(start, stop) for k in keys}


class _KilosortSpikes(SpikeSource):
    """The spikes of a Kilosort folder: ``samples / sample_rate`` and each id's row, block by block."""

    def __init__(self, files: _SpikeFiles, lookup: np.ndarray, sample_rate: float) -> None:
        super().__init__(files.n)
        self._spike_files, self._lookup, self._rate = files, lookup, sample_rate

    @property
    def in_memory(self) -> bool:
        return self._spike_files.arrays is not None

    def blocks(self, block_len: int = BLOCK_LEN) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for block in self._spike_files.blocks((TIMES, IDS), block_len):
            # seconds = samples / sample_rate, float64, exactly that expression
            yield block[TIMES] / self._rate, self._lookup[block[IDS].astype(np.int64, copy=False)]

    def __repr__(self) -> str:
        return f"<SpikeSource {self.n_spikes} spikes, Kilosort, {'in memory' if self.in_memory else 'streamed'}>"


def _spike_header(folder: Path, name: str, n: int | None, what: str, kinds: str = "iu") -> NpyFile:
    """The header of a per-spike file: ``(N,)`` or ``(N, 1)``, ``n`` long, of numbers of ``kinds``."""
    header = NpyFile.open(require_file(folder, name))
    if not (header.ndim == 1 or (header.ndim == 2 and header.shape[1] == 1)):
        raise SessionFormatError(header.path, f"expected ({'N' if n is None else n},) or (N, 1), found {header.shape}")
    if n is not None and header.shape[0] != n:
        raise SessionFormatError(
            header.path, f"has {header.shape[0]} spikes but {SPIKE_TIMES} has {n}; the lengths must agree"
        )
    if header.dtype.kind not in kinds:
        raise SessionFormatError(header.path, f"{what} must be {'numbers' if 'f' in kinds else 'integers'}, "
                                 f"found dtype {header.dtype}")  # fmt: skip
    return header


def _load(header: NpyFile) -> tuple[np.ndarray, str]:
    """The whole array (a read-only view of the file's bytes, read once) and the file's SHA-256."""
    data = header.path.read_bytes()
    arr = np.frombuffer(data, dtype=header.dtype, count=math.prod(header.shape), offset=header.offset)
    return arr.reshape(header.shape, order="F" if header.fortran_order else "C"), hashlib.sha256(data).hexdigest()


def _spike_files(folder: Path, sha: dict[str, str]) -> tuple[float, _SpikeFiles, bool]:
    """The sample rate, the per-spike files (hashed), and whether the clusters come from spike_clusters.npy."""
    params_path = require_file(folder, PARAMS_PY)
    params, sha[PARAMS_PY] = read_params_hashed(params_path)
    times = _spike_header(folder, SPIKE_TIMES, None, "spike times (samples)")
    n = times.shape[0]
    headers = {TIMES: times}
    has_clusters = (folder / SPIKE_CLUSTERS).is_file()
    if (folder / SPIKE_TEMPLATES).is_file():
        headers[TEMPLATE_IDS] = _spike_header(folder, SPIKE_TEMPLATES, n, "template ids")
    if has_clusters:
        headers[IDS] = _spike_header(folder, SPIKE_CLUSTERS, n, "cluster ids")
    elif TEMPLATE_IDS in headers:
        headers[IDS] = headers.pop(TEMPLATE_IDS)
    else:
        raise SessionFormatError(folder / SPIKE_CLUSTERS, f"missing (and no {SPIKE_TEMPLATES} either)")
    if (folder / AMPLITUDES).is_file():
        headers[AMPS] = _spike_header(folder, AMPLITUDES, n, "amplitudes", kinds="iuf")
    return params["sample_rate"], _SpikeFiles(headers), has_clusters


def _hashed_blocks(
    files: _SpikeFiles, sha: dict[str, str], block_len: int = BLOCK_LEN
) -> Iterator[dict[str, np.ndarray]]:
    """Every per-spike file in blocks, each file's SHA-256 computed from the same bytes (one read)."""
    handles = {key: open(h.path, "rb") for key, h in files.headers.items()}  # closed below
    hashes = {key: hashlib.sha256() for key in handles}
    try:
        for key, h in files.headers.items():
            hashes[key].update(handles[key].read(h.offset))
        for start in range(0, files.n, block_len):
            count = min(block_len, files.n - start)
            block = {}
            for key, h in files.headers.items():
                raw = handles[key].read(count * h.dtype.itemsize)
                hashes[key].update(raw)
                block[key] = np.frombuffer(raw, dtype=h.dtype)
            yield block
        for key, fh in handles.items():
            while rest := fh.read(1 << 23):  # trailing bytes, if any, are part of the file
                hashes[key].update(rest)
            sha[files.headers[key].path.name] = hashes[key].hexdigest()
    finally:
        for fh in handles.values():
            fh.close()


def _scan(files: _SpikeFiles, table_ids: np.ndarray, sha: dict[str, str]) -> tuple[bool, int, np.ndarray, int]:
    """One pass: whether the times are sorted, the last sample, the ids present (sorted), the largest template id.

    The same pass hashes the files.
    """
    paths = {key: h.path for key, h in files.headers.items()}
    is_sorted, last, top_sample, top_template = True, -1, -1, -1
    present = np.zeros(int(table_ids.max()) + 1 if table_ids.size else 0, dtype=bool)
    present[table_ids] = True
    for block in _hashed_blocks(files, sha):
        times, ids = block[TIMES], block[IDS]
        if times.size == 0:
            continue
        if times.min() < 0:
            raise SessionFormatError(paths[TIMES], f"negative spike sample {times.min().item()!r}")
        if ids.min() < 0:
            raise SessionFormatError(paths[IDS], f"negative cluster id {ids.min().item()}")
        if is_sorted and (times[0] < last or np.any(times[1:] < times[:-1])):
            is_sorted = False
        last = times[-1]
        top_sample = max(top_sample, int(times.max()))
        top = int(ids.max())
        if top >= present.size:
            if top >= 1 << 31:
                raise SessionFormatError(paths[IDS], f"cluster id {top} is too large (ids must be below 2**31)")
            present = np.concatenate([present, np.zeros(top + 1 - present.size, dtype=bool)])
        present[ids] = True
        if TEMPLATE_IDS in block:
            if block[TEMPLATE_IDS].min() < 0:
                raise SessionFormatError(paths[TEMPLATE_IDS], "negative template id")
            top_template = max(top_template, int(block[TEMPLATE_IDS].max()))
        if AMPS in block and not np.all(np.isfinite(block[AMPS])):
            raise SessionFormatError(paths[AMPS], "non-finite amplitudes")
    return is_sorted, top_sample, np.flatnonzero(present).astype(np.int64), top_template


def _cluster_templates(
    ids: np.ndarray, pairs: np.ndarray | None, counts: np.ndarray | None, n_templates: int
) -> np.ndarray:
    """Each cluster's template: its spikes' most frequent (the smallest on a tie); else its own id; else -1.

    ``pairs`` are ``row * n_templates + template`` keys with their spike ``counts``.
    """
    own = np.where(ids < n_templates, ids, -1)
    if pairs is None or counts is None or pairs.size == 0:
        return own
    row, template = np.divmod(pairs, n_templates)
    # sort by row, then count descending, then template ascending: the first of each row wins
    order = np.lexsort((template, -counts, row))
    row, template = row[order], template[order]
    first = np.ones(row.size, dtype=bool)
    first[1:] = row[1:] != row[:-1]
    out = own.copy()
    out[row[first]] = template[first]
    return out


def read_kilosort(folder: str | os.PathLike, *, surface_um: float | None = None) -> Session:
    """Read a Kilosort / phy folder plus its ``pulses.csv`` as an :class:`opto_cube.io.session.Session`.

    The per-spike files are read in blocks (three passes: checks, QC and
    templates, amplitude histograms), so memory is bounded by a block; the
    spikes stay on disk, streamed again by the binning.

    Parameters
    ----------
    folder
        The output folder (``params.py``, ``spike_times.npy``, ...; docs/format.md).
    surface_um
        The brain surface's position on the channel axis (y, um); by default
        the y of ``top_chan`` in ``session.json``; NaN (with one warning) without either.

    Returns
    -------
    Session
        As the ALF reader's, with ``cluster_ids`` the sorted cluster ids (the
        cube's ``cluster`` coordinate); the spikes carry row indices into them.

    Raises
    ------
    SessionFormatError
        One line naming the file and the problem; nothing is executed.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise SessionFormatError(folder, "no such session folder")
    sha: dict[str, str] = {}
    try:
        return _read_session(folder, sha, surface_um)
    except FileNotFoundError as e:
        raise SessionFormatError(e.filename or folder, "required file is missing") from e
    except PermissionError as e:
        raise SessionFormatError(e.filename or folder, "permission denied") from e
    except OptoCubeError:
        raise
    except (OSError, ValueError, EOFError) as e:
        raise SessionFormatError(folder, one_line(e)) from e


def _templates_and_channels(folder: Path, sha: dict[str, str], top_template: int) -> tuple[np.ndarray, np.ndarray]:
    """templates.npy and channel_positions.npy, checked against each other and the spikes' template ids."""
    templates_header = open_npy(folder, TEMPLATES, 3)
    channels_header = open_npy(folder, CHANNEL_POSITIONS, 2)
    channel_positions, sha[CHANNEL_POSITIONS] = channels_header.load()
    channel_positions = as_float(channel_positions, channels_header.path)
    if channel_positions.shape[1] != 2:
        raise SessionFormatError(
            channels_header.path, f"expected (channels, 2) positions, found {channel_positions.shape}"
        )
    templates, sha[TEMPLATES] = _load(templates_header)
    if templates.dtype.kind not in "fiu":
        raise SessionFormatError(templates_header.path, f"expected numbers, found dtype {templates.dtype}")
    if templates.shape[2] != channel_positions.shape[0]:
        raise SessionFormatError(
            templates_header.path,
            f"has {templates.shape[2]} channels but {CHANNEL_POSITIONS} has {channel_positions.shape[0]};"
            " they must agree",
        )
    if top_template >= templates.shape[0]:
        raise SessionFormatError(
            folder / SPIKE_TEMPLATES, f"template id {top_template} but {TEMPLATES} has {templates.shape[0]}"
        )
    return templates, channel_positions


def _cluster_features(
    templates: np.ndarray, channel_positions: np.ndarray, template_of: np.ndarray, rate: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Template depth, peak channel and trough-to-peak width of each cluster (from its template)."""
    k = template_of.size
    known = template_of >= 0
    used, index = np.unique(template_of[known], return_inverse=True)  # only the templates of the clusters
    t_depth, t_peak, t_width = template_features(templates[used], channel_positions[:, 1], rate)
    depth, peak, width = np.full(k, np.nan), np.full(k, -1, np.int32), np.full(k, np.nan)
    depth[known], peak[known], width[known] = t_depth[index], t_peak[index], t_width[index]
    return depth, peak, width


def _read_stim(
    folder: Path, sha: dict[str, str], rate: float, last_sample: int
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The pulses as the cube's trial arrays, checked (onsets inside the recording), and the table as read."""
    pulses_path = find_pulses_file(folder)
    pulses = read_pulses(pulses_path, rate, sha)
    onset = pulses[schema.ONSET]
    last_spike_s = last_sample / rate if last_sample >= 0 else 0.0
    outside = (onset < 0) | (onset > last_spike_s)
    if np.any(outside):
        i = int(np.flatnonzero(outside)[0])
        raise SessionFormatError(
            pulses_path,
            f"row {i + 2}: onset {onset[i]!r} s lies outside the recording (0 to the last spike, {last_spike_s!r} s)",
        )
    stim = {name: pulses[name] for name in (schema.ONSET, schema.EMITTER, schema.POWER, schema.DURATION)}
    check_stim(stim, {name: pulses_path for name in schema.STIM_FILES})
    return stim, pulses


def _spike_passes(
    files: _SpikeFiles, lookup: np.ndarray, k: int, rate: float, last_sample: int, n_templates: int, templates: bool
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray | None, np.ndarray | None]:
    """The QC metrics, the spikes per cluster and (``templates``) the (row, template) pair counts, in blocks."""
    qc = QcAccumulator(k, rate, last_sample + 1 if last_sample >= 0 else 0, AMPS in files.headers)
    dense = k * n_templates <= 1 << 25
    pair_counts = np.zeros(k * n_templates if dense else 0, np.int64)
    sparse: list[tuple[np.ndarray, np.ndarray]] = []
    for block in files.blocks((TIMES, IDS, TEMPLATE_IDS, AMPS)):
        rows = lookup[block[IDS].astype(np.int64, copy=False)]
        qc.add(block[TIMES], rows, block.get(AMPS))
        if templates and TEMPLATE_IDS in block:
            key = rows * n_templates + block[TEMPLATE_IDS].astype(np.int64, copy=False)
            if dense:
                pair_counts += np.bincount(key, minlength=k * n_templates)
            else:
                sparse.append(np.unique(key, return_counts=True))
    if qc.needs_histograms:
        for block in files.blocks((IDS, AMPS)):
            qc.add_histogram(lookup[block[IDS].astype(np.int64, copy=False)], block[AMPS])
    pairs: np.ndarray | None = None
    counts: np.ndarray | None = None
    if templates and TEMPLATE_IDS in files.headers:
        if dense:
            pairs = np.flatnonzero(pair_counts)
            counts = pair_counts[pairs]
        elif sparse:
            keys, inverse = np.unique(np.concatenate([p for p, _ in sparse]), return_inverse=True)
            pairs, counts = keys, np.bincount(inverse, weights=np.concatenate([c for _, c in sparse])).astype(np.int64)
    return qc.result(), qc.per_cluster.copy(), pairs, counts


def _read_session(folder: Path, sha: dict[str, str], surface_um: float | None) -> Session:
    rate, files, has_clusters = _spike_files(folder, sha)
    group, ks_label = cluster_tables(folder, sha)
    is_sorted, last_sample, ids, top_template = _scan(files, np.fromiter([*group, *ks_label], dtype=np.int64), sha)
    if ids.size == 0:
        raise SessionFormatError(
            folder / SPIKE_TIMES, "no clusters (no spikes and no cluster tables): nothing to convert"
        )
    k = ids.size
    if not is_sorted:
        warn(files.headers[TIMES].path, "spikes are not sorted in time; sorted in memory")
        files.sort_in_memory()
    lookup = np.zeros(int(ids[-1]) + 1, dtype=np.int64)
    lookup[ids] = np.arange(k)
    templates, channel_positions = _templates_and_channels(folder, sha, top_template if has_clusters else -1)
    stim, pulses = _read_stim(folder, sha, rate, last_sample)
    onset = stim[schema.ONSET]
    qc, per_cluster, pairs, counts = _spike_passes(
        files, lookup, k, rate, last_sample, templates.shape[0], has_clusters
    )
    template_of = _cluster_templates(ids, pairs, counts, templates.shape[0])
    if not has_clusters and top_template < 0 and k and int(ids[-1]) >= templates.shape[0]:
        raise SessionFormatError(
            folder / SPIKE_TEMPLATES, f"template id {int(ids[-1])} but {TEMPLATES} has {templates.shape[0]}"
        )
    depth, peak, width = _cluster_features(templates, channel_positions, template_of, rate)
    del templates

    # session.json and the surface
    json_path = folder / schema.SESSION_JSON
    info: dict[str, Any] = {}
    if json_path.is_file():
        info, sha[schema.SESSION_JSON] = read_json(json_path)
        if not isinstance(info, dict):
            raise SessionFormatError(json_path, f"must hold a JSON object, found {type(info).__name__}")
    surface = _surface(json_path, info, channel_positions, surface_um)
    labels = np.array([group.get(int(c), ks_label.get(int(c), schema.UNKNOWN_LABEL)) for c in ids], dtype=object)
    clusters = {
        schema.DEPTH_FROM_SURFACE: surface - depth,
        schema.TEMPLATE_DEPTH: depth,
        **qc,
        schema.WAVEFORM_TYPE: waveform_types(width),
        schema.KS_LABEL: labels,
        schema.PEAK_CHANNEL: peak,
        schema.TROUGH_TO_PEAK: width,
    }
    n_pass = int(qc[schema.QC_PASS].sum())
    attrs = session_attrs(
        json_path,
        info,
        folder.name,
        {
            "n_spikes": files.n,
            "n_clusters": k,
            "n_trials": int(onset.size),
            "n_channels": int(channel_positions.shape[0]),
            "n_qc_pass": n_pass,
            "n_qc_fail": k - n_pass,
        },
        stim[schema.POWER],
    )
    attrs.setdefault("sampling_rate", rate)
    attrs[ATTR_SAMPLE_RATE] = rate
    attrs[ATTR_SOURCE_LAYOUT] = LAYOUT_KILOSORT
    if PULSE_WAVELENGTH in pulses:
        attrs[ATTR_WAVELENGTHS] = sorted({float(w) for w in pulses[PULSE_WAVELENGTH]})
    session = Session(
        session_id=folder.name,
        folder=folder,
        attrs=attrs,
        clusters=clusters,
        stim=stim,
        spikes=_KilosortSpikes(files, lookup, rate),
        sha256=sha,
        laser_calibration=laser_calibration(folder, sha),
        n_channels=int(channel_positions.shape[0]),
        surface_position_um=surface,
        spikes_per_cluster=per_cluster,
        session_json=info,
    )
    session.cluster_ids = ids
    return session


def _surface(json_path: Path, info: dict[str, Any], channel_positions: np.ndarray, surface_um: float | None) -> float:
    """The surface's y on the channel axis: ``surface_um``, else ``top_chan``'s y, else NaN with one warning."""
    if surface_um is not None:
        return float(surface_um)
    top = info.get("top_chan")
    if top is None:
        warn(
            json_path,
            "no top_chan (and no --surface-um): the surface, hence depth_from_surface_um and emitter depths, unknown",
        )
        return math.nan
    if isinstance(top, bool) or not isinstance(top, int) or not 0 <= top < channel_positions.shape[0]:
        raise SessionFormatError(
            json_path, f"top_chan {top!r} is not a channel index 0..{channel_positions.shape[0] - 1}"
        )
    return float(channel_positions[top, 1])
