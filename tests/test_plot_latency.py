"""Tests of opto_cube.figures.plot_latency: latency against distance, FS and RS apart, per power, artifacts left out."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from opto_cube import schema
from opto_cube.figures.plot_latency import plot_latency_vs_distance

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _table(n: int = 200, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    waveform = rng.choice(["FS", "RS"], n)
    distance = rng.uniform(-600, 600, n)
    latency = np.where(waveform == "FS", 3.0, 8.0) + np.abs(distance) / 100 + rng.normal(0, 0.5, n)
    latency[rng.random(n) < 0.2] = np.nan
    return pd.DataFrame(
        {
            schema.DISTANCE: distance,
            schema.POWER: rng.choice([1.0, 4.0], n),
            schema.WAVEFORM_TYPE: waveform,
            schema.LATENCY: latency,
            schema.LIGHT_ARTIFACT: rng.random(n) < 0.05,
        }
    )


def test_axes_labels_and_series():
    table = _table()
    ax = plot_latency_vs_distance(table)
    assert ax.get_xlabel() == "distance from emitter (µm; + deeper)"
    assert "(ms)" in ax.get_ylabel()
    labels = sorted(t.get_text() for t in ax.get_legend().get_texts())
    assert labels == ["FS, 1 mW", "FS, 4 mW", "RS, 1 mW", "RS, 4 mW"]
    kept = table[~table[schema.LIGHT_ARTIFACT] & table[schema.LATENCY].notna()]
    assert sum(len(c.get_offsets()) for c in ax.collections) == len(kept)  # every point drawn, artifacts left out
    line = next(line for line in ax.get_lines() if line.get_label() == "FS, 4 mW")
    sub = kept[(kept[schema.WAVEFORM_TYPE] == "FS") & (kept[schema.POWER] == 4.0)]
    centre = np.round(sub[schema.DISTANCE] / 100.0) * 100.0
    np.testing.assert_allclose(line.get_ydata(), sub[schema.LATENCY].groupby(centre.to_numpy()).median().to_numpy())


def test_include_artifacts_and_given_axes():
    table = _table(seed=1)
    _, ax = plt.subplots()
    assert plot_latency_vs_distance(table, ax, include_artifacts=True) is ax
    assert sum(len(c.get_offsets()) for c in ax.collections) == int(table[schema.LATENCY].notna().sum())


def test_missing_column_refused():
    with pytest.raises(ValueError, match="latency_ms"):
        plot_latency_vs_distance(_table().drop(columns=schema.LATENCY))
