"""The ``opto-cube`` command: a thin layer over the package.

Every error is one line on standard error (``opto-cube: error: <file>: <problem>``)
with a non-zero exit status; set ``OPTO_CUBE_DEBUG=1`` to see tracebacks.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from opto_cube import __version__, schema
from opto_cube.errors import OptoCubeError, OptoCubeWarning, one_line

REPORT_SUFFIXES = (".html", ".htm")

if TYPE_CHECKING:
    import pandas as pd

EXIT_FAILED = 1
EXIT_USAGE = 2


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def escaped(text: str) -> str:
    """``text`` with control characters shown escaped (a newline in a folder name stays on one line).

    Examples
    --------
    >>> escaped("a\\nb\\tc")
    'a\\\\nb\\\\tc'
    """
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], text)


def _say(*parts: object) -> None:
    print(*parts, flush=True)


def _say_escaped(text: str) -> None:
    """Print lines of text from stores (session ids, paths) with their control characters escaped."""
    _say("\n".join(escaped(line) for line in text.split("\n")))


def _err(message: str) -> None:
    print(f"opto-cube: {escaped(message)}", file=sys.stderr, flush=True)


def _window(text: str) -> tuple[float, float]:
    try:
        start, stop = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected START,STOP in seconds (e.g. -0.5,1.0), got {text!r}") from None
    return start, stop


def _positive_number(what: str) -> Callable[[str], float]:
    """An argparse type: a finite positive float, or one line saying ``expected <what>``."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = -1.0
        if not 0 < value < float("inf"):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    return parse


_positive_float = _positive_number("a positive number")
_positive_um = _positive_number("a positive width in um (e.g. 100)")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}")
    return value


# --------------------------------------------------------------------------
# convert
# --------------------------------------------------------------------------
def _report(results: Sequence, quiet: bool = False) -> int:
    failed = 0
    for r in results:
        for w in r.warnings:
            _err(f"warning: {w}")
        if r.status == "failed":
            failed += 1
            _err(f"error: {r.error}")
        elif not quiet:
            _say(escaped(str(r)))
    counts = {s: sum(r.status == s for r in results) for s in ("converted", "skipped", "failed")}
    _say(", ".join(f"{n} {s}" for s, n in counts.items()) + f" ({len(results)} session{'s' * (len(results) != 1)})")
    return EXIT_FAILED if failed else 0


def cmd_convert(args: argparse.Namespace) -> int:
    from opto_cube.jobs.convert import convert

    budgets = {"max_buffer_gib": args.max_buffer_gib, "max_cube_gib": args.max_cube_gib}
    results = convert(
        args.data_root,
        args.out,
        sessions=args.session,
        jobs=args.jobs,
        scheduler=args.scheduler,
        progress=not args.quiet,
        bin_ms=args.bin_ms,
        window_s=args.window,
        tip_offset_um=args.tip_offset_um,
        overwrite=args.overwrite,
        surface_um=args.surface_um,
        **budgets,
    )
    return _report(results, args.quiet)


# --------------------------------------------------------------------------
# to-nwb
# --------------------------------------------------------------------------
def cmd_to_nwb(args: argparse.Namespace) -> int:
    from opto_cube.jobs.to_nwb import to_nwb

    results = to_nwb(
        args.data_root, args.out, sessions=args.session, tip_offset_um=args.tip_offset_um, with_cube=args.with_cube,
        overwrite=args.overwrite,
    )  # fmt: skip
    failed = 0
    for r in results:
        for w in r.warnings:
            _err(f"warning: {w}")
        if r.status == "failed":
            failed += 1
            _err(f"error: {r.error}")
        else:
            _say(escaped(str(r)))
    _say(f"{len(results) - failed} written, {failed} failed ({len(results)} session{'s' * (len(results) != 1)})")
    return EXIT_FAILED if failed else 0


