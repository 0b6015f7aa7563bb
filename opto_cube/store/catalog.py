"""A folder of cubes as one object, and the ``(session_id, cube)`` pairs every analysis starts from.

:func:`open_catalog` lists the ``*.zarr`` stores of a folder (or URL) and
reads each one's small ``zarr.json`` (completion mark and session id); a
store is opened (:func:`opto_cube.store.open.open_cube`) only when its cube is
first asked for. The :class:`Catalog` is a read-only mapping
``session_id -> xarray.Dataset`` that prints a one-row-per-session summary
and converts to an :class:`xarray.DataTree`. :func:`sessions_of` gives the
``(session_id, store path or cube)`` pairs of anything the analyses accept,
without opening a store (what a task on a worker opens itself);
:func:`cubes_of` the opened pairs. The session id comes from one place: the
catalog's key, i.e. the store's ``session_id`` attribute (else its name).

Examples
--------
>>> from opto_cube.jobs.demo import example_stores
>>> catalog = open_catalog(example_stores(2) / "stores")
>>> len(catalog), catalog.summary()["clusters"].tolist()
(2, [8, 8])
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from opto_cube import schema
from opto_cube.errors import StoreError, warn
from opto_cube.store.access import StorePath, is_url, read_store_attrs
from opto_cube.store.open import open_cube
from opto_cube.store.paths import STORE_SUFFIX, list_stores

__all__ = ["Catalog", "catalog_of", "cluster_table", "cubes_of", "open_catalog", "sessions_of"]

SUMMARY_COLUMNS = (
    "session", "subject", "date", "clusters", "qc_pass", "trials", "emitters", "powers", schema.SUMMARY_ARTIFACTS,
)  # fmt: skip


class Catalog(Mapping[str, xr.Dataset]):
    """Opened cubes by session id (read-only mapping, sorted by session id).

    Parameters
    ----------
    cubes
        ``session_id -> Dataset``, or ``session_id -> store path`` (opened
        on first access, with ``storage_options``).
    source
        Where the cubes came from (shown in the repr).
    storage_options
        For opening stores on object storage.

    Examples
    --------
    >>> cube = xr.Dataset(attrs={schema.ATTR_SESSION_ID: "s1"})
    >>> catalog = Catalog({"s1": cube}, source="memory")
    >>> list(catalog), catalog.sessions, "s1" in catalog
    (['s1'], ('s1',), True)
    """

    def __init__(
        self,
        cubes: Mapping[str, xr.Dataset | StorePath],
        source: str = "",
        storage_options: dict | None = None,
        attrs: Mapping[str, dict[str, Any]] | None = None,
    ) -> None:
        self._cubes: dict[str, xr.Dataset | StorePath] = dict(sorted(cubes.items()))
        self._paths = {sid: entry for sid, entry in self._cubes.items() if not isinstance(entry, xr.Dataset)}
        self.source = source
        self.storage_options = dict(storage_options or {})
        self._attrs = dict(attrs or {})  # each store's attributes, as read when the catalog was made

    def store_attrs(self, session_id: str) -> dict[str, Any] | None:
        """A session's store attributes as read when the catalog was made (None when not read then)."""
        entry = self._cubes.get(session_id)
        if isinstance(entry, xr.Dataset):
            return dict(entry.attrs)
        return self._attrs.get(session_id)

    def __getitem__(self, session_id: str) -> xr.Dataset:
        try:
            entry = self._cubes[session_id]
        except KeyError:
            raise KeyError(
                f"no session {session_id!r} in the catalog of {self.source or 'cubes'}; "
                f"sessions: {', '.join(self._cubes) or 'none'}"
            ) from None
        if not isinstance(entry, xr.Dataset):
            options = {"storage_options": self.storage_options} if self.storage_options else {}
            entry = self._cubes[session_id] = open_cube(entry, **options)
        return entry

    def entries(self) -> list[tuple[str, xr.Dataset | StorePath]]:
        """``(session_id, store path)`` pairs, without opening a store (a cube given in memory: the cube)."""
        return [(sid, self._paths.get(sid, entry)) for sid, entry in self._cubes.items()]

    def __iter__(self) -> Iterator[str]:
        return iter(self._cubes)

    def __len__(self) -> int:
        return len(self._cubes)

    @property
    def sessions(self) -> tuple[str, ...]:
        """The session ids, sorted."""
        return tuple(self._cubes)

    def summary(self, artifacts: Callable[[xr.Dataset], np.ndarray | None] | None = None) -> pd.DataFrame:
        """One row per session: ``session, subject, date, clusters, qc_pass, trials, emitters, powers``.

        ``clusters`` and ``trials`` are counts, ``qc_pass`` the number of
        QC-passing clusters, ``emitters`` the number of emitters used and
        ``powers`` the power levels (:func:`opto_cube.schema.power_levels`),
        mW, 4 significant digits, ``light_artifacts`` the number of units
        flagged light artifacts by ``artifacts`` (a cube's flags, or None
        when the store cannot tell), for instance
        :func:`opto_cube.analysis.latency.light_artifacts`; None without it
        (the store layer runs no analysis: the analysis pass's summary,
        :attr:`opto_cube.jobs.tasks.AnalysisPass.summary`, has it). Only
        coordinates, and with ``artifacts`` the small ``condition_counts``, are read.
        """
        rows = [summary_row(sid, ds, artifacts(ds) if artifacts is not None else None) for sid, ds in self.items()]
        return pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))

    def to_datatree(self) -> xr.DataTree:
        """An :class:`xarray.DataTree` with one child node per session, named by session id."""
        return xr.DataTree.from_dict({f"/{sid}": ds for sid, ds in self.items()})

    def __repr__(self) -> str:
        head = f"<opto_cube.Catalog: {len(self)} session{'s' * (len(self) != 1)}"
        head += f" from {self.source}>" if self.source else ">"
        return head if not self._cubes else f"{head}\n{self.summary().to_string(index=False)}"

    def _repr_html_(self) -> str:
        head = f"<p><b>opto_cube.Catalog</b>: {len(self)} session{'s' * (len(self) != 1)}"
        head += f" from <code>{self.source}</code></p>" if self.source else "</p>"
        return head + self.summary().to_html(index=False)


