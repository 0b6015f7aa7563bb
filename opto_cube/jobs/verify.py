"""Check stores end to end: every chunk present, in place and whole; window counts; completion; sources.

:func:`verify_store` reads every chunk of a store once (memory bounded by
one chunk of the cube) and lists every problem it finds, each one line naming
the store and, where there is one, the chunk:

- every chunk of every array present (one listing of the store's keys), ending
  with the CRC32C recorded for that place when it was written (a chunk
  deleted, emptied, truncated, moved, swapped or re-encoded is found), and
  decoding with its CRC32C right (bytes flipped anywhere are found);
- ``window_counts`` equal to ``spike_counts`` summed over each trial's pre and
  stim bins;
- the completion mark of a finished conversion, and the store format;
- given the data folder, the SHA-256 of every source file against the one
  recorded in the store.

:func:`verify` does it for a store or every store of a folder. See
``docs/contract.md`` ("Integrity").

Examples
--------
>>> from opto_cube.jobs.demo import example_stores
>>> root = example_stores()
>>> [report.ok for report in verify(root / "stores", data_root=root / "data")]
[True]
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from opto_cube import io, schema
from opto_cube.errors import OptoCubeError, StoreError, one_line
from opto_cube.io.npy import sha256_file
from opto_cube.store import chunks
from opto_cube.store.access import StorePath, is_url, read_store_attrs, zarr_store
from opto_cube.store.ownership import is_litter
from opto_cube.store.paths import STORE_SUFFIX, list_stores

__all__ = ["StoreReport", "verify", "verify_store"]


@dataclass
class StoreReport:
    """What :func:`verify_store` found in one store: ``problems`` (one line each) and what it checked."""

    store: str
    problems: list[str] = field(default_factory=list)
    chunks: int = 0
    checked: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether no problem was found."""
        return not self.problems

    def __str__(self) -> str:
        if self.ok:
            return f"ok       {self.store}: {self.chunks} chunks; {', '.join(self.checked)}"
        return f"damaged  {self.store}: {len(self.problems)} problem{'s' * (len(self.problems) != 1)}"


def _block(coords: tuple[int, ...], chunks: tuple[int, ...], shape: tuple[int, ...]) -> tuple[slice, ...]:
    return tuple(slice(c * n, min((c + 1) * n, s)) for c, n, s in zip(coords, chunks, shape, strict=True))


def _decode_all(report: StoreReport, group: Any, skip: set[str], path: str) -> None:
    """Decode every chunk of every array but ``spike_counts`` (read with the window check), one chunk at a time."""
    for name, array in group.arrays():
        if name == schema.SPIKE_COUNTS:
            continue
        encoding = array.metadata.chunk_key_encoding
        for coords in np.ndindex(*array.cdata_shape):
            key = f"{name}/{encoding.encode_chunk_key(coords)}"
            if key in skip:
                continue
            try:
                array[_block(coords, array.chunks, array.shape)]
            except Exception as e:
                report.problems.append(f"{path}: chunk {key} is corrupt ({one_line(e)})")


def _window_edges(group: Any) -> tuple[int, int, np.ndarray]:
    """Bin indices: the pre window's first bin, the stim window's first bin, and each trial's stim end."""
    centres = np.asarray(group[schema.TIME][...], dtype=np.float64)
    durations = np.asarray(group[schema.DURATION][...], dtype=np.float64)
    pre_start = int(np.searchsorted(centres, schema.PRE_WINDOW_S[0]))
    stim_start = int(np.searchsorted(centres, schema.PRE_WINDOW_S[1]))
    stim_end = np.searchsorted(centres, durations).astype(np.int64)  # centres below the duration: whole bins
    return pre_start, stim_start, stim_end


