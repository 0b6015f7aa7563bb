"""The ``opto-cube info`` job: a short human description of a store, or of each store of a folder.

:func:`describe` says what one opened cube holds (session, cube, bins, clusters, trials, geometry,
provenance, light-artifact units); :func:`describe_stores` finds the stores of a path, local or on
object storage (``s3://...``), and describes each, an incomplete one on object storage in one line.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from opto_cube import schema
from opto_cube.analysis.latency import light_artifacts
from opto_cube.errors import OptoCubeError

__all__ = ["describe", "describe_stores"]


def describe(ds: Any) -> str:
    """A short, human summary of an opened cube."""
    a = ds.attrs
    counts = ds[schema.SPIKE_COUNTS]
    wt = ds[schema.WAVEFORM_TYPE].values
    qc = ds[schema.QC_PASS].values
    emitters = np.unique(ds[schema.EMITTER].values)
    powers = schema.power_levels(ds[schema.POWER].values)[1]
    durations = np.unique(ds[schema.DURATION].values)
    lines = [
        f"session   {a.get(schema.ATTR_SESSION_ID)}  (subject {a.get('subject', '?')}, {a.get('date', '?')})",
        f"cube      {schema.SPIKE_COUNTS} {dict(counts.sizes)} {counts.dtype},"
        f" chunks {tuple(c[0] for c in counts.chunks)}",
        f"bins      {a.get(schema.ATTR_BIN_WIDTH) * 1000:g} ms over {a.get(schema.ATTR_WINDOW)} s from onset",
        f"clusters  {qc.size} ({int(qc.sum())} pass QC; {int((wt == 'RS').sum())} RS, {int((wt == 'FS').sum())} FS,"
        f" {int((wt == '').sum())} unknown)",
        f"trials    {counts.sizes[schema.TRIAL]}: emitters {emitters.min()}..{emitters.max()} ({emitters.size}),"
        f" {powers.size} powers {powers.min():.3g}..{powers.max():.3g} mW, durations {[float(d) for d in durations]} s",
        f"geometry  surface at {a.get(schema.ATTR_SURFACE)} um on the probe axis,"
        f" tip offset {a.get(schema.ATTR_TIP_OFFSET)} um",
        f"built by  opto_cube {a.get(schema.ATTR_VERSION)} from {len(a.get(schema.ATTR_SHA256, {}))} checksummed files",
        _artifact_line(ds),
    ]
    return "\n".join(lines)


def _artifact_line(ds: Any) -> str:
    """The ``opto-cube info`` line counting light-artifact units (from the stored timing arrays)."""
    flags = light_artifacts(ds)
    if flags is None:
        return "artifacts unknown (needs bins of at most 2 ms and a store with condition_counts)"
    return f"artifacts {int(flags.sum())} light-artifact units (locked to light onset/offset at every emitter)"


def describe_stores(path: str) -> Iterator[str]:
    """The text ``opto-cube info PATH`` prints, block by block as each store is opened: one store's
    description, or each store's of a folder followed by an empty block (control characters left to the
    caller to escape).

    Raises
    ------
    OptoCubeError
        No such store or folder, a folder holding no stores, or (object storage) an incomplete store.
    """
    from opto_cube.store.write import STORE_SUFFIX, is_url, list_stores, open_cube

    if is_url(path):
        yield from _describe_url(path.rstrip("/"))
        return
    folder = Path(path)
    if not folder.exists():
        raise OptoCubeError(f"{folder}: no such store or folder")
    if folder.name.endswith(STORE_SUFFIX) or (folder / "zarr.json").exists():
        yield describe(open_cube(folder))
        return
    stores = [Path(p) for p in list_stores(folder)]
    if not stores:
        raise OptoCubeError(f"{folder}: holds no {STORE_SUFFIX} stores")
    for p in stores:
        yield describe(open_cube(p))
        yield ""


def _describe_url(url: str) -> Iterator[str]:
    """:func:`describe_stores` of a store or a folder of stores on object storage (AWS_* variables for access)."""
    import fsspec

    from opto_cube.store.write import STORE_SUFFIX, is_complete, open_cube

    fs, root = fsspec.core.url_to_fs(url)
    if url.endswith(STORE_SUFFIX) or fs.exists(f"{root}/zarr.json"):
        if not is_complete(url):
            raise OptoCubeError(f"{url}: no complete store there (no completion mark: unfinished or interrupted)")
        yield describe(open_cube(url))
        return
    fs.invalidate_cache(root)  # list what is there now, not what this process saw before
    names = [n.rstrip("/") for n in fs.ls(root, detail=False)] if fs.isdir(root) else []
    base = [(n, n.rsplit("/", 1)[-1]) for n in names]
    stores = sorted(n for n, b in base if b.endswith(STORE_SUFFIX) and not b.startswith("."))
    if not stores:
        raise OptoCubeError(f"{url}: no such store, or a folder holding no {STORE_SUFFIX} stores")
    for name in stores:
        store_url = fs.unstrip_protocol(name)
        if is_complete(store_url):
            yield describe(open_cube(store_url))
        else:
            yield f"{store_url}: incomplete (no completion mark); the next convert rebuilds it"
        yield ""
