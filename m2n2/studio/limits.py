"""What a public demo refuses, and how much it keeps: limits checked before any expensive work.

Every limit here is checked on plain numbers (a count, a size, a position) before attention or
an operator is computed, so a request that will be refused costs next to nothing, and its
message says what the limit is and what to do instead.

* Points per request and clicks per image (:data:`m2n2.config.MAX_CLICKS`, ``--max-points``):
  the evaluation protocol (NoC, RITM / SimpleClick) stops at 20 clicks and counts an object not
  done by then as a failure, so 20 is all an honest client needs; each point costs one
  Markov-map, which bounds a request's work. Clicks are
  checked by :func:`m2n2.prompts.check_clicks`, recipes by :func:`check_recipe_limits`.
* Upload size (:data:`MAX_FILE_SIZE`, Gradio's ``max_file_size``): refused by the upload route
  before the file is kept.
* Image size: :data:`m2n2.image.MAX_PIXELS` when decoding, and ``max_side`` for the working copy.
* Attention resolutions (:func:`default_max_resolution`): what the device prepares in reasonable
  time (a CPU takes over a minute at R = 128); ``--max-resolution`` allows more.
* Time per job (:class:`Deadline`): checked between stages of the stateless API's work.
* Memory (:func:`default_memory_budget`): the prepared operators of every session together.
"""

from __future__ import annotations

import logging
import os
import re
import time

import torch

from ..config import default_resolution
from ..errors import InputError

log = logging.getLogger("m2n2.studio")

#: Largest upload (Gradio's ``max_file_size``): a 12-megapixel photo is 3 to 10 MB as JPEG.
MAX_FILE_SIZE = "20mb"
#: Seconds one stateless API request may compute before it is stopped (between stages).
JOB_SECONDS = 60.0
#: Resolutions the app knows; the ones offered are those up to the device's maximum.
RESOLUTIONS = (32, 48, 64, 96, 128)

_UNITS = {"": 1, "b": 1, "k": 2**10, "kb": 10**3, "kib": 2**10, "m": 2**20, "mb": 10**6, "mib": 2**20,
          "g": 2**30, "gb": 10**9, "gib": 2**30, "t": 2**40, "tb": 10**12, "tib": 2**40}


def default_max_resolution(cuda: bool | None = None) -> int:
    """The largest R offered by default: 128 (the paper's) with a GPU, 64 on a CPU.

    On a CPU, R = 96 and 128 take tens of seconds per image and per click (the operator has
    R^4 entries), which is no interactive demo.
    """
    return default_resolution(None if cuda is None else ("cuda" if cuda else "cpu"))


def offered_resolutions(maximum: int, current: int | None = None) -> list[int]:
    """The resolutions the settings offer: the known ones up to ``maximum`` (and ``current``)."""
    return sorted({r for r in RESOLUTIONS if r <= maximum} | ({int(current)} if current else set()))


def host_memory_bytes() -> int:
    """Physical memory of this host (or of its cgroup, when that is smaller)."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as file:
                text = file.read().strip()
        except OSError:
            continue
        if text.isdigit():
            total = min(total, int(text))
    return total


#: GPU memory of a ZeroGPU slice when ``spaces`` does not say (its default: an H200 MIG 3g.71gb).
ZEROGPU_MEMORY = 74625056768


def zerogpu_memory_bytes() -> int:
    """GPU memory of this Space's ZeroGPU slice, as ``spaces`` reads it (``ZEROGPU_CUDA_TOTAL_MEMORY``)."""
    return int(os.environ.get("ZEROGPU_CUDA_TOTAL_MEMORY") or ZEROGPU_MEMORY)


def default_memory_budget(cuda: bool | None = None) -> int:
    """Bytes all sessions' prepared images may hold together, by default.

    A quarter of the host's memory on a CPU (the model, Gradio and the sessions' images need the
    rest); with a GPU, where the operators stay resident on it, 40 % of its memory (the model
    and the attention extraction need the rest), and never more than the CPU rule allows either.
    On ZeroGPU the prepared images live on the GPU workers' slice: 40 % of the slice's memory
    (read without touching CUDA, which the web process must not), within the CPU rule too.
    """
    zero = bool(os.environ.get("SPACES_ZERO_GPU"))
    if cuda is None:  # on ZeroGPU the web process must not touch CUDA (its workers have their own GPU)
        cuda = torch.cuda.is_available() and not zero
    budget = host_memory_bytes() // 4
    if zero:
        budget = min(budget, int(0.4 * zerogpu_memory_bytes()))
    elif cuda:
        budget = min(budget, int(0.4 * torch.cuda.get_device_properties(0).total_memory))
    return budget


def parse_bytes(text) -> int:
    """``"8GiB"``, ``"512MiB"``, ``"2g"``, ``"1.5GB"`` or a number of bytes -> bytes."""
    if isinstance(text, (int, float)):
        value = int(text)
    else:
        match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]*)?)\s*([a-zA-Z]*)\s*", str(text))
        if not match or match.group(2).lower() not in _UNITS:
            raise ValueError(f"not a size: {text!r} (write e.g. 8GiB, 512MiB or a number of bytes)")
        value = int(float(match.group(1)) * _UNITS[match.group(2).lower()])
    if value <= 0:
        raise ValueError(f"a size must be positive, got {text!r}")
    return value


def check_recipe_limits(recipe, max_clicks: int, highest_resolution: int) -> None:
    """Refuse a recipe beyond the public limits (clicks, objects, R) before any work.

    A recipe replays every click of every object, so without this one request could
    carry thousands of Markov-maps or ask a CPU for R = 128.
    """
    if len(recipe.objects) > max_clicks:
        raise InputError(f"the recipe has {len(recipe.objects)} objects, more than the {max_clicks} allowed")
    for number, obj in enumerate(recipe.objects, 1):
        if len(obj.clicks) > max_clicks:
            raise InputError(f"object {number} of the recipe has {len(obj.clicks)} clicks, "
                             f"more than the {max_clicks} allowed")
    if recipe.backbone.resolution > highest_resolution:
        raise InputError(f"the recipe asks for R = {recipe.backbone.resolution}; this server allows "
                         f"R up to {highest_resolution}")


class JobTooLong(InputError):
    """A job ran past its time bound and was stopped between two stages."""


class Deadline:
    """A time bound for one job, checked between its stages (work is never cut mid-stage).

    Parameters
    ----------
    seconds : float
        The bound; None or <= 0 for none.
    """

    def __init__(self, seconds: float | None):
        self.seconds = seconds if seconds and seconds > 0 else None
        self.start = time.perf_counter()

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def check(self, what: str) -> None:
        """Raise :class:`JobTooLong` if the bound has passed; ``what`` says what was not done."""
        if self.seconds is not None and self.elapsed > self.seconds:
            raise JobTooLong(f"this request was stopped after {self.elapsed:.0f} s (the limit is "
                             f"{self.seconds:.0f} s) before {what}; send fewer points or a smaller image")


def log_user_error(where: str, message: str) -> None:
    """One log line for an error the user caused (no traceback: nothing is wrong with the server)."""
    log.info("user error in %s: %s", where, message)
