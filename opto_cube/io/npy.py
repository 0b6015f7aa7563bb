"""Safe ``.npy`` reading and the value checks every reader shares.

Owns :class:`NpyFile` (a ``.npy`` header parsed before any data is read, so
pickles are refused unread and truncation is found by size), file hashing
(:func:`sha256_file`), what a path is when it is not a readable file
(:func:`not_a_file`, :func:`require_file`, :func:`open_npy`), and the checks
of values the ALF, NWB and Kilosort readers apply alike (:func:`as_float`,
:func:`as_int`, :func:`as_bool`, :func:`check_finite`, :func:`read_json`,
:func:`warn_precision`), each naming the file in a
:class:`~opto_cube.errors.SessionFormatError`.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from opto_cube.errors import SessionFormatError, one_line, warn

HASH_BLOCK = 1 << 23  # bytes read per update of a SHA-256


# --------------------------------------------------------------------------
# .npy files
# --------------------------------------------------------------------------
@dataclass(frozen=True)
class NpyFile:
    """The header of a ``.npy`` file: where its data lies and what it is.

    Opening parses only the header, so an object (pickled) array is refused
    before a byte of it is read, and a truncated file is found by its size.
    """

    path: Path
    dtype: np.dtype
    shape: tuple[int, ...]
    fortran_order: bool
    offset: int

    @classmethod
    def open(cls, path: Path) -> NpyFile:
        try:
            with open(path, "rb") as f:
                version = np.lib.format.read_magic(f)
                if version == (1, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
                elif version in ((2, 0), (3, 0)):
                    # 3.0 is 2.0 with a UTF-8 header (non-ASCII field names of structured dtypes, which are
                    # refused below anyway): numpy's public 2.0 reader parses its numeric headers as they are
                    shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
                else:
                    raise ValueError(f".npy format version {version[0]}.{version[1]} is not one numpy writes")
                offset = f.tell()
        except FileNotFoundError:
            raise
        except (ValueError, OSError, EOFError, SyntaxError) as e:
            raise SessionFormatError(path, f"not a readable .npy file ({one_line(e)})") from e
        if any(int(n) < 0 for n in shape):
            raise SessionFormatError(path, f"corrupt header: negative shape {tuple(shape)}")
        if dtype.hasobject:
            raise SessionFormatError(path, "holds Python objects (a pickle); opto_cube never loads pickles")
        header = cls(Path(path), dtype, tuple(int(n) for n in shape), bool(fortran), offset)
        size = path.stat().st_size
        if size < offset + header.nbytes:
            raise SessionFormatError(
                path,
                f"truncated: header says {header.shape} {dtype} ({header.nbytes} bytes)"
                f" but {size - offset} bytes follow",
            )
        return header

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def load(self) -> tuple[np.ndarray, str]:
        """The whole array and the SHA-256 of the file (read once)."""
        data = self.path.read_bytes()
        arr = np.load(io.BytesIO(data), allow_pickle=False)
        return arr, hashlib.sha256(data).hexdigest()

    def sha256(self) -> str:
        return sha256_file(self.path)

    def read(self, start: int, stop: int) -> np.ndarray:
        """Elements ``[start, stop)`` of a 1-D array, read from disk."""
        with open(self.path, "rb") as f:
            f.seek(self.offset + start * self.dtype.itemsize)
            return np.fromfile(f, dtype=self.dtype, count=stop - start)


def sha256_file(path: str | os.PathLike) -> str:
    """SHA-256 of a file, read in blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(HASH_BLOCK):
            h.update(chunk)
    return h.hexdigest()


def not_a_file(path: Path) -> str | None:
    """What ``path`` is when it is not a regular file one can read, in words; None when it is one.

    Examples
    --------
    >>> not_a_file(Path("/no/such/file")), not_a_file(Path("/"))
    ('required file is missing', 'is a folder, not a file')
    """
    import stat

    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return "required file is missing" if not path.is_symlink() else "is a broken symbolic link"
    except PermissionError:
        return f"cannot be reached: permission denied on {path.parent}"
    except OSError as e:
        return f"cannot be read ({e.strerror or one_line(e)})"
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "is a folder, not a file"
    if stat.S_ISFIFO(mode):
        return "is a named pipe (FIFO), not a file"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "is a device (such as /dev/zero), not a file"
    if stat.S_ISSOCK(mode):
        return "is a socket, not a file"
    return "is not a regular file"


