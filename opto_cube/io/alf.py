"""Find and read Neuropixels Opto sessions in the ALF layout of docs/format.md.

Everything read is checked (shapes, dtypes, ranges) and hashed (SHA-256) in
the same pass. A broken file raises :class:`~opto_cube.errors.SessionFormatError`
naming the file and the problem; a recoverable quirk warns and is repaired.
Pickles are never loaded: ``.npy`` headers are parsed first and object
dtypes are refused before any data is read.

The spike arrays are not loaded whole: :class:`SpikeSource` streams them in
blocks, so memory does not grow with the length of a session (unless the
spikes are unsorted, which needs one sort in memory).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from opto_cube import schema
from opto_cube.errors import OptoCubeError, SessionFormatError, warn

BLOCK_LEN = 1 << 21  # spikes per streamed block (24 MB of times + ids)
_HASH_BLOCK = 1 << 23


# --------------------------------------------------------------------------
# .npy files
# --------------------------------------------------------------------------
@dataclass(frozen=True)
class NpyFile:
    """The header of a ``.npy`` file: where its data lies and what it is.

    Opening parses only the header, so an object (pickled) array is refused
    before a byte of it is read, and a truncated file is found by its size.
    """

    path: Path
    dtype: np.dtype
    shape: tuple[int, ...]
    fortran_order: bool
    offset: int

    @classmethod
    def open(cls, path: Path) -> NpyFile:
        try:
            with open(path, "rb") as f:
                version = np.lib.format.read_magic(f)
                if version == (1, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
                elif version in ((2, 0), (3, 0)):
                    # 3.0 is 2.0 with a UTF-8 header (non-ASCII field names of structured dtypes, which are
                    # refused below anyway): numpy's public 2.0 reader parses its numeric headers as they are
                    shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
                else:
                    raise ValueError(f".npy format version {version[0]}.{version[1]} is not one numpy writes")
                offset = f.tell()
        except FileNotFoundError:
            raise
        except (ValueError, OSError, EOFError, SyntaxError) as e:
            raise SessionFormatError(path, f"not a readable .npy file ({_one_line(e)})") from e
        if any(int(n) < 0 for n in shape):
            raise SessionFormatError(path, f"corrupt header: negative shape {tuple(shape)}")
        if dtype.hasobject:
            raise SessionFormatError(path, "holds Python objects (a pickle); opto_cube never loads pickles")
        header = cls(Path(path), dtype, tuple(int(n) for n in shape), bool(fortran), offset)
        size = path.stat().st_size
        if size < offset + header.nbytes:
            raise SessionFormatError(
                path,
                f"truncated: header says {header.shape} {dtype} ({header.nbytes} bytes)"
                f" but {size - offset} bytes follow",
            )
        return header

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def load(self) -> tuple[np.ndarray, str]:
        """The whole array and the SHA-256 of the file (read once)."""
        data = self.path.read_bytes()
        arr = np.load(io.BytesIO(data), allow_pickle=False)
        return arr, hashlib.sha256(data).hexdigest()

    def sha256(self) -> str:
        return sha256_file(self.path)

    def read(self, start: int, stop: int) -> np.ndarray:
        """Elements ``[start, stop)`` of a 1-D array, read from disk."""
        with open(self.path, "rb") as f:
            f.seek(self.offset + start * self.dtype.itemsize)
            return np.fromfile(f, dtype=self.dtype, count=stop - start)


def sha256_file(path: str | os.PathLike) -> str:
    """SHA-256 of a file, read in blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_BLOCK):
            h.update(chunk)
    return h.hexdigest()


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text or type(e).__name__


