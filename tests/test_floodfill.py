import numpy as np
import pytest
import torch
from scipy import ndimage

from m2n2.floodfill import flood_fill, flood_fill_reference, flood_fill_torch


def torch_flood_fill(markov_map, seed):
    """The device path, run on CPU tensors (the same torch code a GPU runs)."""
    return flood_fill_torch(torch.from_numpy(markov_map), seed, check_every=3).numpy()


IMPLEMENTATIONS = [flood_fill, flood_fill_reference, torch_flood_fill]


def brute_force_minimax(markov_map: np.ndarray, seed) -> np.ndarray:
    """Smallest level t at which a pixel is 4-connected to the seed within {|M - M(s)| <= t}."""
    cost = np.abs(markov_map - markov_map[seed])
    result = np.full(cost.shape, np.inf)
    for level in np.unique(cost):
        components, _ = ndimage.label(cost <= level)  # 4-connected by default
        joined = components == components[seed]
        result[joined & np.isinf(result)] = level
    return result


@pytest.mark.parametrize("fill", IMPLEMENTATIONS)
@pytest.mark.parametrize("seed_value", range(6))
def test_flood_fill_equals_brute_force_minimax(fill, seed_value):
    rng = np.random.default_rng(seed_value)
    markov_map = rng.random((9, 11))
    seed = (int(rng.integers(9)), int(rng.integers(11)))
    np.testing.assert_allclose(fill(markov_map, seed), brute_force_minimax(markov_map, seed))


@pytest.mark.parametrize("fill", IMPLEMENTATIONS)
@pytest.mark.parametrize("seed_value", range(3))
def test_flood_fill_on_plateaus_equals_brute_force(fill, seed_value):
    # Few distinct float32 values: wide plateaus, where the priority flood skips its heap.
    rng = np.random.default_rng(seed_value)
    markov_map = (rng.integers(0, 5, (23, 17)) / 4).astype(np.float32)
    seed = (int(rng.integers(23)), int(rng.integers(17)))
    expected = brute_force_minimax(markov_map, seed)
    np.testing.assert_array_equal(np.asarray(fill(markov_map, seed), np.float64), expected)


def test_compiled_flood_equals_reconstruction_on_a_large_smooth_map():
    rng = np.random.default_rng(7)
    low = torch.from_numpy(rng.random((16, 16), dtype=np.float32))
    markov_map = torch.nn.functional.interpolate(low[None, None], size=(150, 210), mode="bilinear")[0, 0].numpy()
    for seed in [(0, 0), (75, 100), (149, 209)]:
        fast = flood_fill(markov_map, seed)
        np.testing.assert_array_equal(fast, flood_fill_reference(markov_map, seed))
        assert fast.dtype == np.float32  # the map's dtype, as the torch kernel's
        np.testing.assert_array_equal(torch_flood_fill(markov_map, seed), fast)
        on_device = flood_fill(torch.from_numpy(markov_map), seed)  # a tensor picks the torch kernel
        assert isinstance(on_device, torch.Tensor)
        np.testing.assert_array_equal(on_device.numpy(), fast)


@pytest.mark.parametrize("fill", IMPLEMENTATIONS)
def test_flood_fill_needs_a_path_not_just_a_similar_value(fill):
    # A pixel equal to the seed's value but behind a high wall gets the wall's height.
    m = np.zeros((5, 5))
    m[:, 2] = 0.9
    out = fill(m, (2, 0))
    assert out[2, 0] == 0 and out[2, 1] == 0
    assert out[2, 4] == pytest.approx(0.9)
