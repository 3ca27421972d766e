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

:func:`threshold_curves` and :func:`score_thresholds` take the arrays they are given and pick
the kernel: numpy arrays (the CPU path: a compiled radix sort of the values' bits and a compiled
boundary pass) or torch tensors, kept on their device (the GPU path). Both
kernels equal the plain per-candidate definitions (tests); the score product and the choice are
shared.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

import numba
import numpy as np
import torch
import torch.nn.functional as F

from .config import M2N2Config
from .numerics import full_fp32

GRADIENT_STEPS = 1024  # the authors quantise the normalised gradient to this many integer steps
Array = Union[np.ndarray, torch.Tensor]  # numpy on the CPU path, a tensor on the map's device
_SOBEL_X = torch.tensor([[[[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]]]])


@dataclass
class ThresholdCurves:
    """What the candidates of one Markov-map score, independent of the prompts.

    Numpy arrays for a numpy map, tensors on the map's device for a tensor (see :data:`Array`).

    Attributes
    ----------
    thresholds : numpy.ndarray or torch.Tensor
        (T,) the map's values in ascending (stable) order, all but the last: candidate k is the
        segment of the first k + 1 pixels of that order, and its threshold is ``thresholds[k]``.
        Values repeat where the map has plateaus.
    area : numpy.ndarray or torch.Tensor
        (T,) float32 the rank ``k / (T - 1)`` that the area prior judges (the authors' measure of area:
        close to the partial segment's pixel fraction, not to that of ``M <= thresholds[k]``).
    edge : numpy.ndarray or torch.Tensor
        (T,) float32 mean quantised gradient of the map on each partial segment's outer boundary.
    maximum : float or torch.Tensor
        The map's largest value (no candidate at it passes the negative score); a 0-d tensor on
        the map's device for a tensor map (reading it would wait for the device).
    """

    thresholds: Array
    area: Array
    edge: Array
    maximum: float | torch.Tensor
    # area_prior -> how many leading candidates the prior passes (see _prior_end)
    prior_ends: dict = field(default_factory=dict, repr=False, compare=False)


