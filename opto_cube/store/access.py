"""How a store is reached: a local folder or a URL, its Zarr store object, its attributes, its root group.

The few ways of reaching a store that every other store module needs (:func:`is_url`,
:func:`zarr_store`, :func:`read_store_attrs`, :func:`format_version`, :func:`open_group`), and the
:data:`StorePath` type. This module imports no other module of :mod:`opto_cube.store`, so that
:mod:`~opto_cube.store.chunks`, :mod:`~opto_cube.store.read` and the writer can all import it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import zarr

from opto_cube import schema

StorePath = Path | str  # a local path, or a URL such as s3://bucket/prefix/<id>.zarr


def is_url(path: str | os.PathLike) -> bool:
    """Whether ``path`` names object storage (``s3://...``) rather than a local folder."""
    return "://" in os.fspath(path) and not os.fspath(path).startswith("file://")


def zarr_store(path: StorePath, storage_options: dict[str, Any] | None = None, read_only: bool = False) -> Any:
    """The zarr Store object of a local path or an fsspec URL."""
    if is_url(path):
        return zarr.storage.FsspecStore.from_url(str(path), storage_options=storage_options or {}, read_only=read_only)
    return zarr.storage.LocalStore(Path(path), read_only=read_only)


def read_store_attrs(path: StorePath, storage_options: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The group attributes of a store, or None when there is no readable store there."""
    try:
        if is_url(path):
            import fsspec

            with fsspec.open(f"{str(path).rstrip('/')}/zarr.json", "rb", **(storage_options or {})) as f:
                meta = json.loads(f.read())
        else:
            meta = json.loads((Path(path) / "zarr.json").read_text())
    except (OSError, ValueError):
        return None
    return meta.get("attributes", {}) if isinstance(meta, dict) else None


def format_version(attrs: dict[str, Any]) -> int:
    """The store format of a store's attributes (1 for stores older than the attribute)."""
    value = attrs.get(schema.ATTR_FORMAT_VERSION, 1)
    return value if isinstance(value, int) else 1


def open_group(path: StorePath, storage_options: dict[str, Any] | None) -> Any:
    """The store's root Zarr group, read-only: from its consolidated metadata, else from the plain metadata."""
    zstore = zarr_store(path, storage_options, read_only=True)
    try:
        return zarr.open_group(zstore, mode="r", use_consolidated=True)
    except Exception:  # consolidated metadata missing or unreadable: the plain metadata
        return zarr.open_group(zstore, mode="r", use_consolidated=False)
