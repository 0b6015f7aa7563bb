"""Tests of opto_cube.analysis.conditions: condition codes of trials, selection by value, and the unit filters
that the responses, maps and PSTHs share."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from helpers import random_table
from hypothesis import given
from hypothesis import strategies as st

from opto_cube import schema
from opto_cube.analysis.conditions import (
    check_by,
    check_table,
    filter_units,
    select_conditions,
    trial_conditions,
    trial_mask,
    unit_mask,
)


def _trials(emitter, power, duration, depth=None) -> xr.Dataset:
    depth = [100.0 * e for e in emitter] if depth is None else depth
    return xr.Dataset(
        coords={
            schema.EMITTER: ("trial", emitter),
            schema.POWER: ("trial", power),
            schema.DURATION: ("trial", duration),
            schema.EMITTER_DEPTH: ("trial", depth),
        }
    )


@given(
    st.lists(
        st.tuples(st.integers(1, 4), st.sampled_from([0.5, 1.0, 1.0000003, 4.0]), st.sampled_from([0.01, 0.05])),
        min_size=1,
        max_size=40,
    ),
    st.sampled_from([(), ("emitter",), ("power",), ("emitter", "power", "duration"), ("emitter", "duration")]),
)
def test_trial_conditions_group_like_pandas(trials, by):
    emitter, power, duration = (list(x) for x in zip(*trials, strict=True))
    c = trial_conditions(_trials(emitter, power, duration), by)
    level = schema.power_levels(np.array(power))[0]
    key = pd.DataFrame({"emitter": emitter, "power": level, "duration": duration})[list(by)]
    expected = key.groupby(list(by), sort=True).ngroup().to_numpy() if by else np.zeros(len(trials), int)
    np.testing.assert_array_equal(c.code, expected)
    np.testing.assert_array_equal(c.coords[schema.N_TRIALS], np.bincount(expected))
    if "emitter" in by:  # one depth per emitter, that of its trials
        np.testing.assert_array_equal(c.coords[schema.EMITTER_DEPTH], 100.0 * c.coords[schema.EMITTER])
    else:
        assert (c.coords[schema.EMITTER] == schema.ALL_EMITTERS).all()
        assert np.isnan(c.coords[schema.EMITTER_DEPTH]).all()


def test_trial_conditions_refuse_an_emitter_at_two_depths():
    cube = _trials([1, 1], [1.0, 1.0], [0.01, 0.01], depth=[100.0, 200.0])
    with pytest.raises(ValueError, match=r"emitter 1 has trials at several depths \[100.0, 200.0\]"):
        trial_conditions(cube, ("emitter",))


def test_check_by():
    assert check_by(("duration", "power"), "per_condition") == ("power", "duration")
    with pytest.raises(ValueError, match="by must name distinct keys"):
        check_by(("power", "power"), "per_condition")


def test_trial_mask_and_select_conditions():
    cube = _trials([1, 1, 2, 2], [1.0, 4.0, 1.0, 4.0000001], [0.01, 0.05, 0.05, 0.05])
    assert trial_mask(cube, power_mw="max", duration_s=0.05).tolist() == [False, True, False, True]
    with pytest.raises(ValueError, match="no trial matches"):
        trial_mask(cube, emitter=1, power_mw=1.0, duration_s=0.05)
    table = random_table()
    sub = select_conditions(table, power_mw=4.0, duration_s="max")
    assert len(sub) == ((table[schema.POWER].round(3) == 4.0) & (table[schema.DURATION] == 0.05)).sum()
    assert len(select_conditions(table, emitter=[1, 2])) == table[schema.EMITTER].isin([1, 2]).sum()
    with pytest.raises(ValueError, match=r"no power_mw \[2.0\]; there are \[0.5, 1.0, 4.0\]"):
        select_conditions(table, power_mw=2.0)


@pytest.mark.parametrize("qc_only", [True, False])
@pytest.mark.parametrize("unknown_waveform", ["drop", "keep"])
def test_unit_filter_is_the_same_on_tables_and_cubes(qc_only, unknown_waveform):
    table = check_table(random_table(), [schema.QC_PASS, schema.WAVEFORM_TYPE], "test")
    kept = filter_units(table, qc_only=qc_only, unknown_waveform=unknown_waveform)
    expected = table
    if qc_only:
        expected = expected[expected[schema.QC_PASS]]
    if unknown_waveform == "drop":
        expected = expected[expected[schema.WAVEFORM_TYPE] != ""]
    pd.testing.assert_frame_equal(kept, expected)
    mask = unit_mask(
        table[schema.QC_PASS].to_numpy(),
        table[schema.WAVEFORM_TYPE].to_numpy(),
        qc_only=qc_only,
        unknown_waveform=unknown_waveform,
    )
    np.testing.assert_array_equal(np.flatnonzero(mask), np.flatnonzero(table.index.isin(expected.index)))
    with pytest.raises(ValueError, match="unknown_waveform must be one of"):
        unit_mask([True], ["FS"], qc_only=qc_only, unknown_waveform="maybe")


def test_check_table_names_what_is_missing():
    with pytest.raises(ValueError, match=r"the table lacks the column\(s\) 'distance_um'"):
        check_table(pd.DataFrame({"a": [1]}), ["distance_um"], "effect_map")
    with pytest.raises(TypeError, match="expects the responses table as a pandas DataFrame"):
        check_table([1, 2], [], "effect_map")