@dataclass
class ThresholdScores:
    """Scores of every candidate threshold of one prompt point, and the chosen one.

    The curves are of the kind of the :class:`ThresholdCurves` scored (numpy, or tensors on
    their device); ``index`` and ``threshold`` are Python numbers. :func:`choose_threshold` leaves
    the score curves None.
    """

    thresholds: Array
    score: Array | None
    score_prior: Array | None
    score_edge: Array | None
    score_pos: Array | None
    score_neg: Array | None
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

    A float32's bits, made order-preserving (sign flipped, negatives inverted), are sorted by a
    least-significant-digit radix sort (three passes of 11 bits, compiled), which is stable by
    construction: 2 ms for a 512 x 512 map against 18 ms for the stable argsort (2-core AVX2 box).
    Other dtypes, and NaN, take the argsort.
    """
    values = np.asarray(values).ravel()
    if values.dtype != np.float32 or values.size >= 2 ** 31 or np.isnan(values).any():
        return np.argsort(values, kind="stable")
    return _radix_order(values.view(np.uint32))


@numba.njit(cache=True, nogil=True)
def _radix_order(bits):  # pragma: no cover - compiled
    """Stable ascending order of float32 values given as their bits (no NaN)."""
    n = bits.size
    sign = np.uint32(0x80000000)
    keys = np.empty(n, np.uint32)
    for i in range(n):
        b = bits[i]
        if b == sign:  # -0.0 ties with 0.0
            b = np.uint32(0)
        keys[i] = ~b if b >= sign else b | sign
    counts = np.zeros((3, 2049), np.int64)  # every pass's digit counts, from one read
    for i in range(n):
        k = keys[i]
        counts[0, (k & np.uint32(0x7FF)) + 1] += 1
        counts[1, ((k >> np.uint32(11)) & np.uint32(0x7FF)) + 1] += 1
        counts[2, (k >> np.uint32(22)) + 1] += 1
    order = np.arange(n)
    spare_order = np.empty(n, np.int64)
    spare_keys = np.empty(n, np.uint32)
    for p in range(3):
        start = counts[p]
        if start.max() == n:  # one digit for every key: this pass would keep the order
            continue
        for d in range(1, 2049):
            start[d] += start[d - 1]
        shift = np.uint32(11 * p)
        for i in range(n):
            k = keys[i]
            d = (k >> shift) & np.uint32(0x7FF)
            j = start[d]
            start[d] = j + 1
            spare_order[j] = order[i]
            spare_keys[j] = k
        order, spare_order = spare_order, order
        keys, spare_keys = spare_keys, keys
    return order


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


def threshold_curves(markov_map: Array) -> ThresholdCurves:
    """Rank, boundary-gradient and threshold of every candidate of a Markov-map.

    Parameters
    ----------
    markov_map : numpy.ndarray or torch.Tensor
        (H, W) map (the predictor's are float32 in [0, 1]). A tensor is scored in torch on its
        device and gives tensor curves there.

    Returns
    -------
    ThresholdCurves
    """
    if isinstance(markov_map, torch.Tensor):
        return _curves_torch(markov_map)
    return _curves_numpy(np.asarray(markov_map))


def _curves_numpy(values: np.ndarray) -> ThresholdCurves:
    """:func:`threshold_curves` of a numpy map: the packed-key sort and the compiled boundary pass."""
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


def _curves_torch(values: torch.Tensor) -> ThresholdCurves:
    """:func:`threshold_curves` of a tensor, on its device; the curves are tensors there.

    Sobel, the stable sort, the boundary's cumulative sums (int64, exact) and the float32
    ratios are the same operations as the numpy kernel, so the curves are equal on the CPU
    (tests); on a GPU the convolution's summation order may move a gradient by one step.
    """
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


def score_thresholds(curves: ThresholdCurves, same_values: Array, other_values: Array,
                     config: M2N2Config) -> ThresholdScores:
    """Score every candidate threshold of one point's Markov-map and choose the best.

    Parameters
    ----------
    curves : ThresholdCurves
        The map's prompt-independent curves (numpy, or tensors on a device: the scores are
        computed there, and only ``index`` and ``threshold`` are read back).
    same_values : numpy.ndarray or torch.Tensor
        Map values at the prompt points with this point's label (this point included).
    other_values : numpy.ndarray or torch.Tensor
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
    on_device = isinstance(t, torch.Tensor)
    components = (_components_torch if on_device else _components_numpy)(curves, same_values, other_values,
                                                                          config.area_prior)
    switches = (config.use_prior, config.use_edge, config.use_pos, config.use_neg)
    # Every score is float32, as in the authors' code, so that near-equal products tie alike.
    total = (torch.ones_like if on_device else np.ones_like)(components[0])
    for enabled, component in zip(switches, components):
        if enabled:
            total = total * component
    if any(switches):
        index = int(total.argmax())  # the first maximum (numpy's and torch's)
        threshold = float(t[index])
    else:  # where 0.5 would sit among the sorted thresholds
        index, threshold = min(int((t < 0.5).sum()), len(t) - 1), 0.5
    return ThresholdScores(t, total, *components, index, threshold)


def choose_threshold(curves: ThresholdCurves, same_values: Array, other_values: Array,
                     config: M2N2Config) -> ThresholdScores:
    """The candidate :func:`score_thresholds` chooses, without its score curves (left None).

    The thresholds ascend, so the area prior (a rank below ``area_prior``) and the negative score
    (a value below the lowest other-label value) each pass a prefix of the candidates, and every
    score beyond the shorter prefix is 0. So only that prefix is scored, with the same float32
    products in the same order: its first maximum is the first maximum of all the scores, unless
    every score is 0, when candidate 0 is (numpy's argmax). About 0.4 of the candidates at the
    default prior, and no per-candidate search for the positive score (see :func:`_pos_numpy`).
    Tensor curves are scored whole on their device (only the choice is read back there).
    """
    t = curves.thresholds
    prior_end = _prior_end(curves, config.area_prior) if config.use_prior and isinstance(t, np.ndarray) else None
    if not isinstance(t, np.ndarray) or (config.use_prior and prior_end is None) or not any(
            (config.use_prior, config.use_edge, config.use_pos, config.use_neg)):
        full = score_thresholds(curves, same_values, other_values, config)
        return ThresholdScores(full.thresholds, None, None, None, None, None, full.index, full.threshold)
    end = len(t) if prior_end is None else prior_end
    if config.use_neg:
        end = min(end, _neg_end(t, curves.maximum, other_values))
    total = np.ones(end, np.float32)  # the prior's and negative score's factors are 1 here
    if config.use_edge:
        total = total * curves.edge[:end].astype(np.float32, copy=False)
    if config.use_pos:
        total = total * _pos_numpy(t, same_values, end)
    index = int(total.argmax()) if end else 0
    return ThresholdScores(t, None, None, None, None, None, index, float(t[index]))


