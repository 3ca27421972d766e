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


def test_the_mode_found_on_entry_is_restored_so_blocks_nest():
    from m2n2.numerics import flushing_denormals
    x = torch.tensor([SUBNORMAL])
    assert not flushing_denormals()
    with denormals_flushed():
        with denormals_flushed():
            assert flushing_denormals()
        assert flushing_denormals() and float(x * 1.0) == 0.0  # the inner block's exit kept the outer mode
        with denormals_flushed(False):  # exact arithmetic inside a flushing block
            assert not flushing_denormals() and float(x * 1.0) > 0.0
        assert flushing_denormals()
    assert not flushing_denormals()
    torch.set_flush_denormal(True)  # a caller's own mode survives a block
    try:
        with denormals_flushed(False):
            assert float(x * 1.0) > 0.0
        with denormals_flushed():
            pass
        assert flushing_denormals()
    finally:
        torch.set_flush_denormal(False)
    assert not flushing_denormals()


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


def _tf32_allowed() -> tuple[bool, bool]:
    """Whether CUDA's fp32 products and cuDNN's fp32 convolutions may use TF32 now."""
    return (torch.backends.cuda.matmul.fp32_precision == "tf32",
            torch.backends.cudnn.conv.fp32_precision == "tf32")


@pytest.fixture
def tf32_allowed():
    """A caller that allowed TF32 everywhere (torch's new API, with which legacy reads raise)."""
    before = (torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision)
    torch.backends.cuda.matmul.fp32_precision = torch.backends.cudnn.conv.fp32_precision = "tf32"
    yield
    torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision = before


def test_no_tf32_inside_the_guard_and_the_flags_restored_after_overlapping_blocks(tf32_allowed):
    import threading

    from m2n2.numerics import full_fp32
    inside, release = threading.Event(), threading.Event()

    def other():
        with full_fp32():
            inside.set()
            release.wait()

    thread = threading.Thread(target=other)
    thread.start()
    inside.wait()
    with full_fp32():
        assert _tf32_allowed() == (False, False)
    assert _tf32_allowed() == (False, False)  # the other thread's block still runs
    release.set()
    thread.join()
    assert _tf32_allowed() == (True, True)


def test_the_sobel_convolutions_and_the_markov_steps_run_without_tf32(monkeypatch, tf32_allowed):
    import m2n2.operator
    import m2n2.threshold
    from synthetic import three_regions
    seen = []
    conv2d, step = m2n2.threshold.F.conv2d, m2n2.operator.TransitionOperator.step

    def recording_conv2d(*args, **kwargs):
        seen.append(("conv", _tf32_allowed()[1]))
        return conv2d(*args, **kwargs)

    def recording_step(self, states):
        seen.append(("step", _tf32_allowed()[0]))
        return step(self, states)

    monkeypatch.setattr(m2n2.threshold.F, "conv2d", recording_conv2d)
    monkeypatch.setattr(m2n2.operator.TransitionOperator, "step", recording_step)
    image, attention, _ = three_regions()
    predictor = M2N2Predictor(torch_stages=True)
    predictor.set_attention(image, attention)
    predictor.predict([(10, 30)], [1])
    assert {kind for kind, _ in seen} == {"conv", "step"}
    assert not any(allowed for _, allowed in seen)
