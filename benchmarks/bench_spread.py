"""Wall time of the evaluation in one process and spread over several (torchrun, CPU), and
whether every object gets the same clicks and IoUs.

Each run is the command line a user types, timed from launch to exit (so Python's and torch's
start-up and the process group are counted), one torch thread per process::

    flock -x /tmp/m2n2-cpu.lock env OMP_NUM_THREADS=1 python benchmarks/bench_spread.py \\
        ../shared/datasets/GrabCut --images 8 --processes 1 2

Prints one line per process count: seconds, ratio to one process, and whether the per-object
results equal the one-process run's.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(dataset: str, out: Path, processes: int, images: int, options: list[str]) -> tuple[float, float]:
    """Seconds of one evaluation from launch to exit, and of its images (what the command line
    reports: from the first image taken to the last one merged)."""
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                 str(processes)] if processes > 1 else [sys.executable])
    command = launcher + ["-m", "m2n2.evaluate", dataset, "--limit", str(images), "--out", str(out),
                          "--threads", "1", "--no-progress", "--paper", "none", *options]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    start = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    images_seconds = float(re.search(r"image\(s\) in ([0-9.]+) s", done.stdout).group(1))
    return seconds, images_seconds


def per_object(out: Path) -> dict:
    data = json.loads((out / "results.json").read_text())
    return {method: {key: (r["clicks"], r["ious"]) for key, r in per.items()}
            for method, per in data["instances"].items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset")
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--option", action="append", default=None,
                        help="an evaluation option (repeat); default: --backbone color --preset fast "
                             "--method m2n2 (the backbone's own R, 64)")
    args = parser.parse_args()
    options = args.option or ["--backbone", "color", "--preset", "fast", "--method", "m2n2"]
    with tempfile.TemporaryDirectory() as folder:
        seconds, results = {}, {}
        for processes in args.processes:
            out = Path(folder) / f"p{processes}"
            seconds[processes] = run(args.dataset, out, processes, args.images, options)
            results[processes] = per_object(out)
        first = args.processes[0]
        print(f"{args.images} images of {args.dataset}, options {' '.join(options)}, one thread per process")
        print("| processes | wall s | ratio | images s | ratio | start-up and exit s | per-object results |")
        print("|---|---|---|---|---|---|---|")
        for processes in args.processes:
            same = "identical" if results[processes] == results[first] else "DIFFERENT"
            wall, work = seconds[processes]
            print(f"| {processes} | {wall:.1f} | {wall / seconds[first][0]:.2f} | {work:.1f} | "
                  f"{work / seconds[first][1]:.2f} | {wall - work:.1f} | {same} |")


if __name__ == "__main__":
    main()