def _prior_end(curves: ThresholdCurves, area_prior: float) -> int | None:
    """How many leading candidates the area prior passes (cached on ``curves``); None when the
    candidates it passes are not a prefix (float32 ranks are not monotone)."""
    key = float(area_prior)
    if key not in curves.prior_ends:
        passes = curves.area < np.float32(area_prior)
        end = len(passes) if passes.all() else int(passes.argmin())
        curves.prior_ends[key] = None if passes[end:].any() else end
    return curves.prior_ends[key]


def _lowest_other(t: np.ndarray, maximum: float, other_values) -> np.ndarray:
    """The negative score's bound: the lowest other-label value, or the map's maximum."""
    return np.asarray(min([maximum, *np.asarray(other_values, dtype=t.dtype).tolist()]), dtype=t.dtype)


def _neg_end(t: np.ndarray, maximum: float, other_values) -> int:
    """How many leading candidates the negative score passes (``t < lowest other``; ``t`` ascends)."""
    return int(np.searchsorted(t, _lowest_other(t, maximum, other_values), side="left"))


def _pos_numpy(t: np.ndarray, same_values, end: int) -> np.ndarray:
    """The positive score of the first ``end`` candidates: the float32 fraction of same-label
    values <= t. As ``t`` ascends, the count steps up by one where ``t`` first reaches each value,
    so it is built from K searches instead of one per candidate (the same float32 division)."""
    same = np.sort(np.asarray(same_values, dtype=t.dtype))
    if not len(same):
        return np.ones(end, np.float32)
    steps = np.minimum(np.searchsorted(t, same, side="left"), end)
    lengths = np.diff(steps, prepend=0, append=end)
    fractions = np.arange(len(same) + 1, dtype=np.float32) / np.float32(len(same))
    return np.repeat(fractions, lengths)


def _components_numpy(curves: ThresholdCurves, same_values, other_values, area_prior: float) -> tuple:
    """The four float32 component scores (prior, edge, pos, neg) of numpy curves."""
    t = curves.thresholds
    prior = (curves.area < np.float32(area_prior)).astype(np.float32)
    edge = curves.edge.astype(np.float32)
    # fraction of same-label points with value <= t, for every t at once
    pos = _pos_numpy(t, same_values, len(t))
    neg = np.zeros(len(t), np.float32)
    neg[:_neg_end(t, curves.maximum, other_values)] = 1  # t < the lowest other-label value
    return prior, edge, pos, neg


def _components_torch(curves: ThresholdCurves, same_values, other_values, area_prior: float) -> tuple:
    """:func:`_components_numpy` of tensor curves, on their device (the same float32 operations)."""
    t = curves.thresholds
    device = t.device
    prior = (curves.area < torch.tensor(area_prior, dtype=torch.float32)).float()
    edge = curves.edge.float()
    same = torch.sort(torch.as_tensor(same_values).to(device=device, dtype=t.dtype)).values
    count = torch.searchsorted(same, t, right=True).float()
    pos = count / np.float32(len(same)) if len(same) else torch.ones(len(t), device=device)
    others = torch.as_tensor(other_values).to(device=device, dtype=t.dtype)
    lowest_other = torch.cat([curves.maximum.reshape(1).to(t.dtype), others]).min()
    neg = (t < lowest_other).float()
    return prior, edge, pos, neg
