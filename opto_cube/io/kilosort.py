"""Read a Kilosort / phy output folder plus a pulses table as a session (docs/format.md, "Kilosort / phy").

A lab that records with a Neuropixels Opto probe but does not export the
dataset's ALF layout brings what Kilosort 4 and phy write (``spike_times.npy``
in samples, ``spike_clusters.npy``, ``templates.npy``, ``channel_positions.npy``,
``amplitudes.npy``, ``params.py``, ``cluster_*.tsv``) and a table of its light
pulses (``pulses.csv``). :func:`read_kilosort` turns such a folder into the
same :class:`opto_cube.io.session.Session` the ALF reader makes, so everything
downstream (binning, the store, responses, NWB) is shared.

Nothing in the folder is executed: ``params.py`` is parsed with :mod:`ast` and
only literal assignments count; ``.npy`` files are read by the ALF reader's
header-first reader, which refuses pickles.

Derived per cluster, with the definitions of docs/format.md:

- ``template_depth_um``: the template's amplitude-weighted channel y, as
  Kilosort's ``templatePositionsAmplitudes.m`` (cortex-lab/spikes) computes it:
  each channel's peak-to-peak amplitude, channels under 30 % of the largest
  set to zero, weights of the channels' y.
- ``peak_channel``: the channel of the largest peak-to-peak amplitude.
- ``trough_to_peak_ms``: on the peak channel, from the trough (minimum) to the
  largest value after it; ``waveform_type`` is FS below
  :data:`FS_MAX_TROUGH_TO_PEAK_MS` (0.4 ms, Siegle et al. 2021, Nature 592:86),
  RS at or above it.
- ``presence_ratio``, ``isi_violations_ratio``, ``amplitude_cutoff``: as
  SpikeInterface's ``qualitymetrics`` computes them (:func:`presence_ratio`,
  :func:`isi_violations_ratio`, :func:`amplitude_cutoff`), after Hill, Mehta &
  Kleinfeld (2011, J Neurosci 31:8699) and the Allen Institute's
  ``ecephys_spike_sorting``; ``qc_pass`` with the dataset's thresholds.

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

import ast
import csv
import hashlib
import io as _io
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numba
import numpy as np

from opto_cube import schema
from opto_cube.errors import OptoCubeError, SessionFormatError, one_line, warn
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
CLUSTER_GROUP_TSV = "cluster_group.tsv"
CLUSTER_KS_LABEL_TSV = "cluster_KSLabel.tsv"
CLUSTER_INFO_TSV = "cluster_info.tsv"
CLUSTER_TABLES = (CLUSTER_GROUP_TSV, CLUSTER_KS_LABEL_TSV, CLUSTER_INFO_TSV)
PULSES_FILES = ("pulses.csv", "pulses.tsv")
MARKER_FILES = (PARAMS_PY, SPIKE_TIMES)  # a folder holding both is a Kilosort session

# the pulses table's columns
PULSE_ONSET_S = "onset_s"
PULSE_ONSET_SAMPLE = "onset_sample"
PULSE_DURATION = "duration_s"
PULSE_EMITTER = "emitter"
PULSE_POWER = "power_mw"
PULSE_WAVELENGTH = "wavelength_nm"
PULSE_REQUIRED = (PULSE_DURATION, PULSE_EMITTER, PULSE_POWER)

ATTR_SAMPLE_RATE = "sample_rate_hz"
ATTR_WAVELENGTHS = "wavelengths_nm"
ATTR_SOURCE_LAYOUT = "source_layout"
LAYOUT_KILOSORT = "kilosort"

# derived values (docs/format.md, "Kilosort / phy sessions", cites each)
FS_MAX_TROUGH_TO_PEAK_MS = 0.4  # FS below, RS at or above (Siegle et al. 2021)
DEPTH_CHANNEL_FRACTION = 0.3  # templatePositionsAmplitudes.m: channels under 30 % of the peak amplitude weigh 0
PRESENCE_BIN_S = 60.0  # SpikeInterface's compute_presence_ratios default
ISI_THRESHOLD_S = 0.0015  # SpikeInterface's compute_isi_violations default (1.5 ms)
MIN_ISI_S = 0.0
AMPLITUDE_BINS = 500  # SpikeInterface's amplitude_cutoff defaults
AMPLITUDE_SMOOTHING = 3
AMPLITUDE_MIN_SPIKES_PER_BIN = 5


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
        n_trials = max(0, sum(1 for line in _pulses_path(folder).open("rb") if line.strip()) - 1)
    except (OSError, OptoCubeError, IndexError):
        return 0, 0
    return n_clusters, n_trials


# --------------------------------------------------------------------------
# params.py, as data
# --------------------------------------------------------------------------
def read_params(path: str | os.PathLike) -> dict[str, Any]:
    """The literal assignments of a ``params.py``, never executed.

    Raises
    ------
    SessionFormatError
        Anything but ``name = literal`` statements (calls, imports, names,
        attribute access, ...), or no positive finite ``sample_rate``.

    Examples
    --------
    >>> import tempfile
    >>> p = Path(tempfile.mkdtemp()) / "params.py"
    >>> _ = p.write_text("dat_path = 'raw.bin'\\nsample_rate = 30000.0\\nhp_filtered = False\\n")
    >>> read_params(p)["sample_rate"]
    30000.0
    >>> _ = p.write_text("sample_rate = __import__('os').getpid()\\n")
    >>> read_params(p)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    opto_cube.errors.SessionFormatError: ...params.py: line 1: only literal assignments are read ...
    """
    path = Path(path)
    params, _ = _read_params(path)
    return params


def _read_params(path: Path) -> tuple[dict[str, Any], str]:
    data = path.read_bytes()
    try:
        tree = ast.parse(data.decode("utf-8-sig"), filename=str(path))
    except (UnicodeDecodeError, SyntaxError, ValueError) as e:
        raise SessionFormatError(path, f"not readable as Python literals ({one_line(e)})") from e
    params: dict[str, Any] = {}
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Name)
            and _is_literal(node.value)
        ):
            params[node.targets[0].id] = ast.literal_eval(node.value)
            continue
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            continue  # a docstring
        raise SessionFormatError(
            path,
            f"line {getattr(node, 'lineno', '?')}: only literal assignments are read (name = number, string, ...);"
            " this file is never executed: write the value itself",
        )
    rate = params.get("sample_rate")
    if rate is None:
        raise SessionFormatError(path, "no sample_rate: add 'sample_rate = 30000.0' (Hz)")
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not math.isfinite(rate) or rate <= 0:
        raise SessionFormatError(path, f"sample_rate must be a positive number of Hz, found {rate!r}")
    params["sample_rate"] = float(rate)
    return params, hashlib.sha256(data).hexdigest()


def _is_literal(node: ast.AST) -> bool:
    try:
        ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return False
    return True


# --------------------------------------------------------------------------
# Tables (cluster_*.tsv, pulses.csv)
# --------------------------------------------------------------------------
def _read_table(path: Path, sha: dict[str, str]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of a CSV / TSV file (tab-separated if its header holds a tab)."""
    data = path.read_bytes()
    sha[path.name] = hashlib.sha256(data).hexdigest()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise SessionFormatError(path, "not UTF-8 text") from e
    first = text.split("\n", 1)[0]
    delimiter = "\t" if "\t" in first or path.suffix == ".tsv" else ","
    rows = [r for r in csv.reader(_io.StringIO(text), delimiter=delimiter) if any(c.strip() for c in r)]
    if not rows:
        raise SessionFormatError(path, "empty: expected a header row")
    header = [c.strip() for c in rows[0]]
    for i, row in enumerate(rows[1:]):
        if len(row) != len(header):
            raise SessionFormatError(path, f"row {i + 2} has {len(row)} fields but the header has {len(header)}")
    return header, [[c.strip() for c in r] for r in rows[1:]]


