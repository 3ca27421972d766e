"""Command line: ``python -m m2n2.evaluate DATASET [options]`` (console script
``m2n2-evaluate``).

Examples
--------
How closely the fast preset follows the exact one, on the exact one's clicks::

    python -m m2n2.evaluate ../shared/datasets/GrabCut --agreement \
        --method m2n2 --method m2n2:preset=fast,name=fast

Colour backbone against the classical baselines on GrabCut::

    python -m m2n2.evaluate ../shared/datasets/GrabCut --backbone color \\
        --method m2n2 --method grabcut --method randomwalker

The paper's setting on a GPU, on the authors' COCO file::

    python -m m2n2.evaluate datasets/coco/GrabCut/gt.json --backbone sd2 --resolution 128 \
        --clicker authors --method m2n2

The same on every GPU of a machine (images shared out; ``--resume`` continues a stopped run)::

    torchrun --nproc_per_node gpu -m m2n2.evaluate datasets/coco/SBD/val.json --backbone sd2 \
        --resolution 128 --clicker authors --method m2n2 --out sbd --resume

See docs/evaluation.md for ``accelerate launch`` and several machines.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import numpy as np

from ..backbones import names as backbone_names
from ..config import MAX_CLICKS, M2N2Config, add_preset_argument, preset_from_args
from ..errors import M2N2Error
from .datasets import MASK_MODES, Sample, open_dataset
from .agreement import agreement_table, follow, summarize_agreement
from .methods import ABLATIONS, M2N2Method, build_methods
from .paper import PUBLISHED, comparison_table, guess_dataset
from .progress import Progress, report
from .protocol import CLICKERS, THRESHOLDS, InstanceResult, simulate
from .report import markdown_table, plot_miou, results_json, summarize, write_json
from .spread import Spread, largest_first
from .state import RESULTS_VERSION, ImageRecord, ResumeError, RunState, check_fingerprint, read_json

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
                        help="kind[:key=value,...] with kind m2n2 (keys: M2N2Config fields and preset=exact|fast), "
                             "grabcut or randomwalker; e.g. m2n2:use_edge=false,name=no-edge. Repeat for several; "
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
    add_preset_argument(parser, help_default="exact; a method spec's preset=... wins")
    parser.add_argument("--model", help="weights of a learned backbone: Hub id or local folder (the same as "
                                         "--backbone-option model=...); see docs/evaluation.md for the SD2 "
                                         "the paper and the authors' script used")
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
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --out (its results.json and the part files of a stopped "
                             "spread run), skipping finished images; refused if the settings, backbone, R, "
                             "preset or the code's results version differ")
    parser.add_argument("--paper", choices=("auto", "none", *PUBLISHED), default="auto",
                        help="print the paper's published M2N2 row for this dataset beside the run's "
                             "(auto: guessed from the dataset's folder name)")
    args = parser.parse_args(argv)
    # Kept under its old name: the fingerprint --resume compares and results.json's settings say "fast".
    args.fast = preset_from_args(args) == "fast"
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


def backbone_options(args: argparse.Namespace) -> dict:
    """The keywords the arguments give m2n2.backbones.load (``--backbone-option``, ``--model``,
    ``--resolution``)."""
    options = {}
    for item in args.backbone_option:
        key, equals, value = item.partition("=")
        if not equals:
            raise M2N2Error(f"--backbone-option {item!r} is not of the form KEY=VALUE")
        options[key.strip()] = option_value(value.strip())
    if args.model is not None:
        options["model"] = args.model
    if args.resolution is not None:
        options["resolution"] = args.resolution
    return options


def backbone_factory(args: argparse.Namespace):
    """A function that loads the backbone the arguments name (called only if M2N2 runs)."""
    options = backbone_options(args)

    def load():
        from ..backbones import load as load_backbone  # here: only runs with M2N2 import the backbones

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


def fingerprint_of(args: argparse.Namespace, specs: list[str], images: list[str]) -> dict:
    """The settings that decide per-object results; ``--resume`` needs them unchanged (the
    backbone's description, known once it is loaded, is added by the caller)."""
    return {"results_version": RESULTS_VERSION, "methods": specs, "backbone": args.backbone,
            "backbone_options": dict(sorted(backbone_options(args).items())), "fast": args.fast,
            "max_clicks": args.max_clicks, "clicker": args.clicker, "seed": args.seed,
            "agreement": args.agreement, "images": images}


def part_path(out: Path, rank: int) -> Path:
    """Where process ``rank`` of a spread run keeps its finished images until they are merged."""
    return out / "parts" / f"rank-{rank}.json"


def previous_run(out: Path, fingerprint: dict) -> tuple[RunState, dict[Path, dict]]:
    """What an earlier run with the same settings finished: its ``results.json`` merged with the
    part files its processes left behind (a spread run that was stopped), and the fingerprint of
    every file read.

    Raises
    ------
    ResumeError
        Nothing to resume from, or a file made with other settings.
    """
    sources = [out / "results.json"] if (out / "results.json").exists() else []
    sources += sorted((out / "parts").glob("rank-*.json"))
    if not sources:
        report(f"nothing to resume in {out}: starting the run")
    state, found = RunState(), {}
    for path in sources:
        data = read_json(path)
        found[path] = data.get("settings", {}).get("fingerprint")
        check_fingerprint(found[path], fingerprint, path)
        state = state.merge(RunState.from_json(data))
    state.failures = []  # failed images are tried again
    return state, found


def on_main(spread: Spread, action) -> str | None:
    """Run ``action`` on the main process; its ResumeError's message (or None) on every process."""
    problem = None
    if spread.main:
        try:
            action()
        except ResumeError as error:
            problem = str(error)
    return spread.broadcast(problem)


def main(argv: list[str] | None = None) -> int:
    """Run the evaluation; returns the exit status (0 done, 1 nothing evaluated, 2 bad
    arguments, dataset or resume, 130 interrupted: partial results are written and printed).

    Under ``torchrun`` / ``accelerate launch`` every process runs this; they share the images
    and the main process (rank 0) writes the merged results and prints them.
    """
    args = parse_args(argv)
    spread = Spread.from_environment()
    try:
        return run(args, spread)
    finally:
        spread.close()


def error(message) -> int:
    print(f"m2n2-evaluate: error: {message}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace, spread: Spread) -> int:
    """:func:`main` in one process of the run."""
    specs = specs_of(args)
    out = Path(args.out)
    json_path, plot_path = out / "results.json", out / "miou.png"
    try:
        samples = choose_samples(open_dataset(args.dataset, args.masks, args.images), args.limit, args.seed)
        names = [s.name for s in samples]
        fingerprint = fingerprint_of(args, specs, names)
    except M2N2Error as problem:
        return error(problem)
    previous, found = RunState(), {}

    def read_previous():
        nonlocal previous, found
        previous, found = previous_run(out, fingerprint)

    def check_backbone():
        for path, earlier in found.items():
            check_fingerprint(earlier, {"backbone_description": fingerprint["backbone_description"]}, path)

    problem = on_main(spread, read_previous) if args.resume else None
    if problem:
        return error(problem)
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    try:
        methods = build_methods(specs, backbone_factory(args), M2N2Config.preset(preset_from_args(args)),
                                seed=args.seed)
    except M2N2Error as problem:
        return error(problem)
    method_names = [m.name for m in methods]
    fingerprint["backbone_description"] = describe_backbone(methods)
    if args.resume:
        problem = on_main(spread, check_backbone)
        if problem:
            return error(problem)

    settings = {"dataset": str(args.dataset), "methods": dict(zip(method_names, specs)),
                "backbone": args.backbone, "resolution": args.resolution, "fast": args.fast,
                "backbone_description": fingerprint["backbone_description"], "max_clicks": args.max_clicks,
                "thresholds": args.thresholds, "limit": args.limit, "seed": args.seed,
                "agreement": args.agreement, "clicker": args.clicker, "processes": spread.world_size,
                "images": names, "fingerprint": fingerprint}

    def data_of(state: RunState) -> tuple[dict, dict]:
        state = state.ordered(names)
        results, setup, agreement = state.flat(method_names)
        summary = summarize(results, args.thresholds, args.max_clicks, setup)
        data = results_json(results, summary, state.failures, settings, state.to_json())
        if args.agreement:
            data["agreement"] = {"reference": method_names[0],
                                 "summary": summarize_agreement(agreement, args.max_clicks),
                                 "instances": agreement}
        return data, summary

    if spread.main:
        if not args.resume and json_path.exists():
            report(f"starting a new run over {json_path} (--resume continues it instead)")
        # The resumed state in one file before any process starts, so that the old part files
        # can go (a stop now loses nothing).
        write_json(json_path, data_of(previous)[0])
        for path in (out / "parts").glob("rank-*.json"):
            path.unlink()
    finished = set(spread.broadcast(sorted(previous.images)))
    pending = [s for s in samples if s.name not in finished]
    if spread.several:  # costliest first, in the one order rank 0 read (the tail is then short)
        pending = [pending[i] for i in spread.broadcast(largest_first(pending) if spread.main else None)]
    spread.barrier()

    own = RunState()
    progress = Progress(len(samples), len(finished), enabled=spread.main and not args.no_progress)
    interrupted = False
    start = time.perf_counter()
    try:
        while (index := spread.take()) < len(pending):
            sample = pending[index]
            seed_everything(args.seed)  # per image: its results must not depend on what ran before
            agreement: dict | None = {} if args.agreement else None
            try:
                results, setup = evaluate_sample(methods, sample, args.max_clicks, agreement,
                                                 CLICKERS[args.clicker])
            except Exception as problem:  # one bad image must not end the run
                own.fail(sample.name, problem)
                report(f"skipped {sample.name}: {type(problem).__name__}: {problem}")
            else:
                own.add(sample.name, ImageRecord(results, setup, agreement or {}))
            if spread.several:
                write_json(part_path(out, spread.rank), data_of(own)[0])
            else:
                write_json(json_path, data_of(previous.merge(own))[0])
            progress.update(spread.finished(1))
        if spread.several and spread.main:
            spread.wait_for(len(pending), progress.update)
    except KeyboardInterrupt:
        interrupted = True
        report("interrupted: writing the results so far")
    progress.close()

    if spread.several and not interrupted:
        states = spread.gather(own)
        merged = previous
        for state in states:
            merged = merged.merge(state)
    else:
        merged = previous.merge(own)
    data, summary = data_of(merged)
    if spread.main:
        write_json(json_path, data)
    if spread.several and not interrupted:
        spread.barrier()  # the merged file is written: the parts can go
        part_path(out, spread.rank).unlink(missing_ok=True)
        spread.barrier()
        if spread.main:
            try:
                (out / "parts").rmdir()
            except OSError:  # another run's files are in it: leave them
                pass
    if not spread.main:
        return 130 if interrupted else 0
    elapsed = time.perf_counter() - start
    print_results(args, data, summary, methods, merged, len(samples), elapsed, spread.world_size, interrupted)
    if interrupted and spread.several:
        print(f"the other processes' images are in {out / 'parts'}; --resume continues the run")
    done = len({key for per in merged.flat(method_names)[0].values() for key in per})
    if done:
        plot_miou(summary, plot_path, title=f"{Path(args.dataset).name} ({done} objects)")
        print(f"per-object results: {json_path}\nplot: {plot_path}")
    if interrupted:
        return 130
    return 0 if done else 1


def print_results(args, data: dict, summary: dict, methods, state: RunState, images: int, elapsed: float,
                  processes: int, interrupted: bool) -> None:
    """The tables of a run: methods, the paper beside them, agreement; then one line of counts."""
    names = [m.name for m in methods]
    if args.agreement:
        print(f"(the other methods' NoC is on {names[0]}'s clicks)")
    print(markdown_table(summary, args.thresholds))
    dataset = guess_dataset(args.dataset) if args.paper == "auto" else (None if args.paper == "none" else args.paper)
    results = state.ordered(data["settings"]["images"]).flat(names)[0]
    if dataset is not None and any(results.values()):
        backbone = next((m.predictor.backbone for m in methods if isinstance(m, M2N2Method)), None)
        descriptions = {m.name: backbone.description if isinstance(m, M2N2Method) else "classical (no weights)"
                        for m in methods}
        print()
        print(comparison_table(dataset, results, args.max_clicks, descriptions,
                               {"resolution": getattr(backbone, "resolution", None), "max_clicks": args.max_clicks,
                                "clicker": args.clicker,
                                "backbone_description": data["settings"]["backbone_description"]}))
    if args.agreement:
        print()
        print(agreement_table(data["agreement"]["summary"], names[0]))
    done = len({key for per in results.values() for key in per})
    failures = data["failures"]
    print(f"\n{done} object(s) from {len(state.images)} of {images} image(s) in {elapsed:.1f} s"
          + (f" ({processes} processes)" if processes > 1 else "")
          + (f"; {len(failures)} image(s) failed (see {Path(args.out) / 'results.json'})" if failures else "")
          + ("; INTERRUPTED" if interrupted else ""))


if __name__ == "__main__":
    sys.exit(main())
