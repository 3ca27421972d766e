"""Bytes a prepared image and a click bring from the compute device to the host.

On a GPU every ``.cpu()`` copies device memory to the host; on a CPU the same calls cost
nothing, but they are the same calls. This script counts the bytes of every tensor
``.cpu()`` is called on while (1) an image is prepared through Stable Diffusion 2's capture
(a tiny random-weight SD2 from ``tests/tiny_sd2.py``: the attention's size is R^4 x 4 bytes
whatever the model) and (2) the app's GPU boundary segments clicks with the device path
(``torch_stages``, as on CUDA, here with CPU tensors). Run it on any checkout to compare::

    python benchmarks/bench_transfers.py                                   # this checkout
    PYTHONPATH=/work/base-c54c95d python benchmarks/bench_transfers.py     # another one

Prints JSON: bytes per image (the attention; on a GPU it then went back to the device, the
same bytes again) and bytes per click at each click count.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


class HostCopies:
    """Counts the bytes of every tensor whose ``.cpu()`` is called while it is active."""

    def __init__(self):
        self.bytes = 0
        self._cpu = torch.Tensor.cpu

    def __enter__(self):
        counter, original = self, self._cpu

        def cpu(tensor, *args, **kwargs):
            counter.bytes += tensor.numel() * tensor.element_size()
            return original(tensor, *args, **kwargs)

        torch.Tensor.cpu = cpu
        return self

    def __exit__(self, *exc):
        torch.Tensor.cpu = self._cpu


def per_image(resolution: int) -> int:
    """Bytes ``.cpu()``-copied while SD2's attention is extracted and handed to a predictor."""
    from tiny_sd2 import build_tiny_sd2

    from m2n2 import M2N2Predictor
    from m2n2.backbones.sd2 import SD2Backbone
    with tempfile.TemporaryDirectory(prefix="m2n2-transfers-") as tmp:
        backbone = SD2Backbone(model=str(build_tiny_sd2(Path(tmp))), resolution=resolution, device="cpu",
                               dtype=torch.float32)
        predictor = M2N2Predictor(backbone, torch_stages=True)
        image = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
        with HostCopies() as copies:
            predictor.set_image(image)
    return copies.bytes


def per_click(size: int, resolution: int, clicks: int) -> list[dict]:
    """Bytes ``.cpu()``-copied by each click through the app's GPU boundary (device path)."""
    from m2n2 import M2N2Config, M2N2Predictor
    from m2n2.studio import gpu, serving
    from synthetic import square_image

    M2N2Predictor.torch_stages = property(lambda self: True)  # the device path, as on CUDA
    started = serving.start(serving.Options(backbone="color", resolution=resolution, max_side=size,
                                            budget_bytes=2**32))
    config = M2N2Config(max_side=size)
    image = square_image(size, size)[0]
    gpu.prepare(started, "bench/1", image, resolution, config)
    rng = np.random.default_rng(0)
    points = rng.uniform(0, size - 1, (clicks, 2))
    labels = (np.arange(clicks) % 3 != 2).astype(np.int64)
    rows = []
    for k in range(1, clicks + 1):
        with HostCopies() as copies:
            gpu.segment(started, "bench/1", points[:k], labels[:k], None, config)
        rows.append({"clicks": k, "host_mib": round(copies.bytes / 2**20, 3)})
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolution", type=int, default=16, help="R of the per-image count (SD2 capture)")
    parser.add_argument("--size", type=int, default=256, help="working side of the per-click count")
    parser.add_argument("--click-resolution", type=int, default=16)
    parser.add_argument("--clicks", type=int, default=5)
    args = parser.parse_args(argv)
    image = per_image(args.resolution)
    report = {"image_attention_mib": round(image / 2**20, 3),
              "attention_bytes": args.resolution ** 4 * 4, "resolution": args.resolution,
              "working": [args.size, args.size], "clicks": per_click(args.size, args.click_resolution, args.clicks)}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
