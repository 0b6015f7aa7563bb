"""Tests of opto_cube.analysis.spatial: the logistic fall-off, the radius, the bootstrap, the table checks."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
from helpers import SpatialDataset, logistic_radius, logistic_table, noise_free_fs_radius
from hypothesis import given
from hypothesis import strategies as st
from scipy.optimize import minimize
from scipy.special import expit

import opto_cube
from opto_cube import schema
from opto_cube.analysis.extent_fit import bootstrap_weights, fit_profile, half_radius
from opto_cube.analysis.spatial import extent_rows, spatial_extent
from opto_cube.errors import OptoCubeWarning


def _quiet_extent(table: pd.DataFrame, **kw) -> object:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OptoCubeWarning)
        return spatial_extent(table, **kw)


# --------------------------------------------------------------------------
# The fit against an independent maximum-likelihood computation
# --------------------------------------------------------------------------
def _scipy_fit(d: np.ndarray, y: np.ndarray, w: np.ndarray | None = None) -> np.ndarray:
    """Logistic MLE by scipy's BFGS on the plain negative log-likelihood (d in 100 um for conditioning)."""
    w = np.ones_like(d) if w is None else w
    x = d / 100.0

    def nll(c: np.ndarray) -> float:
        eta = c[0] + c[1] * x
        return float(np.sum(w * (np.logaddexp(0.0, eta) - y * eta)))

    res = minimize(nll, np.zeros(2), method="BFGS", options={"gtol": 1e-10})
    return np.array([res.x[0], res.x[1] / 100.0])


@given(seed=st.integers(0, 2**31 - 1), n=st.integers(30, 300), a=st.floats(-1.0, 4.0), b=st.floats(-0.03, -0.002))
def test_fit_equals_scipy_mle(seed: int, n: int, a: float, b: float) -> None:
    rng = np.random.default_rng(seed)
    d = rng.uniform(0, 1000, n)
    y = (rng.random(n) < expit(a + b * d)).astype(float)
    if y.sum() in (0, n):  # no finite maximum of the likelihood
        return
    separated = y[np.argsort(d)]
    if np.all(np.diff(separated) <= 0):  # complete separation: the MLE is at infinity
        return
    coef, ok = fit_profile(d, y)
    assert ok[0]
    np.testing.assert_allclose(coef[0], _scipy_fit(d, y), rtol=1e-4, atol=1e-6)


def test_weights_are_replications() -> None:
    """A unit drawn twice (weight 2) counts as its rows written twice: bootstrap weights are exact counts."""
    rng = np.random.default_rng(3)
    d = rng.uniform(0, 800, 120)
    y = (rng.random(120) < expit(2 - d / 250)).astype(float)
    unit = np.repeat(np.arange(40), 3)
    w = rng.integers(0, 4, (5, 40)).astype(float)
    coef, _ = fit_profile(d, y, unit=unit, weights=w)
    for b in range(5):
        rows = np.repeat(np.arange(120), w[b, unit].astype(int))
        np.testing.assert_allclose(coef[b], _scipy_fit(d[rows], y[rows]), rtol=1e-4, atol=1e-6)


@given(a=st.floats(-6, 8), b=st.floats(-0.1, -1e-4))
def test_radius_halves_the_fraction(a: float, b: float) -> None:
    r = half_radius(np.array([a, b]))
    assert math.isclose(r, logistic_radius(a, b), rel_tol=1e-7, abs_tol=1e-6)
    assert math.isclose(expit(a + b * r), expit(a) / 2, rel_tol=1e-7)


def test_no_fall_off_is_infinite() -> None:
    assert np.isinf(half_radius(np.array([[1.0, 0.0], [1.0, 0.01]]))).all()


def test_bootstrap_weights_resample_within_sessions() -> None:
    rng = np.random.default_rng(0)
    session = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 1])
    w = bootstrap_weights(session, 2000, rng)
    for s in range(3):
        np.testing.assert_array_equal(w[:, session == s].sum(axis=1), (session == s).sum())
    np.testing.assert_allclose(w.mean(axis=0), 1.0, atol=0.1)  # each unit drawn once on average


