"""Helpers of the stateless API: points as JSON, the summary next to the mask."""

import numpy as np
import pytest

from m2n2 import InputError, M2N2Config, M2N2Predictor
from m2n2.studio.api import parse_points, summarize
from synthetic import CountingBackbone, centre_of, iou, square_image


def test_parse_points_accepts_lists_and_objects():
    points, labels = parse_points('[[10, 20, 1], {"x": 3.5, "y": 4, "label": 0}, [7, 8]]')
    np.testing.assert_array_equal(points, [[10, 20], [3.5, 4], [7, 8]])
    np.testing.assert_array_equal(labels, [1, 0, 1])
    assert parse_points([[1, 2, True]])[1].tolist() == [1]


@pytest.mark.parametrize("text, match", [
    ("not json", "JSON list"), ("[]", "non-empty"), ('{"x": 1}', "non-empty"),
    ("[[1, 2, 3, 4]]", "point 1"), ('[[1, 2, 5]]', "label 0 or 1"), ('[["a", 2, 1]]', "numbers"),
])
def test_parse_points_rejects_bad_input(text, match):
    with pytest.raises(InputError, match=match):
        parse_points(text)


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
