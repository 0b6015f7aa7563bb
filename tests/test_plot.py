"""Tests of opto_cube.figures.plot and of the ``maps`` and ``demo`` commands.

Labelled axes, real PNGs, files in place.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from helpers import assert_png, random_table

from opto_cube import schema
from opto_cube.analysis import maps, psth
from opto_cube.figures import plot
from opto_cube.store.open import open_cube

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def assert_labelled(ax) -> None:
    assert ax.get_xlabel(), (ax.get_xlabel(), ax.get_ylabel(), ax.get_title())
    assert ax.get_ylabel(), (ax.get_xlabel(), ax.get_ylabel(), ax.get_title())
    assert ax.get_title(), (ax.get_xlabel(), ax.get_ylabel(), ax.get_title())


def test_importing_opto_cube_does_not_import_matplotlib():
    code = (
        "import sys, opto_cube, opto_cube.analysis.maps, opto_cube.figures.plot, opto_cube.jobs.pipeline; "
        "print(sorted({'matplotlib', 'flox', 'distributed'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --------------------------------------------------------------------------
# each plot function: axes returned, labelled, savable
# --------------------------------------------------------------------------
def test_plot_effect_map(tmp_path):
    table = random_table()
    axes = plot.plot_effect_map(maps.effect_map(table))
    assert axes.shape == (2, 2)
    for ax in axes.ravel():
        assert_labelled(ax)
        assert ax.get_xlabel() == plot.DISTANCE_LABEL
        assert ax.get_ylabel() == "power (mW)"
    assert "RS" in axes[0, 0].get_title()
    assert "FS" in axes[1, 0].get_title()
    assert "inactivated" in axes[0, 1].get_title()
    colorbar_labels = {a.get_ylabel() for a in axes[0, 0].figure.axes} - {"power (mW)"}
    assert colorbar_labels == {"fraction activated", "fraction inactivated"}
    assert_png(plot.save_figure(axes[0, 0].figure, tmp_path / "effect.png"))
    # into given axes, other shapes of map
    _fig, given = plt.subplots(1, 2)
    pooled = maps.effect_map(table, by=(schema.POWER,))
    assert (plot.plot_effect_map(pooled, axes=given, annotate=True).ravel() == given).all()
    single = plot.plot_effect_map(maps.effect_map(table, by=()), effects=(schema.ACTIVATED,))
    assert single.shape == (1, 1)
    with pytest.raises(ValueError, match="select or sum"):
        plot.plot_effect_map(maps.effect_map(table, by=(schema.EMITTER,)))
    with pytest.raises(ValueError, match="expected 2 x 2 axes"):
        plot.plot_effect_map(maps.effect_map(table), axes=given)


def test_plot_depth_vs_emitter(tmp_path):
    result = maps.depth_vs_emitter(random_table(2000, seed=3))
    axes = plot.plot_depth_vs_emitter(result)
    assert len(axes) == 2
    for ax, effect in zip(axes, schema.EFFECTS, strict=True):
        assert_labelled(ax)
        labels = [t.get_text() for t in ax.get_legend().get_texts()]
        assert labels[-1] == "identity"
        assert any(label.startswith("FS (r = ") for label in labels)
        r = float(result.stats[schema.MAP_PEARSON_R].sel({schema.WAVEFORM_TYPE: "FS", schema.MAP_EFFECT: effect}))
        assert f"r = {r:.2f}" in " ".join(labels)
        assert ax.get_ylim()[0] > ax.get_ylim()[1]  # depth grows downward
    assert_png(plot.save_figure(axes[0].figure, tmp_path / "depth.png"))
    empty = maps.depth_vs_emitter(random_table(30).assign(**{schema.SIGNIFICANT: False}))
    _fig, ax = plt.subplots()
    assert list(plot.plot_depth_vs_emitter(empty, axes=[ax], effects=(schema.ACTIVATED,))) == [ax]


def test_plot_modulation_index(tmp_path):
    table = random_table().assign(
        **{schema.TROUGH_TO_PEAK: lambda t: np.where(t[schema.WAVEFORM_TYPE] == "FS", 0.3, 0.8)}
    )
    mi = maps.modulation_index(table)
    fig, ax = plt.subplots()
    assert plot.plot_modulation_index(mi, ax=ax) is ax
    assert_labelled(ax)
    assert ax.get_xlabel() == "spike width, trough to peak (ms)"
    assert {t.get_text().split(" (")[0] for t in ax.get_legend().get_texts()} == {"RS", "FS", "unknown type"}
    assert_png(plot.save_figure(fig, tmp_path / "mi.png"))


def test_plot_psth(tiny_converted, tmp_path):
    cube = open_cube(tiny_converted.stores[10.0])
    rate = psth.psth(cube, power_mw="max")
    fig, ax = plt.subplots()
    assert plot.plot_psth(rate, ax=ax, label="all clusters") is ax
    assert_labelled(ax)
    assert ax.get_xlabel() == "time from light onset (ms)"
    assert ax.get_ylabel() == "firing rate (Hz)"
    assert len(ax.patches) >= 1  # the light pulse, shaded
    line = ax.get_lines()[0]
    np.testing.assert_allclose(line.get_ydata(), rate.mean(schema.CLUSTER).values)
    assert_png(plot.save_figure(fig, tmp_path / "psth.png"), min_bytes=2_000)
    with pytest.raises(ValueError, match="needs a 'time' dim"):
        plot.plot_psth(rate.isel({schema.TIME: 0}))


def test_save_figure_is_atomic(tmp_path):
    fig, ax = plt.subplots()
    ax.plot([0, 1])
    target = tmp_path / "sub" / "f.png"
    plot.save_figure(fig, target)
    assert sorted(p.name for p in target.parent.iterdir()) == ["f.png"]
