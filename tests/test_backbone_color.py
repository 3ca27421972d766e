import numpy as np
import pytest
import torch

from m2n2.backbones import ColorAffinityBackbone, load


def two_colour_image(height=40, width=40):
    image = np.zeros((height, width, 3), np.uint8)
    image[:, : width // 2] = (230, 30, 30)
    image[:, width // 2:] = (30, 30, 230)
    return image


@pytest.mark.parametrize("resolution", [8, 16])
def test_shape_and_row_sums(resolution):
    attention = load("color", resolution=resolution).extract(np.random.default_rng(0).integers(0, 255, (30, 50, 3)).astype(np.uint8))
    assert attention.shape == (resolution,) * 4 and attention.dtype == torch.float32
    assert attention.min() >= 0
    torch.testing.assert_close(attention.sum(dim=(2, 3)), torch.ones(resolution, resolution))


def test_deterministic_and_image_dependent():
    backbone = ColorAffinityBackbone(resolution=8)
    image = two_colour_image()
    assert torch.equal(backbone.extract(image), backbone.extract(image))
    other = image.copy()
    other[:10, :10] = (20, 200, 20)
    assert not torch.allclose(backbone.extract(image), backbone.extract(other))


def test_two_flat_regions_give_block_structured_attention():
    r = 8
    attention = ColorAffinityBackbone(resolution=r).extract(two_colour_image()).reshape(r * r, r * r)
    left = (torch.arange(r * r) % r) < r // 2
    same = attention[left][:, left].sum(dim=1)
    assert torch.all(same > 0.99)  # a left cell's attention stays almost all on the left
    assert attention[~left][:, left].sum(dim=1).max() < 0.01


def test_auto_falls_back_with_a_reason_and_names_itself():
    backbone = load("auto", resolution=8, model="/nonexistent/model-folder")
    assert isinstance(backbone, ColorAffinityBackbone)
    assert backbone.reason and "colour-affinity fallback" in backbone.reason
    assert "no Stable Diffusion" in backbone.description


def test_unknown_kind():
    with pytest.raises(ValueError, match="unknown backbone"):
        load("sam")
