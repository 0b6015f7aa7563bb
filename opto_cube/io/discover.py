"""Finding sessions and reading one, whatever its kind.

Owns :func:`find_sessions` (every ALF folder, NWB file and Kilosort / phy
folder under a data root), :func:`session_id_of` and :func:`read_session`, the
one entry point that dispatches to the reader of the session's kind
(:func:`opto_cube.io.alf.read_alf`, :func:`opto_cube.io.nwb.read_nwb`,
:func:`opto_cube.io.kilosort.read_kilosort`), each imported only for one, so
no reader imports another.
"""

from __future__ import annotations

import os
from pathlib import Path

from opto_cube import schema
from opto_cube.errors import SessionFormatError
from opto_cube.io.session import Session


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


def read_session(path: str | os.PathLike, *, surface_um: float | None = None) -> Session:
    """Read and check one session, whatever its kind: all kinds make the same cube.

    An ALF folder is read by :func:`opto_cube.io.alf.read_alf`, an NWB file by
    :func:`opto_cube.io.nwb.read_nwb` and a Kilosort / phy folder by
    :func:`opto_cube.io.kilosort.read_kilosort`; each reader is imported only
    for its kind.

    Parameters
    ----------
    path
        A session folder (ALF or Kilosort / phy) or a ``.nwb`` file.
    surface_um
        A Kilosort folder's surface position, um, when its session.json has
        no ``top_chan`` (ignored for the other kinds).

    Returns
    -------
    Session
        Cluster and trial arrays in file order, the session attributes, the
        spikes as a stream, and the SHA-256 of every file read.

    Raises
    ------
    SessionFormatError
        Naming the file and the problem, when the session cannot be converted.

    Examples
    --------
    >>> import tempfile, warnings
    >>> from opto_cube import synth
    >>> folder = synth.make_dataset(tempfile.mkdtemp(), n_sessions=1, size="tiny")[0]
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("ignore")  # the synthetic session's planted quirks
    ...     session = read_session(folder)
    >>> session.session_id == folder.name, session.n_trials > 0
    (True, True)
    """
    if Path(path).suffix == schema.NWB_SUFFIX and not Path(path).is_dir():
        from opto_cube.io.nwb import read_nwb

        return read_nwb(path)
    if not (Path(path) / schema.SPIKES_TIMES).exists():
        from opto_cube.io import kilosort

        if kilosort.is_kilosort_folder(path):
            return kilosort.read_kilosort(path, surface_um=surface_um)
    from opto_cube.io.alf import read_alf

    return read_alf(path)
