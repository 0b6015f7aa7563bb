"""Synthetic Neuropixels Opto sessions, written in the exact on-disk format of docs/format.md.

A session is drawn from a small generative model with a known answer: Poisson
units (regular-spiking RS and fast-spiking FS) with a refractory period, spread
in depth under the brain surface, and 14 emitters along the shank whose pulses
multiply FS rates (activation) and divide RS rates (inactivation) with a
strength that saturates with power and decays exponentially with the distance
between unit and emitter. Each unit's rate change starts its own latency after
light onset (2-4 ms by default, 2-10 ms in the "latency" and "realistic" sizes,
on the sample grid) and lasts to the end of the pulse. A few light-artifact
units (the probe's switching artifacts) fire within 0.5 ms after light onset and
after light offset on most trials, at every emitter and power, with no opto
effect of their own. All times sit on the 30 kHz sample grid. The
generator also plants the quirks real exports have (spikeless rows, NaN QC
metrics, unknown peak channels, jittered calibrated powers, stim rows out of
onset order, spikes exactly on window edges, missing optional files, a
session.json that disagrees with its arrays), each behind a knob of
:class:`SessionSpec`.

The modules, by idea:

- :mod:`~opto_cube.synth.model`: the knobs (:class:`SessionSpec`, :data:`SIZES`) and the planted
  answer (:class:`GroundTruth`, with its closed-form rate multipliers);
- :mod:`~opto_cube.synth.simulate`: the random draws of trials, units and spikes (pure numpy);
- :mod:`~opto_cube.synth.alf`: one session as an ALF folder (:func:`write_session`) and its session.json;
- :mod:`~opto_cube.synth.kilosort`: the same session as a Kilosort / phy folder plus ``pulses.csv``
  (:func:`write_kilosort_session`, :class:`KilosortQuirks`) and its ALF twin (:func:`write_alf_twin`);
- :mod:`~opto_cube.synth.dataset`: a whole data root (:func:`make_dataset`, :func:`load_ground_truth`).

Examples
--------
>>> import tempfile, pathlib
>>> with tempfile.TemporaryDirectory() as tmp:
...     folders = make_dataset(tmp, n_sessions=2, size="tiny", seed=1)
...     truth = load_ground_truth(tmp, folders[0].name)
...     print(len(folders), truth.session_id == folders[0].name, len(truth.waveform_type))
2 True 8
"""

from opto_cube.synth.alf import LASERS, SESSION_ID, write_session
from opto_cube.synth.dataset import (
    GROUND_TRUTH_DIR,
    LAYOUT_ALF,
    LAYOUT_KILOSORT,
    LAYOUTS,
    load_ground_truth,
    make_dataset,
)
from opto_cube.synth.kilosort import KilosortQuirks, write_alf_twin, write_kilosort_session
from opto_cube.synth.model import (
    CHANNEL_COLUMNS_X_UM,
    CHANNEL_ROW_PITCH_UM,
    SAMPLES_PER_S,
    SIZES,
    TEMPLATE_SAMPLES,
    TEMPLATE_SPREAD_UM,
    TEMPLATE_TROUGH_SAMPLE,
    GroundTruth,
    SessionSpec,
)

__all__ = [
    "CHANNEL_COLUMNS_X_UM",
    "CHANNEL_ROW_PITCH_UM",
    "GROUND_TRUTH_DIR",
    "LASERS",
    "LAYOUTS",
    "LAYOUT_ALF",
    "LAYOUT_KILOSORT",
    "SAMPLES_PER_S",
    "SESSION_ID",
    "SIZES",
    "TEMPLATE_SAMPLES",
    "TEMPLATE_SPREAD_UM",
    "TEMPLATE_TROUGH_SAMPLE",
    "GroundTruth",
    "KilosortQuirks",
    "SessionSpec",
    "load_ground_truth",
    "make_dataset",
    "write_alf_twin",
    "write_kilosort_session",
    "write_session",
]
