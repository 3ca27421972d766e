"""The DINOv2 backbone's capture, on a tiny random model with DINOv2's architecture.

Its agreement with the authors' procedure is tested in test_backbones_faithful.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

from m2n2.backbones import DINOv2Backbone, load  # noqa: E402
from m2n2.backbones.dinov2 import CAPTURED_MODULE  # noqa: E402

from tiny_dinov2 import build_tiny_dinov2  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return str(build_tiny_dinov2(tmp_path_factory.mktemp("tiny-dinov2")))


def _image(seed=0, shape=(90, 120)):
    return np.random.default_rng(seed).integers(0, 256, (*shape, 3), dtype=np.uint8)


def test_the_capture_observes_layer_11_only_and_changes_no_output(folder):
    from transformers import Dinov2Model

    backbone = load("dinov2", model=folder, resolution=8)
    assert isinstance(backbone, DINOv2Backbone) and backbone.input_scale == 14
    network = backbone._loaded.model
    hooked = [name for name, module in network.named_modules() if module._forward_pre_hooks]
    assert hooked == [CAPTURED_MODULE]
    plain = Dinov2Model.from_pretrained(folder).eval()
    pixels = torch.randn(1, 3, 112, 112, generator=torch.Generator().manual_seed(0))
    capture = backbone._loaded.capture
    with torch.no_grad():
        expected = plain(pixel_values=pixels).last_hidden_state
        capture.start(65, torch.device("cpu"), 2**20)
        try:
            observed = network(pixel_values=pixels).last_hidden_state
        finally:
            buffer = capture.finish()
    assert capture.calls == [CAPTURED_MODULE] and buffer.shape == (65, 65)
    assert torch.equal(observed, expected)


def test_the_cls_token_is_dropped_and_rows_sum_to_one(folder):
    attention = load("dinov2", model=folder, resolution=12).extract(_image())
    assert attention.shape == (12, 12, 12, 12) and attention.dtype == torch.float32
    assert attention.min() >= 0
    torch.testing.assert_close(attention.sum(dim=(2, 3)), torch.ones(12, 12), atol=1e-5, rtol=0)


def test_chunking_does_not_change_the_result(folder):
    whole = load("dinov2", model=folder, resolution=8).extract(_image(1))
    # 4 heads x 65 tokens x 4 bytes: one query row per chunk.
    chunked = load("dinov2", model=folder, resolution=8, chunk_bytes=4 * 65 * 4).extract(_image(1))
    torch.testing.assert_close(chunked, whole, atol=1e-7, rtol=1e-6)


def test_the_model_loads_once_and_says_what_it_is(folder):
    first = load("dinov2", model=folder, resolution=8)
    again = load("dinov2", model=folder, resolution=16)
    assert again._loaded is first._loaded
    assert again.description == f"DINOv2 ({folder}), R = 16, cpu fp32" and again.key == "dinov2"
