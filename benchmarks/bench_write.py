"""How ``store.write_cube`` hands the cube to zarr: the write settings compared.

    python benchmarks/bench_write.py --size realistic

Each variant in a fresh process writes the same cube, held in memory as the
converter yields it (contiguous blocks of one trial chunk x every cluster),
into a store with the store's codec and chunks. ``extra_rss_mb``: peak RSS
above the RSS with the cube loaded (the fresh memory the write touches).
"""

from __future__ import annotations

import resource
import shutil
import time
from pathlib import Path
from typing import Any

import common

VARIANTS = {
    # name: (one call per chunk?, write_empty_chunks, threads, zarr.config)
    "block per call (before)": (False, False, 1, {}),
    "block per call, write_empty_chunks": (False, True, 1, {}),
    "block per call, write_empty_chunks, zarr 2 threads / concurrency 2": (
        False,
        True,
        1,
        {"threading.max_workers": 2, "async.concurrency": 2},
    ),
    "chunk per call, write_empty_chunks, 1 thread": (True, True, 1, {}),
    "chunk per call, write_empty_chunks, 2 threads (now)": (True, True, 2, {}),
    "chunk per call, write_empty_chunks, 4 threads": (True, True, 4, {}),
}


def child(store: str, out: str, variant: str) -> dict[str, Any]:
    import concurrent.futures

    import psutil
    import zarr
    from bench_convert import cube_in_memory

    from opto_cube.store.write import COMPRESSORS

    per_chunk, empty, threads, config = VARIANTS[variant]
    ds, blocks = cube_in_memory(Path(store))
    counts = ds["spike_counts"]
    chunks = tuple(counts.encoding["chunks"])
    loaded = psutil.Process().memory_info().rss / 2**20
    with zarr.config.set(config):
        started = time.perf_counter()
        array = zarr.create_array(
            out,
            shape=counts.shape,
            chunks=chunks,
            dtype=counts.dtype,
            compressors=COMPRESSORS,
            fill_value=0,
            zarr_format=3,
            config={"write_empty_chunks": empty},
        )
        step = chunks[0]
        with concurrent.futures.ThreadPoolExecutor(threads) as pool:
            for trials, block in blocks:
                if per_chunk:
                    parts = [(slice(c, c + step), trials, slice(None)) for c in range(0, block.shape[0], step)]
                    list(pool.map(array.__setitem__, parts, [block[p[0]] for p in parts]))
                else:
                    array[:, trials, :] = block
        write_s = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"variant": variant, "write_s": write_s, "extra_rss_mb": peak - loaded}


def run(
    size: str = "realistic",
    bin_ms: tuple[float, ...] = (1.0,),
    repeats: int = 3,
    record: bool = True,
    variants: tuple[str, ...] = tuple(VARIANTS),
) -> list[dict[str, Any]]:
    root = common.dataset(size)
    rows = []
    for width in bin_ms:
        source = common.store_paths(common.stores(root, width))[0]
        scratch = common.WORK / f"write_{size}_{width:g}ms"

        def once(v: str, scratch: Path = scratch, source: Path = source) -> dict[str, Any]:
            shutil.rmtree(scratch, ignore_errors=True)
            scratch.mkdir(parents=True)
            result = common.fresh("bench_write:child", store=str(source), out=str(scratch / "w.zarr"), variant=v)
            shutil.rmtree(scratch, ignore_errors=True)
            return result

        runs = common.interleave({v: (lambda v=v: once(v)) for v in variants}, repeats)
        before = common.median(r["write_s"] for r in runs[variants[0]])
        for r in runs.values():
            s = common.summarise(r, ("write_s", "extra_rss_mb"))
            rows.append({"bin_ms": width, **s, "x_faster_than_before": before / s["write_s"]})
    common.table(
        rows,
        ["bin_ms", "variant", "write_s", "extra_rss_mb", "x_faster_than_before"],
        title=f"Writing the cube: zarr write settings, {size} session",
    )
    if record:
        common.record("write", rows, {"size": size, "repeats": repeats})
    return rows


def main() -> None:
    common.main(__doc__, run, bin_ms=[1.0])


if __name__ == "__main__":
    main()
