"""The ``opto-cube demo`` job: the whole job on synthetic sessions, in a folder the demo owns.

:func:`run_demo` generates sessions (:func:`opto_cube.synth.make_dataset`), converts them
(:func:`opto_cube.jobs.convert.convert`), makes the one analysis pass (:func:`demo_pass`) that the
responses table, :func:`opto_cube.jobs.maps_job.run_maps` and
:func:`opto_cube.jobs.report_job.run_report` all read, and says each step as it starts. The demo
replaces only what it wrote: the folder's mark (:data:`DEMO_MARK`) lists the files of ``data/``
it wrote, and :func:`demo_may_write` refuses a folder holding anything else.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opto_cube import schema
from opto_cube.errors import OptoCubeError

if TYPE_CHECKING:
    from opto_cube.jobs.tasks import AnalysisPass

__all__ = ["DEMO_MARK", "DemoResult", "demo_may_write", "demo_pass", "example_stores", "run_demo", "write_demo_mark"]

DEMO_MARK = ".opto-cube-demo.json"  # in a demo's --out: the files of data/ the demo wrote (relative paths)


def example_stores(n_sessions: int = 1, *, bin_ms: float = 10.0, size: str = "tiny", seed: int = 0) -> Path:
    """A new temporary folder holding synthetic sessions (``data/``) and their stores (``stores/``).

    What the examples of the package's docstrings start from: ``n_sessions``
    sessions of ``size`` (:func:`opto_cube.synth.make_dataset`), converted at
    ``bin_ms`` (:func:`opto_cube.jobs.convert.convert_session`); the
    generator's deliberate quirks are not warned about.

    Examples
    --------
    >>> root = example_stores(2)
    >>> sorted(p.name for p in (root / "stores").iterdir())
    ['AL0055_2024-11-09_en1_p0.zarr', 'AL0055_2024-11-11_en2_p0.zarr']
    """
    import tempfile
    import warnings

    from opto_cube import synth
    from opto_cube.errors import OptoCubeWarning
    from opto_cube.jobs.convert import convert_session

    root = Path(tempfile.mkdtemp(prefix="opto_cube-example-"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OptoCubeWarning)
        for folder in synth.make_dataset(root / "data", n_sessions=n_sessions, size=size, seed=seed):
            convert_session(folder, root / "stores", bin_ms=bin_ms)
    return root


def _demo_files(data: Path) -> list[str]:
    return sorted(p.relative_to(data).as_posix() for p in data.rglob("*") if p.is_file() or p.is_symlink())


def write_demo_mark(out: Path) -> None:
    """Write the demo's mark in ``out``: the files of ``out/data`` the demo wrote (atomically)."""
    from opto_cube.store.write import atomic_file

    with atomic_file(out / DEMO_MARK) as tmp:
        tmp.write_text(json.dumps({"data": _demo_files(out / "data")}, indent=1))


def demo_may_write(out: Path) -> None:
    """Refuse a demo ``--out`` holding anything a demo did not write: the demo replaces only its own files.

    ``--out`` may be absent, empty, or a previous demo's folder (its mark lists
    the files it wrote under ``data/``, which are all the demo ever deletes;
    the other outputs, ``stores/``, ``responses.csv``, ``maps/`` and the
    report, are the demo's own names, and ``stores/`` replaces only stores).

    Examples
    --------
    >>> import tempfile
    >>> demo_may_write(Path(tempfile.mkdtemp()) / "new")  # absent: the demo may write there
    """
    if not out.exists() and not out.is_symlink():
        return
    if not out.is_dir():
        raise OptoCubeError(f"{out}: exists and is not a folder; give demo --out a new or empty folder")
    entries = sorted(p.name for p in out.iterdir())
    if not entries:
        return
    mark = out / DEMO_MARK
    try:
        written = set(json.loads(mark.read_text())["data"]) if mark.is_file() else None
    except (OSError, ValueError, KeyError, TypeError):
        written = None
    if written is None:
        raise OptoCubeError(
            f"{out}: holds files opto-cube demo did not write ({', '.join(map(repr, entries[:3]))}"
            f"{', ...' if len(entries) > 3 else ''}); refusing to touch them: give demo --out a new or empty folder"
        )
    data = out / "data"
    if data.is_symlink() or (data.exists() and not data.is_dir()):
        raise OptoCubeError(f"{data}: not the folder a demo wrote; refusing to touch it: choose another --out")
    foreign = [name for name in _demo_files(data) if name not in written] if data.is_dir() else []
    if foreign:
        raise OptoCubeError(
            f"{data / foreign[0]}: not written by opto-cube demo; refusing to replace {data}"
            " (left untouched): move it away or choose another --out"
        )


