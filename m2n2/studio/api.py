"""Helpers of the stateless API endpoint: points given as JSON, and a JSON-ready summary."""

from __future__ import annotations

import json

import numpy as np

from ..errors import InputError
from ..predictor import Prediction

def parse_points(text) -> tuple[np.ndarray, np.ndarray]:
    """Parse prompt points given as JSON, for the stateless API.

    Parameters
    ----------
    text : str or list
        A JSON list (or the list itself) whose items are ``[x, y, label]`` or
        ``{"x": ..., "y": ..., "label": ...}``; x is the column and y the row in original image
        pixels, label 1 foreground and 0 background (default 1 when left out).

    Returns
    -------
    points : numpy.ndarray
        (K, 2) float64 (x, y).
    labels : numpy.ndarray
        (K,) int64.

    Raises
    ------
    InputError
        Not JSON, not a list, an empty list, or an item of the wrong shape.
    """
    if isinstance(text, str):
        try:
            text = json.loads(text)
        except json.JSONDecodeError as error:
            raise InputError(f"points must be a JSON list such as [[120, 80, 1]]: {error}") from None
    if not isinstance(text, list) or not text:
        raise InputError('points must be a non-empty JSON list such as [[120, 80, 1], {"x": 5, "y": 9, "label": 0}]')
    points, labels = [], []
    for number, item in enumerate(text, start=1):
        if isinstance(item, dict) and "x" in item and "y" in item:
            x, y, label = item["x"], item["y"], item.get("label", 1)
        elif isinstance(item, (list, tuple)) and len(item) in (2, 3):
            x, y, label = item[0], item[1], item[2] if len(item) == 3 else 1
        else:
            raise InputError(f"point {number} must be [x, y, label] or {{\"x\", \"y\", \"label\"}}, got {item!r}")
        if isinstance(label, bool):
            label = int(label)
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (x, y)) or label not in (0, 1):
            raise InputError(f"point {number}: x and y must be numbers and label 0 or 1, got {item!r}")
        points.append((float(x), float(y)))
        labels.append(int(label))
    return np.array(points, dtype=np.float64), np.array(labels, dtype=np.int64)


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
