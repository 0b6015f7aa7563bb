"""A synthetic data root: laser calibration, session folders in either layout, and their ground truth.

:func:`make_dataset` writes ``laser_calibration.json`` (and for some roots
``laser_calibration.mat``), ``sessions/<id>/`` as ALF folders
(:func:`~opto_cube.synth.alf.write_session`) or Kilosort / phy folders
(:func:`~opto_cube.synth.kilosort.write_kilosort_session`), and
``ground_truth/<id>.json`` outside the session folders;
:func:`load_ground_truth` reads one back.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import pathlib

import numpy as np

from opto_cube import schema
from opto_cube.synth.alf import LASERS, write_session, write_text
from opto_cube.synth.kilosort import KilosortQuirks, write_kilosort_session
from opto_cube.synth.model import SIZES, GroundTruth, SessionSpec

__all__ = ["GROUND_TRUTH_DIR", "LAYOUTS", "LAYOUT_ALF", "LAYOUT_KILOSORT", "load_ground_truth", "make_dataset"]

GROUND_TRUTH_DIR = "ground_truth"
LAYOUT_ALF, LAYOUT_KILOSORT = "alf", "kilosort"
LAYOUTS = (LAYOUT_ALF, LAYOUT_KILOSORT)


def _size(size: str | SessionSpec) -> SessionSpec:
    if isinstance(size, SessionSpec):
        return size
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; choose one of {sorted(SIZES)} or pass a SessionSpec")
    return SIZES[size]


def make_dataset(
    root: str | os.PathLike,
    n_sessions: int = 3,
    size: str | SessionSpec = "small",
    seed: int = 0,
    *,
    write_mat: bool | None = None,
    layout: str = LAYOUT_ALF,
    quirks: KilosortQuirks = KilosortQuirks(),  # noqa: B008 (frozen dataclass)
) -> list[pathlib.Path]:
    """Write a synthetic data root: laser calibration, session folders and their ground truth.

    Parameters
    ----------
    root
        The data root (created if needed). Gets ``laser_calibration.json``, for
        some roots ``laser_calibration.mat``, ``sessions/<id>/`` and
        ``ground_truth/<id>.json`` (outside the session folders).
    n_sessions
        How many sessions, with varied subjects, dates, ``en`` and probes.
    size
        A key of :data:`SIZES` or a :class:`SessionSpec`; each session gets its own seed.
    seed
        Seed of the whole dataset.
    write_mat
        Write ``laser_calibration.mat``; by default only for even seeds.
    layout
        ``"alf"`` (docs/format.md) or ``"kilosort"``: the same sessions as Kilosort / phy folders plus
        ``pulses.csv`` (:func:`write_kilosort_session`, with ``quirks``).
    quirks
        The Kilosort layout's quirks (:class:`KilosortQuirks`).

    Returns
    -------
    list of pathlib.Path
        The session folders, in writing order.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     folders = make_dataset(tmp, n_sessions=2, size="tiny", seed=0)
    ...     names = sorted(p.name for p in pathlib.Path(tmp).iterdir())
    >>> names
    ['ground_truth', 'laser_calibration.json', 'laser_calibration.mat', 'sessions']
    >>> from opto_cube.synth.alf import SESSION_ID
    >>> all(SESSION_ID.match(f.name) for f in folders)
    True
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; choose one of {LAYOUTS}")
    root = pathlib.Path(root)
    base = _size(size)
    rng = np.random.default_rng(seed)
    (root / schema.SESSIONS_DIR).mkdir(parents=True, exist_ok=True)
    (root / GROUND_TRUTH_DIR).mkdir(parents=True, exist_ok=True)
    powers = sorted(set(base.powers_mw))
    calibration = {
        laser: {"slope_mW": slope, "intercept_mW": intercept, "levels": powers}
        for laser, (slope, intercept) in LASERS.items()
    }
    write_text(root / schema.LASER_CALIBRATION_JSON, json.dumps(calibration, indent=2) + "\n")
    if write_mat if write_mat is not None else seed % 2 == 0:
        from scipy.io import savemat

        savemat(
            root / schema.LASER_CALIBRATION_MAT,
            {
                laser: {k: np.asarray(v, dtype=np.float64) for k, v in entry.items()}
                for laser, entry in calibration.items()
            },
        )
    n_subjects = max(1, (n_sessions + 1) // 2)  # two sessions a mouse; ids AL0030.. (a wider pool past 30 mice)
    subjects = rng.choice(np.arange(30, 30 + max(30, n_subjects)), size=n_subjects, replace=False)
    first_day = datetime.date(2024, 10, 1) + datetime.timedelta(days=int(rng.integers(0, 60)))
    folders = []
    for index in range(n_sessions):
        date = first_day + datetime.timedelta(days=3 * index + int(rng.integers(0, 3)))
        subject, probe = subjects[index % subjects.size], int(rng.integers(0, 2))
        name = f"AL{subject:04d}_{date.isoformat()}_en{1 + index % 3}_p{probe}"
        spec = dataclasses.replace(base, seed=int(rng.integers(0, 2**31)))
        folder = root / schema.SESSIONS_DIR / name
        if layout == LAYOUT_KILOSORT:
            truth = write_kilosort_session(folder, spec, quirks=quirks)
        else:
            truth = write_session(folder, spec)
        write_text(root / GROUND_TRUTH_DIR / f"{name}.json", json.dumps(truth.to_json()) + "\n")
        folders.append(folder)
    return folders


def load_ground_truth(root: str | os.PathLike, session_id: str) -> GroundTruth:
    """Read ``root/ground_truth/<session_id>.json`` written by :func:`make_dataset`.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     folder = make_dataset(tmp, n_sessions=1, size="tiny")[0]
    ...     truth = load_ground_truth(tmp, folder.name)
    >>> truth.surface_position_um > 0, truth.baseline_rate_hz.shape
    (True, (8,))
    """
    path = pathlib.Path(root) / GROUND_TRUTH_DIR / f"{session_id}.json"
    return GroundTruth.from_json(json.loads(path.read_text(encoding="utf-8")))
