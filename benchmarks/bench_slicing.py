"""Lazy slicing of a converted store, wall time and bytes read.

    python benchmarks/bench_slicing.py --size realistic

Each selection runs in a fresh process: ``xarray.open_zarr`` over a zarr
store wrapper that counts the bytes it hands out (metadata, coordinates,
chunks), then ``.isel(...)`` and ``.values``. The bytes are compared with the
on-disk bytes of the ``spike_counts`` chunks the selection intersects.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import common
import numpy as np


def child(store: str, name: str) -> dict[str, Any]:
    import dask.array  # noqa: F401  imports are not part of a slice's time
    import xarray  # noqa: F401

    clusters, trials = common.selections(Path(store))[name]
    return {"selection": name, **common.measure_selection(Path(store), clusters, trials)}


def run(
    size: str = "realistic",
    bin_ms: tuple[float, ...] = (10.0, 1.0),
    repeats: int = 3,
    record: bool = True,
    fresh: bool = True,
) -> list[dict[str, Any]]:
    root = common.dataset(size)
    rows = []
    for width in bin_ms:
        store = common.store_paths(common.stores(root, width))[0]
        names = list(common.selections(store))

        def call(name: str, store: Path = store) -> dict[str, Any]:
            if fresh:
                return common.fresh("bench_slicing:child", store=str(store), name=name)
            return child(str(store), name)

        runs = common.interleave({n: (lambda n=n: call(n)) for n in names}, repeats)
        import zarr

        chunks = zarr.open_array(str(store), path="spike_counts", mode="r").chunks
        for n in names:
            row = {
                "bin_ms": width,
                "chunks": "x".join(map(str, chunks)),
                **common.summarise(runs[n], ("open_s", "select_s", "total_s", "process_s")),
            }
            row["select_mb"], row["intersected_mb"] = row["select_bytes"] / 1e6, row["intersected_bytes"] / 1e6
            row["bytes_read_mb"] = row["bytes_read"] / 1e6
            row["goal"] = "bytes read <= 2x intersected chunks"
            row["met"] = bool(row["x_intersected"] <= 2)
            rows.append(row)
    common.table(
        rows,
        [
            "bin_ms",
            "selection",
            "chunks",
            "shape",
            "open_s",
            "select_s",
            "chunks_intersected",
            "chunks_read",
            "intersected_mb",
            "select_mb",
            "bytes_read_mb",
            "x_intersected",
            "goal",
            "met",
        ],
        title=f"Lazy slicing, {size} session",
    )
    if record:
        common.record("slicing", rows, {"size": size, "repeats": repeats})
    return rows


def main() -> None:
    common.main(__doc__, run, bin_ms=[10.0, 1.0])


if __name__ == "__main__":
    np.set_printoptions(linewidth=120)
    main()
