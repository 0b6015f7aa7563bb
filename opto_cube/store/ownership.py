"""Whether a store is ours and whole: what opto_cube may replace, what is damaged, what is up to date.

Only a folder recognised as an opto_cube store by its own metadata is ever
replaced (:func:`is_ours`, :func:`not_ours`); anything else in the way is
refused untouched (:func:`refusal`). :func:`damage` reads every chunk's bytes
against their CRC32C and the sealed manifest; :func:`is_up_to_date` and
:func:`plan_write` decide whether a conversion writes, skips or refuses.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import zarr

from opto_cube import schema
from opto_cube.errors import StoreError, one_line
from opto_cube.store import chunks
from opto_cube.store.access import StorePath, is_url, read_store_attrs, zarr_store


def is_complete(path: StorePath, storage_options: dict[str, Any] | None = None) -> bool:
    """Whether a finished conversion wrote the store at ``path`` (its completion mark is set)."""
    attrs = read_store_attrs(path, storage_options)
    return bool(attrs and attrs.get(schema.ATTR_COMPLETE))


# What operating systems leave in folders they show (Finder, Explorer): never a reason to call a store foreign.
OS_LITTER = frozenset({".DS_Store", "Thumbs.db", "desktop.ini", "Icon\r"})


def is_litter(name: str) -> bool:
    """Whether a file named ``name`` is one an operating system leaves behind (``.DS_Store``, ``._*``, ``Thumbs.db``).

    Examples
    --------
    >>> [is_litter(n) for n in (".DS_Store", "._zarr.json", "Thumbs.db", "zarr.json", "notes.txt")]
    [True, True, True, False, False]
    """
    return name in OS_LITTER or name.startswith("._")


def _read_key(path: StorePath, key: str, storage_options: dict[str, Any] | None = None) -> bytes | None:
    """The bytes of one key (file) of a store, or None when it is not there."""
    try:
        if is_url(path):
            import fsspec

            with fsspec.open(f"{str(path).rstrip('/')}/{key}", "rb", **(storage_options or {})) as f:
                return bytes(f.read())
        return (Path(path) / key).read_bytes()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None


def _own_group(path: StorePath, storage_options: dict[str, Any] | None = None) -> Any:
    """The store's root group from each node's own ``zarr.json`` (never the consolidated copy)."""
    return zarr.open_group(zarr_store(path, storage_options, read_only=True), mode="r", use_consolidated=False)


def _foreign_entry(root: Path) -> str | None:
    """Why a local folder is not laid out as a store opto_cube writes (zarr.json and array folders); None if it is."""
    if not root.is_dir():
        return "not a folder"
    for entry in root.iterdir():
        if entry.name == "zarr.json" or is_litter(entry.name):
            continue
        if not (entry.is_dir() and not entry.is_symlink() and (entry / "zarr.json").is_file()):
            return f"it holds {entry.name!r}, which a conversion does not write"
    return None


def _unsealed_or_other_chunks(
    path: StorePath, attrs: dict[str, Any], storage_options: dict[str, Any] | None
) -> str | None:
    """Why a store of format 2 carrying opto_cube's attributes is not a sealed conversion; None when it is one."""
    if not attrs.get(schema.ATTR_COMPLETE):
        return None if is_url(path) else "no completion mark (a conversion seals every store it writes)"
    manifest = attrs.get(schema.ATTR_CHUNK_CRC32C)
    if not isinstance(manifest, dict):
        return f"no chunk manifest ({schema.ATTR_CHUNK_CRC32C!r})"
    try:
        group = _own_group(path, storage_options)
        expected = chunks.expected_chunks(group)
        shape = group[schema.SPIKE_COUNTS].shape if schema.SPIKE_COUNTS in group else None
    except Exception as e:
        return f"its array metadata cannot be read ({one_line(e)})"
    if shape is None:
        return f"no {schema.SPIKE_COUNTS!r} array"
    if set(expected) != set(manifest):
        return "its chunks are not those its manifest records (a copy or subset of a cube, not a conversion)"
    counted = (attrs.get("n_clusters"), attrs.get("n_trials"))
    if all(isinstance(n, int) for n in counted) and tuple(shape[:2]) != counted:
        return f"its cube is {tuple(shape)} but its attributes count {counted[0]} clusters and {counted[1]} trials"
    return None


