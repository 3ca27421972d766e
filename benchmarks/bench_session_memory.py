"""Memory one app session holds, at several attention resolutions and click counts.

A session (what ``gr.State`` keeps per user) holds the image (original and working copy), the
transition operator in fp16 on the CPU, and the cached Markov-map of every click. This script
builds real sessions and reports the bytes of every array and tensor they hold, and the size of
the session pickled (what ZeroGPU sends to and from its GPU worker). Usage::

    python benchmarks/bench_session_memory.py                         # R = 64 and 128, 512 x 512
    python benchmarks/bench_session_memory.py --resolutions 64 --size 1024 --clicks 10
"""

import argparse
import json
import pickle
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from m2n2 import M2N2Config  # noqa: E402
from m2n2.image import resize_rgb  # noqa: E402
from m2n2.session import Session, register_backbones  # noqa: E402


class AffinityBackbone:
    """Colour/position affinity attention: the same tensor shapes as any backbone."""

    name = "benchmark affinity"
    reason = None

    def __init__(self, resolution: int):
        self.resolution = resolution
        self.device = torch.device("cpu")
        self.description = f"benchmark affinity, R = {resolution}, cpu fp32"

    def extract(self, image: np.ndarray) -> torch.Tensor:
        r = self.resolution
        colour = torch.from_numpy(resize_rgb(image, (r, r)).reshape(-1, 3).astype(np.float32) / 255.0)
        rows, cols = torch.meshgrid(torch.arange(r), torch.arange(r), indexing="ij")
        position = torch.stack([rows, cols], dim=-1).reshape(-1, 2).float() / r
        logits = torch.cdist(colour, colour).square_().div_(-0.05)
        logits.sub_(torch.cdist(position, position).square_().div_(0.05))
        return torch.softmax(logits, dim=1).reshape(r, r, r, r)


def backbone_factory(resolution: int):
    """The colour backbone when the package has it, else the inline affinity above."""
    try:
        from m2n2.backbones import load
    except ImportError:
        return AffinityBackbone(resolution)
    return load("color", resolution=resolution, device="cpu")


def measure(resolution: int, size: int, clicks: int) -> dict:
    from skimage import data
    image = resize_rgb(data.astronaut(), (size, size))
    register_backbones("bench", backbone_factory)
    session = Session("bench", resolution, M2N2Config.fast())  # the app's settings
    start = time.perf_counter()
    session.set_image(image)
    rows = [{"clicks": 0, "seconds": round(time.perf_counter() - start, 2),
             "total_mib": round(session.memory_bytes() / 2 ** 20, 1)}]
    rng = np.random.default_rng(0)
    for k in range(1, clicks + 1):
        start = time.perf_counter()
        h, w = session.display_image.shape[:2]
        session.click(float(rng.integers(w)), float(rng.integers(h)), int(k % 3 != 0))
        rows.append({"clicks": k, "seconds": round(time.perf_counter() - start, 2)})
        if k in (1, clicks):
            rows[-1].update(total_mib=round(session.memory_bytes() / 2 ** 20, 1),
                            pickled_mib=round(len(pickle.dumps(session)) / 2 ** 20, 1))
    operator_mib = session.predictor.operator.nbytes / 2 ** 20
    session.reset()
    return {"resolution": resolution, "image": f"{size} x {size}", "backbone": session.backbone.description,
            "operator": f"{session.predictor.operator.dtype}, {operator_mib:.1f} MiB", "clicks": rows,
            "mib_without_clicks": round(session.memory_bytes() / 2 ** 20, 1)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolutions", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--size", type=int, default=512, help="side of the (square) test photo in pixels")
    parser.add_argument("--clicks", type=int, default=5)
    args = parser.parse_args(argv)
    results = [measure(r, args.size, args.clicks) for r in args.resolutions]
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
