"""Truncated nearest-neighbour merge of per-point Markov-maps into one mask."""

from __future__ import annotations

import numba
import numpy as np
import torch

from .threads import split_rows

_MIN_THRESHOLD = 1e-7  # a threshold of 0 would divide by zero; it keeps the seed's plateau


def merge_maps(maps, thresholds, labels, pixels) -> tuple:
    """Combine the points' maps: each pixel takes the label of its nearest point, if close enough.

    ``d_k = M_k / lambda_k``; the nearest point is ``k* = argmin_k d_k(p)``; a pixel is foreground
    iff ``label[k*] == 1`` and ``d_{k*}(p) <= 1``. Every prompt pixel takes its own label.

    Parameters
    ----------
    maps : numpy.ndarray, torch.Tensor or sequence of them
        (K, H, W) Markov-maps, or K maps of (H, W) (not stacked: a click's maps need no copy).
        Numpy is merged by a compiled pass per map, a tensor in torch on its device (the same
        results).
    thresholds : array-like
        (K,) each map's threshold lambda_k.
    labels : array-like
        (K,) 1 for foreground points, 0 for background points.
    pixels : array-like
        (K, 2) integer (row, column) of each prompt pixel.

    Returns
    -------
    mask : numpy.ndarray or torch.Tensor
        (H, W) bool, of the maps' kind (and device).
    distance : numpy.ndarray or torch.Tensor
        (H, W) float32 ``min_k d_k``.
    nearest : numpy.ndarray or torch.Tensor
        (H, W) int index k*.
    """
    if isinstance(maps, torch.Tensor) or isinstance(maps[0], torch.Tensor):
        return _merge_torch(maps if isinstance(maps, torch.Tensor) else torch.stack(list(maps)),
                            thresholds, labels, pixels)
    # float32, as the authors divide: a pixel on its map's threshold gets exactly 1
    thresholds = np.maximum(np.asarray(thresholds, dtype=np.float32), np.float32(_MIN_THRESHOLD))
    labels = np.asarray(labels).astype(bool)
    maps = [np.asarray(m, dtype=np.float32) for m in maps]
    height, width = maps[0].shape
    mask = np.empty((height, width), dtype=np.bool_)
    distance = np.empty((height, width), dtype=np.float32)
    nearest = np.empty((height, width), dtype=np.int64)

    def rows(first, stop):
        for k, markov_map in enumerate(maps):
            _nearer(markov_map[first:stop], thresholds[k], k, distance[first:stop], nearest[first:stop])
        _labelled(distance[first:stop], nearest[first:stop], labels, mask[first:stop])

    # two threads where the click has them: each row is its own, the same bits either way
    split_rows(rows, height // 2, height)
    for (row, col), label in zip(pixels, labels):
        mask[row, col] = label
    return mask, distance, nearest


@numba.njit(cache=True, nogil=True)
def _nearer(markov_map, threshold, k, distance, nearest):  # pragma: no cover - compiled
    """Map ``k``'s turn of ``argmin_k maps[k] / thresholds[k]`` (the first minimum, as numpy's
    argmin), in place: map 0 sets ``distance`` and ``nearest``, each later one takes the pixels
    where it is strictly nearer. One map at a time, so that the maps are never stacked (a copy of
    every click's map at every click: 5 ms at the astronaut's 20th click)."""
    height, width = markov_map.shape
    for y in range(height):
        for x in range(width):
            value = markov_map[y, x] / threshold
            if k == 0:
                distance[y, x], nearest[y, x] = value, 0
            elif value < distance[y, x]:
                distance[y, x], nearest[y, x] = value, k


@numba.njit(cache=True, nogil=True)
def _labelled(distance, nearest, labels, mask):  # pragma: no cover - compiled
    """The nearest point's label, where it is within distance 1."""
    height, width = distance.shape
    for y in range(height):
        for x in range(width):
            mask[y, x] = labels[nearest[y, x]] and distance[y, x] <= 1.0


def _merge_torch(maps: torch.Tensor, thresholds, labels, pixels) -> tuple:
    """:func:`merge_maps` of a tensor, in torch on its device (the GPU path): the same results as
    the compiled pass, as tensors there."""
    device = maps.device
    thresholds = torch.as_tensor(np.asarray(thresholds, dtype=np.float32), device=device)
    thresholds = thresholds.clamp_min(np.float32(_MIN_THRESHOLD))
    scaled = maps.float() / thresholds[:, None, None]
    distance, nearest = torch.min(scaled, dim=0)  # the first minimum, as numpy's argmin
    labels_host = np.asarray(labels).astype(bool)
    labels = torch.as_tensor(labels_host, device=device)
    mask = labels[nearest] & (distance <= 1.0)
    for (row, col), label in zip(np.asarray(pixels, dtype=np.int64).reshape(-1, 2), np.asarray(labels_host)):
        mask[int(row), int(col)] = bool(label)  # one at a time: a later point wins a shared pixel
    return mask, distance, nearest
