"""The adaptive threshold: score every candidate segment of a Markov-map and keep the best.

For a Markov-map M in [0, 1] the candidates are its distinct values (but the largest, whose
segment is the whole image); segment(lambda) = {p : M(p) <= lambda}. The score of a candidate is
the product of four terms (paper, Section 3.4): an area prior, the mean Sobel gradient of M
along the segment's boundary, the fraction of same-label prompts inside and "no other-label
prompt inside". All of them are computed for every candidate at once in O(n log n): a pixel is
on the boundary exactly while ``M(p) <= lambda < max over its 4-neighbours of M``, so boundary
sums are cumulative sums over the sorted candidates.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .config import M2N2Config


@dataclass
class ThresholdCurves:
    """What the candidates of one Markov-map score, independent of the prompts.

    Attributes
    ----------
    thresholds : numpy.ndarray
        (T,) sorted distinct candidate values.
    area : numpy.ndarray
        (T,) fraction of the image inside each candidate segment.
    edge : numpy.ndarray
        (T,) mean Sobel gradient magnitude of the map on each segment's boundary pixels
        (0 for a segment without boundary).
    """

    thresholds: np.ndarray
    area: np.ndarray
    edge: np.ndarray


@dataclass
class ThresholdScores:
    """Scores of every candidate threshold of one prompt point, and the chosen one."""

    thresholds: np.ndarray
    score: np.ndarray
    score_prior: np.ndarray
    score_edge: np.ndarray
    score_pos: np.ndarray
    score_neg: np.ndarray
    index: int
    threshold: float


def sobel_magnitude(image: np.ndarray) -> np.ndarray:
    """Sobel gradient magnitude (float64), with edges handled by reflection."""
    image = image.astype(np.float64)
    return np.hypot(ndimage.sobel(image, axis=0), ndimage.sobel(image, axis=1))


def boundary_pixels(segment: np.ndarray) -> np.ndarray:
    """Pixels of a boolean segment with a 4-neighbour outside it (the image border is not one)."""
    inner = segment.copy()
    inner[1:, :] &= segment[:-1, :]
    inner[:-1, :] &= segment[1:, :]
    inner[:, 1:] &= segment[:, :-1]
    inner[:, :-1] &= segment[:, 1:]
    return segment & ~inner


def threshold_curves(markov_map: np.ndarray) -> ThresholdCurves:
    """Area and boundary-gradient curves of every candidate threshold of a Markov-map.

    Parameters
    ----------
    markov_map : numpy.ndarray
        (H, W) map.

    Returns
    -------
    ThresholdCurves
    """
    values = np.asarray(markov_map)
    distinct, inverse, counts = np.unique(values.ravel(), return_inverse=True, return_counts=True)
    if len(distinct) > 1:
        distinct = distinct[:-1]  # the largest value's segment is the whole image
    n_candidates = len(distinct)

    # A pixel is a boundary pixel for candidate indices in [enter, leave): from its own rank
    # until the rank of its highest 4-neighbour (pixels outside the image do not count).
    enter = inverse.reshape(values.shape)
    leave = np.full_like(enter, -1)
    leave[1:, :] = np.maximum(leave[1:, :], enter[:-1, :])
    leave[:-1, :] = np.maximum(leave[:-1, :], enter[1:, :])
    leave[:, 1:] = np.maximum(leave[:, 1:], enter[:, :-1])
    leave[:, :-1] = np.maximum(leave[:, :-1], enter[:, 1:])
    on_boundary = leave > enter
    gradient = sobel_magnitude(values)
    starts, stops, weights = enter[on_boundary], leave[on_boundary], gradient[on_boundary]
    grad_sum = (np.bincount(starts, weights, n_candidates + 1) - np.bincount(stops, weights, n_candidates + 1))
    length = (np.bincount(starts, None, n_candidates + 1) - np.bincount(stops, None, n_candidates + 1))
    grad_sum = np.cumsum(grad_sum)[:n_candidates]
    length = np.cumsum(length)[:n_candidates]
    edge = np.divide(grad_sum, length, out=np.zeros(n_candidates), where=length > 0)
    area = np.cumsum(counts)[:n_candidates] / values.size
    return ThresholdCurves(distinct, area, edge)


def score_thresholds(curves: ThresholdCurves, same_values: np.ndarray, other_values: np.ndarray,
                     config: M2N2Config) -> ThresholdScores:
    """Score every candidate threshold of one point's Markov-map and choose the best.

    Parameters
    ----------
    curves : ThresholdCurves
        The map's prompt-independent curves.
    same_values : numpy.ndarray
        Map values at the prompt points with this point's label (this point included).
    other_values : numpy.ndarray
        Map values at the prompt points with the other label.
    config : M2N2Config
        Area prior and the four score switches.

    Returns
    -------
    ThresholdScores
        Component and total scores; the chosen threshold maximises the total (the first on a
        tie). With all four scores switched off, the threshold is 0.5.
    """
    t = curves.thresholds
    prior = (curves.area < config.area_prior).astype(np.float64)
    edge = curves.edge
    pos = (np.asarray(same_values)[:, None] <= t[None, :]).mean(axis=0) if len(same_values) else np.ones_like(t)
    lowest_other = np.min(other_values) if len(other_values) else np.inf
    neg = (t < lowest_other).astype(np.float64)

    total = np.ones_like(t)
    for enabled, component in ((config.use_prior, prior), (config.use_edge, edge),
                               (config.use_pos, pos), (config.use_neg, neg)):
        if enabled:
            total = total * component
    if not (config.use_prior or config.use_edge or config.use_pos or config.use_neg):
        index, threshold = int(np.searchsorted(t, 0.5)), 0.5
    else:
        index = int(np.argmax(total))
        threshold = float(t[index])
    return ThresholdScores(t, total, prior, edge, pos, neg, index, threshold)
