"""Image -> first mask, and the clicks after it, per preset: what a user waits for a new image.

From the attention tensor (the colour backbone's, with a pinned kernel) to the first mask
(``set_attention`` and the first ``predict``), then ``--clicks`` more clicks, on scikit-image's
photos; medians over the photos. With the fast preset the leap and the upsampling table are
built by a background thread (``M2N2Config.early_maps``): the report says when that finished,
counted from the first mask, and how long the clicks made before it took. Usage::

    OMP_NUM_THREADS=1 python benchmarks/bench_first_mask.py                  # fast and exact, R = 64
    OMP_NUM_THREADS=1 python benchmarks/bench_first_mask.py --baseline /work/base-c54c95d
    python benchmarks/bench_first_mask.py --device cuda --resolution 128

``--baseline DIR`` runs this same script on another checkout's ``m2n2`` and on this one,
alternating in subprocesses, and prints both with the ratios. ``--think S`` waits S seconds
between clicks (a user's pace); by default clicks follow each other at once.
``--click-threads 2`` measures the app's setting on a CPU: one torch thread per job, but two
threads allowed for the clicks and for the image's preparation (``m2n2.threads.using_threads``;
the app's ``--click-threads``), e.g.::

    OMP_NUM_THREADS=1 python benchmarks/bench_first_mask.py --click-threads 2 --baseline /work/base-3a7f5c0
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import add_baseline_options, alternate, example_image, options_without, parse_or_compare  # noqa: E402
from m2n2 import M2N2Config, M2N2Predictor  # noqa: E402
from m2n2.backbones import load  # noqa: E402

PRESETS = {"fast": M2N2Config.fast, "exact": M2N2Config}
# Clicks as fractions of (width, height) with their labels: an object near the middle, then corrections.
CLICKS = [((0.50, 0.45), 1), ((0.30, 0.70), 1), ((0.85, 0.15), 0), ((0.55, 0.60), 1), ((0.10, 0.90), 0),
          ((0.40, 0.30), 1), ((0.70, 0.80), 0), ((0.60, 0.35), 1)]


def synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def first_mask(image: np.ndarray, attention: torch.Tensor, config: M2N2Config, clicks: int, device: torch.device,
               think: float) -> dict:
    """One photo: the first mask's time and stages, then the next clicks'."""
    height, width = image.shape[:2]
    predictor = M2N2Predictor(config=config, device=device)
    synchronise(device)
    start = time.perf_counter()
    predictor.set_attention(image, attention)
    synchronise(device)
    prepared = time.perf_counter() - start
    points, labels = [], []
    times, stages = [], []
    finished_after = None
    for k in range(clicks + 1):
        (fx, fy), label = CLICKS[k % len(CLICKS)]
        points.append((fx * (width - 1), fy * (height - 1)))
        labels.append(label)
        if k and think:
            time.sleep(think)
        was_prepared = getattr(predictor, "is_prepared", True)
        t0 = time.perf_counter()
        prediction = predictor.predict(points, labels)
        synchronise(device)
        times.append(time.perf_counter() - t0)
        stages.append({**prediction.timings, "before_preparation_finished": not was_prepared})
        if k == 0:
            mask_at = time.perf_counter()
            if hasattr(predictor, "wait_prepared") and not think:  # when the background part ends
                predictor.wait_prepared()
                finished_after = time.perf_counter() - mask_at
    if hasattr(predictor, "wait_prepared"):
        predictor.wait_prepared()
    early = [t for t, s in zip(times[1:], stages[1:]) if s["before_preparation_finished"]]
    return {"first_mask_s": prepared + times[0], "set_attention_s": prepared, "first_click_s": times[0],
            "prepare_stages_s": dict(predictor.image_timings), "first_click_stages_s": stages[0],
            "later_clicks_s": times[1:], "later_click_median_s": statistics.median(times[1:]) if clicks else None,
            "later_click_max_s": max(times[1:]) if clicks else None,
            "clicks_before_preparation_finished_s": early,
            "preparation_finished_after_first_mask_s": finished_after}


def allowed(threads: int | None):
    """``m2n2.threads.using_threads(threads)``, or nothing where ``threads`` is None."""
    if threads is None:
        return contextlib.nullcontext()
    try:
        from m2n2.threads import using_threads
    except ImportError:  # a checkout from before the click's second thread
        raise SystemExit("--click-threads needs m2n2.threads (this checkout has none)") from None
    return using_threads(threads)


def run(args) -> dict:
    device = torch.device(args.device)
    height, width = args.size
    backbone = load("color", resolution=args.resolution, sigma_color=args.sigma_color,
                    sigma_position=args.sigma_position)
    photos = {name: example_image(height, width, name) for name in args.images}
    attentions = {name: backbone.extract(photo) for name, photo in photos.items()}
    report = {"device": str(device), "torch_threads": torch.get_num_threads(), "resolution": args.resolution,
              "image": [height, width], "attention_sigmas": [args.sigma_color, args.sigma_position],
              "clicks_after_first": args.clicks, "presets": {}}
    report["click_threads"] = args.click_threads
    for preset in args.presets:
        config = PRESETS[preset]()
        per_photo = {}
        for name in args.images:
            with allowed(args.click_threads):
                per_photo[name] = first_mask(photos[name], attentions[name], config, args.clicks, device, args.think)
        runs = list(per_photo.values())
        median = lambda key: statistics.median(r[key] for r in runs)  # noqa: E731
        stage_names = {k for r in runs for k in r["prepare_stages_s"] if k != "background"}
        click_names = {k for r in runs for k, v in r["first_click_stages_s"].items() if isinstance(v, float)}
        finished = [r["preparation_finished_after_first_mask_s"] for r in runs
                    if r["preparation_finished_after_first_mask_s"] is not None]
        early = [t for r in runs for t in r["clicks_before_preparation_finished_s"]]
        report["presets"][preset] = {
            "first_mask_s": median("first_mask_s"),
            "set_attention_s": median("set_attention_s"),
            "first_click_s": median("first_click_s"),
            "later_click_median_s": median("later_click_median_s") if args.clicks else None,
            "later_click_max_s": max(r["later_click_max_s"] for r in runs) if args.clicks else None,
            "prepare_stages_s": {k: statistics.median(r["prepare_stages_s"].get(k, 0.0) for r in runs)
                                 for k in sorted(stage_names)},
            "background": any(r["prepare_stages_s"].get("background") for r in runs),
            "first_click_stages_s": {k: statistics.median(r["first_click_stages_s"].get(k, 0.0) for r in runs)
                                     for k in sorted(click_names)},
            "preparation_finished_after_first_mask_s": max(finished) if finished else None,
            "clicks_before_preparation_finished": {"count": len(early),
                                                   "p50_s": statistics.median(early) if early else None,
                                                   "max_s": max(early) if early else None},
            "per_photo": per_photo,
        }
    return report


def compare(args, argv) -> None:
    """This script on ``args.baseline``'s code and on this checkout's, alternating; medians and ratios."""
    here = Path(__file__).resolve()
    rest = options_without(argv, ("--baseline", "--rounds"))
    runs = alternate(lambda root: here, {"baseline": Path(args.baseline), "current": here.parents[1]},
                     rest, args.rounds)
    summary = {}
    for preset in args.presets:
        row = {}
        for field in ("first_mask_s", "set_attention_s", "first_click_s", "later_click_median_s"):
            for name, results in runs.items():
                values = [r["presets"][preset][field] for r in results if r["presets"][preset][field] is not None]
                if values:
                    row[f"{name}_{field}"] = statistics.median(values)
            if f"baseline_{field}" in row and f"current_{field}" in row:
                row[f"speedup_{field}"] = row[f"baseline_{field}"] / row[f"current_{field}"]
        for name, results in runs.items():
            row[f"{name}_prepare_stages_s"] = results[-1]["presets"][preset]["prepare_stages_s"]
            row[f"{name}_first_click_stages_s"] = results[-1]["presets"][preset]["first_click_stages_s"]
        for name, results in runs.items():  # the last round's, at most over the photos
            row[f"{name}_preparation_finished_after_first_mask_s"] = \
                results[-1]["presets"][preset]["preparation_finished_after_first_mask_s"]
        for name, results in runs.items():  # every round's clicks, over the photos
            photos = [photo for r in results for photo in r["presets"][preset]["per_photo"].values()]
            early = [t for photo in photos for t in photo["clicks_before_preparation_finished_s"]]
            row[f"{name}_clicks_before_preparation_finished"] = {
                "count": len(early), "p50_s": statistics.median(early) if early else None,
                "max_s": max(early) if early else None}
            later = [photo["later_click_max_s"] for photo in photos if photo["later_click_max_s"] is not None]
            row[f"{name}_later_click_max_s"] = max(later) if later else None
        summary[preset] = row
    print(json.dumps({"baseline": str(args.baseline), "rounds": args.rounds, "args": rest, "comparison": summary},
                     indent=2))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", choices=sorted(PRESETS), default=["fast", "exact"])
    parser.add_argument("--images", nargs="+", default=["astronaut", "chelsea", "coffee"],
                        help="scikit-image photos")
    parser.add_argument("--size", type=int, nargs=2, default=[480, 640], metavar=("H", "W"))
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--clicks", type=int, default=4, help="clicks after the first")
    parser.add_argument("--think", type=float, default=0.0, help="seconds between clicks")
    parser.add_argument("--sigma-color", type=float, default=5.0, help="the colour backbone's own kernel")
    parser.add_argument("--sigma-position", type=float, default=0.2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--click-threads", type=int, default=None,
                        help="threads allowed to the clicks and the image's preparation, as the app's "
                             "--click-threads (default: torch's own)")
    add_baseline_options(parser, rounds=1)
    args = parse_or_compare(parser, argv, compare)
    if args is None:
        return
    print(json.dumps(run(args), indent=2))


if __name__ == "__main__":
    main()
