"""Tests of opto_cube.analysis.power_response.

The saturating fit per unit x emitter, its flags and the generator's truth.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from helpers import SpatialDataset
from hypothesis import given
from hypothesis import strategies as st
from scipy.optimize import curve_fit

from opto_cube import synth
from opto_cube.analysis.power_response import power_response, saturating_response


def _unit_table(powers, pct, *, cluster=0, emitter=1, session="s", distance=50.0, wtype="FS") -> pd.DataFrame:
    return pd.DataFrame(
        {
            "session_id": session,
            "cluster": cluster,
            "emitter": emitter,
            "power_mw": powers,
            "duration_s": 0.05,
            "distance_um": distance,
            "waveform_type": wtype,
            "qc_pass": True,
            "pct_change": pct,
            "activated": np.asarray(pct) > 200,
            "inactivated": np.asarray(pct) < -50,
            "significant": True,
        }
    )


@given(
    gain=st.floats(1.0, 20.0),
    half_power=st.floats(0.1, 3.0),
    length=st.floats(150.0, 300.0),
    distance=st.floats(-400.0, 400.0),
    powers=st.lists(st.floats(0.1, 8.0), min_size=3, max_size=6, unique=True).filter(
        lambda p: np.ptp(p) > 0.3 * max(p)
    ),
)
def test_noise_free_model_is_recovered_exactly(gain, half_power, length, distance, powers) -> None:
    """On the generator's FS model without noise, pct = 100 A p(P) exp(-|d| / lambda): p50 = half_power exactly."""
    p = np.asarray(powers)
    pct = 100.0 * gain * p / (p + half_power) * np.exp(-abs(distance) / length)
    fits = power_response(_unit_table(p, pct, distance=distance), p50_range_factor=100.0)
    assert len(fits) == 1
    row = fits.iloc[0]
    np.testing.assert_allclose(row.p50_mw, half_power, rtol=1e-5)
    np.testing.assert_allclose(row.max_effect_pct, 100.0 * gain * np.exp(-abs(distance) / length), rtol=1e-5)
    assert row.fit_ok
    assert row.r_squared > 1 - 1e-9
    assert row.n_power_levels == p.size


def test_noisy_fits_equal_scipy_curve_fit() -> None:
    rng = np.random.default_rng(2)
    powers = np.array([0.25, 0.5, 1.0, 2.0, 4.0])
    tables, truth = [], []
    for cluster in range(20):
        effect, p50 = rng.uniform(100, 800), rng.uniform(0.3, 2.0)
        pct = saturating_response(powers, effect, p50) + rng.normal(0, 20, powers.size)
        tables.append(_unit_table(powers, pct, cluster=cluster))
        truth.append(pct)
    fits = power_response(pd.concat(tables, ignore_index=True))
    assert fits.fit_ok.sum() >= 10
    for cluster, pct in enumerate(truth):
        ref, _ = curve_fit(lambda p, e, c: e * p / (p + c), powers, pct, p0=[pct.max(), 1.0], maxfev=20000)
        row = fits[fits.cluster == cluster].iloc[0]
        ours = np.sum((pct - saturating_response(powers, row.max_effect_pct, row.p50_mw)) ** 2)
        theirs = np.sum((pct - saturating_response(powers, *ref)) ** 2)
        assert ours <= theirs * (1 + 1e-9) + 1e-9  # at least as good a least-squares fit
        if row.fit_ok:  # a well-determined optimum: the same parameters
            np.testing.assert_allclose([row.max_effect_pct, row.p50_mw], ref, rtol=1e-4)