# --------------------------------------------------------------------------
# Planted logistic fall-off: the radius, the profile, the interval
# --------------------------------------------------------------------------
def test_planted_logistic_radius_and_profile() -> None:
    rng = np.random.default_rng(5)
    table = logistic_table(rng, n_sessions=10, units_per_session=60, powers=(1.0, 2.0))
    ext = spatial_extent(table, n_boot=300, waveform_types=["FS"], effects=["activated"])
    truth = logistic_radius(3.0, -0.012)
    for power in (1.0, 2.0):
        e = ext.sel(waveform_type="FS", effect="activated", power_mw=power)
        assert abs(float(e.radius_um) - truth) < 0.08 * truth
        assert float(e.radius_low_um) < float(e.radius_um) < float(e.radius_high_um)
        expected = expit(3.0 - 0.012 * ext.abs_distance_um.values)
        np.testing.assert_allclose(e.profile.values, expected, atol=0.06)
        assert (e.profile_low.values <= e.profile.values + 1e-12).all()
        assert (e.profile.values <= e.profile_high.values + 1e-12).all()
        a, b = e.coefficients.values
        np.testing.assert_allclose(e.radius_um.item(), logistic_radius(a, b), rtol=1e-6)


def test_observed_fraction_equals_direct_count() -> None:
    rng = np.random.default_rng(8)
    table = logistic_table(rng, n_sessions=3, units_per_session=30, powers=(0.5, 4.0))
    ext = spatial_extent(table, n_boot=0, bin_um=150.0, waveform_types=["FS"], effects=["activated"])
    for power in (0.5, 4.0):
        rows = table[np.isclose(table.power_mw, power)]
        bins = (rows.distance_um.abs() // 150.0).astype(int)
        direct = (rows.activated & rows.significant).groupby(bins).mean()
        sel = ext.sel(waveform_type="FS", effect="activated", power_mw=power)
        np.testing.assert_allclose(sel.observed_fraction.values[direct.index], direct.values)
        np.testing.assert_array_equal(sel.n_in_bin.values[direct.index], bins.value_counts().sort_index().values)


def test_same_seed_same_result_and_n_boot_zero_has_no_interval() -> None:
    table = logistic_table(np.random.default_rng(1), n_sessions=3)
    a = spatial_extent(table, n_boot=50, seed=4, waveform_types=["FS"], effects=["activated"])
    b = spatial_extent(table, n_boot=50, seed=4, waveform_types=["FS"], effects=["activated"])
    assert a.identical(b)
    none = spatial_extent(table, n_boot=0, waveform_types=["FS"], effects=["activated"])
    assert np.isnan(none.radius_low_um).all()
    assert np.isfinite(none.radius_um).all()
    np.testing.assert_allclose(none.radius_um, a.radius_um)


@pytest.mark.slow
def test_bootstrap_interval_covers_about_95_percent() -> None:
    """Coverage of the percentile interval on 200 independent draws from a planted logistic fall-off."""
    truth = logistic_radius(2.0, -0.008)
    covered = 0
    reps = 200
    for rep in range(reps):
        table = logistic_table(
            np.random.default_rng(1000 + rep), n_sessions=5, units_per_session=40, intercept=2.0, slope_per_um=-0.008
        )
        ext = spatial_extent(table, n_boot=500, seed=rep, waveform_types=["FS"], effects=["activated"])
        covered += float(ext.radius_low_um.item()) <= truth <= float(ext.radius_high_um.item())
    assert 0.89 <= covered / reps <= 0.99, covered / reps


# --------------------------------------------------------------------------
# The generator's truth: converted synthetic sessions
# --------------------------------------------------------------------------
@pytest.mark.slow
def test_fs_radius_against_the_generator_truth(spatial_dataset: SpatialDataset) -> None:
    """FS activation radius: grows with power, its interval brackets the noise-free radius, within 15 % of it.

    The noise-free radius is derived from the generator's model in
    ``helpers.noise_free_fs_radius`` (the published rule on expected rates).
    """
    ext = _quiet_extent(spatial_dataset.table)
    rows, levels, _ = extent_rows(spatial_dataset.table)
    fs = ext.sel(waveform_type="FS", effect="activated")
    radius = fs.radius_um.values
    assert levels.size == 3, radius
    assert np.all(np.diff(radius) > 0), radius
    for k, power in enumerate(levels):
        units = rows[(rows.waveform_type == "FS") & (rows.power_level == k)]
        truth = noise_free_fs_radius(units, spatial_dataset.root, power)
        assert abs(radius[k] - truth) <= 0.15 * truth, (power, radius[k], truth)
        assert fs.radius_low_um.values[k] <= truth <= fs.radius_high_um.values[k], (power, truth)
    assert (fs.fraction_at_emitter.values > 0.9).all()


# --------------------------------------------------------------------------
# Selecting rows: durations, powers, artifacts
# --------------------------------------------------------------------------
def test_longest_pulse_per_session_and_powers_pooled() -> None:
    table = pd.DataFrame(
        {
            "session_id": ["a", "a", "b", "b"],
            "cluster": [0, 0, 0, 1],
            "emitter": 1,
            "power_mw": [2.0, 2.0000001, 1.9999999, 2.0],
            "duration_s": [0.01, 0.05, 0.01, 0.01],
            "distance_um": [10.0, 10.0, -20.0, 300.0],
            "waveform_type": "FS",
            "qc_pass": True,
            "activated": True,
            "inactivated": False,
            "significant": True,
        }
    )
    rows, levels, info = extent_rows(table)
    assert rows.index.tolist() == [1, 2, 3]
    assert levels.size == 1
    assert info["rows_other_duration"] == 1
    rows, _, _ = extent_rows(table, duration_s="min")
    assert rows.index.tolist() == [0, 2, 3]
    with pytest.raises(ValueError, match="several rows for emitter 1"):
        extent_rows(table, duration_s=None)


def test_light_artifact_units_are_left_out() -> None:
    table = logistic_table(np.random.default_rng(2), n_sessions=3)
    artifacts = table.head(30).assign(cluster=1000 + np.arange(30), activated=True, distance_um=800.0)
    with_artifacts = pd.concat([table, artifacts], ignore_index=True)
    with_artifacts["light_artifact"] = np.arange(len(with_artifacts)) >= len(table)
    kw = dict(n_boot=20, waveform_types=["FS"], effects=["activated"])
    clean = spatial_extent(table, **kw)
    dropped = spatial_extent(with_artifacts, **kw)
    np.testing.assert_allclose(dropped.radius_um, clean.radius_um)
    assert dropped.attrs["table_rows_light_artifact"] == 30
    kept = spatial_extent(with_artifacts, exclude_artifacts=False, **kw)
    assert float(kept.radius_um.item()) > float(clean.radius_um.item())


def test_qc_unknown_type_and_pooled_emitter_rows_are_left_out() -> None:
    table = logistic_table(np.random.default_rng(6), n_sessions=2)
    junk = table.head(10).assign(cluster=500 + np.arange(10), activated=True, distance_um=850.0)
    junk["qc_pass"] = [False] * 5 + [True] * 5
    junk["waveform_type"] = ["FS"] * 5 + ["", None, "XX", "FS", "FS"]
    junk.loc[junk.index[-2:], "emitter"] = schema.ALL_EMITTERS
    both = pd.concat([table, junk], ignore_index=True)
    kw = dict(n_boot=0, waveform_types=["FS"], effects=["activated"])
    np.testing.assert_allclose(spatial_extent(both, **kw).radius_um, spatial_extent(table, **kw).radius_um)


# --------------------------------------------------------------------------
# The Dataset: labels, dims
# --------------------------------------------------------------------------
def test_dataset_is_labelled() -> None:
    table = pd.concat(
        [
            logistic_table(np.random.default_rng(4), powers=(1.0, 4.0)),
            logistic_table(np.random.default_rng(5), powers=(1.0, 4.0), waveform_type="RS").assign(
                cluster=lambda t: t.cluster + 1000, inactivated=lambda t: t.activated, activated=False
            ),
        ]
    )
    ext = _quiet_extent(table, n_boot=20)
    assert ext.radius_um.dims == ("waveform_type", "effect", "power_mw")
    assert ext.waveform_type.values.tolist() == ["RS", "FS"]
    assert ext.effect.values.tolist() == ["activated", "inactivated"]
    np.testing.assert_allclose(ext.power_mw.values, [1.0, 4.0])
    for name in [*ext.data_vars, *ext.coords]:
        assert {"units", "long_name"} <= set(ext[name].attrs), name
    assert ext.radius_um.attrs["units"] == "um"
    assert "logistic" in ext.attrs["method"]
    assert ext.attrs["n_boot"] == 20
    assert ext.attrs["confidence"] == 0.95
    assert np.isnan(ext.radius_um.sel(waveform_type="RS", effect="activated")).all()
    assert np.isfinite(ext.radius_um.sel(waveform_type="RS", effect="inactivated")).all()
    assert (ext.n_units.values == 200).all()
    assert (ext.n_sessions.values == 4).all()
    assert opto_cube.spatial_extent is spatial_extent


# --------------------------------------------------------------------------
# Bad tables and parameters: one clear error, or NaN with a warning
# --------------------------------------------------------------------------
_GOOD = logistic_table(np.random.default_rng(0), n_sessions=2, units_per_session=10)


@pytest.mark.parametrize(
    ("table", "kw", "error", "match"),
    [
        (_GOOD.to_numpy(), {}, TypeError, "expects the responses table as a pandas DataFrame"),
        (
            _GOOD.drop(columns=["distance_um", "significant"]),
            {},
            ValueError,
            "lacks the column.*'distance_um', 'significant'",
        ),
        (_GOOD.assign(qc_pass=False), {}, ValueError, "no usable row"),
        (_GOOD.assign(distance_um=np.nan), {}, ValueError, "no usable row"),
        (_GOOD.iloc[:0], {}, ValueError, "no usable row"),
        (_GOOD, {"duration_s": 0.2}, ValueError, "no usable row"),
        (_GOOD, {"duration_s": "longest"}, ValueError, "duration_s must be"),
        (_GOOD, {"n_boot": -1}, ValueError, "n_boot must be"),
        (_GOOD, {"confidence": 95}, ValueError, "confidence must lie in"),
        (_GOOD, {"bin_um": 0}, ValueError, "bin_um must be a positive"),
        (_GOOD, {"waveform_types": ["PV"]}, ValueError, "waveform_types must be among"),
    ],
)
def test_bad_input_is_one_clear_error(table: object, kw: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        spatial_extent(table, **kw)


def test_no_responding_unit_is_nan_with_a_warning() -> None:
    table = _GOOD.assign(activated=False)
    with pytest.warns(OptoCubeWarning, match="FS activated at 1 mW: no unit responding of 60"):
        ext = spatial_extent(table, n_boot=10, waveform_types=["FS"], effects=["activated"])
    assert np.isnan(ext.radius_um).all()
    assert np.isnan(ext.radius_high_um).all()
    assert int(ext.n_responding.sum()) == 0
    assert int(ext.n_units.item()) == 20


def test_every_unit_responding_or_rising_is_nan_with_a_warning() -> None:
    with pytest.warns(OptoCubeWarning, match="every unit responding"):
        ext = spatial_extent(_GOOD.assign(activated=True), n_boot=10, waveform_types=["FS"], effects=["activated"])
    assert np.isnan(ext.radius_um).all()
    rising = _GOOD.assign(activated=_GOOD.distance_um.abs() > 300)
    rising.loc[rising.index[:3], "activated"] = True
    with pytest.warns(OptoCubeWarning, match="does not fall with distance"):
        ext = spatial_extent(rising, n_boot=10, waveform_types=["FS"], effects=["activated"])
    assert np.isnan(ext.radius_um).all()


def test_one_session_warns_and_one_power_works() -> None:
    one = _GOOD[_GOOD.session_id == "S0"]
    with pytest.warns(OptoCubeWarning, match="one session .'S0'."):
        ext = spatial_extent(one, n_boot=50, waveform_types=["FS"], effects=["activated"])
    assert ext.power_mw.size == 1
    assert np.isfinite(ext.radius_um).all()
