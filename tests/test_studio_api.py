"""The stateless API: points as JSON (read by m2n2.prompts), refused before the image is read; the summary."""

import dataclasses
import json

import gradio as gr
import numpy as np
import pytest
from PIL import Image

import app

from m2n2 import M2N2Config, M2N2Predictor
from m2n2.prompts import as_arrays, parse_clicks
from m2n2.studio import serving
from m2n2.studio.api import ApiHandlers, summarize
from m2n2.studio.page import Page
from synthetic import CountingBackbone, centre_of, iou, square_image

# The app's components (the handlers' dicts are keyed by them); built once for the module.
UI = app.build(app.Options(backbone="color", resolution=16, max_side=128),
               serving.start(app.Options(backbone="color", resolution=16), CountingBackbone))[1].ui


def test_the_api_reads_points_as_lists_and_objects():
    points, labels = as_arrays(parse_clicks('[[10, 20, 1], {"x": 3.5, "y": 4, "label": 0}, [7, 8]]'))
    np.testing.assert_array_equal(points, [[10, 20], [3.5, 4], [7, 8]])
    np.testing.assert_array_equal(labels, [1, 0, 1])
    assert as_arrays(parse_clicks([[1, 2, True]]))[1].tolist() == [1]


@pytest.mark.parametrize("text, match", [
    ("not json", "x,y,label"), ("[]", "empty"), ('{"x": 1}', "click 1"),
    ("[[1, 2, 3, 4]]", "click 1 must be"), ('[[1, 2, 5]]', "label 0 or 1"), ('[["a", 2, 1]]', "numbers"),
    ("[[NaN, 2, 1]]", "NaN or infinite"),
])
def test_the_api_refuses_bad_points_before_reading_the_image(text, match):
    api = ApiHandlers(Page(serving.start(serving.Options(backbone="color", resolution=16), CountingBackbone), None))
    with pytest.raises(gr.Error, match=match):
        api.segment("/no/such/image.png", text)  # the file is never opened


def test_summary_describes_the_prediction():
    image, truth = square_image()
    backbone = CountingBackbone(16)
    predictor = M2N2Predictor(backbone, M2N2Config.fast())
    predictor.set_image(image)
    prediction = predictor.predict([centre_of(truth)], [1])
    summary = summarize(prediction, backbone.description)
    assert iou(prediction.mask, truth) > 0.8
    assert summary["width"] == 80 and summary["height"] == 60
    assert summary["mask_pixels"] == int(prediction.mask.sum())
    assert 0 < summary["mask_fraction"] < 1 and summary["points"][0]["label"] == 1
    assert summary["backbone"] == backbone.description


# ---------------------------------------------------------------- prepared images reused
OPTIONS = serving.Options(backbone="color", resolution=16, max_side=128)


def api_with(budget_bytes=None, images=None, options=OPTIONS) -> ApiHandlers:
    if budget_bytes is not None:
        options = dataclasses.replace(options, budget_bytes=budget_bytes)
    return ApiHandlers(Page(serving.start(options, CountingBackbone), None, app.EXAMPLES), images)


def preparations(api: ApiHandlers) -> int:
    """How many images the API's backbone has extracted attention for."""
    return api.page.serving.backbones.get(OPTIONS.attention_resolution).calls


def image_file(folder, name, image) -> str:
    path = folder / name
    Image.fromarray(image).save(path)
    return str(path)


def test_a_second_request_on_the_same_pixels_and_settings_reuses_the_prepared_image(tmp_path):
    image, truth = square_image()
    path = image_file(tmp_path, "square.png", image)
    copy = image_file(tmp_path, "same-pixels.png", image)          # another file, the same pixels
    points = json.dumps([[*centre_of(truth), 1]])
    api = api_with()
    mask, summary = api.segment(path, points)
    assert preparations(api) == 1 and "attention" in summary["timings"]
    again, summary_again = api.segment(copy, points)
    assert preparations(api) == 1 and "attention" not in summary_again["timings"]   # not prepared again
    np.testing.assert_array_equal(again, mask)
    # Other points on the reused image: what a fresh server answers.
    other = json.dumps([[*centre_of(truth), 1], [3, 3, 0]])
    reused, _ = api.segment(path, other)
    fresh, _ = api_with().segment(path, other)
    assert preparations(api) == 1
    np.testing.assert_array_equal(reused, fresh)
    # Its points' maps are not kept between requests, only the prepared image.
    (kept,) = [api.page.serving.store.get(key) for key in list(api.page.serving.store._items)]
    assert kept.cached_points == 0
    # Other pixels are prepared.
    api.segment(image_file(tmp_path, "flipped.png", image[:, ::-1].copy()), points)
    assert preparations(api) == 2