# --------------------------------------------------------------------------
# The spikes, streamed
# --------------------------------------------------------------------------
class SpikeSource:
    """Time-sorted spikes, read in blocks of ``(times_s float64, cluster int64)``.

    Built by :func:`read_session`, either over the two ``.npy`` files (sorted
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


def session_id_of(path: str | os.PathLike) -> str:
    """The session id a session folder or NWB file stands for: the folder's name, the ``.nwb`` file's stem.

    Examples
    --------
    >>> session_id_of("data/sessions/AL0034_2024-12-05_en1_p0"), session_id_of("nwb/AL0034_2024-12-05_en1_p0.nwb")
    ('AL0034_2024-12-05_en1_p0', 'AL0034_2024-12-05_en1_p0')
    """
    path = Path(path)
    return path.stem if path.suffix == schema.NWB_SUFFIX else path.name


def find_sessions(data_root: str | os.PathLike) -> list[Path]:
    """Every session under ``data_root``, whatever its kind: ALF folders, NWB files, Kilosort / phy folders.

    ``data_root`` may be a data folder holding ``sessions/*/`` (the published
    layout), a folder of sessions, or one session (an ALF or Kilosort folder,
    or one ``.nwb`` file). ``*.nwb`` files (:mod:`opto_cube.io.nwb`) and Kilosort
    folders (:mod:`opto_cube.io.kilosort`, ``params.py`` + ``spike_times.npy``)
    are found beside ALF folders, at the root and in ``sessions/``. Two
    sessions with one id (a folder's name, a file's stem) are refused, naming both.

    Examples
    --------
    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp())
    >>> (root / "sessions" / "AL0034_2024-12-05_en1_p0").mkdir(parents=True)
    >>> [p.name for p in find_sessions(root)]
    ['AL0034_2024-12-05_en1_p0']
    """
    root = Path(data_root)
    if root.suffix == schema.NWB_SUFFIX and root.is_file():  # NWB sessions (opto_cube.io.nwb): one file
        return [root]
    if not root.is_dir():
        raise SessionFormatError(root, "no such data folder")
    if _looks_like_session(root):
        return [root]
    base = root / schema.SESSIONS_DIR if (root / schema.SESSIONS_DIR).is_dir() else root
    visible = [p for p in base.iterdir() if not p.name.startswith(".")]
    nwb_files = [p for p in visible if p.suffix == schema.NWB_SUFFIX and p.is_file()]
    folders = [p for p in visible if p.is_dir()]
    if nwb_files and base == root:  # beside NWB files, only folders that hold a session
        folders = [p for p in folders if _looks_like_session(p)]
    found = nwb_files + folders
    if base != root:  # NWB files and Kilosort folders at the root, beside sessions/
        for p in root.iterdir():
            if p.name.startswith(".") or p == base:
                continue
            if (p.suffix == schema.NWB_SUFFIX and p.is_file()) or (p.is_dir() and _is_kilosort(p)):
                found.append(p)
    if not found:
        raise SessionFormatError(base, "holds no session folders (expected sessions/<session_id>/)")
    by_id: dict[str, Path] = {}
    for p in sorted(found):
        other = by_id.setdefault(session_id_of(p), p)
        if other != p:
            raise SessionFormatError(root, f"two sessions with the id {session_id_of(p)!r}: {other} and {p}; keep one")
    return sorted(found, key=lambda p: (session_id_of(p), str(p)))


def _is_kilosort(path: Path) -> bool:
    return (path / "params.py").is_file() and (path / "spike_times.npy").is_file()  # kilosort.MARKER_FILES


def _looks_like_session(path: Path) -> bool:
    """An ALF session folder (session.json or spikes.times.npy) or a Kilosort / phy one."""
    return (path / schema.SESSION_JSON).exists() or (path / schema.SPIKES_TIMES).exists() or _is_kilosort(path)


def not_a_file(path: Path) -> str | None:
    """What ``path`` is when it is not a regular file one can read, in words; None when it is one.

    Examples
    --------
    >>> not_a_file(Path("/no/such/file")), not_a_file(Path("/"))
    ('required file is missing', 'is a folder, not a file')
    """
    import stat

    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return "required file is missing" if not path.is_symlink() else "is a broken symbolic link"
    except PermissionError:
        return f"cannot be reached: permission denied on {path.parent}"
    except OSError as e:
        return f"cannot be read ({e.strerror or _one_line(e)})"
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "is a folder, not a file"
    if stat.S_ISFIFO(mode):
        return "is a named pipe (FIFO), not a file"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "is a device (such as /dev/zero), not a file"
    if stat.S_ISSOCK(mode):
        return "is a socket, not a file"
    return "is not a regular file"


def _not_other_than_a_file(path: Path) -> None:
    """Refuse an optional file that is there but is not a file (a folder, a FIFO, a device); absent is fine."""
    problem = not_a_file(path)
    if problem is not None and os.path.lexists(path):
        raise SessionFormatError(path, problem)


def _require(folder: Path, name: str) -> Path:
    path = folder / name
    problem = not_a_file(path)
    if problem is not None:
        raise SessionFormatError(path, problem)
    return path


def _npy(folder: Path, name: str, ndim: int) -> NpyFile:
    header = NpyFile.open(_require(folder, name))
    if header.ndim != ndim:
        raise SessionFormatError(header.path, f"expected {ndim} dimension(s), found shape {header.shape}")
    return header


def _as_float(arr: np.ndarray, path: Path) -> np.ndarray:
    if arr.dtype.kind not in "fiu":
        raise SessionFormatError(path, f"expected numbers, found dtype {arr.dtype}")
    return arr.astype(np.float64, copy=False)


def _as_int(arr: np.ndarray, path: Path, what: str) -> np.ndarray:
    if arr.dtype.kind in "iu":
        return arr.astype(np.int64, copy=False)
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or np.any(arr != np.floor(arr)):
            bad = arr[~np.isfinite(arr) | (arr != np.floor(arr))][0]
            raise SessionFormatError(path, f"{what} must be whole numbers, found {bad.item()!r}")
        return arr.astype(np.int64)
    raise SessionFormatError(path, f"{what} must be integers, found dtype {arr.dtype}")


def _as_bool(arr: np.ndarray, path: Path) -> np.ndarray:
    if arr.dtype.kind == "b":
        return arr
    if arr.dtype.kind in "iuf":
        bad = ~((arr == 0) | (arr == 1))
        if not np.any(bad):
            return arr.astype(bool)
        raise SessionFormatError(path, f"expected booleans (0 or 1), found {arr[bad][0].item()!r}")
    raise SessionFormatError(path, f"expected booleans, found dtype {arr.dtype}")


def _read_json(path: Path) -> tuple[Any, str]:
    data = path.read_bytes()
    try:
        return json.loads(data.decode("utf-8-sig")), hashlib.sha256(data).hexdigest()
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SessionFormatError(path, f"invalid JSON ({_one_line(e)})") from e


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
    _not_other_than_a_file(path)
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
    _not_other_than_a_file(path)
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


def _laser_calibration(folder: Path, sha: dict[str, str]) -> Any:
    """The data root's laser_calibration.json (optional), looked for above the session folder."""
    candidates = [folder.parent / schema.LASER_CALIBRATION_JSON, folder.parent.parent / schema.LASER_CALIBRATION_JSON]
    for path in candidates:
        if path.is_file():
            value, sha[schema.LASER_CALIBRATION_JSON] = _read_json(path)
            mat = path.with_name(schema.LASER_CALIBRATION_MAT)
            if mat.is_file():  # optional; only its checksum is kept (the json says the same)
                sha[schema.LASER_CALIBRATION_MAT] = sha256_file(mat)
            return value
    return None


def _checked_ids(ids: np.ndarray, path: Path, n_clusters: int) -> np.ndarray:
    """A block of cluster ids as int64, each in ``0..n_clusters-1`` (checked before any cast: 2**64-1 as it is)."""
    if ids.dtype.kind == "f":
        ids = _as_int(ids, path, "cluster ids")
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
            while rest := fh.read(_HASH_BLOCK):  # trailing bytes, if any, are part of the file
                h.update(rest)
            sha[f.path.name] = h.hexdigest()
    finally:
        for fh in handles:
            fh.close()
    return is_sorted, per_cluster, (t_min, t_max) if n else (math.nan, math.nan)


def _surface_position(template_depth: np.ndarray, depth_from_surface: np.ndarray) -> float:
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


def read_session(folder: str | os.PathLike) -> Session:
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
    >>> import tempfile
    >>> from opto_cube import synth
    >>> folder = synth.make_dataset(tempfile.mkdtemp(), n_sessions=1, size="tiny")[0]
    >>> session = read_session(folder)  # doctest: +SKIP
    """
    folder = Path(folder)
    if folder.suffix == schema.NWB_SUFFIX and not folder.is_dir():
        raise SessionFormatError(folder, "an NWB file, not an ALF session folder: read it with opto_cube.io.nwb")
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
        raise SessionFormatError(folder, _one_line(e)) from e


def _read_session(folder: Path, sha: dict[str, str]) -> Session:
    session_id = folder.name
    json_path, info = _read_session_json(folder, sha)
    clusters, n_clusters, n_channels = _read_clusters(folder, sha)
    stim, n_trials = _read_stim(folder, sha)
    spikes, per_cluster, n_spikes = _read_spikes(folder, n_clusters, sha)
    qc = clusters[schema.QC_PASS]
    attrs = _session_attrs(
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
        laser_calibration=_laser_calibration(folder, sha),
        n_channels=n_channels,
        surface_position_um=surface,
        spikes_per_cluster=per_cluster,
        session_json=info,
    )


def _read_session_json(folder: Path, sha: dict[str, str]) -> tuple[Path, dict[str, Any]]:
    """session.json, which must hold a JSON object."""
    json_path = _require(folder, schema.SESSION_JSON)
    info, sha[schema.SESSION_JSON] = _read_json(json_path)
    if not isinstance(info, dict):
        raise SessionFormatError(json_path, f"must hold a JSON object, found {type(info).__name__}")
    return json_path, info


def _cluster_headers(folder: Path) -> tuple[dict[str, NpyFile], NpyFile, NpyFile, int, int]:
    """The clusters.* headers, checked to have one row per cluster; also the templates and channel positions."""
    cluster_headers = {name: _npy(folder, name, 1) for name in schema.CLUSTER_FILES}
    templates = _npy(folder, schema.CLUSTERS_TEMPLATES, 3)
    channels = _npy(folder, schema.CLUSTERS_CHANNEL_POSITIONS, 2)
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
    _as_float(channel_positions, channels.path)

    clusters: dict[str, np.ndarray] = {}
    for name, header in cluster_headers.items():
        arr, sha[name] = header.load()
        coord = schema.CLUSTER_FILES[name]
        if coord == schema.QC_PASS:
            clusters[coord] = _as_bool(arr, header.path)
        elif coord == schema.PEAK_CHANNEL:
            clusters[coord] = _as_int(arr, header.path, "peak channels").astype(np.int32)
            if np.any(clusters[coord] < -1) or np.any(clusters[coord] >= n_channels):
                warn(header.path, f"peak channels outside -1..{n_channels - 1}")
        else:
            clusters[coord] = _as_float(arr, header.path)
    clusters[schema.WAVEFORM_TYPE] = _waveform_types(folder, n_clusters, sha)
    clusters[schema.KS_LABEL] = _ks_labels(folder, n_clusters, sha)
    _check_qc(folder / schema.CLUSTERS_QC_PASS, clusters)
    return clusters, n_clusters, n_channels


def _read_stim(folder: Path, sha: dict[str, str]) -> tuple[dict[str, np.ndarray], int]:
    """The stim.* arrays (one row per trial), checked, with the number of trials."""
    stim_headers = {name: _npy(folder, name, 1) for name in schema.STIM_FILES}
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
    _check_stim(stim, {name: header.path for name, header in stim_headers.items()})
    return stim, n_trials


def _check_stim(stim: dict[str, np.ndarray], paths: dict[str, Path]) -> None:
    """Check (and convert in place) onsets, emitter ids, powers and durations; warn on trials out of onset order."""
    onset_dtype = np.asarray(stim[schema.ONSET]).dtype
    stim[schema.ONSET] = _check_finite(stim[schema.ONSET], paths[schema.STIM_TIMES], "onset", floating=True)
    largest = float(np.max(np.abs(stim[schema.ONSET]), initial=0.0))
    warn_precision(paths[schema.STIM_TIMES], onset_dtype, largest, "pulse onsets")
    emitter = _as_int(stim[schema.EMITTER], paths[schema.STIM_EMISSION_SITES], "emitter ids")
    if np.any((emitter < 1) | (emitter > schema.N_EMITTERS)):
        bad = emitter[(emitter < 1) | (emitter > schema.N_EMITTERS)][0]
        raise SessionFormatError(paths[schema.STIM_EMISSION_SITES], f"emitter id {bad} outside 1..{schema.N_EMITTERS}")
    stim[schema.EMITTER] = emitter.astype(np.int8)
    power = _check_finite(stim[schema.POWER], paths[schema.STIM_POWER], "power")
    if np.any(power < 0):
        bad_power = power[power < 0][0].item()
        raise SessionFormatError(paths[schema.STIM_POWER], f"negative power {bad_power!r} mW")
    stim[schema.POWER] = power
    duration = _check_finite(stim[schema.DURATION], paths[schema.STIM_DURATIONS], "duration")
    if np.any(duration <= 0):
        bad_duration = duration[duration <= 0][0].item()
        raise SessionFormatError(paths[schema.STIM_DURATIONS], f"non-positive pulse duration {bad_duration!r} s")
    stim[schema.DURATION] = duration
    if np.any(np.diff(stim[schema.ONSET]) < 0):
        warn(paths[schema.STIM_TIMES], "trials are not in onset order; sorted by onset")


def _read_spikes(folder: Path, n_clusters: int, sha: dict[str, str]) -> tuple[SpikeSource, np.ndarray, int]:
    """The spikes as a stream (sorted in memory when out of time order), spikes per cluster and their number."""
    t_file = _npy(folder, schema.SPIKES_TIMES, 1)
    c_file = _npy(folder, schema.SPIKES_CLUSTERS, 1)
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


def warn_precision(path: Path, dtype: np.dtype, largest_s: float, what: str) -> None:
    """Warn when times are stored with less than float64's precision, naming how much was lost.

    float16 and float32 resolve a time ``t`` only to ``numpy.spacing(t)``
    (float16: 31 ms at 60 s; float32: 4 us at 60 s), so spikes near a bin edge
    may land in the wrong bin: the values are used as stored, in float64.
    """
    dtype = np.dtype(dtype)
    if dtype.kind != "f" or dtype.itemsize >= 8:
        return
    finite = largest_s if math.isfinite(largest_s) else 0.0
    spacing = float(np.spacing(dtype.type(abs(finite)))) if dtype.itemsize < 8 else 0.0
    warn(
        path,
        f"{what} are {dtype.name} (not float64): at {finite:g} s they are resolved to {spacing * 1000:.3g} ms only,"
        " so events near a bin edge may be counted in a neighbouring bin; export them as float64",
    )


def _session_attrs(
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


def _check_surface(folder: Path, json_path: Path, info: dict[str, Any], clusters: dict[str, np.ndarray]) -> float:
    """The surface position from the cluster depths, warned about when unknown or far from top_of_shank_um."""
    surface = _surface_position(clusters[schema.TEMPLATE_DEPTH], clusters[schema.DEPTH_FROM_SURFACE])
    if math.isnan(surface):
        warn(
            folder / schema.CLUSTERS_DEPTHS_FROM_SURFACE, "no finite depths: the surface, hence emitter depths, unknown"
        )
    top = info.get("top_of_shank_um")
    far = isinstance(top, (int, float)) and abs(top - surface) > schema.TOP_OF_SHANK_TOLERANCE_UM
    if far and not math.isnan(surface):
        warn(json_path, f"top_of_shank_um = {top} but the cluster depths put the surface at {surface:.1f} um")
    return surface


def _check_finite(arr: np.ndarray, path: Path, what: str, floating: bool = False) -> np.ndarray:
    if floating and arr.dtype.kind != "f":
        raise SessionFormatError(path, f"{what} times must be floating-point seconds, found dtype {arr.dtype}")
    arr = _as_float(arr, path)
    if not np.all(np.isfinite(arr)):
        bad = int(np.flatnonzero(~np.isfinite(arr))[0])
        raise SessionFormatError(path, f"trial {bad} has a non-finite {what} {arr[bad].item()!r}")
    return arr


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
