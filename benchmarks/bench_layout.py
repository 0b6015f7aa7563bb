"""Codec and chunk shape of ``spike_counts``: size, write and read speed of the candidates.

    python benchmarks/bench_layout.py --size realistic

Each candidate in a fresh process: the converted cube is held in memory
(untimed), written with the candidate's codec and chunks (zarr, one call per
chunk on 2 threads, as ``store.write_cube`` does), then read back four ways:
every chunk reduced over time by dask (what responses do), the two lazy
selections of bench_slicing.py (time and bytes), and the whole array by plain zarr.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import common

CODECS = (
    "zstd 0 (zarr default)",
    "zstd 1",
    "zstd 3",
    "blosc lz4 shuffle",
    "blosc lz4 bitshuffle",
    "blosc zstd 1 bitshuffle",
    "none",
)
CHUNKS = ((64, 256), (32, 128), (64, 64), (128, 512), (64, 1024), (16, 256), (300, 64))
BASE_CODEC, BASE_CHUNKS = "zstd 1", (64, 256)


def compressors(name: str) -> Any:
    import zarr.codecs as zc

    return {
        "zstd 0 (zarr default)": (zc.ZstdCodec(level=0),),
        "zstd 1": (zc.ZstdCodec(level=1),),
        "zstd 3": (zc.ZstdCodec(level=3),),
        "blosc lz4 shuffle": (zc.BloscCodec(cname="lz4", clevel=5, shuffle="shuffle"),),
        "blosc lz4 bitshuffle": (zc.BloscCodec(cname="lz4", clevel=5, shuffle="bitshuffle"),),
        "blosc zstd 1 bitshuffle": (zc.BloscCodec(cname="zstd", clevel=1, shuffle="bitshuffle"),),
        "none": None,
    }[name]


def child(store: str, out: str, codec: str, chunks: list[int], full_read: bool = True) -> dict[str, Any]:
    import dask
    import dask.array
    import numpy as np
    import xarray as xr
    import zarr
    from bench_convert import cube_in_memory, store_bytes, write_copy

    ds, blocks = cube_in_memory(Path(store), trial_chunk=chunks[1])
    shape = ds["spike_counts"].shape
    full = (min(chunks[0], shape[0]), min(chunks[1], shape[1]), shape[2])
    started = time.perf_counter()
    write_copy(ds, blocks, Path(out), "zarr chunk by chunk", compressors(codec), chunks=full)
    result: dict[str, Any] = {
        "write_s": time.perf_counter() - started,
        "store_mb": store_bytes(Path(out)) / 1e6,
        "n_chunks": sum(f.is_file() for f in (Path(out) / "spike_counts" / "c").rglob("*")),
    }
    del ds, blocks
    with dask.config.set(scheduler="threads"):
        _ = xr.DataArray(dask.array.zeros((4, 4), chunks=2)).sum().values  # warm up dask's pool
        started = time.perf_counter()
        counts = xr.open_zarr(out, chunks={})["spike_counts"]
        per_trial = counts.sum("time", dtype=np.int64).values
        result["reduce_s"] = time.perf_counter() - started
    result["spikes"] = int(per_trial.sum())
    for name, (clusters, trials) in common.selections(Path(out)).items():
        sel = common.measure_selection(Path(out), clusters, trials)
        key = "slice" if name.startswith("20") else "condition"
        result[f"{key}_s"], result[f"{key}_mb"] = sel["total_s"], sel["bytes_read"] / 1e6
    if full_read:
        started = time.perf_counter()
        zarr.open_array(out, path="spike_counts", mode="r")[...]
        result["full_read_s"] = time.perf_counter() - started
    return result


def candidates(
    codecs: tuple[str, ...] = CODECS, chunks: tuple[tuple[int, int], ...] = CHUNKS
) -> list[tuple[str, tuple[int, int]]]:
    out = [(c, BASE_CHUNKS) for c in codecs]
    out += [(BASE_CODEC, ch) for ch in chunks if ch != BASE_CHUNKS]
    return out


def run(
    size: str = "realistic",
    bin_ms: tuple[float, ...] = (1.0,),
    repeats: int = 3,
    record: bool = True,
    codecs: tuple[str, ...] = CODECS,
    chunks: tuple[tuple[int, int], ...] = CHUNKS,
    full_read: bool = True,
) -> list[dict[str, Any]]:
    root = common.dataset(size)
    rows = []
    for width in bin_ms:
        source = common.store_paths(common.stores(root, width))[0]
        scratch = common.WORK / f"layout_{size}_{width:g}ms"

        def once(codec: str, ch: tuple[int, int], scratch: Path = scratch, source: Path = source) -> dict[str, Any]:
            shutil.rmtree(scratch, ignore_errors=True)
            scratch.mkdir(parents=True)
            result = common.fresh(
                "bench_layout:child",
                store=str(source),
                out=str(scratch / "c.zarr"),
                codec=codec,
                chunks=list(ch),
                full_read=full_read,
            )
            shutil.rmtree(scratch, ignore_errors=True)
            return result

        todo = candidates(codecs, chunks)
        runs = common.interleave({f"{c} {ch}": (lambda c=c, ch=ch: once(c, ch)) for c, ch in todo}, repeats)
        for (codec, ch), r in zip(todo, runs.values(), strict=True):
            rows.append(
                {
                    "bin_ms": width,
                    "codec": codec,
                    "chunks": f"{ch[0]}x{ch[1]}x all bins",
                    **common.summarise(r, ("write_s", "reduce_s", "slice_s", "condition_s", "full_read_s")),
                }
            )
    common.table(
        rows,
        [
            "bin_ms",
            "codec",
            "chunks",
            "store_mb",
            "n_chunks",
            "write_s",
            "reduce_s",
            "slice_s",
            "slice_mb",
            "condition_s",
            "condition_mb",
            "full_read_s",
        ],
        title=f"spike_counts codec and chunks, {size} session",
    )
    if record:
        common.record("layout", rows, {"size": size, "repeats": repeats})
    return rows


def main() -> None:
    common.main(__doc__, run, bin_ms=[1.0])


if __name__ == "__main__":
    main()
