"""Tests of opto_cube.analysis.maps: effect maps against an independent pandas computation, depth vs emitter,
modulation index, and the ground truth of synthetic sessions end to end."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from helpers import NOMINAL_POWERS, random_table

from opto_cube import schema, synth
from opto_cube.analysis import maps
from opto_cube.analysis.conditions import select_conditions
from opto_cube.errors import OptoCubeWarning
from opto_cube.jobs import convert
from opto_cube.jobs.pipeline import responses_table
from opto_cube.store.catalog import open_catalog


# --------------------------------------------------------------------------
# A handmade responses table, and the reference computed independently with pandas
# --------------------------------------------------------------------------
def reference_counts(table, edges, *, significant_only, qc_only, unknown_waveform) -> pd.DataFrame:
    """n, activated, inactivated per (distance bin, nominal power, waveform type), plain pandas."""
    df = table.copy()
    df["type"] = df[schema.WAVEFORM_TYPE].fillna("")
    if qc_only:
        df = df[df[schema.QC_PASS]]
    if unknown_waveform == "drop":
        df = df[df["type"] != ""]
    df = df.assign(
        bin=pd.cut(df[schema.DISTANCE], edges, right=False, labels=False),
        level=df[schema.POWER].round(4),
        act=df[schema.ACTIVATED] & (df[schema.SIGNIFICANT] | (not significant_only)),
        inact=df[schema.INACTIVATED] & (df[schema.SIGNIFICANT] | (not significant_only)),
    ).dropna(subset=["bin"])
    df["bin"] = df["bin"].astype(int)
    return df.groupby(["bin", "level", "type"]).agg(n=("act", "size"), a=("act", "sum"), i=("inact", "sum"))


def map_counts(m: xr.Dataset) -> pd.DataFrame:
    flat = m[[schema.MAP_N_UNITS, schema.MAP_N_ACTIVATED, schema.MAP_N_INACTIVATED]].to_dataframe().reset_index()
    flat["bin"] = np.searchsorted(m[schema.DISTANCE].values, flat[schema.DISTANCE].values)
    flat["level"] = flat[schema.POWER].round(4)
    flat["type"] = flat[schema.WAVEFORM_TYPE]
    out = flat.set_index(["bin", "level", "type"])[
        [schema.MAP_N_UNITS, schema.MAP_N_ACTIVATED, schema.MAP_N_INACTIVATED]
    ]
    return out.set_axis(["n", "a", "i"], axis=1)


# --------------------------------------------------------------------------
# effect_map
# --------------------------------------------------------------------------
@pytest.mark.parametrize("bin_um", [25.0, 100.0, 137.5])
@pytest.mark.parametrize(
    ("significant_only", "qc_only", "unknown_waveform", "range_um"),
    [
        (True, True, "drop", None),
        (False, True, "drop", None),
        (True, False, "keep", None),
        (False, False, "keep", (-500.0, 700.0)),
    ],
)
def test_effect_map_equals_pandas(bin_um, significant_only, qc_only, unknown_waveform, range_um):
    table = random_table()
    m = maps.effect_map(
        table,
        distance_bin_um=bin_um,
        distance_range_um=range_um,
        significant_only=significant_only,
        qc_only=qc_only,
        unknown_waveform=unknown_waveform,
    )
    edges = m.attrs[schema.MAP_DISTANCE_EDGES]
    np.testing.assert_allclose(np.diff(edges), bin_um)
    np.testing.assert_allclose(m[schema.DISTANCE].values, (edges[:-1] + edges[1:]) / 2)
    if range_um is None:
        assert np.isclose(edges[0], -edges[-1])
        assert np.any(np.isclose(m[schema.DISTANCE].values, 0.0))
        assert np.nanmax(np.abs(table[schema.DISTANCE])) < edges[-1]
    else:
        assert edges[0] == range_um[0]
        assert edges[-1] >= range_um[1]

    ref = reference_counts(
        table, edges, significant_only=significant_only, qc_only=qc_only, unknown_waveform=unknown_waveform
    )
    got = map_counts(m)
    assert got["n"].sum() == ref["n"].sum() == m.attrs["n_rows"]
    aligned = ref.reindex(got.index, fill_value=0)
    pd.testing.assert_frame_equal(got, aligned.astype(got.dtypes.to_dict()), check_names=False)
    # fractions: counts over n, NaN in empty bins
    n = m[schema.MAP_N_UNITS]
    xr.testing.assert_allclose(m[schema.MAP_FRACTION_ACTIVATED], (m[schema.MAP_N_ACTIVATED] / n).where(n > 0))
    xr.testing.assert_allclose(m[schema.MAP_FRACTION_INACTIVATED], (m[schema.MAP_N_INACTIVATED] / n).where(n > 0))
    assert m[schema.MAP_FRACTION_ACTIVATED].where(n == 0).isnull().all()
    # powers: three levels whose coordinate is the mean of their (jittered) powers
    np.testing.assert_allclose(m[schema.POWER].values, NOMINAL_POWERS, rtol=1e-7)
    labels = ["RS", "FS", ""] if unknown_waveform == "keep" else ["RS", "FS"]
    assert m[schema.WAVEFORM_TYPE].values.tolist() == labels
    assert m[schema.MAP_FRACTION_ACTIVATED].dims == (schema.DISTANCE, schema.POWER, schema.WAVEFORM_TYPE)


def test_effect_map_labels_units_and_edges():
    m = maps.effect_map(random_table(200))
    for name in m.variables:
        assert {"units", "long_name"} <= set(m[name].attrs), name
    assert m[schema.DISTANCE].attrs["units"] == "um"
    assert m[schema.POWER].attrs["units"] == "mW"
    assert m.attrs["significant_only"] == 1
    assert m.attrs["qc_only"] == 1
    assert m.attrs["n_sessions"] == 3
    assert m[schema.MAP_N_UNITS].dtype.kind == "i"


def test_rows_on_an_edge_go_to_the_upper_bin():
    table = pd.DataFrame(
        {
            schema.DISTANCE: [-50.0, 50.0, 49.999],
            schema.POWER: 1.0,
            schema.WAVEFORM_TYPE: "FS",
            schema.QC_PASS: True,
            schema.ACTIVATED: True,
            schema.INACTIVATED: False,
            schema.SIGNIFICANT: True,
        }
    )
    m = maps.effect_map(table, distance_bin_um=100.0, by=())
    assert m[schema.MAP_N_UNITS].to_series().to_dict() == {-100.0: 0, 0.0: 2, 100.0: 1}


def test_empty_bins_have_zero_units_and_nan_fractions():
    table = random_table(50)
    m = maps.effect_map(table, distance_range_um=(-3000.0, 3000.0), distance_bin_um=500.0)
    outer = m.sel({schema.DISTANCE: [-2750.0, 2750.0]})
    assert (outer[schema.MAP_N_UNITS] == 0).all()
    assert outer[schema.MAP_FRACTION_ACTIVATED].isnull().all()
    assert outer[schema.MAP_FRACTION_INACTIVATED].isnull().all()
    # a table with no rows at all still maps, over the given range
    empty = maps.effect_map(table.iloc[:0], distance_range_um=(-100.0, 100.0))
    assert int(empty[schema.MAP_N_UNITS].sum()) == 0
    assert empty[schema.MAP_FRACTION_ACTIVATED].isnull().all()


def test_pooling_and_other_dimensions():
    table = random_table()
    full = maps.effect_map(table)
    pooled = maps.effect_map(table, by=())
    assert pooled[schema.MAP_N_UNITS].dims == (schema.DISTANCE,)
    xr.testing.assert_equal(
        pooled[schema.MAP_N_UNITS], full[schema.MAP_N_UNITS].sum([schema.POWER, schema.WAVEFORM_TYPE])
    )
    by_emitter = maps.effect_map(table, by=(schema.EMITTER, schema.WAVEFORM_TYPE))
    assert by_emitter[schema.EMITTER].values.tolist() == sorted(table[schema.EMITTER].unique())
    assert int(by_emitter[schema.MAP_N_UNITS].sum()) == int(full[schema.MAP_N_UNITS].sum())
    by_session = maps.effect_map(table, by=schema.SESSION_ID)
    assert by_session[schema.SESSION_ID].values.tolist() == ["s0", "s1", "s2"]


def test_powers_across_sessions_levels_or_bins():
    # two sessions calibrated a little differently: 0.98 / 1.02 mW and 3.9 / 4.1 mW
    power = np.array([0.98, 1.02, 3.9, 4.1, 0.98 * (1 + 1e-8), 4.1])
    table = pd.DataFrame(
        {
            schema.DISTANCE: 0.0,
            schema.POWER: power,
            schema.WAVEFORM_TYPE: "FS",
            schema.QC_PASS: True,
            schema.ACTIVATED: [True, False, True, True, True, False],
            schema.INACTIVATED: False,
            schema.SIGNIFICANT: True,
        }
    )
    levels = maps.effect_map(table)
    np.testing.assert_allclose(levels[schema.POWER].values, [0.98, 1.02, 3.9, 4.1], rtol=1e-7)
    assert levels[schema.MAP_N_UNITS].sel({schema.DISTANCE: 0.0, schema.WAVEFORM_TYPE: "FS"}).values.tolist() == [
        2,
        1,
        1,
        2,
    ]
    binned = maps.effect_map(table, power_bins_mw=[0.5, 2.0, 8.0])
    assert binned[schema.POWER].values.tolist() == [1.25, 5.0]
    assert binned.attrs[schema.MAP_POWER_EDGES].tolist() == [0.5, 2.0, 8.0]
    counts = binned.sel({schema.DISTANCE: 0.0, schema.WAVEFORM_TYPE: "FS"})
    assert counts[schema.MAP_N_UNITS].values.tolist() == [3, 3]
    np.testing.assert_allclose(counts[schema.MAP_FRACTION_ACTIVATED].values, [2 / 3, 2 / 3])


def test_a_table_read_back_from_csv_maps_the_same(tmp_path):
    table = random_table()
    table[schema.WAVEFORM_TYPE] = table[schema.WAVEFORM_TYPE].fillna("")
    table.to_csv(tmp_path / "responses.csv", index=False)
    back = pd.read_csv(tmp_path / "responses.csv")  # "" comes back as NaN
    assert back[schema.WAVEFORM_TYPE].isna().any()
    for kw in ({}, {"unknown_waveform": "keep"}):
        xr.testing.assert_identical(maps.effect_map(back, **kw), maps.effect_map(table, **kw))


@pytest.mark.parametrize(
    ("table", "kwargs", "error", "match"),
    [
        ([1, 2], {}, TypeError, "pandas DataFrame"),
        (random_table(20).drop(columns=schema.QC_PASS), {}, ValueError, "lacks the column.*qc_pass"),
        (random_table(20), {"distance_bin_um": 0.0}, ValueError, "distance_bin_um must be a positive"),
        (random_table(20), {"distance_bin_um": float("nan")}, ValueError, "distance_bin_um must be a positive"),
        (random_table(20), {"distance_range_um": (5.0, -5.0)}, ValueError, "low < high"),
        (random_table(20), {"distance_range_um": 5.0}, ValueError, "pair"),
        (random_table(20), {"unknown_waveform": "maybe"}, ValueError, "unknown_waveform must be one of"),
        (random_table(20), {"power_bins_mw": [1.0]}, ValueError, "power_bins_mw"),
        (random_table(20), {"power_bins_mw": [4.0, 1.0]}, ValueError, "power_bins_mw"),
        (random_table(20), {"by": (schema.DISTANCE,)}, ValueError, "by must name distinct"),
        (random_table(20), {"by": ("no_such_column",)}, ValueError, "lacks the column.*no_such_column"),
        (random_table(20).iloc[:0], {}, ValueError, "no finite distance_um"),
    ],
)
def test_effect_map_refuses(table, kwargs, error, match):
    with pytest.raises(error, match=match):
        maps.effect_map(table, **kwargs)


def test_depth_vs_emitter_against_numpy():
    table = random_table(2000, seed=3)
    result = maps.depth_vs_emitter(table)
    points = result.points
    ok = table[schema.QC_PASS] & table[schema.WAVEFORM_TYPE].isin(["RS", "FS"]) & table[schema.DISTANCE].notna()
    for effect in schema.EFFECTS:
        for w in ("RS", "FS"):
            rows = table[ok & (table[schema.WAVEFORM_TYPE] == w) & table[effect] & table[schema.SIGNIFICANT]]
            unit = rows[schema.DEPTH_FROM_SURFACE].to_numpy()
            emitter = unit - rows[schema.DISTANCE].to_numpy()
            got = points[(points[schema.WAVEFORM_TYPE] == w) & (points[schema.MAP_EFFECT] == effect)]
            np.testing.assert_allclose(got[schema.MAP_UNIT_DEPTH], unit)
            np.testing.assert_allclose(got[schema.EMITTER_DEPTH], emitter)
            s = result.stats.sel({schema.WAVEFORM_TYPE: w, schema.MAP_EFFECT: effect})
            assert int(s[schema.MAP_N_RESPONSES]) == len(rows) > 2
            np.testing.assert_allclose(float(s[schema.MAP_PEARSON_R]), np.corrcoef(emitter, unit)[0, 1])
    assert "r = " in repr(result)


def test_depth_vs_emitter_too_few_points_gives_nan():
    table = random_table(30).assign(**{schema.SIGNIFICANT: False})
    result = maps.depth_vs_emitter(table)
    assert len(result.points) == 0
    assert result.stats[schema.MAP_PEARSON_R].isnull().all()
    assert (result.stats[schema.MAP_N_RESPONSES] == 0).all()


def test_modulation_index_formula_and_join():
    table = pd.DataFrame(
        {
            schema.SESSION_ID: ["a", "a", "b", "b"],
            schema.CLUSTER: [0, 1, 0, 5],
            schema.PRE_RATE: [10.0, 0.0, 4.0, 2.0],
            schema.STIM_RATE: [30.0, 0.0, 0.0, 2.0],
            schema.WAVEFORM_TYPE: ["FS", "RS", "RS", ""],
            schema.QC_PASS: True,
        }
    )
    cubes = {
        "a": xr.Dataset(coords={schema.CLUSTER: [0, 1], schema.TROUGH_TO_PEAK: (schema.CLUSTER, [0.3, 0.7])}),
        "b": xr.Dataset(coords={schema.CLUSTER: [0, 1], schema.TROUGH_TO_PEAK: (schema.CLUSTER, [0.8, 0.9])}),
    }
    mi = maps.modulation_index(table, cubes)
    np.testing.assert_allclose(mi[schema.MAP_MODULATION_INDEX], [0.5, np.nan, -1.0, 0.0])
    np.testing.assert_allclose(mi[schema.TROUGH_TO_PEAK], [0.3, 0.7, 0.8, np.nan])  # cluster 5 is in no cube
    assert len(maps.modulation_index(table, cubes, unknown_waveform="drop")) == 3
    with pytest.raises(ValueError, match="no 'trough_to_peak_ms' column; pass catalog="):
        maps.modulation_index(table)


def test_modulation_index_per_unit_takes_the_strongest_stimulation():
    table = pd.DataFrame(
        {
            schema.SESSION_ID: "a",
            schema.CLUSTER: [0, 0, 0, 0, 1],
            schema.POWER: [4.0, 4.0, 1.0, 4.0, 1.0],
            schema.DISTANCE: [300.0, -20.0, 0.0, -20.0, 50.0],
            schema.DURATION: [0.05, 0.01, 0.05, 0.05, 0.01],
            schema.PRE_RATE: 1.0,
            schema.STIM_RATE: [1.0, 2.0, 3.0, 4.0, 5.0],
            schema.TROUGH_TO_PEAK: [0.3] * 4 + [0.7],
            schema.WAVEFORM_TYPE: "FS",
            schema.QC_PASS: True,
        }
    )
    mi = maps.modulation_index(table, per_unit=True)
    assert mi[schema.CLUSTER].tolist() == [0, 1]
    assert mi[schema.STIM_RATE].tolist() == [4.0, 5.0]


# --------------------------------------------------------------------------
# Ground truth, end to end: synthetic sessions -> cubes -> responses -> maps
# --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    root = tmp_path_factory.mktemp("ground_truth")
    synth.make_dataset(root / "data", n_sessions=3, size="small", seed=11)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OptoCubeWarning)  # the generator's quirks (trials out of onset order)
        results = convert.convert(root / "data", root / "stores", bin_ms=10)
    assert [r.status for r in results] == ["converted"] * 3
    return root / "stores", responses_table(open_catalog(root / "stores"))


def _fraction(m: xr.Dataset, var: str, waveform: str, power: float, distances) -> float:
    """Pooled fraction of a set of distance bins (counts summed, then divided)."""
    sub = m.sel({schema.WAVEFORM_TYPE: waveform}).sel({schema.POWER: power}, method="nearest")
    sub = sub.sel({schema.DISTANCE: distances})
    hits = schema.MAP_N_ACTIVATED if var == schema.ACTIVATED else schema.MAP_N_INACTIVATED
    return float(sub[hits].sum() / sub[schema.MAP_N_UNITS].sum())


def test_ground_truth_fs_activation_and_rs_inactivation(synthetic):
    """FS activation and RS inactivation fall with |distance| from the emitter and grow with power.

    The map is of significant responses (the published post-filter), 100-um bins. RS inactivation is
    read from the longest pulses: a 10-ms window holds too few spikes of a 3 Hz cell for a silence to
    mean anything (zero spikes in every trial is "significant" there, near an emitter or not).
    """
    _, table = synthetic
    fs = maps.effect_map(table, distance_bin_um=100.0)
    rs = maps.effect_map(select_conditions(table, duration_s="max"), distance_bin_um=100.0)
    centres = fs[schema.DISTANCE].values
    near = centres[np.abs(centres) <= 100]  # -100, 0, 100: units within 150 um
    far = centres[np.abs(centres) >= 600]
    flank = centres[(np.abs(centres) >= 200) & (np.abs(centres) <= 400)]
    lo, hi = float(fs[schema.POWER].min()), float(fs[schema.POWER].max())
    numbers = {
        "FS act near hi": _fraction(fs, schema.ACTIVATED, "FS", hi, near),
        "FS act far hi": _fraction(fs, schema.ACTIVATED, "FS", hi, far),
        "FS act flank lo": _fraction(fs, schema.ACTIVATED, "FS", lo, flank),
        "FS act flank hi": _fraction(fs, schema.ACTIVATED, "FS", hi, flank),
        "RS inact near hi": _fraction(rs, schema.INACTIVATED, "RS", hi, near),
        "RS inact near lo": _fraction(rs, schema.INACTIVATED, "RS", lo, near),
        "RS inact far hi": _fraction(rs, schema.INACTIVATED, "RS", hi, far),
    }
    print({k: round(v, 3) for k, v in numbers.items()})
    assert numbers["FS act near hi"] >= 0.8
    assert numbers["FS act far hi"] <= 0.1
    assert numbers["FS act flank hi"] >= numbers["FS act flank lo"] + 0.15  # spreads farther at high power
    assert numbers["RS inact near hi"] >= numbers["RS inact far hi"] + 0.2
    assert numbers["RS inact near hi"] >= numbers["RS inact near lo"] + 0.1
    # activation is an FS effect, inactivation an RS one
    assert _fraction(fs, schema.ACTIVATED, "RS", hi, near) <= 0.05
    # monotone in |distance| on the whole (FS, top power): each side's fraction does not rise going away
    side = fs[schema.MAP_FRACTION_ACTIVATED].sel({schema.WAVEFORM_TYPE: "FS", schema.POWER: hi})
    for sign in (1, -1):
        steps = side.sel({schema.DISTANCE: sign * np.arange(0, 700, 100.0)}).values
        assert np.all(np.diff(steps[np.isfinite(steps)]) <= 0.2), steps


def test_ground_truth_depth_vs_emitter_and_modulation(synthetic):
    stores, table = synthetic
    result = maps.depth_vs_emitter(table)
    r = result.stats[schema.MAP_PEARSON_R]
    print(result)
    assert float(r.sel({schema.WAVEFORM_TYPE: "FS", schema.MAP_EFFECT: schema.ACTIVATED})) > 0.8
    mi = maps.modulation_index(table, open_catalog(stores), per_unit=True, unknown_waveform="drop")
    median = mi.groupby(schema.WAVEFORM_TYPE)[schema.MAP_MODULATION_INDEX].median()
    width = mi.groupby(schema.WAVEFORM_TYPE)[schema.TROUGH_TO_PEAK].median()
    assert median["FS"] > 0.5
    assert median["RS"] < 0
    assert width["FS"] < width["RS"]


def test_light_artifacts_left_out_unless_kept():
    """effect_map and depth_vs_emitter drop the rows of flagged units by default; keep_artifacts keeps them."""
    table = random_table(400, seed=3)
    table[schema.LIGHT_ARTIFACT] = (table[schema.CLUSTER] % 7) == 0
    clean = table[~table[schema.LIGHT_ARTIFACT]]
    xr.testing.assert_identical(
        maps.effect_map(table).drop_attrs(), maps.effect_map(clean.drop(columns=schema.LIGHT_ARTIFACT)).drop_attrs()
    )
    kept = maps.effect_map(table, keep_artifacts=True)
    assert int(kept[schema.MAP_N_UNITS].sum()) > int(maps.effect_map(table)[schema.MAP_N_UNITS].sum())
    xr.testing.assert_identical(
        kept.drop_attrs(), maps.effect_map(table.drop(columns=schema.LIGHT_ARTIFACT)).drop_attrs()
    )
    points = maps.depth_vs_emitter(table).points
    assert len(points) == len(maps.depth_vs_emitter(clean).points)
    assert len(maps.depth_vs_emitter(table, keep_artifacts=True).points) >= len(points)
    with_missing = table.assign(**{schema.LIGHT_ARTIFACT: table[schema.LIGHT_ARTIFACT].where(table.index % 2 == 0)})
    n_units = int(maps.effect_map(with_missing)[schema.MAP_N_UNITS].sum())  # a missing flag counts as False
    assert int(maps.effect_map(table)[schema.MAP_N_UNITS].sum()) <= n_units <= int(kept[schema.MAP_N_UNITS].sum())
