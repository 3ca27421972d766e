"""The whole click on a GPU: SD2's real architectures, R = 128 attention, 20 clicks, CUDA vs CPU.

One command (a few minutes on one H100 or H200, no download)::

    python benchmarks/gpu_check.py                       # CUDA, SD2 architecture, R = 128, 1024 px

It builds Stable Diffusion 2's U-Net and VAE with their published configurations
(``stabilityai/stable-diffusion-2``: U-Net channels 320/640/1280/1280, head counts 5/10/20/20,
cross-attention 1024, linear projections; VAE channels 128/256/512/512) and random weights,
writes them as a local diffusers folder (with a one-layer text encoder of width 1024: only the
empty prompt's embedding is used) and loads it through :mod:`m2n2.backbones.sd2` like real
weights. It warms up at R = 8 (a 64 x 64 input, seconds), extracts the attention of a
1024 x 1024 photo in fp16 (left on the GPU), and for each preset (exact, the app's default on
CUDA, and fast) prepares the predictor on the device, makes ``--clicks`` clicks and prints, as
JSON: attention time, each preparation stage's time, the first mask's time (attention,
preparation and first click), per-click median and p95 with a stage
breakdown (every stage synchronised with CUDA before its clock is read), peak GPU memory, the
bytes the image and each click bring to the host (the app's ``keep="last"`` and every point's
arrays, c54c95d's), the ZeroGPU durations the app would request next to the measured times, and
the agreement of the masks with the CPU (numpy) path on the same attention, click by click, at
``--agreement-resolution`` (R = 64 by default with CUDA: a CPU prepares R = 128 in minutes) and
bounded by ``--agreement-seconds`` per preset.

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
from m2n2.config import PRESETS  # noqa: E402
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
# Stable Diffusion 1's (``CompVis/stable-diffusion-v1-1``): 8 heads everywhere, cross-attention 768,
# convolutional projections, 512-pixel VAE; epsilon prediction.
SD1_UNET = {**SD2_UNET, "sample_size": 64, "attention_head_dim": 8, "cross_attention_dim": 768,
            "use_linear_projection": False}
SD1_VAE = {**SD2_VAE, "sample_size": 512}
#: scale -> (U-Net config, VAE config, the scheduler's prediction type)
ARCHITECTURES = {"sd2": (SD2_UNET, SD2_VAE, "v_prediction"), "sd1": (SD1_UNET, SD1_VAE, "epsilon"),
                 "tiny": (TINY_UNET, TINY_VAE, "v_prediction")}


def build_model(folder: Path, scale: str, dtype: torch.dtype, seed: int = 0) -> Path:
    """Write a diffusers folder of :data:`ARCHITECTURES` ``[scale]`` with random weights; return it."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    sys.path.insert(0, str(ROOT / "tests"))
    from tiny_sd2 import _SYMBOLS, _write_tokenizer

    unet_config, vae_config, prediction = ARCHITECTURES[scale]
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
    DDIMScheduler(prediction_type=prediction, beta_schedule="scaled_linear", beta_start=0.00085,
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




def clicks_on_device(predictor, clicks, device, keep: str) -> dict:
    """Every click in turn (as the app: one new point each time); synchronised times, bytes back."""
    times, stages, masks, host = [], [], [], []
    for k in range(1, len(clicks) + 1):
        points, labels = zip(*clicks[:k])
        synchronise(device)
        start = time.perf_counter()
        prediction = predictor.predict(list(points), list(labels), keep=keep)
        synchronise(device)
        times.append(time.perf_counter() - start)
        stages.append(prediction.timings)
        masks.append(prediction.mask)
        host.append(prediction.host_bytes)
    return {"times": times, "stages": stages, "masks": masks, "host_bytes": host}


def agreement(attention, image, config, clicks, device, seconds: float) -> dict:
    """Masks of the device path against the CPU (numpy) path on the same attention, click by click,
    until ``seconds`` of CPU work are spent (at least one click)."""
    started = time.perf_counter()
    on_device = M2N2Predictor(config=config, device=device, torch_stages=True)
    on_device.set_attention(image, attention)
    reference = M2N2Predictor(config=config, device="cpu", torch_stages=False)
    reference.set_attention(image, attention.cpu())
    ious, equal = [], []
    for k in range(1, len(clicks) + 1):
        points, labels = zip(*clicks[:k])
        expected = reference.predict(list(points), list(labels), keep="none").mask
        got = on_device.predict(list(points), list(labels), keep="none").mask
        ious.append(iou(expected, got))
        equal.append(float((expected == got).mean()))
        if time.perf_counter() - started > seconds:
            break
    return {"resolution": int(attention.shape[0]), "clicks": len(ious), "mean_iou": float(np.mean(ious)),
            "min_iou": float(np.min(ious)), "pixels_equal": float(np.mean(equal)),
            "masks_identical": sum(e == 1.0 for e in equal), "seconds": time.perf_counter() - started}


def run(args) -> dict:
    from m2n2.backbones.sd2 import SD2Backbone
    from m2n2.studio.durations import requested_seconds
    from skimage import data

    device = torch.device(args.device)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    image = resize_rgb(data.astronaut(), (args.image_size, args.image_size))
    report = {"device": str(device), "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
              "scale": args.scale, "resolution": args.resolution, "image": [args.image_size] * 2,
              "clicks": args.clicks, "torch": torch.__version__,
              "fp32_precision_defaults": {"matmul": torch.backends.cuda.matmul.fp32_precision,
                                          "cudnn_conv": torch.backends.cudnn.conv.fp32_precision}}
    clicks = click_sequence(args.image_size, args.clicks)

    with tempfile.TemporaryDirectory(prefix="m2n2-gpu-check-") as tmp:
        start = time.perf_counter()
        folder = build_model(Path(tmp), args.scale, dtype)
        report["build_model_s"] = time.perf_counter() - start
        backbone = SD2Backbone(model=str(folder), resolution=args.resolution, device=device, dtype=dtype)
        # Warm-up at R = 8 (a 64 x 64 input; the same loaded model): kernels and allocator, not timed.
        SD2Backbone(model=str(folder), resolution=8, device=device, dtype=dtype).extract(image)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        synchronise(device)
        start = time.perf_counter()
        attention = backbone.extract(image)
        synchronise(device)
        report["attention_s"] = time.perf_counter() - start
        report["attention_device"] = str(attention.device)
        small = None
        if args.agreement_clicks and args.agreement_resolution != args.resolution:
            small = SD2Backbone(model=str(folder), resolution=args.agreement_resolution, device=device,
                                dtype=dtype).extract(image)

    report["presets"] = {}
    for name in args.presets:
        config = M2N2Config.preset(name)
        out = report["presets"][name] = {}
        predictor = M2N2Predictor(config=config, device=device, torch_stages=True)
        synchronise(device)
        start = time.perf_counter()
        predictor.set_attention(image, attention)
        synchronise(device)
        out["prepare_s"] = time.perf_counter() - start
        out["prepare_stages_s"] = dict(predictor.image_timings)  # each synchronised
        out["image_transfer_bytes"] = predictor.image_transfer_bytes
        out["operator_mib"] = predictor.operator.nbytes / 2**20
        app = clicks_on_device(predictor, clicks, device, keep="last")  # what the app asks for
        times, stages = app["times"], app["stages"]
        out["click_median_s"] = statistics.median(times)
        out["click_p95_s"] = float(np.percentile(times, 95))
        out["click_stages_median_s"] = {key: statistics.median(s.get(key, 0.0) for s in stages) for key in stages[0]}
        out["click_s"] = times
        # What a user waits for a new image: its attention, the preparation and the first click.
        out["first_mask_s"] = report["attention_s"] + out["prepare_s"] + times[0]
        out["click_host_bytes"] = {"app (keep='last')": app["host_bytes"]}
        predictor.clear_cache()
        every = clicks_on_device(predictor, clicks, device, keep="all")  # c54c95d's: every point's arrays
        out["click_host_bytes"]["all points (keep='all')"] = every["host_bytes"]
        out["masks_same_with_keep_last_and_all"] = all(
            np.array_equal(a, b) for a, b in zip(app["masks"], every["masks"]))
        height, width = predictor.image.shape[:2]
        out["duration_requested_s"] = {
            "prepare": requested_seconds(args.resolution, image.shape[:2], 0, True, config),
            "click (may prepare)": requested_seconds(args.resolution, image.shape[:2], 1, True, config),
            f"click {len(clicks)} (may prepare)": requested_seconds(args.resolution, image.shape[:2], len(clicks),
                                                                    True, config)}
        out["duration_measured_s"] = {"prepare": report["attention_s"] + out["prepare_s"],
                                      "click_max": max(times)}
        if device.type == "cuda":
            out["peak_gpu_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
        del predictor
        if args.agreement_clicks:
            compared = small if small is not None else attention
            out["agreement"] = agreement(compared, image, config, clicks[:args.agreement_clicks], device,
                                         args.agreement_seconds)
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
    return report


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--scale", choices=["sd2", "tiny"], default="sd2",
                        help="sd2: the published architecture; tiny: the same blocks at tiny widths")
    parser.add_argument("--resolution", type=int, default=128, help="R of the attention")
    parser.add_argument("--image-size", type=int, default=1024, help="side of the square test photo")
    parser.add_argument("--clicks", type=int, default=20)
    parser.add_argument("--agreement-clicks", type=int, default=5, help="clicks compared with the CPU path")
    parser.add_argument("--agreement-resolution", type=int, default=None,
                        help="R of the CPU comparison (default: 64 with CUDA, where the CPU prepares R = 128 "
                             "in minutes; else R)")
    parser.add_argument("--agreement-seconds", type=float, default=60.0,
                        help="stop the CPU comparison of a preset after this many seconds (at least one click)")
    parser.add_argument("--presets", nargs="+", choices=PRESETS, default=list(PRESETS))
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.agreement_resolution is None:
        args.agreement_resolution = 64 if args.device.startswith("cuda") and args.resolution > 64 else args.resolution
    if args.threads:
        torch.set_num_threads(args.threads)
    print(json.dumps(run(args), indent=2))


if __name__ == "__main__":
    main()
