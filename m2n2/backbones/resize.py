"""The learned backbones' input resize: the authors' ``cv2.resize(..., interpolation=INTER_AREA)``.

M2N2's authors resize every image straight to the model's input size (8R x 8R for Stable
Diffusion, 14R x 14R for DINOv2) with OpenCV's INTER_AREA, whether that shrinks, enlarges or both
(INTER_AREA enlarges bilinearly). PIL's filters differ from it by up to 2 % of an attention row,
so the learned backbones call OpenCV itself. The colour backbone, the predictor's working copy
and the evaluation keep :func:`m2n2.image.resize_rgb`.
"""

from __future__ import annotations

import numpy as np

from ..errors import BackboneUnavailable


def resize_area(image: np.ndarray, side: int) -> np.ndarray:
    """An RGB uint8 image (H, W, 3) resized to ``side`` x ``side`` as the authors do (INTER_AREA)."""
    try:
        import cv2
    except ImportError as error:
        raise BackboneUnavailable(
            "OpenCV is not installed: the learned backbones resize their input with it, as M2N2's "
            "authors do. To fix: `pip install opencv-python-headless`.") from error
    return cv2.resize(np.ascontiguousarray(image), (int(side), int(side)), interpolation=cv2.INTER_AREA)
