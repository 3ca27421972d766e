"""The colour-affinity fallback: training-free attention from the image itself (no Stable Diffusion).

Each of the R x R cells of the (area-)downscaled image attends to every other cell with a
Gaussian weight of their CIE-Lab colour distance and their spatial distance; rows are normalised.
It has none of SD2's semantics (an object of two colours is two objects to it), but it makes the
app, the tests and the benchmarks work on any machine.
"""

from __future__ import annotations

import numpy as np
import torch
from skimage.color import rgb2lab

from ..image import as_rgb_uint8, resize_rgb

_ROW_CHUNK = 2048


class ColorAffinityBackbone:
    """Gaussian colour/position affinities between attention cells.

    Parameters
    ----------
    resolution : int
        R (the attention grid is R x R).
    sigma_color : float
        Gaussian sigma on CIE-Lab distance (Lab units; L spans 0-100).
    sigma_position : float
        Gaussian sigma on cell distance, as a fraction of R (so results do not depend on R).
    device : str or torch.device
        Where to compute.
    """

    name = "colour-affinity fallback"

    def __init__(self, resolution: int = 64, sigma_color: float = 10.0, sigma_position: float = 0.125,
                 device="cpu"):
        if resolution < 2:
            raise ValueError("resolution must be >= 2")
        self.resolution = int(resolution)
        self.sigma_color = float(sigma_color)
        self.sigma_position = float(sigma_position)
        self.device = torch.device(device)
        self.reason: str | None = None

    @property
    def description(self) -> str:
        text = f"{self.name} (no Stable Diffusion), R = {self.resolution}, {self.device.type}"
        return f"{text} ({self.reason})" if self.reason else text

    def extract(self, image) -> torch.Tensor:
        """(R, R, R, R) fp32 attention of an image; every [i, j] slice sums to 1."""
        r = self.resolution
        small = resize_rgb(as_rgb_uint8(image), (r, r))
        lab = torch.tensor(rgb2lab(small).reshape(-1, 3), dtype=torch.float32, device=self.device)
        ys, xs = torch.meshgrid(torch.arange(r, dtype=torch.float32, device=self.device),
                                torch.arange(r, dtype=torch.float32, device=self.device), indexing="ij")
        position = torch.stack([ys.flatten(), xs.flatten()], dim=1) / r
        n = r * r
        out = torch.empty((n, n), dtype=torch.float32, device=self.device)
        inv_c = 1.0 / (2.0 * self.sigma_color ** 2)
        inv_p = 1.0 / (2.0 * self.sigma_position ** 2)
        for start in range(0, n, _ROW_CHUNK):
            stop = start + _ROW_CHUNK
            logits = torch.cdist(lab[start:stop], lab).square_().mul_(-inv_c)
            logits.sub_(torch.cdist(position[start:stop], position).square_().mul_(inv_p))
            out[start:stop] = torch.softmax(logits, dim=1)  # softmax = exp, then rows normalised
        return out.reshape(r, r, r, r)
