import numpy as np
import pytest
import torch
from scipy import ndimage

from m2n2.config import M2N2Config
from m2n2.threshold import (choose_threshold, quantised_gradient, score_thresholds, stable_order,
                            threshold_curves)


def torch_curves(m):
    """The torch kernel on CPU tensors, its curves back as numpy (the same torch code a GPU runs)."""
    curves = threshold_curves(torch.from_numpy(np.asarray(m)))
    assert isinstance(curves.edge, torch.Tensor)  # a tensor picks the torch kernel
    curves.thresholds, curves.area, curves.edge = (x.numpy() for x in (curves.thresholds, curves.area, curves.edge))
    curves.maximum = float(curves.maximum)
    return curves


def smooth_map(seed=0, shape=(14, 17)):
    """A smooth random map with plateaus; dyadic values keep every Sobel sum exact."""
    rng = np.random.default_rng(seed)
    m = np.round(ndimage.gaussian_filter(rng.random(shape), 2) * 40)  # with ties
    return (m - m.min()) / 64.0


def plain_gradient(m):
    """Sobel magnitude with mirror padding (d c b | a b c d), over its max, truncated to 1/1024."""
    p = np.pad(m.astype(np.float64), 1, mode="reflect")
    kx = np.array([[1, 0, -1], [2, 0, -2], [1, 0, -1]], dtype=np.float64)
    g = np.zeros(m.shape)
    for y in range(m.shape[0]):
        for x in range(m.shape[1]):
            patch = p[y:y + 3, x:x + 3]
            g[y, x] = np.hypot((patch * kx).sum(), (patch * kx.T).sum())
    return np.floor(g / g.max() * 1024).astype(np.int64)


def plain_candidates(m):
    """The authors' candidates, one at a time: the first k + 1 pixels of a stable sort."""
    flat = m.ravel()
    order = sorted(range(flat.size), key=lambda i: flat[i])  # Python's sort is stable
    gradient = plain_gradient(m)
    thresholds, edges = [], []
    for k in range(flat.size - 1):
        segment = np.zeros(flat.size, bool)
        segment[order[:k + 1]] = True
        segment = segment.reshape(m.shape)
        outside_touching = np.zeros(m.shape, bool)  # outside pixels with a 4-neighbour inside
        for y in range(m.shape[0]):
            for x in range(m.shape[1]):
                if not segment[y, x]:
                    outside_touching[y, x] = any(
                        0 <= y + dy < m.shape[0] and 0 <= x + dx < m.shape[1] and segment[y + dy, x + dx]
                        for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)))
        thresholds.append(flat[order[k]])
        edges.append(gradient[outside_touching].mean())
    return np.array(thresholds), np.array(edges)


def plain_choice(m, same_points, other_points, area_prior=0.4):
    """Score = prior(rank) * edge * pos * neg for every candidate; the first best wins."""
    thresholds, edges = plain_candidates(m)
    n = len(thresholds)
    best, best_score = None, -1.0
    for k in range(n):
        t = thresholds[k]
        prior = 1.0 if k / (n - 1) < area_prior else 0.0
        pos = np.mean([m[p] <= t for p in same_points])
        neg = 1.0 if t < min([m.max()] + [m[p] for p in other_points]) else 0.0
        score = prior * edges[k] * pos * neg
        if score > best_score:
            best, best_score = k, score
    return best, thresholds[best]


@pytest.mark.parametrize("seed", range(3))
def test_quantised_gradient_equals_plain_sobel(seed):
    m = smooth_map(seed)
    np.testing.assert_array_equal(quantised_gradient(m), plain_gradient(m))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("curves_of", [threshold_curves, torch_curves])
@pytest.mark.parametrize("seed", range(3))
def test_curves_equal_per_candidate_brute_force(seed, curves_of, dtype):
    m = smooth_map(seed).astype(dtype)
    curves = curves_of(m)
    thresholds, edges = plain_candidates(m)
    np.testing.assert_array_equal(curves.thresholds, thresholds)
    np.testing.assert_allclose(curves.edge, edges, rtol=1e-6)
    np.testing.assert_allclose(curves.area, np.arange(len(thresholds)) / (len(thresholds) - 1))
    assert curves.maximum == m.max()


@pytest.mark.parametrize("seed", range(3))
def test_choice_equals_brute_force(seed):
    m = smooth_map(seed)
    rng = np.random.default_rng(seed)
    pixels = [tuple(p) for p in rng.integers(0, m.shape, size=(4, 2))]
    same, other = pixels[:2], pixels[2:] if seed else []
    curves = threshold_curves(m)
    scores = score_thresholds(curves, np.array([m[p] for p in same]), np.array([m[p] for p in other]),
                              M2N2Config())
    index, threshold = plain_choice(m, same, other)
    assert (scores.index, scores.threshold) == (index, threshold)
    on_device = score_thresholds(threshold_curves(torch.from_numpy(m)), torch.tensor([m[p] for p in same]),
                                 torch.tensor([m[p] for p in other], dtype=torch.float64), M2N2Config())
    assert (on_device.index, on_device.threshold) == (index, threshold)
    np.testing.assert_array_equal(on_device.score.numpy(), scores.score)


