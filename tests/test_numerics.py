import numpy as np
import pytest
import torch
from skimage import data

from m2n2 import M2N2Config, M2N2Predictor
from m2n2.backbones import load
from m2n2.image import resize_rgb
from m2n2.numerics import denormals_flushed

SUBNORMAL = 1e-40  # below fp32's smallest normal, 1.2e-38


def test_flushing_is_limited_to_the_block():
    x = torch.tensor([SUBNORMAL])
    with denormals_flushed():
        assert float(x * 1.0) == 0.0
    assert float(x * 1.0) > 0.0
    with denormals_flushed(False):
        assert float(x * 1.0) > 0.0


def test_flushing_throws_nothing_away_when_the_block_fails():
    with pytest.raises(ValueError):
        with denormals_flushed():
            raise ValueError("boom")
    assert float(torch.tensor([SUBNORMAL]) * 1.0) > 0.0


@pytest.mark.parametrize("preset", ["default", "fast"])
def test_flushed_subnormals_change_no_map_and_no_mask(preset):
    image = resize_rgb(data.astronaut(), (128, 96))
    attention = load("color", resolution=24, sigma_color=5.0, sigma_position=0.2).extract(image)
    config = M2N2Config.fast() if preset == "fast" else M2N2Config()
    exact = M2N2Predictor(config=config.replace(flush_denormals=False))
    exact.set_attention(image, attention)
    if preset == "default":  # not vacuous: the fp32 operator holds subnormals (fp16 storage cannot)
        transposed = exact.operator.transposed
        assert bool(((transposed > 0) & (transposed < torch.finfo(torch.float32).tiny)).any())
    flushed = M2N2Predictor(config=config)
    flushed.set_attention(image, attention)
    points, labels = [(60, 30), (20, 80), (110, 10)], [1, 0, 1]
    for k in range(1, 4):
        a, b = exact.predict(points[:k], labels[:k]), flushed.predict(points[:k], labels[:k])
        np.testing.assert_array_equal(a.mask, b.mask)
        for pa, pb in zip(a.points, b.points):
            np.testing.assert_array_equal(pa.markov_map, pb.markov_map)
            assert pa.threshold == pb.threshold
