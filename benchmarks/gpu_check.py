"""The whole click on a GPU: SD2's real architectures, R = 128 attention, 20 clicks, CUDA vs CPU.

One command (about 5 minutes on one H100, no download)::

    python benchmarks/gpu_check.py                       # CUDA, SD2 architecture, R = 128, 1024 px

It builds Stable Diffusion 2's U-Net and VAE with their published configurations
(``stabilityai/stable-diffusion-2``: U-Net channels 320/640/1280/1280, head counts 5/10/20/20,
cross-attention 1024, linear projections; VAE channels 128/256/512/512) and random weights,
writes them as a local diffusers folder (with a one-layer text encoder of width 1024: only the
empty prompt's embedding is used) and loads it through :mod:`m2n2.backbones.sd2` like real
weights. Then it extracts the attention of a 1024 x 1024 photo in fp16, prepares the predictor
on the device (the exact preset, the app's default on CUDA), makes ``--clicks`` clicks and
prints, as JSON: attention time, operator time, the first mask's time (attention, preparation and
first click), per-click median and p95 with a stage
breakdown, peak GPU memory, and the agreement of the masks with the CPU (numpy) path on the
same attention for the first ``--agreement-clicks`` clicks.

Random weights give an attention unlike a trained model's (the Markov chain may run more or
fewer steps), so the timings bound the real ones only roughly; the architecture, the sizes and
every tensor shape are the real ones.

It runs on a CPU too, at a small R with a scaled-down model (the tests run it so)::

    python benchmarks/gpu_check.py --device cpu --scale tiny --resolution 8 --image-size 64 --clicks 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from m2n2 import M2N2Config, M2N2Predictor  # noqa: E402
from m2n2.image import resize_rgb  # noqa: E402

# Stable Diffusion 2's published U-Net and VAE configurations (diffusers' names).
SD2_UNET = dict(
    sample_size=96, in_channels=4, out_channels=4,
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, attention_head_dim=(5, 10, 20, 20),
    cross_attention_dim=1024, use_linear_projection=True, norm_num_groups=32, norm_eps=1e-5,
    flip_sin_to_cos=True, freq_shift=0, act_fn="silu",
)
SD2_VAE = dict(
    in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(128, 256, 512, 512),
    layers_per_block=2, latent_channels=4, norm_num_groups=32, sample_size=768, scaling_factor=0.18215,
    act_fn="silu",
)
# The same block types, layer names and head pattern with tiny widths (as tests/tiny_sd2.py).
TINY_UNET = {**SD2_UNET, "sample_size": 16, "block_out_channels": (20, 40, 40, 40), "layers_per_block": 1,
             "cross_attention_dim": 32, "norm_num_groups": 4}
TINY_VAE = {**SD2_VAE, "block_out_channels": (8, 8, 16, 16), "layers_per_block": 1, "norm_num_groups": 4,
            "sample_size": 64}


def build_model(folder: Path, scale: str, dtype: torch.dtype, seed: int = 0) -> Path:
    """Write an SD2-architecture diffusers folder with random weights; return it."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    sys.path.insert(0, str(ROOT / "tests"))
    from tiny_sd2 import _SYMBOLS, _write_tokenizer

    unet_config, vae_config = (SD2_UNET, SD2_VAE) if scale == "sd2" else (TINY_UNET, TINY_VAE)
    torch.manual_seed(seed)
    # written in the dtype they run in (half the bytes to write and read back in fp16)
    UNet2DConditionModel(**unet_config).to(dtype).save_pretrained(folder / "unet")
    AutoencoderKL(**vae_config).to(dtype).save_pretrained(folder / "vae")
    vocab = len(_SYMBOLS) * 2 + 4
    CLIPTextModel(CLIPTextConfig(
        vocab_size=vocab, hidden_size=unet_config["cross_attention_dim"], intermediate_size=64,
        num_hidden_layers=1, num_attention_heads=4, max_position_embeddings=77,
        bos_token_id=vocab - 2, eos_token_id=vocab - 1, pad_token_id=vocab - 1,
    )).save_pretrained(folder / "text_encoder")
    DDIMScheduler(prediction_type="v_prediction", beta_schedule="scaled_linear", beta_start=0.00085,
                  beta_end=0.012, clip_sample=False).save_pretrained(folder / "scheduler")
    _write_tokenizer(folder)
    (folder / "model_index.json").write_text(json.dumps({
        "_class_name": "StableDiffusionPipeline",
        "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
        "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
        "scheduler": ["diffusers", "DDIMScheduler"]}))
    return folder


