"""The stateless API on an image the server has prepared before: ``/segment`` twice on the same pixels.

The app's handlers at the app's defaults (``--backbone color``; on a CPU R = 64, the fast preset,
images segmented at up to 640 px), called as the ``/segment`` endpoint calls them (no HTTP), on
examples/astronaut.jpg with three points: the first call (it prepares the image), the second
(the same pixels and settings: it reuses the preparation where the code keeps it), and the first
call of a server that prepared its examples at start. Medians over ``--repeat`` fresh servers.
Usage::

    /work/bin/timed-run python benchmarks/bench_api_reuse.py
    /work/bin/timed-run python benchmarks/bench_api_reuse.py --baseline /work/base-c932df5

``--baseline DIR`` runs this script on another checkout's code and on this one, alternating.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import add_baseline_options, alternate, options_without, parse_or_compare  # noqa: E402

POINTS = json.dumps([[150, 430, 1], [250, 120, 1], [20, 20, 0]])


def handlers():
    import app
    from m2n2.studio import serving
    from m2n2.studio.handlers import Handlers
    options = app.Options(backbone="color", threads=None)
    made = Handlers(serving.start(options), None, app.EXAMPLES)
    made.serving.backbones.get(options.attention_resolution)  # the model is loaded: not timed
    return made


def timed(call) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def one_round(example: str) -> dict:
    """A fresh server: the first and second call; another fresh server with its examples prepared."""
    server = handlers()
    first = timed(lambda: server.api.segment(example, POINTS))
    second = timed(lambda: server.api.segment(example, POINTS))
    started = handlers()
    started.images.prepare_examples()
    after_start = timed(lambda: started.api.segment(example, POINTS))
    return {"first": first, "second": second, "examples_prepared_first": after_start}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="fresh servers per run (median)")
    add_baseline_options(parser, rounds=1)

    def compare(args, argv):
        roots = {"baseline": Path(args.baseline), "this": Path(__file__).resolve().parents[1]}
        runs = alternate(lambda root: Path(__file__).resolve(), roots,
                         options_without(argv, ("--baseline", "--rounds")), args.rounds)
        for name, results in runs.items():
            merged = {key: statistics.median(r[key] for r in results) for key in results[0]}
            print(f"{name:9s} " + "  ".join(f"{key} {value:.3f} s" for key, value in merged.items()))

    args = parse_or_compare(parser, argv, compare)
    if args is None:
        return
    example = str(Path(__file__).resolve().parents[1] / "examples" / "astronaut.jpg")
    rounds = [one_round(example) for _ in range(args.repeat)]
    print(json.dumps({key: statistics.median(r[key] for r in rounds) for key in rounds[0]}))


if __name__ == "__main__":
    main()