def summary_row(session_id: str, ds: xr.Dataset, artifacts: np.ndarray | None = None) -> dict[str, Any]:
    """One row of :meth:`Catalog.summary`; ``artifacts``: the sessions' light-artifact flags, bool (cluster,),
    counted in the ``light_artifacts`` column (None when not given: the store layer runs no analysis)."""

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
        schema.SUMMARY_ARTIFACTS: None if artifacts is None else int(np.asarray(artifacts).sum()),
    }


def open_catalog(folder_or_url: str | os.PathLike, **storage_options: Any) -> Catalog:
    """Every ``*.zarr`` store of a folder (local path or fsspec URL), each opened when first asked for.

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
    paths: dict[str, StorePath] = {}
    every: dict[str, dict[str, Any]] = {}
    for path in list_stores(folder_or_url, storage_options):
        attrs = read_store_attrs(path, storage_options)
        if not (attrs and attrs.get(schema.ATTR_COMPLETE)):
            warn(path, "incomplete store (no completion mark: unfinished or interrupted conversion); skipped")
            continue
        session_id = _session_id(path, attrs)
        if session_id in paths:
            raise StoreError(f"{path}: session {session_id!r} is already in the catalog, from {paths[session_id]}")
        paths[session_id] = path
        every[session_id] = attrs
    return Catalog(paths, source=os.fspath(folder_or_url), storage_options=storage_options, attrs=every)


def _session_id(path: StorePath, attrs: Mapping[str, Any] | None) -> str:
    """A store's session id: its ``session_id`` attribute, else its name without ``.zarr``."""
    name = os.fspath(path).rstrip("/").rsplit("/", 1)[-1]
    return str((attrs or {}).get(schema.ATTR_SESSION_ID) or name.removesuffix(STORE_SUFFIX))


def _path(source: str | os.PathLike) -> StorePath:
    """A store path or URL as the store module takes it (a URL stays a string)."""
    return source if isinstance(source, (str, Path)) else Path(source)


def _is_store(path: str | os.PathLike) -> bool:
    text = os.fspath(path).rstrip("/")
    return text.endswith(STORE_SUFFIX) or (not is_url(text) and (Path(text) / "zarr.json").exists())