def click_sequence(size: int, count: int, seed: int = 0) -> list[tuple[tuple[float, float], int]]:
    """``count`` clicks (x, y, label): foreground near the centre, background near the border."""
    rng = np.random.default_rng(seed)
    clicks = []
    for k in range(count):
        if k % 3 == 2:  # every third click a background one, near the border
            x, y = rng.uniform(0.02, 0.15, 2) * size
            clicks.append(((float(x), float(y)), 0))
        else:
            x, y = rng.uniform(0.35, 0.65, 2) * size
            clicks.append(((float(x), float(y)), 1))
    return clicks


def synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def run(args) -> dict:
    from m2n2.backbones.sd2 import SD2Backbone
    from skimage import data

    device = torch.device(args.device)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    config = M2N2Config() if args.preset == "exact" else M2N2Config.fast()
    image = resize_rgb(data.astronaut(), (args.image_size, args.image_size))
    report = {"device": str(device), "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
              "scale": args.scale, "resolution": args.resolution, "image": [args.image_size] * 2,
              "preset": args.preset, "clicks": args.clicks, "torch": torch.__version__}

    with tempfile.TemporaryDirectory(prefix="m2n2-gpu-check-") as tmp:
        start = time.perf_counter()
        folder = build_model(Path(tmp), args.scale, dtype)
        report["build_model_s"] = time.perf_counter() - start
        backbone = SD2Backbone(model=str(folder), resolution=args.resolution, device=device, dtype=dtype)
        backbone.extract(resize_rgb(image, (64, 64)))  # warm-up (kernels, allocator), not timed
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        synchronise(device)
        start = time.perf_counter()
        attention = backbone.extract(image)
        synchronise(device)
        report["attention_s"] = time.perf_counter() - start

    predictor = M2N2Predictor(config=config, device=device, torch_stages=True)
    start = time.perf_counter()
    predictor.set_attention(image, attention)
    synchronise(device)
    report["prepare_s"] = time.perf_counter() - start
    report["prepare_stages_s"] = dict(predictor.image_timings)
    report["operator_mib"] = predictor.operator.nbytes / 2**20

    clicks = click_sequence(args.image_size, args.clicks)
    times, stages, masks = [], [], []
    for k in range(1, len(clicks) + 1):
        points, labels = zip(*clicks[:k])
        start = time.perf_counter()
        prediction = predictor.predict(list(points), list(labels))
        synchronise(device)
        times.append(time.perf_counter() - start)
        stages.append(prediction.timings)
        masks.append(prediction.mask)
    # What a user waits for a new image: its attention, the preparation and the first click.
    report["first_mask_s"] = report["attention_s"] + report["prepare_s"] + times[0]
    report["click_median_s"] = statistics.median(times)
    report["click_p95_s"] = float(np.percentile(times, 95))
    report["click_stages_median_s"] = {key: statistics.median(s.get(key, 0.0) for s in stages) for key in stages[0]}
    report["click_s"] = times
    if device.type == "cuda":
        report["peak_gpu_mib"] = torch.cuda.max_memory_allocated(device) / 2**20

    # The CPU (numpy) path on the same attention: the masks of the first clicks must agree.
    count = min(args.agreement_clicks, len(clicks))
    if count:
        start = time.perf_counter()
        reference = M2N2Predictor(config=config, device="cpu", torch_stages=False)
        reference.set_attention(image, attention.cpu())
        ious, equal = [], []
        for k in range(1, count + 1):
            points, labels = zip(*clicks[:k])
            mask = reference.predict(list(points), list(labels)).mask
            ious.append(iou(mask, masks[k - 1]))
            equal.append(float((mask == masks[k - 1]).mean()))
        report["agreement"] = {"clicks": count, "mean_iou": float(np.mean(ious)), "min_iou": float(np.min(ious)),
                               "pixels_equal": float(np.mean(equal)), "cpu_seconds": time.perf_counter() - start}
    return report


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--scale", choices=["sd2", "tiny"], default="sd2",
                        help="sd2: the published architecture; tiny: the same blocks at tiny widths")
    parser.add_argument("--resolution", type=int, default=128, help="R of the attention")
    parser.add_argument("--image-size", type=int, default=1024, help="side of the square test photo")
    parser.add_argument("--clicks", type=int, default=20)
    parser.add_argument("--agreement-clicks", type=int, default=2,
                        help="clicks compared with the CPU path (a CPU click at R = 128 takes seconds)")
    parser.add_argument("--preset", choices=["exact", "fast"], default="exact")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(json.dumps(run(args), indent=2))


if __name__ == "__main__":
    main()
