"""Tests of opto_cube.analysis.psth: lazy PSTHs of a cube, the per-condition time course, population PSTHs,
each against a plain numpy computation on the cube's counts."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from helpers import raise_if_dask_computes

from opto_cube import schema
from opto_cube.analysis import psth
from opto_cube.store.catalog import cubes_of, open_catalog
from opto_cube.store.open import open_cube


@pytest.fixture(scope="module")
def tiny_cube(tiny_converted):
    return open_cube(tiny_converted.stores[10.0])


def test_psth_is_lazy_and_equals_numpy(tiny_cube):
    cube = tiny_cube
    emitter, power = int(cube[schema.EMITTER].values[0]), float(cube[schema.POWER].values[0])
    with raise_if_dask_computes():
        rate = psth.psth(cube, clusters=[1, 2, 5], emitter=emitter, power_mw=power)
        coarse = psth.psth(cube, emitter=emitter, bin_ms=50)
        nearest = psth.psth(cube, emitter="nearest", power_mw="max", duration_s="min")
    for r in (rate, coarse, nearest):
        assert r.chunks is not None
        assert r.dims == (schema.CLUSTER, schema.TIME)
        assert r.attrs["units"] == "Hz"
        assert r[schema.TIME].attrs["units"] == "s"
    counts = cube[schema.SPIKE_COUNTS].values.astype(np.float64)
    width = cube.attrs[schema.ATTR_BIN_WIDTH]
    trials = (cube[schema.EMITTER].values == emitter) & np.isclose(cube[schema.POWER].values, power, rtol=1e-6)
    np.testing.assert_allclose(rate.values, counts[[1, 2, 5]][:, trials].mean(axis=1) / width)
    assert rate.attrs[schema.N_TRIALS] == trials.sum()
    # 50 ms bins: five 10-ms bins summed, over 50 ms; onset stays a bin edge
    trials = cube[schema.EMITTER].values == emitter
    fine = counts[:, trials].mean(axis=1)
    n = fine.shape[1] // 5
    np.testing.assert_allclose(coarse.values, fine[:, : 5 * n].reshape(-1, n, 5).sum(axis=2) / 0.05)
    assert coarse.attrs[schema.ATTR_BIN_WIDTH] == 0.05
    assert np.isclose(coarse[schema.TIME].values, 0.025).any()


def test_psth_of_the_nearest_emitter(tiny_cube):
    cube = tiny_cube
    rate = psth.psth(cube, emitter="nearest").compute()
    counts = cube[schema.SPIKE_COUNTS].values.astype(np.float64)
    emitter_depth = cube[schema.EMITTER_DEPTH].values
    for k, depth in enumerate(cube[schema.DEPTH_FROM_SURFACE].values):  # a handful of clusters
        if not np.isfinite(depth):
            assert np.isnan(rate.values[k]).all()
            continue
        d = depth - emitter_depth
        use = np.abs(d) == np.abs(d).min()
        np.testing.assert_allclose(rate.values[k], counts[k, use].mean(axis=0) / cube.attrs[schema.ATTR_BIN_WIDTH])
        assert rate[schema.DISTANCE].values[k] == d[use][0]
        assert rate[schema.N_TRIALS].values[k] == use.sum()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"bin_ms": 15}, "whole multiple"),
        ({"bin_ms": 5}, "whole multiple"),
        ({"bin_ms": 30}, "tiles"),
        ({"emitter": 99}, r"no emitter \[99.0\]"),
        ({"power_mw": 2.5}, r"no power_mw \[2.5\]; there are \[1.0, 4.0\]"),
        ({"duration_s": "longest"}, "'max' or 'min'"),
        ({"clusters": [0, 1000]}, r"no cluster\(s\) \[1000\]"),
    ],
)
def test_psth_refuses(tiny_cube, kwargs, match):
    with pytest.raises(ValueError, match=match):
        psth.psth(tiny_cube, **kwargs)


# --------------------------------------------------------------------------
# condition_time_course: exact integer sums per condition, one pass
# --------------------------------------------------------------------------
def _reference_course(cube: xr.Dataset) -> tuple[np.ndarray, list[tuple[int, float, float]]]:
    """Sums over the trials of each (emitter, power level, duration), conditions sorted, from the loaded counts."""
    counts = cube[schema.SPIKE_COUNTS].values.astype(np.int64)
    level_index, levels = schema.power_levels(cube[schema.POWER].values)
    keys = sorted(
        {
            (int(e), int(p), float(d))
            for e, p, d in zip(cube[schema.EMITTER].values, level_index, cube[schema.DURATION].values, strict=True)
        }
    )
    out = np.zeros((counts.shape[0], len(keys), counts.shape[2]), np.int64)
    for c, (e, p, d) in enumerate(keys):
        trials = (cube[schema.EMITTER].values == e) & (level_index == p) & (cube[schema.DURATION].values == d)
        out[:, c] = counts[:, trials].sum(axis=1)
    return out, [(e, float(levels[p]), d) for e, p, d in keys]


@pytest.mark.parametrize("source", ["stored", "one_pass"])
@pytest.mark.parametrize("chunked", [False, True])
def test_condition_time_course_equals_numpy(tiny_cube, chunked, source):
    """From the stored condition_counts (no read of spike_counts) or by one pass over the cube: the same sums."""
    cube = tiny_cube.chunk({schema.TRIAL: 7}) if chunked else tiny_cube.load()
    cube = cube.drop_vars(schema.SPIKE_COUNTS if source == "stored" else list(schema.TIMING_ARRAYS))
    course = psth.condition_time_course(cube)
    expected, keys = _reference_course(tiny_cube)
    got = course[schema.TIME_COURSE]
    assert got.dims == (schema.CLUSTER, schema.CONDITION, schema.TIME)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got.values, expected)
    assert (
        list(
            zip(
                course[schema.EMITTER].values.tolist(),
                course[schema.POWER].values.tolist(),
                course[schema.DURATION].values.tolist(),
                strict=True,
            )
        )
        == keys
    )
    assert int(course[schema.N_TRIALS].sum()) == cube.sizes[schema.TRIAL]
    assert int(got.sum()) == int(tiny_cube[schema.SPIKE_COUNTS].sum())  # every spike counted once


def test_stored_and_one_pass_time_courses_are_identical(latency_converted):
    """The maps' PSTH piece is the same from condition_counts as from a pass over the cube (1 ms)."""
    cube = open_cube(sorted(latency_converted.out.glob("*.zarr"))[0])
    stored = psth.condition_time_course(cube.drop_vars(schema.SPIKE_COUNTS))
    one_pass = psth.condition_time_course(cube.drop_vars(list(schema.TIMING_ARRAYS)))
    xr.testing.assert_identical(stored, one_pass)
    options = {"duration_s": "max", "bin_ms": 5.0}
    piece = psth.session_psth(stored, "s", **options)
    assert piece is not None
    assert np.isfinite(piece.values).any()
    xr.testing.assert_identical(piece, psth.session_psth(one_pass, "s", **options))
    with pytest.raises(TypeError, match="needs 'spike_counts'"):
        psth.condition_time_course(cube.drop_vars(schema.SPIKE_COUNTS), by=(schema.BY_EMITTER,))


