import numpy as np
import pytest
import torch
from PIL import Image

from m2n2 import InputError, M2N2Config, M2N2Predictor, NotReadyError
from m2n2.merge import merge_maps
from synthetic import iou, random_attention, three_regions


@pytest.fixture
def scene():
    return three_regions()


@pytest.fixture
def predictor(scene):
    image, attention, _ = scene
    p = M2N2Predictor()
    p.set_attention(image, attention)
    return p


def test_one_positive_click_finds_its_region(predictor, scene):
    _, _, truth = scene
    out = predictor.predict([(10, 30)], [1])  # inside the left band (1/4 of the image)
    assert out.mask.shape == truth.shape and out.mask.dtype == bool
    assert iou(out.mask, truth == 0) >= 0.95


def test_negative_click_removes_a_wrongly_included_region(scene):
    image, attention, truth = scene
    p = M2N2Predictor(config=M2N2Config(area_prior=0.8))  # let the first click overshoot
    p.set_attention(image, attention)
    first = p.predict([(10, 30)], [1], threshold=1.0).mask  # everything
    assert first[truth == 2].mean() > 0.9
    second = p.predict([(10, 30), (90, 30)], [1, 0]).mask
    assert second[truth == 2].mean() < 0.05
    assert second[truth == 0].mean() > 0.9


def test_prediction_fields(predictor, scene):
    out = predictor.predict([(10, 30), (90, 5)], [1, 0])
    assert len(out.points) == 2
    for point in out.points:
        assert point.markov_map.shape == scene[0].shape[:2]
        assert point.markov_map.min() == 0 and point.markov_map.max() == pytest.approx(1)
        t = len(point.thresholds)
        for curve in (point.score, point.score_prior, point.score_edge, point.score_pos, point.score_neg):
            assert curve.shape == (t,)
        assert point.threshold == point.thresholds[point.threshold_index]
    assert out.distance.shape == out.nearest.shape == scene[0].shape[:2]
    assert {"markov", "upsample", "flood_fill", "scores", "merge", "total"} <= set(out.timings)
    assert out.points[0].markov_map[30, 10] == 0  # the map is 0 at its own point


def test_threshold_override_is_monotone(predictor):
    masks = [predictor.predict([(10, 30)], [1], threshold=t).mask for t in np.linspace(0, 1, 8)]
    for smaller, larger in zip(masks, masks[1:]):
        assert np.all(larger[smaller])  # positive point: a larger threshold only adds pixels
    assert masks[-1].sum() > masks[0].sum()
    neg = [predictor.predict([(10, 30), (50, 30)], [1, 0], threshold=t).mask for t in (0.1, 0.5, 0.9)]
    assert np.all(neg[0][neg[1]]) and np.all(neg[1][neg[2]])  # negative point: only removes


def test_cached_results_equal_a_fresh_predictor(scene):
    image, attention, _ = scene
    clicks = [((10, 30), 1), ((50, 10), 0), ((15, 50), 1), ((85, 60), 0)]
    cached = M2N2Predictor()
    cached.set_attention(image, attention)
    for k in range(1, len(clicks) + 1):
        pts, labels = zip(*clicks[:k])
        out = cached.predict(list(pts), list(labels))
        fresh = M2N2Predictor()
        fresh.set_attention(image, attention)
        ref = fresh.predict(list(pts), list(labels))
        np.testing.assert_array_equal(out.mask, ref.mask)
        # Batched and one-at-a-time matmuls may round the last bit differently (seen with one
        # thread), so the distance map is compared to float32 precision.
        np.testing.assert_allclose(out.distance, ref.distance, rtol=1e-5, atol=1e-6)
    assert cached.cached_points == len(clicks)
    again = cached.predict([p for p, _ in clicks], [l for _, l in clicks])
    np.testing.assert_array_equal(again.mask, out.mask)


def test_large_images_work_on_a_capped_copy_and_return_full_size(scene):
    image, attention, truth = scene
    big = np.asarray(Image.fromarray(image).resize((960, 640), Image.Resampling.NEAREST))
    big_truth = np.repeat(np.repeat(truth, 10, axis=0), 10, axis=1)
    p = M2N2Predictor(config=M2N2Config(max_side=200))
    p.set_attention(big, attention)
    assert max(p.image.shape[:2]) == 200 and p.original_size == (640, 960)
    out = p.predict([(100, 300)], [1])
    assert out.mask.shape == (640, 960)
    assert iou(out.mask, big_truth == 0) >= 0.95


