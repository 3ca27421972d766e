"""Each learned backbone against a plain restatement of the authors' procedure.

The authors' aggregators (``src/stable_diffusion_2_attention_aggregator.py``,
``src/stable_diffusion_1_attention_aggregator.py``, ``src/dino_v2_attention_aggregator.py`` in
github robert-gabriel-gaube/m2n2) resize the image with ``cv2.resize(..., INTER_AREA)`` to the
model's input size, preprocess it, run the model once and average chosen layers' self-attention
probabilities over heads. Each restatement below does that with the models loaded afresh (no
capturing hooks, full softmax, for DINOv2 transformers' own eager attention probabilities) on a
tiny random-weight model with the real architecture, loaded by the backbone through the
production loader. Images shrink, enlarge and mix (one side shrinks, the other grows), at
non-integer scales. The agreement is measured as the largest total variation of a row
(0.5 x L1), the quantity M2N2's Markov chain sees.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("transformers")
cv2 = pytest.importorskip("cv2")

from m2n2.backbones import load  # noqa: E402
from m2n2.backbones.resize import resize_area  # noqa: E402
from m2n2.config import M2N2Config  # noqa: E402
from m2n2.predictor import M2N2Predictor  # noqa: E402

from tiny_dinov2 import build_tiny_dinov2  # noqa: E402
from tiny_sd1 import build_tiny_sd1  # noqa: E402
from tiny_sd2 import build_tiny_sd2  # noqa: E402

R = 16
TOLERANCE = 1e-5
#: (height, width): both sides shrink, both grow, one shrinks and the other grows, for the
#: 8R = 128 pixels of Stable Diffusion and the 14R = 224 of DINOv2; no scale is an integer.
SIZES = {"shrink": (301, 397), "enlarge": (61, 97), "mix": (97, 397)}
BUILDERS = {"sd2": build_tiny_sd2, "sd1": build_tiny_sd1, "dinov2": build_tiny_dinov2}

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    return {name: str(build(tmp_path_factory.mktemp(f"tiny-{name}"))) for name, build in BUILDERS.items()}


def _image(shape, seed=0) -> np.ndarray:
    """Smooth structure plus noise, so that every resize path shows in the attention."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:shape[0], 0:shape[1]]
    smooth = 127 + 100 * np.sin(rows[..., None] / 9.0 + cols[..., None] / 13.0 + np.arange(3))
    return np.clip(smooth + rng.normal(0, 30, (*shape, 3)), 0, 255).astype(np.uint8)


def _max_row_tv(attention: torch.Tensor, expected: torch.Tensor) -> float:
    n = expected.shape[-1]
    return float(0.5 * (attention.reshape(n, n).double() - expected.double()).abs().sum(dim=1).max())


def _softmax_of(module, hidden, to_q, to_k, heads, scale):
    q = to_q(hidden).unflatten(-1, (heads, -1)).transpose(1, 2)
    k = to_k(hidden).unflatten(-1, (heads, -1)).transpose(1, 2)
    return torch.softmax(q @ k.transpose(-1, -2) * scale, dim=-1)


