"""A tiny model with DINOv2's architecture and its image processor, saved as a transformers folder.

Real DINOv2 weights are never available to the tests, so the DINOv2 backbone is tested on a
randomly initialised ``Dinov2Model`` with DINOv2-base's structure where it matters (12 layers,
14-pixel patches, a CLS token, position embeddings interpolated to the input size, layer scale)
but tiny widths, and with dinov2-base's image processor settings (ImageNet mean and std, rescale
by 1/255).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

#: dinov2-base: 12 layers (the authors capture layer 11, the last), 12 heads; here fewer heads.
LAYERS = 12
HEADS = 4


def build_tiny_dinov2(folder: str | Path, seed: int = 0, layers: int = LAYERS) -> Path:
    """Write a tiny DINOv2 model (``layers`` deep) and its processor config to ``folder``
    (loadable as ``model=folder``)."""
    from transformers import Dinov2Config, Dinov2Model

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    # initializer_range 0.2 rather than 0.02: the attention is then far from uniform, so that
    # what the tests compare shows in it.
    config = Dinov2Config(hidden_size=32, num_hidden_layers=layers, num_attention_heads=HEADS,
                          intermediate_size=64, patch_size=14, image_size=70, layerscale_value=1.0,
                          initializer_range=0.2)
    model = Dinov2Model(config).eval()
    # Random position embeddings and CLS token (the initialiser's are nearly zero) so that their
    # interpolation to other sizes matters.
    with torch.no_grad():
        model.embeddings.position_embeddings.normal_()
        model.embeddings.cls_token.normal_()
    model.save_pretrained(folder)
    # dinov2-base's preprocessor_config.json (its resize and crop are never used by M2N2).
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "crop_size": {"height": 224, "width": 224}, "do_center_crop": True, "do_convert_rgb": True,
        "do_normalize": True, "do_rescale": True, "do_resize": True,
        "image_mean": [0.485, 0.456, 0.406], "image_processor_type": "BitImageProcessor",
        "image_std": [0.229, 0.224, 0.225], "resample": 3, "rescale_factor": 0.00392156862745098,
        "size": {"shortest_edge": 256}}, indent=2))
    return folder
