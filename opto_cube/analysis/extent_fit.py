"""The spatial extent's numerical core: weighted logistic fall-off fits, radii and the unit bootstrap.

Plain numpy and numba on arrays, no labels (as flox keeps ``core.py`` apart from ``xarray.py``):
:func:`fit_profile` runs one vectorised Newton iteration (:func:`newton_logistic`, compiled) for
many weightings at once; :func:`half_radius` turns coefficients into the distance at which the
fitted fraction halves; :func:`bootstrap_weights` draws units with replacement within sessions;
:func:`percentile_interval` gives the bootstrap interval. :mod:`opto_cube.analysis.spatial` prepares
the table and labels the results.

Examples
--------
>>> import numpy as np
>>> coef, ok = fit_profile(np.array([0.0, 100, 200, 300, 400, 500]), np.array([1, 1, 0, 1, 0, 0]))
>>> bool(ok[0]), bool(0 < half_radius(coef)[0] < 500)
(True, True)
"""

from __future__ import annotations

import math
from typing import Any

import numba
import numpy as np
from scipy.special import log_expit

from opto_cube.binning.numba_setup import use_writable_numba_cache

EXTENT_SCALE_UM = 100.0  # |distance| is fitted in units of 100 um (a well-conditioned Newton step)
EXTENT_MAX_ITER = 30
EXTENT_TOL = 1e-5  # Newton step size at which to stop: quadratic convergence leaves ~1e-10
EXTENT_MAX_STEP = 5.0  # largest Newton step per coefficient (damps separated samples)

use_writable_numba_cache()  # before the cached kernel below is defined (a read-only install, no $HOME)

__all__ = ["bootstrap_weights", "fit_profile", "half_radius", "newton_logistic", "percentile_interval"]


# --------------------------------------------------------------------------
# The fit: a vectorised Newton iteration of weighted logistic regressions
# --------------------------------------------------------------------------
@numba.njit(parallel=True, cache=True, nogil=True, fastmath=True)
def newton_logistic(x, y, starts, weights, start, max_iter, tol, max_step):  # pragma: no cover - compiled
    """Weighted logistic fits, one per row of ``weights``; the rows of unit j are x[starts[j]:starts[j + 1]]."""
    n_fits, n_units = weights.shape
    coef = np.empty((n_fits, 2))
    converged = np.zeros(n_fits, dtype=np.bool_)
    for b in numba.prange(n_fits):
        a = start[b, 0]
        s = start[b, 1]
        w_b = weights[b]
        for _ in range(max_iter):
            g0 = 0.0
            g1 = 0.0
            h00 = 0.0
            h01 = 0.0
            h11 = 0.0
            for j in range(n_units):
                w = w_b[j]
                if w == 0.0:  # a unit left out of this resample
                    continue
                u0 = 0.0
                u1 = 0.0
                v0 = 0.0
                v1 = 0.0
                v2 = 0.0
                for i in range(starts[j], starts[j + 1]):
                    xi = x[i]
                    eta = min(max(a + s * xi, -500.0), 500.0)
                    p = 1.0 / (1.0 + math.exp(-eta))
                    r = y[i] - p
                    v = p * (1.0 - p)
                    u0 += r
                    u1 += r * xi
                    v0 += v
                    v1 += v * xi
                    v2 += v * xi * xi
                g0 += w * u0
                g1 += w * u1
                h00 += w * v0
                h01 += w * v1
                h11 += w * v2
            det = h00 * h11 - h01 * h01
            if not det > 0.0:
                break
            da = (h11 * g0 - h01 * g1) / det
            ds = (h00 * g1 - h01 * g0) / det
            big = max(abs(da), abs(ds))
            if big > max_step:
                da *= max_step / big
                ds *= max_step / big
            a += da
            s += ds
            if big < tol:
                converged[b] = True
                break
        coef[b, 0] = a
        coef[b, 1] = s
    return coef, converged