def _cluster_tables(folder: Path, sha: dict[str, str]) -> tuple[dict[int, str], dict[int, str]]:
    """phy's curated ``group`` and Kilosort's ``KSLabel`` per cluster id, from whichever tables exist."""
    group: dict[int, str] = {}
    ks_label: dict[int, str] = {}
    for name in (CLUSTER_INFO_TSV, CLUSTER_KS_LABEL_TSV, CLUSTER_GROUP_TSV):  # the later ones win
        path = folder / name
        if not path.is_file():
            continue
        header, rows = _read_table(path, sha)
        id_col = next((header.index(c) for c in ("cluster_id", "id") if c in header), None)
        if id_col is None:
            raise SessionFormatError(path, f"no cluster_id column (found {header})")
        columns = {"group": group, "KSLabel": ks_label}
        if name == CLUSTER_GROUP_TSV and "group" not in header and len(header) == 2:
            header = [header[0], "group"]  # older phy wrote a second column of another name
        for i, row in enumerate(rows):
            try:
                cid = int(row[id_col])
            except ValueError:
                raise SessionFormatError(
                    path, f"row {i + 2}: cluster id {row[id_col]!r} is not a whole number"
                ) from None
            if cid < 0:
                raise SessionFormatError(path, f"row {i + 2}: negative cluster id {cid}")
            for column, target in columns.items():
                if column in header and row[header.index(column)]:
                    target[cid] = row[header.index(column)]
    return group, ks_label


