"""A folder of cubes as one object: every ``*.zarr`` store of a folder, opened lazily.

:func:`open_catalog` opens each store with :func:`opto_cube.store.open_cube`
(``spike_counts`` stays on disk until computed) and returns a
:class:`Catalog`, a read-only mapping ``session_id -> xarray.Dataset`` that
prints a one-row-per-session summary and converts to an
:class:`xarray.DataTree`.

Examples
--------
>>> import tempfile, warnings
>>> from opto_cube import synth, convert
>>> root = tempfile.mkdtemp()
>>> with warnings.catch_warnings():
...     warnings.simplefilter("ignore")
...     for folder in synth.make_dataset(root, n_sessions=2, size="tiny"):
...         _ = convert.convert_session(folder, root + "/stores", bin_ms=10)
>>> catalog = open_catalog(root + "/stores")
>>> len(catalog), catalog.summary()["clusters"].tolist()
(2, [8, 8])
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from . import schema
from .errors import StoreError, warn
from .store import STORE_SUFFIX, is_complete, list_stores, open_cube

__all__ = ["Catalog", "open_catalog"]

SUMMARY_COLUMNS = ("session", "subject", "date", "clusters", "qc_pass", "trials", "emitters", "powers")


class Catalog(Mapping[str, xr.Dataset]):
    """Opened cubes by session id (read-only mapping, sorted by session id).

    Parameters
    ----------
    cubes
        ``session_id -> Dataset``.
    source
        Where the cubes came from (shown in the repr).

    Examples
    --------
    >>> cube = xr.Dataset(attrs={schema.ATTR_SESSION_ID: "s1"})
    >>> catalog = Catalog({"s1": cube}, source="memory")
    >>> list(catalog), catalog.sessions, "s1" in catalog
    (['s1'], ('s1',), True)
    """

    def __init__(self, cubes: Mapping[str, xr.Dataset], source: str = "") -> None:
        self._cubes = dict(sorted(cubes.items()))
        self.source = source

    def __getitem__(self, session_id: str) -> xr.Dataset:
        try:
            return self._cubes[session_id]
        except KeyError:
            raise KeyError(
                f"no session {session_id!r} in the catalog of {self.source or 'cubes'}; "
                f"sessions: {', '.join(self._cubes) or 'none'}"
            ) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._cubes)

    def __len__(self) -> int:
        return len(self._cubes)

    @property
    def sessions(self) -> tuple[str, ...]:
        """The session ids, sorted."""
        return tuple(self._cubes)

    def summary(self) -> pd.DataFrame:
        """One row per session: ``session, subject, date, clusters, qc_pass, trials, emitters, powers``.

        ``clusters`` and ``trials`` are counts, ``qc_pass`` the number of
        QC-passing clusters, ``emitters`` the number of emitters used and
        ``powers`` the power levels (:func:`opto_cube.schema.power_levels`),
        mW, 4 significant digits. Only coordinates are read.
        """
        rows = [_summary_row(sid, ds) for sid, ds in self._cubes.items()]
        return pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))

    def to_datatree(self) -> xr.DataTree:
        """An :class:`xarray.DataTree` with one child node per session, named by session id."""
        return xr.DataTree.from_dict({f"/{sid}": ds for sid, ds in self._cubes.items()})

    def __repr__(self) -> str:
        head = f"<opto_cube.Catalog: {len(self)} session{'s' * (len(self) != 1)}"
        head += f" from {self.source}>" if self.source else ">"
        return head if not self._cubes else f"{head}\n{self.summary().to_string(index=False)}"

    def _repr_html_(self) -> str:
        head = f"<p><b>opto_cube.Catalog</b>: {len(self)} session{'s' * (len(self) != 1)}"
        head += f" from <code>{self.source}</code></p>" if self.source else "</p>"
        return head + self.summary().to_html(index=False)


def _summary_row(session_id: str, ds: xr.Dataset) -> dict[str, Any]:
    def values(name: str) -> np.ndarray:
        return np.asarray(ds[name].values) if name in ds.variables else np.zeros(0)

    levels = schema.power_levels(values(schema.POWER))[1]
    return {
        "session": session_id,
        "subject": ds.attrs.get("subject", ""),
        "date": ds.attrs.get("date", ""),
        "clusters": int(ds.sizes.get(schema.CLUSTER, 0)),
        "qc_pass": int(values(schema.QC_PASS).astype(bool).sum()),
        "trials": int(ds.sizes.get(schema.TRIAL, 0)),
        "emitters": int(np.unique(values(schema.EMITTER)).size),
        "powers": tuple(float(f"{p:.4g}") for p in levels),
    }


def open_catalog(folder_or_url: str | os.PathLike, **storage_options: Any) -> Catalog:
    """Open every ``*.zarr`` store of a folder (local path or fsspec URL) lazily.

    Parameters
    ----------
    folder_or_url
        A folder of stores written by ``opto-cube convert``, or its URL
        (``s3://bucket/stores``); entries whose name starts with ``.`` (hidden,
        or a conversion still being written) are skipped, and so are stores
        without the completion mark of a finished conversion (with an
        :class:`~opto_cube.errors.OptoCubeWarning`).
    **storage_options
        Passed to fsspec for URLs (e.g. ``anon=True``, ``endpoint_url=...``).

    Returns
    -------
    Catalog
        ``session_id -> Dataset``, keyed by each store's ``session_id`` attribute
        (its name without ``.zarr`` when the attribute is missing).

    Raises
    ------
    StoreError
        The folder does not exist, an entry is not a readable store, or two
        stores claim the same session id.

    Examples
    --------
    >>> import tempfile
    >>> open_catalog(tempfile.mkdtemp())  # doctest: +ELLIPSIS
    <opto_cube.Catalog: 0 sessions from ...>
    """
    paths = list_stores(folder_or_url, storage_options)
    cubes: dict[str, xr.Dataset] = {}
    where: dict[str, str] = {}
    for path in paths:
        if not is_complete(path, storage_options):
            warn(path, "incomplete store (no completion mark: unfinished or interrupted conversion); skipped")
            continue
        ds = open_cube(path, storage_options=storage_options) if storage_options else open_cube(path)
        name = path.rstrip("/").rsplit("/", 1)[-1]
        session_id = str(ds.attrs.get(schema.ATTR_SESSION_ID) or name[: -len(STORE_SUFFIX)])
        if session_id in cubes:
            raise StoreError(f"{path}: session {session_id!r} is already in the catalog, from {where[session_id]}")
        cubes[session_id], where[session_id] = ds, path
    return Catalog(cubes, source=os.fspath(folder_or_url))


def cubes_of(source: Any) -> list[tuple[str, xr.Dataset]]:
    """``(session_id, cube)`` pairs of a Catalog or mapping, one cube, cubes or store paths, or a folder of stores.

    Mappings give their keys as session ids; cubes give their ``session_id`` attribute.

    Examples
    --------
    >>> cubes_of(xr.Dataset(attrs={"session_id": "s1"}))
    [('s1', <xarray.Dataset> Size: 0B
    Dimensions:  ()
    Data variables:
        *empty*
    Attributes:
        session_id:  s1)]
    """
    if isinstance(source, xr.Dataset):
        return [(str(source.attrs.get(schema.ATTR_SESSION_ID, "")), source)]
    if isinstance(source, (str, os.PathLike)):
        return list(open_catalog(source).items())
    if isinstance(source, Mapping):
        items: Iterable[tuple[str | None, Any]] = ((str(k), v) for k, v in source.items())
    elif isinstance(source, Iterable):
        items = ((None, v) for v in source)
    else:
        raise TypeError(f"expected a Catalog, a cube or cubes, got {type(source)!r}")
    pairs = []
    for key, item in items:
        if isinstance(item, (str, os.PathLike)):
            item = open_cube(item)
        elif not isinstance(item, xr.Dataset):
            raise TypeError(f"expected a cube (xarray.Dataset) or a store path, got {type(item)!r}")
        pairs.append((key if key is not None else str(item.attrs.get(schema.ATTR_SESSION_ID, "")), item))
    return pairs
