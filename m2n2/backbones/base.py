"""What every attention backbone provides."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
import torch


@runtime_checkable
class Backbone(Protocol):
    """A source of self-attention tensors.

    Attributes
    ----------
    name : str
        Human-readable name, e.g. ``"Stable Diffusion 2"`` or ``"colour-affinity fallback"``.
    resolution : int
        R: the attention is an R x R grid of cells.
    device : torch.device
        Where ``extract`` computes.
    description : str
        One line for status bars: name, R, device and precision.
    reason : str or None
        Set by ``load("auto")`` when it fell back: why (one line, for the UI).
    key : str, optional
        The registry name (``"sd2"``, ``"dinov2"``...), which recipes record.
    wants_original : bool, optional
        True when ``extract`` should get the original image (it resizes it itself, as the
        learned backbones do); absent or False: the predictor's working copy.
    """

    name: str
    resolution: int
    device: torch.device
    description: str
    reason: str | None

    def extract(self, image: np.ndarray) -> torch.Tensor:
        """Attention of an RGB uint8 image (H, W, 3): fp32 (R, R, R, R) on ``device``, each [i, j]
        slice a non-negative map summing to 1 (the attention of cell (i, j) over all cells)."""
        ...
