"""Colour-affinity fallback: a training-free stand-in for Stable Diffusion attention.

It is NOT Stable Diffusion: each cell of the R x R downscaled image attends to the others with a
Gaussian affinity of CIE-Lab colour and position, rows normalised. It runs anywhere in a fraction
of a second, so the app and the benchmarks work without SD2 weights; its results are those of a
colour model and must be labelled as such.
"""

from __future__ import annotations

import numpy as np
import torch
from skimage.color import rgb2lab

from ..errors import InputError
from ..image import as_rgb_uint8, resize_rgb


class ColorAffinityBackbone:
    """Gaussian colour-and-position affinities between the cells of the downscaled image.

    ``w(p, q) = exp(-|lab_p - lab_q|^2 / (2 sigma_color^2) - |x_p - x_q|^2 / (2 sigma_position^2))``
    with Lab in its usual units (L in [0, 100]) and positions as fractions of the image side, so
    the same settings mean the same thing at every R. Each row is then divided by its sum.

    Parameters
    ----------
    resolution : int
        R. Default 64.
    sigma_color : float
        Colour bandwidth in CIE-Lab units. Default 5.
    sigma_position : float
        Spatial bandwidth as a fraction of the image side. Default 0.2.
    device : str or torch.device, optional
        Where the affinities are computed; default CPU.

    Notes
    -----
    The defaults were chosen by NoC on GrabCut (simulated user, ``M2N2Config.fast()``, R = 64):
    among sigma_color 3-20 and sigma_position 0.02-1 on 16-image subsets, then the best few on
    all 50 images, sigma_color 5 with sigma_position 0.2 needed the fewest clicks. Smaller sigma_position was worse; smaller
    sigma_color sharpens the maps but makes clicks slower (the Markov chain mixes more slowly).
    """

    name = "colour-affinity fallback"
    key = "color"

    def __init__(self, resolution: int = 64, sigma_color: float = 5.0,
                 sigma_position: float = 0.2, device: str | torch.device | None = None):
        if int(resolution) < 2:
            raise InputError(f"resolution must be >= 2, got {resolution}")
        if not (sigma_color > 0 and sigma_position > 0):
            raise InputError("sigma_color and sigma_position must be > 0")
        self.resolution = int(resolution)
        self.sigma_color = float(sigma_color)
        self.sigma_position = float(sigma_position)
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.reason = None
        self.description = (f"colour-affinity fallback (no Stable Diffusion), "
                            f"R = {self.resolution}, {self.device.type}")

    def features(self, image) -> torch.Tensor:
        """(N, 5) cell features scaled so that the affinity is ``exp(-|f_p - f_q|^2 / 2)``."""
        r = self.resolution
        rgb = resize_rgb(as_rgb_uint8(image), (r, r))
        lab = rgb2lab(rgb).reshape(-1, 3) / self.sigma_color
        rows, cols = np.mgrid[0:r, 0:r]
        position = np.stack([rows.ravel(), cols.ravel()], axis=1) / (r * self.sigma_position)
        features = np.concatenate([lab, position], axis=1)
        # Centring keeps the fp32 expansion |a|^2 + |b|^2 - 2ab accurate.
        features -= features.mean(axis=0)
        return torch.from_numpy(features).to(self.device, torch.float32)

    def extract(self, image) -> torch.Tensor:
        """Attention tensor (R, R, R, R), fp32 on the CPU, every [i, j] slice summing to 1."""
        f = self.features(image)
        squared = (f * f).sum(dim=1)
        # Everything below works in place on the one N x N output: no N x N temporaries, so
        # R = 128 (1 GiB output) needs no more memory than the output itself.
        attention = torch.mm(f, f.T)
        attention.mul_(-2.0).add_(squared[:, None]).add_(squared[None, :])
        attention.clamp_(min=0.0).mul_(-0.5).exp_()
        attention.div_(attention.sum(dim=1, keepdim=True))
        r = self.resolution
        return attention.view(r, r, r, r).cpu()
