"""The simulated user and the number-of-clicks (NoC) metrics of interactive segmentation.

The user is the one of RITM and SimpleClick (M2N2-FACTS section 4): every click goes to the
pixel farthest from the border of the larger error region, positive in a false negative,
negative in a false positive.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from scipy.ndimage import distance_transform_edt

from ..config import MAX_CLICKS
from ..prompts import Click

THRESHOLDS = (0.85, 0.90, 0.95)


class Method(Protocol):
    """What the evaluation drives: one segmentation method fed by clicks.

    Attributes
    ----------
    name : str
        Label of the method in tables, plots and the JSON file.
    """

    name: str

    def set_image(self, image: np.ndarray) -> None:
        """Take a new RGB uint8 image (H, W, 3); the per-image cost goes here."""
        ...

    def predict(self, points: list[tuple[int, int]], labels: list[int]) -> np.ndarray:
        """Mask (H, W) bool of the current image for clicks ``(x, y)`` = (column, row) with
        labels 1 (object) or 0 (background)."""
        ...


@dataclass
class InstanceResult:
    """What one method did on one object.

    Attributes
    ----------
    ious : list of float
        IoU after click 1, 2, ... (always ``max_clicks`` entries: when no error pixel is left to
        click, the last IoU is carried forward).
    clicks : list of Click
        The clicks actually made (:class:`m2n2.prompts.Click` with whole-pixel ``x`` and ``y``).
    seconds : list of float
        Wall time of each ``predict`` call.
    """

    ious: list[float] = field(default_factory=list)
    clicks: list[Click] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)


def iou(prediction: np.ndarray, target: np.ndarray, ignore: np.ndarray | None = None) -> float:
    """Intersection over union of two boolean masks, ignore pixels left out.

    Returns 1.0 when both masks are empty outside the ignore region (nothing to get wrong).
    """
    valid = np.ones_like(target, dtype=bool) if ignore is None else ~ignore
    union = np.count_nonzero((prediction | target) & valid)
    if union == 0:
        return 1.0
    return np.count_nonzero(prediction & target & valid) / union


def _inner_distance(region: np.ndarray) -> np.ndarray:
    """Euclidean distance of every region pixel to the nearest non-region pixel, the outside of
    the image counting as non-region (the one-pixel zero padding of RITM)."""
    padded = np.pad(region, 1, constant_values=False)
    return distance_transform_edt(padded)[1:-1, 1:-1]


def next_click(prediction: np.ndarray, target: np.ndarray, ignore: np.ndarray | None = None,
               clicked: np.ndarray | None = None) -> Click | None:
    """Where the simulated user clicks next.

    Parameters
    ----------
    prediction, target : numpy.ndarray
        (H, W) bool: the current prediction and the ground truth.
    ignore : numpy.ndarray, optional
        (H, W) bool: pixels that count as neither false negative nor false positive.
    clicked : numpy.ndarray, optional
        (H, W) bool: pixels clicked already; they are never chosen again.

    Returns
    -------
    Click or None
        The farthest-from-border pixel of the false negative region (a positive click) if its
        distance is larger than the false positive region's, else that of the false positive
        region (a negative click); ties pick the first pixel in raster order. None when no
        clickable error pixel is left.
    """
    valid = np.ones_like(target, dtype=bool) if ignore is None else ~ignore
    false_negative = target & ~prediction & valid
    false_positive = prediction & ~target & valid
    fn_distance = _inner_distance(false_negative)
    fp_distance = _inner_distance(false_positive)
    if clicked is not None:
        # Excluded after the transform: a clicked pixel must not become a border of its region.
        fn_distance[clicked] = 0
        fp_distance[clicked] = 0
    fn_max, fp_max = fn_distance.max(initial=0), fp_distance.max(initial=0)
    if fn_max == 0 and fp_max == 0:
        return None
    positive = fn_max > fp_max
    distance = fn_distance if positive else fp_distance
    y, x = np.unravel_index(int(np.argmax(distance)), distance.shape)
    return Click(int(x), int(y), int(positive))


def next_click_authors(prediction: np.ndarray, target: np.ndarray, ignore: np.ndarray | None = None,
                       clicked: np.ndarray | None = None) -> Click:
    """Where the authors' evaluation clicks next (``click_center_of_error_region`` in their
    ``evaluate_datasets.py``), for comparison with :func:`next_click`.

    One region: all wrong pixels, false negatives and false positives together (ignore pixels
    left out); the click goes to its pixel farthest from the region's border (one-pixel zero
    padding round the image, first in raster order on ties) and takes the ground truth's label
    there. Clicked pixels are not excluded. With nothing wrong, the object itself is the region.
    ``clicked`` is accepted for the same call shape and not used.
    """
    valid = np.ones_like(target, dtype=bool) if ignore is None else ~ignore
    wrong = (prediction != target) & valid
    if not wrong.any():
        wrong = target & valid
    distance = _inner_distance(wrong)
    y, x = np.unravel_index(int(np.argmax(distance)), distance.shape)
    return Click(int(x), int(y), int(target[y, x]))


CLICKERS = {"ritm": next_click, "authors": next_click_authors}


def simulate(method: Method, target: np.ndarray, ignore: np.ndarray | None = None,
             max_clicks: int = MAX_CLICKS, on_prediction=None, clicker=next_click) -> InstanceResult:
    """Run the simulated user against a method whose image is already set.

    Parameters
    ----------
    method : Method
        Its ``set_image`` has been called with the image of ``target``.
    target, ignore : numpy.ndarray
        (H, W) bool ground truth and ignore region.
    max_clicks : int
        Clicks per object (20 in the papers).
    on_prediction : callable, optional
        Called as ``on_prediction(points, labels, prediction)`` after every click (other
        methods can follow the same clicks, see :mod:`m2n2.evaluate.agreement`).
    clicker : callable
        The simulated user: :func:`next_click` (RITM / SimpleClick, the default) or
        :func:`next_click_authors`.

    Returns
    -------
    InstanceResult
    """
    result = InstanceResult()
    prediction = np.zeros_like(target, dtype=bool)
    clicked = np.zeros_like(target, dtype=bool)
    while len(result.ious) < max_clicks:
        click = clicker(prediction, target, ignore, clicked)
        if click is None:
            # Nothing left to correct: the IoU cannot change any more.
            last = result.ious[-1] if result.ious else iou(prediction, target, ignore)
            result.ious += [last] * (max_clicks - len(result.ious))
            break
        result.clicks.append(click)
        clicked[click.y, click.x] = True
        points = [(c.x, c.y) for c in result.clicks]
        labels = [c.label for c in result.clicks]
        start = time.perf_counter()
        prediction = np.asarray(method.predict(points, labels), dtype=bool)
        result.seconds.append(time.perf_counter() - start)
        if prediction.shape != target.shape:
            raise ValueError(f"{method.name} returned a mask of shape {prediction.shape} "
                             f"for an image of shape {target.shape}")
        result.ious.append(iou(prediction, target, ignore))
        if on_prediction is not None:
            on_prediction(points, labels, prediction)
    return result


def clicks_to_reach(ious: list[float], threshold: float, max_clicks: int = MAX_CLICKS) -> int:
    """NoC of one object: the first click count whose IoU is >= threshold, else ``max_clicks``."""
    for count, value in enumerate(ious[:max_clicks], start=1):
        if value >= threshold:
            return count
    return max_clicks


def reached(ious: list[float], threshold: float, max_clicks: int = MAX_CLICKS) -> bool:
    """Whether the IoU reaches ``threshold`` within ``max_clicks`` clicks."""
    return any(value >= threshold for value in ious[:max_clicks])
