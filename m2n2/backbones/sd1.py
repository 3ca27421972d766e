"""Stable Diffusion 1 self-attention: the authors' second backbone, captured exactly as SD2's.

The authors' ``src/stable_diffusion_1_attention_aggregator.py`` differs from their SD2 one only in
the model (``CompVis/stable-diffusion-v1-1``) and the default R (112): the same two
``up_blocks.3`` self-attention layers with weights 0.5 / 0.5, timestep 100, the empty prompt and
the INTER_AREA resize to 8R x 8R (see :mod:`m2n2.backbones.sd2`).
"""

from __future__ import annotations

from .sd2 import StableDiffusionBackbone
from .weights import Weights

SD1_WEIGHTS = Weights(
    title="Stable Diffusion 1", default_model="CompVis/stable-diffusion-v1-1", env="M2N2_SD1_MODEL",
    folder="a diffusers-format SD 1.x folder (with unet/, vae/, text_encoder/, tokenizer/)")


class SD1Backbone(StableDiffusionBackbone):
    """Self-attention of Stable Diffusion 1 (default model ``$M2N2_SD1_MODEL`` or
    ``CompVis/stable-diffusion-v1-1``; R = 112, the authors' default, on CUDA, 64 elsewhere,
    where R = 112 takes minutes per image). Options as :class:`~m2n2.backbones.sd2.SD2Backbone`."""

    name = "Stable Diffusion 1"
    key = "sd1"
    weights = SD1_WEIGHTS
    cuda_resolution = 112
