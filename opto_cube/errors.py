"""Errors and warnings of opto_cube.

Every problem with an input is an :class:`OptoCubeError` whose message is one
line naming the file and the problem; the command line prints it as is.
Recoverable quirks are :class:`OptoCubeWarning` s, also naming the file.
"""

from __future__ import annotations

import os
import warnings


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