def _check_window_counts(report: StoreReport, group: Any, skip: set[str], path: str) -> None:
    """Decode every chunk of ``spike_counts`` and compare its window sums with ``window_counts``."""
    counts = group[schema.SPIKE_COUNTS]
    encoding = counts.metadata.chunk_key_encoding
    windows = None
    if schema.WINDOW_COUNTS not in group:
        report.problems.append(f"{path}: no {schema.WINDOW_COUNTS!r} array (every store of format 2 has one)")
    else:
        windows = group[schema.WINDOW_COUNTS]
        try:
            labels = [str(v) for v in group[schema.WINDOW][...]] if schema.WINDOW in group else list(schema.WINDOWS)
        except Exception:  # a damaged window coordinate: reported by _decode_all
            labels = []
        order = [labels.index(w) for w in schema.WINDOWS] if sorted(labels) == sorted(schema.WINDOWS) else None
        if order is None or windows.shape != (*counts.shape[:2], len(schema.WINDOWS)):
            report.problems.append(
                f"{path}: {schema.WINDOW_COUNTS!r} has shape {windows.shape} and windows {labels};"
                f" expected {(*counts.shape[:2], len(schema.WINDOWS))} and {list(schema.WINDOWS)}"
            )
            windows = None
        try:
            pre_start, stim_start, stim_end = _window_edges(group)
        except Exception as e:  # a damaged time or duration chunk: reported by _decode_all
            report.problems.append(
                f"{path}: window_counts not compared: the bins or durations cannot be read ({one_line(e)})"
            )
            windows = None
    mismatched = 0
    for coords in np.ndindex(*counts.cdata_shape):
        key = f"{schema.SPIKE_COUNTS}/{encoding.encode_chunk_key(coords)}"
        if key in skip:
            continue
        region = _block(coords, counts.chunks, counts.shape)
        try:
            block = np.asarray(counts[region])
        except Exception as e:
            report.problems.append(f"{path}: chunk {key} is corrupt ({one_line(e)})")
            continue
        if windows is None:
            continue
        try:
            stored = np.asarray(windows[region[0], region[1], :])[:, :, order]
        except Exception as e:  # its chunks are reported by _decode_all
            report.problems.append(f"{path}: {schema.WINDOW_COUNTS} at chunk {key} cannot be read ({one_line(e)})")
            continue
        total = np.zeros((*block.shape[:2], block.shape[2] + 1), dtype=np.int64)
        np.cumsum(block, axis=2, dtype=np.int64, out=total[:, :, 1:])
        ends = stim_end[region[1]]
        pre = total[:, :, stim_start] - total[:, :, pre_start]
        stim = np.take_along_axis(total, np.broadcast_to(ends[None, :, None], (*block.shape[:2], 1)), axis=2)[..., 0]
        stim = stim - total[:, :, stim_start]
        bad = (pre != stored[..., 0]) | (stim != stored[..., 1])
        if bad.any():
            mismatched += int(bad.sum())
            c, t = (int(i[0]) for i in np.nonzero(bad))
            report.problems.append(
                f"{path}: {schema.WINDOW_COUNTS} differs from the window sums of chunk {key} at"
                f" cluster {region[0].start + c}, trial {region[1].start + t} ({int(bad.sum())} cluster x trial)"
            )
    if windows is not None and not mismatched:
        report.checked.append("window_counts = window sums")


def _source_file(folder: Path, name: str) -> Path:
    for candidate in (folder / name, folder.parent / name, folder.parent.parent / name):
        if candidate.is_file():
            return candidate
    return folder / name


def _session_source(report: StoreReport, attrs: dict[str, Any], data_root: str | os.PathLike, path: str) -> Path | None:
    """The session (folder or file, of any kind find_sessions finds) the store was made from."""
    session_id = str(attrs.get(schema.ATTR_SESSION_ID, ""))
    try:
        sources = {io.session_id_of(f): f for f in io.find_sessions(data_root)}
    except OptoCubeError as e:
        report.problems.append(f"{path}: {e}")
        return None
    if session_id not in sources:
        report.problems.append(f"{path}: session {session_id!r} is not under {data_root} (no folder or file of it)")
        return None
    return sources[session_id]


def _check_sources(report: StoreReport, attrs: dict[str, Any], folder: Path, path: str) -> None:
    recorded = attrs.get(schema.ATTR_SHA256) or {}
    if not isinstance(recorded, dict) or not recorded:
        report.problems.append(f"{path}: no source checksums ({schema.ATTR_SHA256!r})")
        return
    changed = 0
    for name, sha in sorted(recorded.items()):
        source = _source_file(folder, name)
        try:
            found = sha256_file(source)
        except OSError as e:
            report.problems.append(f"{path}: source {source} cannot be read ({one_line(e)})")
            changed += 1
            continue
        if found != sha:
            report.problems.append(f"{path}: source {source} changed since the conversion (SHA-256 differs)")
            changed += 1
    if not changed:
        report.checked.append(f"{len(recorded)} sources' SHA-256")


