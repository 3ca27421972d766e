"""Seconds and peak memory per image of each backbone's attention, printed as JSON lines.

The learned backbones run their real architectures with random weights, built from the published
configurations written in the benchmarks (Stable Diffusion 2 and 1: U-Net and VAE in
``benchmarks/gpu_check.py``; DINOv2 base and small below), saved once to a folder and loaded
through :func:`m2n2.backbones.load` like real weights; nothing comes from the Hub. The SD text
encoder is one layer of the real width: it only encodes the empty prompt once, at load time.
Random weights change no shape, so times and memory are those of the real models.

Each configuration runs in a fresh subprocess: it loads the backbone, extracts the attention of a
480 x 640 image ``repeats + 1`` times (the first is reported separately as warm-up) and reports
the median, the process's peak resident memory during extraction (Linux ``VmHWM`` reset just
before; it includes the loaded model) and, on CUDA, the peak allocated GPU memory. A
configuration that runs past ``--timeout`` seconds is stopped and reported as not measured.

Usage::

    python benchmarks/bench_backbone.py --threads 1                  # every default configuration
    python benchmarks/bench_backbone.py --threads 1 --run dinov2-base:80 --run sd2:64 \\
        --models /tmp/m2n2-bench-models                              # some, models kept between runs
    python benchmarks/bench_backbone.py --device cuda                # on a GPU (fp16)
    python benchmarks/bench_backbone.py --tiny --run sd2:8           # tiny models, seconds (tests)
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

#: DINOv2's published configurations (``facebook/dinov2-base`` and ``-small``): 12 layers,
#: 14-pixel patches, 518-pixel position grid; base 768 wide with 12 heads, small 384 with 6.
DINOV2 = {
    "base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
    "small": dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536),
    "tiny": dict(hidden_size=32, num_hidden_layers=12, num_attention_heads=4, intermediate_size=64),
}
#: benchmark name -> (registry key, architecture)
MODELS = {"sd2": ("sd2", "sd2"), "sd1": ("sd1", "sd1"), "dinov2-base": ("dinov2", "base"),
          "dinov2-small": ("dinov2", "small"), "color": ("color", None)}
#: Default runs: each model at its default R and at the R the app offers on a CPU (up to 64).
DEFAULT_RUNS = ("color:64", "dinov2-small:32", "dinov2-small:48", "dinov2-small:64", "dinov2-small:80",
                "dinov2-base:32", "dinov2-base:48", "dinov2-base:64", "dinov2-base:80",
                "sd2:32", "sd2:64", "sd2:128", "sd1:64", "sd1:112")


def _status_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


def _reset_peak_rss() -> float:
    """Reset the peak RSS to the current RSS (Linux: write 5 to clear_refs); return it in MiB."""
    Path("/proc/self/clear_refs").write_text("5")
    return _status_mib("VmRSS")


def build(name: str, folder: Path, tiny: bool = False) -> Path:
    """Write the random-weight model of benchmark ``name`` into ``folder`` (if not there yet)."""
    import json as json_module

    import torch

    done = folder / ".complete"
    if done.exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    key, architecture = MODELS[name]
    if key in ("sd2", "sd1"):
        sys.path.insert(0, str(ROOT / "benchmarks"))
        from gpu_check import build_model

        # The file holds fp16 (half the bytes to write and read); the backbone loads it in its dtype.
        build_model(folder, "tiny" if tiny else architecture, torch.float16)
    else:
        from transformers import Dinov2Config, Dinov2Model

        torch.manual_seed(0)
        config = Dinov2Config(**DINOV2["tiny" if tiny else architecture], patch_size=14, image_size=518,
                              layerscale_value=1.0)
        Dinov2Model(config).to(torch.float16).save_pretrained(folder)
        (folder / "preprocessor_config.json").write_text(json_module.dumps({
            "image_processor_type": "BitImageProcessor", "do_rescale": True,
            "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": [0.485, 0.456, 0.406],
            "image_std": [0.229, 0.224, 0.225]}))
    done.write_text("")
    return folder


def measure(kind: str, resolution: int, repeats: int, options: dict, threads: int | None = None) -> dict:
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
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    before = _reset_peak_rss()
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        backbone.extract(image)
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    steady = sorted(times[1:])
    result = {
        "backbone": backbone.description,
        "resolution": resolution,
        "torch_threads": torch.get_num_threads(),
        "load_s": round(load_s, 2),
        "first_extract_s": round(times[0], 3),
        "extract_s_median": round(steady[len(steady) // 2], 3) if steady else None,
        "rss_before_extract_mib": round(before, 1),
        "peak_rss_mib": round(_status_mib("VmHWM"), 1),
        "peak_rss_increase_mib": round(_status_mib("VmHWM") - before, 1),
        "output_mib": round(resolution**4 * 4 / 2**20, 1),
    }
    if cuda:
        result["cuda_peak_allocated_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return result


def _run_isolated(name: str, resolution: int, repeats: int, options: dict, threads: int | None,
                  timeout: float) -> dict:
    kind = MODELS[name][0]
    code = ("import json, sys; sys.path.insert(0, {root!r}); "
            "from benchmarks.bench_backbone import measure; "
            "print(json.dumps(measure({kind!r}, {r}, {n}, {opts!r}, {threads!r})))").format(
        root=str(ROOT), kind=kind, r=resolution, n=repeats, opts=options, threads=threads)
    head = {"model": name, "resolution": resolution}
    try:
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return head | {"not_measured": f"stopped after {timeout:.0f} s (--timeout)"}
    if done.returncode != 0:
        return head | {"error": done.stderr.strip()[-500:]}
    return head | json.loads(done.stdout.strip().splitlines()[-1])


def parse_run(text: str) -> tuple[str, int]:
    name, _, resolution = text.partition(":")
    if name not in MODELS or not resolution.isdigit():
        raise argparse.ArgumentTypeError(f"--run must be MODEL:R with MODEL one of {', '.join(MODELS)}, "
                                         f"got {text!r}")
    return name, int(resolution)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", action="append", type=parse_run, metavar="MODEL:R",
                        help=f"a configuration (repeatable; default: {' '.join(DEFAULT_RUNS)})")
    parser.add_argument("--models", help="folder for the random-weight models, kept between runs "
                                         "(default: a temporary folder)")
    parser.add_argument("--tiny", action="store_true", help="tiny widths instead of the real ones (tests)")
    parser.add_argument("--device", help="device of the learned backbones (default: CUDA when available)")
    parser.add_argument("--repeats", type=int, default=1, help="timed extractions after the first (default 1)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--timeout", type=float, default=300.0,
                        help="seconds a configuration may take before it is reported as not measured")
    args = parser.parse_args(argv)
    runs = args.run or [parse_run(text) for text in DEFAULT_RUNS]

    with tempfile.TemporaryDirectory(prefix="m2n2-bench-") as scratch:
        models = Path(args.models or scratch)
        for name, resolution in runs:
            options = {}
            if MODELS[name][0] != "color":
                folder = models / (name + ("-tiny" if args.tiny else ""))
                start = time.perf_counter()
                build(name, folder, args.tiny)
                built = time.perf_counter() - start
                if built > 1:
                    print(json.dumps({"built": name, "folder": str(folder), "seconds": round(built, 1)}),
                          flush=True)
                options = {"model": str(folder)} | ({"device": args.device} if args.device else {})
            result = _run_isolated(name, resolution, args.repeats, options, args.threads, args.timeout)
            print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
