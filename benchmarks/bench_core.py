"""Speed and memory of the M2N2 core: operator preparation and the cost of one more click.

Prints JSON with medians over repeats. The attention is the colour backbone's affinity of a real
photo with a pinned kernel (``--sigma-color 10 --sigma-position 0.1`` unless given), not the
backbone's current defaults: a sharper kernel makes the Markov chain run more steps, and core
timings should stay comparable across commits. Usage::

    python benchmarks/bench_core.py                    # R = 32 and 64, image 480 x 640
    python benchmarks/bench_core.py --preset fast      # fp16 operator, Markov leaps, precomputed upsampling table
    python benchmarks/bench_core.py --preset fast --baseline /tmp/old   # before/after, same run

``--baseline DIR`` runs the same benchmark for a checkout of another commit (e.g.
``git worktree add /tmp/old 38a76fe``) and for this one, alternating in subprocesses so that
both see the same machine load, and prints both with the speed-ups. ``per_pixel_s`` is the sum
of the per-pixel stages of the click (everything but Markov); ``markov_floor`` compares the
Markov chain's bytes read per step with a streaming copy of the operator.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import add_baseline_options, alternate, example_image, options_without, parse_or_compare  # noqa: E402
from m2n2 import M2N2Config, M2N2Predictor  # noqa: E402
from m2n2.config import add_preset_argument, preset_from_args  # noqa: E402
from m2n2.backbones import load  # noqa: E402


def bench(resolution: int, height: int, width: int, repeats: int, config: M2N2Config,
          sigmas: tuple) -> dict:
    image = example_image(height, width)
    sigma_color, sigma_position = sigmas
    attention = load("color", resolution=resolution, sigma_color=sigma_color,
                     sigma_position=sigma_position).extract(image)
    points = [(0.45 * width, 0.35 * height), (0.30 * width, 0.70 * height),
              (0.85 * width, 0.15 * height), (0.55 * width, 0.55 * height)]
    labels = [1, 1, 0, 1]

    predictor = M2N2Predictor(config=config)
    prepare, clicks, stages, prepare_stages = [], [], [], []
    for _ in range(repeats):
        start = time.perf_counter()
        predictor.set_attention(image, attention)
        if hasattr(predictor, "wait_prepared"):  # the whole preparation, background part included
            predictor.wait_prepared()
        prepare.append(time.perf_counter() - start)
        prepare_stages.append(dict(predictor.image_timings))
        predictor.predict(points[:3], labels[:3])  # three earlier clicks, cached
        start = time.perf_counter()
        out = predictor.predict(points, labels)  # the new, fourth click
        clicks.append(time.perf_counter() - start)
        stages.append(out.timings)
    click_stages = {k: statistics.median(s.get(k, 0.0) for s in stages) for k in stages[0]}
    return {
        "resolution": resolution,
        "image": [height, width],
        "prepare_s": statistics.median(prepare),
        "prepare_stages_s": {k: statistics.median(s[k] for s in prepare_stages) for k in prepare_stages[0]},
        "click_s": statistics.median(clicks),
        "click_stages_s": click_stages,
        "per_pixel_s": sum(v for k, v in click_stages.items() if k not in ("markov", "total")),
        "markov_floor": markov_floor(predictor, points[3], (height, width), config),
        "operator_mib": predictor.operator.nbytes / 2 ** 20,
        "jbu_table_mib": predictor.upsampling_table.nbytes / 2 ** 20 if predictor.upsampling_table else 0.0,
    }


def markov_floor(predictor, point, size, config) -> dict:
    """Products of one click's Markov chain, seconds per product, and the memory bandwidth they reach.

    Each product (one step, or a leap of ``markov_leap`` steps) reads a whole N x N matrix once
    (a matrix-vector product), so its time is bounded below by ``matrix bytes / read
    bandwidth``; ``copy_gb_s`` is what a plain copy of the operator reaches (read + write) on
    this machine, for comparison. ``steps`` counts products, ``chain_steps`` the steps they make.
    """
    from m2n2.markov import markov_map, start_states
    operator = predictor.operator
    counted = {"steps": 0, "chain_steps": 0}

    class Counting:
        def __init__(self, inner):
            self.inner, self.device, self.dtype, self.steps = inner, inner.device, inner.dtype, inner.steps
            self.leap = Counting(inner.leap) if inner.leap is not None else None

        def step(self, states):
            counted["steps"] += 1
            counted["chain_steps"] += self.steps
            return self.inner.step(states)

    start = start_states(np.array([point], dtype=np.float64), size, operator.resolution)
    leap_after = config.markov_leap_after if operator.leap is not None else None
    t0 = time.perf_counter()
    markov_map(Counting(operator), start, rho=config.rho, max_steps=config.max_steps, leap_after=leap_after)
    seconds = time.perf_counter() - t0
    steps = max(counted["steps"], 1)
    buffer = torch.empty_like(operator.transposed)
    copies = []
    for _ in range(5):
        t0 = time.perf_counter()
        buffer.copy_(operator.transposed)
        copies.append(time.perf_counter() - t0)
    per_step = seconds / steps
    stored = operator.transposed.numel() * operator.transposed.element_size()
    read = operator.opaque_nbytes() or stored  # a step reads FBGEMM's packed copy where there is one
    return {"steps": counted["steps"], "chain_steps": counted["chain_steps"], "step_ms": 1e3 * per_step,
            "read_gb_s": read / per_step / 1e9,
            "copy_gb_s": 2 * stored / statistics.median(copies) / 1e9}


def portable_argv(argv: list[str], preset: str) -> list[str]:
    """``argv`` with the preset named as every commit's copy of this script reads it.

    Each checkout runs its own copy: older ones know ``--preset fast`` only, and default to the
    exact preset (which they called ``faithful``); ``--fast`` and ``--faithful`` are newer still.
    """
    rest = [a for a in options_without(argv, ("--preset",))
            if a not in ("--fast", "--faithful") and not a.startswith("--preset=")]
    return rest + (["--preset", "fast"] if preset == "fast" else [])


def compare(args, argv) -> None:
    """Run this benchmark for ``args.baseline`` and for this checkout, alternating, and print both."""
    here = Path(__file__).resolve().parents[1]
    rest = portable_argv(options_without(argv, ("--baseline", "--rounds")), preset_from_args(args))
    runs = alternate(lambda root: root / "benchmarks" / "bench_core.py",
                     {"baseline": Path(args.baseline), "current": here}, rest, args.rounds)
    for result in (r for rs in runs.values() for r in rs):
        for r in result["results"]:  # older commits print no per-pixel sum
            r["per_pixel_s"] = sum(v for k, v in r["click_stages_s"].items() if k not in ("markov", "total"))
    summary = []
    for index, result in enumerate(runs["current"][0]["results"]):
        pick = {name: [r["results"][index] for r in rs] for name, rs in runs.items()}
        row = {"resolution": result["resolution"], "image": result["image"]}
        for field in ("click_s", "per_pixel_s", "prepare_s"):
            for name in runs:
                values = [r.get(field) for r in pick[name] if r.get(field) is not None]
                if values:
                    row[f"{name}_{field}"] = statistics.median(values)
            if f"baseline_{field}" in row and f"current_{field}" in row:
                row[f"speedup_{field}"] = row[f"baseline_{field}"] / row[f"current_{field}"]
        for name in runs:
            row[f"{name}_click_stages_s"] = {k: statistics.median(r["click_stages_s"].get(k, 0.0) for r in pick[name])
                                             for k in pick[name][0]["click_stages_s"]}
        row["current_markov_floor"] = pick["current"][-1].get("markov_floor")
        summary.append(row)
    print(json.dumps({"baseline": str(args.baseline), "rounds": args.rounds, "args": rest,
                      "comparison": summary}, indent=2))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolutions", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--size", type=int, nargs=2, default=[480, 640], metavar=("H", "W"))
    parser.add_argument("--repeats", type=int, default=5)
    add_preset_argument(parser)
    parser.add_argument("--sigma-color", type=float, default=10.0,
                        help="colour kernel of the benchmark's attention (Lab units)")
    parser.add_argument("--sigma-position", type=float, default=0.1,
                        help="spatial kernel of the benchmark's attention (fraction of the side)")
    add_baseline_options(parser, rounds=2)
    args = parse_or_compare(parser, argv, compare)
    if args is None:
        return
    preset = preset_from_args(args)
    config = M2N2Config.preset(preset)
    sigmas = (args.sigma_color, args.sigma_position)
    results = [bench(r, *args.size, args.repeats, config, sigmas) for r in args.resolutions]
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"preset": preset, "torch_threads": torch.get_num_threads(),
                      "operator_dtype": config.operator_dtype, "jbu_table": config.jbu_table,
                      "attention_sigmas": list(sigmas),
                      "results": results, "peak_rss_mib": peak_mib}, indent=2))


if __name__ == "__main__":
    main()
