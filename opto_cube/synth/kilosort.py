"""The same synthetic sessions in Kilosort / phy's layout plus ``pulses.csv`` (read by :mod:`opto_cube.io.kilosort`).

:func:`write_kilosort_session` makes the same draws as
:func:`~opto_cube.synth.alf.write_session` (the same ground truth, spikes and
pulses) and writes them as Kilosort / phy would, with the quirks of
:class:`KilosortQuirks` (renumbered and merged clusters, no curation, onsets in
samples, 2-D spike times, noise labels, no session.json); its own draws come
from a side stream, apart from the truth's. :func:`write_alf_twin` writes the
ALF folder holding what the Kilosort reader reads from such a folder, so that
both convert to the same cube; it reads the folder with that reader (imported in
the function: :mod:`opto_cube.io` is synth's own layer).
"""

from __future__ import annotations

import json
import os
import pathlib
from dataclasses import dataclass

import numpy as np

from opto_cube import schema
from opto_cube.synth.alf import session_meta, write_text
from opto_cube.synth.model import SAMPLES_PER_S, GroundTruth, SessionSpec
from opto_cube.synth.simulate import draw_session, side_rng

__all__ = ["KilosortQuirks", "write_alf_twin", "write_kilosort_session"]


@dataclass(frozen=True)
class KilosortQuirks:
    """What a Kilosort / phy folder of :func:`write_kilosort_session` holds besides the session itself.

    ``renumber_ids``: cluster ids with gaps (phy's curation leaves them);
    ``merges``: that many clusters merged in phy (a new id past every template,
    spikes from two templates); ``spike_clusters``: False writes only
    ``spike_templates.npy`` (no curation, clusters are templates);
    ``onset_samples``: pulses.csv gives ``onset_sample`` rather than ``onset_s``;
    ``times_2d``: ``spike_times.npy`` shaped ``(N, 1)`` as older Kilosort wrote it;
    ``amplitudes``: write ``amplitudes.npy``; ``top_chan``: session.json with
    ``top_chan`` (else no session.json: the surface needs ``--surface-um``);
    ``noise_clusters``: clusters phy labelled ``noise`` (kept).

    Examples
    --------
    >>> KilosortQuirks().merges
    1
    """

    renumber_ids: bool = True
    merges: int = 1
    spike_clusters: bool = True
    onset_samples: bool = False
    times_2d: bool = True
    amplitudes: bool = True
    top_chan: bool = True
    noise_clusters: int = 1


