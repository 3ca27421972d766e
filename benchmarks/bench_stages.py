"""The per-pixel stages of one click alone, at a working size, without Markov or set_image.

Times upsampling with a per-image table (random coefficients of the real shape), flood fill,
threshold curves, scores (four points) and the merge on a smooth map of the requested size,
and prints JSON with the medians (one thread). ``--baseline DIR`` runs the same script's
stages for another checkout (``git worktree add /tmp/old <commit>``) in alternating
subprocesses and prints both::

    python benchmarks/bench_stages.py --size 768 1024 --baseline /tmp/old
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

STAGES = ("upsample", "flood_fill", "curves", "scores", "merge")


def measure(height: int, width: int, resolution: int, repeats: int) -> dict:
    """Median seconds of each stage (code of whatever ``m2n2`` is on the path)."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    from m2n2.config import M2N2Config
    from m2n2.floodfill import flood_fill
    from m2n2.merge import merge_maps
    from m2n2.threshold import score_thresholds, threshold_curves
    from m2n2.upsample import JBUTable, apply_jbu_table

    torch.set_num_threads(1)
    generator = torch.Generator().manual_seed(0)
    low = torch.rand((resolution, resolution), generator=generator)
    k = 8  # cells per side of a window at sigma_s = 1
    table = JBUTable(torch.rand((k, k, height, width), generator=generator),
                     (torch.arange(height) * resolution // height - 3).clamp(0, resolution - k),
                     (torch.arange(width) * resolution // width - 3).clamp(0, resolution - k),
                     (resolution, resolution))
    smooth = F.interpolate(low[None, None], size=(height, width), mode="bilinear")[0, 0].numpy()
    smooth = smooth / smooth.max()
    pixels = np.array([[height // 3, width // 2], [height // 2, width // 3], [height // 8, width - 9],
                       [2 * height // 3, width // 2]])
    labels = np.array([1, 1, 0, 1])
    config = M2N2Config()
    times = {stage: [] for stage in STAGES}
    for repeat in range(repeats + 1):  # the first round warms up (numba loads its cached code)
        t0 = time.perf_counter()
        apply_jbu_table(table, low)
        times["upsample"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        filled = flood_fill(smooth, tuple(pixels[-1])).astype(np.float32)
        filled /= filled.max()
        times["flood_fill"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        curves = threshold_curves(filled)
        times["curves"].append(time.perf_counter() - t0)
        values = filled[pixels[:, 0], pixels[:, 1]]
        t0 = time.perf_counter()
        chosen = []
        for j in range(len(pixels)):  # the same curves for all four points: the cost is the same
            same = labels == labels[j]
            chosen.append(score_thresholds(curves, values[same], values[~same], config).threshold)
        times["scores"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        merge_maps(np.stack([filled] * len(pixels)), np.array(chosen), labels, pixels)
        times["merge"].append(time.perf_counter() - t0)
    medians = {stage: statistics.median(values[1:]) for stage, values in times.items()}
    return {"image": [height, width], "resolution": resolution, "stages_s": medians,
            "per_pixel_s": sum(medians.values())}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, nargs=2, default=[768, 1024], metavar=("H", "W"))
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--baseline", help="checkout of another commit to compare with, in the same run")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds with --baseline")
    args = parser.parse_args(argv)
    if not args.baseline:
        print(json.dumps(measure(*args.size, args.resolution, args.repeats)))
        return
    here = Path(__file__).resolve().parents[1]
    runs = {"baseline": [], "current": []}
    for _ in range(args.rounds):
        for name, root in (("baseline", Path(args.baseline).resolve()), ("current", here)):
            code = (f"import sys; sys.path.insert(0, {str(root)!r}); sys.path.insert(0, {str(here / 'benchmarks')!r}); "
                    f"import json, bench_stages; print(json.dumps(bench_stages.measure({args.size[0]}, "
                    f"{args.size[1]}, {args.resolution}, {args.repeats})))")
            env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
            out = subprocess.run([sys.executable, "-c", code], env=env, cwd=root, capture_output=True,
                                 text=True, check=True).stdout
            runs[name].append(json.loads(out.strip().splitlines()[-1]))
    report = {"image": args.size, "resolution": args.resolution, "rounds": args.rounds, "repeats": args.repeats}
    for name, results in runs.items():
        report[name] = {stage: statistics.median(r["stages_s"][stage] for r in results) for stage in STAGES}
        report[name]["per_pixel_s"] = statistics.median(r["per_pixel_s"] for r in results)
    report["speedup"] = {key: report["baseline"][key] / report["current"][key] for key in report["current"]}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
