"""DINOv2 self-attention: the authors' third backbone (``src/dino_v2_attention_aggregator.py``).

As the authors do: the image is resized to 14R x 14R with OpenCV's INTER_AREA (DINOv2's patches
are 14 pixels, so R x R patch tokens), then only the image processor's ``rescale`` and
``normalize`` are applied (no processor resize or crop); the model runs once, and the attention
probabilities of layer 11 alone (weight 1) are averaged over heads, the CLS token's row and column
are dropped (``x[:, :, 1:, 1:]``) and every row is renormalised to sum 1.

Layer 11 is observed by a forward pre-hook that recomputes its probabilities from the layer's own
queries and keys (in chunks, like the Stable Diffusion capture) and leaves the layer's output to
the model: asking transformers for the attentions would return every layer's, 12 layers x 12
heads x 6401^2 fp32 (about 24 GB) at the authors' R = 80. The authors' wrapper classes
(``Dinov2SdpaSelfAttention``) no longer exist in transformers 5, which this module is written for.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np
import torch

from .capture import AttentionCapture
from .learned import LearnedBackbone, normalised_rows
from .weights import Weights

#: The one layer the authors capture, and its weight.
LAYER = 11
LAYER_WEIGHT = 1.0
CAPTURED_MODULE = f"encoder.layer.{LAYER}.attention"
DINOV2_WEIGHTS = Weights(
    title="DINOv2", default_model="facebook/dinov2-base", env="M2N2_DINOV2_MODEL",
    folder="a transformers DINOv2 folder (config.json, model weights, preprocessor_config.json)",
    packages=("transformers",))
#: Other DINOv2 models known to work (same layer 11, fewer channels).
SMALL_MODEL = "facebook/dinov2-small"


@dataclass
class _LoadedModel:
    """One loaded DINOv2 model and its processor's rescale / normalize settings."""

    device: torch.device
    dtype: torch.dtype
    model: object
    rescale_factor: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    capture: AttentionCapture
    lock: threading.Lock = field(default_factory=threading.Lock)


def _load_parts(source: str, local_only: bool, dtype: torch.dtype):
    from transformers import AutoModel
    from transformers.image_processing_utils import ImageProcessingMixin

    settings, _ = ImageProcessingMixin.get_image_processor_dict(source, local_files_only=local_only)
    model = AutoModel.from_pretrained(source, dtype=dtype, local_files_only=local_only)
    return model, settings


class DINOv2Backbone(LearnedBackbone):
    """Self-attention of DINOv2's layer 11 (the authors' DINOv2 backbone).

    Default model ``$M2N2_DINOV2_MODEL`` or ``facebook/dinov2-base`` (``facebook/dinov2-small``
    works too); R = 80, the authors' default, on CUDA; 64 elsewhere. Other options as
    :class:`~m2n2.backbones.learned.LearnedBackbone`.
    """

    name = "DINOv2"
    key = "dinov2"
    weights = DINOV2_WEIGHTS
    input_scale = 14
    cuda_resolution = 80

    def _load(self, model: str, device: torch.device, dtype: torch.dtype) -> _LoadedModel:
        weights = self.weights
        network, settings = weights.load(model, lambda source, local: _load_parts(source, local, dtype))
        try:
            layer = network.get_submodule(CAPTURED_MODULE)
            projections = (layer.q_proj, layer.k_proj, layer.scaling)
        except AttributeError:
            raise weights.unavailable(
                f"{model} is not a DINOv2 model with a layer {LAYER}",
                f"It has no {CAPTURED_MODULE} with q_proj / k_proj ({type(network).__name__}; "
                "transformers 5 names them so).") from None
        missing = [name for name in ("image_mean", "image_std") if name not in settings]
        if missing:
            raise weights.unavailable(f"{model} has no DINOv2 image processor settings",
                                      f"Its preprocessor_config.json lacks {', '.join(missing)}.")
        capture = AttentionCapture()
        layer.register_forward_pre_hook(_observer(capture, projections), with_kwargs=True)
        network.to(device).eval()
        return _LoadedModel(device, dtype, network, float(settings.get("rescale_factor", 1 / 255)),
                            tuple(settings["image_mean"]), tuple(settings["image_std"]), capture)

    def pixels(self, rgb: np.ndarray) -> torch.Tensor:
        """The processor's rescale and normalize of an already resized image: (1, 3, H, W)."""
        from transformers.image_transforms import normalize, rescale
        from transformers.image_utils import ChannelDimension

        model = self._loaded
        last = ChannelDimension.LAST
        image = rescale(rgb, model.rescale_factor, input_data_format=last)
        image = normalize(image, model.mean, model.std, input_data_format=last)
        return torch.tensor(image, dtype=model.dtype, device=model.device).permute(2, 0, 1)[None]

    def _attention(self, rgb: np.ndarray) -> torch.Tensor:
        model = self._loaded
        resolution = self.resolution
        pixels = self.pixels(rgb)
        with model.lock, torch.no_grad():
            model.capture.start(resolution * resolution + 1, model.device, self.chunk_bytes)
            try:
                model.model(pixel_values=pixels)
            finally:
                attention = model.capture.finish()
            # Without the CLS token's row and column (the authors' x[:, :, 1:, 1:]).
            attention = normalised_rows(attention[1:, 1:].contiguous(), resolution, self.weights.title)
        return attention  # on the model's device, as SD's


def _observer(capture: AttentionCapture, projections):
    """A forward pre-hook adding layer 11's probabilities to ``capture``; it changes nothing."""
    q_proj, k_proj, scale = projections

    def observe(module, args, kwargs):
        if capture.buffer is None:
            return None
        hidden = kwargs.get("hidden_states", args[0] if args else None)
        mask = kwargs.get("attention_mask", args[1] if len(args) > 1 else None)
        if mask is not None:
            raise RuntimeError(f"{CAPTURED_MODULE}: expected attention without a mask")
        shape = (*hidden.shape[:-1], -1, module.head_dim)
        query = q_proj(hidden).view(shape).transpose(1, 2)
        key = k_proj(hidden).view(shape).transpose(1, 2)
        capture.add(CAPTURED_MODULE, LAYER_WEIGHT, query, key, scale)
        return None

    return observe
