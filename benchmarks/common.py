"""Helpers shared by the benchmark scripts: test photos and same-run before/after comparisons."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
#: The checkout whose ``m2n2`` the benchmark measures: this one, or ``M2N2_CODE`` (set by
#: :func:`alternate` when this script measures another commit's code).
CODE = Path(os.environ.get("M2N2_CODE", ROOT)).resolve()
sys.path.insert(0, str(CODE))
from m2n2.image import resize_rgb  # noqa: E402


def example_image(height: int, width: int, name: str = "astronaut") -> np.ndarray:
    """One of scikit-image's public-domain photos (astronaut, chelsea, coffee, ...) at the requested size."""
    from skimage import data
    return resize_rgb(getattr(data, name)(), (width, height))


def add_baseline_options(parser, rounds: int) -> None:
    """``--baseline DIR`` and ``--rounds N``: the options of a same-run comparison."""
    parser.add_argument("--baseline", help="checkout of another commit to compare with, in the same run")
    parser.add_argument("--rounds", type=int, default=rounds, help="alternating rounds with --baseline")


def parse_or_compare(parser, argv, compare):
    """Parse ``argv``; with ``--baseline``, run ``compare(args, argv)`` and return None, else set
    torch's threads from ``OMP_NUM_THREADS`` and return the arguments."""
    import torch
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    if args.baseline:
        compare(args, argv)
        return None
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads())))
    return args


def options_without(argv: list[str], options: tuple[str, ...]) -> list[str]:
    """``argv`` without the given options and their values (those of the comparison itself)."""
    return [a for i, a in enumerate(argv) if a not in options and (i == 0 or argv[i - 1] not in options)]


def alternate(script_for, roots: dict[str, Path], argv: list[str], rounds: int) -> dict[str, list[dict]]:
    """Run a benchmark for several checkouts, alternating round by round in subprocesses.

    Alternating lets every checkout see the same machine load. ``script_for(root)`` gives the
    script to run for a checkout (its own copy, or this one run on the other's code); the
    checkout comes first on ``PYTHONPATH`` and ``OMP_NUM_THREADS`` defaults to 1. Returns each
    checkout's printed JSON, one per round.
    """
    runs: dict[str, list[dict]] = {name: [] for name in roots}
    for _ in range(rounds):
        for name, root in roots.items():
            root = Path(root).resolve()
            env = {**os.environ, "PYTHONPATH": str(root), "M2N2_CODE": str(root), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
            out = subprocess.run([sys.executable, str(script_for(root)), *argv], env=env, cwd=root,
                                 capture_output=True, text=True)
            if out.returncode != 0:
                raise RuntimeError(f"the benchmark failed for {root}:\n{out.stderr[-3000:]}")
            runs[name].append(json.loads(out.stdout))
    return runs