def _number(text: str, path: Path, row: int, column: str, *, whole: bool = False) -> float:
    try:
        value = float(text)  # Python's float parses decimal text to the nearest double: the text round-trips
    except ValueError:
        raise SessionFormatError(path, f"row {row}: {column} {text!r} is not a number") from None
    if not math.isfinite(value):
        raise SessionFormatError(path, f"row {row}: {column} {text!r} is not finite")
    if value < 0:
        raise SessionFormatError(path, f"row {row}: negative {column} {text!r}")
    if whole and value != math.floor(value):
        raise SessionFormatError(path, f"row {row}: {column} {text!r} is not a whole number")
    return value


def read_pulses(path: str | os.PathLike, sample_rate: float, sha: dict[str, str] | None = None) -> dict[str, Any]:
    """The pulses table as trial arrays named as the cube's (``onset_s``, ``emitter``, ``power_mw``, ``duration_s``).

    ``onset_s`` text is parsed by Python's ``float`` (correctly rounded: the
    text round-trips exactly); ``onset_sample`` (whole samples) becomes
    ``onset_sample / sample_rate``. Also returns ``wavelength_nm`` when given.

    Examples
    --------
    >>> import tempfile
    >>> p = Path(tempfile.mkdtemp()) / "pulses.csv"
    >>> _ = p.write_text("onset_s,duration_s,emitter,power_mw\\n12.3456,0.01,3,1.5\\n")
    >>> read_pulses(p, 30000.0)["onset_s"]
    array([12.3456])
    """
    path = Path(path)
    header, rows = _read_table(path, {} if sha is None else sha)
    onset_col = (
        PULSE_ONSET_S if PULSE_ONSET_S in header else PULSE_ONSET_SAMPLE if PULSE_ONSET_SAMPLE in header else None
    )
    missing = [c for c in PULSE_REQUIRED if c not in header] + (
        [] if onset_col else [f"{PULSE_ONSET_S} (or {PULSE_ONSET_SAMPLE})"]
    )
    if missing:
        raise SessionFormatError(path, f"missing column(s) {', '.join(missing)}; found {header}")
    if not rows:
        raise SessionFormatError(path, "no pulses (no rows after the header)")
    assert onset_col is not None
    col = {name: header.index(name) for name in header}
    n = len(rows)
    onset = np.empty(n, np.float64)
    emitter = np.empty(n, np.int64)
    power = np.empty(n, np.float64)
    duration = np.empty(n, np.float64)
    wavelength = np.empty(n, np.float64) if PULSE_WAVELENGTH in col else None
    for i, row in enumerate(rows):
        r = i + 2
        if onset_col == PULSE_ONSET_S:
            onset[i] = _number(row[col[PULSE_ONSET_S]], path, r, PULSE_ONSET_S)
        else:
            onset[i] = int(_number(row[col[PULSE_ONSET_SAMPLE]], path, r, PULSE_ONSET_SAMPLE, whole=True)) / sample_rate
        e = _number(row[col[PULSE_EMITTER]], path, r, PULSE_EMITTER, whole=True)
        if not 1 <= e <= schema.N_EMITTERS:
            raise SessionFormatError(
                path, f"row {r}: emitter {row[col[PULSE_EMITTER]]!r} outside 1..{schema.N_EMITTERS}"
            )
        emitter[i] = int(e)
        power[i] = _number(row[col[PULSE_POWER]], path, r, PULSE_POWER)
        duration[i] = _number(row[col[PULSE_DURATION]], path, r, PULSE_DURATION)
        if duration[i] <= 0:
            raise SessionFormatError(
                path, f"row {r}: {PULSE_DURATION} must be positive, found {row[col[PULSE_DURATION]]!r}"
            )
        if wavelength is not None:
            wavelength[i] = _number(row[col[PULSE_WAVELENGTH]], path, r, PULSE_WAVELENGTH)
    out: dict[str, Any] = {schema.ONSET: onset, schema.EMITTER: emitter, schema.POWER: power, schema.DURATION: duration}
    if wavelength is not None:
        out[PULSE_WAVELENGTH] = wavelength
    return out


