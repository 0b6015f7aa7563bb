"""The whole `opto-cube convert` process vs the floor.

    python benchmarks/bench_convert.py --size realistic

The floor is what no converter can avoid: a fresh Python process that imports
numpy and zarr, loads the raw spike arrays and compresses and writes the very
same store (a copy of the converted store, every array held in memory before
the clock's part that counts: its loading is subtracted) with the same
chunks, by plain zarr, ``spike_counts`` chunk by chunk from views on 2
threads, with the store's codec or zarr's default codec (the faster is the
floor). ``--profile`` also writes a pyinstrument profile of one conversion to
benchmarks/results/.
"""

from __future__ import annotations

import shutil
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import common

FLOOR_WRITERS = ("zarr chunk by chunk",)
FLOOR_CODECS = ("store codec", "zarr default codec")
GOAL_X_FLOOR = 1.2  # issue 9: convert at 1 ms within 1.2x the floor


def _codec(which: str) -> Any:
    from opto_cube.store.write import COMPRESSORS

    return COMPRESSORS if which == "store codec" else "auto"


def write_copy(
    ds: Any,
    blocks: list[tuple[slice, Any]],
    out: Path,
    writer: str,
    codec: Any,
    threads: int = 2,
    chunks: tuple[int, ...] | None = None,
) -> None:
    """Write ``ds`` (in memory; ``blocks`` its spike_counts as contiguous trial blocks) as a cube store at ``out``.

    ``codec``: "store codec", "zarr default codec", or zarr compressors as such.
    """
    import concurrent.futures

    import zarr

    counts = ds["spike_counts"]
    chunks = tuple(chunks or counts.encoding["chunks"])
    codec = _codec(codec) if isinstance(codec, str) else codec
    encoding = {"spike_counts": {"chunks": chunks, "compressors": codec}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if writer == "xarray.to_zarr":
            ds = ds.copy()
            ds["spike_counts"].attrs.pop("coordinates", None)  # xarray writes it itself
            ds.to_zarr(out, mode="w-", zarr_format=3, consolidated=True, encoding=encoding)
            return
        coords_only = ds.drop_vars("spike_counts")
        coords_only.to_zarr(out, mode="w-", zarr_format=3, consolidated=False)
        group = zarr.open_group(out, mode="r+")
        array = group.create_array(
            "spike_counts",
            shape=counts.shape,
            chunks=chunks,
            dtype=counts.dtype,
            compressors=codec,
            fill_value=0,
            dimension_names=counts.dims,
            attributes=dict(counts.attrs),
            config={"write_empty_chunks": True},
        )
        step = chunks[0]
        with concurrent.futures.ThreadPoolExecutor(threads) as pool:
            for trials, block in blocks:  # one call per chunk: zarr compresses the caller's memory, no copy
                parts = [(slice(c0, c0 + step), trials, slice(None)) for c0 in range(0, block.shape[0], step)]
                list(pool.map(array.__setitem__, parts, [block[p[0]] for p in parts]))
        zarr.consolidate_metadata(out)


def floor_child(folder: str, store: str, out: str, writer: str, codec: str) -> dict[str, Any]:
    """The floor, in this fresh process: imports, raw arrays, then the write of a copy held in memory."""
    import numpy  # noqa: F401  the floor imports the stack it writes with: timed
    import zarr  # noqa: F401

    imported = common.process_started_s()
    started = time.perf_counter()
    raw = common.load_raw(Path(folder))
    load_s = time.perf_counter() - started
    started = time.perf_counter()
    arrays, blocks = store_in_memory(Path(store))  # untimed: the store held in memory
    untimed_s = time.perf_counter() - started
    started = time.perf_counter()
    write_store_copy(arrays, blocks, Path(out), codec)
    write_s = time.perf_counter() - started
    del raw
    return {"imports_s": imported, "load_s": load_s, "write_s": write_s, "untimed_s": untimed_s}


def store_in_memory(store: Path) -> tuple[dict[str, Any], list[tuple[slice, Any]]]:
    """Every array of a store in memory (values, metadata) by zarr alone, and spike_counts as trial blocks."""
    import numpy as np
    import zarr

    group = zarr.open_group(store, mode="r")
    arrays = {}
    for name, array in group.arrays():
        arrays[name] = {
            "values": array[...],
            "chunks": array.chunks,
            "fill_value": array.fill_value,
            "dimension_names": array.metadata.dimension_names,
            "attributes": dict(array.attrs),
        }
    values = arrays["spike_counts"].pop("values")
    step = arrays["spike_counts"]["chunks"][1]
    blocks = [
        (slice(t0, min(t0 + step, values.shape[1])), np.ascontiguousarray(values[:, t0 : t0 + step]))
        for t0 in range(0, values.shape[1], step)
    ]
    arrays["spike_counts"].update(shape=values.shape, dtype=values.dtype)
    return {"attrs": dict(group.attrs), "arrays": arrays}, blocks


def write_store_copy(
    store: dict[str, Any], blocks: list[tuple[slice, Any]], out: Path, codec: str, threads: int = 2
) -> None:
    """Write a store held in memory (:func:`store_in_memory`) by zarr alone: spike_counts chunk by chunk."""
    import concurrent.futures

    import zarr

    compressors = _codec(codec)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        group = zarr.open_group(out, mode="w-", zarr_format=3, attributes=store["attrs"])
        for name, spec in store["arrays"].items():
            values = spec.get("values")
            array = group.create_array(
                name,
                shape=values.shape if values is not None else spec["shape"],
                dtype=values.dtype if values is not None else spec["dtype"],
                chunks=spec["chunks"],
                compressors=compressors,
                fill_value=spec["fill_value"],
                dimension_names=spec["dimension_names"],
                attributes=spec["attributes"],
                config={"write_empty_chunks": True},
            )
            if values is not None:
                array[...] = values
                continue
            step = spec["chunks"][0]
            with concurrent.futures.ThreadPoolExecutor(threads) as pool:
                for trials, block in blocks:  # one call per chunk: zarr compresses the caller's memory, no copy
                    parts = [(slice(c0, c0 + step), trials, slice(None)) for c0 in range(0, block.shape[0], step)]
                    list(pool.map(array.__setitem__, parts, [block[p[0]] for p in parts]))
        zarr.consolidate_metadata(out)


def cube_in_memory(store: Path, trial_chunk: int | None = None) -> tuple[Any, list[tuple[slice, Any]]]:
    """A store's cube in memory, and its spike_counts as contiguous blocks of ``trial_chunk`` trials."""
    import numpy as np
    import xarray as xr
    import zarr

    ds = xr.open_zarr(store, chunks=None).load()
    ds["spike_counts"].attrs = dict(zarr.open_array(store, path="spike_counts", mode="r").attrs)  # "coordinates" too
    step = trial_chunk or ds["spike_counts"].encoding["chunks"][1]
    values = ds["spike_counts"].values
    blocks = [
        (slice(t0, min(t0 + step, values.shape[1])), np.ascontiguousarray(values[:, t0 : t0 + step]))
        for t0 in range(0, values.shape[1], step)
    ]
    for key in list(ds["spike_counts"].encoding):
        if key != "chunks":
            del ds["spike_counts"].encoding[key]
    for name in ds.variables:
        if name != "spike_counts":
            ds[name].encoding = {}
    return ds, blocks


def store_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def run(
    size: str = "realistic",
    bin_ms: tuple[float, ...] = (10.0, 1.0),
    repeats: int = 3,
    record: bool = True,
    profile: bool = False,
    work: Path | None = None,
    baseline: Path | None = None,
) -> list[dict[str, Any]]:
    work = Path(work or common.WORK)
    root = common.dataset(size, work=work)
    folder = common.sessions(root)[0]
    exe = str(Path(sys.executable).with_name("opto-cube"))
    rows = []
    for width in bin_ms:
        source = common.store_paths(common.stores(root, width, work=work))[0]
        scratch = work / f"convert_{size}_{width:g}ms"

        def convert(scratch: Path = scratch, width: float = width, source: Path | None = None) -> dict[str, Any]:
            shutil.rmtree(scratch, ignore_errors=True)
            # --baseline: the same command run from another source tree (e.g. `git archive` of the base commit)
            env = {"PYTHONPATH": str(source)} if source is not None else None
            result = common.run_measured(
                [exe, "convert", str(root), "--out", str(scratch), "--bin-ms", str(width), "--overwrite", "--quiet"],
                env=env,
            )
            result["store_mb"] = store_bytes(next(scratch.glob("*.zarr"))) / 1e6
            shutil.rmtree(scratch, ignore_errors=True)
            return result

        def floor(writer: str, codec: str, scratch: Path = scratch, source: Path = source) -> dict[str, Any]:
            out = scratch / "floor.zarr"
            shutil.rmtree(scratch, ignore_errors=True)
            scratch.mkdir(parents=True)
            result = common.fresh(
                "bench_convert:floor_child",
                folder=str(folder),
                store=str(source),
                out=str(out),
                writer=writer,
                codec=codec,
            )
            result["process_s"] -= result["untimed_s"]  # the copy's loading is not part of the floor
            result["store_mb"] = store_bytes(out) / 1e6
            shutil.rmtree(scratch, ignore_errors=True)
            return result

        methods = {"opto-cube convert": convert}
        if baseline is not None:
            methods["opto-cube convert (baseline)"] = lambda: convert(source=baseline)
        for writer in FLOOR_WRITERS:
            for codec in FLOOR_CODECS:
                methods[f"floor: {writer}, {codec}"] = lambda w=writer, c=codec: floor(w, c)
        runs = common.interleave(methods, repeats)
        summary = {
            m: common.summarise(r, ("process_s", "cpu_s", "peak_rss_mb", "imports_s", "load_s", "write_s"))
            for m, r in runs.items()
        }
        best = min((m for m in summary if m.startswith("floor")), key=lambda m: summary[m]["process_s"])
        floor_s = summary[best]["process_s"]
        for m, s in summary.items():
            row = {"bin_ms": width, "method": m, **s, "x_floor": s["process_s"] / floor_s, "is_floor": m == best}
            if m.startswith("opto-cube convert"):
                row["goal"] = f"<= {GOAL_X_FLOOR}x floor" if width == 1 else "(goal at 1 ms)"
                row["met"] = row["x_floor"] <= GOAL_X_FLOOR if width == 1 else None
            rows.append(row)
        if profile:
            profile_convert(root, width, scratch, exe)
    common.table(
        rows,
        [
            "bin_ms",
            "method",
            "process_s",
            "cpu_s",
            "imports_s",
            "load_s",
            "write_s",
            "peak_rss_mb",
            "store_mb",
            "x_floor",
            "goal",
            "met",
        ],
        title=f"Conversion vs the floor, {size} session",
    )
    if record:
        common.record("convert", rows, {"size": size, "repeats": repeats})
    return rows


def profile_convert(root: Path, bin_ms: float, scratch: Path, exe: str) -> Path:
    """A pyinstrument profile of one conversion (text, into benchmarks/results/)."""
    out = common.RESULTS / f"profile_convert_{bin_ms:g}ms.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(scratch, ignore_errors=True)
    pyinstrument = str(Path(sys.executable).with_name("pyinstrument"))
    common.run_measured(
        [
            pyinstrument,
            "-r",
            "text",
            "-o",
            str(out),
            exe,
            "convert",
            str(root),
            "--out",
            str(scratch),
            "--bin-ms",
            str(bin_ms),
            "--overwrite",
            "--quiet",
        ]
    )
    shutil.rmtree(scratch, ignore_errors=True)
    print(f"profile: {out}")
    return out


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--bin-ms", type=float, nargs="+", default=[10.0, 1.0])
    p.add_argument("--profile", action="store_true", help="also profile one conversion with pyinstrument")
    p.add_argument("--baseline", type=Path, help="a source tree (holding opto_cube/) to convert with as well")
    a = p.parse_args()
    run(a.size, tuple(a.bin_ms), a.repeats, record=not a.no_record, profile=a.profile, baseline=a.baseline)


if __name__ == "__main__":
    main()