def test_last_pixel_row_and_column_are_valid_points(predictor, scene):
    h, w = scene[0].shape[:2]
    assert predictor.predict([(w - 1, h - 1)], [1]).mask[h - 1, w - 1]


def test_image_formats_are_converted(scene):
    image, attention, truth = scene
    gray16 = (image.mean(axis=2) * 257).astype(np.uint16)
    rgba = np.dstack([image, np.full(image.shape[:2], 255, np.uint8)])
    for variant in (gray16, rgba, Image.fromarray(image)):
        p = M2N2Predictor()
        p.set_attention(variant, attention)
        assert p.image.shape == image.shape and p.image.dtype == np.uint8


def test_set_config_keeps_maps_for_score_changes_and_drops_them_otherwise(predictor):
    predictor.predict([(10, 30)], [1])
    predictor.set_config(predictor.config.replace(use_edge=False))
    assert predictor.cached_points == 1
    predictor.set_config(predictor.config.replace(rho=0.5))
    assert predictor.cached_points == 0
    before = predictor.operator.matrix()
    predictor.set_config(predictor.config.replace(temperature=1.0))
    assert not torch.allclose(before, predictor.operator.matrix())
    predictor.predict([(10, 30)], [1])


class KeepingBackbone:
    """A backbone that keeps (and hands out again) the tensor it returns, as a cache would."""

    def __init__(self, attention):
        self.attention = attention

    def extract(self, image):
        return self.attention


@pytest.mark.parametrize("torch_stages", [False, True])
def test_the_callers_attention_is_never_written(scene, torch_stages):
    image, attention, _ = scene
    attention = attention * 3.0  # rows that do not sum to 1: normalising in place would show
    copy = attention.clone()
    kept = KeepingBackbone(attention)
    from_backbone = M2N2Predictor(kept, torch_stages=torch_stages)
    from_backbone.set_image(image)
    assert torch.equal(copy, attention)
    from_backbone.predict([(10, 30), (90, 30)], [1, 0])
    from_backbone.set_config(from_backbone.config.replace(temperature=1.0))  # prepares again
    from_backbone.predict([(10, 30)], [1])
    given = M2N2Predictor(torch_stages=torch_stages)
    given.set_attention(image, attention)
    given.predict([(10, 30), (90, 30)], [1, 0])
    given.set_config(given.config.replace(temperature=1.0))
    given.predict([(10, 30)], [1])
    assert torch.equal(copy, attention) and torch.equal(kept.attention, copy)
    as_numpy = copy.numpy().copy()  # a numpy array is wrapped without a copy: still not written
    given.set_attention(image, as_numpy)
    np.testing.assert_array_equal(as_numpy, copy.numpy())
    again, twin = M2N2Predictor(kept), M2N2Predictor()  # the backbone's path and the given one agree
    again.set_image(image)
    twin.set_attention(image, copy)
    assert torch.equal(again.operator.transposed, twin.operator.transposed)


def test_merge_gives_prompt_pixels_their_own_label():
    maps = np.ones((2, 4, 4))
    maps[0, 0, 0] = maps[1, 3, 3] = 0
    mask, distance, nearest = merge_maps(maps, np.array([0.5, 0.5]), np.array([1, 0]), np.array([[0, 0], [3, 3]]))
    assert mask[0, 0] and not mask[3, 3] and mask.sum() == 1
    assert nearest[3, 3] == 1 and distance[0, 0] == 0


BAD_CALLS = [
    ("no points", lambda p: p.predict([], []), "at least one"),
    ("outside", lambda p: p.predict([(96, 10)], [1]), "outside"),
    ("negative coordinate", lambda p: p.predict([(-1, 10)], [1]), "outside"),
    ("label count", lambda p: p.predict([(10, 10), (20, 20)], [1]), "labels"),
    ("label value", lambda p: p.predict([(10, 10)], [2]), "labels"),
    ("nan point", lambda p: p.predict([(np.nan, 10)], [1]), "NaN"),
    ("bad shape", lambda p: p.predict([(1, 2, 3)], [1]), "shape"),
    ("threshold", lambda p: p.predict([(10, 10)], [1], threshold=1.5), "threshold"),
    ("attention shape", lambda p: p.set_attention(np.zeros((8, 8, 3), np.uint8), torch.ones(4, 4, 4, 5)), "shape"),
    ("negative attention", lambda p: p.set_attention(np.zeros((8, 8, 3), np.uint8), -random_attention(4)), "negative"),
    ("nan attention", lambda p: p.set_attention(np.zeros((8, 8, 3), np.uint8), random_attention(4) * np.nan), "NaN"),
    ("zero row", lambda p: p.set_attention(np.zeros((8, 8, 3), np.uint8), torch.zeros(4, 4, 4, 4)), "zero"),
    ("empty image", lambda p: p.set_attention(np.zeros((0, 0, 3), np.uint8), random_attention(4)), "small"),
    ("one pixel", lambda p: p.set_attention(np.zeros((1, 1, 3), np.uint8), random_attention(4)), "small"),
    ("not an image", lambda p: p.set_attention("cat.png", random_attention(4)), "image"),
    ("no backbone", lambda p: p.set_image(np.zeros((8, 8, 3), np.uint8)), "backbone"),
]


