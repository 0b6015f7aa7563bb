"""Tests of opto_cube.figures.plot_extent: the figures draw what they are given, labelled, and refuse other input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from helpers import logistic_table

from opto_cube import schema
from opto_cube.analysis.power_response import power_response
from opto_cube.analysis.spatial import spatial_extent
from opto_cube.figures import plot_extent
from opto_cube.figures.plot import WAVEFORM_COLORS


@pytest.fixture(scope="module")
def extent() -> xr.Dataset:
    rng = np.random.default_rng(0)
    fs = logistic_table(rng, n_sessions=3, units_per_session=40, powers=(1.0, 4.0))
    rs = logistic_table(rng, n_sessions=3, units_per_session=40, powers=(1.0, 4.0), waveform_type="RS", intercept=1.0)
    rs = rs.assign(cluster=rs.cluster + 1000, inactivated=rs.activated, activated=False)
    return _extent(fs, rs)


def _extent(fs: pd.DataFrame, rs: pd.DataFrame) -> xr.Dataset:
    import warnings

    from opto_cube.errors import OptoCubeWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OptoCubeWarning)  # RS activated / FS inactivated: no responding unit
        return spatial_extent(pd.concat([fs, rs], ignore_index=True), n_boot=50)


@pytest.fixture(scope="module")
def fits() -> pd.DataFrame:
    rng = np.random.default_rng(1)
    powers = np.array([0.5, 1.0, 2.0, 4.0])
    rows = []
    for cluster in range(12):
        wtype = "FS" if cluster % 2 else "RS"
        effect = 500.0 if wtype == "FS" else -80.0
        pct = effect * powers / (powers + rng.uniform(0.3, 1.0)) + rng.normal(0, 3, powers.size)
        rows.append(
            pd.DataFrame(
                {
                    "session_id": "s",
                    "cluster": cluster,
                    "emitter": 2,
                    "power_mw": powers,
                    "duration_s": 0.05,
                    "distance_um": rng.uniform(-300, 300),
                    "waveform_type": wtype,
                    "qc_pass": True,
                    "pct_change": pct,
                    "activated": pct > 200,
                    "inactivated": pct < -50,
                    "significant": True,
                }
            )
        )
    table = pd.concat(rows, ignore_index=True)
    out = power_response(table)
    out.attrs["points"] = table
    return out


def test_profiles_draw_every_power_with_labels(extent: xr.Dataset) -> None:
    axes = plot_extent.plot_extent_profiles(extent)
    assert axes.shape == (2,)
    for ax, (wtype, effect) in zip(axes, plot_extent.PAIRS, strict=True):
        assert ax.get_title() == f"{wtype} {effect}"
        assert "µm" in ax.get_xlabel()
        assert effect in ax.get_ylabel()
        labels = [t.get_text() for t in ax.get_legend().get_texts()]
        assert len(labels) == 2
        assert all("n = 120" in t for t in labels)
        radius = extent[schema.EXTENT_RADIUS].sel(waveform_type=wtype, effect=effect).values
        assert all(f"r = {r:.0f} µm" in t for r, t in zip(radius, labels, strict=True))


def test_radius_against_power(extent: xr.Dataset) -> None:
    ax = plot_extent.plot_radius_vs_power(extent)
    assert ax.get_xlabel() == "power (mW)"
    assert "µm" in ax.get_ylabel()
    lines = [line for line in ax.get_lines() if len(line.get_xdata()) == 2]
    colours = {line.get_color() for line in lines}
    assert {WAVEFORM_COLORS["FS"], WAVEFORM_COLORS["RS"]} <= colours
    fs = extent[schema.EXTENT_RADIUS].sel(waveform_type="FS", effect=schema.ACTIVATED).values
    assert any(np.allclose(line.get_ydata(), fs) for line in lines)


def test_p50_and_power_curves(fits: pd.DataFrame) -> None:
    ax = plot_extent.plot_p50_vs_distance(fits)
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    n_fs = int((fits.fit_ok & fits.responding & (fits.waveform_type == "FS")).sum())
    assert f"FS (n = {n_fs})" in labels
    assert "mW" in ax.get_ylabel()
    ax = plot_extent.plot_power_curves(fits, fits.attrs["points"], n_examples=4)
    assert len(ax.get_legend().get_texts()) == 4
    assert len(ax.collections) == 4
    assert ax.get_xlabel() == "power (mW)"
    assert "%" in ax.get_ylabel()


def test_draws_into_given_axes(extent: xr.Dataset) -> None:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3)
    out = plot_extent.plot_extent_profiles(extent, axes=axes[:2])
    assert out[0] is axes[0]
    assert plot_extent.plot_radius_vs_power(extent, ax=axes[2]) is axes[2]
    with pytest.raises(ValueError, match="expected 2 axes, got 3"):
        plot_extent.plot_extent_profiles(extent, axes=axes)
    plt.close(fig)


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda e, f: plot_extent.plot_extent_profiles(f), TypeError, "expects the Dataset"),
        (lambda e, f: plot_extent.plot_radius_vs_power(e, pairs=[("FS", "spiking")]), ValueError, "has no"),
        (lambda e, f: plot_extent.plot_p50_vs_distance(e), TypeError, "expects the table"),
        (lambda e, f: plot_extent.plot_power_curves(f.drop(columns="p50_mw")), TypeError, "expects the table"),
    ],
)
def test_wrong_input_is_refused(extent: xr.Dataset, fits: pd.DataFrame, call, error, match) -> None:
    with pytest.raises(error, match=match):
        call(extent, fits)