def test_other_settings_prepare_again():
    image, truth = square_image()
    first = ApiHandlers(Page(serving.start(OPTIONS, CountingBackbone), None))
    key = first._key(image, 16, OPTIONS.config)
    assert key == first._key(image.copy(), 16, OPTIONS.config)
    other_rho = OPTIONS.config.replace(rho=OPTIONS.config.rho + 0.1)
    assert len({key, first._key(image, 32, OPTIONS.config), first._key(image, 16, other_rho),
                first._key(image[::-1].copy(), 16, OPTIONS.config)}) == 4


def test_a_tiny_memory_budget_evicts_and_still_gives_the_same_masks(tmp_path):
    image, truth = square_image()
    paths = [image_file(tmp_path, "a.png", image), image_file(tmp_path, "b.png", image[::-1].copy())]
    points = json.dumps([[*centre_of(truth), 1]])
    expected = [api_with().segment(path, points)[0] for path in paths]
    api = api_with(budget_bytes=1)                                  # room for the image in use only
    for round_ in range(2):
        for path, mask in zip(paths, expected):
            np.testing.assert_array_equal(api.segment(path, points)[0], mask)
    assert preparations(api) == 4 and len(api.page.serving.store) == 1   # each one evicted by the other


def test_a_recipe_request_reuses_the_prepared_image_when_its_settings_match(tmp_path):
    from m2n2 import recipe as recipes
    image, truth = square_image()
    path = image_file(tmp_path, "square.png", image)
    api = api_with()
    backbone = api.page.serving.backbones.get(16)
    recipe = recipes.make(image, backbone, OPTIONS.config, [([(*centre_of(truth), 1)], None), ([(3, 3, 1)], 0.4)])
    api.segment(path, json.dumps([[*centre_of(truth), 1]]))         # prepared by /segment at the same settings
    assert preparations(api) == 1
    first = api.segment_recipe(path, recipe.to_json())
    second = api.segment_recipe(path, recipe.to_json())
    assert preparations(api) == 1
    np.testing.assert_array_equal(first[0], second[0])
    assert first[1] == second[1] and first[2] == second[2]
    fresh = api_with().segment_recipe(path, recipe.to_json())
    np.testing.assert_array_equal(first[0], fresh[0])
    # Other settings in the recipe: prepared for them.
    other = recipes.make(image, backbone, OPTIONS.config.replace(temperature=0.5), [([(*centre_of(truth), 1)], None)])
    api.segment_recipe(path, other.to_json())
    assert preparations(api) == 2


def test_an_example_prepared_at_start_serves_the_api_without_preparing_it_again():
    from m2n2.studio.handlers import Handlers
    handlers = Handlers(serving.start(OPTIONS, CountingBackbone), UI, app.EXAMPLES)
    handlers.images.prepare_examples()
    calls = preparations(handlers.api)
    example = next(p for p in app.EXAMPLES if "coffee" in p)
    points = json.dumps([[120, 80, 1], [10, 10, 0]])
    mask, summary = handlers.api.segment(example, points)
    assert preparations(handlers.api) == calls and "attention" not in summary["timings"]
    np.testing.assert_array_equal(mask, api_with().segment(example, points)[0])   # as if prepared anew


def test_a_reused_image_gives_the_maps_of_a_fresh_preparation():
    # The fast preset makes an image's first map without the leap (early_maps = 1): a reused image
    # must start over as a fresh one does, or its first point's map (and threshold) would differ.
    from m2n2.image import read_image
    from m2n2.studio import gpu
    image = read_image(next(p for p in app.EXAMPLES if "astronaut" in p))
    config = M2N2Config.fast(max_side=256)
    assert config.early_maps == 1
    started = serving.start(OPTIONS, CountingBackbone)
    points, labels = np.array([[150.0, 430.0], [250.0, 120.0]]), np.array([1, 1])
    first, _ = gpu.segment_image(started, image, points, labels, 16, config, key="api-test/image")
    again, _ = gpu.segment_image(started, image, points, labels, 16, config, key="api-test/image")
    assert started.backbones.get(16).calls == 1                          # reused
    for made, reused in zip(first.points, again.points):
        np.testing.assert_array_equal(reused.markov_map, made.markov_map)
        assert reused.threshold == made.threshold
    np.testing.assert_array_equal(again.mask, first.mask)
