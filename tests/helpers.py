"""Helpers of the opto_cube tests (the fixtures are in conftest.py; import these with ``from helpers import ...``).

- Synthetic sessions (:mod:`opto_cube.synth`) written under tmp dirs; the
  converted ones that several tests only read are built once per session.
- :func:`write_alf_session`: a minimal, valid ALF session written directly
  with numpy from spikes and trials given on the 30 kHz sample grid (the
  hypothesis tests build random sessions with it).
- :func:`reference_counts`: the independent, obviously-correct window count
  of interface.md (``onset + a <= t < onset + b`` in float64, per cluster,
  with ``np.searchsorted``), what every exactness test compares against.
- :func:`raise_if_dask_computes`: a context manager that fails when dask
  computes (modelled on flox's ``tests/__init__.py``), for laziness tests.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path
from typing import Any

import dask
import numpy as np
import xarray as xr

from opto_cube import convert, schema, synth
from opto_cube.errors import OptoCubeWarning

SAMPLES_PER_S = schema.SAMPLING_RATE_HZ
SESSION_ID = "AL0034_2024-12-05_en1_p0"
OTHER_SESSION_ID = "AL0035_2024-12-06_en2_p1"


# --------------------------------------------------------------------------
# Laziness
# --------------------------------------------------------------------------
class CountingScheduler:
    """A dask scheduler that counts computes and raises past ``max_computes``."""

    def __init__(self, max_computes: int = 0) -> None:
        self.total_computes = 0
        self.max_computes = max_computes

    def __call__(self, dsk: Any, keys: Any, **kwargs: Any) -> Any:
        self.total_computes += 1
        if self.total_computes > self.max_computes:
            raise RuntimeError(
                f"Too many dask computations were scheduled: {self.total_computes} > max_computes={self.max_computes}"
            )
        return dask.get(dsk, keys, **kwargs)


def raise_if_dask_computes(max_computes: int = 0) -> Any:
    """Context manager: fail if dask computes more than ``max_computes`` times inside it.

    Examples
    --------
    >>> import dask.array as da
    >>> with raise_if_dask_computes():
    ...     lazy = da.ones(3).sum()  # building a graph is fine
    >>> with raise_if_dask_computes():  # doctest: +IGNORE_EXCEPTION_DETAIL
    ...     lazy.compute()
    Traceback (most recent call last):
    RuntimeError: Too many dask computations were scheduled: 1 > max_computes=0
    """
    return dask.config.set(scheduler=CountingScheduler(max_computes))


# --------------------------------------------------------------------------
# Synthetic sessions
# --------------------------------------------------------------------------
def tiny_spec(**changes: Any) -> synth.SessionSpec:
    """The synth "tiny" session with no quirk that warns (trials in onset order), plus ``changes``."""
    return dataclasses.replace(synth.SIZES["tiny"], **{"shuffle_trials": False, **changes})


# every quirk the generator knows, on (the exactness tests run on this)
ALL_QUIRKS = dict(
    shuffle_trials=True,
    unsorted_spikes=True,
    edge_spikes=True,
    edge_trials=10_000,  # every trial gets spikes exactly on its window edges (clipped to n_trials)
    omit_waveform_type=True,
    omit_ks_label=True,
    session_json_disagrees=True,
    session_id_disagrees=True,
    omit_power_range=True,
    jitter_powers=True,
)
# the warning each of them raises (regexes)
ALL_QUIRKS_WARNINGS = (
    r"not in onset order",
    r"not sorted in time",
    r"waveform_type left empty",
    r"ks_label left empty",
    r"n_spikes = .* but the arrays hold",
    r"session_id .* differs from the folder name",
)


def quirky_spec(n_trials: int | None = None, **changes: Any) -> synth.SessionSpec:
    spec = synth.SIZES["tiny"]
    quirks = {**ALL_QUIRKS, "edge_trials": n_trials or spec.n_trials, **changes}
    if n_trials:
        quirks["n_trials"] = n_trials
    return dataclasses.replace(spec, **quirks)


def write_synth(folder: Path, spec: synth.SessionSpec | None = None, **changes: Any) -> Path:
    """Write a synthetic session in ``folder`` (tiny, no warning quirks, unless told)."""
    synth.write_session(folder, dataclasses.replace(spec, **changes) if spec else tiny_spec(**changes))
    return folder


def convert_recording(folder: Path, out: Path, **params: Any) -> tuple[convert.ConversionResult, list[str]]:
    """convert_session with its OptoCubeWarnings recorded (returned) rather than raised."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", OptoCubeWarning)
        result = convert.convert_session(folder, out, **params)
    return result, [str(w.message) for w in caught if issubclass(w.category, OptoCubeWarning)]