def not_ours(path: StorePath, storage_options: dict[str, Any] | None = None) -> str | None:
    """Why ``path`` is not an opto_cube store that opto_cube may replace; None when it is one.

    Ours is what a conversion sealed: a Zarr group carrying opto_cube's format
    version, its completion mark and its chunk manifest, whose manifest names
    exactly the chunks its arrays' own metadata make and whose cube has the
    clusters and trials its attributes count. A copy or subset of a cube saved
    by xarray (``cube.isel(...).to_zarr(...)``) carries the attributes but not
    those chunks, so it is not ours. A store on object storage may be unsealed
    (a conversion there writes in place): it is ours when the rest holds. Files
    that operating systems leave behind (:func:`is_litter`) are tolerated.
    """
    attrs = read_store_attrs(path, storage_options)
    if attrs is None:
        return "no readable Zarr group metadata"
    if not (schema.ATTR_FORMAT_VERSION in attrs or schema.ATTR_VERSION in attrs):
        return "no opto_cube metadata"
    why = None if is_url(path) else _foreign_entry(Path(path))
    if why is not None:
        return why
    if chunks.format_version(attrs) < schema.FORMAT_VERSION:
        return None  # a store of an older format, recognised by its attributes alone (it has no manifest)
    return _unsealed_or_other_chunks(path, attrs, storage_options)


def is_ours(path: StorePath, storage_options: dict[str, Any] | None = None) -> bool:
    """Whether ``path`` holds an opto_cube store, sealed by a conversion, that opto_cube may replace.

    See :func:`not_ours` for the rule. Anything else (a user's folder, a plain
    file, another Zarr store, a subset of a cube saved with xarray) is never
    replaced.
    """
    return not_ours(path, storage_options) is None


def _metadata_disagreement(path: StorePath, storage_options: dict[str, Any] | None, names: list[str]) -> str | None:
    """Where the consolidated metadata in the root zarr.json disagrees with the arrays' own; None when it does not."""
    root = json.loads(_read_key(path, "zarr.json", storage_options) or b"{}")
    consolidated = (root.get("consolidated_metadata") or {}).get("metadata")
    if not isinstance(consolidated, dict):
        return f"{path}: no consolidated metadata in zarr.json"
    if sorted(consolidated) != names:
        return f"{path}: the consolidated metadata lists {sorted(consolidated)} but the store holds arrays {names}"
    for name in names:
        try:
            own = json.loads(_read_key(path, f"{name}/zarr.json", storage_options) or b"null")
        except ValueError:
            own = None
        if not _json_equal(own, consolidated[name]):
            return f"{path}: {name}/zarr.json disagrees with its copy in the consolidated metadata (zarr.json)"
    return None


def _chunk_damage(
    path: StorePath, keys: list[str], manifest: dict[str, Any], storage_options: dict[str, Any] | None
) -> str | None:
    """The first chunk whose stored bytes do not end with their CRC32C and the one recorded for its place."""
    import google_crc32c

    for key in keys:
        data = _read_key(path, key, storage_options)
        if data is None:
            return f"{path}: chunk {key} is missing (deleted or never written)"
        if len(data) < 4 or google_crc32c.value(data[:-4]).to_bytes(4, "little") != data[-4:]:
            return f"{path}: chunk {key} is corrupt (its bytes do not match their CRC32C)"
        if data[-4:].hex() != manifest[key]:
            return f"{path}: chunk {key} is not the chunk written there (moved, swapped or re-encoded)"
    return None


