"""The minimax flood fill: the smallest flood level at which a pixel joins the prompt's region.

:func:`flood_fill` takes the array it is given and picks one of two kernels of one definition:
numpy in, numpy out (a priority flood compiled with numba, for the CPU), or a torch tensor on
any device (:func:`flood_fill_torch`: parallel relaxation, for the GPU). Both equal the plain
minimax definition (tests); :func:`flood_fill_reference` is scikit-image's reconstruction by
erosion, kept as the independent check.
"""

from __future__ import annotations

import numba
import numpy as np
import torch
import torch.nn.functional as F
from skimage.morphology import reconstruction

_FOUR_CONNECTED = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], dtype=bool)


def flood_fill(markov_map, seed: tuple[int, int]):
    """Minimum flood threshold of every pixel, seen from a seed pixel.

    ``value(p) = min over 4-connected paths s -> p of max over the path of |M(q) - M(s)|``, with
    ``value(s) = 0``. The authors compute it with a priority-queue flood
    (``flood_fill_with_min_threshold``); so does this one, compiled with numba, and it floods
    plateaus (neighbours at or below the current level) with a stack instead of the heap. The
    differences ``|M - M(s)|`` are taken in the map's own dtype, as theirs are.

    Parameters
    ----------
    markov_map : numpy.ndarray or torch.Tensor
        (H, W) float map; a tensor is flooded by :func:`flood_fill_torch` on its device.
    seed : tuple of int
        (row, column) of the prompt pixel.

    Returns
    -------
    numpy.ndarray or torch.Tensor
        (H, W) flood thresholds of the map's kind, in its float dtype (float64 for other
        dtypes), 0 at the seed.
    """
    if isinstance(markov_map, torch.Tensor):
        return flood_fill_torch(markov_map, seed)
    cost = np.abs(markov_map - markov_map[seed])
    if cost.dtype.kind != "f":
        cost = cost.astype(np.float64)
    cost = np.ascontiguousarray(cost)
    return _priority_flood(cost, _order_keys(cost), int(seed[0]), int(seed[1]))


def _order_keys(cost: np.ndarray) -> np.ndarray:
    """uint32 keys in the order of the (non-negative) costs: a float32's own bits, which sort as
    the values do; for other dtypes the rank of the value among the distinct ones."""
    if cost.dtype == np.float32:
        return cost.view(np.uint32)  # |x| is never -0.0
    return np.unique(cost, return_inverse=True)[1].reshape(cost.shape).astype(np.uint32)


def flood_fill_reference(markov_map: np.ndarray, seed: tuple[int, int]) -> np.ndarray:
    """:func:`flood_fill` as a grey-scale reconstruction by erosion (scikit-image), for tests.

    The minimax path problem is exactly a reconstruction by erosion of a marker that is 0 at
    the seed (and maximal elsewhere) under the mask ``|M - M(s)|``.
    """
    cost = np.abs(markov_map - markov_map[seed]).astype(np.float64)
    marker = np.full_like(cost, cost.max())
    marker[seed] = 0.0  # equals cost[seed], so the marker stays >= the mask everywhere
    return reconstruction(marker, cost, method="erosion", footprint=_FOUR_CONNECTED)


def flood_fill_torch(markov_map: torch.Tensor, seed: tuple[int, int], check_every: int = 16) -> torch.Tensor:
    """:func:`flood_fill`'s torch kernel, on the map's device (the GPU path): the same values.

    Relaxes ``value = max(cost, min(value, min over the 4 neighbours))`` from ``value = inf``
    (0 at the seed) until nothing changes: every step is two pooling and three element-wise kernels,
    and the number of steps is the longest optimal path (a few hundred to a few thousand
    pixels), checked every ``check_every`` steps (a check costs a device synchronisation).

    Parameters
    ----------
    markov_map : torch.Tensor
        (H, W) float map.
    seed : tuple of int
        (row, column) of the prompt pixel.

    Returns
    -------
    torch.Tensor
        (H, W) flood thresholds in the map's dtype, 0 at the seed.
    """
    row, col = int(seed[0]), int(seed[1])
    cost = (markov_map - markov_map[row, col]).abs()
    value = torch.full_like(cost, float("inf"))
    value[row, col] = 0.0
    while True:
        before = value
        for _ in range(check_every):
            # the smallest of a pixel and its 4 neighbours: two 1-D max pools of -value (a 3 x 3
            # pool would take the diagonals too); padding counts as -inf, i.e. no neighbour
            negative = (-value)[None]
            rows = F.max_pool2d(negative, (1, 3), stride=1, padding=(0, 1))
            cols = F.max_pool2d(negative, (3, 1), stride=1, padding=(1, 0))
            value = torch.maximum(cost, torch.maximum(rows, cols)[0].neg_())
            value[row, col] = 0.0
        if torch.equal(value, before):
            return value


@numba.njit(cache=True, nogil=True)
def _priority_flood(cost, keys, seed_row, seed_col):  # pragma: no cover - compiled
    """The priority flood: the heap holds one 64-bit integer per entry, a pixel's key above its
    index, so a comparison is one integer compare (25 to 35 % faster than a float key and a
    pixel array side by side, 512 x 512 maps). ``keys`` order the pixels as ``cost`` does."""
    height, width = cost.shape
    n = height * width
    flat = cost.ravel()
    flat_keys = keys.ravel()
    out = np.empty(n, dtype=cost.dtype)
    done = np.zeros(n, dtype=np.bool_)
    heap = np.empty(n, dtype=np.uint64)
    stack = np.empty(n, dtype=np.int64)
    index_bits = np.uint64(0xFFFFFFFF)
    seed = seed_row * width + seed_col
    out[seed] = 0.0
    done[seed] = True
    heap[0], size = np.uint64(seed), 1  # the seed's key counts as 0: it is popped first
    while size > 0:
        pixel = np.int64(heap[0] & index_bits)
        level, level_key = out[pixel], np.uint32(heap[0] >> np.uint64(32))
        size -= 1
        if size > 0:  # sift the last entry down from the root
            item, j = heap[size], 0
            while True:
                child = 2 * j + 1
                if child >= size:
                    break
                if child + 1 < size and heap[child + 1] < heap[child]:
                    child += 1
                if heap[child] < item:
                    heap[j] = heap[child]
                    j = child
                else:
                    break
            heap[j] = item
        stack[0], top = pixel, 1
        while top > 0:
            top -= 1
            p = stack[top]
            r = p // width
            c = p - r * width
            for d in range(4):
                if d == 0:
                    if r == 0:
                        continue
                    q = p - width
                elif d == 1:
                    if r == height - 1:
                        continue
                    q = p + width
                elif d == 2:
                    if c == 0:
                        continue
                    q = p - 1
                else:
                    if c == width - 1:
                        continue
                    q = p + 1
                if done[q]:
                    continue
                done[q] = True
                if flat_keys[q] <= level_key:  # reached at this level: flood on without the heap
                    out[q] = level
                    stack[top] = q
                    top += 1
                else:
                    out[q] = flat[q]
                    item = (np.uint64(flat_keys[q]) << np.uint64(32)) | np.uint64(q)
                    j = size
                    size += 1
                    while j > 0:
                        parent = (j - 1) // 2
                        if heap[parent] > item:
                            heap[j] = heap[parent]
                            j = parent
                        else:
                            break
                    heap[j] = item
    return out.reshape(height, width)