@pytest.mark.parametrize("name,call,message", BAD_CALLS, ids=[b[0] for b in BAD_CALLS])
def test_bad_input_raises_clearly_and_keeps_state(predictor, name, call, message):
    before = predictor.predict([(10, 30)], [1]).mask
    with pytest.raises((InputError, NotReadyError), match=message):
        call(predictor)
    np.testing.assert_array_equal(predictor.predict([(10, 30)], [1]).mask, before)


def test_predict_before_set_image():
    with pytest.raises(NotReadyError, match="set_image"):
        M2N2Predictor().predict([(1, 1)], [1])



def test_fast_preset_still_segments_the_synthetic_scene(scene):
    image, attention, truth = scene
    p = M2N2Predictor(config=M2N2Config.fast())
    p.set_attention(image, attention)
    assert p.operator.dtype == torch.float16
    assert iou(p.predict([(10, 30)], [1]).mask, truth == 0) >= 0.95


def test_upsampling_table_gives_the_dense_filter_maps(scene):
    image, attention, _ = scene
    dense, tabled = M2N2Predictor(), M2N2Predictor(config=M2N2Config(jbu_table=True))
    dense.set_attention(image, attention)
    tabled.set_attention(image, attention)
    assert dense.upsampling_table is None and tabled.upsampling_table is not None
    a = dense.predict([(10, 30), (70, 20)], [1, 0])
    b = tabled.predict([(10, 30), (70, 20)], [1, 0])
    for p, q in zip(a.points, b.points):
        np.testing.assert_allclose(p.markov_map, q.markov_map, atol=1e-5)


def test_set_config_builds_and_drops_the_upsampling_table(predictor):
    before = predictor.predict([(10, 30)], [1])
    predictor.set_config(M2N2Config(jbu_table=True))
    assert predictor.upsampling_table is not None and predictor.cached_points == 0
    after = predictor.predict([(10, 30)], [1])
    # The table is the dense filter in another summation order: the maps agree to float
    # rounding, and the threshold's argmax may move by a tie (a pixel or two of the mask).
    np.testing.assert_allclose(after.points[0].markov_map, before.points[0].markov_map, atol=1e-5)
    assert np.mean(after.mask != before.mask) < 1e-3
    predictor.set_config(M2N2Config())
    assert predictor.upsampling_table is None and predictor.cached_points == 0


def test_the_dense_filters_weight_sums_are_kept_per_image_and_change_with_it(scene):
    image, attention, _ = scene
    used, fresh = M2N2Predictor(), M2N2Predictor()
    used.set_attention(image, attention)
    used.predict([(10, 30)], [1])                 # sums the weights once
    for config in (M2N2Config(), M2N2Config(sigma_range=0.2)):  # other sigmas: summed again
        used.set_config(config)
        fresh.set_attention(image, attention)
        fresh.set_config(config)
        a = used.predict([(10, 30), (70, 20)], [1, 0])
        b = fresh.predict([(10, 30), (70, 20)], [1, 0])
        for p, q in zip(a.points, b.points):
            np.testing.assert_array_equal(p.markov_map, q.markov_map)
        fresh = M2N2Predictor()


