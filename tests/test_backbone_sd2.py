"""The Stable Diffusion 2 backbone, on a tiny randomly initialised model with SD2's architecture."""

from __future__ import annotations

import json
import shutil
import time

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from m2n2.backbones import ColorAffinityBackbone, SD2Backbone, load  # noqa: E402
from m2n2.backbones.sd2 import CAPTURED_LAYERS, TIMESTEP, CaptureProcessor  # noqa: E402
from m2n2.errors import BackboneUnavailable, InputError  # noqa: E402

from tiny_sd2 import build_tiny_sd2  # noqa: E402

FAST_FAILURE_S = 5.0


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # The tiny model's operations are too small to gain from threads, and on a busy machine
    # OpenMP's spin-waiting made this file take 92 s with 2 threads against 9 s with 1.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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


def _reference_attention(backbone, image):
    """The paper's recipe computed independently, from hooks on the U-Net and the layers."""
    from diffusers import AutoencoderKL
    from transformers import CLIPTextModel, CLIPTokenizer

    unet = backbone.unet
    inputs, layer_inputs = {}, {}

    def on_unet(module, args, kwargs):
        inputs["latent"], inputs["timestep"] = args[0], args[1]
        inputs["text"] = kwargs["encoder_hidden_states"]

    hooks = [unet.register_forward_pre_hook(on_unet, with_kwargs=True)]
    for name in CAPTURED_LAYERS:
        def on_layer(module, args, kwargs, name=name):
            layer_inputs[name] = (module, kwargs.get("hidden_states", args[0] if args else None))
        hooks.append(unet.get_submodule(name).register_forward_pre_hook(on_layer,
                                                                         with_kwargs=True))
    try:
        attention = backbone.extract(image)
    finally:
        for hook in hooks:
            hook.remove()

    folder = backbone.model
    side = 8 * backbone.resolution
    from PIL import Image
    resized = np.asarray(Image.fromarray(image).resize((side, side), Image.Resampling.BOX))
    pixels = torch.tensor(resized).permute(2, 0, 1)[None].float() / 127.5 - 1
    vae = AutoencoderKL.from_pretrained(folder, subfolder="vae")
    tokenizer = CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer")
    text_encoder = CLIPTextModel.from_pretrained(folder, subfolder="text_encoder")
    with torch.no_grad():
        latent = vae.encode(pixels).latent_dist.mode() * vae.config.scaling_factor
        ids = tokenizer([""], padding="max_length", max_length=tokenizer.model_max_length,
                        return_tensors="pt").input_ids
        text = text_encoder(ids).last_hidden_state
        expected = 0
        for name in CAPTURED_LAYERS:
            module, hidden = layer_inputs[name]
            q = module.to_q(hidden).unflatten(-1, (module.heads, -1)).transpose(1, 2)
            k = module.to_k(hidden).unflatten(-1, (module.heads, -1)).transpose(1, 2)
            probabilities = torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5, dim=-1)
            expected = expected + 0.5 * probabilities.mean(dim=(0, 1))
        expected = expected / expected.sum(dim=1, keepdim=True)
    return attention, expected, inputs, latent, text


def test_extraction_follows_the_paper_recipe(backbone):
    image = _image(3, 160, 200)  # larger than 8R: shrunk with a box filter, as below
    attention, expected, inputs, latent, text = _reference_attention(backbone, image)
    assert int(inputs["timestep"].item()) == TIMESTEP
    torch.testing.assert_close(inputs["latent"], latent, atol=1e-5, rtol=1e-5)  # mode, no noise
    torch.testing.assert_close(inputs["text"], text, atol=1e-5, rtol=1e-5)  # empty prompt
    # SD2's highest-resolution self-attention has 5 heads; the tiny model keeps that.
    assert backbone.unet.get_submodule(CAPTURED_LAYERS[0]).heads == 5
    r = backbone.resolution
    torch.testing.assert_close(attention.reshape(r * r, r * r), expected, atol=1e-6, rtol=1e-5)


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


def _fails_fast(**options) -> str:
    start = time.monotonic()
    with pytest.raises(BackboneUnavailable) as info:
        load("sd2", **options)
    assert time.monotonic() - start < FAST_FAILURE_S
    return str(info.value)


def test_missing_folder_fails_fast_with_a_fix(tmp_path):
    message = _fails_fast(model=str(tmp_path / "no-such-model"))
    assert "no-such-model" in message and "does not exist" in message
    assert "M2N2_MODEL" in message and "huggingface-cli download" in message


def test_incomplete_folder_fails_fast(tiny_model, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model, broken)
    for weights in (broken / "unet").glob("*.safetensors"):
        weights.unlink()
    message = _fails_fast(model=str(broken))
    assert "incomplete or broken" in message and str(broken) in message


def test_folder_without_an_sd2_unet_is_rejected(tiny_model, tmp_path):
    from diffusers import UNet2DConditionModel

    other = tmp_path / "other"
    shutil.copytree(tiny_model, other)
    config = json.loads((other / "unet" / "config.json").read_text())
    config.update(down_block_types=["CrossAttnDownBlock2D", "DownBlock2D"],
                  up_block_types=["UpBlock2D", "CrossAttnUpBlock2D"],
                  block_out_channels=[20, 40], attention_head_dim=[5, 10])
    shutil.rmtree(other / "unet")
    UNet2DConditionModel.from_config(config).save_pretrained(other / "unet")
    assert "has no layer up_blocks.3" in _fails_fast(model=str(other))


def test_offline_hub_id_fails_fast_without_asking_the_hub(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    message = _fails_fast(model="m2n2-tests/no-such-model")
    assert "HF_HUB_OFFLINE" in message and "m2n2-tests/no-such-model" in message


def test_unknown_hub_id_fails_fast_online_or_not(monkeypatch):
    # Here the Hub is unreachable, in CI it answers 404: either way no long retries.
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    message = _fails_fast(model="m2n2-tests/no-such-model")
    assert "m2n2-tests/no-such-model" in message and "the Hub" in message


def test_auto_falls_back_to_colour_with_a_one_line_reason(tmp_path):
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
