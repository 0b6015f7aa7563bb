"""One synthetic session as an ALF session folder, in the exact format of docs/format.md.

:func:`write_session` draws a session (:mod:`opto_cube.synth.simulate`) and
writes its ``spikes.*``, ``clusters.*`` and ``stim.*`` files, the optional
text files and session.json (:func:`session_meta`, shared with the Kilosort
layout); :data:`LASERS` are the calibrations a session names and
:data:`SESSION_ID` the folder names subject, date, ``en`` and probe are read from.
"""

from __future__ import annotations

import json
import os
import pathlib
import re

import numpy as np

from opto_cube import schema
from opto_cube.synth.model import SAMPLES_PER_S, GroundTruth, SessionSpec
from opto_cube.synth.simulate import Trials, draw_session

__all__ = ["LASERS", "SESSION_ID", "session_meta", "write_session", "write_text"]

LASERS = {  # laser id -> (slope_mW, intercept_mW); "levels" in the calibration file are the nominal mW levels
    "quantifi": (0.001234, 0.000123),
    "obis_640": (0.000987, 0.000211),
}
SESSION_ID = re.compile(r"^([A-Za-z]+)(\d+)_(\d{4}-\d{2}-\d{2})_en(\d+)_p(\d+)$")


def write_text(path: pathlib.Path, text: str) -> None:
    """Write ``text`` as UTF-8 with ``\\n`` line ends: the same bytes on every platform."""
    path.write_text(text, encoding="utf-8", newline="\n")


def write_session(
    session_dir: str | os.PathLike,
    spec: SessionSpec = SessionSpec(),  # noqa: B008 (frozen dataclass)
    *,
    session_id: str | None = None,
) -> GroundTruth:
    """Write one synthetic session folder in the exact format of docs/format.md.

    Parameters
    ----------
    session_dir
        The folder to write (created if needed); its name is the session id, and
        subject, date, ``en`` and probe are read from it when it has the form
        ``{subject}_{date}_en{en}_p{probe}`` (e.g. ``AL0034_2024-12-05_en1_p0``).
    spec
        Every knob of the session, including its seed and quirks.
    session_id
        The id in the ground truth and session.json; the folder name by default.

    Returns
    -------
    GroundTruth
        The per-cluster truth the session was drawn from.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from opto_cube.synth.model import SIZES
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     folder = pathlib.Path(tmp) / "AL0034_2024-12-05_en1_p0"
    ...     truth = write_session(folder, SIZES["tiny"])
    ...     meta = json.loads((folder / schema.SESSION_JSON).read_text())
    ...     times = np.load(folder / schema.SPIKES_TIMES)
    >>> meta["subject"], meta["n_spikes"] == times.size, truth.session_id
    ('AL_0034', True, 'AL0034_2024-12-05_en1_p0')
    """
    folder = pathlib.Path(session_dir)
    folder.mkdir(parents=True, exist_ok=True)
    session_id = folder.name if session_id is None else session_id
    drawn = draw_session(spec, session_id)
    trials, truth, clusters, rows = drawn.trials, drawn.truth, drawn.clusters, drawn.trial_rows
    spike_times, spike_clusters = drawn.spike_times, drawn.spike_rows
    files = {
        schema.SPIKES_TIMES: spike_times,
        schema.SPIKES_CLUSTERS: spike_clusters,
        **clusters["arrays"],
        schema.STIM_TIMES: trials.onset_s[rows],
        schema.STIM_EMISSION_SITES: trials.emitter[rows],
        schema.STIM_POWER: trials.power_mw[rows],
        schema.STIM_DURATIONS: trials.duration_s[rows],
    }
    for name, array in files.items():
        np.save(folder / name, array, allow_pickle=False)
    optional = {
        schema.CLUSTERS_WAVEFORM_TYPE: (spec.omit_waveform_type, "".join(f"{w}\n" for w in truth.waveform_type)),
        schema.CLUSTERS_KS_LABEL: (
            spec.omit_ks_label,
            "cluster_id,KSLabel\n" + "".join(f"{i},{label}\n" for i, label in enumerate(clusters["ks_label"])),
        ),
    }
    for name, (omitted, text) in optional.items():
        if omitted:
            (folder / name).unlink(missing_ok=True)  # also when rewriting a folder that had it
        else:
            write_text(folder / name, text)

    meta = session_meta(folder, session_id, spec, truth, trials, clusters, spike_times)
    write_text(folder / schema.SESSION_JSON, json.dumps(meta, indent=2) + "\n")
    return truth


def session_meta(
    folder: pathlib.Path,
    session_id: str,
    spec: SessionSpec,
    truth: GroundTruth,
    trials: Trials,
    clusters: dict,
    spike_times: np.ndarray,
) -> dict:
    """The session.json of a synthetic session."""
    match = SESSION_ID.match(folder.name)
    letters, number, date, en, probe = match.groups() if match else ("AL", "0", "2024-01-01", "1", "0")
    laser = sorted(LASERS)[spec.seed % len(LASERS)]
    qc_pass = clusters["arrays"][schema.CLUSTERS_QC_PASS]
    meta = {
        "session_id": session_id + ("_as_exported" if spec.session_id_disagrees else ""),
        "subject": f"{letters}_{int(number):04d}",
        "date": date,
        "en": int(en),
        "probe_index": int(probe),
        "top_chan": clusters["top_chan"],
        "calibration": laser,
        "power_level_scaling": 1.0,
        "sampling_rate": SAMPLES_PER_S,
        "n_spikes": int(spike_times.size),
        "n_clusters": spec.n_clusters,
        "n_channels": spec.n_channels,
        "n_trials": int(trials.onset_sample.size),
        "top_of_shank_um": truth.surface_position_um,
        "calibration_slope_mW": LASERS[laser][0],
        "calibration_intercept_mW": LASERS[laser][1],
        "spike_time_range_s": [float(spike_times.min()), float(spike_times.max())] if spike_times.size else [0.0, 0.0],
        "stim_time_range_s": [float(trials.onset_s[0]), float(trials.onset_s[-1])],
        "n_qc_pass": int(qc_pass.sum()),
        "n_qc_fail": int((~qc_pass).sum()),
        "qc_thresholds": {
            "presence_ratio_min": schema.QC_PRESENCE_RATIO_MIN,
            "isi_violations_ratio_max": schema.QC_ISI_VIOLATIONS_MAX,
            "amplitude_cutoff_max": schema.QC_AMPLITUDE_CUTOFF_MAX,
        },
    }
    if not spec.omit_power_range:
        meta["power_range_mW"] = [float(trials.power_mw.min()), float(trials.power_mw.max())]
    if spec.session_json_disagrees:
        for key in ("n_spikes", "n_trials", "n_qc_pass", "n_qc_fail"):
            meta[key] += 1 + meta[key] // 100
    return meta