# --------------------------------------------------------------------------
# verify
# --------------------------------------------------------------------------
def cmd_verify(args: argparse.Namespace) -> int:
    from opto_cube.jobs.verify import verify

    reports = verify(args.path, data_root=args.data, progress=not args.quiet)
    for report in reports:
        for problem in report.problems:
            _err(f"error: {problem}")
        _say(escaped(str(report)))
    damaged = sum(not r.ok for r in reports)
    _say(f"{len(reports) - damaged} ok, {damaged} damaged ({len(reports)} store{'s' * (len(reports) != 1)})")
    return EXIT_FAILED if damaged else 0


# --------------------------------------------------------------------------
# info
# --------------------------------------------------------------------------
def cmd_info(args: argparse.Namespace) -> int:
    from opto_cube.jobs.info import describe_stores

    for block in describe_stores(args.path):
        _say_escaped(block)
    return 0


# --------------------------------------------------------------------------
# responses
# --------------------------------------------------------------------------
def _keys(text: str) -> tuple[str, ...]:
    return tuple(k.strip() for k in text.split(",") if k.strip())


def _add_map_options(parser: argparse.ArgumentParser, durations: str) -> None:
    """The stores, ``--distance-bin-um``, ``--duration-s`` and ``--responses`` of ``maps`` and ``report``."""
    parser.add_argument("stores", metavar="STORES", help="a folder of .zarr stores")
    parser.add_argument(
        "--distance-bin-um",
        type=_positive_um,
        default=schema.MAP_DEFAULT_DISTANCE_BIN_UM,
        help="width of the effect map's distance bins, um (default %(default)s)",
    )
    parser.add_argument(
        "--duration-s",
        type=_duration,
        default=None,
        metavar="S",
        help=f"only pulses of this duration, s, or 'max' (default: {durations})",
    )
    parser.add_argument("--responses", metavar="FILE", help="use this responses table (.csv/.parquet) of the stores")


def _add_cluster_options(parser: argparse.ArgumentParser) -> None:
    """``--scheduler`` and ``--workers``, read by :func:`_dask_cluster`."""
    parser.add_argument("--scheduler", metavar="ADDRESS", help="compute on this dask.distributed scheduler")
    parser.add_argument(
        "--workers",
        type=_positive_int,
        default=None,
        metavar="N",
        help="compute on a local cluster of N worker processes",
    )


@contextlib.contextmanager
def _dask_cluster(args: argparse.Namespace) -> Iterator[None]:
    """Run the block on ``--scheduler ADDRESS`` or on a ``--workers N`` LocalCluster (else dask's threads)."""
    if not (args.scheduler or args.workers):
        yield
        return
    from distributed import Client, LocalCluster

    with contextlib.ExitStack() as stack:
        if args.scheduler:
            client = stack.enter_context(Client(args.scheduler))
        else:
            cluster = stack.enter_context(
                LocalCluster(n_workers=args.workers, processes=True, threads_per_worker=1, dashboard_address=":0")
            )
            client = stack.enter_context(Client(cluster))
        _say(f"computing on {client.scheduler.address}")
        yield


def cmd_responses(args: argparse.Namespace) -> int:
    from opto_cube.analysis.conditions import check_by
    from opto_cube.jobs.pipeline import TABLE_SUFFIXES, responses_table, write_table
    from opto_cube.store.catalog import catalog_of

    out = Path(args.out)
    if out.suffix not in TABLE_SUFFIXES:
        raise OptoCubeError(f"{out}: unknown table format {out.suffix!r}; use .csv or .parquet")
    by = _keys(args.by) if args.by is not None else None
    try:
        check_by(by, args.mode)
    except ValueError as e:
        raise OptoCubeError(f"--by {args.by!r}: {e}") from e
    catalog = catalog_of(args.stores)
    with _dask_cluster(args):
        try:
            table = responses_table(
                catalog, by=by, mode=args.mode, significant_by=args.significant_by, timing=args.timing
            )
        except ValueError as e:
            raise OptoCubeError(str(e)) from e
    write_table(table, out)
    n = len(catalog)
    _say(f"wrote {len(table)} rows ({n} session{'s' * (n != 1)}, mode {args.mode}) to {out}")
    return 0