def verify_store(
    path: StorePath,
    data_root: str | os.PathLike | None = None,
    storage_options: dict[str, Any] | None = None,
    progress: bool = False,
) -> StoreReport:
    """Check one store completely (see the module's description); never raises on a damaged store.

    Parameters
    ----------
    path
        A store written by ``opto-cube convert`` (local path or URL).
    data_root
        The data folder it was converted from: also compare the sources' SHA-256, and count every spike
        again from them (:func:`recount`; about the cost of one conversion).
    storage_options
        fsspec options for a URL.
    progress
        A progress bar while recounting.

    Returns
    -------
    StoreReport
        ``problems`` empty when the store is whole.
    """
    name = os.fspath(path)
    report = StoreReport(name)
    attrs = read_store_attrs(path, storage_options)
    if attrs is None or not (schema.ATTR_FORMAT_VERSION in attrs or schema.ATTR_VERSION in attrs):
        report.problems.append(f"{name}: not an opto_cube store (no opto_cube metadata in its zarr.json)")
        return report
    if not is_url(path):  # files a conversion does not write (what operating systems leave is tolerated)
        extra = sorted(
            p.name for p in Path(path).iterdir()
            if p.name != "zarr.json"
            and not is_litter(p.name)
            and not (p.is_dir() and (p / "zarr.json").is_file())
        )  # fmt: skip
        if extra:
            report.problems.append(f"{name}: holds {', '.join(map(repr, extra))}, which a conversion does not write")
    version = chunks.format_version(attrs)
    if version < schema.FORMAT_VERSION:
        report.problems.append(f"{name}: store format {version}, without checksums; reconvert it (convert rebuilds it)")
        return report
    if not attrs.get(schema.ATTR_COMPLETE):
        report.problems.append(f"{name}: no completion mark: the conversion did not finish; convert rebuilds it")
    else:
        report.checked.append("completion mark")
    try:
        group = zarr.open_group(zarr_store(path, storage_options, read_only=True), mode="r")
        expected = chunks.expected_chunks(group)
        report.chunks = len(expected)
        problems = chunks.metadata_problems(path, storage_options) + chunks.check_chunks(path, storage_options)
    except Exception as e:
        report.problems.append(f"{name}: metadata cannot be read ({one_line(e)})")
        return report
    report.problems.extend(problems)
    skip = {key for key in expected if any(f"chunk {key} " in p for p in problems)}
    _decode_all(report, group, skip, name)
    if schema.SPIKE_COUNTS not in group:
        report.problems.append(f"{name}: no {schema.SPIKE_COUNTS!r} array")
    else:
        _check_window_counts(report, group, skip, name)
    if not any("chunk" in p for p in report.problems):
        report.checked.insert(0, "every chunk present and its CRC32C right")
    if data_root is not None:
        source = _session_source(report, attrs, data_root, name)
        if source is not None:
            _check_sources(report, attrs, source, name)
            if schema.SPIKE_COUNTS in group:
                recount(report, group, attrs, source, name, progress=progress)
    return report


def _first_difference(stored: np.ndarray, counted: np.ndarray) -> str:
    at = tuple(int(i[0]) for i in np.nonzero(stored != counted))
    return f"at {at}: stored {stored[at].item()}, counted {counted[at].item()}"


def _store_bins(report: StoreReport, attrs: dict[str, Any], session: Any, path: str) -> Any:
    """The store's time bins for the session's pulses (its bin width and window); None, reported, if unusable."""
    from opto_cube import binning

    try:
        width_ms = float(attrs[schema.ATTR_BIN_WIDTH]) * 1000
        window = tuple(float(v) for v in attrs[schema.ATTR_WINDOW])
        return binning.plan_time_bins(session.stim[schema.DURATION], bin_ms=width_ms, window_s=window)  # type: ignore[arg-type]
    except (KeyError, TypeError, ValueError, OptoCubeError) as e:
        report.problems.append(f"{path}: counts not recounted: bin width or window unusable ({one_line(e)})")
        return None


def _compare(report: StoreReport, path: str, what: str, read: Any, counted: np.ndarray) -> bool:
    """Compare what the store holds (``read()``) with what was counted; False (reported) when they differ.

    A part that cannot be read is skipped here: the chunk checks report it.
    """
    try:
        stored = np.asarray(read())
    except Exception:
        return True
    if stored.shape == counted.shape and np.array_equal(stored, counted):
        return True
    where = _first_difference(stored, counted) if stored.shape == counted.shape else f"shape {stored.shape}"
    report.problems.append(f"{path}: {what} differs from the spikes counted again ({where})")
    return False