def _pulses_path(folder: Path) -> Path:
    for name in PULSES_FILES:
        if (folder / name).is_file():
            return folder / name
    raise SessionFormatError(
        folder / PULSES_FILES[0],
        "missing: a Kilosort session needs its light pulses as pulses.csv (onset_s or onset_sample,"
        " duration_s, emitter, power_mw)",
    )


# --------------------------------------------------------------------------
# Templates
# --------------------------------------------------------------------------
def template_features(
    templates: np.ndarray, channel_y: np.ndarray, sample_rate: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Depth (amplitude-weighted channel y), peak channel and trough-to-peak width (ms) of each template.

    A template with no amplitude (all zeros) has NaN depth and width and peak channel -1.

    Examples
    --------
    >>> t = np.zeros((1, 10, 3))
    >>> t[0, 2, 1], t[0, 5, 1], t[0, 2, 2] = -10.0, 4.0, -5.0  # trough at 2, peak at 5 on channel 1
    >>> depth, peak, width = template_features(t, np.array([0.0, 20.0, 40.0]), 30000.0)
    >>> float(depth[0]), int(peak[0]), float(width[0])  # (14 * 20 + 5 * 40) / 19; 3 samples = 0.1 ms
    (25.263157894736842, 1, 0.1)
    """
    templates = np.asarray(templates, dtype=np.float64)
    k = templates.shape[0]
    depth = np.full(k, np.nan)
    peak = np.full(k, -1, dtype=np.int32)
    width = np.full(k, np.nan)
    if k == 0 or templates.shape[1] == 0 or templates.shape[2] == 0:
        return depth, peak, width
    ptp = templates.max(axis=1) - templates.min(axis=1)  # (k, channels)
    largest = ptp.max(axis=1)
    has = largest > 0
    weights = np.where(ptp >= DEPTH_CHANNEL_FRACTION * largest[:, None], ptp, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        depth = np.where(has, (weights * channel_y[None, :]).sum(axis=1) / weights.sum(axis=1), np.nan)
    best = np.argmax(ptp, axis=1)
    peak = np.where(has, best, -1).astype(np.int32)
    waveform = templates[np.arange(k), :, best]  # (k, samples)
    trough = np.argmin(waveform, axis=1)
    after = np.where(np.arange(waveform.shape[1])[None, :] >= trough[:, None], waveform, -np.inf)
    peak_sample = np.argmax(after, axis=1)
    width = np.where(has, (peak_sample - trough) / sample_rate * 1000.0, np.nan)
    return depth, peak, width


def waveform_types(trough_to_peak_ms: np.ndarray) -> np.ndarray:
    """``FS`` below :data:`FS_MAX_TROUGH_TO_PEAK_MS`, ``RS`` at or above, empty where the width is NaN.

    Examples
    --------
    >>> waveform_types(np.array([0.3, 0.4, np.nan])).tolist()
    ['FS', 'RS', '']
    """
    width = np.asarray(trough_to_peak_ms, dtype=np.float64)
    out = np.full(width.shape, schema.UNKNOWN_LABEL, dtype=object)
    out[width < FS_MAX_TROUGH_TO_PEAK_MS] = "FS"
    out[width >= FS_MAX_TROUGH_TO_PEAK_MS] = "RS"
    return out


# --------------------------------------------------------------------------
# QC metrics (SpikeInterface's qualitymetrics definitions)
# --------------------------------------------------------------------------
def presence_ratio(spike_samples: np.ndarray, total_samples: int, sample_rate: float) -> float:
    """Fraction of the recording's 60-s bins holding a spike (SpikeInterface's ``presence_ratio``).

    Bin edges are whole multiples of ``int(60 s * sample_rate)`` samples from 0
    up to ``total_samples``; NaN when the recording is shorter than one bin.

    Examples
    --------
    >>> presence_ratio(np.array([10, 2_000_000]), 3_600_000, 30000.0)  # 2 of 2 bins
    1.0
    """
    bin_samples = int(PRESENCE_BIN_S * sample_rate)
    if total_samples < bin_samples:
        return math.nan
    edges = np.arange(total_samples // bin_samples + 1) * bin_samples
    counts, _ = np.histogram(spike_samples, bins=edges)
    return float(np.sum(counts > 0) / (edges.size - 1))


def isi_violations_ratio(spike_times_s: np.ndarray, total_duration_s: float) -> float:
    """Hill et al. (2011)'s ISI violations ratio, as SpikeInterface's ``isi_violations`` computes it.

    ``violations / (2 n (threshold - min_isi)) / (n / duration)`` with the
    1.5 ms threshold; NaN without spikes.

    Examples
    --------
    >>> isi_violations_ratio(np.array([0.0, 0.001, 1.0, 2.0]), 10.0)  # 1 violation, 4 spikes
    208.33333333333331
    """
    n = spike_times_s.size
    if n == 0:
        return math.nan
    violations = int(np.sum(np.diff(spike_times_s) < ISI_THRESHOLD_S))
    violation_time = 2 * n * (ISI_THRESHOLD_S - MIN_ISI_S)
    return float((violations / violation_time) / (n / total_duration_s))


def gaussian_filter1d(x: np.ndarray, sigma: int) -> np.ndarray:
    """``scipy.ndimage.gaussian_filter1d(x, sigma)`` (mode ``reflect``, truncate 4), operation for operation.

    The same kernel, and the same sums in the same order as scipy's
    ``NI_Correlate1D`` for a symmetric kernel, so the result is scipy's to the
    bit; without importing scipy.ndimage (a second of a fresh process).

    Examples
    --------
    >>> gaussian_filter1d(np.array([0.0, 0.0, 1.0, 0.0, 0.0]), 1).round(4)
    array([0.0584, 0.2421, 0.3989, 0.2421, 0.0584])
    """
    x = np.asarray(x, dtype=np.float64)
    radius = int(4.0 * float(sigma) + 0.5)
    offsets = np.arange(-radius, radius + 1)
    phi = np.exp(-0.5 / (sigma * sigma) * offsets**2)
    weights = (phi / phi.sum())[::-1]
    padded = np.pad(x, radius, mode="symmetric")  # scipy's "reflect": d c b a | a b c d | d c b a
    n = x.size
    out = padded[radius : radius + n] * weights[radius]
    for d in range(radius, 0, -1):
        out = out + (padded[radius - d : radius - d + n] + padded[radius + d : radius + d + n]) * weights[radius - d]
    return out


def amplitude_cutoff(amplitudes: np.ndarray) -> float:
    """Hill et al. (2011)'s amplitude cutoff, as SpikeInterface's ``amplitude_cutoff`` computes it.

    A 500-bin density histogram smoothed by a Gaussian of sigma 3 bins; the
    fraction of the distribution above the bin past the peak whose density is
    nearest to the lowest bin's, at most 0.5. NaN with fewer than 5 spikes a bin.

    Examples
    --------
    >>> amplitude_cutoff(np.ones(10))
    nan
    """
    amplitudes = np.asarray(amplitudes, dtype=np.float64)
    if amplitudes.size / AMPLITUDE_BINS < AMPLITUDE_MIN_SPIKES_PER_BIN:
        return math.nan
    h, b = np.histogram(amplitudes, AMPLITUDE_BINS, density=True)
    pdf = gaussian_filter1d(h, AMPLITUDE_SMOOTHING)
    bin_size = np.mean(np.diff(b[:-1]))
    peak = int(np.argmax(pdf))
    cut = int(np.argmin(np.abs(pdf[peak:] - pdf[0]))) + peak
    return float(min(np.sum(pdf[cut:]) * bin_size, 0.5))


@numba.njit(cache=True, nogil=True)
def _spike_pass(
    samples, rows, amplitudes, sample_rate, isi_threshold_s, bin_samples, n_bins,
    per_cluster, violations, hits, last, lo, hi,
):  # pragma: no cover  # fmt: skip
    """Time-sorted spikes, one block: counts, ISI violations, presence bins, amplitude range, per cluster (in place)."""
    with_amplitudes = amplitudes.size > 0
    for i in range(samples.size):
        s, c = samples[i], rows[i]
        per_cluster[c] += 1
        if last[c] >= 0 and (s / sample_rate) - (last[c] / sample_rate) < isi_threshold_s:
            violations[c] += 1
        last[c] = s
        if n_bins > 0:
            b = s // bin_samples
            if b == n_bins and s == n_bins * bin_samples:
                b = n_bins - 1  # np.histogram's last bin holds its right edge
            if b < n_bins:
                hits[c, b] += 1
        if with_amplitudes:
            a = amplitudes[i]
            lo[c] = min(lo[c], a)
            hi[c] = max(hi[c], a)


@numba.njit(cache=True, nogil=True)
def _histogram_pass(amplitudes, rows, enough, n_bins, edges, span, counts):  # pragma: no cover
    """One block into every cluster's amplitude histogram, bin for bin as np.histogram(a, n_bins) assigns them."""
    for i in range(amplitudes.size):
        c = rows[i]
        if not enough[c]:
            continue
        a = amplitudes[i]
        index = int(((a - edges[c, 0]) / span[c]) * n_bins)  # np.histogram's guess, then its corrections
        if index == n_bins:
            index -= 1
        if a < edges[c, index]:
            index -= 1
        elif a >= edges[c, index + 1] and index != n_bins - 1:
            index += 1
        counts[c, index] += 1


