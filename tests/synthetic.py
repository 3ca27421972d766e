"""Synthetic images and attention tensors with a known answer, shared by the tests."""

from __future__ import annotations

import numpy as np
import torch

from m2n2.backbones import load


def region_attention(labels: np.ndarray, leak: float = 0.01) -> torch.Tensor:
    """Block-structured attention: a cell attends to cells of its own region, ``leak`` elsewhere.

    Parameters
    ----------
    labels : numpy.ndarray
        (R, R) integer region of every attention cell.
    """
    flat = labels.ravel()
    weights = np.where(flat[:, None] == flat[None, :], 1.0, leak)
    weights /= weights.sum(axis=1, keepdims=True)
    r = labels.shape[0]
    return torch.tensor(weights.reshape(r, r, r, r), dtype=torch.float32)


def three_regions(height: int = 64, width: int = 96, resolution: int = 16):
    """An image of three vertical colour bands (left 1/4, middle 1/2, right 1/4) and its attention.

    Returns
    -------
    image : (H, W, 3) uint8
    attention : (R, R, R, R) tensor
    truth : (H, W) int region of every pixel (0 left, 1 middle, 2 right)
    """
    cols = np.arange(width)
    truth_row = np.where(cols < width // 4, 0, np.where(cols < 3 * width // 4, 1, 2))
    truth = np.repeat(truth_row[None], height, axis=0)
    colours = np.array([[220, 40, 40], [40, 200, 40], [40, 40, 220]], dtype=np.uint8)
    image = colours[truth]
    cell_cols = (np.arange(resolution) + 0.5) * width / resolution
    cell_row = np.where(cell_cols < width // 4, 0, np.where(cell_cols < 3 * width // 4, 1, 2))
    labels = np.repeat(cell_row[None], resolution, axis=0)
    return image, region_attention(labels), truth


def random_attention(resolution: int, seed: int = 0, sharpness: float = 6.0) -> torch.Tensor:
    """A random, row-stochastic attention tensor with some contrast."""
    generator = torch.Generator().manual_seed(seed)
    n = resolution * resolution
    logits = torch.randn(n, n, generator=generator) * sharpness / 3
    return torch.softmax(logits, dim=1).reshape(resolution, resolution, resolution, resolution)


class CountingBackbone:
    """The colour-affinity backbone, counting how often it runs."""

    def __init__(self, resolution: int):
        self.inner = load("color", resolution=resolution)
        self.calls = 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def extract(self, image: np.ndarray) -> torch.Tensor:
        self.calls += 1
        return self.inner.extract(image)


def square_image(height: int = 60, width: int = 80) -> tuple[np.ndarray, np.ndarray]:
    """A brownish square on a darker textured background, and the square's mask.

    The contrast is moderate on purpose: the random walk then reaches every cell in a few steps
    (a stark contrast leaves cells that never cross and costs the full 1000 steps per click).
    """
    rng = np.random.default_rng(0)
    image = (rng.random((height, width, 3)) * 30 + 60).astype(np.uint8)
    truth = np.zeros((height, width), dtype=bool)
    truth[height // 4: 3 * height // 4, width // 4: width // 2 + width // 8] = True
    image[truth] = (120, 110, 80)
    return image, truth


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two bool masks; 0 when both are empty (so that an empty
    prediction never matches by accident)."""
    return float((a & b).sum() / max((a | b).sum(), 1))


def centre_of(truth: np.ndarray) -> tuple[float, float]:
    rows, cols = np.nonzero(truth)
    return float(cols.mean()), float(rows.mean())


def select_event(x, y):
    """The event data of a click at (x, y) on a Gradio image (gradio imported only here)."""
    import gradio as gr
    return gr.SelectData(None, {"index": [x, y], "value": None})


def record_leap_threads(monkeypatch):
    """Record, for each leap the predictors compute, its thread's name and the threads allowed
    there, with torch's own threads at one (the app's jobs). Returns ``of(predictor)``: the records
    of that predictor's leap only (other tests' background work may still be running)."""
    import threading

    import m2n2.predictor as predictor_module
    from m2n2.operator import with_leap
    from m2n2.threads import allowed_threads
    seen = []

    def recorded(operator, steps, *shared):
        result = with_leap(operator, steps, *shared)
        seen.append((threading.current_thread().name, allowed_threads(), result))
        return result

    monkeypatch.setattr(predictor_module, "with_leap", recorded)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    return lambda predictor: [(name, allowed) for name, allowed, result in seen if result is predictor.operator]
