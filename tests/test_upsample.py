import numpy as np
import torch

from skimage import data

from m2n2.image import resize_rgb
from m2n2.upsample import joint_bilateral_upsample


def plain_jbu(low, guide, sigma_s, sigma_r):
    """Per-pixel transcription: bilinear upsample, then a dense 3-sigma window at full size."""
    up = torch.nn.functional.interpolate(low[None, None].double(), size=guide.shape[1:], mode="bilinear",
                                         align_corners=True)[0, 0].numpy()
    g = guide.double().numpy()
    h, w = up.shape
    sy, sx = (h - 1) / (low.shape[0] - 1), (w - 1) / (low.shape[1] - 1)
    ry, rx = int(np.floor(3 * sigma_s * sy)), int(np.floor(3 * sigma_s * sx))
    out = np.zeros_like(up)
    for y in range(h):
        for x in range(w):
            num = den = 0.0
            for dy in range(-ry, ry + 1):
                for dx in range(-rx, rx + 1):
                    qy, qx = y + dy, x + dx
                    if 0 <= qy < h and 0 <= qx < w:
                        ws = np.exp(-((dy / sy) ** 2 + (dx / sx) ** 2) / (2 * sigma_s ** 2))
                        wr = np.exp(-np.sum((g[:, qy, qx] - g[:, y, x]) ** 2) / (2 * sigma_r ** 2))
                        num += ws * wr * up[qy, qx]
                        den += ws * wr
            out[y, x] = num / den
    return out


def test_dense_jbu_equals_per_pixel_definition():
    torch.manual_seed(0)
    low = torch.rand(4, 4)
    guide = torch.rand(3, 10, 13)
    fast = joint_bilateral_upsample(low, guide, 1.0, 0.1, stride=1).double().numpy()
    np.testing.assert_allclose(fast, plain_jbu(low, guide, 1.0, 0.1), rtol=1e-5, atol=1e-6)


def test_jbu_follows_guide_edges():
    # A ramp in the low-res map; the guide has a sharp edge: the output steps at the edge.
    low = torch.tensor([[0.0, 0.0, 1.0, 1.0]]).repeat(4, 1)
    guide = torch.zeros(3, 40, 40)
    guide[:, :, 20:] = 1.0
    out = joint_bilateral_upsample(low, guide, 1.0, 0.1, stride=1)
    bilinear = torch.nn.functional.interpolate(low[None, None], size=(40, 40), mode="bilinear",
                                               align_corners=True)[0, 0]
    assert (out[:, 19] - out[:, 20]).abs().min() > (bilinear[:, 19] - bilinear[:, 20]).abs().max() * 5


def test_strided_sampling_approximates_dense():
    torch.manual_seed(1)
    low = torch.nn.functional.avg_pool2d(torch.rand(1, 1, 16, 16), 3, 1, 1)[0, 0]
    photo = resize_rgb(data.astronaut(), (160, 120))
    guide = torch.from_numpy(photo.copy()).permute(2, 0, 1).float() / 255
    dense = joint_bilateral_upsample(low, guide, 1.0, 0.1, stride=1)
    auto = joint_bilateral_upsample(low, guide, 1.0, 0.1, stride=None)
    # The range term is sampled more coarsely than dense: about 2.5% mean deviation on this noisy map.
    assert (auto - dense).abs().mean() < 0.03 * float(low.max() - low.min())
    batched = joint_bilateral_upsample(torch.stack([low, 2 * low]), guide, 1.0, 0.1, stride=None)
    torch.testing.assert_close(batched[1], 2 * auto)