# --------------------------------------------------------------------------
# maps
# --------------------------------------------------------------------------
def _duration(text: str) -> float | str:
    if text in ("max", "min"):
        return text
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a pulse duration in s (e.g. 0.05), 'max' or 'min', got {text!r}")
    return value


def cmd_maps(args: argparse.Namespace) -> int:
    from opto_cube.jobs.maps_job import run_maps
    from opto_cube.store.catalog import catalog_of

    catalog = catalog_of([args.stores])
    table = _read_responses(args.responses) if args.responses else None
    with _dask_cluster(args):
        try:
            written = run_maps(
                catalog,
                args.out,
                distance_bin_um=args.distance_bin_um,
                duration_s=args.duration_s,
                table=table,
                keep_artifacts=args.keep_artifacts,
            )
        except ValueError as e:
            raise OptoCubeError(f"{args.stores}: {e}") from e
    for path in written.values():
        _say(f"wrote {path}")
    return 0


# --------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------
def _read_responses(path_text: str) -> pd.DataFrame:
    import pandas as pd

    try:
        path = Path(path_text)
        return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    except (OSError, ValueError) as e:
        raise OptoCubeError(f"{path_text}: cannot read the responses table ({e})") from e


def cmd_report(args: argparse.Namespace) -> int:
    from opto_cube.jobs.report_job import run_report
    from opto_cube.store.catalog import catalog_of

    out = Path(args.out)
    if out.is_dir():
        raise OptoCubeError(f"{out}: is a folder; give the report's file name (for instance {out / 'report.html'})")
    if out.suffix.lower() not in REPORT_SUFFIXES:
        raise OptoCubeError(f"{out}: the report is an HTML page; give a file name ending in .html")
    catalog = catalog_of([args.stores])
    table = _read_responses(args.responses) if args.responses else None
    with _dask_cluster(args):
        try:
            page = run_report(
                catalog,
                out,
                distance_bin_um=args.distance_bin_um,
                duration_s=args.duration_s,
                table=table,
                n_boot=args.n_boot,
                title=args.title,
            )
        except ValueError as e:
            raise OptoCubeError(f"{args.stores}: {e}") from e
    n = len(catalog)
    _say(f"wrote {page} ({page.stat().st_size / 1e6:.2f} MB, {n} session{'s' * (n != 1)})")
    return 0