def _cutoff_from_histogram(counts: np.ndarray, edges: np.ndarray) -> float:
    """amplitude_cutoff() from one cluster's histogram counts and edges."""
    h = counts / np.array(np.diff(edges), float) / counts.sum()  # np.histogram(density=True)
    pdf = gaussian_filter1d(h, AMPLITUDE_SMOOTHING)
    bin_size = np.mean(np.diff(edges[:-1]))
    peak = int(np.argmax(pdf))
    cut = int(np.argmin(np.abs(pdf[peak:] - pdf[0]))) + peak
    return float(min(np.sum(pdf[cut:]) * bin_size, 0.5))


class _QC:
    """The QC metrics of every cluster row, accumulated over blocks of time-sorted spikes.

    :meth:`add` every block (samples, rows, amplitudes); then, when
    :attr:`needs_histograms`, :meth:`add_histogram` every block again (the
    histograms' edges need each cluster's amplitude range first); then :meth:`result`.
    """

    def __init__(self, n_clusters: int, sample_rate: float, total_samples: int, with_amplitudes: bool) -> None:
        self.k, self.rate, self.total = n_clusters, float(sample_rate), total_samples
        self.bin_samples = int(PRESENCE_BIN_S * sample_rate)
        self.n_bins = total_samples // self.bin_samples if total_samples >= self.bin_samples else 0
        self.with_amplitudes = with_amplitudes
        self.per_cluster = np.zeros(n_clusters, np.int64)
        self.violations = np.zeros(n_clusters, np.int64)
        self.hits = np.zeros((n_clusters, max(self.n_bins, 1)), np.int64)
        self.last = np.full(n_clusters, -1, np.int64)
        self.lo = np.full(n_clusters, np.inf)
        self.hi = np.full(n_clusters, -np.inf)
        self.counts: np.ndarray | None = None
        self.edges: np.ndarray | None = None
        self.enough = np.zeros(n_clusters, dtype=bool)

    def add(self, samples: np.ndarray, rows: np.ndarray, amplitudes: np.ndarray | None) -> None:
        _spike_pass(
            np.ascontiguousarray(samples, dtype=np.int64), np.ascontiguousarray(rows, dtype=np.int64),
            np.ascontiguousarray(amplitudes, dtype=np.float64) if amplitudes is not None else np.zeros(0),
            self.rate, ISI_THRESHOLD_S, self.bin_samples, self.n_bins,
            self.per_cluster, self.violations, self.hits, self.last, self.lo, self.hi,
        )  # fmt: skip

    @property
    def needs_histograms(self) -> bool:
        """Whether a cluster has enough spikes for an amplitude cutoff (and there are amplitudes)."""
        self.enough = self.per_cluster >= AMPLITUDE_BINS * AMPLITUDE_MIN_SPIKES_PER_BIN
        return self.with_amplitudes and bool(self.enough.any())

    def add_histogram(self, rows: np.ndarray, amplitudes: np.ndarray) -> None:
        if self.edges is None:
            self.edges = np.zeros((self.k, AMPLITUDE_BINS + 1))
            for c in np.flatnonzero(self.enough):
                first, last = self.lo[c], self.hi[c]
                if first == last:  # np.histogram widens an empty range by 0.5 either side
                    first, last = first - 0.5, last + 0.5
                self.edges[c] = np.linspace(first, last, AMPLITUDE_BINS + 1, endpoint=True)
            self.counts = np.zeros((self.k, AMPLITUDE_BINS), np.int64)
        _histogram_pass(
            np.ascontiguousarray(amplitudes, dtype=np.float64), np.ascontiguousarray(rows, dtype=np.int64),
            self.enough, AMPLITUDE_BINS, self.edges, self.edges[:, -1] - self.edges[:, 0], self.counts,
        )  # fmt: skip

    def result(self) -> dict[str, np.ndarray]:
        per_cluster, duration = self.per_cluster, self.total / self.rate
        # presence_ratio(): the bins with a spike, of n_bins (NaN when the recording is shorter than one bin)
        presence = (self.hits > 0).sum(axis=1) / self.n_bins if self.n_bins else np.full(self.k, np.nan)
        # isi_violations_ratio(), the same operations in the same order
        with np.errstate(invalid="ignore", divide="ignore"):
            isi = (self.violations / (2 * per_cluster * (ISI_THRESHOLD_S - MIN_ISI_S))) / (per_cluster / duration)
        isi[per_cluster == 0] = np.nan
        cutoff = np.full(self.k, np.nan)
        if self.counts is not None and self.edges is not None:
            for c in np.flatnonzero(self.enough):
                cutoff[c] = _cutoff_from_histogram(self.counts[c], self.edges[c])
        with np.errstate(invalid="ignore"):
            qc_pass = (
                (presence > schema.QC_PRESENCE_RATIO_MIN)
                & (isi < schema.QC_ISI_VIOLATIONS_MAX)
                & (cutoff < schema.QC_AMPLITUDE_CUTOFF_MAX)
            )
        return {
            schema.PRESENCE_RATIO: presence,
            schema.ISI_VIOLATIONS: isi,
            schema.AMPLITUDE_CUTOFF: cutoff,
            schema.QC_PASS: qc_pass,
        }