@dataclasses.dataclass(frozen=True)
class Converted:
    """A session converted once and shared read-only: its folder, data root, stores and warnings."""

    folder: Path
    root: Path
    stores: dict[float, Path]  # bin_ms -> store
    warnings: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class ConvertedDataset:
    """A data root of several sessions converted into one folder of stores, shared read-only."""

    root: Path
    folders: tuple[Path, ...]
    out: Path  # the folder of stores
    results: tuple[convert.ConversionResult, ...]


# --------------------------------------------------------------------------
# Minimal ALF sessions written directly with numpy
# --------------------------------------------------------------------------
def write_alf_session(
    folder: Path,
    *,
    spike_times: np.ndarray,
    spike_clusters: np.ndarray,
    n_clusters: int,
    onsets: np.ndarray,
    durations: np.ndarray,
    emitters: np.ndarray | None = None,
    powers: np.ndarray | None = None,
    session_json: dict[str, Any] | None = None,
) -> Path:
    """Write a minimal valid session (every file of dataset.md) from the given spikes and trials.

    Cluster metadata are plain: all clusters pass QC (consistent with their
    metrics), RS, ``good``, template depths 0, 20, 40, ... um and a surface at 2000 um.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    k, m, n_channels = n_clusters, len(onsets), 4
    if emitters is None:
        emitters = (np.arange(m) % schema.N_EMITTERS + 1).astype(np.int32)
    if powers is None:
        powers = np.full(m, 1.0)
    template_depth = 20.0 * np.arange(k, dtype=np.float64)
    arrays = {
        schema.SPIKES_TIMES: np.asarray(spike_times, dtype=np.float64),
        schema.SPIKES_CLUSTERS: np.asarray(spike_clusters, dtype=np.int32),
        schema.CLUSTERS_TEMPLATES: np.zeros((k, 3, n_channels)),
        schema.CLUSTERS_CHANNEL_POSITIONS: np.column_stack([np.zeros(n_channels), 20.0 * np.arange(n_channels)]),
        schema.CLUSTERS_TEMPLATE_DEPTHS: template_depth,
        schema.CLUSTERS_DEPTHS_FROM_SURFACE: 2000.0 - template_depth,
        schema.CLUSTERS_QC_PASS: np.ones(k, dtype=bool),
        schema.CLUSTERS_PRESENCE_RATIO: np.full(k, 0.95),
        schema.CLUSTERS_ISI_VIOLATIONS: np.full(k, 0.1),
        schema.CLUSTERS_AMPLITUDE_CUTOFF: np.full(k, 0.01),
        schema.CLUSTERS_TROUGH_TO_PEAK: np.full(k, 0.6),
        schema.CLUSTERS_PEAK_CHANNEL: np.zeros(k, dtype=np.int32),
        schema.STIM_TIMES: np.asarray(onsets, dtype=np.float64),
        schema.STIM_EMISSION_SITES: np.asarray(emitters, dtype=np.int32),
        schema.STIM_POWER: np.asarray(powers, dtype=np.float64),
        schema.STIM_DURATIONS: np.asarray(durations, dtype=np.float64),
    }
    for name, array in arrays.items():
        np.save(folder / name, array, allow_pickle=False)
    (folder / schema.CLUSTERS_WAVEFORM_TYPE).write_text("RS\n" * k)
    (folder / schema.CLUSTERS_KS_LABEL).write_text("cluster_id,KSLabel\n" + "".join(f"{i},good\n" for i in range(k)))
    meta = {
        "session_id": folder.name,
        "subject": "AL_0034",
        "date": "2024-12-05",
        "sampling_rate": SAMPLES_PER_S,
        **(session_json or {}),
    }
    (folder / schema.SESSION_JSON).write_text(json.dumps(meta))
    return folder


# --------------------------------------------------------------------------
# The independent reference
# --------------------------------------------------------------------------
def load(folder: Path, name: str) -> np.ndarray:
    return np.load(Path(folder) / name, allow_pickle=False)


def reference_counts(
    times: np.ndarray, clusters: np.ndarray, n_clusters: int, onsets: np.ndarray, a: Any, b: Any
) -> np.ndarray:
    """``counts[k, i]`` = spikes of cluster ``k`` with ``onsets[i] + a <= t < onsets[i] + b`` (float64).

    ``a`` and ``b`` are scalars or one value per trial. Nothing of opto_cube is
    used: per cluster, the spike times sorted and ``np.searchsorted``.
    """
    onsets = np.asarray(onsets, dtype=np.float64)
    lo = onsets + np.broadcast_to(np.asarray(a, dtype=np.float64), onsets.shape)
    hi = onsets + np.broadcast_to(np.asarray(b, dtype=np.float64), onsets.shape)
    times, clusters = np.asarray(times, dtype=np.float64), np.asarray(clusters)
    out = np.zeros((n_clusters, onsets.size), dtype=np.int64)
    for k in range(n_clusters):
        t = np.sort(times[clusters == k])
        out[k] = np.searchsorted(t, hi, side="left") - np.searchsorted(t, lo, side="left")
    return out


def reference_bins(
    times: np.ndarray,
    clusters: np.ndarray,
    n_clusters: int,
    onsets: np.ndarray,
    durations: np.ndarray,
    edges_s: np.ndarray,
) -> np.ndarray:
    """``counts[k, i, j]``: spikes in ``[onset + e_j, onset + e_{j+1})``; the edge at a trial's duration is
    ``onset + duration`` as stored (interface.md). ``edges_s`` relative to onset."""
    onsets = np.asarray(onsets, dtype=np.float64)
    durations = np.asarray(durations, dtype=np.float64)
    edges = onsets[:, None] + np.asarray(edges_s)[None, :]
    stim_edge = np.isclose(np.asarray(edges_s)[None, :], durations[:, None], rtol=0, atol=1e-9)
    edges = np.where(stim_edge, (onsets + durations)[:, None], edges)
    times, clusters = np.asarray(times, dtype=np.float64), np.asarray(clusters)
    out = np.zeros((n_clusters, onsets.size, edges.shape[1] - 1), dtype=np.int64)
    for k in range(n_clusters):
        t = np.sort(times[clusters == k])
        out[k] = np.diff(np.searchsorted(t, edges, side="left"), axis=1)
    return out


def folder_reference(folder: Path, a: Any, b: Any) -> np.ndarray:
    """:func:`reference_counts` straight from a session folder's files (trials in file-row order)."""
    return reference_counts(
        load(folder, schema.SPIKES_TIMES),
        load(folder, schema.SPIKES_CLUSTERS),
        load(folder, schema.CLUSTERS_TEMPLATE_DEPTHS).size,
        load(folder, schema.STIM_TIMES),
        a,
        b,
    )


