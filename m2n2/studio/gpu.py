"""The one GPU boundary of the app: the only ``spaces.GPU`` in the code, on a single function.

Every GPU job goes through :func:`run`, the one decorated entry point, as a typed job:
:class:`PrepareJob` (a new image: backbone, operator), :class:`SegmentJob` (clicks -> mask),
:class:`ObjectsJob` (a recipe's objects), and the stateless :class:`ImageJob` (the API) and
:class:`ReplayJob`. The module's functions :func:`prepare`, :func:`segment`,
:func:`segment_objects`, :func:`segment_image` and :func:`replay_image` build a job and run it.
Off ZeroGPU ``spaces.GPU`` returns the function unchanged, so these are ordinary calls.

Why one entry point: ``spaces`` (0.51, ``spaces/zero/wrappers.py``) keeps a separate pool of
forked worker processes for *each* decorated function, and reuses a worker only while it is
alive and the GPU it sits on was idle. With one decorated function per job kind, what a
``prepare`` stored lived in a process that no click ever reached: no click got a mask. With one
function, a reused worker keeps its store of prepared images; and since a worker may still be
replaced (another GPU, a busy GPU, a crash), a job that finds no prepared image prepares it
again *inside the same call* from what the session sends along (its image and settings), so a
click always gets its mask (:attr:`Segmentation.prepared` says when that happened).

What crosses the boundary on ZeroGPU (arguments and results are pickled between the web process
and the GPU worker):

* a preparation: in, the image (uint8, H x W x 3) and the settings; out, a :class:`Prepared`
  (a few numbers). The predictor, with its operator (R^4 entries: 512 MiB in fp16 at R = 128),
  stays in the worker's :class:`~m2n2.studio.serving.PredictorStore`; it never crosses.
* a click: in, the store key, the clicks (K x 2 floats, K labels), the override, the settings
  and the session's image (for a miss); out, a :class:`Segmentation`: the mask (H x W bool) and
  the latest click's Markov-map and score curves (h x w float32 and a few curves); only those
  leave the device (``M2N2Predictor.predict(..., keep="last")``).
* every job also carries the ids of recently ended sessions, so that the worker frees their
  prepared images (and device memory) at its next job, not when memory runs short, and the
  :class:`~m2n2.studio.serving.Serving` it runs on, given by the caller; that crosses as a
  reference to the worker's own copy (a fork inherits it), never its contents.

The duration each job asks ZeroGPU for is computed from its work (:mod:`m2n2.studio.durations`).

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
from ..threads import using_threads
from .durations import requested_seconds
from .limits import Deadline
from .serving import Serving, StoreMiss, preparation_bytes

#: Points whose Markov-maps the stateless API computes between two checks of its time bound.
POINTS_PER_STAGE = 5


def user_error(error: Exception) -> gr.Error:
    """``error`` as a ``gr.Error`` the user sees, without a traceback in the server log."""
    return gr.Error(str(error), print_exception=False)


@dataclass
class Prepared:
    """What a preparation returns: the working copy's (height, width), R, seconds, bytes held."""

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
    prepared : Prepared or None
        The preparation this call had to make first (its worker lacked the image), else None.
    """

    mask: np.ndarray
    last: PointResult
    seconds: float
    memory_bytes: int
    prepared: Prepared | None = None


@contextmanager
def _lent(predictor: M2N2Predictor, backbone):
    """Lend the shared backbone to a predictor for one call (the store never keeps the model)."""
    predictor.backbone = backbone
    try:
        yield predictor
    finally:
        predictor.backbone = None


def _prepare(serving: Serving, key: str, image: np.ndarray, resolution: int, config: M2N2Config) -> Prepared:
    """Compute the attention and the operator of ``image`` and keep the predictor under ``key``."""
    start = time.perf_counter()
    # Room first, held until the preparation ends, for what it holds while it runs.
    with serving.store.reserving(preparation_bytes(*image.shape[:2], resolution, config)):
        try:
            backbone = serving.backbones.get(resolution)
            predictor = M2N2Predictor(None, config, device=backbone.device)
            # The click's threads for the preparation's background part (the leap's products take
            # half the time on two cores), which runs while the user looks at the image.
            with _lent(predictor, backbone), using_threads(serving.options.click_threads):
                predictor.set_image(image)
        except M2N2Error as error:
            raise user_error(error) from None
        seconds = time.perf_counter() - start
    serving.store.put(key, predictor)  # counted by the store from now on, no longer by the reservation
    return Prepared(tuple(predictor.image.shape[:2]), predictor.resolution, seconds,
                    serving.store.update_size(key))


def _prepared(serving: Serving, key: str, image: np.ndarray | None, resolution: int | None,
              config: M2N2Config) -> tuple[M2N2Predictor | None, Prepared | None]:
    """The predictor under ``key``, prepared again from ``image`` when this process lacks it
    (None, None without an image); and the preparation made, if any."""
    try:
        return serving.store.get(key), None
    except StoreMiss:
        if image is None:
            return None, None
    prepared = _prepare(serving, key, image, resolution, config)
    return serving.store.get(key), prepared


def _configured(serving: Serving, predictor: M2N2Predictor, config: M2N2Config) -> None:
    """Apply a change of settings (only what it invalidates is recomputed)."""
    if predictor.config != config:
        with _lent(predictor, serving.backbones.get(predictor.resolution)):
            predictor.set_config(config)


@dataclass
class Job:
    """One unit of GPU work on ``serving``; ``ended`` lists sessions whose prepared images the worker
    may free."""

    # Set by _submit (class defaults, not dataclass fields). The Serving crosses to a ZeroGPU
    # worker as a reference to the worker's own copy (see m2n2.studio.serving.Serving).
    serving = None  # the Serving (not annotated: no dataclass field)
    ended = ()

    # What sizes its duration (see m2n2.studio.durations): R, the image's (H, W), points, whether
    # it may prepare the image, the settings, and how many Markov runs it makes.
    def work(self) -> tuple[int, tuple[int, int], int, bool, M2N2Config, int]:
        raise NotImplementedError

    def run(self, serving: Serving):
        raise NotImplementedError


@dataclass
class PrepareJob(Job):
    key: str
    image: np.ndarray
    resolution: int
    config: M2N2Config

    def work(self):
        return self.resolution, self.image.shape[:2], 0, True, self.config, 0

    def run(self, serving: Serving) -> Prepared:
        return _prepare(serving, self.key, self.image, self.resolution, self.config)


@dataclass
class SegmentJob(Job):
    key: str
    points: np.ndarray
    labels: np.ndarray
    threshold: float | None
    config: M2N2Config
    image: np.ndarray | None = None
    resolution: int | None = None

    def work(self):
        shape = self.image.shape[:2] if self.image is not None else (0, 0)
        # the new point's map, or every point's at once after a miss: one Markov run
        return self.resolution or 0, shape, len(self.points), self.image is not None, self.config, 1

    def run(self, serving: Serving) -> Segmentation | None:
        start = time.perf_counter()
        predictor, prepared = _prepared(serving, self.key, self.image, self.resolution, self.config)
        if predictor is None:
            return None
        try:
            _configured(serving, predictor, self.config)
            prediction = predictor.predict(self.points, self.labels, threshold=self.threshold, keep="last")
        except M2N2Error as error:
            raise user_error(error) from None
        return Segmentation(prediction.mask, prediction.points[-1], time.perf_counter() - start,
                            serving.store.update_size(self.key), prepared)


@dataclass
class ObjectsJob(Job):
    key: str
    objects: list[tuple[np.ndarray, np.ndarray, float | None]]
    config: M2N2Config
    image: np.ndarray | None = None
    resolution: int | None = None

    def work(self):
        shape = self.image.shape[:2] if self.image is not None else (0, 0)
        clicks = sum(len(points) for points, _, _ in self.objects)  # replayed one click at a time
        return self.resolution or 0, shape, clicks, self.image is not None, self.config, clicks

    def run(self, serving: Serving) -> list[Segmentation] | None:
        from ..recipe import replay_object

        predictor, prepared = _prepared(serving, self.key, self.image, self.resolution, self.config)
        if predictor is None:
            return None
        out = []
        try:
            _configured(serving, predictor, self.config)
            for points, labels, threshold in self.objects:
                start = time.perf_counter()
                prediction = replay_object(predictor, points, labels, threshold, keep="last")
                out.append(Segmentation(prediction.mask, prediction.points[-1], time.perf_counter() - start, 0,
                                        prepared))
        except M2N2Error as error:
            raise user_error(error) from None
        size = serving.store.update_size(self.key)
        for result in out:
            result.memory_bytes = size
        return out


@contextmanager
def _stateless(serving: Serving, key: str | None, image: np.ndarray, resolution: int, config: M2N2Config):
    """The prepared predictor of a stateless request, with the backbone lent for the block.

    With a ``key`` (the image's pixels and the settings, see :func:`m2n2.studio.api.prepared_key`),
    an image this process prepared before under it is reused, and one prepared now is kept under
    it (within the memory budget: the least recently used go first). A reused image serves the
    request through a :meth:`~m2n2.predictor.M2N2Predictor.shared_copy`: no maps yet and the
    image's first map still to come, as on a fresh predictor, so the masks are those a fresh
    preparation gives (with ``early_maps`` the first map of an image is made otherwise than the
    later ones). The kept predictor holds no request's maps. The predictor is counted against
    the budget while the block runs."""
    try:
        kept = serving.store.get(key) if key is not None else None
    except StoreMiss:
        kept = None
    fresh = kept is None
    predictor = None
    room = preparation_bytes(*image.shape[:2], resolution, config) if fresh else 0
    with serving.store.reserving(room):
        try:
            backbone = serving.backbones.get(resolution)
            predictor = M2N2Predictor(None, config, device=backbone.device) if fresh else kept.shared_copy()
            with _lent(predictor, backbone):
                if fresh:
                    predictor.set_image(image)
                yield predictor, fresh
        except M2N2Error as error:
            raise user_error(error) from None
        finally:
            if predictor is not None:
                predictor.clear_cache()
    if fresh and key is not None:
        serving.store.put(key, predictor)


@dataclass
class ImageJob(Job):
    image: np.ndarray
    points: np.ndarray
    labels: np.ndarray
    resolution: int
    config: M2N2Config
    seconds: float | None = None
    key: str | None = None  # where the prepared image is kept and looked for (None: neither)

    def work(self):
        runs = -(-len(self.points) // POINTS_PER_STAGE)  # the points' maps in stages
        return self.resolution, self.image.shape[:2], len(self.points), True, self.config, runs

    def run(self, serving: Serving) -> tuple[Prediction, str]:
        deadline = Deadline(self.seconds)
        points, labels = self.points, self.labels
        with _stateless(serving, self.key, self.image, self.resolution, self.config) as (predictor, fresh):
            staged: dict[str, float] = {}
            for start in range(0, len(points) - POINTS_PER_STAGE, POINTS_PER_STAGE):
                deadline.check(f"point {start + 1} of {len(points)}")
                # The predictor caches each point's map: the final call below only scores and merges.
                part = predictor.predict(points[start:start + POINTS_PER_STAGE],
                                         labels[start:start + POINTS_PER_STAGE], keep="none")
                for stage, spent in part.timings.items():
                    staged[stage] = staged.get(stage, 0.0) + spent
            deadline.check("the last points")
            prediction = predictor.predict(points, labels)
            description = predictor.backbone.description
        timings = {stage: spent + staged.get(stage, 0.0) for stage, spent in prediction.timings.items()}
        # The preparation's stages only when this request made it (a reused image cost none).
        prediction.timings = {**(predictor.image_timings if fresh else {}), **timings}
        return prediction, description


@dataclass
class ReplayJob(Job):
    image: np.ndarray
    recipe: object
    key: str | None = None  # as ImageJob's

    def work(self):
        clicks = sum(len(obj.points) for obj in self.recipe.objects)
        return self.recipe.backbone.resolution, self.image.shape[:2], clicks, True, self.recipe.config, clicks

    def run(self, serving: Serving) -> tuple[list[np.ndarray], str]:
        from ..recipe import check, replay

        recipe = self.recipe
        try:
            check(recipe, self.image, serving.backbones.get(recipe.backbone.resolution))
        except M2N2Error as error:
            raise user_error(error) from None
        with _stateless(serving, self.key, self.image, recipe.backbone.resolution, recipe.config) as (predictor, _):
            masks = replay(predictor, recipe)
            description = predictor.backbone.description
        return masks, description


def job_seconds(job: Job) -> int:
    """The GPU time ``job`` asks for (ZeroGPU checks a visitor's quota against it)."""
    return requested_seconds(*job.work())


@spaces.GPU(duration=job_seconds)
def run(job: Job):
    """The one GPU entry point: free what ended sessions held here, then run ``job``."""
    for session_id in job.ended:
        job.serving.store.drop_session(session_id)
    return job.run(job.serving)


def _submit(serving: Serving, job: Job):
    job.serving, job.ended = serving, serving.store.ended.recent()
    return run(job)


def prepare(serving: Serving, key: str, image: np.ndarray, resolution: int, config: M2N2Config) -> Prepared:
    """Compute the attention and the operator of ``image`` and keep the predictor under ``key``."""
    return _submit(serving, PrepareJob(key, image, resolution, config))


def segment(serving: Serving, key: str, points: np.ndarray, labels: np.ndarray, threshold: float | None, config: M2N2Config,
            image: np.ndarray | None = None, resolution: int | None = None) -> Segmentation | None:
    """Segment the image prepared under ``key`` from the clicks.

    Where the GPU process lacks it, it is prepared again in the same call from ``image`` at
    ``resolution`` (the session's copy); without an image, None. A change of settings is
    applied first (only what it invalidates is recomputed: temperature re-prepares the
    operator, rho or flood fill the Markov-maps).
    """
    return _submit(serving, SegmentJob(key, points, labels, threshold, config, image, resolution))


def segment_objects(serving: Serving, key: str, objects: list[tuple[np.ndarray, np.ndarray, float | None]], config: M2N2Config,
                    image: np.ndarray | None = None, resolution: int | None = None) -> list[Segmentation] | None:
    """Segment several objects (points, labels, override) on the image prepared under ``key``.

    Each object's clicks are replayed one by one as they were made (see
    :func:`m2n2.recipe.replay_object`); a missing image is prepared again from ``image`` as in
    :func:`segment` (None without one).
    """
    return _submit(serving, ObjectsJob(key, objects, config, image, resolution))


def segment_image(serving: Serving, image: np.ndarray, points: np.ndarray, labels: np.ndarray, resolution: int,
                  config: M2N2Config, seconds: float | None = None, key: str | None = None) -> tuple[Prediction, str]:
    """Stateless: prepare ``image`` (or reuse the image prepared under ``key``), segment the points;
    returns the prediction and the backbone's line.

    ``seconds`` bounds the work: it is checked after the attention and after each
    :data:`POINTS_PER_STAGE` points' Markov-maps (a stage is never cut), and past it the call
    stops with a message. With ``key``, a prepared image is kept for the next request on the
    same pixels and settings (the store's memory budget permitting).
    """
    return _submit(serving, ImageJob(image, points, labels, resolution, config, seconds, key))


def replay_image(serving: Serving, image: np.ndarray, recipe, key: str | None = None) -> tuple[list[np.ndarray], str]:
    """Stateless: the masks of a :class:`m2n2.recipe.Recipe` on ``image``, and the backbone's line
    (the image prepared under ``key`` reused, or kept there, as in :func:`segment_image`)."""
    return _submit(serving, ReplayJob(image, recipe, key))
