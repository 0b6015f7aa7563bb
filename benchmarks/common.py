"""What every benchmark shares: synthetic data, fresh-process runs, results, tables, the peers' count methods.

Every benchmark script has a ``run(size=..., repeats=..., ...) -> list[dict]``
(rows of its table) that the smoke test calls at ``size="tiny"``, and a
``main()`` behind a one-line command. Timed work runs in fresh processes
(:func:`fresh`): wall time, the child's own timings and its peak RSS
(``os.wait4``), so memory a previous method allocated never helps or hurts
the next one. The machines are shared and noisy: methods are interleaved,
repeated, and compared by ratios of medians measured in the same run.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
WORK = Path(os.environ.get("OPTO_CUBE_BENCH_WORK", HERE / "_work"))  # git-ignored: data and stores
RESULTS = HERE / "results"
DATE = "2026-11-24"

# sizes: the synthetic SIZES plus a session 10x as long (10x trials, spikes and lead-in/tail)
SIZES = ("tiny", "small", "realistic", "x10")


def spec(size: str) -> Any:
    from opto_cube import synth

    if size == "x10":
        base = synth.SIZES["realistic"]
        return dataclasses.replace(
            base, n_trials=10 * base.n_trials, lead_in_s=10 * base.lead_in_s, tail_s=10 * base.tail_s
        )
    if size == "tiny10":  # the tiny session 10x as long (smoke test of the memory benchmark)
        base = synth.SIZES["tiny"]
        return dataclasses.replace(base, n_trials=10 * base.n_trials)
    return synth.SIZES[size]


# --------------------------------------------------------------------------
# Data: synthetic roots and their converted stores, built once and cached
# --------------------------------------------------------------------------
def dataset(size: str, n_sessions: int = 1, seed: int = 0, work: Path | None = None) -> Path:
    """A synthetic data root (``sessions/*``) of ``n_sessions`` sessions of ``size``; cached under ``work``."""
    import warnings

    from opto_cube import synth

    root = Path(work or WORK) / f"data_{size}_{n_sessions}_{seed}"
    if not (root / ".complete").exists():
        shutil.rmtree(root, ignore_errors=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            synth.make_dataset(root, n_sessions=n_sessions, size=spec(size), seed=seed)
        (root / ".complete").write_text("ok\n")
    return root


def sessions(root: Path) -> list[Path]:
    return sorted(p for p in (Path(root) / "sessions").iterdir() if p.is_dir())


def store_tag() -> str:
    """A short tag of the store layout (codec and chunk constants): cached stores are rebuilt when it changes."""
    import hashlib

    from opto_cube import schema
    from opto_cube.store.write import COMPRESSORS

    # the stored arrays are part of the tag: stores cached before the timing arrays are rebuilt
    text = f"{COMPRESSORS!r}{schema.CHUNK_CLUSTERS}x{schema.CHUNK_TRIALS}{schema.TIMING_ARRAYS}"
    return hashlib.sha1(text.encode()).hexdigest()[:8]


def stores(root: Path, bin_ms: float, work: Path | None = None) -> Path:
    """The folder of stores of every session of ``root`` converted at ``bin_ms``; cached."""
    import warnings

    from opto_cube.jobs import convert

    out = Path(work or WORK) / f"stores_{Path(root).name}_{bin_ms:g}ms_{store_tag()}"
    if not (out / ".complete").exists():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            results = convert.convert(root, out, bin_ms=bin_ms, overwrite=True)
        failed = [r for r in results if r.status == "failed"]
        if failed:
            raise RuntimeError(f"conversion failed: {failed[0].error}")
        (out / ".complete").write_text("ok\n")
    return out


def store_paths(out: Path) -> list[Path]:
    return sorted(Path(out).glob("*.zarr"))


def load_raw(folder: Path) -> dict[str, np.ndarray]:
    """The raw arrays a converter needs: spike times and clusters, trials (file order), cluster count."""
    from opto_cube import schema

    folder = Path(folder)
    out = {
        "times": np.load(folder / schema.SPIKES_TIMES),
        "clusters": np.load(folder / schema.SPIKES_CLUSTERS),
        "onsets": np.load(folder / schema.STIM_TIMES),
        "emitters": np.load(folder / schema.STIM_EMISSION_SITES),
        "powers": np.load(folder / schema.STIM_POWER),
        "durations": np.load(folder / schema.STIM_DURATIONS),
    }
    out["n_clusters"] = int(np.load(folder / schema.CLUSTERS_QC_PASS).size)
    return out


def trials_in_onset_order(raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    order = np.argsort(raw["onsets"], kind="stable")
    return {k: raw[k][order] for k in ("onsets", "emitters", "powers", "durations")}


def time_bins(raw: dict[str, np.ndarray], bin_ms: float) -> Any:
    from opto_cube import binning

    return binning.plan_time_bins(raw["durations"], bin_ms=bin_ms)


def read_cube(store_path: Path) -> np.ndarray:
    """``spike_counts`` of a store, whole, in memory (plain zarr: no dask)."""
    import zarr

    return zarr.open_array(str(store_path), path="spike_counts", mode="r")[...]


# --------------------------------------------------------------------------
# Fresh processes
# --------------------------------------------------------------------------
def fresh(target: str, timeout: float = 3600, env: dict[str, str] | None = None, **kwargs: Any) -> dict[str, Any]:
    """Run ``module:function(**kwargs)`` in a fresh Python process.

    Returns the function's dict (its own timings, and ``peak_rss_mb``: the
    child's maximum resident set from ``getrusage``, unless the function
    reports its own) plus ``process_s``, the wall time of the whole process,
    start-up and imports included.
    """
    cmd = [sys.executable, str(HERE / "common.py"), "--child", target, json.dumps(kwargs, default=str)]
    return run_command(cmd, timeout=timeout, env=env, parse_json=True)


def run_command(
    cmd: Sequence[str],
    timeout: float = 3600,
    env: dict[str, str] | None = None,
    parse_json: bool = False,
    cwd: Path | None = None,
) -> dict[str, Any]:
    """Run a command; its wall time and (``parse_json``) the JSON dict on its last stdout line."""
    full_env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")]),
        **(env or {}),
    }
    started = time.perf_counter()
    proc = subprocess.Popen(list(cmd), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=full_env, cwd=cwd, text=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n{err[-3000:]}")
    result: dict[str, Any] = {}
    if parse_json:
        result = json.loads(out.strip().splitlines()[-1])
    result["process_s"] = wall
    return result


def run_measured(
    cmd: Sequence[str], timeout: float = 3600, env: dict[str, str] | None = None, cwd: Path | None = None
) -> dict[str, Any]:
    """Run a command (not Python-aware): wall time and peak RSS of that very child, from ``os.wait4``."""
    import tempfile

    full_env = {**os.environ, **(env or {})}
    with tempfile.TemporaryFile() as stderr_file:  # a file, not a pipe: a chatty child cannot block on it
        started = time.perf_counter()
        proc = subprocess.Popen(list(cmd), stdout=subprocess.DEVNULL, stderr=stderr_file, env=full_env, cwd=cwd)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        stderr_file.seek(0)
        err = stderr_file.read().decode(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n{err[-3000:]}")
    return {"process_s": wall, "peak_rss_mb": usage.ru_maxrss / 1024, "cpu_s": usage.ru_utime + usage.ru_stime}


def _child(target: str, kwargs_json: str) -> None:
    import resource

    module, name = target.split(":")
    if module.startswith("benchmarks."):
        sys.path.insert(0, str(HERE))
        module = module.split(".", 1)[1]
    func = getattr(importlib.import_module(module), name)
    result = func(**json.loads(kwargs_json))
    result = dict(result or {})
    result.setdefault("peak_rss_mb", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    sys.stdout.flush()
    print("\n" + json.dumps(result, default=_jsonable), flush=True)


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def process_started_s() -> float:
    """Seconds since this process started (its start-up and imports included)."""
    import psutil

    return time.time() - psutil.Process().create_time()


# --------------------------------------------------------------------------
# Repeats, results and tables
# --------------------------------------------------------------------------
def median(values: Iterable[float]) -> float:
    values = [v for v in values if v is not None]
    return float(statistics.median(values)) if values else float("nan")


def interleave(methods: dict[str, Callable[[], dict[str, Any]]], repeats: int) -> dict[str, list[dict[str, Any]]]:
    """Run every method ``repeats`` times, interleaved (A B C A B C ...), so load drift hits all alike."""
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in methods}
    for _ in range(repeats):
        for name, method in methods.items():
            runs[name].append(method())
    return runs


def summarise(runs: list[dict[str, Any]], keys: Sequence[str]) -> dict[str, Any]:
    """Medians of ``keys`` over repeated runs (non-numeric values taken from the first run)."""
    out: dict[str, Any] = {}
    for key in runs[0]:
        values = [r.get(key) for r in runs]
        if key in keys and all(isinstance(v, (int, float)) for v in values):
            out[key] = median(values)
            out[key + "_runs"] = [round(float(v), 4) for v in values]
        else:
            out[key] = values[0]
    out["repeats"] = len(runs)
    return out


def machine() -> dict[str, Any]:
    """nproc, RAM, CPU model, Python and the versions of the stack."""
    import importlib.metadata as md

    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        ram = float("nan")
    versions = {}
    for pkg in ("opto_cube", "numpy", "numba", "zarr", "numcodecs", "xarray", "dask", "distributed", "pynapple"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    return {
        "nproc": os.cpu_count(),
        "ram_gib": round(ram, 1),
        "cpu": cpu,
        "python": platform.python_version(),
        "versions": versions,
    }


def record(bench: str, rows: list[dict[str, Any]], params: dict[str, Any], results_dir: Path | None = None) -> Path:
    """Append the rows as JSON lines to ``results/<bench>.jsonl`` with date, machine and parameters."""
    folder = Path(results_dir or RESULTS)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{bench}.jsonl"
    stamp = {
        "bench": bench,
        "date": DATE,
        "recorded": datetime.datetime.now().isoformat(timespec="seconds"),
        "params": params,
        "machine": machine(),
    }
    with path.open("a") as f:
        for row in rows:
            f.write(json.dumps({**stamp, **row}, default=_jsonable) + "\n")
    return path


def fmt(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        if value != value:
            return "-"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.3g}" if abs(value) >= 0.01 else f"{value:.2g}"
    return str(value)


def table(rows: list[dict[str, Any]], columns: Sequence[str], title: str | None = None) -> str:
    """A markdown table of ``columns`` of ``rows``."""
    lines = [f"\n### {title}\n"] if title else []
    lines.append("| " + " | ".join(columns) + " |")
    lines.append("|" + "---|" * len(columns))
    for row in rows:
        lines.append("| " + " | ".join(fmt(row.get(c)) for c in columns) + " |")
    text = "\n".join(lines)
    print(text, flush=True)
    return text


def main(doc: str, run: Callable[..., Any], bin_ms: Sequence[float]) -> None:
    """The one-line command of a benchmark whose ``run(size, bin_ms, repeats, record=...)`` needs nothing else."""
    p = parser(doc.splitlines()[0])
    p.add_argument("--bin-ms", type=float, nargs="+", default=list(bin_ms))
    a = p.parse_args()
    run(a.size, tuple(a.bin_ms), a.repeats, record=not a.no_record)


def parser(description: str, sizes: Sequence[str] = ("realistic",), repeats: int = 3) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--size", default=sizes[0], choices=SIZES, help="synthetic session size (default %(default)s)")
    p.add_argument("--repeats", type=int, default=repeats, help="runs per method; medians reported")
    p.add_argument("--no-record", action="store_true", help="do not append to benchmarks/results/")
    return p


# --------------------------------------------------------------------------
# The peers: the same count tensor [cluster, trial, time] built other ways
# --------------------------------------------------------------------------
def trial_edges(onsets: np.ndarray, durations: np.ndarray, bins: Any) -> np.ndarray:
    """Absolute bin edges ``[trial, edge]``: ``onset + k / bins_per_second``, the pulse's end edge ``onset + duration``.

    The same float64 values the opto_cube kernels compare spike times with.
    """
    rel = bins.edges_s
    edges = onsets[:, None] + rel[None, :]
    stim_edge = bins.edge_index(durations)
    rows = np.arange(onsets.size)
    edges[rows, stim_edge] = onsets + durations
    return edges


def counts_histogram_loop(
    times: np.ndarray,
    clusters: np.ndarray,
    onsets: np.ndarray,
    durations: np.ndarray,
    bins: Any,
    n_clusters: int,
    cluster_subset: Sequence[int] | None = None,
) -> np.ndarray:
    """``np.histogram`` per cluster x trial (the textbook way); rows of ``cluster_subset`` only (others zero)."""
    edges = trial_edges(onsets, durations, bins)
    out = np.zeros((n_clusters, onsets.size, bins.n_bins), dtype=np.uint8)
    order = np.argsort(clusters, kind="stable")
    starts = np.searchsorted(clusters[order], np.arange(n_clusters + 1))
    todo = range(n_clusters) if cluster_subset is None else cluster_subset
    for k in todo:
        t = np.sort(times[order[starts[k] : starts[k + 1]]])
        for i in range(onsets.size):
            e = edges[i]
            # np.histogram's last bin is closed; the cube's windows are [start, stop): cut at stop first
            lo, hi = np.searchsorted(t, e[0], "left"), np.searchsorted(t, e[-1], "left")
            out[k, i] = _fits(np.histogram(t[lo:hi], bins=e)[0])
    return out


def _fits(counts: np.ndarray) -> np.ndarray:
    """Counts that fit the uint8 the peers fill (the largest count is 8 at 10 ms on these sessions)."""
    if counts.size and counts.max() > 255:
        raise OverflowError("a count exceeds 255: widen the peers' output dtype")
    return counts


def counts_numpy(
    times: np.ndarray,
    clusters: np.ndarray,
    onsets: np.ndarray,
    durations: np.ndarray,
    bins: Any,
    n_clusters: int,
    trial_chunk: int = 64,
) -> np.ndarray:
    """Plain numpy, vectorised: spike-in-window incidences by ``searchsorted``, bin by arithmetic then exact
    edge fix-up, counts by ``bincount``, trial chunk by trial chunk (bounded scratch)."""
    order = np.argsort(times, kind="stable")
    t, c = times[order], clusters[order].astype(np.int64)
    edges = trial_edges(onsets, durations, bins)
    n_bins, n_trials = bins.n_bins, onsets.size
    out = np.empty((n_clusters, n_trials, n_bins), dtype=np.uint8)
    lo_all = np.searchsorted(t, edges[:, 0], "left")
    hi_all = np.searchsorted(t, edges[:, -1], "left")
    inv = 1.0 / bins.bin_width_s
    for t0 in range(0, n_trials, trial_chunk):
        t1 = min(t0 + trial_chunk, n_trials)
        lo, hi = lo_all[t0:t1], hi_all[t0:t1]
        n = hi - lo
        trial = np.repeat(np.arange(t1 - t0), n)
        spike = np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n) + np.repeat(lo, n)
        ts = t[spike]
        e = edges[t0:t1]
        j = np.clip(np.floor((ts - e[trial, 0]) * inv).astype(np.int64), 0, n_bins - 1)
        for _ in range(2):  # the arithmetic guess is off by at most one bin: fix with the exact edges
            j -= (j > 0) & (ts < e[trial, j])
            j += (j < n_bins - 1) & (ts >= e[trial, j + 1])
        flat = (c[spike] * (t1 - t0) + trial) * n_bins + j
        out[:, t0:t1] = _fits(np.bincount(flat, minlength=n_clusters * (t1 - t0) * n_bins)).reshape(
            n_clusters, t1 - t0, n_bins
        )
    return out


def pynapple_available() -> str | None:
    """None when pynapple imports, else the reason it does not (the ``bench`` extra is optional)."""
    try:
        import pynapple  # noqa: F401
    except Exception as e:  # ImportError, or a broken install
        return f"pynapple not importable ({type(e).__name__}: {e}); install the 'bench' extra"
    return None


def counts_pynapple(
    times: np.ndarray,
    clusters: np.ndarray,
    onsets: np.ndarray,
    durations: np.ndarray,
    bins: Any,
    n_clusters: int,
    n_subsets: int | None = None,
    max_tensor_bytes: float = 1.5e9,
) -> tuple[np.ndarray, dict[str, Any]]:
    """pynapple ``build_tensor`` over trial windows ``[onset + start, onset + stop)``.

    pynapple's interval sets cannot overlap, so trials are split into
    ``n_subsets`` interleaved subsets (trial i in subset i mod n; trials must
    be in onset order) whose windows do not overlap, and into more (a multiple)
    when one subset's float64 tensor would exceed ``max_tensor_bytes`` (it
    makes 2-3 of those at once); each subset's tensor (NaN padded) is turned into
    counts. Returns the counts and what pynapple did (subsets, extra bins).
    Pynapple bins from each interval's start by a running sum of the bin width
    and knows nothing of the pulse's end edge, so the cube's exactness rules
    are not its own: differences are counted by the caller, not hidden here.
    """
    import pynapple as nap

    start, stop = bins.window_s
    width = stop - start
    if n_subsets is None:  # the fewest interleaved subsets whose windows do not overlap
        sorted_onsets = np.sort(onsets)
        n_subsets = 1
        while n_subsets < onsets.size and np.min(sorted_onsets[n_subsets:] - sorted_onsets[:-n_subsets]) <= width:
            n_subsets += 1
        n_subsets *= max(
            1, int(np.ceil(n_clusters * onsets.size * (bins.n_bins + 1) * 8 / n_subsets / max_tensor_bytes))
        )
    group = nap.TsGroup(
        {k: nap.Ts(t=times[clusters == k]) for k in range(n_clusters)},
        time_support=nap.IntervalSet(
            start=min(times.min(initial=0.0), onsets.min() + start) - 1.0,
            end=max(times.max(initial=0.0), onsets.max() + stop) + 1.0,
        ),
    )
    out = np.zeros((n_clusters, onsets.size, bins.n_bins), dtype=np.uint8)
    info = {"subsets": n_subsets, "nan_in_window": 0, "extra_bins_nonzero": 0}
    for s in range(n_subsets):
        idx = np.arange(s, onsets.size, n_subsets)
        ep = nap.IntervalSet(start=onsets[idx] + start, end=onsets[idx] + stop)
        tensor = nap.build_tensor(group, ep, bin_size=bins.bin_width_s)
        core = tensor[:, :, : bins.n_bins]
        info["nan_in_window"] += int(np.isnan(core).sum())
        extra = tensor[:, :, bins.n_bins :]
        info["extra_bins_nonzero"] += int(np.nansum(extra > 0))
        out[:, idx, : core.shape[2]] = _fits(np.nan_to_num(core, nan=0)).astype(np.uint8)
        del tensor, core, extra
    return out, info


def compare_counts(ours: np.ndarray, theirs: np.ndarray, clusters: Sequence[int] | None = None) -> dict[str, Any]:
    """How ``theirs`` differs from the cube: elements that differ, spikes moved, totals, the first difference.

    Compared cluster by cluster in int16, so memory stays small next to the cubes themselves.
    """
    rows = range(ours.shape[0]) if clusters is None else list(clusters)
    differing = moved = total_ours = total_theirs = 0
    first, bins_seen = None, set()
    for k in rows:
        a, b = ours[k].astype(np.int16), theirs[k].astype(np.int16)
        total_ours += int(a.sum(dtype=np.int64))
        total_theirs += int(b.sum(dtype=np.int64))
        diff = b - a
        bad = np.flatnonzero(diff)
        if bad.size:
            differing += int(bad.size)
            moved += int(np.abs(diff).sum(dtype=np.int64))
            i, j = np.unravel_index(bad, a.shape)
            bins_seen.update(np.unique(j)[:10].tolist())
            if first is None:
                first = {
                    "cluster_row": int(k),
                    "trial": int(i[0]),
                    "bin": int(j[0]),
                    "ours": int(a[i[0], j[0]]),
                    "theirs": int(b[i[0], j[0]]),
                }
    out = {
        "identical": differing == 0,
        "elements_differing": differing,
        "spike_total_ours": total_ours,
        "spike_total_theirs": total_theirs,
    }
    if differing:
        out["spikes_moved"] = (moved + abs(total_theirs - total_ours)) // 2
        out["first_difference"] = first
        out["bins_of_differences"] = sorted(bins_seen)[:10]
    return out


# --------------------------------------------------------------------------
# Lazy slicing: bytes read from a store
# --------------------------------------------------------------------------
def counting_store(path: Path) -> Any:
    """A read-only zarr store over ``path`` that counts the bytes and keys it hands out."""
    from zarr.storage import LocalStore, WrapperStore

    class CountingStore(WrapperStore):
        def __init__(self, store: Any) -> None:
            super().__init__(store)
            self.bytes_read = 0
            self.keys_read: list[str] = []

        def _count(self, key: str, buf: Any) -> None:
            if buf is not None:
                self.bytes_read += len(buf)
                self.keys_read.append(key)

        async def get(self, key: str, prototype: Any, byte_range: Any = None) -> Any:
            buf = await self._store.get(key, prototype, byte_range)
            self._count(key, buf)
            return buf

        async def get_partial_values(self, prototype: Any, key_ranges: Any) -> list[Any]:
            key_ranges = list(key_ranges)
            bufs = await self._store.get_partial_values(prototype, key_ranges)
            for (key, _), buf in zip(key_ranges, bufs, strict=True):
                self._count(key, buf)
            return bufs

    return CountingStore(LocalStore(str(path), read_only=True))


def intersected_chunks(path: Path, clusters: np.ndarray, trials: np.ndarray) -> tuple[int, int]:
    """How many ``spike_counts`` chunks a (clusters x trials x all bins) selection touches, and their bytes on disk."""
    import zarr

    array = zarr.open_array(str(path), path="spike_counts", mode="r")
    cc, tc, _ = array.chunks
    n, size = 0, 0
    for ci in np.unique(np.asarray(clusters) // cc):
        for ti in np.unique(np.asarray(trials) // tc):
            chunk = Path(path) / "spike_counts" / "c" / str(ci) / str(ti) / "0"
            n += 1
            size += chunk.stat().st_size if chunk.exists() else 0
    return n, size


def selections(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The two selections of the slicing benchmark: 20 clusters x 60 trials; one emitter at one power x all clusters."""
    import zarr

    from opto_cube import schema

    group = zarr.open_group(str(path), mode="r")
    n_clusters, n_trials, _ = group["spike_counts"].shape
    emitter, power = group[schema.EMITTER][...], group[schema.POWER][...]
    level, _ = schema.power_levels(power)
    e = np.unique(emitter)[len(np.unique(emitter)) // 2]
    p = np.unique(level[emitter == e])[-1]
    c0, t0 = min(100, max(0, n_clusters - 20)), min(1000, max(0, n_trials - 60))
    return {
        "20 clusters x 60 trials": (np.arange(c0, min(c0 + 20, n_clusters)), np.arange(t0, min(t0 + 60, n_trials))),
        "one emitter at one power, all clusters": (
            np.arange(n_clusters),
            np.flatnonzero((emitter == e) & (level == p)),
        ),
    }


def measure_selection(path: Path, clusters: np.ndarray, trials: np.ndarray) -> dict[str, Any]:
    """Open the store lazily (xarray.open_zarr over a counting store) and load one selection: time and bytes."""
    import xarray as xr

    counting = counting_store(path)
    started = time.perf_counter()
    ds = xr.open_zarr(counting, consolidated=True, chunks={})
    open_s = time.perf_counter() - started
    opened_bytes = counting.bytes_read
    started = time.perf_counter()
    values = ds["spike_counts"].isel(cluster=clusters, trial=trials).values
    select_s = time.perf_counter() - started
    chunk_keys = [k for k in counting.keys_read if k.startswith("spike_counts/c/")]
    n_chunks, chunk_bytes = intersected_chunks(path, clusters, trials)
    return {
        "open_s": open_s,
        "select_s": select_s,
        "total_s": open_s + select_s,
        "open_bytes": opened_bytes,
        "select_bytes": counting.bytes_read - opened_bytes,
        "bytes_read": counting.bytes_read,
        "chunks_intersected": n_chunks,
        "chunks_read": len(chunk_keys),
        "intersected_bytes": chunk_bytes,
        "x_intersected": counting.bytes_read / chunk_bytes if chunk_bytes else float("nan"),
        "spikes": int(values.sum(dtype=np.int64)),
        "shape": list(values.shape),
    }


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        _child(sys.argv[2], sys.argv[3])
    else:
        raise SystemExit("usage: common.py --child module:function JSON (used by the benchmarks)")