def cube_window_counts(ds: xr.Dataset, a: Any, b: Any) -> np.ndarray:
    """Sum of the cube's bins lying in ``[a, b)`` relative to onset (``a``, ``b`` scalars or one value per
    trial of the cube) as ``counts[cluster, file row]``: the cube's trials mapped back with ``stim_index``.

    Computed with xarray (chunk by chunk when the cube is dask-backed)."""
    n_trials = ds.sizes[schema.TRIAL]
    a = xr.DataArray(np.broadcast_to(np.asarray(a, dtype=np.float64), (n_trials,)), dims=schema.TRIAL)
    b = xr.DataArray(np.broadcast_to(np.asarray(b, dtype=np.float64), (n_trials,)), dims=schema.TRIAL)
    centres = ds[schema.TIME].variable
    inside = (centres > a.variable) & (centres < b.variable)  # (trial, time): the whole bins inside [a, b)
    summed = ds[schema.SPIKE_COUNTS].where(xr.DataArray(inside), 0).sum(schema.TIME, dtype=np.int64).values
    out = np.empty_like(summed)
    out[:, ds[schema.STIM_INDEX].values] = summed
    return out


def assert_exact(folder: Path, store: Path) -> xr.Dataset:
    """Per-trial pre, stim and whole-window counts of the store (read with plain ``xr.open_zarr``) equal the
    reference from the raw files, for every cluster and trial; trials in onset order, mapped by stim_index."""
    ds = xr.open_zarr(store)
    onsets_file, durations_file = load(folder, schema.STIM_TIMES), load(folder, schema.STIM_DURATIONS)
    stim_index = ds[schema.STIM_INDEX].values
    np.testing.assert_array_equal(np.sort(stim_index), np.arange(onsets_file.size))
    np.testing.assert_array_equal(ds[schema.ONSET].values, onsets_file[stim_index])
    np.testing.assert_array_equal(ds[schema.DURATION].values, durations_file[stim_index])
    assert np.all(np.diff(ds[schema.ONSET].values) >= 0), "trials are not in onset order"
    start, stop = ds.attrs[schema.ATTR_WINDOW]
    checks = {
        "pre window": (schema.PRE_WINDOW_S, schema.PRE_WINDOW_S),
        "stim window": ((0.0, durations_file), (0.0, ds[schema.DURATION].values)),
        "whole window": ((start, stop), (start, stop)),
    }
    for what, (raw_bounds, cube_bounds) in checks.items():
        np.testing.assert_array_equal(
            cube_window_counts(ds, *cube_bounds), folder_reference(folder, *raw_bounds), err_msg=what
        )
    # window_counts: the raw-spike reference and the cube's window sums, in the smallest unsigned dtype
    assert list(ds[schema.WINDOW].values) == list(schema.WINDOWS)
    windows = ds[schema.WINDOW_COUNTS]
    assert windows.dims == (schema.CLUSTER, schema.TRIAL, schema.WINDOW)
    stored = np.empty(windows.shape, dtype=np.int64)
    stored[:, stim_index] = windows.values
    for index, (name, (raw_bounds, cube_bounds)) in enumerate(
        zip(schema.WINDOWS, list(checks.values())[:2], strict=True)
    ):
        reference = folder_reference(folder, *raw_bounds)
        np.testing.assert_array_equal(stored[..., index], reference, err_msg=f"window_counts {name}")
        np.testing.assert_array_equal(
            stored[..., index], cube_window_counts(ds, *cube_bounds), err_msg=f"window_counts {name} vs cube sums"
        )
    assert windows.dtype.kind == "u" and windows.dtype == np.result_type(
        np.uint8, np.min_scalar_type(int(stored.max(initial=0)))
    ), windows.dtype
    return ds


