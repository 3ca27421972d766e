"""A tiny model with Stable Diffusion 2's architecture, saved as a diffusers pipeline folder.

Real SD2 weights are never available to the tests (no Hub access), so the SD2 backbone is tested
on a randomly initialised model that has the same block types, the same attention layer names
(``up_blocks.3.attentions.0`` / ``.1``), linear projections and SD2's head-count pattern, but
tiny channels. Its VAE downsamples by 8, as SD2's does, so an 8R x 8R image gives R x R tokens.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

# SD2 has attention_head_dim [5, 10, 20, 20]: 5 heads in the highest-resolution blocks.
HEADS = (5, 10, 20, 20)
# A CLIP-style byte-level BPE needs every byte's symbol in its vocabulary; printable ASCII is
# enough for the prompts the backbone ever encodes (only "").
_SYMBOLS = [chr(c) for c in range(33, 127)]


def _write_tokenizer(folder: Path) -> None:
    from transformers import CLIPTokenizer

    vocab = {}
    for symbol in _SYMBOLS:
        vocab[symbol] = len(vocab)
    for symbol in _SYMBOLS:
        vocab[symbol + "</w>"] = len(vocab)
    merges = ["c a", "ca t</w>"]
    for pair in merges:
        vocab["".join(pair.split())] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)

    source = folder / "tokenizer-source"
    source.mkdir(parents=True)
    (source / "vocab.json").write_text(json.dumps(vocab))
    (source / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    tokenizer = CLIPTokenizer(vocab=str(source / "vocab.json"), merges=str(source / "merges.txt"),
                              model_max_length=77)
    tokenizer.save_pretrained(folder / "tokenizer")


def build_tiny_sd2(folder: str | Path, seed: int = 0) -> Path:
    """Write a tiny SD2-architecture pipeline (unet, vae, text_encoder, tokenizer) to ``folder``.

    Parameters
    ----------
    folder : str or Path
        Destination; created if needed.
    seed : int
        Seed of the random initialisation.

    Returns
    -------
    Path
        The folder, loadable by :func:`m2n2.backbones.load` as ``model=folder``.
    """
    return build_tiny_stable_diffusion(folder, seed, heads=HEADS, linear_projection=True,
                                       prediction="v_prediction")


def build_tiny_stable_diffusion(folder: str | Path, seed: int, heads, linear_projection: bool,
                                prediction: str) -> Path:
    """A tiny Stable Diffusion pipeline folder: SD2's and SD1's block types and layer names,
    with ``heads`` (attention_head_dim), the transformers' projection kind and the scheduler's
    prediction type of the version."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    text_dim = 32

    unet = UNet2DConditionModel(
        sample_size=16,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        block_out_channels=(20, 40, 40, 40),
        layers_per_block=1,
        attention_head_dim=heads,
        cross_attention_dim=text_dim,
        use_linear_projection=linear_projection,
        norm_num_groups=4,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 16, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=64,
        scaling_factor=0.18215,
    )
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(_SYMBOLS) * 2 + 4,
        hidden_size=text_dim,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        bos_token_id=len(_SYMBOLS) * 2 + 2,
        eos_token_id=len(_SYMBOLS) * 2 + 3,
        pad_token_id=len(_SYMBOLS) * 2 + 3,
    ))
    scheduler = DDIMScheduler(prediction_type=prediction, beta_schedule="scaled_linear",
                              beta_start=0.00085, beta_end=0.012, clip_sample=False)

    unet.save_pretrained(folder / "unet")
    vae.save_pretrained(folder / "vae")
    text_encoder.save_pretrained(folder / "text_encoder")
    scheduler.save_pretrained(folder / "scheduler")
    _write_tokenizer(folder)
    (folder / "model_index.json").write_text(json.dumps({
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": "0.42.1",
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "scheduler": ["diffusers", "DDIMScheduler"],
    }, indent=2))
    return folder
