"""Bit-identity of maps and masks between this checkout and another one, given the same attention.

For the colour backbone, on the first ``--images`` GrabCut images and on the app's examples, for
both presets (``M2N2Config()`` and ``M2N2Config.fast()``) and every ``--resolution``, each
checkout segments the image with a fixed click sequence (one ``predict`` per click, as in the
app: 1, 2, ... clicks, the maps cached between them) and records every mask, every point's final
Markov-map, threshold and distance. The clicks come from the image alone (GrabCut: inside and
outside the ground truth; examples: a seeded pattern), never from a mask, so that a difference
cannot hide behind different clicks. Usage::

    python benchmarks/bit_identity.py --baseline /tmp/old                 # 6 GrabCut + 3 examples
    python benchmarks/bit_identity.py --baseline /tmp/old --images 10 --resolution 32 64 --torch-stages

Each checkout runs in its own subprocess (``PYTHONPATH`` = that checkout, one torch thread unless
``OMP_NUM_THREADS`` says otherwise, so both do the same arithmetic) and saves its arrays to a
temporary ``.npz``; the arrays are then compared exactly (``numpy.array_equal``, NaN equal to
NaN). Prints one line per image and case and a summary; exits 1 on any difference.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
GRABCUT = Path("/work/shared/datasets/GrabCut")
CLICKS = 5


def image_paths(grabcut: Path, count: int, examples: bool) -> list[tuple[str, Path, Path | None]]:
    """(name, image, ground-truth mask or None) of the first ``count`` GrabCut images (sorted by
    name) and of ``examples/*.jpg``."""
    out = []
    if count:
        images = sorted(p for p in (grabcut / "images").iterdir() if p.suffix in (".jpg", ".png"))
        for image in images[:count]:
            out.append((f"grabcut/{image.stem}", image, grabcut / "masks" / f"{image.stem}.png"))
    if examples:
        out += [(f"examples/{p.stem}", p, None) for p in sorted((ROOT / "examples").glob("*.jpg"))]
    return out


def fixed_clicks(image: np.ndarray, label: np.ndarray | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``CLICKS`` clicks (x, y) and labels from the image alone: with a GrabCut label (255
    object, 0 background, 128 the unlabelled band), the object pixel farthest from its border,
    then two more inside and two in the background (seeded); without one, the centre and a
    seeded pattern of alternating labels."""
    from scipy.ndimage import distance_transform_edt
    rng = np.random.default_rng(seed)
    height, width = image.shape[:2]
    if label is None:
        points = [(width // 2, height // 2)] + [(int(rng.integers(width)), int(rng.integers(height)))
                                                for _ in range(CLICKS - 1)]
        labels = [1, 0, 1, 0, 1][:CLICKS]
    else:
        truth, background = label == 255, label == 0
        inside = distance_transform_edt(np.pad(truth, 1))[1:-1, 1:-1]
        y, x = np.unravel_index(np.argmax(inside), inside.shape)
        points, labels = [(int(x), int(y))], [1]
        for positive, where in ((1, truth), (0, background), (1, truth), (0, background)):
            rows, cols = np.nonzero(where)
            k = int(rng.integers(len(rows)))
            points.append((int(cols[k]), int(rows[k])))
            labels.append(positive)
    return np.array(points[:CLICKS], dtype=np.float64), np.array(labels[:CLICKS], dtype=np.int64)


def record(args) -> None:
    """The worker: segment every case with the checkout on ``sys.path`` and save the arrays."""
    import torch
    from PIL import Image

    from m2n2 import M2N2Config, M2N2Predictor
    from m2n2.backbones import load

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    arrays = {}
    for name, path, mask_path in image_paths(Path(args.grabcut), args.images, not args.no_examples):
        image = np.array(Image.open(path).convert("RGB"))
        label = np.array(Image.open(mask_path).convert("L")) if mask_path is not None else None
        points, labels = fixed_clicks(image, label, seed=sum(map(ord, name)))
        for resolution in args.resolution:
            backbone = load("color", resolution=resolution)
            for preset, config in (("exact", M2N2Config()), ("fast", M2N2Config.fast())):
                predictor = M2N2Predictor(backbone, config=config, torch_stages=args.torch_stages or None)
                predictor.set_image(image)
                case = f"{name}|R={resolution}|{preset}"
                for k in range(1, len(points) + 1):
                    prediction = predictor.predict(points[:k], labels[:k])
                    arrays[f"{case}|mask{k}"] = prediction.mask
                last = prediction
                arrays[f"{case}|distance"] = last.distance
                arrays[f"{case}|nearest"] = last.nearest
                arrays[f"{case}|thresholds"] = np.array([p.threshold for p in last.points])
                for j, point in enumerate(last.points):
                    arrays[f"{case}|map{j + 1}"] = point.markov_map
                    arrays[f"{case}|score{j + 1}"] = point.score
    np.savez(args.record, **arrays)


def run_checkout(root: Path, argv: list[str], out: Path) -> float:
    """Run this script's worker on ``root``'s code; return its seconds."""
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, str(Path(__file__).resolve()), *argv, "--record", str(out)],
                          env=env, cwd=root, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"the worker failed for {root}:\n{done.stderr[-3000:]}")
    return time.perf_counter() - start


def compare(args, argv: list[str]) -> int:
    roots = {"current": ROOT, "baseline": Path(args.baseline).resolve()}
    with tempfile.TemporaryDirectory() as folder:
        files = {name: Path(folder) / f"{name}.npz" for name in roots}
        for name, root in roots.items():
            seconds = run_checkout(root, argv, files[name])
            print(f"{name}: {root} ({seconds:.0f} s)", flush=True)
        current, baseline = (dict(np.load(files[name])) for name in ("current", "baseline"))
    cases: dict[str, list[str]] = {}
    for key in sorted(set(current) | set(baseline)):
        case = key.rsplit("|", 1)[0]
        same = key in current and key in baseline and current[key].dtype == baseline[key].dtype and \
            np.array_equal(current[key], baseline[key], equal_nan=current[key].dtype.kind == "f")
        cases.setdefault(case, [])
        if not same:
            cases[case].append(key.rsplit("|", 1)[1])
    for case, differing in cases.items():
        print(f"{case}: {'equal' if not differing else 'UNEQUAL ' + ', '.join(differing)}")
    unequal = sum(bool(d) for d in cases.values())
    arrays = len(set(current) | set(baseline))
    print(f"summary: {len(cases) - unequal} of {len(cases)} cases equal ({arrays} arrays compared, "
          f"masks, Markov-maps, scores, thresholds, distance, nearest); {unequal} unequal")
    return 1 if unequal or not cases else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", help="checkout of another commit to compare with (required unless --record)")
    parser.add_argument("--images", type=int, default=6, help="first N GrabCut images (default 6)")
    parser.add_argument("--grabcut", default=str(GRABCUT), help="GrabCut folder (images/, masks/)")
    parser.add_argument("--no-examples", action="store_true", help="leave out the app's examples/")
    parser.add_argument("--resolution", type=int, nargs="+", default=[32, 64], help="attention R (default 32 64)")
    parser.add_argument("--torch-stages", action="store_true",
                        help="run the per-pixel stages in torch (the device path, on CPU tensors)")
    parser.add_argument("--record", help=argparse.SUPPRESS)  # the worker's output file
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    if args.record:
        record(args)
        return 0
    if not args.baseline:
        parser.error("--baseline DIR is required")
    skip = ("--baseline",)
    worker_argv = [a for i, a in enumerate(argv) if a not in skip and (i == 0 or argv[i - 1] not in skip)]
    return compare(args, worker_argv)


if __name__ == "__main__":
    sys.exit(main())