def not_other_than_a_file(path: Path) -> None:
    """Refuse an optional file that is there but is not a file (a folder, a FIFO, a device); absent is fine."""
    problem = not_a_file(path)
    if problem is not None and os.path.lexists(path):
        raise SessionFormatError(path, problem)


def require_file(folder: Path, name: str) -> Path:
    path = folder / name
    problem = not_a_file(path)
    if problem is not None:
        raise SessionFormatError(path, problem)
    return path


def open_npy(folder: Path, name: str, ndim: int) -> NpyFile:
    header = NpyFile.open(require_file(folder, name))
    if header.ndim != ndim:
        raise SessionFormatError(header.path, f"expected {ndim} dimension(s), found shape {header.shape}")
    return header


def as_float(arr: np.ndarray, path: Path) -> np.ndarray:
    if arr.dtype.kind not in "fiu":
        raise SessionFormatError(path, f"expected numbers, found dtype {arr.dtype}")
    return arr.astype(np.float64, copy=False)


def as_int(arr: np.ndarray, path: Path, what: str) -> np.ndarray:
    if arr.dtype.kind in "iu":
        return arr.astype(np.int64, copy=False)
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or np.any(arr != np.floor(arr)):
            bad = arr[~np.isfinite(arr) | (arr != np.floor(arr))][0]
            raise SessionFormatError(path, f"{what} must be whole numbers, found {bad.item()!r}")
        return arr.astype(np.int64)
    raise SessionFormatError(path, f"{what} must be integers, found dtype {arr.dtype}")


def as_bool(arr: np.ndarray, path: Path) -> np.ndarray:
    if arr.dtype.kind == "b":
        return arr
    if arr.dtype.kind in "iuf":
        bad = ~((arr == 0) | (arr == 1))
        if not np.any(bad):
            return arr.astype(bool)
        raise SessionFormatError(path, f"expected booleans (0 or 1), found {arr[bad][0].item()!r}")
    raise SessionFormatError(path, f"expected booleans, found dtype {arr.dtype}")


def read_json(path: Path) -> tuple[Any, str]:
    data = path.read_bytes()
    try:
        return json.loads(data.decode("utf-8-sig")), hashlib.sha256(data).hexdigest()
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SessionFormatError(path, f"invalid JSON ({one_line(e)})") from e


def warn_precision(path: Path, dtype: np.dtype, largest_s: float, what: str) -> None:
    """Warn when times are stored with less than float64's precision, naming how much was lost.

    float16 and float32 resolve a time ``t`` only to ``numpy.spacing(t)``
    (float16: 31 ms at 60 s; float32: 4 us at 60 s), so spikes near a bin edge
    may land in the wrong bin: the values are used as stored, in float64.
    """
    dtype = np.dtype(dtype)
    if dtype.kind != "f" or dtype.itemsize >= 8:
        return
    finite = largest_s if math.isfinite(largest_s) else 0.0
    spacing = float(np.spacing(dtype.type(abs(finite)))) if dtype.itemsize < 8 else 0.0
    warn(
        path,
        f"{what} are {dtype.name} (not float64): at {finite:g} s they are resolved to {spacing * 1000:.3g} ms only,"
        " so events near a bin edge may be counted in a neighbouring bin; export them as float64",
    )


def check_finite(arr: np.ndarray, path: Path, what: str, floating: bool = False) -> np.ndarray:
    if floating and arr.dtype.kind != "f":
        raise SessionFormatError(path, f"{what} times must be floating-point seconds, found dtype {arr.dtype}")
    arr = as_float(arr, path)
    if not np.all(np.isfinite(arr)):
        bad = int(np.flatnonzero(~np.isfinite(arr))[0])
        raise SessionFormatError(path, f"trial {bad} has a non-finite {what} {arr[bad].item()!r}")
    return arr
