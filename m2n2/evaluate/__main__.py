"""Command line: ``python -m m2n2.evaluate DATASET [options]`` (console script
``m2n2-evaluate``).

Examples
--------
How closely the fast preset follows the default, on the default's clicks::

    python -m m2n2.evaluate ../shared/datasets/GrabCut --agreement \
        --method m2n2 --method m2n2:preset=fast,name=fast

Colour backbone against the classical baselines on GrabCut::

    python -m m2n2.evaluate ../shared/datasets/GrabCut --backbone color \\
        --method m2n2 --method grabcut --method randomwalker

The paper's setting on a GPU::

    python -m m2n2.evaluate datasets/GrabCut --backbone sd2 --resolution 128 --method m2n2
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import numpy as np

from ..backbones import names as backbone_names
from ..config import M2N2Config
from ..errors import M2N2Error
from .datasets import MASK_MODES, Sample, open_dataset
from .agreement import agreement_table, follow, summarize_agreement
from .methods import ABLATIONS, M2N2Method, build_methods
from .protocol import CLICKERS, MAX_CLICKS, THRESHOLDS, InstanceResult, simulate
from .report import markdown_table, plot_miou, results_json, summarize, write_json

DEFAULT_METHODS = ("m2n2", "grabcut", "randomwalker")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="m2n2-evaluate",
        description="Number-of-clicks evaluation of interactive segmentation with the simulated user "
                    "of RITM / SimpleClick (NoC@85/90/95, mean IoU per click, seconds per click).")
    parser.add_argument("dataset", help="folder with images/ and masks/ (GrabCut layout), or a COCO .json file")
    parser.add_argument("--images", help="COCO only: the image folder (default: images/ beside the JSON)")
    parser.add_argument("--masks", choices=MASK_MODES, default="auto",
                        help="folder masks: binary (non-zero = object, 128 ignored), instances (one object "
                             "per value, 255 ignored) or auto (binary if values are in {0,1,128,255})")
    parser.add_argument("--method", action="append", dest="methods", metavar="SPEC",
                        help="kind[:key=value,...] with kind m2n2 (keys: M2N2Config fields), grabcut or "
                             "randomwalker; e.g. m2n2:use_edge=false,name=no-edge. Repeat for several; "
                             f"default: {' '.join(DEFAULT_METHODS)}")
    parser.add_argument("--agreement", action="store_true",
                        help="the first method drives the simulated user and the others predict from its "
                             "clicks: reports their per-click mask IoU with it (mean, min, per click) and "
                             "their NoC on its clicks")
    parser.add_argument("--ablations", action="store_true",
                        help="also run M2N2 without each score and without flood fill (the paper's ablations)")
    parser.add_argument("--backbone", default="color", choices=backbone_names(),
                        help="attention backbone of M2N2 (sd2: the paper's; sd1, dinov2: the authors' others; "
                             "auto: SD2 if its weights load, else DINOv2, else color)")
    parser.add_argument("--resolution", type=int, help="attention resolution R (default: the backbone's)")
    parser.add_argument("--fast", action="store_true",
                        help="start M2N2 from M2N2Config.fast() (fp16 operator, Markov leaps, precomputed "
                             "upsampling table) instead of the default (the authors' numerics)")
    parser.add_argument("--backbone-option", action="append", default=[], metavar="KEY=VALUE",
                        help="extra keyword for m2n2.backbones.load, e.g. model=/path/to/sd2 (repeatable)")
    parser.add_argument("--max-clicks", type=int, default=MAX_CLICKS)
    parser.add_argument("--clicker", choices=sorted(CLICKERS), default="ritm",
                        help="simulated user: ritm (RITM / SimpleClick: the larger of the false negative and "
                             "false positive regions, clicked pixels excluded) or authors (the M2N2 authors' "
                             "evaluation: one region of all wrong pixels, label from the ground truth)")
    parser.add_argument("--thresholds", type=float, nargs="+", default=list(THRESHOLDS))
    parser.add_argument("--limit", type=int, help="evaluate N images drawn at random with --seed")
    parser.add_argument("--seed", type=int, default=0, help="seeds --limit's draw and the methods' RNGs")
    parser.add_argument("--out", default="evaluation", help="folder for results.json and miou.png")
    parser.add_argument("--threads", type=int,
                        help="torch threads (default: torch's choice); 1 is much faster on a busy machine")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)
    if args.agreement and len(specs_of(args)) < 2:
        parser.error("--agreement needs at least two methods")
    if args.max_clicks < 1:
        parser.error("--max-clicks must be >= 1")
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be >= 1")
    if args.limit is not None and args.limit < 1:
        parser.error("--limit must be >= 1")
    if not all(0 < t <= 1 for t in args.thresholds):
        parser.error("--thresholds must lie in (0, 1]")
    return args


def specs_of(args: argparse.Namespace) -> list[str]:
    """The method specs the arguments ask for, in order."""
    return list(args.methods or DEFAULT_METHODS) + (list(ABLATIONS) if args.ablations else [])


def seed_everything(seed: int) -> None:
    """Seed the global RNGs a method may use (GrabCut reseeds OpenCV's itself, per call)."""
    random.seed(seed)
    np.random.seed(seed)
    import torch
    torch.manual_seed(seed)


def choose_samples(samples: list[Sample], limit: int | None, seed: int) -> list[Sample]:
    """All samples, or ``limit`` of them drawn with ``seed`` (kept in dataset order)."""
    if limit is None or limit >= len(samples):
        return samples
    picked = np.random.default_rng(seed).choice(len(samples), size=limit, replace=False)
    return [samples[i] for i in sorted(picked)]


def option_value(text: str):
    """A ``--backbone-option`` value as int or float when it reads as one, else the text."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def backbone_factory(args: argparse.Namespace):
    """A function that loads the backbone the arguments name (called only if M2N2 runs)."""
    options = {}
    for item in args.backbone_option:
        key, equals, value = item.partition("=")
        if not equals:
            raise M2N2Error(f"--backbone-option {item!r} is not of the form KEY=VALUE")
        options[key.strip()] = option_value(value.strip())
    if args.resolution is not None:
        options["resolution"] = args.resolution

    def load():
        try:
            from ..backbones import load as load_backbone
        except ImportError as error:
            raise M2N2Error("m2n2.backbones.load is not available in this installation") from error
        return load_backbone(args.backbone, **options)
    return load


def describe_backbone(methods) -> str | None:
    """The M2N2 backbone's one-line description (name, R, device), or None without M2N2."""
    for method in methods:
        if isinstance(method, M2N2Method):
            return method.predictor.backbone.description
    return None


def evaluate_sample(methods, sample: Sample, max_clicks: int, agreement: dict | None = None,
                    clicker=None) -> tuple[dict, dict]:
    """Every method on every object of one image.

    With ``agreement`` (a dict to fill), the first method drives the clicks and the others follow
    them (see :func:`m2n2.evaluate.agreement.follow`); ``agreement[method][instance_id]`` gets
    their per-click mask IoUs with the first method.

    Returns
    -------
    (results, setup)
        ``results[method][instance_id]`` (InstanceResult) and ``setup[method]``: seconds of
        ``set_image``.
    """
    image, instances = sample.load()
    clicker = clicker or CLICKERS["ritm"]
    results: dict[str, dict[str, InstanceResult]] = {m.name: {} for m in methods}
    setup: dict[str, float] = {}
    for method in methods:
        start = time.perf_counter()
        method.set_image(image)
        setup[method.name] = time.perf_counter() - start
    if agreement is None:
        for method in methods:
            results[method.name] = {obj.id: simulate(method, obj.mask, obj.ignore, max_clicks, clicker=clicker)
                                    for obj in instances}
        return results, setup
    reference, followers = methods[0], methods[1:]
    for obj in instances:
        own, runs, ious = follow(reference, followers, obj.mask, obj.ignore, max_clicks, clicker)
        results[reference.name][obj.id] = own
        for follower in followers:
            results[follower.name][obj.id] = runs[follower.name]
            agreement.setdefault(follower.name, {})[obj.id] = ious[follower.name]
    return results, setup


def progress(items, enabled: bool):
    """tqdm over ``items`` if tqdm is installed and wanted, else the items unchanged."""
    if not enabled:
        return items
    try:
        from tqdm import tqdm
    except ImportError:
        return items
    return tqdm(items, unit="image", dynamic_ncols=True)


def report(message: str) -> None:
    """Print a line to stderr without breaking the progress bar."""
    try:
        from tqdm import tqdm
        tqdm.write(message, file=sys.stderr)
    except ImportError:
        print(message, file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Run the evaluation; returns the exit status (0 done, 1 nothing evaluated, 2 bad
    arguments or dataset, 130 interrupted: partial results are written and printed)."""
    args = parse_args(argv)
    specs = specs_of(args)
    try:
        samples = choose_samples(open_dataset(args.dataset, args.masks, args.images), args.limit, args.seed)
        methods = build_methods(specs, backbone_factory(args), M2N2Config.fast() if args.fast else None,
                                seed=args.seed)
    except M2N2Error as error:
        print(f"m2n2-evaluate: error: {error}", file=sys.stderr)
        return 2
    seed_everything(args.seed)
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)

    out = Path(args.out)
    json_path, plot_path = out / "results.json", out / "miou.png"
    settings = {"dataset": str(args.dataset), "methods": {m.name: spec for m, spec in zip(methods, specs)},
                "backbone": args.backbone, "resolution": args.resolution, "fast": args.fast,
                "backbone_description": describe_backbone(methods), "max_clicks": args.max_clicks,
                "thresholds": args.thresholds, "limit": args.limit, "seed": args.seed,
                "agreement": args.agreement, "clicker": args.clicker,
                "images": [s.name for s in samples]}
    results: dict[str, dict[str, InstanceResult]] = {m.name: {} for m in methods}
    setup: dict[str, list[float]] = {m.name: [] for m in methods}
    failures: list[dict] = []
    agreement: dict | None = {} if args.agreement else None

    def save() -> dict:
        summary = summarize(results, args.thresholds, args.max_clicks, setup)
        data = results_json(results, summary, failures, settings)
        if agreement is not None:
            data["agreement"] = {"reference": methods[0].name,
                                 "summary": summarize_agreement(agreement, args.max_clicks),
                                 "instances": agreement}
        write_json(json_path, data)
        return summary

    interrupted = False
    start = time.perf_counter()
    try:
        for sample in progress(samples, not args.no_progress):
            try:
                sample_results, sample_setup = evaluate_sample(methods, sample, args.max_clicks, agreement,
                                                               CLICKERS[args.clicker])
            except Exception as error:  # one bad image must not end the run
                failures.append({"image": sample.name, "error": f"{type(error).__name__}: {error}"})
                report(f"skipped {sample.name}: {type(error).__name__}: {error}")
                continue
            for name, per_instance in sample_results.items():
                results[name].update(per_instance)
                setup[name].append(sample_setup[name])
            save()
    except KeyboardInterrupt:
        interrupted = True
        report("interrupted: writing the results so far")
    summary = save()
    elapsed = time.perf_counter() - start

    if agreement is not None:
        print(f"(the other methods' NoC is on {methods[0].name}'s clicks)")
    print(markdown_table(summary, args.thresholds))
    if agreement is not None:
        print()
        print(agreement_table(summarize_agreement(agreement, args.max_clicks), methods[0].name))
    done = len({key for per in results.values() for key in per})
    print(f"\n{done} object(s) from {len(samples) - len(failures)} of {len(samples)} image(s) in {elapsed:.0f} s"
          + (f"; {len(failures)} image(s) failed (see {json_path})" if failures else "")
          + ("; INTERRUPTED" if interrupted else ""))
    if done:
        plot_miou(summary, plot_path, title=f"{Path(args.dataset).name} ({done} objects)")
        print(f"per-object results: {json_path}\nplot: {plot_path}")
    if interrupted:
        return 130
    return 0 if done else 1


if __name__ == "__main__":
    sys.exit(main())
