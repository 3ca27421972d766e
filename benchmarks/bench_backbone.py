"""Time and peak memory of attention extraction, printed as JSON lines.

Each configuration runs in a fresh subprocess; its peak resident set size is reset just before
extracting (Linux ``/proc/self/clear_refs``), so the peak minus the resident size at that moment
is the extra memory extraction needed (torch allocations are invisible to tracemalloc). On CUDA the peak allocated GPU memory is
reported too.

Usage::

    python benchmarks/bench_backbone.py --threads 1     # tiny SD2 (R 16/32/64), colour (32/64/128)
    python benchmarks/bench_backbone.py --model PATH_OR_ID --resolutions 64 128 --device cuda

Without ``--model`` the SD2 numbers come from a tiny random model with SD2's architecture (see
``tests/tiny_sd2.py``): they measure the capture's overhead and memory, not real SD2 speed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _status_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


def _reset_peak_rss() -> float:
    """Reset the peak RSS to the current RSS (Linux: write 5 to clear_refs); return it in MiB."""
    Path("/proc/self/clear_refs").write_text("5")
    return _status_mib("VmRSS")


def measure(kind: str, resolution: int, repeats: int, options: dict,
            threads: int | None = None) -> dict:
    """Load one backbone, extract ``repeats + 1`` times (the first is warm-up), return numbers."""
    import numpy as np
    import torch

    from m2n2.backbones import load

    if threads:
        torch.set_num_threads(threads)
    start = time.perf_counter()
    backbone = load(kind, resolution=resolution, **options)
    load_s = time.perf_counter() - start
    image = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    cuda = backbone.device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    before = _reset_peak_rss()
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
        "peak_rss_increase_mib": round(_status_mib("VmHWM") - before, 1),
        "output_mib": round(resolution**4 * 4 / 2**20, 1),
    }
    if "chunk_bytes" in options:
        result["chunk_bytes"] = options["chunk_bytes"]
    if cuda:
        result["cuda_peak_allocated_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return result


def _run_isolated(kind: str, resolution: int, repeats: int, options: dict,
                  threads: int | None) -> dict:
    code = ("import json, sys; sys.path.insert(0, {root!r}); "
            "from benchmarks.bench_backbone import measure; "
            "print(json.dumps(measure({kind!r}, {r}, {n}, {opts!r}, {threads!r})))").format(
        root=str(ROOT), kind=kind, r=resolution, n=repeats, opts=options, threads=threads)
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
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as folder:
        model = args.model
        if model is None:
            sys.path.insert(0, str(ROOT / "tests"))
            from tiny_sd2 import build_tiny_sd2

            model = str(build_tiny_sd2(folder))
        sd2 = {"model": model} | ({"device": args.device} if args.device else {})
        for resolution in args.resolutions:
            result = _run_isolated("sd2", resolution, args.repeats, sd2, args.threads)
            print(json.dumps(result), flush=True)
        # The same largest extraction with every head's N x N map at once, to show what the
        # chunked accumulation saves.
        unchunked = sd2 | {"chunk_bytes": 2**40}
        print(json.dumps(_run_isolated("sd2", max(args.resolutions), 1, unchunked,
                                            args.threads)), flush=True)
    for resolution in args.color_resolutions:
        result = _run_isolated("color", resolution, args.repeats, {}, args.threads)
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
