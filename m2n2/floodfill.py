"""The minimax flood fill: the smallest flood level at which a pixel joins the prompt's region."""

from __future__ import annotations

import numpy as np
from skimage.morphology import reconstruction

_FOUR_CONNECTED = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], dtype=bool)


def flood_fill(markov_map: np.ndarray, seed: tuple[int, int]) -> np.ndarray:
    """Minimum flood threshold of every pixel, seen from a seed pixel.

    ``value(p) = min over 4-connected paths s -> p of max over the path of |M(q) - M(s)|``, with
    ``value(s) = 0``. This minimax path problem is exactly a grey-scale reconstruction by
    erosion of a marker that is 0 at the seed (and maximal elsewhere) under the mask
    ``|M - M(s)|``, which scikit-image computes in O(n log n). The authors compute the same
    values with a priority-queue flood (``flood_fill_with_min_threshold``); the differences
    ``|M - M(s)|`` are taken in the map's own dtype, as theirs are (float32 maps give the
    same float32 differences).

    Parameters
    ----------
    markov_map : numpy.ndarray
        (H, W) float map.
    seed : tuple of int
        (row, column) of the prompt pixel.

    Returns
    -------
    numpy.ndarray
        (H, W) float64 flood thresholds, 0 at the seed.
    """
    cost = np.abs(markov_map - markov_map[seed]).astype(np.float64)
    marker = np.full_like(cost, cost.max())
    marker[seed] = 0.0  # equals cost[seed], so the marker stays >= the mask everywhere
    return reconstruction(marker, cost, method="erosion", footprint=_FOUR_CONNECTED)
