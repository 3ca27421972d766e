"""The GPU time each job asks ZeroGPU for, sized from its work (gpu.py's callable ``duration``).

ZeroGPU checks a visitor's remaining quota against the *requested* duration before it runs a
job (``spaces/zero/client.py``: "You have exceeded your ZeroGPU quota (Ns requested vs. Ms
left)"), so asking for 120 s for a click refuses visitors who have minutes of quota left for
work of a second or two. The request is therefore sized from what the job does:

    seconds = START + MARGIN * (preparation, if the job may prepare
                                + Markov runs * Markov + points * per-pixel stages)

with the preparation and the click scaled from their figures at R = 128 and a 1024 x 1024
working copy: the attention and the per-pixel stages by the working pixels, the operator and
the Markov iteration by R^4 (the operator's entries). A Markov run iterates every new point of
a call at once (one (N, K) product per step reads the operator once, as one point's does), so
a click that must compute all its points' maps again (after a miss) costs one run, a recipe's
replay one run per click.

The figures below are **estimates for an H200, not measurements**: no GPU has run this project
yet. They come from the work's arithmetic at the H200's memory bandwidth (about 4.8 TB/s; the
operator at R = 128 is 1 GiB in fp32: IPF's 400 passes over it are about 0.1 s, one Markov step
about 1 ms, at most 1000 steps per click) with room for kernel launches, and SD2's U-Net at
1024 px (a fraction of a second in fp16). ``benchmarks/gpu_check.py`` prints the requested
durations next to the measured times, so the first GPU run says how much margin they leave.
A job that runs past its request is warned about by ZeroGPU, not stopped at once.
"""

from __future__ import annotations

import math

from ..config import M2N2Config
from ..geometry import Geometry

#: A fresh worker's start: fork, CUDA initialisation, SD2's weights (2.6 GB) moved to the GPU.
START = 10.0
#: Room over the estimates (they are not measured on a GPU yet).
MARGIN = 2.0
#: At R = 128 and 1024 x 1024 working pixels: the attention (SD2 fp16), per image.
ATTENTION = 1.0
#: Temperature, IPF and storage of the operator at R = 128 (its power, with markov_leap, once more).
OPERATOR = 1.5
#: The upsampling table (``jbu_table``) at 1024 x 1024.
TABLE = 1.0
#: A click's Markov iteration at R = 128 (1000 steps of 1 ms at most).
MARKOV = 1.0
#: A click's upsampling, flood fill, curves, scores and merge at 1024 x 1024.
PIXELS = 0.5
#: Never more than today's longest request.
LONGEST = 120


def estimated_seconds(resolution: int, shape: tuple[int, int], clicks: int, prepares: bool,
                      config: M2N2Config, markov_runs: int | None = None) -> float:
    """The estimated GPU seconds of a job, without start or margin (see the module's note)."""
    working = Geometry.for_image(*shape, config.max_side).working if min(shape) > 0 else (config.max_side,) * 2
    pixels = working[0] * working[1] / 1024 ** 2
    entries = ((resolution or 128) / 128) ** 4
    image = 0.0
    if prepares:
        leap = 2.0 if config.markov_leap > 1 else 1.0
        image = ATTENTION * pixels + OPERATOR * leap * entries + (TABLE * pixels if config.jbu_table else 0.0)
    runs = clicks if markov_runs is None else markov_runs
    return image + runs * MARKOV * entries + clicks * PIXELS * pixels


def requested_seconds(resolution: int, shape: tuple[int, int], clicks: int, prepares: bool,
                      config: M2N2Config, markov_runs: int | None = None) -> int:
    """Seconds to ask ZeroGPU for: :data:`START` plus :data:`MARGIN` times the estimate, at most
    :data:`LONGEST`.

    Parameters
    ----------
    resolution : int
        R of the attention (0 when unknown: the estimate assumes R = 128).
    shape : tuple of int
        (H, W) of the original image ((0, 0) when the job sends none: the largest working copy).
    clicks : int
        Points whose Markov-maps the job may compute (all of a click's points: after a miss
        every map is computed again).
    prepares : bool
        Whether the job may prepare the image (a preparation, or a click that finds its worker
        without the image and prepares it again in the same call).
    config : M2N2Config
        The settings (working side, leap, table).
    markov_runs : int, optional
        Markov iterations the job runs (each over all of its new points at once); ``clicks``
        by default.
    """
    seconds = START + MARGIN * estimated_seconds(resolution, shape, clicks, prepares, config, markov_runs)
    return int(min(LONGEST, math.ceil(seconds)))
