"""The vectorised timing kernels equal the row-by-row definitions, bit for bit.

The references are kept here: :func:`opto_cube.analysis.latency.onset_latency` called
for one (cluster, condition) row at a time, and the per-condition
``first_spike_stats`` with its sorted percentile (the code before
:mod:`opto_cube.analysis.timing_core`). Compared on every generator quirk (the quirky
session at 1 ms), on the planted latencies and artifacts (the latency
sessions), in every response mode and pooling, and on random arrays (hypothesis).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from opto_cube import schema
from opto_cube.analysis import latency, response_core, timing_core
from opto_cube.jobs import pipeline


# --------------------------------------------------------------------------
# The references (row by row)
# --------------------------------------------------------------------------
def _latency_row_by_row(course, n_trials, time_s, durations, width, sign):
    out = np.full(sign.shape, np.nan)
    for k, c in zip(*np.nonzero(sign != 0), strict=True):
        out[k, c] = latency.onset_latency(
            course[k : k + 1, c : c + 1], n_trials[c : c + 1], time_s, durations[c : c + 1], width,
            direction=sign[k : k + 1, c : c + 1],
        )[0, 0]  # fmt: skip
    return out


def _sorted_percentile(ranked, n, fraction):
    position = fraction * (np.maximum(n, 1) - 1)
    lo = np.floor(position).astype(np.int64)
    hi = np.minimum(lo + 1, np.maximum(n, 1) - 1)
    below = np.take_along_axis(ranked, lo[:, None], axis=1)[:, 0].astype(np.float64)
    above = np.take_along_axis(ranked, hi[:, None], axis=1)[:, 0].astype(np.float64)
    return np.where(n > 0, below + (position - lo) * (above - below), np.nan)


def _first_spike_per_condition(first_spike_bin, trial_condition, n_conditions, bin_width_s):
    bins = np.asarray(first_spike_bin)
    condition = np.asarray(trial_condition, dtype=np.int64)
    k = bins.shape[0]
    shape = (k, n_conditions)
    median, spread, reliability = np.full(shape, np.nan), np.full(shape, np.nan), np.full(shape, np.nan)
    big = np.iinfo(np.int64).max
    order = np.argsort(condition, kind="stable")
    bounds = np.searchsorted(condition[order], np.arange(n_conditions + 1))
    for c in range(n_conditions):
        trials = order[bounds[c] : bounds[c + 1]]
        if trials.size == 0:
            continue
        sub = bins[:, trials].astype(np.int64)
        hits = (sub >= 0).sum(axis=1)
        reliability[:, c] = hits / trials.size
        ranked = np.sort(np.where(sub >= 0, sub, big), axis=1)
        q = [_sorted_percentile(ranked, hits, f) for f in (0.25, 0.5, 0.75)]
        median[:, c], spread[:, c] = q[1], q[2] - q[0]
    scale = float(bin_width_s) * 1000.0
    return latency.FirstSpikeStats((median + 0.5) * scale, spread * scale, reliability)


def _table(stores, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pipeline.responses_table(stores, **kwargs)


def _assert_equal_to_row_by_row(stores, monkeypatch, **kwargs):
    vectorised = _table(stores, **kwargs)
    with monkeypatch.context() as m:
        m.setattr(response_core, "latency_where_responding", _latency_row_by_row)
        m.setattr(latency, "first_spike_stats", _first_spike_per_condition)
        reference = _table(stores, **kwargs)
    pd.testing.assert_frame_equal(vectorised, reference, check_exact=True)
    return vectorised


# --------------------------------------------------------------------------
# Whole tables
# --------------------------------------------------------------------------
@pytest.mark.parametrize("mode", schema.RESPONSE_MODES)
def test_every_quirk_equals_row_by_row(quirky_converted, monkeypatch, mode):
    table = _assert_equal_to_row_by_row([quirky_converted.stores[1.0]], monkeypatch, mode=mode)
    assert table[schema.FIRST_SPIKE].notna().any()


@pytest.mark.parametrize("by", [None, (schema.BY_EMITTER,), (schema.BY_EMITTER, schema.BY_POWER)])
def test_planted_truth_equals_row_by_row(latency_converted, monkeypatch, by):
    table = _assert_equal_to_row_by_row(latency_converted.out, monkeypatch, by=by)
    assert table[schema.LATENCY].notna().any()
    assert table[schema.LIGHT_ARTIFACT].any()


# --------------------------------------------------------------------------
# The kernels on random arrays
# --------------------------------------------------------------------------
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    k=st.integers(0, 6),
    m=st.integers(0, 30),
    n_conditions=st.integers(1, 5),
    spike_fraction=st.floats(0.0, 1.0),
)
def test_first_spike_rows_equal_the_per_condition_loop(seed, k, m, n_conditions, spike_fraction):
    rng = np.random.default_rng(seed)
    bins = np.where(rng.random((k, m)) < spike_fraction, rng.integers(0, 40, (k, m)), -1).astype(np.int16)
    condition = rng.integers(-1, n_conditions, m)  # -1: left out
    got = latency.first_spike_stats(bins, condition, n_conditions, 0.001)
    expected = _first_spike_per_condition(bins, condition, n_conditions, 0.001)
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_array_equal(a, b)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    k=st.integers(1, 5),
    c=st.integers(1, 4),
    base=st.floats(0.0, 5.0),
    jump=st.floats(0.0, 20.0),
)
def test_onset_latency_rows_equal_the_function_row_by_row(seed, k, c, base, jump):
    rng = np.random.default_rng(seed)
    time_s = (np.arange(-100, 60) + 0.5) / 1000.0
    durations = rng.choice([0.0, 0.005, 0.01, 0.05], c)
    course = rng.poisson(base, (k, c, time_s.size))
    onset = rng.integers(100, 160, (k, c))
    rates = rng.choice([0.0, jump], (k, c))
    for i in range(k):
        for j in range(c):
            course[i, j, onset[i, j] :] += rng.poisson(rates[i, j], time_s.size - onset[i, j])
    n_trials = rng.integers(0, 40, c)
    sign = rng.integers(-1, 2, (k, c))
    got = response_core.latency_where_responding(course, n_trials, time_s, durations, 0.001, sign)
    expected = _latency_row_by_row(course, n_trials, time_s, durations, 0.001, sign)
    np.testing.assert_array_equal(got, expected)


def test_kernel_module_has_no_labels():
    import inspect

    source = inspect.getsource(timing_core)
    imports = [line for line in source.splitlines() if line.startswith(("import ", "from "))]
    assert imports == ["from __future__ import annotations", "import numpy as np"], imports


@pytest.mark.parametrize("seed", range(20))
def test_q_values_equal_scipys_false_discovery_control(seed):
    """latency.q_values (numpy, no scipy.stats import) equals scipy's Benjamini-Hochberg bit for bit, ties too."""
    from scipy.stats import false_discovery_control

    rng = np.random.default_rng(seed)
    n = int(rng.integers(0, 400))
    p = rng.random(n) ** rng.uniform(0.2, 5)
    p[rng.random(n) < 0.2] = np.round(p[rng.random(n) < 0.2][:1].sum() if n else 0.0, 1)  # ties
    p[rng.random(n) < 0.05] = 0.0
    p[rng.random(n) < 0.05] = 1.0
    p[rng.random(n) < 0.1] = np.nan
    got = latency.q_values(p)
    finite = np.isfinite(p)
    expected = np.full(p.shape, np.nan)
    if finite.any():
        expected[finite] = false_discovery_control(p[finite], method="bh")
    np.testing.assert_array_equal(got, expected)