def store_listing(out: Path) -> list[str]:
    """Every entry of a folder of stores, hidden ones included (temp dirs of a conversion start with '.')."""
    return sorted(p.name for p in Path(out).iterdir()) if Path(out).exists() else []


# --------------------------------------------------------------------------
# Damaged stores (tests/test_verify.py, tests/test_store.py)
# --------------------------------------------------------------------------
DAMAGES = ("delete", "truncate", "flip_start", "flip_middle", "flip_end", "swap", "zero_length", "wrong_codec")


def chunk_files(store_dir: Path, name: str) -> list[str]:
    """Keys (``<array>/c/...``) of the chunk files of one array of a local store, sorted."""
    root = Path(store_dir)
    return sorted(p.relative_to(root).as_posix() for p in (root / name / "c").rglob("*") if p.is_file())


def damage(store_dir: Path, key: str, how: str, position: float = 0.5, other: str | None = None) -> None:
    """Damage the chunk file ``key`` of a local store ``how`` (one of :data:`DAMAGES`).

    ``position`` (0..1) places the truncation; ``other`` is the chunk to swap with.
    ``wrong_codec`` writes the chunk's decoded bytes zlib-compressed, with a valid
    CRC32C after them: a chunk whose checksum is right but whose codec is not.
    """
    import zlib

    import google_crc32c
    import zarr

    path = Path(store_dir) / key
    data = path.read_bytes()
    if how == "delete":
        path.unlink()
    elif how == "truncate":
        path.write_bytes(data[: min(len(data) - 1, max(1, int(len(data) * position)))])
    elif how.startswith("flip_"):
        at = {"flip_start": 0, "flip_middle": len(data) // 2 - 1, "flip_end": len(data) - 2}[how]
        flipped = bytearray(data)
        flipped[at] ^= 0xFF
        flipped[at + 1] ^= 0x5A
        path.write_bytes(bytes(flipped))
    elif how == "swap":
        assert other is not None and other != key
        other_path = Path(store_dir) / other
        other_data = other_path.read_bytes()
        assert other_data != data, "swapping two identical chunks changes nothing"
        path.write_bytes(other_data)
        other_path.write_bytes(data)
    elif how == "zero_length":
        path.write_bytes(b"")
    elif how == "wrong_codec":
        name = key.split("/c/")[0]
        array = zarr.open_array(Path(store_dir), path=name, mode="r")
        coords = tuple(int(c) for c in key.split("/c/")[1].split("/"))
        block = tuple(slice(c * n, (c + 1) * n) for c, n in zip(coords, array.chunks, strict=True))
        raw = zlib.compress(np.ascontiguousarray(array[block]).tobytes())
        path.write_bytes(raw + google_crc32c.value(raw).to_bytes(4, "little"))
    else:
        raise ValueError(f"unknown damage {how!r}")


def add_window_counts(store_dir: Path) -> None:
    """Give a store its ``window_counts`` (interface.md) when its writer did not, and seal it again.

    Until the writer adds the array itself, the integrity tests add it here,
    written as the contract says: the cube's pre and stim window sums, dims
    ``(cluster, trial, window)``, the store's codecs, every chunk written.
    """
    import zarr

    from opto_cube import store

    if schema.WINDOW_COUNTS in zarr.open_group(store_dir, mode="r"):
        return
    ds = xr.open_zarr(store_dir)
    centres = ds[schema.TIME].values
    pre = ds[schema.SPIKE_COUNTS].values[:, :, (centres > schema.PRE_WINDOW_S[0]) & (centres < 0)].sum(-1)
    stim_bins = (centres[None, :] > 0) & (centres[None, :] < ds[schema.DURATION].values[:, None])
    stim = (ds[schema.SPIKE_COUNTS].values * stim_bins[None]).sum(-1)
    counts = np.stack([pre, stim], axis=-1).astype(np.uint32)
    chunks = ds[schema.SPIKE_COUNTS].encoding["chunks"][:2] + (2,)
    extra = xr.Dataset(
        {schema.WINDOW_COUNTS: ((schema.CLUSTER, schema.TRIAL, schema.WINDOW), counts)},
        coords={schema.WINDOW: np.array(schema.WINDOWS, dtype=object)},
    )
    attrs = store.read_store_attrs(store_dir)
    encoding = {name: {"compressors": store.COMPRESSORS} for name in extra.variables}
    encoding[schema.WINDOW_COUNTS]["chunks"] = chunks
    zstore = store.zarr_store(store_dir)
    extra.to_zarr(zstore, mode="a", zarr_format=3, consolidated=False, encoding=encoding, write_empty_chunks=True)
    zarr.open_group(zstore, mode="r+").attrs.update(attrs)  # xarray's append replaced the group's attributes
    store.seal(zstore, store_dir)
