"""The ``opto-cube`` command: a thin layer over the package.

Every error is one line on standard error (``opto-cube: error: <file>: <problem>``)
with a non-zero exit status; set ``OPTO_CUBE_DEBUG=1`` to see tracebacks.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from . import __version__, schema
from .errors import OptoCubeError, OptoCubeWarning

EXIT_FAILED = 1
EXIT_USAGE = 2


def _say(*parts: object) -> None:
    print(*parts, flush=True)


def _err(message: str) -> None:
    print(f"opto-cube: {message}", file=sys.stderr, flush=True)


def _window(text: str) -> tuple[float, float]:
    try:
        start, stop = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected START,STOP in seconds (e.g. -0.5,1.0), got {text!r}") from None
    return start, stop


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
            _say(str(r))
    counts = {s: sum(r.status == s for r in results) for s in ("converted", "skipped", "failed")}
    _say(", ".join(f"{n} {s}" for s, n in counts.items()) + f" ({len(results)} session{'s' * (len(results) != 1)})")
    return EXIT_FAILED if failed else 0


def cmd_convert(args: argparse.Namespace) -> int:
    from .convert import convert

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
    )
    return _report(results, args.quiet)


# --------------------------------------------------------------------------
# info
# --------------------------------------------------------------------------
def describe(ds: object) -> str:
    """A short, human summary of an opened cube."""
    import numpy as np

    a = ds.attrs  # type: ignore[attr-defined]
    counts = ds[schema.SPIKE_COUNTS]  # type: ignore[index]
    wt = ds[schema.WAVEFORM_TYPE].values  # type: ignore[index]
    qc = ds[schema.QC_PASS].values  # type: ignore[index]
    emitters = np.unique(ds[schema.EMITTER].values)  # type: ignore[index]
    powers = schema.power_levels(ds[schema.POWER].values)[1]  # type: ignore[index]
    durations = np.unique(ds[schema.DURATION].values)  # type: ignore[index]
    lines = [
        f"session   {a.get(schema.ATTR_SESSION_ID)}  (subject {a.get('subject', '?')}, {a.get('date', '?')})",
        f"cube      {schema.SPIKE_COUNTS} {dict(counts.sizes)} {counts.dtype}, chunks {tuple(c[0] for c in counts.chunks)}",
        f"bins      {a.get(schema.ATTR_BIN_WIDTH) * 1000:g} ms over {a.get(schema.ATTR_WINDOW)} s from onset",
        f"clusters  {qc.size} ({int(qc.sum())} pass QC; {int((wt == 'RS').sum())} RS, {int((wt == 'FS').sum())} FS,"
        f" {int((wt == '').sum())} unknown)",
        f"trials    {counts.sizes[schema.TRIAL]}: emitters {emitters.min()}..{emitters.max()} ({emitters.size}),"
        f" {powers.size} powers {powers.min():.3g}..{powers.max():.3g} mW, durations {[float(d) for d in durations]} s",
        f"geometry  surface at {a.get(schema.ATTR_SURFACE)} um on the probe axis, tip offset {a.get(schema.ATTR_TIP_OFFSET)} um",
        f"built by  opto_cube {a.get(schema.ATTR_VERSION)} from {len(a.get(schema.ATTR_SHA256, {}))} checksummed files",
    ]
    return "\n".join(lines)


def cmd_info(args: argparse.Namespace) -> int:
    from .store import STORE_SUFFIX, open_cube

    path = Path(args.path)
    if not path.exists():
        raise OptoCubeError(f"{path}: no such store or folder")
    if path.name.endswith(STORE_SUFFIX) or (path / "zarr.json").exists():
        _say(describe(open_cube(path)))
        return 0
    stores = sorted(p for p in path.glob(f"*{STORE_SUFFIX}") if p.is_dir())
    if not stores:
        raise OptoCubeError(f"{path}: holds no {STORE_SUFFIX} stores")
    for p in stores:
        _say(describe(open_cube(p)))
        _say("")
    return 0


# --------------------------------------------------------------------------
# demo
# --------------------------------------------------------------------------
def cmd_demo(args: argparse.Namespace) -> int:
    import shutil

    from . import synth
    from .convert import convert

    out = Path(args.out)
    data, stores = out / "data", out / "stores"
    if data.exists():
        shutil.rmtree(data)
    _say(f"1. generating {args.sessions} synthetic sessions ({args.size}) in {data}")
    synth.make_dataset(data, n_sessions=args.sessions, size=args.size, seed=args.seed)
    _say(f"2. converting them to Zarr cubes in {stores}")
    code = _report(convert(data, stores, bin_ms=args.bin_ms, overwrite=True, jobs=1, progress=True))
    _say(f"\nopen one in Python:  xarray.open_zarr({str(next(stores.glob('*.zarr')))!r})")
    _say(f"or:                  opto-cube info {stores}")
    return code


# --------------------------------------------------------------------------
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
    p.add_argument("--window", type=_window, default=None, metavar="START,STOP",
                   help="window relative to onset, s (default -0.5 to max(1.0, longest pulse + 0.5))")
    p.add_argument("--tip-offset-um", type=float, default=schema.TIP_OFFSET_UM,
                   help="where the channel axis's zero lies above the probe tip, um (default %(default)s)")
    p.add_argument("--overwrite", action="store_true", help="rebuild stores that are up to date")
    p.add_argument("--jobs", type=_positive_int, default=1, help="sessions at once, local processes")
    p.add_argument("--scheduler", metavar="ADDRESS", help="run on this dask.distributed scheduler")
    p.add_argument("--quiet", action="store_true", help="no progress bars or per-session lines")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("info", help="what a store (or a folder of stores) holds")
    p.add_argument("path", help="a .zarr store or a folder of them")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("demo", help="the whole job on synthetic sessions, under stores/demo/")
    p.add_argument("--out", default="stores/demo", help="output folder (default %(default)s)")
    p.add_argument("--sessions", type=_positive_int, default=3, help="how many sessions (default %(default)s)")
    p.add_argument("--size", default="small", choices=("tiny", "small", "realistic"), help="session size")
    p.add_argument("--bin-ms", type=float, default=schema.DEFAULT_BIN_MS, help="bin width, ms")
    p.add_argument("--seed", type=int, default=0, help="random seed of the generator")
    p.set_defaults(func=cmd_demo)
    return parser


def _one_line_warnings(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001
    prefix = "warning" if issubclass(category, OptoCubeWarning) else category.__name__
    _err(f"{prefix}: {' '.join(str(message).split())}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``opto-cube`` command; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = bool(os.environ.get("OPTO_CUBE_DEBUG"))
    warnings.showwarning = _one_line_warnings
    try:
        return int(args.func(args) or 0)
    except OptoCubeError as e:
        if debug:
            raise
        _err(f"error: {e}")
        return EXIT_FAILED
    except KeyboardInterrupt:
        _err("interrupted")
        return 130
    except Exception as e:  # never a traceback for the user: one line, the type and the message
        if debug:
            raise
        _err(f"error: {type(e).__name__}: {' '.join(str(e).split())} (OPTO_CUBE_DEBUG=1 shows the traceback)")
        return EXIT_FAILED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