def test_condition_time_course_refuses_what_is_not_a_cube():
    with pytest.raises(TypeError, match="expects an opened cube"):
        psth.condition_time_course(xr.Dataset())


# --------------------------------------------------------------------------
# population_psth: equals psth() of each unit's nearest emitter
# --------------------------------------------------------------------------
def test_population_psth_equals_psth_of_the_nearest_emitter(tiny_dataset):
    catalog = open_catalog(tiny_dataset.out)
    rate = psth.population_psth(catalog, max_distance_um=10_000.0, bin_ms=50)
    assert rate.dims == (schema.POWER, "unit", schema.TIME)
    assert rate.sizes["unit"] > 0
    assert rate.attrs[schema.ATTR_BIN_WIDTH] == 0.05
    for sid, cube in cubes_of(catalog):
        units = np.flatnonzero(rate[schema.SESSION_ID].values == sid)
        for p, level in enumerate(rate[schema.POWER].values):
            if not np.isclose(schema.power_levels(cube[schema.POWER].values)[1], level, rtol=1e-6).any():
                continue
            clusters = rate[schema.CLUSTER].values[units]
            one = psth.psth(cube, clusters=clusters, emitter="nearest", power_mw=level, duration_s="max", bin_ms=50)
            np.testing.assert_allclose(rate.values[p, units], one.values, rtol=1e-12, equal_nan=True)
            np.testing.assert_array_equal(rate[schema.DISTANCE].values[units], one[schema.DISTANCE].values)


def test_population_psth_keeps_near_qc_units_of_known_type(tiny_dataset):
    rate = psth.population_psth(open_catalog(tiny_dataset.out))
    assert (np.abs(rate[schema.DISTANCE].values) <= schema.PSTH_NEAR_EMITTER_UM).all()
    assert rate[schema.QC_PASS].values.all()
    assert (rate[schema.WAVEFORM_TYPE].values != "").all()
    with pytest.raises(ValueError, match="unknown_waveform must be one of"):
        psth.population_psth(open_catalog(tiny_dataset.out), unknown_waveform="maybe")


def test_psth_bin_ms():
    assert psth.psth_bin_ms([0.001]) == 5.0
    assert psth.psth_bin_ms([0.01, 0.01]) == 10.0
    assert psth.psth_bin_ms([0.004]) == 20.0  # 8, 12 and 16 ms do not tile the 500-ms pre window
    assert psth.psth_bin_ms([0.003]) is None  # no multiple of 3 ms tiles it
    assert psth.psth_bin_ms([0.001, 0.002]) is None