def catalog_of(sources: Iterable[str | os.PathLike]) -> Catalog:
    """One catalog of several stores and folders of stores; a session given twice is an error.

    Raises
    ------
    StoreError
        A path that does not exist, a folder holding no store, or a session given twice.
    """
    entries: dict[str, StorePath] = {}
    every: dict[str, dict[str, Any]] = {}
    for given in sources:
        source = _path(given)
        if not is_url(source) and not Path(source).exists():
            raise StoreError(f"{source}: no such folder of stores (or store)")
        if _is_store(source):
            attrs = read_store_attrs(source)
            found = {_session_id(source, attrs): source}
            if attrs is not None:
                every[_session_id(source, attrs)] = attrs
        else:
            folder = open_catalog(source)
            listed = folder.entries()
            found = {sid: _path(entry) for sid, entry in listed if not isinstance(entry, xr.Dataset)}
            every.update({sid: a for sid in found if (a := folder.store_attrs(sid)) is not None})
            if not found:
                raise StoreError(f"{source}: holds no {STORE_SUFFIX} stores")
        twice = sorted(set(found) & set(entries))
        if twice:
            raise StoreError(f"{source}: session {twice[0]!r} given twice; name each session's store once")
        entries.update(found)
    source_text = ", ".join(map(os.fspath, sources)) if isinstance(sources, list) else ""
    return Catalog(entries, source=source_text, attrs={sid: a for sid, a in every.items() if sid in entries})


def sessions_of(source: Any) -> list[tuple[str, xr.Dataset | StorePath]]:
    """``(session_id, store path or cube)`` pairs of a Catalog or mapping, a cube, cubes or store paths, or a folder.

    No store is opened: a store path is given as such (its session id read
    from its ``zarr.json``). Mappings give their keys as session ids, cubes
    their ``session_id`` attribute.

    Examples
    --------
    >>> sessions_of([xr.Dataset(attrs={"session_id": "s1"})])[0][0]
    's1'
    """
    if isinstance(source, Catalog):
        return source.entries()
    if isinstance(source, xr.Dataset):
        return [(str(source.attrs.get(schema.ATTR_SESSION_ID, "")), source)]
    if isinstance(source, (str, os.PathLike)):
        if _is_store(source):
            return [(_session_id(_path(source), read_store_attrs(_path(source))), _path(source))]
        return open_catalog(source).entries()
    if isinstance(source, Mapping):
        items: Iterable[tuple[str | None, Any]] = ((str(k), v) for k, v in source.items())
    elif isinstance(source, Iterable):
        items = ((None, v) for v in source)
    else:
        raise TypeError(f"expected a Catalog, a cube or cubes, got {type(source)!r}")
    pairs: list[tuple[str, xr.Dataset | StorePath]] = []
    for key, item in items:
        if isinstance(item, (str, os.PathLike)):
            path = _path(item)
            pairs.append((key if key is not None else _session_id(path, read_store_attrs(path)), path))
        elif isinstance(item, xr.Dataset):
            pairs.append((key if key is not None else str(item.attrs.get(schema.ATTR_SESSION_ID, "")), item))
        else:
            raise TypeError(f"expected a cube (xarray.Dataset) or a store path, got {type(item)!r}")
    return pairs


def cubes_of(source: Any) -> list[tuple[str, xr.Dataset]]:
    """``(session_id, cube)`` pairs of what :func:`sessions_of` accepts, every store opened.

    Examples
    --------
    >>> [sid for sid, _ in cubes_of({"s1": xr.Dataset()})]
    ['s1']
    """
    if isinstance(source, Catalog):
        return list(source.items())
    return [(sid, item if isinstance(item, xr.Dataset) else open_cube(item)) for sid, item in sessions_of(source)]


def cluster_table(catalog: Any, columns: Sequence[str] = (schema.TROUGH_TO_PEAK,)) -> pd.DataFrame:
    """Per-cluster coordinates of every cube as one table keyed by ``session_id`` and ``cluster``.

    Examples
    --------
    >>> import xarray as xr
    >>> cube = xr.Dataset(coords={"cluster": [0, 1], "trough_to_peak_ms": ("cluster", [0.3, 0.7])})
    >>> cluster_table({"s1": cube})
      session_id  cluster  trough_to_peak_ms
    0         s1        0                0.3
    1         s1        1                0.7
    """
    frames = [
        pd.DataFrame(
            {
                schema.SESSION_ID: session_id,
                schema.CLUSTER: cube[schema.CLUSTER].values,
                **{c: cube[c].values for c in columns},
            }
        )
        for session_id, cube in cubes_of(catalog)
    ]
    if not frames:
        return pd.DataFrame(columns=[schema.SESSION_ID, schema.CLUSTER, *columns])
    return pd.concat(frames, ignore_index=True)
