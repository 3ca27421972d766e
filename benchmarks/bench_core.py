"""Speed and memory of the M2N2 core: operator preparation and the cost of one more click.

Prints JSON with medians over repeats. The attention is the colour backbone's affinity of a real
photo with a pinned kernel (``--sigma-color 10 --sigma-position 0.1`` unless given), not the
backbone's current defaults: a sharper kernel makes the Markov chain run more steps, and core
timings should stay comparable across commits. Usage::

    python benchmarks/bench_core.py                    # R = 32 and 64, image 480 x 640
    python benchmarks/bench_core.py --preset fast      # fp16 operator, precomputed upsampling table
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from m2n2 import M2N2Config, M2N2Predictor  # noqa: E402
from m2n2.backbones import load  # noqa: E402
from m2n2.image import resize_rgb  # noqa: E402


def example_image(height: int, width: int) -> np.ndarray:
    """scikit-image's public-domain astronaut photo at the requested size."""
    from skimage import data
    return resize_rgb(data.astronaut(), (width, height))


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
        prepare.append(time.perf_counter() - start)
        prepare_stages.append(dict(predictor.image_timings))
        predictor.predict(points[:3], labels[:3])  # three earlier clicks, cached
        start = time.perf_counter()
        out = predictor.predict(points, labels)  # the new, fourth click
        clicks.append(time.perf_counter() - start)
        stages.append(out.timings)
    return {
        "resolution": resolution,
        "image": [height, width],
        "prepare_s": statistics.median(prepare),
        "prepare_stages_s": {k: statistics.median(s[k] for s in prepare_stages) for k in prepare_stages[0]},
        "click_s": statistics.median(clicks),
        "click_stages_s": {k: statistics.median(s[k] for s in stages) for k in stages[0]},
        "operator_mib": predictor.operator.nbytes / 2 ** 20,
        "jbu_table_mib": predictor.upsampling_table.nbytes / 2 ** 20 if predictor.upsampling_table else 0.0,
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolutions", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--size", type=int, nargs=2, default=[480, 640], metavar=("H", "W"))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--preset", choices=["faithful", "fast"], default="faithful",
                        help="faithful: the default config (the authors' numerics); fast: M2N2Config.fast()")
    parser.add_argument("--sigma-color", type=float, default=10.0,
                        help="colour kernel of the benchmark's attention (Lab units)")
    parser.add_argument("--sigma-position", type=float, default=0.1,
                        help="spatial kernel of the benchmark's attention (fraction of the side)")
    args = parser.parse_args(argv)
    config = M2N2Config.fast() if args.preset == "fast" else M2N2Config()
    sigmas = (args.sigma_color, args.sigma_position)
    results = [bench(r, *args.size, args.repeats, config, sigmas) for r in args.resolutions]
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"preset": args.preset, "torch_threads": torch.get_num_threads(),
                      "operator_dtype": config.operator_dtype, "jbu_table": config.jbu_table,
                      "attention_sigmas": list(sigmas),
                      "results": results, "peak_rss_mib": peak_mib}, indent=2))


if __name__ == "__main__":
    main()
