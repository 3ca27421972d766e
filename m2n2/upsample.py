"""Joint bilateral upsampling (Kopf et al. 2007) as M2N2 modifies it.

Two changes from the original: dense sampling (the low-resolution map is first upsampled
bilinearly and the filter then runs at full resolution, with its spatial Gaussian measured in
low-resolution pixels) and an isotropic Gaussian range kernel on RGB in [0, 1].
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# Colour given to pixels outside the image: far enough from [0, 1] that their range weight is 0.
_OUTSIDE = 1.0e3


def auto_stride(scale: float, sigma_spatial: float) -> int:
    """Sampling stride (full-resolution pixels) used when the config asks for ``jbu_stride=0``.

    One spatial sigma: 7 samples per axis inside the 3-sigma window. A Gaussian sampled at a
    spacing of one sigma sums to its integral within about 1e-8 (Poisson summation), so the
    spatial kernel is represented exactly; only the range term is sampled more coarsely.
    """
    return max(1, int(round(scale * sigma_spatial)))


def joint_bilateral_upsample(low: torch.Tensor, guide: torch.Tensor, sigma_spatial: float = 1.0,
                             sigma_range: float = 0.1, stride: int | None = 1) -> torch.Tensor:
    """Upsample low-resolution maps to the guide's size, following the guide's edges.

    Parameters
    ----------
    low : torch.Tensor
        (R, R) or (K, R, R) maps.
    guide : torch.Tensor
        (3, H, W) RGB image in [0, 1], on the device to compute on.
    sigma_spatial : float
        Spatial sigma in low-resolution pixels; the window is cut at 3 sigma.
    sigma_range : float
        Range sigma of the Gaussian on RGB distance.
    stride : int or None
        Take every ``stride``-th full-resolution pixel of the window in each direction (1 is
        the paper's dense sampling; larger strides are a cheaper quadrature of the same sum).
        None picks :func:`auto_stride` for each axis.

    Returns
    -------
    torch.Tensor
        (H, W) or (K, H, W) fp32 maps.
    """
    single = low.dim() == 2
    maps = low.reshape(-1, *low.shape[-2:]).to(device=guide.device, dtype=torch.float32)
    res_y, res_x = maps.shape[-2:]
    _, height, width = guide.shape
    dense = F.interpolate(maps[None], size=(height, width), mode="bilinear", align_corners=True)[0]

    # Full-resolution pixels per low-resolution pixel, per axis.
    scale_y = (height - 1) / max(res_y - 1, 1)
    scale_x = (width - 1) / max(res_x - 1, 1)
    rad_y = int(math.floor(3 * sigma_spatial * scale_y))
    rad_x = int(math.floor(3 * sigma_spatial * scale_x))
    stride_y = stride or auto_stride(scale_y, sigma_spatial)
    stride_x = stride or auto_stride(scale_x, sigma_spatial)
    offsets_y = _symmetric_offsets(rad_y, stride_y)
    offsets_x = _symmetric_offsets(rad_x, stride_x)

    pad_y, pad_x = offsets_y[-1], offsets_x[-1]
    guide = guide.float()
    padded_guide = F.pad(guide, (pad_x, pad_x, pad_y, pad_y), value=_OUTSIDE)
    padded_maps = F.pad(dense, (pad_x, pad_x, pad_y, pad_y))
    inv_two_var_r = 1.0 / (2.0 * sigma_range ** 2)

    numerator = torch.zeros_like(dense)
    denominator = torch.zeros((height, width), dtype=torch.float32, device=guide.device)
    for dy in offsets_y:
        for dx in offsets_x:
            log_spatial = -((dy / scale_y) ** 2 + (dx / scale_x) ** 2) / (2.0 * sigma_spatial ** 2)
            ys, xs = pad_y + dy, pad_x + dx
            diff = padded_guide[:, ys:ys + height, xs:xs + width] - guide
            weight = diff.square_().sum(dim=0).mul_(-inv_two_var_r).add_(log_spatial).exp_()
            denominator += weight
            numerator.addcmul_(padded_maps[:, ys:ys + height, xs:xs + width], weight)
    result = numerator / denominator
    return result[0] if single else result


def _symmetric_offsets(radius: int, stride: int) -> list[int]:
    """Offsets -radius..radius on a grid of ``stride`` that always contains 0."""
    half = list(range(0, radius + 1, max(1, stride)))
    return [-o for o in reversed(half[1:])] + half