def demo_pass(source: Any) -> AnalysisPass:
    """The one pass of a catalog that the responses table, :func:`opto_cube.jobs.maps_job.run_maps` and
    :func:`opto_cube.jobs.report_job.run_report` (their defaults: every duration, the longest pulse's PSTH)
    all read: the demo's."""
    from opto_cube.analysis import psth
    from opto_cube.jobs.pipeline import bin_widths
    from opto_cube.jobs.tasks import analysis_pass

    options = {"duration_s": "max", "bin_ms": psth.psth_bin_ms(bin_widths(source))}
    return analysis_pass(source, psth_options=options)


@dataclass
class DemoResult:
    """What :func:`run_demo` wrote.

    Attributes
    ----------
    conversions
        The :class:`opto_cube.jobs.convert.ConversionResult` of each session.
    stores, table_path, report_path
        The folder of stores, the responses table, the HTML report.
    n_rows
        Rows of the responses table.
    maps
        File name -> path of every file of the maps job.
    """

    conversions: Sequence[Any]
    stores: Path
    table_path: Path
    n_rows: int
    maps: dict[str, Path]
    report_path: Path

    @property
    def failed(self) -> int:
        """Sessions whose conversion failed."""
        return sum(r.status == "failed" for r in self.conversions)

    def lines(self) -> list[str]:
        """The closing lines of ``opto-cube demo``: where each result is and how to open it."""
        first = str(next(self.stores.glob("*.zarr")))
        figures = ", ".join(str(p) for name, p in self.maps.items() if name.endswith(".png"))
        return [
            f"\nopen one in Python:  opto_cube.open_cube({first!r})",
            f"or:                  opto-cube info {self.stores}",
            f"the responses table: {self.table_path} ({self.n_rows} rows, one per session x cluster x condition)",
            f"the maps:            {self.maps['maps.nc']}   (xarray.open_dataset)",
            f"the figures:         {figures}",
            f"the report:          {self.report_path}   (one HTML page to mail or archive)",
        ]


def _print(text: str) -> None:
    print(text, flush=True)


def run_demo(
    out: str | Path,
    *,
    sessions: int = 3,
    size: str = "small",
    seed: int = 0,
    bin_ms: float = schema.DEFAULT_BIN_MS,
    say: Callable[[str], None] = _print,
    converted: Callable[[Sequence[Any]], Any] | None = None,
) -> DemoResult:
    """The whole job on synthetic sessions: generate, convert, the responses table, the maps, the report.

    Parameters
    ----------
    out
        The demo's folder: absent, empty, or a previous demo's (:func:`demo_may_write`); it gets
        ``data/`` (the sessions), ``stores/``, ``responses.csv``, ``maps/`` and the report.
    sessions, size, seed
        As in :func:`opto_cube.synth.make_dataset`.
    bin_ms
        The cubes' bin width, ms.
    say
        Called with each step's line as the step starts (default: printed).
    converted
        Called with the conversions' results as soon as they are done (the command prints them).

    Returns
    -------
    DemoResult

    Raises
    ------
    OptoCubeError
        ``out`` holds files a demo did not write, or no session converted.
    """
    from opto_cube import synth
    from opto_cube.jobs.convert import convert
    from opto_cube.jobs.maps_job import run_maps
    from opto_cube.jobs.pipeline import responses_table, write_table
    from opto_cube.jobs.report_job import run_report
    from opto_cube.store.catalog import open_catalog

    out = Path(out)
    data, stores = out / "data", out / "stores"
    demo_may_write(out)
    if data.exists():
        shutil.rmtree(data)  # only the synthetic sessions a demo wrote there (demo_may_write checked each file)
    say(f"1. generating {sessions} synthetic sessions ({size}) in {data}")
    synth.make_dataset(data, n_sessions=sessions, size=size, seed=seed)
    write_demo_mark(out)
    say(f"2. converting them to Zarr cubes in {stores}")
    conversions = convert(data, stores, bin_ms=bin_ms, overwrite=True, jobs=1, progress=True)
    if converted is not None:
        converted(conversions)
    catalog = open_catalog(stores)
    if not len(catalog):
        raise OptoCubeError(f"{stores}: no session converted")
    table_path, maps_dir = out / "responses.csv", out / "maps"
    say(f"3. responses of every cluster in every condition -> {table_path}")
    done = demo_pass(catalog)  # the one pass over the sessions: the table, the maps and the report read it
    table = responses_table(done)
    write_table(table, table_path)
    say(f"4. maps and figures -> {maps_dir}")
    written = run_maps(catalog, maps_dir, analysis=done)
    report_path = out / schema.REPORT_DEFAULT_NAME
    say(f"5. the HTML report (maps, spatial extent, power response, PSTHs) -> {report_path}")
    run_report(catalog, report_path, analysis=done)
    return DemoResult(conversions, stores, table_path, len(table), written, report_path)
