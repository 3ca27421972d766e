import numpy as np
import pytest
from scipy import ndimage

from m2n2.config import M2N2Config
from m2n2.threshold import boundary_pixels, score_thresholds, sobel_magnitude, threshold_curves


def smooth_map(seed=0, shape=(14, 17)):
    rng = np.random.default_rng(seed)
    m = np.round(ndimage.gaussian_filter(rng.random(shape), 2) * 40) / 40  # with ties
    return (m - m.min()) / (m.max() - m.min())


@pytest.mark.parametrize("seed", range(3))
def test_curves_equal_per_threshold_brute_force(seed):
    m = smooth_map(seed)
    curves = threshold_curves(m)
    gradient = sobel_magnitude(m)
    assert np.all(np.diff(curves.thresholds) > 0) and curves.thresholds[-1] < m.max()
    for i, lam in enumerate(curves.thresholds):
        segment = m <= lam
        boundary = boundary_pixels(segment)
        assert curves.area[i] == pytest.approx(segment.mean())
        assert curves.edge[i] == pytest.approx(gradient[boundary].mean() if boundary.any() else 0.0)


def test_negative_point_inside_zeroes_s_neg():
    m = smooth_map(1)
    curves = threshold_curves(m)
    other = np.array([0.5])
    scores = score_thresholds(curves, np.array([0.0]), other, M2N2Config())
    inside = curves.thresholds >= 0.5
    assert np.all(scores.score_neg[inside] == 0) and np.all(scores.score_neg[~inside] == 1)
    assert np.all(scores.score[inside] == 0)
    assert scores.threshold < 0.5


def test_area_prior_and_positive_fraction():
    m = smooth_map(2)
    curves = threshold_curves(m)
    scores = score_thresholds(curves, np.array([0.0, 0.3, 0.6]), np.array([]), M2N2Config(area_prior=0.4))
    np.testing.assert_array_equal(scores.score_prior, curves.area < 0.4)
    expected_pos = ((np.array([0.0, 0.3, 0.6])[:, None] <= curves.thresholds).mean(axis=0))
    np.testing.assert_allclose(scores.score_pos, expected_pos)
    assert scores.score[scores.index] == scores.score.max()
    assert curves.area[scores.index] < 0.4


def test_switching_a_score_off_removes_it_from_the_product():
    m = smooth_map(0)
    curves = threshold_curves(m)
    on = score_thresholds(curves, np.array([0.0]), np.array([]), M2N2Config())
    off = score_thresholds(curves, np.array([0.0]), np.array([]), M2N2Config(use_edge=False))
    np.testing.assert_allclose(off.score, on.score_prior * on.score_pos * on.score_neg)
    nothing = score_thresholds(curves, np.array([0.0]), np.array([]),
                               M2N2Config(use_prior=False, use_edge=False, use_pos=False, use_neg=False))
    assert nothing.threshold == 0.5