def damage(path: StorePath, storage_options: dict[str, Any] | None = None) -> str | None:
    """The first damage found in a sealed store, one line naming store and chunk; None when it is whole.

    Every chunk's stored bytes are read whole (not decompressed) and their
    CRC32C computed: the bytes must end with that checksum and with the one
    the manifest recorded for the chunk's place, so a byte flipped anywhere,
    a truncated, missing, moved or swapped chunk is found. Each array's own
    metadata must equal its copy in the consolidated metadata (an edited shape
    or codec in either is damage). About the cost of reading the store once.
    """
    attrs = read_store_attrs(path, storage_options) or {}
    manifest = attrs.get(schema.ATTR_CHUNK_CRC32C)
    if not attrs.get(schema.ATTR_COMPLETE) or not isinstance(manifest, dict):
        return f"{path}: unfinished (no completion mark or no chunk manifest)"
    try:
        group = _own_group(path, storage_options)
        names = sorted(name for name, _ in group.arrays())
        expected = chunks.expected_chunks(group)
    except Exception as e:
        return f"{path}: its array metadata cannot be read ({one_line(e)})"
    problem = _metadata_disagreement(path, storage_options, names)
    if problem is None and set(expected) != set(manifest):
        problem = f"{path}: its chunks are not those its manifest records"
    return problem or _chunk_damage(path, sorted(expected), manifest, storage_options)


def is_up_to_date(target: StorePath, expected: dict[str, Any], storage_options: dict[str, Any] | None = None) -> bool:
    """Whether the complete store at ``target`` was built from the same sources with the same parameters, and is whole.

    Whole as :func:`damage` finds it: every chunk's bytes against their CRC32C
    and the manifest, each array's metadata against the consolidated copy.
    """
    attrs = read_store_attrs(target, storage_options)
    if not attrs or not attrs.get(schema.ATTR_COMPLETE) or chunks.format_version(attrs) < schema.FORMAT_VERSION:
        return False
    if not all(_json_equal(attrs.get(k), v) for k, v in expected.items()):
        return False
    try:
        return damage(target, storage_options) is None
    except Exception:  # unreadable metadata: not up to date (convert rebuilds it, if it is ours)
        return False


# parameters that make a store what it is: another value is another product, never replaced without --overwrite
_PARAMETERS = (schema.ATTR_BIN_WIDTH, schema.ATTR_WINDOW, schema.ATTR_TIP_OFFSET)


def refusal(target: StorePath, why: str) -> StoreError:
    """The one-line refusal to replace what is at ``target``, saying how to go on."""
    return StoreError(
        f"{target}: exists and is not an opto_cube store ({why}); refusing to replace it (left untouched):"
        " move it away or choose another --out"
    )


def plan_write(
    target: StorePath, expected: dict[str, Any], overwrite: bool = False, storage_options: dict[str, Any] | None = None
) -> str:
    """What a conversion does about ``target``: ``"write"`` (absent, or ours and to be rebuilt) or ``"skip"``.

    - absent: write;
    - not ours (:func:`not_ours`): refused, even with ``overwrite``;
    - ours, built with other parameters (bin width, window, tip offset):
      refused without ``overwrite`` (it is another product, not a stale one);
    - ours, damaged (:func:`damage`), of an older format, or from sources that
      changed since: rebuilt;
    - ours, whole, same sources and parameters: skipped (rebuilt with ``overwrite``).

    Raises
    ------
    StoreError
        One line naming the store and saying what to do.
    """
    exists = _exists(target, storage_options)
    if not exists:
        return "write"
    why = not_ours(target, storage_options)
    if why is not None:
        raise refusal(target, why)
    if overwrite:
        return "write"
    attrs = read_store_attrs(target, storage_options) or {}
    if chunks.format_version(attrs) < schema.FORMAT_VERSION or not attrs.get(schema.ATTR_COMPLETE):
        return "write"
    differ = [
        f"{key} {json.dumps(attrs.get(key))} (this run: {json.dumps(expected[key])})"
        for key in _PARAMETERS
        if key in expected and not _json_equal(attrs.get(key), expected[key])
    ]
    if differ:
        raise StoreError(
            f"{target}: holds this session converted with {', '.join(differ)}; pass --overwrite to replace it,"
            " or choose another --out"
        )
    return "skip" if is_up_to_date(target, expected, storage_options) else "write"


def _exists(target: StorePath, storage_options: dict[str, Any] | None) -> bool:
    if is_url(target):
        import fsspec

        fs, root = fsspec.core.url_to_fs(str(target), **(storage_options or {}))
        return bool(fs.exists(root))
    return os.path.lexists(target)


def _json_equal(a: Any, b: Any) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
