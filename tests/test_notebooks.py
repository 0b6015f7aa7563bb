"""The notebooks in ``notebooks/`` run headless, top to bottom, on synthetic data, and are committed clean.

Each notebook is executed with nbclient in a fresh ``python3`` kernel, from
``notebooks/`` as a user would, with ``OPTO_CUBE_NOTEBOOK_DATA`` pointing to a
tmp dir: the notebook creates its synthetic sessions and stores there, so
nothing is written into the repository. A cell that raises fails the test
with the cell's source and the error.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="nbformat is not installed (pip install -e '.[test]')")
nbclient = pytest.importorskip("nbclient", reason="nbclient is not installed (pip install -e '.[test]')")
pytest.importorskip("ipykernel", reason="ipykernel is not installed: the notebooks need a python3 kernel")

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS_DIR = REPO / "notebooks"
NOTEBOOKS = ("01_convert.ipynb", "02_explore.ipynb", "03_maps_on_a_cluster.ipynb")
DATA_VARIABLE = "OPTO_CUBE_NOTEBOOK_DATA"
CELL_TIMEOUT_S = 300


def _read(name: str):
    return nbformat.read(NOTEBOOKS_DIR / name, as_version=4)


def _execute(name: str, data: Path, monkeypatch: pytest.MonkeyPatch):
    """Run the notebook in a new kernel (cwd notebooks/, data under ``data``); return the executed notebook."""
    monkeypatch.setenv(DATA_VARIABLE, str(data))  # the kernel inherits the environment
    nb = _read(name)
    client = nbclient.NotebookClient(
        nb, timeout=CELL_TIMEOUT_S, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS_DIR)}}
    )
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as e:
        pytest.fail(f"{name}: a cell failed\n{e}", pytrace=False)
    errors = [o for cell in nb.cells for o in cell.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, f"{name}: {[(o['ename'], o['evalue']) for o in errors]}"
    return nb


def _text(nb) -> str:
    """Everything the notebook printed or displayed as text."""
    parts = []
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            parts.append(o.get("text", ""))
            parts.append(o.get("data", {}).get("text/plain", ""))
    return "\n".join(parts)


# --------------------------------------------------------------------------
# Committed clean
# --------------------------------------------------------------------------
def test_the_notebooks_are_all_here() -> None:
    assert sorted(p.name for p in NOTEBOOKS_DIR.glob("*.ipynb")) == sorted(NOTEBOOKS)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_is_committed_without_outputs(name: str) -> None:
    nb = _read(name)
    nbformat.validate(nb)
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{name}, cell {i}: outputs not stripped"
            assert cell.execution_count is None, f"{name}, cell {i}: execution count not stripped"
        assert "execution" not in cell.get("metadata", {}), f"{name}, cell {i}: execution timing not stripped"
    assert "widgets" not in nb.metadata


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_reads_its_data_location_from_the_environment(name: str) -> None:
    """Runs by hand (default ../stores/notebooks) and in the tests (the variable): no other hard-coded path."""
    source = "\n".join(c.source for c in _read(name).cells if c.cell_type == "code")
    assert f'os.environ.get("{DATA_VARIABLE}", "../stores/notebooks")' in source
    assert not re.search(r"""["'](/tmp|/work|/home|[A-Z]:\\)""", source)


def test_readme_links_every_notebook() -> None:
    readme = (REPO / "README.md").read_text()
    for name in NOTEBOOKS:
        assert f"(notebooks/{name})" in readme, name


# --------------------------------------------------------------------------
# Run headless
# --------------------------------------------------------------------------
def test_01_convert(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nb = _execute("01_convert.ipynb", tmp_path, monkeypatch)
    stores = sorted((tmp_path / "stores").glob("*.zarr"))
    assert len(stores) == 3
    text = _text(nb)
    assert "0 converted, 3 skipped, 0 failed" in text  # the CLI run after the Python one
    assert f"session   {stores[0].name.removesuffix('.zarr')}" in text  # opto-cube info


@pytest.mark.slow
def test_02_explore(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nb = _execute("02_explore.ipynb", tmp_path, monkeypatch)
    assert len(list((tmp_path / "stores_1ms").glob("*.zarr"))) == 1
    assert any("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))
    assert re.search(r"in the first 100 trials\s+8\s+8", _text(nb))  # chunks needed == chunks read, 8 of 40


@pytest.mark.slow
def test_03_maps_on_a_cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pandas as pd

    nb = _execute("03_maps_on_a_cluster.ipynb", tmp_path, monkeypatch)
    table = pd.read_csv(tmp_path / "results" / "responses.csv")
    assert table["session_id"].nunique() == 3
    assert len(table) > 0
    assert (tmp_path / "results" / "maps.nc").stat().st_size > 0
    assert "processes=2 threads=2" in _text(nb)  # the LocalCluster's client
    figures = sum("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))
    assert figures >= 4
