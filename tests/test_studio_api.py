"""The stateless API: points as JSON (read by m2n2.prompts), refused before the image is read; the summary."""

import gradio as gr
import numpy as np
import pytest

from m2n2 import M2N2Config, M2N2Predictor
from m2n2.prompts import as_arrays, parse_clicks
from m2n2.studio import serving
from m2n2.studio.api import ApiHandlers, summarize
from m2n2.studio.page import Page
from synthetic import CountingBackbone, centre_of, iou, square_image


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
