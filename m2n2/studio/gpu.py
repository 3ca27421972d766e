"""The one GPU boundary of the app: the only ``spaces.GPU`` in the code.

Three typed functions with plain arguments: :func:`prepare` (a new image: backbone, operator),
:func:`segment` (clicks -> mask) and :func:`segment_image` (the stateless API). Off ZeroGPU
``spaces.GPU`` returns the function unchanged, so these are ordinary calls.

What crosses the boundary on ZeroGPU (arguments and results are pickled between the web process
and the GPU worker):

* :func:`prepare`: in, the image (uint8, H x W x 3) and the settings; out, a :class:`Prepared`
  (a few numbers). The predictor, with its operator (R^4 entries: 512 MiB in fp16 at R = 128),
  stays in the worker's :class:`~m2n2.studio.serving.PredictorStore`; it never crosses.
* :func:`segment`: in, the store key, the clicks (K x 2 floats, K labels), the override and the
  settings (under a kilobyte); out, a :class:`Segmentation`: the mask (H x W bool) and the latest
  click's Markov-map and score curves (h x w float32 and a few curves).

The operator stays where it was prepared (the GPU, or the CPU without one) between clicks and is
never copied back and forth; on a GPU every per-click stage runs there too (Markov, upsampling,
flood fill, curves, scores, merge: ``M2N2Predictor.torch_stages``) and the cached Markov-maps
stay on the device, so only the numpy results above leave it (a test pickles them and finds no
tensor). On a dedicated GPU the store keeps each session's prepared image resident on the
device, least recently used first out over the memory budget (``Options.budget_bytes``).
A ZeroGPU worker may be replaced between calls; :func:`segment` then
reports a miss (returns None) and the caller prepares the image again from its copy.

Errors the user caused come back as ``gr.Error`` with their message (ZeroGPU replaces the text
of other exceptions with a generic one) and no traceback in the server log.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass

import gradio as gr
import numpy as np
import spaces

from ..config import M2N2Config
from ..errors import M2N2Error
from ..predictor import M2N2Predictor, PointResult, Prediction
from .limits import Deadline
from .serving import StoreMiss, current, preparation_bytes

#: Points whose Markov-maps the stateless API computes between two checks of its time bound.
POINTS_PER_STAGE = 5


def user_error(error: Exception) -> gr.Error:
    """``error`` as a ``gr.Error`` the user sees, without a traceback in the server log."""
    return gr.Error(str(error), print_exception=False)


@dataclass
class Prepared:
    """What :func:`prepare` returns: the working copy's (height, width), R, seconds, bytes held."""

    working: tuple[int, int]
    resolution: int
    seconds: float
    memory_bytes: int


@dataclass
class Segmentation:
    """What :func:`segment` returns.

    Attributes
    ----------
    mask : numpy.ndarray
        (H, W) bool at the original size.
    last : PointResult
        The latest click's Markov-map (working size), score curves and threshold.
    seconds : float
        Time of the call.
    memory_bytes : int
        What the prepared image holds now (operator, guide, cached maps).
    """

    mask: np.ndarray
    last: PointResult
    seconds: float
    memory_bytes: int


@contextmanager
def _lent(predictor: M2N2Predictor, backbone):
    """Lend the shared backbone to a predictor for one call (the store never keeps the model)."""
    predictor.backbone = backbone
    try:
        yield predictor
    finally:
        predictor.backbone = None


@spaces.GPU(duration=120)
def prepare(key: str, image: np.ndarray, resolution: int, config: M2N2Config) -> Prepared:
    """Compute the attention and the operator of ``image`` and keep the predictor under ``key``."""
    serving = current()
    start = time.perf_counter()
    # Room first, for what the preparation holds while it runs (the budget covers it too).
    serving.store.reserve(preparation_bytes(*image.shape[:2], resolution, config))
    try:
        backbone = serving.backbones.get(resolution)
        predictor = M2N2Predictor(None, config, device=backbone.device)
        with _lent(predictor, backbone):
            predictor.set_image(image)
    except M2N2Error as error:
        raise user_error(error) from None
    seconds = time.perf_counter() - start
    serving.store.put(key, predictor)
    return Prepared(tuple(predictor.image.shape[:2]), predictor.resolution, seconds,
                    serving.store.update_size(key))