def qc_metrics(
    samples: np.ndarray,
    rows: np.ndarray,
    amplitudes: np.ndarray | None,
    n_clusters: int,
    sample_rate: float,
    total_samples: int,
) -> dict[str, np.ndarray]:
    """``presence_ratio``, ``isi_violations_ratio``, ``amplitude_cutoff`` and ``qc_pass`` of every cluster row.

    ``samples`` are time-sorted spike samples, ``rows`` each spike's cluster row;
    the recording is ``total_samples`` long. Spikeless rows get presence 0 and
    NaN ratios; ``amplitude_cutoff`` is NaN everywhere without ``amplitudes``.
    (:func:`read_kilosort` computes the same over blocks of the files.)

    Examples
    --------
    >>> qc = qc_metrics(np.array([0, 30, 3_000_000]), np.array([0, 0, 1]), None, 2, 30000.0, 3_600_000)
    >>> qc["presence_ratio"].tolist(), bool(qc["isi_violations_ratio"][0] > 0)
    ([0.5, 0.5], True)
    """
    qc = _QC(n_clusters, sample_rate, total_samples, amplitudes is not None)
    qc.add(samples, rows, amplitudes)
    if amplitudes is not None and qc.needs_histograms:
        qc.add_histogram(rows, amplitudes)
    return qc.result()


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
    params, sha[PARAMS_PY] = _read_params(params_path)
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
    pulses_path = _pulses_path(folder)
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
    qc = _QC(k, rate, last_sample + 1 if last_sample >= 0 else 0, AMPS in files.headers)
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
    group, ks_label = _cluster_tables(folder, sha)
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
