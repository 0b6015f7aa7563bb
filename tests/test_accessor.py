"""Tests of the ``cube.opto`` accessor (opto_cube/accessor.py) against independent computations.

- ``select`` equals a hand-written ``isel`` (masks computed here with numpy:
  waveform labels, QC, emitter equality, powers within a relative 1e-6);
  its sub-cube's stored per-condition sums equal the spikes summed here;
- ``distance_um`` equals the geometry formula of docs/contract.md;
- ``psth`` and ``responses`` equal the package's functions and a numpy PSTH;
- nothing is computed by any of them (a scheduler that raises on compute);
- ``import opto_cube`` registers the accessor without importing xarray.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr
from helpers import raise_if_dask_computes

import opto_cube
from opto_cube import schema
from opto_cube.analysis import psth as psth_module
from opto_cube.analysis import response
from opto_cube.store.open import open_cube

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def cube(tiny_converted: Any) -> xr.Dataset:
    """The clean tiny session at 10 ms (RS and FS units), with two units made unknown-type for the tests."""
    ds = open_cube(tiny_converted.stores[10.0])
    labels = np.array([str(v) for v in ds[schema.WAVEFORM_TYPE].values], dtype=object)
    labels[[0, 3]] = schema.UNKNOWN_LABEL
    return ds.assign_coords({schema.WAVEFORM_TYPE: (schema.CLUSTER, labels, ds[schema.WAVEFORM_TYPE].attrs)})


@pytest.fixture(scope="module")
def cube_1ms(quirky_converted: Any) -> xr.Dataset:
    """The quirky tiny session (jittered powers, shuffled trials) at 1 ms: timing columns are computed."""
    return open_cube(quirky_converted.stores[1.0])


# --------------------------------------------------------------------------
# Independent masks
# --------------------------------------------------------------------------
def _labels(ds: xr.Dataset) -> np.ndarray:
    return np.array([str(v) for v in ds[schema.WAVEFORM_TYPE].values], dtype=object)


def _power_mask(power: np.ndarray, wanted: Any) -> np.ndarray:
    """Trials whose power is within a relative 1e-6 of a wanted level ("max"/"min": the extreme trial's)."""
    if isinstance(wanted, str):
        wanted = power.max() if wanted == "max" else power.min()
    wanted = np.atleast_1d(np.asarray(wanted, np.float64))
    return np.array([any(abs(p - w) <= 1e-6 * abs(w) for w in wanted) for p in power])


def _manual(ds: xr.Dataset, waveform_type: Any, qc: Any, emitter: Any, power_mw: Any, duration_s: Any) -> xr.Dataset:
    keep_units = np.ones(ds.sizes[schema.CLUSTER], bool)
    if waveform_type is not None:
        wanted = [waveform_type] if isinstance(waveform_type, str) else list(waveform_type)
        keep_units &= np.array([label in wanted for label in _labels(ds)])
    if qc is not None:
        keep_units &= ds[schema.QC_PASS].values == qc
    keep_trials = np.ones(ds.sizes[schema.TRIAL], bool)
    emitters = ds[schema.EMITTER].values
    if emitter == "max":
        emitter = emitters.max()
    if emitter is not None:
        keep_trials &= np.isin(emitters, np.atleast_1d(emitter))
    if power_mw is not None:
        keep_trials &= _power_mask(ds[schema.POWER].values, power_mw)
    if duration_s is not None:
        durations = ds[schema.DURATION].values
        wanted_d = durations.max() if duration_s == "max" else duration_s
        keep_trials &= np.isin(durations, np.atleast_1d(wanted_d))
    return ds.isel({schema.CLUSTER: np.flatnonzero(keep_units), schema.TRIAL: np.flatnonzero(keep_trials)})


SELECTIONS = [
    dict(waveform_type="FS"),
    dict(waveform_type=["RS", ""], qc=True),
    dict(waveform_type=""),
    dict(qc=False),
    dict(emitter=8),
    dict(emitter=[3, 13], power_mw="min"),
    dict(power_mw=4.0, duration_s="max"),
    dict(waveform_type="RS", qc=True, emitter="max", power_mw=[1.0], duration_s=0.01),
]


def _without_conditions(ds: xr.Dataset) -> xr.Dataset:
    return ds.drop_vars(
        [n for n, v in ds.variables.items() if schema.CONDITION in v.dims or n == schema.TRIAL_CONDITION]
    )


@pytest.mark.parametrize("selection", SELECTIONS, ids=lambda s: ",".join(f"{k}={v}" for k, v in s.items()))
def test_select_equals_a_manual_isel(cube: xr.Dataset, selection: dict[str, Any]) -> None:
    args = {k: selection.get(k) for k in ("waveform_type", "qc", "emitter", "power_mw", "duration_s")}
    expected = _manual(cube, **args)
    sub = cube.opto.select(**selection)
    assert sub.sizes[schema.CLUSTER] == expected.sizes[schema.CLUSTER]
    assert sub.sizes[schema.TRIAL] == expected.sizes[schema.TRIAL] > 0
    xr.testing.assert_identical(_without_conditions(sub), _without_conditions(expected))
    np.testing.assert_array_equal(sub[schema.SPIKE_COUNTS].values, expected[schema.SPIKE_COUNTS].values)


def test_select_matches_jittered_powers_as_one_level(cube_1ms: xr.Dataset) -> None:
    power = cube_1ms[schema.POWER].values
    level = float(np.sort(power)[0])  # the lowest trial's power, itself jittered
    assert np.unique(power).size > np.unique(np.round(power, 3)).size  # the session's powers do jitter
    sub = cube_1ms.opto.select(power_mw=level)
    expected = np.flatnonzero(_power_mask(power, level))
    np.testing.assert_array_equal(sub[schema.TRIAL].values, cube_1ms[schema.TRIAL].values[expected])
    assert expected.size == int((np.round(power, 3) == np.round(level, 3)).sum())  # the whole level, no more


def test_select_keeps_the_stored_condition_sums_of_its_trials(cube_1ms: xr.Dataset) -> None:
    sub = cube_1ms.opto.select(emitter=[cube_1ms.opto.emitters[0]], duration_s="max")
    code = sub[schema.TRIAL_CONDITION].values
    assert code.min() == 0
    assert np.array_equal(np.unique(code), np.arange(sub.sizes[schema.CONDITION]))
    counts = sub[schema.SPIKE_COUNTS].values.astype(np.int64)
    for c in range(sub.sizes[schema.CONDITION]):
        trials = code == c
        np.testing.assert_array_equal(sub[schema.CONDITION_COUNTS].values[:, c], counts[:, trials].sum(axis=1))
        assert int(sub[schema.CONDITION_N_TRIALS][c]) == int(trials.sum())
        assert set(sub[schema.EMITTER].values[trials]) == {int(sub[schema.CONDITION_EMITTER][c])}
        assert set(sub[schema.DURATION].values[trials]) == {float(sub[schema.CONDITION_DURATION][c])}
    # the package's time course of the sub-cube: from the stored sums, equal to one pass over its spike counts
    stored = psth_module.condition_time_course(sub)
    recounted = psth_module.condition_time_course(sub.drop_vars(schema.CONDITION_COUNTS))
    xr.testing.assert_identical(stored, recounted)


def test_responses_of_a_selection_equal_the_cube_responses_of_its_units_and_conditions(cube_1ms: xr.Dataset) -> None:
    emitter = int(cube_1ms.opto.emitters[-1])
    full = cube_1ms.opto.responses().compute()
    sub = cube_1ms.opto.select(qc=True, emitter=emitter).opto.responses().compute()
    keep = full.isel(
        {
            schema.CLUSTER: np.flatnonzero(cube_1ms[schema.QC_PASS].values),
            schema.CONDITION: np.flatnonzero(full[schema.EMITTER].values == emitter),
        }
    )
    assert np.isfinite(sub[schema.FIRST_SPIKE].values).any()  # timing columns computed, not NaN
    for name in (schema.PRE_RATE, schema.STIM_RATE, schema.PCT_CHANGE, schema.P_VALUE, schema.ACTIVATED,
                 schema.INACTIVATED, schema.SIGNIFICANT, schema.LATENCY, schema.FIRST_SPIKE, schema.JITTER,
                 schema.RELIABILITY, schema.DISTANCE, schema.N_TRIALS):  # fmt: skip
        np.testing.assert_array_equal(sub[name].values, keep[name].values, err_msg=name)


def test_select_with_no_argument_is_the_cube(cube: xr.Dataset) -> None:
    assert cube.opto.select() is cube


# --------------------------------------------------------------------------
# distance_um
# --------------------------------------------------------------------------
def test_distance_is_the_unit_depth_minus_the_emitter_depth_from_the_geometry(cube: xr.Dataset) -> None:
    attrs = cube.attrs
    for e in cube.opto.emitters:
        position = float(attrs[schema.ATTR_EMITTER_POSITIONS][int(e) - 1]) - float(attrs[schema.ATTR_TIP_OFFSET])
        emitter_depth = float(attrs[schema.ATTR_SURFACE]) - position
        expected = cube[schema.DEPTH_FROM_SURFACE].values - emitter_depth
        d = cube.opto.distance_um(int(e))
        np.testing.assert_allclose(d.values, expected, rtol=0, atol=1e-9)
        assert d.dims == (schema.CLUSTER,)
        assert d.name == schema.DISTANCE
        assert d.attrs["units"] == "um"
        assert d.attrs[schema.EMITTER] == int(e)
        np.testing.assert_array_equal(d[schema.CLUSTER].values, cube[schema.CLUSTER].values)


def test_distance_has_the_sign_of_the_responses_table(cube: xr.Dataset) -> None:
    r = cube.opto.responses(timing=False)
    for c in range(r.sizes[schema.CONDITION]):
        e = int(r[schema.EMITTER][c])
        np.testing.assert_array_equal(
            cube.opto.distance_um(e).values, r[schema.DISTANCE].isel({schema.CONDITION: c}).values
        )


# --------------------------------------------------------------------------
# psth and responses: the package's functions, labelled
# --------------------------------------------------------------------------
def test_psth_equals_the_function_and_a_numpy_mean(cube: xr.Dataset) -> None:
    sub = cube.opto.select(waveform_type="FS")
    rate = sub.opto.psth(emitter=8, power_mw="max", bin_ms=50)
    expected = psth_module.psth(sub, emitter=8, power_mw="max", bin_ms=50)
    edges = rate.attrs.pop("time_bin_edges_s")
    xr.testing.assert_identical(rate, expected)
    trials = (cube[schema.EMITTER].values == 8) & _power_mask(cube[schema.POWER].values, "max")
    counts = sub[schema.SPIKE_COUNTS].values[:, trials].astype(np.float64)  # (cluster, trial, time)
    per_50ms = counts.reshape(counts.shape[0], counts.shape[1], -1, 5).sum(axis=3)
    np.testing.assert_allclose(rate.values, per_50ms.mean(axis=1) / 0.05, rtol=1e-12)
    assert edges.size == rate.sizes[schema.TIME] + 1
    np.testing.assert_allclose(np.diff(edges), 0.05)
    assert edges[0] == pytest.approx(float(cube.attrs[schema.ATTR_WINDOW][0]))
    np.testing.assert_allclose((edges[:-1] + edges[1:]) / 2, rate[schema.TIME].values, atol=1e-9)


def test_responses_equal_the_function(cube: xr.Dataset) -> None:
    r = cube.opto.responses(by="emitter", timing=False)
    expected = response.responses(cube, by="emitter", timing=False)
    assert r.attrs.pop(schema.ATTR_PRE_WINDOW) == [-0.5, 0.0]
    assert r.attrs.pop("stim_window_s") == "[0, duration_s)"
    xr.testing.assert_identical(r.compute(), expected.compute())
    assert all("units" in r[name].attrs for name in r.data_vars)


def test_nothing_is_computed(cube: xr.Dataset) -> None:
    with raise_if_dask_computes():
        sub = cube.opto.select(waveform_type="RS", qc=True, emitter=[3, 8], power_mw="max", duration_s="max")
        distance = sub.opto.distance_um(3)
        rate = sub.opto.psth(emitter="nearest", bin_ms=50)
        r = sub.opto.responses(timing=False)
        text, page = repr(sub.opto), sub.opto._repr_html_()
    assert sub[schema.SPIKE_COUNTS].chunks is not None
    assert rate.chunks is not None
    assert r[schema.PCT_CHANGE].chunks is not None
    assert distance.sizes[schema.CLUSTER] == sub.sizes[schema.CLUSTER]
    assert sub.opto.session_id in text
    assert sub.opto.session_id in page


def test_the_accessor_works_on_a_plain_open_zarr_cube(tiny_converted: Any, cube: xr.Dataset) -> None:
    plain = xr.open_zarr(tiny_converted.stores[10.0])
    sub = plain.opto.select(qc=True, emitter=3)
    expected = cube.opto.select(qc=True, emitter=3)
    np.testing.assert_array_equal(sub[schema.SPIKE_COUNTS].values, expected[schema.SPIKE_COUNTS].values)
    np.testing.assert_array_equal(plain.opto.distance_um(3).values, cube.opto.distance_um(3).values)


# --------------------------------------------------------------------------
# The repr
# --------------------------------------------------------------------------
def test_repr_says_what_the_cube_holds(cube: xr.Dataset) -> None:
    text = repr(cube.opto)
    k, m, t = (cube.sizes[d] for d in (schema.CLUSTER, schema.TRIAL, schema.TIME))
    assert text.splitlines()[0] == f"<opto_cube cube> session {cube.attrs[schema.ATTR_SESSION_ID]}"
    assert f"{k} clusters x {m} trials x {t} bins of 10 ms" in text
    labels, qc = _labels(cube), cube[schema.QC_PASS].values
    n_rs, n_fs, n_unknown = ((labels == w).sum() for w in ("RS", "FS", ""))
    assert f"{k}: {n_rs} RS, {n_fs} FS, {n_unknown} unknown; {qc.sum()} pass QC" in text
    emitters = ", ".join(str(e) for e in np.unique(cube[schema.EMITTER].values))
    assert re.search(rf"emitters\s+{emitters} at", text)
    assert re.search(r"powers\s+1, 4 mW", text)


def test_html_repr_escapes_the_session_id(cube: xr.Dataset) -> None:
    odd = cube.assign_attrs({schema.ATTR_SESSION_ID: "<b>x&y</b>"})
    page = odd.opto._repr_html_()
    assert "&lt;b&gt;x&amp;y&lt;/b&gt;" in page
    assert "<b>x&y</b>" not in page
    assert page.count("<tr>") == len(odd.opto.summary())


# --------------------------------------------------------------------------
# Bad input: one line quoting the value and the choices
# --------------------------------------------------------------------------
BAD = [
    ("select", dict(waveform_type="fs"), r"no waveform_type 'fs' in the cube; the types are \['', 'FS', 'RS'\]"),
    ("select", dict(waveform_type=["FS", "XX"]), r"no waveform_type \['FS', 'XX'\]"),
    ("select", dict(waveform_type=[]), r"no waveform_type \[\]"),
    ("select", dict(waveform_type=3), r"no waveform_type 3 in the cube"),
    ("select", dict(qc="yes"), r"qc must be True .* got 'yes'"),
    ("select", dict(emitter=99), r"no emitter \[99.0\]; there are \[3.0, 8.0, 13.0\]"),
    ("select", dict(power_mw=2.5), r"no power_mw \[2.5\]; there are \[1.0, 4.0\]"),
    ("select", dict(duration_s=0.3), r"no duration_s \[0.3\]; there are \[0.01, 0.05\]"),
    ("distance_um", dict(emitter=99), r"no emitter 99 in session '.*'; its trials use the emitters \[3, 8, 13\]"),
    ("distance_um", dict(emitter=True), r"no emitter True"),
    ("distance_um", dict(emitter=3.5), r"no emitter 3.5"),
]


@pytest.mark.parametrize(("method", "kwargs", "match"), BAD, ids=[f"{m}-{k}" for m, k, _ in BAD])
def test_bad_values_are_refused_naming_the_choices(cube: xr.Dataset, method: str, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        getattr(cube.opto, method)(**kwargs)


def test_a_dataset_without_the_coordinates_is_told_what_it_lacks() -> None:
    ds = xr.Dataset({"x": ("cluster", [1, 2])})
    with pytest.raises(ValueError, match=r"cube.opto.select needs 'qc_pass', which this Dataset lacks"):
        ds.opto.select(qc=True)
    with pytest.raises(ValueError, match=r"cube.opto.distance_um needs 'depth_from_surface_um', 'emitter_depth_um'"):
        ds.opto.distance_um(1)


# --------------------------------------------------------------------------
# Registration and the public names
# --------------------------------------------------------------------------
IMPORT_ORDERS = [
    pytest.param("import opto_cube; assert 'xarray' not in sys.modules; import xarray as xr", id="opto_cube first"),
    pytest.param("import xarray as xr; import opto_cube", id="xarray first", marks=pytest.mark.slow),
    pytest.param(
        "import opto_cube.analysis.conditions; import xarray as xr",
        id="a module that imports xarray",
        marks=pytest.mark.slow,
    ),
]


@pytest.mark.parametrize("order", IMPORT_ORDERS)
def test_import_opto_cube_registers_the_accessor_in_any_import_order(order: str) -> None:
    code = (
        f"import sys; {order}; "
        "assert xr.Dataset.opto is opto_cube.OptoAccessor, xr.Dataset.opto; "
        "heavy = [m for m in ('matplotlib', 'distributed') if m in sys.modules]; assert not heavy, heavy; "
        "assert not [f for f in sys.meta_path if type(f).__name__ == '_RegisterAccessorWithXarray']; print('ok')"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_import_opto_cube_imports_no_heavy_module() -> None:
    code = (
        "import sys, opto_cube; "
        "heavy = ('xarray', 'dask', 'zarr', 'pandas', 'matplotlib', 'distributed'); "
        "print(sorted(m for m in heavy if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert done.stdout.strip() == "[]"


def test_docs_api_tables_exactly_the_public_names() -> None:
    text = (REPO / "docs" / "api.md").read_text()
    tabled = set(re.findall(r"^\| `opto_cube\.(\w+)`", text, flags=re.MULTILINE))
    public = set(opto_cube.__all__) - {"__version__"}
    assert tabled == public


@pytest.mark.parametrize("name", sorted(set(opto_cube.__all__) - {"__version__"}))
def test_every_public_name_resolves(name: str) -> None:
    value = getattr(opto_cube, name)
    assert value.__name__ == name
    assert value.__doc__


def test_the_timing_warning_points_at_the_callers_line(cube: xr.Dataset) -> None:
    with pytest.warns(opto_cube.TimingWarning, match="10 ms bins are coarser") as caught:
        cube.opto.responses()
    assert [w.filename for w in caught] == [__file__]


def test_a_selection_that_splits_a_stored_condition_drops_the_stored_sums(cube_1ms: xr.Dataset) -> None:
    """Cannot happen by emitter, power level and duration; if it did, the sums would be wrong: they go."""
    n = cube_1ms[schema.CONDITION_N_TRIALS].values
    claimed = cube_1ms.assign_coords({schema.CONDITION_N_TRIALS: (schema.CONDITION, n + 1)})  # more than it holds
    sub = claimed.opto.select(emitter=int(cube_1ms.opto.emitters[0]))
    assert schema.CONDITION_COUNTS not in sub
    assert schema.TRIAL_CONDITION not in sub.coords
    assert schema.CONDITION not in sub.dims
    with pytest.warns(opto_cube.TimingWarning, match="has no 'condition_counts'"):
        r = sub.opto.responses()
    assert np.isnan(r[schema.FIRST_SPIKE].values).all()
