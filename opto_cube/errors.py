"""Errors and warnings of opto_cube, and the one helper that words them.

Every problem with an input is an :class:`OptoCubeError` whose message is one
line: where (session, file, store, chunk), what is wrong, and, where there is
one, what to do (:func:`problem`). The command line prints it as is.
Recoverable quirks are :class:`OptoCubeWarning` s, also naming the file.

Examples
--------
>>> print(problem("st/s1.zarr", "chunk window_counts/c/0/0/0 is missing", remedy="run `opto-cube verify st/s1.zarr`"))
st/s1.zarr: chunk window_counts/c/0/0/0 is missing; run `opto-cube verify st/s1.zarr`
>>> one_line(ValueError("bad\\n  value"))
'bad value'
"""

from __future__ import annotations

import os
import warnings

_CONTROL = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F)}


class OptoCubeError(Exception):
    """Base class of the errors opto_cube raises on bad input or parameters."""


class SessionFormatError(OptoCubeError, ValueError):
    """A session folder does not follow the ALF format of docs/format.md.

    Parameters
    ----------
    path
        The file (or folder) at fault.
    problem
        What is wrong with it, in one line.
    """

    def __init__(self, path: str | os.PathLike, problem: str) -> None:
        self.path = os.fspath(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class BinningError(OptoCubeError, ValueError):
    """A bin width or window cannot tile the analysis windows exactly."""


class ParameterError(OptoCubeError, ValueError):
    """A conversion parameter (an option) is refused, before any session is read."""


class StoreError(OptoCubeError):
    """A store cannot be written or read as asked."""


class OptoCubeWarning(UserWarning):
    """A recoverable quirk of an input: converted correctly, but worth knowing."""


class TimingWarning(OptoCubeWarning):
    """The timing columns of the responses (latency, first spikes, light artifacts) are NaN, and why.

    Bins coarser than ``schema.LATENCY_MAX_BIN_MS`` or a store written before
    the timing arrays: the other columns are computed as ever.
    """


def warn(path: str | os.PathLike, message: str) -> None:
    """Warn about a recoverable quirk of ``path`` (one line, naming the file)."""
    warnings.warn(f"{os.fspath(path)}: {message}", OptoCubeWarning, stacklevel=3)


def one_line(error: BaseException | str) -> str:
    """The text of ``error`` on one line: white space folded, control characters escaped.

    An exception without a message gives its type's name, so that the line is never empty.
    """
    text = " ".join(str(error).split()).translate(_CONTROL)
    if not text and isinstance(error, BaseException):
        return type(error).__name__
    return text


def problem(where: str | os.PathLike, what: str, *, remedy: str | None = None) -> str:
    """One line naming where (session, file, store, chunk), what is wrong, and what to do.

    Parameters
    ----------
    where
        The session, file, store or chunk at fault, as the user named it.
    what
        What is wrong with it (folded to one line).
    remedy
        What to do about it, when there is something to do.
    """
    line = f"{one_line(os.fspath(where))}: {one_line(what)}"
    return f"{line}; {one_line(remedy)}" if remedy else line
