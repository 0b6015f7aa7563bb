"""Fixtures of the opto_cube tests and the hypothesis profiles; helpers live in ``tests/helpers.py``.

- Hypothesis profiles: ``ci`` (few examples, derandomized, no deadline) when
  the ``CI`` environment variable is set, ``dev`` otherwise;
  ``HYPOTHESIS_PROFILE`` overrides.
- Synthetic sessions written under tmp dirs; the converted ones that several
  tests only read are built once per test session (read-only).
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import (
    LATENCY_WINDOW_S,
    SESSION_ID,
    SPATIAL_SESSIONS,
    Converted,
    ConvertedDataset,
    LatencyDataset,
    SpatialDataset,
    convert_recording,
    quirky_spec,
    tiny_spec,
    write_synth,
)
from hypothesis import HealthCheck, settings

from opto_cube import schema, synth
from opto_cube.errors import OptoCubeWarning
from opto_cube.jobs import convert

settings.register_profile(
    "ci",
    max_examples=12,
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "dev",
    max_examples=25,
    deadline=None,
    database=None,  # no .hypothesis/ written into the repository
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("thorough", parent=settings.get_profile("dev"), max_examples=300)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev"))


@pytest.fixture
def data_root(tmp_path: Path) -> Path:
    """An empty data root (``sessions/`` inside it) in a fresh tmp dir."""
    root = tmp_path / "data"
    (root / schema.SESSIONS_DIR).mkdir(parents=True)
    return root


@pytest.fixture
def session_folder(data_root: Path) -> Path:
    """One tiny synthetic session (no warning quirks), fresh for each test (tests may break it)."""
    return write_synth(data_root / schema.SESSIONS_DIR / SESSION_ID)


@pytest.fixture(scope="session")
def quirky_converted(tmp_path_factory: pytest.TempPathFactory) -> Converted:
    """A tiny session with every quirk and window-edge spikes in every trial, converted at 1, 5 and 10 ms.

    Read-only: do not modify the folder or the stores.
    """
    root = tmp_path_factory.mktemp("quirky") / "data"
    folder = write_synth(root / schema.SESSIONS_DIR / SESSION_ID, quirky_spec())
    stores, messages = {}, []
    for bin_ms in (1.0, 5.0, 10.0):
        result, caught = convert_recording(folder, root.parent / f"stores_{bin_ms:g}ms", bin_ms=bin_ms)
        stores[bin_ms] = Path(result.store)
        messages += caught
    return Converted(folder, root, stores, tuple(messages))


@pytest.fixture(scope="session")
def tiny_converted(tmp_path_factory: pytest.TempPathFactory) -> Converted:
    """A clean tiny session (no warnings) converted at 10 ms with default parameters. Read-only."""
    root = tmp_path_factory.mktemp("tiny") / "data"
    folder = write_synth(root / schema.SESSIONS_DIR / SESSION_ID, tiny_spec(seed=7))
    with warnings.catch_warnings():
        warnings.simplefilter("error", OptoCubeWarning)  # the clean session really is clean
        result = convert.convert_session(folder, root.parent / "stores", bin_ms=10)
    return Converted(folder, root, {10.0: Path(result.store)}, ())


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> ConvertedDataset:
    """Three tiny synthetic sessions (synth.make_dataset, with its quirks) converted at 10 ms. Read-only."""
    base = tmp_path_factory.mktemp("dataset")
    folders = synth.make_dataset(base / "data", n_sessions=3, size="tiny", seed=2)
    results = convert.convert(base / "data", base / "stores", bin_ms=10)  # warnings are recorded in the results
    assert all(r.status == "converted" for r in results), [str(r) for r in results]
    return ConvertedDataset(base / "data", tuple(folders), base / "stores", tuple(results))


@pytest.fixture(scope="session")
def spatial_dataset(tmp_path_factory: pytest.TempPathFactory) -> SpatialDataset:
    """SPATIAL_SESSIONS small synthetic sessions converted at 10 ms and their responses table. Read-only; slow."""
    from opto_cube.jobs import pipeline
    from opto_cube.store.catalog import open_catalog

    base = tmp_path_factory.mktemp("spatial")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OptoCubeWarning)  # the generator's planted quirks
        synth.make_dataset(base / "data", n_sessions=SPATIAL_SESSIONS, size="small", seed=11)
        results = convert.convert(base / "data", base / "stores", bin_ms=10)
        assert all(r.status == "converted" for r in results), [str(r) for r in results]
        table = pipeline.responses_table(open_catalog(base / "stores"))
    return SpatialDataset(base / "data", table)


@pytest.fixture
def no_warnings() -> Iterator[None]:
    """Any OptoCubeWarning inside the test is an error (pyproject does that too; explicit here)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", OptoCubeWarning)
        yield


@pytest.fixture(scope="session")
def latency_converted(tmp_path_factory: pytest.TempPathFactory) -> LatencyDataset:
    """Two sessions of the "latency" size (200-ms pulses, 3 artifact units each) converted at 1 ms into one
    folder, with their planted truth. Read-only."""
    base = tmp_path_factory.mktemp("latency_columns")
    truths = {}
    for seed in (1, 2):
        name = f"AL00{40 + seed}_2024-11-0{seed}_en1_p0"
        truths[name] = synth.write_session(base / "data" / name, dataclasses.replace(synth.SIZES["latency"], seed=seed))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", OptoCubeWarning)  # the generator's quirks
            convert.convert_session(base / "data" / name, base / "stores", bin_ms=1, window_s=LATENCY_WINDOW_S)
    return LatencyDataset(base / "stores", truths)
