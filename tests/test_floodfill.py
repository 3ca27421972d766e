import numpy as np
import pytest
from scipy import ndimage

from m2n2.floodfill import flood_fill


def brute_force_minimax(markov_map: np.ndarray, seed) -> np.ndarray:
    """Smallest level t at which a pixel is 4-connected to the seed within {|M - M(s)| <= t}."""
    cost = np.abs(markov_map - markov_map[seed])
    result = np.full(cost.shape, np.inf)
    for level in np.unique(cost):
        components, _ = ndimage.label(cost <= level)  # 4-connected by default
        joined = components == components[seed]
        result[joined & np.isinf(result)] = level
    return result


@pytest.mark.parametrize("seed_value", range(6))
def test_flood_fill_equals_brute_force_minimax(seed_value):
    rng = np.random.default_rng(seed_value)
    markov_map = rng.random((9, 11))
    seed = (int(rng.integers(9)), int(rng.integers(11)))
    np.testing.assert_allclose(flood_fill(markov_map, seed), brute_force_minimax(markov_map, seed))


def test_flood_fill_needs_a_path_not_just_a_similar_value():
    # A pixel equal to the seed's value but behind a high wall gets the wall's height.
    m = np.zeros((5, 5))
    m[:, 2] = 0.9
    out = flood_fill(m, (2, 0))
    assert out[2, 0] == 0 and out[2, 1] == 0
    assert out[2, 4] == pytest.approx(0.9)