def plain_components(curves, same, other, area_prior):
    """The four component scores restated per candidate's comparison, as the authors write them."""
    t = curves.thresholds
    prior = (curves.area < np.float32(area_prior)).astype(np.float32)
    same = np.asarray(same, dtype=t.dtype)
    count = np.array([(same <= v).sum() for v in t], dtype=np.float32)
    pos = count / np.float32(len(same)) if len(same) else np.ones(len(t), np.float32)
    lowest = np.asarray(min([curves.maximum, *np.asarray(other, dtype=t.dtype).tolist()]), dtype=t.dtype)
    return prior, curves.edge.astype(np.float32), pos, (t < lowest).astype(np.float32)


def many_cases():
    """Maps with ties and plateaus (float32 and float64), label sets from 0 to 6 values, and
    every switch and a range of area priors."""
    rng = np.random.default_rng(7)
    for case in range(60):
        shape = (9, 13) if case % 3 else (40, 31)
        m = smooth_map(case, shape) if case % 2 else np.round(rng.random(shape) ** 3 * 50) / 50
        m = m.astype(np.float32 if case % 4 < 2 else np.float64)
        flat = m.ravel()
        same = flat[rng.integers(0, flat.size, 1 + case % 4)]
        other = flat[rng.integers(0, flat.size, case % 3)]
        if case % 5 == 0:  # an other-label value below every same-label one: the negative prefix is short
            other = np.append(other, same.min())
        switches = [bool(b) for b in rng.integers(0, 2, 4)] if case % 6 else [True] * 4
        config = M2N2Config(area_prior=float(rng.choice([0.05, 0.4, 0.77, 1.0])), use_prior=switches[0],
                            use_edge=switches[1], use_pos=switches[2], use_neg=switches[3])
        yield m, same, other, config


def test_components_equal_their_per_candidate_restatement():
    from m2n2.threshold import _components_numpy
    for m, same, other, config in many_cases():
        curves = threshold_curves(m)
        for got, want in zip(_components_numpy(curves, same, other, config.area_prior),
                             plain_components(curves, same, other, config.area_prior)):
            assert got.dtype == np.float32
            np.testing.assert_array_equal(got, want)


def test_choose_threshold_equals_the_whole_scoring():
    chosen_late = 0
    for m, same, other, config in many_cases():
        curves = threshold_curves(m)
        full = score_thresholds(curves, same, other, config)
        chosen = choose_threshold(curves, same, other, config)
        assert (chosen.index, chosen.threshold) == (full.index, full.threshold)
        assert chosen.score is None and chosen.score_pos is None
        on_device = choose_threshold(threshold_curves(torch.from_numpy(m)), torch.from_numpy(same),
                                     torch.from_numpy(other), config)
        assert (on_device.index, on_device.threshold) == (full.index, full.threshold)
        chosen_late += full.index > 0
    assert chosen_late > 30  # most cases choose past candidate 0 (not only the all-zero fallback)


def test_choose_threshold_equals_brute_force():
    for seed in range(3):
        m = smooth_map(seed)
        rng = np.random.default_rng(seed)
        pixels = [tuple(p) for p in rng.integers(0, m.shape, size=(4, 2))]
        same, other = pixels[:2], pixels[2:] if seed else []
        chosen = choose_threshold(threshold_curves(m), np.array([m[p] for p in same]),
                                  np.array([m[p] for p in other]), M2N2Config())
        assert (chosen.index, chosen.threshold) == plain_choice(m, same, other)


def test_stable_order_equals_stable_argsort_on_float32():
    rng = np.random.default_rng(0)
    values = np.round(rng.normal(size=5000) * 8).astype(np.float32) / 8  # many ties, both signs
    values[:3] = [-0.0, 0.0, np.float32(np.inf)]
    values[3:5] = [-np.inf, np.float32(1e-42)]  # a subnormal
    np.testing.assert_array_equal(stable_order(values), np.argsort(values, kind="stable"))
    values[7] = np.nan
    np.testing.assert_array_equal(stable_order(values), np.argsort(values, kind="stable"))



@pytest.mark.parametrize("kind", ["continuous", "one_exponent", "constant", "empty", "single"])
def test_stable_order_equals_stable_argsort_on_maps_of_every_kind(kind):
    # The radix sort skips a pass whose digit is the same for every key (values in [0.5, 1) share
    # the exponent and sign bits): each shape of key set takes another mix of passes.
    rng = np.random.default_rng(3)
    values = {"continuous": rng.random(70000, dtype=np.float32) ** 3,
              "one_exponent": np.float32(0.5) + rng.integers(0, 64, 70000).astype(np.float32) / 256,
              "constant": np.full(1000, 0.25, np.float32),
              "empty": np.zeros(0, np.float32),
              "single": np.array([3.0], np.float32)}[kind]
    np.testing.assert_array_equal(stable_order(values), np.argsort(values, kind="stable"))
    np.testing.assert_array_equal(stable_order(-values), np.argsort(-values, kind="stable"))

