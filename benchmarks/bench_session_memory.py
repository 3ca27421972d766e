"""Memory one app user costs, at several attention resolutions and click counts, and what crosses the
GPU boundary.

The user's ``gr.State`` (a :class:`m2n2.studio.session.Session`) is plain data: the image, its
working copy, the clicks and the latest mask. The prepared image (the transition operator in
fp16, the guide and the cached Markov-map of every click) lives in the serving process's store,
on the compute device. This script drives the app's GPU functions as the app does and reports the
bytes held in the store, the pickled size of the session, and the pickled size of what one click
sends to and gets back from :func:`m2n2.studio.gpu.segment` (what ZeroGPU moves). Usage::

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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from m2n2 import M2N2Config  # noqa: E402
from m2n2.backbones import load  # noqa: E402
from m2n2.config import add_preset_argument, preset_from_args  # noqa: E402
from m2n2.image import resize_rgb  # noqa: E402
from m2n2.studio import gpu, serving  # noqa: E402
from m2n2.studio.session import Session, Shown  # noqa: E402


def backbone_factory(resolution: int):
    """The color backbone at R = ``resolution`` on the CPU."""
    return load("color", resolution=resolution, device="cpu")


def measure(resolution: int, size: int, clicks: int, preset: str = "fast") -> dict:
    from skimage import data
    image = resize_rgb(data.astronaut(), (size, size))
    config = M2N2Config.preset(preset)
    started = serving.start(serving.Options(backbone="color", resolution=resolution), backbone_factory)
    session = Session(resolution, config)
    start = time.perf_counter()
    prepared = gpu.prepare(started, session.next_key, image, resolution, config)
    session.set_image(image, prepared.working, prepared.resolution, prepared.seconds)
    rows = [{"clicks": 0, "seconds": round(time.perf_counter() - start, 2),
             "store_mib": round(started.store.bytes / 2 ** 20, 1)}]
    rng = np.random.default_rng(0)
    for k in range(1, clicks + 1):
        h, w = session.display_image.shape[:2]
        session.clicks.append(session.click_at(float(rng.integers(w)), float(rng.integers(h)), int(k % 3 != 0)))
        points, labels = session.points
        start = time.perf_counter()
        result = gpu.segment(started, session.key, points, labels, None, config, session.image, resolution)
        session.shown = Shown(result.mask, float(result.last.threshold), False)
        rows.append({"clicks": k, "seconds": round(time.perf_counter() - start, 2)})
        if k in (1, clicks):
            sent = len(pickle.dumps(gpu.SegmentJob(session.key, points, labels, None, config, session.image,
                                                   resolution)))  # what the app sends: the image goes along
            rows[-1].update(store_mib=round(started.store.bytes / 2 ** 20, 1),
                            session_pickled_mib=round(len(pickle.dumps(session)) / 2 ** 20, 2),
                            click_sends_kib=round(sent / 2 ** 10, 1),
                            click_returns_mib=round(len(pickle.dumps(result)) / 2 ** 20, 2))
    operator = started.store.get(session.key).operator
    return {"resolution": resolution, "image": f"{size} x {size}",
            "backbone": started.backbones.get(resolution).description,
            "operator": f"{operator.dtype}, {operator.nbytes / 2 ** 20:.1f} MiB, stays on {operator.device}",
            "clicks": rows}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolutions", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--size", type=int, default=512, help="side of the (square) test photo in pixels")
    parser.add_argument("--clicks", type=int, default=5)
    add_preset_argument(parser, default="fast", help_default="fast, the app's on a CPU")
    args = parser.parse_args(argv)
    results = [measure(r, args.size, args.clicks, preset_from_args(args)) for r in args.resolutions]
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