def stable_diffusion_reference(folder: str, image: np.ndarray, resolution: int) -> torch.Tensor:
    """The authors' SD aggregator, restated: INTER_AREA to 8R, ``img / 255`` mapped to [-1, 1],
    VAE mode x scaling factor, one U-Net pass at timestep 100 with the empty prompt, the
    probabilities of up_blocks.3.attentions.0/.1 (block 0, attn1) averaged over batch and heads,
    weighted 0.5 each, rows divided by their sums."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    resized = cv2.resize(image, (8 * resolution, 8 * resolution), interpolation=cv2.INTER_AREA)
    vae = AutoencoderKL.from_pretrained(folder, subfolder="vae").eval()
    unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet").eval()
    tokenizer = CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer")
    text_encoder = CLIPTextModel.from_pretrained(folder, subfolder="text_encoder").eval()
    layers = {"up_blocks.3.attentions.0.transformer_blocks.0.attn1": 0.5,
              "up_blocks.3.attentions.1.transformer_blocks.0.attn1": 0.5}
    merged = []

    def hook(name):
        def on_layer(module, args, kwargs):
            hidden = kwargs.get("hidden_states", args[0] if args else None)
            p = _softmax_of(module, hidden, module.to_q, module.to_k, module.heads, module.scale)
            merged.append(layers[name] * p.float().mean(dim=1).mean(dim=0))
        return on_layer

    handles = [unet.get_submodule(name).register_forward_pre_hook(hook(name), with_kwargs=True)
               for name in layers]
    with torch.no_grad():
        pixels = torch.from_numpy(resized / 255.0).permute(2, 0, 1)[None].float() * 2 - 1
        latent = vae.config.scaling_factor * vae.encode(pixels).latent_dist.mode()
        ids = tokenizer([""], padding="max_length", max_length=tokenizer.model_max_length,
                        truncation=True, return_tensors="pt").input_ids
        text = text_encoder(ids)[0]
        unet(latent, torch.tensor([100]), encoder_hidden_states=text)
    for handle in handles:
        handle.remove()
    assert len(merged) == 2
    total = merged[0] + merged[1]
    return total / total.sum(dim=1, keepdim=True)


def dinov2_reference(folder: str, image: np.ndarray, resolution: int) -> torch.Tensor:
    """The authors' DINOv2 aggregator, restated: INTER_AREA to 14R, the processor's rescale and
    normalize only, layer 11's probabilities (transformers' eager attention) averaged over batch
    and heads, the CLS token's row and column dropped, rows divided by their sums."""
    import json
    from pathlib import Path

    from transformers import Dinov2Model

    settings = json.loads((Path(folder) / "preprocessor_config.json").read_text())
    resized = cv2.resize(image, (14 * resolution, 14 * resolution), interpolation=cv2.INTER_AREA)
    x = (resized.astype(np.float64) * settings["rescale_factor"]).astype(np.float32)
    x = (x - np.array(settings["image_mean"], np.float32)) / np.array(settings["image_std"], np.float32)
    model = Dinov2Model.from_pretrained(folder, attn_implementation="eager").eval()
    with torch.no_grad():
        out = model(pixel_values=torch.from_numpy(x).permute(2, 0, 1)[None], output_attentions=True)
    attention = out.attentions[11][:, :, 1:, 1:].float().mean(dim=1).mean(dim=0)
    return attention / attention.sum(dim=1, keepdim=True)


REFERENCES = {"sd2": stable_diffusion_reference, "sd1": stable_diffusion_reference,
              "dinov2": dinov2_reference}


@pytest.mark.parametrize("kind", sorted(SIZES))
@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_the_backbone_is_the_authors_procedure(folders, name, kind):
    image = _image(SIZES[kind], seed=len(kind))
    backbone = load(name, model=folders[name], resolution=R, dtype="float32", device="cpu")
    attention = backbone.extract(image)
    expected = REFERENCES[name](folders[name], image, R)
    assert attention.shape == (R,) * 4
    assert _max_row_tv(attention, expected) <= TOLERANCE
    # The restatement is sensitive to what it checks: PIL's resize instead of INTER_AREA (what
    # the backbones did before) moves rows by far more than the tolerance.
    from m2n2.image import resize_rgb

    side = backbone.input_scale * R
    pil = REFERENCES[name](folders[name], resize_rgb(image, (side, side)), R)
    assert _max_row_tv(pil, expected) > 100 * TOLERANCE


SIDES = (5, 14, 37, 64, 97, 128, 224, 301)


@pytest.mark.parametrize("height", SIDES)
@pytest.mark.parametrize("width", (7, 64, 129, 397))
def test_the_resize_is_opencvs_inter_area(height, width):
    image = _image((height, width), seed=height * width)
    for side in (16, 64, 112, 128, 224):
        expected = cv2.resize(image, (side, side), interpolation=cv2.INTER_AREA)
        assert np.array_equal(resize_area(image, side), expected)


class _Recording:
    """A backbone that records the image it is given (uniform attention)."""

    resolution = 4
    device = torch.device("cpu")
    name = description = "recording"
    reason = None

    def __init__(self, wants_original: bool | None):
        if wants_original is not None:
            self.wants_original = wants_original
        self.seen = None

    def extract(self, image):
        self.seen = np.array(image)
        n = self.resolution ** 2
        return torch.full((self.resolution,) * 4, 1.0 / n)


@pytest.mark.parametrize("wants_original", [True, False, None])
def test_set_image_hands_learned_backbones_the_original(wants_original):
    image = _image((300, 500))
    backbone = _Recording(wants_original)
    M2N2Predictor(backbone, M2N2Config.fast(max_side=100)).set_image(image)
    if wants_original:
        assert np.array_equal(backbone.seen, image)
    else:  # the colour backbone (and any backbone that does not ask) gets the working copy
        assert backbone.seen.shape == (60, 100, 3)


def test_every_learned_backbone_asks_for_the_original_and_the_color_one_does_not(folders):
    for name in BUILDERS:
        assert load(name, model=folders[name], resolution=R).wants_original is True
    assert not getattr(load("color", resolution=R), "wants_original", False)