def test_markov_leap_prepares_the_power_and_keeps_the_segment(predictor, scene):
    _, _, truth = scene
    before = predictor.predict([(10, 30)], [1])
    predictor.set_config(M2N2Config(markov_leap=4, markov_leap_after=2))
    assert predictor.operator.leap is not None and predictor.operator.leap.steps == 4
    assert "leap" in predictor.image_timings and predictor.cached_points == 0
    after = predictor.predict([(10, 30)], [1])
    assert not np.array_equal(after.points[0].markov_map, before.points[0].markov_map)  # it leapt
    assert iou(after.mask, before.mask) >= 0.99 and iou(after.mask, truth == 0) >= 0.95
    predictor.set_config(M2N2Config(markov_leap=4, markov_leap_after=1000))  # no leap fits: every step
    assert predictor.operator.leap is not None and predictor.cached_points == 0
    np.testing.assert_array_equal(predictor.predict([(10, 30)], [1]).points[0].markov_map,
                                  before.points[0].markov_map)
    predictor.set_config(M2N2Config())
    assert predictor.operator.leap is None


@pytest.mark.parametrize("changes", [{"markov_leap": 3}, {"markov_leap": 0}, {"markov_leap_after": -1}])
def test_markov_leap_settings_are_checked(changes):
    with pytest.raises(InputError, match="markov_leap"):
        M2N2Config(**changes)


@pytest.mark.parametrize("config", [M2N2Config(), M2N2Config.fast(), M2N2Config(flood_fill=False)],
                         ids=["exact", "fast", "no-flood-fill"])
def test_device_path_on_cpu_tensors_equals_the_numpy_path(config):
    # torch_stages=True runs the per-pixel stages exactly as on a CUDA device, with CPU tensors.
    from synthetic import random_attention as attention_of
    image = (np.random.default_rng(5).random((40, 56, 3)) * 255).astype(np.uint8)
    attention = attention_of(8, seed=3)
    numpy_path = M2N2Predictor(config=config)
    torch_path = M2N2Predictor(config=config, torch_stages=True)
    assert not numpy_path.torch_stages and torch_path.torch_stages
    clicks = [((10, 30), 1), ((50, 10), 0), ((15, 20), 1)]
    for predictor in (numpy_path, torch_path):
        predictor.set_attention(image, attention)
    for k in range(1, len(clicks) + 1):
        points, labels = zip(*clicks[:k])
        a = numpy_path.predict(list(points), list(labels))
        b = torch_path.predict(list(points), list(labels), threshold=0.2 if k == 2 else None)
        if k == 2:
            a = numpy_path.predict(list(points), list(labels), threshold=0.2)
        np.testing.assert_array_equal(b.mask, a.mask)
        np.testing.assert_array_equal(b.distance, a.distance)
        np.testing.assert_array_equal(b.nearest, a.nearest)
        for pa, pb in zip(a.points, b.points):
            assert isinstance(pb.markov_map, np.ndarray) and isinstance(pb.score, np.ndarray)
            np.testing.assert_array_equal(pb.markov_map, pa.markov_map)
            np.testing.assert_array_equal(pb.score, pa.score)
            assert (pb.threshold, pb.threshold_index, pb.overridden) == (pa.threshold, pa.threshold_index,
                                                                         pa.overridden)


@pytest.mark.parametrize("torch_stages", [False, True])
def test_keep_last_brings_back_only_the_last_points_arrays(scene, torch_stages):
    image, attention, _ = scene
    p = M2N2Predictor(torch_stages=torch_stages)
    p.set_attention(image, attention)
    points, labels = [(10, 30), (90, 30), (50, 30)], [1, 0, 1]
    full = p.predict(points, labels)
    last = p.predict(points, labels, keep="last")
    none = p.predict(points, labels, keep="none")
    assert np.array_equal(full.mask, last.mask) and np.array_equal(full.mask, none.mask)
    assert ([(r.threshold, r.threshold_index) for r in full.points] == [(r.threshold, r.threshold_index) for r in last.points]
            == [(r.threshold, r.threshold_index) for r in none.points])
    assert np.array_equal(last.points[-1].markov_map, full.points[-1].markov_map)
    assert np.array_equal(last.points[-1].score, full.points[-1].score)
    assert all(r.markov_map is None and r.score is None for r in last.points[:-1] + none.points)
    assert last.distance is None and last.nearest is None and full.distance is not None
    if torch_stages:  # what the device path brought back: the mask and the kept arrays only
        assert none.host_bytes < last.host_bytes < full.host_bytes
        kept = last.points[-1]
        assert last.host_bytes == none.host_bytes + kept.markov_map.nbytes + sum(
            getattr(kept, n).nbytes for n in ("thresholds", "score", "score_prior", "score_edge", "score_pos",
                                              "score_neg"))
    else:
        assert full.host_bytes == 0
    with pytest.raises(InputError):
        p.predict(points, labels, keep="some")
