"""Convert sessions: read (:mod:`opto_cube.io`), bin (:mod:`opto_cube.binning`), write (:mod:`opto_cube.store`).

One store per session; sessions convert independently, in parallel on
dask's scheduler (local processes, or a ``dask.distributed`` cluster), and a
broken session is reported without touching the others.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from opto_cube import __version__, binning, io, schema
from opto_cube.analysis.conditions import trial_conditions
from opto_cube.errors import BinningError, OptoCubeError, OptoCubeWarning, ParameterError, StoreError
from opto_cube.io.npy import NpyFile
from opto_cube.store.access import StorePath, is_url
from opto_cube.store.layout import CubeLayout, Var
from opto_cube.store.ownership import plan_write
from opto_cube.store.paths import store_path
from opto_cube.store.write import spike_counts_chunks, write_cube

JOBS_MIN_CUBE_BYTES_PER_WORKER = 10**9  # convert --jobs N: processes only with this many cube bytes per worker

if TYPE_CHECKING:
    import xarray as xr


@dataclass
class ConversionResult:
    """What happened to one session: ``converted``, ``skipped`` (up to date) or ``failed``."""

    session_id: str
    status: str
    store: str | None = None
    seconds: float = 0.0
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    shape: tuple[int, ...] | None = None
    dtype: str | None = None

    def __str__(self) -> str:
        if self.status == "failed":
            return f"failed     {self.session_id}: {self.error}"
        extra = f" {self.shape} {self.dtype}" if self.shape else ""
        return f"{self.status:<10} {self.session_id} -> {self.store}{extra} ({self.seconds:.1f} s)"


def emitter_depth_um(emitter: np.ndarray, surface_position_um: float, tip_offset_um: float) -> np.ndarray:
    """Depth of each emitter below the brain surface, um (docs/format.md, Geometry).

    The emitter sits ``70 + 100 (e - 1)`` um from the tip; the channel axis's
    zero lies ``tip_offset_um`` above the tip.

    Examples
    --------
    >>> emitter_depth_um(np.array([1, 14]), surface_position_um=2000.0, tip_offset_um=0.0)
    array([1930.,  630.])
    """
    position = schema.emitter_position_from_tip_um(emitter) - tip_offset_um
    return surface_position_um - position


def _variable(name: str, data: Any) -> Var:
    spec = schema.VARIABLES[name]
    return Var(tuple(spec.dims), np.asarray(data), dict(spec.attrs))


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        return _json_safe(value.item())
    return value


def conversion_parameters(bins: binning.TimeBins, tip_offset_um: float) -> dict[str, Any]:
    """The parameters a store is built with (with its sources' checksums, what makes it up to date)."""
    return {
        schema.ATTR_BIN_WIDTH: bins.bin_width_s,
        schema.ATTR_WINDOW: list(bins.window_s),
        schema.ATTR_TIP_OFFSET: float(tip_offset_um),
        schema.ATTR_FORMAT_VERSION: schema.FORMAT_VERSION,
    }


def cube_layout(
    session: io.Session,
    bins: binning.TimeBins,
    dtype: np.dtype,
    tip_offset_um: float = schema.TIP_OFFSET_UM,
    chunks: tuple[int, int, int] | None = None,
) -> CubeLayout:
    """The cube of a session with every coordinate and attribute, as plain arrays (no xarray).

    What :func:`opto_cube.store.write.write_cube` writes: the data variables are
    read-only broadcasts of one zero (placeholders taking no memory), and
    ``chunks`` the store's chunks of ``spike_counts``. Trials are put in onset
    order; ``stim_index`` keeps each trial's row in the stim files.
    ``window_counts`` is a placeholder: :func:`opto_cube.store.write.write_cube`
    gives it the smallest dtype of the counts it writes. The stored conditions
    and the timing arrays' placeholders are included (:func:`with_stored_conditions`).
    """
    order = np.argsort(session.stim[schema.ONSET], kind="stable")
    n_clusters, n_trials, n_bins = session.n_clusters, session.n_trials, bins.n_bins
    chunks = chunks or spike_counts_chunks(n_clusters, n_trials, n_bins)
    stim = {name: values[order] for name, values in session.stim.items()}
    coords: dict[str, Var] = {
        schema.CLUSTER: _variable(schema.CLUSTER, cluster_ids(session)),
        **{name: _variable(name, session.clusters[name]) for name in schema.CLUSTER_COORDS},
        schema.TRIAL: _variable(schema.TRIAL, np.arange(n_trials, dtype=np.int64)),
        schema.STIM_INDEX: _variable(schema.STIM_INDEX, order.astype(np.int64)),
        **{name: _variable(name, stim[name]) for name in (schema.ONSET, schema.EMITTER, schema.POWER, schema.DURATION)},
        schema.EMITTER_DEPTH: _variable(
            schema.EMITTER_DEPTH, emitter_depth_um(stim[schema.EMITTER], session.surface_position_um, tip_offset_um)
        ),
        schema.TIME: _variable(schema.TIME, bins.centres_s),
        schema.WINDOW: _variable(schema.WINDOW, np.array(schema.WINDOWS, dtype=object)),
    }
    # zeros that take no memory (a broadcast scalar)
    counts = np.broadcast_to(np.zeros((), dtype=dtype), (n_clusters, n_trials, n_bins))
    windows = np.broadcast_to(np.zeros((), dtype=np.uint8), (n_clusters, n_trials, len(schema.WINDOWS)))
    ours = {
        schema.ATTR_SESSION_ID: session.session_id,
        **conversion_parameters(bins, tip_offset_um),
        schema.ATTR_PRE_WINDOW: list(schema.PRE_WINDOW_S),
        schema.ATTR_EMITTER_POSITIONS: list(schema.EMITTER_POSITIONS_FROM_TIP_UM),
        schema.ATTR_SURFACE: session.surface_position_um,
        schema.ATTR_VERSION: __version__,
        schema.ATTR_SHA256: dict(sorted(session.sha256.items())),
    }
    if session.laser_calibration is not None:
        ours[schema.ATTR_LASER_CALIBRATION] = session.laser_calibration
    # session.json, as read, nested under one attribute; top-level copies of its fields (reconciled with the
    # arrays) except opto_cube's own names, which only opto_cube writes (the completion mark last, by the writer)
    attrs = {key: value for key, value in session.attrs.items() if not schema.is_own_attr(key)}
    attrs.update(ours)
    attrs[schema.ATTR_SESSION_JSON] = session.session_json
    shape = (n_clusters, n_trials, n_bins)
    layout = CubeLayout(
        coords=coords,
        data_vars={
            schema.SPIKE_COUNTS: _variable(schema.SPIKE_COUNTS, counts),
            schema.WINDOW_COUNTS: _variable(schema.WINDOW_COUNTS, windows),
        },
        attrs=_json_safe(attrs),
        chunks=tuple(max(1, min(int(c), n)) for c, n in zip(chunks, shape, strict=True)),
    )
    coords_more, zeros = _stored_conditions(layout)
    layout.coords.update(coords_more)
    layout.data_vars.update(zeros)
    return layout


def cube_template(
    session: io.Session,
    bins: binning.TimeBins,
    dtype: np.dtype,
    tip_offset_um: float = schema.TIP_OFFSET_UM,
    chunks: tuple[int, int, int] | None = None,
) -> xr.Dataset:
    """The cube of a session with every coordinate and attribute, ``spike_counts`` zeros taking no memory.

    :func:`cube_layout` as an ``xarray.Dataset``: ``spike_counts`` is a
    read-only broadcast of one zero with the store's chunks in
    ``encoding["chunks"]``. Trials are put in onset order; ``stim_index``
    keeps each trial's row in the stim files. ``window_counts`` is such zeros
    too, a placeholder: :func:`opto_cube.store.write.write_cube` gives it the
    smallest dtype of the counts it writes.
    """
    return cube_layout(session, bins, dtype, tip_offset_um, chunks).to_dataset()


def _stored_conditions(template: CubeLayout | xr.Dataset) -> tuple[dict[str, Var], dict[str, Var]]:
    """The stored condition coordinates and the timing arrays' placeholders of a template."""
    conditions = trial_conditions(template, schema.CONDITION_KEYS)  # type: ignore[arg-type]  # reads .values
    sizes = template.sizes
    n_clusters, n_trials, n_bins = sizes[schema.CLUSTER], sizes[schema.TRIAL], sizes[schema.TIME]
    coords = {
        schema.TRIAL_CONDITION: _variable(schema.TRIAL_CONDITION, conditions.code.astype(np.int64)),
        **{
            stored: _variable(stored, conditions.coords[name])
            for stored, name in schema.STORED_CONDITION_COORDS.items()
        },
    }
    zeros = {
        schema.CONDITION_COUNTS: np.broadcast_to(np.uint8(0), (n_clusters, conditions.n_conditions, n_bins)),
        schema.FIRST_SPIKE_BIN: np.broadcast_to(np.int16(-1), (n_clusters, n_trials)),
    }
    return coords, {name: _variable(name, zeros[name]) for name in zeros}


def with_stored_conditions(template: xr.Dataset) -> xr.Dataset:
    """The template with the stored conditions and placeholders of the timing arrays (docs/contract.md).

    The conditions are :func:`opto_cube.analysis.conditions.trial_conditions` of the
    trials for the default ``by`` (emitter, power level, duration), sorted;
    ``trial_condition`` is each trial's index into them. ``condition_counts``
    and ``first_spike_bin`` are zeros taking no memory, placeholders that
    :func:`opto_cube.store.write.write_cube` fills.
    """
    import xarray as xr

    coords, zeros = _stored_conditions(template)

    def variable(v: Var) -> xr.Variable:
        return xr.Variable(v.dims, v.data, attrs=dict(v.attrs))

    return template.assign_coords({k: variable(v) for k, v in coords.items()}).assign(
        {k: variable(v) for k, v in zeros.items()}
    )


# --------------------------------------------------------------------------
# Early checks: parameters before any session is read, sizes before anything is allocated
# --------------------------------------------------------------------------
_GIB = 1 << 30


def check_parameters(
    *,
    bin_ms: float = schema.DEFAULT_BIN_MS,
    window_s: tuple[float, float] | None = None,
    tip_offset_um: float = schema.TIP_OFFSET_UM,
    chunks: tuple[int, int] | None = None,
    max_buffer_gib: float = schema.MAX_BUFFER_GIB,
    max_cube_gib: float = schema.MAX_CUBE_GIB,
) -> None:
    """Refuse bad conversion parameters, before any session is read or any folder created.

    What depends on a session (whether the bin width tiles its pulses, the
    size of its cube) is checked per session by :func:`check_size` and the
    binning plan.

    Raises
    ------
    ParameterError, BinningError
        One line naming the parameter and its value.

    Examples
    --------
    >>> check_parameters(bin_ms=1.0)
    >>> check_parameters(bin_ms=0)
    Traceback (most recent call last):
    ...
    opto_cube.errors.BinningError: --bin-ms 0: bin width must be positive, got 0.0 ms
    """
    try:
        bin_ms = float(bin_ms)
    except (TypeError, ValueError):
        raise ParameterError(f"--bin-ms {bin_ms!r}: expected a bin width in ms") from None
    if not math.isfinite(bin_ms):
        raise ParameterError(f"--bin-ms {bin_ms!r}: expected a finite bin width in ms")
    shown = f"{bin_ms:g}"
    pre_ms = (schema.PRE_WINDOW_S[1] - schema.PRE_WINDOW_S[0]) * 1000
    if bin_ms > pre_ms:  # (else a huge width fails on rounding first, which would be the wrong reason to give)
        raise BinningError(
            f"--bin-ms {shown}: a bin wider than the pre window [{schema.PRE_WINDOW_S[0]:g}, "
            f"{schema.PRE_WINDOW_S[1]:g}) s ({pre_ms:g} ms) cannot tile it; use at most {pre_ms:g} ms"
        )
    try:  # what does not depend on a session: the bin width tiles the pre window; the window is whole bins
        binning.plan_time_bins([bin_ms / 1000], bin_ms=bin_ms, window_s=None)
        if window_s is not None:
            if len(window_s) != 2 or not all(math.isfinite(float(v)) for v in window_s):
                raise ParameterError(f"--window {window_s!r}: expected two finite times in s")
            binning.plan_time_bins([bin_ms / 1000], bin_ms=bin_ms, window_s=window_s)
    except BinningError as e:
        where = f"--bin-ms {shown}" if window_s is None else f"--bin-ms {shown} --window {window_s[0]},{window_s[1]}"
        raise BinningError(f"{where}: {e}") from None
    if not math.isfinite(tip_offset_um):
        raise ParameterError(f"--tip-offset-um {tip_offset_um!r}: tip_offset_um must be a finite distance in um")
    if chunks is not None and (
        len(chunks) != 2
        or not all(isinstance(c, (int, np.integer)) and not isinstance(c, bool) and c >= 1 for c in chunks)
    ):
        raise ParameterError(f"chunks must be (clusters, trials), two positive whole numbers; got {chunks!r}")
    for option, value in (("--max-buffer-gib", max_buffer_gib), ("--max-cube-gib", max_cube_gib)):
        if not (isinstance(value, (int, float)) and 0 < value < math.inf):
            raise ParameterError(f"{option} {value!r}: expected a positive size in GiB")


def check_size(
    folder: str | os.PathLike,
    n_clusters: int,
    n_trials: int,
    trial_chunk: int,
    bins: binning.TimeBins,
    max_buffer_gib: float = schema.MAX_BUFFER_GIB,
    max_cube_gib: float = schema.MAX_CUBE_GIB,
) -> None:
    """Refuse a conversion whose trial-chunk buffer or cube would exceed the budgets, before allocating.

    The buffer holds ``clusters x trial chunk x bins`` counts (one byte each at
    least) and a ``clusters x bins`` int64 scratch; the cube is ``clusters x
    trials x bins`` bytes at least, uncompressed.

    Examples
    --------
    >>> bins = binning.plan_time_bins([0.01], bin_ms=1.0)
    >>> check_size("s1", 300, 4200, 256, bins)
    >>> check_size("s1", 8, 40, 40, binning.plan_time_bins([1e5], bin_ms=1.0))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    opto_cube.errors.OptoCubeError: s1: the trial-chunk buffer would take 35.8 GiB ... raise --max-buffer-gib
    """
    n_bins = bins.n_bins
    buffer = n_clusters * min(trial_chunk, n_trials) * n_bins + n_clusters * n_bins * 8
    cube = n_clusters * n_trials * n_bins
    what = f"({n_clusters} clusters x {n_bins} bins of {bins.bin_width_s * 1000:g} ms over {list(bins.window_s)} s"
    if buffer > max_buffer_gib * _GIB:
        raise OptoCubeError(
            f"{folder}: the trial-chunk buffer would take {buffer / _GIB:.1f} GiB {what} x {trial_chunk} trials),"
            f" over the {max_buffer_gib:g} GiB budget; check the pulse durations and --window,"
            " or raise --max-buffer-gib"
        )
    if cube > max_cube_gib * _GIB:
        raise OptoCubeError(
            f"{folder}: the cube would take {cube / _GIB:.1f} GiB uncompressed {what} x {n_trials} trials),"
            f" over the {max_cube_gib:g} GiB budget; check the pulse durations and --window, or raise --max-cube-gib"
        )


def _progress(iterable: Any, total: int, desc: str, enabled: bool) -> Any:
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, unit="chunk", leave=False, disable=None)