def test_flags_and_selection() -> None:
    powers = np.array([1.0, 2.0, 4.0])
    tables = [
        _unit_table(powers, [175.0, 700.0 / 3, 280.0], cluster=0),  # ok (p50 = 1, effect 350 exactly)
        _unit_table(powers, [np.inf, 150.0, 175.0], cluster=1),  # undefined: no spike before the pulse
        _unit_table(powers, [100.0, -100.0, 100.0], cluster=2),  # poor fit
        _unit_table(powers, [10.0, 20.0, 40.0], cluster=3),  # linear: p50 far past the tested powers
        _unit_table(powers[:2], [100.0, 150.0], cluster=4),  # two levels: not fitted
    ]
    fits = power_response(pd.concat(tables, ignore_index=True)).set_index("cluster")
    assert fits.fit_flag.to_dict() == {0: "ok", 1: "undefined", 2: "poor_fit", 3: "p50_out_of_range"}
    assert fits.fit_ok.tolist() == [True, False, False, False]
    assert np.isnan(fits.loc[1, "p50_mw"])
    assert fits.loc[0, "responding"]
    assert not fits.loc[3, "responding"]
    np.testing.assert_allclose(fits.loc[0, ["p50_mw", "max_effect_pct"]].astype(float), [1.0, 350.0], rtol=1e-6)
    assert fits.loc[0, "min_power_mw"] == 1.0
    assert fits.loc[0, "max_power_mw"] == 4.0


def test_jittered_powers_are_one_level_and_longest_pulse_is_used() -> None:
    table = _unit_table([1.0, 1.0000001, 2.0, 4.0], [100.0, 100.0, 150.0, 175.0])
    table.loc[0, "duration_s"] = 0.01
    fits = power_response(table)
    assert fits.n_power_levels.tolist() == [3]
    assert fits.duration_s.tolist() == [0.05]
    with pytest.raises(ValueError, match="several rows for emitter 1"):
        power_response(table, duration_s=None)


@pytest.mark.parametrize(
    ("table", "kw", "error", "match"),
    [
        ([1, 2, 3], {}, TypeError, "pandas DataFrame"),
        (
            _unit_table([1.0, 2.0, 4.0], [1.0, 2.0, 3.0]).drop(columns="pct_change"),
            {},
            ValueError,
            "lacks the column.*'pct_change'",
        ),
        (_unit_table([1.0, 2.0, 4.0], [1.0, 2.0, 3.0]).assign(qc_pass=False), {}, ValueError, "no usable row"),
        (_unit_table([1.0, 2.0, 4.0], [1.0, 2.0, 3.0]), {"min_levels": 2}, ValueError, "min_levels must be"),
        (_unit_table([1.0, 2.0, 4.0], [1.0, 2.0, 3.0]), {"p50_range_factor": 0.5}, ValueError, "p50_range_factor"),
    ],
)
def test_bad_input_is_one_clear_error(table, kw, error, match) -> None:
    with pytest.raises(error, match=match):
        power_response(table, **kw)


def test_too_few_levels_everywhere_gives_an_empty_table() -> None:
    fits = power_response(_unit_table([1.0, 4.0], [100.0, 150.0]))
    assert fits.empty
    assert "p50_mw" in fits.columns


@pytest.mark.slow
def test_fs_p50_against_the_generator_truth(spatial_dataset: SpatialDataset) -> None:
    """Good fits of responding FS units near their emitter recover the generator's half-power (0.5 mW).

    The generator's FS multiplier is 1 + A P / (P + half_power) exp(-|d| / lambda), so the true
    curve of pct_change against power has p50 = half_power whatever A, d and lambda; the refractory
    period bends strongly driven units a little below it (it saturates them), hence the 20 % tolerance on
    the median over units.
    """
    fits = power_response(spatial_dataset.table)
    good = fits[fits.fit_ok & fits.responding & (fits.waveform_type == "FS") & (fits.distance_um.abs() < 200)]
    assert len(good) > 100
    truth = synth.load_ground_truth(spatial_dataset.root, good.session_id.iloc[0]).half_power_mw
    assert abs(good.p50_mw.median() - truth) < 0.2 * truth, good.p50_mw.median()
    assert (good.max_effect_pct > 200).mean() > 0.9
