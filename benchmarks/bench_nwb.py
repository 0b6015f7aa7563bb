"""Issue 14: `opto-cube to-nwb` against `opto-cube convert` at 1 ms, peak RSS, and the NWB file's size.

    python benchmarks/bench_nwb.py --size realistic [--long]

Each command is a fresh process (wall time and peak RSS from ``os.wait4``),
interleaved and repeated; ratios are of medians measured in the same run.
Rows: ``convert`` of the ALF session at 1 ms (the baseline), ``to-nwb`` of
it, and ``convert`` of the NWB file it wrote (the read path, same cube).
``--long`` adds ``to-nwb`` of the session 10x as long (memory bound: the
spike times are streamed through a file-backed array, unit by unit).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

import common

LONG = {"realistic": "x10", "tiny": "tiny10"}  # a session and the one 10x as long


def run(
    size: str = "realistic",
    bin_ms: tuple[float, ...] = (1.0,),
    repeats: int = 3,
    record: bool = True,
    long: bool = False,
) -> list[dict[str, Any]]:
    exe = str(Path(sys.executable).with_name("opto-cube"))
    root = common.dataset(size)
    session_id = common.sessions(root)[0].name
    nwb_dir = common.WORK / f"nwb_{size}"
    rows = []
    sizes: dict[str, int] = {}

    def to_nwb(data_root: Path, out: Path) -> dict[str, Any]:
        shutil.rmtree(out, ignore_errors=True)
        result = common.run_measured([exe, "to-nwb", str(data_root), "--out", str(out)])
        sizes[str(out)] = sum(p.stat().st_size for p in out.glob("*.nwb"))
        return result

    for width in bin_ms:

        def convert(source: Path, width: float = width) -> dict[str, Any]:
            out = common.WORK / f"nwb_convert_{width:g}ms"
            shutil.rmtree(out, ignore_errors=True)
            result = common.run_measured(
                [exe, "convert", str(source), "--out", str(out), "--bin-ms", str(width), "--overwrite", "--quiet"]
            )
            shutil.rmtree(out, ignore_errors=True)
            return result

        to_nwb(root, nwb_dir)  # the NWB file the read path converts
        methods = {
            f"convert ALF {width:g} ms": lambda: convert(root),
            "to-nwb": lambda: to_nwb(root, nwb_dir),
            f"convert NWB {width:g} ms": lambda: convert(nwb_dir / f"{session_id}.nwb"),
        }
        runs = common.interleave(methods, repeats)
        summary = {name: common.summarise(r, ("process_s", "peak_rss_mb")) for name, r in runs.items()}
        baseline = summary[f"convert ALF {width:g} ms"]
        for name, s in summary.items():
            row = {"size": size, "bin_ms": width, "command": name, **s}
            row["time_vs_convert"] = s["process_s"] / baseline["process_s"]
            row["rss_vs_convert"] = s["peak_rss_mb"] / baseline["peak_rss_mb"]
            if name == "to-nwb":
                row["file_mb"] = sizes[str(nwb_dir)] / 1e6
                row["goal"] = "<= 2x convert"
                row["met"] = row["time_vs_convert"] <= 2.0
            rows.append(row)
    if long and size in LONG:
        long_root = common.dataset(LONG[size])
        out = common.WORK / f"nwb_{LONG[size]}"
        s = common.summarise([to_nwb(long_root, out) for _ in range(max(1, repeats - 2))], ("process_s", "peak_rss_mb"))
        one_x = next(r for r in rows if r["command"] == "to-nwb")
        rows.append(
            {
                "size": LONG[size],
                "command": "to-nwb (10x session)",
                **s,
                "file_mb": sizes[str(out)] / 1e6,
                "rss_vs_convert": s["peak_rss_mb"] / one_x["peak_rss_mb"],  # here: vs to-nwb of the 1x session
                "goal": "RSS vs 1x to-nwb",
            }
        )
        shutil.rmtree(out, ignore_errors=True)
    common.table(
        rows,
        [
            "size",
            "bin_ms",
            "command",
            "process_s",
            "peak_rss_mb",
            "time_vs_convert",
            "rss_vs_convert",
            "file_mb",
            "goal",
            "met",
        ],
        title=f"NWB: to-nwb and convert of a {size} session",
    )
    if record:
        common.record("nwb", rows, {"size": size, "repeats": repeats, "long": long})
    return rows


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--bin-ms", type=float, nargs="+", default=[1.0])
    p.add_argument("--long", action="store_true", help="also to-nwb of the session 10x as long")
    a = p.parse_args()
    run(a.size, tuple(a.bin_ms), a.repeats, record=not a.no_record, long=a.long)


if __name__ == "__main__":
    main()