def test_plateau_candidates_are_ranks_not_values():
    # A plateau of a quarter of the image below a ramp: the plateau value appears once per pixel,
    # and the prior judges ranks, so the plateau's threshold passes it although its whole
    # segment (M <= value) would not.
    m = np.tile(np.linspace(0.0, 1.0, 8), (8, 1))
    m[:, :4] = 0.25
    curves = threshold_curves(m)
    plateau = curves.thresholds == 0.25
    assert np.count_nonzero(plateau) == 32
    scores = score_thresholds(curves, np.array([0.25]), np.array([]), M2N2Config(area_prior=0.4))
    assert scores.score_prior[plateau].sum() > 0
    # exactly the plateau candidates whose rank k / (T - 1) is below the prior pass (the first
    # 25 of 32), although their whole segment M <= 0.25, half the image, is above it
    rank = np.flatnonzero(plateau) / (len(curves.thresholds) - 1)
    np.testing.assert_array_equal(scores.score_prior[plateau], (rank < 0.4).astype(np.float32))
    assert 0 < np.count_nonzero(scores.score_prior[plateau]) < 32


def test_negative_point_inside_zeroes_s_neg():
    m = smooth_map(1)
    curves = threshold_curves(m)
    other = np.median(m)
    scores = score_thresholds(curves, np.array([0.0]), np.array([other]), M2N2Config())
    inside = curves.thresholds >= other
    assert inside.any() and np.all(scores.score_neg[inside] == 0) and np.all(scores.score_neg[~inside] == 1)
    assert np.all(scores.score[inside] == 0)
    assert scores.threshold < other


def test_candidates_at_the_maximum_fail_s_neg_without_negatives():
    m = smooth_map(2)
    curves = threshold_curves(m)
    scores = score_thresholds(curves, np.array([0.0]), np.array([]), M2N2Config())
    at_max = curves.thresholds == m.max()
    assert at_max.any() and np.all(scores.score_neg[at_max] == 0) and np.all(scores.score_neg[~at_max] == 1)


def test_positive_fraction_counts_points_at_or_below():
    m = smooth_map(2)
    curves = threshold_curves(m)
    values = np.quantile(m, [0.0, 0.3, 0.6])
    scores = score_thresholds(curves, values, np.array([]), M2N2Config())
    np.testing.assert_allclose(scores.score_pos, (values[:, None] <= curves.thresholds).mean(axis=0))
    np.testing.assert_array_equal(scores.score_prior, curves.area < 0.4)


def test_switching_a_score_off_removes_it_from_the_product():
    m = smooth_map(0)
    curves = threshold_curves(m)
    on = score_thresholds(curves, np.array([0.0]), np.array([]), M2N2Config())
    off = score_thresholds(curves, np.array([0.0]), np.array([]), M2N2Config(use_edge=False))
    np.testing.assert_allclose(off.score, on.score_prior * on.score_pos * on.score_neg)
    no_scores = M2N2Config(use_prior=False, use_edge=False, use_pos=False, use_neg=False)
    nothing = score_thresholds(curves, np.array([0.0]), np.array([]), no_scores)
    assert nothing.threshold == 0.5
    assert curves.maximum < 0.5 and nothing.index == len(curves.thresholds) - 1  # the last candidate
    scaled = threshold_curves(m / m.max())
    nothing = score_thresholds(scaled, np.array([0.0]), np.array([]), no_scores)
    assert nothing.threshold == 0.5
    assert 0 < nothing.index < len(scaled.thresholds) - 1
    assert nothing.index == np.searchsorted(scaled.thresholds, 0.5)  # where 0.5 sits among the candidates


@pytest.mark.parametrize("switches", [{}, {"use_edge": False}, {"use_prior": False, "use_neg": False},
                                      {"use_prior": False, "use_edge": False, "use_pos": False, "use_neg": False}])
def test_both_kernels_score_alike_with_any_switches(switches):
    m = smooth_map(1).astype(np.float32)
    config = M2N2Config(**switches)
    same, other = np.array([m[2, 3], m[9, 9]]), np.array([m[12, 15]])
    on_host = score_thresholds(threshold_curves(m), same, other, config)
    on_device = score_thresholds(threshold_curves(torch.from_numpy(m)), torch.from_numpy(same),
                                 torch.from_numpy(other), config)
    assert isinstance(on_device.score, torch.Tensor)
    assert (on_device.index, on_device.threshold) == (on_host.index, on_host.threshold)
    for name in ("thresholds", "score", "score_prior", "score_edge", "score_pos", "score_neg"):
        np.testing.assert_array_equal(getattr(on_device, name).numpy(), getattr(on_host, name))

