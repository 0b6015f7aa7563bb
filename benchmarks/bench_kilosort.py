"""Issue 19: `opto-cube convert` of a Kilosort / phy session against the same session from ALF.

    python benchmarks/bench_kilosort.py --size realistic

One recording written twice (:func:`opto_cube.synth.write_kilosort_session`
with its ``alf_twin``): as a Kilosort folder plus ``pulses.csv`` and as the
ALF folder holding what the Kilosort reader sees; both convert to the same
cube. Each ``convert`` is a fresh process (wall time and peak RSS from
``os.wait4``), interleaved and repeated; the ratio is of medians measured in
the same run. Goal: Kilosort at most 1.1x ALF.
"""

from __future__ import annotations

import shutil
import sys
import warnings
from pathlib import Path
from typing import Any

import common

GOAL = 1.1


def pair(size: str) -> tuple[Path, Path]:
    """Data roots holding the Kilosort session and its ALF twin (cached under common.WORK)."""
    from opto_cube import synth

    base = common.WORK / f"kilosort_{size}"
    ks, alf = base / "ks", base / "alf"
    if not (base / ".complete").exists():
        shutil.rmtree(base, ignore_errors=True)
        session = "AL0034_2024-12-05_en1_p0"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            synth.write_kilosort_session(
                ks / "sessions" / session, common.spec(size), alf_twin=alf / "sessions" / session
            )
        (base / ".complete").write_text("ok\n")
    return ks, alf


def run(
    size: str = "realistic", bin_ms: tuple[float, ...] = (1.0,), repeats: int = 3, record: bool = True
) -> list[dict[str, Any]]:
    exe = str(Path(sys.executable).with_name("opto-cube"))
    command = [exe] if Path(exe).exists() else [sys.executable, "-m", "opto_cube.cli"]
    ks, alf = pair(size)
    rows = []
    for width in bin_ms:

        def convert(root: Path, width: float = width) -> dict[str, Any]:
            out = common.WORK / f"kilosort_convert_{width:g}ms"
            shutil.rmtree(out, ignore_errors=True)
            cmd = [*command, "convert", str(root), "--out", str(out), "--bin-ms", str(width), "--overwrite", "--quiet"]
            result = common.run_measured(cmd, env={"PYTHONPATH": str(common.HERE.parent)})
            shutil.rmtree(out, ignore_errors=True)
            return result

        methods = {
            f"convert ALF {width:g} ms": lambda: convert(alf),
            f"convert Kilosort {width:g} ms": lambda: convert(ks),
        }
        runs = common.interleave(methods, repeats)
        summary = {name: common.summarise(r, ("process_s", "peak_rss_mb")) for name, r in runs.items()}
        baseline = summary[f"convert ALF {width:g} ms"]
        for name, s in summary.items():
            row = {"size": size, "bin_ms": width, "command": name, **s}
            row["time_vs_alf"] = s["process_s"] / baseline["process_s"]
            row["rss_vs_alf"] = s["peak_rss_mb"] / baseline["peak_rss_mb"]
            if "Kilosort" in name:
                row["goal"] = f"<= {GOAL}x ALF"
                row["met"] = row["time_vs_alf"] <= GOAL
            rows.append(row)
    common.table(
        rows,
        ["size", "bin_ms", "command", "process_s", "peak_rss_mb", "time_vs_alf", "rss_vs_alf", "goal", "met"],
        title=f"Kilosort vs ALF: convert of a {size} session",
    )
    if record:
        common.record("kilosort", rows, {"size": size, "repeats": repeats})
    return rows


if __name__ == "__main__":
    common.main(__doc__, run, (1.0,))
