"""Peak RSS of `opto-cube convert` on a session and on one 10x as long.

    python benchmarks/bench_memory.py --size realistic

The long session has the same units, 10x the trials and 10x the recording
(lead-in and tail included), so about 10x the spikes. Each conversion is a
fresh process; its peak RSS comes from ``os.wait4``.
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
    bin_ms: tuple[float, ...] = (1.0, 10.0),
    repeats: int = 3,
    record: bool = True,
    long: str | None = None,
) -> list[dict[str, Any]]:
    long = long or LONG.get(size)
    if long is None:
        raise SystemExit(f"no 10x session defined for size {size!r}; use one of {sorted(LONG)}")
    exe = str(Path(sys.executable).with_name("opto-cube"))
    roots = {"1x": common.dataset(size), "10x": common.dataset(long)}
    rows = []
    for width in bin_ms:

        def convert(which: str, width: float = width) -> dict[str, Any]:
            out = common.WORK / f"memory_{which}_{width:g}ms"
            shutil.rmtree(out, ignore_errors=True)
            result = common.run_measured(
                [exe, "convert", str(roots[which]), "--out", str(out), "--bin-ms", str(width), "--overwrite", "--quiet"]
            )
            shutil.rmtree(out, ignore_errors=True)
            return result

        runs = common.interleave({w: (lambda w=w: convert(w)) for w in roots}, repeats)
        summary = {w: common.summarise(r, ("process_s", "peak_rss_mb")) for w, r in runs.items()}
        for which, s in summary.items():
            spec = common.spec(size if which == "1x" else long)
            row = {"bin_ms": width, "session": f"{which} ({spec.n_trials} trials)", **s}
            row["rss_vs_1x"] = s["peak_rss_mb"] / summary["1x"]["peak_rss_mb"]
            row["time_vs_1x"] = s["process_s"] / summary["1x"]["process_s"]
            if which == "10x":
                row["goal"] = "peak RSS +< 20 %"
                row["met"] = row["rss_vs_1x"] < 1.2
            rows.append(row)
    common.table(
        rows,
        ["bin_ms", "session", "process_s", "peak_rss_mb", "rss_vs_1x", "time_vs_1x", "goal", "met"],
        title=f"Memory: convert a {size} session and one 10x as long",
    )
    if record:
        common.record("memory", rows, {"size": size, "long": long, "repeats": repeats})
    return rows


def main() -> None:
    common.main(__doc__, run, bin_ms=[1.0, 10.0])


if __name__ == "__main__":
    main()
