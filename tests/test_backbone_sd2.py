"""The Stable Diffusion 2 backbone, on a tiny randomly initialised model with SD2's architecture.

Its agreement with the authors' procedure is tested in test_backbones_faithful.py, its failures
to load in test_backbone_weights.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from m2n2.backbones import ColorAffinityBackbone, SD2Backbone, load  # noqa: E402
from m2n2.backbones.sd2 import CAPTURED_LAYERS, TIMESTEP, CaptureProcessor  # noqa: E402
from m2n2.errors import InputError  # noqa: E402

from tiny_sd2 import build_tiny_sd2  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    return build_tiny_sd2(tmp_path_factory.mktemp("tiny-sd2"))


@pytest.fixture(scope="session")
def backbone(tiny_model):
    return load("sd2", model=str(tiny_model), resolution=16)


def _image(seed: int, height: int = 90, width: int = 120) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


@pytest.mark.parametrize("resolution", [16, 32])
def test_attention_is_a_row_stochastic_tensor(tiny_model, resolution):
    attention = load("sd2", model=str(tiny_model), resolution=resolution).extract(_image(0))
    assert attention.shape == (resolution,) * 4
    assert attention.dtype == torch.float32
    assert attention.min() >= 0
    torch.testing.assert_close(attention.sum(dim=(2, 3)),
                               torch.ones(resolution, resolution), atol=1e-5, rtol=0)


def test_only_the_two_up_block_3_self_attentions_are_captured(backbone):
    processors = backbone.unet.attn_processors
    captured = sorted(name.removesuffix(".processor") for name, processor in processors.items()
                      if isinstance(processor, CaptureProcessor))
    assert captured == list(CAPTURED_LAYERS)
    # Every other layer keeps diffusers' fused scaled-dot-product processor.
    others = {type(p).__name__ for p in processors.values() if not isinstance(p, CaptureProcessor)}
    assert others == {"AttnProcessor2_0"}
    backbone.extract(_image(0))
    capture = processors[f"{CAPTURED_LAYERS[0]}.processor"].capture
    assert capture.calls == list(CAPTURED_LAYERS)


def test_capture_leaves_the_unet_output_unchanged(backbone, tiny_model):
    from diffusers import UNet2DConditionModel

    plain = UNet2DConditionModel.from_pretrained(tiny_model, subfolder="unet").eval()
    generator = torch.Generator().manual_seed(0)
    latent = torch.randn(1, 4, 8, 8, generator=generator)
    text = torch.randn(1, 77, plain.config.cross_attention_dim, generator=generator)
    capture = backbone.unet.attn_processors[f"{CAPTURED_LAYERS[0]}.processor"].capture
    with torch.no_grad():
        expected = plain(latent, TIMESTEP, encoder_hidden_states=text).sample
        capture.start(64, torch.device("cpu"), 2**20)
        try:
            captured = backbone.unet(latent, TIMESTEP, encoder_hidden_states=text).sample
        finally:
            buffer = capture.finish()
    assert capture.calls == list(CAPTURED_LAYERS) and buffer.sum() > 0
    assert torch.equal(captured, expected)


def test_chunking_does_not_change_the_result(tiny_model):
    whole = load("sd2", model=str(tiny_model), resolution=16).extract(_image(4))
    # 5 heads x 256 tokens x 4 bytes: one query row per chunk.
    chunked = load("sd2", model=str(tiny_model), resolution=16,
                   chunk_bytes=5 * 256 * 4).extract(_image(4))
    torch.testing.assert_close(chunked, whole, atol=1e-7, rtol=1e-6)


def test_extraction_is_deterministic_and_depends_on_the_image(backbone):
    first = backbone.extract(_image(1))
    assert torch.equal(first, backbone.extract(_image(1)))
    assert (first - backbone.extract(_image(2))).abs().max() > 1e-4


def test_extract_accepts_grayscale_and_pil(backbone):
    from PIL import Image

    gray = _image(5)[:, :, 0]
    from_pil = backbone.extract(Image.fromarray(gray))
    assert torch.equal(from_pil, backbone.extract(np.repeat(gray[:, :, None], 3, axis=2)))


def test_the_model_loads_once_per_process(tiny_model, backbone):
    again = load("sd2", model=str(tiny_model), resolution=32)
    assert again.unet is backbone.unet
    assert again.description == f"Stable Diffusion 2 ({tiny_model}), R = 32, cpu fp32"
    assert again.reason is None


def test_model_comes_from_the_environment(tiny_model, backbone, monkeypatch):
    monkeypatch.setenv("M2N2_MODEL", str(tiny_model))
    assert load("sd2", resolution=16).model == str(tiny_model)
    assert isinstance(load("auto", resolution=16), SD2Backbone)


def test_auto_falls_back_to_color_with_a_one_line_reason(tmp_path):
    backbone = load("auto", model=str(tmp_path / "absent"), resolution=8, sigma_color=7.0)
    assert isinstance(backbone, ColorAffinityBackbone)
    assert backbone.sigma_color == 7.0 and backbone.resolution == 8
    assert "\n" not in backbone.reason
    assert backbone.reason.endswith("using the colour-affinity fallback")
    assert "absent" in backbone.reason


def test_bad_kind_and_options_are_input_errors(tiny_model):
    with pytest.raises(InputError):
        load("sd3")
    with pytest.raises(InputError, match="sigma_color"):
        load("sd2", model=str(tiny_model), sigma_color=3.0)
    with pytest.raises(InputError):
        load("sd2", model=str(tiny_model), dtype="int8")
