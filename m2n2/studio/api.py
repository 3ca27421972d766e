"""The stateless API: ``/segment`` (an image and points -> a mask and a summary) and
``/segment_recipe`` (an image and a recipe -> instance PNG, COCO JSON and the recipe replayed).

Nothing is kept between calls. Every limit is checked before the image is decoded where it can
be (the count of points, a recipe's size) and before any attention where it cannot (positions).
"""

from __future__ import annotations

import gradio as gr

from .. import export, recipe as recipes
from ..errors import M2N2Error
from ..image import read_image
from ..predictor import Prediction
from ..prompts import as_arrays, check_clicks, parse_clicks
from . import gpu
from .limits import check_recipe_limits, log_user_error
from .page import Page
from .priority import run_heavy


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

    def __init__(self, page: Page):
        self.page = page

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
            xy, labels = as_arrays(check_clicks(clicks, array.shape[:2], options.max_points))  # before attention
        except M2N2Error as error:
            log_user_error("/segment", str(error))
            raise gpu.user_error(error) from None
        try:
            prediction, description = run_heavy(gpu.segment_image, serving, array, xy, labels,
                                                options.attention_resolution, options.config, options.job_seconds)
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
            array = read_image(image)
            recipes.check(recipe, array)
        except M2N2Error as error:
            raise gr.Error(str(error)) from None
        masks, _ = run_heavy(gpu.replay_image, serving, array, recipe)
        if not masks:
            raise gr.Error("the recipe has no object")
        return export.instance_map(masks, array.shape[:2]), export.coco(masks), recipe.to_dict()
