"""Where stores live: their paths and names, listing a folder of them, leftovers of killed runs, atomic files.

:func:`store_path` names a session's store under a folder or URL,
:func:`list_stores` lists a folder's stores, :func:`remove_leftovers` clears
what killed conversions left beside a store, and :func:`atomic_file` writes
any other file (a table, a figure) atomically.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from opto_cube.errors import StoreError
from opto_cube.store.access import StorePath, is_url

STORE_SUFFIX = ".zarr"
TMP_TAG = ".tmp-"  # the hidden temporary folder or file beside a target, renamed onto it when complete
OLD_TAG = ".old-"  # the store being replaced, moved aside for the moment of the rename


def join(base: str | os.PathLike, name: str) -> StorePath:
    """``base/name`` for a local folder (a Path) or a URL (a string)."""
    return f"{os.fspath(base).rstrip('/')}/{name}" if is_url(base) else Path(base) / name


def store_path(out_dir: str | os.PathLike, session_id: str) -> StorePath:
    """Where the store of ``session_id`` lives under ``out_dir`` (a folder or a URL).

    Examples
    --------
    >>> store_path("stores", "AL0034_2024-12-05_en1_p0").as_posix()
    'stores/AL0034_2024-12-05_en1_p0.zarr'
    """
    if not session_id or session_id in {".", ".."} or "/" in session_id or os.sep in session_id:
        raise StoreError(f"session id {session_id!r} cannot name a store")
    return join(out_dir, f"{session_id}{STORE_SUFFIX}")


def list_stores(folder_or_url: str | os.PathLike, storage_options: dict[str, Any] | None = None) -> list[str]:
    """Paths (or URLs) of the ``*.zarr`` entries of a folder; hidden and temporary entries skipped."""
    text = os.fspath(folder_or_url)
    if is_url(text):
        import fsspec

        fs, root = fsspec.core.url_to_fs(text, **(storage_options or {}))
        fs.invalidate_cache(root)  # a listing cached earlier in this process would miss stores written since
        if not fs.isdir(root):
            raise StoreError(f"{text}: no such folder of stores")
        names = [entry.rstrip("/") for entry in fs.ls(root, detail=False)]
        return sorted(
            fs.unstrip_protocol(name)
            for name in names
            if name.rsplit("/", 1)[-1].endswith(STORE_SUFFIX) and not name.rsplit("/", 1)[-1].startswith(".")
        )
    folder = Path(text.removeprefix("file://"))
    if not folder.is_dir():
        raise StoreError(f"{folder}: no such folder of stores")
    return [
        str(p)
        for p in sorted(folder.iterdir())
        if p.name.endswith(STORE_SUFFIX) and not p.name.startswith(".") and p.is_dir()
    ]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_leftovers(target: Path) -> list[Path]:
    """Remove what killed conversions of ``target`` left beside it (their process is gone)."""
    removed = []
    for tag in (TMP_TAG, OLD_TAG):
        for path in target.parent.glob(f".{glob.escape(target.name)}{tag}*"):
            pid = path.name.rsplit("-", 2)[-2] if path.name.count("-") >= 2 else ""
            if pid.isdigit() and _pid_alive(int(pid)) and int(pid) != os.getpid():
                continue
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


@contextlib.contextmanager
def atomic_file(target: str | os.PathLike) -> Iterator[Path]:
    """Write one file atomically: yield a temporary path beside ``target``, renamed onto it at the end.

    The parent folder is created if needed. On any error the temporary file
    is removed and ``target`` is left as it was (absent, or the old file).

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> target = Path(tempfile.mkdtemp()) / "out" / "table.csv"
    >>> with atomic_file(target) as tmp:
    ...     _ = tmp.write_text("a,b\\n1,2\\n")
    >>> target.read_text(), sorted(p.name for p in target.parent.iterdir())
    ('a,b\\n1,2\\n', ['table.csv'])
    """
    path = Path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}{TMP_TAG}{os.getpid()}-{uuid.uuid4().hex[:8]}{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