# --------------------------------------------------------------------------
# demo
# --------------------------------------------------------------------------
def cmd_demo(args: argparse.Namespace) -> int:
    from opto_cube.jobs.demo import run_demo

    result = run_demo(
        args.out, sessions=args.sessions, size=args.size, seed=args.seed, bin_ms=args.bin_ms, say=_say,
        converted=_report,
    )  # fmt: skip
    for line in result.lines():
        _say(line)
    return EXIT_FAILED if result.failed else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="opto-cube", description="Neuropixels Opto sessions as Zarr spike-count cubes, and their responses."
    )
    parser.add_argument("--version", action="version", version=f"opto_cube {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("convert", help="convert ALF session folders into one Zarr cube each")
    p.add_argument("data_root", help="data folder (holding sessions/), a folder of sessions, or one session")
    p.add_argument("--out", required=True, help="folder of stores (created if needed)")
    p.add_argument("--session", action="append", metavar="ID", help="convert only this session (repeatable)")
    p.add_argument("--bin-ms", type=float, default=schema.DEFAULT_BIN_MS, help="bin width, ms (default %(default)s)")
    p.add_argument(
        "--window",
        type=_window,
        default=None,
        metavar="START,STOP",
        help="window relative to onset, s (default -0.5 to max(1.0, longest pulse + 0.5))",
    )
    p.add_argument(
        "--tip-offset-um",
        type=float,
        default=schema.TIP_OFFSET_UM,
        help="where the channel axis's zero lies above the probe tip, um (default %(default)s)",
    )
    p.add_argument(
        "--surface-um",
        type=float,
        default=None,
        help="Kilosort/phy sessions: the brain surface's y on the channel axis, um, when session.json has no top_chan",
    )
    p.add_argument("--overwrite", action="store_true", help="rebuild stores that are up to date")
    p.add_argument("--jobs", type=_positive_int, default=1, help="sessions at once, local processes")
    p.add_argument("--scheduler", metavar="ADDRESS", help="run on this dask.distributed scheduler")
    p.add_argument("--quiet", action="store_true", help="no progress bars or per-session lines")
    p.add_argument(
        "--max-buffer-gib",
        type=_positive_float,
        default=schema.MAX_BUFFER_GIB,
        metavar="GIB",
        help="refuse a session whose trial-chunk buffer would exceed this, GiB (default %(default)s)",
    )
    p.add_argument(
        "--max-cube-gib",
        type=_positive_float,
        default=schema.MAX_CUBE_GIB,
        metavar="GIB",
        help="refuse a session whose cube would exceed this uncompressed, GiB (default %(default)s)",
    )
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("to-nwb", help="write one NWB file per ALF session (<session_id>.nwb; docs/nwb.md)")
    p.add_argument("data_root", help="data folder (holding sessions/), a folder of sessions, or one session")
    p.add_argument("--out", required=True, metavar="DIR", help="folder of .nwb files (created if needed)")
    p.add_argument("--session", action="append", metavar="ID", help="only this session (repeatable)")
    p.add_argument(
        "--tip-offset-um",
        type=float,
        default=schema.TIP_OFFSET_UM,
        help="where the channel axis's zero lies above the probe tip, um (default %(default)s)",
    )
    p.add_argument(
        "--with-cube",
        metavar="STORES",
        help="add each session's cube from this folder of stores as ndx-binned-spikes BinnedAlignedSpikes",
    )
    p.add_argument("--overwrite", action="store_true", help="replace <session_id>.nwb files opto_cube wrote before")
    p.set_defaults(func=cmd_to_nwb)

    p = sub.add_parser("verify", help="check stores: every chunk present and whole, window counts, sources")
    p.add_argument("path", help="a .zarr store or a folder of them (or URL)")
    p.add_argument(
        "--data",
        metavar="DATA_ROOT",
        help="also compare the sources' SHA-256 with the stores' and count every spike again from them",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars while recounting")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("info", help="what a store (or a folder of stores) holds")
    p.add_argument("path", help="a .zarr store or a folder of them")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("responses", help="per-condition responses of every cluster: the long table (csv/parquet)")
    p.add_argument("stores", nargs="+", metavar="STORES", help="a folder of .zarr stores (or URL), or stores")
    p.add_argument("--out", required=True, metavar="FILE", help="the table to write: FILE.csv or FILE.parquet")
    p.add_argument(
        "--mode",
        default=schema.MODE_PER_CONDITION,
        choices=schema.RESPONSE_MODES,
        help="per_condition (default) or published (parity with the dataset's published analysis)",
    )
    p.add_argument(
        "--by",
        default=None,
        metavar="KEYS",
        help=f"what splits conditions, comma-separated among {','.join(schema.CONDITION_KEYS)} "
        "(default: all three; published: emitter)",
    )
    p.add_argument(
        "--significant-by",
        default="p",
        choices=schema.SIGNIFICANT_BY,
        help="significant is p_value < 0.005 (p, default) or the Benjamini-Hochberg q_value < 0.005 (q)",
    )
    p.add_argument(
        "--no-timing",
        dest="timing",
        action="store_false",
        help="the published statistics alone (window counts only): latency, first-spike and artifact columns NaN",
    )
    _add_cluster_options(p)
    p.set_defaults(func=cmd_responses)

    p = sub.add_parser("maps", help="effect against distance, power and cell type: DIR/maps.nc and PNG figures")
    p.add_argument(
        "--out",
        required=True,
        metavar="DIR",
        help="output folder: maps.nc (netCDF) and effect_map, depth_vs_emitter, modulation_index, psth .png",
    )
    _add_map_options(p, "every duration")
    p.add_argument(
        "--keep-artifacts",
        action="store_true",
        help="keep the units flagged light_artifact in the maps and depth plots (default: left out)",
    )
    _add_cluster_options(p)
    p.set_defaults(func=cmd_maps)

    p = sub.add_parser("report", help="one self-contained HTML page of the results, to mail or archive")
    p.add_argument("--out", required=True, metavar="FILE", help="the page to write: FILE.html")
    _add_map_options(p, "every duration in the maps, the longest pulse in the spatial extent, power response and PSTHs")
    p.add_argument(
        "--n-boot",
        type=_positive_int,
        default=schema.EXTENT_N_BOOT,
        metavar="N",
        help="bootstrap resamples of the spatial extent (default %(default)s)",
    )
    p.add_argument("--title", default=None, help="the page's title (default: opto_cube report: N sessions)")
    _add_cluster_options(p)
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("demo", help="the whole job on synthetic sessions, under stores/demo/ (with report.html)")
    p.add_argument("--out", default="stores/demo", help="output folder (default %(default)s)")
    p.add_argument("--sessions", type=_positive_int, default=3, help="how many sessions (default %(default)s)")
    p.add_argument("--size", default="small", choices=("tiny", "small", "realistic"), help="session size")
    p.add_argument("--bin-ms", type=float, default=schema.DEFAULT_BIN_MS, help="bin width, ms")
    p.add_argument("--seed", type=int, default=0, help="random seed of the generator")
    p.set_defaults(func=cmd_demo)
    return parser


def _one_line_warnings(message, category, filename, lineno, file=None, line=None):
    prefix = "warning" if issubclass(category, OptoCubeWarning) else category.__name__
    _err(f"{prefix}: {one_line(message)}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``opto-cube`` command; returns the exit status."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    for i, arg in enumerate(argv[:-1]):  # "--window -0.5,1.0": argparse would take -0.5,1.0 for an option
        if arg == "--window" and argv[i + 1].startswith("-"):
            argv[i : i + 2] = [f"--window={argv[i + 1]}"]
            break
    args = parser.parse_args(argv)
    debug = bool(os.environ.get("OPTO_CUBE_DEBUG"))
    warnings.showwarning = _one_line_warnings
    out = getattr(args, "out", None)
    fresh = _first_missing(out) if out is not None and "://" not in str(out) else None
    try:
        code = int(args.func(args) or 0)
    except OptoCubeError as e:
        if debug:
            raise
        _err(f"error: {e}")
        code = EXIT_FAILED
    except OSError as e:  # disk full, permissions: name the file (or the output) and the problem
        if debug:
            raise
        where = e.filename or out or getattr(args, "path", None) or ""
        _err(f"error: {where}: {e.strerror or one_line(e)}")
        code = EXIT_FAILED
    except KeyboardInterrupt:
        _err("interrupted")
        code = 130
    except Exception as e:  # never a traceback for the user: one line, the type and the message
        if debug:
            raise
        _err(f"error: {type(e).__name__}: {one_line(e)} (OPTO_CUBE_DEBUG=1 shows the traceback)")
        code = EXIT_FAILED
    if code and fresh is not None:
        _remove_if_empty(fresh)
    return code


def _first_missing(path: str | os.PathLike) -> Path | None:
    """The outermost folder of ``path`` (or ``path`` itself) that does not exist yet: what a command would create."""
    missing, current = None, Path(path).absolute()
    while not os.path.lexists(current) and current != current.parent:
        missing, current = current, current.parent
    return missing


def _remove_if_empty(path: Path) -> None:
    """Remove an output folder a failed command created and left with nothing in it (empty folders only)."""
    if not path.is_dir() or path.is_symlink():
        return
    for _folder, _, files in os.walk(path):
        if files:
            return
    shutil.rmtree(path, ignore_errors=True)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
