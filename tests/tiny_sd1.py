"""A tiny model with Stable Diffusion 1's architecture, saved as a diffusers pipeline folder.

SD 1.x differs from SD2 where the capture can notice: 8 heads in every attention layer
(``attention_head_dim=8``), convolutional projections in and out of the transformers
(``use_linear_projection=False``) and epsilon prediction. The layer names are SD2's, so the tiny
model shares :func:`tiny_sd2.build_tiny_stable_diffusion`.
"""

from __future__ import annotations

from pathlib import Path

from tiny_sd2 import build_tiny_stable_diffusion

#: SD 1.x has attention_head_dim 8: 8 heads in every block.
HEADS = 8


def build_tiny_sd1(folder: str | Path, seed: int = 0) -> Path:
    """Write a tiny SD1-architecture pipeline (unet, vae, text_encoder, tokenizer) to ``folder``."""
    return build_tiny_stable_diffusion(folder, seed, heads=HEADS, linear_projection=False,
                                       prediction="epsilon")
