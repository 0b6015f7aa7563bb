"""Time bins of the cube: whole microseconds relative to onset, planned to tile the pre and stim windows exactly.

:class:`TimeBins` and :func:`plan_time_bins` (which refuses a bin width or
window that cannot make ``[-0.5, 0)`` and every ``[0, duration)`` unions of
whole bins), and :func:`smallest_uint`, the dtype chosen for counts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from opto_cube import schema
from opto_cube.errors import BinningError

DEFAULT_POST_S = 0.5

US_PER_S = 1_000_000


@dataclass(frozen=True)
class TimeBins:
    """Half-open bins of ``bin_us`` microseconds over ``[start_us, stop_us)`` relative to onset."""

    bin_us: int
    start_us: int
    stop_us: int

    @property
    def n_bins(self) -> int:
        return (self.stop_us - self.start_us) // self.bin_us

    @property
    def bin_width_s(self) -> float:
        return self.bin_us / US_PER_S

    @property
    def window_s(self) -> tuple[float, float]:
        return (self.start_us / US_PER_S, self.stop_us / US_PER_S)

    @property
    def edges_s(self) -> np.ndarray:
        """Bin edges relative to onset, each the double nearest a whole microsecond."""
        return (self.start_us + self.bin_us * np.arange(self.n_bins + 1, dtype=np.int64)) / US_PER_S

    @property
    def centres_s(self) -> np.ndarray:
        return (2 * self.start_us + self.bin_us * (2 * np.arange(self.n_bins, dtype=np.int64) + 1)) / (2 * US_PER_S)

    def edge_index(self, seconds: float | np.ndarray) -> np.ndarray:
        """Index of the bin edge at ``seconds`` (rounded to whole microseconds)."""
        us = np.rint(np.asarray(seconds, dtype=np.float64) * US_PER_S).astype(np.int64)
        return (us - self.start_us) // self.bin_us

    def __repr__(self) -> str:
        return f"TimeBins(bin_width_s={self.bin_width_s!r}, window_s={self.window_s!r}, n_bins={self.n_bins})"


def _whole_us(seconds: float, what: str) -> int:
    us = round(seconds * US_PER_S) if math.isfinite(seconds * US_PER_S) else 0
    if not math.isfinite(seconds * US_PER_S) or abs(seconds * US_PER_S - us) > 1e-9 * max(1.0, abs(us)):
        raise BinningError(f"{what} {seconds!r} s is not a whole number of microseconds")
    return us


def plan_time_bins(
    durations_s: Sequence[float] | np.ndarray,
    bin_ms: float = schema.DEFAULT_BIN_MS,
    window_s: tuple[float, float] | None = None,
) -> TimeBins:
    """Bins that tile the pre window and every stim window exactly.

    Parameters
    ----------
    durations_s
        The pulse durations of the session, s, as stored.
    bin_ms
        Bin width, ms (whole microseconds).
    window_s
        ``(start, stop)`` of the binned window relative to onset, s. Default:
        ``(-0.5, max(1.0, longest pulse + 0.5))``, rounded up to whole bins.

    Raises
    ------
    BinningError
        When the bins cannot make ``[-0.5, 0)`` and every ``[0, duration)``
        unions of whole bins, or the window does not cover them.

    Examples
    --------
    >>> plan_time_bins([0.01, 0.05])
    TimeBins(bin_width_s=0.001, window_s=(-0.5, 1.0), n_bins=1500)
    >>> plan_time_bins([0.0125], bin_ms=5)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    opto_cube.errors.BinningError: bin width 5.0 ms cannot tile the stim window [0, 0.0125) s: ... or 0.5 ms)
    """
    bin_ms = float(bin_ms)
    if not bin_ms > 0:
        raise BinningError(f"bin width must be positive, got {bin_ms!r} ms")
    bin_us = _whole_us(bin_ms / 1000, "bin width")
    if bin_us < 1:
        raise BinningError(f"bin width {bin_ms!r} ms is below one microsecond")
    durations = np.unique(np.asarray(durations_s, dtype=np.float64))
    if durations.size == 0:
        raise BinningError("no trials: nothing to bin")
    pre_start_us = round(schema.PRE_WINDOW_S[0] * US_PER_S)
    if pre_start_us % bin_us:
        raise BinningError(
            f"bin width {bin_ms!r} ms cannot tile the pre window [-0.5, 0) s; choose one that divides 500 ms"
        )
    duration_us = np.rint(durations * US_PER_S).astype(np.int64)
    for d, d_us in zip(durations.tolist(), duration_us.tolist(), strict=False):
        if d_us % bin_us or d_us <= 0:
            raise BinningError(
                f"bin width {bin_ms!r} ms cannot tile the stim window [0, {d!r}) s: {d!r} s is not a whole number "
                f"of bins; choose a bin width that divides it (e.g. {_suggest(int(d_us), bin_us)})"
            )
    longest = int(duration_us.max())
    if window_s is None:
        post_us = round(DEFAULT_POST_S * US_PER_S)
        stop_us = max(round(schema.DEFAULT_WINDOW_END_S * US_PER_S), longest + post_us)
        stop_us = -(-stop_us // bin_us) * bin_us
        start_us = pre_start_us
    else:
        if len(window_s) != 2:
            raise BinningError(f"window must be (start, stop) in s, got {window_s!r}")
        start_us = _whole_us(float(window_s[0]), "window start")
        stop_us = _whole_us(float(window_s[1]), "window stop")
        if start_us > pre_start_us or stop_us < longest:
            raise BinningError(
                f"window [{window_s[0]}, {window_s[1]}) s must cover the pre window [-0.5, 0) s and the longest "
                f"pulse [0, {float(durations.max())!r}) s"
            )
        if (stop_us - start_us) % bin_us or start_us % bin_us:
            raise BinningError(
                f"window [{window_s[0]}, {window_s[1]}) s is not a whole number of {bin_ms!r} ms bins aligned to onset"
            )
    return TimeBins(bin_us=bin_us, start_us=start_us, stop_us=stop_us)


def _suggest(duration_us: int, bin_us: int) -> str:
    options = [
        b
        for b in (10_000, 5_000, 2_500, 2_000, 1_000, 500, 250, 100, 50, 10, 1)
        if duration_us % b == 0 and 500_000 % b == 0 and b < bin_us
    ]
    return " or ".join(f"{b / 1000:g} ms" for b in options[:2]) or "1 us"


def smallest_uint(max_count: int) -> np.dtype:
    """The smallest unsigned dtype that holds ``max_count``.

    Examples
    --------
    >>> smallest_uint(255), smallest_uint(256)
    (dtype('uint8'), dtype('uint16'))
    """
    for dtype in (np.uint8, np.uint16, np.uint32, np.uint64):
        if max_count <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    raise OverflowError(f"count {max_count} does not fit in uint64")