def recount(
    report: StoreReport, group: Any, attrs: dict[str, Any], source: Path, path: str, progress: bool = False
) -> None:
    """Count the spikes again from the session's sources and compare every stored count with them.

    The session is read as a conversion reads it (:func:`opto_cube.io.read_session`: ALF, NWB or any
    kind it knows) and binned by the conversion's own pass (:func:`opto_cube.binning.iter_count_chunks`) with
    the store's bin width, window and chunking: ``spike_counts`` chunk by chunk, ``window_counts``,
    ``condition_counts`` and ``first_spike_bin`` must equal what it counts, and the trial coordinates the
    sources' trials. A chunk rewritten together with its checksum record passes every checksum, never this.
    Costs about one conversion (memory: one trial chunk of the cube), with a progress bar when asked.
    """
    import warnings

    from opto_cube import binning
    from opto_cube.errors import OptoCubeWarning
    from opto_cube.jobs import convert

    try:
        with warnings.catch_warnings():  # the session's quirks were reported when it was converted
            warnings.simplefilter("ignore", OptoCubeWarning)
            session = io.read_session(source)
    except OptoCubeError as e:
        report.problems.append(f"{path}: counts not recounted: {one_line(e)}")
        return
    counts = group[schema.SPIKE_COUNTS]
    bins = _store_bins(report, attrs, session, path)
    if bins is None:
        return
    shape = (session.n_clusters, session.n_trials, bins.n_bins)
    if counts.shape != shape or counts.dtype.kind != "u":
        report.problems.append(
            f"{path}: {schema.SPIKE_COUNTS} is {counts.shape} {counts.dtype}; the sources make {shape} unsigned counts"
        )
        return
    step, trial_step = counts.chunks[0], counts.chunks[1]
    template = convert.cube_template(session, bins, counts.dtype, chunks=(step, trial_step, bins.n_bins))
    same = [
        _compare(report, path, f"coordinate {name}", lambda n=name: group[n][...], template[name].values)
        for name in (schema.ONSET, schema.EMITTER, schema.POWER, schema.DURATION)
        if name in group
    ]
    timing = binning.Timing(
        template[schema.TRIAL_CONDITION].values, template.sizes[schema.CONDITION], bins, session.n_clusters,
        counts.dtype,
    )  # fmt: skip
    order = np.argsort(session.stim[schema.ONSET], kind="stable")
    blocks = binning.iter_count_chunks(
        session.spikes.blocks(), session.stim[schema.ONSET][order], session.stim[schema.DURATION][order], bins,
        session.n_clusters, counts.dtype, trial_chunk=trial_step, timing=timing,
    )  # fmt: skip
    windows = group[schema.WINDOW_COUNTS] if schema.WINDOW_COUNTS in group else None
    encoding = counts.metadata.chunk_key_encoding
    total = -(-session.n_trials // trial_step)
    try:
        for trials, block, counted in convert._progress(blocks, total, f"recounting {session.session_id}", progress):
            for c in range(0, block.shape[0], step):
                key = encoding.encode_chunk_key((c // step, trials.start // trial_step, 0))
                region = (slice(c, c + step), trials, slice(None))
                same.append(
                    _compare(report, path, f"chunk {schema.SPIKE_COUNTS}/{key}", lambda r=region: counts[r],
                             block[c : c + step])
                )  # fmt: skip
            if windows is not None and windows.shape == (*shape[:2], len(schema.WINDOWS)):
                what = f"{schema.WINDOW_COUNTS} of trials {trials.start}..{trials.stop - 1}"
                same.append(_compare(report, path, what, lambda t=trials: windows[:, t, :], counted))
    except binning.CountOverflow as e:
        report.problems.append(f"{path}: a count of the sources exceeds the store's {counts.dtype} ({one_line(e)})")
        return
    for name, values in ((schema.CONDITION_COUNTS, timing.time_course), (schema.FIRST_SPIKE_BIN, timing.first_spike)):
        if name in group:
            same.append(_compare(report, path, name, lambda n=name: group[n][...], values))
    if all(same):
        report.checked.append("every count recounted from the sources")


def verify(
    path: str | os.PathLike,
    data_root: str | os.PathLike | None = None,
    storage_options: dict[str, Any] | None = None,
    progress: bool = False,
) -> list[StoreReport]:
    """Check a store, or every ``*.zarr`` store of a folder (see :func:`verify_store`).

    Raises
    ------
    StoreError
        ``path`` is neither a store nor a folder holding stores.
    """
    text = os.fspath(path).rstrip("/") or os.fspath(path)
    single = text.endswith(STORE_SUFFIX) or read_store_attrs(text, storage_options) is not None
    if not is_url(text) and not Path(text).exists():
        raise StoreError(f"{text}: no such store or folder")
    paths = [text] if single else list_stores(text, storage_options)
    if not paths:
        raise StoreError(f"{text}: holds no {STORE_SUFFIX} stores")
    return [verify_store(p, data_root, storage_options, progress=progress) for p in paths]