def cluster_ids(session: io.Session) -> np.ndarray:
    """The cube's ``cluster`` coordinate: the session's cluster ids (sorted; the spikes carry row indices
    into them), ``0..K-1`` for ALF and NWB sessions, whose ids are their rows.

    Examples
    --------
    >>> from types import SimpleNamespace
    >>> cluster_ids(SimpleNamespace(cluster_ids=None, n_clusters=3)).tolist()
    [0, 1, 2]
    """
    ids = getattr(session, "cluster_ids", None)
    if ids is None:
        return np.arange(session.n_clusters, dtype=np.int64)
    return np.asarray(ids, dtype=np.int64)


def convert_session(
    folder: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    bin_ms: float = schema.DEFAULT_BIN_MS,
    window_s: tuple[float, float] | None = None,
    tip_offset_um: float = schema.TIP_OFFSET_UM,
    overwrite: bool = False,
    chunks: tuple[int, int] | None = None,
    progress: bool = False,
    storage_options: dict[str, Any] | None = None,
    max_buffer_gib: float = schema.MAX_BUFFER_GIB,
    max_cube_gib: float = schema.MAX_CUBE_GIB,
    surface_um: float | None = None,
) -> ConversionResult:
    """Convert one session folder into ``out_dir/<session_id>.zarr``.

    Parameters
    ----------
    folder
        The session folder (ALF files and session.json).
    out_dir
        The folder of stores (created if needed), or a URL such as ``s3://bucket/prefix``.
    bin_ms
        Bin width, ms; must tile the pre window and every pulse.
    window_s
        ``(start, stop)`` relative to onset, s; default ``(-0.5, max(1.0, longest pulse + 0.5))``.
    tip_offset_um
        Where the channel axis's zero lies above the probe tip, um.
    overwrite
        Rebuild even when an up-to-date store exists.
    chunks
        ``(clusters, trials)`` per chunk of ``spike_counts``; default from
        :func:`opto_cube.store.write.spike_counts_chunks`.
    progress
        Show a progress bar over trial chunks.
    storage_options
        fsspec options when ``out_dir`` is a URL (endpoint, credentials; by
        default taken from the usual environment variables).
    max_buffer_gib, max_cube_gib
        Size budgets (:func:`check_size`): a session over either is refused before anything is allocated.
    surface_um
        Kilosort / phy sessions only: the brain surface's y on the channel axis, um, when their
        session.json has no ``top_chan`` (docs/format.md).

    Returns
    -------
    ConversionResult
        ``converted`` or ``skipped`` (the store is up to date).

    Raises
    ------
    OptoCubeError
        Bad input or parameters; nothing is left half-written.

    Examples
    --------
    >>> import tempfile
    >>> from opto_cube import synth
    >>> root = tempfile.mkdtemp()
    >>> folder = synth.make_dataset(root, n_sessions=1, size="tiny")[0]
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("ignore")
    ...     result = convert_session(folder, root + "/stores", bin_ms=10)
    >>> result.status
    'converted'
    """
    check_parameters(
        bin_ms=bin_ms,
        window_s=window_s,
        tip_offset_um=tip_offset_um,
        chunks=chunks,
        max_buffer_gib=max_buffer_gib,
        max_cube_gib=max_cube_gib,
    )
    if surface_um is not None and not math.isfinite(surface_um):
        raise ParameterError(f"--surface-um {surface_um!r}: expected a finite position in um")
    started = time.perf_counter()
    binning.warm_kernels()  # numba's start-up in a thread, while the session's files are read and hashed
    session = io.read_session(folder, surface_um=surface_um)
    target = store_path(out_dir, session.session_id)
    try:
        bins = binning.plan_time_bins(session.stim[schema.DURATION], bin_ms=bin_ms, window_s=window_s)
    except BinningError as e:
        raise BinningError(f"{session.folder / schema.STIM_DURATIONS}: {e}") from None
    trial_chunk = (chunks or spike_counts_chunks(session.n_clusters, session.n_trials, bins.n_bins)[:2])[1]
    check_size(session.folder, session.n_clusters, session.n_trials, trial_chunk, bins, max_buffer_gib, max_cube_gib)
    expected = {**conversion_parameters(bins, tip_offset_um), schema.ATTR_SHA256: dict(sorted(session.sha256.items()))}
    if surface_um is not None:  # another --surface-um is another store
        expected[schema.ATTR_SURFACE] = session.surface_position_um
    # skipped only when whole (every chunk's CRC32C) and from the same sources and parameters; a store of other
    # parameters, or not ours, is refused (plan_write); a damaged one of ours is rebuilt
    if plan_write(target, expected, overwrite, storage_options) == "skip":
        return ConversionResult(session.session_id, "skipped", str(target), time.perf_counter() - started)

    order = np.argsort(session.stim[schema.ONSET], kind="stable")
    onsets, durations = session.stim[schema.ONSET][order], session.stim[schema.DURATION][order]
    n_clusters, n_trials = session.n_clusters, session.n_trials
    cluster_chunk, trial_chunk = chunks or spike_counts_chunks(n_clusters, n_trials, bins.n_bins)[:2]
    # One pass over the spikes fills spike_counts and window_counts; counts are binned in uint8 (every realistic
    # count fits) with the kernel tracking the largest: if one does not fit, the store is dropped (atomically)
    # and the session binned again in the dtype the exact largest count needs. Counts never wrap.
    # The same pass fills the stored timing arrays (condition_counts, first_spike_bin: binning.Timing).
    dtype = np.dtype(np.uint8)
    while True:
        template = cube_layout(session, bins, dtype, tip_offset_um, (cluster_chunk, trial_chunk, bins.n_bins))
        timing = binning.Timing(
            template[schema.TRIAL_CONDITION].values, template.sizes[schema.CONDITION], bins, n_clusters, dtype
        )
        blocks: Iterator[binning.CountChunk] = binning.iter_count_chunks(
            session.spikes.blocks(), onsets, durations, bins, n_clusters, dtype, trial_chunk=trial_chunk, buffers=2,
            timing=timing,
        )  # two buffers: one is compressed while the next is binned  # fmt: skip
        blocks = _progress(blocks, -(-n_trials // trial_chunk), session.session_id, progress)
        try:
            write_cube(template, blocks, target, overwrite=True, storage_options=storage_options, timing=timing)
            break
        except OSError as e:  # disk full, permissions: atomic_store removed what was written
            raise StoreError(f"{target}: {e.strerror or e} (nothing written)") from e
        except binning.CountOverflow:
            if dtype != np.uint8:  # binned in the exact dtype already: cannot happen, never loop
                raise
            max_count = binning.max_bin_count(session.spikes.blocks(), onsets, durations, bins, n_clusters)
            dtype = binning.smallest_uint(max_count)
    return ConversionResult(
        session.session_id,
        "converted",
        str(target),
        time.perf_counter() - started,
        shape=(n_clusters, n_trials, bins.n_bins),
        dtype=str(dtype),
    )


def _is_store_folder(folder: Path) -> bool:
    """Whether a folder found under the data root is a Zarr store (--out inside it); an unreadable one is not."""
    try:
        return (folder / "zarr.json").exists()
    except OSError:  # a session folder one may not enter: read_session says so, naming it
        return False


def _convert_reporting(folder: Path, out_dir: StorePath, params: dict[str, Any]) -> ConversionResult:
    """convert_session that never raises: errors and warnings become part of the result."""
    started = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", OptoCubeWarning)
        try:
            result = convert_session(folder, out_dir, **params)
        except OptoCubeError as e:  # every line names the session folder (or a file in it)
            error = str(e) if str(folder) in str(e) else f"{folder}: {e}"
            result = ConversionResult(io.session_id_of(folder), "failed", error=error)
        except Exception as e:  # a bug or an unforeseen input: still one line, and the others go on
            result = ConversionResult(io.session_id_of(folder), "failed", error=f"{folder}: {type(e).__name__}: {e}")
    result.seconds = time.perf_counter() - started
    result.warnings = [str(w.message) for w in caught if issubclass(w.category, OptoCubeWarning)]
    return result


def _cube_bytes(folder: Path, bin_ms: float) -> int:
    """About the bytes of a session's cube (uint8, the default window), from the .npy headers only; 0 if unreadable."""
    try:
        if not (folder / schema.STIM_TIMES).exists():  # a Kilosort / phy folder: its templates and pulses
            from opto_cube.io import kilosort

            n_clusters, n_trials = kilosort.size_hint(folder)
        else:
            n_clusters = NpyFile.open(folder / schema.CLUSTERS_QC_PASS).shape[0]
            n_trials = NpyFile.open(folder / schema.STIM_TIMES).shape[0]
    except (OSError, OptoCubeError, IndexError):
        return 0
    window_s = schema.DEFAULT_WINDOW_END_S - schema.PRE_WINDOW_S[0]
    return int(n_clusters * n_trials * window_s * 1000 / max(float(bin_ms), 1e-3))


def _local_workers(folders: Sequence[Path], jobs: int, bin_ms: float) -> int:
    """Worker processes worth starting: never more than the sessions, and 1 when the work would not pay them.

    A worker process first pays its imports and the numba kernels' loading;
    small cubes convert faster than that in this process. Measured on 100
    small sessions (60 clusters, 336-600 trials): 2 processes were slower than
    1 at 10 ms (0.4 GB of cubes in all) and 1.55x faster at 1 ms (4 GB). So
    processes start only with ``JOBS_MIN_CUBE_BYTES_PER_WORKER`` cube
    bytes per worker (see benchmarks/README.md, "Conversion (issue 9)").
    """
    jobs = max(1, min(int(jobs), len(folders)))
    if jobs <= 1:
        return 1
    total = sum(_cube_bytes(folder, bin_ms) for folder in folders)
    return jobs if total >= JOBS_MIN_CUBE_BYTES_PER_WORKER * jobs else 1


def convert(
    data_root: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    sessions: Sequence[str] | None = None,
    jobs: int = 1,
    scheduler: str | None = None,
    progress: bool = False,
    **params: Any,
) -> list[ConversionResult]:
    """Convert every session under ``data_root`` into one store each under ``out_dir``.

    Parameters
    ----------
    data_root
        A data folder (``sessions/*/``), a folder of sessions, or one session.
    out_dir
        The folder of stores (created if needed).
    sessions
        Only these session ids (folder names, or NWB file stems).
    jobs
        Sessions converted at once, in local processes (dask's ``processes`` scheduler); at most one
        per session, and one (no process) when the sessions' cubes are too small to pay the processes.
    scheduler
        Address of a ``dask.distributed`` scheduler to run the conversions on instead.
    progress
        Progress bars on standard error.
    **params
        Passed to :func:`convert_session` (``bin_ms``, ``window_s``, ``tip_offset_um``, ``overwrite``,
        ``chunks``, ``storage_options``).

    Returns
    -------
    list of ConversionResult
        One per session, failures included (this function raises only when
        ``data_root`` holds no sessions or names an unknown one).
    """
    budgets = {k: params[k] for k in ("max_buffer_gib", "max_cube_gib") if k in params}
    check_parameters(
        **{k: params[k] for k in ("bin_ms", "window_s", "tip_offset_um", "chunks") if k in params}, **budgets
    )
    folders = io.find_sessions(data_root)
    if not is_url(out_dir):  # --out inside a flat data folder: its stores are not sessions
        out_resolved = Path(out_dir).resolve()
        folders = [f for f in folders if f.resolve() != out_resolved and not _is_store_folder(f)]
        if not folders:
            raise OptoCubeError(f"{data_root}: holds no session folders besides --out {out_dir}")
    if sessions:
        by_name = {io.session_id_of(f): f for f in folders}
        unknown = [s for s in sessions if s not in by_name]
        if unknown:
            raise OptoCubeError(f"{data_root}: no session named {', '.join(map(repr, unknown))}")
        folders = [by_name[s] for s in sessions]
    out: StorePath = os.fspath(out_dir) if is_url(out_dir) else Path(out_dir)
    if isinstance(out, Path):
        out.mkdir(parents=True, exist_ok=True)
    if scheduler is None:
        jobs = _local_workers(folders, jobs, params.get("bin_ms", schema.DEFAULT_BIN_MS))
    if jobs <= 1 and scheduler is None:
        results = []
        bar = _progress(folders, len(folders), "sessions", progress and len(folders) > 1)
        for folder in bar:
            results.append(_convert_reporting(folder, out, {**params, "progress": progress}))
        return results
    import dask  # only here (xarray imports it anyway when it is installed, but nothing here needs it)

    tasks = [dask.delayed(_convert_reporting, pure=False)(f, out, params) for f in folders]
    if scheduler is not None:
        from distributed import Client

        with Client(scheduler):
            return list(dask.compute(*tasks))
    return list(dask.compute(*tasks, scheduler="processes", num_workers=jobs))