def fit_profile(
    abs_distance_um: Any,
    outcome: Any,
    *,
    unit: Any = None,
    weights: Any = None,
    start: Any = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Maximum-likelihood logistic fall-off ``expit(a + b |d|)`` of 0/1 outcomes, for many weightings at once.

    Parameters
    ----------
    abs_distance_um
        ``|d|`` of each observation, um.
    outcome
        0/1 (bool) outcome of each observation.
    unit
        The unit (column of ``weights``) of each observation; default one unit per observation.
    weights
        ``(n_fits, n_units)`` weights, e.g. bootstrap counts; default one fit with weight 1.
    start
        ``(n_fits, 2)`` or ``(2,)`` starting ``(a, b)``, b per um; default the null fit.

    Returns
    -------
    coefficients : ndarray, shape (n_fits, 2)
        ``a`` and ``b`` (per um) of each fit.
    converged : ndarray of bool, shape (n_fits,)
        Whether Newton's method converged (it does not for separated data, where the
        maximum likelihood is at infinity; the coefficients then describe a steep step).

    Examples
    --------
    >>> import numpy as np
    >>> d = np.array([0.0, 100.0, 200.0, 300.0, 400.0, 500.0])
    >>> y = np.array([1, 1, 0, 1, 0, 0])
    >>> coef, ok = fit_profile(d, y)
    >>> ok.tolist(), bool(coef[0, 1] < 0)
    ([True], True)
    """
    x = np.ascontiguousarray(abs_distance_um, dtype=np.float64) / EXTENT_SCALE_UM
    yy = np.ascontiguousarray(outcome, dtype=np.float64)
    if x.shape != yy.shape or x.ndim != 1:
        raise ValueError(
            f"fit_profile: distances and outcomes must be two 1-D arrays of one length, "
            f"got shapes {x.shape} and {yy.shape}"
        )
    u = np.arange(x.size) if unit is None else np.asarray(unit, dtype=np.int64)
    w = np.ones((1, int(u.max(initial=-1)) + 1)) if weights is None else weights
    w = np.ascontiguousarray(w, dtype=np.float64)
    if u.shape != x.shape or (u.size and (u.min() < 0 or u.max() >= w.shape[1])):
        raise ValueError(f"fit_profile: unit must give each observation a column of weights (0..{w.shape[1] - 1})")
    order = np.argsort(u, kind="stable")  # the rows of each unit together
    x, yy = np.ascontiguousarray(x[order]), np.ascontiguousarray(yy[order])
    starts = np.concatenate([[0], np.cumsum(np.bincount(u, minlength=w.shape[1]))]).astype(np.int64)
    if start is None:
        m = float(np.clip(yy.mean() if yy.size else 0.5, 1e-6, 1 - 1e-6))
        s0 = np.tile([math.log(m / (1 - m)), 0.0], (w.shape[0], 1))
    else:
        s0 = np.array(start, dtype=np.float64).reshape(-1, 2)
        s0[:, 1] *= EXTENT_SCALE_UM
        s0 = np.ascontiguousarray(np.broadcast_to(s0, (w.shape[0], 2)))
    coef, converged = newton_logistic(x, yy, starts, w, s0, EXTENT_MAX_ITER, EXTENT_TOL, EXTENT_MAX_STEP)
    coef[:, 1] /= EXTENT_SCALE_UM
    return coef, converged


def half_radius(coef: np.ndarray) -> np.ndarray:
    """``r`` with ``f(r) = f(0) / 2`` for ``f = expit(a + b d)``: inf where ``b >= 0`` (no fall-off)."""
    a, b = coef[..., 0], coef[..., 1]
    log_half = log_expit(a) - math.log(2.0)  # log(f(0) / 2)
    logit_half = log_half - np.log1p(-np.exp(log_half))
    with np.errstate(divide="ignore", invalid="ignore"):
        r = (logit_half - a) / b
    return np.where(b < 0, r, np.inf)


def bootstrap_weights(session: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """``(n_boot, n_units)`` counts: every session's units drawn with replacement, as many as it has.

    Units must be grouped by session code (``session`` is sorted or at least contiguous per code).
    """
    n = session.size
    sizes = np.bincount(session)
    first = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    order = np.argsort(session, kind="stable")  # position -> unit, sessions contiguous
    draw = first[session[order]] + (rng.random((n_boot, n)) * sizes[session[order]]).astype(np.int64)
    counts = np.bincount((draw + n * np.arange(n_boot)[:, None]).ravel(), minlength=n_boot * n).reshape(n_boot, n)
    w = np.empty((n_boot, n), dtype=np.float64)
    w[:, order] = counts
    return w


def percentile_interval(values: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval over axis 0 (no interpolation, so inf stays inf); NaN when there are no values."""
    if values.shape[0] == 0:
        nan = np.full(values.shape[1:], np.nan)
        return nan, nan.copy()
    low, high = np.quantile(values, [(1 - confidence) / 2, (1 + confidence) / 2], axis=0, method="inverted_cdf")
    return low, high
