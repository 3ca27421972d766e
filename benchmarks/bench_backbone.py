"""Time and peak memory of attention extraction, printed as JSON lines.

Each configuration runs in a fresh subprocess, so the peak resident set size (``ru_maxrss``) of
that process, minus its value just before extracting, is the extra memory extraction needed
(torch allocations are invisible to tracemalloc). On CUDA the peak allocated GPU memory is
reported too.

Usage::

    python benchmarks/bench_backbone.py                 # tiny SD2 model (R 16/32/64), colour (R 32/64/128)
    python benchmarks/bench_backbone.py --model PATH_OR_ID --resolutions 64 128 --device cuda

Without ``--model`` the SD2 numbers come from a tiny random model with SD2's architecture (see
``tests/tiny_sd2.py``): they measure the capture's overhead and memory, not real SD2 speed.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _maxrss_mib() -> float:
    # Linux reports kilobytes.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(kind: str, resolution: int, repeats: int, options: dict) -> dict:
    """Load one backbone, extract ``repeats + 1`` times (the first is warm-up), return numbers."""
    import numpy as np
    import torch

    from m2n2.backbones import load

    start = time.perf_counter()
    backbone = load(kind, resolution=resolution, **options)
    load_s = time.perf_counter() - start
    image = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    cuda = backbone.device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    before = _maxrss_mib()
    start = time.perf_counter()
    backbone.extract(image)
    first_s = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        backbone.extract(image)
        times.append(time.perf_counter() - start)
    result = {
        "backbone": backbone.description,
        "resolution": resolution,
        "torch_threads": torch.get_num_threads(),
        "load_s": round(load_s, 3),
        "first_extract_s": round(first_s, 3),
        "extract_s_median": round(sorted(times)[len(times) // 2], 4) if times else None,
        "peak_rss_increase_mib": round(_maxrss_mib() - before, 1),
        "output_mib": round(resolution**4 * 4 / 2**20, 1),
    }
    if "chunk_bytes" in options:
        result["chunk_bytes"] = options["chunk_bytes"]
    if cuda:
        result["cuda_peak_allocated_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return result


def _run_isolated(kind: str, resolution: int, repeats: int, options: dict) -> dict:
    code = ("import json, sys; sys.path.insert(0, {root!r}); "
            "from benchmarks.bench_backbone import measure; "
            "print(json.dumps(measure({kind!r}, {r}, {n}, {opts!r})))").format(
        root=str(ROOT), kind=kind, r=resolution, n=repeats, opts=options)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return {"backbone": kind, "resolution": resolution, "error": done.stderr.strip()[-500:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="SD2 Hub id or folder (default: a tiny random model)")
    parser.add_argument("--resolutions", type=int, nargs="+", default=[16, 32, 64],
                        help="SD2 resolutions")
    parser.add_argument("--color-resolutions", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument("--device", help="device for SD2 (default: CUDA when available)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as folder:
        model = args.model
        if model is None:
            sys.path.insert(0, str(ROOT / "tests"))
            from tiny_sd2 import build_tiny_sd2

            model = str(build_tiny_sd2(folder))
        sd2 = {"model": model} | ({"device": args.device} if args.device else {})
        for resolution in args.resolutions:
            print(json.dumps(_run_isolated("sd2", resolution, args.repeats, sd2)), flush=True)
        # The same largest extraction with every head's N x N map at once, to show what the
        # chunked accumulation saves.
        unchunked = sd2 | {"chunk_bytes": 2**40}
        print(json.dumps(_run_isolated("sd2", max(args.resolutions), 1, unchunked)), flush=True)
    for resolution in args.color_resolutions:
        print(json.dumps(_run_isolated("color", resolution, args.repeats, {})), flush=True)


if __name__ == "__main__":
    main()
