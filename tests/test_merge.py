import numpy as np
import pytest

import torch

from m2n2.merge import merge_maps


def plain_merge(maps, thresholds, labels, pixels):
    """Per pixel: the first nearest click by M_k / max(lambda_k, 1e-7); its label if within 1."""
    k_count, height, width = maps.shape
    mask = np.zeros((height, width), bool)
    for y in range(height):
        for x in range(width):
            d = [np.float32(maps[k, y, x]) / np.float32(max(thresholds[k], 1e-7)) for k in range(k_count)]
            nearest = min(range(k_count), key=lambda k: (d[k], k))
            mask[y, x] = bool(labels[nearest]) and d[nearest] <= 1
    for (row, col), label in zip(pixels, labels):
        mask[row, col] = bool(label)
    return mask


@pytest.mark.parametrize("seed", range(4))
def test_merge_equals_per_pixel_definition(seed):
    rng = np.random.default_rng(seed)
    maps = (np.round(rng.random((3, 9, 11)) * 8) / 8).astype(np.float32)  # ties between maps
    thresholds = np.array([0.5, 0.25, 0.0], dtype=np.float32)[rng.permutation(3)]
    labels = np.array([1, 0, 1])
    pixels = rng.integers(0, (9, 11), size=(3, 2))
    mask, _, _ = merge_maps(maps, thresholds, labels, pixels)
    np.testing.assert_array_equal(mask, plain_merge(maps, thresholds, labels, pixels))
    on_device, distance, nearest = merge_maps(torch.from_numpy(maps), thresholds, labels, pixels)
    assert all(isinstance(x, torch.Tensor) for x in (on_device, distance, nearest))  # the torch kernel ran
    np.testing.assert_array_equal(on_device.numpy(), plain_merge(maps, thresholds, labels, pixels))
    np.testing.assert_array_equal(distance.numpy(), merge_maps(maps, thresholds, labels, pixels)[1])
    np.testing.assert_array_equal(nearest.numpy(), merge_maps(maps, thresholds, labels, pixels)[2])


def test_merge_on_a_shared_pixel_takes_the_later_label_in_both_paths():
    maps = np.random.default_rng(0).random((2, 4, 4)).astype(np.float32)
    pixels = np.array([[1, 1], [1, 1]])
    for labels in ([1, 0], [0, 1]):
        assert merge_maps(maps, [0.5, 0.5], labels, pixels)[0][1, 1] == bool(labels[1])
        assert bool(merge_maps(torch.from_numpy(maps), [0.5, 0.5], labels, pixels)[0][1, 1]) == bool(labels[1])


def test_merge_of_unstacked_maps_on_two_threads_equals_the_stacked_merge_on_one():
    """The predictor hands its maps over as a list (no stacked copy) and a click may give the merge
    two threads (the rows split between them): the same mask, distances and nearest points."""
    from m2n2.threads import using_threads
    rng = np.random.default_rng(5)
    maps = (np.round(rng.random((5, 37, 23)) * 6) / 6).astype(np.float32)   # ties between maps
    maps[2, 3, 4] = np.nan
    thresholds, labels = np.array([0.5, 0.2, 0.0, 1.0, 0.33], np.float32), np.array([1, 0, 1, 1, 0])
    pixels = rng.integers(0, (37, 23), size=(5, 2))
    stacked = merge_maps(maps, thresholds, labels, pixels)
    np.testing.assert_array_equal(stacked[0], plain_merge(maps, thresholds, labels, pixels))
    for threads in (1, 2):
        with using_threads(threads):
            listed = merge_maps(list(maps), thresholds, labels, pixels)
        for ours, theirs in zip(listed, stacked):
            np.testing.assert_array_equal(ours, theirs)
    maps[2, 3, 4] = 0.5  # (torch's min passes a NaN on where the compiled pass keeps the first map's)
    on_device = merge_maps([torch.from_numpy(m) for m in maps], thresholds, labels, pixels)
    np.testing.assert_array_equal(on_device[1].numpy(), merge_maps(maps, thresholds, labels, pixels)[1])
