"""The adaptive threshold: score every candidate segment of a Markov-map and keep the best.

The candidates follow the authors' code (``src/m2n2_model.py`` and
``collect_segment_border_pixels`` in ``src/utils.py``), not a per-value reading of the paper:
all pixels are put in one stable ascending sort of the map, and candidate k is the segment made
of the first k + 1 pixels of that order (every pixel but the last gives one candidate, so a
plateau of equal values gives many). Its threshold is the k-th sorted value. The area prior
judges candidate k by its rank, ``k / (T - 1)`` for T candidates, and the edge score is the mean
gradient over that partial segment's boundary, while the positive and negative scores, and the
mask finally cut, use the whole segment ``M <= threshold``. The boundary is the set of pixels
*outside* the segment with a 4-neighbour inside it, and the gradient is the Sobel magnitude
(mirror padding) divided by its maximum and truncated to integer steps of 1/1024.

All candidates are scored at once in O(n log n): a pixel outside the segment is on its boundary
exactly while ``min rank of its 4-neighbours <= k < its own rank``, so boundary sums are
cumulative sums over the sort.

:func:`threshold_curves` and :func:`score_thresholds` take numpy arrays (the CPU path: the sort
packs value and index into one 64-bit key, the boundary pass is compiled with numba);
:func:`threshold_curves_torch` and :func:`score_thresholds_torch` do the same in torch on the
map's device (the GPU path). Both equal the plain per-candidate definitions (tests).
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
import torch
import torch.nn.functional as F

from .config import M2N2Config
from .numerics import full_fp32

GRADIENT_STEPS = 1024  # the authors quantise the normalised gradient to this many integer steps
_SOBEL_X = torch.tensor([[[[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]]]])


@dataclass
class ThresholdCurves:
    """What the candidates of one Markov-map score, independent of the prompts.

    Attributes
    ----------
    thresholds : numpy.ndarray
        (T,) the map's values in ascending (stable) order, all but the last: candidate k is the
        segment of the first k + 1 pixels of that order, and its threshold is ``thresholds[k]``.
        Values repeat where the map has plateaus.
    area : numpy.ndarray
        (T,) the rank ``k / (T - 1)`` that the area prior judges (the authors' measure of area:
        close to the partial segment's pixel fraction, not to that of ``M <= thresholds[k]``).
    edge : numpy.ndarray
        (T,) mean quantised gradient of the map on each partial segment's outer boundary.
    maximum : float
        The map's largest value (no candidate at it passes the negative score).
    """

    thresholds: np.ndarray
    area: np.ndarray
    edge: np.ndarray
    maximum: float


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
    """Sobel gradient magnitude in float32, edges padded by mirroring (``d c b | a b c d``).

    Computed with torch's float32 convolution, as the authors do: the quantised gradient
    truncates, so a different summation order would move some pixels by one step.
    """
    return _sobel_torch(torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))).numpy()


def _sobel_torch(image: torch.Tensor) -> torch.Tensor:
    x = F.pad(image.float()[None, None], (1, 1, 1, 1), mode="reflect")
    # two convolutions: one with both kernels as output channels is 2x faster but sums in
    # another order (measured: a third of the pixels move by an ulp, enough to shift a step)
    kernel = _SOBEL_X.to(x.device)
    with full_fp32():  # never a TF32 kernel on CUDA: the gradient is quantised to 1/1024 steps
        gx = F.conv2d(x, kernel)[0, 0]
        gy = F.conv2d(x, kernel.transpose(2, 3))[0, 0]
    return torch.sqrt(gx ** 2 + gy ** 2)


def quantised_gradient(image: np.ndarray) -> np.ndarray:
    """Sobel magnitude divided by its maximum, in integer steps of 1 / ``GRADIENT_STEPS``.

    The integers keep the cumulative boundary sums exact (the authors sum them as int64).
    A map without any gradient gives zeros.
    """
    gradient = sobel_magnitude(image)
    top = gradient.max()
    if not top > 0:
        return np.zeros(gradient.shape, dtype=np.int64)
    # float32 division and truncation, as the authors compute it
    return (gradient / top * np.float32(GRADIENT_STEPS)).astype(np.int64)


def stable_order(values: np.ndarray) -> np.ndarray:
    """``np.argsort(values, kind="stable")`` of a flat array, faster for float32.

    A float32's bits, made order-preserving (sign flipped, negatives inverted), and its index
    form one 64-bit key; an unstable sort of those keys (numpy's SIMD sort) gives the stable
    order about 5x faster than the stable argsort. Other dtypes, and NaN, take the argsort.
    """
    values = np.asarray(values).ravel()
    if values.dtype != np.float32 or values.size >= 2 ** 32 or np.isnan(values).any():
        return np.argsort(values, kind="stable")
    bits = (values + np.float32(0.0)).view(np.uint32)  # + 0 turns -0.0 into 0.0: they tie
    negative = bits >= np.uint32(0x80000000)
    bits = np.where(negative, ~bits, bits | np.uint32(0x80000000)).astype(np.uint64)
    keys = (bits << np.uint64(32)) | np.arange(values.size, dtype=np.uint64)
    keys.sort()
    return (keys & np.uint64(0xFFFFFFFF)).astype(np.int64)


def stable_ranks(markov_map: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ascending stable sort of a map's pixels: ``(order, rank)`` with ``rank[order] = arange``."""
    order = stable_order(markov_map)
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    return order, rank.reshape(np.shape(markov_map))


@numba.njit(cache=True, nogil=True)
def _boundary_sums(rank, gradient, n_candidates):  # pragma: no cover - compiled
    """Gradient sum and length of every candidate's outer boundary (cumulative sums over ranks)."""
    height, width = rank.shape
    grad_diff = np.zeros(rank.size + 1, dtype=np.int64)
    length_diff = np.zeros(rank.size + 1, dtype=np.int64)
    for y in range(height):
        for x in range(width):
            leave = rank[y, x]
            enter = leave
            if y > 0 and rank[y - 1, x] < enter:
                enter = rank[y - 1, x]
            if y < height - 1 and rank[y + 1, x] < enter:
                enter = rank[y + 1, x]
            if x > 0 and rank[y, x - 1] < enter:
                enter = rank[y, x - 1]
            if x < width - 1 and rank[y, x + 1] < enter:
                enter = rank[y, x + 1]
            if enter < leave:
                g = gradient[y, x]
                grad_diff[enter] += g
                grad_diff[leave] -= g
                length_diff[enter] += 1
                length_diff[leave] -= 1
    return np.cumsum(grad_diff)[:n_candidates], np.cumsum(length_diff)[:n_candidates]


def threshold_curves(markov_map: np.ndarray) -> ThresholdCurves:
    """Rank, boundary-gradient and threshold of every candidate of a Markov-map.

    Parameters
    ----------
    markov_map : numpy.ndarray
        (H, W) map (the predictor's are float32 in [0, 1]).

    Returns
    -------
    ThresholdCurves
    """
    values = np.asarray(markov_map)
    order, rank = stable_ranks(values)
    n_candidates = max(values.size - 1, 1)  # every pixel but the last; a 1-pixel map keeps its one

    # A pixel enters the boundary when its first 4-neighbour joins the segment and leaves it
    # when it joins itself (pixels outside the image are not neighbours).
    grad_sum, length = _boundary_sums(np.ascontiguousarray(rank), quantised_gradient(values), n_candidates)
    # float32 like the authors' scores: their argmax sees float32 ties as ties (first wins)
    edge = np.divide(grad_sum.astype(np.float32), length.astype(np.float32),
                     out=np.zeros(n_candidates, np.float32), where=length > 0)

    thresholds = values.ravel()[order[:n_candidates]]
    # torch's float32 linspace, as the authors': at k / (T - 1) == area_prior exactly, the
    # float32 rounding decides whether the candidate passes the prior
    area = torch.linspace(0.0, 1.0, n_candidates, dtype=torch.float32).numpy()
    return ThresholdCurves(thresholds, area, edge, float(values.max()))


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
        tie). ``score_neg`` is 1 below the lowest other-label value and below the map's maximum
        (as in the authors' code, a candidate at the maximum never passes). With all four
        scores switched off, the threshold is 0.5.
    """
    t = curves.thresholds
    # Every score is float32, as in the authors' code, so that near-equal products tie alike.
    prior = (curves.area < np.float32(config.area_prior)).astype(np.float32)
    edge = curves.edge.astype(np.float32)
    same = np.sort(np.asarray(same_values, dtype=t.dtype))
    # fraction of same-label points with value <= t, for every t at once
    count = np.searchsorted(same, t, side="right").astype(np.float32)
    pos = count / np.float32(len(same)) if len(same) else np.ones(len(t), np.float32)
    lowest_other = min([curves.maximum, *np.asarray(other_values, dtype=t.dtype).tolist()])
    neg = (t < np.asarray(lowest_other, dtype=t.dtype)).astype(np.float32)

    total = np.ones(len(t), np.float32)
    for enabled, component in ((config.use_prior, prior), (config.use_edge, edge),
                               (config.use_pos, pos), (config.use_neg, neg)):
        if enabled:
            total = total * component
    if not (config.use_prior or config.use_edge or config.use_pos or config.use_neg):
        index, threshold = min(int(np.searchsorted(t, 0.5)), len(t) - 1), 0.5
    else:
        index = int(np.argmax(total))
        threshold = float(t[index])
    return ThresholdScores(t, total, prior, edge, pos, neg, index, threshold)


def threshold_curves_torch(markov_map: torch.Tensor) -> ThresholdCurves:
    """:func:`threshold_curves` in torch on the map's device; the curves are tensors there.

    Sobel, the stable sort, the boundary's cumulative sums (int64, exact) and the float32
    ratios are the same operations as the numpy path, so the curves are equal on the CPU
    (tests); on a GPU the convolution's summation order may move a gradient by one step.
    """
    values = markov_map
    height, width = values.shape
    n_candidates = max(values.numel() - 1, 1)
    flat = values.reshape(-1)
    _, order = torch.sort(flat, stable=True)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.numel(), device=order.device)
    rank = rank.reshape(height, width)

    gradient = _sobel_torch(values)
    top = gradient.max()
    if top > 0:
        gradient = (gradient / top * np.float32(GRADIENT_STEPS)).to(torch.int64)
    else:
        gradient = torch.zeros_like(rank)
    big = torch.iinfo(torch.int64).max
    padded = torch.full((height + 2, width + 2), big, dtype=torch.int64, device=rank.device)
    padded[1:-1, 1:-1] = rank
    enter = torch.minimum(torch.minimum(padded[:-2, 1:-1], padded[2:, 1:-1]),
                          torch.minimum(padded[1:-1, :-2], padded[1:-1, 2:]))
    on_boundary = enter < rank
    starts, stops, weights = enter[on_boundary], rank[on_boundary], gradient[on_boundary]
    size = values.numel() + 1
    grad_diff = torch.zeros(size, dtype=torch.int64, device=rank.device)
    grad_diff.index_add_(0, starts, weights).index_add_(0, stops, -weights)
    length_diff = torch.zeros(size, dtype=torch.int64, device=rank.device)
    ones = torch.ones_like(starts)
    length_diff.index_add_(0, starts, ones).index_add_(0, stops, -ones)
    grad_sum = grad_diff.cumsum(0)[:n_candidates]
    length = length_diff.cumsum(0)[:n_candidates]
    edge = torch.where(length > 0, grad_sum.float() / length.float().clamp_min(1), torch.zeros((), device=rank.device))

    thresholds = flat[order[:n_candidates]]
    area = torch.linspace(0.0, 1.0, n_candidates, dtype=torch.float32, device=values.device)
    return ThresholdCurves(thresholds, area, edge, values.max())


def score_thresholds_torch(curves: ThresholdCurves, same_values: torch.Tensor, other_values: torch.Tensor,
                           config: M2N2Config) -> ThresholdScores:
    """:func:`score_thresholds` for curves from :func:`threshold_curves_torch` (tensors on a device).

    The scores stay on the device; ``index`` and ``threshold`` are Python numbers (one
    synchronisation).
    """
    t = curves.thresholds
    device = t.device
    prior = (curves.area < torch.tensor(config.area_prior, dtype=torch.float32)).float()
    edge = curves.edge.float()
    same = torch.sort(same_values.to(device=device, dtype=t.dtype)).values
    count = torch.searchsorted(same, t, right=True).float()
    pos = count / np.float32(len(same)) if len(same) else torch.ones(len(t), device=device)
    lowest_other = torch.cat([curves.maximum.reshape(1).to(t.dtype), other_values.to(device=device, dtype=t.dtype)]).min()
    neg = (t < lowest_other).float()

    total = torch.ones(len(t), dtype=torch.float32, device=device)
    for enabled, component in ((config.use_prior, prior), (config.use_edge, edge),
                               (config.use_pos, pos), (config.use_neg, neg)):
        if enabled:
            total = total * component
    if not (config.use_prior or config.use_edge or config.use_pos or config.use_neg):
        index = min(int(torch.searchsorted(t, torch.tensor([0.5], dtype=t.dtype, device=device))[0]), len(t) - 1)
        threshold = 0.5
    else:
        index = int(torch.argmax(total))  # the first maximum, as numpy's
        threshold = float(t[index])
    return ThresholdScores(t, total, prior, edge, pos, neg, index, threshold)