@spaces.GPU(duration=30)
def segment(key: str, points: np.ndarray, labels: np.ndarray, threshold: float | None,
            config: M2N2Config) -> Segmentation | None:
    """Segment the image prepared under ``key`` from the clicks; None when this process lacks it.

    A change of settings is applied first (only what it invalidates is recomputed: temperature
    re-prepares the operator, rho or flood fill the Markov-maps).
    """
    serving = current()
    start = time.perf_counter()
    try:
        predictor = serving.store.get(key)
    except StoreMiss:
        return None
    try:
        if predictor.config != config:
            backbone = serving.backbones.get(predictor.resolution)
            with _lent(predictor, backbone):
                predictor.set_config(config)
        prediction = predictor.predict(points, labels, threshold=threshold)
    except M2N2Error as error:
        raise user_error(error) from None
    return Segmentation(prediction.mask, prediction.points[-1], time.perf_counter() - start,
                        serving.store.update_size(key))


@spaces.GPU(duration=120)
def segment_image(image: np.ndarray, points: np.ndarray, labels: np.ndarray, resolution: int,
                  config: M2N2Config, seconds: float | None = None) -> tuple[Prediction, str]:
    """Stateless: prepare ``image``, segment the points; returns the prediction and the backbone's line.

    ``seconds`` bounds the work: it is checked after the attention and after each
    :data:`POINTS_PER_STAGE` points' Markov-maps (a stage is never cut), and past it the call
    stops with a message.
    """
    backbone = current().backbones.get(resolution)
    deadline = Deadline(seconds)
    try:
        predictor = M2N2Predictor(backbone, config)
        predictor.set_image(image)
        staged: dict[str, float] = {}
        for start in range(0, len(points) - POINTS_PER_STAGE, POINTS_PER_STAGE):
            deadline.check(f"point {start + 1} of {len(points)}")
            # The predictor caches each point's map: the final call below only scores and merges.
            part = predictor.predict(points[start:start + POINTS_PER_STAGE], labels[start:start + POINTS_PER_STAGE])
            for stage, spent in part.timings.items():
                staged[stage] = staged.get(stage, 0.0) + spent
        deadline.check("the last points")
        prediction = predictor.predict(points, labels)
    except M2N2Error as error:
        raise user_error(error) from None
    timings = {stage: spent + staged.get(stage, 0.0) for stage, spent in prediction.timings.items()}
    prediction.timings = {**predictor.image_timings, **timings}
    return prediction, backbone.description


@spaces.GPU(duration=60)
def segment_objects(key: str, objects: list[tuple[np.ndarray, np.ndarray, float | None]],
                    config: M2N2Config) -> list[Segmentation] | None:
    """Segment several objects (points, labels, override) on the image prepared under ``key``.

    Each object's clicks are replayed one by one as they were made (see
    :func:`m2n2.recipe.replay_object`); None when this process lacks the image.
    """
    from ..recipe import replay_object

    serving = current()
    try:
        predictor = serving.store.get(key)
    except StoreMiss:
        return None
    out = []
    try:
        if predictor.config != config:
            with _lent(predictor, serving.backbones.get(predictor.resolution)):
                predictor.set_config(config)
        for points, labels, threshold in objects:
            start = time.perf_counter()
            prediction = replay_object(predictor, points, labels, threshold)
            out.append(Segmentation(prediction.mask, prediction.points[-1], time.perf_counter() - start, 0))
    except M2N2Error as error:
        raise gr.Error(str(error)) from None
    size = serving.store.update_size(key)
    for result in out:
        result.memory_bytes = size
    return out


@spaces.GPU(duration=120)
def replay_image(image: np.ndarray, recipe) -> tuple[list[np.ndarray], str]:
    """Stateless: the masks of a :class:`m2n2.recipe.Recipe` on ``image``, and the backbone's line."""
    from ..recipe import check, replay

    backbone = current().backbones.get(recipe.backbone.resolution)
    try:
        check(recipe, image, backbone)
        predictor = M2N2Predictor(backbone, recipe.config)
        predictor.set_image(image)
        masks = replay(predictor, recipe)
    except M2N2Error as error:
        raise gr.Error(str(error)) from None
    return masks, backbone.description