def _kilosort_ids(k: int, quirks: KilosortQuirks, spikeless: np.ndarray, rng: np.random.Generator):
    """Each row's cluster id (increasing with the row), the merged rows, and the templates' count."""
    merged = np.zeros(k, dtype=bool)
    if quirks.spike_clusters and quirks.merges > 0:
        tail = np.arange(max(0, k - quirks.merges), k)  # merges get new ids past every template: the last rows
        merged[tail[~spikeless[tail]]] = True
    n_plain = k - int(np.count_nonzero(merged)) if quirks.spike_clusters else k
    if quirks.renumber_ids:
        plain = np.sort(rng.choice(k + max(2, k // 4), n_plain, replace=False)) if n_plain else np.zeros(0, np.int64)
    else:
        plain = np.arange(n_plain)
    n_templates = int(plain.max()) + 1 if plain.size else 0
    n_sources = 2 * int(np.count_nonzero(merged))  # the two templates a merged cluster's spikes come from
    ids = np.empty(k, dtype=np.int64)
    not_tail = np.arange(k) < n_plain
    ids[not_tail] = plain
    ids[~not_tail] = n_templates + n_sources + np.arange(k - n_plain)  # new ids, past every template
    return ids, merged, n_templates, n_sources


def write_kilosort_session(
    session_dir: str | os.PathLike,
    spec: SessionSpec = SessionSpec(),  # noqa: B008 (frozen dataclass)
    *,
    session_id: str | None = None,
    quirks: KilosortQuirks = KilosortQuirks(),
    alf_twin: str | os.PathLike | None = None,
) -> GroundTruth:
    """Write one synthetic session as a Kilosort / phy output folder plus ``pulses.csv``.

    The same draws as :func:`write_session` (the same ground truth, spikes and
    pulses), on the sample grid: ``spike_times.npy`` in samples at
    ``sample_rate = 30000.0``; clusters renumbered, merged, labelled as
    ``quirks`` says (row k of the ground truth is the k-th smallest cluster id).

    Parameters
    ----------
    session_dir
        The folder to write (created if needed); its name is the session id.
    spec
        The session's knobs, as for :func:`write_session`.
    session_id
        The id in the ground truth and session.json; the folder name by default.
    quirks
        The Kilosort / phy quirks (:class:`KilosortQuirks`).
    alf_twin
        Also write this ALF session folder holding the same recording as the
        Kilosort reader sees it (spike times ``samples / 30000.0``, its cluster
        values), so that both convert to the same cube.

    Returns
    -------
    GroundTruth
        The per-cluster truth the session was drawn from.

    Examples
    --------
    >>> import tempfile
    >>> from opto_cube.synth.model import SIZES
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     folder = pathlib.Path(tmp) / "AL0034_2024-12-05_en1_p0"
    ...     truth = write_kilosort_session(folder, SIZES["tiny"])
    ...     names = sorted(p.name for p in folder.iterdir())
    >>> "params.py" in names and "pulses.csv" in names and "spike_times.npy" in names
    True
    """
    folder = pathlib.Path(session_dir)
    folder.mkdir(parents=True, exist_ok=True)
    session_id = folder.name if session_id is None else session_id
    drawn = draw_session(spec, session_id)
    trials, truth, clusters, rows = drawn.trials, drawn.truth, drawn.clusters, drawn.trial_rows
    spike_times, spike_rows = drawn.spike_times, drawn.spike_rows
    side = side_rng(spec, 3)  # the Kilosort-only draws, apart from the truth's
    k = spec.n_clusters
    samples = np.rint(spike_times * SAMPLES_PER_S).astype(np.int64)
    ids, merged, n_templates, n_sources = _kilosort_ids(k, quirks, truth.spikeless, side)

    # templates: row k's waveform under its id; a merged cluster's under its two source templates (one scaled)
    arrays = clusters["arrays"]
    row_templates = arrays[schema.CLUSTERS_TEMPLATES]
    templates = np.zeros((n_templates + n_sources, *row_templates.shape[1:]), dtype=np.float32)
    plain_rows = np.flatnonzero(~merged) if quirks.spike_clusters else np.arange(k)
    templates[ids[plain_rows]] = row_templates[plain_rows]
    spike_templates = ids[spike_rows]
    for j, r in enumerate(np.flatnonzero(merged)):
        a, b = n_templates + 2 * j, n_templates + 2 * j + 1
        templates[a], templates[b] = row_templates[r], 0.8 * row_templates[r]  # scaling keeps depth, channel, width
        mine = np.flatnonzero(spike_rows == r)
        spike_templates[mine] = np.where(side.random(mine.size) < 0.7, a, b)
    spike_clusters = ids[spike_rows]

    n_spikes = samples.size
    shape = (n_spikes, 1) if quirks.times_2d else (n_spikes,)
    files: dict[str, np.ndarray] = {
        "spike_times.npy": samples.reshape(shape),
        "spike_templates.npy": spike_templates.astype(np.uint32),
        "templates.npy": templates,
        "channel_positions.npy": arrays[schema.CLUSTERS_CHANNEL_POSITIONS],
        "channel_map.npy": np.arange(spec.n_channels, dtype=np.int32),
    }
    if quirks.spike_clusters:
        files["spike_clusters.npy"] = spike_clusters.astype(np.int32)
    if quirks.amplitudes:  # template scalings: a Gaussian per cluster, cut at a detection threshold
        mean = side.uniform(12.0, 30.0, k)[spike_rows]
        files["amplitudes.npy"] = np.maximum(side.normal(mean, 0.25 * mean), 8.0).astype(np.float32)
    for name in ("spike_clusters.npy", "amplitudes.npy"):
        (folder / name).unlink(missing_ok=True)
    for name, array in files.items():
        np.save(folder / name, array, allow_pickle=False)
    write_text(
        folder / "params.py",
        "dat_path = 'continuous.dat'\nn_channels_dat = 385\ndtype = 'int16'\noffset = 0\n"
        f"sample_rate = {float(SAMPLES_PER_S)!r}\nhp_filtered = True\n",
    )

    # cluster tables: Kilosort's labels for its own clusters; phy's groups (noise included) for every cluster
    ks_label = clusters["ks_label"]
    group = ks_label.astype(object).copy()
    noise = side.choice(k, min(quirks.noise_clusters, k), replace=False)
    group[noise] = "noise"
    ks_rows = plain_rows
    write_text(
        folder / "cluster_KSLabel.tsv",
        "cluster_id\tKSLabel\n" + "".join(f"{ids[r]}\t{ks_label[r]}\n" for r in ks_rows),
    )
    if quirks.spike_clusters:
        write_text(
            folder / "cluster_group.tsv", "cluster_id\tgroup\n" + "".join(f"{ids[r]}\t{group[r]}\n" for r in range(k))
        )
        per_row = np.bincount(spike_rows, minlength=k)
        write_text(
            folder / "cluster_info.tsv",
            "cluster_id\tKSLabel\tgroup\tn_spikes\n"
            + "".join(
                f"{ids[r]}\t{ks_label[r] if not merged[r] else ''}\t{group[r]}\t{per_row[r]}\n" for r in range(k)
            ),
        )
    else:
        for name in ("cluster_group.tsv", "cluster_info.tsv"):
            (folder / name).unlink(missing_ok=True)

    # the pulses, in the stim files' row order
    onset_sample = trials.onset_sample[rows]
    header = ("onset_sample" if quirks.onset_samples else "onset_s") + ",duration_s,emitter,power_mw,wavelength_nm\n"
    lines = []
    for i in range(rows.size):
        r = rows[i]
        onset = str(int(onset_sample[i])) if quirks.onset_samples else repr(float(trials.onset_s[r]))
        lines.append(
            f"{onset},{float(trials.duration_s[r])!r},{int(trials.emitter[r])},{float(trials.power_mw[r])!r},638\n"
        )
    write_text(folder / "pulses.csv", header + "".join(lines))

    meta = session_meta(folder, session_id, spec, truth, trials, clusters, samples / float(SAMPLES_PER_S))
    for key in ("n_qc_pass", "n_qc_fail", "top_of_shank_um"):  # computed by the reader, not known here
        meta.pop(key)
    if quirks.top_chan:
        write_text(folder / schema.SESSION_JSON, json.dumps(meta, indent=2) + "\n")
    else:
        (folder / schema.SESSION_JSON).unlink(missing_ok=True)
    if alf_twin is not None:
        write_alf_twin(folder, alf_twin, templates_by_row=row_templates)
    return truth


def write_alf_twin(
    kilosort_dir: str | os.PathLike, alf_dir: str | os.PathLike, *, templates_by_row: np.ndarray | None = None
) -> pathlib.Path:
    """Write the ALF session folder holding what :func:`opto_cube.io.kilosort.read_kilosort` reads from a folder.

    Spike times ``samples / sample_rate``, spike clusters the rows of the
    sorted cluster ids, every cluster array as the reader derives it, the
    pulses in their row order, and session.json: both folders convert to the
    same cube (the cluster coordinate aside: ALF ids are rows).

    Examples
    --------
    >>> import tempfile, warnings
    >>> from opto_cube.synth.model import SIZES
    >>> with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
    ...     warnings.simplefilter("ignore")
    ...     _ = write_kilosort_session(pathlib.Path(tmp) / "ks" / "s1", SIZES["tiny"])
    ...     twin = write_alf_twin(pathlib.Path(tmp) / "ks" / "s1", pathlib.Path(tmp) / "alf" / "s1")
    ...     (twin / schema.SPIKES_TIMES).is_file()
    True
    """
    from opto_cube.io import kilosort

    session = kilosort.read_kilosort(kilosort_dir)
    folder = pathlib.Path(alf_dir)
    folder.mkdir(parents=True, exist_ok=True)
    times, ids = (
        (np.concatenate(part) for part in zip(*session.spikes.blocks(), strict=True))
        if session.n_spikes
        else (
            np.zeros(0),
            np.zeros(0, np.int64),
        )
    )
    c = session.clusters
    k = session.n_clusters
    n_channels = session.n_channels
    channels = np.load(pathlib.Path(kilosort_dir) / "channel_positions.npy", allow_pickle=False)
    if templates_by_row is None:
        templates_by_row = np.zeros((k, 1, n_channels))
    files = {
        schema.SPIKES_TIMES: times.astype(np.float64),
        schema.SPIKES_CLUSTERS: ids.astype(np.int32),
        schema.CLUSTERS_TEMPLATES: np.asarray(templates_by_row, dtype=np.float64),
        schema.CLUSTERS_CHANNEL_POSITIONS: channels.astype(np.float64),
        **{name: c[coord] for name, coord in schema.CLUSTER_FILES.items()},
        schema.STIM_TIMES: session.stim[schema.ONSET],
        schema.STIM_EMISSION_SITES: session.stim[schema.EMITTER].astype(np.int32),
        schema.STIM_POWER: session.stim[schema.POWER],
        schema.STIM_DURATIONS: session.stim[schema.DURATION],
    }
    for name, array in files.items():
        np.save(folder / name, array, allow_pickle=False)
    write_text(folder / schema.CLUSTERS_WAVEFORM_TYPE, "".join(f"{w}\n" for w in c[schema.WAVEFORM_TYPE]))
    write_text(
        folder / schema.CLUSTERS_KS_LABEL,
        "cluster_id,KSLabel\n" + "".join(f"{i},{label}\n" for i, label in enumerate(c[schema.KS_LABEL])),
    )
    meta = {key: value for key, value in session.session_json.items()}
    for key in ("n_spikes", "n_clusters", "n_trials", "n_channels", "n_qc_pass", "n_qc_fail"):
        meta[key] = session.attrs[key]
    write_text(folder / schema.SESSION_JSON, json.dumps(meta, indent=2) + "\n")
    return folder
