"""The stateless API: ``/segment`` (an image and points -> a mask and a summary) and
``/segment_recipe`` (an image and a recipe -> instance PNG, COCO JSON and the recipe replayed).

No state is kept for the caller, but a prepared image is: a request on pixels the server has
prepared before with the same settings (R, backbone, preset; an example prepared at start too)
skips the attention and the operator (:func:`prepared_key`), within the memory budget. Every
limit is checked before the image is decoded where it can be (the count of points, a recipe's
size) and before any attention where it cannot (positions, proportions). An error the caller
made is one log line (:func:`~m2n2.studio.limits.log_user_error`), never a traceback.
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading

import gradio as gr
import numpy as np

from .. import export, recipe as recipes
from ..config import M2N2Config
from ..errors import InputError, M2N2Error
from ..image import check_aspect, read_image
from ..predictor import Prediction
from ..prompts import as_arrays, check_clicks, parse_clicks
from . import gpu
from .examples import example_config
from .limits import check_recipe_limits, log_user_error
from .page import Page
from .priority import run_heavy


def prepared_key(image_hash: str, resolution: int, config: M2N2Config) -> str:
    """The store key of a stateless request's prepared image: its pixels' hash
    (:func:`m2n2.recipe.image_hash`) and the settings that shape the preparation.

    Each key is its own "session" of the :class:`~m2n2.studio.serving.PredictorStore`, so the
    images of different requests never replace each other (only the memory budget evicts them).
    """
    settings = hashlib.sha256(repr(sorted(dataclasses.asdict(config).items())).encode()).hexdigest()[:16]
    return f"api-{image_hash.removeprefix('sha256:')[:32]}-r{int(resolution)}-{settings}/image"


def summarize(prediction: Prediction, backbone_description: str) -> dict:
    """A JSON-ready summary of a prediction (what the stateless API returns next to the mask)."""
    height, width = prediction.mask.shape
    covered = int(prediction.mask.sum())
    return {
        "width": int(width),
        "height": int(height),
        "mask_pixels": covered,
        "mask_fraction": round(covered / (height * width), 6),
        "points": [{"x": p.xy[0], "y": p.xy[1], "label": p.label, "threshold": round(float(p.threshold), 6),
                    "overridden": bool(p.overridden)} for p in prediction.points],
        "backbone": backbone_description,
        "timings": {stage: round(float(seconds), 4) for stage, seconds in prediction.timings.items()},
    }


class ApiHandlers:
    """The two public endpoints.

    Parameters
    ----------
    page : Page
        The app's serving state (options, backbones, memory budget); the API draws no page.
    """

    def __init__(self, page: Page, images=None):
        self.page = page
        self.images = images  # the ImageHandlers, whose prepared examples a request may reuse
        self._examples: dict[str, str] | None = None  # example path by pixel hash
        self._lock = threading.Lock()

    def _example_of(self, hashed: str) -> str | None:
        """The example whose pixels hash to ``hashed``, if any (the examples are hashed once)."""
        with self._lock:
            if self._examples is None:
                self._examples = {}
                for path in self.page.examples:
                    try:
                        self._examples[recipes.image_hash(read_image(path))] = path
                    except M2N2Error:
                        continue
            return self._examples.get(hashed)

    def _key(self, image: np.ndarray, resolution: int, config: M2N2Config, hashed: str | None = None) -> str:
        """:func:`prepared_key` of a request; an example kept at these settings is lent to the store
        under it first (off ZeroGPU, where the examples live in this process)."""
        hashed = hashed or recipes.image_hash(image)
        key = prepared_key(hashed, resolution, config)
        store = self.page.serving.store
        cache = getattr(self.images, "example_cache", None)
        if key not in store and cache is not None:
            path = self._example_of(hashed)
            predictor = cache.lend(path, resolution, config) if path is not None else None
            if predictor is not None:
                store.put(key, predictor)
        return key

    def segment(self, image: str, points: str):
        """Stateless API: an image file and a JSON list of points -> mask PNG and a summary.

        ``points`` is a JSON list of ``[x, y, label]`` or ``{"x", "y", "label"}`` in original
        pixels (x column, y row; label 1 foreground, 0 background).
        """
        serving = self.page.serving
        options = serving.options
        try:
            clicks = check_clicks(parse_clicks(points), None, options.max_points)  # the count, before decoding
            array = read_image(image)
            check_aspect(*array.shape[:2])
            xy, labels = as_arrays(check_clicks(clicks, array.shape[:2], options.max_points))  # before attention
        except M2N2Error as error:
            log_user_error("/segment", str(error))
            raise gpu.user_error(error) from None
        resolution, config, hashed = options.attention_resolution, options.config, recipes.image_hash(array)
        if self._example_of(hashed) is not None:
            config = example_config(config)  # as the page segments an example
        try:
            prediction, description = run_heavy(gpu.segment_image, serving, array, xy, labels, resolution, config,
                                                options.job_seconds, self._key(array, resolution, config, hashed))
        except gr.Error as error:
            log_user_error("/segment", error.message)
            raise
        return prediction.mask.astype("uint8") * 255, summarize(prediction, description)

    def segment_recipe(self, image: str, recipe_text: str):
        """Stateless API: an image file and a recipe -> instance PNG, COCO JSON and the recipe replayed."""
        serving = self.page.serving
        options = serving.options
        try:
            recipe = recipes.Recipe.from_json(recipe_text)
            check_recipe_limits(recipe, options.max_points, options.highest_resolution)  # before decoding
            if not recipe.objects:
                raise InputError("the recipe has no object")
            array = read_image(image)
            check_aspect(*array.shape[:2])
            recipes.check(recipe, array)  # the pixels' hash: the key below may use the recipe's
        except M2N2Error as error:
            log_user_error("/segment_recipe", str(error))
            raise gpu.user_error(error) from None
        key = self._key(array, recipe.backbone.resolution, recipe.config, recipe.image_hash)
        try:
            masks, _ = run_heavy(gpu.replay_image, serving, array, recipe, key)
        except gr.Error as error:
            log_user_error("/segment_recipe", error.message)
            raise
        return export.instance_map(masks, array.shape[:2]), export.coco(masks), recipe.to_dict()
